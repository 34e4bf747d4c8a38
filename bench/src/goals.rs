//! Every goal the issues state, each tied to the figure that measures it.
//! A goal added to an issue gets a line here; the report lists them all.

use crate::figure::Spread;

/// Which statistic of a figure a goal is about.
#[derive(Debug, Clone, Copy)]
pub enum Stat {
    Median,
    P99,
    Max,
}

impl Stat {
    pub fn pick(self, s: &Spread) -> f64 {
        match self {
            Stat::Median => s.median,
            Stat::P99 => s.p99,
            Stat::Max => s.max,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stat::Median => "median",
            Stat::P99 => "p99",
            Stat::Max => "max",
        }
    }
}

/// Met when the value is below (or at least) the bound, in the figure's unit.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Below(f64),
    AtLeast(f64),
}

/// One goal from an issue.
pub struct Goal {
    pub issue: u32,
    pub text: &'static str,
    /// The id of the figure that measures it.
    pub figure: &'static str,
    pub stat: Stat,
    pub bound: Bound,
}

pub enum Verdict {
    Met,
    NotMet,
}

impl Goal {
    pub fn verdict(&self, value: f64) -> Verdict {
        let met = match self.bound {
            Bound::Below(b) => value < b,
            Bound::AtLeast(b) => value >= b,
        };
        if met {
            Verdict::Met
        } else {
            Verdict::NotMet
        }
    }
}

