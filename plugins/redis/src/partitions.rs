//! Spread caches (docs/redis.md "Spread caches"): with `partitions` above
//! 1 in conf/redis.toml, a cache's entries live in that many hashes, each
//! with the bookkeeping keys of [`crate::keys::partition_keys`] on its own
//! slot, so on a Redis Cluster a big cache spreads over every master
//! instead of filling one. An entry's partition is the CRC16 of its key;
//! each partition's name is salted so that the partitions' slots fall in
//! equal ranges of the 16384 (the masters own ranges of slots).
//!
//! How many partitions a cache has is recorded in `{P}:layout` by the
//! first member that writes it, and read from there by every other: a
//! cache bounded by entries or bytes when first written stays on one
//! partition (its least recently used entry is one order over the whole
//! cache); the others get the cluster's `partitions`. The cluster's value
//! itself is recorded there (`*`) by the first member to join, and a
//! member configured otherwise is refused at its join.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};

use crate::config::Mode;
use crate::core::{lock, Core};
use crate::error::Error;
use crate::keys::{partition_keys, partition_of};

/// Requests to Redis one whole-cache operation keeps in flight at most.
const FAN_OUT: usize = 32;

/// The field of `{P}:layout` that holds the cluster's `partitions`.
const CLUSTER_FIELD: &str = "*";

/// Passes of a gather at most: each moves what the partitions hold, then
/// waits two heartbeats for members still writing with the old layout.
const GATHER_PASSES: usize = 6;

/// A field and its stored value.
type Pair = (Vec<u8>, Vec<u8>);

/// `{P}:layout`'s fields and values, and the caches in `{P}:gathering`.
type Records = (Vec<(String, String)>, Vec<String>);

/// One partition of a cache: its keys as the cache scripts take them.
pub(crate) struct Part {
    pub(crate) keys: [String; 6],
    /// No key can share the hash's slot (cluster mode, a name with a `}`
    /// outside a hash tag): every key is the hash, and it keeps no books.
    pub(crate) plain: bool,
}

impl Part {
    /// The hash holding the partition's entries.
    pub(crate) fn data(&self) -> &str {
        &self.keys[0]
    }
}

/// Where a cache's entries are: one partition, or several.
pub(crate) struct Layout {
    pub(crate) parts: Vec<Part>,
    /// While the cache is gathered onto its one partition: the partitions
    /// it is gathered from (an entry not moved yet is read there).
    pub(crate) from: Option<Vec<Part>>,
}

impl Layout {
    /// The partition holding the entry under `key`.
    pub(crate) fn of(&self, key: &[u8]) -> &Part {
        &self.parts[self.index_of(key)]
    }

    /// The index of the partition holding `key`.
    pub(crate) fn index_of(&self, key: &[u8]) -> usize {
        partition_of(key, self.parts.len() as u32) as usize
    }

    /// While gathered: the partition `key` was in before.
    pub(crate) fn before(&self, key: &[u8]) -> Option<&Part> {
        self.from.as_ref().map(|from| &from[partition_of(key, from.len() as u32) as usize])
    }

    /// Whether the cache spreads over more than one partition.
    pub(crate) fn spread(&self) -> bool {
        self.parts.len() > 1
    }
}

/// What `{P}:layout` says of a cache: `1`, or anything else for this
/// member's `partitions` (the only other value members write: the join
/// check refuses a member configured otherwise), so a foreign value costs
/// no more than the configured one.
fn recorded(value: Option<&str>, partitions: u32) -> Option<u32> {
    value.map(|v| if v.trim() == "1" { 1 } else { partitions })
}

impl Core {
    fn cluster_mode(&self) -> bool {
        self.config.mode == Mode::Cluster
    }

