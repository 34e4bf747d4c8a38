//! What a cluster-strategy author implements ([`Strategy`]), and the adapter
//! that carries it across the boundary.
//!
//! Every method's future is `'static`: take what you need from the
//! arguments before the `async` block. A read answered from memory should
//! return `std::future::ready(..)`: the adapter polls the future on the
//! caller's thread first (inside the plugin's runtime context), so such a
//! read never hops threads. Work that waits on I/O is woken by the plugin's
//! own runtime.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use async_ffi::{FfiFuture, FutureExt};

use crate::abi::PluginError;
use crate::cluster::*;
use crate::plugin::{panic_message, PluginResult};

/// A cluster strategy's implementation. See the module docs for the rules
/// its futures follow; docs/cluster-strategy.md describes each operation.
pub trait Strategy: Send + Sync + 'static {
    fn start_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send + use<Self>;
    fn stop_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send + use<Self>;
    fn local_member(&self) -> String;
    fn members(&self) -> Vec<Member>;
    fn senior_member(&self) -> Option<String>;
    fn cluster_time_ms(&self) -> u64 {
        now_ms()
    }

    fn cache_get(
        &self,
        cache: &str,
        key: &[u8],
    ) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send + use<Self>;
    fn cache_put(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<Self>;
    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send + use<Self>;
    fn cache_contains(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send + use<Self>;
    fn cache_size(&self, cache: &str) -> impl Future<Output = PluginResult<u64>> + Send + use<Self>;
    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send + use<Self>;
    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send + use<Self>;
    fn cache_get_all(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send + use<Self>;
    fn cache_put_all(
        &self,
        cache: &str,
        entries: Vec<Entry>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<Self>;
    fn cache_merge(
        &self,
        cache: &str,
        entries: Vec<Entry>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<Self>;
    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send + use<Self>;
    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send + use<Self>;
    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send + use<Self>;

    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send + use<Self>;
    fn try_lock(
        &self,
        name: &str,
        owner: &str,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<bool>> + Send + use<Self>;
    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send + use<Self>;

    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<Self>;
    fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send + use<Self>;

    fn settings(&self) -> Vec<(String, String)>;
    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send + use<Self>;

    fn stats(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// The host's side, as a strategy sees it: events out, tasks in.
#[derive(Clone)]
pub struct ClusterHost {
    callbacks: ClusterCallbacksBox,
    runtime: tokio::runtime::Handle,
    /// Closed once the runtime shuts down (the plugin was dropped).
    stopped: StopGate,
}

/// Closed once the plugin's runtime shuts down. Plugin code runs on a host
/// thread only while it holds the gate open (a read lock), so closing it
/// waits for the calls in progress, and none starts after: no plugin code
/// ever runs inside a runtime that is shutting down (where a timer panics).
#[derive(Clone, Default)]
pub(crate) struct StopGate(Arc<RwLock<bool>>);

impl StopGate {
    /// The gate held open, or `None` once it is closed.
    fn enter(&self) -> Option<RwLockReadGuard<'_, bool>> {
        let closed = crate::sync::read(&self.0);
        if *closed {
            None
        } else {
            Some(closed)
        }
    }

    /// Closes the gate, after the calls in progress have returned.
    pub(crate) fn close(&self) {
        *crate::sync::write(&self.0) = true;
    }
}

impl ClusterHost {
    /// Wraps the host's callbacks; `runtime` is the strategy's own runtime.
    pub fn new(callbacks: ClusterCallbacksBox, runtime: tokio::runtime::Handle) -> Self {
        ClusterHost { callbacks, runtime, stopped: StopGate::default() }
    }

    /// As [`new`](Self::new), with the flag the plugin sets before it shuts
    /// its runtime down.
    pub(crate) fn with_stop_flag(
        callbacks: ClusterCallbacksBox,
        runtime: tokio::runtime::Handle,
        stopped: StopGate,
    ) -> Self {
        ClusterHost { callbacks, runtime, stopped }
    }

    /// Queues an event for the host (never blocks).
    pub fn emit(&self, event: StrategyEvent) {
        self.callbacks.event(event.into());
    }

    /// Runs the host's handler for task `name`, sent by member `from`.
    pub fn run_task(
        &self,
        from: &str,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, String>> + Send + 'static {
        let future = self.callbacks.run_task(from.into(), name.into(), payload.into());
        async move { future.await.into_result().map(Into::into).map_err(Into::into) }
    }

    /// The strategy's runtime.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Carries `strategy` across the boundary.
    pub fn into_boundary<S: Strategy>(&self, strategy: S) -> StrategyBox {
        ClusterStrategy_TO::from_value(
            StrategyAdapter {
                inner: std::mem::ManuallyDrop::new(Arc::new(strategy)),
                runtime: self.runtime.clone(),
                stopped: self.stopped.clone(),
            },
            TD_Opaque,
        )
    }
}

struct StrategyAdapter<S> {
    /// Dropped by hand, inside `catch_unwind`.
    inner: std::mem::ManuallyDrop<Arc<S>>,
    runtime: tokio::runtime::Handle,
    /// The plugin's stop flag (see `ClusterHost`): a call after the plugin stopped (a
    /// lock guard dropped late, say) is answered at once, never polled on
    /// a runtime that is shutting down (where a timer panics).
    stopped: StopGate,
}

/// What a call answers once the plugin has stopped.
fn stopped_error() -> PluginError {
    PluginError::failed("the strategy's plugin has stopped (it was removed or replaced); nothing was done")
}

/// Polls a plugin future inside the plugin's runtime context, catching panics.
struct Guarded<F, M> {
    runtime: tokio::runtime::Handle,
    stopped: StopGate,
    future: Option<F>,
    map: Option<M>,
}

impl<F, M, T, U> Future for Guarded<F, M>
where
    F: Future<Output = PluginResult<T>> + Unpin,
    M: FnOnce(T) -> U + Unpin,
{
    type Output = RResult<U, PluginError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(RErr(PluginError::failed("polled after completion")));
        };
        let gate = this.stopped.clone();
        let Some(_open) = gate.enter() else {
            // Dropping it is plugin code too; the runtime is gone.
            let future = this.future.take();
            let _ = catch_unwind(AssertUnwindSafe(move || drop(future)));
            return Poll::Ready(RErr(stopped_error()));
        };
        let _entered = this.runtime.enter();
        let outcome = catch_unwind(AssertUnwindSafe(|| Pin::new(future).poll(cx)));
        let result = match outcome {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(value))) => match this.map.take() {
                Some(map) => ROk(map(value)),
                None => RErr(PluginError::failed("polled after completion")),
            },
            Ok(Poll::Ready(Err(error))) => RErr(PluginError::failed(error.to_string())),
            Err(payload) => RErr(PluginError::panicked(panic_message(payload))),
        };
        // Dropping the future is plugin code too.
        let future = this.future.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(future)));
        Poll::Ready(result)
    }
}

