//! Caches in Redis: one hash per cache, each value prefixed with its
//! version; the cache calls the host makes, and the merge on (re)join
//! where the latest version wins.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use clusterhost_plugin_api::cluster::{CacheSize, Entry};
use redis::Script;

use crate::core::{lock, Core};
use crate::error::{Error, UnversionedValue};

/// Latest version wins: sets each field whose stored version is older.
static MERGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(string.sub(cur, 1, 16), 16) < tonumber(string.sub(ARGV[i + 1], 1, 16), 16) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
"#,
    )
});

/// Entries per merge script: in batches, so one script never blocks Redis for long.
const MERGE_BATCH: usize = 500;

/// A cache value as stored in Redis: the version in 16 hex digits, then the value.
#[doc(hidden)] // pub for the fuzz targets (fuzz/)
pub fn encode(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = format!("{version:016x}").into_bytes();
    out.extend_from_slice(value);
    out
}

/// The version and value of a stored cache value ([`encode`]).
#[doc(hidden)] // pub for the fuzz targets (fuzz/)
pub fn decode(stored: Vec<u8>) -> Result<(u64, Vec<u8>), UnversionedValue> {
    let version = stored
        .get(..16)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or(UnversionedValue)?;
    Ok((version, stored[16..].to_vec()))
}

/// What this member knows of the caches in Redis. Part of [`Core`].
#[derive(Default)]
pub(crate) struct Storage {
    /// Caches this member named in `{P}:caches` since it joined: each is
    /// named once per join, not on every write. Cleared on (re)join, as
    /// Redis may have lost the set meanwhile.
    registered: Mutex<HashSet<String>>,
}

impl Storage {
    /// Forgets which caches were named: the next write names each again.
    pub(crate) fn forget_registered(&self) {
        lock(&self.registered).clear();
    }
}

impl Core {
    /// Cache calls fail at once while this member is out of the cluster.
    fn fail_fast(&self) -> Result<(), Error> {
        if self.in_cluster() {
            Ok(())
        } else {
            Err(Error::NotInCluster { urls: self.config.urls.join(", ") })
        }
    }

    /// Names a cache in `{P}:caches` the first time this member writes it
    /// (a command of its own: in Redis Cluster the set lives on another slot).
    async fn register_cache(&self, cache: &str) -> Result<(), Error> {
        if !lock(&self.storage.registered).insert(cache.to_string()) {
            return Ok(());
        }
        let added = self.query::<i64>(redis::cmd("SADD").arg(self.keys.caches()).arg(cache)).await;
        if added.is_err() {
            lock(&self.storage.registered).remove(cache);
        }
        added.map(|_| ())
    }

    pub(crate) async fn cache_get(&self, cache: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.fail_fast()?;
        let stored: Option<Vec<u8>> = self.query(redis::cmd("HGET").arg(self.keys.cache(cache)).arg(key)).await?;
        Ok(match stored {
            Some(s) => Some(decode(s)?.1),
            None => None,
        })
    }

    /// Sets one value, stamped with `version` (the cluster time of the call).
    pub(crate) async fn cache_put(&self, cache: &str, key: Vec<u8>, value: &[u8], version: u64) -> Result<(), Error> {
        let mut hset = redis::cmd("HSET");
        hset.arg(self.keys.cache(cache)).arg(key).arg(encode(version, value));
        self.fail_fast()?;
        self.register_cache(cache).await?;
        self.query::<i64>(&hset).await?;
        Ok(())
    }

    pub(crate) async fn cache_remove(&self, cache: &str, key: &[u8]) -> Result<bool, Error> {
        self.fail_fast()?;
        let n: i64 = self.query(redis::cmd("HDEL").arg(self.keys.cache(cache)).arg(key)).await?;
        Ok(n > 0)
    }

    pub(crate) async fn cache_contains(&self, cache: &str, key: &[u8]) -> Result<bool, Error> {
        self.fail_fast()?;
        self.query(redis::cmd("HEXISTS").arg(self.keys.cache(cache)).arg(key)).await
    }

