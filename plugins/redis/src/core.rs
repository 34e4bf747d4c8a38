//! The redis strategy: membership by expiring keys and a join order,
//! caches as Redis hashes, locks with owner tokens and fencing numbers,
//! tasks and change notices over pub/sub, settings in a shared hash.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use clusterhost_plugin_api::cluster::{
    now_ms, CacheSize, Entry, Member, StrategyEvent, TaskReply, TaskTarget,
};
use clusterhost_plugin_api::{ClusterHost, PluginResult, Strategy};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::Config;
use crate::commands::Link;
use crate::error::Error;
use crate::keys::Keys;
use crate::locks::Locks;
use crate::storage::Storage;
use crate::tasks::Tasks;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a member's key holds.
#[doc(hidden)] // pub for the fuzz targets (fuzz/)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Tells this plugin instance's own key from a namesake's.
    instance: u64,
    started_at_ms: u64,
    version: String,
    address: String,
}

#[derive(Default, Clone)]
pub(crate) struct View {
    /// Live members by join number (this one included while joined).
    members: BTreeMap<u64, (String, Record)>,
    pub(crate) senior: Option<String>,
    settings: BTreeMap<String, String>,
}

impl View {
    pub(crate) fn ids(&self) -> impl Iterator<Item = &String> {
        self.members.values().map(|(id, _)| id)
    }
    pub(crate) fn get(&self, id: &str) -> Option<&Record> {
        self.members.values().find(|(m, _)| m == id).map(|(_, r)| r)
    }
}

/// Membership state of this member.
#[derive(Default)]
struct Joined {
    /// The host wants this member in the cluster (start .. stop).
    wanted: bool,
    /// Registered now (its key is live, as far as it knows).
    in_cluster: bool,
    /// The strategy left on its own (Redis lost): the next join is a rejoin.
    lost: bool,
    /// Last successful refresh of the member key.
    last_ok: Option<Instant>,
}

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
    record: Record,
    host: Mutex<Option<ClusterHost>>,
    joined: tokio::sync::Mutex<Joined>,
    /// Readable without waiting (for fail-fast checks and stats).
    in_cluster: AtomicBool,
    view: Mutex<View>,
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
    /// The heartbeat and pub/sub loops, aborted when the plugin stops.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    redis_lost: AtomicU64,
    rejoins: AtomicU64,
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

impl Core {
    pub fn new(member: String, version: String, address: String, config: Config) -> Arc<Core> {
        let record = Record { instance: random_u64(), started_at_ms: now_ms(), version, address };
        Arc::new(Core {
            member,
            keys: Keys::new(&config.key_prefix),
            config,
            record,
            host: Mutex::new(None),
            joined: tokio::sync::Mutex::new(Joined::default()),
            in_cluster: AtomicBool::new(false),
            view: Mutex::new(View::default()),
            wake: Notify::new(),
            link: Link::default(),
            locks: Locks::default(),
            tasks: Tasks::new(),
            storage: Storage::default(),
            background: Mutex::new(Vec::new()),
            stats: Stats::default(),
        })
    }

    /// Starts the background work: connecting, heartbeats, pub/sub.
    pub fn run(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let heartbeat = tokio::spawn(Core::heartbeat_loop(weak.clone()));
        let pubsub = tokio::spawn(Core::pubsub_loop(weak));
        lock(&self.background).extend([heartbeat, pubsub]);
    }

    pub fn set_host(&self, host: ClusterHost) {
        *lock(&self.host) = Some(host);
        // Settings already known are news to a new host.
        for (key, value) in self.view().settings {
            self.emit(StrategyEvent::SettingChanged { key, value });
        }
    }

    pub(crate) fn host(&self) -> Option<ClusterHost> {
        lock(&self.host).clone()
    }

    fn emit(&self, event: StrategyEvent) {
        if let Some(host) = self.host() {
            host.emit(event);
        }
    }

    /// This member is in the cluster now (its key is live, as far as it knows).
    pub(crate) fn in_cluster(&self) -> bool {
        self.in_cluster.load(Ordering::SeqCst)
    }

    pub(crate) fn view(&self) -> View {
        lock(&self.view).clone()
    }

    // ---- membership ----

