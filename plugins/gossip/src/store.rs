//! The replicated caches: every member holds every entry, each with a
//! version (hybrid logical clock, then member) so replicas converge by the
//! merge policy whatever order writes arrive in. Removes are tombstones.
//!
//! A cache may be bounded ([`CacheBounds`]): every member decides expiry
//! and eviction alike from what is replicated (an entry's version, the
//! deadline its write carries, the bounds every member's host sends), with
//! no message; docs/gossip.md, "Bounded caches", states the rule.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use clusterhost_plugin_api::cluster::{is_past, now_ms, CacheBounds, CacheSize, Entry, EntryEventKind};
use serde::{Deserialize, Serialize};

use crate::locked;

/// Orders writes: later `hlc` wins, then the higher member hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// The writer's hybrid logical clock at the write.
    pub hlc: u64,
    /// The writer's [`member_hash`], the tie-break.
    pub member: u64,
}

impl Version {
    /// The version of a write made at `ms` (ms since the epoch) by `member`.
    pub fn at_ms(ms: u64, member: u64) -> Version {
        Version { hlc: ms << 16, member }
    }

    /// Milliseconds since the epoch of this version's write.
    pub fn ms(&self) -> u64 {
        self.hlc >> 16
    }
}

/// How far ahead of this member's clock a received version may be for the
/// clock to follow it. A later one (a member whose clock is badly wrong, or a
/// forged frame) is not followed: followed, it would hold the clock off the
/// wall clock for as long, and at `u64::MAX` leave it no later time to give.
pub const MAX_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// A hybrid logical clock: physical ms in the high bits, a counter below.
#[derive(Default)]
pub struct Hlc {
    /// The latest timestamp issued or observed.
    last: Mutex<u64>,
}

impl Hlc {
    /// A timestamp later than every one issued or observed.
    pub fn now(&self) -> u64 {
        let mut last = locked(&self.last);
        *last = (now_ms() << 16).max(*last + 1);
        *last
    }

    /// Takes a remote timestamp into account, unless it is more than
    /// [`MAX_AHEAD_MS`] ahead of this member's clock.
    pub fn observe(&self, remote: u64) {
        if remote > (now_ms() + MAX_AHEAD_MS) << 16 {
            return;
        }
        let mut last = locked(&self.last);
        *last = (*last).max(remote);
    }
}

/// A stable 64-bit id for a member name (FNV-1a).
pub fn member_hash(member: &str) -> u64 {
    member.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// One write, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// The cache's name.
    pub cache: String,
    pub key: Vec<u8>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    pub version: Version,
    /// Wire 1.3 (ms since the epoch, 0 for none). A value: when it expires
    /// by a time to live of its own (`cache_put_ttl`; otherwise the cache's
    /// applies). A tombstone: when it may be forgotten (one an expiry or an
    /// eviction left; a remove's is kept). Frames of wire 1.0 to 1.2 carry
    /// no deadline ([`legacy`]).
    pub deadline: u64,
}

