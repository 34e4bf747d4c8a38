//! Helpers for the upgrade-flow tests: gossip members as real `clusterhost`
//! processes (a static member list, one cluster key, `plugins/gossip.so`),
//! plugin builds restamped to other versions, the `clusterhost` CLI, and a
//! bounded client loop through the members' admin cache API.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterhost_plugin_api::WireVersion;
use serde_json::Value;

use crate::admin::{call, DEADLINE, TOKEN};
use crate::cluster::{free_member_port, loopback_members, write_gossip_conf};
use crate::{clusterhost_bin, plugin, restamp, wait_until, NodeProcess};

/// A gossip build restamped to `version` (and `wire`, e.g. "2.0") at `dst`.
pub fn gossip_build(dst: &Path, version: &str, wire: &str) -> PathBuf {
    restamp(&plugin("gossip"), dst, |m| {
        m.version = version.parse().expect("a semver version");
        m.wire_protocol = wire.parse::<WireVersion>().expect("MAJOR.MINOR");
    });
    dst.to_owned()
}

/// Starts a member: (home, node name, gossip port, admin port to reuse).
pub type Launch = Box<dyn Fn(&Path, &str, u16, Option<u16>) -> NodeProcess>;

/// A member as `clusterhost run --home HOME --node-name NAME --cluster-port PORT`.
fn run_member(home: &Path, name: &str, port: u16, admin: Option<u16>) -> NodeProcess {
    let (port, admin) = (port.to_string(), admin.map(|a| a.to_string()));
    let mut args = vec!["--node-name", name, "--cluster-port", &port];
    if let Some(admin) = &admin {
        args.extend(["--admin-port", admin]);
    }
    NodeProcess::start_with(home, &args, &[])
}

/// Members of one gossip cluster, each a `clusterhost run` process (or
/// another program embedding a node, [`GossipCluster::start_launched`]).
pub struct GossipCluster {
    pub nodes: Vec<NodeProcess>,
    pub names: Vec<String>,
    /// Each member's gossip port (its `--cluster-port`).
    pub ports: Vec<u16>,
    /// Temporary homes and builds; removed when dropped (after the processes).
    pub dir: tempfile::TempDir,
    /// How a member is started (and started again).
    launch: Launch,
}

impl GossipCluster {
    /// `n` members named n1..nN, each on `plugin_file` as plugins/gossip.so;
    /// waits until every member sees all of them.
    pub fn start(n: usize, plugin_file: &Path, dir: tempfile::TempDir) -> GossipCluster {
        Self::start_with(n, plugin_file, dir, "", |_| {})
    }

    /// [`start`](Self::start) with `properties` appended to each member's
    /// conf/clusterhost.properties and `prepare(home)` run on each home
    /// before its node starts; FILE.minisig, when there is one, is published
    /// beside plugins/gossip.so (before it).
    pub fn start_with(
        n: usize,
        plugin_file: &Path,
        dir: tempfile::TempDir,
        properties: &str,
        prepare: impl Fn(&Path),
    ) -> GossipCluster {
        Self::start_launched(n, plugin_file, dir, properties, prepare, Box::new(run_member))
    }

