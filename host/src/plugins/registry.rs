//! The plugin registry: every plugin file the node has seen, its state and
//! the reason for it, and the admission rules a new plugin must pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clusterhost_plugin_api::{Manifest, WireVersion, CLUSTER_STRATEGY};
use semver::Version;
use serde::{Deserialize, Serialize};

/// Where a plugin is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// Seen in the plugins directory, not yet checked.
    Discovered,
    /// Its manifest passed every check made before loading.
    Validated,
    /// The library is mapped and its plugin instance created.
    Loaded,
    /// Started and in service.
    Active,
    /// Being stopped.
    Stopping,
    /// Stopped or replaced by a newer version; its library stays mapped.
    Retired,
    /// Refused before it was started; `reason` says why.
    Rejected,
    /// Failed, panicked or hung while running its code; taken out of service.
    Faulted,
}

impl std::fmt::Display for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// What the node knows about one plugin file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// The file as published (in plugins/, or the path given to `load`).
    pub file: PathBuf,
    /// From the manifest, once read.
    pub id: Option<String>,
    /// From the manifest, once read.
    pub version: Option<Version>,
    /// Current state.
    pub state: PluginState,
    /// Why it is in that state, for Rejected, Faulted and Retired.
    pub reason: Option<String>,
    /// SHA-256 of the file's content, hex.
    pub sha256: Option<String>,
    /// When the state last changed, milliseconds since the Unix epoch.
    pub changed_at_ms: u64,
    /// Who signed the content that was read (`plugins.signature`), once checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<super::signature::SignatureStatus>,
}

impl PluginRecord {
    pub(crate) fn discovered(file: &Path) -> Self {
        PluginRecord {
            file: file.to_owned(),
            id: None,
            version: None,
            state: PluginState::Discovered,
            reason: None,
            sha256: None,
            changed_at_ms: now_ms(),
            signature: None,
        }
    }

    /// "id version" once known, else the file name; used in messages.
    pub fn label(&self) -> String {
        match (&self.id, &self.version) {
            (Some(id), Some(v)) => format!("{id} {v}"),
            _ => self.file.display().to_string(),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The records, one per file, in file order.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    records: BTreeMap<PathBuf, PluginRecord>,
}

impl Registry {
    /// All records, in file order.
    pub fn records(&self) -> Vec<PluginRecord> {
        self.records.values().cloned().collect()
    }

    /// The record for `file`, if any.
    pub fn get(&self, file: &Path) -> Option<&PluginRecord> {
        self.records.get(file)
    }

    /// Creates or replaces the record for its file.
    pub(crate) fn put(&mut self, record: PluginRecord) {
        self.records.insert(record.file.clone(), record);
    }

    /// Moves `file`'s record to `state` with `reason`.
    pub(crate) fn set(&mut self, file: &Path, state: PluginState, reason: Option<String>) {
        if let Some(record) = self.records.get_mut(file) {
            record.state = state;
            record.reason = reason;
            record.changed_at_ms = now_ms();
        }
    }
}

/// The versions a plugin's requirements are checked against.
#[derive(Debug, Clone)]
pub struct HostVersions {
    /// This host's version (`host_req`).
    pub host: Version,
    /// The plugin API version this host was built with (`api_req`).
    pub api: Version,
}

impl HostVersions {
    /// The versions of this build.
    pub fn current() -> Self {
        HostVersions {
            host: Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver"),
            api: Version::parse(clusterhost_plugin_api::API_VERSION).expect("the API crate version is semver"),
        }
    }
}

/// What admitting a plugin means, when it is admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No plugin with this id is active: load it.
    Load,
    /// The same id and version is already active: nothing to do.
    Unchanged,
    /// Replaces the active plugin with this id (an upgrade, or an allowed downgrade).
    Replace { from: Version },
}

/// Why a plugin was refused on the grounds of its manifest. `plugin` and
/// the other plugins are named as "id version".
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    #[error("plugin {plugin} needs plugin API {required}, but this host provides API {provided}; use a build of the plugin made for API {provided}")]
    ApiMismatch { plugin: String, required: String, provided: String },
    #[error("plugin {plugin} needs host {required}, but this host is {provided}; use a build of the plugin made for host {provided}, or upgrade the host")]
    HostMismatch { plugin: String, required: String, provided: String },
    #[error("plugin {plugin} is older than the active {active}; downgrades are refused unless allowed (plugins.allow.downgrade = true)")]
    Downgrade { plugin: String, active: String },
    #[error(
        "plugin {plugin} rejected: it provides {CLUSTER_STRATEGY}, already provided by {active}; remove one of them"
    )]
    StrategyTaken { plugin: String, active: String },
    #[error(
        "plugin {plugin} rejected: it declares a conflict with {entry:?}, and {other} is active; remove one of them"
    )]
    ConflictDeclared { plugin: String, entry: String, other: String },
    #[error(
        "plugin {plugin} rejected: the active plugin {other} declares a conflict with {entry:?}; remove one of them"
    )]
    ConflictedBy { plugin: String, entry: String, other: String },
    #[error(
        "plugin {plugin} speaks wire protocol {new_wire}, the running cluster {running_major}.x ({running} on this node, clustered with {members}): a rolling upgrade cannot mix them; use the split-brain flow (clusterhost cluster disable, replace the plugin on every member, clusterhost cluster enable) or the offline flow (stop every member, replace the plugin, start them); see docs/upgrade.md"
    )]
    WireIncompatible { plugin: String, new_wire: WireVersion, running: String, running_major: u32, members: String },
}

