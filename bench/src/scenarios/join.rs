//! Join → visible on all: real processes (3 and 10) and in-process members
//! (3, 10 and 20), each member loading its own copy of the gossip plugin.

use std::time::{Duration, Instant};

use clusterhost_tests::cluster::{quick_config, Backend, TestCluster};
use clusterhost_tests::plugin;
use clusterhost_tests::upgrade::GossipCluster;

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct Join;

impl Scenario for Join {
    fn name(&self) -> &'static str {
        "join"
    }

    fn about(&self) -> &'static str {
        "Processes: N `clusterhost run` processes started together from one static member list (startup delay 0); \
         timed from spawning the first to every member's admin API listing all N as clustered (polled every 20 ms; \
         includes process start and plugin load). In-process: N members in one process, each with its own \
         plugin manager and copy of gossip.so; timed from attaching the first to every member listing all N."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let gossip = plugin("gossip");
        let process_sizes: &[(usize, usize)] = ctx.pick(&[(3, 5), (10, 3)], &[(3, 1)]);
        for &(n, runs) in process_sizes {
            let samples: Vec<Duration> = (0..runs)
                .map(|_| {
                    let dir = tempfile::tempdir_in(ctx.work).expect("a scratch directory");
                    let started = Instant::now();
                    let cluster = GossipCluster::start(n, &gossip, dir);
                    let took = started.elapsed();
                    drop(cluster);
                    took
                })
                .collect();
            report.add_durations(
                &format!("join.process.{n}"),
                &format!("join → visible on all, {n} processes"),
                Unit::Seconds,
                &samples,
                "per run",
            );
        }
        let in_process: &[(usize, usize)] = ctx.pick(&[(3, 3), (10, 3), (20, 2)], &[(3, 1)]);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        for &(n, runs) in in_process {
            let samples: Vec<Duration> = (0..runs).map(|_| runtime.block_on(join_in_process(n))).collect();
            report.add_durations(
                &format!("join.in_process.{n}"),
                &format!("join → visible on all, {n} in-process members"),
                Unit::Seconds,
                &samples,
                "per run",
            );
        }
    }
}

/// From attaching the first of `n` members until every member lists all of them.
async fn join_in_process(n: usize) -> Duration {
    let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut cluster = TestCluster::standalone(Backend::Gossip, &refs, quick_config());
    let started = Instant::now();
    for name in &refs {
        cluster.attach(name).await;
    }
    let deadline = started + Duration::from_secs(60);
    while !cluster.nodes.iter().all(|node| node.cluster.members().len() == n) {
        assert!(Instant::now() < deadline, "{n} members did not all see each other within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    for name in &refs {
        cluster.detach(name).await;
    }
    took
}
