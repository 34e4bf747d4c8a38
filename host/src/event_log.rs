//! The node's event log: what happened on this node (members joining and
//! leaving, the senior changing, clustering states, plugins loaded, refused,
//! replaced, faulted and removed, settings, drains), each event numbered and
//! timed, in a bounded history, and pushed live to subscribers (the admin
//! API's `/api/events` stream). Each kind is recorded at the one place where
//! it happens (the cluster actor, the plugin manager, the properties
//! watcher, the admin API's drains).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use clusterhost_plugin_api::sync::lock;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::plugins::outcome::RefusalCause;
use crate::text::{clip_at, duration_ms, local_time};

/// How many events the history keeps.
pub const HISTORY_EVENTS: usize = 1000;
/// How many bytes (of their JSON) the history keeps at most.
pub const HISTORY_BYTES: usize = 512 * 1024;
/// How many characters of a reason or value an event keeps.
pub const KEPT_CHARS: usize = 1000;
/// How many live events a subscriber may fall behind before it is dropped.
pub const SUBSCRIBER_LAG: usize = 256;

/// One event: its number on this node (from 1, no gaps), when, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// Its sequence number on this node: 1, 2, 3…; a stream resumes after one.
    pub seq: u64,
    /// When it was recorded, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened, in a line for a person ([`What::summary`]), so the
    /// console and the CLI show the same words.
    #[serde(default)]
    pub text: String,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// What happened, by kind (`"kind"` in JSON). Reasons and values are cut
/// to [`KEPT_CHARS`] characters before they are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// A member joined the cluster; `local` when it is this node.
    MemberJoined { member: String, local: bool },
    /// A member left the cluster; `local` when it is this node.
    MemberLeft { member: String, local: bool },
    /// `member` became the senior member.
    SeniorChanged { member: String, local: bool },
    /// This node's clustering state changed (`starting`, `clustered`,
    /// `standalone`, `faulted`), with its reason.
    Clustering { state: String, reason: Option<String> },
    /// A plugin came into service.
    PluginLoaded { plugin: String, version: String },
    /// A plugin was replaced by another version of it (a hot upgrade).
    PluginReplaced { plugin: String, from: String, to: String },
    /// A plugin file was refused (`cause`: rejected, failed_in_start,
    /// faulted); `kept_running` when the version it was to replace still runs.
    PluginRefused { file: String, cause: RefusalCause, reason: String, kept_running: bool },
    /// A running plugin was taken out of service.
    PluginFaulted { plugin: String, reason: String },
    /// A plugin was stopped because its file was removed (or it was detached).
    PluginRemoved { plugin: String, version: String, reason: String },
    /// A cluster-wide setting changed.
    SettingChanged { key: String, value: String },
    /// This node's properties file was reloaded with changes.
    PropertiesReloaded { file: String },
    /// An upload asked this node to drain first: not ready from now, and it
    /// acts after `wait_ms`.
    DrainStarted { what: String, wait_ms: u64 },
    /// That drain is over (the upload was answered or dropped).
    DrainEnded { what: String, lasted_ms: u64 },
}

