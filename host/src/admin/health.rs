//! `/healthz` and `/readyz`: what a load balancer or a container
//! orchestrator checks, without a token. `healthz`: the process serves.
//! `readyz`: the node is ready for client traffic, derived from the state
//! the node is really in (the cluster manager's published state, the
//! plugin manager's strategy change in progress, the drains of uploads in
//! flight); never a flag of its own. Both answer only a state and a reason,
//! from values already in memory: no lock waited for, no file read, no
//! call into a plugin, so a stranger cannot make them expensive. See
//! docs/load-balancing.md.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::contract::{Health, HealthState};
use super::AdminState;
use crate::cluster::ClusterState;

/// The longest drain an upload may ask for (`?drain=SECONDS`).
pub(super) const MAX_DRAIN: Duration = Duration::from_secs(60);

/// Uploads that asked the node to drain before it acts on them: while one
/// is registered the node is not ready. Each registration is a
/// [`Draining`] guard owned by its request, so it ends with the request
/// (answered, failed or dropped by a client that went away).
#[derive(Debug, Default)]
pub(super) struct Drains {
    next: AtomicU64,
    /// id → (what drains, until when it waits before acting).
    open: Mutex<BTreeMap<u64, (String, Instant)>>,
}

/// One drain; removed from [`Drains`] (and its end recorded in the
/// node's event log) when dropped.
pub(super) struct Draining {
    drains: Arc<Drains>,
    id: u64,
    /// Where its start was recorded, and its end will be.
    events: crate::event_log::EventLog,
    what: String,
    began: Instant,
}

impl Drains {
    /// Registers a drain of `what` that waits `wait` before the node acts,
    /// recorded in `events` as it starts and ends.
    pub(super) fn begin(
        self: &Arc<Self>,
        what: String,
        wait: Duration,
        events: &crate::event_log::EventLog,
    ) -> Draining {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        clusterhost_plugin_api::sync::lock(&self.open).insert(id, (what.clone(), began + wait));
        events.record(crate::event_log::What::DrainStarted { what: what.clone(), wait_ms: wait.as_millis() as u64 });
        Draining { drains: self.clone(), id, events: events.clone(), what, began }
    }

    /// The reason of the oldest drain in progress, if any.
    fn reason(&self) -> Option<String> {
        let open = clusterhost_plugin_api::sync::lock(&self.open);
        let (what, until) = open.values().next()?;
        let left = until.saturating_duration_since(Instant::now());
        Some(if left.is_zero() {
            format!("draining: {what} is in progress")
        } else {
            format!(
                "draining: {what} starts in {}, so a load balancer stops sending requests first",
                crate::text::duration(left)
            )
        })
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        clusterhost_plugin_api::sync::lock(&self.drains.open).remove(&self.id);
        let lasted_ms = self.began.elapsed().as_millis() as u64;
        self.events.record(crate::event_log::What::DrainEnded { what: std::mem::take(&mut self.what), lasted_ms });
    }
}

/// Everything readiness is derived from, read once per check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Inputs {
    /// The initial plugin scan is done (the cluster manager's hold is over).
    pub scanned: bool,
    /// A drain of an upload in flight, with its reason.
    pub draining: Option<String>,
    /// A strategy load or replacement in progress, with its reason.
    pub strategy_change: Option<String>,
    /// Why the strategy that was in service is gone (faulted, or lost in a
    /// failed upgrade), though the operator did not remove it.
    pub strategy_lost: Option<String>,
    /// The cluster manager's published state.
    pub state: ClusterState,
    /// Whether clustering is enabled (cluster-wide once a strategy is in service).
    pub enabled: bool,
    /// The strategy in service, if any.
    pub strategy: Option<String>,
}

/// Whether a node in `inputs` is ready for client traffic, and why.
///
/// Ready: clustered; or standalone as asked (clustering disabled, or no
/// strategy plugin in service). Not ready: before the initial scan ends,
/// while an upload drains, while a strategy is being loaded or replaced,
/// while clustering starts, after it gave up or lost the cluster while
/// enabled, and when the strategy faulted.
/// A readiness verdict: the [`Health`] with the full reason, and the same
/// verdict's fixed summary, which is all a caller that could not read
/// `/api/cluster` is told (a reason can carry an engine's error text, with
/// its addresses, or a URL with a password in it).
pub(crate) struct Verdict {
    pub health: Health,
    pub summary: &'static str,
}

impl Verdict {
    /// The answer for a caller who may (`detailed`) or may not read the
    /// node's state through the API.
    pub(crate) fn answer(self, detailed: bool) -> Health {
        if detailed {
            self.health
        } else {
            Health { state: self.health.state, reason: Some(self.summary.to_string()) }
        }
    }
}