/// The entries of the frames members of wire 1.0 to 1.2 read (`Replicate`,
/// `State`, `StatePage`): each without its deadline, byte for byte what
/// those builds send and expect; an entry read from one has no deadline.
pub mod legacy {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Version, WireEntry};

    /// An entry as wire 1.2 encodes it (postcard: the fields in order).
    #[derive(Serialize)]
    struct Out<'a> {
        cache: &'a str,
        key: &'a [u8],
        value: Option<&'a [u8]>,
        version: &'a Version,
    }

    /// An entry as wire 1.2 decodes it.
    #[derive(Deserialize)]
    struct In {
        cache: String,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        version: Version,
    }

    pub fn serialize<S: Serializer>(entries: &[WireEntry], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(entries.iter().map(|e| Out {
            cache: &e.cache,
            key: &e.key,
            value: e.value.as_deref(),
            version: &e.version,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<WireEntry>, D::Error> {
        let entries = Vec::<In>::deserialize(d)?;
        Ok(entries
            .into_iter()
            .map(|e| WireEntry { cache: e.cache, key: e.key, value: e.value, version: e.version, deadline: 0 })
            .collect())
    }
}

/// What a cache holds for a key: its value (None: a tombstone), the
/// version of the write that put it there, and its deadline
/// ([`WireEntry::deadline`]).
#[derive(Debug, Clone)]
struct Slot {
    value: Option<Vec<u8>>,
    version: Version,
    deadline: u64,
}

impl Slot {
    /// Key plus value, for a live slot (0 for a tombstone).
    fn bytes(&self, key: &[u8]) -> u64 {
        self.value.as_ref().map_or(0, |v| (key.len() + v.len()) as u64)
    }

    /// When a live slot expires (ms since the epoch; `u64::MAX`: never).
    fn expires_at(&self, ttl_ms: u64) -> u64 {
        expires_at(self.version, self.deadline, ttl_ms)
    }
}

/// When a write of `version` with `deadline` expires under a cache time
/// to live of `ttl_ms` (0: none): at its own deadline, else at its write
/// time plus the cache's time to live.
fn expires_at(version: Version, deadline: u64, ttl_ms: u64) -> u64 {
    match (deadline, ttl_ms) {
        (0, 0) => u64::MAX,
        (0, ttl) => version.ms().saturating_add(ttl),
        (own, _) => own,
    }
}

/// What expiry and eviction need of one cache: kept only once the cache
/// has bounds or a slot with a deadline, so a plain cache's reads and
/// writes cost what they did.
#[derive(Debug, Default)]
struct Limits {
    bounds: CacheBounds,
    /// The live slots, lowest version (least recently written) first: the
    /// order of eviction, and of expiry by the cache's time to live.
    by_version: BTreeSet<(Version, Vec<u8>)>,
    /// The slots with a deadline, soonest first: a live one expires then,
    /// a tombstone is forgotten then.
    timed: BTreeSet<(u64, Vec<u8>)>,
    /// Keys plus values of the live slots.
    bytes: u64,
}

impl Limits {
    fn add(&mut self, key: &[u8], slot: &Slot) {
        if slot.value.is_some() {
            self.by_version.insert((slot.version, key.to_vec()));
            self.bytes += slot.bytes(key);
        }
        if slot.deadline != 0 {
            self.timed.insert((slot.deadline, key.to_vec()));
        }
    }

    fn remove(&mut self, key: &[u8], slot: &Slot) {
        if slot.value.is_some() {
            self.by_version.remove(&(slot.version, key.to_vec()));
            self.bytes -= slot.bytes(key);
        }
        if slot.deadline != 0 {
            self.timed.remove(&(slot.deadline, key.to_vec()));
        }
    }

    /// Whether a size bound is exceeded.
    fn over(&self) -> bool {
        let CacheBounds { max_entries, max_bytes, .. } = self.bounds;
        (max_entries > 0 && self.by_version.len() as u64 > max_entries) || (max_bytes > 0 && self.bytes > max_bytes)
    }
}

/// One cache: key -> slot, and its limits once it has any.
#[derive(Default)]
struct Cache {
    slots: HashMap<Vec<u8>, Slot>,
    limits: Option<Box<Limits>>,
}

/// Who is told what happens to one cache's entries, and the tombstone
/// grace expiry and eviction use.
struct Tell<'a> {
    cache: &'a str,
    observer: Option<&'a Observer>,
    counters: &'a Counters,
    grace_ms: u64,
}

impl Tell<'_> {
    fn change(&self, kind: EntryEventKind, key: &[u8], value: Option<&[u8]>, version: Version) {
        match kind {
            EntryEventKind::Expired => self.counters.count(self.cache, 0, 1),
            EntryEventKind::Evicted => self.counters.count(self.cache, 1, 0),
            _ => {}
        }
        if let (Some(observer), false) = (self.observer, self.cache.starts_with("__")) {
            observer(StoreChange { cache: self.cache, kind, key, value, version });
        }
    }
}

impl Cache {
    /// The limits, made (and filled from the slots) if the cache had none.
    fn limits(&mut self) -> &mut Limits {
        let slots = &self.slots;
        self.limits.get_or_insert_with(|| {
            let mut limits = Box::<Limits>::default();
            for (key, slot) in slots {
                limits.add(key, slot);
            }
            limits
        })
    }

    /// The cache's time to live (0: none).
    fn ttl_ms(&self) -> u64 {
        self.limits.as_ref().map_or(0, |l| l.bounds.ttl_ms)
    }

    /// The slot under `key` if it holds a value that has not expired.
    fn live(&self, key: &[u8]) -> Option<&Slot> {
        let slot = self.slots.get(key)?;
        slot.value.as_ref()?;
        if let Some(limits) = &self.limits {
            let ttl = limits.bounds.ttl_ms;
            if (slot.deadline != 0 || ttl > 0) && is_past(slot.expires_at(ttl), now_ms()) {
                // Never answered; the sweep removes it (and tells).
                return None;
            }
        }
        Some(slot)
    }

    /// Puts `slot` under `key`, keeping the limits' indexes.
    fn put(&mut self, key: Vec<u8>, slot: Slot) {
        if slot.deadline != 0 {
            self.limits();
        }
        match &mut self.limits {
            None => {
                self.slots.insert(key, slot);
            }
            Some(limits) => {
                if let Some(old) = self.slots.get(&key) {
                    limits.remove(&key, old);
                }
                limits.add(&key, &slot);
                self.slots.insert(key, slot);
            }
        }
    }

    /// Takes the slot under `key` out, keeping the limits' indexes.
    fn take(&mut self, key: &[u8]) -> Option<Slot> {
        let slot = self.slots.remove(key)?;
        if let Some(limits) = &mut self.limits {
            limits.remove(key, &slot);
        }
        Some(slot)
    }

    /// Replaces the live slot under `key` by a tombstone of the same
    /// version, forgotten at `forget_at`, telling `kind`.
    fn bury(&mut self, key: &[u8], kind: EntryEventKind, forget_at: u64, tell: &Tell<'_>) {
        let Some(slot) = self.take(key) else { return };
        tell.change(kind, key, None, slot.version);
        self.put(key.to_vec(), Slot { value: None, version: slot.version, deadline: forget_at.max(1) });
    }

    /// Applies a write if it is newer than what is held; true if applied.
    fn apply(
        &mut self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        version: Version,
        deadline: u64,
        tell: &Tell<'_>,
    ) -> bool {
        let held = self.slots.get(&key);
        if let Some(held) = held {
            if held.version > version {
                return false;
            }
            if held.version == version {
                return self.same_write(key, value, deadline, tell);
            }
        }
        let (mut value, mut deadline, mut expired) = (value, deadline, false);
        let ttl = self.ttl_ms();
        if value.is_some() && (deadline != 0 || ttl > 0) {
            let at = expires_at(version, deadline, ttl);
            if is_past(at, now_ms()) {
                // Arrived expired (a late copy, a state transfer, a merge):
                // not resurrected; its tombstone keeps older copies out.
                (value, deadline, expired) = (None, at.saturating_add(tell.grace_ms).max(1), true);
            }
        }
        let mut held_value = held.map(|slot| &slot.value);
        if let Some(slot) = held.filter(|s| s.value.is_some() && (s.deadline != 0 || ttl > 0)) {
            if is_past(slot.expires_at(ttl), now_ms()) {
                // What it replaces had expired (not swept yet): told as such
                // first, and this write adds the key again.
                tell.change(EntryEventKind::Expired, &key, None, slot.version);
                held_value = None;
            }
        }
        let kind = if expired {
            held_value.is_some_and(Option::is_some).then_some(EntryEventKind::Expired)
        } else {
            change_kind(held_value, value.as_deref())
        };
        if let Some(kind) = kind {
            tell.change(kind, &key, value.as_deref(), version);
        }
        self.put(key, Slot { value, version, deadline });
        self.evict(tell);
        true
    }

    /// A write of the version already held. A tombstone of it says the
    /// member it came from expired or evicted it: so does this one (members
    /// converge on it by anti-entropy). A copy that carries a deadline
    /// gives it to one that came without (from a wire 1.2 member).
    fn same_write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>, deadline: u64, tell: &Tell<'_>) -> bool {
        let Some(held) = self.slots.get(&key) else { return false };
        match (&held.value, value) {
            (Some(_), None) => {
                let now = now_ms();
                let kind = if is_past(held.expires_at(self.ttl_ms()), now) {
                    EntryEventKind::Expired
                } else {
                    EntryEventKind::Evicted
                };
                let forget_at = if deadline == 0 { now.saturating_add(tell.grace_ms) } else { deadline };
                self.bury(&key, kind, forget_at, tell);
                true
            }
            (Some(_), Some(_)) if held.deadline == 0 && deadline != 0 => {
                let Some(slot) = self.take(&key) else { return false };
                self.put(key, Slot { deadline, ..slot });
                true
            }
            _ => false,
        }
    }

    /// Evicts the live slots of lowest version while a size bound is exceeded.
    fn evict(&mut self, tell: &Tell<'_>) {
        if !self.limits.as_ref().is_some_and(|l| l.over()) {
            return;
        }
        let forget_at = now_ms().saturating_add(tell.grace_ms);
        while let Some(limits) = self.limits.as_ref().filter(|l| l.over()) {
            let Some((_, key)) = limits.by_version.first().cloned() else { break };
            self.bury(&key, EntryEventKind::Evicted, forget_at, tell);
        }
    }

    /// Expires the live slots due at `now` and forgets the tombstones due;
    /// how many expired.
    fn sweep(&mut self, now: u64, tell: &Tell<'_>) -> usize {
        let Some(limits) = &self.limits else { return 0 };
        let ttl = limits.bounds.ttl_ms;
        let mut due: Vec<Vec<u8>> = Vec::new();
        if ttl > 0 {
            for (version, key) in &limits.by_version {
                if !is_past(version.ms().saturating_add(ttl), now) {
                    break;
                }
                // An entry with a deadline of its own is due by that one.
                if self.slots.get(key).is_some_and(|slot| slot.deadline == 0) {
                    due.push(key.clone());
                }
            }
        }
        due.extend(limits.timed.iter().take_while(|(at, _)| is_past(*at, now)).map(|(_, key)| key.clone()));
        let mut expired = 0;
        for key in due {
            let Some(slot) = self.slots.get(&key) else { continue };
            if slot.value.is_none() {
                self.take(&key);
                continue;
            }
            let at = slot.expires_at(ttl);
            if is_past(at, now) {
                self.bury(&key, EntryEventKind::Expired, at.saturating_add(tell.grace_ms), tell);
                expired += 1;
            }
        }
        expired
    }

    /// When its next entry is due (ms since the epoch): the first
    /// millisecond past ([`is_past`]) its oldest write plus its time to
    /// live, or past its soonest deadline.
    fn next_due(&self) -> Option<u64> {
        let limits = self.limits.as_ref()?;
        let ttl = limits.bounds.ttl_ms;
        // The oldest write that the cache's TTL governs (not its own deadline).
        let governed = limits.by_version.iter().find(|(_, key)| self.slots.get(key).is_some_and(|s| s.deadline == 0));
        let by_ttl = governed.filter(|_| ttl > 0).map(|(v, _)| v.ms().saturating_add(ttl));
        let timed = limits.timed.first().map(|(at, _)| *at);
        by_ttl.into_iter().chain(timed).min().map(|at| at.saturating_add(1))
    }

    /// How many values it holds, and their bytes.
    fn size(&self) -> CacheSize {
        if let Some(limits) = &self.limits {
            return CacheSize { entries: limits.by_version.len() as u64, bytes: limits.bytes };
        }
        let live = self.slots.iter().filter(|(_, s)| s.value.is_some());
        let (entries, bytes) = live.fold((0, 0), |(n, b), (k, s)| (n + 1, b + s.bytes(k)));
        CacheSize { entries, bytes }
    }
}

