//! `conf/redis.toml`: where the shared Redis (or Valkey) is and how this
//! member uses it. A bad file is refused with file:line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The file name the plugin reads (`Host::config_file`: `<plugin id>.toml`).
pub const DEFAULT_FILE: &str = "redis.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    /// `redis://host:port[/db]` or `rediss://` (TLS; `rediss://host:port/#insecure`
    /// accepts any certificate, for tests) URLs: the server
    /// (single), the sentinels (sentinel) or some cluster nodes (cluster).
    pub urls: Vec<String>,
    /// Sentinel mode: the monitored master's name.
    pub sentinel_master: String,
    /// Every key and channel starts with this: members with the same
    /// prefix on the same Redis form one cluster.
    pub key_prefix: String,
    /// ACL user and password (also accepted inside the URLs).
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed the servers' certificates, for
    /// `rediss://` URLs (relative to the config folder); none: the webpki roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Its contents, read at load.
    #[serde(skip)]
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Partitions per cache (1 to 1024; 1: a cache is one hash on one
    /// slot). Above 1 a cache's entries spread over that many hashes,
    /// each on its own slot, so on a Redis Cluster they spread evenly over
    /// the masters (docs/redis.md "Spread caches"). Every member of a
    /// cluster must have the same value: the first to join records it.
    pub partitions: u32,
    pub membership: Membership,
    pub timeouts: Timeouts,
    pub near_cache: NearCache,
}

/// `[near_cache]`: caches this member keeps a local copy of, kept correct
/// by Redis's client tracking (docs/redis.md "Near cache").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NearCache {
    /// The caches whose entries this member copies as it reads them
    /// (`"*"`: every cache; none: off).
    pub caches: Vec<String>,
    /// Copies kept at most (all caches together), least recently used dropped first.
    pub max_entries: usize,
    /// Bytes of copies kept at most (keys, values and 64 bytes each).
    pub max_bytes: u64,
}

impl Default for NearCache {
    fn default() -> Self {
        NearCache { caches: Vec::new(), max_entries: 100_000, max_bytes: 64 << 20 }
    }
}

/// The most caches `[near_cache]` may name, and its largest bounds.
pub const NEAR_MAX_CACHES: usize = 1_000;
pub const NEAR_MAX_ENTRIES: usize = 100_000_000;
pub const NEAR_MAX_BYTES: u64 = 64 << 30;

/// The most partitions a cache may have.
pub const MAX_PARTITIONS: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Single,
    Sentinel,
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Membership {
    /// How often a member refreshes its key and re-reads the view.
    pub heartbeat_ms: u64,
    /// A member whose key was not refreshed for this long is gone; a
    /// member that could not reach Redis for this long leaves on its own.
    pub member_ttl_ms: u64,
    /// Process-death evidence (single and sentinel modes): a member whose
    /// connections Redis no longer holds (no subscriber on its task
    /// channel, on two checks `presence_confirm_ms` apart) and whose key
    /// missed two refreshes is removed at once by the first member that
    /// sees it, without waiting for `member_ttl_ms`. A paused process
    /// keeps its connections, so only the TTL removes it.
    pub presence: bool,
    /// The pause between the two checks.
    pub presence_confirm_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub connect_ms: u64,
    /// Per command.
    pub response_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Single,
            urls: vec!["redis://127.0.0.1:6379".into()],
            sentinel_master: "mymaster".into(),
            key_prefix: "clusterhost".into(),
            username: None,
            password: None,
            tls_ca_file: None,
            tls_ca_pem: None,
            partitions: 1,
            membership: Membership::default(),
            timeouts: Timeouts::default(),
            near_cache: NearCache::default(),
        }
    }
}

impl Default for Membership {
    fn default() -> Self {
        Membership { heartbeat_ms: 250, member_ttl_ms: 3_000, presence: true, presence_confirm_ms: 100 }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect_ms: 2_000, response_ms: 2_000 }
    }
}

pub use clusterhost_plugin_api::config_file::ConfigError;
use clusterhost_plugin_api::config_file::ConfigFile;

