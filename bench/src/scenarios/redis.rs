//! The redis strategy (issue 6): cache ops through the plugin and
//! `redis-benchmark` against the same `redis-server`, side by side in the
//! same run with the same concurrency and pipelining; and how fast a
//! membership change reaches every member.

use std::process::Command;
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterManager, ClusterState, ListenOptions};
use clusterhost_tests::cluster::{same_kind, Backend, RedisBackend, TestCluster};

use super::cache_ops::{measure, BenchCache, Plan};
use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct Redis;

/// Clients working at once, each with one request in flight (no
/// pipelining): `redis-benchmark -c 16 -P 1`.
const CLIENTS: u64 = 16;

/// One `redis-benchmark` run: (test, ops/s, p50 ms, p99 ms) per test.
fn redis_benchmark(port: u16, requests: u64) -> Vec<(String, f64, f64, f64)> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", &CLIENTS.to_string(), "-P", "1", "-d", "64"])
        .args(["-t", "set,get", "-n", &requests.to_string(), "--csv"])
        .output()
        .expect("redis-benchmark runs (apt-get install -y redis-tools)");
    assert!(out.status.success(), "redis-benchmark: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
            Some((
                cols.first()?.to_string(),
                cols.get(1)?.parse().ok()?,
                cols.get(4)?.parse().ok()?,
                cols.get(6)?.parse().ok()?,
            ))
        })
        .collect()
}

