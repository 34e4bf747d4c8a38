//! The data plane: one TCP connection per (client, server) pair of members,
//! length-delimited frames, each a sealed postcard-encoded [`Msg`]. The
//! first frame is a `Hello` carrying the cluster name and wire version; a
//! member with another wire major is refused on both sides with the reason.
//!
//! Before its `Hello` opens with the cluster key a connection is a
//! stranger's, and costs little: its first frame may be at most
//! [`HELLO_MAX_FRAME`], it has `hello_timeout_ms` to send it, and it counts
//! against `max_connections` (and `max_connections_per_address`). Every
//! refusal is counted (`connections_refused`) and logged with the peer's
//! address, at most one line per 10 s with a count of the rest (`clusterhost_plugin_api::throttle`).

use clusterhost_plugin_api::accept::{Admitted, Backoff, ConnectionLimit, Over};
use clusterhost_plugin_api::throttle::Throttled;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::config::Limits;
use crate::crypto::Sealer;
use crate::wire::{Msg, Wire};

/// Largest first frame (the `Hello`, or its answer): a few hundred bytes
/// in practice, so a stranger cannot make a member allocate more.
pub const HELLO_MAX_FRAME: usize = 4 << 10;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Answers requests from other members.
pub trait Handler: Send + Sync + 'static {
    /// Handles `msg` from member `from`; the reply (if any) goes back on the connection.
    fn handle(&self, from: String, msg: Msg) -> BoxFuture<Option<Msg>>;
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    #[error("could not connect to member {member} at {addr}: {detail}")]
    Connect { member: String, addr: SocketAddr, detail: String },
    #[error("member {member} refused this member: {reason}")]
    Refused { member: String, reason: String },
    #[error("member {member} did not answer within {timeout:?}")]
    Timeout { member: String, timeout: Duration },
    #[error("the connection to member {member} closed before it answered")]
    Closed { member: String },
}

/// Traffic counters, for `stats`.
#[derive(Default)]
pub struct Counters {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Connections closed before or at their `Hello` (a stranger, another
    /// cluster or wire major, over a limit) or for a frame over the limit.
    pub refused: AtomicU64,
    /// Failed `accept` calls (out of file descriptors, say).
    pub accept_errors: AtomicU64,
}

/// A member's connection, once made; locked while it is being made.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// An outgoing connection to one member. Dropping the last handle closes
/// the socket: the reader is aborted, and the writer ends once it has sent
/// what was already queued (a `Leaving` notice, say), so a connection never
/// outlives the slot that held it.
struct Conn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// What the reader shares with the requests.
    shared: Arc<ConnShared>,
    reader: tokio::task::AbortHandle,
}

/// The reader's half of an outgoing connection.
#[derive(Default)]
struct ConnShared {
    /// Set when the reader sees the connection end.
    closed: std::sync::atomic::AtomicBool,
    /// Requests waiting for their reply, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Msg>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// An accepted connection from a member, registered once its `Hello` was
/// accepted: a member that connects again replaces its older connection.
struct Inbound {
    /// Tells the older connection apart from its replacement.
    id: u64,
    /// Ends the connection's read loop (and so the connection).
    close: tokio_util::sync::CancellationToken,
}

/// How long the writer of a connection may take to hand one frame to the
/// kernel before the connection is given up (a peer that stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends every frame `rx` yields on `sink` until `rx` closes, the peer
/// stops taking frames, or `stop` fires; then the sink is dropped.
async fn write_frames<S>(
    mut sink: S,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    stop: tokio_util::sync::CancellationToken,
) where
    S: futures_util::Sink<bytes::Bytes> + Unpin,
{
    loop {
        let frame = tokio::select! {
            frame = rx.recv() => frame,
            _ = stop.cancelled() => None,
        };
        let Some(frame) = frame else { break };
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame.into_bytes_frame())).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
}

pub struct Net {
    local: String,
    cluster: String,
    wire: Wire,
    sealer: Sealer,
    /// One slot per member, each with its own lock: connecting to a slow
    /// or hung member holds up only the requests to that member.
    conns: Mutex<HashMap<String, Slot>>,
    /// Accepted connections by the member that made them: one each.
    inbound: Mutex<HashMap<String, Inbound>>,
    next_inbound: AtomicU64,
    next_req: AtomicU64,
    limits: Limits,
    /// Accepted connections against `max_connections` and `max_connections_per_address`.
    accepted: Arc<ConnectionLimit>,
    /// One throttle per kind of warning: strangers, limits, accept errors.
    refusals: Throttled,
    over_limit: Throttled,
    accept_failures: Throttled,
    pub counters: Arc<Counters>,
}

