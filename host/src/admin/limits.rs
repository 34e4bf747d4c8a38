//! How much a request may send: a body cap per route, checked against
//! `Content-Length` before a byte of body is read, and again while the body
//! streams (a chunked body has no length to check up front). The limits are
//! listed in docs/admin.md, "Limits".

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Frame, SizeHint};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;
use super::AdminState;
use crate::properties::Properties;

/// The cap of a route that takes no body (its body is never read).
pub(super) const NO_BODY_CAP: u64 = 4096;

/// How long a body may pause between two pieces before the request is cut.
pub(super) const BODY_IDLE: Duration = Duration::from_secs(30);

/// The body caps, fixed at start from `admin.max.*`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// `admin.max.upload.bytes`: `POST /api/plugins`.
    pub upload: u64,
    /// `admin.max.body.bytes`: every other route that takes a body.
    pub body: u64,
}

/// One route's cap and the setting that changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cap {
    pub bytes: u64,
    pub setting: Option<&'static str>,
}

impl Limits {
    pub(super) fn new(properties: &Properties) -> Self {
        Limits { upload: properties.admin_max_upload_bytes, body: properties.admin_max_body_bytes }
    }

    pub(super) fn upload_cap(&self) -> Cap {
        Cap { bytes: self.upload, setting: Some("admin.max.upload.bytes") }
    }

    pub(super) fn body_cap(&self) -> Cap {
        Cap { bytes: self.body, setting: Some("admin.max.body.bytes") }
    }

    /// The cap of `method path`: the one place that says which route takes
    /// which body.
    pub(super) fn cap_for(&self, method: &Method, path: &str) -> Cap {
        match (method.as_str(), path) {
            ("POST", "/api/plugins") => self.upload_cap(),
            ("PUT" | "PATCH", "/api/properties") | ("POST", "/login") => self.body_cap(),
            ("PUT", p) if p.starts_with("/api/caches/") => self.body_cap(),
            _ => Cap { bytes: NO_BODY_CAP, setting: None },
        }
    }
}

fn too_large(method: &Method, path: &str, cap: Cap, size: Option<u64>) -> ApiError {
    let size = size.map(|n| format!(" of {n} bytes")).unwrap_or_default();
    let what = match cap.setting {
        Some(setting) => format!(
            "this route takes at most {} bytes ({setting} on the node; it applies from the next start)",
            cap.bytes
        ),
        None => format!("this route takes no body (at most {} bytes are allowed)", cap.bytes),
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "{method} {} refused: the body{size} is too large; {what}; nothing was changed",
            crate::text::clip(path)
        ),
    )
}

/// The middleware: `413` when `Content-Length` is over the route's cap,
/// before any of the body is read.
pub(super) async fn check_length(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let cap = state.shared.limits.cap_for(request.method(), request.uri().path());
    let length =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if let Some(length) = length.filter(|n| *n > cap.bytes) {
        return too_large(request.method(), request.uri().path(), cap, Some(length)).into_response();
    }
    next.run(request).await
}

/// How long, and how much of a body, the node still reads (and drops)
/// after it answered a request without reading all of its body, so a
/// client that sends the whole body before it reads the answer (most HTTP
/// libraries) gets the answer instead of a broken pipe. A request refused
/// for its token, Host or Origin gets [`LINGER_REFUSED_BYTES`] only.
pub(super) const LINGER: Duration = Duration::from_secs(10);

/// What the node still reads of a body refused for its token, Host or Origin.
pub(super) const LINGER_REFUSED_BYTES: u64 = 64 * 1024;

/// Marks an answer given without checking the body's sender (no token, a
/// foreign Host or Origin): the node reads at most [`LINGER_REFUSED_BYTES`] more.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refused;

/// A body the handler reads while the [`linger`] middleware keeps a handle
/// on what is left of it.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Body>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // A std mutex: held only for one poll, never across an await.
        let mut body = clusterhost_plugin_api::sync::lock(&self.0);
        Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        clusterhost_plugin_api::sync::lock(&self.0).is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        clusterhost_plugin_api::sync::lock(&self.0).size_hint()
    }
}

