//! The cluster manager: the host's side of the strategy contract.
//!
//! One task (the "actor") owns the clustering state and handles, in order:
//! strategies arriving and leaving, the strategy's events, the
//! cluster-wide enable switch and the startup delay / retry timers. For this
//! node's own join and leave the cache factory acts first, then the
//! listeners run in registration order; a failing or panicking listener is
//! reported and the others still run. With no strategy (or clustering
//! disabled) everything runs standalone: caches in memory, tasks and locks
//! on this node.

mod cache;
mod strategy;
mod task_stats;

use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RString, RVec};
use async_ffi::{FfiFuture, FutureExt};
use clusterhost_plugin_api::cluster::{
    now_ms, ClusterCallbacks, ClusterCallbacksBox, ClusterCallbacks_TO, FfiEvent, Member, StrategyBox, StrategyEvent,
    TaskOutcome, TaskReply, TaskTarget,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

pub use cache::{Cache, CacheFactory, CacheStats, RawCache};
pub use clusterhost_plugin_api::cluster::{Member as ClusterMember, TaskOutcome as Outcome, TaskTarget as Target};
pub use strategy::StrategyRef;
pub use task_stats::{TaskStats, LATENCY_BUCKETS};

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

/// An event delivered to listeners, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A member joined; `local` when it is this node.
    JoinedCluster { member: String, local: bool },
    /// A member left; `local` when it is this node.
    LeftCluster { member: String, local: bool },
    /// `member` became the senior member.
    MarkedSeniorClusterMember { member: String, local: bool },
    /// A cluster-wide setting changed.
    SettingChanged { key: String, value: String },
}

/// Receives cluster events. Runs on the event thread: return quickly and
/// spawn longer work.
pub trait ClusterListener: Send + Sync {
    fn on_event(&self, event: &ClusterEvent) -> Result<(), String>;
}

impl<F: Fn(&ClusterEvent) -> Result<(), String> + Send + Sync> ClusterListener for F {
    fn on_event(&self, event: &ClusterEvent) -> Result<(), String> {
        self(event)
    }
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

/// One member's answer to a typed task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult<T> {
    pub member: String,
    pub outcome: Result<T, TaskFailure>,
}

/// Why a member gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskFailure {
    #[error("{0}")]
    Error(String),
    #[error("timed out (cluster.max.execution.seconds)")]
    TimedOut,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(String, Vec<u8>) -> BoxFuture<Result<Vec<u8>, String>> + Send + Sync>;

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

enum Command {
    Attach { plugin: String, version: String, strategy: StrategyBox, generation: u64, done: oneshot::Sender<()> },
    Detach { plugin: String, done: oneshot::Sender<()> },
    Event { generation: u64, event: StrategyEvent },
    SetEnabled { enabled: bool, done: oneshot::Sender<Result<(), ClusterError>> },
    PutSetting { key: String, value: String, done: oneshot::Sender<Result<(), ClusterError>> },
    Shutdown { done: oneshot::Sender<()> },
    Release,
}

