//! One member's caches and locks held in memory: the engine of the host's
//! built-in standalone strategy and of the in-memory test strategy
//! (`memory`), written once. It knows nothing of members or the network.
//!
//! A cache may be bounded ([`CacheBounds`]): its entries are kept in order
//! of use (a read moves an entry to the back only while a size or idle
//! bound is set), so the least recently used is evicted first; an entry
//! expires `ttl_ms` after its write (or after its own time to live), or
//! `max_idle_ms` after its last use. An expired entry is never answered:
//! a read that finds one removes it (`Expired`), and [`LocalCaches::sweep`]
//! removes the rest (the owner calls it on a timer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hashlink::LinkedHashMap;

use crate::cluster::{
    is_past, next_version, now_ms, CacheBounds, CacheSize, CasOutcome, Entry, EntryEventKind, Expected, Versioned,
};

/// What a local cache holds for one key.
#[derive(Debug, Clone)]
struct Slot {
    value: Vec<u8>,
    /// The write's version: the cluster time of the write in ms (or the
    /// previous version + 1, [`next_version`]), so also when it was written.
    version: u64,
    /// When it expires by a time to live of its own (ms since the epoch), 0 for none.
    deadline: u64,
    /// When it was last read or written on this member (ms since the epoch;
    /// kept only while the cache has a size or idle bound).
    used: u64,
}

impl Slot {
    fn bytes(&self, key: &[u8]) -> u64 {
        (key.len() + self.value.len()) as u64
    }

    /// When it expires under `bounds` (ms since the epoch), unless read
    /// or written again first: the sooner of its time to live (its own,
    /// else the cache's, from the write) and its max idle time from its
    /// last use; `None` when it never does.
    fn expires_at(&self, bounds: &CacheBounds) -> Option<u64> {
        let lifetime = match (self.deadline, bounds.ttl_ms) {
            (0, 0) => None,
            (0, ttl) => Some(self.version.saturating_add(ttl)),
            (own, _) => Some(own),
        };
        let idle = (bounds.max_idle_ms > 0).then(|| self.used.saturating_add(bounds.max_idle_ms));
        match (lifetime, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether it has expired at `now` under `bounds`.
    fn expired(&self, bounds: &CacheBounds, now: u64) -> bool {
        self.expires_at(bounds).is_some_and(|at| is_past(at, now))
    }
}

/// A change of one entry of a [`LocalCache`], told to its observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalChange<'a> {
    /// The cache's name.
    pub cache: &'a str,
    pub kind: EntryEventKind,
    pub key: &'a [u8],
    /// The new value (`None` for a removal, an expiry or an eviction).
    pub value: Option<&'a [u8]>,
    /// The new entry's version (the removed one's, for a removal).
    pub version: u64,
}

/// Told every change of every entry of the caches it observes, under the
/// cache's lock (so the changes of one key arrive in the order they were
/// made): it must be quick and must not call back into the cache.
pub type Observer = Arc<dyn Fn(LocalChange<'_>) + Send + Sync>;

/// Keys come from clients: std's DoS-resistant hasher, not hashlink's default.
type Plain = HashMap<Vec<u8>, Slot, std::hash::RandomState>;
type Ordered = LinkedHashMap<Vec<u8>, Slot, std::hash::RandomState>;

/// A cache's slots: a plain map while no bound needs the order of use (a
/// lookup reaches the slot in place), a linked one, least recently used
/// first, while a size or idle bound does ([`Entries::ordered`]).
enum Map {
    Plain(Plain),
    Ordered(Ordered),
}

impl Default for Map {
    fn default() -> Self {
        Map::Plain(Plain::default())
    }
}

impl Map {
    #[inline]
    fn get(&self, key: &[u8]) -> Option<&Slot> {
        match self {
            Map::Plain(m) => m.get(key),
            Map::Ordered(m) => m.get(key),
        }
    }

    #[inline]
    fn get_mut(&mut self, key: &[u8]) -> Option<&mut Slot> {
        match self {
            Map::Plain(m) => m.get_mut(key),
            Map::Ordered(m) => m.get_mut(key),
        }
    }

    #[inline]
    fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    #[inline]
    fn remove(&mut self, key: &[u8]) -> Option<Slot> {
        match self {
            Map::Plain(m) => m.remove(key),
            Map::Ordered(m) => m.remove(key),
        }
    }

    /// Puts `slot` under `key`, at the back (most recently used) when ordered.
    #[inline]
    fn insert(&mut self, key: Vec<u8>, slot: Slot) {
        match self {
            Map::Plain(m) => {
                m.insert(key, slot);
            }
            Map::Ordered(m) => {
                m.insert(key, slot);
            }
        }
    }

    #[inline]
    fn len(&self) -> usize {
        match self {
            Map::Plain(m) => m.len(),
            Map::Ordered(m) => m.len(),
        }
    }

    #[inline]
    fn iter(&self) -> Box<dyn Iterator<Item = (&Vec<u8>, &Slot)> + '_> {
        match self {
            Map::Plain(m) => Box::new(m.iter()),
            Map::Ordered(m) => Box::new(m.iter()),
        }
    }

    /// The least recently used key (any key, unordered).
    #[inline]
    fn front(&self) -> Option<&Vec<u8>> {
        match self {
            Map::Plain(m) => m.keys().next(),
            Map::Ordered(m) => m.front().map(|(key, _)| key),
        }
    }

    /// Marks `key` as the most recently used (nothing, unordered).
    #[inline]
    fn mark_used(&mut self, key: &[u8]) {
        if let Map::Ordered(m) = self {
            m.to_back(key);
        }
    }

    #[inline]
    fn drain(&mut self) -> Vec<(Vec<u8>, Slot)> {
        match std::mem::take(self) {
            Map::Plain(m) => m.into_iter().collect(),
            Map::Ordered(m) => m.into_iter().collect(),
        }
    }
}

/// One cache's entries, in order of use (least recent first) while a bound
/// needs it, with what its bounds need.
#[derive(Default)]
struct Entries {
    map: Map,
    bounds: CacheBounds,
    /// Keys plus values of every entry.
    bytes: u64,
    /// How many entries carry a time to live of their own.
    own_ttls: usize,
    /// Writes so far, while the map is plain: each slot's `used` is then
    /// the number of its last write, its place in the order of writes.
    writes: u64,
}

impl Entries {
    /// Whether anything here can expire (so reads must check the clock).
    fn expiring(&self) -> bool {
        self.bounds.ttl_ms > 0 || self.bounds.max_idle_ms > 0 || self.own_ttls > 0
    }

