//! Membership: this member's expiring key and its join number, the
//! heartbeat that keeps it (leaving on its own when Redis is lost, and
//! rejoining), the view of members, senior and settings read back from
//! Redis, and the events that tell the host what changed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use clusterhost_plugin_api::cluster::{now_ms, Member, StrategyEvent};
use clusterhost_plugin_api::membership::AnnouncedView;
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::core::{lock, Core};
use crate::error::Error;

/// Drops from the join order (KEYS[1]) each member in ARGV whose key
/// (KEYS[i + 1]) is still missing, in one step: a member that registered
/// again between our read and this tidy keeps its fresh join number (a bare
/// ZREM removed it, and it stayed invisible while its key lived on).
static TIDY_JOINS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local removed = 0
for i, id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], id)
  end
end
return removed
"#,
    )
});

/// Removes a member found dead by [`Core::check_presence`] (KEYS[1] its
/// key, KEYS[2] the join order; ARGV[1] its id, ARGV[2] the most its key's
/// PTTL may be): only while the key is still that stale, so a member that
/// refreshed it (or re-registered) since is left alone.
static REMOVE_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local left = redis.call('PTTL', KEYS[1])
if left >= 0 and left <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"#,
    )
});

/// What a member's key holds.
#[doc(hidden)] // pub for the fuzz targets (fuzz/)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Tells this plugin instance's own key from a namesake's.
    instance: u64,
    /// When this member's plugin started (the host lists it).
    started_at_ms: u64,
    /// The plugin version it runs (the host warns on a mix).
    version: String,
    /// Its `node.bind` address.
    address: String,
    /// It announces its listeners (crate::listening), so a cache no one
    /// listens to need not publish its changes. Absent (false) in the
    /// record of an earlier version, which expects every change published.
    #[serde(default)]
    announces: bool,
}

/// What this member last read from Redis.
#[derive(Default, Clone)]
pub(crate) struct View {
    /// Live members by join number (this one included while joined).
    members: BTreeMap<u64, (String, Record)>,
    /// The live member with the lowest join number.
    pub(crate) senior: Option<String>,
    /// The cluster-wide settings (`{P}:settings`).
    pub(crate) settings: BTreeMap<String, String>,
}

impl View {
    /// The live members' ids, in join order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &String> {
        self.members.values().map(|(id, _)| id)
    }

    /// The members as the host lists them, in join order.
    pub(crate) fn into_members(self) -> Vec<Member> {
        self.members
            .into_values()
            .map(|(id, r)| Member { id, address: r.address, started_at_ms: r.started_at_ms, plugin_version: r.version })
            .collect()
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
    /// When the last successful refresh of the member key was sent (the
    /// key lives at least `member_ttl_ms` from then).
    last_ok: Option<Instant>,
}

/// This member's join state and its view of the others. Part of [`Core`].
pub(crate) struct Membership {
    /// What this member's key holds; its `instance` tells a restarted
    /// plugin's own key from a live namesake's.
    record: Record,
    /// Held across a whole join, leave or heartbeat, so they never interleave.
    joined: tokio::sync::Mutex<Joined>,
    /// `joined.in_cluster`, readable without waiting (fail-fast checks).
    in_cluster: AtomicBool,
    /// The last view read.
    view: Mutex<View>,
    /// The members and senior as last announced to the host, which turns
    /// the next view read into events. Taken before `view` whenever both
    /// are, so the view and what the host was told change together.
    announced: Mutex<AnnouncedView>,
    /// Times this member lost Redis and left on its own (the `redis_lost` stat).
    redis_lost: AtomicU64,
    /// Times it rejoined after that (the `rejoins` stat).
    rejoins: AtomicU64,
    /// Members this one removed on process-death evidence (the `process_deaths_confirmed` stat).
    deaths: AtomicU64,
    /// Set once the server refused the presence check (an ACL without
    /// PUBSUB or INFO): the TTL alone removes members then.
    presence_refused: AtomicBool,
    /// The Redis server run the presence check last saw (`run_id`), and
    /// since when it serves (its uptime at the first look; the moment this
    /// member saw the run change after that): after a restart or a
    /// failover nobody is subscribed there yet, so the check waits
    /// `member_ttl_ms` on a new run.
    server_run: Mutex<Option<(String, Instant)>>,
}