trait IntoFrame {
    fn into_bytes_frame(self) -> bytes::Bytes;
}

impl IntoFrame for Vec<u8> {
    fn into_bytes_frame(self) -> bytes::Bytes {
        bytes::Bytes::from(self)
    }
}

/// The codec of a new connection: frames up to [`HELLO_MAX_FRAME`] until
/// the handshake is done (then [`Limits::max_frame_bytes`]).
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(HELLO_MAX_FRAME).new_codec()
}

impl Net {
    pub fn new(local: &str, cluster: &str, wire: Wire, sealer: Sealer, limits: Limits) -> Arc<Net> {
        Arc::new(Net {
            local: local.into(),
            cluster: cluster.into(),
            wire,
            sealer,
            conns: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            next_inbound: AtomicU64::new(1),
            next_req: AtomicU64::new(1),
            accepted: ConnectionLimit::new(limits.max_connections, limits.max_connections_per_address),
            limits,
            refusals: Throttled::default(),
            over_limit: Throttled::default(),
            accept_failures: Throttled::default(),
            counters: Arc::default(),
        })
    }

    fn seal(&self, msg: &Msg) -> Vec<u8> {
        let plain = postcard::to_allocvec(msg).expect("messages always encode");
        let sealed = self.sealer.seal(&plain);
        self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(sealed.len() as u64 + 4, Ordering::Relaxed);
        sealed
    }

    fn open(&self, frame: &[u8]) -> Option<Msg> {
        self.counters.frames_received.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_received.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
        let plain = self.sealer.open(frame)?;
        postcard::from_bytes(&plain).ok()
    }

