//! The redis strategy (issue 6): a hook, filled in with the plugin.
//!
//! To do when `plugins/redis` lands, in this module only:
//! - start a `redis-server` on a free port (as its tests do);
//! - cache get/put ops/s and p50/p99 through the plugin: nodes on that
//!   server, measured with `super::cache_ops::measure` (tag `redis`), so the
//!   figures sit beside the standalone and gossip ones;
//! - `redis-benchmark` against the same server with the same concurrency
//!   and pipelining (`-c 16 -P 1 -t get,set -d 64`), figures `redis.bench_*`;
//!   the ratio plugin / redis-benchmark as figure `redis.ratio` (goal ≥ 0.6);
//! - membership change → visible on all members, figure `redis.membership`
//!   (seconds; goal < 1 s).
//!
//! The goals table already refers to `redis.ratio` and `redis.membership`.

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct Redis;

impl Scenario for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn about(&self) -> &'static str {
        "The redis strategy against one `redis-server`: cache ops through the plugin vs `redis-benchmark` with the \
         same concurrency and pipelining, and membership changes seen by every member."
    }

    fn run(&self, _ctx: &Ctx, report: &mut Report) {
        let why = "not run: the redis plugin is not in this build";
        println!("  {why}");
        report.not_measured("redis.ratio", "redis: plugin ops/s ÷ redis-benchmark ops/s", Unit::Ratio, why);
        report.not_measured("redis.membership", "redis: membership change → visible on all", Unit::Seconds, why);
    }
}
