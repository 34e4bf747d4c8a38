//! `conf/gossip.toml`: the gossip strategy's settings, with the original
//! system's network knobs. A bad file is refused with file:line.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The file name the plugin reads (`Host::config_file`: `<plugin id>.toml`).
pub const DEFAULT_FILE: &str = "gossip.toml";

/// The whole of `gossip.toml`; a missing section or key means its default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Members of different clusters never join each other.
    pub cluster_name: String,
    pub network: Network,
    pub discovery: Discovery,
    pub failure_detection: FailureDetection,
    pub timeouts: Timeouts,
    pub security: Security,
    pub merge: Merge,
    pub limits: Limits,
}

/// Bounds on what the data plane accepts from the network, so a stranger
/// without the cluster key costs a member almost nothing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame accepted from a member once its `Hello` was opened
    /// with the cluster key (before that, [`crate::net::HELLO_MAX_FRAME`]).
    /// A write larger than this is refused; state transfers go in pages
    /// of at most `state_page_bytes`.
    pub max_frame_bytes: usize,
    /// How much of the state one page of a state transfer carries.
    pub state_page_bytes: usize,
    /// Connections accepted on the member port at once, members and strangers.
    pub max_connections: usize,
    /// Of which from one IP address.
    pub max_connections_per_address: usize,
    /// How long an accepted connection has to send its `Hello`.
    pub hello_timeout_ms: u64,
}

/// `[network]`: the member port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Member port: UDP for gossip and TCP for data share the number.
    pub port: u16,
    /// Take the next free port when `port` is in use.
    pub port_auto_increment: bool,
    /// How many ports auto-increment tries.
    pub port_count: u16,
}

/// `[discovery]`: how members find each other.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// Static member list, `host:port` entries (this member may be in it).
    pub members: Vec<String>,
    /// A DNS name listing the members, `name:port` (every address it
    /// resolves to is a member), resolved again every `dns_interval_ms`.
    pub dns: Option<String>,
    /// How often `dns` is resolved again.
    pub dns_interval_ms: u64,
    pub multicast: Multicast,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery { members: Vec::new(), dns: None, dns_interval_ms: 5000, multicast: Multicast::default() }
    }
}

/// `[discovery.multicast]`: announcements on a multicast group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Multicast {
    pub enabled: bool,
    /// An IPv4 multicast group (IPv6 turns discovery off with a warning).
    pub group: IpAddr,
    /// The UDP port every member of the group listens on.
    pub port: u16,
    /// How long a starting member listens for others before it joins.
    pub listen_ms: u64,
}

/// `[failure_detection]`: how soon a silent member is taken for dead.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureDetection {
    /// How often a member gossips (and recomputes its view at the latest).
    pub gossip_interval_ms: u64,
    /// Phi accrual threshold: lower detects sooner, with more false alarms.
    pub phi_threshold: f64,
    /// How long a dead member is remembered before it is forgotten.
    pub dead_grace_ms: u64,
    /// When a member's data-plane connection closes, how many times its
    /// port is tried again before it is taken for dead: every try refused
    /// (nothing listens: the process is gone) removes it at once, on every
    /// member, without waiting for the accrual detector. 0: off.
    pub process_death_probes: u32,
    /// The pause between those tries.
    pub process_death_probe_interval_ms: u64,
    /// A member that no member has heard from (its gossip heartbeat has
    /// not moved) for this long has its member port tried: no answer
    /// within `silent_probe_timeout_ms` (a host down, a link cut) takes it
    /// out of the view until it is heard from again; a host that accepts
    /// (a paused or slow process) keeps it. 0: off (the accrual detector alone).
    pub silent_after_ms: u64,
    /// How long that try waits for the member's host to answer.
    pub silent_probe_timeout_ms: u64,
}

/// `[timeouts]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Connect, replication acknowledgement, state transfer, lock requests.
    pub operation_ms: u64,
    /// How long `start_clustering` waits for the member to be seen by the cluster.
    pub join_ms: u64,
}

/// `[security]`: the cluster key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// The cluster key: 64 hex digits (32 bytes), relative to the config directory.
    pub key_file: String,
    /// Cluster traffic in the clear, unauthenticated. Only for trusted test networks.
    pub insecure: bool,
}

