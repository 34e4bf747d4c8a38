//! Shared by the gossip multi-process tests (`gossip_*.rs`): node homes
//! for the real gossip plugin, nodes reached through their admin API (over
//! HTTP from the test, or with the CLI run inside a network namespace), and
//! waits with deadlines.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clusterhost_tests::admin::{call, call_text, TOKEN};
use clusterhost_tests::{clusterhost_bin, plugin, restamp, wait_until, NodeProcess};
use serde_json::Value;

/// How long a test waits for the cluster to reach a state.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// 32 random bytes as 64 hex digits: a cluster key.
pub fn random_key() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cluster name no other test (or run) shares.
pub fn unique_cluster(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// What goes into a member's home.
pub struct HomeSpec<'a> {
    pub cluster: &'a str,
    pub key: &'a str,
    /// The static member list, `host:port`.
    pub members: &'a [String],
    /// Multicast discovery (only inside network namespaces: it sends to 224.0.0.0/4).
    pub multicast: bool,
    /// The gossip plugin file to publish (default: the build's).
    pub plugin: Option<&'a Path>,
}

impl<'a> HomeSpec<'a> {
    pub fn new(cluster: &'a str, key: &'a str, members: &'a [String]) -> Self {
        HomeSpec { cluster, key, members, multicast: false, plugin: None }
    }
}

pub use clusterhost_tests::admin::member_home;

/// A home with conf/gossip.toml, conf/cluster.key, a quick start, metrics
/// on, the admin token, and the gossip plugin as plugins/gossip.so.
pub fn gossip_home(spec: &HomeSpec) -> tempfile::TempDir {
    let built = plugin("gossip");
    member_home(spec.plugin.unwrap_or(&built), "gossip.so", |conf| {
        write_gossip_conf(conf, spec.cluster, spec.key, spec.members, spec.multicast)
    })
}

/// The gossip plugin restamped to speak wire protocol `major.minor`, in `dir`.
pub fn gossip_with_wire(dir: &Path, major: u32, minor: u32) -> PathBuf {
    let file = dir.join(format!("gossip-wire-{major}.{minor}.so"));
    restamp(&plugin("gossip"), &file, |m| {
        m.wire_protocol = clusterhost_plugin_api::manifest::WireVersion { major, minor };
    });
    file
}

/// How the test reaches a node's admin API.
#[derive(Clone)]
pub enum Access {
    /// Over HTTP from the test process (the node's admin API on 127.0.0.1).
    Http(String),
    /// With `clusterhost` CLI commands run inside network namespace `ns`
    /// against `url` (the namespace's own loopback); the token file for writes.
    Netns { ns: String, url: String, token_file: PathBuf },
}

/// A running member: its process, home, name and how to reach it.
pub struct Node {
    pub name: String,
    pub process: NodeProcess,
    pub home: tempfile::TempDir,
    pub access: Access,
}

/// Starts a member on 127.0.0.1 (`--bind`, `--cluster-port`, a free `--admin-port`).
pub fn start_local(name: &str, port: u16, home: tempfile::TempDir) -> Node {
    let port = port.to_string();
    let process = NodeProcess::start_with(
        home.path(),
        &["--node-name", name, "--cluster-port", &port, "--bind", "127.0.0.1"],
        &[],
    );
    let access = Access::Http(process.admin_url());
    Node { name: name.into(), process, home, access }
}

/// Starts a member inside network namespace `ns`, bound to `ip`, its admin
/// API on the namespace's 127.0.0.1:9090.
pub fn start_in_netns(ns: &str, name: &str, ip: &str, port: u16, home: tempfile::TempDir) -> Node {
    let port = port.to_string();
    let process = NodeProcess::start_wrapped(
        &["ip", "netns", "exec", ns],
        home.path(),
        &["--node-name", name, "--cluster-port", &port, "--bind", ip, "--admin-port", "9090"],
        &[],
    );
    let access = Access::Netns {
        ns: ns.into(),
        url: "http://127.0.0.1:9090".into(),
        token_file: home.path().join("conf/admin.token"),
    };
    Node { name: name.into(), process, home, access }
}

