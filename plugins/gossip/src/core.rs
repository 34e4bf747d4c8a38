//! The gossip strategy: chitchat membership + the sealed data plane +
//! replicated caches, locks at the senior member, tasks member to member.

use std::collections::{BTreeMap, BTreeSet};
use std::future::{ready, Future};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clusterhost_plugin_api::cluster::{
    now_ms, CacheSize, Entry, Member, StrategyEvent, TaskReply, TaskTarget,
};
use clusterhost_plugin_api::{ClusterHost, PluginResult, Strategy};
use tokio::sync::Notify;

use crate::config::Config;
use crate::crypto::Sealer;
use crate::membership::{self, Membership, MembershipConfig, Peer, SETTING_PREFIX};
use crate::net::{BoxFuture, Handler, Net, NetError};
use crate::locks::Locks;
use crate::replication::Replica;
use crate::store::WireEntry;
use crate::wire::{Msg, Wire};

/// What this member currently sees.
#[derive(Default, Clone)]
pub(crate) struct View {
    /// Joined, compatible members by id (this one included while joined).
    pub members: BTreeMap<String, Peer>,
    pub senior: Option<String>,
    /// Effective cluster-wide settings: key -> (at_ms, member, value).
    pub settings: BTreeMap<String, (u64, String, String)>,
}

