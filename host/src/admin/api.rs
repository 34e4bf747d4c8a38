//! The JSON endpoints. Every error is `{"error": "..."}` with a 4xx or 5xx
//! status, saying what happened, to what, and what to do; a refused request
//! changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::limits::CappedBody;
use super::{file_name, local_detail, member_details, AdminState, NodeDetail};
use crate::cluster::{ClusterState, ClusterStatus, MemberStatus, Target};
use crate::plugins::registry::{PluginRecord, PluginState};
use crate::properties::Properties;

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
        crate::text::clip(uri.path())
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
            "no member {} in this node's cluster; GET /api/cluster lists the members",
            crate::text::clip_debug(member)
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
            "plugin file name {} refused: {problem}; use a plain file name like hello.so",
            crate::text::clip_debug(name)
        ))),
        None => Ok(name),
    }
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

/// A file mapped read-only, unmapped when dropped.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// Maps the first `len` bytes of `file` (`len` > 0).
    fn new(file: &std::fs::File, len: usize) -> std::io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only private mapping of an open file; the
        // pointer is only read through `bytes` while `self` lives.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`; the file is
        // the upload's own temporary (a unique hidden name this request
        // created and finished writing), which nothing else writes while
        // it is mapped.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Reads the manifest of the uploaded temporary file without reading the
/// file into memory (only the pages the ELF reader touches are loaded).
fn manifest_of_upload(
    name: &str,
    tmp: &std::path::Path,
    len: u64,
) -> Result<clusterhost_plugin_api::Manifest, ApiError> {
    let failed = |e: std::io::Error| {
        ApiError::internal(format!("could not read back the upload of {name} from {}: {e}", tmp.display()))
    };
    let file = std::fs::File::open(tmp).map_err(failed)?;
    let len = usize::try_from(len).map_err(|_| ApiError::bad_request(format!("plugin {name} refused: too large")))?;
    let mapped = Mapped::new(&file, len).map_err(failed)?;
    crate::plugins::manifest::manifest_from_bytes(std::path::Path::new(name), mapped.bytes())
        .map_err(|e| ApiError::bad_request(format!("plugin {name} refused before it was written: {e}")))
}

/// The upload of `name`, streamed into a new hidden temporary file in
/// `dir` (`.NAME.XXXXXX.tmp`, removed when dropped unless renamed), hashed
/// as it streams; refused at the first bytes if it is not ELF.
async fn receive_upload(
    name: &str,
    dir: &std::path::Path,
    mut body: CappedBody,
) -> Result<(tempfile::TempPath, u64, String), ApiError> {
    let write_error = |e: std::io::Error| {
        ApiError::internal(format!(
            "could not write plugin {name} into {}: {e}; check the disk space and permissions of the node's plugins directory; plugins/{name} was not changed",
            dir.display()
        ))
    };
    tokio::fs::create_dir_all(dir).await.map_err(write_error)?;
    let tmp =
        tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir).map_err(write_error)?;
    let (file, tmp) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut head: Vec<u8> = Vec::with_capacity(4);
    while let Some(data) = body.next().await? {
        if head.len() < 4 {
            head.extend(data.iter().take(4 - head.len()));
            if head.len() == 4 && head.as_slice() != b"\x7fELF" {
                return Err(not_elf(name));
            }
        }
        hasher.update(&data);
        len += data.len() as u64;
        tokio::io::AsyncWriteExt::write_all(&mut file, &data).await.map_err(write_error)?;
    }
    if len == 0 {
        return Err(ApiError::bad_request(format!(
            "plugin {name} refused: the request body is empty; send the .so file as the body"
        )));
    }
    if head.len() < 4 {
        return Err(not_elf(name));
    }
    file.sync_all().await.map_err(write_error)?;
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((tmp, len, sha256))
}

fn not_elf(name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "plugin {name} refused: the body is not an ELF shared library; send the built .so file itself"
    ))
}

