//! `GET /metrics`: this node's figures in the Prometheus text format
//! (version 0.0.4), served only while `cluster.metrics.enabled` is true.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::api::ApiError;
use super::AdminState;
use crate::cluster::{ClusterState, LATENCY_BUCKETS};
use crate::plugins::registry::PluginState;

const STATES: [PluginState; 8] = [
    PluginState::Discovered,
    PluginState::Validated,
    PluginState::Loaded,
    PluginState::Active,
    PluginState::Stopping,
    PluginState::Retired,
    PluginState::Rejected,
    PluginState::Faulted,
];

/// A label value, escaped as the text format requires.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one metric family: HELP, TYPE, then the samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn one(value: f64) -> Vec<(String, f64)> {
    vec![(String::new(), value)]
}

pub(super) async fn metrics(State(state): State<AdminState>) -> Response {
    let ctx = state.ctx();
    if !ctx.values.properties().metrics_enabled {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "metrics are off on this node; set cluster.metrics.enabled = true in {} (PUT /api/properties) to serve /metrics",
                ctx.properties_file.display()
            ),
        )
        .into_response();
    }
    let status = ctx.cluster.status();
    let mut out = String::new();
    let clustered = matches!(status.state, ClusterState::Clustered);
    family(
        &mut out,
        "clusterhost_cluster_members",
        "gauge",
        "Members of the cluster as this node sees them (1 while standalone: itself).",
        &one(if clustered { status.members.len() as f64 } else { 1.0 }),
    );
    family(
        &mut out,
        "clusterhost_cluster_senior",
        "gauge",
        "1 if this node is the senior member (always while standalone).",
        &one(if ctx.cluster.is_senior() { 1.0 } else { 0.0 }),
    );
    family(
        &mut out,
        "clusterhost_cluster_clustered",
        "gauge",
        "1 while this node is a cluster member.",
        &one(if clustered { 1.0 } else { 0.0 }),
    );
    family(
        &mut out,
        "clusterhost_cluster_enabled",
        "gauge",
        "1 while clustering is enabled (cluster-wide).",
        &one(if status.enabled { 1.0 } else { 0.0 }),
    );

    let caches = ctx.cluster.caches().stats().await;
    let per_cache = |f: &dyn Fn(&crate::cluster::CacheStats) -> u64| -> Vec<(String, f64)> {
        caches.iter().map(|c| (format!("{{cache=\"{}\"}}", label(&c.name)), f(c) as f64)).collect()
    };
    family(
        &mut out,
        "clusterhost_cache_entries",
        "gauge",
        "Entries this member holds, by cache.",
        &per_cache(&|c| c.entries),
    );
    family(
        &mut out,
        "clusterhost_cache_bytes",
        "gauge",
        "Bytes of keys and values this member holds, by cache.",
        &per_cache(&|c| c.bytes),
    );
    family(
        &mut out,
        "clusterhost_cache_hits_total",
        "counter",
        "Reads on this member that found the key, by cache.",
        &per_cache(&|c| c.hits),
    );
    family(
        &mut out,
        "clusterhost_cache_misses_total",
        "counter",
        "Reads on this member that did not find the key, by cache.",
        &per_cache(&|c| c.misses),
    );
    family(
        &mut out,
        "clusterhost_cache_cas_conflicts_total",
        "counter",
        "Atomic operations on this member whose condition did not hold (put-if-absent on a present key, replace-if or remove-if on another entry), by cache.",
        &per_cache(&|c| c.conflicts),
    );
    let (evicted, expired) = ctx.cluster.removed_by_bounds();
    family(
        &mut out,
        "clusterhost_cache_evictions_total",
        "counter",
        "Entries this member evicted by a cache's size bound (cache.NAME.max.entries / max.bytes), every cache.",
        &one(evicted as f64),
    );
    family(
        &mut out,
        "clusterhost_cache_expiries_total",
        "counter",
        "Entries this member removed as expired (cache.NAME.ttl.ms / max.idle.ms, or a put's own TTL), every cache.",
        &one(expired as f64),
    );
    let (events, listener_panics) = ctx.cluster.entry_event_counts();
    let per_listened = |f: &dyn Fn(&crate::cluster::EntryEventCounts) -> u64| -> Vec<(String, f64)> {
        events.iter().map(|(name, c)| (format!("{{cache=\"{}\"}}", label(name)), f(c) as f64)).collect()
    };
    family(
        &mut out,
        "clusterhost_cache_entry_events_delivered_total",
        "counter",
        "Entry events put into a listener's queue on this member, by cache (caches that had a listener).",
        &per_listened(&|c| c.delivered),
    );
    family(
        &mut out,
        "clusterhost_cache_entry_events_dropped_total",
        "counter",
        "Entry events dropped on this member because a listener's queue was full (it did not keep up), by cache.",
        &per_listened(&|c| c.dropped),
    );
    family(
        &mut out,
        "clusterhost_cache_entry_listener_panics_total",
        "counter",
        "Entry listener callbacks on this member that panicked (each kept receiving).",
        &one(listener_panics as f64),
    );

    let tasks = ctx.cluster.task_stats();
    family(
        &mut out,
        "clusterhost_tasks_sent_total",
        "counter",
        "Fire-and-forget cluster tasks sent by this node.",
        &one(tasks.sent as f64),
    );
    family(
        &mut out,
        "clusterhost_task_replies_total",
        "counter",
        "Replies to the synchronous cluster tasks this node called, by outcome.",
        &[
            ("{outcome=\"value\"}".to_string(), tasks.values as f64),
            ("{outcome=\"error\"}".to_string(), tasks.errors as f64),
            ("{outcome=\"timed_out\"}".to_string(), tasks.timed_out as f64),
        ],
    );
    let mut latency: Vec<(String, f64)> = LATENCY_BUCKETS
        .iter()
        .zip(&tasks.latency_buckets)
        .map(|(bound, count)| (format!("_bucket{{le=\"{bound}\"}}"), *count as f64))
        .collect();
    latency.push(("_bucket{le=\"+Inf\"}".to_string(), tasks.calls as f64));
    latency.push(("_sum".to_string(), tasks.latency_seconds_sum));
    latency.push(("_count".to_string(), tasks.calls as f64));
    family(
        &mut out,
        "clusterhost_task_call_duration_seconds",
        "histogram",
        "How long the synchronous cluster task calls of this node took.",
        &latency,
    );

    let records = ctx.plugins.records();
    let by_state: Vec<(String, f64)> = STATES
        .iter()
        .map(|s| (format!("{{state=\"{s}\"}}"), records.iter().filter(|r| r.state == *s).count() as f64))
        .collect();
    family(&mut out, "clusterhost_plugins", "gauge", "Plugin files this node has seen, by state.", &by_state);
    let info: Vec<(String, f64)> = records
        .iter()
        .map(|r| {
            let file = r.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let id = r.id.clone().unwrap_or_default();
            let version = r.version.as_ref().map(|v| v.to_string()).unwrap_or_default();
            (
                format!(
                    "{{file=\"{}\",id=\"{}\",version=\"{}\",state=\"{}\"}}",
                    label(&file),
                    label(&id),
                    label(&version),
                    r.state
                ),
                1.0,
            )
        })
        .collect();
    family(
        &mut out,
        "clusterhost_plugin_info",
        "gauge",
        "One sample per plugin file, with its id, version and state.",
        &info,
    );
    let stats: Vec<(String, f64)> = ctx
        .cluster
        .strategy_stats()
        .into_iter()
        .map(|(name, value)| (format!("{{name=\"{}\"}}", label(&name)), value as f64))
        .collect();
    family(&mut out, "clusterhost_strategy_counter", "gauge", "The active strategy's own named counters.", &stats);

    let conns = state.shared.connections.stats();
    family(
        &mut out,
        "clusterhost_admin_connections",
        "gauge",
        "Connections open to the admin API (this one included).",
        &one(conns.open as f64),
    );
    family(
        &mut out,
        "clusterhost_admin_connections_refused_total",
        "counter",
        "Admin connections closed at once because a limit was reached, by limit.",
        &[
            ("{limit=\"total\"}".to_string(), conns.refused_total as f64),
            ("{limit=\"per_address\"}".to_string(), conns.refused_per_address as f64),
        ],
    );
    family(
        &mut out,
        "clusterhost_admin_header_timeouts_total",
        "counter",
        "Admin connections closed at admin.header.timeout.seconds before their first whole request.",
        &one(conns.header_timeouts as f64),
    );
    family(
        &mut out,
        "clusterhost_admin_accept_errors_total",
        "counter",
        "Failed accepts on the admin port (out of file descriptors, say).",
        &one(conns.accept_errors as f64),
    );

    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