/// How replicas of an entry written on two members converge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergePolicy {
    /// The write with the later version (hybrid logical clock, then member id) wins.
    LatestWins,
}

/// `[merge]`: the merge policy (latest-wins is the only one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Merge {
    pub policy: MergePolicy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_name: "clusterhost".into(),
            network: Network::default(),
            discovery: Discovery::default(),
            failure_detection: FailureDetection::default(),
            timeouts: Timeouts::default(),
            security: Security::default(),
            merge: Merge::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for Network {
    fn default() -> Self {
        Network { port: 5701, port_auto_increment: true, port_count: 100 }
    }
}

impl Default for Multicast {
    fn default() -> Self {
        Multicast { enabled: true, group: "224.2.2.3".parse().expect("a valid address"), port: 54327, listen_ms: 1500 }
    }
}

impl Default for FailureDetection {
    fn default() -> Self {
        FailureDetection {
            gossip_interval_ms: 250,
            phi_threshold: 20.0,
            dead_grace_ms: 60_000,
            process_death_probes: 3,
            process_death_probe_interval_ms: 25,
            silent_after_ms: 750,
            silent_probe_timeout_ms: 250,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { operation_ms: 5_000, join_ms: 10_000 }
    }
}

impl Default for Security {
    fn default() -> Self {
        Security { key_file: "cluster.key".into(), insecure: false }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 << 20,
            state_page_bytes: 1 << 20,
            max_connections: 512,
            max_connections_per_address: 64,
            hello_timeout_ms: 2_000,
        }
    }
}

impl Default for Merge {
    fn default() -> Self {
        Merge { policy: MergePolicy::LatestWins }
    }
}

pub use clusterhost_plugin_api::config_file::ConfigError;
use clusterhost_plugin_api::config_file::ConfigFile;

impl Config {
    /// Reads `file`; a missing file means the defaults.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        match ConfigFile::read(file)? {
            Some(text) => Config::parse(file, &text),
            None => Ok(Config::default()),
        }
    }

    /// Parses TOML text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let source = ConfigFile { plugin: "gossip", file, text };
        let config: Config = source.parse()?;
        config.validate(&source)?;
        Ok(config)
    }

    fn validate(&self, source: &ConfigFile) -> Result<(), ConfigError> {
        if self.cluster_name.is_empty() || self.cluster_name.len() > 64 {
            return Err(source.invalid("cluster_name", "cluster_name must have 1 to 64 characters"));
        }
        for member in &self.discovery.members {
            if parse_member(member).is_none() {
                return Err(source.invalid(
                    "members",
                    format!("member {member:?} is not host:port (e.g. \"10.0.0.5:5701\" or \"node-b:5701\")"),
                ));
            }
        }
        if let Some(dns) = &self.discovery.dns {
            crate::dns::check(dns).map_err(|e| source.invalid("dns", e))?;
        }
        if !(100..=3_600_000).contains(&self.discovery.dns_interval_ms) {
            return Err(source.invalid("dns_interval_ms", "dns_interval_ms must be from 100 to 3600000 (an hour)"));
        }
        if !self.discovery.multicast.group.is_multicast() {
            return Err(
                source.invalid("group", format!("{} is not a multicast address", self.discovery.multicast.group))
            );
        }
        if self.network.port == 0 {
            return Err(source.invalid("port", "port must be from 1 to 65535"));
        }
        if self.failure_detection.gossip_interval_ms == 0 || self.timeouts.operation_ms == 0 {
            return Err(source.invalid("_ms", "intervals and timeouts must be above 0"));
        }
        let limits = &self.limits;
        if limits.max_frame_bytes < 64 << 10 || limits.max_frame_bytes > 1 << 30 {
            return Err(
                source.invalid("max_frame_bytes", "max_frame_bytes must be from 65536 (64 KiB) to 1073741824 (1 GiB)")
            );
        }
        if limits.state_page_bytes < 4 << 10 || limits.state_page_bytes > limits.max_frame_bytes / 2 {
            return Err(source.invalid(
                "state_page_bytes",
                "state_page_bytes must be from 4096 to half of max_frame_bytes (a page and its framing fit in one frame)",
            ));
        }
        if limits.max_connections == 0 || limits.max_connections_per_address == 0 || limits.hello_timeout_ms == 0 {
            return Err(source.invalid(
                "max_connections",
                "max_connections, max_connections_per_address and hello_timeout_ms must be above 0",
            ));
        }
        let detection = &self.failure_detection;
        if detection.silent_after_ms != 0 && detection.silent_after_ms < 2 * detection.gossip_interval_ms {
            return Err(source.invalid(
                "silent_after_ms",
                format!(
                    "silent_after_ms ({}) must be 0 (off) or at least twice gossip_interval_ms ({}): a member is heard from once a round",
                    detection.silent_after_ms, detection.gossip_interval_ms
                ),
            ));
        }
        if !(10..=10_000).contains(&detection.silent_probe_timeout_ms) {
            return Err(source.invalid("silent_probe_timeout_ms", "silent_probe_timeout_ms must be from 10 to 10000"));
        }
        if self.failure_detection.phi_threshold.is_nan() || self.failure_detection.phi_threshold <= 0.0 {
            return Err(source.invalid("phi_threshold", "phi_threshold must be above 0"));
        }
        Ok(())
    }

    /// `gossip_interval_ms` as a duration.
    pub fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.failure_detection.gossip_interval_ms)
    }

    /// `operation_ms` as a duration.
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.operation_ms)
    }

    /// The static members, resolved.
    pub fn static_members(&self) -> Vec<SocketAddr> {
        self.discovery.members.iter().filter_map(|m| parse_member(m)).collect()
    }
}

