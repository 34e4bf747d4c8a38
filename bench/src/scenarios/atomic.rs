//! Atomic cache operations (issue 18): put-if-absent and replace-if ops/s
//! and latency from 16 concurrent writers, on one key (contended) and on a
//! key each (distinct), with gossip (3 in-process members: the senior
//! decides) and redis (3 members on one `redis-server`: one Lua script per
//! operation).

use std::time::{Duration, Instant};

use clusterhost::cluster::{Cache, ClusterManager};
use clusterhost_tests::cluster::{Backend, TestCluster};

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct Atomic;

/// Writers at once, spread over the members in turn.
const WRITERS: u64 = 16;

type Counter = Cache<u64, u64>;

/// Which operation a writer repeats.
#[derive(Clone, Copy)]
enum Op {
    /// put_if_absent of a key (on one key, all but the first find it present).
    PutIfAbsent,
    /// read the version, then replace_if by it (a lost race counts as an op too).
    ReplaceIf,
}

/// `WRITERS` tasks repeating `op` for `round`, on key 0 (`contended`) or a
/// key per writer: (ops/s, latencies of the conditional call in µs, the
/// share of calls that applied).
async fn round(caches: &[Counter], op: Op, contended: bool, round: Duration, base: u64) -> (f64, Vec<f64>, f64) {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let cache = caches[w as usize % caches.len()].clone();
        tasks.spawn(async move {
            let (mut latencies, mut applied) = (Vec::new(), 0u64);
            let mut n = 0u64;
            while started.elapsed() < round {
                let key = match (op, contended) {
                    (_, true) => base,
                    (Op::PutIfAbsent, false) => base + (w + 1) * 1_000_000 + n,
                    (Op::ReplaceIf, false) => base + w + 1,
                };
                let call = Instant::now();
                let won = match op {
                    Op::PutIfAbsent => cache.put_if_absent(&key, &n).await.expect("put_if_absent").is_none(),
                    Op::ReplaceIf => match cache.get_versioned(&key).await.expect("get_versioned") {
                        Some((_, version)) => cache.replace_if_version(&key, version, &n).await.expect("replace_if"),
                        None => cache.put_if_absent(&key, &n).await.expect("put_if_absent").is_none(),
                    },
                };
                latencies.push(call.elapsed().as_nanos() as f64 / 1e3);
                applied += won as u64;
                n += 1;
            }
            (latencies, applied)
        });
    }
    let (mut latencies, mut applied) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (l, a) = done.expect("a writer task");
        latencies.extend(l);
        applied += a;
    }
    let ops = latencies.len() as f64;
    (ops / started.elapsed().as_secs_f64(), latencies, applied as f64 / ops.max(1.0))
}

/// Every (operation, contention) pair on `caches`: figures
/// `atomic.{pia,replace}.{one_key,distinct}.{tag}` (ops/s per round) and
/// `..._latency` (µs, with p99).
async fn measure(report: &mut Report, tag: &str, what: &str, caches: &[Counter], rounds: usize, length: Duration) {
    let mut base = 0;
    for (op, op_id, op_name) in
        [(Op::PutIfAbsent, "pia", "put_if_absent"), (Op::ReplaceIf, "replace", "read version + replace_if")]
    {
        for (contended, c_id, c_name) in
            [(true, "one_key", "16 writers, one key"), (false, "distinct", "16 writers, a key each")]
        {
            let (mut rates, mut latencies, mut applied) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                base += 100_000_000;
                let (rate, l, share) = round(caches, op, contended, length, base).await;
                rates.push(rate);
                latencies.extend(l);
                applied.push(share * 100.0);
            }
            let id = format!("atomic.{op_id}.{c_id}.{tag}");
            report.add(&id, &format!("{op_name} ops/s, {c_name}, {what}"), Unit::OpsPerSec, &rates, "per round");
            report.add_latency(
                &format!("{id}_latency"),
                &format!("{op_name} latency, {c_name}, {what}"),
                Unit::Micros,
                &latencies,
                &format!("the conditional call; applied {:.0}% of calls (median of rounds)", median(&applied)),
            );
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn caches_of(cluster: &TestCluster, names: &[&str]) -> Vec<Counter> {
    names.iter().map(|n| cluster.node(n).caches().cache::<u64, u64>("atomic-bench")).collect()
}

async fn detach_all(cluster: &mut TestCluster, names: &[&str]) {
    for name in names {
        cluster.detach(name).await;
    }
}

impl Scenario for Atomic {
    fn name(&self) -> &'static str {
        "atomic"
    }

    fn about(&self) -> &'static str {
        "Atomic cache operations from 16 concurrent writers spread over 3 in-process members: put_if_absent, and \
         read-version-then-replace_if, each on one shared key and on a key per writer. Gossip decides each at the \
         senior (one at a time, replicated to every member before it answers); redis runs one Lua script per \
         operation on one redis-server. A lost race counts as an operation; the note says what share applied."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let (rounds, length) = ctx.pick((5, Duration::from_millis(500)), (2, Duration::from_millis(100)));
        let names = ["a", "b", "c"];
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let (solo, _faults) =
                ClusterManager::start("solo", clusterhost_tests::cluster::quick_config(), true, false);
            let solo_cache = [solo.caches().cache::<u64, u64>("atomic-bench")];
            measure(report, "standalone", "standalone", &solo_cache, rounds, length).await;
            solo.shutdown().await;

            let mut gossip = TestCluster::clustered(Backend::Gossip, &names).await;
            measure(report, "gossip3", "gossip, 3 members", &caches_of(&gossip, &names), rounds, length).await;
            detach_all(&mut gossip, &names).await;

            let mut redis = TestCluster::clustered(Backend::Redis, &names).await;
            measure(report, "redis3", "redis, 3 members on one server", &caches_of(&redis, &names), rounds, length)
                .await;
            detach_all(&mut redis, &names).await;
        });
    }
}
