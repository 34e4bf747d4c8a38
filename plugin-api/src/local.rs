//! One member's caches and locks held in memory: the engine of the host's
//! built-in standalone strategy and of the in-memory test strategy
//! (`memory`), written once. It knows nothing of members or the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cluster::{CacheSize, Entry};

/// One cache's entries: key → (value, version). The version is the cluster
/// time of the write (ms since the epoch); merges keep the latest.
pub type CacheMap = HashMap<Vec<u8>, (Vec<u8>, u64)>;

/// One cache in memory: its entries behind one mutex, never held across an
/// await. A handle to it ([`LocalCaches::cache`]) reaches it without the
/// name lookup, for callers that make many calls on one cache.
#[derive(Default)]
pub struct LocalCache {
    entries: Mutex<CacheMap>,
}

impl LocalCache {
    fn map(&self) -> MutexGuard<'_, CacheMap> {
        crate::sync::lock(&self.entries)
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map().get(key).map(|(v, _)| v.clone())
    }

    /// Writes `key` with `version`.
    pub fn put(&self, key: Vec<u8>, value: Vec<u8>, version: u64) {
        self.map().insert(key, (value, version));
    }

    /// Removes `key`; true if it was there.
    pub fn remove(&self, key: &[u8]) -> bool {
        self.map().remove(key).is_some()
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
        self.map().clear();
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

    /// Writes every entry; an entry with version 0 gets `now`.
    pub fn put_all(&self, entries: Vec<Entry>, now: u64) {
        let mut map = self.map();
        for e in entries {
            map.insert(e.key, (e.value, if e.version == 0 { now } else { e.version }));
        }
    }

    /// Merges `entries`: the latest version wins; on a tie the entry already
    /// here stays.
    pub fn merge(&self, entries: Vec<Entry>) {
        let mut map = self.map();
        for e in entries {
            let newer = map.get(&e.key).is_none_or(|(_, version)| e.version > *version);
            if newer {
                map.insert(e.key, (e.value, e.version));
            }
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
}

impl LocalCaches {
    fn lock(&self) -> MutexGuard<'_, Caches> {
        crate::sync::lock(&self.caches)
    }

    /// The cache `name`, made empty if it does not exist.
    pub fn cache(&self, name: &str) -> Arc<LocalCache> {
        let mut caches = self.lock();
        match caches.get(name) {
            Some(cache) => cache.clone(),
            None => caches.entry(name.to_string()).or_default().clone(),
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
            None => f(caches.entry(name.to_string()).or_default()),
        }
    }

    /// The value under `key`.
    pub fn get(&self, name: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.read(name, |c| c.get(key)).flatten()
    }

    /// Writes `key` with `version`.
    pub fn put(&self, name: &str, key: Vec<u8>, value: Vec<u8>, version: u64) {
        self.write(name, |c| c.put(key, value, version));
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
                true
            }
        }
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