pub(crate) fn readiness(inputs: &Inputs) -> Verdict {
    let verdict = |state: HealthState, summary: &'static str, reason: String| Verdict {
        health: Health { state, reason: Some(crate::text::clip(&reason)) },
        summary,
    };
    let not_ready = |summary, reason| verdict(HealthState::NotReady, summary, reason);
    let ready = |summary, reason| verdict(HealthState::Ready, summary, reason);
    if !inputs.scanned {
        let why = "the initial plugin scan is not done";
        return not_ready(why, why.into());
    }
    if let Some(reason) = &inputs.draining {
        return not_ready("draining before a plugin upload", reason.clone());
    }
    if let Some(change) = &inputs.strategy_change {
        return not_ready(
            "the cluster strategy is being loaded or replaced",
            format!("{change}; ready again once it is in the state the properties ask for"),
        );
    }
    let label = inputs.strategy.as_deref().unwrap_or("no strategy");
    match &inputs.state {
        ClusterState::Clustered => ready("clustered", format!("clustered ({label})")),
        ClusterState::Starting { detail, .. } => {
            not_ready("clustering is starting", format!("clustering is starting ({label}): {detail}"))
        }
        ClusterState::Faulted { reason } => not_ready("clustering faulted", format!("clustering faulted: {reason}")),
        ClusterState::Standalone { reason } => {
            let reason = reason.as_deref();
            match (&inputs.strategy, inputs.enabled) {
                // The strategy in service is gone, but nobody removed it.
                (None, true) if inputs.strategy_lost.is_some() => not_ready(
                    "clustering is enabled but the cluster strategy is out of service",
                    format!(
                        "{}; this node is standalone while clustering is enabled: fix or replace the plugin",
                        inputs.strategy_lost.as_deref().unwrap_or_default()
                    ),
                ),
                (None, _) => ready(
                    "standalone: no cluster strategy plugin is in service",
                    format!(
                        "standalone: no cluster strategy plugin is in service{}",
                        reason.map(|r| format!(" ({r})")).unwrap_or_default()
                    ),
                ),
                (Some(_), false) => ready(
                    "standalone, as asked",
                    format!("standalone, as asked: {}", reason.unwrap_or("clustering is disabled")),
                ),
                (Some(label), true) => not_ready(
                    "clustering is enabled but this node is standalone",
                    format!(
                        "clustering is enabled with {label} but this node is standalone: {}",
                        reason.unwrap_or("it has not joined")
                    ),
                ),
            }
        }
    }
}

impl AdminState {
    /// This node's readiness now.
    pub(super) fn readiness(&self) -> Verdict {
        let ctx = self.ctx();
        let (state, enabled, strategy) = ctx.cluster.snapshot();
        readiness(&Inputs {
            scanned: ctx.cluster.released(),
            draining: self.shared.drains.reason(),
            strategy_change: ctx.plugins.strategy_change(),
            strategy_lost: ctx.plugins.strategy_lost(),
            state,
            enabled,
            strategy,
        })
    }
}

/// `GET /healthz`: 200 while the process serves.
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { state: HealthState::Serving, reason: None })
}

