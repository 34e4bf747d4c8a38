//! `conf/clusterhost.properties`: the host-level settings, in Java
//! `.properties` syntax (comments, escapes, continuation lines).
//!
//! A file is read whole or not at all: an invalid value is reported with
//! file:line and the caller keeps the previous settings.
//!
//! This module holds the keys, their defaults and the file's reading;
//! [`values`] the settings in force while the node runs, `parse` each
//! value's syntax, [`edit`] a file edited line by line (the admin API's PATCH).

use std::path::{Path, PathBuf};
use std::time::Duration;

use java_properties::{LineContent, PropertiesIter};

use crate::plugins::signature::{SignatureMode, SignaturePolicy};

mod edit;
mod parse;
mod values;

pub use edit::{file_keys, patch_text};
use parse::*;
pub use values::NodeValues;

/// How the plugins directory is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify through `notify`; falls back to polling if it cannot be set up.
    Notify,
    /// Rescan every `plugins.poll.seconds` (network filesystems, exhausted inotify limits).
    Poll,
}

/// The host-level settings, with the Openfire plugin's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Properties {
    /// `clustering.enabled` (true): start clustering when a strategy is active.
    pub clustering_enabled: bool,
    /// `cluster.startup.delay.seconds` (5): wait after the initial plugin scan.
    pub startup_delay: Duration,
    /// `cluster.startup.retry.count` (1): further attempts after a failed cluster start.
    pub startup_retry_count: u32,
    /// `cluster.startup.retry.seconds` (10): pause between attempts.
    pub startup_retry_interval: Duration,
    /// `cluster.max.execution.seconds` (30): budget of a plugin lifecycle call or a synchronous task.
    pub max_execution: Duration,
    /// `cluster.config.file` (none: the strategy's own default name).
    pub config_file: Option<String>,
    /// `cluster.config.directory` (`conf`, relative to the home).
    pub config_directory: PathBuf,
    /// `cluster.metrics.enabled` (false).
    pub metrics_enabled: bool,
    /// `plugins.watch` (`notify`).
    pub watch: WatchMode,
    /// `plugins.poll.seconds` (2): rescan interval in poll mode.
    pub poll_interval: Duration,
    /// `plugins.allow.downgrade` (false): let an older version replace an active plugin.
    pub allow_downgrade: bool,
    /// `plugins.signature` (`warn`): whether a plugin must be signed by a
    /// key in `conf/trusted-keys/` (`off`, `warn`, `require`).
    pub signature: SignatureMode,
    /// `plugins.signature.revoked` (none): key ids refused as signers,
    /// comma-separated.
    pub signature_revoked: Vec<String>,
    /// `node.name` (the host name): this node's member id; unique in a cluster.
    pub node_name: Option<String>,
    /// `node.bind` (127.0.0.1): the address cluster strategies bind to.
    pub node_bind: Option<String>,
    /// `cluster.port` (the strategy's default, e.g. 5701): the strategy's member port.
    pub cluster_port: Option<u16>,
    /// `admin.port` (9090): the admin API's port.
    pub admin_port: Option<u16>,
    /// `admin.bind` (127.0.0.1): the address the admin API listens on.
    pub admin_bind: Option<std::net::IpAddr>,
    /// `admin.token.file` (`conf/admin.token`, relative to the home): the
    /// token every write (and, off loopback, every request) must carry.
    pub admin_token_file: PathBuf,
    /// `admin.max.upload.bytes` (512 MiB): the largest plugin file
    /// `POST /api/plugins` takes.
    pub admin_max_upload_bytes: u64,
    /// `admin.max.body.bytes` (1 MiB): the largest body of every other admin
    /// request (properties, cache values, the console's login form).
    pub admin_max_body_bytes: u64,
    /// `admin.allowed.hosts` (none): more names the admin API answers to in
    /// the `Host` header, beside its bind address (and, on loopback,
    /// `localhost`, 127.0.0.1 and `[::1]`); comma-separated.
    pub admin_allowed_hosts: Vec<String>,
    /// `admin.header.timeout.seconds` (10): how long an admin client may
    /// take to send a request's headers, and how long a kept-alive
    /// connection may sit idle between two requests; then it is closed.
    pub admin_header_timeout: Duration,
    /// `admin.max.connections` (256): open admin connections in all; more
    /// are closed at once.
    pub admin_max_connections: usize,
    /// `admin.max.connections.per.address` (64): open admin connections
    /// from one client IP address (loopback counts too); more are closed at once.
    pub admin_max_connections_per_address: usize,
    /// Split-brain protection: `cache.<name>.min.members` (none; `*` for
    /// every cache without its own), the fewest members this node must see
    /// for a write to that cache; `cache.protection.reads` (`allow`):
    /// `refuse` refuses reads of a protected cache too.
    pub protection: crate::cluster::protection::Protection,
    /// Bounded caches: `cache.<name>.max.entries`, `cache.<name>.max.bytes`
    /// (least recently used evicted first), `cache.<name>.ttl.ms` (expiry
    /// after the write), `cache.<name>.max.idle.ms` (expiry after the last
    /// use); none by default.
    pub bounds: std::collections::BTreeMap<String, crate::cluster::bounds::BoundsSetting>,
}

