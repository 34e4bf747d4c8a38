//! The replicated caches: every member holds every entry, each with a
//! version (hybrid logical clock, then member) so replicas converge by the
//! merge policy whatever order writes arrive in. Removes are tombstones.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use clusterhost_plugin_api::cluster::{now_ms, CacheSize, Entry, EntryEventKind};
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
}

/// What a cache holds for a key: its value (None: a tombstone) and the
/// version of the write that put it there.
#[derive(Debug, Clone)]
struct Slot {
    value: Option<Vec<u8>>,
    version: Version,
}

/// One cache: key -> slot.
type Map = HashMap<Vec<u8>, Slot>;

/// About how many bytes an entry takes in a frame (its strings and bytes
/// plus the version and postcard's length prefixes).
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
    /// The new value (`None` for a removal).
    pub value: Option<&'a [u8]>,
    /// The applied write's version.
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

/// Every cache this member holds.
#[derive(Default)]
pub struct Store {
    /// The caches by name; one lock, as a write is a single insert.
    caches: Mutex<HashMap<String, Map>>,
    /// Told every change (entry events); set once the member starts.
    observer: OnceLock<Observer>,
}

impl Store {
    fn caches(&self) -> MutexGuard<'_, HashMap<String, Map>> {
        locked(&self.caches)
    }

    /// The value of `key` in `cache`, if it holds one.
    pub fn get(&self, cache: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.caches().get(cache)?.get(key)?.value.clone()
    }

    /// The value of `key` in `cache` with the version of its write.
    pub fn get_versioned(&self, cache: &str, key: &[u8]) -> Option<(Vec<u8>, Version)> {
        let caches = self.caches();
        let slot = caches.get(cache)?.get(key)?;
        Some((slot.value.clone()?, slot.version))
    }

    /// Whether `cache` holds a value for `key`.
    pub fn contains(&self, cache: &str, key: &[u8]) -> bool {
        self.caches().get(cache).and_then(|m| m.get(key)).is_some_and(|s| s.value.is_some())
    }

    /// From now on `observer` is told every change (once; a second is ignored).
    pub fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    /// Applies a write if it is newer than what is held; true if applied.
    /// A write that changes what this member holds is told to the observer.
    pub fn apply(&self, entry: WireEntry) -> bool {
        let mut caches = self.caches();
        let internal = entry.cache.starts_with("__");
        let map = caches.entry(entry.cache.clone()).or_default();
        let before = map.get(&entry.key);
        if before.is_some_and(|slot| slot.version >= entry.version) {
            return false;
        }
        let kind = change_kind(before.map(|slot| &slot.value), entry.value.as_deref());
        if let (Some(observer), Some(kind), false) = (self.observer.get(), kind, internal) {
            let (cache, key, value) = (entry.cache.as_str(), entry.key.as_slice(), entry.value.as_deref());
            observer(StoreChange { cache, kind, key, value, version: entry.version });
        }
        map.insert(entry.key, Slot { value: entry.value, version: entry.version });
        true
    }

    /// Applies many writes; returns how many were newer.
    pub fn apply_all(&self, entries: impl IntoIterator<Item = WireEntry>) -> usize {
        entries.into_iter().filter(|e| self.apply(e.clone())).count()
    }

    /// Every slot (tombstones included), for state transfer and anti-entropy.
    pub fn snapshot(&self) -> Vec<WireEntry> {
        let caches = self.caches();
        let mut out = Vec::new();
        for (cache, map) in caches.iter() {
            for (key, slot) in map {
                out.push(WireEntry {
                    cache: cache.clone(),
                    key: key.clone(),
                    value: slot.value.clone(),
                    version: slot.version,
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
            let map = &caches[name];
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
                });
            }
        }
        (out, false)
    }

    /// The live entries of `cache`, with their write time for the host.
    pub fn entries(&self, cache: &str) -> Vec<Entry> {
        let caches = self.caches();
        let Some(map) = caches.get(cache) else { return Vec::new() };
        map.iter()
            .filter_map(|(k, s)| {
                s.value.as_ref().map(|v| Entry { key: k.clone(), value: v.clone(), version: s.version.ms() })
            })
            .collect()
    }

    /// The keys of `cache` that hold a value.
    pub fn keys(&self, cache: &str) -> Vec<Vec<u8>> {
        let caches = self.caches();
        caches
            .get(cache)
            .map(|m| m.iter().filter(|(_, s)| s.value.is_some()).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default()
    }

    /// How many values `cache` holds, and their bytes (keys and values).
    pub fn size(&self, cache: &str) -> CacheSize {
        let caches = self.caches();
        let Some(map) = caches.get(cache) else { return CacheSize::default() };
        let live = map.iter().filter_map(|(k, s)| s.value.as_ref().map(|v| (k.len() + v.len()) as u64));
        let (entries, bytes) = live.fold((0, 0), |(n, b), size| (n + 1, b + size));
        CacheSize { entries, bytes }
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
}
