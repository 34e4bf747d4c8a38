//! Near cache (`[near_cache]` in conf/redis.toml, docs/redis.md "Near
//! cache"): a local copy of the entries this member read from the caches
//! it names, kept correct by Redis's server-assisted invalidation
//! (`CLIENT TRACKING`, RESP3 pushes).
//!
//! The reads that fill it go over tracking connections of their own (one
//! to the server, or one per Redis Cluster master): Redis remembers which
//! keys (partition hashes) each connection read and, when one changes,
//! pushes an invalidation on that connection. Each invalidation drops the
//! copies of that hash's entries, in the connection's read task, before
//! any later reply on it is handled. A read whose answer comes back
//! after an invalidation of its hash (or after everything was dropped)
//! is answered but not kept: a stale answer never lands. This member's
//! own writes drop the copies of the hash they write once the write is
//! answered (a read begun before does not land), so it reads its own
//! writes at once.
//!
//! When a tracking connection closes (or Redis flushes), every copy is
//! dropped and reads go to Redis until a new tracking connection is up.
//!
//! Why not the `redis` crate's own client-side cache (`cache-aio`): it
//! stores a reply in the caller's task after the connection's read task
//! may already have handled the invalidation that makes it stale, which
//! would then be served until its client-side time to live (30 minutes by
//! default). This module uses the crate's RESP3 connection and push
//! delivery, and keeps the copies itself with that race closed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use lru::LruCache;
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};

use crate::config::{Mode, NearCache};
use crate::conn;
use crate::core::{lock, Core};

/// How long after a failed connect (or a dropped connection) the next
/// connect is tried; reads go to Redis meanwhile.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The tracking connection(s) copies are read over.
pub(crate) enum Route {
    /// Single and Sentinel modes: the server.
    One(MultiplexedConnection),
    /// Redis Cluster: a connection per master, `ranges` of slots (first,
    /// last, index into `conns`), sorted.
    Slots { ranges: Vec<(u16, u16, usize)>, conns: Vec<MultiplexedConnection> },
}

impl Route {
    /// The connection that serves the hash `data`, if any.
    fn conn_for(&self, data: &str) -> Option<MultiplexedConnection> {
        match self {
            Route::One(conn) => Some(conn.clone()),
            Route::Slots { ranges, conns } => {
                let slot = crate::keys::slot(data);
                let i = ranges.partition_point(|(_, last, _)| *last < slot);
                let (first, _, conn) = ranges.get(i)?;
                (*first <= slot).then(|| conns[*conn].clone())
            }
        }
    }
}

/// The copies and what guards them.
struct State {
    /// Bumped each time every copy is dropped: a read begun before does not land.
    epoch: u64,
    /// The tracking connection(s) now, and their id (0: none).
    route: Option<Arc<Route>>,
    route_id: u64,
    /// No connect before this (after a failure).
    retry_at: Option<Instant>,
    /// Copies by [`entry_key`] (the hash and the field), least recently used first.
    entries: LruCache<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    /// Per hash read: how often it was invalidated (reads begun before an
    /// invalidation do not land) and the fields copied from it.
    hashes: HashMap<Vec<u8>, Hash>,
}

impl State {
    /// Drops every copy; a read begun before does not land.
    fn empty(&mut self) {
        self.epoch += 1;
        self.entries.clear();
        self.hashes.clear();
        self.bytes = 0;
    }

    /// A read of hash `data` begins now.
    fn ticket(&mut self, data: &str) -> Ticket {
        let invalidated = self.hashes.entry(data.as_bytes().to_vec()).or_default().invalidated;
        Ticket { epoch: self.epoch, invalidated, route: self.route_id }
    }
}

#[derive(Default)]
struct Hash {
    invalidated: u64,
    fields: HashSet<Vec<u8>>,
}

/// A read that may land in the near cache if nothing invalidated its hash meanwhile.
pub(crate) struct Ticket {
    epoch: u64,
    invalidated: u64,
    route: u64,
}