    /// Whether reads must keep the order of use.
    fn ordered(&self) -> bool {
        self.bounds.is_sized() || self.bounds.max_idle_ms > 0
    }

    fn take(&mut self, key: &[u8]) -> Option<Slot> {
        let slot = self.map.remove(key)?;
        self.bytes -= slot.bytes(key);
        if slot.deadline != 0 {
            self.own_ttls -= 1;
        }
        Some(slot)
    }

    /// Puts `slot` under `key` at the back (most recently used), returning
    /// the slot it replaced.
    fn place(&mut self, key: Vec<u8>, slot: Slot) -> Option<Slot> {
        let old = self.take(&key);
        self.bytes += slot.bytes(&key);
        if slot.deadline != 0 {
            self.own_ttls += 1;
        }
        self.map.insert(key, slot);
        old
    }

    /// The number of a write to a plain map (its slot's `used`).
    fn write_number(&mut self) -> u64 {
        self.writes += 1;
        self.writes
    }

    /// Applies `bounds` at `now`, keeping the order of use exactly while
    /// they need it. Entries of a plain map are put in the order of their
    /// last writes, and their idle time starts now; entries leaving an
    /// ordered map keep their order as write numbers.
    fn set_bounds(&mut self, bounds: CacheBounds, now: u64) {
        self.bounds = bounds;
        match (self.ordered(), &self.map) {
            (true, Map::Plain(_)) => {
                let mut slots = self.map.drain();
                slots.sort_by_key(|(_, slot)| slot.used);
                for (_, slot) in &mut slots {
                    slot.used = now;
                }
                self.map = Map::Ordered(slots.into_iter().collect());
            }
            (false, Map::Ordered(_)) => {
                let mut slots = self.map.drain();
                for (_, slot) in &mut slots {
                    slot.used = self.write_number();
                }
                self.map = Map::Plain(slots.into_iter().collect());
            }
            _ => {}
        }
    }
}

/// One cache in memory: its entries behind one mutex, never held across an
/// await. A handle to it ([`LocalCaches::cache`]) reaches it without the
/// name lookup, for callers that make many calls on one cache.
#[derive(Default)]
pub struct LocalCache {
    entries: Mutex<Entries>,
    /// Its name, for the observer.
    name: String,
    /// Told every change, under the lock (entry events).
    observer: Option<Observer>,
    /// Entries evicted by a size bound, and expired, since it was made.
    evicted: AtomicU64,
    expired: AtomicU64,
}

/// How a write lands: its new slot's time to live of its own, if any.
#[derive(Clone, Copy)]
enum Ttl {
    /// The cache's (or none).
    Cache,
    /// Expires this many ms after the write.
    Own(u64),
}

/// How a write's version is chosen.
#[derive(Clone, Copy)]
enum Stamp {
    /// [`next_version`] after the entry there, at the write's cluster time.
    Next,
    /// This one (a conditional write's, or a merged entry's).
    Is(u64),
}

impl LocalCache {
    /// An empty cache named `name` whose changes `observer` is told.
    pub fn observed(name: &str, observer: Option<Observer>) -> Self {
        LocalCache { name: name.to_string(), observer, ..LocalCache::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        crate::sync::lock(&self.entries)
    }

    /// Tells the observer, if any, of one change (called under the lock).
    fn tell(&self, kind: EntryEventKind, key: &[u8], value: Option<&[u8]>, version: u64) {
        if let Some(observer) = &self.observer {
            observer(LocalChange { cache: &self.name, kind, key, value, version });
        }
    }

    /// The live slot under `key`, touched as used at `now` when the order
    /// of use matters; an expired one is removed (`Expired`) and not answered.
    fn live<'a>(&self, entries: &'a mut Entries, key: &[u8]) -> Option<&'a mut Slot> {
        if entries.expiring() || entries.ordered() {
            let now = now_ms();
            let expired = entries.map.get(key)?.expired(&entries.bounds, now);
            if expired {
                self.expire(entries, key);
                return None;
            }
            if entries.ordered() {
                entries.map.mark_used(key);
                let slot = entries.map.get_mut(key)?;
                slot.used = now;
                return Some(slot);
            }
        }
        entries.map.get_mut(key)
    }

    fn expire(&self, entries: &mut Entries, key: &[u8]) {
        if let Some(slot) = entries.take(key) {
            self.expired.fetch_add(1, Ordering::Relaxed);
            self.tell(EntryEventKind::Expired, key, None, slot.version);
        }
    }