/// The goals, in issue order. Bounds are in the unit of their figure.
pub const GOALS: &[Goal] = &[
    Goal {
        issue: 2,
        text: "load(path) → Active for a small plugin < 20 ms",
        figure: "load.active",
        stat: Stat::Median,
        bound: Bound::Below(20.0),
    },
    Goal {
        issue: 3,
        text: "plugin file drop → Active < 100 ms",
        figure: "drop.active",
        stat: Stat::Median,
        bound: Bound::Below(100.0),
    },
    Goal {
        issue: 3,
        text: "hot upgrade of the gossip plugin < 250 ms (re-join not counted)",
        figure: "upgrade.gossip",
        stat: Stat::Median,
        bound: Bound::Below(250.0),
    },
    Goal {
        issue: 3,
        text: "resident memory added per hot upgrade (gossip) < 4 MiB",
        figure: "rss.gossip",
        stat: Stat::Median,
        bound: Bound::Below(4096.0),
    },
    Goal {
        issue: 4,
        text: "cache get through the plugin boundary: < 1 µs added per call",
        figure: "boundary.added",
        stat: Stat::Median,
        bound: Bound::Below(1000.0),
    },
    Goal {
        issue: 5,
        text: "join → visible on all, 3 members < 2 s (processes)",
        figure: "join.process.3",
        stat: Stat::Median,
        bound: Bound::Below(2.0),
    },
    Goal {
        issue: 5,
        text: "join → visible on all, 10 members < 2 s (processes)",
        figure: "join.process.10",
        stat: Stat::Median,
        bound: Bound::Below(2.0),
    },
    Goal {
        issue: 5,
        text: "failure detection of a killed member < 5 s",
        figure: "failure.detect",
        stat: Stat::Median,
        bound: Bound::Below(5.0),
    },
    Goal {
        issue: 5,
        text: "write on one member → visible on another, p99 < 10 ms (loopback)",
        figure: "ops.write_read.gossip3",
        stat: Stat::P99,
        bound: Bound::Below(10_000.0),
    },
    Goal {
        issue: 6,
        text: "redis: cache gets/s through the plugin ≥ 0.6 of `redis-benchmark` GET (same server, concurrency, pipelining)",
        figure: "redis.ratio",
        stat: Stat::Median,
        bound: Bound::AtLeast(0.6),
    },
    Goal {
        issue: 6,
        text: "redis: cache puts/s through the plugin ≥ 0.6 of `redis-benchmark` SET (same server, concurrency, pipelining)",
        figure: "redis.ratio_put",
        stat: Stat::Median,
        bound: Bound::AtLeast(0.6),
    },
    Goal {
        issue: 6,
        text: "redis: membership change visible on all members < 1 s (pub/sub)",
        figure: "redis.membership",
        stat: Stat::Median,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 7,
        text: "rolling hot upgrade under load: no failed request on members not being upgraded",
        figure: "upgrade_load.failed_others",
        stat: Stat::Max,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 20,
        text: "requests failed through HAProxy during a rolling upgrade of 3 members: 0",
        figure: "lb.upgrade.failed",
        stat: Stat::Max,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 21,
        text: "signature check of the gossip plugin < 5 ms",
        figure: "signature.check",
        stat: Stat::Median,
        bound: Bound::Below(5.0),
    },
    Goal {
        issue: 21,
        text: "signature check < 20% of the gossip plugin's load → Active (what the check adds to it)",
        figure: "signature.share",
        stat: Stat::Median,
        bound: Bound::Below(0.2),
    },
    Goal {
        issue: 21,
        text: "signature check < 20% of the gossip plugin's load → Active (the check's own time ÷ the signed load; the \
               row above credits the overlap with the copy, whose spread is wide)",
        figure: "signature.check_share",
        stat: Stat::Median,
        bound: Bound::Below(0.2),
    },
    Goal {
        issue: 17,
        text: "gossip, SIGKILL → removed on all survivors, 3 members: median ≤ 0.5 s",
        figure: "failure.detect_all.3",
        stat: Stat::Median,
        bound: Bound::Below(0.5),
    },
    Goal {
        issue: 17,
        text: "gossip, SIGKILL → removed on all survivors, 3 members: p99 ≤ 1 s",
        figure: "failure.detect_all.3",
        stat: Stat::P99,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 17,
        text: "gossip, SIGKILL → removed on all survivors, 10 members: median ≤ 0.5 s",
        figure: "failure.detect_all.10",
        stat: Stat::Median,
        bound: Bound::Below(0.5),
    },
    Goal {
        issue: 17,
        text: "gossip, SIGKILL → removed on all survivors, 10 members: p99 ≤ 1 s",
        figure: "failure.detect_all.10",
        stat: Stat::P99,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 17,
        text: "gossip, silent member (link down) → removed on all: median ≤ 1.5 s",
        figure: "partition.detect",
        stat: Stat::Median,
        bound: Bound::Below(1.5),
    },
    Goal {
        issue: 17,
        text: "gossip, silent member (link down) → removed on all: p99 ≤ 3 s",
        figure: "partition.detect",
        stat: Stat::P99,
        bound: Bound::Below(3.0),
    },
    Goal {
        issue: 17,
        text: "redis, SIGKILL → removed on all: median ≤ 1 s",
        figure: "failure.redis_detect",
        stat: Stat::Median,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 18,
        text: "entry event latency, put on A → listener on B, p99 ≤ 2 ms on loopback (gossip)",
        figure: "entries.latency.gossip3",
        stat: Stat::P99,
        bound: Bound::Below(2.0),
    },
    Goal {
        issue: 18,
        text: "an entry with TTL t is gone everywhere (every member's listener told) within t + 1 s (redis, p99)",
        figure: "expiry.late.redis3",
        stat: Stat::P99,
        bound: Bound::Below(1000.0),
    },
    Goal {
        issue: 19,
        text: "near-cache get, hit ≤ 1 µs (redis, like a replicated gossip read)",
        figure: "near.hit",
        stat: Stat::Median,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 19,
        text: "redis, one redis-server: puts/s at 10 members ≥ at 3 (16 writers; ratio ≥ 1)",
        figure: "redis_scaling.single.puts_ratio",
        stat: Stat::Median,
        bound: Bound::AtLeast(1.0),
    },
    Goal {
        issue: 19,
        text: "redis, 3-master Redis Cluster: puts/s at 10 members ≥ at 3 (16 writers; ratio ≥ 1)",
        figure: "redis_scaling.cluster.puts_ratio",
        stat: Stat::Median,
        bound: Bound::AtLeast(1.0),
    },
    Goal {
        issue: 19,
        text: "30 k entries of one cache on a 3-master Redis Cluster: every master within ±15 % of an even share",
        figure: "redis_scaling.spread_deviation",
        stat: Stat::Max,
        bound: Bound::Below(0.15),
    },
    Goal {
        issue: 22,
        text: "file drop → Active ≤ load(path) + 2 ms (median; each drop minus a load(path) of the same file beside it)",
        figure: "drop.over_load",
        stat: Stat::Median,
        bound: Bound::Below(2.0),
    },
    Goal {
        issue: 22,
        text: "load(path) → Active ≤ 2 ms median, hello",
        figure: "load.active",
        stat: Stat::Median,
        bound: Bound::Below(2.0),
    },
    Goal {
        issue: 22,
        text: "load(path) → Active ≤ 10 ms median, gossip (with a cluster manager, no join)",
        figure: "load.active.gossip",
        stat: Stat::Median,
        bound: Bound::Below(10.0),
    },
    Goal {
        issue: 22,
        text: "a get the strategy answers from local memory adds ≤ 30 ns over the direct call (in-memory strategy)",
        figure: "boundary.added",
        stat: Stat::Median,
        bound: Bound::Below(30.0),
    },
    Goal {
        issue: 22,
        text: "gossip, 3 members (in-process members): acknowledged put from one client, median ≤ 3× the loopback TCP \
               round trip measured in the same run",
        figure: "ops.put_over_rtt",
        stat: Stat::Median,
        bound: Bound::Below(3.0),
    },
    Goal {
        issue: 22,
        text: "gossip, 3 members (in-process members): acknowledged put from one client, p99 ≤ 300 µs",
        figure: "ops.put.gossip3",
        stat: Stat::P99,
        bound: Bound::Below(300.0),
    },
    Goal {
        issue: 22,
        text: "gossip, 3 members (in-process members): ≥ 100 k puts/s from 16 writers",
        figure: "ops.put16_rate.gossip3",
        stat: Stat::Median,
        bound: Bound::AtLeast(100_000.0),
    },
    Goal {
        issue: 22,
        text: "redis: cache gets/s through the plugin ≥ 0.9 of `redis-benchmark` GET (same server, concurrency, pipelining)",
        figure: "redis.ratio",
        stat: Stat::Median,
        bound: Bound::AtLeast(0.9),
    },
    Goal {
        issue: 22,
        text: "redis: cache puts/s through the plugin ≥ 0.9 of `redis-benchmark` SET (same server, concurrency, pipelining)",
        figure: "redis.ratio_put",
        stat: Stat::Median,
        bound: Bound::AtLeast(0.9),
    },
    Goal {
        issue: 22,
        text: "resident memory added per hot upgrade (gossip) ≤ 1 MiB",
        figure: "rss.gossip",
        stat: Stat::Median,
        bound: Bound::Below(1024.0),
    },
    Goal {
        issue: 22,
        text: "a peer side by side, 3 members: failure detection (SIGKILL → the last survivor drops it), gossip ÷ hashicorp memberlist (DefaultLANConfig) in the \
               same run (< 1: gossip does better)",
        figure: "peer.detect_ratio.3",
        stat: Stat::Median,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 22,
        text: "a peer side by side, 10 members: failure detection (SIGKILL → the last survivor drops it), gossip ÷ hashicorp memberlist (DefaultLANConfig) in the \
               same run (< 1: gossip does better)",
        figure: "peer.detect_ratio.10",
        stat: Stat::Median,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 22,
        text: "a peer side by side, 3 members: join time (spawn → known on all), gossip ÷ hashicorp memberlist (DefaultLANConfig) in the \
               same run (< 1: gossip does better)",
        figure: "peer.join_ratio.3",
        stat: Stat::Median,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 22,
        text: "a peer side by side, 10 members: join time (spawn → known on all), gossip ÷ hashicorp memberlist (DefaultLANConfig) in the \
               same run (< 1: gossip does better)",
        figure: "peer.join_ratio.10",
        stat: Stat::Median,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 22,
        text: "a peer side by side, 3 members: idle bytes/s per member on the wire, gossip ÷ hashicorp memberlist (DefaultLANConfig) in the \
               same run (< 1: gossip does better)",
        figure: "peer.idle_ratio.3",
        stat: Stat::Median,
        bound: Bound::Below(1.0),
    },
    Goal {
        issue: 22,
        text: "a peer side by side, 10 members: idle bytes/s per member on the wire, gossip ÷ hashicorp memberlist (DefaultLANConfig) in the \
               same run (< 1: gossip does better)",
        figure: "peer.idle_ratio.10",
        stat: Stat::Median,
        bound: Bound::Below(1.0),
    },
];