    /// Registers this member: a join number, its key, a notice.
    /// `Ok(false)`: a live namesake holds the key.
    async fn register(&self) -> Result<bool, Error> {
        let record = serde_json::to_string(&self.record).map_err(Error::EncodeRecord)?;
        let key = self.keys.member(&self.member);
        let ttl = self.config.membership.member_ttl_ms;
        let set: Option<String> =
            self.query(redis::cmd("SET").arg(&key).arg(&record).arg("NX").arg("PX").arg(ttl)).await?;
        if set.is_none() {
            let existing: Option<String> = self.query(redis::cmd("GET").arg(&key)).await?;
            let ours = existing
                .and_then(|e| serde_json::from_str::<Record>(&e).ok())
                .is_some_and(|r| r.instance == self.record.instance);
            if !ours {
                return Ok(false);
            }
            let _: () = self.query(redis::cmd("SET").arg(&key).arg(&record).arg("PX").arg(ttl)).await?;
        }
        let seq: u64 = self.query(redis::cmd("INCR").arg(self.keys.seq())).await?;
        let _: () = self.query(redis::cmd("ZADD").arg(self.keys.joins()).arg(seq).arg(&self.member)).await?;
        self.publish_event(&format!("joined\n{}", self.member)).await;
        Ok(true)
    }

