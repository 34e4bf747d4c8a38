//! `clusterhost run`: a node in this process, until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use super::fail;
use crate::node;

/// The `run` flags that override node-specific properties; `None` when
/// not given. Also the flags of an application that embeds a node (the
/// chat showcase flattens them into its own).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunFlags {
    /// This node's name, its member id (`node.name`; default: the host name).
    #[arg(long, env = "CLUSTERHOST_NODE_NAME")]
    pub node_name: Option<String>,
    /// Address cluster strategies bind to (`node.bind`; default 127.0.0.1).
    #[arg(long, env = "CLUSTERHOST_BIND")]
    pub bind: Option<String>,
    /// The strategy's member port (`cluster.port`; default: the strategy's own, e.g. 5701).
    #[arg(long, env = "CLUSTERHOST_CLUSTER_PORT")]
    pub cluster_port: Option<String>,
    /// The admin API port (`admin.port`; default 9090).
    #[arg(long, env = "CLUSTERHOST_ADMIN_PORT")]
    pub admin_port: Option<String>,
    /// The admin API address (`admin.bind`; default 127.0.0.1; off loopback the token is needed for reads too).
    #[arg(long, env = "CLUSTERHOST_ADMIN_BIND")]
    pub admin_bind: Option<String>,
}

impl RunFlags {
    /// The flags given, as node option overrides (key, value, where from).
    pub fn overrides(self) -> Vec<(String, String, String)> {
        [
            ("node.name", self.node_name, "--node-name / CLUSTERHOST_NODE_NAME"),
            ("node.bind", self.bind, "--bind / CLUSTERHOST_BIND"),
            ("cluster.port", self.cluster_port, "--cluster-port / CLUSTERHOST_CLUSTER_PORT"),
            ("admin.port", self.admin_port, "--admin-port / CLUSTERHOST_ADMIN_PORT"),
            ("admin.bind", self.admin_bind, "--admin-bind / CLUSTERHOST_ADMIN_BIND"),
        ]
        .into_iter()
        .filter_map(|(key, value, source)| value.map(|v| (key.to_string(), v, source.to_string())))
        .collect()
    }
}

/// Runs a node with home `home` on a runtime of its own.
pub fn run(home: PathBuf, flags: RunFlags) -> ExitCode {
    let overrides = flags.overrides();
    let _guard = crate::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("could not start the async runtime: {e}")),
    };
    let result = runtime.block_on(node::run(node::NodeOptions { home, overrides }));
    // A plugin thread stuck in its code must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.to_string()),
    }
}
