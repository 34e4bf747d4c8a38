//! Cache ops/s and latency through the host's cache API: standalone (no
//! strategy), and gossip with 1 and 3 in-process members, side by side; and
//! a write on one member read back on another. The measuring functions are
//! public so another strategy's scenario (redis) measures the same way.

use std::time::{Duration, Instant};

use clusterhost::cluster::{Cache, ClusterManager};
use clusterhost_tests::cluster::{quick_config, Backend, TestCluster};

use super::{Ctx, Scenario};
use crate::figure::{Spread, Unit};
use crate::report::Report;

pub struct CacheOps;

/// How much one configuration is measured.
#[derive(Clone, Copy)]
pub struct Plan {
    /// Distinct keys, written once before the gets.
    pub keys: u64,
    pub get_rounds: usize,
    pub gets_per_round: u64,
    pub put_rounds: usize,
    pub puts_per_round: u64,
    pub concurrent_rounds: usize,
    pub concurrent_round: Duration,
    pub writers: u64,
}

/// The cache every configuration uses: u64 keys, 64-byte values.
pub type BenchCache = Cache<u64, Vec<u8>>;

/// Sequential gets then puts on `cache`, then puts from `plan.writers`
/// concurrent tasks; figures `ops.{get,put}.{tag}` (latency, µs),
/// `ops.{get,put}_rate.{tag}` and `ops.put{writers}_rate.{tag}` (ops/s per round).
/// Returns the put latencies (µs).
pub async fn measure(report: &mut Report, tag: &str, what: &str, cache: &BenchCache, plan: Plan) -> Vec<f64> {
    let value = vec![7u8; 64];
    for key in 0..plan.keys {
        cache.put(&key, &value).await.expect("a put");
    }
    let (mut latencies, mut rates) = (Vec::new(), Vec::new());
    for _ in 0..plan.get_rounds {
        let round = Instant::now();
        for i in 0..plan.gets_per_round {
            let started = Instant::now();
            let found = cache.get(&(i % plan.keys)).await.expect("a get");
            latencies.push(started.elapsed().as_nanos() as f64 / 1e3);
            assert!(found.is_some(), "the entry is there");
        }
        rates.push(plan.gets_per_round as f64 / round.elapsed().as_secs_f64());
    }
    report.add_latency(
        &format!("ops.get.{tag}"),
        &format!("get latency, {what}"),
        Unit::Micros,
        &latencies,
        "one client",
    );
    report.add(
        &format!("ops.get_rate.{tag}"),
        &format!("gets/s, {what}"),
        Unit::OpsPerSec,
        &rates,
        "one client, per round",
    );

    let (mut latencies, mut rates) = (Vec::new(), Vec::new());
    for _ in 0..plan.put_rounds {
        let round = Instant::now();
        for i in 0..plan.puts_per_round {
            let started = Instant::now();
            cache.put(&(i % plan.keys), &value).await.expect("a put");
            latencies.push(started.elapsed().as_nanos() as f64 / 1e3);
        }
        rates.push(plan.puts_per_round as f64 / round.elapsed().as_secs_f64());
    }
    report.add_latency(
        &format!("ops.put.{tag}"),
        &format!("put latency, {what}"),
        Unit::Micros,
        &latencies,
        "one client",
    );
    let put_latencies = latencies;
    report.add(
        &format!("ops.put_rate.{tag}"),
        &format!("puts/s, {what}"),
        Unit::OpsPerSec,
        &rates,
        "one client, per round",
    );

    let rates = concurrent_puts(cache, plan.writers, plan.concurrent_rounds, plan.concurrent_round).await;
    let w = plan.writers;
    report.add(
        &format!("ops.put{w}_rate.{tag}"),
        &format!("puts/s, {w} concurrent writers, {what}"),
        Unit::OpsPerSec,
        &rates,
        "per round",
    );
    put_latencies
}

/// `trips` round trips of one byte each way over a loopback TCP connection
/// (`TCP_NODELAY` on both ends, an echo thread), after 200 untimed; each in µs.
pub fn loopback_rtt(trips: usize) -> Vec<f64> {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a loopback listener");
    let address = listener.local_addr().expect("the listener's address");
    let echo = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the client connects");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).is_ok() {
            if stream.write_all(&byte).is_err() {
                break;
            }
        }
    });
    let mut client = TcpStream::connect(address).expect("the loopback connection");
    client.set_nodelay(true).expect("TCP_NODELAY");
    let mut byte = [1u8; 1];
    let mut trip = |client: &mut TcpStream| {
        let started = Instant::now();
        client.write_all(&byte).expect("a byte is sent");
        client.read_exact(&mut byte).expect("the byte comes back");
        started.elapsed()
    };
    for _ in 0..200 {
        trip(&mut client);
    }
    let samples = (0..trips).map(|_| trip(&mut client).as_nanos() as f64 / 1e3).collect();
    drop(client);
    echo.join().expect("the echo thread");
    samples
}

