//! Entry events: per-cache listeners, kept in the host (never in a
//! strategy), so they stay registered across a hot replacement of the
//! strategy plugin and across standalone <-> clustered switches.
//!
//! Every change reaches [`EntryEvents::dispatch`] from the strategy that
//! applied it: the standalone strategy's caches tell it under their lock,
//! a plugin's strategy through the `cache_event` callback (API 0.1.2). Each
//! listener has a bounded queue; dispatch never waits: when a queue is
//! full the event is dropped and counted, and the listener gets one
//! [`Delivery::Lagged`] saying how many it missed before its next event.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

pub use clusterhost_plugin_api::cluster::EntryEventKind;
use clusterhost_plugin_api::sync::{lock, read, write};
use tokio::sync::mpsc;

/// Which changes a listener gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenScope {
    /// Only the changes made through this member's API (origin = this node).
    Local,
    /// Every change anywhere in the cluster, each with the member it came
    /// from. Needs a strategy that reports entry events (all the shipped
    /// ones); standalone, this node's own changes.
    Clustered,
}

/// How a listener is registered ([`RawCache::listen`](super::RawCache::listen)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    pub scope: ListenScope,
    /// Whether events carry the new value (false: `value` is always `None`).
    pub with_value: bool,
    /// The listener's queue: events waiting for it beyond this many are
    /// dropped (and counted), never waited for.
    pub queue: usize,
}

/// A listener's queue unless told otherwise.
pub const DEFAULT_QUEUE: usize = 1024;

impl ListenOptions {
    /// Only this member's changes, with values.
    pub fn local() -> Self {
        ListenOptions { scope: ListenScope::Local, with_value: true, queue: DEFAULT_QUEUE }
    }

    /// Every member's changes, with values.
    pub fn clustered() -> Self {
        ListenOptions { scope: ListenScope::Clustered, with_value: true, queue: DEFAULT_QUEUE }
    }

    /// Whether events carry the new value.
    pub fn with_value(mut self, with_value: bool) -> Self {
        self.with_value = with_value;
        self
    }

    /// The queue's length (at least 1).
    pub fn queue(mut self, queue: usize) -> Self {
        self.queue = queue.max(1);
        self
    }
}

/// A change of one entry, as a listener gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryEvent {
    pub cache: String,
    pub kind: EntryEventKind,
    pub key: Vec<u8>,
    /// The new value: for `added` and `updated`, to a listener that asked
    /// for values, when the strategy carried it.
    pub value: Option<Vec<u8>>,
    /// The write's version (the removed entry's for `removed`; 0 when the
    /// strategy did not say).
    pub version: u64,
    /// The member whose API call made the change.
    pub origin: String,
}

/// What a listener receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Event(EntryEvent),
    /// `missed` events were dropped because this listener's queue was full
    /// (it did not keep up); the events after this one are complete again.
    Lagged {
        missed: u64,
    },
}

/// Counters of one cache's entry events on this member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryEventCounts {
    /// Events put into a listener's queue.
    pub delivered: u64,
    /// Events dropped because a listener's queue was full.
    pub dropped: u64,
}

/// One registered listener.
struct Slot {
    id: u64,
    scope: ListenScope,
    with_value: bool,
    tx: mpsc::Sender<Delivery>,
    /// Events dropped since the last one queued; told as `Lagged` first
    /// (by the next send, or by the receiver once its queue is empty). The
    /// lock also keeps one listener's sends in order.
    missed: Arc<Mutex<u64>>,
}

