//! The cluster manager: the host's side of the strategy contract.
//!
//! Caches, tasks and locks always go through one strategy, the one that
//! serves right now: the built-in standalone strategy ([`standalone`]) while
//! this node is alone, a plugin's while it is clustered. Which one serves is
//! decided in one place, the actor ([`actor`]), which handles strategies
//! arriving and leaving, their events, the cluster-wide enable switch and
//! the startup delay / retry timers. For this node's own join and leave the
//! cache factory moves the entries first, then the listeners run in
//! registration order.
//!
//! Modules by job: [`types`] (errors, state, status, settings), [`events`]
//! (events and listeners), [`strategy`] (a strategy as the host calls it),
//! [`standalone`], [`cache`] (the cache factory), [`tasks`], [`locks`],
//! [`callbacks`] (what crosses the boundary back to the host), [`actor`],
//! [`entry_events`] (per-cache entry listeners).

mod actor;
pub mod bounds;
mod cache;
mod callbacks;
mod entry_events;
mod events;
mod locks;
pub mod protection;
mod standalone;
mod strategy;
mod task_stats;
mod tasks;
mod types;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clusterhost_plugin_api::cluster::{Member, StrategyBox};
use clusterhost_plugin_api::sync::lock;
use tokio::sync::{mpsc, oneshot, watch};

use actor::{Actor, Command};
pub use cache::{Cache, CacheFactory, CacheStats, RawCache};
pub use clusterhost_plugin_api::cluster::{
    CacheBounds, Member as ClusterMember, TaskOutcome as Outcome, TaskTarget as Target,
};
pub use entry_events::{
    Delivery, EntryEvent, EntryEventCounts, EntryEventKind, EntryListener, ListenOptions, ListenScope, ListenerHandle,
    DEFAULT_QUEUE as ENTRY_LISTENER_QUEUE,
};
pub use events::{ClusterEvent, ClusterListener};
pub use locks::ClusterLock;
pub use strategy::{CacheRef, StrategyRef};
pub use task_stats::{TaskStats, LATENCY_BUCKETS};
pub use tasks::{TaskFailure, TaskResult};
pub use types::{
    state_and_reason, ClusterConfig, ClusterError, ClusterState, ClusterStatus, FaultReport, MemberStatus,
    CLUSTERING_ENABLED,
};

/// How often the standalone caches' expired entries are swept.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// What the status watchers see: state, whether clustering is enabled, and
/// the attached strategy's label.
type StatusSnapshot = (ClusterState, bool, Option<String>);

/// The cluster manager; cheap to clone. The actor runs while any clone lives.
#[derive(Clone)]
pub struct ClusterManager {
    shared: Arc<Shared>,
    /// To the actor; the actor ends once every clone of this is dropped.
    commands: mpsc::UnboundedSender<Command>,
}

/// What the handles, the actor and the strategy callbacks share.
struct Shared {
    /// This node's name (its member id).
    node: String,
    /// Named caches; moves their entries on this node's join and leave.
    caches: CacheFactory,
    /// Entry listeners, by cache, and which strategy's entry events are taken.
    entries: Arc<entry_events::EntryEvents>,
    /// Task handlers and counters.
    tasks: Arc<tasks::Tasks>,
    /// Listeners, called by the actor in order.
    listeners: events::Listeners,
    /// Startup / execution settings; a change applies from the next start.
    config: Mutex<ClusterConfig>,
    /// The status, published by the actor.
    status: watch::Sender<StatusSnapshot>,
    /// The built-in standalone strategy: serves whenever this node is alone.
    standalone: Arc<StrategyRef>,
    /// The strategy serving tasks and locks now: `standalone`, or the
    /// plugin's while clustered. Set only by the actor.
    serving: Mutex<Arc<StrategyRef>>,
    /// The plugin strategy in service (clustered or not): cluster-wide
    /// settings and strategy counters come from it.
    attached: Mutex<Option<Arc<StrategyRef>>>,
    /// Owner tokens for locks.
    owners: locks::Owners,
    /// Numbers each strategy instance's callbacks, so a replaced one's late
    /// events are ignored.
    next_generation: AtomicU64,
    /// The host's runtime: task handlers and background lock releases run there.
    runtime: tokio::runtime::Handle,
    /// Every event a strategy emits, recorded as it arrives, once
    /// [`ClusterManager::tap_events`] installed it (the conformance suite).
    tap: std::sync::OnceLock<EventTap>,
    /// Whether the hold is over (the node's initial plugin scan is done):
    /// set by [`ClusterManager::release`], with the command that ends the
    /// actor's hold; read by the readiness check.
    released: AtomicBool,
    /// The node's event log: the actor records joins, leaves, the senior,
    /// settings and state changes in it; the plugin manager and the admin
    /// API record theirs.
    events: crate::event_log::EventLog,
}