    /// Evicts the least recently used entries while a size bound is exceeded.
    fn evict(&self, entries: &mut Entries) {
        let CacheBounds { max_entries, max_bytes, .. } = entries.bounds;
        while (max_entries > 0 && entries.map.len() as u64 > max_entries)
            || (max_bytes > 0 && entries.bytes > max_bytes)
        {
            let Some(key) = entries.map.front().cloned() else { break };
            if let Some(slot) = entries.take(&key) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
                self.tell(EntryEventKind::Evicted, &key, None, slot.version);
            }
        }
    }

    /// Removes every expired entry (an `Expired` each); how many.
    fn sweep_locked(&self, entries: &mut Entries, now: u64) -> usize {
        if !entries.expiring() {
            return 0;
        }
        let bounds = entries.bounds;
        let gone: Vec<Vec<u8>> =
            entries.map.iter().filter(|(_, slot)| slot.expired(&bounds, now)).map(|(key, _)| key.clone()).collect();
        for key in &gone {
            self.expire(entries, key);
        }
        gone.len()
    }

    /// Writes `key` with the version `stamp` gives, telling the observer
    /// (added or updated), then evicts beyond the size bounds; the version.
    /// An expired entry that was still there is reported expired first:
    /// the write adds a new one.
    fn land(&self, entries: &mut Entries, key: Vec<u8>, value: Vec<u8>, stamp: Stamp, ttl: Ttl, now: u64) -> u64 {
        let version_after = |previous: Option<u64>| match stamp {
            Stamp::Next => next_version(previous, now),
            Stamp::Is(version) => version,
        };
        if !entries.ordered() && !entries.expiring() && matches!(ttl, Ttl::Cache) {
            if let Entries { map: Map::Plain(map), bytes, writes, .. } = entries {
                // An ordinary cache: one lookup, the slot updated in place.
                *writes += 1;
                let (added, used) = ((key.len() + value.len()) as u64, *writes);
                return match map.entry(key) {
                    std::collections::hash_map::Entry::Occupied(mut there) => {
                        let version = version_after(Some(there.get().version));
                        *bytes = *bytes - there.get().bytes(there.key()) + added;
                        let slot = there.get_mut();
                        (slot.value, slot.version, slot.used) = (value, version, used);
                        self.tell(EntryEventKind::Updated, there.key(), Some(&there.get().value), version);
                        version
                    }
                    std::collections::hash_map::Entry::Vacant(free) => {
                        let version = version_after(None);
                        *bytes += added;
                        self.tell(EntryEventKind::Added, free.key(), Some(&value), version);
                        free.insert(Slot { value, version, deadline: 0, used });
                        version
                    }
                };
            }
        }
        let clock = now_ms();
        // One lookup: the version there, and whether it has expired.
        let there =
            entries.map.get(&key).map(|old| (old.version, entries.expiring() && old.expired(&entries.bounds, clock)));
        let version = version_after(there.map(|(previous, _)| previous));
        let kind = match there {
            Some((_, true)) => {
                self.expire(entries, &key);
                EntryEventKind::Added
            }
            Some((_, false)) => EntryEventKind::Updated,
            None => EntryEventKind::Added,
        };
        let deadline = match ttl {
            Ttl::Cache => 0,
            Ttl::Own(ms) => now.saturating_add(ms.max(1)),
        };
        self.tell(kind, &key, Some(&value), version);
        let used = if entries.ordered() { clock } else { entries.write_number() };
        entries.place(key, Slot { value, version, deadline, used });
        self.evict(entries);
        version
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut entries = self.lock();
        self.live(&mut entries, key).map(|slot| slot.value.clone())
    }

    /// Writes `key` at cluster time `now` (its version: [`next_version`]).
    pub fn put(&self, key: Vec<u8>, value: Vec<u8>, now: u64) {
        self.land(&mut self.lock(), key, value, Stamp::Next, Ttl::Cache, now);
    }

    /// Writes `key` at cluster time `now`, expiring `ttl_ms` later whatever
    /// the cache's own time to live.
    pub fn put_ttl(&self, key: Vec<u8>, value: Vec<u8>, now: u64, ttl_ms: u64) {
        self.land(&mut self.lock(), key, value, Stamp::Next, Ttl::Own(ttl_ms), now);
    }

    /// The value under `key` with its version.
    pub fn get_versioned(&self, key: &[u8]) -> Option<Versioned> {
        let mut entries = self.lock();
        self.live(&mut entries, key).map(|slot| Versioned { value: slot.value.clone(), version: slot.version })
    }

    /// Writes `value` under `key` at cluster time `now` if the key is absent.
    pub fn put_if_absent(&self, key: Vec<u8>, value: Vec<u8>, now: u64) -> CasOutcome {
        self.write_if(key, |current| current.is_none(), Some(value), now)
    }

    /// Writes `value` under `key` at cluster time `now` if the entry there is `expected`.
    pub fn replace_if(&self, key: Vec<u8>, expected: &Expected, value: Vec<u8>, now: u64) -> CasOutcome {
        self.write_if(key, |current| current.is_some_and(|c| expected.matches(c)), Some(value), now)
    }

    /// Removes `key` if the entry there is `expected`.
    pub fn remove_if(&self, key: Vec<u8>, expected: &Expected) -> CasOutcome {
        self.write_if(key, |current| current.is_some_and(|c| expected.matches(c)), None, 0)
    }

    /// The one atomic step behind the conditional writes: under the lock,
    /// if `matches` holds for the current entry, writes `value` (removes the
    /// key for `None`).
    fn write_if(
        &self,
        key: Vec<u8>,
        matches: impl FnOnce(Option<&Versioned>) -> bool,
        value: Option<Vec<u8>>,
        now: u64,
    ) -> CasOutcome {
        let mut entries = self.lock();
        let current =
            self.live(&mut entries, &key).map(|slot| Versioned { value: slot.value.clone(), version: slot.version });
        if !matches(current.as_ref()) {
            return CasOutcome { applied: false, current };
        }
        let current = match value {
            Some(value) => {
                let version = next_version(current.map(|c| c.version), now);
                self.land(&mut entries, key.clone(), value.clone(), Stamp::Is(version), Ttl::Cache, now);
                // Evicted at once only when it alone exceeds a bound.
                entries.map.contains_key(&key).then_some(Versioned { value, version })
            }
            None => {
                if let Some(slot) = entries.take(&key) {
                    self.tell(EntryEventKind::Removed, &key, None, slot.version);
                }
                None
            }
        };
        CasOutcome { applied: true, current }
    }

    /// Removes `key`; true if it was there (and had not expired).
    pub fn remove(&self, key: &[u8]) -> bool {
        let mut entries = self.lock();
        if self.live(&mut entries, key).is_none() {
            return false;
        }
        let slot = entries.take(key).expect("the entry just found");
        self.tell(EntryEventKind::Removed, key, None, slot.version);
        true
    }

    /// Whether `key` is there.
    pub fn contains(&self, key: &[u8]) -> bool {
        let mut entries = self.lock();
        self.live(&mut entries, key).is_some()
    }

    /// How many entries the cache holds.
    pub fn len(&self) -> u64 {
        let mut entries = self.lock();
        self.sweep_locked(&mut entries, now_ms());
        entries.map.len() as u64
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry (those that had expired are reported expired).
    pub fn clear(&self) {
        let mut entries = self.lock();
        self.sweep_locked(&mut entries, now_ms());
        let map = entries.map.drain();
        entries.bytes = 0;
        entries.own_ttls = 0;
        if self.observer.is_some() {
            for (key, slot) in map {
                self.tell(EntryEventKind::Removed, &key, None, slot.version);
            }
        }
    }

    /// Every key.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut entries = self.lock();
        self.sweep_locked(&mut entries, now_ms());
        entries.map.iter().map(|(key, _)| key.clone()).collect()
    }

    /// The values under `keys`, in order.
    pub fn get_all(&self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        let mut entries = self.lock();
        keys.iter().map(|k| self.live(&mut entries, k).map(|slot| slot.value.clone())).collect()
    }

    /// Writes every entry; an entry with version 0 gets `now` (each
    /// version as [`next_version`] makes it).
    pub fn put_all(&self, batch: Vec<Entry>, now: u64) {
        let mut entries = self.lock();
        for e in batch {
            let at = if e.version == 0 { now } else { e.version };
            self.land(&mut entries, e.key, e.value, Stamp::Next, Ttl::Cache, at);
        }
    }

    /// Merges `entries`: the latest version wins; on a tie the entry already
    /// here stays.
    pub fn merge(&self, batch: Vec<Entry>) {
        let mut entries = self.lock();
        let now = now_ms();
        let bounds = entries.bounds;
        for e in batch {
            let newer = match entries.map.get(&e.key) {
                None => true,
                Some(slot) => e.version > slot.version,
            };
            // What arrived already past the cache's time to live is not added.
            let arrived = Slot { value: Vec::new(), version: e.version, deadline: 0, used: now };
            if newer && !arrived.expired(&bounds, now) {
                self.land(&mut entries, e.key, e.value, Stamp::Is(e.version), Ttl::Cache, now);
            }
        }
    }

    /// Every entry, with its version.
    pub fn entries(&self) -> Vec<Entry> {
        let mut entries = self.lock();
        self.sweep_locked(&mut entries, now_ms());
        entries
            .map
            .iter()
            .map(|(k, slot)| Entry { key: k.clone(), value: slot.value.clone(), version: slot.version })
            .collect()
    }

    /// Entries and bytes (keys plus values).
    pub fn size(&self) -> CacheSize {
        let mut entries = self.lock();
        self.sweep_locked(&mut entries, now_ms());
        CacheSize { entries: entries.map.len() as u64, bytes: entries.bytes }
    }

    /// Applies `bounds` from now on, evicting and expiring at once what
    /// they no longer allow.
    pub fn configure(&self, bounds: CacheBounds) {
        let mut entries = self.lock();
        entries.set_bounds(bounds, now_ms());
        self.sweep_locked(&mut entries, now_ms());
        self.evict(&mut entries);
    }

    /// The bounds in force.
    pub fn bounds(&self) -> CacheBounds {
        self.lock().bounds
    }

    /// Removes every expired entry; how many.
    pub fn sweep(&self, now: u64) -> usize {
        self.sweep_locked(&mut self.lock(), now)
    }

    /// Entries evicted and expired since the cache was made.
    pub fn removed_by_bounds(&self) -> (u64, u64) {
        (self.evicted.load(Ordering::Relaxed), self.expired.load(Ordering::Relaxed))
    }

    /// When each of `keys` expires (ms since the epoch; `None`: never, or
    /// nothing there, or already expired), in the order asked. A look,
    /// not a use: it neither refreshes an idle time nor changes the order
    /// of eviction.
    pub fn expiries(&self, keys: &[Vec<u8>]) -> Vec<Option<u64>> {
        let entries = self.lock();
        let now = now_ms();
        keys.iter()
            .map(|key| {
                let slot = entries.map.get(key.as_slice())?;
                slot.expires_at(&entries.bounds).filter(|&at| !is_past(at, now))
            })
            .collect()
    }
}

