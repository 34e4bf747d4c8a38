//! Process death, noticed at once: a data-plane connection is kept open to
//! every other member of the view, and when one ends its member port is
//! tried again. A port that refuses every try has nothing listening: the
//! member's process (or its plugin) is gone, which a live but stalled
//! process never shows (its kernel keeps its sockets; a SIGSTOPped member
//! still accepts). Such a member is removed from the view at once and the
//! others are told with the `Leaving` notice a member sends for itself
//! when it leaves.
//!
//! A silent member (a host down, a cable out, a partition) leaves no such
//! evidence. When no member has heard from it for `silent_after_ms` (its
//! gossip heartbeat, which every member passes on, has not moved: the
//! indirect check, through everyone), its member port is tried once. A
//! host that accepts the connection is up: the process is paused or slow
//! (a SIGSTOPped process's kernel still completes the handshake), and it
//! stays. No answer within `silent_probe_timeout_ms`, or an error, takes
//! its join out of this member's view until its heartbeat moves again
//! (then it is back, as after chitchat's own verdict). Every member decides
//! so on its own, from the same gossip.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::locked;
use crate::membership::Peer;
use crate::net::NetError;

/// The watchers of the other members' connections. Part of [`Core`].
#[derive(Default)]
pub(crate) struct Liveness {
    /// One watcher per member of the view, for the join it watches.
    watching: Mutex<HashMap<String, Watch>>,
    /// Members removed because their process was found gone (a stat).
    pub(crate) confirmed: AtomicU64,
    /// Each other member's gossip heartbeat as last seen: (generation,
    /// heartbeat, when it last moved).
    heard: Mutex<HashMap<String, (u64, u64, Instant)>>,
    /// Members whose port is being tried because they are silent.
    probing: Mutex<HashSet<String>>,
    /// Joins found silent: (generation, epoch, heartbeat then); out of the
    /// view while the heartbeat stays there.
    silenced: Mutex<HashMap<String, (u64, u64, u64)>>,
    /// Members taken out of the view for being silent (a stat).
    pub(crate) silent: AtomicU64,
    /// Silent members kept because their host answered (a stat).
    pub(crate) silent_kept: AtomicU64,
}

/// The watcher of one member's join.
struct Watch {
    generation: u64,
    epoch: u64,
    task: tokio::task::AbortHandle,
}

impl Liveness {
    /// Stops every watcher (this member leaves or stops).
    pub(crate) fn stop(&self) {
        for (_, watch) in locked(&self.watching).drain() {
            watch.task.abort();
        }
    }
}

/// What trying a member's port showed.
enum Probe {
    /// A connection is open; fires when it ends.
    Open(CancellationToken),
    /// Every try was refused: nothing listens there.
    Gone,
    /// No answer, or an error that proves nothing.
    Unknown,
}

impl Core {
    /// Keeps one watcher for each other member of `members` (the view just
    /// made), for its current join; stops the others.
    pub(crate) fn watch_members(self: &Arc<Self>, members: &std::collections::BTreeMap<String, Peer>) {
        if self.config.failure_detection.process_death_probes == 0 {
            return;
        }
        let mut watching = locked(&self.liveness.watching);
        watching.retain(|id, watch| {
            let same = members.get(id).is_some_and(|p| p.generation == watch.generation && p.epoch == watch.epoch);
            if !same {
                watch.task.abort();
            }
            same
        });
        for peer in members.values().filter(|p| p.id != self.member) {
            let Some(addr) = peer.data_addr.filter(|_| !watching.contains_key(&peer.id)) else { continue };
            let task =
                tokio::spawn(watch_one(Arc::downgrade(self), peer.id.clone(), addr, peer.generation, peer.epoch));
            watching.insert(
                peer.id.clone(),
                Watch { generation: peer.generation, epoch: peer.epoch, task: task.abort_handle() },
            );
        }
    }

    /// Whether `id`'s join (`generation`, `epoch`) is in this joined member's view.
    fn watches(&self, id: &str, generation: u64, epoch: u64) -> bool {
        self.is_joined() && self.join_of(id) == Some((generation, epoch))
    }

