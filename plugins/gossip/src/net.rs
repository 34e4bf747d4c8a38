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

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::config::Limits;
use crate::crypto::Sealer;
use crate::locked;
use crate::wire::{Msg, Wire};

/// Largest first frame (the `Hello`, or its answer): a few hundred bytes
/// in practice, so a stranger cannot make a member allocate more.
pub const HELLO_MAX_FRAME: usize = 4 << 10;

/// A boxed future, the answer of a [`Handler`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Answers requests from other members.
pub trait Handler: Send + Sync + 'static {
    /// Handles `msg` from member `from`; the reply (if any) goes back on the connection.
    fn handle(&self, from: String, msg: Msg) -> BoxFuture<Option<Msg>>;
}

/// Why a request to a member failed.
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
    #[error("member {member} at {addr} refused the connection: nothing listens on its member port")]
    NotListening { member: String, addr: SocketAddr },
}

/// Traffic counters, for `stats`.
#[derive(Default)]
pub struct Counters {
    /// Frames sealed and queued, both ways of every connection.
    pub frames_sent: AtomicU64,
    /// Frames read, whether or not they opened.
    pub frames_received: AtomicU64,
    /// Bytes of `frames_sent`, length prefixes included.
    pub bytes_sent: AtomicU64,
    /// Bytes of `frames_received`, length prefixes included.
    pub bytes_received: AtomicU64,
    /// Connections closed before or at their `Hello` (a stranger, another
    /// cluster or wire major, over a limit) or for a frame over the limit.
    pub refused: AtomicU64,
    /// Failed `accept` calls (out of file descriptors, say).
    pub accept_errors: AtomicU64,
}

/// A member's connection, once made; locked while it is being made.
type ConnSlot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// An outgoing connection to one member. Dropping the last handle closes
/// the socket: the reader is aborted, and the writer ends once it has sent
/// what was already queued (a `Leaving` notice, say), so a connection never
/// outlives the slot that held it.
struct Conn {
    /// Sealed frames to the writer task.
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// What the reader shares with the requests.
    shared: Arc<ConnShared>,
    /// The reader task, aborted with the last handle.
    reader: tokio::task::AbortHandle,
}

/// The reader's half of an outgoing connection.
#[derive(Default)]
struct ConnShared {
    /// Set when the reader sees the connection end.
    closed: std::sync::atomic::AtomicBool,
    /// Requests waiting for their reply, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Msg>>>,
    /// Fired when the connection ends, by the peer or by dropping it here
    /// ([`Net::watch`]).
    ended: tokio_util::sync::CancellationToken,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.shared.ended.cancel();
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
    S: futures_util::Sink<Bytes> + Unpin,
{
    loop {
        let frame = tokio::select! {
            frame = rx.recv() => frame,
            _ = stop.cancelled() => None,
        };
        let Some(frame) = frame else { break };
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(Bytes::from(frame))).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
}

/// This member's side of the data plane: its outgoing connections, the
/// accepted ones and their limits; shared (`Arc`) by the core and its tasks.
pub struct Net {
    /// This member's id, sent in the `Hello`.
    local: String,
    /// The cluster's name: a `Hello` of another cluster is refused.
    cluster: String,
    /// The wire version sent in the `Hello`; another major is refused.
    wire: Wire,
    sealer: Sealer,
    /// One slot per member, each with its own lock: connecting to a slow
    /// or hung member holds up only the requests to that member.
    conns: Mutex<HashMap<String, ConnSlot>>,
    /// Accepted connections by the member that made them: one each.
    inbound: Mutex<HashMap<String, Inbound>>,
    /// Ids for [`Inbound`], to tell a connection from its replacement.
    next_inbound: AtomicU64,
    /// Request ids, matching a reply to its request on a connection.
    next_req: AtomicU64,
    limits: Limits,
    /// Accepted connections against `max_connections` and `max_connections_per_address`.
    accepted: Arc<ConnectionLimit>,
    /// One throttle per kind of warning: strangers, limits, accept errors.
    refusals: Throttled,
    over_limit: Throttled,
    accept_failures: Throttled,
    /// Traffic counters, shared with each outgoing connection's reader.
    pub counters: Arc<Counters>,
}

/// The codec of a new connection: frames up to [`HELLO_MAX_FRAME`] until
/// the handshake is done (then [`Limits::max_frame_bytes`]).
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(HELLO_MAX_FRAME).new_codec()
}

