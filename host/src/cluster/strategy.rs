//! A strategy as host code calls it, whichever it is: a plugin's behind the
//! ABI boundary (boundary types in, Rust types and [`ClusterError`]s out), or
//! the built-in standalone one, called directly through the same
//! [`Strategy`] contract. Every cache, task and lock call goes through here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RVec};
use clusterhost_plugin_api::cluster::{
    now_ms, CacheBounds, CacheSize, Capabilities, CasOutcome, Entry, Expected, Member, StrategyBox, TaskReply,
    TaskTarget, Versioned,
};
use clusterhost_plugin_api::local::LocalCache;
use clusterhost_plugin_api::{PluginError, PluginErrorKind, PluginResult, Strategy, Unsupported};

use super::standalone::Standalone;
use super::ClusterError;

/// A strategy, with the plugin it came from (`standalone` for the built-in one).
pub struct StrategyRef {
    /// The plugin id, for messages and to match a detach.
    pub plugin: String,
    /// The plugin's version, for messages.
    pub version: String,
    /// What it offers beyond the basic contract, asked once: 0 for a
    /// plugin built before the contract had the question (API 0.1.1).
    capabilities: Capabilities,
    inner: Imp,
}

/// Which implementation answers.
enum Imp {
    /// A plugin's strategy, across the boundary.
    Plugin(StrategyBox),
    /// The host's own: this node alone.
    Standalone(Standalone),
}

/// Calls `$method` on whichever implementation `$self` holds: `$plugin` is
/// the boundary call, `$builtin` the direct one (a [`Strategy`] future).
/// `=> $convert` turns the boundary's value into the Rust one.
macro_rules! either {
    ($self:ident, $op:literal, |$p:ident| $plugin:expr, |$b:ident| $builtin:expr) => {
        either!($self, $op, |$p| $plugin => |v| v, |$b| $builtin)
    };
    ($self:ident, $op:literal, |$p:ident| $plugin:expr => $convert:expr, |$b:ident| $builtin:expr) => {
        match &$self.inner {
            Imp::Plugin($p) => $plugin.await.into_result().map($convert).map_err(|e| $self.error($op, e)),
            Imp::Standalone($b) => $self.builtin($op, $builtin).await,
        }
    };
    // A per-cache call: the standalone strategy's storage for the cache,
    // when the caller resolved it, answers directly (`|$l| $local`).
    ($self:ident, $op:literal, $cache:ident, |$p:ident| $plugin:expr $(=> $convert:expr)?, |$b:ident| $builtin:expr, |$l:ident| $local:expr) => {
        match (&$self.inner, &$cache.local) {
            (Imp::Standalone(_), Some($l)) => Ok($local),
            _ => either!($self, $op, |$p| $plugin $(=> $convert)?, |$b| $builtin),
        }
    };
}

/// A cache as the host names it to a strategy: its name and, for a handle
/// made by the cache factory, the standalone strategy's storage for it, so a
/// call served standalone skips finding the cache by name (a plugin's
/// strategy always gets the name).
pub struct CacheRef {
    name: String,
    local: Option<Arc<LocalCache>>,
}

impl CacheRef {
    /// The cache `name`, found by name on every call.
    pub fn named(name: &str) -> Self {
        CacheRef { name: name.to_string(), local: None }
    }