/// What the near cache has for a read.
pub(crate) enum Look {
    /// A copy: the entry's stored value (version prefix included), or none.
    Hit(Option<Vec<u8>>),
    /// No copy: read over this tracking connection, then [`Near::land`].
    Fill(Ticket, MultiplexedConnection),
    /// No tracking connection now: read from Redis as without a near cache.
    Bypass,
}

/// One member's near cache. Part of [`Core`](crate::core::Core).
pub(crate) struct Near {
    caches: HashSet<String>,
    /// `"*"` was named: every cache.
    every: bool,
    max_entries: usize,
    max_bytes: usize,
    state: Mutex<State>,
    next_route: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    drops: AtomicU64,
}

/// The key a copy is kept under: the hash's length, the hash, the field.
fn entry_key(data: &[u8], field: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + data.len() + field.len());
    key.extend_from_slice(&(data.len() as u64).to_le_bytes());
    key.extend_from_slice(data);
    key.extend_from_slice(field);
    key
}

/// The hash and field of an [`entry_key`].
fn split(key: &[u8]) -> (&[u8], &[u8]) {
    let len = u64::from_le_bytes(key[..8].try_into().expect("8 bytes")) as usize;
    key[8..].split_at(len)
}

fn cost(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + 64
}

impl Near {
    pub(crate) fn new(config: &NearCache) -> Near {
        Near {
            caches: config.caches.iter().cloned().collect(),
            every: config.caches.iter().any(|c| c == "*"),
            max_entries: config.max_entries,
            max_bytes: config.max_bytes as usize,
            state: Mutex::new(State {
                epoch: 0,
                route: None,
                route_id: 0,
                retry_at: None,
                entries: LruCache::unbounded(),
                bytes: 0,
                hashes: HashMap::new(),
            }),
            next_route: AtomicU64::new(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            drops: AtomicU64::new(0),
        }
    }

    /// Whether any cache is near-cached.
    pub(crate) fn enabled(&self) -> bool {
        !self.caches.is_empty()
    }

    /// Whether this member keeps copies of `cache`'s entries.
    pub(crate) fn covers(&self, cache: &str) -> bool {
        self.every || self.caches.contains(cache)
    }

    /// The copy of `field` of hash `data`, if this member holds one (a
    /// hit, counted); `None` counts nothing.
    pub(crate) fn hit(&self, data: &str, field: &[u8]) -> Option<Option<Vec<u8>>> {
        let value = lock(&self.state).entries.get(&entry_key(data.as_bytes(), field))?.clone();
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(value)
    }

    /// The copy of `field` of hash `data`, or how to read it.
    pub(crate) fn look(&self, data: &str, field: &[u8]) -> Look {
        if let Some(value) = self.hit(data, field) {
            return Look::Hit(value);
        }
        // A copy landing between the two locks is only missed; the ticket
        // below is what keeps a stale answer from landing.
        let mut state = lock(&self.state);
        self.misses.fetch_add(1, Ordering::Relaxed);
        let Some(conn) = state.route.as_ref().and_then(|route| route.conn_for(data)) else {
            return Look::Bypass;
        };
        Look::Fill(state.ticket(data), conn)
    }

    /// Keeps what a [`Look::Fill`] read answered, unless its hash was
    /// invalidated (or everything dropped) since the read began.
    pub(crate) fn land(&self, ticket: &Ticket, data: &str, field: &[u8], value: &Option<Vec<u8>>) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        if state.epoch != ticket.epoch || state.route_id != ticket.route {
            return;
        }
        let Some(hash) = state.hashes.get_mut(data.as_bytes()) else {
            return;
        };
        if hash.invalidated != ticket.invalidated {
            return;
        }
        let key = entry_key(data.as_bytes(), field);
        let added = cost(&key, value);
        if added > self.max_bytes / 4 {
            return; // too big to be worth a quarter of the room
        }
        hash.fields.insert(field.to_vec());
        if let Some(old) = state.entries.put(key.clone(), value.clone()) {
            state.bytes -= cost(&key, &old);
        }
        state.bytes += added;
        while state.entries.len() > self.max_entries || state.bytes > self.max_bytes {
            let Some((key, value)) = state.entries.pop_lru() else { break };
            state.bytes -= cost(&key, &value);
            let (data, field) = split(&key);
            if let Some(hash) = state.hashes.get_mut(data) {
                hash.fields.remove(field);
            }
        }
    }

