//! The redis strategy: membership by expiring keys and a join order,
//! caches as Redis hashes, locks with owner tokens and fencing numbers,
//! tasks and change notices over pub/sub, settings in a shared hash.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clusterhost_plugin_api::cluster::{CacheSize, Entry, Member, StrategyEvent, TaskReply, TaskTarget};
use clusterhost_plugin_api::{ClusterHost, PluginResult, Strategy};
use tokio::sync::Notify;

use crate::commands::Link;
use crate::config::Config;
use crate::keys::Keys;
use crate::locks::Locks;
use crate::membership::Membership;
use crate::storage::Storage;
use crate::tasks::Tasks;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One member's redis strategy: the state every job shares, and the jobs'
/// own parts. Owned by the plugin (`Arc`); the background loops hold a
/// `Weak` so that dropping the plugin's copy ends them.
pub struct Core {
    /// This node's name: its member id in Redis.
    pub member: String,
    /// `conf/redis.toml`, read once at plugin start.
    pub(crate) config: Config,
    /// Every key and channel name, under `key_prefix`.
    pub(crate) keys: Keys,
    host: Mutex<Option<ClusterHost>>,
    /// This member's join state and its view of the others.
    pub(crate) membership: Membership,
    /// Wakes the heartbeat loop (a join, leave or setting elsewhere, a
    /// connection reset, a pub/sub resubscribe) so it acts before its interval.
    pub(crate) wake: Notify,
    /// The command connection, shared by every job that talks to Redis.
    pub(crate) link: Link,
    /// The locks this member holds, and the wake-up for waiters.
    pub(crate) locks: Locks,
    /// Task calls out and in.
    pub(crate) tasks: Tasks,
    /// What this member knows of the caches in Redis.
    pub(crate) storage: Storage,
    /// The heartbeat and pub/sub loops, aborted when the plugin stops.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Core {
    pub fn new(member: String, version: String, address: String, config: Config) -> Arc<Core> {
        Arc::new(Core {
            member,
            keys: Keys::new(&config.key_prefix),
            config,
            host: Mutex::new(None),
            membership: Membership::new(version, address),
            wake: Notify::new(),
            link: Link::default(),
            locks: Locks::default(),
            tasks: Tasks::new(),
            storage: Storage::default(),
            background: Mutex::new(Vec::new()),
        })
    }

    /// Starts the background work: connecting, heartbeats, pub/sub.
    pub fn run(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let heartbeat = tokio::spawn(Core::heartbeat_loop(weak.clone()));
        let pubsub = tokio::spawn(Core::pubsub_loop(weak));
        lock(&self.background).extend([heartbeat, pubsub]);
    }

    pub fn set_host(&self, host: ClusterHost) {
        *lock(&self.host) = Some(host);
        // Settings already known are news to a new host.
        for (key, value) in self.view().settings {
            self.emit(StrategyEvent::SettingChanged { key, value });
        }
    }

    pub(crate) fn host(&self) -> Option<ClusterHost> {
        lock(&self.host).clone()
    }

    /// Tells the host (once it has asked for the strategy) what changed.
    pub(crate) fn emit(&self, event: StrategyEvent) {
        if let Some(host) = self.host() {
            host.emit(event);
        }
    }

    /// Stops everything (the plugin stops).
    pub async fn shutdown(&self) {
        self.leave().await;
        self.tasks.abort_incoming();
        // The connection's own background tasks end with it, before the
        // plugin's runtime goes.
        self.link.close();
        let tasks: Vec<_> = lock(&self.background).drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    pub fn stats(&self) -> Vec<(String, u64)> {
        vec![
            ("redis_commands".into(), self.link.commands.load(Ordering::Relaxed)),
            ("redis_errors".into(), self.link.errors.load(Ordering::Relaxed)),
            ("redis_lost".into(), self.membership.redis_lost()),
            ("rejoins".into(), self.membership.rejoins()),
            ("tasks_sent".into(), self.tasks.sent()),
            ("tasks_received".into(), self.tasks.received()),
            ("locks_held".into(), self.locks.count()),
        ]
    }
}

/// The strategy handed to the host.
pub struct RedisStrategy(pub Arc<Core>);

impl Strategy for RedisStrategy {
    fn start_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let core = self.0.clone();
        async move { Ok(core.join().await?) }
    }

    fn stop_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let core = self.0.clone();
        async move {
            core.leave().await;
            Ok(())
        }
    }

    fn local_member(&self) -> String {
        self.0.member.clone()
    }

    fn members(&self) -> Vec<Member> {
        self.0.view().into_members()
    }

    fn senior_member(&self) -> Option<String> {
        self.0.view().senior
    }

    fn cluster_time_ms(&self) -> u64 {
        self.0.cluster_time_ms()
    }

    fn cache_get(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send + use<> {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_get(&cache, &key).await?) }
    }

    fn cache_put(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        // Versioned when called, not when polled.
        let version = core.cluster_time_ms();
        async move { Ok(core.cache_put(&cache, key, &value, version).await?) }
    }

    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_remove(&cache, &key).await?) }
    }

    fn cache_contains(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_contains(&cache, &key).await?) }
    }

    fn cache_size(&self, cache: &str) -> impl Future<Output = PluginResult<u64>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_size(&cache).await?) }
    }

    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_clear(&cache).await?) }
    }

    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_keys(&cache).await?) }
    }

    fn cache_get_all(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_get_all(&cache, keys).await?) }
    }

    fn cache_put_all(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        // Versioned when called, not when polled.
        let version = core.cluster_time_ms();
        async move { Ok(core.cache_put_all(&cache, &entries, version).await?) }
    }

    fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_merge(&cache, &entries).await?) }
    }

    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_entries(&cache).await?) }
    }

    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send + use<> {
        let core = self.0.clone();
        async move { Ok(core.cache_names().await?) }
    }

    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_local_size(&cache).await?) }
    }

    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, name, owner) = (self.0.clone(), name.to_string(), owner.to_string());
        async move {
            core.acquire(&name, &owner, None).await?;
            Ok(())
        }
    }

    fn try_lock(
        &self,
        name: &str,
        owner: &str,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        let (core, name, owner) = (self.0.clone(), name.to_string(), owner.to_string());
        async move { Ok(core.acquire(&name, &owner, Some(Instant::now() + timeout)).await?) }
    }

    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        let (core, name, owner) = (self.0.clone(), name.to_string(), owner.to_string());
        async move { Ok(core.release(&name, &owner).await?) }
    }

    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        // The targets are the members in the view when called.
        let (targets, _) = self.0.targets(&target);
        let (core, name) = (self.0.clone(), name.to_string());
        async move {
            core.send_task(targets, &name, payload).await;
            Ok(())
        }
    }

    fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send + use<> {
        let (targets, missing) = self.0.targets(&target);
        let (core, name) = (self.0.clone(), name.to_string());
        async move { Ok(core.call_task(targets, missing, &name, payload, timeout).await) }
    }

    fn settings(&self) -> Vec<(String, String)> {
        self.0.view().settings.into_iter().collect()
    }

    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, key, value) = (self.0.clone(), key.to_string(), value.to_string());
        async move { Ok(core.put_setting(&key, &value).await?) }
    }

    fn stats(&self) -> Vec<(String, u64)> {
        self.0.stats()
    }
}