/// The cluster manager; cheap to clone.
#[derive(Clone)]
pub struct ClusterManager {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    caches: CacheFactory,
    tasks: Mutex<HashMap<String, Handler>>,
    listeners: Mutex<Vec<(String, Arc<dyn ClusterListener>)>>,
    config: Mutex<ClusterConfig>,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Sender<(ClusterState, bool, Option<String>)>,
    /// The strategy while this node is clustered.
    clustered: Mutex<Option<Arc<StrategyRef>>>,
    /// The attached strategy (clustered or not): settings flow through it.
    attached: Mutex<Option<Arc<StrategyRef>>>,
    local_locks: LocalLocks,
    next_owner: AtomicU64,
    next_generation: AtomicU64,
    faults: mpsc::UnboundedSender<FaultReport>,
    runtime: tokio::runtime::Handle,
    task_counters: task_stats::TaskCounters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for ClusterManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterManager").field("node", &self.inner.node).finish_non_exhaustive()
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
        let inner = Arc::new(Inner {
            node: node.to_string(),
            caches: CacheFactory::default(),
            tasks: Mutex::new(HashMap::new()),
            listeners: Mutex::new(Vec::new()),
            config: Mutex::new(config),
            commands,
            status,
            clustered: Mutex::new(None),
            attached: Mutex::new(None),
            local_locks: LocalLocks::default(),
            next_owner: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            faults,
            runtime: tokio::runtime::Handle::current(),
            task_counters: Default::default(),
        });
        let actor = Actor {
            inner: inner.clone(),
            attached: None,
            generation: 0,
            phase: Phase::Idle,
            held,
            enabled: EnabledSetting { enabled, at_ms: 0, by: "properties".into() },
        };
        tokio::spawn(actor.run(rx));
        (ClusterManager { inner }, fault_rx)
    }

    /// This node's name (its member id).
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The cache factory.
    pub fn caches(&self) -> &CacheFactory {
        &self.inner.caches
    }

    /// Replaces the startup / execution settings; they apply from the next start.
    pub fn apply(&self, config: ClusterConfig) {
        *lock(&self.inner.config) = config;
    }

    fn config(&self) -> ClusterConfig {
        lock(&self.inner.config).clone()
    }

    /// Adds a listener; listeners run in the order they were added.
    pub fn add_listener(&self, name: &str, listener: impl ClusterListener + 'static) {
        lock(&self.inner.listeners).push((name.to_string(), Arc::new(listener)));
    }

    /// A receiver of status changes (state, enabled, strategy label).
    pub fn subscribe(&self) -> watch::Receiver<(ClusterState, bool, Option<String>)> {
        self.inner.status.subscribe()
    }

    /// The node's clustering state.
    pub fn state(&self) -> ClusterState {
        self.inner.status.borrow().0.clone()
    }

    /// Whether clustering is enabled.
    pub fn enabled(&self) -> bool {
        self.inner.status.borrow().1
    }

    /// The full status, members included.
    pub fn status(&self) -> ClusterStatus {
        let (state, enabled, strategy) = self.inner.status.borrow().clone();
        let clustered = lock(&self.inner.clustered).clone();
        let (members, senior) = match &clustered {
            Some(s) => (s.members(), s.senior_member()),
            None => (Vec::new(), None),
        };
        let members = members
            .into_iter()
            .map(|m: Member| MemberStatus {
                senior: senior.as_deref() == Some(m.id.as_str()),
                local: m.id == self.inner.node,
                id: m.id,
                address: m.address,
                started_at_ms: m.started_at_ms,
                plugin_version: m.plugin_version,
            })
            .collect();
        ClusterStatus { node: self.inner.node.clone(), state, enabled, strategy, members, senior }
    }

    /// The members of the cluster (empty while standalone).
    pub fn members(&self) -> Vec<Member> {
        lock(&self.inner.clustered).as_ref().map(|s| s.members()).unwrap_or_default()
    }

    /// The senior member; this node while standalone.
    pub fn senior_member(&self) -> String {
        let clustered = lock(&self.inner.clustered).clone();
        clustered.and_then(|s| s.senior_member()).unwrap_or_else(|| self.inner.node.clone())
    }

    /// Whether this node is the senior member (always, while standalone).
    pub fn is_senior(&self) -> bool {
        self.senior_member() == self.inner.node
    }

    /// The cluster's time (ms since the epoch); the local clock while standalone.
    pub fn cluster_time_ms(&self) -> u64 {
        let clustered = lock(&self.inner.clustered).clone();
        clustered.map(|s| s.cluster_time_ms()).unwrap_or_else(now_ms)
    }

    /// Counters of the tasks this node sent and called.
    pub fn task_stats(&self) -> TaskStats {
        self.inner.task_counters.snapshot()
    }

    /// Named counters of the active strategy.
    pub fn strategy_stats(&self) -> Vec<(String, u64)> {
        lock(&self.inner.attached).as_ref().map(|s| s.stats()).unwrap_or_default()
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.inner.commands.send(make(tx)).map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)
    }

    /// Switches clustering on or off on every member (through the strategy's
    /// cluster-wide settings; only this node while no strategy is loaded).
    pub async fn set_enabled(&self, enabled: bool) -> Result<(), ClusterError> {
        self.send(|done| Command::SetEnabled { enabled, done }).await?
    }

    /// Sets a cluster-wide setting (kept locally while no strategy is loaded).
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), ClusterError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.send(|done| Command::PutSetting { key, value, done }).await?
    }

    /// The cluster-wide settings the strategy knows.
    pub fn settings(&self) -> Vec<(String, String)> {
        lock(&self.inner.attached).as_ref().map(|s| s.settings()).unwrap_or_default()
    }

    /// Ends the hold: a strategy already attached starts its startup delay now.
    pub fn release(&self) {
        let _ = self.inner.commands.send(Command::Release);
    }

    /// Leaves the cluster (caches kept) and stops the event thread.
    pub async fn shutdown(&self) {
        let _ = self.send(|done| Command::Shutdown { done }).await;
    }

    // ---- strategies (called by the plugin manager) ----

    /// Callbacks for a strategy about to be made, and their generation.
    pub fn callbacks(&self) -> (ClusterCallbacksBox, u64) {
        let generation = self.inner.next_generation.fetch_add(1, Ordering::SeqCst);
        let callbacks = Callbacks { inner: Arc::downgrade(&self.inner), generation };
        (ClusterCallbacks_TO::from_ptr(abi_stable::std_types::RArc::new(callbacks), TD_Opaque), generation)
    }

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
        let _ = self.send(|done| Command::Detach { plugin, done }).await;
    }

    // ---- tasks ----

    /// Registers the handler for task `name` (replacing an earlier one).
    pub fn register_task_raw<F, Fut>(&self, name: &str, handler: F)
    where
        F: Fn(String, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |from, payload| Box::pin(handler(from, payload)));
        lock(&self.inner.tasks).insert(name.to_string(), handler);
    }

    /// Registers a typed handler: requests and replies are encoded with postcard.
    pub fn register_task<Req, Resp, F, Fut>(&self, name: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, String>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let task = name.to_string();
        self.register_task_raw(name, move |_from, payload| {
            let handler = handler.clone();
            let task = task.clone();
            async move {
                let request: Req = postcard::from_bytes(&payload)
                    .map_err(|e| format!("task {task}: could not decode the request: {e}"))?;
                let reply = handler(request).await?;
                postcard::to_allocvec(&reply).map_err(|e| format!("task {task}: could not encode the reply: {e}"))
            }
        });
    }

    /// Sends a task without waiting for it to run.
    pub async fn send_task_raw(&self, target: TaskTarget, name: &str, payload: Vec<u8>) -> Result<(), ClusterError> {
        self.inner.task_counters.sent();
        let clustered = lock(&self.inner.clustered).clone();
        match clustered {
            Some(s) => s.send_task(target, name, payload).await,
            None => {
                if self.local_targets(&target).is_ok_and(|local| local) {
                    let run = run_local(&self.inner, self.inner.node.clone(), name, payload);
                    self.inner.runtime.spawn(run);
                }
                Ok(())
            }
        }
    }

    /// Whether a standalone node runs `target` itself; Err(reply) when the
    /// target names another member.
    fn local_targets(&self, target: &TaskTarget) -> Result<bool, TaskReply> {
        match target {
            TaskTarget::All | TaskTarget::Senior => Ok(true),
            TaskTarget::Others => Ok(false),
            TaskTarget::Member(m) if *m == self.inner.node => Ok(true),
            TaskTarget::Member(m) => Err(TaskReply {
                member: m.clone(),
                outcome: TaskOutcome::Error(format!("member {m} is not in the cluster: this node runs standalone")),
            }),
        }
    }

    /// Runs a task on the target members and waits at most
    /// `cluster.max.execution.seconds`: one reply per member (value, error
    /// or timed out), never a silently partial answer.
    pub async fn call_task_raw(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<TaskReply>, ClusterError> {
        let started = Instant::now();
        let replies = self.call_task_uncounted(target, name, payload).await?;
        let count = |f: fn(&TaskOutcome) -> bool| replies.iter().filter(|r| f(&r.outcome)).count() as u64;
        self.inner.task_counters.called(
            started.elapsed(),
            count(|o| matches!(o, TaskOutcome::Value(_))),
            count(|o| matches!(o, TaskOutcome::Error(_))),
            count(|o| matches!(o, TaskOutcome::TimedOut)),
        );
        Ok(replies)
    }

    async fn call_task_uncounted(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<TaskReply>, ClusterError> {
        let budget = self.config().max_execution;
        let clustered = lock(&self.inner.clustered).clone();
        let Some(strategy) = clustered else {
            return Ok(match self.local_targets(&target) {
                Ok(false) => Vec::new(),
                Err(reply) => vec![reply],
                Ok(true) => {
                    let run = run_local(&self.inner, self.inner.node.clone(), name, payload);
                    let outcome = match tokio::time::timeout(budget, run).await {
                        Ok(Ok(value)) => TaskOutcome::Value(value),
                        Ok(Err(e)) => TaskOutcome::Error(e),
                        Err(_) => TaskOutcome::TimedOut,
                    };
                    vec![TaskReply { member: self.inner.node.clone(), outcome }]
                }
            });
        };
        // The members the answer must cover, as the strategy sees them now.
        let expected: Vec<String> = match &target {
            TaskTarget::All => strategy.members().into_iter().map(|m| m.id).collect(),
            TaskTarget::Others => {
                strategy.members().into_iter().map(|m| m.id).filter(|id| *id != self.inner.node).collect()
            }
            TaskTarget::Member(m) => vec![m.clone()],
            TaskTarget::Senior => strategy.senior_member().into_iter().collect(),
        };
        // A little grace over the budget for the strategy to collect its
        // replies; past that every missing member counts as timed out.
        let grace = budget + Duration::from_millis(500).min(budget);
        let mut replies = match tokio::time::timeout(grace, strategy.call_task(target, name, payload, budget)).await {
            Ok(replies) => replies?,
            Err(_) => Vec::new(),
        };
        for member in expected {
            if !replies.iter().any(|r| r.member == member) {
                replies.push(TaskReply { member, outcome: TaskOutcome::TimedOut });
            }
        }
        Ok(replies)
    }

    /// Typed form of [`call_task_raw`](Self::call_task_raw).
    pub async fn call_task<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: TaskTarget,
        name: &str,
        request: &Req,
    ) -> Result<Vec<TaskResult<Resp>>, ClusterError> {
        let payload = postcard::to_allocvec(request)
            .map_err(|e| ClusterError::TaskCodec { task: name.to_string(), detail: e.to_string() })?;
        let replies = self.call_task_raw(target, name, payload).await?;
        Ok(replies
            .into_iter()
            .map(|r| TaskResult {
                member: r.member,
                outcome: match r.outcome {
                    TaskOutcome::Value(bytes) => postcard::from_bytes(&bytes)
                        .map_err(|e| TaskFailure::Error(format!("could not decode the reply: {e}"))),
                    TaskOutcome::Error(e) => Err(TaskFailure::Error(e)),
                    TaskOutcome::TimedOut => Err(TaskFailure::TimedOut),
                },
            })
            .collect())
    }

    // ---- locks ----

    fn owner(&self) -> String {
        format!("{}/{}", self.inner.node, self.inner.next_owner.fetch_add(1, Ordering::Relaxed))
    }

    /// Waits for the cluster-wide lock `name` (this node's while standalone).
    pub async fn lock(&self, name: &str) -> Result<ClusterLock, ClusterError> {
        let owner = self.owner();
        let clustered = lock(&self.inner.clustered).clone();
        match &clustered {
            Some(s) => s.lock(name, &owner).await?,
            None => self.inner.local_locks.lock(name, &owner).await,
        }
        Ok(ClusterLock { name: name.to_string(), owner, via: clustered, inner: self.inner.clone(), released: false })
    }

    /// Takes the lock `name` if that happens within `timeout`.
    pub async fn try_lock(&self, name: &str, timeout: Duration) -> Result<Option<ClusterLock>, ClusterError> {
        let owner = self.owner();
        let clustered = lock(&self.inner.clustered).clone();
        let taken = match &clustered {
            Some(s) => s.try_lock(name, &owner, timeout).await?,
            None => tokio::time::timeout(timeout, self.inner.local_locks.lock(name, &owner)).await.is_ok(),
        };
        Ok(taken.then(|| ClusterLock {
            name: name.to_string(),
            owner,
            via: clustered,
            inner: self.inner.clone(),
            released: false,
        }))
    }
}