/// The most caches `cache.<name>.min.members` may name (and, apart, the
/// bounds keys).
pub const MAX_PROTECTED_CACHES: usize = 1000;

impl Default for Properties {
    fn default() -> Self {
        Properties {
            clustering_enabled: true,
            startup_delay: Duration::from_secs(5),
            startup_retry_count: 1,
            startup_retry_interval: Duration::from_secs(10),
            max_execution: Duration::from_secs(30),
            config_file: None,
            config_directory: PathBuf::from(crate::home::CONF_DIR),
            metrics_enabled: false,
            watch: WatchMode::Notify,
            poll_interval: Duration::from_secs(2),
            allow_downgrade: false,
            signature: SignatureMode::Warn,
            signature_revoked: Vec::new(),
            node_name: None,
            node_bind: None,
            cluster_port: None,
            admin_port: None,
            admin_bind: None,
            admin_token_file: PathBuf::from(crate::home::TOKEN_FILE),
            admin_max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            admin_max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            admin_allowed_hosts: Vec::new(),
            admin_header_timeout: DEFAULT_HEADER_TIMEOUT,
            admin_max_connections: DEFAULT_MAX_CONNECTIONS,
            admin_max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            protection: Default::default(),
            bounds: Default::default(),
        }
    }
}

/// `admin.max.upload.bytes`' default: 512 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// `admin.max.body.bytes`' default: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// `admin.header.timeout.seconds`' default: 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `admin.max.connections`' default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// `admin.max.connections.per.address`' default.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;

/// The keys read once at start: a reload stores them, shows them as
/// pending, and the node uses them from its next start. The node-specific
/// keys and every `admin.*` key.
pub const RESTART_KEYS: [&str; 12] = [
    "node.name",
    "node.bind",
    "cluster.port",
    "admin.port",
    "admin.bind",
    "admin.token.file",
    "admin.max.upload.bytes",
    "admin.max.body.bytes",
    "admin.allowed.hosts",
    "admin.header.timeout.seconds",
    "admin.max.connections",
    "admin.max.connections.per.address",
];

/// Whether `key` applies only from the node's next start.
pub fn is_restart_key(key: &str) -> bool {
    RESTART_KEYS.contains(&key)
}

/// Why a properties file was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PropertiesError {
    #[error("could not read {file}: {detail}")]
    Unreadable { file: PathBuf, detail: String },
    #[error("{file}:{line}: {message}; the previous settings stay in force")]
    Invalid { file: PathBuf, line: usize, message: String },
}

/// A key the host does not know: reported, not fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// Its line in the file, from 1.
    pub line: usize,
    /// The key as written.
    pub key: String,
}

