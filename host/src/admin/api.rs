//! The JSON endpoints. Every error is `{"error": "..."}` with a 4xx or 5xx
//! status, saying what happened, to what, and what to do; a refused request
//! changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{file_name, local_detail, member_details, AdminState, NodeDetail};
use crate::cluster::{ClusterState, ClusterStatus, MemberStatus, Target};
use crate::properties::Properties;
use crate::registry::{PluginRecord, PluginState};

/// How long a request waits for the members' details.
const DETAIL_WAIT: Duration = Duration::from_secs(3);

/// An error answer: a status and `{"error": message, ...}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    extra: Option<(&'static str, Value)>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), extra: None }
    }

    pub(super) fn message(&self) -> &str {
        &self.message
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn with(mut self, key: &'static str, value: impl Serialize) -> Self {
        self.extra = Some((key, serde_json::to_value(value).unwrap_or(Value::Null)));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), "admin request failed: {}", self.message);
        } else {
            tracing::info!(status = self.status.as_u16(), "admin request refused: {}", self.message);
        }
        let mut body = json!({ "error": self.message });
        if let Some((key, value)) = self.extra {
            body[key] = value;
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Any path no route serves.
pub(super) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "nothing is served at {}; the API is under /api/ (see docs/admin.md), the console at /",
        uri.path()
    ))
}

// ---- cluster ----

/// `GET /api/cluster`: the status, each member's own state and strategy plugin.
#[derive(Debug, Serialize)]
pub(super) struct ClusterView {
    #[serde(flatten)]
    pub status: ClusterStatus,
    /// Each member as it reports itself (standalone: this node only).
    pub details: Vec<MemberView>,
    /// Set when the members run different strategy plugin versions.
    pub warn: Option<String>,
}

/// One member's own report.
#[derive(Debug, Serialize)]
pub(super) struct MemberView {
    pub id: String,
    /// Its clustering state and reason, as it reports them.
    pub cluster: Option<ClusterState>,
    /// Its strategy plugin: version, state and reason.
    pub plugin: Option<PluginSummary>,
    /// Why the member could not be asked.
    pub unreachable: Option<String>,
}

/// A plugin's version, state and reason.
#[derive(Debug, Serialize)]
pub(super) struct PluginSummary {
    pub id: Option<String>,
    pub version: Option<String>,
    pub state: PluginState,
    pub reason: Option<String>,
}

/// The record of the strategy plugin `label` ("id version") in `detail`.
fn strategy_record(detail: &NodeDetail) -> Option<&PluginRecord> {
    let id = detail.strategy.as_deref()?.split(' ').next()?;
    let mut records: Vec<&PluginRecord> = detail.plugins.iter().filter(|r| r.id.as_deref() == Some(id)).collect();
    records.sort_by_key(|r| (r.state == PluginState::Active, r.changed_at_ms));
    records.last().copied()
}