    /// The cache `name`, with the standalone strategy's storage for it.
    pub(crate) fn resolved(name: &str, local: Arc<LocalCache>) -> Self {
        CacheRef { name: name.to_string(), local: Some(local) }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl StrategyRef {
    /// A plugin's strategy.
    pub fn new(plugin: String, version: String, inner: StrategyBox) -> Self {
        // A plugin built before API 0.1.1 lacks the method: abi_stable runs
        // the contract's default body, which answers 0.
        let capabilities = Capabilities(inner.capabilities());
        StrategyRef { plugin, version, capabilities, inner: Imp::Plugin(inner) }
    }

    /// The built-in standalone strategy.
    pub(crate) fn standalone(strategy: Standalone) -> Self {
        StrategyRef {
            plugin: "standalone".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: strategy.capabilities(),
            inner: Imp::Standalone(strategy),
        }
    }

    /// The standalone strategy's storage for cache `name` (made if new);
    /// `None` for a plugin's strategy.
    pub(crate) fn standalone_cache(&self, name: &str) -> Option<Arc<LocalCache>> {
        match &self.inner {
            Imp::Standalone(b) => Some(b.cache(name)),
            Imp::Plugin(_) => None,
        }
    }

    /// Removes the standalone strategy's expired entries; 0 for a plugin's.
    pub(crate) fn sweep_standalone(&self) -> usize {
        match &self.inner {
            Imp::Standalone(b) => b.sweep(),
            Imp::Plugin(_) => 0,
        }
    }

    /// Whether this is the built-in standalone strategy (the node is alone).
    pub fn is_standalone(&self) -> bool {
        matches!(self.inner, Imp::Standalone(_))
    }

    async fn builtin<T>(
        &self,
        op: &'static str,
        future: impl Future<Output = PluginResult<T>>,
    ) -> Result<T, ClusterError> {
        future.await.map_err(|e| match e.downcast_ref::<Unsupported>() {
            Some(unsupported) => self.error(op, PluginError::unsupported(unsupported.0.clone())),
            None => self.error(op, PluginError::failed(e.to_string())),
        })
    }

    /// `plugin version`, for messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.plugin, self.version)
    }

    fn error(&self, op: &'static str, e: PluginError) -> ClusterError {
        if e.is_unsupported() {
            return ClusterError::Unsupported { plugin: self.label(), op, message: e.detail().to_string() };
        }
        ClusterError::Strategy {
            plugin: self.label(),
            op,
            panicked: e.kind == PluginErrorKind::Panicked,
            message: e.message.into(),
        }
    }

    /// What the strategy offers beyond the basic contract.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Refuses `op` unless the strategy reports `wanted`, naming the
    /// strategy and what it lacks (an older plugin is never called for a
    /// method its build does not have).
    fn require(
        &self,
        wanted: Capabilities,
        what: &'static str,
        op: &'static str,
        since: &'static str,
    ) -> Result<(), ClusterError> {
        if self.capabilities.contains(wanted) {
            Ok(())
        } else {
            Err(ClusterError::Lacks { plugin: self.label(), what, op, since })
        }
    }

    fn require_atomic(&self, op: &'static str) -> Result<(), ClusterError> {
        self.require(Capabilities::ATOMIC, "atomic operations", op, "0.1.1")
    }

    /// Refuses a clustered entry listener unless the strategy reports
    /// every change it applies (`ENTRY_EVENTS`, API 0.1.2).
    pub fn require_entry_events(&self, op: &'static str) -> Result<(), ClusterError> {
        self.require(Capabilities::ENTRY_EVENTS, "entry events", op, "0.1.2")
    }

    /// The value under `key` with its version.
    pub async fn get_versioned(&self, cache: &CacheRef, key: &[u8]) -> Result<Option<Versioned>, ClusterError> {
        self.require_atomic("cache get_versioned")?;
        let name = cache.name();
        either!(
            self,
            "cache get_versioned",
            cache,
            |p| p.cache_get_versioned(RStr::from_str(name), RSlice::from_slice(key)) => |v| v.into_option().map(Into::into),
            |b| b.cache_get_versioned(name, key),
            |l| l.get_versioned(key)
        )
    }

    /// Writes `value` under `key` if the key is absent, atomically.
    pub async fn put_if_absent(
        &self,
        cache: &CacheRef,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<CasOutcome, ClusterError> {
        self.require_atomic("cache put_if_absent")?;
        let name = cache.name();
        either!(
            self,
            "cache put_if_absent",
            cache,
            |p| p.cache_put_if_absent(RStr::from_str(name), key.into(), value.into()) => Into::into,
            |b| b.cache_put_if_absent(name, key, value),
            |l| l.put_if_absent(key, value, now_ms())
        )
    }

    /// Writes `value` under `key` if the entry there is `expected`, atomically.
    pub async fn replace_if(
        &self,
        cache: &CacheRef,
        key: Vec<u8>,
        expected: Expected,
        value: Vec<u8>,
    ) -> Result<CasOutcome, ClusterError> {
        self.require_atomic("cache replace_if")?;
        let name = cache.name();
        either!(
            self,
            "cache replace_if",
            cache,
            |p| p.cache_replace_if(RStr::from_str(name), key.into(), expected.into(), value.into()) => Into::into,
            |b| b.cache_replace_if(name, key, expected, value),
            |l| l.replace_if(key, &expected, value, now_ms())
        )
    }

    /// Removes `key` if the entry there is `expected`, atomically.
    pub async fn remove_if(
        &self,
        cache: &CacheRef,
        key: Vec<u8>,
        expected: Expected,
    ) -> Result<CasOutcome, ClusterError> {
        self.require_atomic("cache remove_if")?;
        let name = cache.name();
        either!(
            self,
            "cache remove_if",
            cache,
            |p| p.cache_remove_if(RStr::from_str(name), key.into(), expected.into()) => Into::into,
            |b| b.cache_remove_if(name, key, expected),
            |l| l.remove_if(key, &expected)
        )
    }

    /// Joins the cluster (a no-op for standalone).
    pub async fn start_clustering(&self) -> Result<(), ClusterError> {
        either!(self, "start_clustering", |p| p.start_clustering(), |b| b.start_clustering())
    }

    /// Leaves the cluster (a no-op for standalone).
    pub async fn stop_clustering(&self) -> Result<(), ClusterError> {
        either!(self, "stop_clustering", |p| p.stop_clustering(), |b| b.stop_clustering())
    }

    /// The members, in join order (empty while not joined, and always for standalone).
    pub fn members(&self) -> Vec<Member> {
        match &self.inner {
            Imp::Plugin(p) => p.members().into_iter().map(Into::into).collect(),
            Imp::Standalone(b) => b.members(),
        }
    }

    /// The senior member (none while not joined, and always for standalone).
    pub fn senior_member(&self) -> Option<String> {
        match &self.inner {
            Imp::Plugin(p) => p.senior_member().into_option().map(Into::into),
            Imp::Standalone(b) => b.senior_member(),
        }
    }

    /// The cluster's time (ms since the epoch).
    pub fn cluster_time_ms(&self) -> u64 {
        match &self.inner {
            Imp::Plugin(p) => p.cluster_time_ms(),
            Imp::Standalone(b) => b.cluster_time_ms(),
        }
    }

    /// The standalone strategy's own copy of `cache` (a resolved cache),
    /// read in place: no future and no error to build, so the standalone
    /// read path hands the caller a reference in a register.
    #[inline]
    pub fn local_of<'a>(&self, cache: &'a CacheRef) -> Option<&'a LocalCache> {
        match (&self.inner, &cache.local) {
            (Imp::Standalone(_), Some(local)) => Some(local),
            _ => None,
        }
    }