/// `GET /readyz`: 200 when ready for client traffic, 503 otherwise; the
/// body says which and why.
///
/// The reason is the full one where reads need no token (an admin API
/// bound to loopback: `/api/cluster` tells as much); elsewhere it is the
/// verdict's fixed summary, since no token is asked here.
pub(super) async fn readyz(State(state): State<AdminState>) -> Response {
    let health = state.readiness().answer(state.shared.loopback);
    let status = match health.state {
        HealthState::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        HealthState::Ready | HealthState::Serving => StatusCode::OK,
    };
    (status, Json(health)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clustered() -> Inputs {
        Inputs {
            scanned: true,
            draining: None,
            strategy_change: None,
            strategy_lost: None,
            state: ClusterState::Clustered,
            enabled: true,
            strategy: Some("gossip 0.1.0".into()),
        }
    }

    fn standalone(reason: &str, enabled: bool, strategy: Option<&str>) -> Inputs {
        Inputs {
            state: ClusterState::Standalone { reason: Some(reason.into()) },
            enabled,
            strategy: strategy.map(str::to_string),
            ..clustered()
        }
    }

    fn verdict(inputs: Inputs) -> (HealthState, String) {
        let health = readiness(&inputs).health;
        (health.state, health.reason.unwrap_or_default())
    }

    #[test]
    fn ready_only_in_the_state_the_properties_ask_for() {
        assert_eq!(verdict(clustered()).0, HealthState::Ready);
        let (state, reason) = verdict(Inputs { scanned: false, ..clustered() });
        assert!(state == HealthState::NotReady && reason.contains("initial plugin scan"), "{reason}");
        let (state, reason) = verdict(Inputs { draining: Some("draining: x".into()), ..clustered() });
        assert!(state == HealthState::NotReady && reason == "draining: x", "{reason}");
        let starting = ClusterState::Starting { attempt: 1, attempts: 2, next_in_ms: 0, detail: "attempt 1".into() };
        let (state, reason) = verdict(Inputs { state: starting, ..clustered() });
        assert!(state == HealthState::NotReady && reason.contains("starting"), "{reason}");
        let (state, _) = verdict(Inputs { state: ClusterState::Faulted { reason: "hung".into() }, ..clustered() });
        assert_eq!(state, HealthState::NotReady);
        // Gave up or lost the cluster while enabled: not as asked.
        let (state, reason) = verdict(standalone("the strategy lost the cluster", true, Some("gossip 0.1.0")));
        assert!(state == HealthState::NotReady && reason.contains("lost the cluster"), "{reason}");
        // Disabled cluster-wide: standalone is what was asked.
        let (state, reason) = verdict(standalone("clustering was disabled cluster-wide by n1", false, Some("g 1")));
        assert!(state == HealthState::Ready && reason.contains("as asked") && reason.contains("by n1"), "{reason}");
        // No strategy plugin at all: a node runs alone by default.
        let (state, _) = verdict(Inputs { strategy: None, ..standalone("x", true, None) });
        assert_eq!(state, HealthState::Ready);
    }

    #[test]
    fn a_strategy_change_is_not_ready_also_between_detach_and_attach() {
        // Between the old strategy's detach and the new one's attach the
        // cluster manager has no strategy, which alone would read as ready.
        let detached = standalone("gossip was stopped", true, None);
        assert_eq!(verdict(detached.clone()).0, HealthState::Ready);
        let change = Some("cluster strategy gossip 0.1.0 is being replaced by 0.2.0".to_string());
        let (state, reason) = verdict(Inputs { strategy_change: change, ..detached });
        assert!(state == HealthState::NotReady && reason.contains("being replaced by 0.2.0"), "{reason}");
    }

    #[test]
    fn a_drain_ends_with_its_guard_and_says_how_long_is_left() {
        let drains = Arc::new(Drains::default());
        let events = crate::event_log::EventLog::default();
        assert_eq!(drains.reason(), None);
        let first = drains.begin("the upload of plugins/gossip.so".into(), Duration::from_secs(30), &events);
        let second = drains.begin("another".into(), Duration::ZERO, &events);
        let reason = drains.reason().unwrap();
        assert!(reason.contains("plugins/gossip.so starts in") && reason.contains(" s"), "{reason}");
        drop(first);
        assert!(drains.reason().unwrap().contains("another is in progress"));
        drop(second);
        assert_eq!(drains.reason(), None);
        let kinds: Vec<String> = events.after(0).iter().map(|e| e.what.kind()).collect();
        assert_eq!(kinds, ["drain_started", "drain_started", "drain_ended", "drain_ended"]);
    }

    #[test]
    fn an_outside_reason_is_clipped() {
        let long = "x".repeat(10_000);
        let health = readiness(&Inputs { state: ClusterState::Faulted { reason: long }, ..clustered() }).health;
        assert!(health.reason.unwrap().len() < 400);
    }

    /// A caller who cannot read the API gets the fixed summary only: an
    /// engine's error (here a Redis URL with its password) never reaches it.
    #[test]
    fn without_reads_only_the_summary_is_told() {
        let detail = "attempt 1 failed: could not reach Redis at redis://:hunter2@10.0.0.9:6379".to_string();
        let starting = ClusterState::Starting { attempt: 2, attempts: 2, next_in_ms: 0, detail };
        let inputs = Inputs { state: starting, ..clustered() };
        let full = readiness(&inputs).answer(true);
        assert!(full.reason.unwrap().contains("hunter2"));
        let told = readiness(&inputs).answer(false);
        assert_eq!((told.state, told.reason.as_deref()), (HealthState::NotReady, Some("clustering is starting")));
        for inputs in [
            standalone("lost the cluster: redis://:hunter2@h", true, Some("redis 0.1.0")),
            Inputs { state: ClusterState::Faulted { reason: "hunter2".into() }, ..clustered() },
            Inputs { draining: Some("draining: the upload of plugins/secret-name.so".into()), ..clustered() },
        ] {
            let told = readiness(&inputs).answer(false).reason.unwrap();
            assert!(!told.contains("hunter2") && !told.contains("secret-name") && !told.contains("0.1.0"), "{told}");
        }
    }

    /// A strategy that faulted, or was lost in a failed upgrade, leaves the
    /// node standalone with no strategy: not ready while clustering is
    /// enabled (only the operator's removal makes standalone what is asked).
    #[test]
    fn a_lost_strategy_is_not_ready() {
        let lost = Inputs {
            strategy_lost: Some("cluster strategy gossip was taken out of service: hung".into()),
            ..standalone("gossip was stopped", true, None)
        };
        let (state, reason) = verdict(lost.clone());
        assert!(state == HealthState::NotReady && reason.contains("taken out of service"), "{reason}");
        // Disabled: standalone is what is asked, lost or not.
        assert_eq!(verdict(Inputs { enabled: false, ..lost }).0, HealthState::Ready);
    }
}
