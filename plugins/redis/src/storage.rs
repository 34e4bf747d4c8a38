//! Caches in Redis: one hash per cache, each value prefixed with its
//! version; the cache calls the host makes, and the merge on (re)join
//! where the latest version wins.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use clusterhost_plugin_api::cluster::{CacheSize, CasOutcome, Entry, Expected, Versioned};
use redis::Script;

use crate::core::{lock, Core};
use crate::entry_events::{LUA_PRELUDE, VALUE_MAX};
use crate::error::{Error, UnversionedValue};

/// A script that writes entries: [`LUA_PRELUDE`] (the event context in
/// ARGV[1..4], `tell`) and then `body`, whose own arguments start at ARGV[5].
fn writing_script(body: &str) -> Script {
    Script::new(&format!("{LUA_PRELUDE}{body}"))
}

/// Latest version wins: sets each field whose stored version is older.
static MERGE: LazyLock<Script> = LazyLock::new(|| {
    writing_script(
        r#"
local n = 0
for i = 5, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(string.sub(cur, 1, 16), 16) < tonumber(string.sub(ARGV[i + 1], 1, 16), 16) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    tell(cur and 'u' or 'a', ARGV[i], string.sub(ARGV[i + 1], 1, 16), string.sub(ARGV[i + 1], 17))
    n = n + 1
  end
end
return n
"#,
    )
});

/// Every write of one entry, atomic in Redis (one script on one key, so it
/// works unchanged when a cache's entries spread over Redis Cluster slots):
/// checks the condition on the stored entry, then sets the value with the
/// version rule (the caller's cluster time, or the stored version + 1 when
/// that is not greater) or deletes it, and publishes the change (entry
/// events). Returns {applied, entry after} where the entry is the stored
/// value (version prefix included) or false; a delete of an absent key is
/// not applied.
///
/// KEYS[1] the cache's hash; ARGV after the event context: field, condition
/// (`put`: none, `absent`, `value`, `version`), expected (value bytes, or
/// the version in 16 hex digits), `set` or `del`, the caller's time in 16
/// hex digits, the value.
static WRITE_IF: LazyLock<Script> = LazyLock::new(|| {
    writing_script(
        r#"
local cur = redis.call('HGET', KEYS[1], ARGV[5])
local cond = ARGV[6]
local ok
if cond == 'put' then ok = true
elseif cond == 'absent' then ok = not cur
elseif not cur then ok = false
elseif cond == 'value' then ok = string.sub(cur, 17) == ARGV[7]
else ok = string.sub(cur, 1, 16) == ARGV[7] end
if not ok then return {0, cur} end
if ARGV[8] == 'del' then
  if not cur then return {0, false} end
  redis.call('HDEL', KEYS[1], ARGV[5])
  tell('r', ARGV[5], string.sub(cur, 1, 16), nil)
  return {1, false}
end
local version = ARGV[9]
if cur and string.sub(cur, 1, 16) >= version then
  version = string.format('%016x', tonumber(string.sub(cur, 1, 16), 16) + 1)
end
local stored = version .. ARGV[10]
redis.call('HSET', KEYS[1], ARGV[5], stored)
tell(cur and 'u' or 'a', ARGV[5], version, ARGV[10])
return {1, stored}
"#,
    )
});

/// Sets many entries, each by the version rule from the caller's time
/// (ARGV[5], 16 hex digits); then field, value pairs.
static PUT_ALL: LazyLock<Script> = LazyLock::new(|| {
    writing_script(
        r#"
for i = 6, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local version = ARGV[5]
  if cur and string.sub(cur, 1, 16) >= version then
    version = string.format('%016x', tonumber(string.sub(cur, 1, 16), 16) + 1)
  end
  redis.call('HSET', KEYS[1], ARGV[i], version .. ARGV[i + 1])
  tell(cur and 'u' or 'a', ARGV[i], version, ARGV[i + 1])
end
return 0
"#,
    )
});

/// Removes every entry of the cache, publishing each removal.
static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    writing_script(
        r#"
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  tell('r', all[i], string.sub(all[i + 1], 1, 16), nil)
end
redis.call('DEL', KEYS[1])
return #all / 2
"#,
    )
});

/// [`WRITE_IF`]'s condition and expected bytes for `expected`.
fn condition(expected: &Expected) -> (&'static [u8], Vec<u8>) {
    match expected {
        Expected::Value(value) => (b"value", value.clone()),
        Expected::Version(version) => (b"version", format!("{version:016x}").into_bytes()),
    }
}

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
    /// Entry event messages dropped as malformed or too long.
    pub(crate) refused_events: std::sync::atomic::AtomicU64,
}

impl Storage {
    /// Forgets which caches were named: the next write names each again.
    pub(crate) fn forget_registered(&self) {
        lock(&self.registered).clear();
    }
}

impl Core {
    /// The event context every writing script starts with: the entries
    /// channel, this member (the origin), the cache, the value limit.
    fn event_args(&self, cache: &str) -> [Vec<u8>; 4] {
        [
            self.keys.entries().into_bytes(),
            self.member.clone().into_bytes(),
            cache.as_bytes().to_vec(),
            VALUE_MAX.to_string().into_bytes(),
        ]
    }

