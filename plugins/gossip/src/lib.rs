//! The gossip cluster strategy: embedded clustering with no external
//! server. Membership and failure detection by chitchat; a sealed
//! member-to-member data plane for cache replication, locks and tasks;
//! discovery by multicast or a static member list. See docs/gossip.md.

mod atomic;
pub mod config;
pub mod core;
pub mod crypto;
pub mod discovery;
pub mod dns;
mod entry_events;
mod handler;
mod join;
mod liveness;
mod locks;
pub mod membership;
pub mod net;
mod replication;
pub mod store;
mod strategy;
mod tasks;
mod view;
pub mod wire;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clusterhost_plugin_api::cluster::StrategyBox;
use clusterhost_plugin_api::{declare_plugin, ClusterHost, Host, Plugin, PluginResult};

use crate::config::Config;
use crate::core::Core;
use crate::crypto::Sealer;
use crate::strategy::Gossip;
use crate::wire::Wire;

/// `m`, locked, poisoned or not: every critical section in this crate leaves
/// its data whole (a plain insert, remove or replace).
pub(crate) use clusterhost_plugin_api::sync::lock as locked;

/// The plugin: its configuration, read at load, and the member once started.
struct GossipPlugin {
    host: Host,
    config: Config,
    sealer: Sealer,
    /// The running member, between `start` and `stop` (the host asks for
    /// the strategy in between).
    core: Mutex<Option<Arc<Core>>>,
}

impl Plugin for GossipPlugin {
    async fn start(&self) -> PluginResult<()> {
        let bind: IpAddr = self
            .host
            .property("node.bind")
            .unwrap_or_else(|| "127.0.0.1".into())
            .parse()
            .map_err(|e| format!("node.bind is not an IP address: {e}"))?;
        let port = match self.host.property("cluster.port") {
            Some(p) => p.parse().map_err(|e| format!("cluster.port {p:?}: {e}"))?,
            None => self.config.network.port,
        };
        // The manifest as it is in the file (a release tool may restamp it):
        // its version and wire protocol are what this member announces.
        let manifest = self.host.manifest();
        let version = manifest.version.to_string();
        let wire = Wire {
            major: u16::try_from(manifest.wire_protocol.major)
                .map_err(|_| "the manifest's wire_protocol major is too large")?,
            minor: u16::try_from(manifest.wire_protocol.minor)
                .map_err(|_| "the manifest's wire_protocol minor is too large")?,
        };
        let core =
            Core::start(self.host.node_name(), version, wire, self.config.clone(), self.sealer.clone(), bind, port)
                .await?;
        *locked(&self.core) = Some(core);
        Ok(())
    }

    async fn stop(&self) -> PluginResult<()> {
        let core = locked(&self.core).take();
        if let Some(core) = core {
            core.shutdown().await;
        }
        Ok(())
    }

    fn cluster_strategy(&self, cluster: &ClusterHost) -> PluginResult<Option<StrategyBox>> {
        let core = locked(&self.core).clone().ok_or("gossip has not started")?;
        core.set_host(cluster.clone());
        Ok(Some(cluster.into_boundary(Gossip(core))))
    }
}

fn create(host: &Host) -> PluginResult<GossipPlugin> {
    let dir = PathBuf::from(host.config_dir());
    let config = Config::load(&host.config_file())?;
    let sealer = if config.security.insecure {
        tracing::warn!(
            "security.insecure = true: cluster traffic is NOT encrypted or authenticated; use this only on a trusted test network"
        );
        Sealer::insecure(&config.cluster_name)
    } else {
        Sealer::from_file(&dir.join(&config.security.key_file), &config.cluster_name)?
    };
    Ok(GossipPlugin { host: host.clone(), config, sealer, core: Mutex::new(None) })
}

declare_plugin! {
    id: "gossip",
    description: "Embedded cluster strategy: chitchat membership, encrypted data plane, no external server",
    host_req: "^0.1",
    provides: ["cluster-strategy"],
    conflicts: [],
    wire_protocol: "1.3",
    create: create,
}