/// `POST /api/plugins?name=X.so`, body = the file: streamed (within
/// `admin.max.upload.bytes`) into a unique hidden temporary file in
/// plugins/, checked, then renamed into place under the name's write lock;
/// the node's watcher loads it (a replace is a hot upgrade). Answers once
/// the node reports on this very file.
pub(super) async fn install_plugin(
    State(state): State<AdminState>,
    Query(query): Query<HashMap<String, String>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let name = query.get("name").map(String::as_str).ok_or_else(|| {
        ApiError::bad_request("POST /api/plugins needs ?name=FILE.so, the name to publish the plugin under")
    })?;
    let name = plugin_name(name)?;
    let cap = state.shared.limits.upload_cap();
    let body = CappedBody::new(request.into_body(), cap, axum::http::Method::POST, "/api/plugins");
    let dir = crate::home::plugins_dir(&state.ctx().home);
    let (tmp, len, sha256) = receive_upload(name, &dir, body).await?;
    // Checks that read bytes only (complete ELF file, manifest), before
    // anything touches the plugin's name.
    let manifest = manifest_of_upload(name, &tmp, len)?;
    let target = dir.join(name);
    let _writing = state.lock_target(&target).await;
    if let Some(record) = record_for(&state, name) {
        if record.state == PluginState::Active && record.sha256.as_deref() == Some(sha256.as_str()) {
            return Ok(Json(json!({ "outcome": "unchanged", "plugin": record })).into_response());
        }
    }
    let replacing = target.exists();
    let since_ms = crate::plugins::registry::now_ms();
    if let Err(e) = tmp.persist(&target) {
        return Err(ApiError::internal(format!(
            "could not rename the upload of {name} into {}: {}; plugins/{name} was not changed",
            dir.display(),
            e.error
        )));
    }
    tracing::info!(file = %target.display(), plugin = %manifest.id, version = %manifest.version, replacing, "plugin uploaded through the admin API");
    // This file's outcome: it is loaded (its own digest), or it is refused.
    let settled = |r: &PluginRecord| match r.state {
        PluginState::Active => {
            r.sha256.as_deref() == Some(sha256.as_str())
                || r.reason.as_deref().is_some_and(|r| r.contains("the replacement file was refused"))
        }
        PluginState::Rejected | PluginState::Faulted => true,
        _ => false,
    };
    let Some(record) = wait_for_record(&state, name, since_ms, settled).await else {
        let record = record_for(&state, name);
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "outcome": "written", "note": format!("{name} was written; the node has not reported on it yet: GET /api/plugins shows its state"), "plugin": record })),
        )
            .into_response());
    };
    if record.state == PluginState::Active && record.sha256.as_deref() == Some(sha256.as_str()) {
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
    let target = crate::home::plugins_dir(&state.ctx().home).join(name);
    let _writing = state.lock_target(&target).await;
    let before = record_for(&state, name);
    let since_ms = crate::plugins::registry::now_ms();
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
    /// Keys read only at start whose stored value differs from the one in
    /// force: key → the stored value, used from the next start.
    pub pending_restart: BTreeMap<String, String>,
    /// The file's text (empty if it does not exist).
    pub text: String,
}

async fn read_properties_text(file: &std::path::Path) -> Result<String, ApiError> {
    match tokio::fs::read(file).await {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(ApiError::internal(format!("could not read {}: {e}", file.display()))),
    }
}

pub(super) async fn properties_view(state: &AdminState) -> Result<PropertiesView, ApiError> {
    let ctx = state.ctx();
    let text = read_properties_text(&ctx.properties_file).await?;
    Ok(PropertiesView {
        file: ctx.properties_file.clone(),
        effective: ctx.values.properties().effective(),
        pending_restart: ctx.values.pending(),
        text,
    })
}

pub(super) async fn properties(State(state): State<AdminState>) -> ApiResult<PropertiesView> {
    properties_view(&state).await.map(Json)
}

