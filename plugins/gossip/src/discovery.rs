//! Multicast discovery (the original system's default: group 224.2.2.3,
//! port 54327): every member announces its gossip address, sealed with the
//! cluster key, once a second; a member that hears another gossips with it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto::Sealer;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Announcement {
    cluster: String,
    member: String,
    gossip: SocketAddr,
}

/// Announces `gossip` on the group and calls `found` for every other
/// member heard, until the task is dropped.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    group: Ipv4Addr,
    port: u16,
    interface: Ipv4Addr,
    cluster: String,
    member: String,
    gossip: SocketAddr,
    sealer: Sealer,
    found: Arc<dyn Fn(SocketAddr) + Send + Sync>,
) -> std::io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Every member on a host listens on the same port.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
    socket.join_multicast_v4(&group, &interface)?;
    socket.set_multicast_if_v4(&interface)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(1)?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket.into())?;
    let target = SocketAddr::V4(SocketAddrV4::new(group, port));
    let announcement = Announcement { cluster: cluster.clone(), member: member.clone(), gossip };
    let packet = sealer.seal(&postcard::to_allocvec(&announcement).expect("announcements encode"));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = socket.send_to(&packet, target).await {
                    tracing::debug!("multicast announcement not sent: {e}");
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((len, _)) = received else { continue };
                let Some(plain) = sealer.open(&buf[..len]) else { continue };
                let Ok(heard) = postcard::from_bytes::<Announcement>(&plain) else { continue };
                if heard.cluster == cluster && heard.member != member {
                    found(heard.gossip);
                }
            }
        }
    }
}

/// The IPv4 interface address to use for `bind` (the unspecified address
/// means the default interface).
pub fn interface_of(bind: IpAddr) -> Ipv4Addr {
    match bind {
        IpAddr::V4(v4) if !v4.is_unspecified() => v4,
        _ => Ipv4Addr::UNSPECIFIED,
    }
}
