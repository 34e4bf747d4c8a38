//! What a cluster-strategy author implements ([`Strategy`]), and the adapter
//! that carries it across the boundary.
//!
//! Write the methods as `async fn` (or return any `Send` future). The
//! adapter owns what each call borrows (the strategy, the cache name, the
//! key), so a future may borrow `&self` and its arguments. A read this
//! member can answer from its own memory should also be offered through
//! [`Strategy::cache_get_now`]: the adapter asks it first, on the caller's
//! thread, and skips building a future when it answers.
//! docs/strategy-authoring.md states the contract rule by rule.

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

/// The error a strategy returns for an optional capability it does not
/// offer (tasks, locks): the host reports "unsupported" (the admin, CLI
/// and console show it as such) rather than a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

impl Unsupported {
    /// `what` (e.g. "tasks") is not offered by this strategy.
    pub fn capability(what: &str) -> Self {
        Unsupported(format!("this cluster strategy does not offer {what}"))
    }
}

/// A cluster strategy's implementation: 15 required methods (membership,
/// the basic cache operations and merge, settings) and defaults for the rest. The
/// defaults for bulk and derived cache operations are built on the basic
/// ones (correct, one call per key); override them when the strategy can
/// do better. Locks and tasks default to [`Unsupported`].
///
/// Every method may be cancelled: the host drops a future it no longer
/// waits for (a caller's deadline). Nothing may leak or break when that
/// happens (rule `cancellation` in docs/strategy-authoring.md).
pub trait Strategy: Send + Sync + 'static {
    /// Joins the cluster; resolves once this member is in the view.
    fn start_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send;
    /// Leaves the cluster cleanly (never emits this member's own `Left`).
    fn stop_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send;
    /// This member's id (its node name).
    fn local_member(&self) -> String;
    /// The members in join order; empty while not joined.
    fn members(&self) -> Vec<Member>;
    /// The senior (oldest) member; `None` while not joined.
    fn senior_member(&self) -> Option<String>;
    /// Cluster time in ms (the clock cache versions come from).
    fn cluster_time_ms(&self) -> u64 {
        now_ms()
    }

    /// The value of `key`, if this member can tell without waiting (from
    /// its own memory); `None` sends the read to [`cache_get`](Self::cache_get).
    fn cache_get_now(&self, cache: &str, key: &[u8]) -> Option<PluginResult<Option<Vec<u8>>>> {
        let _ = (cache, key);
        None
    }
    fn cache_get(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send;
    fn cache_put(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> impl Future<Output = PluginResult<()>> + Send;
    /// Whether the key was there.
    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send;
    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send;
    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send;
    /// Every entry with its version (for merges on join and for stats).
    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send;
    /// The names of the caches that hold entries (or were written).
    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send;

    fn cache_contains(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        async move { Ok(self.cache_get(cache, key).await?.is_some()) }
    }
    fn cache_size(&self, cache: &str) -> impl Future<Output = PluginResult<u64>> + Send {
        async move { Ok(self.cache_keys(cache).await?.len() as u64) }
    }
    /// The values of `keys`, in the order asked.
    fn cache_get_all(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send {
        async move {
            let mut values = Vec::with_capacity(keys.len());
            for key in &keys {
                values.push(self.cache_get(cache, key).await?);
            }
            Ok(values)
        }
    }
    fn cache_put_all(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        async move {
            for entry in entries {
                self.cache_put(cache, entry.key, entry.value).await?;
            }
            Ok(())
        }
    }
    /// Merges what a joining member held: an entry replaces the cluster's
    /// only when the cluster has none for its key or an older version, and
    /// keeps its own version (rule `join-and-leave-keep-entries`). No
    /// default: a plain put would stamp a new version.
    fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send;
    /// The cache's size where this member serves it from (entries, and
    /// key + value bytes): its own memory for a strategy that keeps a copy
    /// on every member, the shared store for one whose data lives outside
    /// the node (every member then reports the same). The default counts
    /// `cache_entries` (one full read); override it when the store can tell.
    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send {
        async move {
            let entries = self.cache_entries(cache).await?;
            let bytes = entries.iter().map(|e| (e.key.len() + e.value.len()) as u64).sum();
            Ok(CacheSize { entries: entries.len() as u64, bytes })
        }
    }

    /// Waits until lock `name` is free, then takes it for `owner`.
    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let _ = (name, owner);
        async { Err(Unsupported::capability("locks").into()) }
    }
    /// As `lock`, giving up after `timeout` (`Ok(false)`).
    fn try_lock(&self, name: &str, owner: &str, timeout: Duration) -> impl Future<Output = PluginResult<bool>> + Send {
        let _ = (name, owner, timeout);
        async { Err(Unsupported::capability("locks").into()) }
    }
    /// Releases lock `name` if `owner` holds it (`Ok(false)` otherwise).
    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send {
        let _ = (name, owner);
        async { Err(Unsupported::capability("locks").into()) }
    }

    /// Runs task `name` on `target` without waiting for answers.
    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        let _ = (target, name, payload);
        async { Err(Unsupported::capability("tasks").into()) }
    }
    /// Runs task `name` on `target`; one reply per target member within `timeout`.
    fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send {
        let _ = (target, name, payload, timeout);
        async { Err(Unsupported::capability("tasks").into()) }
    }

    /// The cluster-wide settings.
    fn settings(&self) -> Vec<(String, String)>;
    /// Sets a cluster-wide setting; every member emits `SettingChanged`.
    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send;

    /// Counters for the admin's metrics (name, value).
    fn stats(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// The optional capabilities this strategy offers. Report
    /// [`Capabilities::ATOMIC`] only with the four atomic operations below
    /// implemented: the host sends them only to a strategy that reports it.
    /// Report [`Capabilities::ENTRY_EVENTS`] only when every change this
    /// member applies (its own writes and those it receives) is reported
    /// through [`ClusterHost::emit_cache_event`]: the host offers clustered
    /// entry listeners only then.
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    /// The value under `key` with its version.
    fn cache_get_versioned(
        &self,
        cache: &str,
        key: &[u8],
    ) -> impl Future<Output = PluginResult<Option<Versioned>>> + Send {
        let _ = (cache, key);
        async { Err(Unsupported::capability("atomic cache operations").into()) }
    }
    /// Writes `value` under `key` only if the key is absent, atomically
    /// with respect to every other write of the key on any member.
    fn cache_put_if_absent(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        let _ = (cache, key, value);
        async { Err(Unsupported::capability("atomic cache operations").into()) }
    }
    /// Writes `value` under `key` only if the entry there is `expected`
    /// (an absent key never matches), atomically per key.
    fn cache_replace_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        let _ = (cache, key, expected, value);
        async { Err(Unsupported::capability("atomic cache operations").into()) }
    }
    /// Removes `key` only if the entry there is `expected`, atomically per key.
    fn cache_remove_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        let _ = (cache, key, expected);
        async { Err(Unsupported::capability("atomic cache operations").into()) }
    }

    /// The fencing number of the grant of lock `name` that `owner` holds
    /// now (`None` when it does not hold it): greater than every number an
    /// earlier grant of the lock got, on any member, across senior changes
    /// and restarts of the lock's store. Report [`Capabilities::FENCED_LOCKS`]
    /// with it; the host asks right after each grant and hands the number
    /// out with the lock, so a resource can refuse a holder older than the
    /// last one it served (docs/cluster.md, "Locks and fencing numbers").
    fn lock_fence(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<Option<u64>>> + Send {
        let _ = (name, owner);
        async { Err(Unsupported::capability("fenced locks").into()) }
    }

    /// Applies `bounds` to `cache` from now on (API 0.1.3; report
    /// [`Capabilities::BOUNDED`] with this and [`cache_put_ttl`](Self::cache_put_ttl)):
    /// evict beyond `max_entries` / `max_bytes` (least recently used first),
    /// expire after `ttl_ms` from the write and after `max_idle_ms` without
    /// a read or write, reporting `Evicted` / `Expired` entry events. Tighter
    /// bounds shrink the cache at once. Refuse a bound this strategy cannot
    /// keep with an error that names it. docs/strategy-authoring.md, rules
    /// `bounded-alone` and `bounded-across-members`.
    fn cache_configure(&self, cache: &str, bounds: CacheBounds) -> impl Future<Output = PluginResult<()>> + Send {
        let _ = (cache, bounds);
        async { Err(Unsupported::capability("bounded caches").into()) }
    }

    /// Writes `value` under `key`, expiring `ttl` after the write whatever
    /// the cache's own time to live (API 0.1.3).
    fn cache_put_ttl(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        let _ = (cache, key, value, ttl);
        async { Err(Unsupported::capability("bounded caches").into()) }
    }

    /// This node has an entry listener on `cache` now (API 0.1.3): the
    /// host calls it when one registers and, for every listened cache,
    /// when the strategy attaches. Resolve once every change made after
    /// it, on any member, will be reported, e.g. once this member's
    /// interest is announced where writers look (redis publishes a
    /// cache's changes only while some member listens to it). The end of
    /// listening is not told: poll [`ClusterHost::cache_listened`]. The
    /// default does nothing (right for a strategy that reports every
    /// change anyway).
    fn cache_listen(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let _ = cache;
        async { Ok(()) }
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

    /// Reports a change of an entry to the host's entry listeners (API
    /// 0.1.2; report [`Capabilities::ENTRY_EVENTS`] when every change is
    /// reported). Never blocks, and never releases a strategy, so it may
    /// be called while holding the lock that orders a key's writes (which
    /// is how the changes of one key reach the host in order).
    pub fn emit_cache_event(&self, event: CacheEvent) {
        self.callbacks.cache_event(event.into());
    }

    /// Whether the host has an entry listener on `cache` now (API 0.1.2):
    /// a strategy that tells only this host of a change may skip building
    /// the event when it has none (a listener registered later gets the
    /// changes from then on). Never blocks.
    pub fn cache_listened(&self, cache: &str) -> bool {
        self.callbacks.cache_listened(cache.into())
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

/// A strategy's error as it crosses: [`Unsupported`] keeps its kind.
fn boundary_error(error: Box<dyn std::error::Error + Send + Sync>) -> PluginError {
    match error.downcast_ref::<Unsupported>() {
        Some(unsupported) => PluginError::unsupported(unsupported.0.clone()),
        None => PluginError::failed(error.to_string()),
    }
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
            Ok(Poll::Ready(Err(error))) => RErr(boundary_error(error)),
            Err(payload) => RErr(PluginError::panicked(panic_message(payload))),
        };
        // Dropping the future is plugin code too.
        let future = this.future.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(future)));
        Poll::Ready(result)
    }
}

