//! The built-in standalone strategy: this node alone, behind the same
//! [`Strategy`] contract as a plugin's. The host serves caches, tasks and
//! locks through it whenever it is not clustered, so every call goes one way.

use std::collections::BTreeMap;
use std::future::{ready, Future};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterhost_plugin_api::cluster::{
    now_ms, CacheBounds, CacheSize, Capabilities, CasOutcome, Entry, Expected, Member, TaskOutcome, TaskReply,
    TaskTarget, Versioned,
};
use clusterhost_plugin_api::local::{LocalCache, LocalCaches, LocalLocks};
use clusterhost_plugin_api::membership::resolve_target;
use clusterhost_plugin_api::sync::lock;
use clusterhost_plugin_api::{PluginResult, Strategy};

use super::entry_events::EntryEvents;
use super::tasks::Tasks;

/// This node alone: its caches and locks in memory, its tasks run here.
/// It is never "joined": `members()` is empty and there is no senior, as
/// the contract says of a strategy not in a cluster.
pub(crate) struct Standalone {
    /// This node's member id.
    node: String,
    /// The entries written while alone; moved into the cluster on a join.
    caches: LocalCaches,
    /// Shared with the futures that wait for a lock.
    locks: Arc<LocalLocks>,
    /// Settings put while alone.
    settings: Mutex<BTreeMap<String, String>>,
    /// The node's task handlers, which run every task sent here.
    tasks: Arc<Tasks>,
}

impl Standalone {
    /// This node alone; every change of its caches (except the moves of
    /// a join or leave) goes to `entries`, with this node as the origin.
    pub(crate) fn new(node: &str, tasks: Arc<Tasks>, entries: Arc<EntryEvents>) -> Self {
        let observer = move |change: clusterhost_plugin_api::local::LocalChange<'_>| {
            if !entries.moving() {
                let (cache, key, value) = (change.cache, change.key, change.value);
                entries.dispatch(cache, change.kind, key, value, change.version, entries.node());
            }
        };
        Standalone {
            node: node.to_string(),
            caches: LocalCaches::observed(Arc::new(observer)),
            locks: Arc::default(),
            settings: Mutex::default(),
            tasks,
        }
    }

    /// Removes every expired entry (the manager calls it on a timer).
    pub(crate) fn sweep(&self) -> usize {
        self.caches.sweep(now_ms())
    }

    /// The storage of cache `name` (made if new), for handles that skip the lookup by name.
    pub(crate) fn cache(&self, name: &str) -> Arc<LocalCache> {
        self.caches.cache(name)
    }

    /// Whether this node runs `target` itself, resolved as in a cluster of
    /// this node alone, its own senior; Err(reply) when the target names
    /// another member.
    fn runs_here(&self, target: &TaskTarget) -> Result<bool, TaskReply> {
        match resolve_target(target, &self.node, [&self.node], Some(&self.node)) {
            Ok(members) => Ok(!members.is_empty()),
            Err(missing) => Err(TaskReply {
                member: missing.member().to_string(),
                outcome: TaskOutcome::Error(format!("{missing}: this node runs standalone")),
            }),
        }
    }
}

impl Strategy for Standalone {
    fn start_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send {
        ready(Ok(()))
    }

    fn stop_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send {
        ready(Ok(()))
    }

    fn local_member(&self) -> String {
        self.node.clone()
    }

    fn members(&self) -> Vec<Member> {
        Vec::new()
    }

    fn senior_member(&self) -> Option<String> {
        None
    }

