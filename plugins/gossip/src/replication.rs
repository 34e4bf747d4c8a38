//! Replication of cache entries: this member's replica of every cache, a
//! write applied here and acknowledged by every other member, and whole-state
//! transfer (pulled from every member on join, pushed to a newcomer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clusterhost_plugin_api::cluster::Entry;
use clusterhost_plugin_api::PluginResult;

use crate::core::Core;
use crate::net::NetError;
use crate::store::{chunks, entry_size, member_hash, Hlc, Store, Version, WireEntry};
use crate::wire::{Msg, TIMED_WIRE};

/// What sealing and framing add to a message's entries (nonce, tag,
/// postcard's enum and length prefixes, the length prefix of the frame).
const FRAME_OVERHEAD: usize = 256;

/// How long a write whose acknowledgement failed waits for the member's
/// `Leaving` notice before it reports the failure (see `left_meanwhile`).
const LEAVE_NOTICE_WAIT: Duration = Duration::from_millis(100);

/// This member's copy of every cache and the clock that versions its writes.
pub(crate) struct Replica {
    /// Every entry this member holds (every member holds all of them).
    pub store: Store,
    /// Versions this member's writes; it follows the versions received, so
    /// a write made here after one received is the later of the two.
    pub clock: Hlc,
    /// This member's id in a version, the tie-break between equal clocks.
    member: u64,
}

impl Replica {
    pub fn new(member: &str) -> Replica {
        Replica { store: Store::default(), clock: Hlc::default(), member: member_hash(member) }
    }

    /// The version of a write made here now.
    pub fn version(&self) -> Version {
        Version { hlc: self.clock.now(), member: self.member }
    }

    /// A write made here now (`value` None removes `key`).
    pub fn entry(&self, cache: &str, key: Vec<u8>, value: Option<Vec<u8>>) -> WireEntry {
        WireEntry { cache: cache.to_string(), key, value, version: self.version(), deadline: 0 }
    }

    /// A write of `value` made here now that expires `ttl_ms` after it
    /// (its version's time), whatever the cache's time to live.
    pub fn entry_ttl(&self, cache: &str, key: Vec<u8>, value: Vec<u8>, ttl_ms: u64) -> WireEntry {
        let version = self.version();
        let deadline = version.ms().saturating_add(ttl_ms.max(1));
        WireEntry { cache: cache.to_string(), key, value: Some(value), version, deadline }
    }

    /// Standalone entries as writes of this member: each keeps its write
    /// time, so latest wins against the cluster's; an entry without one
    /// (0) is written now.
    pub fn standalone(&self, cache: &str, entries: Vec<Entry>) -> Vec<WireEntry> {
        entries
            .into_iter()
            .map(|e| {
                let version = if e.version == 0 { self.version() } else { Version::at_ms(e.version, self.member) };
                WireEntry { cache: cache.to_string(), key: e.key, value: Some(e.value), version, deadline: 0 }
            })
            .collect()
    }

    /// Applies writes that came from other members, the clock following them.
    pub fn receive(&self, entries: Vec<WireEntry>) {
        if let Some(max) = entries.iter().map(|e| e.version.hlc).max() {
            self.clock.observe(max);
        }
        self.store.apply_all(entries);
    }
}

/// `entries` in the frame a member of `wire` reads: with their deadlines
/// from wire 1.3 on, in the wire 1.2 frame (without them) before, or when
/// its wire is not known.
fn replicate_frame(wire: Option<(u16, u16)>, req: u64, entries: Vec<WireEntry>) -> Msg {
    if wire.is_some_and(|wire| wire >= TIMED_WIRE) {
        Msg::TimedReplicate { req, entries }
    } else {
        Msg::Replicate { req, entries }
    }
}

/// The state request a member of `wire` answers: pages with deadlines
/// from 1.3 on, pages from 1.1 on, the whole state in one frame from 1.0.
fn state_request(wire: Option<(u16, u16)>, req: u64, after: Option<(String, Vec<u8>)>, max_bytes: u64) -> Msg {
    match wire {
        Some(wire) if wire >= TIMED_WIRE => Msg::TimedStatePageRequest { req, after, max_bytes },
        Some(wire) if wire >= (1, 1) => Msg::StatePageRequest { req, after, max_bytes },
        _ => Msg::StateRequest { req },
    }
}

impl Core {
    /// `entries` as member `id` reads them ([`replicate_frame`]).
    fn replicate_msg(&self, id: &str, req: u64, entries: Vec<WireEntry>) -> Msg {
        replicate_frame(self.view.wire_of(id), req, entries)
    }

