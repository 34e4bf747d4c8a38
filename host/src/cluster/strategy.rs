//! The active strategy, as host code calls it: boundary types in, Rust
//! types and [`ClusterError`]s out.

use std::time::Duration;

use abi_stable::std_types::{RSlice, RStr, RVec};
use clusterhost_plugin_api::cluster::{CacheSize, Entry, Member, StrategyBox, TaskReply, TaskTarget};
use clusterhost_plugin_api::{PluginError, PluginErrorKind};

use super::ClusterError;

/// A strategy plugin's strategy, with the plugin it came from.
pub struct StrategyRef {
    pub plugin: String,
    pub version: String,
    inner: StrategyBox,
}

impl StrategyRef {
    pub fn new(plugin: String, version: String, inner: StrategyBox) -> Self {
        StrategyRef { plugin, version, inner }
    }

    /// `plugin version`, for messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.plugin, self.version)
    }

    fn error(&self, op: &'static str, e: PluginError) -> ClusterError {
        ClusterError::Strategy {
            plugin: self.label(),
            op,
            panicked: e.kind == PluginErrorKind::Panicked,
            message: e.message.into(),
        }
    }

    pub async fn start_clustering(&self) -> Result<(), ClusterError> {
        self.inner.start_clustering().await.into_result().map_err(|e| self.error("start_clustering", e))
    }

    pub async fn stop_clustering(&self) -> Result<(), ClusterError> {
        self.inner.stop_clustering().await.into_result().map_err(|e| self.error("stop_clustering", e))
    }

    pub fn local_member(&self) -> String {
        self.inner.local_member().into()
    }

    pub fn members(&self) -> Vec<Member> {
        self.inner.members().into_iter().map(Into::into).collect()
    }

    pub fn senior_member(&self) -> Option<String> {
        self.inner.senior_member().into_option().map(Into::into)
    }

    pub fn cluster_time_ms(&self) -> u64 {
        self.inner.cluster_time_ms()
    }

    pub async fn get(&self, cache: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ClusterError> {
        let result = self.inner.cache_get(RStr::from_str(cache), RSlice::from_slice(key)).await;
        result.into_result().map(|v| v.into_option().map(Into::into)).map_err(|e| self.error("cache get", e))
    }

    pub async fn put(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> Result<(), ClusterError> {
        let result = self.inner.cache_put(RStr::from_str(cache), key.into(), value.into()).await;
        result.into_result().map_err(|e| self.error("cache put", e))
    }

    pub async fn remove(&self, cache: &str, key: &[u8]) -> Result<bool, ClusterError> {
        let result = self.inner.cache_remove(RStr::from_str(cache), RSlice::from_slice(key)).await;
        result.into_result().map_err(|e| self.error("cache remove", e))
    }

    pub async fn contains(&self, cache: &str, key: &[u8]) -> Result<bool, ClusterError> {
        let result = self.inner.cache_contains(RStr::from_str(cache), RSlice::from_slice(key)).await;
        result.into_result().map_err(|e| self.error("cache contains", e))
    }

    pub async fn size(&self, cache: &str) -> Result<u64, ClusterError> {
        self.inner.cache_size(RStr::from_str(cache)).await.into_result().map_err(|e| self.error("cache size", e))
    }

    pub async fn clear(&self, cache: &str) -> Result<(), ClusterError> {
        self.inner.cache_clear(RStr::from_str(cache)).await.into_result().map_err(|e| self.error("cache clear", e))
    }

    pub async fn keys(&self, cache: &str) -> Result<Vec<Vec<u8>>, ClusterError> {
        let result = self.inner.cache_keys(RStr::from_str(cache)).await;
        result.into_result().map(|k| k.into_iter().map(Into::into).collect()).map_err(|e| self.error("cache keys", e))
    }

    pub async fn get_all(&self, cache: &str, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, ClusterError> {
        let keys: RVec<RVec<u8>> = keys.into_iter().map(Into::into).collect();
        let result = self.inner.cache_get_all(RStr::from_str(cache), keys).await;
        result
            .into_result()
            .map(|v| v.into_iter().map(|v| v.into_option().map(Into::into)).collect())
            .map_err(|e| self.error("cache get_all", e))
    }

    pub async fn put_all(&self, cache: &str, entries: Vec<Entry>) -> Result<(), ClusterError> {
        let entries = entries.into_iter().map(Into::into).collect();
        let result = self.inner.cache_put_all(RStr::from_str(cache), entries).await;
        result.into_result().map_err(|e| self.error("cache put_all", e))
    }

    pub async fn merge(&self, cache: &str, entries: Vec<Entry>) -> Result<(), ClusterError> {
        let entries = entries.into_iter().map(Into::into).collect();
        let result = self.inner.cache_merge(RStr::from_str(cache), entries).await;
        result.into_result().map_err(|e| self.error("cache merge", e))
    }

    pub async fn entries(&self, cache: &str) -> Result<Vec<Entry>, ClusterError> {
        let result = self.inner.cache_entries(RStr::from_str(cache)).await;
        result
            .into_result()
            .map(|e| e.into_iter().map(Into::into).collect())
            .map_err(|e| self.error("cache entries", e))
    }

    pub async fn cache_names(&self) -> Result<Vec<String>, ClusterError> {
        let result = self.inner.cache_names().await;
        result.into_result().map(|n| n.into_iter().map(Into::into).collect()).map_err(|e| self.error("cache names", e))
    }

    pub async fn local_size(&self, cache: &str) -> Result<CacheSize, ClusterError> {
        let result = self.inner.cache_local_size(RStr::from_str(cache)).await;
        result.into_result().map(Into::into).map_err(|e| self.error("cache size", e))
    }

    pub async fn lock(&self, name: &str, owner: &str) -> Result<(), ClusterError> {
        let result = self.inner.lock(RStr::from_str(name), RStr::from_str(owner)).await;
        result.into_result().map_err(|e| self.error("lock", e))
    }

    pub async fn try_lock(&self, name: &str, owner: &str, timeout: Duration) -> Result<bool, ClusterError> {
        let ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        let result = self.inner.try_lock(RStr::from_str(name), RStr::from_str(owner), ms).await;
        result.into_result().map_err(|e| self.error("try_lock", e))
    }

    pub async fn unlock(&self, name: &str, owner: &str) -> Result<bool, ClusterError> {
        let result = self.inner.unlock(RStr::from_str(name), RStr::from_str(owner)).await;
        result.into_result().map_err(|e| self.error("unlock", e))
    }

    pub async fn send_task(&self, target: TaskTarget, name: &str, payload: Vec<u8>) -> Result<(), ClusterError> {
        let result = self.inner.send_task(target.into(), RStr::from_str(name), payload.into()).await;
        result.into_result().map_err(|e| self.error("send_task", e))
    }

    pub async fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<TaskReply>, ClusterError> {
        let ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        let result = self.inner.call_task(target.into(), RStr::from_str(name), payload.into(), ms).await;
        result.into_result().map(|r| r.into_iter().map(Into::into).collect()).map_err(|e| self.error("call_task", e))
    }

    pub fn settings(&self) -> Vec<(String, String)> {
        self.inner.settings().into_iter().map(|t| (t.0.into(), t.1.into())).collect()
    }

    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), ClusterError> {
        let result = self.inner.put_setting(RStr::from_str(key), RStr::from_str(value)).await;
        result.into_result().map_err(|e| self.error("put_setting", e))
    }

    pub fn stats(&self) -> Vec<(String, u64)> {
        self.inner.stats().into_iter().map(|t| (t.0.into(), t.1)).collect()
    }
}
