//! A small blocking client of the admin API, for the `clusterhost` CLI:
//! each call answers the raw JSON ([`Answer`]) or its [`contract`](super::contract) type.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

pub use crate::plugins::signature::SIGNATURE_HEADER;

use super::contract::{ClusterView, ErrorBody, PropertiesReplaced, PropertiesView, Refusal};
use crate::plugins::registry::PluginRecord;

/// The admin API's default address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090";

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not reach the admin API at {url}: {detail}; is the node running? Pass --admin URL or set CLUSTERHOST_ADMIN")]
    Unreachable { url: String, detail: String },
    #[error("{message} (HTTP {status} from {method} {url})")]
    Api { method: &'static str, url: String, status: u16, message: String, body: Value },
    #[error("the admin API answered {method} {url} with HTTP {status} and a body that is not JSON: {detail}; is {url} a clusterhost node?")]
    NotJson { method: &'static str, url: String, status: u16, detail: String },
    #[error("the admin API at {url} answered with JSON this client cannot read ({detail}); is it a clusterhost node of the same version?")]
    Unreadable { url: String, detail: String },
    #[error("could not read the admin token file {}: {detail}; pass --token-file with the node's token file (admin.token.file, default conf/admin.token in its home)", file.display())]
    TokenFile { file: PathBuf, detail: String },
    #[error("the token map {} (--tokens) is not usable: {detail}; each line is `URL TOKEN`: a member's admin URL, a space, its token", file.display())]
    TokenMap { file: PathBuf, detail: String },
}

impl ClientError {
    /// Why the node refused an upload, when this is that refusal.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            ClientError::Api { body, .. } => ErrorBody::deserialize(body).ok()?.refusal,
            _ => None,
        }
    }
}

/// A successful answer: the HTTP status (200, or 202 for work still in
/// progress) and the JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body, as the node wrote it.
    pub body: Value,
    /// The URL asked.
    pub url: String,
}

impl Answer {
    /// The body as its contract type.
    pub fn view<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        T::deserialize(&self.body).map_err(|e| ClientError::Unreadable { url: self.url.clone(), detail: e.to_string() })
    }
}

/// The client: a base URL and, for writes, the token.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Reads a token file (its first line, trimmed).
pub fn read_token_file(file: &Path) -> Result<String, ClientError> {
    super::token::read(file).map_err(|e| ClientError::TokenFile { file: file.to_owned(), detail: e.to_string() })
}

