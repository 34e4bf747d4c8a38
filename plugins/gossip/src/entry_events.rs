//! Entry events: every write this member's replica applies that changes
//! what it holds (its own writes, those received from another member, a
//! join's state transfer and anti-entropy) is told to the host, with the
//! member whose write it was. A version carries that member as a hash
//! ([`member_hash`]); [`Origins`] names it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clusterhost_plugin_api::cluster::CacheEvent;

use crate::core::Core;
use crate::locked;
use crate::store::{member_hash, StoreChange};

/// Member ids by their [`member_hash`]: every member this one has seen in
/// its view, kept after it leaves (a write of a member that left can still
/// arrive, in a state transfer).
#[derive(Default)]
pub(crate) struct Origins(Mutex<HashMap<u64, String>>);

impl Origins {
    /// The id of the member whose hash is `hash`: this member, one in the
    /// view, one seen before, or (a member this one never saw, e.g. one
    /// gone before it joined) `member-<hash in hex>`.
    fn name(&self, core: &Core, hash: u64) -> String {
        if let Some(known) = locked(&self.0).get(&hash) {
            return known.clone();
        }
        let mut known = locked(&self.0);
        known.insert(member_hash(&core.member), core.member.clone());
        for id in core.view.current().members.keys() {
            known.insert(member_hash(id), id.clone());
        }
        known.get(&hash).cloned().unwrap_or_else(|| format!("member-{hash:016x}"))
    }
}

/// Tells `core`'s host every change its replica applies, under the store's
/// lock (the order of a key's versions). The version an event carries is
/// the write's hybrid clock value, the one `cache_get_versioned` answers.
pub(crate) fn observe(core: &Arc<Core>) {
    let weak = Arc::downgrade(core);
    let hosts = core.host.clone();
    core.replica.store.observe(Box::new(move |change: StoreChange<'_>| {
        // Every write comes here, under the store's lock: while no one on
        // this node listens to the cache, nothing is built and no shared
        // counter is touched (no lock, no reference taken).
        let host = hosts.load();
        let Some(host) = host.as_deref() else { return };
        if !host.cache_listened(change.cache) {
            return;
        }
        // The caller holds the core (it is applying a write to its store).
        let Some(core) = weak.upgrade() else { return };
        host.emit_cache_event(CacheEvent {
            kind: change.kind,
            cache: change.cache.to_string(),
            key: change.key.to_vec(),
            value: change.value.map(<[u8]>::to_vec),
            version: change.version.hlc,
            origin: core.origins.name(&core, change.version.member),
        });
    }));
}
