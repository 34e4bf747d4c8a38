//! The JSON endpoints, one file per group of routes. Every error is
//! `{"error": "..."}` with a 4xx or 5xx status, saying what happened, to
//! what, and what to do; a refused request changes nothing.

mod caches;
mod cluster;
mod plugins;
mod properties;
mod upload;

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

pub(super) use caches::{
    cache_events, cache_get, cache_list, cache_put, cache_remove, events_key_put, events_key_remove, list_entries,
    listing_options, MAX_ENTRY_STREAMS,
};
pub(super) use cluster::{cluster, cluster_view, disable, enable, node, node_detail};
pub(super) use plugins::{install_plugin, plugins, remove_plugin};
pub(super) use properties::{patch_properties, properties, properties_view, put_properties};

use super::contract::{ErrorBody, Refusal, UploadOutcome};
use crate::plugins::registry::PluginRecord;

/// An error answer: a status and its [`ErrorBody`].
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    /// Boxed: an error travels in every handler's `Result`.
    body: Box<ErrorBody>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let body = ErrorBody { error: message.into(), outcome: None, plugin: None, refusal: None };
        ApiError { status, body: Box::new(body) }
    }

    pub(super) fn message(&self) -> &str {
        &self.body.error
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

    /// A refused upload: its record and why.
    fn refused(mut self, record: PluginRecord, refusal: Option<Refusal>) -> Self {
        self.body.outcome = Some(UploadOutcome::Refused);
        self.body.plugin = Some(record);
        self.body.refusal = refusal;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), "admin request failed: {}", self.body.error);
        } else {
            tracing::info!(status = self.status.as_u16(), "admin request refused: {}", self.body.error);
        }
        (self.status, answer(&*self.body)).into_response()
    }
}

/// `body` as its JSON value. Answers that are maps of names go out this
/// way, as they always have: serde_json writes a value's object keys
/// sorted, and a client comparing bytes sees the same order as before.
fn answer<T: Serialize>(body: &T) -> Json<Value> {
    Json(serde_json::to_value(body).unwrap_or(Value::Null))
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Any path no route serves.
pub(super) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "nothing is served at {}; the API is under /api/ (see docs/admin.md), the console at /",
        crate::text::clip(uri.path())
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::admin::contract::{CacheValue, PropertiesPatched, Removed, Uploaded};
    use crate::plugins::registry::PluginState;

    fn record() -> PluginRecord {
        PluginRecord {
            file: PathBuf::from("/home/plugins/hello.so"),
            id: Some("hello".into()),
            version: Some(semver::Version::new(0, 1, 0)),
            state: PluginState::Active,
            reason: None,
            sha256: Some("ab".into()),
            changed_at_ms: 7,
            signature: None,
        }
    }

    /// The bytes `answer` writes, against those the `json!` maps it
    /// replaced wrote.
    fn same_bytes<T: Serialize>(typed: &T, before: Value) {
        assert_eq!(serde_json::to_string(&answer(typed).0).unwrap(), serde_json::to_string(&before).unwrap());
    }

    #[test]
    fn typed_answers_write_the_bytes_the_json_maps_wrote() {
        let note = "hello.so was written".to_string();
        let written = Uploaded { note: Some(note.clone()), outcome: UploadOutcome::Written, plugin: Some(record()) };
        same_bytes(&written, json!({ "outcome": "written", "note": note, "plugin": record() }));
        let installed = Uploaded { note: None, outcome: UploadOutcome::Installed, plugin: Some(record()) };
        same_bytes(&installed, json!({ "outcome": "installed", "plugin": record() }));
        same_bytes(
            &Removed { plugin: None, removed: "hello.so".into() },
            json!({ "removed": "hello.so", "plugin": Option::<PluginRecord>::None }),
        );
        same_bytes(
            &CacheValue { cache: "c".into(), key: "k".into(), value: "v".into(), version: None },
            json!({ "cache": "c", "key": "k", "value": "v" }),
        );
        let patched = PropertiesPatched {
            note: "n".into(),
            removed: vec![],
            restart_keys: vec!["admin.port".into()],
            set: vec!["admin.port".into()],
            warnings: vec![],
            written: PathBuf::from("conf/clusterhost.properties"),
        };
        same_bytes(
            &patched,
            json!({
                "written": "conf/clusterhost.properties",
                "set": ["admin.port"],
                "removed": Vec::<String>::new(),
                "warnings": Vec::<String>::new(),
                "restart_keys": ["admin.port"],
                "note": "n",
            }),
        );
        let refused = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no").refused(record(), None);
        same_bytes(&*refused.body, json!({ "error": "no", "outcome": "refused", "plugin": record() }));
        same_bytes(&*ApiError::bad_request("bad").body, json!({ "error": "bad" }));
    }
}
