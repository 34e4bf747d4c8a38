//! The cache factory: named caches, served by the standalone strategy while
//! this node is alone and by the clustered one while it is in a cluster;
//! entries move both ways on this node's join and leave, so none is lost.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clusterhost_plugin_api::cluster::{now_ms, CacheBounds, Capabilities, CasOutcome, Entry, Expected, Versioned};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::entry_events::{
    Delivery, EntryEventKind, EntryEvents, EntryListener, ListenOptions, ListenScope, ListenerHandle,
};
use super::strategy::{CacheRef, StrategyRef};
use super::{lock, ClusterError};

/// Makes caches; cheap to clone.
#[derive(Clone)]
pub struct CacheFactory {
    inner: Arc<FactoryInner>,
}

struct FactoryInner {
    /// The built-in standalone strategy: holds the entries while alone.
    standalone: Arc<StrategyRef>,
    /// The strategy serving cache calls now. Taken for writing only while
    /// entries move between strategies, so an operation never sees a
    /// half-moved cache. async-lock's, not tokio's: its read is one atomic
    /// each way when no writer waits (tokio's release takes a mutex), and
    /// every cache call takes it.
    serving: async_lock::RwLock<Arc<StrategyRef>>,
    /// Every cache a handle was made for, by name.
    caches: Mutex<HashMap<String, Arc<CacheCore>>>,
    /// Split-brain protection's rules and member count.
    protection: super::protection::Guard,
    /// Every cache's bounds (properties over code) and refusals.
    bounds: Mutex<super::bounds::BoundsTable>,
    /// Held while bounds are sent: one sender at a time, each sending what
    /// is in force when it gets its turn.
    sending: tokio::sync::Mutex<()>,
    /// Set when the manager shuts down: the sweeper ends.
    stopped: std::sync::atomic::AtomicBool,
    /// The entry listeners (the standalone caches tell them every change;
    /// for a strategy without entry events the handles here do).
    entries: Arc<EntryEvents>,
}

/// One cache: how strategies are told which (its name, and the standalone
/// strategy's storage for it) and this member's counters.
struct CacheCore {
    cache: CacheRef,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Atomic operations on this member that did not apply (the entry was
    /// not what they expected): the CAS conflicts of the metrics.
    conflicts: AtomicU64,
}

impl CacheCore {
    /// Counts reads: one atomic add per kind that happened.
    fn count(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.hits.fetch_add(hits, Ordering::Relaxed);
        }
        if misses > 0 {
            self.misses.fetch_add(misses, Ordering::Relaxed);
        }
    }
}

/// One cache's figures on this member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// The cache's name.
    pub name: String,
    /// Whether a clustered strategy holds it (false: this node alone).
    pub clustered: bool,
    /// Entries held by this member.
    pub entries: u64,
    /// Bytes of keys and values held by this member.
    pub bytes: u64,
    /// Reads on this member that found an entry.
    pub hits: u64,
    /// Reads on this member that found none.
    pub misses: u64,
    /// Atomic operations on this member that did not apply (CAS conflicts).
    #[serde(default)]
    pub conflicts: u64,
    /// The cache's bounds, when it has any (and the strategy's refusal of them, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<super::bounds::BoundedCache>,
    /// Entries this member evicted by the cache's size bound since it
    /// started (`None`: its strategy does not count them, before API 0.1.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evictions: Option<u64>,
    /// Entries this member removed as expired since it started (as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiries: Option<u64>,
}

impl CacheFactory {
    /// A factory whose caches `standalone` serves until a join.
    pub(crate) fn new(standalone: Arc<StrategyRef>, entries: Arc<EntryEvents>) -> Self {
        CacheFactory {
            inner: Arc::new(FactoryInner {
                serving: async_lock::RwLock::new(standalone.clone()),
                standalone,
                caches: Mutex::new(HashMap::new()),
                protection: Default::default(),
                bounds: Mutex::default(),
                sending: tokio::sync::Mutex::new(()),
                stopped: std::sync::atomic::AtomicBool::new(false),
                entries,
            }),
        }
    }

