//! The view: which members this member sees as the cluster, their senior
//! and the cluster-wide settings, recomputed from gossip; what changed
//! between two views becomes the host's events.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chitchat::{ChitchatId, NodeState};
use clusterhost_plugin_api::cluster::StrategyEvent;
use clusterhost_plugin_api::membership::AnnouncedView;
use tokio::sync::futures::Notified;
use tokio::sync::{watch, Notify};

use crate::core::Core;
use crate::locked;
use crate::membership::{setting_key, Peer};

/// A cluster-wide setting as published: `<at_ms>|<by>|<value>`. The latest
/// (`at_ms`, then `by`) wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    /// When it was set (ms since the epoch).
    pub at_ms: u64,
    /// The member that set it.
    pub by: String,
    pub value: String,
}

impl Setting {
    /// A setting published by a member, if well formed.
    pub fn parse(raw: &str) -> Option<Setting> {
        let (at, rest) = raw.split_once('|')?;
        let at_ms = at.parse::<u64>().ok()?;
        let (by, value) = rest.split_once('|')?;
        Some(Setting { at_ms, by: by.to_string(), value: value.to_string() })
    }

    /// The setting as published.
    pub fn encode(&self) -> String {
        format!("{}|{}|{}", self.at_ms, self.by, self.value)
    }
}

/// What this member currently sees.
#[derive(Default, Clone)]
pub(crate) struct View {
    /// Joined, compatible members by id (this one included while joined).
    pub members: BTreeMap<String, Peer>,
    /// The member that decides locks: the longest running one.
    pub senior: Option<String>,
    /// Effective cluster-wide settings, by key.
    pub settings: BTreeMap<String, Setting>,
}

/// A join of a member: (member, generation, epoch).
type Join = (String, u64, u64);

/// What the view's computation keeps between rounds.
#[derive(Default)]
pub(crate) struct ViewState {
    /// The view as last computed; replaced whole, so a reader sees one
    /// consistent view.
    current: Mutex<View>,
    /// The members and senior as last announced to the host, which turns
    /// the next view into events. Taken before `current` whenever both
    /// are, so the view and what the host was told change together.
    announced: Mutex<AnnouncedView>,
    /// Joins that ended with a `Leaving` notice: out of the view even while
    /// gossip still shows them joined.
    departed: Mutex<BTreeSet<Join>>,
    /// Members already reported for speaking another wire major, so the
    /// error is logged once per member rather than every round.
    reported_incompatible: Mutex<BTreeSet<String>>,
    /// One view update at a time: each reads a snapshot (joined flag,
    /// peers) and replaces the view with what it made of it, so two at once
    /// could put an older snapshot's view over a newer one.
    updating: tokio::sync::Mutex<()>,
    /// Wakes the view loop before its next round (a local key changed, a
    /// member said it leaves).
    recompute: Notify,
}

impl ViewState {
    /// The current view.
    pub fn current(&self) -> View {
        locked(&self.current).clone()
    }

    /// The current senior.
    pub fn senior(&self) -> Option<String> {
        locked(&self.current).senior.clone()
    }

    /// Wire version of member `id`, if it is in the view.
    pub fn wire_of(&self, id: &str) -> Option<(u16, u16)> {
        locked(&self.current).members.get(id).map(|p| p.wire)
    }

    /// Empties the view (this member left, which is not announced);
    /// settings stay.
    pub fn clear_members(&self) {
        let mut announced = locked(&self.announced);
        announced.forget();
        let mut view = locked(&self.current);
        view.members.clear();
        view.senior = None;
    }

    /// Member `member`'s join `epoch` of run `generation` ended; the view
    /// is recomputed without it.
    pub fn record_departure(&self, member: String, generation: u64, epoch: u64) {
        locked(&self.departed).insert((member, generation, epoch));
        self.recompute();
    }

    /// Wakes the view loop.
    pub fn recompute(&self) {
        self.recompute.notify_one();
    }

