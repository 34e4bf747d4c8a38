//! Example plugin: greets when it starts and when it stops.
//!
//! The smallest complete plugin, and the one docs/plugin-authoring.md walks
//! through: an implementation of [`Plugin`] and one `declare_plugin!`.

use clusterhost_plugin_api::{declare_plugin, Host, Plugin, PluginResult};

/// Says hello; holds the name it greets with.
struct Hello {
    node_home: String,
}

impl Plugin for Hello {
    async fn start(&self) -> PluginResult<()> {
        tracing::info!(home = %self.node_home, "hello from a clusterhost plugin");
        Ok(())
    }

    async fn stop(&self) -> PluginResult<()> {
        tracing::info!("goodbye");
        Ok(())
    }
}

fn create(host: &Host) -> PluginResult<Hello> {
    Ok(Hello { node_home: host.home_dir() })
}

declare_plugin! {
    id: "hello",
    description: "Example plugin: greets on start and stop",
    host_req: "^0.1",
    provides: ["example"],
    conflicts: [],
    wire_protocol: "1.0",
    create: create,
}