    fn core(&self, name: &str) -> Arc<CacheCore> {
        let mut caches = lock(&self.inner.caches);
        caches
            .entry(name.to_string())
            .or_insert_with(|| {
                let cache = match self.inner.standalone.standalone_cache(name) {
                    Some(local) => CacheRef::resolved(name, local),
                    None => CacheRef::named(name),
                };
                Arc::new(CacheCore {
                    cache,
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                    conflicts: AtomicU64::new(0),
                })
            })
            .clone()
    }

    fn names(&self) -> Vec<String> {
        lock(&self.inner.caches).keys().cloned().collect()
    }

    /// The cache `name`, over bytes.
    pub fn raw(&self, name: &str) -> RawCache {
        RawCache { core: self.core(name), factory: self.inner.clone() }
    }

    /// The cache `name`, typed (keys and values encoded with postcard).
    pub fn cache<K: Serialize, V: Serialize + DeserializeOwned>(&self, name: &str) -> Cache<K, V> {
        Cache { raw: self.raw(name), _types: PhantomData }
    }

    /// Replaces split-brain protection's rules (a properties reload).
    pub(crate) fn apply_protection(&self, protection: super::protection::Protection) {
        self.inner.protection.apply(protection);
    }

    /// The members split-brain protection counts (`None`: not clustering).
    pub(crate) fn set_members_seen(&self, members: Option<usize>) {
        self.inner.protection.set_members(members);
    }

    /// The protected caches and where this node stands against each.
    pub fn protection(&self) -> Vec<super::protection::ProtectedCache> {
        self.inner.protection.status()
    }

    /// Replaces the properties' bounds; the caches whose bounds changed, with them.
    pub(crate) fn apply_bounds(
        &self,
        configured: std::collections::BTreeMap<String, super::bounds::BoundsSetting>,
    ) -> Vec<(String, CacheBounds)> {
        lock(&self.inner.bounds).configure(configured)
    }

    /// Sets the bounds code asked for `cache`.
    pub(crate) fn code_bounds(&self, cache: &str, bounds: CacheBounds) {
        lock(&self.inner.bounds).code(cache, bounds);
    }

    /// Every cache with bounds configured (in the properties or in code).
    pub(crate) fn bounded_names(&self) -> Vec<String> {
        lock(&self.inner.bounds).all().into_iter().map(|(name, _)| name).collect()
    }

    /// The bounds in force for `cache` (unbounded when none is configured).
    pub fn bounds_of(&self, cache: &str) -> CacheBounds {
        lock(&self.inner.bounds).of(cache)
    }

    /// Every bounded cache, with a refusal by the strategy in service if any.
    pub fn bounded(&self) -> Vec<super::bounds::BoundedCache> {
        lock(&self.inner.bounds).status()
    }

    /// Forgets the refusals of a strategy that is no longer in service.
    pub(crate) fn clear_refusals(&self) {
        lock(&self.inner.bounds).clear_refusals();
    }

