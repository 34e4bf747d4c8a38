//! The CLI's text: the tables and lines printed from the API's typed views.

use crate::admin::contract::{state_and_reason, ClusterView, MemberView};
use crate::cluster::ClusterState;
use crate::plugins::registry::PluginRecord;
use clusterhost_plugin_api::Manifest;

/// A manifest, one field a line.
pub(super) fn print_manifest(m: &Manifest) {
    println!("id:            {}", m.id);
    println!("version:       {}", m.version);
    println!("description:   {}", m.description);
    println!("host_req:      {}", m.host_req);
    println!("api_req:       {}", m.api_req);
    println!("provides:      {}", m.provides.join(", "));
    println!("conflicts:     {}", m.conflicts.join(", "));
    println!("wire_protocol: {}", m.wire_protocol);
}

/// Plugin records as a table.
pub(super) fn print_plugins(records: &[PluginRecord]) {
    println!("{:<16} {:<10} {:<9} {:<24} {:<18} REASON", "ID", "VERSION", "STATE", "FILE", "SIGNER");
    for p in records {
        let version = p.version.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let file = p.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let signer = p.signature.as_ref().map(|s| s.summary()).unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<10} {:<9} {:<24} {:<18} {}",
            p.id.as_deref().unwrap_or("-"),
            version,
            p.state.to_string(),
            file,
            signer,
            p.reason.as_deref().unwrap_or("")
        );
    }
}

/// `name (reason)`, or the name alone.
fn state_text(state: &ClusterState) -> String {
    match state_and_reason(state) {
        (name, Some(reason)) => format!("{name} ({reason})"),
        (name, None) => name.to_string(),
    }
}

/// The reason a member's own clustering state gives (not a start's detail).
fn cluster_reason(state: &ClusterState) -> Option<&str> {
    match state {
        ClusterState::Standalone { reason } => reason.as_deref(),
        ClusterState::Faulted { reason } => Some(reason),
        ClusterState::Starting { .. } | ClusterState::Clustered => None,
    }
}

/// The state and reason columns of one member: its own report, or why
/// that is missing (it did not answer, or the strategy offers no tasks).
fn member_state(detail: Option<&MemberView>) -> (String, String) {
    if let Some(missing) = detail.and_then(|d| d.missing.as_ref()) {
        return (missing.cause.label().to_string(), missing.reason.clone());
    }
    let cluster = detail.and_then(|d| d.cluster.as_ref());
    let state = cluster.map(|c| state_and_reason(c).0).unwrap_or("unknown").to_string();
    let plugin_reason = detail.and_then(|d| d.plugin.as_ref()).and_then(|p| p.reason.as_deref());
    let reason = [cluster.and_then(cluster_reason), plugin_reason].into_iter().flatten().collect::<Vec<_>>().join("; ");
    (state, reason)
}

/// The cluster: this node's line, then one line per member.
pub(super) fn print_cluster(view: &ClusterView) {
    let status = &view.status;
    println!(
        "node {}: {}; clustering {}; strategy {}",
        status.node,
        state_text(&status.state),
        if status.enabled { "enabled" } else { "disabled" },
        status.strategy.as_deref().unwrap_or("none"),
    );
    if let Some(warn) = &view.warn {
        println!("warning: {warn}");
    }
    for p in &status.protection {
        let seen = p.members_seen.map_or("not clustering".to_string(), |n| format!("{n} seen"));
        let what = if p.refusing { "PROTECTED: writes refused" } else { "ok" };
        println!("split-brain protection: cache {} needs {} members ({seen}): {what}", p.cache, p.min_members);
    }
    if status.members.is_empty() {
        println!("no members: this node is not in a cluster right now");
        return;
    }
    println!(
        "{:<20} {:<22} {:<7} {:<10} {:<10} {:<22} REASON",
        "MEMBER", "ADDRESS", "SENIOR", "PLUGIN", "PLUGIN-ST", "STATE"
    );
    for m in &status.members {
        let detail = view.details.iter().find(|d| d.id == m.id);
        let (state, reason) = member_state(detail);
        let plugin_state = detail.and_then(|d| d.plugin.as_ref()).map(|p| p.state.to_string());
        let local = if m.local { " (this node)" } else { "" };
        println!(
            "{:<20} {:<22} {:<7} {:<10} {:<10} {:<22} {}",
            format!("{}{local}", m.id),
            m.address,
            if m.senior { "yes" } else { "" },
            m.plugin_version,
            plugin_state.as_deref().unwrap_or("-"),
            state,
            reason
        );
    }
}
