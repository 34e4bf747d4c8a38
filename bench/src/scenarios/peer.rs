//! A peer side by side (issue 22 item 7): hashicorp memberlist with its
//! `DefaultLANConfig`, as a small Go program (bench/peer/memberlist), beside
//! the gossip strategy in `clusterhost run` processes, in the same run on the
//! same machine: join time, failure detection after SIGKILL, and idle bytes/s
//! per member on the wire.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterhost_plugin_api::sync::lock;
use clusterhost_tests::cluster::free_member_port;
use clusterhost_tests::netns::{self, in_netns, Lab};
use clusterhost_tests::plugin;
use clusterhost_tests::upgrade::GossipCluster;

use super::failure::{kill, senior_of};
use super::{Ctx, Mode, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct Peer;

/// Namespaces of this scenario are named `chpeer-PID-TAG`.
const PREFIX: &str = "chpeer";

/// The key both systems seal their traffic with (gossip's cluster key in the
/// test kit is the same 32 bytes).
const KEY: &str = "7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e";

/// How long a member may take to see the others, or a kill to be noticed.
const DEADLINE: Duration = Duration::from_secs(120);

impl Scenario for Peer {
    fn name(&self) -> &'static str {
        "peer"
    }

    fn about(&self) -> &'static str {
        "hashicorp memberlist (Debian's packaged source, `DefaultLANConfig`, AES key set like gossip's cluster key) \
         in N one-member Go processes beside N `clusterhost run` processes on gossip, alternately, in this one \
         run. Join: from spawning the first process to every member knowing all N (memberlist: each process's \
         `NotifyJoin` lines on stdout; gossip: each admin API listing N). Detection: SIGKILL of one member (gossip: \
         one that is not the senior) to the last survivor noticing (memberlist: `NotifyLeave`; gossip: `member \
         left` in its log). Idle bytes/s per member: as root, the loopback `tx_bytes` of a network namespace \
         holding only that cluster, over a window after it settled (IP and UDP/TCP headers included), ÷ N. The \
         ratios are gossip's median ÷ memberlist's (below 1: gossip does better). `all` installs Go and the \
         memberlist source with apt when they are missing; quick mode runs only when they are present."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let exe = match memberlist_peer(ctx.mode) {
            Ok(exe) => exe,
            Err(why) => {
                println!("  peer not measured: {why}");
                for (id, label) in ratio_rows() {
                    report.not_measured(&id, &label, Unit::Ratio, &format!("not measured: {why}"));
                }
                return;
            }
        };
        let gossip = plugin("gossip");
        let sizes: &[(usize, usize)] = ctx.pick(&[(3, 10), (10, 5)], &[(3, 1)]);
        for &(n, runs) in sizes {
            let (mut ml_join, mut ml_detect, mut g_join, mut g_detect) = (vec![], vec![], vec![], vec![]);
            for _ in 0..runs {
                // Alternately, so drift of the machine's load touches both alike.
                let (join, detect) = memberlist_kill(&exe, n);
                ml_join.push(join);
                ml_detect.push(detect);
                let dir = tempfile::tempdir_in(ctx.work).expect("a scratch directory");
                let started = Instant::now();
                let mut cluster = GossipCluster::start(n, &gossip, dir);
                g_join.push(started.elapsed());
                let mut alive: Vec<usize> = (0..n).collect();
                let senior = senior_of(&cluster, &alive);
                let victim =
                    *alive.iter().find(|i| cluster.names[**i] != senior).expect("a member that is not the senior");
                g_detect.push(kill(&mut cluster, &mut alive, victim).into_iter().max().expect("survivors"));
            }
            let per_run = "per run, the two systems alternately";
            report.add_durations(
                &format!("peer.join.memberlist.{n}"),
                &format!("memberlist: join → known on all, {n} processes"),
                Unit::Seconds,
                &ml_join,
                per_run,
            );
            report.add_durations(
                &format!("peer.join.gossip.{n}"),
                &format!("gossip: join → visible on all, {n} processes"),
                Unit::Seconds,
                &g_join,
                per_run,
            );
            report.add_durations(
                &format!("peer.detect.memberlist.{n}"),
                &format!("memberlist: SIGKILL → the last survivor's NotifyLeave, {n} members"),
                Unit::Seconds,
                &ml_detect,
                per_run,
            );
            report.add_durations(
                &format!("peer.detect.gossip.{n}"),
                &format!("gossip: SIGKILL → the last survivor's `member left`, {n} members"),
                Unit::Seconds,
                &g_detect,
                per_run,
            );
            ratio(report, "join", n, &g_join, &ml_join);
            ratio(report, "detect", n, &g_detect, &ml_detect);
        }
        let why_not = netns::unavailable();
        let window = ctx.pick(Duration::from_secs(31), Duration::from_secs(2));
        for &(n, _) in sizes {
            if let Some(why) = &why_not {
                let why = format!("not measured: {why}");
                report.not_measured(&format!("peer.idle_ratio.{n}"), &ratio_label("idle", n), Unit::Ratio, &why);
                continue;
            }
            let ml = memberlist_idle(&exe, n, window);
            let g = gossip_idle(&gossip, n, window, ctx.work);
            let note = format!("namespace loopback tx over {} s after settling, ÷ {n}", window.as_secs());
            report.add(
                &format!("peer.idle.memberlist.{n}"),
                &format!("memberlist: idle bytes/s on the wire per member, {n} members"),
                Unit::Bytes,
                &[ml],
                &note,
            );
            report.add(
                &format!("peer.idle.gossip.{n}"),
                &format!("gossip: idle bytes/s on the wire per member, {n} members"),
                Unit::Bytes,
                &[g],
                &note,
            );
            report.add(
                &format!("peer.idle_ratio.{n}"),
                &ratio_label("idle", n),
                Unit::Ratio,
                &[g / ml],
                "gossip ÷ memberlist",
            );
        }
    }
}

