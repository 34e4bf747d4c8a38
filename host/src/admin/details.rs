//! Each member's own report ([`NodeDetail`]) for `GET /api/cluster` and
//! `/api/node`: this node's is computed here; every other member is asked
//! through a cluster task of its own, all at once, all by one deadline.

use std::time::{Duration, Instant};

use clusterhost_plugin_api::cluster::TaskOutcome;
use tokio::task::JoinSet;

use super::contract::{DetailMissing, NodeDetail};
use super::AdminContext;
use crate::cluster::{ClusterError, Target};

/// The cluster task every member answers with its [`NodeDetail`] (JSON).
pub const NODE_DETAIL_TASK: &str = "clusterhost.admin.node-detail";

/// How long a request waits for the other members' details.
pub(super) const DETAIL_WAIT: Duration = Duration::from_secs(3);

/// This node's [`NodeDetail`], from its own managers.
pub(super) async fn local_detail(ctx: &AdminContext) -> NodeDetail {
    let status = ctx.cluster.status();
    NodeDetail {
        node: status.node,
        version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: status.state,
        enabled: status.enabled,
        strategy: status.strategy,
        caches: ctx.cluster.caches().stats().await,
        plugins: ctx.plugins.records(),
    }
}

/// Answers [`NODE_DETAIL_TASK`] on this node.
pub(super) fn register_detail_task(ctx: &AdminContext) {
    let ctx = ctx.clone();
    ctx.cluster.clone().register_task_raw(NODE_DETAIL_TASK, move |_from, _payload| {
        let ctx = ctx.clone();
        async move {
            let detail = local_detail(&ctx).await;
            serde_json::to_vec(&detail).map_err(|e| format!("could not encode the node detail: {e}"))
        }
    });
}

/// Asks `member` (another member, by id) for its detail, by `deadline`.
pub(super) async fn member_detail(
    ctx: &AdminContext,
    member: &str,
    deadline: Instant,
) -> Result<NodeDetail, DetailMissing> {
    let wait = deadline.saturating_duration_since(Instant::now());
    let target = Target::Member(member.to_string());
    let replies = match ctx.cluster.call_task_raw_by(target, NODE_DETAIL_TASK, Vec::new(), deadline).await {
        Ok(replies) => replies,
        Err(ClusterError::Unsupported { .. }) => return Err(DetailMissing::unsupported()),
        Err(e) => return Err(DetailMissing::error(&crate::text::clip(&e.to_string()))),
    };
    match replies.into_iter().find(|r| r.member == member).map(|r| r.outcome) {
        Some(TaskOutcome::Value(bytes)) => serde_json::from_slice(&bytes)
            .map_err(|e| DetailMissing::error(&format!("it sent a detail this host cannot read ({e})"))),
        Some(TaskOutcome::Error(e)) => Err(DetailMissing::error(&crate::text::clip(&e))),
        Some(TaskOutcome::TimedOut) | None => Err(DetailMissing::timed_out(wait)),
    }
}

/// Asks each of `members` at once; every answer is back by `deadline`, in
/// the order of `members`. A member that did not answer is missing only
/// its own detail: the others' answers are kept.
pub(super) async fn member_details(
    ctx: &AdminContext,
    members: Vec<String>,
    deadline: Instant,
) -> Vec<(String, Result<NodeDetail, DetailMissing>)> {
    let mut asks = JoinSet::new();
    for (index, member) in members.iter().cloned().enumerate() {
        let ctx = ctx.clone();
        asks.spawn(async move { (index, member_detail(&ctx, &member, deadline).await) });
    }
    let mut answers: Vec<Option<Result<NodeDetail, DetailMissing>>> = members.iter().map(|_| None).collect();
    while let Some(joined) = asks.join_next().await {
        if let Ok((index, answer)) = joined {
            answers[index] = Some(answer);
        }
    }
    // A JoinError: the ask panicked on this node (its log says why).
    let lost = || Err(DetailMissing::error("asking it failed on this node; see this node's log"));
    members.into_iter().zip(answers).map(|(member, answer)| (member, answer.unwrap_or_else(lost))).collect()
}