impl Config {
    /// Reads `file` (and the CA file it names); a missing file means the defaults.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let Some(text) = ConfigFile::read(file)? else {
            return Ok(Config::default());
        };
        let mut config = Config::parse(file, &text)?;
        if let Some(ca) = &config.tls_ca_file {
            let path = file.parent().unwrap_or(Path::new(".")).join(ca);
            let pem = std::fs::read(&path).map_err(|e| {
                ConfigFile { plugin: "redis", file, text: &text }
                    .invalid("tls_ca_file", format!("tls_ca_file {}: {e}", path.display()))
            })?;
            config.tls_ca_pem = Some(pem);
        }
        Ok(config)
    }

    /// Parses TOML text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let source = ConfigFile { plugin: "redis", file, text };
        let config: Config = source.parse()?;
        config.validate(&source)?;
        Ok(config)
    }

    fn validate(&self, source: &ConfigFile) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| source.invalid(key, message);
        if self.urls.is_empty() {
            return Err(invalid("urls", "urls must list at least one redis:// or rediss:// URL".into()));
        }
        for url in &self.urls {
            let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
            if !scheme_ok || redis::parse_redis_url(url).is_none() {
                return Err(invalid(
                    "urls",
                    format!("{url:?} is not a Redis URL (expected redis://host:port or rediss://host:port for TLS)"),
                ));
            }
        }
        if self.mode == Mode::Single && self.urls.len() > 1 {
            return Err(invalid(
                "urls",
                format!(
                    "mode = \"single\" takes one URL, {} given; use mode = \"sentinel\" or \"cluster\" for several",
                    self.urls.len()
                ),
            ));
        }
        if self.mode == Mode::Sentinel && self.tls_ca_file.is_some() {
            return Err(invalid(
                "tls_ca_file",
                "tls_ca_file is not supported in sentinel mode yet; use CA-signed certificates the webpki roots trust"
                    .into(),
            ));
        }
        if self.mode == Mode::Sentinel && self.sentinel_master.is_empty() {
            return Err(invalid("sentinel_master", "sentinel mode needs sentinel_master (the master's name)".into()));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 || self.key_prefix.contains(['{', '}', ' ', '\n']) {
            return Err(invalid(
                "key_prefix",
                "key_prefix must have 1 to 64 characters, without braces or spaces".into(),
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(invalid(
                "partitions",
                format!(
                    "partitions = {} is out of range: give 1 (one hash per cache) to {MAX_PARTITIONS}",
                    self.partitions
                ),
            ));
        }
        let near = &self.near_cache;
        if near.caches.len() > NEAR_MAX_CACHES || near.caches.iter().any(|c| c.is_empty() || c.len() > 1024) {
            return Err(invalid(
                "caches",
                format!(
                    "near_cache.caches names {} caches: give at most {NEAR_MAX_CACHES} names of 1 to 1024 bytes each",
                    near.caches.len()
                ),
            ));
        }
        if !(1..=NEAR_MAX_ENTRIES).contains(&near.max_entries) {
            return Err(invalid(
                "max_entries",
                format!("near_cache.max_entries = {} is out of range: give 1 to {NEAR_MAX_ENTRIES}", near.max_entries),
            ));
        }
        if !(4096..=NEAR_MAX_BYTES).contains(&near.max_bytes) {
            return Err(invalid(
                "max_bytes",
                format!("near_cache.max_bytes = {} is out of range: give 4096 to {NEAR_MAX_BYTES}", near.max_bytes),
            ));
        }
        let m = &self.membership;
        if m.heartbeat_ms == 0 || self.timeouts.connect_ms == 0 || self.timeouts.response_ms == 0 {
            return Err(invalid("_ms", "intervals and timeouts must be above 0".into()));
        }
        if m.presence_confirm_ms < 10 {
            return Err(invalid("presence_confirm_ms", "presence_confirm_ms must be at least 10".into()));
        }
        if m.presence_confirm_ms >= m.heartbeat_ms {
            return Err(invalid(
                "presence_confirm_ms",
                format!(
                    "presence_confirm_ms ({}) must be below heartbeat_ms ({}): the second check runs inside a heartbeat",
                    m.presence_confirm_ms, m.heartbeat_ms
                ),
            ));
        }
        if m.member_ttl_ms < 4 * m.heartbeat_ms || m.member_ttl_ms < 3 * m.heartbeat_ms + 100 {
            return Err(invalid(
                "member_ttl_ms",
                format!(
                    "member_ttl_ms ({}) must be at least 4 times heartbeat_ms ({}) and 3 times it plus 100 ms, or members flap",
                    m.member_ttl_ms, m.heartbeat_ms
                ),
            ));
        }
        Ok(())
    }

    /// How long after its last refresh was sent a member that cannot
    /// refresh its key leaves on its own: a heartbeat and 100 ms before
    /// the key can expire, so it is out before the others may take it for
    /// gone (a refresh is cut short at that point rather than waited for).
    pub fn self_fence_after(&self) -> Duration {
        self.member_ttl().saturating_sub(self.heartbeat() + Duration::from_millis(100))
    }

    /// How stale a member's key must be (two missed refreshes and the
    /// confirmation pause) before process-death evidence may remove it.
    pub fn presence_stale(&self) -> Duration {
        self.heartbeat() * 2 + Duration::from_millis(self.membership.presence_confirm_ms)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.membership.heartbeat_ms)
    }

    pub fn member_ttl(&self) -> Duration {
        Duration::from_millis(self.membership.member_ttl_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.connect_ms)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.response_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("conf/redis.toml"), text)
    }

    #[test]
    fn empty_means_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.mode, Mode::Single);
        assert_eq!(c.urls, vec!["redis://127.0.0.1:6379".to_string()]);
        assert_eq!(c.key_prefix, "clusterhost");
        assert_eq!(c.membership.member_ttl_ms, 3_000);
    }

    #[test]
    fn the_shipped_file_parses_to_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/redis.toml");
        assert_eq!(Config::load(&file).unwrap(), Config::default());
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse("mode = \"single\"\nurls = [\"http://x\"]\n").unwrap_err().to_string();
        assert!(err.starts_with("conf/redis.toml:2: \"http://x\" is not a Redis URL"), "{err}");
        let err = parse("mode = \"ring\"\n").unwrap_err().to_string();
        assert!(err.starts_with("conf/redis.toml:1: unknown variant `ring`"), "{err}");
        let err = parse("\n[membership]\nheartbeat_ms = 1000\nmember_ttl_ms = 1500\n").unwrap_err().to_string();
        assert!(err.starts_with("conf/redis.toml:4: member_ttl_ms (1500) must be at least 4 times"), "{err}");
        let err = parse("urls = [\"redis://a:1\", \"redis://b:2\"]\n").unwrap_err().to_string();
        assert!(err.contains(":1: mode = \"single\" takes one URL, 2 given"), "{err}");
        let err = parse("key_prefix = \"a{b}\"\n").unwrap_err().to_string();
        assert!(err.contains(":1: key_prefix must have"), "{err}");
        let err = parse("partitions = 0\n").unwrap_err().to_string();
        assert!(err.contains(":1: partitions = 0 is out of range: give 1"), "{err}");
        assert_eq!(parse("partitions = 64\n").unwrap().partitions, 64);
        let err = parse("[near_cache]\ncaches = [\"\"]\n").unwrap_err().to_string();
        assert!(err.contains(":2: near_cache.caches names 1 caches: give at most"), "{err}");
        let err = parse("[near_cache]\nmax_entries = 0\n").unwrap_err().to_string();
        assert!(err.contains(":2: near_cache.max_entries = 0 is out of range"), "{err}");
        let near = parse("[near_cache]\ncaches = [\"routes\"]\n").unwrap().near_cache;
        assert_eq!((near.caches, near.max_entries), (vec!["routes".to_string()], 100_000));
        let err = parse("[timeouts]\nrespons_ms = 1\n").unwrap_err().to_string();
        assert!(err.starts_with("conf/redis.toml:2: unknown field `respons_ms`"), "{err}");
    }
}
