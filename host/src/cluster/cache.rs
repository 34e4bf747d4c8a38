//! The cache factory: named caches, served by the standalone strategy while
//! this node is alone and by the clustered one while it is in a cluster;
//! entries move both ways on this node's join and leave, so none is lost.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clusterhost_plugin_api::cluster::{now_ms, Entry};
use serde::de::DeserializeOwned;
use serde::Serialize;

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
}

/// One cache: how strategies are told which (its name, and the standalone
/// strategy's storage for it) and this member's counters.
struct CacheCore {
    cache: CacheRef,
    hits: AtomicU64,
    misses: AtomicU64,
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
}

impl CacheFactory {
    /// A factory whose caches `standalone` serves until a join.
    pub(crate) fn new(standalone: Arc<StrategyRef>) -> Self {
        CacheFactory {
            inner: Arc::new(FactoryInner {
                serving: async_lock::RwLock::new(standalone.clone()),
                standalone,
                caches: Mutex::new(HashMap::new()),
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
                Arc::new(CacheCore { cache, hits: AtomicU64::new(0), misses: AtomicU64::new(0) })
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

    /// Whether caches are clustered right now.
    pub async fn is_clustered(&self) -> bool {
        !self.inner.serving.read().await.is_standalone()
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
        let mut stats = Vec::new();
        for name in names {
            let core = self.core(&name);
            let size = serving.local_size(&core.cache).await.unwrap_or_default();
            stats.push(CacheStats {
                name,
                clustered: !serving.is_standalone(),
                entries: size.entries,
                bytes: size.bytes,
                hits: core.hits.load(Ordering::Relaxed),
                misses: core.misses.load(Ordering::Relaxed),
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
        for core in &cores {
            let entries = standalone.entries(&core.cache).await?;
            if entries.is_empty() {
                continue;
            }
            let count = entries.len();
            strategy.merge(&core.cache, entries).await?;
            moved += count;
        }
        // Only once every cache merged: the local copies are now in the cluster.
        for core in &cores {
            standalone.clear(&core.cache).await?;
        }
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
    /// The cache's name.
    pub fn name(&self) -> &str {
        self.core.cache.name()
    }

    /// The value under `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClusterError> {
        let serving = self.factory.serving.read().await;
        let value = match serving.get_now(&self.core.cache, key) {
            Some(value) => value,
            None => serving.get(&self.core.cache, key).await?,
        };
        let hit = value.is_some() as u64;
        self.core.count(hit, 1 - hit);
        Ok(value)
    }

    /// Writes `value` under `key`.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), ClusterError> {
        self.factory.serving.read().await.put(&self.core.cache, key, value).await
    }

    /// True if the key was present.
    pub async fn remove(&self, key: &[u8]) -> Result<bool, ClusterError> {
        self.factory.serving.read().await.remove(&self.core.cache, key).await
    }

    /// Whether `key` is present.
    pub async fn contains(&self, key: &[u8]) -> Result<bool, ClusterError> {
        self.factory.serving.read().await.contains(&self.core.cache, key).await
    }

    /// Entries in the cache (the whole cluster's, while clustered).
    pub async fn len(&self) -> Result<u64, ClusterError> {
        self.factory.serving.read().await.size(&self.core.cache).await
    }

    /// Whether the cache holds no entry.
    pub async fn is_empty(&self) -> Result<bool, ClusterError> {
        Ok(self.len().await? == 0)
    }

    /// Removes every entry.
    pub async fn clear(&self) -> Result<(), ClusterError> {
        self.factory.serving.read().await.clear(&self.core.cache).await
    }

    /// Every key (the whole cluster's, while clustered).
    pub async fn keys(&self) -> Result<Vec<Vec<u8>>, ClusterError> {
        self.factory.serving.read().await.keys(&self.core.cache).await
    }

    /// The values under `keys`, in order.
    pub async fn get_all(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, ClusterError> {
        let values = self.factory.serving.read().await.get_all(&self.core.cache, keys).await?;
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        self.core.count(hits, values.len() as u64 - hits);
        Ok(values)
    }

    /// Writes every entry, all with the same version.
    pub async fn put_all(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ClusterError> {
        let now = now_ms();
        let entries = entries.into_iter().map(|(key, value)| Entry { key, value, version: now }).collect();
        self.factory.serving.read().await.put_all(&self.core.cache, entries).await
    }
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
}