/// The raw events this node's strategies emitted, before the host filters
/// them: (the strategy instance's generation, the event).
#[derive(Clone, Default)]
pub struct EventTap(Arc<Mutex<Vec<(u64, clusterhost_plugin_api::cluster::StrategyEvent)>>>);

impl EventTap {
    /// The events so far.
    pub fn events(&self) -> Vec<(u64, clusterhost_plugin_api::cluster::StrategyEvent)> {
        lock(&self.0).clone()
    }

    pub(crate) fn record(&self, generation: u64, event: &clusterhost_plugin_api::cluster::StrategyEvent) {
        lock(&self.0).push((generation, event.clone()));
    }
}

impl std::fmt::Debug for ClusterManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterManager").field("node", &self.shared.node).finish_non_exhaustive()
    }
}

impl ClusterManager {
    /// Starts a manager for node `node` on the current tokio runtime.
    /// `enabled` is the node's `clustering.enabled` property; a value set
    /// cluster-wide later wins over it. The receiver gets strategies to fault.
    /// While `held`, a strategy that arrives waits for [`release`](Self::release)
    /// before its startup delay begins (a node holds until its initial
    /// plugin scan is done).
    pub fn start(
        node: &str,
        config: ClusterConfig,
        enabled: bool,
        held: bool,
    ) -> (ClusterManager, mpsc::UnboundedReceiver<FaultReport>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let (faults, fault_rx) = mpsc::unbounded_channel();
        let (status, _) = watch::channel((ClusterState::Standalone { reason: None }, enabled, None));
        let runtime = tokio::runtime::Handle::current();
        let tasks = Arc::new(tasks::Tasks::new(node, runtime.clone()));
        let entries = entry_events::EntryEvents::new(node);
        let standalone =
            Arc::new(StrategyRef::standalone(standalone::Standalone::new(node, tasks.clone(), entries.clone())));
        let shared = Arc::new(Shared {
            node: node.to_string(),
            caches: CacheFactory::new(standalone.clone(), entries.clone()),
            entries,
            tasks,
            listeners: events::Listeners::default(),
            config: Mutex::new(config),
            status,
            serving: Mutex::new(standalone.clone()),
            standalone,
            attached: Mutex::new(None),
            owners: locks::Owners::default(),
            next_generation: AtomicU64::new(1),
            runtime,
            tap: std::sync::OnceLock::new(),
            released: AtomicBool::new(!held),
            events: crate::event_log::EventLog::default(),
        });
        let bounds = shared.caches.apply_bounds(lock(&shared.config).bounds.clone());
        let caches = shared.caches.clone();
        let budget = lock(&shared.config).max_execution;
        shared.runtime.spawn(async move {
            for (cache, _) in bounds {
                let _ = caches.send_bounds(&cache, None, budget).await;
            }
        });
        // The standalone caches' expired entries go within this period.
        shared.caches.spawn_sweeper(SWEEP_EVERY);
        Actor::spawn(shared.clone(), faults, enabled, held, rx);
        (ClusterManager { shared, commands }, fault_rx)
    }

    /// This node's name (its member id).
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The node's event log.
    pub fn event_log(&self) -> &crate::event_log::EventLog {
        &self.shared.events
    }

    /// The cache factory.
    pub fn caches(&self) -> &CacheFactory {
        &self.shared.caches
    }

    /// Replaces the startup / execution settings; they apply from the next start.
    pub fn apply(&self, config: ClusterConfig) {
        self.shared.caches.apply_protection(config.protection.clone());
        let changed = self.shared.caches.apply_bounds(config.bounds.clone());
        *lock(&self.shared.config) = config;
        if !changed.is_empty() {
            let manager = self.clone();
            self.shared.runtime.spawn(async move {
                let budget = manager.config().max_execution;
                for (cache, bounds) in changed {
                    tracing::info!(cache = %cache, "cache bounds now: {bounds}");
                    let plugin = lock(&manager.shared.attached).clone();
                    // A refusal is logged and shown in status by send_bounds.
                    let _ = manager.shared.caches.send_bounds(&cache, plugin.as_deref(), budget).await;
                }
            });
        }
    }

