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
];
