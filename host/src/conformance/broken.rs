//! A strategy with deliberate contract bugs, for `strategy verify
//! --builtin broken` and the suite's own test: the in-memory strategy,
//! wrapped so that it emits its own `Left` from `stop_clustering`, calls
//! every member senior (itself), announces `Joined` for members already
//! there when it joins, hangs for good once a put is dropped early, and
//! claims atomic operations it does as read, pause, then write, and whose
//! entry events all claim to come from the member that reports them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RStr, RString, RVec};
use async_ffi::FfiFuture;
use clusterhost_plugin_api::cluster::{
    CacheSize, Capabilities, CasOutcome, ClusterCallbacks, ClusterCallbacksBox, ClusterCallbacks_TO, Entry, Expected,
    FfiCacheEvent, FfiEvent, Member, StrategyEvent, TaskReply, TaskTarget, Versioned,
};
use clusterhost_plugin_api::memory::MemoryStrategy;
use clusterhost_plugin_api::{ClusterHost, PluginResult, Strategy};

/// The host's callbacks for the in-memory strategy under [`Broken`], with
/// its sixth bug: every entry event claims this member as its origin.
#[derive(Clone)]
struct OwnOrigin {
    inner: ClusterCallbacksBox,
    id: RString,
}

impl ClusterCallbacks for OwnOrigin {
    fn event(&self, event: FfiEvent) {
        self.inner.event(event);
    }

    fn run_task(&self, from: RStr<'_>, name: RStr<'_>, payload: RVec<u8>) -> FfiFuture<RResult<RVec<u8>, RString>> {
        self.inner.run_task(from, name, payload)
    }

    fn cache_listened(&self, cache: RStr<'_>) -> bool {
        self.inner.cache_listened(cache)
    }

    fn cache_event(&self, mut event: FfiCacheEvent) {
        event.origin = self.id.clone();
        self.inner.cache_event(event);
    }
}

/// `callbacks` with the origin bug, for the in-memory strategy [`Broken`] wraps.
pub fn own_origin(callbacks: ClusterCallbacksBox, id: &str) -> ClusterCallbacksBox {
    ClusterCallbacks_TO::from_ptr(RArc::new(OwnOrigin { inner: callbacks, id: id.into() }), TD_Opaque)
}

/// The in-memory strategy with six bugs.
pub struct Broken {
    inner: Arc<MemoryStrategy>,
    host: ClusterHost,
    id: String,
    /// Set once a put was dropped before it finished: every cache call then hangs.
    hung: Arc<AtomicBool>,
}

impl Broken {
    pub fn new(inner: MemoryStrategy, host: ClusterHost, id: &str) -> Self {
        Broken { inner: Arc::new(inner), host, id: id.to_string(), hung: Arc::default() }
    }

    fn hangs(&self) -> bool {
        self.hung.load(Ordering::SeqCst)
    }
}

/// Marks the strategy hung unless disarmed (the put finished).
struct HangIfDropped(Option<Arc<AtomicBool>>);

impl Drop for HangIfDropped {
    fn drop(&mut self) {
        if let Some(hung) = self.0.take() {
            hung.store(true, Ordering::SeqCst);
        }
    }
}

impl Strategy for Broken {
    async fn start_clustering(&self) -> PluginResult<()> {
        self.inner.start_clustering().await?;
        // Bugs: Joined for members already there; senior at its join though another is.
        for member in self.inner.members() {
            if member.id != self.id {
                self.host.emit(StrategyEvent::Joined { member: member.id });
            }
        }
        self.host.emit(StrategyEvent::SeniorChanged { member: self.id.clone() });
        Ok(())
    }

    async fn stop_clustering(&self) -> PluginResult<()> {
        self.inner.stop_clustering().await?;
        // Bug: its own Left.
        self.host.emit(StrategyEvent::Left { member: self.id.clone() });
        Ok(())
    }

    fn local_member(&self) -> String {
        self.inner.local_member()
    }

    fn members(&self) -> Vec<Member> {
        self.inner.members()
    }

    fn senior_member(&self) -> Option<String> {
        // Bug: every member is its own senior.
        self.inner.senior_member().map(|_| self.id.clone())
    }

    fn cache_get_now(&self, cache: &str, key: &[u8]) -> Option<PluginResult<Option<Vec<u8>>>> {
        if self.hangs() {
            return None;
        }
        self.inner.cache_get_now(cache, key)
    }

    async fn cache_get(&self, cache: &str, key: &[u8]) -> PluginResult<Option<Vec<u8>>> {
        if self.hangs() {
            std::future::pending::<()>().await;
        }
        self.inner.cache_get(cache, key).await
    }

    async fn cache_put(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> PluginResult<()> {
        if self.hangs() {
            std::future::pending::<()>().await;
        }
        // Bug: a put dropped during this wait leaves the strategy hung.
        let mut guard = HangIfDropped(Some(self.hung.clone()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        guard.0 = None;
        self.inner.cache_put(cache, key, value).await
    }

    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        self.inner.cache_remove(cache, key)
    }

    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send {
        self.inner.cache_clear(cache)
    }

    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send {
        self.inner.cache_keys(cache)
    }

    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send {
        self.inner.cache_entries(cache)
    }

    fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        self.inner.cache_merge(cache, entries)
    }

    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send {
        self.inner.cache_names()
    }

    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send {
        self.inner.cache_local_size(cache)
    }

    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send {
        self.inner.lock(name, owner)
    }

    fn try_lock(&self, name: &str, owner: &str, timeout: Duration) -> impl Future<Output = PluginResult<bool>> + Send {
        self.inner.try_lock(name, owner, timeout)
    }

    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send {
        self.inner.unlock(name, owner)
    }

    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        self.inner.send_task(target, name, payload)
    }

    fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send {
        self.inner.call_task(target, name, payload, timeout)
    }

    fn settings(&self) -> Vec<(String, String)> {
        self.inner.settings()
    }

    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send {
        self.inner.put_setting(key, value)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ATOMIC.with(Capabilities::ENTRY_EVENTS)
    }

    fn cache_get_versioned(
        &self,
        cache: &str,
        key: &[u8],
    ) -> impl Future<Output = PluginResult<Option<Versioned>>> + Send {
        self.inner.cache_get_versioned(cache, key)
    }

    async fn cache_put_if_absent(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> PluginResult<CasOutcome> {
        let current = self.inner.cache_get_versioned(cache, &key).await?;
        self.check_then_write(cache, key, current.is_none().then_some(()), value).await
    }

    async fn cache_replace_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
        value: Vec<u8>,
    ) -> PluginResult<CasOutcome> {
        let current = self.inner.cache_get_versioned(cache, &key).await?;
        let matches = current.as_ref().is_some_and(|c| expected.matches(c));
        self.check_then_write(cache, key, matches.then_some(()), value).await
    }

    fn cache_remove_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        self.inner.cache_remove_if(cache, key, expected)
    }
}

impl Broken {
    /// Bug: the check was made before this pause and the write after it,
    /// so racing writers all pass the check.
    async fn check_then_write(
        &self,
        cache: &str,
        key: Vec<u8>,
        passed: Option<()>,
        value: Vec<u8>,
    ) -> PluginResult<CasOutcome> {
        if passed.is_none() {
            let current = self.inner.cache_get_versioned(cache, &key).await?;
            return Ok(CasOutcome { applied: false, current });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.inner.cache_put(cache, key.clone(), value).await?;
        Ok(CasOutcome { applied: true, current: self.inner.cache_get_versioned(cache, &key).await? })
    }
}
