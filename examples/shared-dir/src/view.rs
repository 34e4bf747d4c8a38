//! What this member last read of the directory (members, senior, settings),
//! and the poller that keeps it current. Every change becomes an event,
//! queued in the order it was read and delivered by a task that holds no lock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterhost_plugin_api::cluster::{now_ms, Member, StrategyEvent};
use clusterhost_plugin_api::sync::lock;
use clusterhost_plugin_api::ClusterHost;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::files::{Dir, Result};

/// The strategy's state, shared with its poller.
pub struct Shared {
    /// Where everything is kept.
    pub dir: Dir,
    /// The heartbeat and the expiry.
    config: Config,
    /// This member as its file says (`started_at_ms` is set at each join).
    pub me: Member,
    /// One reader of the directory at a time, so views are applied (and
    /// their events queued) in the order they were read.
    scan: Mutex<()>,
    /// The last view; held only to copy or replace it, never during I/O.
    pub view: Mutex<View>,
    /// Events in order, for the task that delivers them. Queued under
    /// `scan`, delivered under no lock: delivering one may drop the strategy.
    events: mpsc::UnboundedSender<StrategyEvent>,
}

/// The last view.
#[derive(Default)]
pub struct View {
    /// This member with its join time, while joined.
    joined: Option<Member>,
    /// The live members, senior first (then in join order); empty while not joined.
    pub members: Vec<Member>,
    /// The settings last read, to tell which ones changed.
    pub settings: BTreeMap<String, String>,
}

impl Shared {
    /// Member `me`'s state, and the poller that keeps it current.
    pub fn start(dir: Dir, config: Config, me: Member, host: ClusterHost) -> (Arc<Shared>, Poller) {
        let (events, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { dir, config, me, scan: Mutex::new(()), view: Mutex::default(), events });
        let poller = Poller::spawn(shared.clone(), queued, host);
        (shared, poller)
    }

    /// Writes this member's file and takes the view: `Joined` (itself),
    /// then `SeniorChanged` if it is the senior; the members already there
    /// are not news.
    pub fn join(&self) -> Result<()> {
        let _scan = lock(&self.scan);
        let me = Member { started_at_ms: now_ms(), ..self.me.clone() };
        self.dir.put_member(&me)?;
        let members = self.live(&me)?;
        let senior = members[0].id == me.id;
        let mut view = lock(&self.view);
        (view.joined, view.members) = (Some(me.clone()), members);
        drop(view);
        let _ = self.events.send(StrategyEvent::Joined { member: me.id.clone() });
        if senior {
            let _ = self.events.send(StrategyEvent::SeniorChanged { member: me.id });
        }
        Ok(())
    }

    /// Removes this member's file, silently (no `Left` of its own).
    pub fn leave(&self) -> Result<()> {
        let _scan = lock(&self.scan);
        let mut view = lock(&self.view);
        (view.joined, view.members) = (None, Vec::new());
        drop(view);
        self.dir.remove_member(&self.me.id)
    }

    /// The live members with `me` among them, senior first: the oldest
    /// join, the smaller id on a tie.
    fn live(&self, me: &Member) -> Result<Vec<Member>> {
        let mut members = self.dir.members(Duration::from_millis(self.config.expiry_ms))?;
        members.retain(|m| m.id != me.id);
        members.push(me.clone());
        members.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        Ok(members)
    }

    /// One heartbeat: refreshes this member's file (while joined), reads
    /// the directory and queues what changed.
    pub fn refresh(&self) -> Result<()> {
        let _scan = lock(&self.scan);
        let joined = lock(&self.view).joined.clone();
        let members = match &joined {
            Some(me) => self.dir.put_member(me).and_then(|()| self.live(me))?,
            None => Vec::new(),
        };
        let settings = self.dir.settings()?;
        let mut view = lock(&self.view);
        let mut events = Vec::new();
        for (key, value) in settings.iter().filter(|(k, v)| view.settings.get(*k) != Some(*v)) {
            events.push(StrategyEvent::SettingChanged { key: key.clone(), value: value.clone() });
        }
        if let Some(me) = &joined {
            events.extend(changes(&view.members, &members, &me.id));
            view.members = members;
        }
        view.settings = settings;
        drop(view);
        events.into_iter().for_each(|e| drop(self.events.send(e)));
        Ok(())
    }
}

/// The events from view `before` to `after` (this member's own excepted):
/// joins, leaves, then the senior if it changed (after the old one's `Left`).
fn changes(before: &[Member], after: &[Member], me: &str) -> Vec<StrategyEvent> {
    let missing = |from: &[Member], list: &[Member]| -> Vec<String> {
        let absent = |m: &&Member| m.id != me && !list.iter().any(|n| n.id == m.id);
        from.iter().filter(absent).map(|m| m.id.clone()).collect()
    };
    let mut events: Vec<StrategyEvent> =
        missing(after, before).into_iter().map(|member| StrategyEvent::Joined { member }).collect();
    events.extend(missing(before, after).into_iter().map(|member| StrategyEvent::Left { member }));
    let (old, new) = (before.first().map(|m| &m.id), after.first().map(|m| &m.id));
    if let Some(member) = new.filter(|_| new != old) {
        events.push(StrategyEvent::SeniorChanged { member: member.clone() });
    }
    events
}

/// The strategy's two tasks (poller, event delivery); dropped with the
/// strategy, it ends them, so nothing outlives its strategy.
pub struct Poller([tokio::task::AbortHandle; 2]);

impl Poller {
    /// Refreshes every heartbeat (file I/O on the blocking pool) and
    /// delivers the queued events to the host.
    fn spawn(shared: Arc<Shared>, mut queued: mpsc::UnboundedReceiver<StrategyEvent>, host: ClusterHost) -> Poller {
        let deliver = tokio::spawn(async move {
            while let Some(event) = queued.recv().await {
                host.emit(event);
            }
        });
        let poll = tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_millis(shared.config.heartbeat_ms));
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                beat.tick().await;
                let shared = shared.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || shared.refresh()).await {
                    tracing::warn!("could not read the shared directory: {e}");
                }
            }
        });
        Poller([deliver.abort_handle(), poll.abort_handle()])
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.iter().for_each(|task| task.abort());
    }
}
