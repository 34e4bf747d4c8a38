//! The cache factory: named caches, standalone while no strategy is
//! clustered, clustered while one is; entries move both ways on this node's
//! join and leave, so none is lost.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use clusterhost_plugin_api::cluster::{now_ms, Entry};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::strategy::StrategyRef;
use super::ClusterError;

type LocalMap = HashMap<Vec<u8>, (Vec<u8>, u64)>;

enum Mode {
    Standalone,
    Clustered(Arc<StrategyRef>),
}

/// Makes caches; cheap to clone.
#[derive(Clone)]
pub struct CacheFactory {
    inner: Arc<FactoryInner>,
}

struct FactoryInner {
    /// Taken for writing only while entries move between modes, so an
    /// operation never sees a half-moved cache.
    mode: tokio::sync::RwLock<Mode>,
    caches: Mutex<HashMap<String, Arc<CacheCore>>>,
}

struct CacheCore {
    name: String,
    local: Mutex<LocalMap>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheCore {
    fn local(&self) -> MutexGuard<'_, LocalMap> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One cache's figures on this member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    pub name: String,
    pub clustered: bool,
    pub entries: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

impl Default for CacheFactory {
    fn default() -> Self {
        CacheFactory {
            inner: Arc::new(FactoryInner {
                mode: tokio::sync::RwLock::new(Mode::Standalone),
                caches: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl CacheFactory {
    fn core(&self, name: &str) -> Arc<CacheCore> {
        let mut caches = self.inner.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(CacheCore {
                    name: name.to_string(),
                    local: Mutex::new(HashMap::new()),
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                })
            })
            .clone()
    }

    fn names(&self) -> Vec<String> {
        let caches = self.inner.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.keys().cloned().collect()
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
        matches!(*self.inner.mode.read().await, Mode::Clustered(_))
    }

    /// Whether caches are clustered right now, without waiting: false while
    /// entries are moving (for listeners, which run on the event thread).
    pub fn clustered_now(&self) -> bool {
        self.inner.mode.try_read().is_ok_and(|mode| matches!(*mode, Mode::Clustered(_)))
    }

    /// Figures for every cache this member knows, by name.
    pub async fn stats(&self) -> Vec<CacheStats> {
        let mode = self.inner.mode.read().await;
        let mut names: BTreeSet<String> = self.names().into_iter().collect();
        if let Mode::Clustered(strategy) = &*mode {
            names.extend(strategy.cache_names().await.unwrap_or_default());
        }
        let mut stats = Vec::new();
        for name in names {
            let core = self.core(&name);
            let (clustered, entries, bytes) = match &*mode {
                Mode::Standalone => {
                    let local = core.local();
                    let bytes = local.iter().map(|(k, (v, _))| (k.len() + v.len()) as u64).sum();
                    (false, local.len() as u64, bytes)
                }
                Mode::Clustered(strategy) => {
                    let size = strategy.local_size(&name).await.unwrap_or_default();
                    (true, size.entries, size.bytes)
                }
            };
            stats.push(CacheStats {
                name,
                clustered,
                entries,
                bytes,
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
        let mut mode = self.inner.mode.write().await;
        let mut moved = 0;
        for name in self.names() {
            let core = self.core(&name);
            let entries: Vec<Entry> = core
                .local()
                .iter()
                .map(|(k, (v, version))| Entry { key: k.clone(), value: v.clone(), version: *version })
                .collect();
            if entries.is_empty() {
                continue;
            }
            let count = entries.len();
            strategy.merge(&name, entries).await?;
            moved += count;
        }
        // Only once every cache merged: the local copies are now in the cluster.
        for name in self.names() {
            self.core(&name).local().clear();
        }
        *mode = Mode::Clustered(strategy);
        Ok(moved)
    }

    /// This node leaves: the entries it holds become its standalone caches.
    /// Returns how many entries were kept; a cache the strategy cannot list
    /// is reported and left empty.
    pub(crate) async fn leave(&self) -> usize {
        let mut mode = self.inner.mode.write().await;
        let Mode::Clustered(strategy) = &*mode else {
            return 0;
        };
        let mut names: BTreeSet<String> = self.names().into_iter().collect();
        match strategy.cache_names().await {
            Ok(more) => names.extend(more),
            Err(e) => tracing::error!("could not list the clustered caches while leaving: {e}"),
        }
        let mut kept = 0;
        for name in names {
            match strategy.entries(&name).await {
                Ok(entries) => {
                    let core = self.core(&name);
                    let mut local = core.local();
                    kept += entries.len();
                    for e in entries {
                        local.insert(e.key, (e.value, e.version));
                    }
                }
                Err(e) => tracing::error!(cache = %name, "could not copy the cache's entries while leaving: {e}"),
            }
        }
        *mode = Mode::Standalone;
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
        &self.core.name
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClusterError> {
        let mode = self.factory.mode.read().await;
        let value = match &*mode {
            Mode::Standalone => self.core.local().get(key).map(|(v, _)| v.clone()),
            Mode::Clustered(s) => s.get(&self.core.name, key).await?,
        };
        let counter = if value.is_some() { &self.core.hits } else { &self.core.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(value)
    }

    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), ClusterError> {
        let mode = self.factory.mode.read().await;
        match &*mode {
            Mode::Standalone => {
                self.core.local().insert(key, (value, now_ms()));
                Ok(())
            }
            Mode::Clustered(s) => s.put(&self.core.name, key, value).await,
        }
    }

    /// True if the key was present.
    pub async fn remove(&self, key: &[u8]) -> Result<bool, ClusterError> {
        let mode = self.factory.mode.read().await;
        match &*mode {
            Mode::Standalone => Ok(self.core.local().remove(key).is_some()),
            Mode::Clustered(s) => s.remove(&self.core.name, key).await,
        }
    }

    pub async fn contains(&self, key: &[u8]) -> Result<bool, ClusterError> {
        let mode = self.factory.mode.read().await;
        match &*mode {
            Mode::Standalone => Ok(self.core.local().contains_key(key)),
            Mode::Clustered(s) => s.contains(&self.core.name, key).await,
        }
    }

    /// Entries in the cache (the whole cluster's, while clustered).
    pub async fn len(&self) -> Result<u64, ClusterError> {
        let mode = self.factory.mode.read().await;
        match &*mode {
            Mode::Standalone => Ok(self.core.local().len() as u64),
            Mode::Clustered(s) => s.size(&self.core.name).await,
        }
    }

    pub async fn is_empty(&self) -> Result<bool, ClusterError> {
        Ok(self.len().await? == 0)
    }

    pub async fn clear(&self) -> Result<(), ClusterError> {
        let mode = self.factory.mode.read().await;
        match &*mode {
            Mode::Standalone => {
                self.core.local().clear();
                Ok(())
            }
            Mode::Clustered(s) => s.clear(&self.core.name).await,
        }
    }

    pub async fn keys(&self) -> Result<Vec<Vec<u8>>, ClusterError> {
        let mode = self.factory.mode.read().await;
        match &*mode {
            Mode::Standalone => Ok(self.core.local().keys().cloned().collect()),
            Mode::Clustered(s) => s.keys(&self.core.name).await,
        }
    }

    pub async fn get_all(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, ClusterError> {
        let mode = self.factory.mode.read().await;
        let values = match &*mode {
            Mode::Standalone => {
                let local = self.core.local();
                keys.iter().map(|k| local.get(k).map(|(v, _)| v.clone())).collect()
            }
            Mode::Clustered(s) => s.get_all(&self.core.name, keys).await?,
        };
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        self.core.hits.fetch_add(hits, Ordering::Relaxed);
        self.core.misses.fetch_add(values.len() as u64 - hits, Ordering::Relaxed);
        Ok(values)
    }

    pub async fn put_all(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ClusterError> {
        let mode = self.factory.mode.read().await;
        let now = now_ms();
        match &*mode {
            Mode::Standalone => {
                let mut local = self.core.local();
                for (k, v) in entries {
                    local.insert(k, (v, now));
                }
                Ok(())
            }
            Mode::Clustered(s) => {
                let entries = entries.into_iter().map(|(key, value)| Entry { key, value, version: now }).collect();
                s.put_all(&self.core.name, entries).await
            }
        }
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