fn run_local(inner: &Arc<Inner>, from: String, name: &str, payload: Vec<u8>) -> BoxFuture<Result<Vec<u8>, String>> {
    let handler = lock(&inner.tasks).get(name).cloned();
    let node = inner.node.clone();
    let name = name.to_string();
    let runtime = inner.runtime.clone();
    Box::pin(async move {
        let Some(handler) = handler else {
            return Err(format!("no handler for task {name} on member {node}; register it on every member"));
        };
        // On the host's runtime, so a panicking handler is contained.
        match runtime.spawn(handler(from, payload)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(format!("the handler for task {name} panicked on member {node}")),
            Err(e) => Err(format!("the handler for task {name} on member {node} was cancelled: {e}")),
        }
    })
}

/// A held lock; release it with [`unlock`](Self::unlock) (dropping it
/// releases it in the background).
pub struct ClusterLock {
    name: String,
    owner: String,
    via: Option<Arc<StrategyRef>>,
    inner: Arc<Inner>,
    released: bool,
}

impl ClusterLock {
    /// The lock's owner token.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Releases the lock; false if it was no longer held (for example this
    /// node left the cluster, which released it).
    pub async fn unlock(mut self) -> Result<bool, ClusterError> {
        self.released = true;
        match &self.via {
            Some(s) => s.unlock(&self.name, &self.owner).await,
            None => Ok(self.inner.local_locks.unlock(&self.name, &self.owner)),
        }
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (name, owner, via, inner) = (self.name.clone(), self.owner.clone(), self.via.clone(), self.inner.clone());
        self.inner.runtime.spawn(async move {
            let _ = match via {
                Some(s) => s.unlock(&name, &owner).await,
                None => Ok(inner.local_locks.unlock(&name, &owner)),
            };
        });
    }
}

