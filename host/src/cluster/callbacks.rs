//! The host's callbacks for one strategy instance, carried across the
//! boundary: the strategy's events go to the actor, its tasks to the node's
//! handlers. They hold the manager weakly, so a strategy never keeps it alive.

use std::sync::Weak;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RStr, RString, RVec};
use async_ffi::{FfiFuture, FutureExt};
use clusterhost_plugin_api::cluster::{
    ClusterCallbacks, ClusterCallbacksBox, ClusterCallbacks_TO, EntryEventKind, FfiCacheEvent, FfiEvent,
};
use tokio::sync::{mpsc, oneshot};

use super::actor::Command;
use super::{ClusterManager, Shared};

impl ClusterManager {
    /// Callbacks for a strategy about to be made, and their generation.
    pub fn callbacks(&self) -> (ClusterCallbacksBox, u64) {
        let generation = self.shared.next_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let callbacks = Callbacks {
            listeners: self.shared.entries.registered(),
            shared: std::sync::Arc::downgrade(&self.shared),
            commands: self.commands.downgrade(),
            generation,
        };
        (ClusterCallbacks_TO::from_ptr(RArc::new(callbacks), TD_Opaque), generation)
    }
}

/// One strategy instance's way back to the host.
#[derive(Clone)]
struct Callbacks {
    /// For tasks: the node's handlers.
    shared: Weak<Shared>,
    /// For events: the actor, while any manager handle lives.
    commands: mpsc::WeakUnboundedSender<Command>,
    /// Which attach this instance belongs to: events of a replaced one are dropped.
    generation: u64,
    /// How many entry listeners the node has ([`EntryEvents::registered`](super::entry_events::EntryEvents::registered)):
    /// with none, a strategy's "is this cache listened?" on each write it
    /// applies is answered by one load.
    listeners: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ClusterCallbacks for Callbacks {
    fn event(&self, event: FfiEvent) {
        let Some(commands) = self.commands.upgrade() else { return };
        match event.decode() {
            Some(event) => {
                if let Some(tap) = self.shared.upgrade().as_deref().and_then(|s| s.tap.get()) {
                    tap.record(self.generation, &event);
                }
                let _ = commands.send(Command::Event { generation: self.generation, event });
            }
            None => tracing::debug!("ignored a cluster event of a kind this host does not know"),
        }
    }

    fn cache_event(&self, event: FfiCacheEvent) {
        if self.listeners.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        let Some(shared) = self.shared.upgrade() else { return };
        let entries = &shared.entries;
        // Only the strategy that serves (or is joining) this node; nothing
        // is built for a cache no one listens to.
        if !entries.takes(self.generation) || !entries.listened(event.cache.as_str()) {
            return;
        }
        // This node's own entries merged into the cluster on its join: moved, not changed.
        if entries.moving() && event.origin.as_str() == entries.node() {
            return;
        }
        let Some(kind) = EntryEventKind::from_code(event.kind) else {
            tracing::debug!(kind = event.kind, "ignored an entry event of a kind this host does not know");
            return;
        };
        let value = event.value.as_ref().map(|v| v.as_slice()).into_option();
        entries.dispatch(event.cache.as_str(), kind, &event.key, value, event.version, event.origin.as_str());
    }

    fn cache_listened(&self, cache: RStr<'_>) -> bool {
        if self.listeners.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return false;
        }
        let Some(shared) = self.shared.upgrade() else { return false };
        // The attached instance, serving or not yet: a replacement asked
        // between its attach and its join keeps the caches it was told of.
        shared.entries.attached(self.generation) && shared.entries.listened(cache.as_str())
    }

    fn run_task(&self, from: RStr<'_>, name: RStr<'_>, payload: RVec<u8>) -> FfiFuture<RResult<RVec<u8>, RString>> {
        let Some(shared) = self.shared.upgrade() else {
            return async { RResult::RErr(RString::from("the node is shutting down")) }.into_ffi();
        };
        let (tx, rx) = oneshot::channel();
        let run = shared.tasks.run_local(from.to_string(), name.as_str(), payload.into());
        // The handler runs on the host's runtime; the plugin only awaits the answer.
        shared.runtime.spawn(async move {
            let _ = tx.send(run.await);
        });
        async move {
            match rx.await {
                Ok(Ok(value)) => RResult::ROk(value.into()),
                Ok(Err(e)) => RResult::RErr(e.into()),
                Err(_) => RResult::RErr("the task was dropped by the host".into()),
            }
        }
        .into_ffi()
    }
}
