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
}

impl Layout {
    /// The partition holding the entry under `key`.
    pub(crate) fn of(&self, key: &[u8]) -> &Part {
        &self.parts[partition_of(key, self.parts.len() as u32) as usize]
    }

    /// The index of the partition holding `key`.
    pub(crate) fn index_of(&self, key: &[u8]) -> usize {
        partition_of(key, self.parts.len() as u32) as usize
    }

    /// Whether the cache spreads over more than one partition.
    pub(crate) fn spread(&self) -> bool {
        self.parts.len() > 1
    }
}

impl Core {
    fn cluster_mode(&self) -> bool {
        self.config.mode == Mode::Cluster
    }

    /// The layout of a cache of `count` partitions (one when its name
    /// cannot be spread).
    fn make_layout(&self, cache: &str, count: u32) -> Layout {
        let names: Option<Vec<String>> = (0..count).map(|i| self.keys.partition(cache, i, count)).collect();
        let names = names.filter(|n| !n.is_empty()).unwrap_or_else(|| vec![self.keys.cache(cache)]);
        let parts = names
            .into_iter()
            .map(|data| match partition_keys(data.clone(), self.cluster_mode()) {
                Some(keys) => Part { keys, plain: false },
                None => Part { keys: std::array::from_fn(|_| data.clone()), plain: true },
            })
            .collect();
        Layout { parts }
    }

    /// Where `cache`'s entries are. `write`: the caller is about to write
    /// it, with `Some(bounded by entries or bytes)`, and a spread cluster's
    /// cache not recorded yet gets its layout recorded now; `None` (a
    /// read): a cache not recorded has never been written spread, so its
    /// one hash is read (and nothing is remembered).
    pub(crate) async fn layout(&self, cache: &str, write: Option<bool>) -> Result<Arc<Layout>, Error> {
        if let Some(known) = lock(&self.storage.layouts).get(cache) {
            return Ok(known.clone());
        }
        let count = if self.config.partitions <= 1 || cache.contains(['{', '}']) {
            1
        } else {
            let recorded: Option<u32> = self.query(redis::cmd("HGET").arg(self.keys.layout()).arg(cache)).await?;
            match (recorded, write) {
                (Some(n), _) => n.clamp(1, crate::config::MAX_PARTITIONS),
                (None, None) => return Ok(Arc::new(self.make_layout(cache, 1))),
                (None, Some(sized)) => {
                    let wanted = if sized { 1 } else { self.config.partitions };
                    let mut pipe = redis::pipe();
                    pipe.cmd("HSETNX").arg(self.keys.layout()).arg(cache).arg(wanted).ignore();
                    pipe.cmd("HGET").arg(self.keys.layout()).arg(cache);
                    let (n,): (Option<u32>,) = self.pipe(&pipe).await?;
                    n.unwrap_or(wanted).clamp(1, crate::config::MAX_PARTITIONS)
                }
            }
        };
        let layout = Arc::new(self.make_layout(cache, count));
        lock(&self.storage.layouts).insert(cache.to_string(), layout.clone());
        Ok(layout)
    }

    /// At each join: the cluster's `partitions` recorded (by the first
    /// member) and compared with this member's; the layouts known are
    /// read again from Redis as needed (it may have lost them).
    pub(crate) async fn join_partitions(&self) -> Result<(), Error> {
        lock(&self.storage.layouts).clear();
        let mut pipe = redis::pipe();
        pipe.cmd("HSETNX").arg(self.keys.layout()).arg(CLUSTER_FIELD).arg(self.config.partitions).ignore();
        pipe.cmd("HGET").arg(self.keys.layout()).arg(CLUSTER_FIELD);
        let (cluster,): (Option<u32>,) = self.pipe(&pipe).await?;
        match cluster {
            Some(cluster) if cluster != self.config.partitions => Err(Error::PartitionsDiffer {
                mine: self.config.partitions,
                cluster,
                prefix: self.config.key_prefix.clone(),
                key: self.keys.layout(),
            }),
            _ => Ok(()),
        }
    }