#[derive(Default)]
struct CacheListeners {
    slots: RwLock<Vec<Arc<Slot>>>,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

/// The listeners of every cache on this node, and which strategy's events are taken.
pub(crate) struct EntryEvents {
    /// This node's member id: a `Local` listener gets events from this origin only.
    node: String,
    /// By cache name; kept once made, so the counters only grow.
    caches: RwLock<HashMap<String, Arc<CacheListeners>>>,
    /// The generation of the plugin strategy whose events are taken (0:
    /// none): a replaced instance's late events, or events of a strategy
    /// that does not serve this node, are ignored.
    generation: AtomicU64,
    /// The generation of the plugin strategy attached to this node (0:
    /// none), serving or not: it is asked whether a cache is listened from
    /// its attach on, before its events are taken (a replacement must not
    /// hear "no" in between and drop the listened caches it was told of).
    attached: AtomicU64,
    /// Set while the cache factory moves entries between the standalone
    /// strategy and the cluster (a join or leave): moves are not changes,
    /// neither the standalone caches' nor what the strategy reports of
    /// this node's own entries merged in.
    moving: AtomicBool,
    next_id: AtomicU64,
    /// Listeners registered now, on every cache: with none (the common
    /// case) a change costs one load here, not a lookup of its cache. Shared
    /// with each strategy's callbacks ([`Self::registered`]), which read it
    /// before they reach the node.
    registered: Arc<AtomicUsize>,
    /// Listener callbacks that panicked ([`RawCache::listen_with`](super::RawCache::listen_with)).
    panics: AtomicU64,
}

impl EntryEvents {
    pub(crate) fn new(node: &str) -> Arc<Self> {
        Arc::new(EntryEvents {
            node: node.to_string(),
            caches: RwLock::default(),
            generation: AtomicU64::new(0),
            attached: AtomicU64::new(0),
            moving: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            registered: Arc::new(AtomicUsize::new(0)),
            panics: AtomicU64::new(0),
        })
    }

    /// This node's member id.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    fn cache(&self, name: &str) -> Arc<CacheListeners> {
        if let Some(found) = read(&self.caches).get(name) {
            return found.clone();
        }
        write(&self.caches).entry(name.to_string()).or_default().clone()
    }

    /// From now on the events of the plugin strategy instance `generation`
    /// are taken (0: none).
    pub(crate) fn take_from(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
    }

    /// Whether events from strategy instance `generation` are taken now.
    pub(crate) fn takes(&self, generation: u64) -> bool {
        generation != 0 && self.generation.load(Ordering::Acquire) == generation
    }

    /// The plugin strategy instance `generation` is attached to this node (0: none).
    pub(crate) fn attach(&self, generation: u64) {
        self.attached.store(generation, Ordering::Release);
    }

    /// Whether strategy instance `generation` is the one attached now.
    pub(crate) fn attached(&self, generation: u64) -> bool {
        generation != 0 && self.attached.load(Ordering::Acquire) == generation
    }

    /// Marks the standalone caches' changes as moves (not told) or changes again.
    pub(crate) fn set_moving(&self, moving: bool) {
        self.moving.store(moving, Ordering::Release);
    }

    /// Whether the standalone caches' changes are moves right now.
    pub(crate) fn moving(&self) -> bool {
        self.moving.load(Ordering::Acquire)
    }

    /// The count of listeners registered now, for a strategy's callbacks:
    /// zero says no cache is listened without a lookup or a reference to
    /// the node (a strategy asks on every write it applies).
    pub(crate) fn registered(&self) -> Arc<AtomicUsize> {
        self.registered.clone()
    }

    /// Whether any listener is registered at all.
    fn any(&self) -> bool {
        self.registered.load(Ordering::Acquire) > 0
    }

    /// Whether anyone listens to `cache` (so a caller can skip building an event).
    pub(crate) fn listened(&self, cache: &str) -> bool {
        self.any() && read(&self.caches).get(cache).is_some_and(|c| !read(&c.slots).is_empty())
    }

    /// Whether anyone listens to `cache` for this node's own changes only.
    pub(crate) fn listened_locally(&self, cache: &str) -> bool {
        self.any()
            && read(&self.caches)
                .get(cache)
                .is_some_and(|c| read(&c.slots).iter().any(|slot| slot.scope == ListenScope::Local))
    }

    /// Every cache with a listener now.
    pub(crate) fn listened_caches(&self) -> Vec<String> {
        read(&self.caches).iter().filter(|(_, c)| !read(&c.slots).is_empty()).map(|(name, _)| name.clone()).collect()
    }

    /// How many clustered listeners are registered on any cache.
    pub(crate) fn clustered_listeners(&self) -> usize {
        read(&self.caches)
            .values()
            .map(|c| read(&c.slots).iter().filter(|slot| slot.scope == ListenScope::Clustered).count())
            .sum()
    }