/// Percent-encodes one path segment (a cache name or key).
pub fn segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl AdminClient {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:9090`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // An upload waits for the node to load the plugin.
            .timeout_global(Some(Duration::from_secs(180)))
            .build()
            .into();
        AdminClient { base: base.trim_end_matches('/').to_string(), token, agent }
    }

    /// `GET /api/cluster`.
    pub fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.get("/api/cluster")?.view()
    }

    /// `GET /api/plugins`.
    pub fn plugins(&self) -> Result<Vec<PluginRecord>, ClientError> {
        self.get("/api/plugins")?.view()
    }

    /// `GET /api/properties`.
    pub fn properties(&self) -> Result<PropertiesView, ClientError> {
        self.get("/api/properties")?.view()
    }

    /// `PUT /api/properties`: `text` replaces the file.
    pub fn put_properties(&self, text: &str) -> Result<PropertiesReplaced, ClientError> {
        self.put("/api/properties", text.as_bytes())?.view()
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.call("GET", path, None)
    }

    /// `POST path` with `body`.
    pub fn post(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        self.call("POST", path, Some(body))
    }

    /// A large `POST` (a plugin upload). The node refuses a request without
    /// the right token at its headers and reads none of its body, which this
    /// client would only see as a broken pipe; so an empty request goes
    /// first, and its refusal (401, 403, 421) is the answer. Any other answer
    /// to it (the empty body refused) changes nothing on the node.
    pub fn upload(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        self.upload_signed(path, body, None)
    }

    /// [`upload`](Self::upload) of a plugin with its detached signature
    /// (the text of its `.minisig`), carried in [`SIGNATURE_HEADER`].
    pub fn upload_signed(&self, path: &str, body: &[u8], signature: Option<&str>) -> Result<Answer, ClientError> {
        match self.call("POST", path, Some(b"")) {
            Err(refused @ ClientError::Api { status: 401 | 403 | 421, .. }) => Err(refused),
            Err(unreachable @ ClientError::Unreachable { .. }) => Err(unreachable),
            _ => self.post_signed(path, body, signature),
        }
    }

    /// `POST path` with `body` and, when given, a plugin's detached
    /// signature in [`SIGNATURE_HEADER`].
    pub fn post_signed(&self, path: &str, body: &[u8], signature: Option<&str>) -> Result<Answer, ClientError> {
        let header = signature.map(crate::plugins::signature::encode_for_header);
        self.call_with("POST", path, Some(body), header.as_deref())
    }

    /// `PUT path` with `body`.
    pub fn put(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        self.call("PUT", path, Some(body))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<Answer, ClientError> {
        self.call("DELETE", path, None)
    }

    fn call(&self, method: &'static str, path: &str, body: Option<&[u8]>) -> Result<Answer, ClientError> {
        self.call_with(method, path, body, None)
    }

    fn call_with(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
        signature: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let unreachable = |e: ureq::Error| ClientError::Unreachable { url: self.base.clone(), detail: e.to_string() };
        let result = match (method, body) {
            ("GET", _) => with_auth(self.agent.get(&url), &auth).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), &auth).call(),
            ("PUT", body) => with_auth(self.agent.put(&url), &auth).send(body.unwrap_or_default()),
            (_, body) => {
                let request = with_auth(self.agent.post(&url), &auth);
                let request = match signature {
                    Some(value) => request.header(SIGNATURE_HEADER, value),
                    None => request,
                };
                request.send(body.unwrap_or_default())
            }
        };
        let mut response = result.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| ClientError::NotJson { method, url: url.clone(), status, detail: e.to_string() })?;
        let body: Value = serde_json::from_str(&text).map_err(|e| ClientError::NotJson {
            method,
            url: url.clone(),
            status,
            detail: format!("{e}: {}", text.chars().take(200).collect::<String>()),
        })?;
        if (200..300).contains(&status) {
            Ok(Answer { status, body, url })
        } else {
            let message = body["error"].as_str().unwrap_or("the node gave no reason").to_string();
            Err(ClientError::Api { method, url, status, message, body })
        }
    }
}

/// One server-sent event as the stream carried it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFrame {
    /// Its `event:` (`message` when none was given).
    pub event: String,
    /// Its `id:`, when given.
    pub id: Option<String>,
    /// Its `data:` lines, joined with newlines.
    pub data: String,
}

/// The longest line of an event stream this client reads; a longer one ends
/// the stream with an error (the node's events are a few hundred bytes).
const MAX_STREAM_LINE: u64 = 1024 * 1024;

impl AdminClient {
    /// `GET path` as a server-sent-events stream: `on_frame` gets each
    /// event as it arrives and returns false to stop; returns when it did,
    /// or when the node ended the stream.
    pub fn stream(&self, path: &str, on_frame: impl FnMut(StreamFrame) -> bool) -> Result<(), ClientError> {
        self.stream_with(path, &[], on_frame)
    }

    /// [`stream`](Self::stream) with more request headers (`Last-Event-ID`).
    pub fn stream_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        mut on_frame: impl FnMut(StreamFrame) -> bool,
    ) -> Result<(), ClientError> {
        use std::io::{BufRead, Read};
        let url = format!("{}{path}", self.base);
        let unreachable = |detail: String| ClientError::Unreachable { url: self.base.clone(), detail };
        // No overall deadline: a stream lasts as long as the reader wants.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .build()
            .into();
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut request = with_auth(agent.get(&url), &auth).header("Accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.call().map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let text = response.body_mut().with_config().limit(1024 * 1024).read_to_string().unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let message = body["error"].as_str().unwrap_or("the node gave no reason").to_string();
            return Err(ClientError::Api { method: "GET", url, status, message, body });
        }
        let mut reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut frame = StreamFrame::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_STREAM_LINE)
                .read_until(b'\n', &mut line)
                .map_err(|e| unreachable(format!("the event stream broke: {e}")))?;
            if read == 0 {
                return Ok(());
            }
            if line.last() != Some(&b'\n') && read as u64 == MAX_STREAM_LINE {
                return Err(ClientError::Unreadable {
                    url,
                    detail: format!("an event stream line is longer than {MAX_STREAM_LINE} bytes"),
                });
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                if !frame.data.is_empty() || frame.id.is_some() {
                    let mut done = std::mem::take(&mut frame);
                    if done.event.is_empty() {
                        done.event = "message".into();
                    }
                    if !on_frame(done) {
                        return Ok(());
                    }
                }
                continue;
            }
            if text.starts_with(':') {
                continue; // a keep-alive comment
            }
            let (field, value) = text.split_once(':').unwrap_or((text, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => frame.event = value.to_string(),
                "id" => frame.id = Some(value.to_string()),
                "data" => {
                    if !frame.data.is_empty() {
                        frame.data.push('\n');
                    }
                    frame.data.push_str(value);
                }
                _ => {}
            }
        }
    }
}

fn with_auth<B>(request: ureq::RequestBuilder<B>, auth: &Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(value) => request.header("Authorization", value),
        None => request,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(super::segment("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(super::segment("plain-key_1.x~"), "plain-key_1.x~");
    }
}