    /// The partitions of a cache of `count` (one when its name cannot be spread).
    fn make_parts(&self, cache: &str, count: u32) -> Vec<Part> {
        let names: Option<Vec<String>> = (0..count).map(|i| self.keys.partition(cache, i, count)).collect();
        let names = names.filter(|n| !n.is_empty()).unwrap_or_else(|| vec![self.keys.cache(cache)]);
        names
            .into_iter()
            .map(|data| match partition_keys(data.clone(), self.cluster_mode()) {
                Some(keys) => Part { keys, plain: false },
                None => Part { keys: std::array::from_fn(|_| data.clone()), plain: true },
            })
            .collect()
    }

    /// The layout of `count` partitions, gathered from the cluster's
    /// `partitions` when `gathering`.
    fn make_layout(&self, cache: &str, count: u32, gathering: bool) -> Layout {
        let from = (gathering && count == 1).then(|| self.make_parts(cache, self.config.partitions));
        Layout { parts: self.make_parts(cache, count), from }
    }

    /// Where `cache`'s entries are. `write`: the caller is about to write
    /// it, with `Some(bounded by entries or bytes)`, and a spread cluster's
    /// cache not recorded yet gets its layout recorded now (one partition
    /// when bounded so, or when its one hash already holds entries from
    /// before partitions were turned on); `None` (a read): a cache not
    /// recorded has never been written spread, so its one hash is read
    /// (and nothing is remembered).
    pub(crate) async fn layout(&self, cache: &str, write: Option<bool>) -> Result<Arc<Layout>, Error> {
        if let Some(known) = self.known_layout(cache) {
            return Ok(known);
        }
        let (count, gathering) = if self.config.partitions <= 1 || cache.contains(['{', '}']) {
            (1, false)
        } else {
            let mut pipe = redis::pipe();
            pipe.cmd("HGET").arg(self.keys.layout()).arg(cache);
            pipe.cmd("HEXISTS").arg(self.keys.gathering()).arg(cache);
            let (record, gathering): (Option<String>, bool) = self.pipe(&pipe).await?;
            match (recorded(record.as_deref(), self.config.partitions), write) {
                (Some(n), _) => (n, gathering),
                (None, None) => return Ok(Arc::new(self.make_layout(cache, 1, false))),
                (None, Some(sized)) => {
                    let before: bool = !sized && self.query(redis::cmd("EXISTS").arg(self.keys.cache(cache))).await?;
                    let wanted = if sized || before { 1 } else { self.config.partitions };
                    let mut pipe = redis::pipe();
                    pipe.cmd("HSETNX").arg(self.keys.layout()).arg(cache).arg(wanted).ignore();
                    pipe.cmd("HGET").arg(self.keys.layout()).arg(cache);
                    let (n,): (Option<String>,) = self.pipe(&pipe).await?;
                    (recorded(n.as_deref(), self.config.partitions).unwrap_or(wanted), false)
                }
            }
        };
        let layout = Arc::new(self.make_layout(cache, count, gathering));
        lock(&self.storage.layouts).insert(cache.to_string(), layout.clone());
        Ok(layout)
    }

    /// `cache`'s layout as this member last read it, if it has.
    pub(crate) fn known_layout(&self, cache: &str) -> Option<Arc<Layout>> {
        lock(&self.storage.layouts).get(cache).cloned()
    }

    /// At each join and rejoin: the cluster's `partitions` recorded (by
    /// the first member) and compared with this member's; the layouts
    /// known are read again from Redis as needed (it may have lost them).
    pub(crate) async fn join_partitions(&self) -> Result<(), Error> {
        lock(&self.storage.layouts).clear();
        let mut pipe = redis::pipe();
        pipe.cmd("HSETNX").arg(self.keys.layout()).arg(CLUSTER_FIELD).arg(self.config.partitions).ignore();
        pipe.cmd("HGET").arg(self.keys.layout()).arg(CLUSTER_FIELD);
        let (cluster,): (Option<String>,) = self.pipe(&pipe).await?;
        match cluster.map(|c| c.trim().parse::<u32>()) {
            Some(Ok(cluster)) if cluster == self.config.partitions => Ok(()),
            None => Ok(()),
            Some(found) => Err(Error::PartitionsDiffer {
                mine: self.config.partitions,
                cluster: found.map(|n| n.to_string()).unwrap_or_else(|_| "an unreadable value".into()),
                prefix: self.config.key_prefix.clone(),
                key: self.keys.layout(),
            }),
        }
    }

