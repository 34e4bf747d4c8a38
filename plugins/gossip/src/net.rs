//! The data plane: one TCP connection per (client, server) pair of members,
//! length-delimited frames, each a sealed postcard-encoded [`Msg`]. The
//! first frame is a `Hello` carrying the cluster name and wire version; a
//! member with another wire major is refused on both sides with the reason.

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

use crate::crypto::Sealer;
use crate::wire::{Msg, Wire, MAX_FRAME};

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
    pub refused: AtomicU64,
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

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec()
}

impl Net {
    pub fn new(local: &str, cluster: &str, wire: Wire, sealer: Sealer) -> Arc<Net> {
        Arc::new(Net {
            local: local.into(),
            cluster: cluster.into(),
            wire,
            sealer,
            conns: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            next_inbound: AtomicU64::new(1),
            next_req: AtomicU64::new(1),
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
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let net = self.clone();
            let handler = handler.clone();
            tokio::spawn(async move { net.serve_one(stream, peer, handler).await });
        }
    }

    async fn serve_one(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, handler: Arc<dyn Handler>) {
        let mut framed = Framed::new(stream, codec());
        let hello = tokio::time::timeout(Duration::from_secs(10), framed.next()).await;
        let Ok(Some(Ok(frame))) = hello else { return };
        let Some(Msg::Hello { cluster, member, wire_major, wire_minor }) = self.open(&frame) else {
            // Wrong key or not a member: counted in `dropped`, no answer.
            return;
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
            let Some(Ok(frame)) = frame else { break };
            let Some(msg) = self.open(&frame) else { continue };
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
                _ => return Err(connect_error("it answered with something other than a welcome".into())),
            },
            // No answer usually means the peer could not open our hello: another cluster key.
            _ => return Err(connect_error("no welcome (does it use the same cluster key?)".into())),
        }
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let net = Net::new("server", "c", wire, Sealer::with_key(&[1; 32], "c"));
        tokio::spawn(net.clone().serve(listener, Arc::new(Echo)));
        (net, addr)
    }

    #[tokio::test]
    async fn a_member_that_never_answers_does_not_hold_up_requests_to_the_others() {
        let (_server, addr) = server(Wire::default()).await;
        // Accepts connections (the kernel does) but never answers a hello: a stopped process.
        let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mute_addr = mute.local_addr().unwrap();
        let client = Net::new("client", "c", Wire::default(), Sealer::with_key(&[1; 32], "c"));
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

        let newer = Net::new("newer", "c", Wire { major: 2, minor: 0 }, Sealer::with_key(&[1; 32], "c"));
        let err = newer.request("server", addr, Msg::Replicate { req: 1, entries: vec![] }, 1, timeout).await;
        let Err(NetError::Refused { reason, .. }) = err else { panic!("expected a refusal, got {err:?}") };
        assert!(reason.contains("member newer speaks wire protocol 2.0, member server speaks 1.0"), "{reason}");
        assert!(reason.contains("majors differ"), "{reason}");
        assert_eq!(server_net.counters.refused.load(Ordering::Relaxed), 1);

        let minor = Net::new("minor", "c", Wire { major: 1, minor: 7 }, Sealer::with_key(&[1; 32], "c"));
        let answer = minor.request("server", addr, Msg::Replicate { req: 2, entries: vec![] }, 2, timeout).await;
        assert!(matches!(answer, Ok(Msg::Ack { req: 2 })), "{answer:?}");
    }
}