    /// The value under `key` if the strategy has it at hand without
    /// waiting (the standalone strategy, through a resolved cache); `None`
    /// when the answer needs [`get`](Self::get). The hot read path asks
    /// this first, so an in-memory answer builds no async state.
    pub fn get_now(&self, cache: &CacheRef, key: &[u8]) -> Option<Result<Option<Vec<u8>>, ClusterError>> {
        match (&self.inner, &cache.local) {
            (Imp::Standalone(_), Some(local)) => Some(Ok(local.get(key))),
            // API 0.1.3: answered on this thread, no future; an older
            // plugin's vtable lacks the method and its default says "ask get".
            (Imp::Plugin(p), _) => match p.cache_get_sync(RStr::from_str(cache.name()), RSlice::from_slice(key)) {
                ROption::RNone => None,
                ROption::RSome(RResult::ROk(value)) => Some(Ok(value.into_option().map(Into::into))),
                ROption::RSome(RResult::RErr(e)) => Some(Err(self.error("cache get", e))),
            },
            _ => None,
        }
    }

    /// The value under `key`.
    pub async fn get(&self, cache: &CacheRef, key: &[u8]) -> Result<Option<Vec<u8>>, ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache get",
            cache,
            |p| p.cache_get(RStr::from_str(name), RSlice::from_slice(key)) => |v| v.into_option().map(Into::into),
            |b| b.cache_get(name, key),
            |l| l.get(key)
        )
    }

    /// Writes `value` under `key`.
    pub async fn put(&self, cache: &CacheRef, key: Vec<u8>, value: Vec<u8>) -> Result<(), ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache put",
            cache,
            |p| p.cache_put(RStr::from_str(name), key.into(), value.into()),
            |b| b.cache_put(name, key, value),
            |l| l.put(key, value, now_ms())
        )
    }

    /// Writes `value` under `key`, expiring `ttl` after the write
    /// (refused for a strategy without bounded caches, API 0.1.3).
    pub async fn put_ttl(
        &self,
        cache: &CacheRef,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        self.require_bounded("cache put with a time to live")?;
        let name = cache.name();
        let ttl_ms = clusterhost_plugin_api::cluster::millis(ttl).max(1);
        either!(
            self,
            "cache put with a time to live",
            cache,
            |p| p.cache_put_ttl(RStr::from_str(name), key.into(), value.into(), ttl_ms),
            |b| b.cache_put_ttl(name, key, value, ttl),
            |l| l.put_ttl(key, value, now_ms(), ttl_ms)
        )
    }

    /// Applies `bounds` to cache `name` (refused for a strategy without
    /// bounded caches, API 0.1.3).
    pub async fn configure(&self, name: &str, bounds: CacheBounds) -> Result<(), ClusterError> {
        self.require_bounded("cache bounds")?;
        either!(self, "cache bounds", |p| p.cache_configure(RStr::from_str(name), bounds.into()), |b| b
            .cache_configure(name, bounds))
    }

    /// Tells the strategy this node listens to `cache` now (API 0.1.3):
    /// it returns once changes made after it, on any member, are reported.
    /// The standalone strategy tells every change anyway.
    pub async fn listen(&self, name: &str) -> Result<(), ClusterError> {
        match &self.inner {
            Imp::Plugin(p) => {
                p.cache_listen(RStr::from_str(name)).await.into_result().map_err(|e| self.error("cache listen", e))
            }
            Imp::Standalone(_) => Ok(()),
        }
    }

    /// When each of `keys` expires as this member sees it (ms since the
    /// epoch; `None`: never, or nothing there), a look that is not a use
    /// (refused for a strategy without entry times, API 0.1.4).
    pub async fn expiries(&self, cache: &CacheRef, keys: Vec<Vec<u8>>) -> Result<Vec<Option<u64>>, ClusterError> {
        self.require(Capabilities::ENTRY_TIMES, "entry times", "cache entry times", "0.1.4")?;
        let name = cache.name();
        either!(
            self,
            "cache entry times",
            cache,
            |p| p.cache_expiries(RStr::from_str(name), keys.iter().map(|k| RVec::from(k.as_slice())).collect())
                => |at: RVec<u64>| at.into_iter().map(|at| (at != 0).then_some(at)).collect(),
            |b| b.cache_expiries(name, keys),
            |l| l.expiries(&keys)
        )
    }

    /// This member's (evictions, expiries) of `cache` since it started,
    /// each `None` when the strategy does not count it (before API 0.1.4).
    pub fn removed_by_bounds_of(&self, cache: &str) -> (Option<u64>, Option<u64>) {
        let counts: Vec<(String, u64)> = match &self.inner {
            Imp::Plugin(p) => p.cache_counts(RStr::from_str(cache)).into_iter().map(|t| (t.0.into(), t.1)).collect(),
            Imp::Standalone(b) => b.cache_counts(cache),
        };
        let find = |name: &str| counts.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        (find("evictions"), find("expiries"))
    }

    /// Refuses a bound or a time to live unless the strategy reports
    /// `BOUNDED` (API 0.1.3).
    pub fn require_bounded(&self, op: &'static str) -> Result<(), ClusterError> {
        self.require(Capabilities::BOUNDED, "bounded caches", op, "0.1.3")
    }

    /// Removes `key`; true if it was there.
    pub async fn remove(&self, cache: &CacheRef, key: &[u8]) -> Result<bool, ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache remove",
            cache,
            |p| p.cache_remove(RStr::from_str(name), RSlice::from_slice(key)),
            |b| b.cache_remove(name, key),
            |l| l.remove(key)
        )
    }

    /// Whether `key` is present.
    pub async fn contains(&self, cache: &CacheRef, key: &[u8]) -> Result<bool, ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache contains",
            cache,
            |p| p.cache_contains(RStr::from_str(name), RSlice::from_slice(key)),
            |b| b.cache_contains(name, key),
            |l| l.contains(key)
        )
    }

    /// Entries in the cache (the whole cluster's).
    pub async fn size(&self, cache: &CacheRef) -> Result<u64, ClusterError> {
        let name = cache.name();
        either!(self, "cache size", cache, |p| p.cache_size(RStr::from_str(name)), |b| b.cache_size(name), |l| l.len())
    }

    /// Removes every entry.
    pub async fn clear(&self, cache: &CacheRef) -> Result<(), ClusterError> {
        let name = cache.name();
        either!(self, "cache clear", cache, |p| p.cache_clear(RStr::from_str(name)), |b| b.cache_clear(name), |l| l
            .clear())
    }

    /// Every key (the whole cluster's).
    pub async fn keys(&self, cache: &CacheRef) -> Result<Vec<Vec<u8>>, ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache keys",
            cache,
            |p| p.cache_keys(RStr::from_str(name)) => |k| k.into_iter().map(Into::into).collect(),
            |b| b.cache_keys(name),
            |l| l.keys()
        )
    }

    /// The values under `keys`, in order.
    pub async fn get_all(&self, cache: &CacheRef, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache get_all",
            cache,
            |p| p.cache_get_all(RStr::from_str(name), keys.into_iter().map(Into::into).collect::<RVec<RVec<u8>>>())
                => |v| v.into_iter().map(|v| v.into_option().map(Into::into)).collect(),
            |b| b.cache_get_all(name, keys),
            |l| l.get_all(&keys)
        )
    }

    /// Writes every entry (an entry with version 0 gets the time of the call).
    pub async fn put_all(&self, cache: &CacheRef, entries: Vec<Entry>) -> Result<(), ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache put_all",
            cache,
            |p| p.cache_put_all(RStr::from_str(name), entries.into_iter().map(Into::into).collect()),
            |b| b.cache_put_all(name, entries),
            |l| l.put_all(entries, now_ms())
        )
    }

    /// Merges `entries` by the strategy's merge policy.
    pub async fn merge(&self, cache: &CacheRef, entries: Vec<Entry>) -> Result<(), ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache merge",
            cache,
            |p| p.cache_merge(RStr::from_str(name), entries.into_iter().map(Into::into).collect()),
            |b| b.cache_merge(name, entries),
            |l| l.merge(entries)
        )
    }

    /// Every entry this member holds, with its version.
    pub async fn entries(&self, cache: &CacheRef) -> Result<Vec<Entry>, ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache entries",
            cache,
            |p| p.cache_entries(RStr::from_str(name)) => |e| e.into_iter().map(Into::into).collect(),
            |b| b.cache_entries(name),
            |l| l.entries()
        )
    }

    pub async fn cache_names(&self) -> Result<Vec<String>, ClusterError> {
        either!(
            self,
            "cache names",
            |p| p.cache_names() => |n| n.into_iter().map(Into::into).collect(),
            |b| b.cache_names()
        )
    }

    /// Entries and bytes this member holds.
    pub async fn local_size(&self, cache: &CacheRef) -> Result<CacheSize, ClusterError> {
        let name = cache.name();
        either!(
            self,
            "cache size",
            cache,
            |p| p.cache_local_size(RStr::from_str(name)) => Into::into,
            |b| b.cache_local_size(name),
            |l| l.size()
        )
    }

    pub async fn lock(&self, name: &str, owner: &str) -> Result<(), ClusterError> {
        either!(self, "lock", |p| p.lock(RStr::from_str(name), RStr::from_str(owner)), |b| b.lock(name, owner))
    }

    pub async fn try_lock(&self, name: &str, owner: &str, timeout: Duration) -> Result<bool, ClusterError> {
        let ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        either!(self, "try_lock", |p| p.try_lock(RStr::from_str(name), RStr::from_str(owner), ms), |b| b
            .try_lock(name, owner, timeout))
    }

    /// The fencing number of `owner`'s grant of lock `name` (`None`:
    /// `owner` no longer holds it); refused for a strategy without fenced locks.
    pub async fn lock_fence(&self, name: &str, owner: &str) -> Result<Option<u64>, ClusterError> {
        self.require(Capabilities::FENCED_LOCKS, "fenced locks", "lock_fence", "0.1.2")?;
        either!(self, "lock_fence", |p| p.lock_fence(RStr::from_str(name), RStr::from_str(owner)) => |f| (f != 0).then_some(f), |b| b
            .lock_fence(name, owner))
    }

    pub async fn unlock(&self, name: &str, owner: &str) -> Result<bool, ClusterError> {
        either!(self, "unlock", |p| p.unlock(RStr::from_str(name), RStr::from_str(owner)), |b| b.unlock(name, owner))
    }

    pub async fn send_task(&self, target: TaskTarget, name: &str, payload: Vec<u8>) -> Result<(), ClusterError> {
        either!(self, "send_task", |p| p.send_task(target.into(), RStr::from_str(name), payload.into()), |b| b
            .send_task(target, name, payload))
    }

    pub async fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<TaskReply>, ClusterError> {
        let ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        either!(
            self,
            "call_task",
            |p| p.call_task(target.into(), RStr::from_str(name), payload.into(), ms)
                => |r| r.into_iter().map(Into::into).collect(),
            |b| b.call_task(target, name, payload, timeout)
        )
    }

    /// The cluster-wide settings the strategy knows.
    pub fn settings(&self) -> Vec<(String, String)> {
        match &self.inner {
            Imp::Plugin(p) => p.settings().into_iter().map(|t| (t.0.into(), t.1.into())).collect(),
            Imp::Standalone(b) => b.settings(),
        }
    }

    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), ClusterError> {
        either!(self, "put_setting", |p| p.put_setting(RStr::from_str(key), RStr::from_str(value)), |b| b
            .put_setting(key, value))
    }

    /// The strategy's named counters.
    pub fn stats(&self) -> Vec<(String, u64)> {
        match &self.inner {
            Imp::Plugin(p) => p.stats().into_iter().map(|t| (t.0.into(), t.1)).collect(),
            Imp::Standalone(b) => b.stats(),
        }
    }
}