/// Writes `text` as the properties file: a unique temporary file in the
/// same directory, renamed over it. The caller holds the file's write lock.
async fn write_properties(file: &std::path::Path, text: &str) -> Result<(), ApiError> {
    let dir = file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let failed = |e: std::io::Error| {
        ApiError::internal(format!(
            "could not write {}: {e}; check the permissions and free space of its directory; the file was not changed",
            file.display()
        ))
    };
    tokio::fs::create_dir_all(&dir).await.map_err(failed)?;
    let tmp =
        tempfile::Builder::new().prefix(".clusterhost.properties.").suffix(".tmp").tempfile_in(&dir).map_err(failed)?;
    let (handle, tmp) = tmp.into_parts();
    let mut handle = tokio::fs::File::from_std(handle);
    tokio::io::AsyncWriteExt::write_all(&mut handle, text.as_bytes()).await.map_err(failed)?;
    handle.sync_all().await.map_err(failed)?;
    drop(handle);
    tmp.persist(file).map_err(|e| failed(e.error))?;
    Ok(())
}

fn unknown_warnings(file: &std::path::Path, unknown: &[crate::properties::UnknownKey]) -> Vec<String> {
    unknown
        .iter()
        .map(|u| format!("{}:{}: unknown property {:?} ignored; check its spelling", file.display(), u.line, u.key))
        .collect()
}

/// The restart keys among `keys`, for the answer.
fn restart_keys<'k>(keys: impl IntoIterator<Item = &'k String>) -> Vec<&'k String> {
    keys.into_iter().filter(|k| crate::properties::is_restart_key(k)).collect()
}

const APPLY_NOTE: &str =
    "the node applies the file within about a second; admin.*, node.* and cluster.port apply from the next start";

/// `PUT /api/properties`, body = the whole new file text (properties
/// syntax): it replaces the file. Refused (nothing changes) when it is not
/// UTF-8, does not parse, or is JSON (that is what PATCH takes). The answer
/// lists the keys the old file set and the new one does not (`reset`: back
/// to their defaults), so a replace never resets a setting silently.
pub(super) async fn put_properties(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
    request: axum::extract::Request,
) -> ApiResult<Value> {
    let file = state.ctx().properties_file.clone();
    let cap = state.shared.limits.body_cap();
    let body = CappedBody::new(request.into_body(), cap, axum::http::Method::PUT, "/api/properties").read_all().await?;
    let not_changed = |problem: String| ApiError::bad_request(format!("{problem}; {} was not changed", file.display()));
    let text =
        std::str::from_utf8(&body).map_err(|e| not_changed(format!("the new properties text is not UTF-8 ({e})")))?;
    let json_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    if json_type || text.trim_start().starts_with(['{', '[']) {
        return Err(not_changed(
            "PUT /api/properties takes the whole file as properties text (`key = value` lines), and this body is JSON; \
             to change some keys, send them as a JSON object with PATCH /api/properties"
                .into(),
        ));
    }
    let (_, unknown) = Properties::parse(&file, text.as_bytes()).map_err(|e| not_changed(e.to_string()))?;
    let _writing = state.lock_target(&file).await;
    let old = read_properties_text(&file).await?;
    let old_keys = crate::properties::file_keys(old.as_bytes());
    let new_keys = crate::properties::file_keys(text.as_bytes());
    let reset: Vec<&String> = old_keys.difference(&new_keys).collect();
    write_properties(&file, text).await?;
    tracing::info!(file = %file.display(), ?reset, "properties written through the admin API");
    Ok(Json(json!({
        "written": file,
        "warnings": unknown_warnings(&file, &unknown),
        "reset": reset,
        "restart_keys": restart_keys(&new_keys),
        "note": APPLY_NOTE,
    })))
}

/// One PATCH value as the file's text: `None` removes the key.
fn patch_value(key: &str, value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(format!(
            "the value of {} is a JSON {}; give a string, number or boolean, or null to remove the key",
            crate::text::clip_debug(key),
            if other.is_array() { "array" } else { "object" }
        )),
    }
}