/// The ratio rows' ids and labels (for the not-measured case).
fn ratio_rows() -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for n in [3, 10] {
        for what in ["join", "detect", "idle"] {
            rows.push((format!("peer.{what}_ratio.{n}"), ratio_label(what, n)));
        }
    }
    rows
}

/// The label of ratio row `peer.{what}_ratio.{n}`.
fn ratio_label(what: &str, n: usize) -> String {
    let figure = match what {
        "join" => "join time",
        "detect" => "failure detection",
        _ => "idle bytes/s per member",
    };
    format!("{figure}, gossip ÷ memberlist, {n} members")
}

/// Gossip's median ÷ memberlist's, as one figure.
fn ratio(report: &mut Report, what: &str, n: usize, gossip: &[Duration], memberlist: &[Duration]) {
    let median = |samples: &[Duration]| {
        let mut s: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    report.add(
        &format!("peer.{what}_ratio.{n}"),
        &ratio_label(what, n),
        Unit::Ratio,
        &[median(gossip) / median(memberlist)],
        "median ÷ median",
    );
}

/// The memberlist peer program, built into the target directory; in `all`
/// mode Go and the memberlist source are installed with apt when missing.
fn memberlist_peer(mode: Mode) -> Result<PathBuf, String> {
    let gopath = Path::new("/usr/share/gocode");
    let source = gopath.join("src/github.com/hashicorp/memberlist");
    let have = || Command::new("go").arg("version").output().is_ok_and(|o| o.status.success()) && source.is_dir();
    if !have() {
        if mode == Mode::Quick {
            return Err("quick mode installs nothing: Go (golang-go) or the memberlist source \
                        (golang-github-hashicorp-memberlist-dev) is missing"
                .into());
        }
        println!("  installing golang-go and golang-github-hashicorp-memberlist-dev with apt-get");
        let installed = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "golang-go", "golang-github-hashicorp-memberlist-dev"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
        if !installed.is_ok_and(|s| s.success()) || !have() {
            return Err("`apt-get install golang-go golang-github-hashicorp-memberlist-dev` failed (run `apt-get \
                        update` first, as root)"
                .into());
        }
    }
    let dir = clusterhost_tests::profile_dir().join("memberlist-peer");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let exe = dir.join("memberlist-peer");
    let main = clusterhost_tests::workspace_root().join("bench/peer/memberlist/main.go");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&exe)
        .arg(&main)
        .env("GOPATH", gopath)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.join("cache"))
        .output()
        .map_err(|e| format!("`go build` cannot be run: {e}"))?;
    if !out.status.success() {
        return Err(format!("`go build {}` failed: {}", main.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(exe)
}

/// One memberlist member process; killed when dropped.
struct Member {
    name: String,
    child: Child,
    /// Each stdout line with when it was read.
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Member {
    /// Member `name` on 127.0.0.1:`port`, joining `join` when given; in
    /// network namespace `ns` when given.
    fn start(exe: &Path, name: &str, port: u16, join: Option<u16>, ns: Option<&str>) -> Member {
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command.args(["-name", name, "-port", &port.to_string(), "-key", KEY]);
        if let Some(join) = join {
            command.args(["-join", &format!("127.0.0.1:{join}")]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} cannot be started: {e}", exe.display()));
        let stdout = child.stdout.take().expect("a piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lock(&sink).push((Instant::now(), line));
            }
        });
        Member { name: name.to_string(), child, lines }
    }

    /// How many members it knows now (joined and not left, itself included).
    fn known(&self) -> usize {
        let mut known = std::collections::BTreeSet::new();
        for (_, line) in lock(&self.lines).iter() {
            if let Some(name) = line.strip_prefix("join ") {
                known.insert(name.to_string());
            } else if let Some(name) = line.strip_prefix("left ") {
                known.remove(name);
            }
        }
        known.insert(self.name.clone());
        known.len()
    }

    /// When it printed `line` (waits up to [`DEADLINE`]).
    fn when(&self, line: &str) -> Instant {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some((at, _)) = lock(&self.lines).iter().find(|(_, l)| l == line) {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "memberlist member {} did not print {line:?} within {DEADLINE:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` memberlist members, every one joining the first; returns them and
/// the time from spawning the first until every one knows all `n`.
fn memberlist_cluster(exe: &Path, n: usize, ns: Option<&str>) -> (Vec<Member>, Duration) {
    let ports: Vec<u16> = (0..n).map(|_| free_member_port()).collect();
    let started = Instant::now();
    let members: Vec<Member> =
        (0..n).map(|i| Member::start(exe, &format!("m{}", i + 1), ports[i], (i > 0).then_some(ports[0]), ns)).collect();
    let deadline = started + DEADLINE;
    while !members.iter().all(|m| m.known() == n) {
        assert!(Instant::now() < deadline, "{n} memberlist members did not all know each other within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    (members, started.elapsed())
}

/// Join time, and the time from SIGKILL of the last member to the last
/// survivor's `left` line for it.
fn memberlist_kill(exe: &Path, n: usize) -> (Duration, Duration) {
    let (mut members, joined) = memberlist_cluster(exe, n, None);
    let mut victim = members.pop().expect("members");
    let killed = Instant::now();
    let _ = victim.child.kill();
    let _ = victim.child.wait();
    let left = format!("left {}", victim.name);
    let last = members.iter().map(|m| m.when(&left)).max().expect("survivors");
    (joined, last.saturating_duration_since(killed))
}

/// Transmitted bytes of `ns`'s loopback.
fn tx_bytes(ns: &str) -> f64 {
    let out = Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "lo"]).output().expect("ip can be run");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
    links[0]["stats64"]["tx"]["bytes"].as_f64().expect("the loopback's tx bytes")
}

/// Settling time after a cluster formed, before the idle window starts.
const SETTLE: Duration = Duration::from_secs(3);

/// Bytes/s `ns`'s loopback sends over `window`, after [`SETTLE`].
fn idle_rate(ns: &str, window: Duration) -> f64 {
    std::thread::sleep(SETTLE);
    let before = tx_bytes(ns);
    let started = Instant::now();
    std::thread::sleep(window);
    (tx_bytes(ns) - before) / started.elapsed().as_secs_f64()
}

/// memberlist's idle bytes/s per member of `n`, in a namespace of its own.
fn memberlist_idle(exe: &Path, n: usize, window: Duration) -> f64 {
    let lab = Lab::isolated(PREFIX, &format!("ml{n}"));
    let ns = lab.members[0].clone();
    let (members, _) = memberlist_cluster(exe, n, Some(&ns));
    let rate = idle_rate(&ns, window);
    drop(members);
    rate / n as f64
}

/// gossip's idle bytes/s per member of `n` `clusterhost run` processes, in a
/// namespace of its own.
fn gossip_idle(gossip: &Path, n: usize, window: Duration, work: &Path) -> f64 {
    let lab = Lab::isolated(PREFIX, &format!("g{n}"));
    let ns = lab.members[0].clone();
    in_netns(&ns, || {
        let dir = tempfile::tempdir_in(work).expect("a scratch directory");
        let cluster = GossipCluster::start(n, gossip, dir);
        let rate = idle_rate(&ns, window);
        drop(cluster);
        rate / n as f64
    })
}