/// `CLIENTS` tasks doing gets (or puts) for `round`: (ops/s, latencies in µs).
async fn concurrent(cache: &BenchCache, puts: bool, round: Duration, keys: u64) -> (f64, Vec<f64>) {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let cache = cache.clone();
        tasks.spawn(async move {
            let value = vec![7u8; 64];
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while started.elapsed() < round {
                let key = (client * 1000 + n) % keys;
                let op = Instant::now();
                if puts {
                    cache.put(&key, &value).await.expect("a put");
                } else {
                    cache.get(&key).await.expect("a get");
                }
                latencies.push(op.elapsed().as_nanos() as f64 / 1e3);
                n += 1;
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("a client task"));
    }
    (all.len() as f64 / started.elapsed().as_secs_f64(), all)
}

/// Waits (polling every ms) until every node in `nodes` lists `n` members.
async fn all_see(nodes: &[ClusterManager], n: usize, deadline: Duration) -> Duration {
    let started = Instant::now();
    while !nodes.iter().all(|node| node.members().len() == n) {
        assert!(started.elapsed() < deadline, "the members did not all list {n} members within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

impl Scenario for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn about(&self) -> &'static str {
        "The redis strategy against one `redis-server` started for the run (no persistence). The standard cache \
         figures (as for gossip) with 1 member; then, alternating in each round against the same server: 16 \
         concurrent clients doing gets, then puts, of 64-byte values through the host's cache API and the plugin \
         (one process, one multiplexed connection), then puts again while a clustered listener is registered on the \
         cache (so each put also publishes its entry event; with none, nothing is published), and `redis-benchmark -c 16 -P 1 -d 64 -t set,get` (16 \
         connections); the ratio is per round. Membership: a 4th in-process member attached to 3 (its plugin \
         loaded, clustering started) until every member lists 4, and detached until every member lists 3."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let plan = ctx.pick(
            Plan {
                keys: 10_000,
                get_rounds: 10,
                gets_per_round: 5_000,
                put_rounds: 10,
                puts_per_round: 1_000,
                concurrent_rounds: 5,
                concurrent_round: Duration::from_millis(400),
                writers: 16,
            },
            Plan {
                keys: 500,
                get_rounds: 2,
                gets_per_round: 200,
                put_rounds: 2,
                puts_per_round: 100,
                concurrent_rounds: 1,
                concurrent_round: Duration::from_millis(100),
                writers: 16,
            },
        );
        let (rounds, round, requests) =
            ctx.pick((7, Duration::from_secs(1), 200_000), (1, Duration::from_millis(200), 5_000));
        let changes = ctx.pick(7, 1);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let mut one = TestCluster::clustered(Backend::Redis, &["r1"]).await;
            let Some(RedisBackend::Single(server)) = &one.redis else { unreachable!("a single-server backend") };
            let port = server.port;
            let cache: BenchCache = one.node("r1").caches().cache("bench");
            measure(report, "redis1", "redis, 1 member", &cache, plan).await;

            let (mut get_rates, mut put_rates, mut bench_get, mut bench_set) = (vec![], vec![], vec![], vec![]);
            let (mut get_ratio, mut put_ratio) = (vec![], vec![]);
            let (mut listened_rates, mut listened_ratio) = (vec![], vec![]);
            let (mut get_lat, mut put_lat, mut bench_p50, mut bench_p99) = (vec![], vec![], vec![], vec![]);
            for _ in 0..rounds {
                let (get_rate, lat) = concurrent(&cache, false, round, plan.keys).await;
                get_lat.extend(lat);
                let (put_rate, lat) = concurrent(&cache, true, round, plan.keys).await;
                put_lat.extend(lat);
                // The same puts while a listener is registered: each is published too
                // (redis-benchmark's run below gives the heartbeat time to withdraw it).
                let listener = cache.raw().listen(ListenOptions::clustered().with_value(false)).await.expect("a listener");
                let (listened_rate, _) = concurrent(&cache, true, round, plan.keys).await;
                drop(listener);
                // redis-benchmark on the same server, right after (blocking: it is a process).
                let figures = tokio::task::spawn_blocking(move || redis_benchmark(port, requests)).await.expect("a run");
                let get = figures.iter().find(|f| f.0 == "GET").expect("redis-benchmark reports GET");
                let set = figures.iter().find(|f| f.0 == "SET").expect("redis-benchmark reports SET");
                get_rates.push(get_rate);
                put_rates.push(put_rate);
                bench_get.push(get.1);
                bench_set.push(set.1);
                get_ratio.push(get_rate / get.1);
                put_ratio.push(put_rate / set.1);
                listened_rates.push(listened_rate);
                listened_ratio.push(listened_rate / set.1);
                bench_p50.push(get.2 * 1000.0);
                bench_p99.push(get.3 * 1000.0);
            }
            let note = "16 clients, 1 request each in flight, per round";
            report.add("redis.plugin_get_rate", "redis: gets/s through the plugin", Unit::OpsPerSec, &get_rates, note);
            report.add("redis.bench_get_rate", "redis-benchmark GET/s, same server", Unit::OpsPerSec, &bench_get, note);
            report.add("redis.plugin_put_rate", "redis: puts/s through the plugin", Unit::OpsPerSec, &put_rates, note);
            report.add("redis.bench_set_rate", "redis-benchmark SET/s, same server", Unit::OpsPerSec, &bench_set, note);
            report.add("redis.ratio", "redis: plugin gets/s ÷ redis-benchmark GET/s", Unit::Ratio, &get_ratio, "per round");
            report.add("redis.ratio_put", "redis: plugin puts/s ÷ redis-benchmark SET/s", Unit::Ratio, &put_ratio, "per round");
            report.add("redis.plugin_put_rate_listened", "redis: puts/s through the plugin, the cache listened to", Unit::OpsPerSec, &listened_rates, "as puts/s, with a clustered listener registered: every put also publishes its entry event");
            report.add("redis.ratio_put_listened", "redis: plugin puts/s (cache listened to) ÷ redis-benchmark SET/s", Unit::Ratio, &listened_ratio, "per round");
            report.add_latency("redis.plugin_get_latency", "redis: get latency through the plugin, 16 clients", Unit::Micros, &get_lat, "every op");
            report.add_latency("redis.plugin_put_latency", "redis: put latency through the plugin, 16 clients", Unit::Micros, &put_lat, "every op");
            report.add("redis.bench_get_p50", "redis-benchmark GET p50, same server", Unit::Micros, &bench_p50, "per run");
            report.add("redis.bench_get_p99", "redis-benchmark GET p99, same server", Unit::Micros, &bench_p99, "per run");
            one.detach("r1").await;
            drop(one);

            let mut cluster = TestCluster::clustered(Backend::Redis, &["m1", "m2", "m3"]).await;
            let (mut joins, mut leaves) = (Vec::new(), Vec::new());
            for i in 0..changes {
                let name = format!("m4-{i}");
                cluster.add_standalone(&name);
                let started = Instant::now();
                cluster.attach(&name).await;
                let members: Vec<ClusterManager> = cluster
                    .nodes
                    .iter()
                    .filter(|n| !n.name.starts_with("m4-") || n.name == name)
                    .map(|n| n.cluster.clone())
                    .collect();
                all_see(&members, 4, Duration::from_secs(30)).await;
                joins.push(started.elapsed());
                let started = Instant::now();
                cluster.detach(&name).await;
                let rest: Vec<ClusterManager> =
                    cluster.nodes.iter().filter(|n| !n.name.starts_with("m4-")).map(|n| n.cluster.clone()).collect();
                all_see(&rest, 3, Duration::from_secs(30)).await;
                leaves.push(started.elapsed());
                assert!(same_kind(&cluster.node(&name).state(), &ClusterState::Standalone { reason: None }));
            }
            report.add_durations(
                "redis.membership",
                "redis: a member joins → every member lists it",
                Unit::Seconds,
                &joins,
                "from attaching its plugin (load + start_clustering) to all 4 listing it; 3 members on one redis-server",
            );
            report.add_durations(
                "redis.membership_leave",
                "redis: a member leaves → every member has dropped it",
                Unit::Millis,
                &leaves,
                "from the start of its clean leave (a killed member: failure.redis_detect)",
            );
        });
    }
}