/// About how many bytes an entry takes in a frame (its strings and bytes
/// plus the version, the deadline and postcard's length prefixes).
pub fn entry_size(cache: &str, key: &[u8], value: Option<&[u8]>) -> usize {
    cache.len() + key.len() + value.map_or(0, <[u8]>::len) + 32
}

/// Splits `entries` into runs of about `max_bytes` each (at least one entry each).
pub fn chunks(entries: Vec<WireEntry>, max_bytes: usize) -> Vec<Vec<WireEntry>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let size = entry_size(&entry.cache, &entry.key, entry.value.as_deref());
        if !current.is_empty() && bytes + size > max_bytes {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(entry);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A write that changed what this member holds, told to the store's
/// observer under the store's lock (so a key's changes come in the order
/// they were applied, which is their versions' order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreChange<'a> {
    pub cache: &'a str,
    pub kind: EntryEventKind,
    pub key: &'a [u8],
    /// The new value (`None` for a removal, an expiry or an eviction).
    pub value: Option<&'a [u8]>,
    /// The applied write's version (the entry's, for an expiry or an eviction).
    pub version: Version,
}

/// Told every change of a cache's (not an internal `__` one's) entries.
pub type Observer = Box<dyn Fn(StoreChange<'_>) + Send + Sync>;

/// What an applied write does to a key that held `before` (`None`: no
/// slot; `Some(None)`: a tombstone): the entry event, if any.
fn change_kind(before: Option<&Option<Vec<u8>>>, after: Option<&[u8]>) -> Option<EntryEventKind> {
    let held = before.is_some_and(Option::is_some);
    match (held, after.is_some()) {
        (false, true) => Some(EntryEventKind::Added),
        (true, true) => Some(EntryEventKind::Updated),
        (true, false) => Some(EntryEventKind::Removed),
        (false, false) => None,
    }
}

/// Entries the bounds removed, over every cache and by cache, since the
/// member started.
#[derive(Default)]
struct Counters {
    evicted: AtomicU64,
    expired: AtomicU64,
    /// Cache name → (evicted, expired); touched only when one happens.
    by_cache: Mutex<HashMap<String, (u64, u64)>>,
}

impl Counters {
    fn count(&self, cache: &str, evicted: u64, expired: u64) {
        self.evicted.fetch_add(evicted, Ordering::Relaxed);
        self.expired.fetch_add(expired, Ordering::Relaxed);
        let mut by_cache = locked(&self.by_cache);
        match by_cache.get_mut(cache) {
            Some(counts) => *counts = (counts.0 + evicted, counts.1 + expired),
            None => {
                by_cache.insert(cache.to_string(), (evicted, expired));
            }
        }
    }
}

/// How long the tombstone an expiry or an eviction leaves is kept, unless
/// the strategy sets another grace (it sets `dead_grace_ms`).
pub const TOMBSTONE_GRACE_MS: u64 = 60_000;

/// Every cache this member holds.
pub struct Store {
    /// The caches by name; one lock, as a write is a single insert.
    caches: Mutex<HashMap<String, Cache>>,
    /// Told every change (entry events); set once the member starts.
    observer: OnceLock<Observer>,
    counters: Counters,
    /// How long after an expiry (from its deadline) or an eviction its
    /// tombstone is kept, so that a late copy of the entry or an older
    /// write of its key does not bring it back meanwhile.
    grace_ms: AtomicU64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            caches: Mutex::default(),
            observer: OnceLock::new(),
            counters: Counters::default(),
            grace_ms: AtomicU64::new(TOMBSTONE_GRACE_MS),
        }
    }
}

