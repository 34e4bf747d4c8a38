//! The membership chores every strategy shares: turning successive views of
//! the cluster into the host's events ([`AnnouncedView`]), and resolving a
//! task's target against a view ([`resolve_target`]).

use std::collections::BTreeSet;

use crate::cluster::{StrategyEvent, TaskOutcome, TaskReply, TaskTarget};

/// The membership view as this member last announced it to the host: feed
/// it each new view ([`update`](Self::update)), and it answers with the
/// events that tell the host what changed.
///
/// The rules (what the host and its tests rely on):
///
/// - **This member's own join.** The first view that lists `local` is the
///   starting point: the members already there are not news (no `Joined`
///   for them), and neither is their senior, unless it is `local`
///   (`SeniorChanged { local }`, and nothing else). The host reports
///   `Joined { local }` itself when `start_clustering` returns, before the
///   events queued meanwhile; a strategy emits `Joined { local }` only when
///   it rejoins on its own (after losing the cluster).
/// - **Afterwards**, in this order: `Joined` for each member new in the
///   view (in the order the view lists them), `Left` for each member gone
///   (in the order the previous view listed them), then `SeniorChanged`
///   if there is a senior and it is another than before (so it follows the
///   `Left` of the old senior). Never an event about `local` here.
/// - **Leaving**: [`forget`](Self::forget) drops the view without an event
///   (`stop_clustering` never reports this member's own `Left`; a strategy
///   that loses the cluster on its own emits that `Left` itself). Until
///   the next view that lists `local`, [`members`](Self::members) is empty
///   and [`senior`](Self::senior) is `None`.
///
/// It never emits: it returns the events, and the caller emits them after
/// releasing its own locks (delivering an event runs host code, which may
/// drop the strategy and take those locks). Update it in the same critical
/// section that replaces the strategy's own view, so the view and what the
/// host was told change together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AnnouncedView {
    /// The members of the last view, in its order; what the next view is
    /// compared with.
    members: Vec<String>,
    /// The senior of the last view, compared with the next one's.
    senior: Option<String>,
    /// Whether the last view listed this member: if not, the next view is
    /// a starting point, not news.
    joined: bool,
}

impl AnnouncedView {
    /// A member not yet joined (the same as after [`forget`](Self::forget)).
    pub fn new() -> Self {
        AnnouncedView::default()
    }

    /// Takes the new view of member `local` (`members` in the strategy's
    /// order, join order or by id; `local` among them while it is joined)
    /// and returns what the host must be told, in order. See the type's
    /// docs for the rules.
    pub fn update(&mut self, local: &str, members: Vec<String>, senior: Option<String>) -> Vec<StrategyEvent> {
        let was_joined = self.joined;
        let previous = std::mem::replace(&mut self.members, members);
        let previous_senior = std::mem::replace(&mut self.senior, senior);
        self.joined = self.members.iter().any(|id| id == local);
        let mut events = Vec::new();
        if !was_joined {
            if self.senior.as_deref() == Some(local) {
                events.push(StrategyEvent::SeniorChanged { member: local.to_string() });
            }
            return events;
        }
        let before: BTreeSet<&str> = previous.iter().map(String::as_str).collect();
        let now: BTreeSet<&str> = self.members.iter().map(String::as_str).collect();
        let others = |id: &&String| id.as_str() != local;
        events.extend(
            self.members
                .iter()
                .filter(others)
                .filter(|id| !before.contains(id.as_str()))
                .map(|id| StrategyEvent::Joined { member: id.clone() }),
        );
        events.extend(
            previous
                .iter()
                .filter(others)
                .filter(|id| !now.contains(id.as_str()))
                .map(|id| StrategyEvent::Left { member: id.clone() }),
        );
        if self.senior != previous_senior {
            if let Some(senior) = &self.senior {
                events.push(StrategyEvent::SeniorChanged { member: senior.clone() });
            }
        }
        events
    }

    /// This member left (`stop_clustering`) or lost the cluster: the view is
    /// dropped, and nothing is announced.
    pub fn forget(&mut self) {
        *self = AnnouncedView::default();
    }

    /// The members of the last view, in its order; empty while not joined.
    pub fn members(&self) -> &[String] {
        if self.joined {
            &self.members
        } else {
            &[]
        }
    }