    /// Applies `cache`'s bounds in force (read now, so a later change is
    /// never overwritten by an earlier one: one sender at a time) to this
    /// node's standalone strategy and to `plugin`, the strategy in service
    /// (if any), which gets at most `budget`; a refusal by the plugin is
    /// kept for status, logged, and returned.
    pub(crate) async fn send_bounds(
        &self,
        cache: &str,
        plugin: Option<&StrategyRef>,
        budget: std::time::Duration,
    ) -> Result<(), ClusterError> {
        let _one_at_a_time = self.inner.sending.lock().await;
        let bounds = self.bounds_of(cache);
        self.inner.standalone.configure(cache, bounds).await?;
        let Some(plugin) = plugin else { return Ok(()) };
        if bounds.is_none() && plugin.require_bounded("cache bounds").is_err() {
            // Nothing to apply on a strategy that has no bounds at all.
            lock(&self.inner.bounds).outcome(cache, None);
            return Ok(());
        }
        let outcome = match tokio::time::timeout(budget, plugin.configure(cache, bounds)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ClusterError::Strategy {
                plugin: plugin.label(),
                op: "cache bounds",
                panicked: false,
                message: format!("no answer within {budget:?} (cluster.max.execution.seconds)"),
            }),
        };
        if let Err(e) = &outcome {
            tracing::warn!(cache, strategy = %plugin.label(), "the strategy in service refused the cache's bounds ({bounds}): {e}; this node keeps them only while standalone");
        }
        lock(&self.inner.bounds).outcome(cache, outcome.as_ref().err().map(ToString::to_string));
        outcome
    }

    /// Runs the standalone caches' sweep every `every` until the manager
    /// stops (or every handle to the factory is gone).
    pub(crate) fn spawn_sweeper(&self, every: std::time::Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.stopped.load(Ordering::Relaxed) {
                    return;
                }
                inner.standalone.sweep_standalone();
            }
        });
    }

    /// The manager stopped: the sweeper ends.
    pub(crate) fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
    }

    /// Whether caches are clustered right now.
    pub async fn is_clustered(&self) -> bool {
        !self.inner.serving.read().await.is_standalone()
    }

    /// What the strategy serving caches now offers beyond the basic
    /// operations (atomic operations, ...).
    pub async fn strategy_capabilities(&self) -> Capabilities {
        self.inner.serving.read().await.capabilities()
    }

    /// Whether caches are clustered right now, without waiting: false while
    /// entries are moving (for listeners, which run on the event thread).
    pub fn clustered_now(&self) -> bool {
        self.inner.serving.try_read().is_some_and(|serving| !serving.is_standalone())
    }

    /// Figures for every cache this member knows, by name.
    pub async fn stats(&self) -> Vec<CacheStats> {
        let serving = self.inner.serving.read().await;
        let mut names: BTreeSet<String> = self.names().into_iter().collect();
        names.extend(serving.cache_names().await.unwrap_or_default());
        let mut bounded = self.bounded();
        names.extend(bounded.iter().map(|b| b.cache.clone()));
        let mut stats = Vec::new();
        for name in names {
            let bounds = bounded.iter().position(|b| b.cache == name).map(|i| bounded.swap_remove(i));
            let core = self.core(&name);
            let size = serving.local_size(&core.cache).await.unwrap_or_default();
            let (evictions, expiries) = serving.removed_by_bounds_of(&name);
            stats.push(CacheStats {
                name,
                clustered: !serving.is_standalone(),
                entries: size.entries,
                bytes: size.bytes,
                hits: core.hits.load(Ordering::Relaxed),
                misses: core.misses.load(Ordering::Relaxed),
                conflicts: core.conflicts.load(Ordering::Relaxed),
                bounds,
                evictions,
                expiries,
            });
        }
        stats
    }

    /// This node joined: its standalone entries merge into the clustered
    /// caches (the strategy's merge policy decides between versions), then
    /// operations go to the strategy. On an error nothing changes.
    pub(crate) async fn join(&self, strategy: Arc<StrategyRef>) -> Result<usize, ClusterError> {
        let mut serving = self.inner.serving.write().await;
        let standalone = &self.inner.standalone;
        let cores: Vec<Arc<CacheCore>> = standalone.cache_names().await?.iter().map(|name| self.core(name)).collect();
        let mut moved = 0;
        // This node's entries moving into the cluster: what the strategy
        // reports of them here (origin: this node) is a move, not a change.
        self.inner.entries.set_moving(true);
        let merged = async {
            for core in &cores {
                let entries = standalone.entries(&core.cache).await?;
                if entries.is_empty() {
                    continue;
                }
                let count = entries.len();
                strategy.merge(&core.cache, entries).await?;
                moved += count;
            }
            Ok::<(), ClusterError>(())
        }
        .await;
        if let Err(e) = merged {
            self.inner.entries.set_moving(false);
            return Err(e);
        }
        // Only once every cache merged: the local copies are now in the
        // cluster. A move, not a removal: listeners are not told.
        let mut cleared = Ok(());
        for core in &cores {
            cleared = cleared.and(standalone.clear(&core.cache).await);
        }
        self.inner.entries.set_moving(false);
        cleared?;
        *serving = strategy;
        Ok(moved)
    }

    /// This node leaves: the entries it holds become its standalone caches.
    /// Returns how many entries were kept; a cache the strategy cannot list
    /// is reported and left empty.
    pub(crate) async fn leave(&self) -> usize {
        let mut serving = self.inner.serving.write().await;
        if serving.is_standalone() {
            return 0;
        }
        let mut names: BTreeSet<String> = self.names().into_iter().collect();
        match serving.cache_names().await {
            Ok(more) => names.extend(more),
            Err(e) => tracing::error!("could not list the clustered caches while leaving: {e}"),
        }
        let standalone = &self.inner.standalone;
        let mut kept = 0;
        // Copies of what this node held: moves, not changes (not told).
        self.inner.entries.set_moving(true);
        for name in names {
            let cache = &self.core(&name).cache;
            let copied = match serving.entries(cache).await {
                Ok(entries) => {
                    let count = entries.len();
                    standalone.put_all(cache, entries).await.map(|()| count)
                }
                Err(e) => Err(e),
            };
            match copied {
                Ok(count) => kept += count,
                Err(e) => tracing::error!(cache = %name, "could not copy the cache's entries while leaving: {e}"),
            }
        }
        self.inner.entries.set_moving(false);
        *serving = standalone.clone();
        kept
    }
}