    /// `start_clustering`: connect, register (waiting out a crashed
    /// namesake's key), read the view.
    pub async fn join(self: &Arc<Self>) -> PluginResult<()> {
        let mut joined = self.joined.lock().await;
        if joined.in_cluster {
            return Ok(());
        }
        if let Err(e) = self.ensure_connected().await {
            // Joins by itself once Redis answers (the heartbeat's rejoin).
            *joined = Joined { wanted: true, in_cluster: false, lost: true, last_ok: None };
            return Err(e.into());
        }
        let deadline = Instant::now() + self.config.member_ttl() + self.config.heartbeat();
        loop {
            if self.register().await? {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::NamesakeLive {
                    member: self.member.clone(),
                    key: self.keys.member(&self.member),
                }
                .into());
            }
            tokio::time::sleep(self.config.heartbeat()).await;
        }
        *joined = Joined { wanted: true, in_cluster: true, lost: false, last_ok: Some(Instant::now()) };
        self.in_cluster.store(true, Ordering::SeqCst);
        drop(joined);
        self.storage.forget_registered();
        self.refresh_view().await?;
        tracing::info!(member = %self.member, "joined the cluster");
        Ok(())
    }

    /// `stop_clustering`: release locks, delete the key, tell the others.
    pub async fn leave(&self) {
        let mut joined = self.joined.lock().await;
        let was_in = joined.in_cluster;
        *joined = Joined::default();
        self.in_cluster.store(false, Ordering::SeqCst);
        drop(joined);
        self.release_all_locks().await;
        if was_in {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(self.keys.member(&self.member)).ignore();
            pipe.cmd("ZREM").arg(self.keys.joins()).arg(&self.member).ignore();
            if let Err(e) = self.pipe::<()>(&pipe).await {
                tracing::warn!("could not remove this member's keys (they expire on their own): {e}");
            }
            self.publish_event(&format!("left\n{}", self.member)).await;
        }
        let mut view = lock(&self.view);
        view.members.clear();
        view.senior = None;
    }

    /// Stops everything (the plugin stops).
    pub async fn shutdown(&self) {
        self.leave().await;
        self.tasks.abort_incoming();
        // The connection's own background tasks end with it, before the
        // plugin's runtime goes.
        self.link.close();
        let tasks: Vec<_> = lock(&self.background).drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn heartbeat_loop(weak: Weak<Core>) {
        let mut reported = String::new();
        loop {
            let Some(core) = weak.upgrade() else { return };
            let interval = core.config.heartbeat();
            if let Err(e) = core.ensure_connected().await {
                let e = e.to_string();
                if e != reported {
                    tracing::warn!("{e}; retrying every {interval:?}");
                    reported = e;
                }
            } else {
                reported.clear();
                core.beat().await;
            }
            // Holds the core while waiting; `shutdown` aborts this task.
            let woken = core.wake.notified();
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One heartbeat: refresh or re-register the key, extend held locks,
    /// re-read the view.
    async fn beat(self: &Arc<Self>) {
        let mut joined = self.joined.lock().await;
        if joined.wanted && joined.in_cluster {
            let key = self.keys.member(&self.member);
            let ttl = self.config.membership.member_ttl_ms;
            let record = serde_json::to_string(&self.record).unwrap_or_default();
            match self
                .query::<Option<String>>(redis::cmd("SET").arg(&key).arg(record).arg("XX").arg("PX").arg(ttl))
                .await
            {
                Ok(Some(_)) => joined.last_ok = Some(Instant::now()),
                Ok(None) => {
                    tracing::warn!("this member's key expired in Redis (it was unreachable or too slow for member_ttl_ms); leaving and rejoining");
                    self.lost(&mut joined);
                }
                Err(e) => {
                    let silent = joined.last_ok.map(|t| t.elapsed()).unwrap_or_default();
                    if silent >= self.config.member_ttl() {
                        tracing::warn!("lost Redis for {silent:?} (member_ttl_ms): leaving the cluster until it is back; last error: {e}");
                        self.lost(&mut joined);
                    }
                }
            }
        } else if joined.wanted && joined.lost {
            match self.register().await {
                Ok(true) => {
                    joined.in_cluster = true;
                    joined.lost = false;
                    joined.last_ok = Some(Instant::now());
                    self.in_cluster.store(true, Ordering::SeqCst);
                    self.storage.forget_registered();
                    self.stats.rejoins.fetch_add(1, Ordering::Relaxed);
                    drop(joined);
                    tracing::info!("Redis is back: rejoining the cluster");
                    let _ = self.refresh_view().await;
                    self.emit(StrategyEvent::Joined { member: self.member.clone() });
                    return;
                }
                Ok(false) => tracing::warn!("cannot rejoin yet: another live member is named {}", self.member),
                Err(e) => tracing::debug!("cannot rejoin yet: {e}"),
            }
        }
        drop(joined);
        self.extend_locks().await;
        if let Err(e) = self.refresh_view().await {
            tracing::debug!("could not read the member list: {e}");
        }
    }

    /// This member is out: the host copies what it can and goes standalone.
    fn lost(&self, joined: &mut Joined) {
        // A fresh connection for the rejoin (in sentinel mode: to the master now).
        self.reset_connection("this member lost the cluster");
        joined.in_cluster = false;
        joined.lost = true;
        self.in_cluster.store(false, Ordering::SeqCst);
        self.stats.redis_lost.fetch_add(1, Ordering::Relaxed);
        self.locks.forget_all();
        {
            let mut view = lock(&self.view);
            view.members.clear();
            view.senior = None;
        }
        self.emit(StrategyEvent::Left { member: self.member.clone() });
    }

    /// Reads members and settings; emits what changed.
    async fn refresh_view(self: &Arc<Self>) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE").arg(self.keys.joins()).arg(0).arg(-1).arg("WITHSCORES");
        pipe.cmd("HGETALL").arg(self.keys.settings());
        let (joins, settings): (Vec<(String, u64)>, BTreeMap<String, String>) = self.pipe(&pipe).await?;
        let records: Vec<Option<String>> = if joins.is_empty() {
            Vec::new()
        } else {
            let mut mget = redis::cmd("MGET");
            for (id, _) in &joins {
                mget.arg(self.keys.member(id));
            }
            self.query(&mget).await?
        };
        let in_cluster = self.in_cluster.load(Ordering::SeqCst);
        // A sorted set holds each id once: a rejoin moved it to its new number.
        let mut members = BTreeMap::new();
        let mut gone = Vec::new();
        for ((id, seq), record) in joins.into_iter().zip(records) {
            match record.and_then(|r| serde_json::from_str::<Record>(&r).ok()) {
                Some(record) => {
                    members.insert(seq, (id, record));
                }
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // Expired members; anyone may tidy the join order (idempotent).
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(self.keys.joins()).arg(&gone);
            let _ = self.query::<i64>(&zrem).await;
        }
        if !in_cluster {
            members.clear();
        }
        let senior = members.values().next().map(|(id, _)| id.clone());
        let previous = std::mem::replace(
            &mut *lock(&self.view),
            View { members: members.clone(), senior: senior.clone(), settings: settings.clone() },
        );
        for (key, value) in &settings {
            if previous.settings.get(key) != Some(value) {
                self.emit(StrategyEvent::SettingChanged { key: key.clone(), value: value.clone() });
            }
        }
        if !in_cluster {
            return Ok(());
        }
        let before: HashSet<&String> = previous.ids().collect();
        let now: HashSet<&String> = members.values().map(|(id, _)| id).collect();
        if !before.contains(&self.member) {
            // The first view after joining: the members there are not news.
            if senior.as_deref() == Some(self.member.as_str()) {
                self.emit(StrategyEvent::SeniorChanged { member: self.member.clone() });
            }
            return Ok(());
        }
        for id in now.iter().filter(|id| !before.contains(*id) && ***id != self.member) {
            tracing::info!(member = %id, "member joined");
            self.emit(StrategyEvent::Joined { member: (*id).clone() });
        }
        let mut left = false;
        for id in before.iter().filter(|id| !now.contains(*id) && ***id != self.member) {
            tracing::info!(member = %id, "member left");
            self.emit(StrategyEvent::Left { member: (*id).clone() });
            left = true;
        }
        if senior != previous.senior {
            if let Some(senior) = &senior {
                tracing::info!(member = %senior, "senior member");
                self.emit(StrategyEvent::SeniorChanged { member: senior.clone() });
            }
        }
        if left {
            self.locks.wake_waiters();
        }
        Ok(())
    }

    pub fn stats(&self) -> Vec<(String, u64)> {
        let s = &self.stats;
        vec![
            ("redis_commands".into(), self.link.commands.load(Ordering::Relaxed)),
            ("redis_errors".into(), self.link.errors.load(Ordering::Relaxed)),
            ("redis_lost".into(), s.redis_lost.load(Ordering::Relaxed)),
            ("rejoins".into(), s.rejoins.load(Ordering::Relaxed)),
            ("tasks_sent".into(), self.tasks.sent()),
            ("tasks_received".into(), self.tasks.received()),
            ("locks_held".into(), self.locks.count()),
        ]
    }
}

/// The strategy handed to the host.
pub struct RedisStrategy(pub Arc<Core>);

impl Strategy for RedisStrategy {
    fn start_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let core = self.0.clone();
        async move { core.join().await }
    }

    fn stop_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let core = self.0.clone();
        async move {
            core.leave().await;
            Ok(())
        }
    }

    fn local_member(&self) -> String {
        self.0.member.clone()
    }

    fn members(&self) -> Vec<Member> {
        self.0
            .view()
            .members
            .into_values()
            .map(|(id, r)| Member { id, address: r.address, started_at_ms: r.started_at_ms, plugin_version: r.version })
            .collect()
    }

    fn senior_member(&self) -> Option<String> {
        self.0.view().senior
    }

    fn cluster_time_ms(&self) -> u64 {
        self.0.cluster_time_ms()
    }

    fn cache_get(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send + use<> {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_get(&cache, &key).await?) }
    }

    fn cache_put(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        // Versioned when called, not when polled.
        let version = core.cluster_time_ms();
        async move { Ok(core.cache_put(&cache, key, &value, version).await?) }
    }

    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_remove(&cache, &key).await?) }
    }

    fn cache_contains(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        let (core, cache, key) = (self.0.clone(), cache.to_string(), key.to_vec());
        async move { Ok(core.cache_contains(&cache, &key).await?) }
    }

    fn cache_size(&self, cache: &str) -> impl Future<Output = PluginResult<u64>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_size(&cache).await?) }
    }

    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_clear(&cache).await?) }
    }

    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_keys(&cache).await?) }
    }

    fn cache_get_all(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_get_all(&cache, keys).await?) }
    }

    fn cache_put_all(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        // Versioned when called, not when polled.
        let version = core.cluster_time_ms();
        async move { Ok(core.cache_put_all(&cache, &entries, version).await?) }
    }

    fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_merge(&cache, &entries).await?) }
    }

    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_entries(&cache).await?) }
    }

    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send + use<> {
        let core = self.0.clone();
        async move { Ok(core.cache_names().await?) }
    }

    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send + use<> {
        let (core, cache) = (self.0.clone(), cache.to_string());
        async move { Ok(core.cache_local_size(&cache).await?) }
    }

    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, name, owner) = (self.0.clone(), name.to_string(), owner.to_string());
        async move {
            core.acquire(&name, &owner, None).await?;
            Ok(())
        }
    }

    fn try_lock(
        &self,
        name: &str,
        owner: &str,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        let (core, name, owner) = (self.0.clone(), name.to_string(), owner.to_string());
        async move { Ok(core.acquire(&name, &owner, Some(Instant::now() + timeout)).await?) }
    }

    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        let (core, name, owner) = (self.0.clone(), name.to_string(), owner.to_string());
        async move { Ok(core.release(&name, &owner).await?) }
    }

    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        // The targets are the members in the view when called.
        let (targets, _) = self.0.targets(&target);
        let (core, name) = (self.0.clone(), name.to_string());
        async move {
            core.send_task(targets, &name, payload).await;
            Ok(())
        }
    }

    fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send + use<> {
        let (targets, missing) = self.0.targets(&target);
        let (core, name) = (self.0.clone(), name.to_string());
        async move { Ok(core.call_task(targets, missing, &name, payload, timeout).await) }
    }

    fn settings(&self) -> Vec<(String, String)> {
        self.0.view().settings.into_iter().collect()
    }

    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, key, value) = (self.0.clone(), key.to_string(), value.to_string());
        async move {
            core.ensure_connected().await?;
            let _: i64 = core.query(redis::cmd("HSET").arg(core.keys.settings()).arg(&key).arg(&value)).await?;
            core.publish_event(&format!("setting\n{key}")).await;
            core.refresh_view().await?;
            Ok(())
        }
    }

    fn stats(&self) -> Vec<(String, u64)> {
        self.0.stats()
    }
}