impl Membership {
    /// The state of a member not yet joined, whose key will carry `version`
    /// and `address`.
    pub(crate) fn new(version: String, address: String) -> Membership {
        Membership {
            record: Record { instance: random_u64(), started_at_ms: now_ms(), version, address, announces: true },
            joined: tokio::sync::Mutex::new(Joined::default()),
            in_cluster: AtomicBool::new(false),
            view: Mutex::new(View::default()),
            announced: Mutex::new(AnnouncedView::new()),
            redis_lost: AtomicU64::new(0),
            rejoins: AtomicU64::new(0),
            deaths: AtomicU64::new(0),
            presence_refused: AtomicBool::new(false),
            server_run: Mutex::new(None),
        }
    }

    /// Times this member left on its own so far.
    pub(crate) fn redis_lost(&self) -> u64 {
        self.redis_lost.load(Ordering::Relaxed)
    }

    /// Times it rejoined so far.
    pub(crate) fn rejoins(&self) -> u64 {
        self.rejoins.load(Ordering::Relaxed)
    }

    /// Members removed on process-death evidence so far.
    pub(crate) fn deaths(&self) -> u64 {
        self.deaths.load(Ordering::Relaxed)
    }
}

/// Not cryptographic: it only has to differ between two starts of a node.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

impl Core {
    /// This member is in the cluster now (its key is live, as far as it knows).
    pub(crate) fn in_cluster(&self) -> bool {
        self.membership.in_cluster.load(Ordering::SeqCst)
    }

    /// A copy of the last view read from Redis.
    pub(crate) fn view(&self) -> View {
        lock(&self.membership.view).clone()
    }