pub(super) async fn cluster_view(state: &AdminState) -> ClusterView {
    let ctx = state.ctx();
    let status = ctx.cluster.status();
    let (details, errors) = match member_details(ctx, Target::All, DETAIL_WAIT).await {
        Ok(found) => found,
        Err(e) => (Vec::new(), status.members.iter().map(|m| (m.id.clone(), e.clone())).collect()),
    };
    let mut views: Vec<MemberView> = details
        .iter()
        .map(|d| MemberView {
            id: d.node.clone(),
            cluster: Some(d.cluster.clone()),
            plugin: strategy_record(d).map(|r| PluginSummary {
                id: r.id.clone(),
                version: r.version.as_ref().map(|v| v.to_string()),
                state: r.state,
                reason: r.reason.clone(),
            }),
            unreachable: None,
        })
        .collect();
    views.extend(errors.into_iter().map(|(id, e)| MemberView {
        id,
        cluster: None,
        plugin: None,
        unreachable: Some(format!("{e}; check that the member is running")),
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

pub(super) async fn cluster(State(state): State<AdminState>) -> Json<ClusterView> {
    Json(cluster_view(&state).await)
}

async fn switch(state: &AdminState, enabled: bool) -> ApiResult<Value> {
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
    Ok(Json(json!({ "enabled": enabled, "status": ctx.cluster.status() })))
}

pub(super) async fn enable(State(state): State<AdminState>) -> ApiResult<Value> {
    switch(&state, true).await
}

pub(super) async fn disable(State(state): State<AdminState>) -> ApiResult<Value> {
    switch(&state, false).await
}

// ---- node ----

/// `GET /api/node[?member=ID]`: a member's caches and plugins, from the member itself.
pub(super) async fn node_detail(state: &AdminState, member: Option<&str>) -> Result<NodeDetail, ApiError> {
    let ctx = state.ctx();
    let member = member.filter(|m| !m.is_empty() && *m != ctx.cluster.node());
    let Some(member) = member else {
        return Ok(local_detail(ctx).await);
    };
    if !ctx.cluster.members().iter().any(|m| m.id == member) {
        return Err(ApiError::not_found(format!(
            "no member {member:?} in this node's cluster; GET /api/cluster lists the members"
        )));
    }
    let (mut details, errors) = member_details(ctx, Target::Member(member.to_string()), DETAIL_WAIT)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("member {member} could not be asked: {e}")))?;
    match (details.pop(), errors.into_iter().next()) {
        (Some(detail), _) => Ok(detail),
        (None, Some((_, e))) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("member {member} did not give its detail: {e}; check that it is running"),
        )),
        (None, None) => Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("member {member} gave no answer"))),
    }
}