fn label(m: &Manifest) -> String {
    format!("{} {}", m.id, m.version)
}

/// Decides whether `new` may join the `active` plugins, in the order the
/// checks are documented: API, host, same id, cluster strategy, conflicts.
pub fn admit<'a>(
    active: impl IntoIterator<Item = &'a Manifest>,
    new: &Manifest,
    versions: &HostVersions,
    allow_downgrade: bool,
) -> Result<Admission, AdmissionError> {
    let plugin = label(new);
    if !new.api_req.matches(&versions.api) {
        let (required, provided) = (new.api_req.to_string(), versions.api.to_string());
        return Err(AdmissionError::ApiMismatch { plugin, required, provided });
    }
    if !new.host_req.matches(&versions.host) {
        let (required, provided) = (new.host_req.to_string(), versions.host.to_string());
        return Err(AdmissionError::HostMismatch { plugin, required, provided });
    }
    let active: Vec<&Manifest> = active.into_iter().collect();
    let mut admission = Admission::Load;
    if let Some(same) = active.iter().find(|m| m.id == new.id) {
        admission = match new.version.cmp(&same.version) {
            std::cmp::Ordering::Equal => return Ok(Admission::Unchanged),
            std::cmp::Ordering::Less if !allow_downgrade => {
                return Err(AdmissionError::Downgrade { plugin, active: label(same) })
            }
            _ => Admission::Replace { from: same.version.clone() },
        };
    }
    // The plugin being replaced does not count against its successor.
    let others = active.iter().filter(|m| m.id != new.id);
    if new.is_cluster_strategy() {
        if let Some(strategy) = others.clone().find(|m| m.is_cluster_strategy()) {
            return Err(AdmissionError::StrategyTaken { plugin, active: label(strategy) });
        }
    }
    for other in others {
        if let Some(entry) = new.conflict_with(other) {
            return Err(AdmissionError::ConflictDeclared { plugin, entry: entry.to_string(), other: label(other) });
        }
        if let Some(entry) = other.conflict_with(new) {
            return Err(AdmissionError::ConflictedBy { plugin, entry: entry.to_string(), other: label(other) });
        }
    }
    Ok(admission)
}

