//! Benchmark: the gossip strategy, in-process members (each loads its own
//! copy of `gossip.so`, with its own chitchat and data plane) on 127.0.0.1.
//!
//! - join -> visible on all: from attaching every member until every member
//!   lists all of them (3 and 10 members);
//! - write -> visible on another member: a put on A (acknowledged by every
//!   member before it returns) then the read on B; p50 / p99;
//! - local reads/s on one member; replicated writes/s (one writer, and 16
//!   concurrent writers) on 3 members.
//!
//! `cargo bench -p clusterhost-tests --bench gossip` (release build).
//! `BENCH_ITERATIONS=N` (quick mode) shrinks every loop.

use std::time::{Duration, Instant};

use clusterhost_tests::cluster::{quick_config, Backend, TestCluster};

fn pct(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

async fn join_time(n: usize) -> Duration {
    let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut cluster = TestCluster::standalone(Backend::Gossip, &refs, quick_config());
    let started = Instant::now();
    for name in &refs {
        cluster.attach(name).await;
    }
    let deadline = started + Duration::from_secs(60);
    loop {
        if cluster.nodes.iter().all(|node| node.cluster.members().len() == n) {
            break;
        }
        assert!(Instant::now() < deadline, "{n} members did not all see each other within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    for name in &refs {
        cluster.detach(name).await;
    }
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick: Option<usize> = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok());
    let (joins, writes, seconds) = match quick {
        Some(n) => (1, n.max(5) * 10, 0.2),
        None => (3, 2000, 2.0),
    };

    for n in [3usize, 10] {
        let mut samples: Vec<Duration> = Vec::new();
        for _ in 0..joins {
            samples.push(join_time(n).await);
        }
        let median = pct(&mut samples, 0.5);
        println!("join -> visible on all, {n:>2} members   runs={joins} median={median:?} (goal < 2 s; includes loading each member's plugin)");
    }

    let cluster = TestCluster::clustered(Backend::Gossip, &["a", "b", "c"]).await;
    let a = cluster.node("a").caches().cache::<u64, Vec<u8>>("bench");
    let b = cluster.node("b").caches().cache::<u64, Vec<u8>>("bench");
    let value = vec![7u8; 64];

    let mut latencies = Vec::with_capacity(writes);
    for i in 0..writes as u64 {
        let started = Instant::now();
        a.put(&i, &value).await.expect("the write is acknowledged");
        let seen = b.get(&i).await.expect("b reads");
        latencies.push(started.elapsed());
        assert!(seen.is_some(), "an acknowledged write was not visible on b");
    }
    let (p50, p99) = (pct(&mut latencies, 0.5), pct(&mut latencies, 0.99));
    println!("write on a -> read on b, 3 members    n={writes} p50={p50:?} p99={p99:?} (goal p99 < 10 ms)");

    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut reads = 0u64;
    while started.elapsed() < budget {
        for i in 0..1000u64 {
            let _ = a.get(&(i % writes as u64)).await.expect("a local read");
        }
        reads += 1000;
    }
    println!("local reads/s on one member           {:.0}", reads as f64 / started.elapsed().as_secs_f64());

    let started = Instant::now();
    let mut written = 0u64;
    while started.elapsed() < budget {
        a.put(&(written % 10_000), &value).await.expect("a replicated write");
        written += 1;
    }
    println!("replicated writes/s, 1 writer, 3 m.   {:.0}", written as f64 / started.elapsed().as_secs_f64());

    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16u64 {
        let cache = a.clone();
        let value = value.clone();
        writers.spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < budget {
                cache.put(&(w * 100_000 + n % 1000), &value).await.expect("a replicated write");
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = writers.join_next().await {
        total += n.expect("a writer");
    }
    println!("replicated writes/s, 16 writers, 3 m. {:.0}", total as f64 / started.elapsed().as_secs_f64());
    // Stop the members' plugins while this runtime still runs.
    let mut cluster = cluster;
    for name in ["a", "b", "c"] {
        cluster.detach(name).await;
    }
}
