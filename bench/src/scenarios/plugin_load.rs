//! `PluginManager::load(path)` → Active for a small plugin (the shipped
//! `hello`) and for the gossip strategy, and the manifest read alone (the
//! part made before dlopen).

use std::path::Path;
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterConfig, ClusterManager};
use clusterhost::plugins::manager::LoadStep;
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

/// The steps of one load, as its report timed them.
type Steps = Vec<(LoadStep, Duration)>;

/// One `load(file)` → Active in a new manager made from `config` (a new
/// private copy mapped, as a hot upgrade would), then the manager stopped;
/// how long the load took, and each of its steps.
fn timed_load(runtime: &Runtime, config: ManagerConfig, file: &Path) -> (Duration, Steps) {
    let manager = PluginManager::new(config).expect("a manager");
    let started = Instant::now();
    let outcome = runtime.block_on(manager.load(file)).expect("the plugin loads");
    let took = started.elapsed();
    assert!(matches!(outcome, LoadOutcome::Activated { .. }), "{outcome:?}");
    let steps = manager.last_load(file).expect("the load's report").steps;
    runtime.block_on(manager.stop_all());
    (took, steps)
}

/// [`timed_load`] of `file` in a new manager over `home`.
pub(super) fn load_once(runtime: &Runtime, home: &Path, file: &Path) -> Duration {
    timed_load(runtime, config_over(home), file).0
}

/// One figure per step of `loads` (each load's steps), named `id.STEP`.
fn add_steps(report: &mut Report, id: &str, loads: &[Steps], note: &str) {
    for step in [LoadStep::Copy, LoadStep::Admit, LoadStep::Map, LoadStep::Create, LoadStep::Start, LoadStep::Attach] {
        let took: Vec<Duration> =
            loads.iter().filter_map(|steps| steps.iter().find(|(s, _)| *s == step).map(|(_, d)| *d)).collect();
        if took.is_empty() {
            continue;
        }
        let label = match step {
            LoadStep::Copy => "  of which the private copy (read, hashed, written)",
            LoadStep::Admit => "  of which the manifest read from it, trust and admission",
            LoadStep::Map => "  of which dlopen and the layout check",
            LoadStep::Create => "  of which the plugin's create",
            LoadStep::Start => "  of which the plugin's start",
            _ => "  of which the strategy handed to the cluster manager",
        };
        report.add_durations(&format!("{id}.{}", step.name()), label, Unit::Millis, &took, note);
    }
}

/// As [`load_once`] for the gossip strategy in `file` (under `home`/plugins/),
/// with a cluster manager, so Active includes the strategy handed to it; the
/// join would start after the default startup delay, long after the manager
/// is stopped.
fn load_gossip_once(runtime: &Runtime, home: &Path, file: &Path) -> (Duration, Steps) {
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
        let (mut reads, mut actives, mut steps) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..loads {
            let started = Instant::now();
            clusterhost::plugins::manifest::read_manifest(&file).expect("the manifest reads");
            reads.push(started.elapsed());
            let (took, took_steps) = timed_load(&runtime, config_over(ctx.work), &file);
            actives.push(took);
            steps.push(took_steps);
        }
        let note = format!("`hello`, {kib} KiB");
        report.add_durations("load.manifest", "manifest read (before dlopen)", Unit::Millis, &reads, &note);
        report.add_durations("load.active", "load(path) → Active", Unit::Millis, &actives, &note);
        add_steps(report, "load.active", &steps, &note);

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
        let (actives, steps): (Vec<Duration>, Vec<Steps>) =
            (0..loads).map(|_| load_gossip_once(&runtime, &home, &gossip)).unzip();
        let note = format!("`gossip`, {kib} KiB, a cluster manager (strategy handed over, no join)");
        report.add_durations("load.active.gossip", "load(path) → Active, gossip", Unit::Millis, &actives, &note);
        add_steps(report, "load.active.gossip", &steps, &note);
    }
}