impl What {
    /// The kind as JSON names it (`member_joined`).
    pub fn kind(&self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v["kind"].as_str().map(str::to_string)).unwrap_or_default()
    }

    /// One line for a person: `n2 joined the cluster`.
    pub fn summary(&self) -> String {
        let this = |local: &bool| if *local { " (this node)" } else { "" };
        match self {
            What::MemberJoined { member, local } => format!("{member}{} joined the cluster", this(local)),
            What::MemberLeft { member, local } => format!("{member}{} left the cluster", this(local)),
            What::SeniorChanged { member, local } => format!("{member}{} is the senior member", this(local)),
            What::Clustering { state, reason: Some(reason) } => format!("clustering {state}: {reason}"),
            What::Clustering { state, reason: None } => format!("clustering {state}"),
            What::PluginLoaded { plugin, version } => format!("plugin {plugin} {version} loaded"),
            What::PluginReplaced { plugin, from, to } => format!("plugin {plugin} {from} replaced by {to}"),
            What::PluginRefused { file, reason, kept_running, .. } => format!(
                "plugin file {file} refused{}: {reason}",
                if *kept_running { " (the running version stays)" } else { "" }
            ),
            What::PluginFaulted { plugin, reason } => format!("plugin {plugin} faulted: {reason}"),
            What::PluginRemoved { plugin, version, reason } => format!("plugin {plugin} {version} stopped: {reason}"),
            What::SettingChanged { key, value } if key == crate::cluster::CLUSTERING_ENABLED => {
                // The switch's value is JSON: {"enabled":…,"at_ms":…,"by":…}.
                match serde_json::from_str::<serde_json::Value>(value) {
                    Ok(v) if v["enabled"].is_boolean() => format!(
                        "clustering {} cluster-wide by {} at {}",
                        if v["enabled"] == true { "enabled" } else { "disabled" },
                        v["by"].as_str().unwrap_or("?"),
                        local_time(v["at_ms"].as_u64().unwrap_or(0))
                    ),
                    _ => format!("cluster-wide setting {key} = {value}"),
                }
            }
            What::SettingChanged { key, value } => format!("cluster-wide setting {key} = {value}"),
            What::PropertiesReloaded { file } => format!("properties reloaded from {file}"),
            What::DrainStarted { what, wait_ms } => {
                format!("draining for {what}: not ready, acting in {}", duration_ms(*wait_ms))
            }
            What::DrainEnded { what, lasted_ms } => format!("drain for {what} ended after {}", duration_ms(*lasted_ms)),
        }
    }

    /// The same event with every text from outside cut to a readable length.
    fn clipped(self) -> What {
        let c = |s: String| clip_at(&s, KEPT_CHARS);
        match self {
            What::Clustering { state, reason } => What::Clustering { state, reason: reason.map(c) },
            What::PluginRefused { file, cause, reason, kept_running } => {
                What::PluginRefused { file: c(file), cause, reason: c(reason), kept_running }
            }
            What::PluginFaulted { plugin, reason } => What::PluginFaulted { plugin, reason: c(reason) },
            What::PluginRemoved { plugin, version, reason } => {
                What::PluginRemoved { plugin, version, reason: c(reason) }
            }
            What::SettingChanged { key, value } => What::SettingChanged { key: c(key), value: c(value) },
            What::DrainStarted { what, wait_ms } => What::DrainStarted { what: c(what), wait_ms },
            What::DrainEnded { what, lasted_ms } => What::DrainEnded { what: c(what), lasted_ms },
            other => other,
        }
    }
}

impl NodeEvent {
    /// One line for a person: `2026-12-01 20:15:03.120  #12 n2 joined the cluster`.
    pub fn line(&self) -> String {
        format!("{}  #{:<4} {}", local_time(self.at_ms), self.seq, self.text)
    }
}

/// The event log; cheap to clone. One per node (the cluster manager holds it).
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

struct Shared {
    /// The history, and the next number; a std mutex: never held across an await.
    history: Mutex<History>,
    /// Live events, sent under the history's lock so a subscriber taken
    /// with [`EventLog::since`] sees each event once: in its backlog or live.
    live: broadcast::Sender<NodeEvent>,
    /// The bounds, fixed at creation.
    max_events: usize,
    max_bytes: usize,
}

struct History {
    next: u64,
    /// Oldest first, each with its JSON size.
    events: VecDeque<(NodeEvent, usize)>,
    bytes: usize,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(HISTORY_EVENTS, HISTORY_BYTES, SUBSCRIBER_LAG)
    }
}

/// What a subscriber gets: the history after the number it asked for, how
/// many events after that number the history no longer holds, and the live
/// events from there on.
pub struct Subscription {
    /// Events after the asked number still in the history, oldest first.
    pub backlog: Vec<NodeEvent>,
    /// Events after the asked number that fell out of the history.
    pub missed: u64,
    /// Every event recorded after the backlog, in order.
    pub live: broadcast::Receiver<NodeEvent>,
}

impl EventLog {
    /// A log keeping at most `max_events` events and `max_bytes` bytes of
    /// their JSON; a subscriber that falls `lag` live events behind is told
    /// it lagged (see [`broadcast`]).
    pub fn new(max_events: usize, max_bytes: usize, lag: usize) -> Self {
        let (live, _) = broadcast::channel(lag.max(1));
        EventLog {
            shared: Arc::new(Shared {
                history: Mutex::new(History { next: 1, events: VecDeque::new(), bytes: 0 }),
                live,
                max_events: max_events.max(1),
                max_bytes,
            }),
        }
    }