    /// The senior of the last view; `None` while not joined.
    pub fn senior(&self) -> Option<&str> {
        self.senior.as_deref().filter(|_| self.joined)
    }
}

/// Why a task's target names no member to run it on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `TaskTarget::Member` named a member the view does not list.
    #[error("member {member} is not in the cluster")]
    NotInCluster { member: String },
}

impl TargetError {
    /// The member the target named.
    pub fn member(&self) -> &str {
        match self {
            TargetError::NotInCluster { member } => member,
        }
    }

    /// The reply a call to that member gets: the error, in its name.
    pub fn into_reply(self) -> TaskReply {
        let outcome = TaskOutcome::Error(self.to_string());
        match self {
            TargetError::NotInCluster { member } => TaskReply { member, outcome },
        }
    }
}

/// The members `target` names in a view of `members` (in the view's order)
/// whose senior is `senior`, as seen by member `local`: `All` every member,
/// `Others` every member but `local`, `Senior` the senior (none without
/// one), `Member(id)` that one if the view lists it, an error otherwise.
pub fn resolve_target<S: AsRef<str>>(
    target: &TaskTarget,
    local: &str,
    members: impl IntoIterator<Item = S>,
    senior: Option<&str>,
) -> Result<Vec<String>, TargetError> {
    let mut members = members.into_iter();
    Ok(match target {
        TaskTarget::All => members.map(|id| id.as_ref().to_string()).collect(),
        TaskTarget::Others => members.filter(|id| id.as_ref() != local).map(|id| id.as_ref().to_string()).collect(),
        TaskTarget::Member(id) if members.any(|m| m.as_ref() == id) => vec![id.clone()],
        TaskTarget::Member(id) => return Err(TargetError::NotInCluster { member: id.clone() }),
        TaskTarget::Senior => senior.map(str::to_string).into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn joined(m: &str) -> StrategyEvent {
        StrategyEvent::Joined { member: m.into() }
    }

    fn left(m: &str) -> StrategyEvent {
        StrategyEvent::Left { member: m.into() }
    }

    fn senior(m: &str) -> StrategyEvent {
        StrategyEvent::SeniorChanged { member: m.into() }
    }

    /// A view of `me` that has joined a cluster of `list` whose senior is `senior`.
    fn joined_view(me: &str, list: &[&str], senior: &str) -> AnnouncedView {
        let mut view = AnnouncedView::new();
        view.update(me, ids(list), Some(senior.into()));
        view
    }

    #[test]
    fn own_join_as_the_senior_announces_only_that_it_is_senior() {
        let mut view = AnnouncedView::new();
        assert_eq!(view.update("a", ids(&["a"]), Some("a".into())), vec![senior("a")]);
    }

    #[test]
    fn own_join_announces_neither_the_members_already_there_nor_their_senior() {
        let mut view = AnnouncedView::new();
        assert_eq!(view.update("c", ids(&["a", "b", "c"]), Some("a".into())), vec![]);
        assert_eq!(view.members(), ids(&["a", "b", "c"]));
        assert_eq!(view.senior(), Some("a"));
    }

    #[test]
    fn a_view_without_this_member_is_not_a_join_and_the_next_one_is_the_starting_point() {
        let mut view = AnnouncedView::new();
        assert_eq!(view.update("c", ids(&["a", "b"]), Some("a".into())), vec![], "not joined yet");
        assert_eq!(view.update("c", ids(&["a", "b", "c"]), Some("a".into())), vec![], "the join is no news");
        assert_eq!(view.update("c", ids(&["a", "b", "c", "d"]), Some("a".into())), vec![joined("d")]);
    }

    #[test]
    fn new_members_are_announced_in_the_views_order() {
        let mut view = joined_view("a", &["a"], "a");
        assert_eq!(view.update("a", ids(&["a", "c", "b"]), Some("a".into())), vec![joined("c"), joined("b")]);
    }

    #[test]
    fn members_gone_are_announced_in_the_previous_views_order() {
        let mut view = joined_view("a", &["a", "c", "b", "d"], "a");
        assert_eq!(view.update("a", ids(&["a", "d"]), Some("a".into())), vec![left("c"), left("b")]);
    }

    #[test]
    fn joins_come_before_leaves_and_the_senior_change_after_the_old_seniors_leave() {
        let mut view = joined_view("b", &["a", "b"], "a");
        assert_eq!(view.update("b", ids(&["b", "c"]), Some("b".into())), vec![joined("c"), left("a"), senior("b")]);
    }

    #[test]
    fn a_new_senior_is_announced_once_and_a_view_without_one_announces_none() {
        let mut view = joined_view("b", &["a", "b"], "a");
        assert_eq!(view.update("b", ids(&["a", "b"]), Some("b".into())), vec![senior("b")]);
        assert_eq!(view.update("b", ids(&["a", "b"]), Some("b".into())), vec![], "no change, no news");
        assert_eq!(view.update("b", ids(&["a", "b"]), None), vec![]);
        assert_eq!(view.update("b", ids(&["a", "b"]), Some("a".into())), vec![senior("a")]);
    }

    #[test]
    fn an_unchanged_view_announces_nothing() {
        let mut view = joined_view("a", &["a", "b"], "a");
        assert_eq!(view.update("a", ids(&["a", "b"]), Some("a".into())), vec![]);
    }

    #[test]
    fn this_members_own_leave_from_the_view_is_never_announced() {
        let mut view = joined_view("a", &["a", "b"], "a");
        assert_eq!(view.update("a", ids(&["b"]), Some("b".into())), vec![senior("b")]);
        assert_eq!(view.update("a", ids(&["a", "b"]), Some("b".into())), vec![], "back: a starting point again");
    }

    #[test]
    fn forget_announces_nothing_empties_the_view_and_makes_the_next_join_a_starting_point() {
        let mut view = joined_view("a", &["a", "b"], "a");
        view.forget();
        assert!(view.members().is_empty());
        assert_eq!(view.senior(), None);
        assert_eq!(view, AnnouncedView::new());
        assert_eq!(view.update("a", ids(&["a", "b", "c"]), Some("a".into())), vec![senior("a")]);
    }

    #[test]
    fn a_member_not_yet_joined_has_no_members_and_no_senior() {
        let view = AnnouncedView::new();
        assert!(view.members().is_empty());
        assert_eq!(view.senior(), None);
    }

    fn resolve(target: TaskTarget, senior: Option<&str>) -> Result<Vec<String>, TargetError> {
        resolve_target(&target, "b", ["c", "b", "a"], senior)
    }

    #[test]
    fn all_is_every_member_and_others_every_member_but_this_one_in_the_views_order() {
        assert_eq!(resolve(TaskTarget::All, Some("c")), Ok(ids(&["c", "b", "a"])));
        assert_eq!(resolve(TaskTarget::Others, Some("c")), Ok(ids(&["c", "a"])));
    }

    #[test]
    fn senior_is_the_senior_or_nobody_without_one() {
        assert_eq!(resolve(TaskTarget::Senior, Some("c")), Ok(ids(&["c"])));
        assert_eq!(resolve(TaskTarget::Senior, None), Ok(vec![]));
    }

    #[test]
    fn a_member_in_the_view_is_itself_and_one_outside_it_is_an_error_naming_it() {
        assert_eq!(resolve(TaskTarget::Member("a".into()), None), Ok(ids(&["a"])));
        assert_eq!(resolve(TaskTarget::Member("b".into()), None), Ok(ids(&["b"])));
        let error = resolve(TaskTarget::Member("zed".into()), None).unwrap_err();
        assert_eq!(error.member(), "zed");
        assert_eq!(error.to_string(), "member zed is not in the cluster");
        assert_eq!(
            error.into_reply(),
            TaskReply { member: "zed".into(), outcome: TaskOutcome::Error("member zed is not in the cluster".into()) }
        );
    }

    #[test]
    fn an_empty_view_resolves_to_nobody_and_names_no_member() {
        let none: [&str; 0] = [];
        assert_eq!(resolve_target(&TaskTarget::All, "b", none, None), Ok(vec![]));
        assert_eq!(resolve_target(&TaskTarget::Others, "b", none, None), Ok(vec![]));
        assert!(resolve_target(&TaskTarget::Member("b".into()), "b", none, None).is_err());
    }
}
