//! The node's status file, `<home>/run/node.json`: what a running node
//! reports about itself for `clusterhost plugins list` and for tests, until
//! the admin API serves the same over HTTP.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plugins::registry::PluginRecord;

/// What a running node writes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node process.
    pub pid: u32,
    /// Host version.
    pub version: String,
    /// Every plugin file the node has seen.
    pub plugins: Vec<PluginRecord>,
    /// The node's clustering.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

/// Why a node's status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "no node is running with home {home}: {file} does not exist; start one with `clusterhost run --home {home}`"
    )]
    NotRunning { home: PathBuf, file: PathBuf },
    #[error(
        "the node that wrote {file} (pid {pid}) is no longer running; start one with `clusterhost run --home {home}`"
    )]
    Stale { home: PathBuf, file: PathBuf, pid: u32 },
    #[error("could not read {file}: {detail}")]
    Unreadable { file: PathBuf, detail: String },
}

/// Writes the status atomically (several tasks of one node may publish at
/// once); not synced to disk: it describes a running process only.
pub fn write(home: &Path, status: &NodeStatus) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    crate::atomic_file::replace(&crate::home::status_file(home), &json, false)
}

/// Removes the status file (on shutdown).
pub fn remove(home: &Path) {
    let _ = std::fs::remove_file(crate::home::status_file(home));
}

/// Reads the status of the node running with home `home`.
pub fn read(home: &Path) -> Result<NodeStatus, StatusError> {
    let file = crate::home::status_file(home);
    let bytes = std::fs::read(&file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StatusError::NotRunning { home: home.to_owned(), file: file.clone() },
        _ => StatusError::Unreadable { file: file.clone(), detail: e.to_string() },
    })?;
    let status: NodeStatus = serde_json::from_slice(&bytes)
        .map_err(|e| StatusError::Unreadable { file: file.clone(), detail: e.to_string() })?;
    if !crate::process::is_running(status.pid) {
        return Err(StatusError::Stale { home: home.to_owned(), file, pid: status.pid });
    }
    Ok(status)
}
