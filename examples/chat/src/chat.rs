//! The chat: sockets on this node, the clustered routing table, delivery
//! across nodes as cluster tasks, presence from entry events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
const MAX_WAITING: usize = 10_000;
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
    /// The message numbered `seq` reached `to`'s node and socket.
    Delivered {
        to: &'a str,
        seq: u64,
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
    out: mpsc::UnboundedSender<String>,
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

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

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
            let _ = socket.out.send(text.clone());
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
            if socket.out.send(text).is_err() {
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
    /// arrive in order, once each, and none is dropped while this node lives.
    fn send(&self, message: Message) -> Result<(), String> {
        let key = (message.session.clone(), message.to.clone());
        let mut outboxes = locked(&self.0.outboxes);
        let queue = outboxes.entry(key.clone()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<Message>(MAX_WAITING);
            let chat = self.clone();
            tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    let started = Instant::now();
                    while !chat.try_deliver(&message).await {
                        tokio::time::sleep(RETRY_EVERY).await;
                    }
                    if started.elapsed() > Duration::from_secs(1) {
                        tracing::info!(from = %message.from, to = %message.to, seq = message.seq, "delivered after {:?}", started.elapsed());
                    }
                    chat.tell(&message.from, &encode(&ToClient::Delivered { to: &message.to, seq: message.seq }));
                }
            });
            tx
        });
        queue
            .try_send(message)
            .map_err(|_| format!("more than {MAX_WAITING} messages wait for this recipient; slow down"))
    }

    /// Sends `text` to `user`'s socket on this node, if any.
    fn tell(&self, user: &str, text: &str) {
        if let Some(socket) = locked(&self.0.sockets).get(user) {
            let _ = socket.out.send(text.to_string());
        }
    }

    /// Serves one page's socket: route refreshes while it lives, messages
    /// in and out, and its route removed when it goes.
    async fn serve(self, user: String, socket: WebSocket) {
        let connection = self.0.next_connection.fetch_add(1, Ordering::Relaxed);
        let session = format!("{}/{connection}", self.0.me);
        let (out, mut outgoing) = mpsc::unbounded_channel::<String>();
        locked(&self.0.sockets).insert(user.clone(), Socket { connection, out: out.clone() });
        let (mut sink, mut stream) = socket.split();
        if let Err(e) = self.0.routes.put(&user, &self.0.me).await {
            let _ = sink.send(WsMessage::Text(encode(&ToClient::Error { error: e.to_string() }).into())).await;
        }
        let online = self.0.routes.keys().await.unwrap_or_default();
        let _ = out.send(encode(&ToClient::Welcome { user: &user, node: &self.0.me, online }));
        let mut closing = self.0.closing.subscribe();
        let refresh = {
            let chat = self.clone();
            let user = user.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REFRESH_EVERY).await;
                    if let Err(e) = chat.0.routes.put(&user, &chat.0.me).await {
                        tracing::warn!(user, "could not refresh the route: {e}");
                    }
                }
            })
        };
        let mut seq = 0;
        loop {
            tokio::select! {
                Some(text) = outgoing.recv() => {
                    if sink.send(WsMessage::Text(text.into())).await.is_err() {
                        break;
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
                        let _ = out.send(encode(&ToClient::Error { error }));
                    }
                }
                _ = closing.changed() => break,
            }
        }
        refresh.abort();
        let mine = {
            let mut sockets = locked(&self.0.sockets);
            let mine = sockets.get(&user).is_some_and(|s| s.connection == connection);
            if mine {
                sockets.remove(&user);
            }
            mine
        };
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

async fn connect(State(chat): State<Chat>, Query(who): Query<Who>, upgrade: WebSocketUpgrade) -> Response {
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
