//! The cluster manager's public types: its errors, the node's clustering
//! state and status, and the startup settings.

use std::time::Duration;

use serde::Serialize;

/// The cluster-wide setting that switches clustering on and off.
pub const CLUSTERING_ENABLED: &str = "clustering.enabled";

/// Why a cluster operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    /// The strategy answered an error, or panicked, in operation `op`.
    #[error("cluster strategy {plugin} {} in {op}: {message}", if *panicked { "panicked" } else { "failed" })]
    Strategy { plugin: String, op: &'static str, panicked: bool, message: String },
    /// The strategy does not offer this capability (tasks, locks).
    #[error("cluster strategy {plugin} does not support {op}: {message}; use a strategy that does, or do without it")]
    Unsupported { plugin: String, op: &'static str, message: String },
    /// The strategy does not offer `what` (it reports no such capability,
    /// e.g. a plugin built before the contract had it, in API `since`), so
    /// `op` was not sent.
    #[error("strategy {plugin} has no {what}, so {op} cannot run; upgrade it to a version that offers them (plugin API {since} or later), or use another strategy")]
    Lacks { plugin: String, what: &'static str, op: &'static str, since: &'static str },
    /// `update` of a key lost the race to other writers `attempts` times in a row.
    #[error("cache {cache}: update gave up after {attempts} attempts, each lost to another write of the same key; retry later, or write the key less often from many members")]
    Contended { cache: String, attempts: u32 },
    /// A typed cache's key or value did not encode or decode.
    #[error("cache {cache}: could not encode or decode a key or value: {detail}; every member must use the same types for a cache")]
    Codec { cache: String, detail: String },
    /// A typed task's request or reply did not encode or decode.
    #[error("task {task}: could not encode or decode its request or reply: {detail}")]
    TaskCodec { task: String, detail: String },
    /// Split-brain protection: this node sees fewer members than `rule` asks for `cache`.
    #[error("cache {cache} is protected against split brain ({rule}) and this node sees {seen} member(s): {op} refused until it sees at least {min} (a partition healing, members coming back)")]
    Protected { cache: String, rule: String, min: u32, seen: u32, op: &'static str },
    /// The manager's actor has ended.
    #[error("the cluster manager has stopped (the node is shutting down)")]
    Stopped,
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

/// A clustering state as its name and reason, as the console, the CLI and
/// the event log show it: `starting` gives its detail as the reason.
pub fn state_and_reason(state: &ClusterState) -> (&'static str, Option<&str>) {
    match state {
        ClusterState::Standalone { reason } => ("standalone", reason.as_deref()),
        ClusterState::Starting { detail, .. } => ("starting", Some(detail.as_str())),
        ClusterState::Clustered => ("clustered", None),
        ClusterState::Faulted { reason } => ("faulted", Some(reason.as_str())),
    }
}

/// A snapshot of the node's clustering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// Where it stands.
    pub state: ClusterState,
    /// Whether clustering is enabled (cluster-wide when a strategy is loaded).
    pub enabled: bool,
    /// `id version` of the loaded strategy plugin.
    pub strategy: Option<String>,
    /// The members in join order (empty while standalone).
    pub members: Vec<MemberStatus>,
    /// The senior member (none while standalone).
    pub senior: Option<String>,
    /// Split-brain protection: the protected caches and whether each is refusing now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protection: Vec<super::protection::ProtectedCache>,
}

/// One member in a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MemberStatus {
    /// The member's name.
    pub id: String,
    /// Where the strategy reaches it (its own notation, e.g. `host:port`).
    pub address: String,
    /// When it joined, ms since the epoch.
    pub started_at_ms: u64,
    /// The strategy plugin version it runs.
    pub plugin_version: String,
    /// Whether it is the senior member.
    pub senior: bool,
    /// Whether it is this node.
    pub local: bool,
}

/// The startup and execution settings (from clusterhost.properties).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// How long a strategy waits after it arrives before joining (`cluster.startup.delay.seconds`).
    pub startup_delay: Duration,
    /// Retries after a failed join (`cluster.startup.retry.count`).
    pub retry_count: u32,
    /// Time between join attempts (`cluster.startup.retry.seconds`).
    pub retry_interval: Duration,
    /// The budget of one strategy call: a join, a leave, a task (`cluster.max.execution.seconds`).
    pub max_execution: Duration,
    /// Split-brain protection (`cache.<name>.min.members`, `cache.protection.reads`); applies at once.
    pub protection: super::protection::Protection,
    /// Bounded caches (`cache.<name>.max.entries`, `.max.bytes`, `.ttl.ms`,
    /// `.max.idle.ms`); applies at once, on every member that has it.
    pub bounds: std::collections::BTreeMap<String, super::bounds::BoundsSetting>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            startup_delay: Duration::from_secs(5),
            retry_count: 1,
            retry_interval: Duration::from_secs(10),
            max_execution: Duration::from_secs(30),
            protection: Default::default(),
            bounds: Default::default(),
        }
    }
}

/// A strategy taken out of service: the plugin manager faults its plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultReport {
    /// The plugin id of the strategy.
    pub plugin: String,
    /// Why it was taken out of service.
    pub reason: String,
}
