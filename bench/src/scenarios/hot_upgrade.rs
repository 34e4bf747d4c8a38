//! Hot upgrade in one process: `PluginManager::load(path)` replacing the
//! active version of `hello` and of the gossip strategy, and the resident
//! memory each retired version keeps (`abi_stable` never unloads a library).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterConfig, ClusterManager, ClusterState};
use clusterhost::properties::NodeValues;
use clusterhost::{LoadOutcome, ManagerConfig, PluginManager};
use clusterhost_tests::{plugin, restamp};
use semver::Version;

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

const DEADLINE: Duration = Duration::from_secs(30);

pub struct HotUpgrade;

/// Which plugin a series upgrades.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hello,
    Gossip,
}

impl Scenario for HotUpgrade {
    fn name(&self) -> &'static str {
        "hot-upgrade"
    }

    fn about(&self) -> &'static str {
        "`load(path)` replacing the active plugin with a higher version (restamped builds), in one manager: \
         `hello`, and the gossip strategy in a one-member cluster (its upgrade leaves the cluster, stops chitchat and \
         the data plane, starts the new version and hands its strategy over; the re-join that follows is not \
         counted). Resident memory: VmRSS of this process before and after each upgrade (after 5 warm-up upgrades \
         and a 200 ms pause each, so retired runtimes' threads have exited)."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let (upgrades, rss_upgrades) = ctx.pick((30, 30), (2, 2));
        // Upgrades made before the memory series, so growth that happens
        // once (allocator arenas, runtime) is not counted.
        let warm_up = ctx.pick(5, 1);
        let versions = (2 + upgrades).max(1 + warm_up + rss_upgrades);
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        for kind in [Kind::Hello, Kind::Gossip] {
            let (name, id) = match kind {
                Kind::Hello => ("hello", "hello"),
                Kind::Gossip => ("gossip", "gossip"),
            };
            let built = plugin(name);
            let kib = std::fs::metadata(&built).map(|m| m.len() / 1024).unwrap_or(0);
            let builds: Vec<PathBuf> = (0..versions)
                .map(|n| {
                    let path = ctx.work.join("builds").join(format!("{name}-0.1.{n}.so"));
                    restamp(&built, &path, |m| m.version = Version::new(0, 1, n as u64));
                    path
                })
                .collect();
            let home = ctx.work.join(format!("{name}-upgrade"));
            let (manager, target, cluster) = manager_with(&runtime, &home, &builds[0], kind);
            upgrade(&runtime, &manager, &target, &builds[1], cluster.as_ref());
            let took: Vec<Duration> = builds[2..2 + upgrades]
                .iter()
                .map(|b| upgrade(&runtime, &manager, &target, b, cluster.as_ref()))
                .collect();
            runtime.block_on(manager.stop_all());
            let label = format!("hot upgrade, {id}: load(path) replacing the active version");
            report.add_durations(&format!("upgrade.{id}"), &label, Unit::Millis, &took, &format!("{kib} KiB plugin"));

            let home = ctx.work.join(format!("{name}-memory"));
            let (manager, target, cluster) = manager_with(&runtime, &home, &builds[0], kind);
            for build in &builds[1..=warm_up] {
                upgrade(&runtime, &manager, &target, build, cluster.as_ref());
            }
            let mut added = Vec::new();
            let first = rss_kib();
            let mut before = first;
            for build in &builds[1 + warm_up..=warm_up + rss_upgrades] {
                upgrade(&runtime, &manager, &target, build, cluster.as_ref());
                let after = rss_kib();
                added.push(after - before);
                before = after;
            }
            let active = runtime.block_on(manager.active());
            assert_eq!(active.len(), 1, "one version is active after the upgrades: {active:?}");
            runtime.block_on(manager.stop_all());
            let mean = (before - first) / rss_upgrades as f64;
            report.add(
                &format!("rss.{id}"),
                &format!("resident memory added per hot upgrade, {id}"),
                Unit::KiB,
                &added,
                &format!("VmRSS {first:.0} → {before:.0} KiB over {rss_upgrades} upgrades, mean {mean:.0} KiB"),
            );
        }
    }
}

/// A manager over `home` with `first` published under plugins/ and active;
/// for gossip, wired to a cluster manager as a one-member cluster.
fn manager_with(
    runtime: &tokio::runtime::Runtime,
    home: &Path,
    first: &Path,
    kind: Kind,
) -> (PluginManager, PathBuf, Option<ClusterManager>) {
    let name = if kind == Kind::Gossip { "gossip.so" } else { "hello.so" };
    let target = home.join("plugins").join(name);
    std::fs::create_dir_all(target.parent().expect("plugins/")).expect("plugins/ can be made");
    let mut config = ManagerConfig::new(home);
    config.private_dir = Some(home.to_owned());
    if kind == Kind::Gossip {
        let conf = home.join("conf");
        std::fs::create_dir_all(&conf).expect("conf/ can be made");
        std::fs::write(conf.join("cluster.key"), "7e".repeat(32)).expect("the key can be written");
        std::fs::write(conf.join("gossip.toml"), "[discovery.multicast]\nenabled = false\n").expect("gossip.toml");
        config.values = NodeValues::member("bench", clusterhost_tests::cluster::free_member_port());
        let cluster = runtime.block_on(async {
            let quick = ClusterConfig { startup_delay: Duration::ZERO, ..ClusterConfig::default() };
            ClusterManager::start("bench", quick, true, false).0
        });
        config.cluster = Some(cluster);
    }
    let cluster = config.cluster.clone();
    let manager = PluginManager::new(config).expect("a manager");
    std::fs::copy(first, &target).expect("the plugin can be published");
    let outcome = runtime.block_on(manager.load(&target)).expect("the plugin loads");
    assert!(matches!(outcome, LoadOutcome::Activated { .. }), "{outcome:?}");
    wait_clustered(runtime, cluster.as_ref());
    (manager, target, cluster)
}

/// For gossip: waits (untimed) until the member has re-joined.
fn wait_clustered(runtime: &tokio::runtime::Runtime, cluster: Option<&ClusterManager>) {
    if let Some(cluster) = cluster {
        runtime.block_on(async {
            let deadline = Instant::now() + DEADLINE;
            while cluster.state() != ClusterState::Clustered {
                assert!(Instant::now() < deadline, "no re-join: {:?}", cluster.state());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
}

/// Replaces the published plugin with `build` and loads it; returns how long `load` took.
fn upgrade(
    runtime: &tokio::runtime::Runtime,
    manager: &PluginManager,
    target: &Path,
    build: &Path,
    cluster: Option<&ClusterManager>,
) -> Duration {
    std::fs::copy(build, target).expect("the new version can be published");
    let started = Instant::now();
    let outcome = runtime.block_on(manager.load(target)).expect("the upgrade succeeds");
    let took = started.elapsed();
    assert!(matches!(outcome, LoadOutcome::Replaced { .. }), "not a hot upgrade: {outcome:?}");
    wait_clustered(runtime, cluster);
    took
}

/// This process's VmRSS in KiB, after letting a retired runtime's threads exit.
fn rss_kib() -> f64 {
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable (Linux)");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("/proc/self/status has a VmRSS line")
}