impl Properties {
    /// Reads `file`; a missing file means the defaults.
    pub fn load(file: &Path) -> Result<(Properties, Vec<UnknownKey>), PropertiesError> {
        match std::fs::read(file) {
            Ok(bytes) => Self::parse(file, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Properties::default(), Vec::new())),
            Err(e) => Err(PropertiesError::Unreadable { file: file.to_owned(), detail: e.to_string() }),
        }
    }

    /// Parses properties text; `file` is used in messages only.
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<(Properties, Vec<UnknownKey>), PropertiesError> {
        let mut properties = Properties::default();
        let mut unknown = Vec::new();
        let text = decode(bytes);
        for line in PropertiesIter::new_with_encoding(text.as_bytes(), encoding_rs::UTF_8) {
            let line = line.map_err(|e| PropertiesError::Invalid {
                file: file.to_owned(),
                line: e.line_number().unwrap_or(0),
                message: crate::text::clip(&e.to_string()),
            })?;
            let number = line.line_number();
            if let LineContent::KVPair(key, value) = line.consume_content() {
                let invalid =
                    |message: String| PropertiesError::Invalid { file: file.to_owned(), line: number, message };
                if !properties.set(&key, value.trim()).map_err(|m| {
                    invalid(format!("{} = {}: {m}", crate::text::clip(&key), crate::text::clip_debug(&value)))
                })? {
                    unknown.push(UnknownKey { line: number, key: crate::text::clip(&key) });
                }
            }
        }
        Ok((properties, unknown))
    }

    /// Sets one key; Ok(false) for an unknown key.
    fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("a value is at most {MAX_VALUE_BYTES} bytes, this one has {}", value.len()));
        }
        match key {
            "clustering.enabled" => self.clustering_enabled = boolean(value)?,
            "cluster.startup.delay.seconds" => self.startup_delay = seconds(value, 0.0, 86_400.0)?,
            "cluster.startup.retry.count" => self.startup_retry_count = count(value, 1000)?,
            "cluster.startup.retry.seconds" => self.startup_retry_interval = seconds(value, 0.0, 86_400.0)?,
            "cluster.max.execution.seconds" => self.max_execution = seconds(value, 0.001, 86_400.0)?,
            "cluster.config.file" => self.config_file = (!value.is_empty()).then(|| value.to_string()),
            "cluster.config.directory" if value.is_empty() => return Err("expected a directory".into()),
            "cluster.config.directory" => self.config_directory = PathBuf::from(value),
            "cluster.metrics.enabled" => self.metrics_enabled = boolean(value)?,
            "plugins.watch" => {
                self.watch = match value {
                    "notify" => WatchMode::Notify,
                    "poll" => WatchMode::Poll,
                    _ => return Err("expected notify or poll".into()),
                }
            }
            "plugins.poll.seconds" => self.poll_interval = seconds(value, 0.05, 3600.0)?,
            "plugins.allow.downgrade" => self.allow_downgrade = boolean(value)?,
            "plugins.signature" => self.signature = signature_mode(value)?,
            "plugins.signature.revoked" => self.signature_revoked = key_ids(value)?,
            "node.name" => self.node_name = Some(name(value)?),
            "node.bind" if value.is_empty() => return Err("expected an IP address or host name".into()),
            "node.bind" => self.node_bind = Some(value.to_string()),
            "cluster.port" => self.cluster_port = Some(port(value)?),
            "admin.port" => self.admin_port = Some(port(value)?),
            "admin.bind" => {
                self.admin_bind = Some(value.parse().map_err(|_| "expected an IP address, e.g. 127.0.0.1 or 0.0.0.0")?)
            }
            "admin.token.file" if value.is_empty() => return Err("expected a file path".into()),
            "admin.token.file" => self.admin_token_file = PathBuf::from(value),
            "admin.max.upload.bytes" => self.admin_max_upload_bytes = bytes(value, 1024, 1 << 40)?,
            "admin.max.body.bytes" => self.admin_max_body_bytes = bytes(value, 1024, 1 << 30)?,
            "admin.allowed.hosts" => self.admin_allowed_hosts = host_names(value)?,
            "admin.header.timeout.seconds" => self.admin_header_timeout = seconds(value, 0.1, 3600.0)?,
            "admin.max.connections" => self.admin_max_connections = connections(value)?,
            "admin.max.connections.per.address" => self.admin_max_connections_per_address = connections(value)?,
            "cache.protection.reads" => {
                self.protection.refuse_reads = match value {
                    "allow" => false,
                    "refuse" => true,
                    _ => return Err("expected allow or refuse".into()),
                }
            }
            _ if bound_key(key).is_some() => {
                let Some((cache, suffix, max)) = bound_key(key) else { unreachable!() };
                if cache.is_empty()
                    || cache == "*"
                    || cache.len() > 200
                    || cache.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(format!("expected a cache name of 1 to 200 characters without spaces in cache.<name>.{suffix} (bounds are set per cache, not with *)"));
                }
                let value = value.parse::<u64>().ok().filter(|v| *v <= max).ok_or_else(|| {
                    format!("expected a whole number from 0 (no bound) to {max} in cache.<name>.{suffix}")
                })?;
                let known = self.bounds.contains_key(cache);
                if !known && self.bounds.len() >= MAX_PROTECTED_CACHES {
                    return Err(format!("at most {MAX_PROTECTED_CACHES} caches can be bounded; remove the cache.<name>.* lines of caches no longer in use, or bound them in code (ClusterManager::bounded_cache)"));
                }
                self.bounds.entry(cache.to_string()).or_default().set(suffix, value);
            }
            _ => match key.strip_prefix("cache.").and_then(|k| k.strip_suffix(".min.members")) {
                Some(cache) => {
                    if cache.is_empty()
                        || cache.len() > 200
                        || cache.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err("expected a cache name of 1 to 200 characters without spaces (or *) in cache.<name>.min.members".into());
                    }
                    let min = count(value, 1000)?;
                    if min == 0 {
                        return Err("expected a number of members from 1 to 1000".into());
                    }
                    let known = self.protection.min_members.contains_key(cache);
                    if !known && self.protection.min_members.len() >= MAX_PROTECTED_CACHES {
                        return Err(format!("at most {MAX_PROTECTED_CACHES} caches can be protected"));
                    }
                    self.protection.min_members.insert(cache.to_string(), min);
                }
                None => return Ok(false),
            },
        }
        Ok(true)
    }

    /// Checks one key's value as the parser would: Ok(false) for an unknown key.
    pub fn check(key: &str, value: &str) -> Result<bool, String> {
        Properties::default().set(key, value)
    }

    /// Sets the [`RESTART_KEYS`] to their values in `started`.
    fn keep_restart_keys(&mut self, started: &Properties) {
        self.node_name.clone_from(&started.node_name);
        self.node_bind.clone_from(&started.node_bind);
        self.cluster_port = started.cluster_port;
        self.admin_port = started.admin_port;
        self.admin_bind = started.admin_bind;
        self.admin_token_file.clone_from(&started.admin_token_file);
        self.admin_max_upload_bytes = started.admin_max_upload_bytes;
        self.admin_max_body_bytes = started.admin_max_body_bytes;
        self.admin_allowed_hosts.clone_from(&started.admin_allowed_hosts);
        self.admin_header_timeout = started.admin_header_timeout;
        self.admin_max_connections = started.admin_max_connections;
        self.admin_max_connections_per_address = started.admin_max_connections_per_address;
    }

    /// Applies a node-specific value from a CLI flag or the environment;
    /// `source` names it in the error.
    pub fn set_override(&mut self, key: &str, value: &str, source: &str) -> Result<(), String> {
        match self.set(key, value) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{source}: unknown key {key}")),
            Err(e) => Err(format!("{source} = {value:?}: {e}")),
        }
    }

    /// This node's name: `node.name`, else the host name, else `node`.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".to_string())
        })
    }

    /// The values a plugin can read by key (node-specific and cluster keys).
    pub fn values(&self) -> std::collections::BTreeMap<String, String> {
        let mut values = std::collections::BTreeMap::new();
        values.insert("node.name".to_string(), self.node_name());
        values.insert("node.bind".to_string(), self.node_bind.clone().unwrap_or_else(|| "127.0.0.1".into()));
        if let Some(port) = self.cluster_port {
            values.insert("cluster.port".to_string(), port.to_string());
        }
        values.insert("admin.port".to_string(), self.admin_port.unwrap_or(9090).to_string());
        if let Some(file) = &self.config_file {
            values.insert("cluster.config.file".to_string(), file.clone());
        }
        values.insert("cluster.max.execution.seconds".to_string(), self.max_execution.as_secs_f64().to_string());
        values
    }

    /// Every key with the value in force (defaults included), for the admin API.
    pub fn effective(&self) -> std::collections::BTreeMap<String, String> {
        let secs = |d: Duration| d.as_secs_f64().to_string();
        let mut values = self.values();
        let mut put = |key: &str, value: String| {
            values.insert(key.to_string(), value);
        };
        put("clustering.enabled", self.clustering_enabled.to_string());
        put("cluster.startup.delay.seconds", secs(self.startup_delay));
        put("cluster.startup.retry.count", self.startup_retry_count.to_string());
        put("cluster.startup.retry.seconds", secs(self.startup_retry_interval));
        put("cluster.config.directory", self.config_directory.display().to_string());
        put("cluster.metrics.enabled", self.metrics_enabled.to_string());
        let watch = match self.watch {
            WatchMode::Notify => "notify",
            WatchMode::Poll => "poll",
        };
        put("plugins.watch", watch.to_string());
        put("plugins.poll.seconds", secs(self.poll_interval));
        put("plugins.allow.downgrade", self.allow_downgrade.to_string());
        put("plugins.signature", self.signature.as_str().to_string());
        put("plugins.signature.revoked", self.signature_revoked.join(","));
        put("admin.bind", self.admin_bind().to_string());
        put("admin.token.file", self.admin_token_file.display().to_string());
        put("admin.max.upload.bytes", self.admin_max_upload_bytes.to_string());
        put("admin.max.body.bytes", self.admin_max_body_bytes.to_string());
        put("admin.allowed.hosts", self.admin_allowed_hosts.join(","));
        put("admin.header.timeout.seconds", secs(self.admin_header_timeout));
        put("admin.max.connections", self.admin_max_connections.to_string());
        put("admin.max.connections.per.address", self.admin_max_connections_per_address.to_string());
        put("cache.protection.reads", if self.protection.refuse_reads { "refuse" } else { "allow" }.to_string());
        for (cache, min) in &self.protection.min_members {
            put(&format!("cache.{cache}.min.members"), min.to_string());
        }
        for (cache, setting) in &self.bounds {
            for (suffix, value) in setting.keys() {
                put(&format!("cache.{cache}.{suffix}"), value.to_string());
            }
        }
        values
    }

    /// `admin.bind`, or 127.0.0.1.
    pub fn admin_bind(&self) -> std::net::IpAddr {
        self.admin_bind.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }

    /// `admin.port`, or 9090.
    pub fn admin_port(&self) -> u16 {
        self.admin_port.unwrap_or(9090)
    }

    /// The signature policy these settings ask for.
    pub fn signature_policy(&self) -> SignaturePolicy {
        SignaturePolicy { mode: self.signature, revoked: self.signature_revoked.clone() }
    }

    /// `cluster.config.directory` resolved against `home`.
    pub fn config_dir(&self, home: &Path) -> PathBuf {
        home.join(&self.config_directory)
    }
}