    /// Drops the copies from hash `data`: it changed (an invalidation, or
    /// a write of this member's own).
    pub(crate) fn invalidate(&self, data: &[u8]) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let Some(hash) = state.hashes.get_mut(data) else {
            return; // never read over tracking: nothing copied, nothing in flight
        };
        hash.invalidated += 1;
        for field in std::mem::take(&mut hash.fields) {
            let key = entry_key(data, &field);
            if let Some(value) = state.entries.pop(&key) {
                state.bytes -= cost(&key, &value);
            }
        }
    }

    /// Drops every copy; with `disconnected`, the tracking connection(s)
    /// too (a new one is made on a later read).
    pub(crate) fn drop_all(&self, why: &str, disconnected: bool) {
        let mut state = lock(&self.state);
        let copies = state.entries.len();
        state.empty();
        if disconnected {
            state.route = None;
            state.route_id = 0;
            state.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
        drop(state);
        self.drops.fetch_add(1, Ordering::Relaxed);
        if copies > 0 || disconnected {
            tracing::info!(copies, "near cache emptied: {why}");
        }
    }

    /// Handles a push from tracking connection `route` (in its read task).
    pub(crate) fn pushed(&self, route: u64, info: PushInfo) {
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            self.invalidations.fetch_add(1, Ordering::Relaxed);
                            self.invalidate(key);
                        }
                    }
                }
                // A null list: Redis flushed (FLUSHALL / FLUSHDB) or dropped its tracking table.
                _ => self.drop_all("Redis invalidated every key (a flush?)", false),
            },
            PushKind::Disconnection if lock(&self.state).route_id == route => {
                self.drop_all("its tracking connection to Redis closed", true);
            }
            _ => {}
        }
    }

    /// The id of a new route to connect, when there is no connection and
    /// the last failure is long enough ago (only the near-cache loop
    /// connects, one connect at a time).
    pub(crate) fn begin_connect(&self) -> Option<u64> {
        let state = lock(&self.state);
        if state.route.is_some() || state.retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        Some(self.next_route.fetch_add(1, Ordering::Relaxed))
    }

    /// Ends a connect begun by [`begin_connect`](Self::begin_connect).
    pub(crate) fn connected(&self, id: u64, route: Result<Route, String>) {
        let mut state = lock(&self.state);
        match route {
            Ok(route) => {
                // Copies from before were not tracked by this connection.
                state.empty();
                state.route = Some(Arc::new(route));
                state.route_id = id;
                state.retry_at = None;
                tracing::info!("near cache connected: its tracking connection to Redis is up");
            }
            Err(why) => {
                state.retry_at = Some(Instant::now() + RETRY_AFTER);
                tracing::warn!(
                    "near cache: no tracking connection to Redis ({why}); its caches are read from Redis until one is made (next try in {RETRY_AFTER:?})"
                );
            }
        }
    }

    /// A push handler for tracking connection `route` that holds the near cache weakly.
    pub(crate) fn push_handler(self: &Arc<Self>, route: u64) -> impl Fn(PushInfo) -> Result<(), ()> + Send + Sync {
        let near: Weak<Near> = Arc::downgrade(self);
        move |info| {
            if let Some(near) = near.upgrade() {
                near.pushed(route, info);
            }
            Ok(())
        }
    }

    /// Drops the connections for good (the plugin stops).
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        state.empty();
        state.route = None;
        state.route_id = 0;
        state.retry_at = Some(Instant::now() + Duration::from_secs(3600));
    }

    /// Whether a tracking connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        lock(&self.state).route.is_some()
    }

    /// The counters the host shows.
    pub(crate) fn stats(&self) -> Vec<(String, u64)> {
        let entries = lock(&self.state).entries.len() as u64;
        vec![
            ("near_cache_hits".into(), self.hits.load(Ordering::Relaxed)),
            ("near_cache_misses".into(), self.misses.load(Ordering::Relaxed)),
            ("near_cache_invalidations".into(), self.invalidations.load(Ordering::Relaxed)),
            ("near_cache_drops".into(), self.drops.load(Ordering::Relaxed)),
            ("near_cache_entries".into(), entries),
            ("near_cache_connected".into(), u64::from(self.is_connected())),
        ]
    }
}

