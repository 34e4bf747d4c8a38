//! The redis cluster strategy: every member talks to one shared Redis or
//! Valkey (a single server, a Sentinel-watched master, or a Redis Cluster).
//! Membership by expiring keys plus a join order, caches as Redis hashes
//! (bounded ones kept by Lua scripts), locks with owner tokens and fencing
//! numbers, tasks, change notices and entry events over pub/sub. See
//! docs/redis.md.

mod commands;
pub mod config;
pub mod conn;
mod core;
pub mod entry_events;
pub mod error;
mod keys;
mod listening;
mod locks;
mod membership;
mod near;
mod partitions;
mod pubsub;
mod scripts;
mod storage;
mod strategy;
mod tasks;

use std::sync::{Arc, Mutex};

use clusterhost_plugin_api::cluster::StrategyBox;
use clusterhost_plugin_api::{declare_plugin, ClusterHost, Host, Plugin, PluginResult};

use crate::config::Config;
use crate::core::Core;
use crate::strategy::RedisStrategy;
#[doc(hidden)] // for the fuzz targets (fuzz/)
pub use crate::{
    membership::Record,
    storage::{decode, encode},
    tasks::Wire,
};

struct RedisPlugin {
    host: Host,
    config: Config,
    core: Mutex<Option<Arc<Core>>>,
}

impl Plugin for RedisPlugin {
    async fn start(&self) -> PluginResult<()> {
        let version = self.host.manifest().version.to_string();
        let address = self.host.property("node.bind").unwrap_or_default();
        let core = Core::new(self.host.node_name(), version, address, self.config.clone());
        // Connecting happens in the background: a node starts even while
        // Redis is down, and joins once it is reachable.
        core.run();
        *crate::core::lock(&self.core) = Some(core);
        Ok(())
    }

    async fn stop(&self) -> PluginResult<()> {
        let core = crate::core::lock(&self.core).take();
        if let Some(core) = core {
            core.shutdown().await;
        }
        Ok(())
    }

    fn cluster_strategy(&self, cluster: &ClusterHost) -> PluginResult<Option<StrategyBox>> {
        let core = crate::core::lock(&self.core).clone().ok_or(error::Error::NotStarted)?;
        core.set_host(cluster.clone());
        Ok(Some(cluster.into_boundary(RedisStrategy(core))))
    }
}

fn create(host: &Host) -> PluginResult<RedisPlugin> {
    // rustls (rediss:// URLs) needs a process-wide crypto provider; this
    // plugin's copy of rustls gets its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::load(&host.config_file())?;
    Ok(RedisPlugin { host: host.clone(), config, core: Mutex::new(None) })
}

declare_plugin! {
    id: "redis",
    description: "Cluster strategy on a shared Redis or Valkey (single server, Sentinel or Redis Cluster)",
    host_req: "^0.1",
    provides: ["cluster-strategy"],
    conflicts: [],
    wire_protocol: "1.0",
    create: create,
}