/// The cache, key suffix and largest value of a bounds key
/// (`cache.<name>.max.entries`, ... see [`crate::cluster::bounds::KEYS`]).
fn bound_key(key: &str) -> Option<(&str, &'static str, u64)> {
    let rest = key.strip_prefix("cache.")?;
    crate::cluster::bounds::KEYS.iter().find_map(|(suffix, max)| {
        let cache = rest.strip_suffix(suffix)?.strip_suffix('.')?;
        Some((cache, *suffix, *max))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` parsed as conf/clusterhost.properties (for every test in this module's files).
    pub(crate) fn parse(text: &str) -> Result<(Properties, Vec<UnknownKey>), PropertiesError> {
        Properties::parse(Path::new("conf/clusterhost.properties"), text.as_bytes())
    }

    #[test]
    fn an_empty_file_gives_the_openfire_defaults() {
        let (p, unknown) = parse("").unwrap();
        assert_eq!(p, Properties::default());
        assert_eq!(p.startup_delay, Duration::from_secs(5));
        assert_eq!(p.startup_retry_count, 1);
        assert_eq!(p.startup_retry_interval, Duration::from_secs(10));
        assert_eq!(p.max_execution, Duration::from_secs(30));
        assert!(unknown.is_empty());
    }

    #[test]
    fn java_syntax_comments_separators_escapes_and_continuations() {
        let text = "# comment\n! also a comment\ncluster.startup.delay.seconds = 2\ncluster.startup.retry.count:3\n\
                    cluster.config.file gossip\\u002dtest.toml\ncluster.config.directory = /etc/\\\n    clusterhost\n";
        let (p, _) = parse(text).unwrap();
        assert_eq!(p.startup_delay, Duration::from_secs(2));
        assert_eq!(p.startup_retry_count, 3);
        assert_eq!(p.config_file.as_deref(), Some("gossip-test.toml"));
        assert_eq!(p.config_directory, PathBuf::from("/etc/clusterhost"));
    }

    #[test]
    fn an_invalid_value_is_reported_with_file_and_line() {
        let err = parse("clustering.enabled = true\n\ncluster.startup.retry.count = -1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("conf/clusterhost.properties:3: cluster.startup.retry.count"), "{text}");
        assert!(text.contains("between 0 and 1000") && text.contains("previous settings stay"), "{text}");
        let err = parse("cluster.max.execution.seconds = soon\n").unwrap_err();
        assert!(err.to_string().contains(":1: cluster.max.execution.seconds = \"soon\": expected a number"), "{err}");
        assert!(parse("cluster.max.execution.seconds = 0\n").is_err());
        assert!(parse("plugins.watch = sometimes\n").is_err());
    }

    #[test]
    fn a_file_ending_inside_a_byte_order_mark_or_a_character_is_read() {
        // Found by the properties fuzz target: these panicked in
        // java-properties ("Must not use a decoder that has finished").
        for bytes in [&b"\xff"[..], b"\xfe", b"\xef", b"\xef\xbb", b"\xef\xbb\xbf\xc3", b"\xff\xfeA"] {
            let (p, unknown) = Properties::parse(Path::new("p"), bytes).unwrap();
            assert_eq!((p, unknown.len()), (Properties::default(), 1), "{bytes:?}");
        }
        // Decoded as before: Windows-1252, or UTF-8 after its byte order mark.
        let (p, _) = Properties::parse(Path::new("p"), b"cluster.config.file = caf\xe9.toml").unwrap();
        assert_eq!(p.config_file.as_deref(), Some("caf\u{e9}.toml"));
        let (p, _) =
            Properties::parse(Path::new("p"), "\u{feff}cluster.config.file = caf\u{e9}.toml\n".as_bytes()).unwrap();
        assert_eq!(p.config_file.as_deref(), Some("caf\u{e9}.toml"));
    }

    #[test]
    fn cache_bounds_are_read_per_cache_and_field_and_bad_ones_say_what_to_write() {
        let text = "cache.sessions.max.entries = 100\ncache.sessions.ttl.ms = 30000\ncache.routes.max.idle.ms = 5000\ncache.a.b.max.bytes = 1024\n";
        let (p, unknown) = parse(text).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        let sessions = p.bounds["sessions"];
        assert_eq!((sessions.max_entries, sessions.ttl_ms, sessions.max_bytes), (Some(100), Some(30_000), None));
        assert_eq!(p.bounds["routes"].max_idle_ms, Some(5000));
        assert_eq!(p.bounds["a.b"].max_bytes, Some(1024), "a cache name may hold dots");
        // Written back as read (the effective properties the API shows).
        let values = p.effective();
        assert_eq!(values.get("cache.sessions.ttl.ms").map(String::as_str), Some("30000"));
        for (bad, says) in [
            ("cache.sessions.max.entries = many\n", "expected a whole number from 0 (no bound)"),
            ("cache.sessions.ttl.ms = -1\n", "expected a whole number"),
            ("cache.*.max.entries = 5\n", "bounds are set per cache, not with *"),
            ("cache..ttl.ms = 5\n", "expected a cache name"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("previous settings stay"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_shipped_file_lists_exactly_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/clusterhost.properties");
        let (p, unknown) = Properties::load(&file).unwrap();
        assert_eq!(p, Properties::default());
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let (_, unknown) = parse("cluster.startup.delay.seconds=1\ncluster.startup.dealy.seconds=2\n").unwrap();
        assert_eq!(unknown, vec![UnknownKey { line: 2, key: "cluster.startup.dealy.seconds".into() }]);
    }

    #[test]
    fn a_huge_value_is_refused_with_a_cut_message() {
        let err = parse(&format!("cluster.port = {}\n", "9".repeat(1 << 20))).unwrap_err().to_string();
        assert!(err.len() < 600 && err.contains("(1048576 bytes)"), "{err}");
    }

    #[test]
    fn node_keys_parse_validate_and_yield_to_overrides() {
        let (mut p, unknown) =
            parse("node.name = n-1\nnode.bind = 10.0.0.2\ncluster.port = 5801\nadmin.port = 9191\n").unwrap();
        assert!(unknown.is_empty());
        assert_eq!(p.node_name(), "n-1");
        assert_eq!(p.values().get("cluster.port").map(String::as_str), Some("5801"));
        p.set_override("node.name", "n-2", "--node-name").unwrap();
        assert_eq!(p.values().get("node.name").map(String::as_str), Some("n-2"));
        let err = p.set_override("admin.port", "0", "--admin-port").unwrap_err();
        assert!(err.contains("--admin-port = \"0\": expected a port number"), "{err}");
        assert!(p.set_override("node.name", "bad name", "--node-name").is_err());
        assert!(parse("cluster.port = 99999\n").unwrap_err().to_string().contains(":1: cluster.port"));
        let (p, _) = parse("admin.bind = 0.0.0.0\nadmin.token.file = /etc/ch/token\n").unwrap();
        assert_eq!(p.effective().get("admin.bind").map(String::as_str), Some("0.0.0.0"));
        assert_eq!(p.effective().get("admin.token.file").map(String::as_str), Some("/etc/ch/token"));
        let err = parse("admin.bind = localhost\n").unwrap_err().to_string();
        assert!(err.contains(":1: admin.bind = \"localhost\": expected an IP address"), "{err}");
    }

    #[test]
    fn the_signature_policy_parses_and_refuses_what_is_not_a_mode_or_a_key_id() {
        assert_eq!(Properties::default().signature, SignatureMode::Warn);
        let (p, _) =
            parse("plugins.signature = require\nplugins.signature.revoked = ab00000000000001, 00000000000000FF\n")
                .unwrap();
        assert_eq!(p.signature, SignatureMode::Require);
        assert_eq!(p.signature_revoked, vec!["AB00000000000001".to_string(), "00000000000000FF".to_string()]);
        let err = parse("plugins.signature = maybe\n").unwrap_err().to_string();
        assert!(err.contains("expected off, warn or require"), "{err}");
        let err = parse("plugins.signature.revoked = nope\n").unwrap_err().to_string();
        assert!(err.contains("16 hex digits"), "{err}");
    }

    #[test]
    fn connection_limits_parse_and_refuse_zero() {
        let defaults = Properties::default().effective();
        assert_eq!(defaults.get("admin.header.timeout.seconds").map(String::as_str), Some("10"));
        assert_eq!(defaults.get("admin.max.connections").map(String::as_str), Some("256"));
        assert_eq!(defaults.get("admin.max.connections.per.address").map(String::as_str), Some("64"));
        let (p, unknown) = parse(
            "admin.header.timeout.seconds = 1.5\nadmin.max.connections = 64\nadmin.max.connections.per.address = 8\n",
        )
        .unwrap();
        assert!(unknown.is_empty());
        assert_eq!(p.admin_header_timeout, Duration::from_millis(1500));
        assert_eq!((p.admin_max_connections, p.admin_max_connections_per_address), (64, 8));
        let err = parse("admin.max.connections = 0\n").unwrap_err().to_string();
        assert!(err.contains(":1: admin.max.connections = \"0\": expected a number of connections from 1"), "{err}");
        assert!(parse("admin.header.timeout.seconds = 0\n").is_err());
        assert!(is_restart_key("admin.max.connections.per.address"));
    }
}
