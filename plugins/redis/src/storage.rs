//! Caches in Redis: one hash per cache (or per partition of a spread
//! cache, crate::partitions), each value prefixed with its
//! version; the cache calls the host makes, the merge on (re)join where
//! the latest version wins, and bounded caches (bounds kept in Redis,
//! expiry and eviction by the scripts in [`crate::scripts`], expired
//! entries swept by the senior).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use clusterhost_plugin_api::cluster::{CacheBounds, CacheSize, CasOutcome, Entry, Expected, Versioned};
use redis::Script;

use crate::config::Mode;
use crate::core::{lock, Core};
use crate::entry_events::VALUE_MAX;
use crate::error::{Error, UnversionedValue};
use crate::partitions::{Layout, Part};
use crate::scripts::{CLEAR, CONFIGURE, EXPIRIES, GET, MERGE, PUT, PUT_ALL, SCAN, SWEEP, WRITE_IF};

/// [`WRITE_IF`]'s condition and expected bytes for `expected`.
fn condition(expected: &Expected) -> (&'static [u8], Vec<u8>) {
    match expected {
        Expected::Value(value) => (b"value", value.clone()),
        Expected::Version(version) => (b"version", format!("{version:016x}").into_bytes()),
    }
}

/// Entries per merge script: in batches, so one script never blocks Redis for long.
pub(crate) const MERGE_BATCH: usize = 500;

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
    pub(crate) refused_events: AtomicU64,
    /// The caches that keep books in Redis (a `meta` hash: bounds, or
    /// entries with a time to live of their own), as this member last
    /// read or set them: their reads are scripts; every
    /// other cache's reads are plain commands. Read at join, and again for
    /// one cache when a member announces a change of its bounds.
    books: Mutex<HashSet<String>>,
    /// The bounds this member's host configured, applied in Redis at each
    /// join (and at once while joined): the last configure wins.
    configured: Mutex<HashMap<String, CacheBounds>>,
    /// Where each cache's entries are, as this member read or recorded it
    /// (crate::partitions); cleared at each join.
    pub(crate) layouts: Mutex<HashMap<String, Arc<Layout>>>,
    /// The caches this member is gathering onto one partition now.
    pub(crate) gathering_now: Mutex<HashSet<String>>,
    /// Entries this member's scripts evicted, and expired.
    evictions: AtomicU64,
    expiries: AtomicU64,
    /// The same by cache: name → (evicted, expired), touched only when
    /// a script removed something.
    removed_by_cache: Mutex<HashMap<String, (u64, u64)>>,
}

impl Storage {
    /// Forgets which caches were named: the next write names each again.
    pub(crate) fn forget_registered(&self) {
        lock(&self.registered).clear();
    }

    /// Entries evicted and expired by this member's scripts so far.
    pub(crate) fn removed_by_bounds(&self) -> (u64, u64) {
        (self.evictions.load(Ordering::Relaxed), self.expiries.load(Ordering::Relaxed))
    }

    /// Entries of `cache` evicted and expired by this member's scripts so far.
    pub(crate) fn removed_by_bounds_of(&self, cache: &str) -> (u64, u64) {
        lock(&self.removed_by_cache).get(cache).copied().unwrap_or_default()
    }

    /// Counts what a script on `cache` evicted and expired.
    pub(crate) fn count(&self, cache: &str, evicted: u64, expired: u64) {
        if evicted == 0 && expired == 0 {
            return;
        }
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        self.expiries.fetch_add(expired, Ordering::Relaxed);
        let mut by_cache = lock(&self.removed_by_cache);
        match by_cache.get_mut(cache) {
            Some(counts) => *counts = (counts.0 + evicted, counts.1 + expired),
            None => {
                by_cache.insert(cache.to_string(), (evicted, expired));
            }
        }
    }

    /// Whether `cache` keeps books (its reads are scripts).
    fn keeps_books(&self, cache: &str) -> bool {
        lock(&self.books).contains(cache)
    }
}

/// How often the senior sweeps the expired entries of every cache that keeps books.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Expired entries one sweep script removes at most (it runs again while there are more).
const SWEEP_BATCH: usize = 500;