/// Cache name → the cache. Names are few and chosen by the application, so
/// a fast hasher is safe here (keys keep std's DoS-resistant one, [`Entries`]).
type Caches = HashMap<String, Arc<LocalCache>, foldhash::fast::RandomState>;

/// Named caches in memory. Every operation by name finds its cache first
/// (a read never creates one), then works on it as [`LocalCache`] does.
#[derive(Default)]
pub struct LocalCaches {
    caches: Mutex<Caches>,
    /// Given to every cache made here.
    observer: Option<Observer>,
}

impl LocalCaches {
    /// Caches whose every change `observer` is told (see [`Observer`]).
    pub fn observed(observer: Observer) -> Self {
        LocalCaches { caches: Mutex::default(), observer: Some(observer) }
    }

    fn lock(&self) -> MutexGuard<'_, Caches> {
        crate::sync::lock(&self.caches)
    }

    fn make(&self, name: &str) -> Arc<LocalCache> {
        Arc::new(LocalCache::observed(name, self.observer.clone()))
    }

    /// The cache `name`, made empty if it does not exist.
    pub fn cache(&self, name: &str) -> Arc<LocalCache> {
        let mut caches = self.lock();
        match caches.get(name) {
            Some(cache) => cache.clone(),
            None => caches.entry(name.to_string()).or_insert_with(|| self.make(name)).clone(),
        }
    }

    /// Runs `f` on cache `name` if it exists.
    fn read<T>(&self, name: &str, f: impl FnOnce(&LocalCache) -> T) -> Option<T> {
        self.lock().get(name).map(|cache| f(cache))
    }

    /// Runs `f` on cache `name`, made empty if it does not exist.
    fn write<T>(&self, name: &str, f: impl FnOnce(&LocalCache) -> T) -> T {
        let mut caches = self.lock();
        match caches.get(name) {
            Some(cache) => f(cache),
            None => f(caches.entry(name.to_string()).or_insert_with(|| self.make(name))),
        }
    }

    /// The value under `key`.
    pub fn get(&self, name: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.read(name, |c| c.get(key)).flatten()
    }

    /// Writes `key` at cluster time `now`.
    pub fn put(&self, name: &str, key: Vec<u8>, value: Vec<u8>, now: u64) {
        self.write(name, |c| c.put(key, value, now));
    }

    /// The value under `key` with its version.
    pub fn get_versioned(&self, name: &str, key: &[u8]) -> Option<Versioned> {
        self.read(name, |c| c.get_versioned(key)).flatten()
    }

    /// See [`LocalCache::put_if_absent`].
    pub fn put_if_absent(&self, name: &str, key: Vec<u8>, value: Vec<u8>, now: u64) -> CasOutcome {
        self.write(name, |c| c.put_if_absent(key, value, now))
    }

    /// See [`LocalCache::replace_if`].
    pub fn replace_if(&self, name: &str, key: Vec<u8>, expected: &Expected, value: Vec<u8>, now: u64) -> CasOutcome {
        self.write(name, |c| c.replace_if(key, expected, value, now))
    }

    /// See [`LocalCache::remove_if`].
    pub fn remove_if(&self, name: &str, key: Vec<u8>, expected: &Expected) -> CasOutcome {
        self.read(name, |c| c.remove_if(key, expected)).unwrap_or(CasOutcome { applied: false, current: None })
    }

    /// Removes `key`; true if it was there.
    pub fn remove(&self, name: &str, key: &[u8]) -> bool {
        self.read(name, |c| c.remove(key)).unwrap_or(false)
    }

    /// Whether `key` is there.
    pub fn contains(&self, name: &str, key: &[u8]) -> bool {
        self.read(name, |c| c.contains(key)).unwrap_or(false)
    }

    /// How many entries the cache holds.
    pub fn len(&self, name: &str) -> u64 {
        self.read(name, |c| c.len()).unwrap_or(0)
    }

    /// Removes every entry of the cache.
    pub fn clear(&self, name: &str) {
        self.read(name, |c| c.clear());
    }

    /// Every key of the cache.
    pub fn keys(&self, name: &str) -> Vec<Vec<u8>> {
        self.read(name, |c| c.keys()).unwrap_or_default()
    }

    /// The values under `keys`, in order.
    pub fn get_all(&self, name: &str, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        self.read(name, |c| c.get_all(keys)).unwrap_or_else(|| vec![None; keys.len()])
    }

    /// Writes every entry; an entry with version 0 gets `now`.
    pub fn put_all(&self, name: &str, entries: Vec<Entry>, now: u64) {
        self.write(name, |c| c.put_all(entries, now));
    }

    /// Merges `entries` (see [`LocalCache::merge`]).
    pub fn merge(&self, name: &str, entries: Vec<Entry>) {
        self.write(name, |c| c.merge(entries));
    }

    /// Every entry of the cache, with its version.
    pub fn entries(&self, name: &str) -> Vec<Entry> {
        self.read(name, |c| c.entries()).unwrap_or_default()
    }

    /// The names of the caches that exist.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Entries and bytes (keys plus values) of the cache.
    pub fn size(&self, name: &str) -> CacheSize {
        self.read(name, |c| c.size()).unwrap_or_default()
    }

    /// See [`LocalCache::put_ttl`].
    pub fn put_ttl(&self, name: &str, key: Vec<u8>, value: Vec<u8>, now: u64, ttl_ms: u64) {
        self.write(name, |c| c.put_ttl(key, value, now, ttl_ms));
    }

    /// Applies `bounds` to cache `name` (made empty if it does not exist).
    pub fn configure(&self, name: &str, bounds: CacheBounds) {
        self.write(name, |c| c.configure(bounds));
    }

    /// Removes every expired entry of every cache; how many.
    pub fn sweep(&self, now: u64) -> usize {
        let caches: Vec<Arc<LocalCache>> = self.lock().values().cloned().collect();
        caches.iter().map(|cache| cache.sweep(now)).sum()
    }

    /// See [`LocalCache::expiries`] (all `None` when the cache does not exist).
    pub fn expiries(&self, name: &str, keys: &[Vec<u8>]) -> Vec<Option<u64>> {
        self.read(name, |c| c.expiries(keys)).unwrap_or_else(|| vec![None; keys.len()])
    }

    /// Entries of cache `name` evicted and expired since it was made.
    pub fn removed_by_bounds_of(&self, name: &str) -> (u64, u64) {
        self.read(name, |c| c.removed_by_bounds()).unwrap_or_default()
    }

    /// Entries evicted and expired, over every cache.
    pub fn removed_by_bounds(&self) -> (u64, u64) {
        let caches = self.lock();
        caches.values().map(|c| c.removed_by_bounds()).fold((0, 0), |(e, x), (e2, x2)| (e + e2, x + x2))
    }
}

