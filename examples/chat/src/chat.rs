//! The chat: sockets on this node, the clustered routing table, delivery
//! across nodes as cluster tasks, presence from entry events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clusterhost::cluster::{
    Cache, CacheBounds, ClusterError, ClusterEvent, ClusterManager, Delivery, EntryEventKind, ListenOptions, Target,
};
use clusterhost_plugin_api::cluster::now_ms;
use clusterhost_plugin_api::sync::lock as locked;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The routing table's cache: user → the node that holds the user's socket.
pub const ROUTES: &str = "chat-routes";
/// A route expires this long after its last refresh (the cache's TTL: a
/// node that stops refreshing, e.g. frozen, takes its users offline within it).
const ROUTE_TTL: Duration = Duration::from_secs(10);
/// How often a live socket refreshes its route.
const REFRESH_EVERY: Duration = Duration::from_secs(3);
/// The cluster task that hands a message to the node holding its recipient.
const DELIVER_TASK: &str = "chat.deliver";
/// How long a delivery waits before it tries again (no route yet, the
/// recipient's node unreachable or between strategies).
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// The longest user name, and message text, a client may send.
const MAX_USER: usize = 32;
const MAX_TEXT: usize = 4096;
/// The most messages that may wait for one recipient from one sender's session.
const MAX_WAITING: usize = 1_000;
/// The most recipients one session may have messages waiting for, and all
/// sessions together on this node.
const MAX_RECIPIENTS: usize = 64;
const MAX_OUTBOXES: usize = 10_000;
/// How long a message is retried before its sender is told it was not delivered.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);
/// How long an empty outbox waits for more before it goes.
const OUTBOX_IDLE: Duration = Duration::from_secs(30);
/// The most sockets this node serves, and the most messages queued for one
/// page; a page that does not read them is disconnected.
const MAX_SOCKETS: usize = 10_000;
const MAX_QUEUED: usize = 1_024;
/// How long a page may take to take one message.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest WebSocket message read from a client.
const MAX_FRAME: usize = 16 * 1024;

/// One chat message, as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub from: String,
    pub to: String,
    /// The sender's connection (messages of one session are numbered from 1).
    pub session: String,
    pub seq: u64,
    pub text: String,
    /// When the sender's node took it (ms since the epoch).
    pub sent_ms: u64,
}

/// What a page sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FromClient {
    Send { to: String, text: String },
}

/// What a page receives.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ToClient<'a> {
    /// On connect: who this node is and who is online now.
    Welcome {
        user: &'a str,
        node: &'a str,
        online: Vec<String>,
    },
    Presence {
        user: &'a str,
        online: bool,
    },
    Message {
        from: &'a str,
        seq: u64,
        text: &'a str,
        sent_ms: u64,
        delivered_by: &'a str,
    },
    /// The message numbered `seq` was accepted by the node that holds `to`'s socket.
    Delivered {
        to: &'a str,
        seq: u64,
    },
    /// The message numbered `seq` could not be delivered within the deadline.
    Undelivered {
        to: &'a str,
        seq: u64,
        error: String,
    },
    Error {
        error: String,
    },
}

fn encode(message: &ToClient<'_>) -> String {
    serde_json::to_string(message).expect("a chat message always encodes")
}

/// One connected user on this node.
struct Socket {
    connection: u64,
    out: mpsc::Sender<String>,
}

impl Socket {
    /// Queues `text` for the page; false when the page does not keep up
    /// (its queue is full: it is disconnected) or is gone.
    fn send(&self, text: String) -> bool {
        self.out.try_send(text).is_ok()
    }
}

struct Inner {
    cluster: ClusterManager,
    me: String,
    routes: Cache<String, String>,
    sockets: Mutex<HashMap<String, Socket>>,
    /// (sender's session, recipient) → its queue of messages waiting.
    outboxes: Mutex<HashMap<(String, String), mpsc::Sender<Message>>>,
    /// (sender's session, recipient on this node) → the last number delivered.
    delivered: Mutex<HashMap<(String, String), u64>>,
    next_connection: AtomicU64,
    /// Closed when the server stops: every socket ends.
    closing: tokio::sync::watch::Sender<bool>,
}

/// The chat server's state; cheap to clone.
#[derive(Clone)]
pub struct Chat(Arc<Inner>);

fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER
        && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Chat {
    /// Opens the routing table, registers the delivery task, the presence
    /// listener and the senior's clean-up of a departed node's routes.
    pub async fn start(cluster: ClusterManager) -> Result<Chat, ClusterError> {
        let bounds = CacheBounds { ttl_ms: ROUTE_TTL.as_millis() as u64, ..CacheBounds::NONE };
        let routes = match cluster.bounded_cache::<String, String>(ROUTES, bounds).await {
            Ok(routes) => routes,
            // The host applies the TTL to every strategy that can keep it
            // (standalone always); until then the senior's clean-up of a
            // departed node is what takes its users offline.
            Err(e) => {
                tracing::warn!("routes without a time to live while this strategy serves: {e}");
                cluster.caches().cache(ROUTES)
            }
        };
        let (closing, _) = tokio::sync::watch::channel(false);
        let chat = Chat(Arc::new(Inner {
            me: cluster.node().to_string(),
            cluster: cluster.clone(),
            routes,
            sockets: Mutex::default(),
            outboxes: Mutex::default(),
            delivered: Mutex::default(),
            next_connection: AtomicU64::new(1),
            closing,
        }));
        let deliver = chat.clone();
        cluster.register_task(DELIVER_TASK, move |message: Message| {
            let deliver = deliver.clone();
            async move { Ok::<bool, String>(deliver.deliver_here(&message)) }
        });
        let presence = chat.clone();
        let listener = chat
            .0
            .routes
            .raw()
            .listen_with(ListenOptions::clustered().with_value(false), move |delivery| presence.on_route(delivery))
            .await?;
        // Registered for the life of the process.
        std::mem::forget(listener);
        let cleanup = chat.clone();
        cluster.add_listener("chat: routes of departed nodes", move |event: &ClusterEvent| {
            if let ClusterEvent::LeftCluster { member, local: false } = event {
                let (chat, member) = (cleanup.clone(), member.clone());
                tokio::spawn(async move { chat.forget_node(&member).await });
            }
            Ok(())
        });
        Ok(chat)
    }

    /// Ends every socket (the server is stopping).
    pub fn close_all(&self) {
        self.0.closing.send_replace(true);
    }

    /// A change of the routing table: presence for this node's pages.
    fn on_route(&self, delivery: &Delivery) {
        let (user, online) = match delivery {
            Delivery::Event(event) => {
                let Ok(user) = postcard::from_bytes::<String>(&event.key) else { return };
                match event.kind {
                    EntryEventKind::Added => (user, true),
                    EntryEventKind::Removed | EntryEventKind::Expired | EntryEventKind::Evicted => (user, false),
                    // A refresh, or a move to another node: still online.
                    EntryEventKind::Updated => return,
                }
            }
            // Events were dropped: the pages ask again by reconnecting.
            Delivery::Lagged { missed } => {
                tracing::warn!(missed, "presence events dropped; pages may show stale presence until they reconnect");
                return;
            }
        };
        let text = encode(&ToClient::Presence { user: &user, online });
        for socket in locked(&self.0.sockets).values() {
            socket.send(text.clone());
        }
    }

    /// The senior removes the routes of a node that left the cluster (it
    /// died, or left without taking its users offline), so its users go
    /// offline within the failure detection rather than the routes' TTL.
    async fn forget_node(&self, member: &str) {
        if self.0.cluster.status().senior.as_deref() != Some(self.0.me.as_str()) {
            return;
        }
        let users = match self.0.routes.keys().await {
            Ok(users) => users,
            Err(e) => return tracing::warn!(member, "could not list the routes to forget the node's users: {e}"),
        };
        let member = member.to_string();
        for user in users {
            if let Err(e) = self.0.routes.remove_if_value(&user, &member).await {
                tracing::warn!(user, member, "could not remove a departed node's route: {e}");
            }
        }
    }

    /// Hands `message` to its recipient's socket on this node: true when
    /// it is there (delivered now, or already before: a retry).
    fn deliver_here(&self, message: &Message) -> bool {
        let sockets = locked(&self.0.sockets);
        let Some(socket) = sockets.get(&message.to) else { return false };
        let mut delivered = locked(&self.0.delivered);
        let last = delivered.entry((message.session.clone(), message.to.clone())).or_insert(0);
        if message.seq > *last {
            let text = encode(&ToClient::Message {
                from: &message.from,
                seq: message.seq,
                text: &message.text,
                sent_ms: message.sent_ms,
                delivered_by: &self.0.me,
            });
            if !socket.send(text) {
                return false;
            }
            *last = message.seq;
        }
        true
    }

    /// One attempt to deliver `message`: through the route, here or on another node.
    async fn try_deliver(&self, message: &Message) -> bool {
        let route = match self.0.routes.get(&message.to).await {
            Ok(Some(node)) => node,
            _ => return false,
        };
        if route == self.0.me {
            return self.deliver_here(message);
        }
        match self.0.cluster.call_task::<Message, bool>(Target::Member(route), DELIVER_TASK, message).await {
            Ok(replies) => replies.into_iter().any(|reply| reply.outcome == Ok(true)),
            Err(_) => false,
        }
    }

    /// Queues `message` for delivery: messages of one session to one
    /// recipient go one at a time, each retried until delivered, so they
    /// arrive in order, once each; one not delivered within
    /// [`DELIVERY_DEADLINE`] is reported to its sender as undelivered.
    fn send(&self, message: Message) -> Result<(), String> {
        let key = (message.session.clone(), message.to.clone());
        let mut outboxes = locked(&self.0.outboxes);
        if !outboxes.contains_key(&key) {
            if outboxes.len() >= MAX_OUTBOXES {
                return Err("this node has too many conversations waiting; try again later".into());
            }
            if outboxes.keys().filter(|(session, _)| *session == key.0).count() >= MAX_RECIPIENTS {
                return Err(format!(
                    "messages already wait for {MAX_RECIPIENTS} recipients; wait until they are delivered"
                ));
            }
            let (tx, rx) = mpsc::channel::<Message>(MAX_WAITING);
            tokio::spawn(self.clone().drain_outbox(key.clone(), rx));
            outboxes.insert(key.clone(), tx);
        }
        outboxes[&key]
            .try_send(message)
            .map_err(|_| format!("more than {MAX_WAITING} messages wait for this recipient; slow down"))
    }

    /// Delivers one outbox's messages in order; goes once empty for a while.
    async fn drain_outbox(self, key: (String, String), mut rx: mpsc::Receiver<Message>) {
        loop {
            let message = match tokio::time::timeout(OUTBOX_IDLE, rx.recv()).await {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(_) => {
                    // Idle: gone, unless a message arrived meanwhile (both under the lock).
                    let mut outboxes = locked(&self.0.outboxes);
                    if rx.is_empty() {
                        outboxes.remove(&key);
                        return;
                    }
                    continue;
                }
            };
            let started = Instant::now();
            let mut delivered = self.try_deliver(&message).await;
            while !delivered && started.elapsed() < DELIVERY_DEADLINE {
                tokio::time::sleep(RETRY_EVERY).await;
                delivered = self.try_deliver(&message).await;
            }
            let (to, seq) = (&message.to, message.seq);
            let note = if delivered {
                if started.elapsed() > Duration::from_secs(1) {
                    tracing::info!(from = %message.from, to = %to, seq, "delivered after {:?}", started.elapsed());
                }
                ToClient::Delivered { to, seq }
            } else {
                let error = format!(
                    "not delivered to {to} within {} s: not online, or its node unreachable",
                    DELIVERY_DEADLINE.as_secs()
                );
                ToClient::Undelivered { to, seq, error }
            };
            self.tell(&message.from, &encode(&note));
        }
    }

    /// Sends `text` to `user`'s socket on this node, if any.
    fn tell(&self, user: &str, text: &str) {
        if let Some(socket) = locked(&self.0.sockets).get(user) {
            socket.send(text.to_string());
        }
    }

    /// Serves one page's socket: route refreshes while it lives, messages
    /// in and out, and its route removed when it goes.
    async fn serve(self, user: String, socket: WebSocket) {
        let connection = self.0.next_connection.fetch_add(1, Ordering::Relaxed);
        let session = format!("{}/{connection}", self.0.me);
        let (out, mut outgoing) = mpsc::channel::<String>(MAX_QUEUED);
        {
            let mut sockets = locked(&self.0.sockets);
            if sockets.len() >= MAX_SOCKETS && !sockets.contains_key(&user) {
                tracing::warn!(user, "refused a socket: this node serves {MAX_SOCKETS} already");
                return;
            }
            sockets.insert(user.clone(), Socket { connection, out: out.clone() });
        }
        let (mut sink, mut stream) = socket.split();
        // The page's messages go out from a task of their own, so a page
        // that does not read stops only itself (its queue fills, it is
        // disconnected), never this loop.
        let writer = tokio::spawn(async move {
            while let Some(text) = outgoing.recv().await {
                match tokio::time::timeout(WRITE_TIMEOUT, sink.send(WsMessage::Text(text.into()))).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            let _ = sink.close().await;
        });
        if let Err(e) = self.0.routes.put(&user, &self.0.me).await {
            let _ = out.try_send(encode(&ToClient::Error { error: e.to_string() }));
        }
        let online = self.0.routes.keys().await.unwrap_or_default();
        let _ = out.try_send(encode(&ToClient::Welcome { user: &user, node: &self.0.me, online }));
        let mut closing = self.0.closing.subscribe();
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH_EVERY, REFRESH_EVERY);
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = refresh.tick() => {
                    // A newer connection of the same user elsewhere took the route: this one ends.
                    match self.0.routes.get(&user).await {
                        Ok(Some(node)) if node != self.0.me => break,
                        _ => {}
                    }
                    if let Err(e) = self.0.routes.put(&user, &self.0.me).await {
                        tracing::warn!(user, "could not refresh the route: {e}");
                    }
                }
                incoming = stream.next() => {
                    let Some(Ok(incoming)) = incoming else { break };
                    let WsMessage::Text(text) = incoming else { continue };
                    let reply = match serde_json::from_str::<FromClient>(&text) {
                        Ok(FromClient::Send { to, text }) if valid_user(&to) && text.len() <= MAX_TEXT => {
                            seq += 1;
                            let message = Message { from: user.clone(), to, session: session.clone(), seq, text, sent_ms: now_ms() };
                            self.send(message).err()
                        }
                        Ok(FromClient::Send { .. }) => Some(format!("a recipient is 1 to {MAX_USER} letters, digits, - or _, and a text at most {MAX_TEXT} bytes")),
                        Err(e) => Some(format!("not a chat message ({e}); send {{\"type\":\"send\",\"to\":USER,\"text\":TEXT}}")),
                    };
                    if let Some(error) = reply {
                        if out.try_send(encode(&ToClient::Error { error })).is_err() {
                            break;
                        }
                    }
                }
                _ = closing.changed() => break,
                // The page stopped reading: its queue is full, or its writer ended.
                _ = out.closed() => break,
            }
            if out.capacity() == 0 {
                tracing::warn!(user, "disconnected a page that does not read its messages");
                break;
            }
        }
        let mine = {
            let mut sockets = locked(&self.0.sockets);
            let mine = sockets.get(&user).is_some_and(|s| s.connection == connection);
            if mine {
                sockets.remove(&user);
                locked(&self.0.delivered).retain(|(_, to), _| *to != user);
            }
            mine
        };
        drop(out);
        writer.abort();
        // Only this connection's route: the user may have reconnected elsewhere.
        if mine {
            if let Err(e) = self.0.routes.remove_if_value(&user, &self.0.me).await {
                tracing::warn!(user, "could not remove the route of a closed socket: {e}");
            }
        }
    }
}

#[derive(Deserialize)]
struct Who {
    user: String,
}

async fn page() -> Html<&'static str> {
    Html(crate::page::PAGE)
}

async fn connect(
    State(chat): State<Chat>,
    Query(who): Query<Who>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // A page from another site may not open a socket here in a visitor's name.
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = header("origin") {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if Some(origin_host) != header("host") {
            return (
                StatusCode::FORBIDDEN,
                "a chat socket is opened only by the chat's own page (Origin and Host differ)",
            )
                .into_response();
        }
    }
    if !valid_user(&who.user) {
        let why = format!(
            "user {:?}: a user name is 1 to {MAX_USER} letters, digits, - or _",
            who.user.chars().take(40).collect::<String>()
        );
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    upgrade.max_message_size(MAX_FRAME).max_frame_size(MAX_FRAME).on_upgrade(move |socket| chat.serve(who.user, socket))
}

/// The page at `/` and its socket at `/ws?user=NAME`.
pub fn router(chat: Chat) -> Router {
    Router::new().route("/", get(page)).route("/ws", get(connect)).with_state(chat)
}