impl<S: Strategy> StrategyAdapter<S> {
    /// Builds the plugin's future (plugin code: guarded) and wraps it.
    fn call<T, U, F>(
        &self,
        make: impl FnOnce(&S) -> F,
        map: impl FnOnce(T) -> U + Send + Unpin + 'static,
    ) -> FfiFuture<RResult<U, PluginError>>
    where
        F: Future<Output = PluginResult<T>> + Send + 'static,
        T: 'static,
        U: 'static,
    {
        let Some(_open) = self.stopped.enter() else {
            let error = stopped_error();
            return async move { RErr(error) }.into_ffi();
        };
        let made = {
            let _entered = self.runtime.enter();
            catch_unwind(AssertUnwindSafe(|| make(&self.inner)))
        };
        match made {
            Ok(future) => Guarded {
                runtime: self.runtime.clone(),
                stopped: self.stopped.clone(),
                future: Some(Box::pin(future)),
                map: Some(map),
            }
            .into_ffi(),
            Err(payload) => {
                let error = PluginError::panicked(panic_message(payload));
                async move { RErr(error) }.into_ffi()
            }
        }
    }

    /// Runs a synchronous method, guarded.
    fn sync<T>(&self, call: impl FnOnce(&S) -> T, fallback: T) -> T {
        let Some(_open) = self.stopped.enter() else { return fallback };
        let _entered = self.runtime.enter();
        catch_unwind(AssertUnwindSafe(|| call(&self.inner))).unwrap_or(fallback)
    }
}

/// The value as it is (for calls whose value crosses the boundary unconverted).
fn unchanged<T>(t: T) -> T {
    t
}

impl<S: Strategy> ClusterStrategy for StrategyAdapter<S> {
    fn start_clustering(&self) -> Fut<()> {
        self.call(|s| s.start_clustering(), unchanged)
    }

    fn stop_clustering(&self) -> Fut<()> {
        self.call(|s| s.stop_clustering(), unchanged)
    }

    fn local_member(&self) -> RString {
        self.sync(|s| s.local_member(), String::new()).into()
    }

    fn members(&self) -> RVec<FfiMember> {
        self.sync(|s| s.members(), Vec::new()).into_iter().map(Into::into).collect()
    }

    fn senior_member(&self) -> ROption<RString> {
        self.sync(|s| s.senior_member(), None).map(RString::from).into()
    }

    fn cluster_time_ms(&self) -> u64 {
        self.sync(|s| s.cluster_time_ms(), now_ms())
    }

