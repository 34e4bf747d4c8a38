//! Membership and failure detection with chitchat, over a UDP transport
//! that seals every datagram with the cluster key. Each member publishes a
//! few keys: its data-plane address, start time, plugin and wire versions,
//! whether it is joined, and the cluster-wide settings it set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, ChitchatMessage, Deserializable, FailureDetectorConfig,
    NodeState, Serializable,
};
use tokio::sync::watch;

use crate::crypto::Sealer;

/// The member's data-plane address (`ip:port`).
pub const KEY_DATA: &str = "data";
/// When the member started (ms since the epoch); the oldest is senior.
pub const KEY_STARTED: &str = "started";
/// The member's plugin version.
pub const KEY_VERSION: &str = "version";
/// The wire protocol the member speaks (`major.minor`).
pub const KEY_WIRE: &str = "wire";
/// Which join the member is in (0: not joined).
pub const KEY_JOINED: &str = "joined";
/// Prefix of cluster-wide settings: `s:<key>` = `<at_ms>|<member>|<value>`.
pub const SETTING_PREFIX: &str = "s:";

/// The gossip key of cluster-wide setting `key`.
pub fn setting_key(key: &str) -> String {
    format!("{SETTING_PREFIX}{key}")
}

/// A live member as gossip shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The member's id (its node name).
    pub id: String,
    /// Which run of the member (its start time): a restart is a new generation.
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// Where its data plane listens; `None` until its key is seen.
    pub data_addr: Option<SocketAddr>,
    pub started_at_ms: u64,
    pub plugin_version: String,
    /// The wire protocol it speaks, (major, minor); (0, 0) when unknown.
    pub wire: (u16, u16),
    /// Whether it is in the cluster (its `joined` key is not 0).
    pub joined: bool,
    /// Which join of this member (its `joined` key counts them; 0 = not joined).
    pub epoch: u64,
    /// The cluster-wide settings it publishes: key (without the prefix) -> raw value.
    pub settings: Vec<(String, String)>,
    /// Its gossip heartbeat as this member knows it (from it or through
    /// others): it moves while anyone hears from the member.
    pub heartbeat: u64,
}

/// The chitchat side of a member.
pub struct Membership {
    /// The running chitchat; `None` once shut down.
    handle: Option<ChitchatHandle>,
    /// chitchat's live set, for the view loop to wake on.
    watcher: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
}

/// How to start a member's gossip.
pub struct MembershipConfig {
    /// This member's id.
    pub member: String,
    /// This run of the member (its start time).
    pub generation: u64,
    /// The cluster's name: chitchat ignores members of another.
    pub cluster: String,
    /// Where to listen (UDP).
    pub listen: SocketAddr,
    /// Members to gossip with first (the static member list).
    pub seeds: Vec<SocketAddr>,
    pub gossip_interval: Duration,
    /// Phi accrual threshold of the failure detector.
    pub phi_threshold: f64,
    /// How long a dead member is remembered.
    pub dead_grace: Duration,
    /// This member's keys at start.
    pub key_values: Vec<(String, String)>,
}

impl Membership {
    /// Starts gossiping on `config.listen` (must run inside the plugin's runtime).
    pub async fn start(config: MembershipConfig, sealer: Sealer) -> anyhow::Result<Membership> {
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(config.member.clone(), config.generation, config.listen),
            cluster_id: config.cluster,
            gossip_interval: config.gossip_interval,
            listen_addr: config.listen,
            seed_nodes: config.seeds.iter().map(|s| s.to_string()).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                // A fresh member is judged against a short interval, so a
                // member that dies soon after joining is still noticed quickly.
                initial_interval: config.gossip_interval,
                max_interval: Duration::from_secs(10),
                dead_node_grace_period: config.dead_grace,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let transport = SealedUdp { sealer };
        let handle = spawn_chitchat(chitchat_config, config.key_values, &transport).await?;
        let watcher = handle.with_chitchat(|c| c.live_nodes_watcher()).await;
        Ok(Membership { handle: Some(handle), watcher })
    }

    /// Wakes when the live set or a key changes.
    pub fn watcher(&self) -> watch::Receiver<BTreeMap<ChitchatId, NodeState>> {
        self.watcher.clone()
    }

    /// Sets one of this member's keys.
    pub async fn set(&self, key: &str, value: &str) {
        if let Some(handle) = &self.handle {
            handle.with_chitchat(|c| c.self_node_state().set(key, value)).await;
        }
    }

    /// Gossips with `addr` now (a member found by multicast).
    pub fn gossip_with(&self, addr: SocketAddr) {
        if let Some(handle) = &self.handle {
            let _ = handle.gossip(addr);
        }
    }

    /// The live members, this one included.
    pub async fn peers(&self) -> Vec<Peer> {
        let Some(handle) = &self.handle else { return Vec::new() };
        handle
            .with_chitchat(|c| {
                let live: Vec<ChitchatId> = c.live_nodes().cloned().collect();
                live.iter().filter_map(|id| c.node_state(id).map(|state| peer_of(id, state))).collect::<Vec<_>>()
            })
            .await
    }

    /// Stops gossiping; the others see this member leave.
    pub async fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.shutdown().await;
        }
    }
}

fn peer_of(id: &ChitchatId, state: &NodeState) -> Peer {
    let wire = state
        .get(KEY_WIRE)
        .and_then(|w| w.split_once('.'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((0, 0));
    let settings = state
        .key_values()
        .filter_map(|(k, v)| k.strip_prefix(SETTING_PREFIX).map(|k| (k.to_string(), v.to_string())))
        .collect();
    Peer {
        id: id.node_id.to_string(),
        generation: id.generation_id,
        gossip_addr: id.gossip_advertise_addr,
        data_addr: state.get(KEY_DATA).and_then(|a| a.parse().ok()),
        started_at_ms: state.get(KEY_STARTED).and_then(|s| s.parse().ok()).unwrap_or(id.generation_id),
        plugin_version: state.get(KEY_VERSION).unwrap_or_default().to_string(),
        wire,
        joined: state.get(KEY_JOINED).is_some_and(|v| v != "0"),
        epoch: state.get(KEY_JOINED).and_then(|v| v.parse().ok()).unwrap_or(0),
        settings,
        heartbeat: state.heartbeat().into(),
    }
}

/// chitchat's UDP transport with every datagram sealed.
struct SealedUdp {
    sealer: Sealer,
}

#[async_trait]
impl Transport for SealedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("could not bind the gossip port {listen_addr}/udp: {e}"))?;
        Ok(Box::new(SealedSocket { socket, sealer: self.sealer.clone(), buf: vec![0; 65_536] }))
    }
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    sealer: Sealer,
    buf: Vec<u8>,
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let sealed = self.sealer.seal(&msg.serialize_to_vec());
        // A datagram that cannot go out (peer unreachable) is not fatal for gossip.
        if let Err(e) = self.socket.send_to(&sealed, to).await {
            tracing::debug!("gossip datagram to {to} not sent: {e}");
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(received) => received,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            // Wrong key, other cluster, tampered: counted and dropped.
            let Some(plain) = self.sealer.open(&self.buf[..len]) else { continue };
            match ChitchatMessage::deserialize(&mut &plain[..]) {
                Ok(msg) => return Ok((from, msg)),
                Err(_) => continue,
            }
        }
    }
}
