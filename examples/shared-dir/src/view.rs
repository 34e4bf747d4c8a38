//! What this member last read of the directory (members, senior, settings),
//! and the poller that keeps it current. Every change becomes an event,
//! queued in the order it was read and delivered by a task that holds no lock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterhost_plugin_api::cluster::{now_ms, Member, StrategyEvent};
use clusterhost_plugin_api::membership::AnnouncedView;
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
    /// What the host was told of `members`: the next view's events come from it.
    announced: AnnouncedView,
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
        let events = self.take(Some(me.clone()), members);
        self.queue([StrategyEvent::Joined { member: me.id }].into_iter().chain(events).collect());
        Ok(())
    }

    /// Removes this member's file, silently (no `Left` of its own). The
    /// poller goes on reading settings only: a member switched off
    /// cluster-wide must still see the switch turned back on.
    pub fn leave(&self) -> Result<()> {
        let _scan = lock(&self.scan);
        let mut view = lock(&self.view);
        (view.joined, view.members) = (None, Vec::new());
        view.announced.forget();
        drop(view);
        self.dir.remove_member(&self.me.id)
    }

    /// Replaces the view's members (the announced view with them) and
    /// returns the events that tell the host what changed.
    fn take(&self, joined: Option<Member>, members: Vec<Member>) -> Vec<StrategyEvent> {
        let ids = members.iter().map(|m| m.id.clone()).collect();
        let senior = members.first().map(|m| m.id.clone());
        let mut view = lock(&self.view);
        let events = view.announced.update(&self.me.id, ids, senior);
        (view.joined, view.members) = (joined, members);
        events
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
        let settings = self.dir.settings()?;
        let mut view = lock(&self.view);
        let mut events = Vec::new();
        for (key, value) in settings.iter().filter(|(k, v)| view.settings.get(*k) != Some(*v)) {
            events.push(StrategyEvent::SettingChanged { key: key.clone(), value: value.clone() });
        }
        view.settings = settings;
        let joined = view.joined.clone();
        drop(view);
        self.queue(events);
        if let Some(me) = joined {
            self.dir.put_member(&me)?;
            let members = self.live(&me)?;
            self.queue(self.take(Some(me), members));
        }
        Ok(())
    }

    /// Queues `events` for delivery, in order.
    fn queue(&self, events: Vec<StrategyEvent>) {
        for event in events {
            tracing::info!(?event, "announced");
            // A send fails only once the delivery task ended with the strategy.
            let _ = self.events.send(event);
        }
    }
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
            // A directory gone away fails every heartbeat: one line per 10 s.
            let failed = clusterhost_plugin_api::throttle::Throttled::default();
            loop {
                beat.tick().await;
                let shared = shared.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || shared.refresh()).await {
                    failed.warn(format_args!("{e}"));
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