/// What limits a goal where it is not met, by figure id: shown beside a
/// "not met" verdict (a goal not met whose figure has no line here says
/// that its limit was not analysed).
pub const LIMITS: &[(&str, &str)] = &[
    (
        "signature.check_share",
        "minisign's prehashed signatures need BLAKE2b over the whole file (3.7 MB for gossip, about 1 GB/s on one core \
         here, blake2b_simd) and two Ed25519 verifications; the check already runs beside the copy on a thread of its \
         own, so what is left is the hash's time against a load of about 10 ms",
    ),
    (
        "peer.join_ratio.",
        "gossip's join is a whole `clusterhost run` node: process start, the plugin's private copy, signature check \
         and load, the strategy's start, then the join, seen through each admin API polled every 20 ms; \
         memberlist's is a bare Go process that joins at once. Not broken down per step",
    ),
    (
        "peer.idle_ratio.",
        "gossip runs a chitchat round every 250 ms (gossip.toml's gossip_interval_ms) whose digest names every \
         member's state, and keeps data-plane connections open; memberlist with DefaultLANConfig probes one \
         member per second and gossips only news. A SIGKILL is seen sooner by gossip because the killed \
         member's connections close and its port refuses (process-death evidence), not because of that \
         traffic; the bytes per chitchat round are not broken down yet",
    ),
    (
        "load.active",
        "the load copies the file to the node's private directory (read, SHA-256 and write side by side) and maps \
         it (dlopen and relocation): the `of which` rows below give each step",
    ),
    (
        "load.active.gossip",
        "the private copy of the 3.7 MB file is most of it (the `of which` rows): SHA-256 of every byte (about \
         1.6 GB/s here) beside the write to the private directory on disk, whose time has a long tail (the page \
         cache's writeback of earlier copies); dlopen, create, start and the hand-over together take under 2 ms",
    ),
    (
        "boundary.added",
        "what this measures is the synchronous read (API 0.1.3), no future: what it adds is the adapter's \
         guards around every call (the stop guard's counter, entering the plugin's tokio runtime, catch_unwind) and \
         the FFI types' conversions; not profiled per part",
    ),
    (
        "ops.put_over_rtt",
        "every put is acknowledged by both other members over the data plane through several tokio task hops in \
         each of three in-process members sharing 2 cores; frame batching per connection is not built",
    ),
    (
        "ops.put16_rate.gossip3",
        "one frame and one acknowledgement per put per member, no batching; three in-process members and 16 \
         writers share 2 cores",
    ),
    (
        "redis.ratio_put",
        "each put is one Lua script where redis-benchmark's SET is one plain command: on a cache without books the \
         lean PUT (a check that the cache keeps no books, the current entry read for the version rule, the set, the \
         listeners check before any entry-event publish: 3-4 commands in Lua), measured alone with redis-benchmark \
         at about 0.6× of SET on this machine; the rest is the client's work on the 2 cores the server shares",
    ),
    (
        "redis_scaling.single.puts_ratio",
        "every member is in the bench process on the same 2 cores as the redis-server: more members add \
         client-side work (connections, heartbeats, pub/sub) on those cores; members on machines of their own \
         were not measured",
    ),
    (
        "redis_scaling.cluster.puts_ratio",
        "as on one server: every member and the three masters share the bench machine's 2 cores",
    ),
    (
        "signature.check",
        "CPU-bound: BLAKE2b over the whole 5.5 MB file, then two Ed25519 verifications (the minisign crate); the \
         full run before this machine, on another 2-core VM, measured 4.97 ms",
    ),
    (
        "signature.share",
        "the check (BLAKE2b over every byte of the 3.7 MB file, then Ed25519) runs beside the private copy's \
         SHA-256 and write on a thread of its own; on 2 cores the three compete for them, and the copy's write has a \
         long tail, so this difference of two wide distributions swings from run to run",
    ),
    (
        "drop.over_load",
        "what the watcher adds before the node acts (the `rename → node acts` row of `drop`): notify's event, then \
         the node's check that the file is complete; acting → Active is no slower than the plain load beside it",
    ),
    (
        "near.hit",
        "a hit still runs the host's clustered get and, in the plugin, the layout, books and near-cache lookups \
         under their locks and a copy of the value; not profiled",
    ),
    (
        "ops.put.gossip3",
        "not profiled; the three in-process members and the client share 2 cores, so a put's tail includes \
         waiting for one",
    ),
    (
        "redis.ratio",
        "not profiled: each get runs the host's cache API, the boundary and the plugin's future on the 2 cores \
         redis-server also uses, against redis-benchmark's plain C client",
    ),
];

/// The limit noted for `figure`, if any.
pub fn limit(figure: &str) -> Option<&'static str> {
    // An id ending in '.' stands for every size of that figure ("peer.join_ratio." for .3 and .10).
    LIMITS.iter().find(|(id, _)| *id == figure || (id.ends_with('.') && figure.starts_with(id))).map(|(_, why)| *why)
}