/// A CLI run inside `ns`: (success, stdout, stderr).
fn cli_in(ns: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(clusterhost_bin())
        .args(args)
        .output()
        .expect("ip netns exec runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Node {
    /// GET /api/cluster (`clusterhost cluster status --json`), or None while
    /// the API does not answer.
    pub fn status(&self) -> Option<Value> {
        match &self.access {
            Access::Http(url) => {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let mut response = agent.get(&format!("{url}/api/cluster")).call().ok()?;
                if response.status() != 200 {
                    return None;
                }
                serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
            }
            Access::Netns { ns, url, .. } => {
                let (ok, out, _) = cli_in(ns, &["cluster", "status", "--json", "--admin", url]);
                if ok {
                    serde_json::from_str(&out).ok()
                } else {
                    None
                }
            }
        }
    }

    /// Writes `cache/key = value` through the admin API: Err with what the
    /// node answered when it refused.
    pub fn try_put(&self, cache: &str, key: &str, value: &str) -> Result<(), String> {
        match &self.access {
            Access::Http(url) => {
                let (status, body) =
                    call_text("PUT", &format!("{url}/api/caches/{cache}/{key}"), Some(TOKEN), Some(value.as_bytes()));
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            }
            Access::Netns { ns, url, token_file } => {
                let token = token_file.to_str().expect("a UTF-8 path");
                let (ok, out, err) =
                    cli_in(ns, &["cache", "put", cache, key, value, "--admin", url, "--token-file", token]);
                if ok {
                    Ok(())
                } else {
                    Err(format!("{out}{err}"))
                }
            }
        }
    }

    /// Writes `cache/key = value` through the admin API; panics on refusal.
    pub fn put(&self, cache: &str, key: &str, value: &str) {
        if let Err(refused) = self.try_put(cache, key, value) {
            panic!("put {cache}/{key} on {}: {refused}", self.name);
        }
    }

    /// Reads `cache/key` through the admin API: None when absent.
    pub fn get(&self, cache: &str, key: &str) -> Option<String> {
        match &self.access {
            Access::Http(url) => {
                let (status, body) = call("GET", &format!("{url}/api/caches/{cache}/{key}"), None, None);
                match status {
                    200 => Some(body["value"].as_str().expect("a string value").to_string()),
                    404 => None,
                    other => panic!("get {cache}/{key} on {}: {other} {body}", self.name),
                }
            }
            Access::Netns { ns, url, .. } => {
                let (ok, out, err) = cli_in(ns, &["cache", "get", cache, key, "--admin", url, "--json"]);
                if ok {
                    let body: Value = serde_json::from_str(&out).expect("the CLI prints JSON");
                    Some(body["value"].as_str().expect("a string value").to_string())
                } else if err.contains("(HTTP 404 ") {
                    None
                } else {
                    panic!("get {cache}/{key} on {}: {out}{err}", self.name)
                }
            }
        }
    }

    /// The strategy's counter `name` from /metrics.
    pub fn strategy_counter(&self, name: &str) -> Option<u64> {
        let Access::Http(url) = &self.access else { panic!("metrics are read over HTTP") };
        let (status, text) = call_text("GET", &format!("{url}/metrics"), None, None);
        if status != 200 {
            return None;
        }
        let needle = format!("clusterhost_strategy_counter{{name=\"{name}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&needle)).and_then(|v| v.trim().parse::<f64>().ok()).map(|v| v as u64)
    }

    /// Waits until the admin API answers.
    pub fn wait_for_admin(&self) {
        wait_until(&format!("{}'s admin API", self.name), DEADLINE, || self.status().is_some());
    }
}

/// The clustered view of one status: (sorted member ids, senior), or None
/// while the node is not clustered.
pub fn view_of(status: &Value) -> Option<(Vec<String>, Option<String>)> {
    if status["state"]["state"] != "clustered" {
        return None;
    }
    let mut ids: Vec<String> =
        status["members"].as_array()?.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect();
    ids.sort();
    Some((ids, status["senior"].as_str().map(str::to_string)))
}

/// How many members a status marks senior.
pub fn seniors_marked(status: &Value) -> usize {
    status["members"].as_array().map(|m| m.iter().filter(|m| m["senior"] == true).count()).unwrap_or(0)
}

/// Waits until every node in `nodes` is clustered with exactly `expected`
/// as members and all name the same senior, one of them; returns the senior.
pub fn wait_for_view(nodes: &[&Node], expected: &[&str]) -> String {
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let statuses: Vec<Option<Value>> = nodes.iter().map(|n| n.status()).collect();
        let views: Vec<Option<(Vec<String>, Option<String>)>> =
            statuses.iter().map(|s| s.as_ref().and_then(view_of)).collect();
        let seniors: Vec<Option<String>> = views.iter().map(|v| v.as_ref().and_then(|v| v.1.clone())).collect();
        let agreed = views.iter().all(|v| v.as_ref().is_some_and(|(ids, _)| *ids == expected))
            && seniors[0].is_some()
            && seniors.iter().all(|s| *s == seniors[0])
            && statuses.iter().all(|s| s.as_ref().is_some_and(|s| seniors_marked(s) == 1));
        if agreed {
            let senior = seniors[0].clone().expect("checked above");
            assert!(expected.contains(&senior), "the senior {senior} is not one of {expected:?}");
            return senior;
        }
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {expected:?} with one senior on all of {names:?}; last views: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A port free on 127.0.0.1 for both UDP and TCP (the member port), not in `taken`.
pub fn free_member_port(taken: &[u16]) -> u16 {
    loop {
        let port = clusterhost_tests::cluster::free_member_port();
        if !taken.contains(&port) {
            return port;
        }
    }
}

/// Members `names` on 127.0.0.1, each a `clusterhost run` process with the
/// redis plugin on the `redis-server` at `url`, under key prefix `prefix`.
pub fn start_redis_members(url: &str, prefix: &str, names: &[&str]) -> Vec<Node> {
    let mut ports = Vec::new();
    names
        .iter()
        .map(|name| {
            let port = free_member_port(&ports);
            ports.push(port);
            let home = member_home(&plugin("redis_strategy"), "redis_strategy.so", |conf| {
                clusterhost_tests::cluster::write_redis_conf(conf, "single", &[url.to_string()], prefix)
            });
            start_local(name, port, home)
        })
        .collect()
}

#[allow(unused_imports)]
pub use clusterhost_tests::cluster::loopback_members;
use clusterhost_tests::cluster::write_gossip_conf;

/// When a log line containing every one of `parts` was read, from line `from` on.
pub fn log_time(node: &NodeProcess, from: usize, parts: &[&str]) -> Option<Instant> {
    node.timed_log_since(from).into_iter().find(|(_, l)| parts.iter().all(|p| l.contains(p))).map(|(t, _)| t)
}

/// Whether the process runs in CI (where every test must run, not skip).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}