/// Puts from `writers` concurrent tasks for `rounds` rounds of `round`; ops/s per round.
pub async fn concurrent_puts(cache: &BenchCache, writers: u64, rounds: usize, round: Duration) -> Vec<f64> {
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let (written, took) = concurrent_round(cache, writers, round).await;
        rates.push(written as f64 / took.as_secs_f64());
    }
    rates
}

/// One round of puts from `writers` concurrent tasks for `round`: (puts made, time taken).
pub async fn concurrent_round(cache: &BenchCache, writers: u64, round: Duration) -> (u64, Duration) {
    {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            let cache = cache.clone();
            tasks.spawn(async move {
                let value = vec![7u8; 64];
                let mut n = 0u64;
                while started.elapsed() < round {
                    cache.put(&(w * 1_000_000 + n % 1000), &value).await.expect("a put");
                    n += 1;
                }
                n
            });
        }
        let mut total = 0;
        while let Some(n) = tasks.join_next().await {
            total += n.expect("a writer task");
        }
        (total, started.elapsed())
    }
}

impl Scenario for CacheOps {
    fn name(&self) -> &'static str {
        "cache-ops"
    }

    fn about(&self) -> &'static str {
        "Gets and puts of 64-byte values through the host's typed cache API, in one process: standalone (no \
         strategy: the host's own map), gossip with 1 member, and gossip with 3 in-process members (each loads its \
         own copy of gossip.so; a put returns once every member has it). Latencies are single operations from \
         one client (timer overhead ~0.05 µs included); rates are per round. Then a put on member a followed by a \
         get of the same key on member b. Beside the 3-member figures, with those members running: the loopback TCP \
         round trip (std sockets, `TCP_NODELAY`, one byte each way, an echo thread; single round trips), and each \
         3-member put's latency divided by the median round trip."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let plan = ctx.pick(
            Plan {
                keys: 10_000,
                get_rounds: 10,
                gets_per_round: 100_000,
                put_rounds: 10,
                puts_per_round: 300,
                concurrent_rounds: 5,
                concurrent_round: Duration::from_millis(400),
                writers: 16,
            },
            Plan {
                keys: 500,
                get_rounds: 3,
                gets_per_round: 1000,
                put_rounds: 3,
                puts_per_round: 30,
                concurrent_rounds: 2,
                concurrent_round: Duration::from_millis(100),
                writers: 16,
            },
        );
        let write_reads = ctx.pick(2000, 50);
        let trips = ctx.pick(2000, 200);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let (solo, _faults) = ClusterManager::start("solo", quick_config(), true, false);
            measure(report, "standalone", "standalone", &solo.caches().cache("bench"), plan).await;
            solo.shutdown().await;

            let mut one = TestCluster::clustered(Backend::Gossip, &["g1"]).await;
            measure(report, "gossip1", "gossip, 1 member", &one.node("g1").caches().cache("bench"), plan).await;
            one.detach("g1").await;

            let mut three = TestCluster::clustered(Backend::Gossip, &["a", "b", "c"]).await;
            let a: BenchCache = three.node("a").caches().cache("bench");
            let rtt = tokio::task::spawn_blocking(move || loopback_rtt(trips)).await.expect("the round trips");
            report.add_latency(
                "ops.loopback_rtt",
                "loopback TCP round trip, 1 byte each way",
                Unit::Micros,
                &rtt,
                "TCP_NODELAY, std sockets, an echo thread",
            );
            let puts = measure(report, "gossip3", "gossip, 3 members", &a, plan).await;
            if let Some(rtt) = Spread::of(&rtt) {
                let ratios: Vec<f64> = puts.iter().map(|p| p / rtt.median).collect();
                report.add(
                    "ops.put_over_rtt",
                    "put latency, 3 members ÷ median loopback round trip",
                    Unit::Ratio,
                    &ratios,
                    &format!("each put ÷ {}", Unit::Micros.format(rtt.median)),
                );
            }
            let b: BenchCache = three.node("b").caches().cache("bench");
            let value = vec![9u8; 64];
            let mut latencies = Vec::with_capacity(write_reads);
            for i in 0..write_reads as u64 {
                let started = Instant::now();
                a.put(&(plan.keys + i), &value).await.expect("the write is acknowledged");
                let seen = b.get(&(plan.keys + i)).await.expect("b reads");
                latencies.push(started.elapsed().as_nanos() as f64 / 1e3);
                assert!(seen.is_some(), "an acknowledged write was not visible on b");
            }
            report.add_latency(
                "ops.write_read.gossip3",
                "put on a (acknowledged by all) → get on b, 3 members",
                Unit::Micros,
                &latencies,
                "one client",
            );
            for name in ["a", "b", "c"] {
                three.detach(name).await;
            }
        });
    }
}