    fn cache_get(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send {
        ready(Ok(self.caches.get(cache, key)))
    }

    fn cache_put(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> impl Future<Output = PluginResult<()>> + Send {
        self.caches.put(cache, key, value, now_ms());
        ready(Ok(()))
    }

    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        ready(Ok(self.caches.remove(cache, key)))
    }

    fn cache_contains(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        ready(Ok(self.caches.contains(cache, key)))
    }

    fn cache_size(&self, cache: &str) -> impl Future<Output = PluginResult<u64>> + Send {
        ready(Ok(self.caches.len(cache)))
    }

    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send {
        self.caches.clear(cache);
        ready(Ok(()))
    }

    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send {
        ready(Ok(self.caches.keys(cache)))
    }

    fn cache_get_all(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send {
        ready(Ok(self.caches.get_all(cache, &keys)))
    }

    fn cache_put_all(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        self.caches.put_all(cache, entries, now_ms());
        ready(Ok(()))
    }

    fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        self.caches.merge(cache, entries);
        ready(Ok(()))
    }

    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send {
        ready(Ok(self.caches.entries(cache)))
    }

    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send {
        ready(Ok(self.caches.names()))
    }

    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send {
        ready(Ok(self.caches.size(cache)))
    }

    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let (locks, name, owner, node) = (self.locks.clone(), name.to_string(), owner.to_string(), self.node.clone());
        async move {
            locks.lock(&name, &owner, &node).await;
            Ok(())
        }
    }

    fn try_lock(&self, name: &str, owner: &str, timeout: Duration) -> impl Future<Output = PluginResult<bool>> + Send {
        clusterhost_plugin_api::local::lock_within(timeout, self.lock(name, owner))
    }

    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send {
        ready(Ok(self.locks.unlock(name, owner)))
    }

    fn lock_fence(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<Option<u64>>> + Send {
        ready(Ok(self.locks.fence(name, owner)))
    }

    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        if self.runs_here(&target).is_ok_and(|here| here) {
            self.tasks.spawn_local(self.node.clone(), name, payload);
        }
        ready(Ok(()))
    }

    fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send {
        let run = match self.runs_here(&target) {
            Ok(true) => Ok(self.tasks.run_local(self.node.clone(), name, payload)),
            Ok(false) => Err(Vec::new()),
            Err(reply) => Err(vec![reply]),
        };
        let node = self.node.clone();
        async move {
            let run = match run {
                Ok(run) => run,
                Err(replies) => return Ok(replies),
            };
            let outcome = match tokio::time::timeout(timeout, run).await {
                Ok(Ok(value)) => TaskOutcome::Value(value),
                Ok(Err(e)) => TaskOutcome::Error(e),
                Err(_) => TaskOutcome::TimedOut,
            };
            Ok(vec![TaskReply { member: node, outcome }])
        }
    }

    fn settings(&self) -> Vec<(String, String)> {
        let settings = lock(&self.settings);
        settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let mut settings = lock(&self.settings);
        settings.insert(key.to_string(), value.to_string());
        ready(Ok(()))
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::ATOMIC
            .with(Capabilities::ENTRY_EVENTS)
            .with(Capabilities::FENCED_LOCKS)
            .with(Capabilities::BOUNDED)
            .with(Capabilities::ENTRY_TIMES)
    }

    fn cache_expiries(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<u64>>>> + Send {
        ready(Ok(self.caches.expiries(cache, &keys)))
    }

    fn cache_counts(&self, cache: &str) -> Vec<(String, u64)> {
        let (evicted, expired) = self.caches.removed_by_bounds_of(cache);
        vec![("evictions".into(), evicted), ("expiries".into(), expired)]
    }

    fn stats(&self) -> Vec<(String, u64)> {
        let (evicted, expired) = self.caches.removed_by_bounds();
        vec![("cache_evictions".into(), evicted), ("cache_expiries".into(), expired)]
    }

    fn cache_configure(&self, cache: &str, bounds: CacheBounds) -> impl Future<Output = PluginResult<()>> + Send {
        self.caches.configure(cache, bounds);
        ready(Ok(()))
    }

    fn cache_put_ttl(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        let ttl_ms = clusterhost_plugin_api::cluster::millis(ttl);
        self.caches.put_ttl(cache, key, value, now_ms(), ttl_ms);
        ready(Ok(()))
    }

    fn cache_get_versioned(
        &self,
        cache: &str,
        key: &[u8],
    ) -> impl Future<Output = PluginResult<Option<Versioned>>> + Send {
        ready(Ok(self.caches.get_versioned(cache, key)))
    }

    fn cache_put_if_absent(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        ready(Ok(self.caches.put_if_absent(cache, key, value, now_ms())))
    }

    fn cache_replace_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        ready(Ok(self.caches.replace_if(cache, key, &expected, value, now_ms())))
    }

    fn cache_remove_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        ready(Ok(self.caches.remove_if(cache, key, &expected)))
    }
}
