//! `PluginManager::load(path)` → Active for a small plugin (the shipped
//! `hello`) and for the gossip strategy, and the manifest read alone (the
//! part made before dlopen).

use std::path::Path;
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterConfig, ClusterManager};
use clusterhost::properties::NodeValues;
use clusterhost::{LoadOutcome, ManagerConfig, PluginManager};
use clusterhost_tests::plugin;
use tokio::runtime::Runtime;

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct PluginLoad;

/// A manager config over `home`, its private copies there.
fn config_over(home: &Path) -> ManagerConfig {
    let mut config = ManagerConfig::new(home);
    config.private_dir = Some(home.to_owned());
    config
}

/// One `load(file)` → Active in a new manager made from `config` (a new
/// private copy mapped, as a hot upgrade would), then the manager stopped;
/// how long the load took.
fn timed_load(runtime: &Runtime, config: ManagerConfig, file: &Path) -> Duration {
    let manager = PluginManager::new(config).expect("a manager");
    let started = Instant::now();
    let outcome = runtime.block_on(manager.load(file)).expect("the plugin loads");
    let took = started.elapsed();
    assert!(matches!(outcome, LoadOutcome::Activated { .. }), "{outcome:?}");
    runtime.block_on(manager.stop_all());
    took
}

/// [`timed_load`] of `file` in a new manager over `home`.
pub(super) fn load_once(runtime: &Runtime, home: &Path, file: &Path) -> Duration {
    timed_load(runtime, config_over(home), file)
}

/// As [`load_once`] for the gossip strategy in `file` (under `home`/plugins/),
/// with a cluster manager, so Active includes the strategy handed to it; the
/// join would start after the default startup delay, long after the manager
/// is stopped.
fn load_gossip_once(runtime: &Runtime, home: &Path, file: &Path) -> Duration {
    let mut config = config_over(home);
    config.values = NodeValues::member("bench", clusterhost_tests::cluster::free_member_port());
    let cluster = runtime.block_on(async { ClusterManager::start("bench", ClusterConfig::default(), true, false).0 });
    config.cluster = Some(cluster.clone());
    let took = timed_load(runtime, config, file);
    runtime.block_on(cluster.shutdown());
    // Let the stopped version's threads exit before the next load.
    std::thread::sleep(Duration::from_millis(50));
    took
}

impl Scenario for PluginLoad {
    fn name(&self) -> &'static str {
        "plugin-load"
    }

    fn about(&self) -> &'static str {
        "`PluginManager::load(path)` to Active for the shipped `hello` plugin, each load in a new manager (a new \
         private copy mapped, as a hot upgrade would), and side by side the manifest read alone (made before \
         dlopen). Then the same for the gossip strategy, each load in a new manager wired to a new cluster manager \
         (Active once its strategy is handed over; the join, after the startup delay, is not reached)."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let loads = ctx.pick(60, 5);
        let file = plugin("hello");
        let kib = std::fs::metadata(&file).map(|m| m.len() / 1024).unwrap_or(0);
        let runtime = Runtime::new().expect("a tokio runtime");
        let (mut reads, mut actives) = (Vec::new(), Vec::new());
        for _ in 0..loads {
            let started = Instant::now();
            clusterhost::plugins::manifest::read_manifest(&file).expect("the manifest reads");
            reads.push(started.elapsed());
            actives.push(load_once(&runtime, ctx.work, &file));
        }
        let note = format!("`hello`, {kib} KiB");
        report.add_durations("load.manifest", "manifest read (before dlopen)", Unit::Millis, &reads, &note);
        report.add_durations("load.active", "load(path) → Active", Unit::Millis, &actives, &note);

        let home = ctx.work.join("gossip-home");
        let gossip = home.join("plugins/gossip.so");
        std::fs::create_dir_all(gossip.parent().expect("plugins/")).expect("plugins/ can be made");
        std::fs::copy(plugin("gossip"), &gossip).expect("the plugin can be published");
        let conf = home.join("conf");
        std::fs::create_dir_all(&conf).expect("conf/ can be made");
        std::fs::write(conf.join("cluster.key"), "7e".repeat(32)).expect("the key can be written");
        std::fs::write(conf.join("gossip.toml"), "[discovery.multicast]\nenabled = false\n").expect("gossip.toml");
        let kib = std::fs::metadata(&gossip).map(|m| m.len() / 1024).unwrap_or(0);
        // One untimed load first: the file's pages come into the page cache.
        load_gossip_once(&runtime, &home, &gossip);
        let actives: Vec<Duration> = (0..loads).map(|_| load_gossip_once(&runtime, &home, &gossip)).collect();
        report.add_durations(
            "load.active.gossip",
            "load(path) → Active, gossip",
            Unit::Millis,
            &actives,
            &format!("`gossip`, {kib} KiB, a cluster manager (strategy handed over, no join)"),
        );
    }
}