    /// Starts gathering spread cache `cache` onto one partition (it is
    /// given a bound on entries or bytes, which needs one order of use):
    /// `{P}:layout` says 1 and `{P}:gathering` names it, every member is
    /// told (`layout\n<cache>` on `P:events`; each also checks the
    /// layouts every heartbeat) and the members listening to it are
    /// announced on the one hash. From then on writes go to the one hash,
    /// a read that misses there looks where the entry was, and a remove
    /// removes it there too; [`finish_gather`](Self::finish_gather) moves
    /// the entries (the senior resumes one left unfinished).
    pub(crate) async fn start_gather(&self, cache: &str) -> Result<Arc<Layout>, Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("HSET").arg(self.keys.layout()).arg(cache).arg(1).ignore();
        pipe.cmd("HSET").arg(self.keys.gathering()).arg(cache).arg(self.config.partitions).ignore();
        self.pipe::<()>(&pipe).await?;
        let layout = Arc::new(self.make_layout(cache, 1, true));
        lock(&self.storage.layouts).insert(cache.to_string(), layout.clone());
        self.publish_event(&format!("layout\n{cache}")).await;
        if let Some(from) = &layout.from {
            self.carry_listeners(from, &layout.parts[0]).await?;
        }
        Ok(layout)
    }

    /// Moves every entry of a gathered cache from its old partitions into
    /// its one hash: merged by version, removed from the partition unless
    /// written again since, without entry events (a move is not a
    /// change); again two heartbeats later (members still on the old
    /// layout), until a pass finds nothing left, at most
    /// [`GATHER_PASSES`] passes. Then the cache is no longer gathering.
    /// Several members gathering at once is safe (merges keep the newest
    /// version, removals are conditional); one member runs one gather of
    /// a cache at a time.
    pub(crate) async fn finish_gather(&self, cache: &str) -> Result<(), Error> {
        if !lock(&self.storage.gathering_now).insert(cache.to_string()) {
            return Ok(());
        }
        let outcome = self.gather_passes(cache).await;
        lock(&self.storage.gathering_now).remove(cache);
        outcome
    }

    async fn gather_passes(&self, cache: &str) -> Result<(), Error> {
        let from = self.make_parts(cache, self.config.partitions);
        let target = self.make_parts(cache, 1).pop().expect("one partition");
        let pause = self.config.heartbeat() * 2;
        let mut total = 0;
        for pass in 0..GATHER_PASSES {
            let mut moved = 0;
            for part in &from {
                moved += self.move_part(cache, part, &target).await?;
            }
            total += moved;
            if moved == 0 && pass > 0 {
                for part in &from {
                    let _: i64 = self.query(redis::cmd("DEL").arg(&part.keys[1..])).await?;
                }
                let _: i64 = self.query(redis::cmd("HDEL").arg(self.keys.gathering()).arg(cache)).await?;
                let done = Arc::new(self.make_layout(cache, 1, false));
                lock(&self.storage.layouts).insert(cache.to_string(), done);
                self.publish_event(&format!("layout\n{cache}")).await;
                tracing::info!(
                    cache,
                    entries = total,
                    partitions = from.len(),
                    "gathered a spread cache onto one partition (it is bounded by entries or bytes now)"
                );
                return Ok(());
            }
            tokio::time::sleep(pause).await;
        }
        tracing::warn!(cache, "writes with the cache's old layout still arrived after {GATHER_PASSES} passes of its gather onto one partition; the senior carries on");
        Ok(())
    }

    /// The members announced as listening on any partition of `from`
    /// are announced on `target` too, so its changes are told to them at
    /// once (each refreshes its own announcement every heartbeat).
    async fn carry_listeners(&self, from: &[Part], target: &Part) -> Result<(), Error> {
        if target.plain {
            return Ok(());
        }
        let mut members = std::collections::BTreeSet::new();
        for part in from.iter().filter(|p| !p.plain) {
            let fields: Vec<String> = self.query(redis::cmd("HKEYS").arg(&part.keys[1])).await?;
            members.extend(fields);
        }
        if members.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for member in &members {
            pipe.cmd("HSET").arg(&target.keys[1]).arg(member).arg(1).ignore();
        }
        pipe.cmd("PEXPIRE").arg(&target.keys[1]).arg(self.config.membership.member_ttl_ms * 2).ignore();
        self.pipe::<()>(&pipe).await
    }

    /// Moves what partition `part` of `cache` holds into `target`, a
    /// batch at a time (`HSCAN`); returns how many entries it found.
    async fn move_part(&self, cache: &str, part: &Part, target: &Part) -> Result<usize, Error> {
        let batch = crate::storage::MERGE_BATCH.to_string();
        let (mut cursor, mut found) = (0u64, 0);
        loop {
            let (next, stored): (u64, Vec<Pair>) =
                self.query(redis::cmd("HSCAN").arg(part.data()).arg(cursor).arg("COUNT").arg(&batch)).await?;
            if !stored.is_empty() {
                found += stored.len();
                let args: Vec<&[u8]> = stored.iter().flat_map(|(k, v)| [k.as_slice(), v.as_slice()]).collect();
                let (evicted, expired): (u64, u64) =
                    self.cache_script_told(&crate::scripts::MERGE, cache, target, &args, true, false).await?;
                self.storage.count(cache, evicted, expired);
                // Removed from the partition unless written again since.
                let args: Vec<&[u8]> =
                    stored.iter().flat_map(|(k, v)| [k.as_slice(), v.get(..16).unwrap_or_default()]).collect();
                let _: i64 =
                    self.cache_script_told(&crate::scripts::DROP_MOVED, cache, part, &args, true, false).await?;
            }
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Every heartbeat of the senior while caches spread: a gather left
    /// unfinished (its member failed or left) is carried on, in the background.
    pub(crate) async fn resume_gathers(self: &Arc<Self>) {
        if self.config.partitions <= 1 || self.view().senior.as_deref() != Some(self.member.as_str()) {
            return;
        }
        let Ok(caches) = self.query::<Vec<String>>(redis::cmd("HKEYS").arg(self.keys.gathering())).await else {
            return;
        };
        for cache in caches {
            if lock(&self.storage.gathering_now).contains(&cache) {
                continue;
            }
            let core = self.clone();
            tokio::spawn(async move {
                if let Err(e) = core.finish_gather(&cache).await {
                    tracing::warn!(cache = %cache, "could not gather the cache onto one partition (retried every heartbeat): {e}");
                }
            });
        }
    }

    /// Whether `{P}:layout` and `{P}:gathering` still say `layout` of
    /// `cache` (a gather may have begun since it was read).
    pub(crate) async fn layout_still(&self, cache: &str, layout: &Layout) -> Result<bool, Error> {
        if self.config.partitions <= 1 || cache.contains(['{', '}']) {
            return Ok(true);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(self.keys.layout()).arg(cache);
        pipe.cmd("HEXISTS").arg(self.keys.gathering()).arg(cache);
        let (record, gathering): (Option<String>, bool) = self.pipe(&pipe).await?;
        let count = recorded(record.as_deref(), self.config.partitions).unwrap_or(1);
        Ok(count as usize == layout.parts.len() && gathering == layout.from.is_some())
    }

    /// A notice that `cache`'s layout changed: read it again at its next use.
    pub(crate) fn forget_layout(&self, cache: &str) {
        lock(&self.storage.layouts).remove(cache);
    }

    /// Every heartbeat while caches spread: a layout this member knows
    /// that `{P}:layout` and `{P}:gathering` no longer say is forgotten
    /// (a missed notice).
    pub(crate) async fn check_layouts(&self) {
        if self.config.partitions <= 1 || lock(&self.storage.layouts).is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.keys.layout());
        pipe.cmd("HKEYS").arg(self.keys.gathering());
        // Field by field: one unreadable value does not stop the check.
        let read: Result<Records, Error> = self.pipe(&pipe).await;
        let Ok((records, gathering)) = read else { return };
        let records: std::collections::HashMap<String, String> = records.into_iter().collect();
        let partitions = self.config.partitions;
        lock(&self.storage.layouts).retain(|cache, layout| {
            let count = recorded(records.get(cache).map(String::as_str), partitions).unwrap_or(1);
            count as usize == layout.parts.len() && layout.from.is_some() == gathering.contains(cache)
        });
    }

    /// `each(part)` for every partition of `layout`, a few in flight at
    /// once; the answers in partition order.
    pub(crate) async fn each_part<'a, T, F, Fut>(&self, layout: &'a Layout, each: F) -> Result<Vec<T>, Error>
    where
        F: Fn(usize, &'a Part) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        // The futures made first, then run: a stream's own map would need
        // them to be made for any lifetime, which async blocks are not.
        let calls: Vec<Fut> = layout.parts.iter().enumerate().map(|(i, part)| each(i, part)).collect();
        futures_util::stream::iter(calls).buffered(FAN_OUT).try_collect().await
    }
}