    /// Gathers spread cache `cache` onto one partition (it is given a
    /// bound on entries or bytes, which needs one order of use): its
    /// layout becomes one partition in `{P}:layout` and every member is
    /// told (`layout\n<cache>` on `P:events`; each also checks the
    /// layouts every heartbeat), then each partition's entries are merged
    /// into the one hash by version and removed from the partition unless
    /// changed since, quietly (a move is not a change), again after two
    /// heartbeats until a pass finds nothing left. Concurrent gathers by
    /// several members are safe: merges keep the newest version, removals
    /// are conditional.
    pub(crate) async fn gather(&self, cache: &str, from: Arc<Layout>) -> Result<Arc<Layout>, Error> {
        let _: i64 = self.query(redis::cmd("HSET").arg(self.keys.layout()).arg(cache).arg(1)).await?;
        let to = Arc::new(self.make_layout(cache, 1));
        lock(&self.storage.layouts).insert(cache.to_string(), to.clone());
        self.publish_event(&format!("layout\n{cache}")).await;
        self.carry_listeners(&from, &to.parts[0]).await?;
        let pause = self.config.heartbeat() * 2;
        let mut total = 0;
        for pass in 0..GATHER_PASSES {
            let mut moved = 0;
            for part in &from.parts {
                moved += self.move_part(cache, part, &to.parts[0]).await?;
            }
            total += moved;
            if moved == 0 && pass > 0 {
                tracing::info!(
                    cache,
                    entries = total,
                    partitions = from.parts.len(),
                    "gathered a spread cache onto one partition (it is bounded by entries or bytes now)"
                );
                for part in &from.parts {
                    let _: Result<i64, Error> = self.query(redis::cmd("DEL").arg(&part.keys[1..])).await;
                }
                return Ok(to);
            }
            tokio::time::sleep(pause).await;
        }
        tracing::warn!(cache, "writes with the cache's old layout still arrived after {GATHER_PASSES} passes of its gather onto one partition; the next bound given to it moves them");
        Ok(to)
    }

    /// The members announced as listening on any partition of `from`
    /// are announced on `target` too, so its changes are told to them at
    /// once (each refreshes its own announcement every heartbeat).
    async fn carry_listeners(&self, from: &Layout, target: &Part) -> Result<(), Error> {
        if target.plain {
            return Ok(());
        }
        let mut members = std::collections::BTreeSet::new();
        for part in from.parts.iter().filter(|p| !p.plain) {
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

    /// Moves what partition `part` of `cache` holds into `target`;
    /// returns how many entries it found.
    async fn move_part(&self, cache: &str, part: &Part, target: &Part) -> Result<usize, Error> {
        let stored: Vec<(Vec<u8>, Vec<u8>)> = self.query(redis::cmd("HGETALL").arg(part.data())).await?;
        for chunk in stored.chunks(crate::storage::MERGE_BATCH) {
            let args: Vec<&[u8]> = chunk.iter().flat_map(|(k, v)| [k.as_slice(), v.as_slice()]).collect();
            let (evicted, expired): (u64, u64) =
                self.cache_script_told(&crate::scripts::MERGE, cache, target, &args, true, false).await?;
            self.storage.count(evicted, expired);
            for (key, value) in chunk {
                // Removed unless written again since it was read.
                let version = value.get(..16).unwrap_or_default();
                let args: [&[u8]; 7] = [key, b"version", version, b"del", b"0000000000000000", b"", b"0"];
                let _: redis::Value =
                    self.cache_script_told(&crate::scripts::WRITE_IF, cache, part, &args, false, false).await?;
            }
        }
        Ok(stored.len())
    }

    /// A notice that `cache`'s layout changed: read it again at its next use.
    pub(crate) fn forget_layout(&self, cache: &str) {
        lock(&self.storage.layouts).remove(cache);
    }

    /// Every heartbeat while caches spread: a layout this member knows
    /// that `{P}:layout` no longer records so is forgotten (a missed notice).
    pub(crate) async fn check_layouts(&self) {
        if self.config.partitions <= 1 || lock(&self.storage.layouts).is_empty() {
            return;
        }
        let recorded: Result<std::collections::HashMap<String, u32>, Error> =
            self.query(redis::cmd("HGETALL").arg(self.keys.layout())).await;
        let Ok(recorded) = recorded else { return };
        lock(&self.storage.layouts).retain(|cache, layout| {
            recorded.get(cache).map_or(layout.parts.len() == 1, |&n| {
                n.clamp(1, crate::config::MAX_PARTITIONS) as usize == layout.parts.len()
            })
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