    /// Registers a listener on `cache`.
    pub(crate) fn register(self: &Arc<Self>, cache: &str, options: ListenOptions) -> EntryListener {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let missed = Arc::new(Mutex::new(0));
        let slot =
            Arc::new(Slot { id, scope: options.scope, with_value: options.with_value, tx, missed: missed.clone() });
        self.registered.fetch_add(1, Ordering::AcqRel);
        write(&self.cache(cache).slots).push(slot);
        let registration = Registration { hub: Arc::downgrade(self), cache: cache.to_string(), id };
        EntryListener { rx, missed, registration }
    }

    fn unregister(&self, cache: &str, id: u64) {
        if let Some(found) = read(&self.caches).get(cache) {
            let mut slots = write(&found.slots);
            let before = slots.len();
            slots.retain(|slot| slot.id != id);
            if slots.len() < before {
                self.registered.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Gives one change to every listener of its cache that wants it; never waits.
    pub(crate) fn dispatch(
        &self,
        cache: &str,
        kind: EntryEventKind,
        key: &[u8],
        value: Option<&[u8]>,
        version: u64,
        origin: &str,
    ) {
        if !self.any() {
            return;
        }
        let Some(listeners) = read(&self.caches).get(cache).cloned() else { return };
        let slots = read(&listeners.slots);
        let local = origin == self.node;
        for slot in slots.iter().filter(|slot| local || slot.scope == ListenScope::Clustered) {
            let event = EntryEvent {
                cache: cache.to_string(),
                kind,
                key: key.to_vec(),
                value: value.filter(|_| slot.with_value).map(<[u8]>::to_vec),
                version,
                origin: origin.to_string(),
            };
            let counter = if slot.send(event) { &listeners.delivered } else { &listeners.dropped };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counters of every cache that ever had a listener, by name.
    pub(crate) fn counts(&self) -> Vec<(String, EntryEventCounts)> {
        let mut counts: Vec<(String, EntryEventCounts)> = read(&self.caches)
            .iter()
            .map(|(name, c)| {
                let delivered = c.delivered.load(Ordering::Relaxed);
                (name.clone(), EntryEventCounts { delivered, dropped: c.dropped.load(Ordering::Relaxed) })
            })
            .collect();
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        counts
    }

    /// How many listener callbacks panicked.
    pub(crate) fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Runs `handler` for every delivery of `listener` on the current
    /// runtime, panics caught and counted; the task ends with the handle.
    pub(crate) fn run_handler(
        self: &Arc<Self>,
        mut listener: EntryListener,
        handler: impl Fn(&Delivery) + Send + Sync + 'static,
    ) -> ListenerHandle {
        let hub = Arc::downgrade(self);
        let cache = listener.registration.cache.clone();
        let task = tokio::spawn(async move {
            while let Some(delivery) = listener.recv().await {
                if catch_unwind(AssertUnwindSafe(|| handler(&delivery))).is_err() {
                    tracing::error!(cache = %cache, "entry listener panicked; it keeps receiving events");
                    if let Some(hub) = hub.upgrade() {
                        hub.panics.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        ListenerHandle { task }
    }
}

impl Slot {
    /// Queues `event` (after a `Lagged` notice for what was missed); false
    /// if it was dropped because the queue is full.
    fn send(&self, event: EntryEvent) -> bool {
        use mpsc::error::TrySendError;
        let mut missed = lock(&self.missed);
        if *missed > 0 {
            match self.tx.try_send(Delivery::Lagged { missed: *missed }) {
                Ok(()) => *missed = 0,
                Err(TrySendError::Full(_)) => {
                    *missed += 1;
                    return false;
                }
                // The listener is going away; its registration ends with it.
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        match self.tx.try_send(Delivery::Event(event)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                *missed += 1;
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// Unregisters its listener when dropped.
struct Registration {
    hub: Weak<EntryEvents>,
    cache: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unregister(&self.cache, self.id);
        }
    }
}

/// A registered entry listener: receive its events; dropping it unregisters it.
pub struct EntryListener {
    rx: mpsc::Receiver<Delivery>,
    /// The slot's count of dropped events, told once the queue is empty.
    missed: Arc<Mutex<u64>>,
    registration: Registration,
}

impl std::fmt::Debug for EntryListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryListener").field("cache", &self.registration.cache).finish_non_exhaustive()
    }
}

impl EntryListener {
    /// The next delivery; `None` once the cluster manager is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        if let Some(ready) = self.try_recv() {
            return Some(ready);
        }
        // The queue is empty, so nothing is dropped until this returns.
        self.rx.recv().await
    }

    /// The next delivery if one is queued, or, once the queue is empty,
    /// the `Lagged` notice of what was dropped since the last one.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        if let Ok(queued) = self.rx.try_recv() {
            return Some(queued);
        }
        // Under the senders' lock: none queues or drops meanwhile.
        let mut missed = lock(&self.missed);
        if let Ok(queued) = self.rx.try_recv() {
            return Some(queued);
        }
        (*missed > 0).then(|| Delivery::Lagged { missed: std::mem::take(&mut *missed) })
    }

    /// The cache listened to.
    pub fn cache(&self) -> &str {
        &self.registration.cache
    }
}

/// A listener run as a callback ([`RawCache::listen_with`](super::RawCache::listen_with)):
/// dropping it unregisters the listener.
pub struct ListenerHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(hub: &EntryEvents, key: &str, origin: &str) {
        hub.dispatch("c", EntryEventKind::Added, key.as_bytes(), Some(b"v"), 1, origin);
    }

    fn keys(listener: &mut EntryListener) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(delivery) = listener.try_recv() {
            seen.push(match delivery {
                Delivery::Event(e) => String::from_utf8(e.key).expect("utf-8 keys"),
                Delivery::Lagged { missed } => format!("lagged {missed}"),
            });
        }
        seen
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_and_tells_the_listener_how_many_it_missed() {
        let hub = EntryEvents::new("a");
        let mut slow = hub.register("c", ListenOptions::clustered().queue(2));
        for key in ["1", "2", "3", "4"] {
            put(&hub, key, "b");
        }
        assert_eq!(keys(&mut slow), ["1", "2", "lagged 2"], "once the queue is empty, what was dropped");
        put(&hub, "5", "b");
        put(&hub, "6", "b");
        put(&hub, "7", "b");
        assert_eq!(keys(&mut slow), ["5", "6", "lagged 1"]);
        drop(slow);
        let mut slow = hub.register("c", ListenOptions::clustered().queue(2));
        for key in ["8", "9", "10"] {
            put(&hub, key, "b");
        }
        let first = slow.try_recv();
        put(&hub, "11", "b");
        assert!(matches!(first, Some(Delivery::Event(_))));
        // 10 was dropped; the send of 11 queued that notice in the free
        // place (so it comes before anything sent later) and 11 was dropped.
        assert_eq!(keys(&mut slow), ["9", "lagged 1", "lagged 1"]);
        assert_eq!(hub.counts(), vec![("c".into(), EntryEventCounts { delivered: 6, dropped: 5 })]);
    }

    #[tokio::test]
    async fn local_listeners_get_this_nodes_changes_only_and_values_only_when_asked() {
        let hub = EntryEvents::new("a");
        let mut local = hub.register("c", ListenOptions::local().with_value(false));
        let mut clustered = hub.register("c", ListenOptions::clustered());
        put(&hub, "mine", "a");
        put(&hub, "theirs", "b");
        assert_eq!(keys(&mut clustered), ["mine", "theirs"]);
        put(&hub, "again", "a");
        let Some(Delivery::Event(first)) = local.try_recv() else { panic!("the local listener got nothing") };
        assert_eq!((first.key.as_slice(), first.value, first.origin.as_str()), (&b"mine"[..], None, "a"));
        assert_eq!(keys(&mut local), ["again"]);
        drop(local);
        assert!(hub.listened("c"));
        assert!(!hub.listened_locally("c"), "a dropped listener is unregistered");
    }

    #[tokio::test]
    async fn a_panicking_callback_is_counted_and_keeps_receiving() {
        let hub = EntryEvents::new("a");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _handle = hub.run_handler(hub.register("c", ListenOptions::clustered()), move |delivery| {
            if let Delivery::Event(e) = delivery {
                assert_ne!(e.key, b"boom", "the listener's own bug");
                let _ = tx.send(e.key.clone());
            }
        });
        put(&hub, "boom", "b");
        put(&hub, "fine", "b");
        assert_eq!(rx.recv().await.as_deref(), Some(&b"fine"[..]));
        assert_eq!(hub.panics(), 1);
    }
}
