//! The actor: one task that owns the clustering state and handles, in
//! order, strategies arriving and leaving, the strategy's events, the
//! cluster-wide enable switch and the startup delay / retry timers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterhost_plugin_api::cluster::{now_ms, StrategyBox, StrategyEvent};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::strategy::StrategyRef;
use super::{lock, ClusterConfig, ClusterError, ClusterEvent, ClusterState, FaultReport, Shared, CLUSTERING_ENABLED};
use crate::event_log::What;

/// The value of the cluster-wide `clustering.enabled` setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
struct EnabledSetting {
    enabled: bool,
    /// When it was set (ms since the epoch); the latest wins.
    at_ms: u64,
    /// The member (or `properties`) that set it.
    by: String,
}

impl EnabledSetting {
    fn newer_than(&self, other: &EnabledSetting) -> bool {
        (self.at_ms, &self.by) > (other.at_ms, &other.by)
    }
}

/// What the handles and the strategy's callbacks ask of the actor.
pub(super) enum Command {
    Attach { plugin: String, version: String, strategy: StrategyBox, generation: u64, done: oneshot::Sender<()> },
    Detach { plugin: String, tell_strategy: bool, done: oneshot::Sender<()> },
    Event { generation: u64, event: StrategyEvent },
    SetEnabled { enabled: bool, done: oneshot::Sender<Result<(), ClusterError>> },
    PutSetting { key: String, value: String, done: oneshot::Sender<Result<(), ClusterError>> },
    Shutdown { done: oneshot::Sender<()> },
    Release,
}

/// The plugin strategy in service, clustered or not.
struct Attached {
    strategy: Arc<StrategyRef>,
}

/// Where this node is in joining the cluster.
enum Stage {
    /// Not clustered and not trying to (no strategy, disabled, gave up, lost the cluster).
    Idle,
    /// Attempt `attempt` starts at `at`.
    Waiting {
        at: Instant,
        attempt: u32,
    },
    Clustered,
}

/// The task that owns the clustering state: it alone changes which strategy
/// serves, so joins, leaves and events happen one at a time, in order. It
/// ends when the last [`ClusterManager`](super::ClusterManager) handle is dropped (the channel closes).
pub(super) struct Actor {
    /// What the handles share; the actor holds no sender of its own channel.
    shared: Arc<Shared>,
    /// Where a strategy taken out of service is reported (the plugin manager).
    faults: mpsc::UnboundedSender<FaultReport>,
    /// The plugin strategy in service.
    attached: Option<Attached>,
    /// The generation of its callbacks: events of older instances are dropped.
    generation: u64,
    stage: Stage,
    /// Strategies wait for `Release` (the initial plugin scan) before starting.
    held: bool,
    /// The clustering switch, as last set (by the properties or cluster-wide).
    enabled: EnabledSetting,
}