/// `PATCH /api/properties`, body = a JSON object of keys to change: a
/// string, number or boolean sets the key, `null` removes it from the file
/// (back to its default). Every other line of the file stays as it is.
/// Refused (nothing changes) for malformed JSON, an unknown key or an
/// invalid value.
pub(super) async fn patch_properties(
    State(state): State<AdminState>,
    request: axum::extract::Request,
) -> ApiResult<Value> {
    let file = state.ctx().properties_file.clone();
    let cap = state.shared.limits.body_cap();
    let body =
        CappedBody::new(request.into_body(), cap, axum::http::Method::PATCH, "/api/properties").read_all().await?;
    let not_changed = |problem: String| ApiError::bad_request(format!("{problem}; {} was not changed", file.display()));
    let changes: serde_json::Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        not_changed(format!(
            "PATCH /api/properties takes a JSON object of keys to change, like {{\"cluster.metrics.enabled\": true}}, and this body is not one ({e})"
        ))
    })?;
    let mut edits = Vec::new();
    for (key, value) in &changes {
        let value = patch_value(key, value).map_err(not_changed)?;
        match Properties::check(key, value.as_deref().unwrap_or_default()) {
            Ok(false) => {
                return Err(not_changed(format!(
                    "unknown property {}; check its spelling (docs/admin.md and the shipped conf/clusterhost.properties list them)",
                    crate::text::clip_debug(key)
                )))
            }
            Err(e) if value.is_some() => {
                return Err(not_changed(format!(
                    "{} = {}: {e}",
                    crate::text::clip(key),
                    crate::text::clip_debug(value.as_deref().unwrap_or_default())
                )))
            }
            _ => {}
        }
        edits.push((key.clone(), value));
    }
    let _writing = state.lock_target(&file).await;
    let old = read_properties_text(&file).await?;
    let text = crate::properties::patch_text(&old, &edits);
    // The file as a whole must still parse (a hand edit since the node
    // read it may have broken it): refused then, with the parser's reason.
    let (_, unknown) = Properties::parse(&file, text.as_bytes()).map_err(|e| not_changed(e.to_string()))?;
    write_properties(&file, &text).await?;
    let set: Vec<&String> = edits.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| k).collect();
    let removed: Vec<&String> = edits.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
    tracing::info!(file = %file.display(), ?set, ?removed, "properties patched through the admin API");
    Ok(Json(json!({
        "written": file,
        "set": set,
        "removed": removed,
        "warnings": unknown_warnings(&file, &unknown),
        "restart_keys": restart_keys(edits.iter().map(|(k, _)| k)),
        "note": APPLY_NOTE,
    })))
}

// ---- caches ----

fn cache_error(action: &str, cache: &str, key: &str, e: crate::cluster::ClusterError) -> ApiError {
    let status = match e {
        crate::cluster::ClusterError::Codec { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(
        status,
        format!(
            "could not {action} key {} of cache {}: {}",
            crate::text::clip_debug(key),
            crate::text::clip_debug(cache),
            crate::text::clip(&e.to_string())
        ),
    )
}

/// "cache C has no key K", both cut to a readable length.
fn no_key(cache: &str, key: &str) -> String {
    format!("cache {} has no key {}", crate::text::clip_debug(cache), crate::text::clip_debug(key))
}

pub(super) async fn cache_get(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
) -> ApiResult<Value> {
    let caches = state.ctx().cluster.caches().cache::<String, String>(&cache);
    match caches.get(&key).await.map_err(|e| cache_error("read", &cache, &key, e))? {
        Some(value) => Ok(Json(json!({ "cache": cache, "key": key, "value": value }))),
        None => Err(ApiError::not_found(no_key(&cache, &key))),
    }
}

pub(super) async fn cache_put(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
    request: axum::extract::Request,
) -> ApiResult<Value> {
    let cap = state.shared.limits.body_cap();
    let path = request.uri().path().to_string();
    let body = CappedBody::new(request.into_body(), cap, axum::http::Method::PUT, &path).read_all().await?;
    let value = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::bad_request(format!(
            "the value for key {} of cache {} is not UTF-8 text; the API stores string values only",
            crate::text::clip_debug(&key),
            crate::text::clip_debug(&cache)
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
        Err(ApiError::not_found(format!("{}; nothing was removed", no_key(&cache, &key))))
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