    /// One page of this member's entries for a member's state transfer.
    pub(crate) fn state_page(&self, after: Option<(String, Vec<u8>)>, max_bytes: u64) -> (Vec<WireEntry>, bool) {
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX).min(self.config.limits.state_page_bytes);
        self.replica.store.page(after.as_ref(), max)
    }

    /// Applies `entries` here and waits until every other live member has them.
    pub(crate) async fn replicate(&self, entries: Vec<WireEntry>) -> PluginResult<()> {
        let size: usize = entries.iter().map(|e| entry_size(&e.cache, &e.key, e.value.as_deref())).sum();
        let max = self.config.limits.max_frame_bytes;
        if size + FRAME_OVERHEAD > max {
            return Err(format!(
                "the write ({size} bytes) is larger than a member accepts in one frame ([limits] max_frame_bytes = {max} in gossip.toml): nothing was written; raise the limit on every member or write less at once"
            )
            .into());
        }
        self.replica.store.apply_all(entries.iter().cloned());
        let targets = self.others();
        let mut calls = tokio::task::JoinSet::new();
        for (id, addr) in targets {
            let net = self.net.clone();
            let req = net.next_req();
            let msg = self.replicate_msg(&id, req, entries.clone());
            let timeout = self.config.operation_timeout();
            calls.spawn(async move { (id.clone(), net.request(&id, addr, msg, req, timeout).await) });
        }
        let mut failures = Vec::new();
        while let Some(done) = calls.join_next().await {
            let Ok((id, result)) = done else { continue };
            if let Err(e) = result {
                // A member that left meanwhile does not hold the write up.
                if self.left_meanwhile(&id).await {
                    continue;
                }
                failures.push(e.to_string());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("the write is applied here but not acknowledged by every member: {}", failures.join("; "))
                .into())
        }
    }

    /// Whether member `id`, whose acknowledgement did not come, left
    /// meanwhile. A member that leaves sends its `Leaving` notice on its
    /// own connection and then closes the others, so the close of a write's
    /// connection can be seen here a moment before the notice is read: a
    /// bounded wait ([`LEAVE_NOTICE_WAIT`]) for it, only on this failure path.
    async fn left_meanwhile(&self, id: &str) -> bool {
        let deadline = tokio::time::Instant::now() + LEAVE_NOTICE_WAIT.min(self.config.operation_timeout());
        loop {
            if !self.still_member(id) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Replicates the standalone `entries` that are newer than what the
    /// cluster holds (the others are already superseded here).
    pub(crate) async fn merge(&self, entries: Vec<WireEntry>) -> PluginResult<()> {
        let newer: Vec<WireEntry> = entries.into_iter().filter(|e| self.replica.store.apply(e.clone())).collect();
        if newer.is_empty() {
            return Ok(());
        }
        self.replicate(newer).await
    }

    /// Anti-entropy: a newcomer (or a member back from a partition) gets
    /// everything this member holds; it does the same for this one.
    pub(crate) fn send_state_to(self: &Arc<Self>, member: &str) {
        let (core, member) = (self.clone(), member.to_string());
        tokio::spawn(async move { core.push_state(&member).await });
    }

    async fn push_state(&self, member: &str) {
        let Some(addr) = self.addr_of(member) else { return };
        // In frames of at most a page each, one after the other.
        for entries in chunks(self.replica.store.snapshot(), self.config.limits.state_page_bytes) {
            let req = self.net.next_req();
            let msg = self.replicate_msg(member, req, entries);
            if let Err(e) = self.net.request(member, addr, msg, req, self.config.operation_timeout()).await {
                tracing::warn!("could not send this member's entries to {member}: {e}");
                return;
            }
        }
    }

    /// Fetches every entry member `id` holds; returns how many came. A
    /// peer of wire 1.1 or later sends pages of at most `state_page_bytes`
    /// (with deadlines from 1.3 on); a 1.0 peer sends its whole state in
    /// one frame.
    pub(crate) async fn pull_state(&self, id: &str, addr: SocketAddr) -> Result<usize, NetError> {
        let wire = self.view.wire_of(id);
        let timeout = self.config.operation_timeout();
        let mut received = 0;
        let mut after = None;
        loop {
            let req = self.net.next_req();
            let msg = state_request(wire, req, after.take(), self.config.limits.state_page_bytes as u64);
            let (entries, more) = match self.net.request(id, addr, msg, req, timeout).await? {
                Msg::State { entries, .. } => (entries, false),
                Msg::StatePage { entries, more, .. } | Msg::TimedStatePage { entries, more, .. } => (entries, more),
                _ => return Ok(received),
            };
            after = entries.last().map(|e| (e.cache.clone(), e.key.clone()));
            received += entries.len();
            self.replica.receive(entries);
            if !more || after.is_none() {
                return Ok(received);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_go_only_to_members_of_wire_1_3_or_later_as_state_pages_go_to_1_1() {
        let entry = Replica::new("a").entry_ttl("c", b"k".to_vec(), b"v".to_vec(), 500);
        assert!(entry.deadline > 0);
        for (wire, timed) in
            [(None, false), (Some((1, 0)), false), (Some((1, 2)), false), (Some((1, 3)), true), (Some((1, 9)), true)]
        {
            let frame = replicate_frame(wire, 1, vec![entry.clone()]);
            assert_eq!(matches!(frame, Msg::TimedReplicate { .. }), timed, "{wire:?}: {frame:?}");
            assert_eq!(matches!(frame, Msg::Replicate { .. }), !timed, "{wire:?}: {frame:?}");
        }
        let kinds: Vec<&str> = [None, Some((1, 0)), Some((1, 1)), Some((1, 2)), Some((1, 3))]
            .into_iter()
            .map(|wire| match state_request(wire, 1, None, 1024) {
                Msg::StateRequest { .. } => "whole",
                Msg::StatePageRequest { .. } => "pages",
                Msg::TimedStatePageRequest { .. } => "timed pages",
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["whole", "whole", "pages", "pages", "timed pages"]);
    }
}