/// Named locks held in memory, each by one owner token on behalf of one
/// member; waiters are woken when any lock is released.
#[derive(Default)]
pub struct LocalLocks {
    /// lock name → (owner token, member id).
    held: Mutex<HashMap<String, (String, String)>>,
    /// lock name → the fencing number of its current grant.
    fences: Mutex<HashMap<String, u64>>,
    /// The last fencing number handed out (any lock).
    last_fence: Mutex<u64>,
    released: tokio::sync::Notify,
}

impl LocalLocks {
    fn held(&self) -> MutexGuard<'_, HashMap<String, (String, String)>> {
        crate::sync::lock(&self.held)
    }

    /// Takes `name` for `owner` (of `member`) if it is free or already
    /// `owner`'s; false if someone else holds it.
    pub fn try_take(&self, name: &str, owner: &str, member: &str) -> bool {
        let mut held = self.held();
        match held.get(name) {
            Some((holder, _)) => holder == owner,
            None => {
                held.insert(name.to_string(), (owner.to_string(), member.to_string()));
                // Greater than every number handed out before, and never
                // below the clock, so it still grows after a restart.
                let mut last = crate::sync::lock(&self.last_fence);
                *last = (*last + 1).max(crate::cluster::now_ms());
                crate::sync::lock(&self.fences).insert(name.to_string(), *last);
                true
            }
        }
    }

    /// The fencing number of `owner`'s grant of `name`, if it holds it.
    pub fn fence(&self, name: &str, owner: &str) -> Option<u64> {
        let held = self.held();
        let mine = held.get(name).is_some_and(|(holder, _)| holder == owner);
        mine.then(|| crate::sync::lock(&self.fences).get(name).copied()).flatten()
    }

    /// Waits until `owner` holds `name`.
    pub async fn lock(&self, name: &str, owner: &str, member: &str) {
        loop {
            // Registered before the check, so a release in between is not missed.
            let released = self.released.notified();
            if self.try_take(name, owner, member) {
                return;
            }
            released.await;
        }
    }

    /// Releases `name` if `owner` holds it; true if it did.
    pub fn unlock(&self, name: &str, owner: &str) -> bool {
        let released = {
            let mut held = self.held();
            let mine = held.get(name).is_some_and(|(holder, _)| holder == owner);
            if mine {
                held.remove(name);
            }
            mine
        };
        if released {
            self.released.notify_waiters();
        }
        released
    }

    /// Releases every lock `member` holds (it left or died).
    pub fn release_member(&self, member: &str) {
        self.held().retain(|_, (_, holder)| holder != member);
        self.released.notify_waiters();
    }
}

