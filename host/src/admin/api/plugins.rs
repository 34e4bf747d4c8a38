//! `/api/plugins`: the node's plugin files listed, uploaded (a new plugin or
//! a hot upgrade) and removed. A write answers once the node has acted on
//! the file, waiting on the plugin manager's changes.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{answer, upload, ApiError, ApiResult};
use crate::admin::contract::{Refusal, Removed, UploadOutcome, Uploaded};
use crate::admin::limits::CappedBody;
use crate::admin::{file_name, AdminState};
use crate::plugins::outcome::{LoadEnd, LoadOutcome, RefusalCause};
use crate::plugins::registry::{now_ms, PluginRecord, PluginState};
use crate::plugins::signature::{decode_from_header, signature_path, SIGNATURE_HEADER, SIGNATURE_SUFFIX};

pub(in crate::admin) async fn plugins(State(state): State<AdminState>) -> Json<Vec<PluginRecord>> {
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

/// The drain an upload asks for (`?drain=SECONDS`, at most
/// [`MAX_DRAIN`](crate::admin::health::MAX_DRAIN)): how long the node is
/// not ready before it acts on the file.
fn drain_of(name: &str, query: &HashMap<String, String>) -> Result<Option<Duration>, ApiError> {
    let Some(value) = query.get("drain") else { return Ok(None) };
    let max = crate::admin::health::MAX_DRAIN;
    match value.parse::<f64>() {
        Ok(secs) if (0.0..=max.as_secs_f64()).contains(&secs) => Ok(Some(Duration::from_secs_f64(secs))),
        _ => Err(ApiError::bad_request(format!(
            "plugin {name} refused before it was written: drain={} is not a number of seconds from 0 to {}; \
             pass how long the node stays not ready before it acts on the upload, e.g. drain=3",
            crate::text::clip_debug(value),
            max.as_secs()
        ))),
    }
}

/// The detached signature an upload carries in [`SIGNATURE_HEADER`], if
/// any: refused (nothing written) unless it is a readable minisign signature.
fn signature_of(name: &str, headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(SIGNATURE_HEADER) else { return Ok(None) };
    let refused = |why: &str| {
        ApiError::bad_request(format!(
            "plugin {name} refused before it was written: the {SIGNATURE_HEADER} header {why}; send the base64 of the plugin's .minisig file (clusterhost plugins install sends FILE.minisig)"
        ))
    };
    let text = decode_from_header(value.as_bytes()).ok_or_else(|| refused("is not base64 of a signature file"))?;
    minisign::SignatureBox::from_string(&text).map_err(|e| refused(&format!("is not a minisign signature ({e})")))?;
    Ok(Some(text))
}

/// Writes `plugins/NAME.so.minisig` atomically (a hidden temporary file
/// renamed over it), or removes it when `signature` is `None`.
fn write_signature(dir: &std::path::Path, name: &str, signature: Option<&str>) -> Result<(), ApiError> {
    let target = signature_path(&dir.join(name));
    let failed = |e: std::io::Error| {
        ApiError::internal(format!(
            "could not write {}: {e}; check the disk space and permissions of the node's plugins directory; plugins/{name} was not changed",
            target.display()
        ))
    };
    let Some(signature) = signature else {
        return match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(e)),
            _ => Ok(()),
        };
    };
    let mut pending = tempfile::Builder::new()
        .prefix(&format!(".{name}{SIGNATURE_SUFFIX}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(failed)?;
    std::io::Write::write_all(&mut pending, signature.as_bytes()).map_err(failed)?;
    pending.persist(&target).map_err(|e| failed(e.error))?;
    Ok(())
}

fn record_for(state: &AdminState, name: &str) -> Option<PluginRecord> {
    state.ctx().plugins.records().into_iter().find(|r| file_name(&r.file) == name)
}

/// Waits until `found` gives an answer, looking again at each change the
/// plugin manager announces, for at most the node's lifecycle budget (up
/// to a minute) and 5 s.
async fn wait_for<T>(state: &AdminState, mut found: impl FnMut() -> Option<T>) -> Option<T> {
    // Subscribed before the first look: a change after it wakes the loop.
    let mut changes = state.ctx().plugins.subscribe();
    let budget = state.ctx().values.properties().max_execution;
    let deadline = tokio::time::Instant::now() + budget.min(Duration::from_secs(60)) + Duration::from_secs(5);
    loop {
        if let Some(answer) = found() {
            return Some(answer);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return found(),
        }
    }
}

/// `POST /api/plugins?name=X.so`, body = the file (and, in
/// [`SIGNATURE_HEADER`], its detached signature): streamed (within
/// `admin.max.upload.bytes`) into a private copy and a unique hidden
/// temporary file in plugins/, checked, then renamed into place under the
/// name's write lock; the node's watcher loads it (a replace is a hot
/// upgrade). Answers once the node reports on this very file.
pub(in crate::admin) async fn install_plugin(
    State(state): State<AdminState>,
    Query(query): Query<HashMap<String, String>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let name = query.get("name").map(String::as_str).ok_or_else(|| {
        ApiError::bad_request("POST /api/plugins needs ?name=FILE.so, the name to publish the plugin under")
    })?;
    let name = plugin_name(name)?;
    let drain = drain_of(name, &query)?;
    let signature = signature_of(name, request.headers())?;
    let cap = state.shared.limits.upload_cap();
    let body = CappedBody::new(request.into_body(), cap, axum::http::Method::POST, "/api/plugins");
    let dir = crate::home::plugins_dir(&state.ctx().home);
    let manager = &state.ctx().plugins;
    let upload = upload::receive(name, &dir, manager, body).await?;
    let target = dir.join(name);
    let _writing = state.lock_target(&target).await;
    let sha256 = upload.sha256.clone();
    if let Some(record) = record_for(&state, name) {
        if record.state == PluginState::Active && record.sha256.as_deref() == Some(sha256.as_str()) {
            // The same content: a signature sent with it is judged on these
            // bytes now (one `require` refuses is not written), then kept for
            // the next load and shown in the record; none sent keeps the old.
            let Some(signature) = &signature else {
                let uploaded = Uploaded { note: None, outcome: UploadOutcome::Unchanged, plugin: Some(record) };
                return Ok(answer(&uploaded).into_response());
            };
            let bytes = upload.bytes().map_err(|e| {
                ApiError::internal(format!(
                    "could not read back the upload of {name}: {e}; plugins/{name} was not changed"
                ))
            })?;
            let label = format!("{} {}", upload.manifest.id, upload.manifest.version);
            manager.judge_signature(&target, Some(signature), &bytes, &sha256, &label).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the signature sent with {name} was refused and not written: {e}; plugins/{name} and its running plugin were not changed"),
                )
            })?;
            write_signature(&dir, name, Some(signature))?;
            let record =
                manager.refresh_signature(&target).await.and_then(|_| record_for(&state, name)).unwrap_or(record);
            let uploaded = Uploaded { note: None, outcome: UploadOutcome::Unchanged, plugin: Some(record) };
            return Ok(answer(&uploaded).into_response());
        }
    }
    // Not ready from here until this request ends: first for the drain
    // (a load balancer's checks see it and stop sending requests), then
    // while the node acts on the file (the readiness of the plugin
    // manager's strategy change and of clustering take over from there).
    let _draining = drain.map(|wait| {
        let what = format!("the upload of plugins/{name} ({} {})", upload.manifest.id, upload.manifest.version);
        state.shared.drains.begin(what, wait, state.ctx().cluster.event_log())
    });
    if let Some(wait) = drain {
        tracing::info!(file = %target.display(), "draining for {:.1} s before acting on the upload", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
    }
    // Beside the file before it is published, so its load reads it; a new
    // file without one leaves no signature of the old file behind. The old
    // signature is put back if the file cannot be published.
    let previous = crate::plugins::signature::read_signature_of(&target).ok().flatten();
    write_signature(&dir, name, signature.as_deref())?;
    let replacing = target.exists();
    let since_ms = now_ms();
    let (id, version) = (upload.manifest.id.clone(), upload.manifest.version.clone());
    if let Err(e) = upload.publish(name, &target, manager) {
        if let Err(restore) = write_signature(&dir, name, previous.as_deref()) {
            tracing::warn!(file = %target.display(), "could not put back the previous signature of {name}: {}", restore.body.error);
        }
        return Err(e);
    }
    tracing::info!(file = %target.display(), plugin = %id, version = %version, replacing, "plugin uploaded through the admin API");
    // This file's outcome: the end of a load of this content (or of one
    // that could not read it) since the rename.
    let ours = |sha: &Option<String>| sha.as_deref().is_none_or(|s| s == sha256);
    let report =
        wait_for(&state, || manager.last_load(&target).filter(|r| r.at_ms >= since_ms && ours(&r.sha256))).await;
    // The record once no load of the file is under way: another load of it
    // (the watcher's, set off by the rename) may have begun since the
    // report, and resets the record until it ends.
    let settled = |r: &PluginRecord| {
        !matches!(
            r.state,
            PluginState::Discovered | PluginState::Validated | PluginState::Loaded | PluginState::Stopping
        )
    };
    let record = match report {
        Some(_) => {
            wait_for(&state, || record_for(&state, name).filter(settled)).await.or_else(|| record_for(&state, name))
        }
        None => record_for(&state, name),
    };
    let (Some(report), Some(record)) = (report, record.clone()) else {
        let note = format!("{name} was written; the node has not reported on it yet: GET /api/plugins shows its state");
        let uploaded = Uploaded { note: Some(note), outcome: UploadOutcome::Written, plugin: record };
        return Ok((StatusCode::ACCEPTED, answer(&uploaded)).into_response());
    };
    let refusal = match report.end {
        LoadEnd::Done(LoadOutcome::Activated { .. } | LoadOutcome::Replaced { .. }) => None,
        // The same content under this name runs now. It did not when this
        // upload began (that answered above), so another load activated it
        // since: the one its signature, written first, set off when the
        // file's last load had been refused. This upload is what it ran.
        LoadEnd::Done(LoadOutcome::Unchanged { .. })
            if record.state == PluginState::Active && record.sha256.as_deref() == Some(sha256.as_str()) =>
        {
            None
        }
        // The same content under this name already runs: its record is kept.
        LoadEnd::Done(LoadOutcome::Unchanged { .. }) if record.state == PluginState::Active => {
            let uploaded = Uploaded { note: None, outcome: UploadOutcome::Unchanged, plugin: Some(record) };
            return Ok(answer(&uploaded).into_response());
        }
        // Its id and version run from another file.
        LoadEnd::Done(LoadOutcome::Unchanged { .. }) => {
            Some(Refusal { cause: RefusalCause::Rejected, kept_running: false })
        }
        LoadEnd::Refused { cause, kept_running } => Some(Refusal { cause, kept_running }),
    };
    let Some(refusal) = refusal else {
        let outcome = if replacing { UploadOutcome::Replaced } else { UploadOutcome::Installed };
        return Ok(answer(&Uploaded { note: None, outcome, plugin: Some(record) }).into_response());
    };
    let reason = record.reason.clone().unwrap_or_else(|| format!("it is {}", record.state));
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "plugin {name} was written to plugins/ but the node refused it: {reason}; upload a fixed build under the same name, or DELETE /api/plugins/{name}"
        ),
    )
    .refused(record, Some(refusal)))
}

/// `DELETE /api/plugins/X.so`: removes the file; the node stops the plugin.
pub(in crate::admin) async fn remove_plugin(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let name = plugin_name(&name)?;
    let target = crate::home::plugins_dir(&state.ctx().home).join(name);
    let _writing = state.lock_target(&target).await;
    let before = record_for(&state, name);
    let since_ms = now_ms();
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
    let _ = tokio::fs::remove_file(signature_path(&target)).await;
    let was_active = before.as_ref().is_some_and(|r| r.state == PluginState::Active);
    let record = if was_active {
        let stopped = |r: &PluginRecord| {
            r.changed_at_ms >= since_ms && matches!(r.state, PluginState::Retired | PluginState::Faulted)
        };
        wait_for(&state, || record_for(&state, name).filter(stopped)).await.or_else(|| record_for(&state, name))
    } else {
        before
    };
    Ok(answer(&Removed { plugin: record, removed: name.to_string() }))
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
            assert!(err.message().contains("use a plain file name"), "{}", err.message());
        }
    }
}