    fn recompute_requested(&self) -> Notified<'_> {
        self.recompute.notified()
    }

    /// Makes `view` the current one; returns the previous view and, while
    /// member `local` is `joined`, the membership events it brings (none
    /// otherwise: the view is forgotten).
    fn replace(&self, view: View, local: &str, joined: bool) -> (View, Vec<StrategyEvent>) {
        let mut announced = locked(&self.announced);
        let events = if joined {
            announced.update(local, view.members.keys().cloned().collect(), view.senior.clone())
        } else {
            announced.forget();
            Vec::new()
        };
        (std::mem::replace(&mut *locked(&self.current), view), events)
    }

    /// Whether `peer`'s current join ended with a `Leaving` notice; the
    /// notices of its earlier joins are forgotten.
    fn has_departed(&self, peer: &Peer) -> bool {
        let mut departed = locked(&self.departed);
        departed.retain(|(id, generation, epoch)| {
            !(*id == peer.id && (*generation != peer.generation || *epoch < peer.epoch))
        });
        departed.contains(&(peer.id.clone(), peer.generation, peer.epoch))
    }

    /// True the first time `member` is reported as incompatible.
    fn first_report_of(&self, member: &str) -> bool {
        locked(&self.reported_incompatible).insert(member.to_string())
    }
}

/// One entry per member id: its newest generation (a restarted member's
/// old run may still be in gossip).
fn newest_generations(peers: Vec<Peer>) -> BTreeMap<String, Peer> {
    let mut newest: BTreeMap<String, Peer> = BTreeMap::new();
    for peer in peers {
        match newest.get(&peer.id) {
            Some(existing) if existing.generation >= peer.generation => {}
            _ => {
                newest.insert(peer.id.clone(), peer);
            }
        }
    }
    newest
}

/// The latest value of each setting any member publishes.
fn effective_settings(newest: &BTreeMap<String, Peer>) -> BTreeMap<String, Setting> {
    let mut settings: BTreeMap<String, Setting> = BTreeMap::new();
    for peer in newest.values() {
        for (key, raw) in &peer.settings {
            let Some(candidate) = Setting::parse(raw) else { continue };
            if settings.get(key).is_none_or(|current| (current.at_ms, &current.by) < (candidate.at_ms, &candidate.by)) {
                settings.insert(key.clone(), candidate);
            }
        }
    }
    settings
}

/// The longest running member (then the lowest id).
fn senior_of(members: &BTreeMap<String, Peer>) -> Option<String> {
    members.values().min_by_key(|p| (p.started_at_ms, p.id.clone())).map(|p| p.id.clone())
}

