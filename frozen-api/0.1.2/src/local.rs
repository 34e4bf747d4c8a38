//! One member's caches and locks held in memory: the engine of the host's
//! built-in standalone strategy and of the in-memory test strategy
//! (`memory`), written once. It knows nothing of members or the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cluster::{next_version, CacheSize, CasOutcome, Entry, EntryEventKind, Expected, Versioned};

/// One cache's entries: key → (value, version). A write stamps the cluster
/// time (ms since the epoch), or the previous version + 1 when that is not
/// greater ([`next_version`]); merges keep the latest.
pub type CacheMap = HashMap<Vec<u8>, (Vec<u8>, u64)>;

/// A change of one entry of a [`LocalCache`], told to its observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalChange<'a> {
    /// The cache's name.
    pub cache: &'a str,
    pub kind: EntryEventKind,
    pub key: &'a [u8],
    /// The new value (`None` for a removal).
    pub value: Option<&'a [u8]>,
    /// The new entry's version (the removed one's, for a removal).
    pub version: u64,
}

/// Told every change of every entry of the caches it observes, under the
/// cache's lock (so the changes of one key arrive in the order they were
/// made): it must be quick and must not call back into the cache.
pub type Observer = Arc<dyn Fn(LocalChange<'_>) + Send + Sync>;

/// Writes `key` with the version [`next_version`] gives from `now` (one
/// lookup of the key), telling `observe` what changed.
fn stamp(
    map: &mut CacheMap,
    key: Vec<u8>,
    value: Vec<u8>,
    now: u64,
    observe: impl FnOnce(EntryEventKind, &[u8], &[u8], u64),
) {
    use std::collections::hash_map::Entry as Slot;
    match map.entry(key) {
        Slot::Occupied(mut slot) => {
            let version = next_version(Some(slot.get().1), now);
            slot.insert((value, version));
            observe(EntryEventKind::Updated, slot.key(), &slot.get().0, version);
        }
        Slot::Vacant(slot) => {
            let slot = slot.insert_entry((value, now));
            observe(EntryEventKind::Added, slot.key(), &slot.get().0, now);
        }
    }
}

/// One cache in memory: its entries behind one mutex, never held across an
/// await. A handle to it ([`LocalCaches::cache`]) reaches it without the
/// name lookup, for callers that make many calls on one cache.
#[derive(Default)]
pub struct LocalCache {
    entries: Mutex<CacheMap>,
    /// Its name, for the observer.
    name: String,
    /// Told every change, under the lock (entry events).
    observer: Option<Observer>,
}

impl LocalCache {
    /// An empty cache named `name` whose changes `observer` is told.
    pub fn observed(name: &str, observer: Option<Observer>) -> Self {
        LocalCache { entries: Mutex::default(), name: name.to_string(), observer }
    }

    fn map(&self) -> MutexGuard<'_, CacheMap> {
        crate::sync::lock(&self.entries)
    }

    /// Tells the observer, if any, of one change (called under the lock).
    fn tell(&self, kind: EntryEventKind, key: &[u8], value: Option<&[u8]>, version: u64) {
        if let Some(observer) = &self.observer {
            observer(LocalChange { cache: &self.name, kind, key, value, version });
        }
    }

    /// [`stamp`], telling the observer.
    fn stamp(&self, map: &mut CacheMap, key: Vec<u8>, value: Vec<u8>, now: u64) {
        stamp(map, key, value, now, |kind, key, value, version| self.tell(kind, key, Some(value), version));
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map().get(key).map(|(v, _)| v.clone())
    }

    /// Writes `key` at cluster time `now` (its version: [`next_version`]).
    pub fn put(&self, key: Vec<u8>, value: Vec<u8>, now: u64) {
        self.stamp(&mut self.map(), key, value, now);
    }

    /// The value under `key` with its version.
    pub fn get_versioned(&self, key: &[u8]) -> Option<Versioned> {
        self.map().get(key).map(|(value, version)| Versioned { value: value.clone(), version: *version })
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
        let mut map = self.map();
        let current = map.get(&key).map(|(value, version)| Versioned { value: value.clone(), version: *version });
        if !matches(current.as_ref()) {
            return CasOutcome { applied: false, current };
        }
        let current = match value {
            Some(value) => {
                let kind = if current.is_some() { EntryEventKind::Updated } else { EntryEventKind::Added };
                let version = next_version(current.map(|c| c.version), now);
                self.tell(kind, &key, Some(&value), version);
                map.insert(key, (value.clone(), version));
                Some(Versioned { value, version })
            }
            None => {
                if let Some((_, version)) = map.remove(&key) {
                    self.tell(EntryEventKind::Removed, &key, None, version);
                }
                None
            }
        };
        CasOutcome { applied: true, current }
    }

    /// Removes `key`; true if it was there.
    pub fn remove(&self, key: &[u8]) -> bool {
        let mut map = self.map();
        match map.remove(key) {
            Some((_, version)) => {
                self.tell(EntryEventKind::Removed, key, None, version);
                true
            }
            None => false,
        }
    }

    /// Whether `key` is there.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.map().contains_key(key)
    }

    /// How many entries the cache holds.
    pub fn len(&self) -> u64 {
        self.map().len() as u64
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Removes every entry.
    pub fn clear(&self) {
        let mut map = self.map();
        if self.observer.is_some() {
            for (key, (_, version)) in map.drain() {
                self.tell(EntryEventKind::Removed, &key, None, version);
            }
        } else {
            map.clear();
        }
    }

    /// Every key.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.map().keys().cloned().collect()
    }

    /// The values under `keys`, in order.
    pub fn get_all(&self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        let map = self.map();
        keys.iter().map(|k| map.get(k).map(|(v, _)| v.clone())).collect()
    }

    /// Writes every entry; an entry with version 0 gets `now` (each
    /// version as [`next_version`] makes it).
    pub fn put_all(&self, entries: Vec<Entry>, now: u64) {
        let mut map = self.map();
        for e in entries {
            self.stamp(&mut map, e.key, e.value, if e.version == 0 { now } else { e.version });
        }
    }

    /// Merges `entries`: the latest version wins; on a tie the entry already
    /// here stays.
    pub fn merge(&self, entries: Vec<Entry>) {
        let mut map = self.map();
        for e in entries {
            let kind = match map.get(&e.key) {
                None => EntryEventKind::Added,
                Some((_, version)) if e.version > *version => EntryEventKind::Updated,
                Some(_) => continue,
            };
            self.tell(kind, &e.key, Some(&e.value), e.version);
            map.insert(e.key, (e.value, e.version));
        }
    }

    /// Every entry, with its version.
    pub fn entries(&self) -> Vec<Entry> {
        let map = self.map();
        map.iter().map(|(k, (v, version))| Entry { key: k.clone(), value: v.clone(), version: *version }).collect()
    }

    /// Entries and bytes (keys plus values).
    pub fn size(&self) -> CacheSize {
        let map = self.map();
        let bytes = map.iter().map(|(k, (v, _))| (k.len() + v.len()) as u64).sum();
        CacheSize { entries: map.len() as u64, bytes }
    }
}

/// Cache name → the cache. Names are few and chosen by the application, so
/// a fast hasher is safe here (keys keep std's DoS-resistant one).
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
