//! `/api/caches/C/K`: one cache entry read, written and removed (string
//! keys and values), through the node's cluster caches; a write or remove
//! may carry a condition (`?if-absent`, `?if-version=N`), applied atomically.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use clusterhost_plugin_api::cluster::{Capabilities, CasOutcome, Expected};

use super::{answer, ApiError, ApiResult};
use crate::admin::contract::{CacheRemoved, CacheValue};
use crate::admin::limits::CappedBody;
use crate::admin::AdminState;

fn cache_error(action: &str, cache: &str, key: &str, e: crate::cluster::ClusterError) -> ApiError {
    let status = match e {
        crate::cluster::ClusterError::Codec { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        crate::cluster::ClusterError::Lacks { .. } => StatusCode::NOT_IMPLEMENTED,
        crate::cluster::ClusterError::Protected { .. } => StatusCode::SERVICE_UNAVAILABLE,
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

/// A write's or remove's condition, from the query string.
enum Condition {
    None,
    /// `?if-absent`: only if the key holds nothing.
    Absent,
    /// `?if-version=N`: only if the entry carries version N.
    Version(u64),
}

/// The longest query string read (a condition is a few bytes).
const MAX_QUERY: usize = 256;

fn condition(query: Option<&str>, absent_allowed: bool) -> Result<Condition, ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else { return Ok(Condition::None) };
    let refused = |why: &str| {
        ApiError::bad_request(format!(
            "query {}: {why}; a cache write takes ?if-absent or ?if-version=N (a remove only ?if-version=N)",
            crate::text::clip_debug(query)
        ))
    };
    if query.len() > MAX_QUERY {
        return Err(refused("too long"));
    }
    match query.split_once('=').unwrap_or((query, "")) {
        ("if-absent", "" | "true") if absent_allowed => Ok(Condition::Absent),
        ("if-version", n) => {
            n.parse().map(Condition::Version).map_err(|_| refused("the version is not a whole number"))
        }
        _ => Err(refused("unknown condition")),
    }
}

/// The 409 of a condition that did not hold: what is there now.
fn conflict(cache: &str, key: &str, outcome: &CasOutcome) -> ApiError {
    let now = match &outcome.current {
        Some(current) => format!("it holds version {}", current.version),
        None => "it holds nothing".to_string(),
    };
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "key {} of cache {} is not as the condition expects ({now}); nothing was changed: read it again and retry",
            crate::text::clip_debug(key),
            crate::text::clip_debug(cache)
        ),
    )
}

pub(in crate::admin) async fn cache_get(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
) -> ApiResult<serde_json::Value> {
    let caches = state.ctx().cluster.caches();
    let typed = caches.cache::<String, String>(&cache);
    let read = if caches.strategy_capabilities().await.contains(Capabilities::ATOMIC) {
        typed.get_versioned(&key).await.map(|found| found.map(|(value, version)| (value, Some(version))))
    } else {
        typed.get(&key).await.map(|found| found.map(|value| (value, None)))
    };
    match read.map_err(|e| cache_error("read", &cache, &key, e))? {
        Some((value, version)) => Ok(answer(&CacheValue { cache, key, value, version })),
        None => Err(ApiError::not_found(no_key(&cache, &key))),
    }
}

pub(in crate::admin) async fn cache_put(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: axum::extract::Request,
) -> ApiResult<serde_json::Value> {
    let condition = condition(query.as_deref(), true)?;
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
    let raw = state.ctx().cluster.caches().raw(&cache);
    let (k, v) = (postcard_string(&key), postcard_string(&value));
    let outcome = match condition {
        Condition::None => {
            raw.put(k, v).await.map_err(|e| cache_error("write", &cache, &key, e))?;
            return Ok(answer(&CacheValue { cache, key, value, version: None }));
        }
        Condition::Absent => raw.put_if_absent(k, v).await,
        Condition::Version(version) => raw.replace_if(k, Expected::Version(version), v).await,
    }
    .map_err(|e| cache_error("write", &cache, &key, e))?;
    if !outcome.applied {
        return Err(conflict(&cache, &key, &outcome));
    }
    let version = outcome.current.map(|c| c.version);
    Ok(answer(&CacheValue { cache, key, value, version }))
}

/// A string as the typed `Cache<String, String>` stores it (postcard), so
/// the raw conditional calls and the typed reads agree.
fn postcard_string(s: &str) -> Vec<u8> {
    postcard::to_allocvec(s).expect("a string always encodes")
}

pub(in crate::admin) async fn cache_remove(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult<serde_json::Value> {
    if let Condition::Version(version) = condition(query.as_deref(), false)? {
        let raw = state.ctx().cluster.caches().raw(&cache);
        let outcome = raw
            .remove_if(postcard_string(&key), Expected::Version(version))
            .await
            .map_err(|e| cache_error("remove", &cache, &key, e))?;
        if !outcome.applied {
            return Err(conflict(&cache, &key, &outcome));
        }
        return Ok(answer(&CacheRemoved { cache, key, removed: true }));
    }
    let caches = state.ctx().cluster.caches().cache::<String, String>(&cache);
    if caches.remove(&key).await.map_err(|e| cache_error("remove", &cache, &key, e))? {
        Ok(answer(&CacheRemoved { cache, key, removed: true }))
    } else {
        Err(ApiError::not_found(format!("{}; nothing was removed", no_key(&cache, &key))))
    }
}
