//! The cluster scenarios of the bench runner, one module each. A scenario
//! measures a group of related figures into the [`Report`]; adding one is
//! adding its module and one line to [`registry`].

mod atomic;
mod boundary;
pub mod cache_ops;
mod drop_active;
mod entry_events;
mod events;
mod expiry;
mod failure;
mod hot_upgrade;
mod join;
mod load_balancer;
pub mod partition;
mod peer;
mod plugin_load;
mod redis;
mod redis_near;
mod redis_scaling;
mod scaling;
mod signature_check;
mod soak;
mod switch;
mod upgrade_load;
mod upgrade_soak;

use std::path::Path;

use crate::report::Report;

pub use scaling::worker as scaling_worker;

/// How much a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every figure with enough samples for the report (`all`).
    Full,
    /// Few samples, so the harness is exercised in CI in under 2 minutes.
    Quick,
}

/// What a scenario gets to run with.
pub struct Ctx<'a> {
    pub mode: Mode,
    /// A scratch directory for this scenario, removed after the run.
    pub work: &'a Path,
}

impl Ctx<'_> {
    /// `full` in a full run, `quick` in quick mode.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        match self.mode {
            Mode::Full => full,
            Mode::Quick => quick,
        }
    }
}

/// One scenario of the runner.
pub trait Scenario {
    /// Its name on the command line and in the report.
    fn name(&self) -> &'static str;
    /// What it measures and how, in a sentence or two (printed in the report).
    fn about(&self) -> &'static str;
    /// Measures; figures go into `report`. A panic fails only this scenario.
    fn run(&self, ctx: &Ctx, report: &mut Report);
}

/// Every scenario, in the order `all` runs them.
pub fn registry() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(boundary::Boundary),
        Box::new(plugin_load::PluginLoad),
        Box::new(signature_check::SignatureCheck),
        Box::new(drop_active::DropToActive),
        Box::new(hot_upgrade::HotUpgrade),
        Box::new(upgrade_load::UpgradeUnderLoad),
        Box::new(upgrade_soak::UpgradeSoak),
        Box::new(cache_ops::CacheOps),
        Box::new(atomic::Atomic),
        Box::new(entry_events::EntryEvents),
        Box::new(expiry::Expiry),
        Box::new(join::Join),
        Box::new(failure::Failure),
        Box::new(peer::Peer),
        Box::new(events::Events),
        Box::new(load_balancer::LoadBalancer),
        Box::new(partition::Partition),
        Box::new(soak::Soak),
        Box::new(scaling::Scaling),
        Box::new(redis::Redis),
        Box::new(redis_scaling::RedisScaling),
        Box::new(redis_near::RedisNear),
        Box::new(switch::Switch),
    ]
}

/// The `about` text of scenario `name`.
pub fn about(name: &str) -> Option<&'static str> {
    registry().into_iter().find(|s| s.name() == name).map(|s| s.about())
}
