//! `/api/caches/C/K`: one cache entry read, written and removed (string
//! keys and values), through the node's cluster caches; a write or remove
//! may carry a condition (`?if-absent`, `?if-version=N`), applied atomically.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use clusterhost_plugin_api::cluster::{Capabilities, CasOutcome, Expected};

use super::{answer, ApiError, ApiResult};
use crate::admin::contract::{CacheEntries, CacheEntryView, CacheRemoved, CacheValue};
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
    /// `?ttl-ms=N` (writes only): not a condition, the entry's own time to live.
    Ttl(u64),
}

/// The longest time to live a write may ask (100 years, in ms).
const MAX_TTL_MS: u64 = 100 * 365 * 86_400_000;

/// The longest query string read (a condition is a few bytes).
const MAX_QUERY: usize = 256;

fn condition(query: Option<&str>, absent_allowed: bool) -> Result<Condition, ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else { return Ok(Condition::None) };
    let refused = |why: &str| {
        ApiError::bad_request(format!(
            "query {}: {why}; a cache write takes ?if-absent, ?if-version=N or ?ttl-ms=N (a remove only ?if-version=N)",
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
        ("ttl-ms", n) if absent_allowed => match n.parse::<u64>() {
            Ok(ms) if (1..=MAX_TTL_MS).contains(&ms) => Ok(Condition::Ttl(ms)),
            _ => Err(refused(&format!("the time to live is not a whole number of ms from 1 to {MAX_TTL_MS}"))),
        },
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
        Condition::Ttl(ms) => {
            let ttl = std::time::Duration::from_millis(ms);
            raw.put_ttl(k, v, ttl).await.map_err(|e| cache_error("write", &cache, &key, e))?;
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

// ---- GET /api/caches/C: the first keys, with their expiry times ----

/// Keys a listing shows unless `?limit=N` asks otherwise.
pub const DEFAULT_LISTED: usize = 100;
/// The most keys one listing shows.
pub const MAX_LISTED: usize = 1000;
/// Characters of a text value a listing shows.
const VALUE_SHOWN: usize = 256;

/// What a listing asks: `?limit=N`, `?values`.
pub(in crate::admin) fn listing_options(query: Option<&str>) -> Result<(usize, bool), ApiError> {
    let query = query.unwrap_or_default();
    let refused = |why: &str| {
        ApiError::bad_request(format!(
            "query {}: {why}; a cache listing takes ?limit=N (1 to {MAX_LISTED}) and ?values",
            crate::text::clip_debug(query)
        ))
    };
    if query.len() > MAX_QUERY {
        return Err(refused("too long"));
    }
    let (mut limit, mut values) = (DEFAULT_LISTED, false);
    for part in query.split('&').filter(|p| !p.is_empty()) {
        match part.split_once('=').unwrap_or((part, "")) {
            ("limit", n) => match n.parse::<usize>() {
                Ok(n) if (1..=MAX_LISTED).contains(&n) => limit = n,
                _ => return Err(refused("the limit is not a whole number from 1 to 1000")),
            },
            ("values", "" | "true") => values = true,
            ("values", "false") => values = false,
            _ => return Err(refused("unknown option")),
        }
    }
    Ok((limit, values))
}

/// A key or value as text when it is a string as the typed caches store
/// it (postcard), else `None`.
fn as_text(bytes: &[u8]) -> Option<String> {
    postcard::from_bytes::<String>(bytes).ok()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The first `limit` keys of `cache` (text keys in order, then the
/// others by their bytes), with when each
/// expires; their values too when `values` (a read of each).
pub(in crate::admin) async fn list_entries(
    state: &AdminState,
    cache: &str,
    limit: usize,
    values: bool,
) -> Result<CacheEntries, ApiError> {
    let raw = state.ctx().cluster.caches().raw(cache);
    let failed = |e: crate::cluster::ClusterError| {
        let status = match e {
            crate::cluster::ClusterError::Protected { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(
            status,
            format!("could not list cache {}: {}", crate::text::clip_debug(cache), crate::text::clip(&e.to_string())),
        )
    };
    let keys = raw.keys().await.map_err(failed)?;
    let total = keys.len() as u64;
    // Text keys in their text's order, then the others in their bytes' order.
    let mut shown: Vec<(Option<String>, Vec<u8>)> = keys.into_iter().map(|k| (as_text(&k), k)).collect();
    shown.sort_unstable_by(|a, b| (a.0.is_none(), &a.0, &a.1).cmp(&(b.0.is_none(), &b.0, &b.1)));
    shown.truncate(limit);
    let (texts, keys): (Vec<Option<String>>, Vec<Vec<u8>>) = shown.into_iter().unzip();
    let (expiries, times_unknown) = match raw.expiries(keys.clone()).await {
        Ok(at) => (at, None),
        Err(e @ crate::cluster::ClusterError::Lacks { .. }) => (vec![None; keys.len()], Some(e.to_string())),
        Err(e) => return Err(failed(e)),
    };
    let read = match values {
        true => raw.get_all(keys.clone()).await.map_err(failed)?,
        false => vec![None; keys.len()],
    };
    let now = clusterhost_plugin_api::cluster::now_ms();
    let entries = keys
        .iter()
        .zip(texts)
        .zip(expiries)
        .zip(read)
        .map(|(((key, text), at), value)| {
            let (shown, binary) = match text {
                Some(text) => (text, false),
                None => (hex(key), true),
            };
            CacheEntryView {
                key: shown,
                binary,
                expires_at_ms: at,
                time_left_ms: at.map(|at| at.saturating_sub(now)),
                bytes: value.as_ref().map(|v| (key.len() + v.len()) as u64),
                value: value.as_deref().and_then(as_text).map(|v| crate::text::clip_at(&v, VALUE_SHOWN)),
            }
        })
        .collect();
    Ok(CacheEntries { cache: cache.to_string(), total, entries, values, times_unknown })
}

pub(in crate::admin) async fn cache_list(
    State(state): State<AdminState>,
    Path(cache): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<serde_json::Value> {
    let (limit, values) = listing_options(query.as_deref())?;
    Ok(answer(&list_entries(&state, &cache, limit, values).await?))
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

// ---- GET /api/caches/C/events: the cache's entry events, streamed ----

/// Entry event streams one node serves at once; one more is answered 503.
pub const MAX_ENTRY_STREAMS: usize = 16;

/// A stream's listener queue: a reader this many events behind is dropped.
pub const ENTRY_STREAM_QUEUE: usize = 256;

/// What a stream asks for: `?local` (this node's changes only),
/// `?values=false` (no values).
fn stream_options(query: Option<&str>) -> Result<crate::cluster::ListenOptions, ApiError> {
    use crate::cluster::ListenOptions;
    let mut options = ListenOptions::clustered().queue(ENTRY_STREAM_QUEUE);
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY {
        return Err(ApiError::bad_request("the query is too long; an event stream takes ?local and ?values=false"));
    }
    for part in query.split('&').filter(|p| !p.is_empty()) {
        match part.split_once('=').unwrap_or((part, "")) {
            ("local", "" | "true") => options.scope = crate::cluster::ListenScope::Local,
            ("local", "false") => {}
            ("values", "false") => options.with_value = false,
            ("values", "" | "true") => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "query {}: unknown; an event stream takes ?local (this node's changes only) and ?values=false",
                    crate::text::clip_debug(part)
                )))
            }
        }
    }
    Ok(options)
}

/// Bytes as the API shows them: the postcard string the API wrote, or
/// (other bytes) lossy UTF-8, flagged raw.
fn api_text(bytes: &[u8]) -> (String, bool) {
    match postcard::from_bytes::<String>(bytes) {
        Ok(text) => (text, false),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
    }
}

fn event_view(event: crate::cluster::EntryEvent) -> crate::admin::contract::CacheEventView {
    let (key, raw_key) = api_text(&event.key);
    let value = event.value.as_deref().map(api_text);
    let raw = raw_key || value.as_ref().is_some_and(|(_, raw)| *raw);
    crate::admin::contract::CacheEventView {
        cache: event.cache,
        kind: event.kind.name().to_string(),
        key,
        value: value.map(|(text, _)| text),
        version: event.version,
        origin: event.origin,
        raw,
    }
}

/// `GET /api/caches/C/events`: with `Accept: text/event-stream`, the
/// cache's entry events as server-sent events (`event:` the kind, `data:`
/// a [`CacheEventView`](crate::admin::contract::CacheEventView)) and
/// keep-alive comments, until the reader falls [`ENTRY_STREAM_QUEUE`]
/// events behind (a `dropped` event, then the end) or the node stops (a
/// `closing` event). At most [`MAX_ENTRY_STREAMS`] at once (503 past it).
/// Without that Accept it reads the key named `events`.
pub(in crate::admin) async fn cache_events(
    State(state): State<AdminState>,
    Path(cache): Path<String>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if !crate::admin::events::wants_stream(&headers) {
        let read = cache_get(State(state), Path((cache, "events".to_string()))).await?;
        return Ok(read.into_response());
    }
    let options = stream_options(query.as_deref())?;
    let (permit, closing) = state.shared.entry_streams.admit(|max| {
        format!(
            "{max} cache event streams are open on this node, the most it serves at once; close one (a `cache watch`) and try again"
        )
    })?;
    let listener = state
        .ctx()
        .cluster
        .caches()
        .raw(&cache)
        .listen(options)
        .await
        .map_err(|e| cache_error("watch", &cache, "(every key)", e))?;
    Ok(crate::admin::events::sse_response(entry_stream(listener, closing, permit)))
}

/// A key named `events` is written at the stream's path: `PUT /api/caches/C/events`.
pub(in crate::admin) async fn events_key_put(
    state: State<AdminState>,
    Path(cache): Path<String>,
    query: RawQuery,
    request: axum::extract::Request,
) -> ApiResult<serde_json::Value> {
    cache_put(state, Path((cache, "events".to_string())), query, request).await
}

/// A key named `events` is removed at the stream's path: `DELETE /api/caches/C/events`.
pub(in crate::admin) async fn events_key_remove(
    state: State<AdminState>,
    Path(cache): Path<String>,
    query: RawQuery,
) -> ApiResult<serde_json::Value> {
    cache_remove(state, Path((cache, "events".to_string())), query).await
}

/// Where a stream is.
struct Feed {
    listener: crate::cluster::EntryListener,
    closing: tokio::sync::watch::Receiver<bool>,
    done: bool,
    /// Held while the stream lives: its slot among [`MAX_ENTRY_STREAMS`].
    _permit: tokio::sync::OwnedSemaphorePermit,
}

fn end_event(kind: &str, missed: u64, reason: String) -> axum::response::sse::Event {
    let end = crate::admin::contract::CacheStreamEnd { missed, reason };
    axum::response::sse::Event::default().event(kind).data(serde_json::to_string(&end).unwrap_or_default())
}

/// The listener's events as SSE, until it lags (`dropped`, then the end)
/// or `closing` turns true (`closing`, then the end).
fn entry_stream(
    listener: crate::cluster::EntryListener,
    closing: tokio::sync::watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>> + Send + 'static {
    use crate::cluster::Delivery;
    let feed = Feed { listener, closing, done: false, _permit: permit };
    futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            if feed.done {
                return None;
            }
            if *feed.closing.borrow() {
                feed.done = true;
                return Some((Ok(end_event("closing", 0, "the node is stopping".into())), feed));
            }
            tokio::select! {
                delivery = feed.listener.recv() => match delivery {
                    Some(Delivery::Event(event)) => {
                        let kind = event.kind.name();
                        let data = serde_json::to_string(&event_view(event)).unwrap_or_default();
                        return Some((Ok(axum::response::sse::Event::default().event(kind).data(data)), feed));
                    }
                    Some(Delivery::Lagged { missed }) => {
                        feed.done = true;
                        tracing::info!(cache = %feed.listener.cache(), "a cache event stream reader was dropped: it fell {missed} event(s) behind");
                        let reason = format!(
                            "this reader fell behind (more than {ENTRY_STREAM_QUEUE} events unread; {missed} missed) and was dropped; watch again to resume from now"
                        );
                        return Some((Ok(end_event("dropped", missed, reason)), feed));
                    }
                    None => return None,
                },
                changed = feed.closing.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::StreamExt;

    use super::*;
    use crate::cluster::{ClusterConfig, ClusterManager, ListenOptions};

    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_a_dropped_event_and_the_end() {
        let (manager, _faults) = ClusterManager::start("a", ClusterConfig::default(), false, false);
        let cache = manager.caches().raw("c");
        let listener = cache.listen(ListenOptions::clustered().queue(2)).await.expect("a listener");
        let (_stop, closing) = tokio::sync::watch::channel(false);
        let permit = Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().expect("a permit");
        let stream = entry_stream(listener, closing, permit);
        for i in 0..5u32 {
            cache
                .put(postcard::to_allocvec("k").unwrap(), postcard::to_allocvec(&i.to_string()).unwrap())
                .await
                .unwrap();
        }
        // An Event's Debug form is its wire text (quotes escaped).
        let frames: Vec<String> = stream.map(|e| format!("{:?}", e.unwrap()).replace("\\\"", "\"")).collect().await;
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert!(frames[0].contains("event: added") && frames[0].contains(r#""value":"0""#), "{frames:?}");
        assert!(frames[1].contains("event: updated") && frames[1].contains(r#""origin":"a""#), "{frames:?}");
        assert!(frames[2].contains("event: dropped") && frames[2].contains(r#""missed":3"#), "{frames:?}");
    }

    #[tokio::test]
    async fn a_stream_ends_with_closing_when_the_server_stops() {
        let (manager, _faults) = ClusterManager::start("a", ClusterConfig::default(), false, false);
        let listener = manager.caches().raw("c").listen(ListenOptions::local()).await.expect("a listener");
        let (stop, closing) = tokio::sync::watch::channel(false);
        let permit = Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().expect("a permit");
        let mut stream = Box::pin(entry_stream(listener, closing, permit));
        stop.send(true).unwrap();
        let last = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(last.contains("event: closing"), "{last}");
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn stream_options_take_local_and_values_and_refuse_the_rest() {
        let options = stream_options(Some("local&values=false")).expect("valid");
        assert_eq!((options.scope, options.with_value), (crate::cluster::ListenScope::Local, false));
        assert_eq!(stream_options(None).expect("valid").scope, crate::cluster::ListenScope::Clustered);
        let refused = stream_options(Some("since=3")).expect_err("refused");
        assert!(refused.message().contains("?local"), "{}", refused.message());
    }
}