/// `host:port`, resolved to the first address.
pub fn parse_member(member: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let (host, port) = member.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    (host.trim_matches(['[', ']']), port).to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("conf/gossip.toml"), text)
    }

    #[test]
    fn empty_means_the_original_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.network.port, 5701);
        assert!(c.network.port_auto_increment);
        assert!(c.discovery.multicast.enabled);
        assert_eq!(c.discovery.multicast.group.to_string(), "224.2.2.3");
        assert_eq!(c.discovery.multicast.port, 54327);
    }

    #[test]
    fn the_shipped_file_parses_to_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/gossip.toml");
        assert_eq!(Config::load(&file).unwrap(), Config::default());
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse("cluster_name = \"x\"\n[network]\nport = \"many\"\n").unwrap_err().to_string();
        assert!(err.starts_with("conf/gossip.toml:3: "), "{err}");
        let err = parse("[discovery]\nmembers = [\"nohost\"]\n").unwrap_err().to_string();
        assert!(err.starts_with("conf/gossip.toml:2: member \"nohost\" is not host:port"), "{err}");
        let err = parse("\n\n[network]\nprot = 1\n").unwrap_err().to_string();
        assert!(err.starts_with("conf/gossip.toml:4: unknown field `prot`"), "{err}");
        let err = parse("[discovery.multicast]\ngroup = \"10.0.0.1\"\n").unwrap_err().to_string();
        assert!(err.contains(":2: 10.0.0.1 is not a multicast address"), "{err}");
    }

    #[test]
    fn a_dns_name_is_checked_at_load_and_resolved_later() {
        let c = parse("[discovery]\ndns = \"members.invalid:5701\"\ndns_interval_ms = 500\n").unwrap();
        assert_eq!(c.discovery.dns.as_deref(), Some("members.invalid:5701"));
        assert_eq!(c.discovery.dns_interval_ms, 500);
        let err = parse("[discovery]\n\ndns = \"members\"\n").unwrap_err().to_string();
        assert!(err.starts_with("conf/gossip.toml:3: dns \"members\" is not name:port"), "{err}");
        let err = parse("[discovery]\ndns_interval_ms = 10\n").unwrap_err().to_string();
        assert!(err.contains(":2: dns_interval_ms must be from 100"), "{err}");
    }

    #[test]
    fn members_resolve() {
        let c = parse("[discovery]\nmembers = [\"127.0.0.2:5701\", \"localhost:5702\"]\n").unwrap();
        let members = c.static_members();
        assert_eq!(members[0], "127.0.0.2:5701".parse().unwrap());
        assert_eq!(members[1].port(), 5702);
    }
}