impl<F, M> Drop for Guarded<F, M> {
    fn drop(&mut self) {
        // A future the host stopped waiting for is dropped here, on a host
        // thread: dropping it is plugin code, so it runs with panics caught,
        // and inside the plugin's runtime context while the plugin runs (a
        // drop that spawns or touches a timer needs it). Once the plugin has
        // stopped there is no runtime to enter: it is dropped without one.
        let Some(future) = self.future.take() else { return };
        let gate = self.stopped.clone();
        let open = gate.enter();
        let _entered = open.as_ref().map(|_| self.runtime.enter());
        let _ = catch_unwind(AssertUnwindSafe(move || drop(future)));
    }
}

impl<S: Strategy> StrategyAdapter<S> {
    /// Wraps the plugin's future, which `make` builds from the strategy
    /// (it runs, guarded, at the first poll: building it is plugin code).
    fn call<T, U, F>(
        &self,
        make: impl FnOnce(Arc<S>) -> F,
        map: impl FnOnce(T) -> U + Send + Unpin + 'static,
    ) -> FfiFuture<RResult<U, PluginError>>
    where
        F: Future<Output = PluginResult<T>> + Send + 'static,
        T: 'static,
        U: 'static,
    {
        if self.stopped.enter().is_none() {
            let error = stopped_error();
            return async move { RErr(error) }.into_ffi();
        }
        Guarded {
            runtime: self.runtime.clone(),
            stopped: self.stopped.clone(),
            future: Some(Box::pin(make(Arc::clone(&self.inner)))),
            map: Some(map),
        }
        .into_ffi()
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
        self.call(|s| async move { s.start_clustering().await }, unchanged)
    }

