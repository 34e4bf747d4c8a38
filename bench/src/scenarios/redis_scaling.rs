//! How the redis strategy's cost grows with the member count (issue 19):
//! puts/s and gets/s from 16 writers spread over 1, 3, 5 and 10 members,
//! on one `redis-server` and on a 3-master Redis Cluster with spread
//! caches. The goal: puts/s at 10 members no lower than at 3 (the cost is
//! in Redis, not in the member count, unlike gossip's replication).

use std::time::{Duration, Instant};

use clusterhost_tests::cluster::{Backend, RedisBackend, TestCluster};

use super::cache_ops::BenchCache;
use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct RedisScaling;

/// Writers at once, each with one request in flight, spread round-robin over the members.
const WRITERS: u64 = 16;

/// Distinct keys written and read.
const KEYS: u64 = 10_000;

/// Partitions per cache on the Redis Cluster (conf/redis.toml `partitions`).
const PARTITIONS: u32 = 64;

/// `WRITERS` tasks, writer `i` on `caches[i % len]`, doing puts (or gets)
/// for `round`: ops/s.
async fn spread_load(caches: &[BenchCache], puts: bool, round: Duration) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let cache = caches[writer as usize % caches.len()].clone();
        tasks.spawn(async move {
            let value = vec![7u8; 64];
            let mut n = 0u64;
            while started.elapsed() < round {
                let key = (writer * 1000 + n) % KEYS;
                if puts {
                    cache.put(&key, &value).await.expect("a put");
                } else {
                    cache.get(&key).await.expect("a get");
                }
                n += 1;
            }
            n
        });
    }
    let mut ops = 0;
    while let Some(done) = tasks.join_next().await {
        ops += done.expect("a writer task");
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

impl Scenario for RedisScaling {
    fn name(&self) -> &'static str {
        "redis-scaling"
    }

    fn about(&self) -> &'static str {
        "16 writers, each with one request in flight, spread round-robin over 1, 3, 5 and 10 in-process redis \
         members (one process: the members share its 2 cores), doing puts then gets of 64-byte values on 10 000 \
         keys of one cache, in rounds; on one `redis-server`, and on a 3-master Redis Cluster with the cache spread \
         over 64 partitions (conf/redis.toml `partitions = 64`). Every member keeps its own connections."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let (rounds, round) = ctx.pick((5, Duration::from_millis(600)), (1, Duration::from_millis(150)));
        let sizes: &[usize] = ctx.pick(&[1, 3, 5, 10], &[1, 3]);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let backends = [
                (Backend::Redis, "single", "one redis-server", 1),
                (Backend::RedisCluster, "cluster", "3-master Redis Cluster, 64 partitions", PARTITIONS),
            ];
            // Quick mode (CI): one redis-server only, to keep the harness cheap.
            let backends = &backends[..ctx.pick(2, 1)];
            for &(backend, tag, label, partitions) in backends {
                let mut per_size: Vec<(usize, Vec<f64>)> = Vec::new();
                for &members in sizes {
                    let names: Vec<String> = (1..=members).map(|i| format!("s{i}")).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let mut cluster = TestCluster::clustered_spread(backend, &names, partitions).await;
                    let caches: Vec<BenchCache> =
                        names.iter().map(|n| cluster.node(n).caches().cache("scale")).collect();
                    // Warm-up: connections made, the cache's layout read by every member.
                    spread_load(&caches, true, round / 3).await;
                    let (mut puts, mut gets) = (Vec::new(), Vec::new());
                    for _ in 0..rounds {
                        puts.push(spread_load(&caches, true, round).await);
                        gets.push(spread_load(&caches, false, round).await);
                    }
                    let note = format!("{members} member(s), {label}; per round of {round:?}");
                    report.add(
                        &format!("redis_scaling.{tag}.puts.{members}"),
                        &format!("redis puts/s, 16 writers over {members} member(s), {label}"),
                        Unit::OpsPerSec,
                        &puts,
                        &note,
                    );
                    report.add(
                        &format!("redis_scaling.{tag}.gets.{members}"),
                        &format!("redis gets/s, 16 writers over {members} member(s), {label}"),
                        Unit::OpsPerSec,
                        &gets,
                        &note,
                    );
                    per_size.push((members, puts));
                    for name in &names {
                        cluster.detach(name).await;
                    }
                }
                // The goal's ratio: round i at the largest size over round i at 3 members.
                let at = |n: usize| per_size.iter().find(|(m, _)| *m == n).map(|(_, puts)| puts);
                let largest = sizes.iter().copied().max().unwrap_or(3);
                if let (Some(three), Some(most), true) = (at(3), at(largest), largest > 3) {
                    let ratios: Vec<f64> = most.iter().zip(three).map(|(m, t)| m / t).collect();
                    report.add(
                        &format!("redis_scaling.{tag}.puts_ratio"),
                        &format!("redis puts/s at {largest} members ÷ at 3, {label}"),
                        Unit::Ratio,
                        &ratios,
                        "round i at each size, paired",
                    );
                }
            }
            if ctx.mode == super::Mode::Full {
                spread_shares(report).await;
            }
        });
    }
}

/// 30 000 entries of one cache (64 partitions) on a 3-master Redis Cluster:
/// each master's share against an even one (issue 19's ±15 %).
async fn spread_shares(report: &mut Report) {
    const ENTRIES: u32 = 30_000;
    let mut cluster = TestCluster::clustered_spread(Backend::RedisCluster, &["a"], PARTITIONS).await;
    let big = cluster.node("a").caches().cache::<String, u32>("big");
    for chunk in 0..ENTRIES / 1000 {
        let entries: Vec<(String, u32)> = (0..1000).map(|i| (format!("user-{}", chunk * 1000 + i), i)).collect();
        big.put_all(&entries).await.expect("a put_all");
    }
    let Some(RedisBackend::Cluster(redis)) = &cluster.redis else { panic!("a Redis Cluster") };
    let shares: Vec<f64> = redis.nodes.iter().map(|n| n.hash_fields("suite:cache:big:*") as f64).collect();
    assert_eq!(shares.iter().sum::<f64>(), f64::from(ENTRIES), "every entry is in a partition hash: {shares:?}");
    let even = f64::from(ENTRIES) / shares.len() as f64;
    let deviation: Vec<f64> = shares.iter().map(|s| (s - even).abs() / even).collect();
    report.add(
        "redis_scaling.spread_deviation",
        "30 000 entries of one cache on a 3-master Redis Cluster: a master's share off an even one",
        Unit::Percent,
        &deviation,
        &format!("per master; entries per master {shares:?}, 64 partitions"),
    );
    cluster.detach("a").await;
}