/// Locks while standalone.
#[derive(Default)]
struct LocalLocks {
    held: Mutex<HashMap<String, String>>,
    released: tokio::sync::Notify,
}

impl LocalLocks {
    async fn lock(&self, name: &str, owner: &str) {
        loop {
            let released = self.released.notified();
            {
                let mut held = lock(&self.held);
                if !held.contains_key(name) {
                    held.insert(name.to_string(), owner.to_string());
                    return;
                }
            }
            released.await;
        }
    }

    fn unlock(&self, name: &str, owner: &str) -> bool {
        let mut held = lock(&self.held);
        if held.get(name).is_some_and(|o| o == owner) {
            held.remove(name);
            drop(held);
            self.released.notify_waiters();
            true
        } else {
            false
        }
    }
}

/// The host's callbacks for one strategy instance.
#[derive(Clone)]
struct Callbacks {
    inner: std::sync::Weak<Inner>,
    generation: u64,
}

impl ClusterCallbacks for Callbacks {
    fn event(&self, event: FfiEvent) {
        let Some(inner) = self.inner.upgrade() else { return };
        match event.decode() {
            Some(event) => {
                let _ = inner.commands.send(Command::Event { generation: self.generation, event });
            }
            None => tracing::debug!("ignored a cluster event of a kind this host does not know"),
        }
    }

