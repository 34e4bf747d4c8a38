//! The rules, one function each, in the order the suite runs them. A rule
//! returns `Err(Failure)` or panics (an `assert!`) when the strategy breaks
//! it; `?` on a cluster call turns `Unsupported` into that verdict.

mod alone;
mod atomic;
mod bounds;
mod caches;
mod cancellation;
mod coordination;
mod entries;
mod events;

use super::{Ctx, Rule};

/// Builds a [`Rule`] entry from a function `fn(Ctx) -> impl Future<Output = Result<(), Failure>>`.
macro_rules! rule {
    ($name:literal, $alone:expr, $summary:literal, $run:path) => {
        Rule { name: $name, summary: $summary, alone: $alone, run: |ctx: Ctx| Box::pin($run(ctx)) }
    };
}

/// Every rule (docs/strategy-authoring.md describes each by this name).
pub(super) static ALL: &[Rule] = &[
    rule!("alone-caches", true, "one member serves every cache operation", alone::alone_caches),
    rule!("alone-tasks", true, "one member runs every task target itself", alone::alone_tasks),
    rule!("alone-locks", true, "one member grants a lock to one owner at a time", alone::alone_locks),
    rule!("alone-settings", true, "one member keeps and announces its settings", alone::alone_settings),
    rule!("membership-converges", false, "every member sees every member and the same one senior", events::membership_converges),
    rule!("join-events", false, "a joining member's events: its own Joined first, SeniorChanged only if senior, no Joined for members already there", events::join_events),
    rule!("view-empty-while-not-joined", false, "members() is empty and senior_member() none while not joined", events::view_empty_while_not_joined),
    rule!("stop-emits-no-own-left", false, "stop_clustering never emits this member's own Left", events::stop_emits_no_own_left),
    rule!("listener-order", false, "the cache factory acts first, then listeners in order; a failing listener stops none", events::listener_order),
    rule!("member-stops-without-leaving", false, "a member that dies without leaving is removed on every member", events::member_stops_without_leaving),
    rule!("cache-across-members", false, "a write, remove or clear on one member is what every member reads", caches::cache_across_members),
    rule!("join-and-leave-keep-entries", false, "join merges by version; a member that leaves keeps what it held", caches::join_and_leave_keep_entries),
    rule!("tasks-every-target", false, "a task reaches every target, one answer per member even when one hangs", coordination::tasks_every_target),
    rule!("locks", false, "a lock excludes across members and is released when its holder leaves, or dies (with its removal from the view)", coordination::locks),
    rule!("fenced-locks", false, "every grant of a lock carries a fencing number above the grants before, also after the senior dies; a living holder keeps its lock", coordination::fenced_locks),
    rule!("settings-everywhere", false, "a cluster-wide setting reaches every member", coordination::settings_everywhere),
    rule!("clustering-switch", false, "disabling and enabling on one member changes every member, keeping entries", coordination::clustering_switch),
    rule!("cancellation", false, "futures dropped early leak nothing and break nothing", cancellation::cancellation),
    rule!("atomic-alone", true, "put_if_absent, replace_if and remove_if by value or version; every write changes the version; update counts", atomic::atomic_alone),
    rule!("atomic-put-if-absent-race", false, "racing put_if_absent on every member: exactly one winner, seen by every loser and member", atomic::atomic_put_if_absent_race),
    rule!("atomic-update-counter", false, "16 concurrent update increments of one counter from 3 members end at 16", atomic::atomic_update_counter),
    rule!("entry-events-alone", true, "every change reaches this member's listeners in order, this member the origin; values only when asked", entries::entry_events_alone),
    rule!("entry-events-across-members", false, "a put or remove on one member reaches the clustered listeners of another with that member as origin, a key's changes in order; never a local listener elsewhere", entries::entry_events_across_members),
    rule!("bounded-alone", true, "a size bound evicts the oldest writes first, a TTL (the cache's or a put's own) removes an entry, never before it, and reports expired, a live edit shrinks at once", bounds::bounded_alone),
    rule!("bounded-across-members", false, "a bound holds on every member after concurrent writes, a TTL entry is gone everywhere within TTL + 1 s and another member's listener is told, a live edit shrinks every member", bounds::bounded_across_members),
    rule!("entry-times", false, "every member tells when an entry expires (the cache's TTL from the write, a put's own), none without a TTL or for an absent key, and counts each cache's evictions", bounds::entry_times),
];

/// What every rule file uses.
mod support {
    pub(super) use std::sync::{Arc, Mutex};
    pub(super) use std::time::{Duration, Instant};

    pub(super) use crate::cluster::{ClusterEvent, ClusterState, Target, TaskFailure};
    pub(super) use crate::conformance::check::{ensure, ensure_eq, wait_for, wait_until};
    pub(super) use crate::conformance::harness::{quick_config, same_kind};
    pub(super) use crate::conformance::{Ctx, Failure, Nodes};
    pub(super) use clusterhost_plugin_api::cluster::StrategyEvent;

    /// Events as the listeners saw them, tagged by listener.
    pub(super) type Log = Arc<Mutex<Vec<String>>>;

    /// A listener that records every event under `tag`.
    pub(super) fn recorder(
        log: &Log,
        tag: &'static str,
    ) -> impl Fn(&ClusterEvent) -> Result<(), String> + Send + Sync + 'static {
        let log = log.clone();
        move |event| {
            clusterhost_plugin_api::sync::lock(&log).push(format!("{tag}: {}", describe(event)));
            Ok(())
        }
    }

    /// An event in a line: "joined b", "senior a (local)", ...
    pub(super) fn describe(event: &ClusterEvent) -> String {
        let local = |l: &bool| if *l { " (local)" } else { "" };
        match event {
            ClusterEvent::JoinedCluster { member, local: l } => format!("joined {member}{}", local(l)),
            ClusterEvent::LeftCluster { member, local: l } => format!("left {member}{}", local(l)),
            ClusterEvent::MarkedSeniorClusterMember { member, local: l } => format!("senior {member}{}", local(l)),
            ClusterEvent::SettingChanged { key, .. } => format!("setting {key}"),
        }
    }

    /// The lines recorded under `tag`.
    pub(super) fn lines(log: &Log, tag: &str) -> Vec<String> {
        let prefix = format!("{tag}: ");
        clusterhost_plugin_api::sync::lock(log)
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// A strategy event in a line, as the tap recorded it.
    pub(super) fn raw(event: &StrategyEvent) -> String {
        match event {
            StrategyEvent::Joined { member } => format!("joined {member}"),
            StrategyEvent::Left { member } => format!("left {member}"),
            StrategyEvent::SeniorChanged { member } => format!("senior {member}"),
            StrategyEvent::SettingChanged { key, .. } => format!("setting {key}"),
        }
    }
}
