//! The checks in front of every route that do not depend on the token:
//! the `Host` header must name an address the API serves (a page from
//! another site that re-points its DNS name at this node, "DNS rebinding",
//! sends its own name), a write's `Origin` must be absent or this origin
//! (another site's page, or a page on another port), and every answer
//! carries headers that keep the console out of frames.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;
use super::AdminState;

/// The console's Content-Security-Policy: only its own script and style,
/// never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The names and addresses the admin API answers to in `Host`.
#[derive(Debug, Clone)]
pub(super) struct AllowedHosts {
    /// The address the API listens on: always a valid `Host`.
    bind: IpAddr,
    /// `admin.allowed.hosts`, lower-cased.
    names: Vec<String>,
}

impl AllowedHosts {
    pub(super) fn new(bind: IpAddr, names: &[String]) -> Self {
        AllowedHosts { bind, names: names.iter().map(|n| n.to_ascii_lowercase()).collect() }
    }

    /// Whether `host` (a `Host` header value, with or without a port) names this API.
    pub(super) fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        // The loopback names, when the API listens there.
        let on_loopback = self.bind.is_loopback() || self.bind.is_unspecified();
        match name.parse::<IpAddr>() {
            // An address cannot be re-pointed by DNS: it must be one the API listens on.
            Ok(ip) => ip == self.bind || self.bind.is_unspecified() || (on_loopback && ip.is_loopback()),
            Err(_) => (on_loopback && name == "localhost") || self.names.iter().any(|n| n == name),
        }
    }

    /// For messages: what `Host` may be.
    fn describe(&self) -> String {
        let mut list = vec![match self.bind {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }];
        if self.bind.is_loopback() || self.bind.is_unspecified() {
            list.extend(["127.0.0.1".into(), "[::1]".into(), "localhost".into()]);
        }
        if self.bind.is_unspecified() {
            list.push("any IP address of this machine".into());
        }
        list.extend(self.names.iter().cloned());
        list.dedup();
        list.join(", ")
    }
}

/// `host` without its port: `[::1]:9090` → `::1`, `a.example:80` → `a.example`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `origin` (an `Origin` header) is the origin of a page served
/// under `host`: same host and port (the scheme is whatever a TLS proxy in
/// front makes it).
pub(super) fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.trim_end_matches('/').eq_ignore_ascii_case(host.trim()))
}

/// The request's `Host` (or the authority of an absolute-form URI).
pub(super) fn host_of(request_headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    request_headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
}

/// The middleware: `421` for a foreign `Host`, `403` for a write from a
/// foreign `Origin`; adds the framing and content headers to every answer.
pub(super) async fn check_host_and_origin(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let mut response = match refusal(&state, &request) {
        Some(refused) => {
            let mut response = refused.into_response();
            response.extensions_mut().insert(super::limits::Refused);
            response
        }
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // `same-origin`, not `no-referrer`: with no-referrer a browser sends
    // `Origin: null` on the login form, which the Origin check refuses.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

fn refusal(state: &AdminState, request: &Request) -> Option<ApiError> {
    let allowed = &state.shared.allowed_hosts;
    let host = host_of(request.headers(), request.uri());
    let method = request.method();
    let path = crate::text::clip(request.uri().path());
    if let Some(host) = host.as_deref().filter(|h| !allowed.allows(h)) {
        return Some(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "{method} {path} refused: the Host header {} names none of the addresses this admin API answers to ({}); \
                 a page of another site may be trying to reach it through its own DNS name. If you reach the node under \
                 this name (a proxy, a DNS name), add it to admin.allowed.hosts in conf/clusterhost.properties and restart the node",
                crate::text::clip_debug(host),
                allowed.describe()
            ),
        ));
    }
    if is_write(method) {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not text)");
            if !same_origin(origin, host.as_deref()) {
                return Some(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{method} {path} refused: the request comes from a page of another origin (Origin {}); \
                         write from the node's own console, or from a client that sends no Origin header (curl, the CLI)",
                        crate::text::clip_debug(origin)
                    ),
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_addresses_are_matched_without_their_port() {
        let loopback = AllowedHosts::new("127.0.0.1".parse().unwrap(), &["Admin.Example".into()]);
        for ok in ["127.0.0.1:9090", "localhost", "LOCALHOST:1", "[::1]:9090", "admin.example", "admin.example.:80"] {
            assert!(loopback.allows(ok), "{ok}");
        }
        for bad in ["rebind.attacker.example", "10.0.0.1:9090", "localhost.attacker.example", ""] {
            assert!(!loopback.allows(bad), "{bad}");
        }
        let exposed = AllowedHosts::new("10.0.0.5".parse().unwrap(), &[]);
        assert!(exposed.allows("10.0.0.5:9090") && !exposed.allows("localhost") && !exposed.allows("10.0.0.6"));
        let any = AllowedHosts::new("0.0.0.0".parse().unwrap(), &[]);
        assert!(any.allows("192.168.1.9:9090") && any.allows("localhost") && !any.allows("node.lan"));
    }

    #[test]
    fn an_origin_is_the_same_only_with_the_same_host_and_port() {
        assert!(same_origin("http://127.0.0.1:9090", Some("127.0.0.1:9090")));
        assert!(same_origin("https://Admin.Example", Some("admin.example")));
        assert!(!same_origin("http://127.0.0.1:8080", Some("127.0.0.1:9090")));
        assert!(!same_origin("null", Some("127.0.0.1:9090")));
        assert!(!same_origin("http://127.0.0.1:9090", None));
    }
}
