//! The `Strategy` the host calls: a thin layer over the core, each
//! operation handed to its job (the view, replication, locks, tasks).

use std::future::{ready, Future};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clusterhost_plugin_api::cluster::{
    now_ms, CacheBounds, CacheSize, Capabilities, CasOutcome, Entry, Expected, Member, TaskReply, TaskTarget, Versioned,
};
use clusterhost_plugin_api::{PluginResult, Strategy};

use crate::atomic::CasOp;
use crate::core::Core;
use crate::membership::setting_key;
use crate::store::WireEntry;
use crate::view::Setting;

/// The strategy handed to the host.
#[derive(Clone)]
pub struct Gossip(pub Arc<Core>);

impl Strategy for Gossip {
    fn start_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send {
        let core = self.0.clone();
        async move { core.join().await }
    }

    fn stop_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send {
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
        self.0
            .view
            .current()
            .members
            .values()
            .map(|p| Member {
                id: p.id.clone(),
                address: p.gossip_addr.to_string(),
                started_at_ms: p.started_at_ms,
                plugin_version: p.plugin_version.clone(),
            })
            .collect()
    }

    fn senior_member(&self) -> Option<String> {
        self.0.view.senior()
    }

    fn cluster_time_ms(&self) -> u64 {
        self.0.replica.version().ms()
    }

    fn cache_get_now(&self, cache: &str, key: &[u8]) -> Option<PluginResult<Option<Vec<u8>>>> {
        Some(Ok(self.0.replica.store.get(cache, key)))
    }

    fn cache_get(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send {
        ready(Ok(self.0.replica.store.get(cache, key)))
    }

    fn cache_put(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, entry) = (self.0.clone(), self.0.replica.entry(cache, key, Some(value)));
        async move { core.replicate(vec![entry]).await }
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
        // Every member holds every entry: this member's copy tells.
        ready(Ok(self.0.replica.store.expiries(cache, &keys)))
    }

    fn cache_counts(&self, cache: &str) -> Vec<(String, u64)> {
        let (evicted, expired) = self.0.replica.store.removed_by_bounds_of(cache);
        vec![("evictions".into(), evicted), ("expiries".into(), expired)]
    }

    fn cache_configure(&self, cache: &str, bounds: CacheBounds) -> impl Future<Output = PluginResult<()>> + Send {
        ready(configure(&self.0, cache, bounds))
    }

    fn cache_put_ttl(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        let ttl_ms = clusterhost_plugin_api::cluster::millis(ttl);
        let (core, entry) = (self.0.clone(), self.0.replica.entry_ttl(cache, key, value, ttl_ms));
        async move { core.replicate(vec![entry]).await }
    }

    fn cache_get_versioned(
        &self,
        cache: &str,
        key: &[u8],
    ) -> impl Future<Output = PluginResult<Option<Versioned>>> + Send {
        let held = self.0.replica.store.get_versioned(cache, key);
        ready(Ok(held.map(|(value, version)| Versioned { value, version: version.hlc })))
    }

    fn cache_put_if_absent(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        self.0.clone().atomic(cache.to_string(), key, CasOp::PutIfAbsent { value })
    }

