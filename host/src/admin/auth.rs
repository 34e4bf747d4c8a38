//! The admin token: every write must carry it, and off loopback every
//! request. Checked by one middleware in front of every route.
//!
//! The API takes it as `Authorization: Bearer TOKEN`. The console's login
//! form (`POST /login`) exchanges it for a session: a random id in an
//! `HttpOnly`, `SameSite=Strict` cookie, so no script (of this page or of
//! another on this host) can read either. A write counts the session only
//! when its `Origin` is the console's own, so a page of another site or
//! another port cannot make a browser write (no CSRF).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::api::ApiError;
use super::AdminState;

/// The console's session cookie: `clusterhost_session_PORT`. Cookies are
/// shared by every port of a host, so each node's has its own name (two
/// nodes on one machine keep their sessions apart).
pub(super) fn cookie_name(port: u16) -> String {
    format!("clusterhost_session_{port}")
}

/// How long a console session lasts.
pub(super) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The most console sessions a node keeps; the oldest goes first.
pub(super) const MAX_SESSIONS: usize = 64;

/// What the request may do, for the pages (set by [`require_token`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Viewer {
    /// It carries the token or a console session.
    pub signed_in: bool,
}

/// The console's sessions: id → the token it was opened with (hashed), so
/// a rotated token ends every session.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    open: Mutex<HashMap<String, (Instant, [u8; 32])>>,
}

impl Sessions {
    /// Opens a session for `token`; returns its id.
    pub(super) fn open(&self, token: &str) -> std::io::Result<String> {
        let id = super::token::random()?;
        let mut open = clusterhost_plugin_api::sync::lock(&self.open);
        open.retain(|_, (at, _)| at.elapsed() < SESSION_LIFETIME);
        while open.len() >= MAX_SESSIONS {
            let Some(oldest) = open.iter().min_by_key(|(_, (at, _))| *at).map(|(id, _)| id.clone()) else { break };
            open.remove(&oldest);
        }
        open.insert(id.clone(), (Instant::now(), digest(token)));
        Ok(id)
    }

    /// Whether `id` is an open session for the token now in force.
    fn valid(&self, id: &str, token: &str) -> bool {
        let open = clusterhost_plugin_api::sync::lock(&self.open);
        open.get(id).is_some_and(|(at, hash)| at.elapsed() < SESSION_LIFETIME && *hash == digest(token))
    }

    /// Ends session `id`.
    pub(super) fn close(&self, id: &str) {
        clusterhost_plugin_api::sync::lock(&self.open).remove(id);
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

/// The value of cookie `name` in the request, if any.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (key, value) = c.trim().split_once('=')?;
        (key == name).then(|| value.trim().to_string())
    })
}

/// Whether `a` equals `b`, in a time independent of where the first
/// difference is (a token compared this way leaks no prefix).
pub(super) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The routes anyone may use: the login form and the console's script and style.
fn is_open_route(method: &Method, path: &str) -> bool {
    matches!(
        (method.as_str(), path),
        ("GET" | "POST", "/login") | ("POST", "/logout") | ("GET", "/console.js" | "/console.css")
    )
}

/// The middleware: lets a request through, or answers 401 / 403 / 503.
/// It never reads the body: a refused request is answered at its headers
/// (limits::linger then drops at most 64 KiB more of it and closes).
pub(super) async fn require_token(State(state): State<AdminState>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let write = !matches!(method, Method::GET | Method::HEAD);
    let path = crate::text::clip(request.uri().path());
    let file = &state.shared.token_file;
    let expected = super::token::read(file).ok();
    let headers = request.headers();
    let presented = bearer(headers);
    // A session counts for a write only from the console's own page (the
    // Origin check in guard.rs has refused every other origin by now).
    let session_counts = !write || headers.contains_key(header::ORIGIN);
    let session = cookie(headers, &state.shared.cookie).filter(|_| session_counts);
    let by_token = matches!((&presented, &expected), (Some(t), Some(e)) if constant_time_eq(t, e));
    let by_session = matches!((&session, &expected), (Some(id), Some(e)) if state.shared.sessions.valid(id, e));
    request.extensions_mut().insert(Viewer { signed_in: by_token || by_session });
    if by_token || by_session || (!write && state.shared.loopback) || is_open_route(&method, request.uri().path()) {
        return next.run(request).await;
    }
    let is_page = !write && !path.starts_with("/api/") && path != "/metrics";
    let Some(_) = expected else {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{method} {path} refused: the admin token file {} is missing or empty on the node; write a token into it",
                file.display()
            ),
        )
        .into_response();
        response.extensions_mut().insert(super::limits::Refused);
        return response;
    };
    let refusal = match presented {
        Some(_) => (
            StatusCode::FORBIDDEN,
            format!(
                "{method} {path} refused: the admin token sent does not match the node's ({}); send the token from that file",
                file.display()
            ),
        ),
        None => (
            StatusCode::UNAUTHORIZED,
            format!(
                "{method} {path} needs the admin token: send `Authorization: Bearer TOKEN` with the token from {} (CLI: --token-file), or log in on the console's /login page",
                file.display()
            ),
        ),
    };
    let mut response = if is_page {
        (refusal.0, Html(super::console::login_page(&refusal.1, request.uri().path()))).into_response()
    } else {
        ApiError::new(refusal.0, refusal.1).into_response()
    };
    response.extensions_mut().insert(super::limits::Refused);
    if refusal.0 == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_and_length() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }

    #[test]
    fn a_session_ends_with_a_new_token_and_sessions_are_bounded() {
        let sessions = Sessions::default();
        let id = sessions.open("t1").unwrap();
        assert!(sessions.valid(&id, "t1"));
        assert!(!sessions.valid(&id, "t2"), "a rotated token ends the session");
        assert!(!sessions.valid("forged", "t1"));
        for _ in 0..MAX_SESSIONS {
            sessions.open("t1").unwrap();
        }
        assert!(!sessions.valid(&id, "t1"), "the oldest session made room");
        sessions.close(&id);
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; clusterhost_session_9090=s3cret ; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, &cookie_name(9090)).as_deref(), Some("s3cret"));
        assert_eq!(cookie(&headers, &cookie_name(9091)), None);
    }
}