    /// Accepts connections on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, handler: Arc<dyn Handler>) {
        let mut backoff = Backoff::new();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors or memory: the connection stays
                    // queued, so accepting again at once would spin a core.
                    let pause = backoff.pause();
                    self.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    self.accept_failures.warn(format_args!(
                        "could not accept a connection on the member port: {e}; trying again in {pause:?} (raise the open files limit if this is EMFILE)"
                    ));
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            let admitted = match self.accepted.admit(peer.ip()) {
                Ok(admitted) => admitted,
                Err(Over { total, here, .. }) => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    self.over_limit.warn(format_args!(
                    "refused a connection from {peer}: {total} connections are open ({here} from its address); the limits are [limits] max_connections = {} and max_connections_per_address = {} in gossip.toml",
                    self.limits.max_connections, self.limits.max_connections_per_address
                ));
                    drop(stream);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let net = self.clone();
            let handler = handler.clone();
            tokio::spawn(async move { net.serve_one(stream, peer, handler, admitted).await });
        }
    }

    /// Counts and logs (throttled) a connection closed before it became a member's.
    fn refuse(&self, peer: SocketAddr, why: &str) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.refusals.warn(format_args!("closed a connection from {peer} on the member port: {why}"));
    }

    async fn serve_one(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        handler: Arc<dyn Handler>,
        _admitted: Admitted,
    ) {
        let mut framed = Framed::new(stream, codec());
        let timeout = Duration::from_millis(self.limits.hello_timeout_ms);
        let frame = match tokio::time::timeout(timeout, framed.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                return self.refuse(peer, &format!("its first frame is over {HELLO_MAX_FRAME} bytes (not a Hello)"));
            }
            Ok(Some(Err(e))) => return self.refuse(peer, &format!("it failed before its Hello: {e}")),
            Ok(None) => return self.refuse(peer, "it closed before sending a Hello"),
            Err(_) => return self.refuse(peer, &format!("no Hello within {timeout:?}")),
        };
        let Some(Msg::Hello { cluster, member, wire_major, wire_minor }) = self.open(&frame) else {
            // Not answered: a stranger learns nothing.
            return self.refuse(
                peer,
                "its first frame is not a Hello sealed with this cluster's key (another cluster key, or not a member)",
            );
        };
        let refusal = if cluster != self.cluster {
            Some(format!("member {member} is in cluster {cluster:?}, this member in {:?}", self.cluster))
        } else if wire_major != self.wire.major {
            Some(format!(
                "member {member} speaks wire protocol {wire_major}.{wire_minor}, member {} speaks {}; the majors differ, so they cannot form one cluster: upgrade with the split-brain or offline flow, not a rolling one",
                self.local, self.wire
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%peer, "refused a connection: {reason}");
            let _ = framed.send(self.seal(&Msg::Refused { reason }).into_bytes_frame()).await;
            return;
        }
        if framed.send(self.seal(&Msg::Welcome { member: self.local.clone() }).into_bytes_frame()).await.is_err() {
            return;
        }
        // A member now: its frames may be as large as the limit allows.
        framed.codec_mut().set_max_frame_length(self.limits.max_frame_bytes);
        let (sink, mut stream) = framed.split();
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let close = tokio_util::sync::CancellationToken::new();
        let id = self.next_inbound.fetch_add(1, Ordering::Relaxed);
        let older = lock(&self.inbound).insert(member.clone(), Inbound { id, close: close.clone() });
        if let Some(older) = older {
            // The member reconnected (it re-joined, or its old connection
            // broke on its side): one connection per member is enough.
            tracing::debug!(%peer, %member, "member connected again; its older connection is closed");
            older.close.cancel();
        }
        let writer = tokio::spawn(write_frames(sink, rx, close.clone()));
        loop {
            let frame = tokio::select! {
                frame = stream.next() => frame,
                _ = close.cancelled() => None,
            };
            let frame = match frame {
                Some(Ok(frame)) => frame,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    self.refusals.warn(format_args!(
                        "closed the connection from member {member} at {peer}: a frame over [limits] max_frame_bytes = {} (raise it on every member if such writes are meant)",
                        self.limits.max_frame_bytes
                    ));
                    break;
                }
                _ => break,
            };
            let Some(msg) = self.open(&frame) else {
                self.refusals.warn(format_args!(
                    "dropped a frame from member {member} at {peer} that does not open with the cluster key (counted in packets_dropped)"
                ));
                continue;
            };
            let (net, handler, tx, from) = (self.clone(), handler.clone(), tx.clone(), member.clone());
            tokio::spawn(async move {
                if let Some(reply) = handler.handle(from, msg).await {
                    let _ = tx.send(net.seal(&reply));
                }
            });
        }
        {
            let mut inbound = lock(&self.inbound);
            if inbound.get(&member).is_some_and(|i| i.id == id) {
                inbound.remove(&member);
            }
        }
        drop(tx);
        let _ = writer.await;
    }

    async fn connect(&self, member: &str, addr: SocketAddr, timeout: Duration) -> Result<Arc<Conn>, NetError> {
        let slot = self.conns.lock().unwrap_or_else(|p| p.into_inner()).entry(member.to_string()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.tx.is_closed() && !conn.shared.closed.load(Ordering::SeqCst) {
                return Ok(conn.clone());
            }
        }
        // A broken connection is closed before its replacement is made.
        *slot = None;
        let connect_error = |detail: String| NetError::Connect { member: member.into(), addr, detail };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_error(format!("no answer within {timeout:?}")))?
            .map_err(|e| connect_error(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, codec());
        let hello = Msg::Hello {
            cluster: self.cluster.clone(),
            member: self.local.clone(),
            wire_major: self.wire.major,
            wire_minor: self.wire.minor,
        };
        framed.send(self.seal(&hello).into_bytes_frame()).await.map_err(|e| connect_error(e.to_string()))?;
        let answer = tokio::time::timeout(timeout, framed.next()).await;
        match answer {
            Ok(Some(Ok(frame))) => match self.open(&frame) {
                Some(Msg::Welcome { .. }) => {}
                Some(Msg::Refused { reason }) => {
                    tracing::error!("member {member} refused this member: {reason}");
                    return Err(NetError::Refused { member: member.into(), reason });
                }
                Some(_) => return Err(connect_error("it answered the Hello with something other than a Welcome".into())),
                None => {
                    return Err(connect_error(
                        "its answer to the Hello does not open with this cluster's key (another cluster key?)".into(),
                    ))
                }
            },
            Ok(Some(Err(e))) => return Err(connect_error(format!("the connection failed during the Hello: {e}"))),
            // A member closes without answering when it is stopping, or
            // when it could not open the Hello (another cluster key).
            Ok(None) => {
                return Err(connect_error(
                    "it closed the connection without answering the Hello: it is stopping or restarting, or it uses another cluster key".into(),
                ))
            }
            Err(_) => {
                return Err(connect_error(format!(
                    "no answer to the Hello within {timeout:?}: it is overloaded or stopped, or it uses another cluster key"
                )))
            }
        }
        framed.codec_mut().set_max_frame_length(self.limits.max_frame_bytes);
        let (sink, mut stream) = framed.split();
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        // Fired when the peer closes: nothing more can be sent to it.
        let peer_gone = tokio_util::sync::CancellationToken::new();
        tokio::spawn(write_frames(sink, rx, peer_gone.clone()));
        let shared = Arc::new(ConnShared::default());
        let reader_shared = shared.clone();
        let sealer_net = (self.sealer.clone(), self.counters.clone());
        let reader = tokio::spawn(async move {
            let (sealer, counters) = sealer_net;
            while let Some(Ok(frame)) = stream.next().await {
                counters.frames_received.fetch_add(1, Ordering::Relaxed);
                counters.bytes_received.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
                let Some(plain) = sealer.open(&frame) else { continue };
                let Ok(msg) = postcard::from_bytes::<Msg>(&plain) else { continue };
                if let Some(req) = msg.reply_to() {
                    let waiter = lock(&reader_shared.pending).remove(&req);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(msg);
                    }
                }
            }
            // Closed: every waiter learns it (its sender drops).
            reader_shared.closed.store(true, Ordering::SeqCst);
            lock(&reader_shared.pending).clear();
            peer_gone.cancel();
        });
        let conn = Arc::new(Conn { tx, shared, reader: reader.abort_handle() });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// A fresh request id.
    pub fn next_req(&self) -> u64 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `msg` (with request id `req`) and waits for its reply.
    pub async fn request(
        &self,
        member: &str,
        addr: SocketAddr,
        msg: Msg,
        req: u64,
        timeout: Duration,
    ) -> Result<Msg, NetError> {
        let work = async {
            let conn = self.connect(member, addr, timeout).await?;
            let (tx, rx) = oneshot::channel();
            lock(&conn.shared.pending).insert(req, tx);
            if conn.tx.send(self.seal(&msg)).is_err() {
                return Err(NetError::Closed { member: member.into() });
            }
            rx.await.map_err(|_| NetError::Closed { member: member.into() })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(NetError::Timeout { member: member.into(), timeout }),
        }
    }

    /// Sends `msg` without waiting for an answer.
    pub async fn send(&self, member: &str, addr: SocketAddr, msg: Msg, timeout: Duration) -> Result<(), NetError> {
        let conn = self.connect(member, addr, timeout).await?;
        conn.tx.send(self.seal(&msg)).map_err(|_| NetError::Closed { member: member.into() })
    }

    /// Closes the connections to and from a member that left (requests in
    /// flight on them end with [`NetError::Closed`]).
    pub async fn forget(&self, member: &str) {
        let slot = lock(&self.conns).remove(member);
        if let Some(slot) = slot {
            slot.lock().await.take();
        }
        if let Some(inbound) = lock(&self.inbound).remove(member) {
            inbound.close.cancel();
        }
    }

    /// Closes every connection, both ways (this member left the cluster).
    /// Frames already queued, such as `Leaving` notices, are still sent.
    pub async fn forget_all(&self) {
        let slots: Vec<Slot> = lock(&self.conns).drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            slot.lock().await.take();
        }
        for (_, inbound) in lock(&self.inbound).drain() {
            inbound.close.cancel();
        }
    }

    /// Open connections: (outgoing, accepted), for tests and stats.
    pub fn connection_counts(&self) -> (usize, usize) {
        let outgoing = lock(&self.conns)
            .values()
            .filter(|slot| {
                slot.try_lock()
                    .map(|s| s.as_ref().is_some_and(|c| !c.shared.closed.load(Ordering::SeqCst)))
                    .unwrap_or(true)
            })
            .count();
        (outgoing, lock(&self.inbound).len())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Handler for Echo {
        fn handle(&self, _from: String, msg: Msg) -> BoxFuture<Option<Msg>> {
            Box::pin(std::future::ready(match msg {
                Msg::Replicate { req, .. } => Some(Msg::Ack { req }),
                _ => None,
            }))
        }
    }

    async fn server(wire: Wire) -> (Arc<Net>, SocketAddr) {
        server_with(wire, Limits::default()).await
    }

    async fn server_with(wire: Wire, limits: Limits) -> (Arc<Net>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let net = Net::new("server", "c", wire, Sealer::with_key(&[1; 32], "c"), limits);
        tokio::spawn(net.clone().serve(listener, Arc::new(Echo)));
        (net, addr)
    }

    fn refused(net: &Net) -> u64 {
        net.counters.refused.load(Ordering::Relaxed)
    }

    /// Reads until the server closes the connection (or 5 s pass): true if it closed.
    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_stranger_announcing_a_huge_first_frame_is_cut_off_at_the_hello_cap() {
        use tokio::io::AsyncWriteExt;
        let (net, addr) = server(Wire::default()).await;
        let mut stranger = TcpStream::connect(addr).await.unwrap();
        stranger.write_all(&(250u32 << 20).to_be_bytes()).await.unwrap();
        // Whatever follows is never buffered: the length alone is refused.
        let _ = stranger.write_all(&vec![0u8; 64 << 10]).await;
        assert!(closed_by_server(&mut stranger).await, "the server kept the connection open");
        wait_for("the refusal to be counted", || refused(&net) == 1).await;
    }

    #[tokio::test]
    async fn garbage_and_silence_are_refused_and_counted() {
        use tokio::io::AsyncWriteExt;
        let limits = Limits { hello_timeout_ms: 300, ..Limits::default() };
        let (net, addr) = server_with(Wire::default(), limits).await;
        // A small frame that is not a sealed Hello.
        let mut garbage = TcpStream::connect(addr).await.unwrap();
        garbage.write_all(&10u32.to_be_bytes()).await.unwrap();
        garbage.write_all(b"0123456789").await.unwrap();
        assert!(closed_by_server(&mut garbage).await);
        // Half a frame, then nothing: closed at the Hello deadline.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(&100u32.to_be_bytes()).await.unwrap();
        assert!(closed_by_server(&mut slow).await);
        // Nothing at all.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(closed_by_server(&mut silent).await);
        // Connected and gone at once.
        drop(TcpStream::connect(addr).await.unwrap());
        wait_for("four refusals", || refused(&net) == 4).await;
        // A member still gets in.
        let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
        let answer =
            client.request("server", addr, Msg::Replicate { req: 1, entries: vec![] }, 1, Duration::from_secs(5)).await;
        assert!(matches!(answer, Ok(Msg::Ack { req: 1 })), "{answer:?}");
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_at_once_and_the_count_comes_back() {
        let limits = Limits { max_connections_per_address: 3, hello_timeout_ms: 60_000, ..Limits::default() };
        let (net, addr) = server_with(Wire::default(), limits).await;
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        wait_for("three accepted", || net.accepted.open() == 3).await;
        let mut over = TcpStream::connect(addr).await.unwrap();
        assert!(closed_by_server(&mut over).await, "a fourth connection from the address was kept");
        assert_eq!(refused(&net), 1);
        // The idle ones were not closed meanwhile (their Hello deadline is a minute).
        assert_eq!(net.accepted.open(), 3);
        drop(idle);
        wait_for("the closed connections to be given back", || net.accepted.open() == 0).await;
        let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
        let answer =
            client.request("server", addr, Msg::Replicate { req: 1, entries: vec![] }, 1, Duration::from_secs(5)).await;
        assert!(matches!(answer, Ok(Msg::Ack { req: 1 })), "{answer:?}");
    }

    #[tokio::test]
    async fn a_members_frame_over_the_limit_closes_its_connection() {
        let limits = Limits { max_frame_bytes: 64 << 10, ..Limits::default() };
        let (net, addr) = server_with(Wire::default(), limits.clone()).await;
        let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
        let small = Msg::Replicate { req: 1, entries: vec![] };
        assert!(client.request("server", addr, small, 1, Duration::from_secs(5)).await.is_ok());
        let entry = crate::store::WireEntry {
            cache: "c".into(),
            key: b"k".to_vec(),
            value: Some(vec![7; 100 << 10]),
            version: crate::store::Version { hlc: 1, member: 1 },
        };
        let big = Msg::Replicate { req: 2, entries: vec![entry] };
        let answer = client.request("server", addr, big, 2, Duration::from_secs(5)).await;
        assert!(matches!(answer, Err(NetError::Closed { .. })), "{answer:?}");
        assert_eq!(refused(&net), 1);
    }

    #[tokio::test]
    async fn a_member_that_closes_at_the_hello_is_reported_as_stopping_not_as_another_key() {
        // Reads the Hello, then closes without an answer: a member that is going away.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let closer = std::thread::spawn(move || {
            use std::io::Read;
            let (mut stream, _) = listener.accept().unwrap();
            let mut length = [0u8; 4];
            stream.read_exact(&mut length).unwrap();
            let mut hello = vec![0u8; u32::from_be_bytes(length) as usize];
            stream.read_exact(&mut hello).unwrap();
        });
        let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
        let answer =
            client.request("gone", addr, Msg::Replicate { req: 1, entries: vec![] }, 1, Duration::from_secs(5)).await;
        let message = answer.expect_err("no member answered").to_string();
        assert!(message.contains("closed the connection without answering the Hello: it is stopping"), "{message}");
        assert!(!message.contains("no welcome"), "{message}");
        closer.join().unwrap();
    }

    #[tokio::test]
    async fn a_member_that_connects_again_replaces_its_older_connection() {
        let (net, addr) = server(Wire::default()).await;
        let timeout = Duration::from_secs(5);
        for round in 1..=3u64 {
            // A new Net each round: a member restarted or re-joined, its old socket not closed.
            let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
            let answer =
                client.request("server", addr, Msg::Replicate { req: round, entries: vec![] }, round, timeout).await;
            assert!(answer.is_ok(), "{answer:?}");
            std::mem::forget(client);
            wait_for("one accepted connection", || net.accepted.open() == 1 && net.connection_counts().1 == 1).await;
        }
    }

    #[tokio::test]
    async fn a_member_that_never_answers_does_not_hold_up_requests_to_the_others() {
        let (_server, addr) = server(Wire::default()).await;
        // Accepts connections (the kernel does) but never answers a hello: a stopped process.
        let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mute_addr = mute.local_addr().unwrap();
        let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"), Limits::default());
        let stuck = {
            let client = client.clone();
            tokio::spawn(async move {
                let msg = Msg::Replicate { req: 1, entries: vec![] };
                client.request("mute", mute_addr, msg, 1, Duration::from_secs(30)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Connecting to the mute member is in progress; another member still answers.
        let msg = Msg::Replicate { req: 2, entries: vec![] };
        let answer = client.request("server", addr, msg, 2, Duration::from_secs(10)).await;
        assert!(matches!(answer, Ok(Msg::Ack { req: 2 })), "{answer:?}");
        assert!(!stuck.is_finished(), "the mute member cannot have answered");
        stuck.abort();
        drop(mute);
    }

    #[tokio::test]
    async fn another_wire_major_is_refused_on_both_sides_and_the_same_major_talks() {
        let (server_net, addr) = server(Wire { major: 1, minor: 0 }).await;
        let timeout = Duration::from_secs(5);

        let newer =
            Net::new("newer", "c", Wire { major: 2, minor: 0 }, Sealer::with_key(&[1; 32], "c"), Limits::default());
        let err = newer.request("server", addr, Msg::Replicate { req: 1, entries: vec![] }, 1, timeout).await;
        let Err(NetError::Refused { reason, .. }) = err else { panic!("expected a refusal, got {err:?}") };
        assert!(reason.contains("member newer speaks wire protocol 2.0, member server speaks 1.0"), "{reason}");
        assert!(reason.contains("majors differ"), "{reason}");
        assert_eq!(server_net.counters.refused.load(Ordering::Relaxed), 1);

        let minor =
            Net::new("minor", "c", Wire { major: 1, minor: 7 }, Sealer::with_key(&[1; 32], "c"), Limits::default());
        let answer = minor.request("server", addr, Msg::Replicate { req: 2, entries: vec![] }, 2, timeout).await;
        assert!(matches!(answer, Ok(Msg::Ack { req: 2 })), "{answer:?}");
    }
}