    /// [`start_with`](Self::start_with), each member started by `launch`.
    pub fn start_launched(
        n: usize,
        plugin_file: &Path,
        dir: tempfile::TempDir,
        properties: &str,
        prepare: impl Fn(&Path),
        launch: Launch,
    ) -> GossipCluster {
        let ports: Vec<u16> = (0..n).map(|_| free_member_port()).collect();
        let members = loopback_members(&ports);
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let home = dir.path().join(&name);
            let conf = home.join("conf");
            std::fs::create_dir_all(&conf).unwrap();
            std::fs::create_dir_all(home.join("plugins")).unwrap();
            std::fs::write(
                conf.join("clusterhost.properties"),
                format!("cluster.startup.delay.seconds = 0\n{properties}"),
            )
            .unwrap();
            std::fs::write(conf.join("admin.token"), format!("{TOKEN}\n")).unwrap();
            write_gossip_conf(&conf, "upgrade", &"7e".repeat(32), &members, false);
            let published = home.join("plugins/gossip.so");
            let signature = clusterhost::plugins::signature::signature_path(plugin_file);
            if signature.is_file() {
                std::fs::copy(&signature, clusterhost::plugins::signature::signature_path(&published)).unwrap();
            }
            std::fs::copy(plugin_file, &published).unwrap();
            prepare(&home);
            nodes.push(launch(&home, &name, *port, None));
            names.push(name);
        }
        for node in &nodes {
            node.wait_for_admin(DEADLINE);
        }
        let cluster = GossipCluster { nodes, names, ports, dir, launch };
        wait_until(&format!("every member to see {n} members"), Duration::from_secs(60), || {
            cluster.nodes.iter().all(|node| members_seen(node) == n)
        });
        cluster
    }

    /// Starts member `i` again on its home, name and ports (after a kill
    /// or a stop); waits until its admin API answers.
    pub fn restart(&mut self, i: usize) {
        let home = self.nodes[i].home.clone();
        let node = (self.launch)(&home, &self.names[i], self.ports[i], Some(self.nodes[i].admin_port));
        node.wait_for_admin(DEADLINE);
        self.nodes[i] = node;
    }

    /// Every member's admin URL, comma-separated (for --nodes).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NodeProcess::admin_url).collect::<Vec<_>>().join(",")
    }

    /// The token file of the first member (every member has the same token).
    pub fn token_file(&self) -> PathBuf {
        self.nodes[0].home.join("conf/admin.token")
    }

    /// Every member's (state, members seen, strategy label, senior).
    pub fn views(&self) -> Vec<(String, usize, String, String)> {
        self.nodes
            .iter()
            .map(|node| {
                let (_, body) = call("GET", &format!("{}/api/cluster", node.admin_url()), None, None);
                (
                    body["state"]["state"].as_str().unwrap_or("?").to_string(),
                    body["members"].as_array().map(Vec::len).unwrap_or(0),
                    body["strategy"].as_str().unwrap_or("").to_string(),
                    body["senior"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Every member's strategy in service: (id, version), from its
    /// `/api/cluster` label ("" for none).
    pub fn strategies(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|node| {
                let (_, body) = call("GET", &format!("{}/api/cluster", node.admin_url()), None, None);
                let label = body["strategy"].as_str().unwrap_or("");
                let (id, version) = label.split_once(' ').unwrap_or((label, ""));
                (id.to_string(), version.to_string())
            })
            .collect()
    }

    /// `clusterhost cluster upgrade --mode switch --plugin TO --previous
    /// FROM` over every member, with the members' token.
    pub fn switch_to(&self, to: &Path, from: &Path) -> CliRun {
        let (to, from) = (to.display().to_string(), from.display().to_string());
        let token = self.token_file().display().to_string();
        let nodes = self.urls();
        cli(&[
            "cluster",
            "upgrade",
            "--mode",
            "switch",
            "--plugin",
            &to,
            "--previous",
            &from,
            "--nodes",
            &nodes,
            "--token-file",
            &token,
        ])
    }

    /// Each member's active gossip record: (version, sha256).
    pub fn active_gossip(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|node| {
                let (_, body) = call("GET", &format!("{}/api/plugins", node.admin_url()), None, None);
                let record = body
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["id"] == "gossip" && r["state"] == "active")
                    .cloned()
                    .unwrap_or(Value::Null);
                (
                    record["version"].as_str().unwrap_or("-").to_string(),
                    record["sha256"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    }
}

impl Drop for GossipCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.terminate(Duration::from_secs(20))));
        }
    }
}

/// How many members `node` sees while clustered (0 otherwise).
pub fn members_seen(node: &NodeProcess) -> usize {
    let (status, body) = call("GET", &format!("{}/api/cluster", node.admin_url()), None, None);
    if status == 200 && body["state"]["state"] == "clustered" {
        body["members"].as_array().map(Vec::len).unwrap_or(0)
    } else {
        0
    }
}

/// The outcome of a `clusterhost` CLI run.
#[derive(Debug)]
pub struct CliRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `clusterhost ARGS` to completion.
pub fn cli(args: &[&str]) -> CliRun {
    let started = Instant::now();
    let output = Command::new(clusterhost_bin()).args(args).output().expect("clusterhost runs");
    let run = CliRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    };
    eprintln!("$ clusterhost {}\n{}{}", args.join(" "), run.stdout, run.stderr);
    run
}