    /// Runs a writing script on the cache's hash: the event context, then `args`.
    async fn write_script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        cache: &str,
        args: &[&[u8]],
        retry: bool,
    ) -> Result<T, Error> {
        let context = self.event_args(cache);
        let mut all: Vec<&[u8]> = context.iter().map(Vec::as_slice).collect();
        all.extend_from_slice(args);
        self.script(script, &[&self.keys.cache(cache)], &all, retry).await
    }

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

    /// Sets one value, stamped by the version rule from `now` (the cluster
    /// time of the call): [`WRITE_IF`] without a condition.
    pub(crate) async fn cache_put(&self, cache: &str, key: Vec<u8>, value: &[u8], now: u64) -> Result<(), Error> {
        self.write_if(cache, &key, b"put", &[], Some(value), now, true).await.map(|_| ())
    }

    /// One [`WRITE_IF`] run: `value` to set (`None` deletes) if `condition`
    /// holds. `retry` only for an unconditional put (running it twice
    /// writes the same value).
    #[allow(clippy::too_many_arguments)]
    async fn write_if(
        &self,
        cache: &str,
        key: &[u8],
        condition: &[u8],
        expected: &[u8],
        value: Option<&[u8]>,
        now: u64,
        retry: bool,
    ) -> Result<CasOutcome, Error> {
        self.fail_fast()?;
        if value.is_some() {
            self.register_cache(cache).await?;
        }
        let now = format!("{now:016x}");
        let op: &[u8] = if value.is_some() { b"set" } else { b"del" };
        let args = [key, condition, expected, op, now.as_bytes(), value.unwrap_or_default()];
        let (applied, stored): (i64, Option<Vec<u8>>) = self.write_script(&WRITE_IF, cache, &args, retry).await?;
        let current = match stored {
            Some(stored) => {
                let (version, value) = decode(stored)?;
                Some(Versioned { value, version })
            }
            None => None,
        };
        Ok(CasOutcome { applied: applied == 1, current })
    }

    /// The value under `key` with its version.
    pub(crate) async fn cache_get_versioned(&self, cache: &str, key: &[u8]) -> Result<Option<Versioned>, Error> {
        self.fail_fast()?;
        let stored: Option<Vec<u8>> = self.query(redis::cmd("HGET").arg(self.keys.cache(cache)).arg(key)).await?;
        Ok(match stored {
            Some(s) => {
                let (version, value) = decode(s)?;
                Some(Versioned { value, version })
            }
            None => None,
        })
    }

    /// Sets `value` if `key` is absent.
    pub(crate) async fn cache_put_if_absent(
        &self,
        cache: &str,
        key: &[u8],
        value: &[u8],
        now: u64,
    ) -> Result<CasOutcome, Error> {
        self.write_if(cache, key, b"absent", &[], Some(value), now, false).await
    }

    /// Sets `value` if the entry under `key` is `expected`.
    pub(crate) async fn cache_replace_if(
        &self,
        cache: &str,
        key: &[u8],
        expected: &Expected,
        value: &[u8],
        now: u64,
    ) -> Result<CasOutcome, Error> {
        let (condition, expected) = condition(expected);
        self.write_if(cache, key, condition, &expected, Some(value), now, false).await
    }

    /// Removes `key` if its entry is `expected`.
    pub(crate) async fn cache_remove_if(
        &self,
        cache: &str,
        key: &[u8],
        expected: &Expected,
    ) -> Result<CasOutcome, Error> {
        let (condition, expected) = condition(expected);
        self.write_if(cache, key, condition, &expected, None, 0, false).await
    }

    /// Removes `key` ([`WRITE_IF`] unconditionally, so the removal is
    /// published); true if it was there.
    pub(crate) async fn cache_remove(&self, cache: &str, key: &[u8]) -> Result<bool, Error> {
        Ok(self.write_if(cache, key, b"put", &[], None, 0, true).await?.applied)
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
        let _: i64 = self.write_script(&CLEAR, cache, &[], true).await?;
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

    /// Sets every entry, each stamped by the version rule from `now` (the
    /// cluster time of the call), in batches of [`MERGE_BATCH`].
    pub(crate) async fn cache_put_all(&self, cache: &str, entries: &[Entry], now: u64) -> Result<(), Error> {
        self.fail_fast()?;
        if entries.is_empty() {
            return Ok(());
        }
        self.register_cache(cache).await?;
        let now = format!("{now:016x}").into_bytes();
        for chunk in entries.chunks(MERGE_BATCH) {
            let mut args: Vec<&[u8]> = vec![&now];
            args.extend(chunk.iter().flat_map(|e| [e.key.as_slice(), e.value.as_slice()]));
            let _: i64 = self.write_script(&PUT_ALL, cache, &args, true).await?;
        }
        Ok(())
    }

    /// Merges entries with their own versions: each is set only where
    /// Redis holds an older version (the host merges a rejoined member's
    /// standalone caches this way).
    pub(crate) async fn cache_merge(&self, cache: &str, entries: &[Entry]) -> Result<(), Error> {
        self.fail_fast()?;
        for chunk in entries.chunks(MERGE_BATCH) {
            let args: Vec<Vec<u8>> = chunk.iter().flat_map(|e| [e.key.clone(), encode(e.version, &e.value)]).collect();
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let _: i64 = self.write_script(&MERGE, cache, &refs, true).await?;
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