/// How often the near-cache loop checks its tracking connection.
const CHECK_EVERY: Duration = Duration::from_millis(100);

impl Core {
    /// The near-cached read of `field` of hash `data`: `None` when the near
    /// cache cannot answer (no tracking connection now, or the read over it
    /// failed: the caller reads from Redis as without a near cache).
    pub(crate) async fn near_read(&self, data: &str, field: &[u8]) -> Option<Option<Vec<u8>>> {
        match self.near.look(data, field) {
            Look::Hit(found) => Some(found),
            Look::Bypass => None,
            Look::Fill(ticket, mut conn) => {
                self.link.count_command();
                match redis::cmd("HGET").arg(data).arg(field).query_async::<Option<Vec<u8>>>(&mut conn).await {
                    Ok(found) => {
                        self.near.land(&ticket, data, field, &found);
                        Some(found)
                    }
                    Err(e) => {
                        // A moved slot, a timeout, a closed connection: a fresh one next.
                        self.near.drop_all(&format!("a read over its tracking connection failed ({e})"), true);
                        None
                    }
                }
            }
        }
    }

    /// Keeps the near cache's tracking connection(s) up while this member
    /// is in the cluster, until the core is dropped or `shutdown` aborts it.
    pub(crate) async fn near_loop(weak: Weak<Core>) {
        loop {
            let Some(core) = weak.upgrade() else { return };
            if core.in_cluster() {
                if let Some(id) = core.near.begin_connect() {
                    let route = core.near_connect(id).await;
                    core.near.connected(id, route);
                }
            }
            drop(core);
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }

    /// Makes the tracking connection(s) for route `id`.
    async fn near_connect(&self, id: u64) -> Result<Route, String> {
        let name = format!(
            "clusterhost-near-{}",
            self.member.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect::<String>()
        );
        let urls = self.config.urls.join(", ");
        match self.config.mode {
            Mode::Single | Mode::Sentinel => {
                let client = conn::server_client(&self.config).await.map_err(|e| e.to_string())?;
                let conn = conn::tracking(&self.config, &client, &name, self.near.push_handler(id))
                    .await
                    .map_err(|e| format!("connecting to {urls}: {e}"))?;
                Ok(Route::One(conn))
            }
            Mode::Cluster => {
                let slots: Value = self
                    .query(redis::cmd("CLUSTER").arg("SLOTS"))
                    .await
                    .map_err(|e| format!("reading the slot map: {e}"))?;
                let masters = slot_masters(slots)?;
                let mut nodes: Vec<(String, u16)> = Vec::new();
                let mut ranges = Vec::new();
                for (first, last, host, port) in masters {
                    let index = match nodes.iter().position(|n| n.0 == host && n.1 == port) {
                        Some(i) => i,
                        None => {
                            nodes.push((host, port));
                            nodes.len() - 1
                        }
                    };
                    ranges.push((first, last, index));
                }
                ranges.sort_unstable();
                let mut conns = Vec::with_capacity(nodes.len());
                for (host, port) in &nodes {
                    let url = conn::node_url(&self.config, host, *port);
                    let client = conn::client(&self.config, &url).map_err(|e| format!("{url}: {e}"))?;
                    let conn = conn::tracking(&self.config, &client, &name, self.near.push_handler(id))
                        .await
                        .map_err(|e| format!("connecting to master {host}:{port}: {e}"))?;
                    conns.push(conn);
                }
                Ok(Route::Slots { ranges, conns })
            }
        }
    }
}

/// The masters of a `CLUSTER SLOTS` answer: (first slot, last slot, host, port).
fn slot_masters(answer: Value) -> Result<Vec<(u16, u16, String, u16)>, String> {
    let bad = |what: &str| format!("CLUSTER SLOTS answered {what}");
    let Value::Array(ranges) = answer else { return Err(bad("no list")) };
    if ranges.len() > usize::from(crate::keys::SLOTS) {
        return Err(bad("more ranges than slots"));
    }
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else { return Err(bad("a range that is not a list")) };
        let number = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => u16::try_from(*n).ok(),
            _ => None,
        };
        let (Some(first), Some(last)) = (number(parts.first()), number(parts.get(1))) else {
            return Err(bad("a range without its slots"));
        };
        let Some(Value::Array(master)) = parts.get(2) else { return Err(bad("a range without its master")) };
        let host = match master.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => return Err(bad("a master without its address")),
        };
        let Some(port) = number(master.get(1)) else { return Err(bad("a master without its port")) };
        if host.is_empty() || host == "?" || first > last {
            return Err(bad("a master whose address is unknown (is the cluster still forming?)"));
        }
        out.push((first, last, host, port));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A near cache whose tracking connection (id 7) is "up": the
    /// bookkeeping needs no real connection.
    fn near(max_entries: usize, max_bytes: u64) -> Near {
        let near = Near::new(&NearCache { caches: vec!["c".into()], max_entries, max_bytes });
        lock(&near.state).route_id = 7;
        near
    }

    fn read(near: &Near, data: &str, field: &[u8], value: &[u8]) {
        let ticket = lock(&near.state).ticket(data);
        near.land(&ticket, data, field, &Some(value.to_vec()));
    }

    fn copy(near: &Near, data: &str, field: &[u8]) -> Option<Option<Vec<u8>>> {
        lock(&near.state).entries.get(&entry_key(data.as_bytes(), field)).cloned()
    }

    #[test]
    fn the_slot_map_is_read_and_bad_answers_are_refused() {
        let range = |a: i64, b: i64, host: &str, port: i64| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                Value::Array(vec![Value::BulkString(host.as_bytes().to_vec()), Value::Int(port)]),
            ])
        };
        let map = Value::Array(vec![range(0, 5460, "127.0.0.1", 7000), range(5461, 16383, "127.0.0.1", 7001)]);
        assert_eq!(
            slot_masters(map).unwrap(),
            vec![(0, 5460, "127.0.0.1".into(), 7000), (5461, 16383, "127.0.0.1".into(), 7001)]
        );
        let err = slot_masters(Value::Array(vec![range(0, 5, "", 7000)])).unwrap_err();
        assert!(err.contains("address is unknown"), "{err}");
        assert!(slot_masters(Value::Array(vec![range(0, 70000, "h", 1)])).is_err());
        assert!(slot_masters(Value::Int(3)).is_err());
        assert!(slot_masters(Value::Array(vec![Value::Array(vec![Value::Int(1)])])).is_err());
    }

    #[test]
    fn keys_split_back() {
        let key = entry_key(b"p:cache:x", b"field\x00\xff");
        assert_eq!(split(&key), (&b"p:cache:x"[..], &b"field\x00\xff"[..]));
    }

    #[test]
    fn a_read_lands_unless_its_hash_was_invalidated_or_everything_dropped_meanwhile() {
        let n = near(100, 1 << 20);
        assert!(n.covers("c") && !n.covers("d") && n.enabled());
        read(&n, "h1", b"a", b"1");
        assert_eq!(copy(&n, "h1", b"a"), Some(Some(b"1".to_vec())));

        // The invalidation is handled between the read's answer and its landing.
        let ticket = lock(&n.state).ticket("h1");
        n.invalidate(b"h1");
        n.land(&ticket, "h1", b"b", &Some(b"old".to_vec()));
        assert_eq!(copy(&n, "h1", b"b"), None, "a stale answer never lands");
        assert_eq!(copy(&n, "h1", b"a"), None, "the invalidation dropped the hash's copies");

        // Another hash's invalidation leaves a read alone.
        let ticket = lock(&n.state).ticket("h1");
        n.invalidate(b"h2");
        n.land(&ticket, "h1", b"b", &Some(b"2".to_vec()));
        assert_eq!(copy(&n, "h1", b"b"), Some(Some(b"2".to_vec())));

        let ticket = lock(&n.state).ticket("h1");
        n.drop_all("test", false);
        n.land(&ticket, "h1", b"c", &None);
        assert_eq!(lock(&n.state).entries.len(), 0, "nothing lands across a drop");

        // A read over a connection that is gone does not land.
        let ticket = lock(&n.state).ticket("h1");
        lock(&n.state).route_id = 8;
        n.land(&ticket, "h1", b"c", &None);
        assert_eq!(copy(&n, "h1", b"c"), None);
    }

    #[test]
    fn copies_are_bounded_by_count_and_bytes_least_recently_used_first() {
        let n = near(3, 1 << 20);
        for f in [b"a", b"b", b"c"] {
            read(&n, "h", f, b"v");
        }
        assert!(copy(&n, "h", b"a").is_some(), "a used: b is now the oldest");
        read(&n, "h", b"d", b"v");
        assert_eq!(lock(&n.state).entries.len(), 3);
        assert_eq!(copy(&n, "h", b"b"), None);
        assert!(!lock(&n.state).hashes[&b"h"[..]].fields.contains(&b"b"[..]));

        let n = near(1000, 1000);
        for i in 0..20u8 {
            read(&n, "h", &[i], &[0; 100]);
        }
        let state = lock(&n.state);
        assert!(
            state.bytes <= 1000 && state.entries.len() < 20,
            "{} bytes, {} entries",
            state.bytes,
            state.entries.len()
        );
        drop(state);
        read(&n, "h", b"huge", &[0; 400]);
        assert_eq!(copy(&n, "h", b"huge"), None, "a value over a quarter of the room is not kept");
    }

    #[test]
    fn pushes_invalidate_keys_and_a_null_or_a_disconnection_empties_it() {
        let n = near(100, 1 << 20);
        read(&n, "h1", b"a", b"1");
        read(&n, "h2", b"a", b"1");
        n.pushed(
            7,
            PushInfo { kind: PushKind::Invalidate, data: vec![Value::Array(vec![Value::BulkString(b"h1".to_vec())])] },
        );
        assert_eq!((copy(&n, "h1", b"a"), copy(&n, "h2", b"a").is_some()), (None, true));
        n.pushed(7, PushInfo { kind: PushKind::Invalidate, data: vec![Value::Nil] });
        assert_eq!(lock(&n.state).entries.len(), 0);

        read(&n, "h1", b"a", b"1");
        n.pushed(6, PushInfo { kind: PushKind::Disconnection, data: vec![] });
        assert!(copy(&n, "h1", b"a").is_some(), "an older connection closing changes nothing");
        n.pushed(7, PushInfo { kind: PushKind::Disconnection, data: vec![] });
        assert_eq!(lock(&n.state).entries.len(), 0);
        let stats = n.stats();
        assert!(stats.contains(&("near_cache_invalidations".into(), 1)), "{stats:?}");
    }
}