    fn cache_replace_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        self.0.clone().atomic(cache.to_string(), key, CasOp::ReplaceIf { expected: expected.into(), value })
    }

    fn cache_remove_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        self.0.clone().atomic(cache.to_string(), key, CasOp::RemoveIf { expected: expected.into() })
    }

    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        let existed = self.0.replica.store.contains(cache, key);
        let (core, entry) = (self.0.clone(), self.0.replica.entry(cache, key.to_vec(), None));
        async move {
            core.replicate(vec![entry]).await?;
            Ok(existed)
        }
    }

    fn cache_contains(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        ready(Ok(self.0.replica.store.contains(cache, key)))
    }

    fn cache_size(&self, cache: &str) -> impl Future<Output = PluginResult<u64>> + Send {
        ready(Ok(self.0.replica.store.size(cache).entries))
    }

    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let entries: Vec<WireEntry> =
            self.0.replica.store.keys(cache).into_iter().map(|k| self.0.replica.entry(cache, k, None)).collect();
        let core = self.0.clone();
        async move { core.replicate(entries).await }
    }

    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send {
        ready(Ok(self.0.replica.store.keys(cache)))
    }

    fn cache_get_all(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send {
        ready(Ok(keys.iter().map(|k| self.0.replica.store.get(cache, k)).collect()))
    }

    fn cache_put_all(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        let entries: Vec<WireEntry> =
            entries.into_iter().map(|e| self.0.replica.entry(cache, e.key, Some(e.value))).collect();
        let core = self.0.clone();
        async move { core.replicate(entries).await }
    }

    fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, entries) = (self.0.clone(), self.0.replica.standalone(cache, entries));
        async move { core.merge(entries).await }
    }

    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send {
        ready(Ok(self.0.replica.store.entries(cache)))
    }

    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send {
        ready(Ok(self.0.replica.store.names()))
    }

    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send {
        ready(Ok(self.0.replica.store.size(cache)))
    }

    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let acquire = self.0.clone().acquire_detached(name.to_string(), owner.to_string(), None);
        async move { acquire.await.map(|_| ()) }
    }

    fn try_lock(&self, name: &str, owner: &str, timeout: Duration) -> impl Future<Output = PluginResult<bool>> + Send {
        self.0.clone().acquire_detached(name.to_string(), owner.to_string(), Some(timeout))
    }

    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send {
        self.0.clone().unlock(name.to_string(), owner.to_string())
    }

    fn lock_fence(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<Option<u64>>> + Send {
        ready(Ok(self.0.lock_fence(name, owner)))
    }

    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        let (targets, _) = self.0.targets(&target);
        self.0.clone().send_task(targets, name.to_string(), payload)
    }

    fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send {
        let (targets, missing) = self.0.targets(&target);
        self.0.clone().call_task(targets, missing, name.to_string(), payload, timeout)
    }

    fn settings(&self) -> Vec<(String, String)> {
        self.0.view.current().settings.into_iter().map(|(k, s)| (k, s.value)).collect()
    }

    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let core = self.0.clone();
        let raw = Setting { at_ms: now_ms(), by: self.0.member.clone(), value: value.to_string() }.encode();
        let key = setting_key(key);
        async move {
            core.set_key(&key, &raw).await;
            core.update_view().await;
            Ok(())
        }
    }

    fn stats(&self) -> Vec<(String, u64)> {
        let c = &self.0.net.counters;
        let view = self.0.view.current();
        let (outgoing, incoming) = self.0.net.connection_counts();
        let (evicted, expired) = self.0.replica.store.removed_by_bounds();
        vec![
            ("members".into(), view.members.len() as u64),
            ("frames_sent".into(), c.frames_sent.load(Ordering::Relaxed)),
            ("frames_received".into(), c.frames_received.load(Ordering::Relaxed)),
            ("bytes_sent".into(), c.bytes_sent.load(Ordering::Relaxed)),
            ("bytes_received".into(), c.bytes_received.load(Ordering::Relaxed)),
            ("connections_refused".into(), c.refused.load(Ordering::Relaxed)),
            ("accept_errors".into(), c.accept_errors.load(Ordering::Relaxed)),
            ("connections_out".into(), outgoing as u64),
            ("connections_in".into(), incoming as u64),
            ("packets_dropped".into(), self.0.sealer.dropped.load(Ordering::Relaxed)),
            ("process_deaths_confirmed".into(), self.0.liveness.confirmed.load(Ordering::Relaxed)),
            ("silent_members_confirmed".into(), self.0.liveness.silent.load(Ordering::Relaxed)),
            ("silent_members_kept".into(), self.0.liveness.silent_kept.load(Ordering::Relaxed)),
            ("cache_evictions".into(), evicted),
            ("cache_expiries".into(), expired),
        ]
    }
}

/// Applies `bounds` to `cache` on this member, or refuses them all: a max
/// idle time needs every member's reads, which stay local.
fn configure(core: &Core, cache: &str, bounds: CacheBounds) -> PluginResult<()> {
    keepable(cache, bounds)?;
    core.replica.store.configure(cache, bounds);
    Ok(())
}

/// Whether this strategy can keep `bounds`: not a max idle time.
fn keepable(cache: &str, bounds: CacheBounds) -> PluginResult<()> {
    if bounds.max_idle_ms > 0 {
        return Err(format!(
            "the gossip strategy cannot keep a max idle time on cache {cache} (max idle {} ms): every member holds every entry and answers reads from its own copy, so no member knows when another last read an entry, and members would expire different entries; none of the cache's bounds ({bounds}) were applied on this member. Set cache.{cache}.max.idle.ms = 0 (or open the cache without max idle) and bound it with a time to live (cache.{cache}.ttl.ms) instead",
            bounds.max_idle_ms
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_idle_is_refused_naming_the_bound_the_strategy_and_what_to_use_instead() {
        let bounds = CacheBounds { max_entries: 10, max_idle_ms: 5000, ..CacheBounds::NONE };
        let err = keepable("sessions", bounds).unwrap_err().to_string();
        for part in ["gossip strategy", "max idle", "sessions", "5000 ms", "cache.sessions.ttl.ms", "none of"] {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
        assert!(keepable("sessions", CacheBounds { max_idle_ms: 0, ..bounds }).is_ok());
    }
}
