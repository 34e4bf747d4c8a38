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

/// Writes the status atomically (write to a temporary name, then rename).
pub fn write(home: &Path, status: &NodeStatus) -> std::io::Result<()> {
    let file = crate::home::status_file(home);
    let dir = file.parent().expect("the status file has a parent directory");
    std::fs::create_dir_all(dir)?;
    // Unique per write: several tasks of one node may publish at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".node.json.{}.{n}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &file)
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
    if !process_alive(status.pid) {
        return Err(StatusError::Stale { home: home.to_owned(), file, pid: status.pid });
    }
    Ok(status)
}

fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence and permission without sending anything.
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}