pub(super) async fn node(
    State(state): State<AdminState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<NodeDetail> {
    node_detail(&state, query.get("member").map(String::as_str)).await.map(Json)
}

// ---- plugins ----

pub(super) async fn plugins(State(state): State<AdminState>) -> Json<Vec<PluginRecord>> {
    Json(state.ctx().plugins.records())
}

/// Checks an uploaded plugin's file name: `NAME.so`, a plain name, not hidden.
fn plugin_name(name: &str) -> Result<&str, ApiError> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.contains('/') || name.contains('\\') || name == ".." {
        Some("it contains a path separator")
    } else if name.starts_with('.') {
        Some("it starts with '.' (hidden files are ignored by the node)")
    } else if !name.ends_with(".so") || name.len() <= 3 {
        Some("it does not end in .so")
    } else if name.chars().any(|c| c.is_control()) {
        Some("it contains control characters")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ApiError::bad_request(format!(
            "plugin file name {name:?} refused: {problem}; use a plain file name like hello.so"
        ))),
        None => Ok(name),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn record_for(state: &AdminState, name: &str) -> Option<PluginRecord> {
    state.ctx().plugins.records().into_iter().find(|r| file_name(&r.file) == name)
}

/// Waits until the node reports on `name` after `since_ms`, in a state that
/// ends the load (active, rejected, faulted) or `done` holds.
async fn wait_for_record(
    state: &AdminState,
    name: &str,
    since_ms: u64,
    done: impl Fn(&PluginRecord) -> bool,
) -> Option<PluginRecord> {
    let budget = state.ctx().values.properties().max_execution;
    let deadline = Instant::now() + budget.min(Duration::from_secs(60)) + Duration::from_secs(5);
    loop {
        if let Some(record) = record_for(state, name).filter(|r| r.changed_at_ms >= since_ms && done(r)) {
            return Some(record);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /api/plugins?name=X.so`, body = the file: written as
/// `plugins/.X.so.tmp`, renamed into place; the node's watcher loads it
/// (a replace is a hot upgrade). Answers once the node reports the outcome.
pub(super) async fn install_plugin(
    State(state): State<AdminState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = query.get("name").map(String::as_str).ok_or_else(|| {
        ApiError::bad_request("POST /api/plugins needs ?name=FILE.so, the name to publish the plugin under")
    })?;
    let name = plugin_name(name)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(format!(
            "plugin {name} refused: the request body is empty; send the .so file as the body"
        )));
    }
    if !body.starts_with(b"\x7fELF") {
        return Err(ApiError::bad_request(format!(
            "plugin {name} refused: the body is not an ELF shared library; send the built .so file itself"
        )));
    }
    // Checks that read bytes only (complete ELF file, manifest), before
    // anything touches plugins/.
    let manifest = crate::manifest::manifest_from_bytes(std::path::Path::new(name), &body)
        .map_err(|e| ApiError::bad_request(format!("plugin {name} refused before it was written: {e}")))?;
    let sha256 = hex_sha256(&body);
    if let Some(record) = record_for(&state, name) {
        if record.state == PluginState::Active && record.sha256.as_deref() == Some(sha256.as_str()) {
            return Ok(Json(json!({ "outcome": "unchanged", "plugin": record })).into_response());
        }
    }
    let dir = crate::node::plugins_dir(&state.ctx().home);
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let replacing = target.exists();
    let since_ms = crate::registry::now_ms();
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::write(&tmp, &body).await?;
        tokio::fs::rename(&tmp, &target).await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(ApiError::internal(format!(
            "could not write plugin {name} into {}: {e}; check the disk space and permissions of the node's plugins directory",
            dir.display()
        )));
    }
    tracing::info!(file = %target.display(), plugin = %manifest.id, version = %manifest.version, replacing, "plugin uploaded through the admin API");
    let settled =
        |r: &PluginRecord| matches!(r.state, PluginState::Active | PluginState::Rejected | PluginState::Faulted);
    let Some(record) = wait_for_record(&state, name, since_ms, settled).await else {
        let record = record_for(&state, name);
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "outcome": "written", "note": format!("{name} was written; the node has not reported on it yet: GET /api/plugins shows its state"), "plugin": record })),
        )
            .into_response());
    };
    let refused_replacement = record.reason.as_deref().is_some_and(|r| r.contains("the replacement file was refused"));
    if record.state == PluginState::Active && !refused_replacement {
        let outcome = if replacing { "replaced" } else { "installed" };
        return Ok(Json(json!({ "outcome": outcome, "plugin": record })).into_response());
    }
    let reason = record.reason.clone().unwrap_or_else(|| format!("it is {}", record.state));
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "plugin {name} was written to plugins/ but the node refused it: {reason}; upload a fixed build under the same name, or DELETE /api/plugins/{name}"
        ),
    )
    .with("plugin", record))
}

/// `DELETE /api/plugins/X.so`: removes the file; the node stops the plugin.
pub(super) async fn remove_plugin(State(state): State<AdminState>, Path(name): Path<String>) -> ApiResult<Value> {
    let name = plugin_name(&name)?;
    let target = crate::node::plugins_dir(&state.ctx().home).join(name);
    let before = record_for(&state, name);
    let since_ms = crate::registry::now_ms();
    match tokio::fs::remove_file(&target).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!(
                "no plugin file {name} in the node's plugins directory; GET /api/plugins lists them"
            )))
        }
        Err(e) => return Err(ApiError::internal(format!("could not remove {}: {e}", target.display()))),
    }
    tracing::info!(file = %target.display(), "plugin file removed through the admin API");
    let was_active = before.as_ref().is_some_and(|r| r.state == PluginState::Active);
    let record = if was_active {
        wait_for_record(&state, name, since_ms, |r| matches!(r.state, PluginState::Retired | PluginState::Faulted))
            .await
            .or_else(|| record_for(&state, name))
    } else {
        before
    };
    Ok(Json(json!({ "removed": name, "plugin": record })))
}

// ---- properties ----

#[derive(Debug, Serialize)]
pub(super) struct PropertiesView {
    /// The file's path.
    pub file: PathBuf,
    /// Every key with the value in force (file, flags and environment, defaults).
    pub effective: BTreeMap<String, String>,
    /// The file's text (empty if it does not exist).
    pub text: String,
}

pub(super) async fn properties_view(state: &AdminState) -> Result<PropertiesView, ApiError> {
    let ctx = state.ctx();
    let text = match tokio::fs::read(&ctx.properties_file).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ApiError::internal(format!("could not read {}: {e}", ctx.properties_file.display())));
        }
    };
    Ok(PropertiesView { file: ctx.properties_file.clone(), effective: ctx.values.properties().effective(), text })
}

pub(super) async fn properties(State(state): State<AdminState>) -> ApiResult<PropertiesView> {
    properties_view(&state).await.map(Json)
}

/// `PUT /api/properties`, body = the new file text: validated first, then
/// written atomically; the node's watcher applies it.
pub(super) async fn put_properties(State(state): State<AdminState>, body: Bytes) -> ApiResult<Value> {
    let file = &state.ctx().properties_file;
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::bad_request(format!("the new properties text is not UTF-8 ({e}); {} was not changed", file.display()))
    })?;
    let (_, unknown) = Properties::parse(file, text.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("{e}; {} was not changed", file.display())))?;
    let warnings: Vec<String> = unknown
        .iter()
        .map(|u| format!("{}:{}: unknown property {:?} ignored; check its spelling", file.display(), u.line, u.key))
        .collect();
    let dir = file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let tmp = dir.join(".clusterhost.properties.tmp");
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::write(&tmp, text).await?;
        tokio::fs::rename(&tmp, file).await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(ApiError::internal(format!(
            "could not write {}: {e}; check the permissions of its directory; the file was not changed",
            file.display()
        )));
    }
    tracing::info!(file = %file.display(), "properties written through the admin API");
    Ok(Json(json!({
        "written": file,
        "warnings": warnings,
        "note": "the node applies the file within about a second; admin.*, node.* and cluster.port apply from the next start",
    })))
}

// ---- caches ----

fn cache_error(action: &str, cache: &str, key: &str, e: crate::cluster::ClusterError) -> ApiError {
    let status = match e {
        crate::cluster::ClusterError::Codec { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, format!("could not {action} key {key:?} of cache {cache:?}: {e}"))
}

pub(super) async fn cache_get(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
) -> ApiResult<Value> {
    let caches = state.ctx().cluster.caches().cache::<String, String>(&cache);
    match caches.get(&key).await.map_err(|e| cache_error("read", &cache, &key, e))? {
        Some(value) => Ok(Json(json!({ "cache": cache, "key": key, "value": value }))),
        None => Err(ApiError::not_found(format!("cache {cache:?} has no key {key:?}"))),
    }
}

pub(super) async fn cache_put(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Value> {
    let value = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::bad_request(format!(
            "the value for key {key:?} of cache {cache:?} is not UTF-8 text; the API stores string values only"
        ))
    })?;
    let caches = state.ctx().cluster.caches().cache::<String, String>(&cache);
    caches.put(&key, &value).await.map_err(|e| cache_error("write", &cache, &key, e))?;
    Ok(Json(json!({ "cache": cache, "key": key, "value": value })))
}

pub(super) async fn cache_remove(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
) -> ApiResult<Value> {
    let caches = state.ctx().cluster.caches().cache::<String, String>(&cache);
    if caches.remove(&key).await.map_err(|e| cache_error("remove", &cache, &key, e))? {
        Ok(Json(json!({ "cache": cache, "key": key, "removed": true })))
    } else {
        Err(ApiError::not_found(format!("cache {cache:?} has no key {key:?}; nothing was removed")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_must_be_plain_visible_so_files() {
        assert!(plugin_name("hello.so").is_ok());
        for bad in ["", ".so", "../x.so", "a/b.so", ".hidden.so", "x.txt", "x.so.tmp", "x\n.so"] {
            let err = plugin_name(bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(err.message.contains("use a plain file name"), "{}", err.message);
        }
    }

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