    /// Tries `id`'s port until it is open, or has refused
    /// `process_death_probes` times (`process_death_probe_interval_ms`
    /// apart). A try whose connect gets no answer within that interval, or
    /// whose connection is reset before the `Hello` is answered (a dying
    /// process's listener outlives its connections by a few milliseconds,
    /// and resets what it had queued), is made again and not counted; after
    /// four times as many tries as refusals wanted, nothing is concluded.
    async fn probe(&self, id: &str, addr: SocketAddr) -> Probe {
        let detection = &self.config.failure_detection;
        let interval = Duration::from_millis(detection.process_death_probe_interval_ms.max(1));
        let timeout = self.config.operation_timeout();
        let wanted = detection.process_death_probes.max(1);
        let mut refused = 0;
        for _ in 0..wanted * 4 {
            match self.net.watch(id, addr, interval, timeout).await {
                Ok(ended) => return Probe::Open(ended),
                Err(NetError::NotListening { .. }) => {
                    refused += 1;
                    if refused >= wanted {
                        return Probe::Gone;
                    }
                    tokio::time::sleep(interval).await;
                }
                // The protocol's own answer: the member lives.
                Err(e @ NetError::Refused { .. }) => {
                    tracing::debug!(member = %id, "cannot watch the connection to member {id}: {e}");
                    return Probe::Unknown;
                }
                // No answer in time, or a connection reset during the
                // Hello (a dying listener's queue): tried again, not counted.
                Err(e) => {
                    tracing::debug!(member = %id, "trying the port of member {id} again: {e}");
                    tokio::time::sleep(interval).await;
                }
            }
        }
        Probe::Unknown
    }

    /// `id`'s process is gone: out of this member's view now, and every
    /// other member is told (the `Leaving` notice of that join).
    async fn confirm_death(self: &Arc<Self>, id: &str, addr: SocketAddr, generation: u64, epoch: u64) {
        if !self.watches(id, generation, epoch) {
            return;
        }
        let tries = self.config.failure_detection.process_death_probes;
        tracing::warn!(
            member = %id,
            "member {id}'s process is gone: its connection closed and its member port {addr} refused {tries} tries; it is removed now and the other members are told"
        );
        self.liveness.confirmed.fetch_add(1, Ordering::Relaxed);
        self.view.record_departure(id.to_string(), generation, epoch);
        // Not waited for: the notices go out while this watcher ends.
        self.tell_departure(id, generation, epoch).detach_all();
    }
}

impl Core {
    /// Notes every other member's gossip heartbeat (each view update).
    pub(crate) fn note_heartbeats(&self, newest: &BTreeMap<String, Peer>) {
        let now = Instant::now();
        let mut heard = locked(&self.liveness.heard);
        heard.retain(|id, _| newest.contains_key(id));
        locked(&self.liveness.silenced).retain(|id, _| newest.contains_key(id));
        for peer in newest.values().filter(|p| p.id != self.member) {
            match heard.get(&peer.id) {
                Some((generation, heartbeat, _)) if *generation == peer.generation && *heartbeat == peer.heartbeat => {}
                _ => {
                    heard.insert(peer.id.clone(), (peer.generation, peer.heartbeat, now));
                }
            }
        }
    }

    /// Whether `peer`'s join was found silent and nobody has heard from it
    /// since; a silenced member heard from again is forgotten (and back).
    pub(crate) fn is_silenced(&self, peer: &Peer) -> bool {
        let mut silenced = locked(&self.liveness.silenced);
        let Some(&(generation, epoch, heartbeat)) = silenced.get(&peer.id) else { return false };
        // Back only on a newer heartbeat (or another join): not on a copy of
        // an older one that reaches this member late through a third.
        if (generation, epoch) == (peer.generation, peer.epoch) && peer.heartbeat <= heartbeat {
            return true;
        }
        silenced.remove(&peer.id);
        tracing::info!(member = %peer.id, "member {} is heard from again", peer.id);
        false
    }

    /// Tries the member port of each other member of the view that nobody
    /// has heard from for `silent_after_ms` (one try at a time per member).
    pub(crate) fn probe_silent(self: &Arc<Self>, members: &BTreeMap<String, Peer>) {
        let after = Duration::from_millis(self.config.failure_detection.silent_after_ms);
        if after.is_zero() {
            return;
        }
        let heard = locked(&self.liveness.heard);
        let mut probing = locked(&self.liveness.probing);
        for peer in members.values().filter(|p| p.id != self.member) {
            let Some(addr) = peer.data_addr else { continue };
            let Some(&(generation, heartbeat, since)) = heard.get(&peer.id) else { continue };
            let silent = generation == peer.generation && heartbeat == peer.heartbeat && since.elapsed() >= after;
            if silent && probing.insert(peer.id.clone()) {
                tokio::spawn(probe_silent_one(Arc::downgrade(self), peer.clone(), addr, since));
            }
        }
    }
}

