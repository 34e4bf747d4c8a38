//! The plugin around a strategy, for a plugin whose only job is its
//! strategy: [`declare_strategy!`](crate::declare_strategy) writes it, so an
//! author writes the strategy and one function that makes it.

use crate::cluster::StrategyBox;
use crate::{ClusterHost, Host, Plugin, PluginResult, Strategy};

/// Makes the strategy when the host asks for it (after the plugin started):
/// `host` has the node's properties and [`Host::config_file`], `cluster`
/// emits events and runs tasks. It runs inside the plugin's runtime, so it
/// may spawn the strategy's background tasks; work that waits belongs in
/// `start_clustering`.
pub type MakeStrategy<S> = fn(host: &Host, cluster: &ClusterHost) -> PluginResult<S>;

/// A [`Plugin`] that provides one strategy, made by a [`MakeStrategy`].
pub struct StrategyPlugin<S> {
    host: Host,
    make: MakeStrategy<S>,
}

impl<S: Strategy> StrategyPlugin<S> {
    /// The plugin for `make`'s strategy.
    pub fn new(host: &Host, make: MakeStrategy<S>) -> Self {
        StrategyPlugin { host: host.clone(), make }
    }
}

impl<S: Strategy> Plugin for StrategyPlugin<S> {
    fn cluster_strategy(&self, cluster: &ClusterHost) -> PluginResult<Option<StrategyBox>> {
        let strategy = (self.make)(&self.host, cluster)?;
        Ok(Some(cluster.into_boundary(strategy)))
    }
}

/// Declares a strategy plugin: [`declare_plugin!`](crate::declare_plugin)
/// with `provides: ["cluster-strategy"]` and the plugin written for you;
/// `strategy` is a [`MakeStrategy`] function.
///
/// ```ignore
/// clusterhost_plugin_api::declare_strategy! {
///     id: "shared-dir",
///     description: "Members and entries in a shared directory",
///     host_req: "^0.1",
///     conflicts: [],
///     wire_protocol: "1.0",
///     strategy: SharedDir::make,
/// }
/// ```
#[macro_export]
macro_rules! declare_strategy {
    (
        id: $id:literal,
        $(version: $version:literal,)?
        description: $description:literal,
        host_req: $host_req:literal,
        $(api_req: $api_req:literal,)?
        conflicts: [$($conflicts:literal),* $(,)?],
        wire_protocol: $wire:literal,
        strategy: $make:expr $(,)?
    ) => {
        $crate::declare_plugin! {
            id: $id,
            $(version: $version,)?
            description: $description,
            host_req: $host_req,
            $(api_req: $api_req,)?
            provides: ["cluster-strategy"],
            conflicts: [$($conflicts),*],
            wire_protocol: $wire,
            create: |host: &$crate::Host| Ok($crate::shell::StrategyPlugin::new(host, $make)),
        }
    };
}
