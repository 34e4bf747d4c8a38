//! A node: the plugin manager over a home directory, running until told to stop.

use std::path::{Path, PathBuf};

use crate::manager::{ManagerConfig, PluginManager};
use crate::status::{self, NodeStatus};

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Holds conf/ and plugins/.
    pub home: PathBuf,
}

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("home directory {home} is not usable: {source}; pass --home with a writable directory")]
    Home { home: PathBuf, source: std::io::Error },
    #[error("could not read the plugins directory {dir}: {source}")]
    PluginsDir { dir: PathBuf, source: std::io::Error },
    #[error("could not install the signal handler: {0}")]
    Signal(std::io::Error),
}

/// A node's plugins directory.
pub fn plugins_dir(home: &Path) -> PathBuf {
    home.join("plugins")
}

/// Runs a node until SIGTERM or Ctrl-C, then stops its plugins in reverse order.
pub async fn run(options: NodeOptions) -> Result<(), NodeError> {
    let home =
        std::path::absolute(&options.home).map_err(|source| NodeError::Home { home: options.home.clone(), source })?;
    let plugins = plugins_dir(&home);
    std::fs::create_dir_all(&plugins).map_err(|source| NodeError::Home { home: home.clone(), source })?;
    let manager = PluginManager::new(ManagerConfig::new(&home))
        .map_err(|source| NodeError::Home { home: home.clone(), source })?;
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(NodeError::Signal)?;

    tracing::info!(home = %home.display(), version = env!("CARGO_PKG_VERSION"), "node starting");
    let results =
        manager.load_dir(&plugins).await.map_err(|source| NodeError::PluginsDir { dir: plugins.clone(), source })?;
    let active = results.iter().filter(|(_, r)| r.is_ok()).count();
    tracing::info!(
        plugins = results.len(),
        active,
        refused = results.len() - active,
        "initial plugin scan done; running standalone"
    );
    publish(&home, &manager);

    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = terminate.recv() => tracing::info!("SIGTERM received; stopping"),
    }
    manager.stop_all().await;
    publish(&home, &manager);
    status::remove(&home);
    tracing::info!("node stopped");
    Ok(())
}

fn publish(home: &Path, manager: &PluginManager) {
    let status = NodeStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        plugins: manager.records(),
    };
    if let Err(e) = status::write(home, &status) {
        tracing::warn!("could not write the node status file {}: {e}", status::status_file(home).display());
    }
}