#[cfg(test)]
mod tests {
    use crate::keys::{slot, Keys, SLOTS};

    #[test]
    fn partitions_fall_in_equal_ranges_of_slots_and_keep_their_names() {
        let keys = Keys::new("p");
        for count in [2u32, 3, 16, 64, 1024] {
            for index in 0..count {
                let name = keys.partition("sessions", index, count).expect("a plain name spreads");
                let slot = u32::from(slot(&name));
                let (low, high) = (u32::from(SLOTS) * index / count, u32::from(SLOTS) * (index + 1) / count);
                assert!((low..high).contains(&slot), "partition {index} of {count}: {name} on slot {slot}");
                assert!(name.starts_with("p:cache:sessions:"), "{name}");
                assert_eq!(keys.partition("sessions", index, count), Some(name), "the same name every time");
            }
        }
        assert_eq!(
            keys.partition("sessions", 0, 1).as_deref(),
            Some("p:cache:sessions"),
            "one partition: the cache's hash"
        );
        assert_eq!(keys.partition("a{t}", 0, 4), None, "a hash tag of its own pins every partition to one slot");
        assert_eq!(keys.partition("sessions", 4, 4), None);
    }

    #[test]
    fn a_recorded_count_is_one_or_the_configured_one_whatever_redis_holds() {
        use super::recorded;
        assert_eq!(recorded(Some("1"), 8), Some(1));
        assert_eq!(recorded(Some("8"), 8), Some(8));
        assert_eq!(recorded(Some("1000000"), 8), Some(8), "no more partitions than configured");
        assert_eq!(recorded(Some("junk"), 8), Some(8));
        assert_eq!(recorded(None, 8), None);
    }

    #[test]
    fn keys_spread_evenly_and_stay_in_their_partition() {
        let mut counts = [0u32; 16];
        for i in 0..32_000 {
            counts[crate::keys::partition_of(format!("user-{i}").as_bytes(), 16) as usize] += 1;
        }
        for (p, n) in counts.iter().enumerate() {
            assert!((1_800..=2_200).contains(n), "partition {p} holds {n} of 32000 keys (2000 is even)");
        }
        assert_eq!(crate::keys::partition_of(b"k", 16), crate::keys::partition_of(b"k", 16));
        assert_eq!(crate::keys::partition_of(b"k", 1), 0);
    }
}