    /// Records `what` now; returns its number.
    pub fn record(&self, what: What) -> u64 {
        let what = what.clipped();
        let at_ms = clusterhost_plugin_api::cluster::now_ms();
        let mut history = lock(&self.shared.history);
        let seq = history.next;
        history.next += 1;
        let text = what.summary();
        let event = NodeEvent { seq, at_ms, text, what };
        let size = serde_json::to_string(&event).map(|s| s.len()).unwrap_or(0);
        tracing::debug!(seq, kind = %event.what.kind(), "{}", event.text);
        history.events.push_back((event.clone(), size));
        history.bytes += size;
        while history.events.len() > self.shared.max_events
            || (history.bytes > self.shared.max_bytes && history.events.len() > 1)
        {
            if let Some((_, size)) = history.events.pop_front() {
                history.bytes -= size;
            }
        }
        // No subscriber is no error: the history keeps it.
        let _ = self.shared.live.send(event);
        seq
    }

    /// The events after number `after` still in the history, oldest first.
    pub fn after(&self, after: u64) -> Vec<NodeEvent> {
        let history = lock(&self.shared.history);
        history.events.iter().filter(|(e, _)| e.seq > after).map(|(e, _)| e.clone()).collect()
    }

    /// The number of the last event recorded (0 before the first).
    pub fn last_seq(&self) -> u64 {
        lock(&self.shared.history).next - 1
    }

    /// The history after `after`, and every event from then on, with no
    /// gap and no duplicate between the two.
    pub fn since(&self, after: u64) -> Subscription {
        let history = lock(&self.shared.history);
        let live = self.shared.live.subscribe();
        let backlog: Vec<NodeEvent> =
            history.events.iter().filter(|(e, _)| e.seq > after).map(|(e, _)| e.clone()).collect();
        let first = backlog.first().map(|e| e.seq).unwrap_or(history.next);
        let missed = first.saturating_sub(after + 1);
        Subscription { backlog, missed, live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(n: u32) -> What {
        What::MemberJoined { member: format!("n{n}"), local: false }
    }

    #[test]
    fn the_history_is_bounded_by_count_and_bytes_and_numbers_have_no_gaps() {
        let log = EventLog::new(5, 1 << 20, 16);
        for n in 0..8 {
            assert_eq!(log.record(joined(n)), n as u64 + 1);
        }
        let kept: Vec<u64> = log.after(0).iter().map(|e| e.seq).collect();
        assert_eq!(kept, vec![4, 5, 6, 7, 8]);
        assert_eq!(log.after(6).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![7, 8]);
        let small = EventLog::new(1000, 300, 16);
        for n in 0..20 {
            small.record(joined(n));
        }
        let bytes: usize = small.after(0).iter().map(|e| serde_json::to_string(e).unwrap().len()).sum();
        assert!(bytes <= 300 && !small.after(0).is_empty(), "{bytes} bytes kept");
        assert_eq!(small.last_seq(), 20);
    }

    #[test]
    fn a_long_reason_is_cut_before_it_is_kept() {
        let log = EventLog::default();
        log.record(What::PluginFaulted { plugin: "p".into(), reason: "x".repeat(1 << 20) });
        let kept = &log.after(0)[0];
        let What::PluginFaulted { reason, .. } = &kept.what else { panic!("{kept:?}") };
        assert!(reason.len() < 2 * KEPT_CHARS && reason.ends_with("(1048576 bytes)"), "{} bytes", reason.len());
    }

    #[test]
    fn a_subscription_sees_each_event_once_and_counts_what_fell_out() {
        let log = EventLog::new(3, 1 << 20, 16);
        for n in 0..5 {
            log.record(joined(n));
        }
        let mut sub = log.since(1);
        // 2 fell out of the history (3 events kept: 3, 4, 5).
        assert_eq!(sub.missed, 1);
        assert_eq!(sub.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        log.record(joined(9));
        assert_eq!(sub.live.try_recv().unwrap().seq, 6);
        assert!(sub.live.try_recv().is_err());
        let caught_up = log.since(6);
        assert!(caught_up.backlog.is_empty() && caught_up.missed == 0);
    }

    #[test]
    fn events_read_back_from_their_json() {
        let log = EventLog::default();
        log.record(What::PluginReplaced { plugin: "gossip".into(), from: "0.1.0".into(), to: "0.2.0".into() });
        let event = &log.after(0)[0];
        let json = serde_json::to_value(event).unwrap();
        assert_eq!(json["kind"], "plugin_replaced");
        assert_eq!(json["seq"], 1);
        assert_eq!(&serde_json::from_value::<NodeEvent>(json).unwrap(), event);
        assert!(event.line().ends_with("plugin gossip 0.1.0 replaced by 0.2.0"), "{}", event.line());
    }
}
