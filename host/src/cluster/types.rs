//! The cluster manager's public types: its errors, the node's clustering
//! state and status, and the startup settings.

use std::time::Duration;

use serde::Serialize;

/// The cluster-wide setting that switches clustering on and off.
pub const CLUSTERING_ENABLED: &str = "clustering.enabled";

/// Why a cluster operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("cluster strategy {plugin} {} in {op}: {message}", if *panicked { "panicked" } else { "failed" })]
    Strategy { plugin: String, op: &'static str, panicked: bool, message: String },
    #[error("cache {cache}: could not encode or decode a key or value: {detail}; every member must use the same types for a cache")]
    Codec { cache: String, detail: String },
    #[error("task {task}: could not encode or decode its request or reply: {detail}")]
    TaskCodec { task: String, detail: String },
    #[error("the cluster manager has stopped (the node is shutting down)")]
    Stopped,
    #[error("lock {name}: not acquired within {timeout:?}")]
    LockTimeout { name: String, timeout: Duration },
}

/// Where the node stands, for status pages and `clusterhost cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ClusterState {
    /// Running alone; `reason` says why when it is not simply "no strategy".
    Standalone { reason: Option<String> },
    /// Waiting before attempt `attempt` of `attempts` (`next_in_ms` from when this was set).
    Starting { attempt: u32, attempts: u32, next_in_ms: u64, detail: String },
    /// A member of the cluster.
    Clustered,
    /// The strategy was taken out of service.
    Faulted { reason: String },
}

/// A snapshot of the node's clustering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    pub node: String,
    pub state: ClusterState,
    /// Whether clustering is enabled (cluster-wide when a strategy is loaded).
    pub enabled: bool,
    /// `id version` of the loaded strategy plugin.
    pub strategy: Option<String>,
    pub members: Vec<MemberStatus>,
    pub senior: Option<String>,
}

/// One member in a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MemberStatus {
    pub id: String,
    pub address: String,
    pub started_at_ms: u64,
    pub plugin_version: String,
    pub senior: bool,
    pub local: bool,
}

/// The startup and execution settings (from clusterhost.properties).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub startup_delay: Duration,
    pub retry_count: u32,
    pub retry_interval: Duration,
    pub max_execution: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            startup_delay: Duration::from_secs(5),
            retry_count: 1,
            retry_interval: Duration::from_secs(10),
            max_execution: Duration::from_secs(30),
        }
    }
}

/// A strategy taken out of service: the plugin manager faults its plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultReport {
    pub plugin: String,
    pub reason: String,
}
