//! HAProxy in front of real members, for the load-balancer test and the
//! bench's `load-balancer` scenario: the backend of docs/load-balancing.md
//! read from the doc itself (only its `server` lines are the caller's), a
//! `haproxy` child process with a stats socket, and a client loop through
//! it that tells a failure of the balancer from an error a member answered.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admin::{call, DEADLINE, TOKEN};
use crate::upgrade::{cli, members_seen, GossipCluster};
use crate::{free_port, wait_until, workspace_root};

/// The `backend` block of docs/load-balancing.md, its `server` lines
/// replaced by one per address in `servers` (name, host:port).
pub fn documented_backend(servers: &[(String, String)]) -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/load-balancing.md")).unwrap();
    let start = doc.find("```haproxy\n").expect("docs/load-balancing.md has a ```haproxy block") + "```haproxy\n".len();
    let block = &doc[start..start + doc[start..].find("```").expect("the block ends")];
    assert!(block.starts_with("backend "), "the documented block is a backend: {block}");
    assert!(block.contains("option httpchk GET /readyz"), "the documented check: {block}");
    let mut lines: Vec<String> =
        block.lines().filter(|l| !l.trim_start().starts_with("server ")).map(str::to_string).collect();
    let check = block.lines().find(|l| l.trim_start().starts_with("server ")).expect("a documented server line");
    let options: Vec<&str> = check.split_whitespace().skip(3).collect();
    for (name, address) in servers {
        lines.push(format!("    server {name} {address} {}", options.join(" ")));
    }
    lines.join("\n") + "\n"
}

/// A running `haproxy` with the documented backend in front of `servers`;
/// stopped when dropped.
pub struct Haproxy {
    child: Child,
    socket: PathBuf,
    /// The frontend's URL.
    pub url: String,
}

impl Haproxy {
    /// Whether `haproxy` can be run; why not, otherwise.
    pub fn available() -> Result<(), String> {
        match Command::new("haproxy").arg("-v").output() {
            Ok(output) if output.status.success() => Ok(()),
            Ok(output) => Err(format!("`haproxy -v` failed: {}", String::from_utf8_lossy(&output.stderr))),
            Err(e) => Err(format!("haproxy is not installed ({e}); install the Debian package haproxy (.ci/run does)")),
        }
    }

    /// Starts haproxy (`-db`: in the foreground, as this process's child)
    /// with a frontend on a free port of 127.0.0.1 and the documented
    /// backend in front of `servers` (name, host:port); its config and
    /// stats socket go in `dir`. Waits until its stats socket answers.
    pub fn start(dir: &Path, servers: &[(String, String)]) -> Haproxy {
        let port = free_port();
        let socket = dir.join("haproxy.sock");
        let config = format!(
            "global\n    stats socket {} mode 600 level admin\n\ndefaults\n    mode http\n    timeout client 30s\n\n\
             frontend clusterhost_in\n    bind 127.0.0.1:{port}\n    default_backend clusterhost\n\n{}",
            socket.display(),
            documented_backend(servers)
        );
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, &config).unwrap();
        println!("haproxy.cfg:\n{config}");
        let check = Command::new("haproxy").arg("-c").arg("-f").arg(&file).output().unwrap();
        assert!(check.status.success(), "haproxy refused the config: {}", String::from_utf8_lossy(&check.stderr));
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy starts");
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[haproxy] {line}");
            }
        });
        let haproxy = Haproxy { child, socket, url: format!("http://127.0.0.1:{port}") };
        wait_until("haproxy's stats socket", DEADLINE, || haproxy.try_statuses().is_some());
        haproxy
    }

    /// Each server's status as HAProxy sees it (`UP`, `DOWN`, `UP 1/2`, ...).
    pub fn try_statuses(&self) -> Option<Vec<(String, String)>> {
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(b"show stat\n").ok()?;
        let mut text = String::new();
        stream.take(1 << 20).read_to_string(&mut text).ok()?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let column = |name: &str| header.iter().position(|c| *c == name);
        let (px, sv, status) = (column("pxname")?, column("svname")?, column("status")?);
        Some(
            lines
                .map(|l| l.split(',').collect::<Vec<_>>())
                .filter(|f| f.len() > status && f[px] == "clusterhost" && f[sv] != "BACKEND")
                .map(|f| (f[sv].to_string(), f[status].to_string()))
                .collect(),
        )
    }

    pub fn status_of(&self, server: &str) -> String {
        let statuses = self.try_statuses().unwrap_or_default();
        statuses.into_iter().find(|(s, _)| s == server).map(|(_, st)| st).unwrap_or_default()
    }

    /// Waits until HAProxy sees `n` servers, all UP.
    pub fn wait_all_up(&self, n: usize) {
        wait_until(&format!("haproxy to see {n} servers UP"), Duration::from_secs(60), || {
            let statuses = self.try_statuses().unwrap_or_default();
            statuses.len() == n && statuses.iter().all(|(_, s)| s == "UP")
        });
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who answered a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HAProxy itself (its own 502 / 503 page) or no answer at all: the
    /// request reached no member that could answer it.
    Balancer,
    /// A member answered with an error (its JSON `{"error": ...}`).
    Member,
}

