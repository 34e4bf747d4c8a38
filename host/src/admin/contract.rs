//! The admin API's contract: every body it answers, as the types the
//! server (`api`), the console, the client and the CLI share, so a field
//! is named in one place. docs/admin.md documents the same JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::cluster::state_and_reason;
use crate::cluster::{CacheStats, ClusterState, ClusterStatus};
use crate::plugins::outcome::RefusalCause;
use crate::plugins::registry::{PluginRecord, PluginState};

/// `GET /api/events[?after=SEQ]` as JSON: the history after a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsView {
    /// The node whose log this is.
    pub node: String,
    /// The events after the number asked for, oldest first.
    pub events: Vec<crate::event_log::NodeEvent>,
    /// The number of the last event in `events` (or the number asked
    /// for, when none came after it): what to pass as `?after=` next.
    pub last_seq: u64,
    /// Events after the number asked for that the history no longer holds.
    pub missed: u64,
}

/// The data of an event stream's `missed`, `lagged` and `closing` events:
/// events the reader did not get, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamGap {
    /// How many events the reader did not get.
    pub missed: u64,
    /// Why (and what to do).
    pub reason: String,
}

/// `GET /api/samples`: this node's recent history, one sample per
/// interval, oldest first (what the console's charts draw).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplesView {
    /// The time between two samples, in milliseconds.
    pub interval_ms: u64,
    /// The samples kept (at most 10 minutes' worth).
    pub samples: Vec<Sample>,
}

/// One sample of [`SamplesView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was taken, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Members of the cluster this node sees (0 while it is standalone).
    pub members: u32,
    /// Cache operations counted on this node since the sample before
    /// (reads that hit or missed, and atomic operations that conflicted),
    /// per second.
    pub cache_ops_per_second: u64,
    /// Plugins replaced (hot upgrades) on this node since the sample before.
    pub plugin_swaps: u32,
}

/// `GET /api/cluster`: the status, each member's own state and strategy plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's view of the cluster: the members, their plugin versions
    /// and the senior come from the strategy, never from the members' answers.
    #[serde(flatten)]
    pub status: ClusterStatus,
    /// Each member as it reports itself: this node's own detail, computed
    /// here, and every other member's, asked of it (standalone: this node only).
    pub details: Vec<MemberView>,
    /// Set when the members run different strategy plugin versions.
    pub warn: Option<String>,
}

/// One member's own report, in a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// The member id.
    pub id: String,
    /// Its clustering state and reason, as it reports them.
    pub cluster: Option<ClusterState>,
    /// Its strategy plugin: version, state and reason.
    pub plugin: Option<PluginSummary>,
    /// Why its own report is missing (never for this node, which reports
    /// itself); none when it answered.
    pub missing: Option<DetailMissing>,
}

/// Why a member's own report is missing from a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetailMissing {
    /// What kept it: no answer in time, no tasks, or an error.
    pub cause: MissingCause,
    /// What happened and what to do, as a sentence.
    pub reason: String,
}

/// The kinds of [`DetailMissing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingCause {
    /// The member did not answer by the status's deadline.
    TimedOut,
    /// The strategy does not offer tasks, so no member can be asked.
    Unsupported,
    /// The member could not be asked, or its answer was an error.
    Error,
}

impl DetailMissing {
    /// The member did not answer within `wait`.
    pub fn timed_out(wait: std::time::Duration) -> Self {
        let reason = format!(
            "did not answer within {}; check that the member is running and reachable",
            crate::text::duration(wait)
        );
        DetailMissing { cause: MissingCause::TimedOut, reason }
    }

    /// The strategy offers no tasks to ask a member with.
    pub fn unsupported() -> Self {
        let reason = "detail unavailable: the strategy does not offer tasks".to_string();
        DetailMissing { cause: MissingCause::Unsupported, reason }
    }

    /// Asking the member failed with `error`.
    pub fn error(error: &str) -> Self {
        let reason = format!("could not be asked: {error}; check that the member is running");
        DetailMissing { cause: MissingCause::Error, reason }
    }
}

