//! The member: who it is, the state each job owns (the view, joining,
//! replication, locks), and starting and stopping its gossip, data plane
//! and background tasks. The jobs live in their own modules.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use clusterhost_plugin_api::cluster::{now_ms, StrategyEvent};
use clusterhost_plugin_api::ClusterHost;

use crate::atomic::Decisions;
use crate::config::Config;
use crate::crypto::Sealer;
use crate::handler::Requests;
use crate::join::JoinState;
use crate::liveness::Liveness;
use crate::locked;
use crate::locks::Locks;
use crate::membership::{self, Membership, MembershipConfig, Peer};
use crate::net::{Handler, Net};
use crate::replication::Replica;
use crate::view::ViewState;
use crate::wire::Wire;

/// One member of the cluster, shared (`Arc`) by the strategy, the data
/// plane's handler and the background tasks; created by [`Core::start`],
/// stopped by [`Core::shutdown`].
pub struct Core {
    /// This member's id (the node name).
    pub member: String,
    /// The wire protocol this member speaks (from its manifest).
    pub wire: Wire,
    pub(crate) config: Config,
    pub(crate) sealer: Sealer,
    /// The data plane: connections to and from the other members.
    pub(crate) net: Arc<Net>,
    /// This member's copy of the caches (replication.rs).
    pub(crate) replica: Replica,
    /// The host's side of the boundary, once `cluster_strategy` handed it
    /// over: events go there, and tasks run there. Shared with the entry
    /// event observer, which reads it on every write under the store's
    /// lock: an `ArcSwapOption` load takes no lock and touches no shared
    /// counter.
    pub(crate) host: Arc<ArcSwapOption<ClusterHost>>,
    /// The chitchat side; `None` once stopped. An async mutex: its calls
    /// await chitchat.
    membership: tokio::sync::Mutex<Option<Membership>>,
    /// Whether this member is joined, and which join (join.rs).
    pub(crate) joining: JoinState,
    /// What this member sees as the cluster (view.rs).
    pub(crate) view: ViewState,
    /// What the lock decisions share (locks.rs).
    pub(crate) locks: Locks,
    /// Serialises the atomic operations this member decides as senior (atomic.rs).
    pub(crate) decisions: Decisions,
    /// The watchers of the other members' connections (liveness.rs).
    pub(crate) liveness: Liveness,
    /// When this run of the member started (ms): chitchat's generation, so
    /// a restarted member is a new node to gossip.
    pub(crate) generation: u64,
    /// Member ids by the hash a version carries, for the origin of entry events.
    pub(crate) origins: crate::entry_events::Origins,
    /// Where chitchat listens (UDP; the data plane listens on TCP at the
    /// same port number), announced by multicast discovery.
    pub gossip_addr: SocketAddr,
    /// The data plane's accept loop, the view loop and discovery: aborted
    /// and awaited at shutdown.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The longest a member waits before it looks for expired entries again.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// The shortest pause between two sweeps (many entries due one after the
/// other are removed in batches, not one wake-up each).
const SWEEP_PAUSE: Duration = Duration::from_millis(5);

/// Binds the member port: UDP (gossip) and TCP (data) on the same number,
/// the first free one from `port` when auto-increment is on.
fn bind_ports(
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
    pub async fn start(
        member: String,
        plugin_version: String,
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
            (membership::KEY_VERSION.to_string(), plugin_version),
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
        // An expiry's or eviction's tombstone outlives a member gone silent
        // for as long as it is remembered (and gossiped with).
        replica.store.set_tombstone_grace(config.failure_detection.dead_grace_ms);
        let core = Arc::new(Core {
            member,
            wire,
            config,
            sealer,
            net: net.clone(),
            replica,
            host: Arc::new(ArcSwapOption::empty()),
            membership: tokio::sync::Mutex::new(Some(membership)),
            joining: JoinState::default(),
            view: ViewState::default(),
            locks: Locks::default(),
            decisions: Decisions::default(),
            liveness: Liveness::default(),
            origins: crate::entry_events::Origins::default(),
            generation,
            gossip_addr,
            background: Mutex::new(Vec::new()),
        });
        crate::entry_events::observe(&core);
        let handler: Arc<dyn Handler> = Arc::new(Requests(Arc::downgrade(&core)));
        let serve = tokio::spawn(net.serve(listener, handler));
        let view_loop = tokio::spawn(Core::view_loop(Arc::downgrade(&core), watcher));
        let sweep = tokio::spawn(Core::sweep_loop(Arc::downgrade(&core)));
        locked(&core.background).extend([serve, view_loop, sweep]);
        if core.config.discovery.multicast.enabled {
            core.start_multicast(bind);
        }
        if let Some(name) = core.config.discovery.dns.clone() {
            if bind.is_loopback() || bind.is_unspecified() {
                tracing::warn!(
                    "dns discovery of {name} with this member bound to {bind}: other hosts cannot reach {bind}, and this member cannot tell its own entry in the name from the others'; bind it to the address the name lists for it (--bind / node.bind, e.g. the pod IP)"
                );
            }
            core.start_dns(name);
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

    /// Announces this member on the multicast group and gossips with every
    /// member heard there.
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
        locked(&self.background).push(task);
    }

    /// Resolves `name` now and every `dns_interval_ms`, and gossips with
    /// each address it lists that is not a live member yet.
    fn start_dns(self: &Arc<Self>, name: String) {
        let weak = Arc::downgrade(self);
        let found: crate::dns::Found = Arc::new(move |addrs| {
            let Some(core) = weak.upgrade() else { return };
            tokio::spawn(async move {
                let known: Vec<SocketAddr> = core.peers().await.iter().map(|p| p.gossip_addr).collect();
                if let Some(m) = core.membership.lock().await.as_ref() {
                    for addr in addrs.into_iter().filter(|a| !known.contains(a)) {
                        m.gossip_with(addr);
                    }
                }
            });
        });
        let interval = Duration::from_millis(self.config.discovery.dns_interval_ms);
        let task = tokio::spawn(crate::dns::run(name, interval, self.gossip_addr, found));
        locked(&self.background).push(task);
    }

    /// Removes the expired entries of every bounded cache when they are
    /// due (a read never answers one meanwhile), and forgets the
    /// tombstones past their grace: it wakes at the next deadline, at most
    /// [`SWEEP_INTERVAL`] later (so a write with a shorter time to live
    /// is found), at least [`SWEEP_PAUSE`] after the last sweep.
    async fn sweep_loop(core: std::sync::Weak<Core>) {
        loop {
            let wait = {
                let Some(core) = core.upgrade() else { return };
                let now = now_ms();
                core.replica.store.sweep(now);
                let due = core.replica.store.next_due().map_or(SWEEP_INTERVAL, |at| {
                    Duration::from_millis(at.saturating_sub(now_ms())).min(SWEEP_INTERVAL)
                });
                due.max(SWEEP_PAUSE)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Connects the host (it asked for the strategy).
    pub fn set_host(&self, host: ClusterHost) {
        self.host.store(Some(Arc::new(host)));
    }

    /// Tells the host `event`, if it is connected.
    pub(crate) fn emit(&self, event: StrategyEvent) {
        // Not under the lock: delivering runs host code.
        if let Some(host) = self.host() {
            host.emit(event);
        }
    }

    /// The host, if it is connected.
    pub(crate) fn host(&self) -> Option<ClusterHost> {
        self.host.load().as_deref().cloned()
    }

    /// Stops everything (the plugin stops).
    pub async fn shutdown(&self) {
        self.joining.set_left();
        self.liveness.stop();
        if let Some(mut m) = self.membership.lock().await.take() {
            m.shutdown().await;
        }
        self.net.forget_all().await;
        let tasks: Vec<_> = locked(&self.background).drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        // Wait until they are gone, so their sockets (the member port) are
        // closed before a new version binds the same port.
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The live members as gossip shows them, this one included.
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
}
