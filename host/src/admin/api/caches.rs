//! `/api/caches/C/K`: one cache entry read, written and removed (string
//! keys and values), through the node's cluster caches.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{answer, ApiError, ApiResult};
use crate::admin::contract::{CacheRemoved, CacheValue};
use crate::admin::limits::CappedBody;
use crate::admin::AdminState;

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

pub(in crate::admin) async fn cache_get(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
) -> ApiResult<serde_json::Value> {
    let caches = state.ctx().cluster.caches().cache::<String, String>(&cache);
    match caches.get(&key).await.map_err(|e| cache_error("read", &cache, &key, e))? {
        Some(value) => Ok(answer(&CacheValue { cache, key, value })),
        None => Err(ApiError::not_found(no_key(&cache, &key))),
    }
}

pub(in crate::admin) async fn cache_put(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
    request: axum::extract::Request,
) -> ApiResult<serde_json::Value> {
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
    Ok(answer(&CacheValue { cache, key, value }))
}

pub(in crate::admin) async fn cache_remove(
    State(state): State<AdminState>,
    Path((cache, key)): Path<(String, String)>,
) -> ApiResult<serde_json::Value> {
    let caches = state.ctx().cluster.caches().cache::<String, String>(&cache);
    if caches.remove(&key).await.map_err(|e| cache_error("remove", &cache, &key, e))? {
        Ok(answer(&CacheRemoved { cache, key, removed: true }))
    } else {
        Err(ApiError::not_found(format!("{}; nothing was removed", no_key(&cache, &key))))
    }
}