impl MissingCause {
    /// The state the CLI and the console show for such a member: without
    /// tasks, all this node knows is that the strategy lists it.
    pub fn label(self) -> &'static str {
        match self {
            MissingCause::TimedOut => "no-answer",
            MissingCause::Unsupported => "member",
            MissingCause::Error => "error",
        }
    }
}

/// A plugin's version, state and reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginSummary {
    /// From its manifest, once read.
    pub id: Option<String>,
    /// From its manifest, once read.
    pub version: Option<String>,
    /// Where it is in its life.
    pub state: PluginState,
    /// Why it is in that state.
    pub reason: Option<String>,
}

/// `GET /api/node`: one member's own view of itself, also what every
/// member answers the node-detail task with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDetail {
    /// The member id.
    pub node: String,
    /// Host version.
    pub version: String,
    /// Its clustering state and reason.
    pub cluster: ClusterState,
    /// Whether clustering is enabled there.
    pub enabled: bool,
    /// `id version` of its strategy plugin.
    pub strategy: Option<String>,
    /// Its caches, as held on that member.
    pub caches: Vec<CacheStats>,
    /// Its plugin records.
    pub plugins: Vec<PluginRecord>,
}

/// `GET /api/properties`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertiesView {
    /// The file's path.
    pub file: PathBuf,
    /// Every key with the value in force (file, flags and environment, defaults).
    pub effective: BTreeMap<String, String>,
    /// Keys read only at start whose stored value differs from the one in
    /// force: key → the stored value, used from the next start.
    pub pending_restart: BTreeMap<String, String>,
    /// The file's text (empty if it does not exist).
    pub text: String,
}

// The answers below are JSON objects whose keys serde_json has always
// written in sorted order; their fields are declared in that order too.

/// `POST /api/cluster/enable` and `/disable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switched {
    /// What clustering was switched to.
    pub enabled: bool,
    /// This node's status right after.
    pub status: ClusterStatus,
}

/// One event of `GET /api/caches/C/events` (its SSE `data:`; the SSE
/// `event:` is the kind). Keys and values are the API's strings; an entry
/// written as other bytes (not a postcard string, e.g. by an embedding
/// server's typed cache) shows them as lossy UTF-8 with `raw: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEventView {
    pub cache: String,
    /// `added`, `updated`, `removed` (`expired`, `evicted` with bounded caches).
    pub kind: String,
    pub key: String,
    /// The new value (not for `removed`, nor with `?values=false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The write's version (the removed entry's for `removed`; 0 when the
    /// strategy did not say).
    pub version: u64,
    /// The member the change came from.
    pub origin: String,
    /// Whether the key or value were not API strings (shown lossily).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

/// The last event of a `GET /api/caches/C/events` stream the node ended:
/// `dropped` (the reader did not keep up) or `closing` (the node stops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStreamEnd {
    /// Events this reader missed (for `dropped`).
    pub missed: u64,
    pub reason: String,
}

/// `GET` and `PUT /api/caches/C/K`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheValue {
    /// The cache name.
    pub cache: String,
    /// The key.
    pub key: String,
    /// The value stored under it.
    pub value: String,
    /// The entry's version (it changes on every write of the key), when
    /// the strategy offers atomic operations: what `?if-version=N` expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `GET /api/caches/C`: the first keys of a cache (text keys in order,
/// then the others by their bytes), with when each expires as this
/// member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntries {
    /// The cache name.
    pub cache: String,
    /// How many keys it holds (the whole cluster's, while clustered).
    pub total: u64,
    /// The first `?limit=N` keys (100 unless asked).
    pub entries: Vec<CacheEntryView>,
    /// Whether the values were read (`?values`): a read is a use, which
    /// counts as a hit and restarts an entry's max idle time.
    pub values: bool,
    /// Why the entries carry no expiry times, when they do not (the
    /// strategy does not tell them, e.g. one built before API 0.1.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times_unknown: Option<String>,
}

