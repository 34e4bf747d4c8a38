//! `PluginManager::load(path)` → Active for a small plugin (the shipped
//! `hello`), and the manifest read alone (the part made before dlopen).

use std::time::Instant;

use clusterhost::{ManagerConfig, PluginManager};
use clusterhost_tests::plugin;

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct PluginLoad;

impl Scenario for PluginLoad {
    fn name(&self) -> &'static str {
        "plugin-load"
    }

    fn about(&self) -> &'static str {
        "`PluginManager::load(path)` to Active for the shipped `hello` plugin, each load in a new manager (a new \
         private copy mapped, as a hot upgrade would), and side by side the manifest read alone (made before dlopen)."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let loads = ctx.pick(60, 5);
        let file = plugin("hello");
        let kib = std::fs::metadata(&file).map(|m| m.len() / 1024).unwrap_or(0);
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let (mut reads, mut actives) = (Vec::new(), Vec::new());
        for _ in 0..loads {
            let started = Instant::now();
            clusterhost::plugins::manifest::read_manifest(&file).expect("the manifest reads");
            reads.push(started.elapsed());

            let mut config = ManagerConfig::new(ctx.work);
            config.private_dir = Some(ctx.work.to_owned());
            let manager = PluginManager::new(config).expect("a manager");
            let started = Instant::now();
            runtime.block_on(manager.load(&file)).expect("hello loads");
            actives.push(started.elapsed());
            runtime.block_on(manager.stop_all());
        }
        let note = format!("`hello`, {kib} KiB");
        report.add_durations("load.manifest", "manifest read (before dlopen)", Unit::Millis, &reads, &note);
        report.add_durations("load.active", "load(path) → Active", Unit::Millis, &actives, &note);
    }
}