impl Core {
    /// Recomputes the view on every change gossip shows, on request, and
    /// at least every gossip interval, until the member is gone.
    pub(crate) async fn view_loop(
        weak: std::sync::Weak<Core>,
        mut watcher: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    ) {
        loop {
            let Some(core) = weak.upgrade() else { return };
            let interval = core.config.gossip_interval();
            core.update_view().await;
            let recompute = core.view.recompute_requested();
            tokio::select! {
                changed = watcher.changed() => if changed.is_err() { return },
                _ = recompute => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Recomputes the view from what gossip shows and tells the host what
    /// changed.
    pub(crate) async fn update_view(self: &Arc<Self>) {
        let _one_at_a_time = self.view.updating.lock().await;
        // Read before the peers: a view that counts this member joined is
        // then made from peers at least as new as those its join waited
        // for (read after, a snapshot older than the join could make a
        // joined view without the members already there).
        let self_joined = self.is_joined();
        let newest = newest_generations(self.peers().await);
        self.note_heartbeats(&newest);
        let settings = effective_settings(&newest);
        let members = self.admitted(&newest, self_joined);
        self.republish_settings(&newest, &settings).await;
        let senior = senior_of(&members);
        let current = View { members, senior, settings };
        let (previous, events) = self.view.replace(current.clone(), &self.member, self_joined);
        self.announce_settings(&previous, &current);
        self.watch_members(&current.members);
        self.probe_silent(&current.members);
        let left = self.announce_members(events).await;
        if !left.is_empty() {
            self.release_locks_after(left, current.senior.as_deref());
        }
    }

    /// The members of the view: this one while joined, and every other
    /// that is joined, speaks this wire major (another is reported once),
    /// has not said it left and has a data-plane address. None while this
    /// member is not joined.
    fn admitted(&self, newest: &BTreeMap<String, Peer>, self_joined: bool) -> BTreeMap<String, Peer> {
        let mut members = BTreeMap::new();
        for peer in newest.values() {
            let is_self = peer.id == self.member;
            if !is_self && peer.wire.0 != self.wire.major {
                if self.view.first_report_of(&peer.id) {
                    tracing::error!(
                        "member {} speaks wire protocol {}.{}, this member ({}) {}: the majors differ, so it is not admitted to this cluster; upgrade with the split-brain or offline flow",
                        peer.id, peer.wire.0, peer.wire.1, self.member, self.wire
                    );
                }
                continue;
            }
            let departed = self.view.has_departed(peer) || (!is_self && self.is_silenced(peer));
            if (is_self && self_joined) || (!is_self && peer.joined && !departed && peer.data_addr.is_some()) {
                members.insert(peer.id.clone(), peer.clone());
            }
        }
        if !self_joined {
            members.clear();
        }
        members
    }

    /// Every member carries the effective settings under its own keys
    /// (with their original time and author), so a setting outlives the
    /// member that made it: otherwise, once that member is gone, an older
    /// value still published by a live member would take over again, and
    /// a member starting later would see only that.
    async fn republish_settings(&self, newest: &BTreeMap<String, Peer>, settings: &BTreeMap<String, Setting>) {
        let own: BTreeMap<&str, &str> = newest
            .get(&self.member)
            .map(|p| p.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
            .unwrap_or_default();
        for (key, setting) in settings {
            let raw = setting.encode();
            if own.get(key.as_str()) != Some(&raw.as_str()) {
                self.publish(&setting_key(key), &raw).await;
            }
        }
    }

    /// A `SettingChanged` for every setting whose value changed.
    fn announce_settings(&self, previous: &View, current: &View) {
        for (key, setting) in &current.settings {
            if previous.settings.get(key).map(|s| &s.value) != Some(&setting.value) {
                self.emit(StrategyEvent::SettingChanged { key: key.clone(), value: setting.value.clone() });
            }
        }
    }

    /// Tells the host the membership `events` of a new view, in order: a
    /// member that joined also gets this member's entries (anti-entropy),
    /// one that left has its connections closed. Returns those that left.
    async fn announce_members(self: &Arc<Self>, events: Vec<StrategyEvent>) -> Vec<String> {
        let mut left = Vec::new();
        for event in events {
            match event {
                StrategyEvent::Joined { member } => {
                    tracing::info!(member = %member, "member joined");
                    self.emit(StrategyEvent::Joined { member: member.clone() });
                    self.send_state_to(&member);
                }
                StrategyEvent::Left { member } => {
                    tracing::info!(member = %member, "member left");
                    self.emit(StrategyEvent::Left { member: member.clone() });
                    self.net.forget(&member).await;
                    left.push(member);
                }
                event => self.emit(event),
            }
        }
        left
    }

    /// The other members in the view, with their data-plane addresses.
    pub(crate) fn others(&self) -> Vec<(String, SocketAddr)> {
        let view = locked(&self.view.current);
        view.members
            .values()
            .filter(|p| p.id != self.member)
            .filter_map(|p| p.data_addr.map(|a| (p.id.clone(), a)))
            .collect()
    }

    /// The join (generation, epoch) of member `member`, if it is in the view.
    pub(crate) fn join_of(&self, member: &str) -> Option<(u64, u64)> {
        locked(&self.view.current).members.get(member).map(|p| (p.generation, p.epoch))
    }

    /// Member `member`'s data-plane address, if it is in the view.
    pub(crate) fn addr_of(&self, member: &str) -> Option<SocketAddr> {
        locked(&self.view.current).members.get(member).and_then(|p| p.data_addr)
    }

    /// Whether member `member` is in the view and has not said it leaves:
    /// its `Leaving` notice counts from the moment it arrived, before the
    /// view loop has recomputed the view without it.
    pub(crate) fn still_member(&self, member: &str) -> bool {
        let join = match locked(&self.view.current).members.get(member) {
            Some(p) if p.data_addr.is_some() => (p.id.clone(), p.generation, p.epoch),
            _ => return false,
        };
        !locked(&self.view.departed).contains(&join)
    }
}