    /// Registers this member: a join number, its key, a notice.
    /// `Ok(false)`: a live namesake holds the key.
    async fn register(&self) -> Result<bool, Error> {
        let record = serde_json::to_string(&self.membership.record).map_err(Error::EncodeRecord)?;
        let key = self.keys.member(&self.member);
        let ttl = self.config.membership.member_ttl_ms;
        let set: Option<String> =
            self.query(redis::cmd("SET").arg(&key).arg(&record).arg("NX").arg("PX").arg(ttl)).await?;
        if set.is_none() {
            let existing: Option<String> = self.query(redis::cmd("GET").arg(&key)).await?;
            let ours = existing
                .and_then(|e| serde_json::from_str::<Record>(&e).ok())
                .is_some_and(|r| r.instance == self.membership.record.instance);
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
    pub(crate) async fn join(self: &Arc<Self>) -> Result<(), Error> {
        let mut joined = self.membership.joined.lock().await;
        if joined.in_cluster {
            return Ok(());
        }
        if let Err(e) = self.ensure_connected().await {
            // Joins by itself once Redis answers (the heartbeat's rejoin).
            *joined = Joined { wanted: true, in_cluster: false, lost: true, last_ok: None };
            return Err(e);
        }
        // Every member spreads caches alike, or none joins (crate::partitions).
        self.join_partitions().await?;
        let deadline = Instant::now() + self.config.member_ttl() + self.config.heartbeat();
        let sent = loop {
            let sent = Instant::now();
            if self.register().await? {
                break sent;
            }
            if Instant::now() >= deadline {
                return Err(Error::NamesakeLive { member: self.member.clone(), key: self.keys.member(&self.member) });
            }
            tokio::time::sleep(self.config.heartbeat()).await;
        };
        *joined = Joined { wanted: true, in_cluster: true, lost: false, last_ok: Some(sent) };
        self.membership.in_cluster.store(true, Ordering::SeqCst);
        drop(joined);
        self.storage.forget_registered();
        self.near.drop_all("this member joined", false);
        self.refresh_view().await?;
        self.join_bounds().await;
        // Before the host hears of the join: every change from now on
        // reaches its listeners.
        self.announce_wanted().await;
        tracing::info!(member = %self.member, "joined the cluster");
        Ok(())
    }

    /// `stop_clustering`: release locks, delete the key, tell the others.
    pub(crate) async fn leave(&self) {
        let mut joined = self.membership.joined.lock().await;
        let was_in = joined.in_cluster;
        *joined = Joined::default();
        self.membership.in_cluster.store(false, Ordering::SeqCst);
        drop(joined);
        self.release_all_locks().await;
        if was_in {
            self.withdraw_all().await;
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(self.keys.member(&self.member)).ignore();
            pipe.cmd("ZREM").arg(self.keys.joins()).arg(&self.member).ignore();
            if let Err(e) = self.pipe::<()>(&pipe).await {
                tracing::warn!("could not remove this member's keys (they expire on their own): {e}");
            }
            self.publish_event(&format!("left\n{}", self.member)).await;
        }
        self.clear_members();
    }

    /// Empties the view (this member is out; that is not announced here);
    /// settings stay.
    fn clear_members(&self) {
        let mut announced = lock(&self.membership.announced);
        announced.forget();
        let mut view = lock(&self.membership.view);
        view.members.clear();
        view.senior = None;
    }

    /// Connects, then beats every `heartbeat_ms` or when woken, until the
    /// core is dropped or `shutdown` aborts it.
    pub(crate) async fn heartbeat_loop(weak: Weak<Core>) {
        let mut reported = String::new();
        loop {
            let Some(core) = weak.upgrade() else { return };
            let interval = core.config.heartbeat();
            // Before a reconnect that may take the connect timeout.
            core.fence_if_stale().await;
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

    /// Checks the fence twice a heartbeat, apart from the heartbeat (whose
    /// reads and reconnects may take their timeouts), until the core is
    /// dropped or `shutdown` aborts it.
    pub(crate) async fn fence_loop(weak: Weak<Core>) {
        loop {
            let Some(core) = weak.upgrade() else { return };
            let pause = core.config.heartbeat() / 2;
            core.fence_if_stale().await;
            drop(core);
            tokio::time::sleep(pause).await;
        }
    }

    /// Leaves if this member's key may expire before a refresh could
    /// reach Redis ([`Config::self_fence_after`] since the last one was
    /// sent): it stops acting as a member before the others may take it
    /// for gone.
    async fn fence_if_stale(&self) {
        let mut joined = self.membership.joined.lock().await;
        if joined.wanted && joined.in_cluster && self.stale(&joined) {
            self.fence(&mut joined);
        }
    }

    /// Whether the key may expire before a refresh sent now arrives.
    fn stale(&self, joined: &Joined) -> bool {
        joined.last_ok.is_some_and(|t| t.elapsed() >= self.config.self_fence_after())
    }

    fn fence(&self, joined: &mut Joined) {
        let silent = joined.last_ok.map(|t| t.elapsed()).unwrap_or_default();
        tracing::warn!(
            "could not refresh this member's key in Redis for {} ms (its key lives {} ms): leaving the cluster before it expires, until Redis answers again",
            silent.as_millis(),
            self.config.membership.member_ttl_ms
        );
        self.lost(joined);
    }

    /// One heartbeat: refresh or re-register the key, extend held locks,
    /// re-read the view, look for members whose process is gone.
    async fn beat(self: &Arc<Self>) {
        let mut joined = self.membership.joined.lock().await;
        if joined.wanted && joined.in_cluster {
            let key = self.keys.member(&self.member);
            let ttl = self.config.membership.member_ttl_ms;
            let record = serde_json::to_string(&self.membership.record).unwrap_or_default();
            // Waited for only until the fence point: a refresh that arrives
            // later may find the key gone, and the member must be out by then.
            let sent = Instant::now();
            let budget = joined
                .last_ok
                .map(|t| self.config.self_fence_after().saturating_sub(t.elapsed()))
                .unwrap_or(self.config.response_timeout())
                .min(self.config.response_timeout());
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(record).arg("XX").arg("PX").arg(ttl);
            match tokio::time::timeout(budget, self.query::<Option<String>>(&set)).await {
                Ok(Ok(Some(_))) => joined.last_ok = Some(sent),
                Ok(Ok(None)) => {
                    tracing::warn!("this member's key is gone from Redis (it expired: Redis was unreachable or too slow for member_ttl_ms, or another member found this one's connections closed); leaving and rejoining");
                    self.lost(&mut joined);
                }
                Ok(Err(e)) if self.stale(&joined) => {
                    tracing::warn!("the refresh of this member's key failed: {e}");
                    self.fence(&mut joined);
                }
                Err(_) if self.stale(&joined) => self.fence(&mut joined),
                Ok(Err(_)) | Err(_) => {}
            }
        } else if joined.wanted && joined.lost {
            // As at a join: every member spreads caches alike (Redis may
            // have lost the record), and the layouts are read again.
            if let Err(e) = self.join_partitions().await {
                tracing::warn!("cannot rejoin yet: {e}");
                return;
            }
            // Its key lives from the SET in the registration, not from its end.
            let sent = Instant::now();
            match self.register().await {
                Ok(true) => {
                    joined.in_cluster = true;
                    joined.lost = false;
                    joined.last_ok = Some(sent);
                    self.membership.in_cluster.store(true, Ordering::SeqCst);
                    self.storage.forget_registered();
                    self.near.drop_all("this member rejoined", false);
                    self.membership.rejoins.fetch_add(1, Ordering::Relaxed);
                    drop(joined);
                    tracing::info!("Redis is back: rejoining the cluster");
                    self.join_bounds().await;
                    self.announce_wanted().await;
                    // Joined first: the host is not clustered until it
                    // comes, and drops a SeniorChanged that arrives before.
                    self.emit(StrategyEvent::Joined { member: self.member.clone() });
                    let _ = self.refresh_view().await;
                    return;
                }
                Ok(false) => tracing::warn!("cannot rejoin yet: another live member is named {}", self.member),
                Err(e) => tracing::debug!("cannot rejoin yet: {e}"),
            }
        }
        drop(joined);
        self.extend_locks().await;
        self.check_layouts().await;
        self.resume_gathers().await;
        self.beat_listeners().await;
        if let Err(e) = self.refresh_view().await {
            tracing::debug!("could not read the member list: {e}");
        }
        self.check_presence().await;
    }

    /// The other members whose task channel has no subscriber: Redis no
    /// longer holds their pub/sub connection.
    async fn unsubscribed(&self, members: &[String]) -> Result<Vec<String>, Error> {
        let mut numsub = redis::cmd("PUBSUB");
        numsub.arg("NUMSUB");
        for id in members {
            numsub.arg(self.keys.tasks(id));
        }
        let counts: Vec<(String, u64)> = self.query(&numsub).await?;
        Ok(members
            .iter()
            .filter(|id| counts.iter().any(|(channel, n)| *n == 0 && *channel == self.keys.tasks(id)))
            .cloned()
            .collect())
    }

    /// The members of `members` whose key missed two refreshes (its PTTL
    /// at most `max_pttl` ms), after checking that the server has run
    /// (same `run_id`) for at least `member_ttl_ms`: none otherwise.
    async fn stale_members(&self, members: &[String], max_pttl: u64) -> Result<Vec<String>, Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("INFO").arg("server");
        for id in members {
            pipe.cmd("PTTL").arg(self.keys.member(id));
        }
        let (info, pttls): (String, Vec<i64>) = {
            let mut all: Vec<redis::Value> = self.pipe(&pipe).await?;
            if all.is_empty() {
                return Ok(Vec::new());
            }
            let info = redis::from_redis_value(all.remove(0)).unwrap_or_default();
            (info, all.into_iter().map(|v| redis::from_redis_value(v).unwrap_or(-2)).collect())
        };
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        let run = field("run_id:").unwrap_or_default().to_string();
        let uptime = Duration::from_secs(field("uptime_in_seconds:").and_then(|u| u.parse().ok()).unwrap_or(0));
        {
            let mut server = lock(&self.membership.server_run);
            let since = match &*server {
                Some((known, since)) if *known == run => *since,
                // A server this member had seen before under another run:
                // restarted, or a failover to another server.
                Some(_) => Instant::now(),
                // The first look: as long as the server has been up.
                None => Instant::now().checked_sub(uptime).unwrap_or_else(Instant::now),
            };
            *server = Some((run, since));
            if since.elapsed() < self.config.member_ttl() {
                return Ok(Vec::new());
            }
        }
        Ok(members
            .iter()
            .zip(pttls)
            .filter(|(_, pttl)| (0..=max_pttl as i64).contains(pttl))
            .map(|(id, _)| id.clone())
            .collect())
    }

    /// Process-death evidence (see `membership.presence`): removes each
    /// other member whose key missed two refreshes and whose pub/sub
    /// connection Redis no longer holds, on two checks
    /// `presence_confirm_ms` apart; tells every member at once. Only on a
    /// server that has run for `member_ttl_ms` (after a restart or a
    /// failover, nobody is subscribed there yet). Single and sentinel
    /// modes (in cluster mode a member's subscription lives on one node of
    /// several: the TTL alone decides there).
    async fn check_presence(self: &Arc<Self>) {
        let m = &self.config.membership;
        if !m.presence
            || self.config.mode == crate::config::Mode::Cluster
            || !self.in_cluster()
            || self.membership.presence_refused.load(Ordering::Relaxed)
        {
            return;
        }
        let others: Vec<String> = self.view().ids().filter(|id| **id != self.member).cloned().collect();
        if others.is_empty() {
            return;
        }
        let max_pttl = self.config.member_ttl().saturating_sub(self.config.presence_stale()).as_millis() as u64;
        let checked = match self.stale_members(&others, max_pttl).await {
            Ok(stale) if stale.is_empty() => return,
            Ok(stale) => self.unsubscribed(&stale).await,
            Err(e) => Err(e),
        };
        let suspects = match checked {
            Ok(suspects) if suspects.is_empty() => return,
            Ok(suspects) => suspects,
            Err(e) => {
                let said = e.to_string();
                if said.contains("NOPERM") || said.contains("unknown command") {
                    tracing::warn!("Redis refused the presence check ({e}): members are removed by their key's TTL only (member_ttl_ms); allow PUBSUB and INFO for faster detection");
                    self.membership.presence_refused.store(true, Ordering::Relaxed);
                }
                return;
            }
        };
        tokio::time::sleep(Duration::from_millis(m.presence_confirm_ms)).await;
        let Ok(confirmed) = self.unsubscribed(&suspects).await else { return };
        let mut removed = false;
        for id in confirmed {
            let (key, joins) = (self.keys.member(&id), self.keys.joins());
            let max_pttl = max_pttl.to_string();
            match self.script::<i64>(&REMOVE_DEAD, &[&key, &joins], &[id.as_bytes(), max_pttl.as_bytes()], true).await {
                Ok(1) => {
                    tracing::info!(member = %id, "member {id} is gone: Redis holds none of its connections and its key missed two refreshes; removed without waiting for its key to expire");
                    self.membership.deaths.fetch_add(1, Ordering::Relaxed);
                    self.publish_event(&format!("left\n{id}")).await;
                    self.release_locks_of_dead(&id).await;
                    removed = true;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("could not remove member {id}: {e}"),
            }
        }
        if removed {
            let _ = self.refresh_view().await;
        }
    }

    /// This member is out: the host copies what it can and goes standalone.
    fn lost(&self, joined: &mut Joined) {
        // A fresh connection for the rejoin (in sentinel mode: to the master now).
        self.reset_connection("this member lost the cluster");
        joined.in_cluster = false;
        joined.lost = true;
        self.membership.in_cluster.store(false, Ordering::SeqCst);
        self.membership.redis_lost.fetch_add(1, Ordering::Relaxed);
        self.locks.forget_all();
        self.clear_members();
        self.emit(StrategyEvent::Left { member: self.member.clone() });
    }

    /// Reads members and settings; emits what changed.
    pub(crate) async fn refresh_view(self: &Arc<Self>) -> Result<(), Error> {
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
        let in_cluster = self.in_cluster();
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
            // Expired members; anyone may tidy the join order (idempotent),
            // but only of members whose key is still missing now.
            let joins = self.keys.joins();
            let member_keys: Vec<String> = gone.iter().map(|id| self.keys.member(id)).collect();
            let mut keys: Vec<&str> = vec![&joins];
            keys.extend(member_keys.iter().map(String::as_str));
            let ids: Vec<&[u8]> = gone.iter().map(|id| id.as_bytes()).collect();
            if let Err(e) = self.script::<i64>(&TIDY_JOINS, &keys, &ids, true).await {
                tracing::debug!("could not tidy the join order: {e}");
            }
        }
        if !in_cluster {
            members.clear();
        }
        let senior = members.values().next().map(|(id, _)| id.clone());
        self.set_publish_all(members.values().any(|(_, record)| !record.announces));
        let view = View { members, senior, settings: settings.clone() };
        let (previous, events) = {
            let mut announced = lock(&self.membership.announced);
            let events = if in_cluster {
                announced.update(&self.member, view.ids().cloned().collect(), view.senior.clone())
            } else {
                announced.forget();
                Vec::new()
            };
            (std::mem::replace(&mut *lock(&self.membership.view), view), events)
        };
        for (key, value) in &settings {
            if previous.settings.get(key) != Some(value) {
                self.emit(StrategyEvent::SettingChanged { key: key.clone(), value: value.clone() });
            }
        }
        let mut left = false;
        for event in events {
            match &event {
                StrategyEvent::Joined { member } => tracing::info!(member = %member, "member joined"),
                StrategyEvent::Left { member } => {
                    tracing::info!(member = %member, "member left");
                    left = true;
                }
                StrategyEvent::SeniorChanged { member } => tracing::info!(member = %member, "senior member"),
                StrategyEvent::SettingChanged { .. } => {}
            }
            self.emit(event);
        }
        if left {
            self.locks.wake_waiters();
        }
        Ok(())
    }

    /// Sets a cluster-wide setting, tells the others, and re-reads the view
    /// (which emits the change here).
    pub(crate) async fn put_setting(self: &Arc<Self>, key: &str, value: &str) -> Result<(), Error> {
        self.ensure_connected().await?;
        let _: i64 = self.query(redis::cmd("HSET").arg(self.keys.settings()).arg(key).arg(value)).await?;
        self.publish_event(&format!("setting\n{key}")).await;
        self.refresh_view().await?;
        Ok(())
    }
}