/// `lock` (a strategy's `lock` future) if it completes within `timeout`:
/// true once taken, false if the time ran out first (the wait is dropped).
/// A strategy whose `lock` waits in memory answers `try_lock` with this.
pub async fn lock_within(
    timeout: std::time::Duration,
    lock: impl std::future::Future<Output = crate::PluginResult<()>>,
) -> crate::PluginResult<bool> {
    match tokio::time::timeout(timeout, lock).await {
        Ok(result) => result.map(|()| true),
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, version: u64) -> Entry {
        Entry { key: key.into(), value: value.into(), version }
    }

    #[test]
    fn merge_keeps_the_latest_version_and_the_present_entry_on_a_tie() {
        let caches = LocalCaches::default();
        caches.put("c", b"k".to_vec(), b"here".to_vec(), 10);
        caches.merge("c", vec![entry("k", "older", 9), entry("k", "tie", 10), entry("n", "new", 1)]);
        assert_eq!(caches.get("c", b"k").as_deref(), Some(&b"here"[..]));
        caches.merge("c", vec![entry("k", "newer", 11)]);
        assert_eq!(caches.get("c", b"k").as_deref(), Some(&b"newer"[..]));
        assert_eq!(caches.size("c"), CacheSize { entries: 2, bytes: 1 + 5 + 1 + 3 });
    }

    #[test]
    fn reads_never_create_a_cache() {
        let caches = LocalCaches::default();
        assert_eq!(caches.get("nothing", b"k"), None);
        assert_eq!(caches.get_all("nothing", &[b"a".to_vec()]), vec![None]);
        assert!(caches.names().is_empty());
        caches.put_all("c", vec![entry("a", "1", 0)], 42);
        assert_eq!(caches.entries("c"), vec![entry("a", "1", 42)]);
        assert_eq!(caches.names(), vec!["c".to_string()]);
    }

    #[test]
    fn every_write_of_a_key_changes_its_version_and_conditional_writes_check_it() {
        let cache = LocalCache::default();
        let first = cache.put_if_absent(b"k".to_vec(), b"a".to_vec(), 100);
        assert_eq!(
            first,
            CasOutcome { applied: true, current: Some(Versioned { value: b"a".to_vec(), version: 100 }) }
        );
        let lost = cache.put_if_absent(b"k".to_vec(), b"b".to_vec(), 100);
        assert!(!lost.applied);
        assert_eq!(lost.current, first.current, "the loser sees the winner's entry");
        // Same millisecond, even an earlier clock: the version still moves on.
        cache.put(b"k".to_vec(), b"c".to_vec(), 90);
        let now = cache.get_versioned(b"k").expect("k is there");
        assert_eq!(now, Versioned { value: b"c".to_vec(), version: 101 });
        assert!(!cache.replace_if(b"k".to_vec(), &Expected::Version(100), b"x".to_vec(), 100).applied);
        assert!(!cache.replace_if(b"k".to_vec(), &Expected::Value(b"a".to_vec()), b"x".to_vec(), 100).applied);
        let replaced = cache.replace_if(b"k".to_vec(), &Expected::Version(101), b"d".to_vec(), 100);
        assert_eq!(replaced.current, Some(Versioned { value: b"d".to_vec(), version: 102 }));
        assert!(!cache.remove_if(b"k".to_vec(), &Expected::Value(b"c".to_vec())).applied);
        assert_eq!(
            cache.remove_if(b"k".to_vec(), &Expected::Value(b"d".to_vec())),
            CasOutcome { applied: true, current: None }
        );
        assert!(
            !cache.replace_if(b"k".to_vec(), &Expected::Version(102), b"e".to_vec(), 100).applied,
            "absent never matches"
        );
        assert_eq!(cache.get(b"k"), None);
    }

    #[test]
    fn every_change_is_told_to_the_observer_with_its_kind_and_version() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        let caches = LocalCaches::observed(Arc::new(move |c: LocalChange<'_>| {
            sink.lock().unwrap().push((
                c.cache.to_string(),
                c.kind,
                c.key.to_vec(),
                c.value.map(<[u8]>::to_vec),
                c.version,
            ));
        }));
        caches.put("c", b"k".to_vec(), b"1".to_vec(), 10);
        caches.put("c", b"k".to_vec(), b"2".to_vec(), 10);
        assert!(!caches.put_if_absent("c", b"k".to_vec(), b"x".to_vec(), 20).applied, "not applied: not told");
        caches.replace_if("c", b"k".to_vec(), &Expected::Version(11), b"3".to_vec(), 20);
        caches.merge("c", vec![entry("k", "old", 5), entry("m", "m", 7)]);
        assert!(caches.remove("c", b"k"));
        assert!(!caches.remove("c", b"k"), "nothing removed: not told");
        caches.clear("c");
        use EntryEventKind::*;
        let v = |s: &str| Some(s.as_bytes().to_vec());
        let told = told.lock().unwrap().clone();
        assert_eq!(
            told,
            vec![
                ("c".into(), Added, b"k".to_vec(), v("1"), 10),
                ("c".into(), Updated, b"k".to_vec(), v("2"), 11),
                ("c".into(), Updated, b"k".to_vec(), v("3"), 20),
                ("c".into(), Added, b"m".to_vec(), v("m"), 7),
                ("c".into(), Removed, b"k".to_vec(), None, 20),
                ("c".into(), Removed, b"m".to_vec(), None, 7),
            ]
        );
    }

    /// A cache whose every change is recorded as "kind key".
    fn recorded(name: &str) -> (LocalCache, Arc<Mutex<Vec<String>>>) {
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        let observer: Observer = Arc::new(move |c: LocalChange<'_>| {
            sink.lock().unwrap().push(format!("{} {}", c.kind.name(), String::from_utf8_lossy(c.key)));
        });
        (LocalCache::observed(name, Some(observer)), told)
    }

    fn taken(told: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        std::mem::take(&mut *told.lock().unwrap())
    }

    fn put(cache: &LocalCache, key: &str) {
        cache.put(key.as_bytes().to_vec(), key.as_bytes().to_vec(), now_ms());
    }

    #[test]
    fn a_cache_bounded_by_entries_evicts_the_least_recently_used_and_says_so() {
        let (cache, told) = recorded("c");
        cache.configure(CacheBounds { max_entries: 2, ..CacheBounds::NONE });
        put(&cache, "a");
        put(&cache, "b");
        assert!(cache.get(b"a").is_some(), "a read makes a the most recently used");
        put(&cache, "c");
        assert_eq!(cache.len(), 2);
        assert!(cache.contains(b"a") && cache.contains(b"c") && !cache.contains(b"b"));
        assert_eq!(taken(&told), ["added a", "added b", "added c", "evicted b"]);
        // A write also counts as a use; an update never evicts.
        put(&cache, "a");
        put(&cache, "d");
        assert_eq!(taken(&told), ["updated a", "added d", "evicted c"]);
        assert_eq!(cache.removed_by_bounds(), (2, 0));
        // Conditional writes and merges keep the bound too.
        assert!(cache.put_if_absent(b"e".to_vec(), b"e".to_vec(), now_ms()).applied);
        cache.merge(vec![Entry { key: b"f".to_vec(), value: b"f".to_vec(), version: now_ms() }]);
        assert_eq!(cache.len(), 2);
        assert_eq!(taken(&told), ["added e", "evicted a", "added f", "evicted d"]);
    }

    #[test]
    fn a_cache_bounded_by_bytes_evicts_until_it_fits_and_an_entry_too_big_alone_goes_at_once() {
        let (cache, told) = recorded("c");
        cache.configure(CacheBounds { max_bytes: 10, ..CacheBounds::NONE });
        cache.put(b"a".to_vec(), vec![0; 4], now_ms());
        cache.put(b"b".to_vec(), vec![0; 4], now_ms());
        assert_eq!(cache.size(), CacheSize { entries: 2, bytes: 10 });
        cache.put(b"c".to_vec(), vec![0; 1], now_ms());
        assert_eq!(cache.size(), CacheSize { entries: 2, bytes: 7 });
        cache.put(b"big".to_vec(), vec![0; 20], now_ms());
        assert_eq!(cache.size(), CacheSize { entries: 0, bytes: 0 });
        assert_eq!(
            taken(&told),
            ["added a", "added b", "added c", "evicted a", "added big", "evicted b", "evicted c", "evicted big"]
        );
    }

    #[test]
    fn tighter_bounds_shrink_the_cache_at_once_keeping_the_most_recently_used() {
        let (cache, told) = recorded("c");
        for key in ["a", "b", "c", "d", "e"] {
            put(&cache, key);
        }
        taken(&told);
        cache.configure(CacheBounds { max_entries: 2, ..CacheBounds::NONE });
        assert_eq!(cache.keys(), [b"d".to_vec(), b"e".to_vec()]);
        assert_eq!(taken(&told), ["evicted a", "evicted b", "evicted c"]);
        cache.configure(CacheBounds::NONE);
        for key in ["f", "g", "h"] {
            put(&cache, key);
        }
        assert_eq!(cache.len(), 5, "unbounded again");
    }

    #[test]
    fn an_entry_expires_its_ttl_after_its_write_and_is_never_answered_after() {
        let (cache, told) = recorded("c");
        cache.configure(CacheBounds { ttl_ms: 60_000, ..CacheBounds::NONE });
        let start = now_ms();
        put(&cache, "a");
        cache.put_ttl(b"short".to_vec(), b"s".to_vec(), now_ms(), 1);
        cache.put_ttl(b"long".to_vec(), b"l".to_vec(), now_ms(), 3_600_000);
        std::thread::sleep(std::time::Duration::from_millis(5));
        // The entry with 1 ms of its own is gone for every read, reported once.
        assert_eq!(cache.get(b"short"), None);
        assert!(!cache.contains(b"short") && !cache.remove(b"short"));
        assert_eq!(taken(&told), ["added a", "added short", "added long", "expired short"]);
        assert_eq!(cache.sweep(start + 59_000), 0, "a's 60 s are not over");
        assert_eq!(cache.sweep(start + 60_000 + 1_000), 1, "a's are");
        assert_eq!(taken(&told), ["expired a"]);
        assert!(cache.contains(b"long"), "a ttl of its own outlives the cache's");
        // A live edit of the cache's ttl applies from each entry's write.
        put(&cache, "b");
        cache.configure(CacheBounds { ttl_ms: 1, ..CacheBounds::NONE });
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(cache.keys(), [b"long".to_vec()]);
        assert_eq!(cache.removed_by_bounds(), (0, 3));
        assert_eq!(taken(&told), ["added b", "expired b"]);
    }

    #[test]
    fn an_entry_unused_for_max_idle_expires_while_a_used_one_stays() {
        let (cache, told) = recorded("c");
        cache.configure(CacheBounds { max_idle_ms: 10_000, ..CacheBounds::NONE });
        put(&cache, "a");
        put(&cache, "b");
        // a and b were last used at or before `written`; b is used again 30 ms later.
        let written = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(cache.get(b"b").is_some());
        assert_eq!(cache.sweep(written + 10_001), 1);
        assert_eq!(taken(&told), ["added a", "added b", "expired a"]);
        assert!(cache.contains(b"b"));
    }

    #[test]
    fn bounds_set_on_a_filled_cache_keep_its_write_order_and_start_idle_times_then() {
        let (cache, told) = recorded("c");
        for key in ["a", "b", "c"] {
            put(&cache, key);
        }
        // Rewritten last, so most recently used: c's first write does not count.
        put(&cache, "a");
        taken(&told);
        let set = now_ms();
        cache.configure(CacheBounds { max_entries: 2, max_idle_ms: 10_000, ..CacheBounds::NONE });
        assert_eq!(cache.keys(), [b"c".to_vec(), b"a".to_vec()], "b, the oldest write, evicted");
        assert_eq!(taken(&told), ["evicted b"]);
        assert_eq!(cache.sweep(set + 5_000), 0, "idle times count from the bound, not from the writes");
        assert_eq!(cache.sweep(now_ms() + 10_001), 2);
        // Unbounded again, then bounded: the order survives the plain map.
        put(&cache, "x");
        put(&cache, "y");
        cache.configure(CacheBounds::NONE);
        put(&cache, "z");
        put(&cache, "x");
        cache.configure(CacheBounds { max_entries: 1, ..CacheBounds::NONE });
        assert_eq!(cache.keys(), [b"x".to_vec()]);
    }

    #[tokio::test]
    async fn a_lock_excludes_other_owners_until_released_or_its_member_leaves() {
        let locks = std::sync::Arc::new(LocalLocks::default());
        assert!(locks.try_take("l", "a/1", "a"));
        assert!(locks.try_take("l", "a/1", "a"), "the holder may take it again");
        assert!(!locks.try_take("l", "b/1", "b"));
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock("l", "b/1", "b").await })
        };
        assert!(!locks.unlock("l", "b/1"), "only the holder releases");
        assert!(locks.unlock("l", "a/1"));
        waiter.await.expect("the waiter took the lock once it was released");
        locks.release_member("b");
        assert!(locks.try_take("l", "c/1", "c"), "a leaving member's locks are released");
    }
}