/// A cache over bytes.
#[derive(Clone)]
pub struct RawCache {
    core: Arc<CacheCore>,
    factory: Arc<FactoryInner>,
}

impl RawCache {
    /// Split-brain protection's verdict on a `write` (or read) of this cache now.
    fn protected(&self, write: bool) -> Result<(), ClusterError> {
        self.factory.protection.check(self.core.cache.name(), write)
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        self.core.cache.name()
    }

    /// The value under `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClusterError> {
        self.protected(false)?;
        let serving = self.factory.serving.read().await;
        let value = if let Some(local) = serving.local_of(&self.core.cache) {
            local.get(key)
        } else {
            match serving.get_now(&self.core.cache, key) {
                Some(value) => value?,
                None => serving.get(&self.core.cache, key).await?,
            }
        };
        let hit = value.is_some() as u64;
        self.core.count(hit, 1 - hit);
        Ok(value)
    }

    /// Registers an entry listener on this cache (see [`ListenOptions`]):
    /// `Local` gets the changes made through this member's API, `Clustered`
    /// every change in the cluster with the member it came from, each
    /// key's changes in the order they were applied. It stays registered
    /// across strategy replacements and joins and leaves until dropped. A
    /// `Clustered` one needs a strategy that reports entry events: on one
    /// that does not (built before plugin API 0.1.2) it is refused with
    /// [`ClusterError::Lacks`] naming the strategy and its version.
    pub async fn listen(&self, options: ListenOptions) -> Result<EntryListener, ClusterError> {
        let serving = self.factory.serving.read().await;
        if options.scope == ListenScope::Clustered {
            serving.require_entry_events("a clustered entry listener")?;
        }
        let listener = self.factory.entries.register(self.name(), options);
        // Registered first, so nothing the strategy reports from now on is
        // missed; once it answers, every member's later changes are reported.
        if let Err(e) = serving.listen(self.name()).await {
            tracing::warn!(cache = %self.name(), strategy = %serving.label(), "the strategy could not start reporting the cache's changes for a new listener: {e}; it gets them once the strategy has recovered");
        }
        Ok(listener)
    }

    /// As [`listen`](Self::listen), running `handler` for every delivery on
    /// a task of its own (on the current runtime): a slow handler fills
    /// only its own queue (then events are dropped and it gets
    /// [`Delivery::Lagged`]); a panic is logged and counted and the next
    /// delivery still comes. Dropping the handle unregisters it.
    pub async fn listen_with(
        &self,
        options: ListenOptions,
        handler: impl Fn(&Delivery) + Send + Sync + 'static,
    ) -> Result<ListenerHandle, ClusterError> {
        let listener = self.listen(options).await?;
        Ok(self.factory.entries.run_handler(listener, handler))
    }

    /// Whether this handle must tell local listeners itself: the serving
    /// strategy reports no entry events (built before plugin API 0.1.2).
    fn emulates(&self, serving: &StrategyRef) -> bool {
        !serving.capabilities().contains(Capabilities::ENTRY_EVENTS)
            && self.factory.entries.listened_locally(self.name())
    }

    /// Tells local listeners of a change this handle made (emulation, see
    /// [`emulates`](Self::emulates)): the version is not known (0).
    fn tell(&self, kind: EntryEventKind, key: &[u8], value: Option<&[u8]>, version: u64) {
        let entries = &self.factory.entries;
        entries.dispatch(self.name(), kind, key, value, version, entries.node());
    }

    /// The kind of a write of `key` about to be made, for the emulation: a
    /// read first, so another member's write in between can make an
    /// `added` an `updated` (a strategy with entry events has no such gap).
    async fn kind_of_write(&self, serving: &StrategyRef, key: &[u8]) -> EntryEventKind {
        match serving.contains(&self.core.cache, key).await {
            Ok(true) => EntryEventKind::Updated,
            _ => EntryEventKind::Added,
        }
    }

    /// Tells local listeners of an atomic operation's outcome (emulation).
    fn tell_outcome(&self, key: &[u8], outcome: &CasOutcome, existed: bool) {
        if !outcome.applied {
            return;
        }
        match &outcome.current {
            Some(c) => {
                let kind = if existed { EntryEventKind::Updated } else { EntryEventKind::Added };
                self.tell(kind, key, Some(&c.value), c.version);
            }
            None => self.tell(EntryEventKind::Removed, key, None, 0),
        }
    }

    /// Writes `value` under `key`.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), ClusterError> {
        self.protected(true)?;
        let serving = self.factory.serving.read().await;
        if let Some(local) = serving.local_of(&self.core.cache) {
            // The standalone strategy tells its own changes (it has entry
            // events): written in place, no future.
            local.put(key, value, now_ms());
            return Ok(());
        }
        if !self.emulates(&serving) {
            return serving.put(&self.core.cache, key, value).await;
        }
        let kind = self.kind_of_write(&serving, &key).await;
        serving.put(&self.core.cache, key.clone(), value.clone()).await?;
        self.tell(kind, &key, Some(&value), 0);
        Ok(())
    }

    /// Writes `value` under `key`, expiring `ttl` after the write whatever
    /// the cache's own time to live (refused on a strategy without bounded
    /// caches, built before plugin API 0.1.3).
    pub async fn put_ttl(&self, key: Vec<u8>, value: Vec<u8>, ttl: std::time::Duration) -> Result<(), ClusterError> {
        self.protected(true)?;
        let serving = self.factory.serving.read().await;
        serving.put_ttl(&self.core.cache, key, value, ttl).await
    }

    /// True if the key was present.
    pub async fn remove(&self, key: &[u8]) -> Result<bool, ClusterError> {
        self.protected(true)?;
        let serving = self.factory.serving.read().await;
        let removed = serving.remove(&self.core.cache, key).await?;
        if removed && self.emulates(&serving) {
            self.tell(EntryEventKind::Removed, key, None, 0);
        }
        Ok(removed)
    }

    /// Whether `key` is present.
    pub async fn contains(&self, key: &[u8]) -> Result<bool, ClusterError> {
        self.protected(false)?;
        self.factory.serving.read().await.contains(&self.core.cache, key).await
    }

    /// Entries in the cache (the whole cluster's, while clustered).
    pub async fn len(&self) -> Result<u64, ClusterError> {
        self.protected(false)?;
        self.factory.serving.read().await.size(&self.core.cache).await
    }

    /// Whether the cache holds no entry.
    pub async fn is_empty(&self) -> Result<bool, ClusterError> {
        Ok(self.len().await? == 0)
    }

    /// Removes every entry.
    pub async fn clear(&self) -> Result<(), ClusterError> {
        self.protected(true)?;
        let serving = self.factory.serving.read().await;
        if !self.emulates(&serving) {
            return serving.clear(&self.core.cache).await;
        }
        let keys = serving.keys(&self.core.cache).await?;
        serving.clear(&self.core.cache).await?;
        for key in keys {
            self.tell(EntryEventKind::Removed, &key, None, 0);
        }
        Ok(())
    }

    /// Every key (the whole cluster's, while clustered).
    pub async fn keys(&self) -> Result<Vec<Vec<u8>>, ClusterError> {
        self.protected(false)?;
        self.factory.serving.read().await.keys(&self.core.cache).await
    }

    /// When each of `keys` expires as this member sees it (ms since the
    /// epoch; `None`: never, or nothing there), in order: a look, not a
    /// read (no hit or miss counted, no idle time refreshed). Refused
    /// ([`ClusterError::Lacks`]) by a strategy without entry times (API 0.1.4).
    pub async fn expiries(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<u64>>, ClusterError> {
        self.protected(false)?;
        self.factory.serving.read().await.expiries(&self.core.cache, keys).await
    }

    /// The values under `keys`, in order.
    pub async fn get_all(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, ClusterError> {
        self.protected(false)?;
        let values = self.factory.serving.read().await.get_all(&self.core.cache, keys).await?;
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        self.core.count(hits, values.len() as u64 - hits);
        Ok(values)
    }

    /// Writes every entry, all with the same version.
    pub async fn put_all(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ClusterError> {
        self.protected(true)?;
        let now = now_ms();
        let entries: Vec<Entry> = entries.into_iter().map(|(key, value)| Entry { key, value, version: now }).collect();
        let serving = self.factory.serving.read().await;
        if !self.emulates(&serving) {
            return serving.put_all(&self.core.cache, entries).await;
        }
        let mut told = Vec::with_capacity(entries.len());
        for entry in &entries {
            told.push((self.kind_of_write(&serving, &entry.key).await, entry.key.clone(), entry.value.clone()));
        }
        serving.put_all(&self.core.cache, entries).await?;
        for (kind, key, value) in told {
            self.tell(kind, &key, Some(&value), now);
        }
        Ok(())
    }

    /// Counts an atomic operation that did not apply.
    fn counted(&self, outcome: CasOutcome) -> CasOutcome {
        if !outcome.applied {
            self.core.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// The value under `key` with its version (which changes on every
    /// write of the key: compare it with [`replace_if`](Self::replace_if)).
    pub async fn get_versioned(&self, key: &[u8]) -> Result<Option<Versioned>, ClusterError> {
        self.protected(false)?;
        let found = self.factory.serving.read().await.get_versioned(&self.core.cache, key).await?;
        let hit = found.is_some() as u64;
        self.core.count(hit, 1 - hit);
        Ok(found)
    }

    /// Writes `value` under `key` only if the key is absent, atomically
    /// across the cluster; the outcome carries the entry that is there now.
    pub async fn put_if_absent(&self, key: Vec<u8>, value: Vec<u8>) -> Result<CasOutcome, ClusterError> {
        self.protected(true)?;
        let serving = self.factory.serving.read().await;
        let emulated = self.emulates(&serving).then(|| key.clone());
        let outcome = serving.put_if_absent(&self.core.cache, key, value).await?;
        if let Some(key) = emulated {
            self.tell_outcome(&key, &outcome, false);
        }
        Ok(self.counted(outcome))
    }

    /// Writes `value` under `key` only if the entry there is `expected`
    /// (its bytes, or its version); an absent key never matches.
    pub async fn replace_if(
        &self,
        key: Vec<u8>,
        expected: Expected,
        value: Vec<u8>,
    ) -> Result<CasOutcome, ClusterError> {
        self.protected(true)?;
        let serving = self.factory.serving.read().await;
        let emulated = self.emulates(&serving).then(|| key.clone());
        let outcome = serving.replace_if(&self.core.cache, key, expected, value).await?;
        if let Some(key) = emulated {
            self.tell_outcome(&key, &outcome, true);
        }
        Ok(self.counted(outcome))
    }

    /// Removes `key` only if the entry there is `expected`.
    pub async fn remove_if(&self, key: Vec<u8>, expected: Expected) -> Result<CasOutcome, ClusterError> {
        self.protected(true)?;
        let serving = self.factory.serving.read().await;
        let emulated = self.emulates(&serving).then(|| key.clone());
        let outcome = serving.remove_if(&self.core.cache, key, expected).await?;
        if let Some(key) = emulated {
            self.tell_outcome(&key, &outcome, true);
        }
        Ok(self.counted(outcome))
    }

    /// Sets `key` to `change(current value)` atomically: reads the entry,
    /// writes the new value only if the entry is still the one read (by
    /// version; put-if-absent for a missing key), and on a conflict tries
    /// again with the entry that won, up to `attempts` times, pausing a
    /// little longer after each loss. Returns the value written.
    pub async fn update(
        &self,
        key: &[u8],
        attempts: u32,
        mut change: impl FnMut(Option<&[u8]>) -> Result<Vec<u8>, ClusterError>,
    ) -> Result<Vec<u8>, ClusterError> {
        let mut current = self.get_versioned(key).await?;
        for attempt in 0..attempts {
            let value = change(current.as_ref().map(|c| c.value.as_slice()))?;
            let outcome = match &current {
                None => self.put_if_absent(key.to_vec(), value.clone()).await?,
                Some(c) => self.replace_if(key.to_vec(), Expected::Version(c.version), value.clone()).await?,
            };
            if outcome.applied {
                return Ok(value);
            }
            current = outcome.current;
            if attempt + 1 < attempts {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(ClusterError::Contended { cache: self.name().to_string(), attempts })
    }
}

/// How many times [`Cache::update`] tries before it gives up.
pub const UPDATE_ATTEMPTS: u32 = 100;

/// The pause after the `attempt`-th lost update: random, up to 2^attempt
/// times 100 µs (at most 25.6 ms), so racing writers spread out.
fn backoff(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let ceiling_us = 100u64 << attempt.min(8);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    std::time::Duration::from_micros(hasher.finish() % (ceiling_us + 1))
}

/// A typed cache: keys and values are encoded with postcard.
pub struct Cache<K, V> {
    raw: RawCache,
    _types: PhantomData<fn(K, V) -> V>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache { raw: self.raw.clone(), _types: PhantomData }
    }
}

fn encode<T: Serialize>(cache: &str, value: &T) -> Result<Vec<u8>, ClusterError> {
    postcard::to_allocvec(value).map_err(|e| ClusterError::Codec { cache: cache.to_string(), detail: e.to_string() })
}

fn decode<T: DeserializeOwned>(cache: &str, bytes: &[u8]) -> Result<T, ClusterError> {
    postcard::from_bytes(bytes).map_err(|e| ClusterError::Codec { cache: cache.to_string(), detail: e.to_string() })
}

impl<K: Serialize, V: Serialize + DeserializeOwned> Cache<K, V> {
    /// The untyped view of this cache.
    pub fn raw(&self) -> &RawCache {
        &self.raw
    }

    pub async fn get(&self, key: &K) -> Result<Option<V>, ClusterError> {
        let name = self.raw.name();
        match self.raw.get(&encode(name, key)?).await? {
            Some(bytes) => Ok(Some(decode(name, &bytes)?)),
            None => Ok(None),
        }
    }

    pub async fn put(&self, key: &K, value: &V) -> Result<(), ClusterError> {
        let name = self.raw.name();
        self.raw.put(encode(name, key)?, encode(name, value)?).await
    }

    /// Writes `value` under `key`, expiring `ttl` after the write (see [`RawCache::put_ttl`]).
    pub async fn put_ttl(&self, key: &K, value: &V, ttl: std::time::Duration) -> Result<(), ClusterError> {
        let name = self.raw.name();
        self.raw.put_ttl(encode(name, key)?, encode(name, value)?, ttl).await
    }

    pub async fn remove(&self, key: &K) -> Result<bool, ClusterError> {
        self.raw.remove(&encode(self.raw.name(), key)?).await
    }

    pub async fn contains(&self, key: &K) -> Result<bool, ClusterError> {
        self.raw.contains(&encode(self.raw.name(), key)?).await
    }

    pub async fn len(&self) -> Result<u64, ClusterError> {
        self.raw.len().await
    }

    pub async fn is_empty(&self) -> Result<bool, ClusterError> {
        self.raw.is_empty().await
    }

    pub async fn clear(&self) -> Result<(), ClusterError> {
        self.raw.clear().await
    }

    pub async fn keys(&self) -> Result<Vec<K>, ClusterError>
    where
        K: DeserializeOwned,
    {
        let name = self.raw.name();
        self.raw.keys().await?.iter().map(|k| decode(name, k)).collect()
    }

    /// When each of `keys` expires, in order ([`RawCache::expiries`]).
    pub async fn expiries(&self, keys: &[K]) -> Result<Vec<Option<std::time::SystemTime>>, ClusterError> {
        let name = self.raw.name();
        let keys = keys.iter().map(|k| encode(name, k)).collect::<Result<Vec<_>, _>>()?;
        let at = self.raw.expiries(keys).await?;
        Ok(at.into_iter().map(|at| at.map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))).collect())
    }

    pub async fn get_all(&self, keys: &[K]) -> Result<Vec<Option<V>>, ClusterError> {
        let name = self.raw.name();
        let keys = keys.iter().map(|k| encode(name, k)).collect::<Result<Vec<_>, _>>()?;
        let values = self.raw.get_all(keys).await?;
        values.into_iter().map(|v| v.map(|bytes| decode(name, &bytes)).transpose()).collect()
    }

    pub async fn put_all(&self, entries: &[(K, V)]) -> Result<(), ClusterError> {
        let name = self.raw.name();
        let entries =
            entries.iter().map(|(k, v)| Ok((encode(name, k)?, encode(name, v)?))).collect::<Result<Vec<_>, _>>()?;
        self.raw.put_all(entries).await
    }

    /// The value under `key` with its version.
    pub async fn get_versioned(&self, key: &K) -> Result<Option<(V, u64)>, ClusterError> {
        let name = self.raw.name();
        match self.raw.get_versioned(&encode(name, key)?).await? {
            Some(v) => Ok(Some((decode(name, &v.value)?, v.version))),
            None => Ok(None),
        }
    }

    /// Writes `value` only if `key` is absent; `Ok(None)` when it was
    /// written, `Ok(Some(value there))` when another write got there first.
    pub async fn put_if_absent(&self, key: &K, value: &V) -> Result<Option<V>, ClusterError> {
        let name = self.raw.name();
        let outcome = self.raw.put_if_absent(encode(name, key)?, encode(name, value)?).await?;
        self.lost(outcome)
    }

    /// Writes `value` only if `key` holds `expected`; true if it did.
    pub async fn replace_if_value(&self, key: &K, expected: &V, value: &V) -> Result<bool, ClusterError> {
        let name = self.raw.name();
        let expected = Expected::Value(encode(name, expected)?);
        Ok(self.raw.replace_if(encode(name, key)?, expected, encode(name, value)?).await?.applied)
    }

    /// Writes `value` only if `key`'s entry carries `version`; true if it did.
    pub async fn replace_if_version(&self, key: &K, version: u64, value: &V) -> Result<bool, ClusterError> {
        let name = self.raw.name();
        Ok(self.raw.replace_if(encode(name, key)?, Expected::Version(version), encode(name, value)?).await?.applied)
    }

    /// Removes `key` only if it holds `expected`; true if it did.
    pub async fn remove_if_value(&self, key: &K, expected: &V) -> Result<bool, ClusterError> {
        let name = self.raw.name();
        Ok(self.raw.remove_if(encode(name, key)?, Expected::Value(encode(name, expected)?)).await?.applied)
    }

    /// Removes `key` only if its entry carries `version`; true if it did.
    pub async fn remove_if_version(&self, key: &K, version: u64) -> Result<bool, ClusterError> {
        Ok(self.raw.remove_if(encode(self.raw.name(), key)?, Expected::Version(version)).await?.applied)
    }

    /// Sets `key` to `change(current)` without losing a concurrent write:
    /// retried on conflict up to [`UPDATE_ATTEMPTS`] times, then
    /// [`ClusterError::Contended`]. `change` may run more than once.
    /// Returns the value written.
    pub async fn update(&self, key: &K, mut change: impl FnMut(Option<V>) -> V) -> Result<V, ClusterError> {
        let name = self.raw.name();
        let mut written = None;
        self.raw
            .update(&encode(name, key)?, UPDATE_ATTEMPTS, |old| {
                let old = old.map(|bytes| decode(name, bytes)).transpose()?;
                let new = change(old);
                let bytes = encode(name, &new)?;
                written = Some(new);
                Ok(bytes)
            })
            .await?;
        Ok(written.expect("a successful update ran `change` at least once"))
    }

    /// The value of a put-if-absent that did not apply.
    fn lost(&self, outcome: CasOutcome) -> Result<Option<V>, ClusterError> {
        if outcome.applied {
            return Ok(None);
        }
        let name = self.raw.name();
        outcome.current.map(|c| decode(name, &c.value)).transpose()
    }
}