/// A failed answer: a member's JSON error, or HAProxy's own page.
fn answered(what: &str, mut response: ureq::http::Response<ureq::Body>) -> (Kind, String) {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let kind = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(body) if body["error"].is_string() => Kind::Member,
        _ => Kind::Balancer,
    };
    (kind, format!("{what}: HTTP {status} {}", text.chars().take(160).collect::<String>()))
}

/// What the client loop through HAProxy saw: each failed request with when.
#[derive(Default)]
pub struct Seen {
    pub served: u64,
    /// Each failed request: when, who answered, what.
    pub failures: Vec<(Instant, Kind, String)>,
}

/// A client writing a new key and reading a known one back through
/// HAProxy every 10 ms, until stopped.
pub struct Client {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    /// Starts the loop against `url` (HAProxy's frontend): the key
    /// `sessions/probe` must hold `known`.
    pub fn start(url: &str) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::<Mutex<Seen>>::default();
        let thread = {
            let (url, stop, seen) = (url.to_string(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let agent = crate::admin::agent(Duration::from_secs(10));
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let put = agent
                        .put(&format!("{url}/api/caches/sessions/lb-{i}"))
                        .header("Authorization", format!("Bearer {TOKEN}"))
                        .send(format!("v{i}").as_bytes());
                    let put = match put {
                        Ok(r) if r.status() == 200 => Ok(()),
                        Ok(r) => Err(answered(&format!("PUT lb-{i}"), r)),
                        Err(e) => Err((Kind::Balancer, format!("PUT lb-{i}: {e}"))),
                    };
                    let get = match agent.get(&format!("{url}/api/caches/sessions/probe")).call() {
                        Ok(mut r) if r.status() == 200 => {
                            let text = r.body_mut().read_to_string().unwrap_or_default();
                            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                            if body["value"] == "known" {
                                Ok(())
                            } else {
                                Err((Kind::Member, format!("GET probe: {text}")))
                            }
                        }
                        Ok(r) => Err(answered("GET probe", r)),
                        Err(e) => Err((Kind::Balancer, format!("GET probe: {e}"))),
                    };
                    let now = Instant::now();
                    let mut seen = seen.lock().unwrap();
                    for result in [put, get] {
                        match result {
                            Ok(()) => seen.served += 1,
                            // Bounded: a loop left failing keeps the first ones.
                            Err(_) if seen.failures.len() >= 100_000 => {}
                            Err((kind, why)) => seen.failures.push((now, kind, why)),
                        }
                    }
                    drop(seen);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Client { stop, seen, thread: Some(thread) }
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.seen.lock().unwrap().served
    }

    /// Waits until `n` more requests are served (at most 60 s).
    pub fn wait_served(&self, n: u64) {
        let target = self.served() + n;
        wait_until(&format!("{n} more requests through haproxy"), Duration::from_secs(60), || self.served() >= target);
    }

    /// The failures of `kind` (any, when `None`) between `from` and `to`.
    pub fn failures_between(&self, kind: Option<Kind>, from: Instant, to: Instant) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.failures
            .iter()
            .filter(|(at, k, _)| *at >= from && *at <= to && kind.is_none_or(|kind| kind == *k))
            .map(|(_, _, why)| why.clone())
            .collect()
    }

    /// Stops the loop; what it saw.
    pub fn finish(mut self) -> Seen {
        self.halt();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A test or bench scenario that panics still stops the loop: it must not
/// go on sending requests to a port a later one may be given.
impl Drop for Client {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Three gossip members (on `plugin_file`) behind HAProxy with the
/// documented backend, the key `sessions/probe` on every member, and the
/// client loop running through HAProxy.
pub struct Balanced {
    pub cluster: GossipCluster,
    pub haproxy: Haproxy,
    pub client: Client,
}

impl Balanced {
    /// Starts it all in `dir` (the members' homes) with HAProxy's files in
    /// `haproxy_dir`; returns once the loop has been served 100 requests.
    pub fn start(plugin_file: &Path, dir: tempfile::TempDir, haproxy_dir: &Path) -> Balanced {
        let cluster = GossipCluster::start(3, plugin_file, dir);
        let servers: Vec<(String, String)> = cluster
            .names
            .iter()
            .zip(&cluster.nodes)
            .map(|(name, node)| (name.clone(), format!("127.0.0.1:{}", node.admin_port)))
            .collect();
        let haproxy = Haproxy::start(haproxy_dir, &servers);
        haproxy.wait_all_up(3);
        let url = format!("{}/api/caches/sessions/probe", haproxy.url);
        let (status, body) = call("PUT", &url, Some(TOKEN), Some(b"known"));
        assert_eq!(status, 200, "the probe key could not be written through haproxy: {body}");
        wait_until("every member to read the probe key", DEADLINE, || {
            cluster
                .nodes
                .iter()
                .all(|n| call("GET", &format!("{}/api/caches/sessions/probe", n.admin_url()), None, None).0 == 200)
        });
        let client = Client::start(&haproxy.url);
        client.wait_served(100);
        Balanced { cluster, haproxy, client }
    }

    /// `clusterhost cluster upgrade --mode rolling` from `from` to `to`
    /// (`version`), with the default drain; returns the requests that failed
    /// through HAProxy while it ran, and how long it took.
    pub fn rolling_upgrade(&self, to: &Path, from: &Path, version: &str) -> (Vec<String>, Duration) {
        let token = self.cluster.token_file();
        let started = Instant::now();
        let run = cli(&[
            "cluster",
            "upgrade",
            "--mode",
            "rolling",
            "--plugin",
            to.to_str().expect("a UTF-8 path"),
            "--previous",
            from.to_str().expect("a UTF-8 path"),
            "--nodes",
            &self.cluster.urls(),
            "--token-file",
            token.to_str().expect("a UTF-8 path"),
        ]);
        let ended = Instant::now();
        assert!(run.success, "the rolling upgrade to {version} failed: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains(&format!("done: 3 members run gossip {version}")), "{}", run.stdout);
        assert!(run.stdout.contains("drains for 3.0 s first"), "each member drains first: {}", run.stdout);
        self.client.wait_served(100);
        self.haproxy.wait_all_up(3);
        (self.client.failures_between(None, started, ended), run.elapsed)
    }

    /// SIGKILLs member `victim`, measures, restarts it and waits until it
    /// is back in the cluster and UP in HAProxy.
    pub fn kill(&mut self, victim: usize) -> Killed {
        let name = self.cluster.names[victim].clone();
        let killed = Instant::now();
        self.cluster.nodes[victim].kill();
        let (mut down, mut dropped) = (None, None);
        let (cluster, haproxy) = (&self.cluster, &self.haproxy);
        wait_until(&format!("haproxy to mark {name} down and gossip to drop it"), Duration::from_secs(60), || {
            if down.is_none() && haproxy.status_of(&name).starts_with("DOWN") {
                down = Some(Instant::now());
            }
            if dropped.is_none() && cluster.nodes.iter().enumerate().all(|(i, n)| i == victim || members_seen(n) == 2) {
                dropped = Some(Instant::now());
            }
            down.is_some() && dropped.is_some()
        });
        let (down, dropped) = (down.expect("seen down"), dropped.expect("seen dropped"));
        // A request sent just before a mark may still be answered a moment later.
        self.client.wait_served(50);
        let settle = Duration::from_secs(1);
        let killed_report = Killed {
            name,
            to_down: down - killed,
            by_balancer: self.client.failures_between(Some(Kind::Balancer), killed, down + settle),
            to_dropped: dropped - killed,
            by_members: self.client.failures_between(Some(Kind::Member), killed, dropped + settle),
        };
        self.cluster.restart(victim);
        let cluster = &self.cluster;
        wait_until("the restarted member back in a 3-member cluster", Duration::from_secs(60), || {
            cluster.nodes.iter().all(|n| members_seen(n) == 3)
        });
        self.haproxy.wait_all_up(3);
        killed_report
    }
}

/// What one SIGKILL of a member behind HAProxy showed.
#[derive(Debug, Clone)]
pub struct Killed {
    /// The member killed.
    pub name: String,
    /// From the kill until HAProxy marked it down.
    pub to_down: Duration,
    /// Requests that reached no member meanwhile (HAProxy's own errors, no answer).
    pub by_balancer: Vec<String>,
    /// From the kill until every survivor's view had dropped it.
    pub to_dropped: Duration,
    /// Requests a member answered with an error meanwhile (writes wait for
    /// every member's acknowledgement, the dead one's too).
    pub by_members: Vec<String>,
}