/// How many connects a silent member's port gets at once.
const SILENT_PROBE_TRIES: usize = 3;

/// The first connect of `tries` to succeed (`Ok`), or the last error once
/// every one failed.
async fn first_answer<F>(tries: impl Iterator<Item = F>) -> std::io::Result<()>
where
    F: std::future::Future<Output = std::io::Result<tokio::net::TcpStream>> + Unpin,
{
    let mut pending: Vec<F> = tries.collect();
    let mut last = std::io::Error::other("no connect was made");
    while !pending.is_empty() {
        let (result, _, rest) = futures_util::future::select_all(pending).await;
        match result {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        pending = rest;
    }
    Err(last)
}

/// Tries silent member `peer`'s port at `addr` (silent since `since`):
/// its host answering keeps it (and counts as hearing from it); anything
/// else takes its join out of the view until its heartbeat moves.
async fn probe_silent_one(weak: Weak<Core>, peer: Peer, addr: SocketAddr, since: Instant) {
    let Some(core) = weak.upgrade() else { return };
    let timeout = Duration::from_millis(core.config.failure_detection.silent_probe_timeout_ms);
    // Three connects at once, so one lost SYN (whose retry would come only
    // after a second) does not decide: the host answering any keeps it.
    let tries = (0..SILENT_PROBE_TRIES).map(|_| Box::pin(tokio::net::TcpStream::connect(addr)));
    let why = match tokio::time::timeout(timeout, first_answer(tries)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Some(format!("its member port {addr} refused the connection (nothing listens)"))
        }
        Ok(Err(e)) => Some(format!("connecting to its member port {addr} failed ({e})")),
        Err(_) => Some(format!(
            "its member port {addr} gave no answer to {SILENT_PROBE_TRIES} connects within {} ms",
            timeout.as_millis()
        )),
    };
    locked(&core.liveness.probing).remove(&peer.id);
    let (id, silent_ms) = (&peer.id, since.elapsed().as_millis());
    let mut heard = locked(&core.liveness.heard);
    // Heard from meanwhile, or no longer in the view: nothing to decide.
    let still = heard.get(id).is_some_and(|&(g, h, _)| (g, h) == (peer.generation, peer.heartbeat));
    if !still || !core.watches(id, peer.generation, peer.epoch) {
        return;
    }
    match why {
        None => {
            tracing::debug!(member = %id, "member {id} is silent for {silent_ms} ms but its host accepts connections (paused or slow): it stays");
            heard.insert(id.clone(), (peer.generation, peer.heartbeat, Instant::now()));
            core.liveness.silent_kept.fetch_add(1, Ordering::Relaxed);
        }
        Some(why) => {
            drop(heard);
            tracing::warn!(
                member = %id,
                "member {id} is silent: no member has heard from it for {silent_ms} ms and {why}; it is out of this member's view until it is heard from again"
            );
            locked(&core.liveness.silenced).insert(id.clone(), (peer.generation, peer.epoch, peer.heartbeat));
            core.liveness.silent.fetch_add(1, Ordering::Relaxed);
            core.view.recompute();
        }
    }
}

/// Watches member `id`'s join (`generation`, `epoch`) at `addr` until it is
/// out of the view, or found gone.
async fn watch_one(weak: Weak<Core>, id: String, addr: SocketAddr, generation: u64, epoch: u64) {
    loop {
        let Some(core) = weak.upgrade() else { return };
        if !core.watches(&id, generation, epoch) {
            return;
        }
        let pause = core.config.gossip_interval();
        match core.probe(&id, addr).await {
            Probe::Open(ended) => {
                // Not held while waiting: the member may stop meanwhile.
                drop(core);
                ended.cancelled().await;
            }
            Probe::Gone => return core.confirm_death(&id, addr, generation, epoch).await,
            Probe::Unknown => {
                drop(core);
                tokio::time::sleep(pause).await;
            }
        }
    }
}