/// Sweep scripts per cache per round at most, so one cache cannot hold the senior's sweep for long.
const SWEEP_ROUNDS: usize = 20;

/// A reply's trailing counters (evicted, expired), as the scripts give them.
fn counters(values: &mut Vec<redis::Value>) -> (u64, u64) {
    let expired = values.pop().and_then(|v| redis::from_redis_value(v).ok()).unwrap_or(0);
    let evicted = values.pop().and_then(|v| redis::from_redis_value(v).ok()).unwrap_or(0);
    (evicted, expired)
}

impl Core {
    /// Whether `cache` has no key beside its hash (cluster mode, a name
    /// with a `}` outside a hash tag: every key is the hash then, and the
    /// cache can keep no books).
    fn plain(&self, cache: &str) -> bool {
        self.keys.cache_keys(cache, self.config.mode == Mode::Cluster).is_none()
    }

    /// Whether this member's host bounds `cache` by entries or bytes (a
    /// cache first written so stays on one partition).
    fn sized_cache(&self, cache: &str) -> bool {
        lock(&self.storage.configured).get(cache).is_some_and(CacheBounds::is_sized)
    }

    /// `cache`'s layout for a write (recorded now if it was not).
    pub(crate) async fn layout_to_write(&self, cache: &str) -> Result<Arc<Layout>, Error> {
        self.layout(cache, Some(self.sized_cache(cache))).await
    }

    /// [`layout_to_write`](Self::layout_to_write) for a write that sets
    /// entries: the cache is named in `{P}:caches` first.
    async fn layout_to_set(&self, cache: &str) -> Result<Arc<Layout>, Error> {
        self.register_cache(cache).await?;
        self.layout_to_write(cache).await
    }