impl Store {
    fn caches(&self) -> MutexGuard<'_, HashMap<String, Cache>> {
        locked(&self.caches)
    }

    fn tell<'a>(&'a self, cache: &'a str) -> Tell<'a> {
        Tell {
            cache,
            observer: self.observer.get(),
            counters: &self.counters,
            grace_ms: self.grace_ms.load(Ordering::Relaxed),
        }
    }

    /// Keeps the tombstones expiries and evictions leave for `ms`.
    pub fn set_tombstone_grace(&self, ms: u64) {
        self.grace_ms.store(ms, Ordering::Relaxed);
    }

    /// The value of `key` in `cache`, if it holds one (not expired).
    pub fn get(&self, cache: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.caches().get(cache)?.live(key)?.value.clone()
    }

    /// The value of `key` in `cache` with the version of its write.
    pub fn get_versioned(&self, cache: &str, key: &[u8]) -> Option<(Vec<u8>, Version)> {
        let caches = self.caches();
        let slot = caches.get(cache)?.live(key)?;
        Some((slot.value.clone()?, slot.version))
    }

    /// Whether `cache` holds a value for `key`.
    pub fn contains(&self, cache: &str, key: &[u8]) -> bool {
        self.caches().get(cache).and_then(|c| c.live(key)).is_some()
    }

    /// From now on `observer` is told every change (once; a second is ignored).
    pub fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    /// Applies a write if it is newer than what is held; true if applied.
    /// A write that changes what this member holds is told to the observer;
    /// one that arrives already expired is held as a tombstone; in a cache
    /// with a size bound, the lowest versions beyond it are evicted.
    pub fn apply(&self, entry: WireEntry) -> bool {
        let WireEntry { cache: name, key, value, version, deadline } = entry;
        let mut caches = self.caches();
        if let Some(cache) = caches.get_mut(&name) {
            return cache.apply(key, value, version, deadline, &self.tell(&name));
        }
        let mut cache = Cache::default();
        let applied = cache.apply(key, value, version, deadline, &self.tell(&name));
        caches.insert(name, cache);
        applied
    }

    /// Applies many writes; returns how many were newer.
    pub fn apply_all(&self, entries: impl IntoIterator<Item = WireEntry>) -> usize {
        entries.into_iter().filter(|e| self.apply(e.clone())).count()
    }

    /// Applies `bounds` to `cache` from now on (made empty if it does not
    /// exist), expiring and evicting at once what they no longer allow.
    pub fn configure(&self, name: &str, bounds: CacheBounds) {
        let mut caches = self.caches();
        let cache = caches.entry(name.to_string()).or_default();
        let limits = cache.limits();
        limits.bounds = bounds;
        if bounds.is_none() && limits.timed.is_empty() {
            // Nothing left to keep: a plain cache again.
            cache.limits = None;
            return;
        }
        let tell = self.tell(name);
        cache.sweep(now_ms(), &tell);
        cache.evict(&tell);
    }

    /// The bounds `cache` has (none if it has none).
    pub fn bounds(&self, name: &str) -> CacheBounds {
        self.caches().get(name).and_then(|c| c.limits.as_ref()).map_or(CacheBounds::NONE, |l| l.bounds)
    }

    /// Expires every entry due at `now` and forgets the tombstones due, in
    /// every cache; how many expired.
    pub fn sweep(&self, now: u64) -> usize {
        let mut caches = self.caches();
        let mut expired = 0;
        for (name, cache) in caches.iter_mut().filter(|(_, c)| c.limits.is_some()) {
            expired += cache.sweep(now, &self.tell(name));
        }
        expired
    }

    /// When the next entry of any cache is due (ms since the epoch), if any
    /// is: when [`sweep`](Self::sweep) next has something to do.
    pub fn next_due(&self) -> Option<u64> {
        self.caches().values().filter_map(Cache::next_due).min()
    }

    /// Entries evicted by a size bound, and expired, since the member started.
    pub fn removed_by_bounds(&self) -> (u64, u64) {
        (self.counters.evicted.load(Ordering::Relaxed), self.counters.expired.load(Ordering::Relaxed))
    }

    /// Entries of `cache` evicted by a size bound, and expired, since the member started.
    pub fn removed_by_bounds_of(&self, cache: &str) -> (u64, u64) {
        locked(&self.counters.by_cache).get(cache).copied().unwrap_or_default()
    }

    /// When each of `keys` of `cache` expires (ms since the epoch; `None`:
    /// never, nothing live there, or already due), in the order asked.
    pub fn expiries(&self, cache: &str, keys: &[Vec<u8>]) -> Vec<Option<u64>> {
        let caches = self.caches();
        let Some(held) = caches.get(cache) else { return vec![None; keys.len()] };
        let ttl = held.ttl_ms();
        keys.iter()
            .map(|key| {
                let slot = held.live(key)?;
                let at = slot.expires_at(ttl);
                (at != u64::MAX).then_some(at)
            })
            .collect()
    }

    /// Runs `f` on cache `name` once what is due in it has expired.
    fn swept<T: Default>(&self, name: &str, f: impl FnOnce(&Cache) -> T) -> T {
        let mut caches = self.caches();
        let Some(cache) = caches.get_mut(name) else { return T::default() };
        if cache.limits.is_some() {
            cache.sweep(now_ms(), &self.tell(name));
        }
        f(cache)
    }

    /// Every slot (tombstones included), for state transfer and anti-entropy.
    pub fn snapshot(&self) -> Vec<WireEntry> {
        let caches = self.caches();
        let mut out = Vec::new();
        for (cache, map) in caches.iter() {
            for (key, slot) in &map.slots {
                out.push(WireEntry {
                    cache: cache.clone(),
                    key: key.clone(),
                    value: slot.value.clone(),
                    version: slot.version,
                    deadline: slot.deadline,
                });
            }
        }
        out
    }

    /// One page of [`snapshot`](Self::snapshot) in (cache, key) order: the
    /// slots after `after`, until about `max_bytes` of them (at least one);
    /// and whether slots after the page remain.
    ///
    /// Each page sorts what is left after the cursor, so a transfer of n
    /// entries in p pages costs O(p · n log n); fine for the replicated
    /// caches gossip is for (every member holds everything anyway).
    pub fn page(&self, after: Option<&(String, Vec<u8>)>, max_bytes: usize) -> (Vec<WireEntry>, bool) {
        let caches = self.caches();
        let mut names: Vec<&String> = caches.keys().collect();
        names.sort();
        let mut out = Vec::new();
        let mut bytes = 0;
        for name in names {
            if after.is_some_and(|(cache, _)| name < cache) {
                continue;
            }
            let map = &caches[name].slots;
            let mut keys: Vec<&Vec<u8>> =
                map.keys().filter(|k| after.is_none_or(|(cache, key)| name > cache || *k > key)).collect();
            keys.sort();
            for key in keys {
                let slot = &map[key];
                let size = entry_size(name, key, slot.value.as_deref());
                if !out.is_empty() && bytes + size > max_bytes {
                    return (out, true);
                }
                bytes += size;
                out.push(WireEntry {
                    cache: name.clone(),
                    key: key.clone(),
                    value: slot.value.clone(),
                    version: slot.version,
                    deadline: slot.deadline,
                });
            }
        }
        (out, false)
    }

    /// The live entries of `cache`, with their write time for the host.
    pub fn entries(&self, cache: &str) -> Vec<Entry> {
        self.swept(cache, |c| {
            c.slots
                .iter()
                .filter_map(|(k, s)| {
                    s.value.as_ref().map(|v| Entry { key: k.clone(), value: v.clone(), version: s.version.ms() })
                })
                .collect()
        })
    }

    /// The keys of `cache` that hold a value.
    pub fn keys(&self, cache: &str) -> Vec<Vec<u8>> {
        self.swept(cache, |c| c.slots.iter().filter(|(_, s)| s.value.is_some()).map(|(k, _)| k.clone()).collect())
    }

    /// How many values `cache` holds, and their bytes (keys and values).
    pub fn size(&self, cache: &str) -> CacheSize {
        self.swept(cache, Cache::size)
    }

    /// The caches' names, the internal ones (`__` prefix) left out.
    pub fn names(&self) -> Vec<String> {
        self.caches().iter().filter(|(n, _)| !n.starts_with("__")).map(|(n, _)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: Option<&str>, hlc: u64, member: u64) -> WireEntry {
        WireEntry {
            cache: "c".into(),
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
            version: Version { hlc, member },
            deadline: 0,
        }
    }

    #[test]
    fn pages_cover_the_snapshot_once_in_order_and_chunks_keep_every_entry() {
        let store = Store::default();
        for cache in ["b", "a"] {
            for i in 0..50 {
                let mut e = entry(&format!("k{i:02}"), Some(&"v".repeat(100)), i, 1);
                e.cache = cache.into();
                store.apply(e);
            }
        }
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let (page, more) = store.page(after.as_ref(), 1000);
            assert!(!page.is_empty());
            let bytes: usize = page.iter().map(|e| entry_size(&e.cache, &e.key, e.value.as_deref())).sum();
            assert!(bytes <= 1000, "{bytes}");
            pages += 1;
            let last = page.last().unwrap();
            after = Some((last.cache.clone(), last.key.clone()));
            seen.extend(page.into_iter().map(|e| (e.cache, e.key)));
            if !more {
                break;
            }
        }
        assert!(pages > 10, "{pages}");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(seen, sorted, "pages come in order, each entry once");
        assert_eq!(seen.len(), 100);
        // An entry larger than a page still travels, alone.
        let (page, _) = store.page(None, 10);
        assert_eq!(page.len(), 1);

        let chunks = chunks(store.snapshot(), 1000);
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 100);
        assert!(chunks.len() > 10);
    }

    #[test]
    fn replicas_converge_whatever_the_order() {
        let writes = [
            entry("k", Some("a"), 10, 1),
            entry("k", Some("b"), 12, 2),
            entry("k", None, 11, 3),
            entry("j", Some("x"), 5, 1),
        ];
        let one = Store::default();
        let two = Store::default();
        one.apply_all(writes.iter().cloned());
        two.apply_all(writes.iter().rev().cloned());
        assert_eq!(one.get("c", b"k").as_deref(), Some(&b"b"[..]));
        assert_eq!(two.get("c", b"k").as_deref(), Some(&b"b"[..]));
        let mut a = one.snapshot();
        let mut b = two.snapshot();
        a.sort_by(|x, y| x.key.cmp(&y.key));
        b.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(a, b);
        // A tombstone newer than the value removes it; an older one does not.
        assert!(one.apply(entry("k", None, 13, 1)));
        assert!(!one.contains("c", b"k"));
        assert!(!one.apply(entry("k", Some("old"), 12, 2)));
        assert_eq!(one.size("c"), CacheSize { entries: 1, bytes: 2 });
    }

    #[test]
    fn a_write_that_changes_what_is_held_is_told_once_in_order_and_stale_ones_are_not() {
        let told = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        let store = Store::default();
        store.observe(Box::new(move |c: StoreChange<'_>| {
            let value = c.value.map(|v| String::from_utf8_lossy(v).into_owned());
            locked(&sink).push((c.kind, String::from_utf8_lossy(c.key).into_owned(), value, c.version.hlc));
        }));
        store.apply(entry("k", Some("a"), 10, 1));
        store.apply(entry("k", Some("stale"), 9, 2));
        store.apply(entry("k", Some("b"), 12, 2));
        store.apply(entry("k", None, 13, 1));
        store.apply(entry("k", None, 14, 1));
        store.apply(entry("j", None, 1, 1));
        let mut internal = entry("x", Some("v"), 1, 1);
        internal.cache = "__settings".into();
        store.apply(internal);
        use EntryEventKind::*;
        assert_eq!(
            locked(&told).clone(),
            vec![
                (Added, "k".into(), Some("a".into()), 10),
                (Updated, "k".into(), Some("b".into()), 12),
                (Removed, "k".into(), None, 13),
            ],
            "a stale write, a tombstone over a tombstone and internal caches are not changes"
        );
    }

    #[test]
    fn the_clock_moves_forward_past_what_it_observes() {
        let clock = Hlc::default();
        let a = clock.now();
        assert!(clock.now() > a);
        clock.observe(a + (1 << 30));
        assert!(clock.now() > a + (1 << 30));
    }

    #[test]
    fn a_version_far_in_the_future_does_not_move_the_clock() {
        // Found by the gossip_frame fuzz target: a Replicate carrying
        // hlc = u64::MAX made the next `now` overflow (a panic in debug
        // builds, a clock back at 0 in release).
        let clock = Hlc::default();
        clock.observe(u64::MAX);
        let a = clock.now();
        assert!(clock.now() > a);
        assert!(a >> 16 <= now_ms() + 1000, "the clock stays at the wall clock");
        let ahead = (now_ms() + MAX_AHEAD_MS / 2) << 16;
        clock.observe(ahead);
        assert!(clock.now() > ahead, "a version within the bound is still followed");
    }

    /// A write of `key` in cache "b" made `ago` ms before now by `member`.
    fn write(key: &str, ago: u64, member: u64) -> WireEntry {
        let version = Version::at_ms(now_ms() - ago, member);
        WireEntry { cache: "b".into(), key: key.into(), value: Some(b"v".to_vec()), version, deadline: 0 }
    }

    /// The changes a store was told, as (kind, key).
    type Told = std::sync::Arc<Mutex<Vec<(EntryEventKind, String)>>>;

    /// A store whose changes are recorded.
    fn recorded() -> (Store, Told) {
        let told = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        let store = Store::default();
        store.observe(Box::new(move |c: StoreChange<'_>| {
            locked(&sink).push((c.kind, String::from_utf8_lossy(c.key).into_owned()));
        }));
        (store, told)
    }

    fn keys_of(store: &Store) -> Vec<String> {
        let mut keys: Vec<String> =
            store.keys("b").into_iter().map(|k| String::from_utf8_lossy(&k).into_owned()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn an_entry_expires_at_its_write_time_plus_the_ttl_on_every_member_and_is_never_answered_after() {
        use EntryEventKind::*;
        let ttl = CacheBounds { ttl_ms: 10_000, ..CacheBounds::NONE };
        let (one, told) = recorded();
        let two = Store::default();
        for store in [&one, &two] {
            store.configure("b", ttl);
        }
        let fresh = write("fresh", 50, 1);
        let old = write("old", 9_000, 1);
        one.apply_all([fresh.clone(), old.clone()]);
        two.apply_all([old.clone(), fresh.clone()]);
        // Both hold both; the deadline is the write's time + 10 s, the same on both.
        let deadline = old.version.ms() + 10_000;
        for store in [&one, &two] {
            assert_eq!(keys_of(store), ["fresh", "old"]);
            assert_eq!(store.sweep(deadline), 0, "not due in its deadline's own millisecond");
            assert_eq!(store.sweep(deadline + 1), 1, "due once past its deadline, on each member alike");
            assert_eq!(keys_of(store), ["fresh"]);
            assert_eq!(store.removed_by_bounds(), (0, 1));
        }
        assert_eq!(locked(&told).clone(), [(Added, "fresh".into()), (Added, "old".into()), (Expired, "old".into())]);
        // A late copy of the expired write (anti-entropy, a state transfer)
        // does not bring it back, nor does an older write of its key.
        assert!(!one.apply(old.clone()));
        assert!(!one.apply(write("old", 9_500, 2)));
        assert!(!one.contains("b", b"old"));
        // A live edit of the TTL applies to the entries there: read at once, swept after.
        one.configure("b", CacheBounds { ttl_ms: 1, ..CacheBounds::NONE });
        assert!(one.get("b", b"fresh").is_none());
        assert_eq!(one.size("b"), CacheSize::default());
    }

    #[test]
    fn an_entry_that_arrives_already_expired_is_not_resurrected_and_removes_the_older_value() {
        use EntryEventKind::*;
        let (store, told) = recorded();
        store.configure("b", CacheBounds { ttl_ms: 1_000, ..CacheBounds::NONE });
        // An old value with a deadline of its own still ahead, then a newer
        // write already past the cache's TTL (a join's state transfer, say).
        let mut older = write("k", 5_000, 1);
        older.deadline = now_ms() + 60_000;
        assert!(store.apply(older.clone()));
        assert!(store.contains("b", b"k"));
        let late = write("k", 2_000, 2);
        assert!(store.apply(late.clone()), "applied, as a tombstone");
        assert!(!store.contains("b", b"k"));
        assert!(!store.apply(older), "the older write does not come back");
        assert!(!store.apply(late));
        assert_eq!(locked(&told).clone(), [(Added, "k".into()), (Expired, "k".into())]);
        // Nothing that arrives expired into an empty key is told.
        assert!(store.apply(write("j", 2_000, 1)));
        assert_eq!(locked(&told).len(), 2);
        assert_eq!(store.removed_by_bounds(), (0, 1));
    }

    #[test]
    fn a_deadline_of_its_own_wins_over_the_cache_ttl_travels_with_the_write_and_survives_a_deadline_free_copy() {
        let store = Store::default();
        store.configure("b", CacheBounds { ttl_ms: 60_000, ..CacheBounds::NONE });
        let mut short = write("short", 0, 1);
        short.deadline = short.version.ms() + 500;
        let mut long = write("long", 120_000, 1);
        long.deadline = now_ms() + 60_000;
        store.apply_all([short.clone(), long.clone()]);
        assert_eq!(store.next_due(), Some(short.deadline + 1), "the sweep knows when to run next");
        assert_eq!(store.sweep(short.deadline), 0, "never in its deadline's own millisecond");
        assert_eq!(store.sweep(short.deadline + 1), 1);
        assert_eq!(store.next_due(), Some(long.deadline + 1), "the entries with a deadline of their own");
        let plain = write("plain", 1_000, 1);
        store.apply(plain.clone());
        assert_eq!(store.next_due(), Some(plain.version.ms() + 60_001), "the oldest write the cache's TTL governs");
        assert_eq!(keys_of(&store), ["long", "plain"], "its own deadline keeps it past the cache's TTL");
        // A put_ttl entry in a cache without bounds expires too.
        let plain = Store::default();
        let mut copy = short.clone();
        copy.deadline = 0;
        plain.apply(copy);
        assert!(plain.apply(short.clone()), "the copy with a deadline gives it to the one without");
        assert_eq!(plain.sweep(short.deadline + 1), 1);
        assert!(!plain.contains("b", b"short"));
        // Its tombstone is forgotten after the grace.
        plain.set_tombstone_grace(1_000);
        assert_eq!(plain.snapshot().len(), 1);
        plain.sweep(short.deadline + 60_000 + 1);
        assert_eq!(plain.snapshot().len(), 0, "forgotten once the grace is over");
    }

    #[test]
    fn a_cache_bounded_at_n_evicts_the_lowest_versions_and_every_member_keeps_the_same_n_whatever_the_order() {
        use EntryEventKind::*;
        // Three members write 30 keys at once; each member applies them in
        // another order (its own first, then the others' as they come).
        let writes: Vec<Vec<WireEntry>> = (0..3u64)
            .map(|m| (0..10u64).map(|i| write(&format!("k{m}-{i}"), 1_000 - (i * 3 + m) * 10, m)).collect())
            .collect();
        let bound = CacheBounds { max_entries: 5, ..CacheBounds::NONE };
        let mut held = Vec::new();
        for member in 0..3usize {
            let (store, told) = recorded();
            store.configure("b", bound);
            let order = [member, (member + 1) % 3, (member + 2) % 3];
            for i in 0..10 {
                for m in order {
                    // Member 2's writes reach the others late, in reverse.
                    let i = if m == 2 && member != 2 { 9 - i } else { i };
                    store.apply(writes[m][i].clone());
                    assert!(store.size("b").entries <= 5, "never more than the bound");
                }
            }
            // Late copies of evicted writes (anti-entropy) do not come back.
            for w in writes.iter().flatten() {
                store.apply(w.clone());
                assert!(store.size("b").entries <= 5);
            }
            let evicted = locked(&told).iter().filter(|(kind, _)| *kind == Evicted).count();
            assert_eq!(store.removed_by_bounds().0, evicted as u64);
            held.push(keys_of(&store));
        }
        let mut newest: Vec<&WireEntry> = writes.iter().flatten().collect();
        newest.sort_by_key(|w| std::cmp::Reverse(w.version));
        let mut expected: Vec<String> =
            newest[..5].iter().map(|w| String::from_utf8_lossy(&w.key).into_owned()).collect();
        expected.sort();
        assert_eq!(held, vec![expected; 3], "the 5 most recently written, on every member");
    }

    #[test]
    fn a_tighter_bound_shrinks_at_once_and_bytes_bound_too() {
        let (store, told) = recorded();
        for i in 0..6 {
            store.apply(write(&format!("k{i}"), 100 - i, 1));
        }
        store.configure("b", CacheBounds { max_entries: 4, ..CacheBounds::NONE });
        assert_eq!(keys_of(&store), ["k2", "k3", "k4", "k5"]);
        // Each entry is 3 bytes (key "kN", value "v").
        store.configure("b", CacheBounds { max_bytes: 7, ..CacheBounds::NONE });
        assert_eq!(keys_of(&store), ["k4", "k5"]);
        assert_eq!(store.size("b"), CacheSize { entries: 2, bytes: 6 });
        assert_eq!(store.removed_by_bounds(), (4, 0));
        assert_eq!(locked(&told).iter().filter(|(k, _)| *k == EntryEventKind::Evicted).count(), 4);
        // An entry larger than the bytes bound alone is evicted too, after
        // every older one (lowest versions first, while over the bound).
        let mut big = write("big", 0, 1);
        big.value = Some(vec![0; 100]);
        store.apply(big);
        assert!(!store.contains("b", b"big"));
        assert_eq!(store.size("b"), CacheSize::default());
        // No bounds any more: a plain cache again, nothing evicted.
        store.configure("b", CacheBounds::NONE);
        for i in 0..10 {
            store.apply(write(&format!("p{i}"), 0, 2));
        }
        assert_eq!(store.size("b").entries, 10);
        assert_eq!(store.bounds("b"), CacheBounds::NONE);
    }

    #[test]
    fn a_write_over_an_expired_entry_not_swept_yet_tells_it_expired_then_added() {
        use EntryEventKind::*;
        let (store, told) = recorded();
        store.configure("b", CacheBounds { ttl_ms: 10_000, ..CacheBounds::NONE });
        let mut old = write("k", 0, 1);
        old.deadline = old.version.ms() + 20;
        store.apply(old.clone());
        // Past its deadline, before any sweep:
        while now_ms() <= old.deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut newer = write("k", 0, 2);
        newer.version.hlc = old.version.hlc + (5 << 16);
        store.apply(newer);
        assert_eq!(locked(&told).clone(), [(Added, "k".into()), (Expired, "k".into()), (Added, "k".into())]);
        assert_eq!(store.removed_by_bounds(), (0, 1));
        assert!(store.contains("b", b"k"));
    }

    #[test]
    fn a_tombstone_of_the_same_version_from_another_member_evicts_here_so_members_converge() {
        let store = Store::default();
        let kept = write("k", 0, 1);
        store.apply(kept.clone());
        let mut gone = kept.clone();
        gone.value = None;
        gone.deadline = now_ms() + 60_000;
        assert!(store.apply(gone.clone()));
        assert!(!store.contains("b", b"k"));
        assert_eq!(store.removed_by_bounds(), (1, 0));
        assert!(!store.apply(kept), "the live copy of that version does not come back");
        assert!(!store.apply(gone), "nor is the tombstone applied twice");
    }
}