impl Net {
    /// The data plane of member `local`; it serves once [`serve`](Self::serve) runs.
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
            let _ = framed.send(Bytes::from(self.seal(&Msg::Refused { reason }))).await;
            return;
        }
        if framed.send(Bytes::from(self.seal(&Msg::Welcome { member: self.local.clone() }))).await.is_err() {
            return;
        }
        // A member now: its frames may be as large as the limit allows.
        framed.codec_mut().set_max_frame_length(self.limits.max_frame_bytes);
        let (sink, mut stream) = framed.split();
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let close = tokio_util::sync::CancellationToken::new();
        let id = self.next_inbound.fetch_add(1, Ordering::Relaxed);
        let older = locked(&self.inbound).insert(member.clone(), Inbound { id, close: close.clone() });
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
            let mut inbound = locked(&self.inbound);
            if inbound.get(&member).is_some_and(|i| i.id == id) {
                inbound.remove(&member);
            }
        }
        drop(tx);
        let _ = writer.await;
    }

    async fn connect(&self, member: &str, addr: SocketAddr, timeout: Duration) -> Result<Arc<Conn>, NetError> {
        let slot = locked(&self.conns).entry(member.to_string()).or_default().clone();
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
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => NetError::NotListening { member: member.into(), addr },
                _ => connect_error(e.to_string()),
            })?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, codec());
        let hello = Msg::Hello {
            cluster: self.cluster.clone(),
            member: self.local.clone(),
            wire_major: self.wire.major,
            wire_minor: self.wire.minor,
        };
        framed.send(Bytes::from(self.seal(&hello))).await.map_err(|e| connect_error(e.to_string()))?;
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
                    let waiter = locked(&reader_shared.pending).remove(&req);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(msg);
                    }
                }
            }
            // Closed: every waiter learns it (its sender drops).
            reader_shared.closed.store(true, Ordering::SeqCst);
            locked(&reader_shared.pending).clear();
            peer_gone.cancel();
            reader_shared.ended.cancel();
        });
        let conn = Arc::new(Conn { tx, shared, reader: reader.abort_handle() });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Makes sure a connection to `member` is open, and returns what fires
    /// when it ends (closed by the peer, or dropped here).
    pub async fn watch(
        &self,
        member: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<tokio_util::sync::CancellationToken, NetError> {
        Ok(self.connect(member, addr, timeout).await?.shared.ended.clone())
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
            locked(&conn.shared.pending).insert(req, tx);
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
        let slot = locked(&self.conns).remove(member);
        if let Some(slot) = slot {
            slot.lock().await.take();
        }
        if let Some(inbound) = locked(&self.inbound).remove(member) {
            inbound.close.cancel();
        }
    }

    /// Closes every connection, both ways (this member left the cluster).
    /// Frames already queued, such as `Leaving` notices, are still sent.
    pub async fn forget_all(&self) {
        let slots: Vec<ConnSlot> = locked(&self.conns).drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            slot.lock().await.take();
        }
        for (_, inbound) in locked(&self.inbound).drain() {
            inbound.close.cancel();
        }
    }

    /// Open connections: (outgoing, accepted), for tests and stats.
    pub fn connection_counts(&self) -> (usize, usize) {
        let outgoing = locked(&self.conns)
            .values()
            .filter(|slot| {
                slot.try_lock()
                    .map(|s| s.as_ref().is_some_and(|c| !c.shared.closed.load(Ordering::SeqCst)))
                    .unwrap_or(true)
            })
            .count();
        (outgoing, locked(&self.inbound).len())
    }
}

#[cfg(test)]
mod tests;