    /// The cache `name`, typed, with `bounds` (each field overridden by a
    /// `cache.<name>.*` property that sets it): applied on this node's
    /// standalone strategy and on the strategy in service before it
    /// returns. Every member should open it with the same bounds. Refused
    /// ([`ClusterError::Lacks`]) on a strategy without bounded caches
    /// (built before plugin API 0.1.3), or with the strategy's reason when
    /// it cannot keep one of them (e.g. max idle on gossip).
    pub async fn bounded_cache<K: serde::Serialize, V: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &str,
        bounds: clusterhost_plugin_api::cluster::CacheBounds,
    ) -> Result<Cache<K, V>, ClusterError> {
        self.shared.caches.code_bounds(name, bounds);
        let plugin = lock(&self.shared.attached).clone();
        self.shared.caches.send_bounds(name, plugin.as_deref(), self.config().max_execution).await?;
        Ok(self.shared.caches.cache(name))
    }

    fn config(&self) -> ClusterConfig {
        lock(&self.shared.config).clone()
    }

    /// The strategy serving caches, tasks and locks now.
    fn serving(&self) -> Arc<StrategyRef> {
        lock(&self.shared.serving).clone()
    }

    /// Adds a listener; listeners run in the order they were added.
    pub fn add_listener(&self, name: &str, listener: impl ClusterListener + 'static) {
        self.shared.listeners.add(name, Arc::new(listener));
    }

    /// A receiver of status changes (state, enabled, strategy label).
    pub fn subscribe(&self) -> watch::Receiver<(ClusterState, bool, Option<String>)> {
        self.shared.status.subscribe()
    }

    /// The node's clustering state.
    pub fn state(&self) -> ClusterState {
        self.shared.status.borrow().0.clone()
    }

    /// Whether clustering is enabled.
    pub fn enabled(&self) -> bool {
        self.shared.status.borrow().1
    }

    /// The full status, members included.
    pub fn status(&self) -> ClusterStatus {
        let (state, enabled, strategy) = self.shared.status.borrow().clone();
        let serving = self.serving();
        let senior = serving.senior_member();
        let members = serving
            .members()
            .into_iter()
            .map(|m: Member| MemberStatus {
                senior: senior.as_deref() == Some(m.id.as_str()),
                local: m.id == self.shared.node,
                id: m.id,
                address: m.address,
                started_at_ms: m.started_at_ms,
                plugin_version: m.plugin_version,
            })
            .collect();
        let protection = self.shared.caches.protection();
        ClusterStatus { node: self.shared.node.clone(), state, enabled, strategy, members, senior, protection }
    }

    /// Records every event this node's strategies emit from now on, as
    /// they emit it (the host's own filtering aside).
    pub fn tap_events(&self) -> EventTap {
        self.shared.tap.get_or_init(EventTap::default).clone()
    }

    /// The attached plugin strategy's own view (members, senior), whether
    /// or not this node is clustered; `None` without a plugin strategy.
    pub fn strategy_view(&self) -> Option<(Vec<Member>, Option<String>)> {
        let attached = lock(&self.shared.attached).clone()?;
        Some((attached.members(), attached.senior_member()))
    }

    /// The members of the cluster (empty while standalone).
    pub fn members(&self) -> Vec<Member> {
        self.serving().members()
    }

    /// The senior member; this node while standalone.
    pub fn senior_member(&self) -> String {
        self.serving().senior_member().unwrap_or_else(|| self.shared.node.clone())
    }

    /// Whether this node is the senior member (always, while standalone).
    pub fn is_senior(&self) -> bool {
        self.senior_member() == self.shared.node
    }

    /// The cluster's time (ms since the epoch); the local clock while standalone.
    pub fn cluster_time_ms(&self) -> u64 {
        self.serving().cluster_time_ms()
    }

    /// Entry events delivered to and dropped for listeners on this node,
    /// per cache (every cache that ever had a listener), and how many
    /// listener callbacks panicked.
    pub fn entry_event_counts(&self) -> (Vec<(String, EntryEventCounts)>, u64) {
        (self.shared.entries.counts(), self.shared.entries.panics())
    }

    /// Named counters of the attached strategy.
    pub fn strategy_stats(&self) -> Vec<(String, u64)> {
        lock(&self.shared.attached).as_ref().map(|s| s.stats()).unwrap_or_default()
    }

    /// Entries removed by bounds on this member, over every cache: (evicted,
    /// expired), the standalone strategy's plus the strategy in service's
    /// (its `cache_evictions` / `cache_expiries` counters).
    pub fn removed_by_bounds(&self) -> (u64, u64) {
        let mut stats = self.shared.standalone.stats();
        stats.extend(self.strategy_stats());
        let sum = |name: &str| stats.iter().filter(|(n, _)| n == name).map(|(_, v)| v).sum();
        (sum("cache_evictions"), sum("cache_expiries"))
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)
    }

    /// Switches clustering on or off on every member (through the strategy's
    /// cluster-wide settings; only this node while no strategy is loaded).
    pub async fn set_enabled(&self, enabled: bool) -> Result<(), ClusterError> {
        self.send(|done| Command::SetEnabled { enabled, done }).await?
    }

    /// Sets a cluster-wide setting (kept on this node while no strategy is loaded).
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), ClusterError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.send(|done| Command::PutSetting { key, value, done }).await?
    }

    /// The cluster-wide settings the attached strategy knows (this node's
    /// own while no strategy is loaded).
    pub fn settings(&self) -> Vec<(String, String)> {
        match lock(&self.shared.attached).as_ref() {
            Some(strategy) => strategy.settings(),
            None => self.shared.standalone.settings(),
        }
    }

    /// Ends the hold: a strategy already attached starts its startup delay now.
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::Release);
        let _ = self.commands.send(Command::Release);
    }

    /// Whether the hold is over: the node's initial plugin scan is done
    /// (always, for a manager started without a hold).
    pub fn released(&self) -> bool {
        self.shared.released.load(Ordering::Acquire)
    }

    /// Why the attached strategy does not serve while clustering is asked
    /// for: a cluster start attempt failed and another is coming, or the
    /// node gave up or lost the cluster. `(its plugin id, the reason)`;
    /// `None` while it serves, starts for the first time, or clustering is
    /// disabled. Shown as the reason of the strategy plugin's record.
    pub fn strategy_problem(&self) -> Option<(String, String)> {
        let plugin = lock(&self.shared.attached).as_ref()?.plugin.clone();
        let (state, enabled, _) = self.snapshot();
        let problem = match state {
            ClusterState::Starting { attempt, detail, .. } if attempt > 1 => detail,
            ClusterState::Standalone { reason: Some(reason) } if enabled && self.released() => reason,
            _ => return None,
        };
        Some((plugin, problem))
    }

    /// The status snapshot as the actor last published it: (state,
    /// clustering enabled, the attached strategy's label). One read of a
    /// watch channel, no call into the strategy: cheap enough for a
    /// health check.
    pub fn snapshot(&self) -> (ClusterState, bool, Option<String>) {
        self.shared.status.borrow().clone()
    }

    /// Leaves the cluster (caches kept) and stops the event thread.
    pub async fn shutdown(&self) {
        let _ = self.send(|done| Command::Shutdown { done }).await;
        self.shared.caches.stop();
    }

    // ---- strategies (called by the plugin manager) ----

    /// A strategy is in service: clustering starts after the startup delay
    /// if enabled. Returns once the actor took it.
    pub async fn attach(&self, plugin: &str, version: &str, strategy: StrategyBox, generation: u64) {
        let (plugin, version) = (plugin.to_string(), version.to_string());
        let _ = self.send(|done| Command::Attach { plugin, version, strategy, generation, done }).await;
    }

    /// The strategy of `plugin` goes out of service: this node leaves the
    /// cluster (keeping its caches) before the plugin is stopped.
    pub async fn detach(&self, plugin: &str) {
        let plugin = plugin.to_string();
        let _ = self.send(|done| Command::Detach { plugin, tell_strategy: true, done }).await;
    }

    /// As [`detach`](Self::detach) without telling the strategy (no
    /// `stop_clustering`): what the other members see when this node
    /// dies. For the conformance suite's in-process "crash".
    pub async fn abandon(&self, plugin: &str) {
        let plugin = plugin.to_string();
        let _ = self.send(|done| Command::Detach { plugin, tell_strategy: false, done }).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn the_actor_ends_when_the_last_handle_is_dropped() {
        let (manager, _faults) = ClusterManager::start("solo", ClusterConfig::default(), true, false);
        let shared = Arc::downgrade(&manager.shared);
        let (_callbacks, _generation) = manager.callbacks();
        let copy = manager.clone();
        drop(manager);
        tokio::task::yield_now().await;
        assert!(shared.upgrade().is_some(), "a clone still holds the manager");
        drop(copy);
        // The actor held the last strong reference; it lets go once it ends.
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the actor did not end after the last handle was dropped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