/// What a client loop saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Requests answered with success.
    pub served: u64,
    /// Requests that failed (an error status or no answer).
    pub failed: u64,
    /// Failed requests per member index.
    pub failed_by_member: Vec<u64>,
    /// Each failure: (member index, when).
    pub failures: Vec<(usize, Instant)>,
    /// The longest time a member's loop went without a served request.
    pub longest_stall: Duration,
    /// Acknowledged writes: (key, value).
    pub acknowledged: Vec<(String, String)>,
}

/// A bounded client loop: one thread per member, each writing a new key and
/// reading back an earlier acknowledged one through that member's admin
/// cache API, every `pause`, until stopped or `max_ops` per member.
pub struct ClientLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    report: Arc<Mutex<LoadReport>>,
}

impl ClientLoad {
    pub fn start(urls: &[String], cache: &str, pause: Duration, max_ops: u64) -> ClientLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport { failed_by_member: vec![0; urls.len()], ..Default::default() }));
        let threads = urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let (url, cache, stop, report) = (url.clone(), cache.to_string(), stop.clone(), report.clone());
                std::thread::spawn(move || {
                    let agent = crate::admin::agent(Duration::from_secs(10));
                    let mut last_served = Instant::now();
                    let mut mine: Vec<(String, String)> = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) && i < max_ops {
                        i += 1;
                        let key = format!("m{index}-k{i}");
                        let value = format!("v{i}");
                        let put = agent
                            .put(&format!("{url}/api/caches/{cache}/{key}"))
                            .header("Authorization", format!("Bearer {TOKEN}"))
                            .send(value.as_bytes());
                        let put_ok = matches!(&put, Ok(r) if r.status() == 200);
                        // Read back an earlier acknowledged write (or this one).
                        let read_key = if put_ok { Some(key.clone()) } else { mine.last().map(|(k, _)| k.clone()) };
                        let read_ok = read_key.map(|k| {
                            let expected =
                                mine.iter().find(|(mk, _)| *mk == k).map(|(_, v)| v.clone()).unwrap_or(value.clone());
                            match agent.get(&format!("{url}/api/caches/{cache}/{k}")).call() {
                                Ok(mut r) if r.status() == 200 => {
                                    let text = r.body_mut().read_to_string().unwrap_or_default();
                                    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                                    body["value"].as_str() == Some(expected.as_str())
                                }
                                _ => false,
                            }
                        });
                        let now = Instant::now();
                        let mut report = report.lock().unwrap();
                        for ok in [Some(put_ok), read_ok].into_iter().flatten() {
                            if ok {
                                report.served += 1;
                                report.longest_stall = report.longest_stall.max(now - last_served);
                                last_served = now;
                            } else {
                                report.failed += 1;
                                report.failed_by_member[index] += 1;
                                report.failures.push((index, now));
                            }
                        }
                        if put_ok {
                            report.acknowledged.push((key.clone(), value.clone()));
                            mine.push((key, value));
                        }
                        drop(report);
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        ClientLoad { stop, threads, report }
    }

    /// How many requests were served so far.
    pub fn served(&self) -> u64 {
        self.report.lock().unwrap().served
    }

    /// Waits until `n` more requests are served than now (the load runs
    /// against the cluster as it is), at most `timeout`.
    pub fn wait_served(&self, n: u64, timeout: Duration) {
        let target = self.served() + n;
        crate::wait_until(&format!("{n} more requests served by the client load"), timeout, || self.served() >= target);
    }

    /// Stops the loop and returns what it saw.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let report = self.report.lock().unwrap().clone();
        report
    }
}

/// Keys of `acknowledged` that `node` cannot read back with their value.
pub fn missing_on(node: &NodeProcess, cache: &str, acknowledged: &[(String, String)]) -> Vec<String> {
    acknowledged
        .iter()
        .filter(|(key, value)| {
            let (status, body) = call("GET", &format!("{}/api/caches/{cache}/{key}", node.admin_url()), None, None);
            status != 200 || body["value"].as_str() != Some(value.as_str())
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// Waits until every member can read every acknowledged write (replication
/// and anti-entropy settle); returns what is still missing at the deadline.
pub fn wait_readable(
    cluster: &GossipCluster,
    cache: &str,
    acknowledged: &[(String, String)],
) -> Vec<(String, Vec<String>)> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let missing: Vec<(String, Vec<String>)> = cluster
            .nodes
            .iter()
            .zip(&cluster.names)
            .map(|(node, name)| (name.clone(), missing_on(node, cache, acknowledged)))
            .filter(|(_, keys)| !keys.is_empty())
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
