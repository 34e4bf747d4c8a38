//! `/api/properties`: the properties file read, replaced (PUT, the whole
//! text) and patched (PATCH, some keys); a refused write changes nothing.

use axum::extract::State;
use serde_json::Value;

use super::{answer, ApiError, ApiResult};
use crate::admin::contract::{PropertiesPatched, PropertiesReplaced, PropertiesView};
use crate::admin::limits::CappedBody;
use crate::admin::AdminState;
use crate::properties::Properties;

async fn read_properties_text(file: &std::path::Path) -> Result<String, ApiError> {
    match tokio::fs::read(file).await {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(ApiError::internal(format!("could not read {}: {e}", file.display()))),
    }
}

pub(in crate::admin) async fn properties_view(state: &AdminState) -> Result<PropertiesView, ApiError> {
    let ctx = state.ctx();
    let text = read_properties_text(&ctx.properties_file).await?;
    Ok(PropertiesView {
        file: ctx.properties_file.clone(),
        effective: ctx.values.properties().effective(),
        pending_restart: ctx.values.pending(),
        text,
    })
}

pub(in crate::admin) async fn properties(State(state): State<AdminState>) -> ApiResult<PropertiesView> {
    properties_view(&state).await.map(axum::Json)
}

/// Writes `text` as the properties file: a unique temporary file in the
/// same directory, renamed over it. The caller holds the file's write lock.
async fn write_properties(file: &std::path::Path, text: &str) -> Result<(), ApiError> {
    let failed = |e: std::io::Error| {
        ApiError::internal(format!(
            "could not write {}: {e}; check the permissions and free space of its directory; the file was not changed",
            file.display()
        ))
    };
    let (file, text) = (file.to_path_buf(), text.to_string());
    tokio::task::spawn_blocking(move || crate::atomic_file::replace(&file, text.as_bytes(), true))
        .await
        .map_err(std::io::Error::other)
        .and_then(|written| written)
        .map_err(failed)
}

fn unknown_warnings(file: &std::path::Path, unknown: &[crate::properties::UnknownKey]) -> Vec<String> {
    unknown
        .iter()
        .map(|u| format!("{}:{}: unknown property {:?} ignored; check its spelling", file.display(), u.line, u.key))
        .collect()
}

/// The restart keys among `keys`, for the answer.
fn restart_keys<'k>(keys: impl IntoIterator<Item = &'k String>) -> Vec<String> {
    keys.into_iter().filter(|k| crate::properties::is_restart_key(k)).cloned().collect()
}

/// Why a new properties text loosens plugin trust compared with the old
/// one (a lower `plugins.signature`, a key id taken off
/// `plugins.signature.revoked`); `None` when it does not. The admin API may
/// only tighten it: the token that may upload a plugin must not be able to
/// switch off the check that the plugin is signed.
fn loosens_trust(old: &Properties, new: &Properties) -> Option<String> {
    let rank = |p: &Properties| match p.signature.as_str() {
        "off" => 0,
        "warn" => 1,
        _ => 2,
    };
    if rank(new) < rank(old) {
        return Some(format!(
            "this would lower plugins.signature from {} to {}",
            old.signature.as_str(),
            new.signature.as_str()
        ));
    }
    let dropped: Vec<&String> = old.signature_revoked.iter().filter(|id| !new.signature_revoked.contains(id)).collect();
    if !dropped.is_empty() {
        return Some(format!("this would take {dropped:?} off plugins.signature.revoked"));
    }
    None
}

/// The answer to a write that loosens plugin trust.
fn trust_refused(file: &std::path::Path, why: String) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        format!(
            "{why}: the admin API can only tighten plugin trust (raise plugins.signature, add revoked key ids); loosen it by editing {} on the node itself; the file was not changed",
            file.display()
        ),
    )
}

const APPLY_NOTE: &str =
    "the node applies the file within about a second; admin.*, node.* and cluster.port apply from the next start";

/// `PUT /api/properties`, body = the whole new file text (properties
/// syntax): it replaces the file. Refused (nothing changes) when it is not
/// UTF-8, does not parse, or is JSON (that is what PATCH takes). The answer
/// lists the keys the old file set and the new one does not (`reset`: back
/// to their defaults), so a replace never resets a setting silently.
pub(in crate::admin) async fn put_properties(
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
    let (new_properties, unknown) =
        Properties::parse(&file, text.as_bytes()).map_err(|e| not_changed(e.to_string()))?;
    let _writing = state.lock_target(&file).await;
    let old = read_properties_text(&file).await?;
    if let Ok((old_properties, _)) = Properties::parse(&file, old.as_bytes()) {
        if let Some(why) = loosens_trust(&old_properties, &new_properties) {
            return Err(trust_refused(&file, why));
        }
    }
    let old_keys = crate::properties::file_keys(old.as_bytes());
    let new_keys = crate::properties::file_keys(text.as_bytes());
    let reset: Vec<&String> = old_keys.difference(&new_keys).collect();
    write_properties(&file, text).await?;
    tracing::info!(file = %file.display(), ?reset, "properties written through the admin API");
    Ok(answer(&PropertiesReplaced {
        note: APPLY_NOTE.into(),
        reset: reset.into_iter().cloned().collect(),
        restart_keys: restart_keys(&new_keys),
        warnings: unknown_warnings(&file, &unknown),
        written: file,
    }))
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
pub(in crate::admin) async fn patch_properties(
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
    let (new_properties, unknown) =
        Properties::parse(&file, text.as_bytes()).map_err(|e| not_changed(e.to_string()))?;
    // The file in force as the node reads it (a broken old file: the defaults).
    let old_properties = Properties::parse(&file, old.as_bytes()).map(|(p, _)| p).unwrap_or_default();
    if let Some(why) = loosens_trust(&old_properties, &new_properties) {
        return Err(trust_refused(&file, why));
    }
    write_properties(&file, &text).await?;
    let set: Vec<String> = edits.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| k.clone()).collect();
    let removed: Vec<String> = edits.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k.clone()).collect();
    tracing::info!(file = %file.display(), ?set, ?removed, "properties patched through the admin API");
    Ok(answer(&PropertiesPatched {
        note: APPLY_NOTE.into(),
        removed,
        restart_keys: restart_keys(edits.iter().map(|(k, _)| k)),
        set,
        warnings: unknown_warnings(&file, &unknown),
        written: file,
    }))
}
