//! The admin token: every write must carry it, and off loopback every
//! request. Checked by one middleware in front of every route.
//!
//! The API takes it as `Authorization: Bearer TOKEN`. The console's pages
//! (reads only) may also send it as the `clusterhost_admin_token` cookie, so
//! a browser can open them off loopback; a write never counts the cookie,
//! so another site cannot make a browser write (no CSRF).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::api::ApiError;
use super::{AdminError, AdminState};

/// The cookie the console sets from its token field.
pub(super) const COOKIE: &str = "clusterhost_admin_token";

/// Makes sure a token exists: off loopback the file must already hold one;
/// on loopback a missing file is created with a random token (mode 0600).
pub(super) fn prepare_token(file: &Path, bind: IpAddr) -> Result<(), AdminError> {
    if read_token(file).is_some() {
        return Ok(());
    }
    if !bind.is_loopback() {
        return Err(AdminError::NoTokenOffLoopback { bind, file: file.to_owned() });
    }
    if file.exists() {
        // Present but empty: leave the operator's file alone; writes are
        // refused with a message naming it until it holds a token.
        tracing::warn!(file = %file.display(), "the admin token file is empty; writes are refused until it holds a token");
        return Ok(());
    }
    let token_error = |source| AdminError::TokenFile { file: file.to_owned(), source };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(token_error)?;
    }
    let token = random_token().map_err(token_error)?;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file) {
        Ok(mut f) => {
            f.write_all(format!("{token}\n").as_bytes()).map_err(token_error)?;
            tracing::info!(file = %file.display(), "wrote a new random admin token");
            Ok(())
        }
        // Another node sharing this conf/ directory made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(token_error(e)),
    }
}

fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token in `file` (first line, trimmed), if it holds one.
pub(super) fn read_token(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    (!token.is_empty()).then_some(token)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE).then(|| value.trim().to_string())
    })
}

/// Compares in time independent of where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: lets a request through, or answers 401 / 403 / 503.
pub(super) async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let write = !matches!(*request.method(), Method::GET | Method::HEAD);
    if !write && state.shared.loopback {
        return next.run(request).await;
    }
    let file = &state.shared.token_file;
    let path = request.uri().path().to_string();
    let is_page = !write && !path.starts_with("/api/") && path != "/metrics";
    let presented = bearer(request.headers()).or_else(|| if write { None } else { cookie(request.headers()) });
    let Some(expected) = read_token(file) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} {path} refused: the admin token file {} is missing or empty on the node; write a token into it",
                request.method(),
                file.display()
            ),
        )
        .into_response();
    };
    let refusal = match presented {
        Some(token) if same(&token, &expected) => return next.run(request).await,
        Some(_) => (
            StatusCode::FORBIDDEN,
            format!(
                "{} {path} refused: the admin token sent does not match the node's ({}); send the token from that file",
                request.method(),
                file.display()
            ),
        ),
        None => (
            StatusCode::UNAUTHORIZED,
            format!(
                "{} {path} needs the admin token: send `Authorization: Bearer TOKEN` with the token from {} (CLI: --token-file)",
                request.method(),
                file.display()
            ),
        ),
    };
    // Read what the client is still sending (an upload), so it gets this
    // answer instead of a broken pipe.
    let _ = axum::body::to_bytes(request.into_body(), super::MAX_PLUGIN_BYTES).await;
    if is_page {
        return (refusal.0, Html(super::console::login_page(&refusal.1))).into_response();
    }
    let mut response = ApiError::new(refusal.0, refusal.1).into_response();
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
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }

    #[test]
    fn a_loopback_node_creates_a_token_and_an_exposed_one_refuses_without() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conf/admin.token");
        let err = prepare_token(&file, "0.0.0.0".parse().unwrap()).unwrap_err().to_string();
        assert!(err.contains("not a loopback address") && err.contains("admin.token"), "{err}");
        prepare_token(&file, "127.0.0.1".parse().unwrap()).unwrap();
        let token = read_token(&file).unwrap();
        assert_eq!(token.len(), 48);
        prepare_token(&file, "0.0.0.0".parse().unwrap()).unwrap();
        assert_eq!(read_token(&file).unwrap(), token, "an existing token is kept");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; clusterhost_admin_token=s3cret ; b=2".parse().unwrap());
        assert_eq!(cookie(&headers).as_deref(), Some("s3cret"));
    }
}
