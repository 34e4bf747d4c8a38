//! The `Strategy` the host calls: each call resolves what it must when
//! called (targets, versions), then forwards to the job that does it. The
//! jobs' errors become the host's `PluginResult` here, and only here.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterhost_plugin_api::cluster::{
    CacheBounds, CacheSize, Capabilities, CasOutcome, Entry, Expected, Member, TaskReply, TaskTarget, Versioned,
};
use clusterhost_plugin_api::{PluginResult, Strategy};

use crate::core::Core;

/// The strategy handed to the host: a handle on the member's [`Core`],
/// which outlives it (the plugin keeps the core across hosts).
pub struct RedisStrategy(pub Arc<Core>);

impl Strategy for RedisStrategy {
    fn start_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send {
        let core = self.0.clone();
        async move { Ok(core.join().await?) }
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
        self.0.view().into_members()
    }

    fn senior_member(&self) -> Option<String> {
        self.0.view().senior
    }

    fn cluster_time_ms(&self) -> u64 {
        self.0.cluster_time_ms()
    }

    fn cache_get_now(&self, cache: &str, key: &[u8]) -> Option<PluginResult<Option<Vec<u8>>>> {
        Some(self.0.cache_get_now(cache, key)?.map_err(Into::into))
    }

    fn cache_get(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_get(&cache, &key).await?) }
    }

    fn cache_put(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        // Versioned when called, not when polled.
        let now = core.cluster_time_ms();
        async move { Ok(core.cache_put(&cache, key, &value, now).await?) }
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
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_expiries(&cache, &keys).await?) }
    }

    fn cache_counts(&self, cache: &str) -> Vec<(String, u64)> {
        let (evicted, expired) = self.0.storage.removed_by_bounds_of(cache);
        vec![("evictions".into(), evicted), ("expiries".into(), expired)]
    }

    fn cache_configure(&self, cache: &str, bounds: CacheBounds) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_configure(&cache, bounds).await?) }
    }

    fn cache_put_ttl(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        let now = core.cluster_time_ms();
        let ttl_ms = clusterhost_plugin_api::cluster::millis(ttl);
        async move { Ok(core.cache_put_ttl(&cache, key, &value, now, ttl_ms).await?) }
    }

    fn cache_listen(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_listen(&cache).await?) }
    }

    fn cache_get_versioned(
        &self,
        cache: &str,
        key: &[u8],
    ) -> impl Future<Output = PluginResult<Option<Versioned>>> + Send {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_get_versioned(&cache, &key).await?) }
    }

    fn cache_put_if_absent(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        let now = core.cluster_time_ms();
        async move { Ok(core.cache_put_if_absent(&cache, &key, &value, now).await?) }
    }

    fn cache_replace_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        let now = core.cluster_time_ms();
        async move { Ok(core.cache_replace_if(&cache, &key, &expected, &value, now).await?) }
    }

    fn cache_remove_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_remove_if(&cache, &key, &expected).await?) }
    }

    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_remove(&cache, &key).await?) }
    }

    fn cache_contains(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_contains(&cache, &key).await?) }
    }

    fn cache_size(&self, cache: &str) -> impl Future<Output = PluginResult<u64>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_size(&cache).await?) }
    }

    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_clear(&cache).await?) }
    }

    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_keys(&cache).await?) }
    }

    fn cache_get_all(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_get_all(&cache, keys).await?) }
    }

    fn cache_put_all(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        // Versioned when called, not when polled.
        let version = core.cluster_time_ms();
        async move { Ok(core.cache_put_all(&cache, &entries, version).await?) }
    }

    fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_merge(&cache, &entries).await?) }
    }

    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_entries(&cache).await?) }
    }

    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send {
        let core = self.0.clone();
        async move { Ok(core.cache_names().await?) }
    }

    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_local_size(&cache).await?) }
    }

    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, name, owner) = (self.0.clone(), name.to_string(), owner.to_string());
        async move {
            core.acquire(&name, &owner, None).await?;
            Ok(())
        }
    }

    fn try_lock(&self, name: &str, owner: &str, timeout: Duration) -> impl Future<Output = PluginResult<bool>> + Send {
        let (core, name, owner) = (self.0.clone(), name.to_string(), owner.to_string());
        async move { Ok(core.acquire(&name, &owner, Some(Instant::now() + timeout)).await?) }
    }

    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send {
        let (core, name, owner) = (self.0.clone(), name.to_string(), owner.to_string());
        async move { Ok(core.release(&name, &owner).await?) }
    }

    fn lock_fence(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<Option<u64>>> + Send {
        std::future::ready(Ok(self.0.lock_fence(name, owner)))
    }

    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send {
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
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send {
        let (targets, missing) = self.0.targets(&target);
        let (core, name) = (self.0.clone(), name.to_string());
        async move { Ok(core.call_task(targets, missing, &name, payload, timeout).await) }
    }

    fn settings(&self) -> Vec<(String, String)> {
        self.0.view().settings.into_iter().collect()
    }

    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let (core, key, value) = (self.0.clone(), key.to_string(), value.to_string());
        async move { Ok(core.put_setting(&key, &value).await?) }
    }

    fn stats(&self) -> Vec<(String, u64)> {
        self.0.stats()
    }
}