/// The rolling-upgrade gate: a new version of the cluster strategy that
/// replaces `running` while this node is clustered with `members` (other
/// members, by id) must speak the same wire-protocol major, since the
/// upgraded member has to talk to the members not yet upgraded. Standalone
/// (`members` empty: clustering disabled, the split-brain flow, or a cluster
/// of one) any wire version is allowed.
pub fn check_rolling_wire(running: &Manifest, new: &Manifest, members: &[String]) -> Result<(), AdmissionError> {
    if members.is_empty()
        || running.id != new.id
        || !new.is_cluster_strategy()
        || new.wire_protocol.is_compatible_with(&running.wire_protocol)
    {
        return Ok(());
    }
    Err(AdmissionError::WireIncompatible {
        plugin: label(new),
        new_wire: new.wire_protocol,
        running: format!("{} with wire protocol {}", label(running), running.wire_protocol),
        running_major: running.wire_protocol.major,
        members: members.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, version: &str, provides: &[&str], conflicts: &[&str]) -> Manifest {
        Manifest {
            manifest_format: 1,
            id: id.into(),
            version: Version::parse(version).unwrap(),
            description: "test".into(),
            host_req: "^0.1".parse().unwrap(),
            api_req: "^0.1".parse().unwrap(),
            provides: provides.iter().map(|s| s.to_string()).collect(),
            conflicts: conflicts.iter().map(|s| s.to_string()).collect(),
            wire_protocol: WireVersion { major: 1, minor: 0 },
            metadata: Default::default(),
        }
    }

    fn versions() -> HostVersions {
        HostVersions { host: Version::new(0, 1, 0), api: Version::new(0, 1, 0) }
    }

    #[test]
    fn same_id_equal_is_unchanged_higher_replaces_lower_is_refused_unless_allowed() {
        let active = [manifest("gossip", "1.2.0", &[CLUSTER_STRATEGY], &[])];
        let same = manifest("gossip", "1.2.0", &[CLUSTER_STRATEGY], &[]);
        assert_eq!(admit(&active, &same, &versions(), false), Ok(Admission::Unchanged));
        let newer = manifest("gossip", "1.3.0", &[CLUSTER_STRATEGY], &[]);
        assert_eq!(admit(&active, &newer, &versions(), false), Ok(Admission::Replace { from: Version::new(1, 2, 0) }));
        let older = manifest("gossip", "1.1.0", &[CLUSTER_STRATEGY], &[]);
        let err = admit(&active, &older, &versions(), false).unwrap_err();
        assert!(matches!(err, AdmissionError::Downgrade { .. }), "{err}");
        assert!(err.to_string().contains("plugins.allow.downgrade"), "{err}");
        assert_eq!(admit(&active, &older, &versions(), true), Ok(Admission::Replace { from: Version::new(1, 2, 0) }));
    }

    #[test]
    fn a_second_strategy_is_refused_naming_the_active_one() {
        let active = [manifest("gossip", "1.2.0", &[CLUSTER_STRATEGY], &[])];
        let redis = manifest("redis", "0.1.0", &[CLUSTER_STRATEGY], &[]);
        let err = admit(&active, &redis, &versions(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin redis 0.1.0 rejected: it provides cluster-strategy, already provided by gossip 1.2.0; remove one of them"
        );
    }

    #[test]
    fn conflicts_are_honoured_in_both_directions() {
        let active = [manifest("clustering", "1.0.0", &[], &["enterprise"])];
        let enterprise = manifest("enterprise", "1.0.0", &[], &[]);
        assert!(matches!(admit(&active, &enterprise, &versions(), false), Err(AdmissionError::ConflictedBy { .. })));
        let active = [manifest("enterprise", "1.0.0", &[], &[])];
        let clustering = manifest("clustering", "1.0.0", &[], &["enterprise"]);
        assert!(matches!(
            admit(&active, &clustering, &versions(), false),
            Err(AdmissionError::ConflictDeclared { .. })
        ));
    }

    #[test]
    fn requirements_are_checked_before_anything_else() {
        let mut m = manifest("x", "1.0.0", &[], &[]);
        m.api_req = "^0.3".parse().unwrap();
        let err = admit([], &m, &versions(), false).unwrap_err();
        assert!(err.to_string().contains("needs plugin API ^0.3, but this host provides API 0.1.0"), "{err}");
        m.api_req = "^0.1".parse().unwrap();
        m.host_req = ">=2".parse().unwrap();
        let err = admit([], &m, &versions(), false).unwrap_err();
        assert!(err.to_string().contains("needs host >=2, but this host is 0.1.0"), "{err}");
    }

    #[test]
    fn a_strategy_of_another_wire_major_is_refused_only_while_clustered_with_others() {
        let running = manifest("gossip", "0.1.0", &[CLUSTER_STRATEGY], &[]);
        let mut v2 = manifest("gossip", "0.2.0", &[CLUSTER_STRATEGY], &[]);
        v2.wire_protocol = WireVersion { major: 2, minor: 0 };
        let others = vec!["n2".to_string(), "n3".to_string()];
        let err = check_rolling_wire(&running, &v2, &others).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin gossip 0.2.0 speaks wire protocol 2.0, the running cluster 1.x (gossip 0.1.0 with wire protocol 1.0 on this node, clustered with n2, n3): a rolling upgrade cannot mix them; use the split-brain flow (clusterhost cluster disable, replace the plugin on every member, clusterhost cluster enable) or the offline flow (stop every member, replace the plugin, start them); see docs/upgrade.md"
        );
        // Standalone (the split-brain flow): allowed.
        assert_eq!(check_rolling_wire(&running, &v2, &[]), Ok(()));
        // A compatible minor: allowed while clustered.
        let mut v1_1 = manifest("gossip", "0.2.0", &[CLUSTER_STRATEGY], &[]);
        v1_1.wire_protocol = WireVersion { major: 1, minor: 1 };
        assert_eq!(check_rolling_wire(&running, &v1_1, &others), Ok(()));
        // Not a strategy: the wire version means nothing to the cluster.
        let hello = manifest("hello", "0.1.0", &[], &[]);
        let mut hello2 = manifest("hello", "0.2.0", &[], &[]);
        hello2.wire_protocol = WireVersion { major: 2, minor: 0 };
        assert_eq!(check_rolling_wire(&hello, &hello2, &others), Ok(()));
    }
}
