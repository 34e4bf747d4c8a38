//! `/api/cluster` (the cluster, switched on and off) and `/api/node` (one
//! member's own detail, asked of that member).

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::{answer, ApiError, ApiResult};
use crate::admin::contract::{ClusterView, MemberView, MissingCause, NodeDetail, PluginSummary, Switched};
use crate::admin::details::{local_detail, member_detail, member_details, DETAIL_WAIT};
use crate::admin::AdminState;
use crate::cluster::MemberStatus;
use crate::plugins::registry::{PluginRecord, PluginState};

/// The record of the strategy plugin `label` ("id version") in `detail`.
fn strategy_record(detail: &NodeDetail) -> Option<&PluginRecord> {
    let id = detail.strategy.as_deref()?.split(' ').next()?;
    let mut records: Vec<&PluginRecord> = detail.plugins.iter().filter(|r| r.id.as_deref() == Some(id)).collect();
    records.sort_by_key(|r| (r.state == PluginState::Active, r.changed_at_ms));
    records.last().copied()
}

/// A member's view from its own detail.
fn answered(detail: &NodeDetail) -> MemberView {
    MemberView {
        id: detail.node.clone(),
        cluster: Some(detail.cluster.clone()),
        plugin: strategy_record(detail).map(|r| PluginSummary {
            id: r.id.clone(),
            version: r.version.as_ref().map(|v| v.to_string()),
            state: r.state,
            reason: r.reason.clone(),
        }),
        missing: None,
    }
}

/// The members, senior and versions as the strategy sees them; this node's
/// detail computed here and the others' asked of them, all by one deadline.
pub(in crate::admin) async fn cluster_view(state: &AdminState) -> ClusterView {
    let ctx = state.ctx();
    let status = ctx.cluster.status();
    let deadline = Instant::now() + DETAIL_WAIT;
    let others: Vec<String> = status.members.iter().filter(|m| m.id != status.node).map(|m| m.id.clone()).collect();
    let (local, others) = tokio::join!(local_detail(ctx), member_details(ctx, others, deadline));
    let mut views = vec![answered(&local)];
    views.extend(others.into_iter().map(|(id, answer)| match answer {
        Ok(detail) => answered(&detail),
        Err(missing) => MemberView { id, cluster: None, plugin: None, missing: Some(missing) },
    }));
    views.sort_by(|a, b| a.id.cmp(&b.id));
    let warn = version_warning(&status.members);
    ClusterView { status, details: views, warn }
}

fn version_warning(members: &[MemberStatus]) -> Option<String> {
    let versions: std::collections::BTreeSet<&str> = members.iter().map(|m| m.plugin_version.as_str()).collect();
    (versions.len() > 1).then(|| {
        let list: Vec<String> = members.iter().map(|m| format!("{} runs {}", m.id, m.plugin_version)).collect();
        format!(
            "the members run different versions of the strategy plugin ({}); finish the upgrade so every member runs the same version",
            list.join(", ")
        )
    })
}

pub(in crate::admin) async fn cluster(State(state): State<AdminState>) -> Json<ClusterView> {
    Json(cluster_view(&state).await)
}

async fn switch(state: &AdminState, enabled: bool) -> ApiResult<serde_json::Value> {
    let ctx = state.ctx();
    ctx.cluster.set_enabled(enabled).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "could not {} clustering cluster-wide: {e}; check the strategy plugin's state on /plugins and retry",
                if enabled { "enable" } else { "disable" }
            ),
        )
    })?;
    tracing::info!("clustering {} cluster-wide through the admin API", if enabled { "enabled" } else { "disabled" });
    Ok(answer(&Switched { enabled, status: ctx.cluster.status() }))
}

pub(in crate::admin) async fn enable(State(state): State<AdminState>) -> ApiResult<serde_json::Value> {
    switch(&state, true).await
}

pub(in crate::admin) async fn disable(State(state): State<AdminState>) -> ApiResult<serde_json::Value> {
    switch(&state, false).await
}

/// `GET /api/node[?member=ID]`: a member's caches and plugins, from the member itself.
pub(in crate::admin) async fn node_detail(state: &AdminState, member: Option<&str>) -> Result<NodeDetail, ApiError> {
    let ctx = state.ctx();
    let member = member.filter(|m| !m.is_empty() && *m != ctx.cluster.node());
    let Some(member) = member else {
        return Ok(local_detail(ctx).await);
    };
    if !ctx.cluster.members().iter().any(|m| m.id == member) {
        return Err(ApiError::not_found(format!(
            "no member {} in this node's cluster; GET /api/cluster lists the members",
            crate::text::clip_debug(member)
        )));
    }
    member_detail(ctx, member, Instant::now() + DETAIL_WAIT).await.map_err(|missing| {
        let (status, hint) = match missing.cause {
            MissingCause::Unsupported => {
                (StatusCode::NOT_IMPLEMENTED, "; open /api/node on that member's own admin API")
            }
            MissingCause::TimedOut | MissingCause::Error => (StatusCode::BAD_GATEWAY, ""),
        };
        ApiError::new(status, format!("member {member}: {}{hint}", missing.reason))
    })
}

pub(in crate::admin) async fn node(
    State(state): State<AdminState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<NodeDetail> {
    node_detail(&state, query.get("member").map(String::as_str)).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_plugin_versions_are_warned_about() {
        let member = |id: &str, v: &str| MemberStatus {
            id: id.into(),
            address: "a".into(),
            started_at_ms: 0,
            plugin_version: v.into(),
            senior: false,
            local: false,
        };
        assert_eq!(version_warning(&[member("a", "1.0.0"), member("b", "1.0.0")]), None);
        let warn = version_warning(&[member("a", "1.0.0"), member("b", "1.1.0")]).unwrap();
        assert!(warn.contains("a runs 1.0.0, b runs 1.1.0"), "{warn}");
    }
}