    /// Runs a cache script ([`crate::scripts`]) on partition `part` of
    /// `cache`: its keys, the event context, then `args`.
    pub(crate) async fn cache_script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        cache: &str,
        part: &Part,
        args: &[&[u8]],
        retry: bool,
    ) -> Result<T, Error> {
        self.cache_script_told(script, cache, part, args, retry, true).await
    }

    /// As [`cache_script`](Self::cache_script); `told` false publishes no
    /// `added`, `updated` or `removed` (entries moved between partitions
    /// did not change; an eviction or expiry the script makes is told).
    pub(crate) async fn cache_script_told<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        cache: &str,
        part: &Part,
        args: &[&[u8]],
        retry: bool,
        told: bool,
    ) -> Result<T, Error> {
        let (keys, plain) = (&part.keys, part.plain);
        let mut flags = String::new();
        if !told {
            flags.push('q');
        }
        if self.publishes_all() {
            flags.push('a');
        }
        if plain {
            flags.push('n');
        }
        let context = [
            self.keys.entries().into_bytes(),
            self.member.clone().into_bytes(),
            cache.as_bytes().to_vec(),
            VALUE_MAX.to_string().into_bytes(),
            flags.into_bytes(),
        ];
        let mut all: Vec<&[u8]> = context.iter().map(Vec::as_slice).collect();
        all.extend_from_slice(args);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let answer = self.script(script, &keys, &all, retry).await;
        // This member reads its own writes at once: its copies of the hash
        // go once the write is answered, and a read begun before (which
        // may have read the old value) does not land.
        if self.near.covers(cache) {
            self.near.invalidate(part.data().as_bytes());
        }
        answer
    }

    /// A script answer that does not parse.
    fn failed_reply(&self, e: impl std::fmt::Display) -> Error {
        Error::BadReply { urls: self.config.urls.join(", "), detail: e.to_string() }
    }

    /// Refuses bookkeeping on a cache whose keys cannot share its hash's slot.
    fn can_keep_books(&self, cache: &str, what: &'static str) -> Result<(), Error> {
        if self.plain(cache) {
            return Err(Error::NoRoomForBooks { cache: cache.to_string(), what });
        }
        Ok(())
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

    /// The live entries (version prefix included) under `fields` of a
    /// cache that keeps books: one [`GET`] script, each read a use, an
    /// expired entry removed and not answered.
    async fn read_books(&self, cache: &str, part: &Part, fields: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let mut values: Vec<redis::Value> = self.cache_script(&GET, cache, part, fields, true).await?;
        let (evicted, expired) = counters(&mut values);
        self.storage.count(cache, evicted, expired);
        values.into_iter().map(|v| redis::from_redis_value(v).map_err(|e| self.failed_reply(e))).collect()
    }

    /// The stored value under `key` (version prefix included), live only.
    async fn stored(&self, cache: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let layout = self.layout(cache, None).await?;
        let found = self.stored_in(cache, layout.of(key), key).await?;
        match (found, layout.before(key)) {
            // Being gathered: an entry not moved yet is where it was.
            (None, Some(before)) => self.stored_in(cache, before, key).await,
            (found, _) => Ok(found),
        }
    }

    /// The stored value under `key` in partition `part`, live only.
    async fn stored_in(&self, cache: &str, part: &Part, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if self.storage.keeps_books(cache) {
            return Ok(self.read_books(cache, part, &[key]).await?.pop().flatten());
        }
        if self.near.covers(cache) {
            if let Some(found) = self.near_read(part.data(), key).await {
                return Ok(found);
            }
        }
        self.query(redis::cmd("HGET").arg(part.data()).arg(key)).await
    }

    /// A get answered on the caller's thread, without a future (the
    /// host's synchronous read): this member's near-cache copy of `key`,
    /// when it holds one and the cache's layout is known and settled.
    /// `None` sends the read to [`cache_get`](Self::cache_get), which
    /// answers everything else (and counts the miss).
    pub(crate) fn cache_get_now(&self, cache: &str, key: &[u8]) -> Option<Result<Option<Vec<u8>>, Error>> {
        if !self.in_cluster() || self.storage.keeps_books(cache) || !self.near.covers(cache) {
            return None;
        }
        let layout = self.known_layout(cache)?;
        if layout.before(key).is_some() {
            // Being gathered: an entry not moved yet is looked for where it was.
            return None;
        }
        Some(match self.near.hit(layout.of(key).data(), key)? {
            Some(stored) => decode(stored).map(|(_, value)| Some(value)).map_err(Error::from),
            None => Ok(None),
        })
    }

    /// When each of `keys` expires ([`EXPIRIES`], a look: no use, nothing
    /// removed): one script per partition the keys are in, and for a key
    /// absent there while the cache is being gathered, one where it was.
    pub(crate) async fn cache_expiries(&self, cache: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<u64>>, Error> {
        self.fail_fast()?;
        let mut out = vec![None; keys.len()];
        if self.plain(cache) || keys.is_empty() {
            // No books beside the hash: nothing there expires.
            return Ok(out);
        }
        let layout = self.layout(cache, None).await?;
        let mut absent = Vec::new();
        for (part, asked) in
            self.expiries_in(cache, &layout, keys, (0..keys.len()).collect(), |l, k| Some(l.of(k))).await?
        {
            match part {
                Some(at) => out[asked] = at,
                None => absent.push(asked),
            }
        }
        if layout.from.is_some() && !absent.is_empty() {
            for (found, asked) in self.expiries_in(cache, &layout, keys, absent, |l, k| l.before(k)).await? {
                out[asked] = found.flatten();
            }
        }
        Ok(out)
    }

    /// [`EXPIRIES`] of the keys at `asked` in the partitions `part_of`
    /// names, grouped by partition: (None: absent; Some(at)), index asked.
    async fn expiries_in<'l>(
        &self,
        cache: &str,
        layout: &'l Layout,
        keys: &[Vec<u8>],
        asked: Vec<usize>,
        part_of: impl Fn(&'l Layout, &[u8]) -> Option<&'l Part>,
    ) -> Result<Vec<(Option<Option<u64>>, usize)>, Error> {
        let mut groups: HashMap<&str, (&Part, Vec<usize>)> = HashMap::new();
        for i in asked {
            if let Some(part) = part_of(layout, &keys[i]) {
                groups.entry(part.data()).or_insert_with(|| (part, Vec::new())).1.push(i);
            }
        }
        let mut found = Vec::new();
        for (part, indexes) in groups.into_values() {
            let fields: Vec<&[u8]> = indexes.iter().map(|&i| keys[i].as_slice()).collect();
            let answers: Vec<String> = self.cache_script(&EXPIRIES, cache, part, &fields, true).await?;
            if answers.len() != indexes.len() {
                return Err(self.failed_reply(format!("{} answers to {} keys", answers.len(), indexes.len())));
            }
            for (answer, i) in answers.into_iter().zip(indexes) {
                let at = match answer.parse::<i64>() {
                    Ok(-1) => None,
                    Ok(0) => Some(None),
                    Ok(at) if at > 0 => Some(Some(at as u64)),
                    _ => return Err(self.failed_reply(format!("expiry {answer:?} is not a time"))),
                };
                found.push((at, i));
            }
        }
        Ok(found)
    }

    pub(crate) async fn cache_get(&self, cache: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.fail_fast()?;
        Ok(match self.stored(cache, key).await? {
            Some(s) => Some(decode(s)?.1),
            None => None,
        })
    }

    /// Sets one value, stamped by the version rule from `now` (the cluster
    /// time of the call): [`PUT`] on a cache that keeps no books, else (or
    /// when [`PUT`] finds books another member started) [`WRITE_IF`]
    /// without a condition.
    pub(crate) async fn cache_put(&self, cache: &str, key: Vec<u8>, value: &[u8], now: u64) -> Result<(), Error> {
        if !self.storage.keeps_books(cache) {
            self.fail_fast()?;
            let layout = self.layout_to_set(cache).await?;
            let now = format!("{now:016x}");
            let args: [&[u8]; 3] = [&key, now.as_bytes(), value];
            let done: Option<i64> = self.cache_script(&PUT, cache, layout.of(&key), &args, true).await?;
            if done.is_some() {
                return Ok(());
            }
        }
        self.write_if(cache, &key, b"put", &[], Some(value), now, 0, true).await.map(|_| ())
    }

    /// Sets one value that expires `ttl_ms` after the write, whatever the
    /// cache's own time to live; the cache keeps books from then on.
    pub(crate) async fn cache_put_ttl(
        self: &Arc<Self>,
        cache: &str,
        key: Vec<u8>,
        value: &[u8],
        now: u64,
        ttl_ms: u64,
    ) -> Result<(), Error> {
        self.can_keep_books(cache, "an entry with a time to live of its own")?;
        self.write_if(cache, &key, b"put", &[], Some(value), now, ttl_ms.max(1), true).await.map(|_| ())
    }

    /// One [`WRITE_IF`] run: `value` to set (`None` deletes) if `condition`
    /// holds, with a time to live of its own unless `ttl_ms` is 0. `retry`
    /// only for an unconditional put (running it twice writes the same value).
    #[allow(clippy::too_many_arguments)]
    async fn write_if(
        &self,
        cache: &str,
        key: &[u8],
        condition: &[u8],
        expected: &[u8],
        value: Option<&[u8]>,
        now: u64,
        ttl_ms: u64,
        retry: bool,
    ) -> Result<CasOutcome, Error> {
        self.fail_fast()?;
        let layout = match value {
            Some(_) => self.layout_to_set(cache).await?,
            None => self.layout(cache, None).await?,
        };
        let now = format!("{now:016x}");
        let ttl = ttl_ms.to_string();
        let op: &[u8] = if value.is_some() { b"set" } else { b"del" };
        let args = [key, condition, expected, op, now.as_bytes(), value.unwrap_or_default(), ttl.as_bytes()];
        let (mut applied, stored, evicted, expired, adopted): (i64, Option<Vec<u8>>, u64, u64, i64) =
            self.cache_script(&WRITE_IF, cache, layout.of(key), &args, retry).await?;
        self.storage.count(cache, evicted, expired);
        if let (None, Some(before)) = (value, layout.before(key)) {
            // Being gathered: a removal removes the entry not moved yet too
            // (else the move would bring it back).
            let args = [key, condition, expected, op, now.as_bytes(), b"", b"0"];
            let (there, _, _, _, _): (i64, Option<Vec<u8>>, u64, u64, i64) =
                self.cache_script(&WRITE_IF, cache, before, &args, false).await?;
            applied = applied.max(there);
        }
        if adopted == 1 {
            // Its first entry with a time to live of its own: the cache keeps books now.
            self.now_keeps_books(cache).await;
        }
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
        Ok(match self.stored(cache, key).await? {
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
        self.write_if(cache, key, b"absent", &[], Some(value), now, 0, false).await
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
        self.write_if(cache, key, condition, &expected, Some(value), now, 0, false).await
    }

    /// Removes `key` if its entry is `expected`.
    pub(crate) async fn cache_remove_if(
        &self,
        cache: &str,
        key: &[u8],
        expected: &Expected,
    ) -> Result<CasOutcome, Error> {
        let (condition, expected) = condition(expected);
        self.write_if(cache, key, condition, &expected, None, 0, 0, false).await
    }

    /// Removes `key` ([`WRITE_IF`] unconditionally, so the removal is
    /// published); true if it was there.
    pub(crate) async fn cache_remove(&self, cache: &str, key: &[u8]) -> Result<bool, Error> {
        Ok(self.write_if(cache, key, b"put", &[], None, 0, 0, true).await?.applied)
    }

    pub(crate) async fn cache_contains(&self, cache: &str, key: &[u8]) -> Result<bool, Error> {
        self.fail_fast()?;
        let layout = self.layout(cache, None).await?;
        // Being gathered, the entry may not have moved yet: stored looks
        // there too (and it answers from the near cache).
        if self.storage.keeps_books(cache) || layout.from.is_some() || self.near.covers(cache) {
            return Ok(self.stored(cache, key).await?.is_some());
        }
        self.query(redis::cmd("HEXISTS").arg(layout.of(key).data()).arg(key)).await
    }

    /// A whole read of one partition of a cache that keeps books
    /// ([`SCAN`]): expired entries are removed first.
    async fn scan_books<T: redis::FromRedisValue>(&self, cache: &str, part: &Part, what: &str) -> Result<T, Error> {
        let (answer, evicted, expired): (T, u64, u64) =
            self.cache_script(&SCAN, cache, part, &[what.as_bytes()], true).await?;
        self.storage.count(cache, evicted, expired);
        Ok(answer)
    }

    /// A whole read of `cache`, partition by partition: `books` ([`SCAN`]
    /// with `what`) when it keeps books, `plain` (a command on the
    /// partition's hash) otherwise.
    async fn read_whole<T: redis::FromRedisValue>(
        &self,
        cache: &str,
        what: &str,
        plain: &str,
    ) -> Result<Vec<T>, Error> {
        let layout = self.layout(cache, None).await?;
        let books = self.storage.keeps_books(cache);
        self.each_part(&layout, |_, part| async move {
            if books {
                self.scan_books(cache, part, what).await
            } else {
                self.query(redis::cmd(plain).arg(part.data())).await
            }
        })
        .await
    }

    pub(crate) async fn cache_size(&self, cache: &str) -> Result<u64, Error> {
        self.fail_fast()?;
        Ok(self.read_whole::<u64>(cache, "len", "HLEN").await?.into_iter().sum())
    }

    pub(crate) async fn cache_clear(&self, cache: &str) -> Result<(), Error> {
        self.fail_fast()?;
        let layout = self.layout(cache, None).await?;
        let counts: Vec<(u64, u64)> =
            self.each_part(&layout, |_, part| self.cache_script(&CLEAR, cache, part, &[], true)).await?;
        for (evicted, expired) in counts {
            self.storage.count(cache, evicted, expired);
        }
        Ok(())
    }

    pub(crate) async fn cache_keys(&self, cache: &str) -> Result<Vec<Vec<u8>>, Error> {
        self.fail_fast()?;
        Ok(self.read_whole::<Vec<Vec<u8>>>(cache, "keys", "HKEYS").await?.into_iter().flatten().collect())
    }

    pub(crate) async fn cache_get_all(&self, cache: &str, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.fail_fast()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let layout = self.layout(cache, None).await?;
        let books = self.storage.keeps_books(cache);
        // The keys of each partition, with their places in the answer.
        let mut asked: Vec<Vec<usize>> = vec![Vec::new(); layout.parts.len()];
        for (place, key) in keys.iter().enumerate() {
            asked[layout.index_of(key)].push(place);
        }
        let (keys, asked) = (&keys, &asked);
        let answers: Vec<Vec<Option<Vec<u8>>>> = self
            .each_part(&layout, |i, part| async move {
                let fields: Vec<&[u8]> = asked[i].iter().map(|&place| keys[place].as_slice()).collect();
                if fields.is_empty() {
                    Ok(Vec::new())
                } else if books {
                    self.read_books(cache, part, &fields).await
                } else {
                    self.query(redis::cmd("HMGET").arg(part.data()).arg(&fields)).await
                }
            })
            .await?;
        let mut values = vec![None; keys.len()];
        for (places, stored) in asked.iter().zip(answers) {
            for (&place, s) in places.iter().zip(stored) {
                if let Some(s) = s {
                    values[place] = Some(decode(s)?.1);
                }
            }
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
        let layout = self.layout_to_set(cache).await?;
        let now = format!("{now:016x}").into_bytes();
        let (now, grouped) = (&now, &by_partition(&layout, entries));
        self.each_part(&layout, |i, part| async move {
            for chunk in grouped[i].chunks(MERGE_BATCH) {
                let mut args: Vec<&[u8]> = vec![now];
                args.extend(chunk.iter().flat_map(|e| [e.key.as_slice(), e.value.as_slice()]));
                let (evicted, expired): (u64, u64) = self.cache_script(&PUT_ALL, cache, part, &args, true).await?;
                self.storage.count(cache, evicted, expired);
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Merges entries with their own versions: each is set only where
    /// Redis holds an older version (the host merges a rejoined member's
    /// standalone caches this way). In a bounded cache a merged entry's
    /// time to live counts from its version (its write).
    pub(crate) async fn cache_merge(&self, cache: &str, entries: &[Entry]) -> Result<(), Error> {
        self.fail_fast()?;
        let layout = match entries.is_empty() {
            true => self.layout(cache, None).await?,
            false => self.layout_to_write(cache).await?,
        };
        let grouped = &by_partition(&layout, entries);
        self.each_part(&layout, |i, part| async move {
            for chunk in grouped[i].chunks(MERGE_BATCH) {
                let args: Vec<Vec<u8>> =
                    chunk.iter().flat_map(|e| [e.key.clone(), encode(e.version, &e.value)]).collect();
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                let (evicted, expired): (u64, u64) = self.cache_script(&MERGE, cache, part, &refs, true).await?;
                self.storage.count(cache, evicted, expired);
            }
            Ok(())
        })
        .await?;
        self.register_cache(cache).await?;
        Ok(())
    }

    /// Every entry with its version (the host copies them when this member
    /// leaves); read even while out of the cluster.
    pub(crate) async fn cache_entries(&self, cache: &str) -> Result<Vec<Entry>, Error> {
        let stored: Vec<Vec<(Vec<u8>, Vec<u8>)>> = self.read_whole(cache, "all", "HGETALL").await?;
        let mut entries = Vec::with_capacity(stored.iter().map(Vec::len).sum());
        for (key, s) in stored.into_iter().flatten() {
            let (version, value) = decode(s)?;
            entries.push(Entry { key, value, version });
        }
        Ok(entries)
    }

    pub(crate) async fn cache_names(&self) -> Result<Vec<String>, Error> {
        self.query(redis::cmd("SMEMBERS").arg(self.keys.caches())).await
    }

    pub(crate) async fn cache_local_size(&self, cache: &str) -> Result<CacheSize, Error> {
        let layout = self.layout(cache, None).await?;
        let sizes = self
            .each_part(&layout, |_, part| async move {
                let entries: u64 = self.query(redis::cmd("HLEN").arg(part.data())).await?;
                // What the shared server spends on the cache (every member sees the same).
                let bytes: Option<u64> = self.query(redis::cmd("MEMORY").arg("USAGE").arg(part.data())).await?;
                Ok((entries, bytes.unwrap_or(0)))
            })
            .await?;
        let (entries, bytes) = sizes.into_iter().fold((0, 0), |(e, b), (pe, pb)| (e + pe, b + pb));
        Ok(CacheSize { entries, bytes })
    }

    /// `cache_configure`: the host's bounds for `cache`, applied in Redis
    /// now while joined, and at every join (the last configure wins: every
    /// member's host sends the same bounds).
    pub(crate) async fn cache_configure(self: &Arc<Self>, cache: &str, bounds: CacheBounds) -> Result<(), Error> {
        if self.plain(cache) {
            // No books possible: refused, unless there is nothing to keep.
            return match bounds.is_none() {
                true => Ok(()),
                false => self.can_keep_books(cache, "bounds"),
            };
        }
        lock(&self.storage.configured).insert(cache.to_string(), bounds);
        if !self.in_cluster() {
            return Ok(());
        }
        self.apply_bounds(cache, bounds, true).await
    }

    /// Applies `bounds` in Redis ([`CONFIGURE`]: tighter bounds shrink the
    /// cache at once), names the cache in `{P}:bounded` (or takes it out),
    /// and tells every member to re-read them.
    /// `inline`: a spread cache given a bound on entries or bytes is
    /// gathered now (else the senior gathers it in the background).
    async fn apply_bounds(&self, cache: &str, bounds: CacheBounds, inline: bool) -> Result<(), Error> {
        let sized = bounds.is_sized();
        let mut layout = self.layout(cache, Some(sized)).await?;
        if sized && layout.spread() {
            // One order of use over the whole cache: onto one partition.
            layout = self.start_gather(cache).await?;
        }
        if inline && layout.from.is_some() {
            self.finish_gather(cache).await?;
        }
        let args = [bounds.max_entries, bounds.max_bytes, bounds.ttl_ms, bounds.max_idle_ms].map(|n| n.to_string());
        let args: &Vec<&[u8]> = &args.iter().map(String::as_bytes).collect();
        let kept: Vec<i64> = self
            .each_part(&layout, |_, part| async move {
                let (kept, evicted, expired): (i64, u64, u64) =
                    self.cache_script(&CONFIGURE, cache, part, args, false).await?;
                self.storage.count(cache, evicted, expired);
                Ok(kept)
            })
            .await?;
        self.register_cache(cache).await?;
        if kept.contains(&1) {
            self.now_keeps_books(cache).await;
        } else {
            lock(&self.storage.books).remove(cache);
            let _: i64 = self.query(redis::cmd("SREM").arg(self.keys.bounded()).arg(cache)).await?;
            self.publish_event(&format!("bounds\n{cache}")).await;
        }
        Ok(())
    }

    /// `cache` keeps books in Redis now: named in
    /// `{P}:bounded` for the senior's sweep, announced to every member.
    async fn now_keeps_books(&self, cache: &str) {
        lock(&self.storage.books).insert(cache.to_string());
        if let Err(e) = self.query::<i64>(redis::cmd("SADD").arg(self.keys.bounded()).arg(cache)).await {
            tracing::warn!(cache, "could not name the cache among the bounded ones in Redis (its expired entries are swept once it is): {e}");
        }
        self.publish_event(&format!("bounds\n{cache}")).await;
    }

    /// At each join: this host's bounds applied, then what every cache
    /// that keeps books holds in Redis read back.
    pub(crate) async fn join_bounds(&self) {
        let configured: Vec<(String, CacheBounds)> =
            lock(&self.storage.configured).iter().map(|(c, b)| (c.clone(), *b)).collect();
        for (cache, bounds) in configured {
            if let Err(e) = self.apply_bounds(&cache, bounds, false).await {
                tracing::warn!(cache = %cache, "could not apply the cache's bounds ({bounds}) in Redis: {e}");
            }
        }
        if let Err(e) = self.read_all_bounds().await {
            tracing::warn!("could not read which caches are bounded (read again when pub/sub reconnects): {e}");
        }
    }

    /// Reads which caches keep books, and their bounds, from Redis.
    async fn read_all_bounds(&self) -> Result<(), Error> {
        let names: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(self.keys.bounded())).await?;
        lock(&self.storage.books).retain(|cache| names.contains(cache));
        for cache in names {
            self.reload_bounds(&cache).await;
        }
        Ok(())
    }

    /// [`read_all_bounds`](Self::read_all_bounds) in the background (the
    /// pub/sub connection is back: a notice may have been missed).
    pub(crate) fn reload_all_bounds(self: &Arc<Self>) {
        let core = self.clone();
        tokio::spawn(async move {
            if let Err(e) = core.read_all_bounds().await {
                tracing::debug!("could not read which caches are bounded: {e}");
            }
        });
    }

    /// Re-reads the bounds of `cache` from Redis (a member changed them).
    pub(crate) async fn reload_bounds(&self, cache: &str) {
        if self.plain(cache) {
            return;
        }
        // Each partition keeps books of its own (bounds, or an entry with
        // a time to live of its own there): the cache keeps books if any does.
        let read: Result<Vec<Vec<Option<u64>>>, Error> = match self.layout(cache, None).await {
            Ok(layout) => {
                self.each_part(&layout, |_, part| async move {
                    self.query(redis::cmd("HMGET").arg(&part.keys[2]).arg(&["entries", "bytes", "ttl", "idle"])).await
                })
                .await
            }
            Err(e) => Err(e),
        };
        match read {
            Ok(parts) => {
                let mut books = lock(&self.storage.books);
                if parts.iter().any(|fields| fields.iter().all(Option::is_some)) {
                    books.insert(cache.to_string());
                } else {
                    books.remove(cache);
                }
            }
            Err(e) => tracing::debug!(cache, "could not read the cache's bounds: {e}"),
        }
    }

    /// The senior removes every expired entry of each cache that keeps
    /// books, every [`SWEEP_EVERY`], publishing an `Expired` for each, until
    /// the core is dropped or `shutdown` aborts it. Idempotent: a new
    /// senior simply carries on.
    pub(crate) async fn sweep_loop(weak: Weak<Core>) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(core) = weak.upgrade() else { return };
            if core.in_cluster() && core.view().senior.as_deref() == Some(core.member.as_str()) {
                core.sweep().await;
            }
        }
    }

    /// One sweep of every cache that keeps books.
    async fn sweep(&self) {
        let caches: Vec<String> = lock(&self.storage.books).iter().cloned().collect();
        let batch = SWEEP_BATCH.to_string();
        for cache in caches {
            let layout = match self.layout(&cache, None).await {
                Ok(layout) => layout,
                Err(e) => {
                    tracing::debug!(cache = %cache, "could not sweep the cache's expired entries: {e}");
                    continue;
                }
            };
            for part in &layout.parts {
                self.sweep_part(&cache, part, &batch).await;
            }
        }
    }

    /// Sweeps one partition of `cache`, a few batches at most.
    async fn sweep_part(&self, cache: &str, part: &Part, batch: &str) {
        for _ in 0..SWEEP_ROUNDS {
            match self.cache_script::<(i64, u64, u64)>(&SWEEP, cache, part, &[batch.as_bytes()], true).await {
                Ok((more, evicted, expired)) => {
                    self.storage.count(cache, evicted, expired);
                    if more == 0 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(cache = %cache, "could not sweep the cache's expired entries: {e}");
                    break;
                }
            }
        }
    }
}

/// `entries` grouped by the partition of `layout` each falls in.
fn by_partition<'a>(layout: &Layout, entries: &'a [Entry]) -> Vec<Vec<&'a Entry>> {
    let mut grouped: Vec<Vec<&Entry>> = vec![Vec::new(); layout.parts.len()];
    for entry in entries {
        grouped[layout.index_of(&entry.key)].push(entry);
    }
    grouped
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