pub struct Core {
    pub member: String,
    /// The wire protocol this member speaks (from its manifest).
    pub wire: Wire,
    pub(crate) config: Config,
    pub(crate) sealer: Sealer,
    pub(crate) net: Arc<Net>,
    pub(crate) replica: Replica,
    host: Mutex<Option<ClusterHost>>,
    membership: tokio::sync::Mutex<Option<Membership>>,
    joined: AtomicBool,
    view: Mutex<View>,
    /// Wakes the view loop (a local setting or join state changed).
    recompute: Notify,
    pub(crate) locks: Locks,
    /// Members with an incompatible wire version already reported.
    reported_incompatible: Mutex<BTreeSet<String>>,
    /// Joins (member, generation, epoch) that ended with a `Leaving`
    /// notice: out of the view even while gossip still shows them joined.
    departed: Mutex<BTreeSet<(String, u64, u64)>>,
    /// This member's joins, counted (the `joined` key: 0 = not joined).
    epoch: std::sync::atomic::AtomicU64,
    generation: u64,
    pub gossip_addr: SocketAddr,
    pub data_addr: SocketAddr,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Binds the member port: UDP (gossip) and TCP (data) on the same number,
/// the first free one from `port` when auto-increment is on.
pub fn bind_ports(
    bind: IpAddr,
    port: u16,
    auto: bool,
    count: u16,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), String> {
    let tries = if auto { count.max(1) } else { 1 };
    let mut last = String::new();
    for p in (0..tries).filter_map(|i| port.checked_add(i)) {
        let addr = SocketAddr::new(bind, p);
        match (std::net::UdpSocket::bind(addr), std::net::TcpListener::bind(addr)) {
            (Ok(udp), Ok(tcp)) => return Ok((udp, tcp)),
            (Err(e), _) | (_, Err(e)) => last = format!("{addr}: {e}"),
        }
    }
    Err(if auto {
        format!(
            "no free member port in {port}..{} on {bind} (last error {last}); free one or set network.port",
            port.saturating_add(tries - 1)
        )
    } else {
        format!("the member port is taken ({last}); free it, choose another with --cluster-port, or set network.port_auto_increment = true")
    })
}

impl Core {
    /// Starts membership and the data plane; the member is not joined yet.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        member: String,
        version: String,
        wire: Wire,
        config: Config,
        sealer: Sealer,
        bind: IpAddr,
        port: u16,
    ) -> Result<Arc<Core>, String> {
        let (udp, tcp) = bind_ports(bind, port, config.network.port_auto_increment, config.network.port_count)?;
        let gossip_addr = udp.local_addr().map_err(|e| e.to_string())?;
        let data_addr = tcp.local_addr().map_err(|e| e.to_string())?;
        // chitchat binds its own socket: release ours just before.
        drop(udp);
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::from_std(tcp).map_err(|e| e.to_string())?;
        let generation = now_ms();
        let net = Net::new(&member, &config.cluster_name, wire, sealer.clone(), config.limits.clone());
        let mut seeds: Vec<SocketAddr> = config.static_members().into_iter().filter(|s| *s != gossip_addr).collect();
        seeds.sort();
        seeds.dedup();
        let key_values = vec![
            (membership::KEY_DATA.to_string(), data_addr.to_string()),
            (membership::KEY_STARTED.to_string(), generation.to_string()),
            (membership::KEY_VERSION.to_string(), version.clone()),
            (membership::KEY_WIRE.to_string(), wire.to_string()),
            (membership::KEY_JOINED.to_string(), "0".to_string()),
        ];
        let membership = Membership::start(
            MembershipConfig {
                member: member.clone(),
                generation,
                cluster: config.cluster_name.clone(),
                listen: gossip_addr,
                seeds,
                gossip_interval: config.gossip_interval(),
                phi_threshold: config.failure_detection.phi_threshold,
                dead_grace: Duration::from_millis(config.failure_detection.dead_grace_ms),
                key_values,
            },
            sealer.clone(),
        )
        .await
        .map_err(|e| format!("could not start gossip on {gossip_addr}: {e}"))?;
        let watcher = membership.watcher();
        let replica = Replica::new(&member);
        let core = Arc::new(Core {
            member,
            wire,
            config,
            sealer,
            net: net.clone(),
            replica,
            host: Mutex::new(None),
            membership: tokio::sync::Mutex::new(Some(membership)),
            joined: AtomicBool::new(false),
            view: Mutex::new(View::default()),
            recompute: Notify::new(),
            locks: Locks::default(),
            reported_incompatible: Mutex::new(BTreeSet::new()),
            departed: Mutex::new(BTreeSet::new()),
            epoch: std::sync::atomic::AtomicU64::new(0),
            generation,
            gossip_addr,
            data_addr,
            tasks: Mutex::new(Vec::new()),
        });
        let handler: Arc<dyn Handler> = Arc::new(Requests(Arc::downgrade(&core)));
        let serve = tokio::spawn(net.serve(listener, handler));
        let view_loop = tokio::spawn(Core::view_loop(Arc::downgrade(&core), watcher));
        lock(&core.tasks).extend([serve, view_loop]);
        if core.config.discovery.multicast.enabled {
            core.start_multicast(bind);
        }
        tracing::info!(
            member = %core.member,
            gossip = %gossip_addr,
            data = %data_addr,
            wire = %core.wire,
            encrypted = core.sealer.is_secure(),
            "gossip started"
        );
        Ok(core)
    }

