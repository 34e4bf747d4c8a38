//! The redis strategy's near cache (issue 19): a get answered from the
//! member's copy (hit), a get that reads over the tracking connection and
//! keeps a copy (miss), and the plain get of a cache without a near cache
//! as the baseline, all on the same member in the same run; then the
//! invalidation delay: a put on A until B, which holds a copy, reads the
//! new value.

use std::time::{Duration, Instant};

use clusterhost_tests::cluster::{wait_for, Backend, TestCluster};

use super::cache_ops::BenchCache;
use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct RedisNear;

const NEAR: &str = "[near_cache]\ncaches = [\"near\"]\n";

/// Per-get latencies (µs) of `cache` for `keys`, each read `times` in a row.
async fn gets(cache: &BenchCache, keys: std::ops::Range<u64>, times: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity((keys.end - keys.start) as usize * times);
    for key in keys {
        for _ in 0..times {
            let started = Instant::now();
            let found = cache.get(&key).await.expect("a get");
            out.push(started.elapsed().as_nanos() as f64 / 1e3);
            assert!(found.is_some(), "key {key} was written");
        }
    }
    out
}

impl Scenario for RedisNear {
    fn name(&self) -> &'static str {
        "redis-near"
    }

    fn about(&self) -> &'static str {
        "Two in-process redis members on one `redis-server`, cache `near` near-cached on both (conf/redis.toml \
         `[near_cache] caches = [\"near\"]`), 64-byte values. On b: gets of keys never read before (a miss: read \
         over the tracking connection, copy kept), then the same keys again (a hit: answered from the copy), and \
         gets of a cache without a near cache (the baseline), one get at a time. Then the invalidation delay: b \
         holds a copy, a puts a new value, and b reads in a loop until it sees it (from the start of a's put)."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let (keys, delays) = ctx.pick((2_000u64, 500usize), (200, 50));
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let mut cluster = TestCluster::clustered_configured(Backend::Redis, &["a", "b"], 1, NEAR).await;
            let (a, b) = (cluster.node("a"), cluster.node("b"));
            wait_for("b's near cache connected", Duration::from_secs(10), || {
                b.strategy_stats().contains(&("near_cache_connected".into(), 1))
            })
            .await;
            let value = vec![7u8; 64];
            let (near_a, near_b): (BenchCache, BenchCache) = (a.caches().cache("near"), b.caches().cache("near"));
            let (plain_a, plain_b): (BenchCache, BenchCache) = (a.caches().cache("plain"), b.caches().cache("plain"));
            for key in 0..keys {
                near_a.put(&key, &value).await.expect("a put");
                plain_a.put(&key, &value).await.expect("a put");
            }
            let misses = gets(&near_b, 0..keys, 1).await;
            let hits = gets(&near_b, 0..keys, 5).await;
            let plain = gets(&plain_b, 0..keys, 1).await;
            let note = "one get at a time on b, 2 members on one redis-server";
            report.add_latency("near.hit", "near-cache get, hit (the member's copy)", Unit::Micros, &hits, note);
            report.add_latency(
                "near.miss",
                "near-cache get, miss (read over the tracking connection, copy kept)",
                Unit::Micros,
                &misses,
                note,
            );
            report.add_latency("near.plain", "get without a near cache (baseline)", Unit::Micros, &plain, note);

            // Invalidation delay: b holds a copy of key 0; a writes; b polls.
            let mut delay = Vec::with_capacity(delays);
            for round in 0..delays {
                let fresh = vec![(round % 200 + 8) as u8; 64]; // never `value`
                assert!(near_b.get(&0).await.expect("a get").is_some());
                let started = Instant::now();
                near_a.put(&0, &fresh).await.expect("a put");
                loop {
                    if near_b.get(&0).await.expect("a get").as_ref() == Some(&fresh) {
                        break;
                    }
                    assert!(started.elapsed() < Duration::from_secs(5), "b never saw a's put");
                    tokio::task::yield_now().await;
                }
                delay.push(started.elapsed().as_nanos() as f64 / 1e3);
                // A value unlike the next round's.
                near_a.put(&0, &value).await.expect("a put");
            }
            report.add_latency(
                "near.invalidation",
                "put on a → b (holding a copy) reads the new value",
                Unit::Micros,
                &delay,
                "from the start of a's put; b reads in a loop",
            );
            for name in ["a", "b"] {
                cluster.detach(name).await;
            }
        });
    }
}