    fn run_task(&self, from: RStr<'_>, name: RStr<'_>, payload: RVec<u8>) -> FfiFuture<RResult<RVec<u8>, RString>> {
        let Some(inner) = self.inner.upgrade() else {
            return async { RResult::RErr(RString::from("the node is shutting down")) }.into_ffi();
        };
        let (tx, rx) = oneshot::channel();
        let run = run_local(&inner, from.to_string(), name.as_str(), payload.into());
        // The handler runs on the host's runtime; the plugin only awaits the answer.
        inner.runtime.spawn(async move {
            let _ = tx.send(run.await);
        });
        async move {
            match rx.await {
                Ok(Ok(value)) => RResult::ROk(value.into()),
                Ok(Err(e)) => RResult::RErr(e.into()),
                Err(_) => RResult::RErr("the task was dropped by the host".into()),
            }
        }
        .into_ffi()
    }
}

// ---- the actor ----

struct Attached {
    strategy: Arc<StrategyRef>,
}

enum Phase {
    /// Not clustered and not trying to (no strategy, disabled, gave up, lost the cluster).
    Idle,
    /// Attempt `attempt` starts at `at`.
    Waiting {
        at: Instant,
        attempt: u32,
    },
    Clustered,
}

struct Actor {
    inner: Arc<Inner>,
    attached: Option<Attached>,
    generation: u64,
    phase: Phase,
    /// Strategies wait for `Release` (the initial plugin scan) before starting.
    held: bool,
    enabled: EnabledSetting,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        // Commands that arrived while a cluster start was running, in order.
        let mut pending = std::collections::VecDeque::new();
        loop {
            let deadline = match self.phase {
                Phase::Waiting { at, .. } => Some(at),
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
                Command::Detach { plugin, done } => {
                    if self.attached.as_ref().is_some_and(|a| a.strategy.plugin == plugin) {
                        self.leave("its strategy plugin was stopped", true).await;
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
                            self.dispatch(ClusterEvent::SettingChanged { key, value });
                            Ok(())
                        }
                    };
                    let _ = done.send(result);
                }
                Command::Release => {
                    self.held = false;
                    if self.attached.is_some() && self.enabled.enabled && matches!(self.phase, Phase::Idle) {
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
        lock(&self.inner.config).clone()
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
        self.inner.status.send_replace((state, enabled, label));
    }

    fn set_attached(&mut self, attached: Option<Attached>) {
        *lock(&self.inner.attached) = attached.as_ref().map(|a| a.strategy.clone());
        self.attached = attached;
        if self.attached.is_none() {
            self.phase = Phase::Idle;
        }
    }

    fn disabled_reason(&self) -> String {
        if self.enabled.at_ms == 0 {
            "clustering.enabled is false in clusterhost.properties".to_string()
        } else {
            format!(
                "clustering was disabled cluster-wide by {} at {}",
                self.enabled.by,
                crate::logging::human_time(self.enabled.at_ms)
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
        self.generation = generation;
        self.set_attached(Some(Attached { strategy: strategy.clone() }));
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
            self.phase = Phase::Idle;
            let reason = "clustering starts once the initial plugin scan is done".to_string();
            self.set_state(ClusterState::Standalone { reason: Some(reason) });
        } else if self.enabled.enabled {
            self.begin_delay();
        } else {
            self.phase = Phase::Idle;
            self.set_state(ClusterState::Standalone { reason: Some(self.disabled_reason()) });
        }
    }

    fn begin_delay(&mut self) {
        let delay = self.config().startup_delay;
        self.phase = Phase::Waiting { at: Instant::now() + delay, attempt: 1 };
        self.set_starting(1, delay);
    }

    async fn publish_enabled(&self, strategy: &StrategyRef) {
        let value = serde_json::to_string(&self.enabled).unwrap_or_default();
        if let Err(e) = strategy.put_setting(CLUSTERING_ENABLED, &value).await {
            tracing::warn!("could not publish the clustering switch to the cluster: {e}");
        }
    }

    fn set_starting(&self, attempt: u32, wait: Duration) {
        let attempts = self.config().retry_count + 1;
        let detail = if attempt == 1 {
            format!("clustering starts in {:.1} s (cluster.startup.delay.seconds)", wait.as_secs_f64())
        } else {
            format!("cluster start attempt {attempt} of {attempts} in {:.1} s", wait.as_secs_f64())
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
        let Phase::Waiting { attempt, .. } = self.phase else { return };
        let Some(strategy) = self.attached.as_ref().map(|a| a.strategy.clone()) else {
            self.phase = Phase::Idle;
            return;
        };
        let config = self.config();
        let attempts = config.retry_count + 1;
        tracing::info!(strategy = %strategy.label(), "starting clustering (attempt {attempt} of {attempts})");
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
                            self.phase = Phase::Idle;
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
            self.phase = Phase::Waiting { at: Instant::now() + config.retry_interval, attempt: attempt + 1 };
            self.set_starting(attempt + 1, config.retry_interval);
        } else {
            self.phase = Phase::Idle;
            let reason = format!(
                "clustering could not start after {attempts} attempt(s); last error: {error}; fix the cause, then re-enable clustering or republish the strategy plugin"
            );
            self.set_state(ClusterState::Standalone { reason: Some(reason) });
        }
    }

    fn fault(&mut self, reason: String) {
        if let Some(attached) = &self.attached {
            let _ = self
                .inner
                .faults
                .send(FaultReport { plugin: attached.strategy.plugin.clone(), reason: reason.clone() });
        }
        self.set_attached(None);
        self.set_state(ClusterState::Faulted { reason });
    }

    /// This node is in the cluster: caches first, then listeners.
    async fn join(&mut self, strategy: &Arc<StrategyRef>) -> Result<(), ClusterError> {
        match self.inner.caches.join(strategy.clone()).await {
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
        *lock(&self.inner.clustered) = Some(strategy.clone());
        self.phase = Phase::Clustered;
        self.set_state(ClusterState::Clustered);
        let node = self.inner.node.clone();
        self.dispatch(ClusterEvent::JoinedCluster { member: node, local: true });
        Ok(())
    }

    /// This node leaves (if clustered): caches copied out first, then the
    /// strategy told (when `tell_strategy`), then listeners.
    async fn leave(&mut self, why: &str, tell_strategy: bool) {
        if !matches!(self.phase, Phase::Clustered) {
            self.phase = Phase::Idle;
            return;
        }
        let kept = self.inner.caches.leave().await;
        *lock(&self.inner.clustered) = None;
        self.phase = Phase::Idle;
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
        let node = self.inner.node.clone();
        self.dispatch(ClusterEvent::LeftCluster { member: node, local: true });
    }

    async fn on_event(&mut self, event: StrategyEvent) {
        let node = self.inner.node.clone();
        let clustered = matches!(self.phase, Phase::Clustered);
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
                self.dispatch(ClusterEvent::JoinedCluster { member, local: false })
            }
            StrategyEvent::Left { member } if clustered => {
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
            EnabledSetting { enabled, at_ms: now_ms().max(self.enabled.at_ms + 1), by: self.inner.node.clone() };
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
        } else if self.attached.is_some() && !self.held && matches!(self.phase, Phase::Idle) {
            // Re-enabled: start now (the startup delay is for a strategy's arrival).
            self.phase = Phase::Waiting { at: Instant::now(), attempt: 1 };
            self.set_starting(1, Duration::ZERO);
        } else if self.attached.is_none() {
            self.set_state(ClusterState::Standalone { reason: None });
        }
    }

    /// Calls every listener in order; failures are reported, never fatal.
    fn dispatch(&self, event: ClusterEvent) {
        tracing::debug!(?event, "cluster event");
        let listeners = lock(&self.inner.listeners).clone();
        for (name, listener) in listeners {
            match catch_unwind(AssertUnwindSafe(|| listener.on_event(&event))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(listener = %name, ?event, "cluster listener failed: {e}"),
                Err(_) => tracing::error!(listener = %name, ?event, "cluster listener panicked; the others still run"),
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