/// The outermost middleware: after the answer, reads and drops what the
/// client still sends, up to the route's cap (a refused sender:
/// [`LINGER_REFUSED_BYTES`]) and for at most [`LINGER`]; then the
/// connection closes. Nothing of it is kept in memory.
pub(super) async fn linger(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let cap = state.shared.limits.cap_for(request.method(), request.uri().path());
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let shared = Arc::new(Mutex::new(body));
    let response = next.run(Request::from_parts(parts, Body::new(SharedBody(shared.clone())))).await;
    let limit = if response.extensions().get::<Refused>().is_some() { LINGER_REFUSED_BYTES } else { cap.bytes };
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut read = 0u64;
        while read <= limit {
            let next = poll_fn(|cx| {
                let mut body = clusterhost_plugin_api::sync::lock(&shared);
                Pin::new(&mut *body).poll_frame(cx)
            });
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
    });
    response
}

/// A request body read piece by piece, cut at its cap and when it stalls.
pub(super) struct CappedBody {
    body: Body,
    cap: Cap,
    seen: u64,
    method: Method,
    path: String,
}

impl CappedBody {
    pub(super) fn new(body: Body, cap: Cap, method: Method, path: &str) -> Self {
        CappedBody { body, cap, seen: 0, method, path: path.to_string() }
    }

    /// The next piece of data; `None` at the end. `413` once the body
    /// passes the cap, `400` when it breaks off or stalls for [`BODY_IDLE`].
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        loop {
            let frame = tokio::time::timeout(BODY_IDLE, poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)))
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "{} {} refused: the body stalled for {} s after {} bytes; nothing was changed",
                            self.method,
                            crate::text::clip(&self.path),
                            BODY_IDLE.as_secs(),
                            self.seen
                        ),
                    )
                })?;
            let frame = match frame {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "{} {} refused: the body could not be read after {} bytes ({e}); nothing was changed",
                            self.method,
                            crate::text::clip(&self.path),
                            self.seen
                        ),
                    ))
                }
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else { continue };
            self.seen += data.len() as u64;
            if self.seen > self.cap.bytes {
                return Err(too_large(&self.method, &self.path, self.cap, None));
            }
            return Ok(Some(data));
        }
    }

    /// The whole body, for the small ones.
    pub(super) async fn read_all(mut self) -> Result<Bytes, ApiError> {
        let mut all = Vec::new();
        while let Some(data) = self.next().await? {
            all.extend_from_slice(&data);
        }
        Ok(Bytes::from(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_has_its_cap() {
        let limits = Limits { upload: 100, body: 10 };
        assert_eq!(limits.cap_for(&Method::POST, "/api/plugins").bytes, 100);
        assert_eq!(limits.cap_for(&Method::PATCH, "/api/properties").bytes, 10);
        assert_eq!(limits.cap_for(&Method::PUT, "/api/caches/c/k").bytes, 10);
        assert_eq!(limits.cap_for(&Method::POST, "/api/cluster/disable"), Cap { bytes: NO_BODY_CAP, setting: None });
        assert_eq!(limits.cap_for(&Method::GET, "/api/plugins").bytes, NO_BODY_CAP);
    }

    #[tokio::test]
    async fn a_body_is_cut_at_its_cap() {
        let cap = Cap { bytes: 5, setting: Some("admin.max.body.bytes") };
        let body = CappedBody::new(Body::from("hello"), cap, Method::PUT, "/x");
        assert_eq!(body.read_all().await.unwrap(), "hello");
        let body = CappedBody::new(Body::from("hello!"), cap, Method::PUT, "/x");
        let err = body.read_all().await.unwrap_err();
        assert!(err.message().contains("at most 5 bytes (admin.max.body.bytes"), "{}", err.message());
    }
}