    pub(crate) async fn cache_size(&self, cache: &str) -> Result<u64, Error> {
        self.fail_fast()?;
        self.query(redis::cmd("HLEN").arg(self.keys.cache(cache))).await
    }

    pub(crate) async fn cache_clear(&self, cache: &str) -> Result<(), Error> {
        self.fail_fast()?;
        let _: i64 = self.query(redis::cmd("DEL").arg(self.keys.cache(cache))).await?;
        Ok(())
    }

    pub(crate) async fn cache_keys(&self, cache: &str) -> Result<Vec<Vec<u8>>, Error> {
        self.fail_fast()?;
        self.query(redis::cmd("HKEYS").arg(self.keys.cache(cache))).await
    }

    pub(crate) async fn cache_get_all(&self, cache: &str, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.fail_fast()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<Option<Vec<u8>>> =
            self.query(redis::cmd("HMGET").arg(self.keys.cache(cache)).arg(keys)).await?;
        let mut values = Vec::with_capacity(stored.len());
        for s in stored {
            values.push(match s {
                Some(s) => Some(decode(s)?.1),
                None => None,
            });
        }
        Ok(values)
    }

    /// Sets every entry, each stamped with `version` (the cluster time of the call).
    pub(crate) async fn cache_put_all(&self, cache: &str, entries: &[Entry], version: u64) -> Result<(), Error> {
        let mut hset = redis::cmd("HSET");
        hset.arg(self.keys.cache(cache));
        for e in entries {
            hset.arg(&e.key).arg(encode(version, &e.value));
        }
        self.fail_fast()?;
        if !entries.is_empty() {
            self.register_cache(cache).await?;
            self.query::<i64>(&hset).await?;
        }
        Ok(())
    }

    /// Merges entries with their own versions: each is set only where
    /// Redis holds an older version (the host merges a rejoined member's
    /// standalone caches this way).
    pub(crate) async fn cache_merge(&self, cache: &str, entries: &[Entry]) -> Result<(), Error> {
        let hash = self.keys.cache(cache);
        self.fail_fast()?;
        for chunk in entries.chunks(MERGE_BATCH) {
            let args: Vec<Vec<u8>> = chunk.iter().flat_map(|e| [e.key.clone(), encode(e.version, &e.value)]).collect();
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let _: i64 = self.script(&MERGE, &[&hash], &refs, true).await?;
        }
        self.register_cache(cache).await?;
        Ok(())
    }

    /// Every entry with its version (the host copies them when this member
    /// leaves); read even while out of the cluster.
    pub(crate) async fn cache_entries(&self, cache: &str) -> Result<Vec<Entry>, Error> {
        let stored: Vec<(Vec<u8>, Vec<u8>)> = self.query(redis::cmd("HGETALL").arg(self.keys.cache(cache))).await?;
        let mut entries = Vec::with_capacity(stored.len());
        for (key, s) in stored {
            let (version, value) = decode(s)?;
            entries.push(Entry { key, value, version });
        }
        Ok(entries)
    }

    pub(crate) async fn cache_names(&self) -> Result<Vec<String>, Error> {
        self.query(redis::cmd("SMEMBERS").arg(self.keys.caches())).await
    }

    pub(crate) async fn cache_local_size(&self, cache: &str) -> Result<CacheSize, Error> {
        let hash = self.keys.cache(cache);
        let entries: u64 = self.query(redis::cmd("HLEN").arg(&hash)).await?;
        // What the shared server spends on the cache (every member sees the same).
        let bytes: Option<u64> = self.query(redis::cmd("MEMORY").arg("USAGE").arg(&hash)).await?;
        Ok(CacheSize { entries, bytes: bytes.unwrap_or(0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_version() {
        let stored = encode(0x1234, b"hello");
        assert_eq!(&stored[..16], b"0000000000001234");
        assert_eq!(decode(stored).unwrap(), (0x1234, b"hello".to_vec()));
        assert!(decode(b"short".to_vec()).unwrap_err().to_string().contains("no version prefix"));
    }
}
