//! The gossip strategy: chitchat membership + the sealed data plane +
//! replicated caches, locks at the senior member, tasks member to member.

use std::future::{ready, Future};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterhost_plugin_api::cluster::{now_ms, CacheSize, Entry, Member, StrategyEvent, TaskReply, TaskTarget};
use clusterhost_plugin_api::{ClusterHost, PluginResult, Strategy};

use crate::config::Config;
use crate::crypto::Sealer;
use crate::handler::Requests;
use crate::join::JoinState;
use crate::locked;
use crate::locks::Locks;
use crate::membership::{self, setting_key, Membership, MembershipConfig, Peer};
use crate::net::{Handler, Net};
use crate::replication::Replica;
use crate::store::WireEntry;
use crate::view::{Setting, ViewState};
use crate::wire::Wire;

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
    pub(crate) joining: JoinState,
    pub(crate) view: ViewState,
    pub(crate) locks: Locks,
    pub(crate) generation: u64,
    pub gossip_addr: SocketAddr,
    pub data_addr: SocketAddr,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
            joining: JoinState::default(),
            view: ViewState::default(),
            locks: Locks::default(),
            generation,
            gossip_addr,
            data_addr,
            tasks: Mutex::new(Vec::new()),
        });
        let handler: Arc<dyn Handler> = Arc::new(Requests(Arc::downgrade(&core)));
        let serve = tokio::spawn(net.serve(listener, handler));
        let view_loop = tokio::spawn(Core::view_loop(Arc::downgrade(&core), watcher));
        locked(&core.tasks).extend([serve, view_loop]);
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
        locked(&self.tasks).push(task);
    }

    pub fn set_host(&self, host: ClusterHost) {
        *locked(&self.host) = Some(host);
    }

    pub(crate) fn emit(&self, event: StrategyEvent) {
        // Not under the lock: delivering runs host code.
        if let Some(host) = self.host() {
            host.emit(event);
        }
    }

    pub(crate) fn host(&self) -> Option<ClusterHost> {
        locked(&self.host).clone()
    }

    /// Stops everything (the plugin stops).
    pub async fn shutdown(&self) {
        self.joining.set_left();
        if let Some(mut m) = self.membership.lock().await.take() {
            m.shutdown().await;
        }
        self.net.forget_all().await;
        let tasks: Vec<_> = locked(&self.tasks).drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        // Wait until they are gone, so their sockets (the member port) are
        // closed before a new version binds the same port.
        for task in tasks {
            let _ = task.await;
        }
    }

    pub(crate) async fn peers(&self) -> Vec<Peer> {
        match self.membership.lock().await.as_ref() {
            Some(m) => m.peers().await,
            None => Vec::new(),
        }
    }

    /// Sets one of this member's gossip keys.
    pub(crate) async fn publish(&self, key: &str, value: &str) {
        if let Some(m) = self.membership.lock().await.as_ref() {
            m.set(key, value).await;
        }
    }

    /// Sets one of this member's gossip keys and recomputes the view.
    pub(crate) async fn set_key(&self, key: &str, value: &str) {
        self.publish(key, value).await;
        self.view.recompute();
    }

    pub fn stats(&self) -> Vec<(String, u64)> {
        let c = &self.net.counters;
        let view = self.view.current();
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
            .view
            .current()
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
        self.0.view.senior()
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
        let entries: Vec<WireEntry> =
            entries.into_iter().map(|e| self.0.replica.entry(cache, e.key, Some(e.value))).collect();
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
        self.0.view.current().settings.into_iter().map(|(k, s)| (k, s.value)).collect()
    }

    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send + use<> {
        let core = self.0.clone();
        let raw = Setting { at_ms: now_ms(), by: self.0.member.clone(), value: value.to_string() }.encode();
        let key = setting_key(key);
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