impl Actor {
    /// Spawns the actor on the current runtime. `enabled` is the node's
    /// `clustering.enabled` property; while `held`, a strategy that arrives
    /// waits for `Release` before its startup delay begins.
    pub(super) fn spawn(
        shared: Arc<Shared>,
        faults: mpsc::UnboundedSender<FaultReport>,
        enabled: bool,
        held: bool,
        commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let actor = Actor {
            shared,
            faults,
            attached: None,
            generation: 0,
            stage: Stage::Idle,
            held,
            enabled: EnabledSetting { enabled, at_ms: 0, by: "properties".into() },
        };
        tokio::spawn(actor.run(commands));
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        // Commands that arrived while a cluster start was running, in order.
        let mut pending = std::collections::VecDeque::new();
        loop {
            let deadline = match self.stage {
                Stage::Waiting { at, .. } => Some(at),
                _ => None,
            };
            let command = match pending.pop_front() {
                Some(command) => Some(command),
                None => tokio::select! {
                    command = rx.recv() => command,
                    _ = sleep_until(deadline) => {
                        self.attempt(&mut rx, &mut pending).await;
                        continue;
                    }
                },
            };
            let Some(command) = command else { return };
            match command {
                Command::Attach { plugin, version, strategy, generation, done } => {
                    self.on_attach(plugin, version, strategy, generation).await;
                    let _ = done.send(());
                }
                Command::Detach { plugin, tell_strategy, done } => {
                    if self.attached.as_ref().is_some_and(|a| a.strategy.plugin == plugin) {
                        self.leave("its strategy plugin was stopped", tell_strategy).await;
                        self.set_attached(None);
                        self.set_state(ClusterState::Standalone { reason: Some(format!("{plugin} was stopped")) });
                    }
                    let _ = done.send(());
                }
                Command::Event { generation, event } => {
                    if generation == self.generation && self.attached.is_some() {
                        self.on_event(event).await;
                    }
                }
                Command::SetEnabled { enabled, done } => {
                    let _ = done.send(self.on_set_enabled(enabled).await);
                }
                Command::PutSetting { key, value, done } => {
                    let result = match &self.attached {
                        Some(a) => a.strategy.put_setting(&key, &value).await,
                        None => {
                            let stored = self.shared.standalone.put_setting(&key, &value).await;
                            self.dispatch(ClusterEvent::SettingChanged { key, value });
                            stored
                        }
                    };
                    let _ = done.send(result);
                }
                Command::Release => {
                    self.held = false;
                    if self.attached.is_some() && self.enabled.enabled && matches!(self.stage, Stage::Idle) {
                        self.begin_delay();
                    }
                }
                Command::Shutdown { done } => {
                    self.leave("the node is stopping", true).await;
                    self.set_attached(None);
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    fn config(&self) -> ClusterConfig {
        lock(&self.shared.config).clone()
    }

    fn set_state(&self, state: ClusterState) {
        let enabled = self.enabled.enabled;
        let label = self.attached.as_ref().map(|a| a.strategy.label());
        match &state {
            ClusterState::Standalone { reason: Some(reason) } => tracing::info!("standalone: {reason}"),
            ClusterState::Faulted { reason } => tracing::error!("clustering faulted: {reason}"),
            ClusterState::Starting { detail, .. } => tracing::info!("{detail}"),
            _ => {}
        }
        self.count_members(&state);
        let (name, reason) = super::state_and_reason(&state);
        let what = What::Clustering { state: name.to_string(), reason: reason.map(str::to_string) };
        self.shared.events.record(what);
        self.shared.status.send_replace((state, enabled, label));
    }

    /// What split-brain protection counts in `state`: the members the
    /// serving strategy lists while clustered, this node alone while it is
    /// meant to be clustered (a strategy in service, clustering enabled),
    /// nothing otherwise.
    fn count_members(&self, state: &ClusterState) {
        let seen = match state {
            ClusterState::Clustered => {
                let serving = lock(&self.shared.serving).clone();
                Some(serving.members().len().max(1))
            }
            _ if self.attached.is_some() && self.enabled.enabled => Some(1),
            _ => None,
        };
        self.shared.caches.set_members_seen(seen);
    }

    fn set_attached(&mut self, attached: Option<Attached>) {
        *lock(&self.shared.attached) = attached.as_ref().map(|a| a.strategy.clone());
        self.shared.entries.attach(if attached.is_some() { self.generation } else { 0 });
        if attached.is_none() {
            self.shared.entries.take_from(0);
            self.shared.caches.clear_refusals();
        }
        self.attached = attached;
        if self.attached.is_none() {
            self.stage = Stage::Idle;
        }
        let state = self.shared.status.borrow().0.clone();
        self.count_members(&state);
    }

    fn disabled_reason(&self) -> String {
        if self.enabled.at_ms == 0 {
            "clustering.enabled is false in clusterhost.properties".to_string()
        } else {
            format!(
                "clustering was disabled cluster-wide by {} at {}",
                self.enabled.by,
                crate::text::local_time(self.enabled.at_ms)
            )
        }
    }

    async fn on_attach(&mut self, plugin: String, version: String, strategy: StrategyBox, generation: u64) {
        if self.attached.is_some() {
            // The plugin manager admits one strategy at a time; a second one
            // here means the previous was not detached: leave it first.
            self.leave("a new strategy arrived", true).await;
        }
        let strategy = Arc::new(StrategyRef::new(plugin, version, strategy));
        tracing::info!(strategy = %strategy.label(), "cluster strategy available");
        let clustered_listeners = self.shared.entries.clustered_listeners();
        if clustered_listeners > 0 && strategy.require_entry_events("clustered entry listeners").is_err() {
            tracing::warn!(
                strategy = %strategy.label(),
                "the strategy reports no entry events (built before plugin API 0.1.2): {clustered_listeners} clustered entry listener(s) get only this node's own changes while it serves; upgrade the strategy"
            );
        }
        self.generation = generation;
        self.set_attached(Some(Attached { strategy: strategy.clone() }));
        // Before the strategy serves: every bounded cache's bounds, and
        // every listened cache (listeners stay across strategy
        // replacements), so it reports their changes from the start. The
        // whole at most one budget: a strategy that hangs is refused the rest.
        let budget = self.config().max_execution;
        let (caches, entries) = (self.shared.caches.clone(), self.shared.entries.clone());
        let prepare = async {
            for cache in caches.bounded_names() {
                // A refusal is logged and shown in status by send_bounds.
                let _ = caches.send_bounds(&cache, Some(&strategy), budget).await;
            }
            for cache in entries.listened_caches() {
                if let Err(e) = strategy.listen(&cache).await {
                    tracing::warn!(cache = %cache, strategy = %strategy.label(), "the strategy could not start reporting the changes of a listened cache: {e}");
                }
            }
        };
        if tokio::time::timeout(budget, prepare).await.is_err() {
            tracing::warn!(strategy = %strategy.label(), "the strategy did not take every cache's bounds and listeners within {budget:?} (cluster.max.execution.seconds); the rest follow on their next change");
        }
        // The cluster-wide switch, if the cluster has one, wins when newer
        // than ours; ours is republished when newer (e.g. kept across a hot
        // replacement of the strategy).
        let cluster_value = strategy
            .settings()
            .into_iter()
            .find(|(k, _)| k == CLUSTERING_ENABLED)
            .and_then(|(_, v)| serde_json::from_str::<EnabledSetting>(&v).ok());
        match cluster_value {
            Some(value) if value.newer_than(&self.enabled) => self.enabled = value,
            Some(value) if self.enabled.newer_than(&value) => self.publish_enabled(&strategy).await,
            None if self.enabled.at_ms > 0 => self.publish_enabled(&strategy).await,
            _ => {}
        }
        if self.enabled.enabled && self.held {
            self.stage = Stage::Idle;
            let reason = "clustering starts once the initial plugin scan is done".to_string();
            self.set_state(ClusterState::Standalone { reason: Some(reason) });
        } else if self.enabled.enabled {
            self.begin_delay();
        } else {
            self.stage = Stage::Idle;
            self.set_state(ClusterState::Standalone { reason: Some(self.disabled_reason()) });
        }
    }

    fn begin_delay(&mut self) {
        let delay = self.config().startup_delay;
        self.stage = Stage::Waiting { at: Instant::now() + delay, attempt: 1 };
        self.set_starting(1, delay, None);
    }

    async fn publish_enabled(&self, strategy: &StrategyRef) {
        let value = serde_json::to_string(&self.enabled).unwrap_or_default();
        if let Err(e) = strategy.put_setting(CLUSTERING_ENABLED, &value).await {
            tracing::warn!("could not publish the clustering switch to the cluster: {e}");
        }
    }

    /// Starting: attempt `attempt` comes in `wait`; `failed` is why the
    /// attempt before it failed (so the state, and the strategy plugin's
    /// record, say why the node is not clustered yet).
    fn set_starting(&self, attempt: u32, wait: Duration, failed: Option<&str>) {
        let attempts = self.config().retry_count + 1;
        let detail = match failed {
            None if attempt == 1 => {
                format!("clustering starts in {} (cluster.startup.delay.seconds)", crate::text::duration(wait))
            }
            None => format!("cluster start attempt {attempt} of {attempts} in {}", crate::text::duration(wait)),
            Some(error) => format!(
                "cluster start attempt {attempt} of {attempts} in {}; attempt {} failed: {error}",
                crate::text::duration(wait),
                attempt - 1
            ),
        };
        self.set_state(ClusterState::Starting { attempt, attempts, next_in_ms: wait.as_millis() as u64, detail });
    }

    /// One attempt at starting clustering (the Waiting deadline passed).
    /// Commands arriving meanwhile wait in `pending`; one that takes the
    /// strategy away (detach, shutdown) cancels the attempt at once.
    async fn attempt(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Command>,
        pending: &mut std::collections::VecDeque<Command>,
    ) {
        let Stage::Waiting { attempt, .. } = self.stage else { return };
        let Some(strategy) = self.attached.as_ref().map(|a| a.strategy.clone()) else {
            self.stage = Stage::Idle;
            return;
        };
        let config = self.config();
        let attempts = config.retry_count + 1;
        tracing::info!(strategy = %strategy.label(), "starting clustering (attempt {attempt} of {attempts})");
        // A join's state transfer is told to the entry listeners too.
        self.shared.entries.take_from(self.generation);
        let start = tokio::time::timeout(config.max_execution, strategy.start_clustering());
        tokio::pin!(start);
        let outcome = loop {
            tokio::select! {
                outcome = &mut start => break outcome,
                command = rx.recv() => match command {
                    Some(command) => {
                        let cancels = matches!(command, Command::Detach { .. } | Command::Shutdown { .. });
                        pending.push_back(command);
                        if cancels {
                            tracing::info!(strategy = %strategy.label(), "cluster start cancelled: the strategy is being taken away");
                            self.stage = Stage::Idle;
                            // The start future is no longer polled; the
                            // half-started join is undone before the strategy goes.
                            let _ = tokio::time::timeout(config.max_execution, strategy.stop_clustering()).await;
                            return;
                        }
                    }
                    None => return,
                },
            }
        };
        let error = match outcome {
            Ok(Ok(())) => match self.join(&strategy).await {
                Ok(()) => return,
                Err(e) => e.to_string(),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => {
                let reason = format!(
                    "{} did not finish start_clustering within {:?} (cluster.max.execution.seconds); it was taken out of service",
                    strategy.label(),
                    config.max_execution
                );
                self.fault(reason);
                return;
            }
        };
        if attempt < attempts {
            tracing::warn!("cluster start attempt {attempt} of {attempts} failed: {error}");
            self.stage = Stage::Waiting { at: Instant::now() + config.retry_interval, attempt: attempt + 1 };
            self.set_starting(attempt + 1, config.retry_interval, Some(&error));
        } else {
            self.stage = Stage::Idle;
            let reason = format!(
                "clustering could not start after {attempts} attempt(s); last error: {error}; fix the cause, then re-enable clustering or republish the strategy plugin"
            );
            self.set_state(ClusterState::Standalone { reason: Some(reason) });
        }
    }

    fn fault(&mut self, reason: String) {
        if let Some(attached) = &self.attached {
            let _ = self.faults.send(FaultReport { plugin: attached.strategy.plugin.clone(), reason: reason.clone() });
        }
        self.set_attached(None);
        self.set_state(ClusterState::Faulted { reason });
    }

    /// This node is in the cluster: caches first, then listeners.
    async fn join(&mut self, strategy: &Arc<StrategyRef>) -> Result<(), ClusterError> {
        self.shared.entries.take_from(self.generation);
        match self.shared.caches.join(strategy.clone()).await {
            Ok(moved) => tracing::info!(
                "joined the cluster; {moved} cache entries held on this node (written while it was alone, or kept from its last join) merged into it"
            ),
            Err(e) => {
                tracing::error!(
                    "joined, but the standalone caches could not be merged: {e}; leaving again so nothing is lost"
                );
                if let Err(e) = strategy.stop_clustering().await {
                    tracing::warn!("leaving after the failed merge also failed: {e}");
                }
                return Err(e);
            }
        }
        *lock(&self.shared.serving) = strategy.clone();
        self.stage = Stage::Clustered;
        self.set_state(ClusterState::Clustered);
        let node = self.shared.node.clone();
        self.dispatch(ClusterEvent::JoinedCluster { member: node, local: true });
        Ok(())
    }

    /// This node leaves (if clustered): caches copied out first, then the
    /// strategy told (when `tell_strategy`), then listeners.
    async fn leave(&mut self, why: &str, tell_strategy: bool) {
        if !matches!(self.stage, Stage::Clustered) {
            self.stage = Stage::Idle;
            return;
        }
        // The strategy's late entry events no longer describe what this node holds.
        self.shared.entries.take_from(0);
        let kept = self.shared.caches.leave().await;
        *lock(&self.shared.serving) = self.shared.standalone.clone();
        self.stage = Stage::Idle;
        tracing::info!("left the cluster ({why}); {kept} cache entries kept locally");
        if tell_strategy {
            if let Some(strategy) = self.attached.as_ref().map(|a| a.strategy.clone()) {
                let budget = self.config().max_execution;
                match tokio::time::timeout(budget, strategy.stop_clustering()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("{e}"),
                    Err(_) => tracing::warn!(
                        "{} did not finish stop_clustering within {budget:?} (cluster.max.execution.seconds)",
                        strategy.label()
                    ),
                }
            }
        }
        let node = self.shared.node.clone();
        self.dispatch(ClusterEvent::LeftCluster { member: node, local: true });
    }

    async fn on_event(&mut self, event: StrategyEvent) {
        let node = self.shared.node.clone();
        let clustered = matches!(self.stage, Stage::Clustered);
        match event {
            StrategyEvent::Joined { member } if member == node => {
                // The strategy (re)joined on its own, e.g. after a reconnect.
                if !clustered && self.enabled.enabled {
                    if let Some(strategy) = self.attached.as_ref().map(|a| a.strategy.clone()) {
                        let _ = self.join(&strategy).await;
                    }
                }
            }
            StrategyEvent::Left { member } if member == node => {
                if clustered {
                    self.leave("the strategy lost the cluster", false).await;
                    self.set_state(ClusterState::Standalone {
                        reason: Some("the strategy lost the cluster; it rejoins when it can".into()),
                    });
                }
            }
            StrategyEvent::Joined { member } if clustered => {
                self.count_members(&ClusterState::Clustered);
                self.dispatch(ClusterEvent::JoinedCluster { member, local: false })
            }
            StrategyEvent::Left { member } if clustered => {
                self.count_members(&ClusterState::Clustered);
                self.dispatch(ClusterEvent::LeftCluster { member, local: false })
            }
            StrategyEvent::SeniorChanged { member } if clustered => {
                let local = member == node;
                self.dispatch(ClusterEvent::MarkedSeniorClusterMember { member, local })
            }
            StrategyEvent::SettingChanged { key, value } => {
                if key == CLUSTERING_ENABLED {
                    match serde_json::from_str::<EnabledSetting>(&value) {
                        Ok(setting) if setting.newer_than(&self.enabled) => self.apply_enabled(setting).await,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!("ignored a malformed cluster-wide {CLUSTERING_ENABLED} value {value:?}: {e}")
                        }
                    }
                }
                self.dispatch(ClusterEvent::SettingChanged { key, value });
            }
            StrategyEvent::Joined { .. } | StrategyEvent::Left { .. } | StrategyEvent::SeniorChanged { .. } => {}
        }
    }

    async fn on_set_enabled(&mut self, enabled: bool) -> Result<(), ClusterError> {
        let setting =
            EnabledSetting { enabled, at_ms: now_ms().max(self.enabled.at_ms + 1), by: self.shared.node.clone() };
        match self.attached.as_ref().map(|a| a.strategy.clone()) {
            // Every member, this one included, gets it back as SettingChanged.
            Some(strategy) => {
                let value = serde_json::to_string(&setting).unwrap_or_default();
                strategy.put_setting(CLUSTERING_ENABLED, &value).await
            }
            None => {
                self.apply_enabled(setting).await;
                Ok(())
            }
        }
    }

    async fn apply_enabled(&mut self, setting: EnabledSetting) {
        tracing::info!(by = %setting.by, "clustering {}", if setting.enabled { "enabled" } else { "disabled" });
        self.enabled = setting;
        if !self.enabled.enabled {
            self.leave("clustering was disabled", true).await;
            self.set_state(ClusterState::Standalone { reason: Some(self.disabled_reason()) });
        } else if self.attached.is_some() && !self.held && matches!(self.stage, Stage::Idle) {
            // Re-enabled: start now (the startup delay is for a strategy's arrival).
            self.stage = Stage::Waiting { at: Instant::now(), attempt: 1 };
            self.set_starting(1, Duration::ZERO, None);
        } else if self.attached.is_none() {
            self.set_state(ClusterState::Standalone { reason: None });
        }
    }

    /// Records the event in the node's event log, then calls every
    /// listener in order; failures are reported, never fatal.
    fn dispatch(&self, event: ClusterEvent) {
        let what = match &event {
            ClusterEvent::JoinedCluster { member, local } => {
                What::MemberJoined { member: member.clone(), local: *local }
            }
            ClusterEvent::LeftCluster { member, local } => What::MemberLeft { member: member.clone(), local: *local },
            ClusterEvent::MarkedSeniorClusterMember { member, local } => {
                What::SeniorChanged { member: member.clone(), local: *local }
            }
            ClusterEvent::SettingChanged { key, value } => {
                What::SettingChanged { key: key.clone(), value: value.clone() }
            }
        };
        self.shared.events.record(what);
        self.shared.listeners.dispatch(event);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