    fn cache_get(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<ROption<RVec<u8>>> {
        self.call(|s| s.cache_get(cache.as_str(), key.as_slice()), |v: Option<Vec<u8>>| v.map(RVec::from).into())
    }

    fn cache_put(&self, cache: RStr<'_>, key: RVec<u8>, value: RVec<u8>) -> Fut<()> {
        self.call(|s| s.cache_put(cache.as_str(), key.into(), value.into()), unchanged)
    }

    fn cache_remove(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<bool> {
        self.call(|s| s.cache_remove(cache.as_str(), key.as_slice()), unchanged)
    }

    fn cache_contains(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<bool> {
        self.call(|s| s.cache_contains(cache.as_str(), key.as_slice()), unchanged)
    }

    fn cache_size(&self, cache: RStr<'_>) -> Fut<u64> {
        self.call(|s| s.cache_size(cache.as_str()), unchanged)
    }

    fn cache_clear(&self, cache: RStr<'_>) -> Fut<()> {
        self.call(|s| s.cache_clear(cache.as_str()), unchanged)
    }

    fn cache_keys(&self, cache: RStr<'_>) -> Fut<RVec<RVec<u8>>> {
        self.call(|s| s.cache_keys(cache.as_str()), |keys: Vec<Vec<u8>>| keys.into_iter().map(RVec::from).collect())
    }

    fn cache_get_all(&self, cache: RStr<'_>, keys: RVec<RVec<u8>>) -> Fut<RVec<ROption<RVec<u8>>>> {
        let keys = keys.into_iter().map(Into::into).collect();
        self.call(
            |s| s.cache_get_all(cache.as_str(), keys),
            |values: Vec<Option<Vec<u8>>>| values.into_iter().map(|v| v.map(RVec::from).into()).collect(),
        )
    }

    fn cache_put_all(&self, cache: RStr<'_>, entries: RVec<FfiEntry>) -> Fut<()> {
        let entries = entries.into_iter().map(Into::into).collect();
        self.call(|s| s.cache_put_all(cache.as_str(), entries), unchanged)
    }

    fn cache_merge(&self, cache: RStr<'_>, entries: RVec<FfiEntry>) -> Fut<()> {
        let entries = entries.into_iter().map(Into::into).collect();
        self.call(|s| s.cache_merge(cache.as_str(), entries), unchanged)
    }

    fn cache_entries(&self, cache: RStr<'_>) -> Fut<RVec<FfiEntry>> {
        self.call(|s| s.cache_entries(cache.as_str()), |e: Vec<Entry>| e.into_iter().map(Into::into).collect())
    }

    fn cache_names(&self) -> Fut<RVec<RString>> {
        self.call(|s| s.cache_names(), |n: Vec<String>| n.into_iter().map(Into::into).collect())
    }

    fn cache_local_size(&self, cache: RStr<'_>) -> Fut<FfiCacheSize> {
        self.call(|s| s.cache_local_size(cache.as_str()), FfiCacheSize::from)
    }

    fn lock(&self, name: RStr<'_>, owner: RStr<'_>) -> Fut<()> {
        self.call(|s| s.lock(name.as_str(), owner.as_str()), unchanged)
    }

    fn try_lock(&self, name: RStr<'_>, owner: RStr<'_>, timeout_ms: u64) -> Fut<bool> {
        self.call(|s| s.try_lock(name.as_str(), owner.as_str(), Duration::from_millis(timeout_ms)), unchanged)
    }

    fn unlock(&self, name: RStr<'_>, owner: RStr<'_>) -> Fut<bool> {
        self.call(|s| s.unlock(name.as_str(), owner.as_str()), unchanged)
    }

    fn send_task(&self, target: FfiTarget, name: RStr<'_>, payload: RVec<u8>) -> Fut<()> {
        match target.decode() {
            Some(target) => self.call(|s| s.send_task(target, name.as_str(), payload.into()), unchanged),
            None => unknown_target(),
        }
    }

    fn call_task(
        &self,
        target: FfiTarget,
        name: RStr<'_>,
        payload: RVec<u8>,
        timeout_ms: u64,
    ) -> Fut<RVec<FfiTaskReply>> {
        match target.decode() {
            Some(target) => self.call(
                |s| s.call_task(target, name.as_str(), payload.into(), Duration::from_millis(timeout_ms)),
                |r: Vec<TaskReply>| r.into_iter().map(Into::into).collect(),
            ),
            None => unknown_target(),
        }
    }

    fn settings(&self) -> RVec<Tuple2<RString, RString>> {
        self.sync(|s| s.settings(), Vec::new()).into_iter().map(|(k, v)| Tuple2(k.into(), v.into())).collect()
    }

    fn put_setting(&self, key: RStr<'_>, value: RStr<'_>) -> Fut<()> {
        self.call(|s| s.put_setting(key.as_str(), value.as_str()), unchanged)
    }

    fn stats(&self) -> RVec<Tuple2<RString, u64>> {
        self.sync(|s| s.stats(), Vec::new()).into_iter().map(|(k, v)| Tuple2(k.into(), v)).collect()
    }
}

fn unknown_target<T: 'static>() -> Fut<T> {
    async { RErr(PluginError::failed("the host sent a task target this plugin does not know; upgrade the plugin")) }
        .into_ffi()
}

impl<S> Drop for StrategyAdapter<S> {
    fn drop(&mut self) {
        // The strategy's Drop is plugin code.
        // SAFETY: `inner` is taken once, here in drop, and never used again
        // (ManuallyDrop::take's contract).
        let inner = unsafe { std::mem::ManuallyDrop::take(&mut self.inner) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(inner)));
    }
}