    fn start_multicast(self: &Arc<Self>, bind: IpAddr) {
        let multicast = &self.config.discovery.multicast;
        let IpAddr::V4(group) = multicast.group else {
            tracing::warn!("multicast discovery needs an IPv4 group; {} is not: discovery is off", multicast.group);
            return;
        };
        let weak = Arc::downgrade(self);
        let found: Arc<dyn Fn(SocketAddr) + Send + Sync> = Arc::new(move |addr| {
            if let Some(core) = weak.upgrade() {
                tokio::spawn(async move {
                    if let Some(m) = core.membership.lock().await.as_ref() {
                        m.gossip_with(addr);
                    }
                });
            }
        });
        let run = crate::discovery::run(
            group,
            multicast.port,
            crate::discovery::interface_of(bind),
            self.config.cluster_name.clone(),
            self.member.clone(),
            self.gossip_addr,
            self.sealer.clone(),
            found,
        );
        let task = tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::warn!("multicast discovery stopped: {e}; only the static member list is used");
            }
        });
        lock(&self.tasks).push(task);
    }

    pub fn set_host(&self, host: ClusterHost) {
        *lock(&self.host) = Some(host);
    }

    fn emit(&self, event: StrategyEvent) {
        // Not under the lock: delivering runs host code.
        if let Some(host) = self.host() {
            host.emit(event);
        }
    }

    pub(crate) fn host(&self) -> Option<ClusterHost> {
        lock(&self.host).clone()
    }

    /// Stops everything (the plugin stops).
    pub async fn shutdown(&self) {
        self.joined.store(false, Ordering::SeqCst);
        if let Some(mut m) = self.membership.lock().await.take() {
            m.shutdown().await;
        }
        self.net.forget_all().await;
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        // Wait until they are gone, so their sockets (the member port) are
        // closed before a new version binds the same port.
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn peers(&self) -> Vec<Peer> {
        match self.membership.lock().await.as_ref() {
            Some(m) => m.peers().await,
            None => Vec::new(),
        }
    }

    async fn set_key(&self, key: &str, value: &str) {
        if let Some(m) = self.membership.lock().await.as_ref() {
            m.set(key, value).await;
        }
        self.recompute.notify_one();
    }

    // ---- the view: membership, seniority, settings ----

    async fn view_loop(
        weak: std::sync::Weak<Core>,
        mut watcher: tokio::sync::watch::Receiver<BTreeMap<chitchat::ChitchatId, chitchat::NodeState>>,
    ) {
        loop {
            let Some(core) = weak.upgrade() else { return };
            let interval = core.config.gossip_interval();
            core.update_view().await;
            let recompute = core.recompute.notified();
            tokio::select! {
                changed = watcher.changed() => if changed.is_err() { return },
                _ = recompute => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn update_view(self: &Arc<Self>) {
        let peers = self.peers().await;
        let joined_self = self.joined.load(Ordering::SeqCst);
        // One entry per member id: the newest generation.
        let mut newest: BTreeMap<String, Peer> = BTreeMap::new();
        for peer in peers {
            match newest.get(&peer.id) {
                Some(existing) if existing.generation >= peer.generation => {}
                _ => {
                    newest.insert(peer.id.clone(), peer);
                }
            }
        }
        let mut settings: BTreeMap<String, (u64, String, String)> = BTreeMap::new();
        let mut members = BTreeMap::new();
        for peer in newest.values() {
            for (key, raw) in &peer.settings {
                if let Some((at, rest)) = raw.split_once('|') {
                    if let (Ok(at), Some((by, value))) = (at.parse::<u64>(), rest.split_once('|')) {
                        let candidate = (at, by.to_string(), value.to_string());
                        if settings.get(key).is_none_or(|current| (current.0, &current.1) < (at, &candidate.1)) {
                            settings.insert(key.clone(), candidate);
                        }
                    }
                }
            }
            if peer.id != self.member && peer.wire.0 != self.wire.major {
                if lock(&self.reported_incompatible).insert(peer.id.clone()) {
                    tracing::error!(
                        "member {} speaks wire protocol {}.{}, this member ({}) {}: the majors differ, so it is not admitted to this cluster; upgrade with the split-brain or offline flow",
                        peer.id, peer.wire.0, peer.wire.1, self.member, self.wire
                    );
                }
                continue;
            }
            let is_self = peer.id == self.member;
            let departed = {
                let mut departed = lock(&self.departed);
                // Notices about earlier joins of this member are done with.
                departed.retain(|(id, generation, epoch)| {
                    !(*id == peer.id && (*generation != peer.generation || *epoch < peer.epoch))
                });
                departed.contains(&(peer.id.clone(), peer.generation, peer.epoch))
            };
            if (is_self && joined_self) || (!is_self && peer.joined && !departed && peer.data_addr.is_some()) {
                members.insert(peer.id.clone(), peer.clone());
            }
        }
        if !joined_self {
            members.clear();
        }
        // Every member carries the effective settings under its own keys
        // (with their original time and author), so a setting outlives the
        // member that made it: otherwise, once that member is gone, an older
        // value still published by a live member would take over again, and
        // a member starting later would see only that.
        let own: BTreeMap<&str, &str> = newest
            .get(&self.member)
            .map(|p| p.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
            .unwrap_or_default();
        for (key, (at, by, value)) in &settings {
            let raw = format!("{at}|{by}|{value}");
            if own.get(key.as_str()) != Some(&raw.as_str()) {
                if let Some(m) = self.membership.lock().await.as_ref() {
                    m.set(&format!("{SETTING_PREFIX}{key}"), &raw).await;
                }
            }
        }
        let senior = members.values().min_by_key(|p| (p.started_at_ms, p.id.clone())).map(|p| p.id.clone());

        let previous = {
            std::mem::replace(
                &mut *lock(&self.view),
                View { members: members.clone(), senior: senior.clone(), settings: settings.clone() },
            )
        };
        for (key, (_, _, value)) in &settings {
            if previous.settings.get(key).map(|(_, _, v)| v) != Some(value) {
                self.emit(StrategyEvent::SettingChanged { key: key.clone(), value: value.clone() });
            }
        }
        if !joined_self {
            return;
        }
        // The first view after this member joined is its starting point:
        // the members already there are not news (the host reports its own
        // join), and neither is their senior, unless it is this member.
        if !previous.members.contains_key(&self.member) {
            if senior.as_deref() == Some(self.member.as_str()) {
                self.emit(StrategyEvent::SeniorChanged { member: self.member.clone() });
            }
            return;
        }
        for id in members.keys().filter(|id| !previous.members.contains_key(*id) && **id != self.member) {
            tracing::info!(member = %id, "member joined");
            self.emit(StrategyEvent::Joined { member: id.clone() });
            self.send_state_to(id);
        }
        let left: Vec<String> =
            previous.members.keys().filter(|id| !members.contains_key(*id) && **id != self.member).cloned().collect();
        for id in &left {
            tracing::info!(member = %id, "member left");
            self.emit(StrategyEvent::Left { member: id.clone() });
            self.net.forget(id).await;
        }
        if senior != previous.senior {
            if let Some(senior) = &senior {
                self.emit(StrategyEvent::SeniorChanged { member: senior.clone() });
            }
        }
        if !left.is_empty() {
            self.release_locks_after(left, senior.as_deref());
        }
    }

    pub(crate) fn view(&self) -> View {
        lock(&self.view).clone()
    }

    /// The other members in the view, with their data-plane addresses.
    pub(crate) fn others(&self) -> Vec<(String, SocketAddr)> {
        let view = lock(&self.view);
        view.members
            .values()
            .filter(|p| p.id != self.member)
            .filter_map(|p| p.data_addr.map(|a| (p.id.clone(), a)))
            .collect()
    }

    pub(crate) fn addr_of(&self, member: &str) -> Option<SocketAddr> {
        lock(&self.view).members.get(member).and_then(|p| p.data_addr)
    }

    // ---- joining and leaving ----

    pub(crate) fn is_joined(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
    }

    pub async fn join(self: &Arc<Self>) -> PluginResult<()> {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.set_key(membership::KEY_JOINED, &epoch.to_string()).await;
        // Wait for the others: until a joined peer shows up, or the
        // discovery window passes (the first member of a cluster waits it out).
        let interval = self.config.gossip_interval();
        let mut window = interval * 6;
        if self.config.discovery.multicast.enabled {
            window += Duration::from_millis(self.config.discovery.multicast.listen_ms);
        }
        let deadline = Instant::now() + window.min(Duration::from_millis(self.config.timeouts.join_ms));
        loop {
            let others =
                self.peers().await.into_iter().any(|p| p.id != self.member && p.joined && p.wire.0 == self.wire.major);
            if others || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(interval / 2).await;
        }
        self.joined.store(true, Ordering::SeqCst);
        self.update_view().await;
        // Full state transfer from every member before reporting joined.
        let members = self.others();
        let mut received = 0;
        for (id, addr) in &members {
            match self.pull_state(id, *addr).await {
                Ok(n) => received += n,
                Err(NetError::Refused { member, reason }) => {
                    self.leave().await;
                    return Err(format!("member {member} refused this member: {reason}").into());
                }
                Err(e) => tracing::warn!("state transfer from {id} failed: {e}; it will catch up by anti-entropy"),
            }
        }
        tracing::info!(members = members.len() + 1, entries = received, "joined the cluster");
        Ok(())
    }

    pub async fn leave(self: &Arc<Self>) {
        // Tell the others first, so none of them sends this member a write
        // it can no longer acknowledge (gossip alone takes a round or two).
        let others = self.others();
        let mut notices = tokio::task::JoinSet::new();
        for (id, addr) in others {
            let (net, timeout) = (self.net.clone(), Duration::from_millis(500).min(self.config.operation_timeout()));
            let epoch = self.epoch.load(Ordering::SeqCst);
            let msg = Msg::Leaving { member: self.member.clone(), generation: self.generation, epoch };
            notices.spawn(async move { net.send(&id, addr, msg, timeout).await });
        }
        while notices.join_next().await.is_some() {}
        self.joined.store(false, Ordering::SeqCst);
        // The connections of this join end with it (a re-join makes new
        // ones); the notices queued above are flushed first.
        self.net.forget_all().await;
        self.set_key(membership::KEY_JOINED, "0").await;
        {
            let mut view = lock(&self.view);
            view.members.clear();
            view.senior = None;
        }
        self.locks.wake_waiters();
    }

    pub fn stats(&self) -> Vec<(String, u64)> {
        let c = &self.net.counters;
        let view = self.view();
        let (outgoing, incoming) = self.net.connection_counts();
        vec![
            ("members".into(), view.members.len() as u64),
            ("frames_sent".into(), c.frames_sent.load(Ordering::Relaxed)),
            ("frames_received".into(), c.frames_received.load(Ordering::Relaxed)),
            ("bytes_sent".into(), c.bytes_sent.load(Ordering::Relaxed)),
            ("bytes_received".into(), c.bytes_received.load(Ordering::Relaxed)),
            ("connections_refused".into(), c.refused.load(Ordering::Relaxed)),
            ("accept_errors".into(), c.accept_errors.load(Ordering::Relaxed)),
            ("connections_out".into(), outgoing as u64),
            ("connections_in".into(), incoming as u64),
            ("packets_dropped".into(), self.sealer.dropped.load(Ordering::Relaxed)),
        ]
    }
}

/// Answers the data plane's requests.
struct Requests(std::sync::Weak<Core>);

impl Handler for Requests {
    fn handle(&self, from: String, msg: Msg) -> BoxFuture<Option<Msg>> {
        let Some(core) = self.0.upgrade() else { return Box::pin(ready(None)) };
        Box::pin(async move {
            match msg {
                Msg::Replicate { req, entries } => {
                    core.replica.receive(entries);
                    core.locks.wake_waiters();
                    Some(Msg::Ack { req })
                }
                Msg::StateRequest { req } => Some(Msg::State { req, entries: core.replica.store.snapshot() }),
                Msg::StatePageRequest { req, after, max_bytes } => {
                    let max = (max_bytes as usize).min(core.config.limits.state_page_bytes);
                    let (entries, more) = core.replica.store.page(after.as_ref(), max);
                    Some(Msg::StatePage { req, entries, more })
                }
                Msg::Leaving { member, generation, epoch } => {
                    lock(&core.departed).insert((member, generation, epoch));
                    core.recompute.notify_one();
                    None
                }
                Msg::Lock { req, name, owner, member, wait_ms } => {
                    let wait = Duration::from_millis(wait_ms.unwrap_or(2_000));
                    match core.grant(&name, &owner, &member, wait).await {
                        Ok(granted) => Some(Msg::LockReply { req, granted, error: None }),
                        Err(e) => Some(Msg::LockReply { req, granted: false, error: Some(e) }),
                    }
                }
                Msg::Unlock { req, name, owner } => {
                    let released = core.release(&name, &owner).await.unwrap_or(false);
                    Some(Msg::UnlockReply { req, released })
                }
                Msg::Task { req, name, payload, from: sender, fire_and_forget } => {
                    core.run_sent_task(req, sender, name, payload, fire_and_forget).await
                }
                other => {
                    tracing::debug!(from = %from, "ignored an unexpected message: {other:?}");
                    None
                }
            }
        })
    }
}

/// The strategy handed to the host.
#[derive(Clone)]
pub struct Gossip(pub Arc<Core>);

impl Strategy for Gossip {
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
            .values()
            .map(|p| Member {
                id: p.id.clone(),
                address: p.gossip_addr.to_string(),
                started_at_ms: p.started_at_ms,
                plugin_version: p.plugin_version.clone(),
            })
            .collect()
    }

    fn senior_member(&self) -> Option<String> {
        self.0.view().senior
    }

    fn cluster_time_ms(&self) -> u64 {
        self.0.replica.clock.now() >> 16
    }

    fn cache_get(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send + use<> {
        ready(Ok(self.0.replica.store.get(cache, key)))
    }

    fn cache_put(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, entry) = (self.0.clone(), self.0.replica.entry(cache, key, Some(value)));
        async move { core.replicate(vec![entry]).await }
    }

    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        let existed = self.0.replica.store.contains(cache, key);
        let (core, entry) = (self.0.clone(), self.0.replica.entry(cache, key.to_vec(), None));
        async move {
            core.replicate(vec![entry]).await?;
            Ok(existed)
        }
    }

    fn cache_contains(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        ready(Ok(self.0.replica.store.contains(cache, key)))
    }

    fn cache_size(&self, cache: &str) -> impl Future<Output = PluginResult<u64>> + Send + use<> {
        ready(Ok(self.0.replica.store.size(cache).entries))
    }

    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let entries: Vec<WireEntry> =
            self.0.replica.store.keys(cache).into_iter().map(|k| self.0.replica.entry(cache, k, None)).collect();
        let core = self.0.clone();
        async move { core.replicate(entries).await }
    }

    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send + use<> {
        ready(Ok(self.0.replica.store.keys(cache)))
    }

    fn cache_get_all(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send + use<> {
        ready(Ok(keys.iter().map(|k| self.0.replica.store.get(cache, k)).collect()))
    }

    fn cache_put_all(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let entries: Vec<WireEntry> = entries.into_iter().map(|e| self.0.replica.entry(cache, e.key, Some(e.value))).collect();
        let core = self.0.clone();
        async move { core.replicate(entries).await }
    }

    fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (core, entries) = (self.0.clone(), self.0.replica.standalone(cache, entries));
        async move { core.merge(entries).await }
    }

    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send + use<> {
        ready(Ok(self.0.replica.store.entries(cache)))
    }

    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send + use<> {
        ready(Ok(self.0.replica.store.names()))
    }

    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send + use<> {
        ready(Ok(self.0.replica.store.size(cache)))
    }

    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let acquire = self.0.clone().acquire(name.to_string(), owner.to_string(), None);
        async move { acquire.await.map(|_| ()) }
    }

    fn try_lock(
        &self,
        name: &str,
        owner: &str,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        self.0.clone().acquire(name.to_string(), owner.to_string(), Some(timeout))
    }

    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send + use<> {
        self.0.clone().unlock(name.to_string(), owner.to_string())
    }

    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let (targets, _) = self.0.targets(&target);
        self.0.clone().send_task(targets, name.to_string(), payload)
    }

    fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send + use<> {
        let (targets, missing) = self.0.targets(&target);
        self.0.clone().call_task(targets, missing, name.to_string(), payload, timeout)
    }

    fn settings(&self) -> Vec<(String, String)> {
        self.0.view().settings.into_iter().map(|(k, (_, _, v))| (k, v)).collect()
    }

    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let core = self.0.clone();
        let (key, raw) = (format!("{SETTING_PREFIX}{key}"), format!("{}|{}|{value}", now_ms(), self.0.member));
        async move {
            core.set_key(&key, &raw).await;
            core.update_view().await;
            Ok(())
        }
    }

    fn stats(&self) -> Vec<(String, u64)> {
        self.0.stats()
    }
}