    fn stop_clustering(&self) -> Fut<()> {
        self.call(|s| async move { s.stop_clustering().await }, unchanged)
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
        let convert = |v: Option<Vec<u8>>| -> ROption<RVec<u8>> { v.map(RVec::from).into() };
        // A read from the strategy's own memory: answered here, no future built.
        if let Some(answer) = self.sync(|s| s.cache_get_now(cache.as_str(), key.as_slice()), None) {
            let answer = match answer {
                Ok(value) => ROk(convert(value)),
                Err(error) => RErr(boundary_error(error)),
            };
            return async move { answer }.into_ffi();
        }
        let (cache, key) = (cache.as_str().to_owned(), key.to_vec());
        self.call(move |s| async move { s.cache_get(&cache, &key).await }, convert)
    }

    fn cache_put(&self, cache: RStr<'_>, key: RVec<u8>, value: RVec<u8>) -> Fut<()> {
        let (cache, key, value) = (cache.as_str().to_owned(), key.into_vec(), value.into_vec());
        self.call(move |s| async move { s.cache_put(&cache, key, value).await }, unchanged)
    }

    fn cache_remove(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<bool> {
        let (cache, key) = (cache.as_str().to_owned(), key.to_vec());
        self.call(move |s| async move { s.cache_remove(&cache, &key).await }, unchanged)
    }

    fn cache_contains(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<bool> {
        let (cache, key) = (cache.as_str().to_owned(), key.to_vec());
        self.call(move |s| async move { s.cache_contains(&cache, &key).await }, unchanged)
    }

    fn cache_size(&self, cache: RStr<'_>) -> Fut<u64> {
        let cache = cache.as_str().to_owned();
        self.call(move |s| async move { s.cache_size(&cache).await }, unchanged)
    }

    fn cache_clear(&self, cache: RStr<'_>) -> Fut<()> {
        let cache = cache.as_str().to_owned();
        self.call(move |s| async move { s.cache_clear(&cache).await }, unchanged)
    }

    fn cache_keys(&self, cache: RStr<'_>) -> Fut<RVec<RVec<u8>>> {
        let cache = cache.as_str().to_owned();
        self.call(
            move |s| async move { s.cache_keys(&cache).await },
            |keys: Vec<Vec<u8>>| keys.into_iter().map(RVec::from).collect(),
        )
    }

    fn cache_get_all(&self, cache: RStr<'_>, keys: RVec<RVec<u8>>) -> Fut<RVec<ROption<RVec<u8>>>> {
        let (cache, keys) = (cache.as_str().to_owned(), keys.into_iter().map(Into::into).collect());
        self.call(
            move |s| async move { s.cache_get_all(&cache, keys).await },
            |values: Vec<Option<Vec<u8>>>| values.into_iter().map(|v| v.map(RVec::from).into()).collect(),
        )
    }

    fn cache_put_all(&self, cache: RStr<'_>, entries: RVec<FfiEntry>) -> Fut<()> {
        let (cache, entries) = (cache.as_str().to_owned(), entries.into_iter().map(Into::into).collect());
        self.call(move |s| async move { s.cache_put_all(&cache, entries).await }, unchanged)
    }

    fn cache_merge(&self, cache: RStr<'_>, entries: RVec<FfiEntry>) -> Fut<()> {
        let (cache, entries) = (cache.as_str().to_owned(), entries.into_iter().map(Into::into).collect());
        self.call(move |s| async move { s.cache_merge(&cache, entries).await }, unchanged)
    }

    fn cache_entries(&self, cache: RStr<'_>) -> Fut<RVec<FfiEntry>> {
        let cache = cache.as_str().to_owned();
        self.call(
            move |s| async move { s.cache_entries(&cache).await },
            |e: Vec<Entry>| e.into_iter().map(Into::into).collect(),
        )
    }

    fn cache_names(&self) -> Fut<RVec<RString>> {
        self.call(|s| async move { s.cache_names().await }, |n: Vec<String>| n.into_iter().map(Into::into).collect())
    }

    fn cache_local_size(&self, cache: RStr<'_>) -> Fut<FfiCacheSize> {
        let cache = cache.as_str().to_owned();
        self.call(move |s| async move { s.cache_local_size(&cache).await }, FfiCacheSize::from)
    }

    fn lock(&self, name: RStr<'_>, owner: RStr<'_>) -> Fut<()> {
        let (name, owner) = (name.as_str().to_owned(), owner.as_str().to_owned());
        self.call(move |s| async move { s.lock(&name, &owner).await }, unchanged)
    }

    fn try_lock(&self, name: RStr<'_>, owner: RStr<'_>, timeout_ms: u64) -> Fut<bool> {
        let (name, owner) = (name.as_str().to_owned(), owner.as_str().to_owned());
        let timeout = Duration::from_millis(timeout_ms);
        self.call(move |s| async move { s.try_lock(&name, &owner, timeout).await }, unchanged)
    }

    fn unlock(&self, name: RStr<'_>, owner: RStr<'_>) -> Fut<bool> {
        let (name, owner) = (name.as_str().to_owned(), owner.as_str().to_owned());
        self.call(move |s| async move { s.unlock(&name, &owner).await }, unchanged)
    }

    fn send_task(&self, target: FfiTarget, name: RStr<'_>, payload: RVec<u8>) -> Fut<()> {
        let Some(target) = target.decode() else { return unknown_kind("a task target") };
        let (name, payload) = (name.as_str().to_owned(), payload.into_vec());
        self.call(move |s| async move { s.send_task(target, &name, payload).await }, unchanged)
    }

    fn call_task(
        &self,
        target: FfiTarget,
        name: RStr<'_>,
        payload: RVec<u8>,
        timeout_ms: u64,
    ) -> Fut<RVec<FfiTaskReply>> {
        let Some(target) = target.decode() else { return unknown_kind("a task target") };
        let (name, payload) = (name.as_str().to_owned(), payload.into_vec());
        let timeout = Duration::from_millis(timeout_ms);
        self.call(
            move |s| async move { s.call_task(target, &name, payload, timeout).await },
            |r: Vec<TaskReply>| r.into_iter().map(Into::into).collect(),
        )
    }

    fn settings(&self) -> RVec<Tuple2<RString, RString>> {
        self.sync(|s| s.settings(), Vec::new()).into_iter().map(|(k, v)| Tuple2(k.into(), v.into())).collect()
    }

    fn put_setting(&self, key: RStr<'_>, value: RStr<'_>) -> Fut<()> {
        let (key, value) = (key.as_str().to_owned(), value.as_str().to_owned());
        self.call(move |s| async move { s.put_setting(&key, &value).await }, unchanged)
    }

    fn stats(&self) -> RVec<Tuple2<RString, u64>> {
        self.sync(|s| s.stats(), Vec::new()).into_iter().map(|(k, v)| Tuple2(k.into(), v)).collect()
    }

    fn capabilities(&self) -> u64 {
        self.sync(|s| s.capabilities(), Capabilities::NONE).0
    }

    fn cache_get_versioned(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<ROption<FfiVersioned>> {
        let (cache, key) = (cache.as_str().to_owned(), key.to_vec());
        self.call(
            move |s| async move { s.cache_get_versioned(&cache, &key).await },
            |v: Option<Versioned>| v.map(FfiVersioned::from).into(),
        )
    }

    fn cache_put_if_absent(&self, cache: RStr<'_>, key: RVec<u8>, value: RVec<u8>) -> Fut<FfiCasOutcome> {
        let (cache, key, value) = (cache.as_str().to_owned(), key.into_vec(), value.into_vec());
        self.call(move |s| async move { s.cache_put_if_absent(&cache, key, value).await }, FfiCasOutcome::from)
    }

    fn cache_replace_if(
        &self,
        cache: RStr<'_>,
        key: RVec<u8>,
        expected: FfiExpected,
        value: RVec<u8>,
    ) -> Fut<FfiCasOutcome> {
        let Some(expected) = expected.decode() else { return unknown_kind("a kind of expected entry") };
        let (cache, key, value) = (cache.as_str().to_owned(), key.into_vec(), value.into_vec());
        self.call(move |s| async move { s.cache_replace_if(&cache, key, expected, value).await }, FfiCasOutcome::from)
    }

    fn cache_remove_if(&self, cache: RStr<'_>, key: RVec<u8>, expected: FfiExpected) -> Fut<FfiCasOutcome> {
        let Some(expected) = expected.decode() else { return unknown_kind("a kind of expected entry") };
        let (cache, key) = (cache.as_str().to_owned(), key.into_vec());
        self.call(move |s| async move { s.cache_remove_if(&cache, key, expected).await }, FfiCasOutcome::from)
    }

    fn lock_fence(&self, name: RStr<'_>, owner: RStr<'_>) -> Fut<u64> {
        let (name, owner) = (name.as_str().to_owned(), owner.as_str().to_owned());
        self.call(move |s| async move { s.lock_fence(&name, &owner).await }, |fence: Option<u64>| fence.unwrap_or(0))
    }

    fn cache_get_sync(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> ROption<RResult<ROption<RVec<u8>>, PluginError>> {
        match self.sync(|s| s.cache_get_now(cache.as_str(), key.as_slice()), None) {
            None => ROption::RNone,
            Some(Ok(value)) => ROption::RSome(ROk(value.map(RVec::from).into())),
            Some(Err(error)) => ROption::RSome(RErr(boundary_error(error))),
        }
    }

    fn cache_configure(&self, cache: RStr<'_>, bounds: FfiCacheBounds) -> Fut<()> {
        let (cache, bounds) = (cache.as_str().to_owned(), CacheBounds::from(bounds));
        self.call(move |s| async move { s.cache_configure(&cache, bounds).await }, unchanged)
    }

    fn cache_put_ttl(&self, cache: RStr<'_>, key: RVec<u8>, value: RVec<u8>, ttl_ms: u64) -> Fut<()> {
        let (cache, key, value) = (cache.as_str().to_owned(), key.into_vec(), value.into_vec());
        let ttl = Duration::from_millis(ttl_ms);
        self.call(move |s| async move { s.cache_put_ttl(&cache, key, value, ttl).await }, unchanged)
    }

    fn cache_listen(&self, cache: RStr<'_>) -> Fut<()> {
        let cache = cache.as_str().to_owned();
        self.call(move |s| async move { s.cache_listen(&cache).await }, unchanged)
    }
}

/// The answer to a call carrying a kind this plugin does not know (`what`).
fn unknown_kind<T: 'static>(what: &'static str) -> Fut<T> {
    async move { RErr(PluginError::failed(format!("the host sent {what} this plugin does not know; upgrade the plugin"))) }
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