/// One entry of [`CacheEntries`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntryView {
    /// The key as text, or `0x` and its bytes in hex when it is not a
    /// text key (an application's typed key).
    pub key: String,
    /// Whether `key` is the hex of a key that is not text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary: bool,
    /// When it expires (ms since the epoch); absent: never, or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// How long until then, as of the answer (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_left_ms: Option<u64>,
    /// With `?values`: the value as text (cut to 256 characters), absent
    /// for a value that is not text or an entry gone meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// With `?values`: bytes of key and value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// `DELETE /api/caches/C/K`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRemoved {
    /// The cache name.
    pub cache: String,
    /// The key.
    pub key: String,
    /// Always true: a missing key is a 404.
    pub removed: bool,
}

/// What became of an uploaded plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadOutcome {
    /// A new plugin file, loaded and active.
    Installed,
    /// It replaced a file of that name, and the new content is active.
    Replaced,
    /// The same content is already active under that name; nothing changed.
    Unchanged,
    /// Written, but the node has not reported on it in time (HTTP 202).
    Written,
    /// Written, and the node refused it (an error answer, HTTP 422).
    Refused,
}

/// `POST /api/plugins?name=X.so`, when the file was not refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uploaded {
    /// With [`UploadOutcome::Written`]: what to look at next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What became of the file.
    pub outcome: UploadOutcome,
    /// The file's record (none yet when only written).
    pub plugin: Option<PluginRecord>,
}

/// `DELETE /api/plugins/X.so`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    /// The file's record after the node stopped it (or as it was).
    pub plugin: Option<PluginRecord>,
    /// The file name removed.
    pub removed: String,
}

/// `PUT /api/properties`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertiesReplaced {
    /// When the node applies what.
    pub note: String,
    /// Keys the old file set and the new one does not (back to their defaults).
    pub reset: Vec<String>,
    /// The keys the new file sets that apply from the next start only.
    pub restart_keys: Vec<String>,
    /// Unknown keys, with file and line.
    pub warnings: Vec<String>,
    /// The file written.
    pub written: PathBuf,
}

/// `PATCH /api/properties`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertiesPatched {
    /// When the node applies what.
    pub note: String,
    /// Keys removed from the file (back to their defaults).
    pub removed: Vec<String>,
    /// The keys changed that apply from the next start only.
    pub restart_keys: Vec<String>,
    /// Keys set.
    pub set: Vec<String>,
    /// Unknown keys, with file and line.
    pub warnings: Vec<String>,
    /// The file written.
    pub written: PathBuf,
}

/// Why the node refused an uploaded plugin, in terms a client acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Refused before it ran, failed in its start, or faulted.
    pub cause: RefusalCause,
    /// Whether the version already running under that name stays in service.
    pub kept_running: bool,
}

/// Every error answer (4xx, 5xx): `error` says what happened, to what, and
/// what to do; a refused upload adds its outcome, record and refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The message.
    pub error: String,
    /// [`UploadOutcome::Refused`] for a refused upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<UploadOutcome>,
    /// The refused file's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRecord>,
    /// Why the upload was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

/// `GET /healthz` and `GET /readyz`: a state and why, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `serving` (healthz), `ready` or `not_ready` (readyz).
    pub state: HealthState,
    /// Why (readyz always says; healthz has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The state in a [`Health`] answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// The process serves (`/healthz`, always 200).
    Serving,
    /// Ready for client traffic (`/readyz` 200).
    Ready,
    /// Not ready (`/readyz` 503).
    NotReady,
}

impl std::fmt::Display for UploadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UploadOutcome::Installed => "installed",
            UploadOutcome::Replaced => "replaced",
            UploadOutcome::Unchanged => "unchanged",
            UploadOutcome::Written => "written",
            UploadOutcome::Refused => "refused",
        })
    }
}
