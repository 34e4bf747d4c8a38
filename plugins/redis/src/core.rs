//! The state one member's redis strategy shares between its jobs (each in
//! its own module, each owning its own part here), and its lifecycle:
//! start the background loops, stop them, gather the stats.

use std::sync::{Arc, Mutex};

use clusterhost_plugin_api::cluster::StrategyEvent;
use clusterhost_plugin_api::ClusterHost;
use tokio::sync::Notify;

use crate::commands::Link;
use crate::config::Config;
use crate::keys::Keys;
use crate::listening::Listening;
use crate::locks::Locks;
use crate::membership::Membership;
use crate::near::Near;
use crate::storage::Storage;
use crate::tasks::Tasks;

/// Locks a std mutex, poisoned or not: no critical section here leaves its
/// state half-changed, so a panic elsewhere is no reason to stop.
pub(crate) use clusterhost_plugin_api::sync::lock;

/// One member's redis strategy: the state every job shares, and the jobs'
/// own parts. Owned by the plugin (`Arc`); the background loops hold a
/// `Weak` so that dropping the plugin's copy ends them.
pub struct Core {
    /// This node's name: its member id in Redis.
    pub member: String,
    /// `conf/redis.toml`, read once at plugin start.
    pub(crate) config: Config,
    /// Every key and channel name, under `key_prefix`.
    pub(crate) keys: Keys,
    /// The host's callbacks (events, incoming tasks); `None` until the host
    /// asks for the strategy.
    host: Mutex<Option<ClusterHost>>,
    /// This member's join state and its view of the others.
    pub(crate) membership: Membership,
    /// Wakes the heartbeat loop (a join, leave or setting elsewhere, a
    /// connection reset, a pub/sub resubscribe) so it acts before its interval.
    pub(crate) wake: Notify,
    /// The command connection, shared by every job that talks to Redis.
    pub(crate) link: Link,
    /// The locks this member holds, and the wake-up for waiters.
    pub(crate) locks: Locks,
    /// Task calls out and in.
    pub(crate) tasks: Tasks,
    /// What this member knows of the caches in Redis.
    pub(crate) storage: Storage,
    /// Which caches this member's host listens to (entry events).
    pub(crate) listening: Listening,
    /// The local copies of near-cached caches (`[near_cache]`).
    pub(crate) near: Arc<Near>,
    /// The heartbeat and pub/sub loops, aborted when the plugin stops.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Core {
    /// The strategy of member `member`, whose key will carry the plugin
    /// `version` and the node's `address`; nothing runs until [`Core::run`].
    pub fn new(member: String, version: String, address: String, config: Config) -> Arc<Core> {
        Arc::new(Core {
            member,
            keys: Keys::new(&config.key_prefix),
            host: Mutex::new(None),
            membership: Membership::new(version, address),
            wake: Notify::new(),
            link: Link::default(),
            locks: Locks::default(),
            tasks: Tasks::new(),
            storage: Storage::default(),
            listening: Listening::default(),
            near: Arc::new(Near::new(&config.near_cache)),
            background: Mutex::new(Vec::new()),
            config,
        })
    }

    /// Starts the background work: connecting, heartbeats, pub/sub.
    pub fn run(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let heartbeat = tokio::spawn(Core::heartbeat_loop(weak.clone()));
        let fence = tokio::spawn(Core::fence_loop(weak.clone()));
        let pubsub = tokio::spawn(Core::pubsub_loop(weak.clone()));
        let sweep = tokio::spawn(Core::sweep_loop(weak.clone()));
        let mut background = lock(&self.background);
        background.extend([heartbeat, fence, pubsub, sweep]);
        if self.near.enabled() {
            background.push(tokio::spawn(Core::near_loop(weak)));
        }
    }

    /// Hands the strategy to a host (at start, or a new host after an upgrade).
    pub fn set_host(&self, host: ClusterHost) {
        *lock(&self.host) = Some(host);
        // Settings already known are news to a new host.
        for (key, value) in self.view().settings {
            self.emit(StrategyEvent::SettingChanged { key, value });
        }
    }

    /// The host, once it has asked for the strategy.
    pub(crate) fn host(&self) -> Option<ClusterHost> {
        lock(&self.host).clone()
    }

    /// Tells the host (once it has asked for the strategy) what changed.
    pub(crate) fn emit(&self, event: StrategyEvent) {
        if let Some(host) = self.host() {
            host.emit(event);
        }
    }

    /// Stops everything (the plugin stops).
    pub async fn shutdown(&self) {
        self.leave().await;
        self.tasks.abort_incoming();
        // The connection's own background tasks end with it, before the
        // plugin's runtime goes.
        self.link.close();
        self.near.close();
        let tasks: Vec<_> = lock(&self.background).drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The counters the host shows for this strategy.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let (evictions, expiries) = self.storage.removed_by_bounds();
        let mut stats = vec![
            ("redis_commands".into(), self.link.commands()),
            ("redis_errors".into(), self.link.errors()),
            ("redis_lost".into(), self.membership.redis_lost()),
            ("rejoins".into(), self.membership.rejoins()),
            ("process_deaths_confirmed".into(), self.membership.deaths()),
            ("tasks_sent".into(), self.tasks.sent()),
            ("tasks_received".into(), self.tasks.received()),
            ("locks_held".into(), self.locks.count()),
            ("entry_events_refused".into(), self.storage.refused_events.load(std::sync::atomic::Ordering::Relaxed)),
            // By this member's scripts (reads, writes, configures and, on the senior, the sweep).
            ("cache_evictions".into(), evictions),
            ("cache_expiries".into(), expiries),
        ];
        if self.near.enabled() {
            stats.extend(self.near.stats());
        }
        stats
    }
}
