//! Entry events across real `clusterhost run` processes, watched as a user
//! watches them: `clusterhost cache watch NAME --json` against a member's
//! admin API (the SSE stream `GET /api/caches/NAME/events`). A put or
//! remove on member A reaches the clustered watchers on the other members
//! with A as the origin (gossip, 3 members; redis, one server); a local
//! watcher sees only its own member's changes; a watcher on a member whose
//! gossip plugin is hot-upgraded misses none of the changes made after the
//! upgrade completed; the events reach the Prometheus counters.

mod gossip_kit;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clusterhost_tests::admin::{active_version, call_text, publish_file};
use clusterhost_tests::cluster::loopback_members;
use clusterhost_tests::redis::RedisServer;
use clusterhost_tests::{clusterhost_bin, plugin, restamped_versions, wait_until};
use gossip_kit::{
    free_member_port, gossip_home, random_key, start_local, start_redis_members, unique_cluster, wait_for_view,
    HomeSpec, Node, DEADLINE,
};
use serde_json::Value;

/// Numbers the marker keys, so each is new (an `added`).
static MARKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A `cache watch --json` process and the lines it printed, as they come.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<Value>,
    what: String,
}

impl Watch {
    /// Watches `cache` on `node` (only its own changes when `local`), and
    /// waits until the stream is open: a marker put on `marker` (a member
    /// whose changes this watch sees) comes through.
    fn start(node: &Node, cache: &str, local: bool, marker: &Node) -> Watch {
        let url = node.process.admin_url();
        let mut args = vec!["cache", "watch", cache, "--json", "--admin", &url];
        if local {
            args.push("--local");
        }
        let mut child = Command::new(clusterhost_bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("clusterhost cache watch runs");
        let stdout = child.stdout.take().expect("the watch's stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        if tx.send(value).is_err() {
                            return;
                        }
                    }
                    Err(e) => panic!("cache watch --json printed a line that is not JSON ({e}): {line}"),
                }
            }
        });
        let what = format!("{}'s {} watch of {cache}", node.name, if local { "local" } else { "clustered" });
        let mut watch = Watch { child, lines, what };
        // The stream may open after the first puts: put markers until one arrives.
        let deadline = Instant::now() + DEADLINE;
        let mut n = 0;
        loop {
            n += 1;
            let key = format!("marker-{}-{}", MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed), n);
            marker.put(cache, &key, "m");
            if let Ok(event) = watch.lines.recv_timeout(Duration::from_millis(500)) {
                assert_eq!(event["kind"], "added", "{}: {event}", watch.what);
                watch.skip_markers();
                return watch;
            }
            assert!(Instant::now() < deadline, "{} never opened", watch.what);
        }
    }

    /// Drops the marker events still queued.
    fn skip_markers(&mut self) {
        while self.lines.recv_timeout(Duration::from_millis(300)).is_ok() {}
    }

    /// The next event (markers skipped), within the deadline.
    fn next(&mut self) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("{}: no event in time", self.what));
            if !event["key"].as_str().is_some_and(|k| k.starts_with("marker-")) {
                return event;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "added k=v by a": an event in a line.
fn line(event: &Value) -> String {
    let value = event["value"].as_str().map(|v| format!("={v}")).unwrap_or_default();
    format!(
        "{} {}{value} by {}",
        event["kind"].as_str().unwrap_or("?"),
        event["key"].as_str().unwrap_or("?"),
        event["origin"].as_str().unwrap_or("?")
    )
}

fn remove(node: &Node, cache: &str, key: &str) {
    let url = format!("{}/api/caches/{cache}/{key}", node.process.admin_url());
    let (status, body) = call_text("DELETE", &url, Some(clusterhost_tests::admin::TOKEN), None);
    assert_eq!(status, 200, "DELETE {url}: {body}");
}

/// A Prometheus counter of `node` for `cache`.
fn counter(node: &Node, name: &str, cache: &str) -> f64 {
    let (status, text) = call_text("GET", &format!("{}/metrics", node.process.admin_url()), None, None);
    assert_eq!(status, 200, "{text}");
    let prefix = format!("{name}{{cache=\"{cache}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

/// What every backend shows: A's put and remove on B's and C's clustered
/// watchers with A as the origin, B's local watcher only B's own change.
fn a_put_on_one_member_reaches_the_others_with_its_origin(nodes: &[Node]) {
    let (a, others) = nodes.split_first().expect("members");
    let b = &others[0];
    let mut clustered: Vec<Watch> = others.iter().map(|n| Watch::start(n, "sessions", false, a)).collect();
    let mut local = Watch::start(b, "sessions", true, b);
    a.put("sessions", "s1", "ada");
    remove(a, "sessions", "s1");
    for watch in &mut clustered {
        assert_eq!(line(&watch.next()), format!("added s1=ada by {}", a.name), "{}", watch.what);
        assert_eq!(line(&watch.next()), format!("removed s1 by {}", a.name), "{}", watch.what);
    }
    b.put("sessions", "s2", "bob");
    assert_eq!(line(&local.next()), format!("added s2=bob by {}", b.name), "{}: A's changes never came", local.what);
    assert_eq!(line(&clustered[0].next()), format!("added s2=bob by {}", b.name));
    assert!(counter(b, "clusterhost_cache_entry_events_delivered_total", "sessions") >= 4.0);
    assert_eq!(counter(b, "clusterhost_cache_entry_events_dropped_total", "sessions"), 0.0);
}

fn gossip_nodes(names: &[&str]) -> Vec<Node> {
    let (cluster, key) = (unique_cluster("entries"), random_key());
    let mut ports = Vec::new();
    for _ in names {
        ports.push(free_member_port(&ports));
    }
    let members = loopback_members(&ports);
    let nodes: Vec<Node> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| start_local(name, *port, gossip_home(&HomeSpec::new(&cluster, &key, &members))))
        .collect();
    wait_for_view(&nodes.iter().collect::<Vec<_>>(), names);
    nodes
}

#[test]
fn listeners_on_three_gossip_processes_see_a_put_with_the_member_it_came_from() {
    a_put_on_one_member_reaches_the_others_with_its_origin(&gossip_nodes(&["ga", "gb", "gc"]));
}

#[test]
fn listeners_on_redis_processes_see_a_put_with_the_member_it_came_from() {
    let server = RedisServer::start();
    let nodes = start_redis_members(&server.url(), &unique_cluster("entries"), &["ra", "rb"]);
    wait_for_view(&nodes.iter().collect::<Vec<_>>(), &["ra", "rb"]);
    a_put_on_one_member_reaches_the_others_with_its_origin(&nodes);
}

#[test]
fn a_watcher_survives_a_hot_upgrade_of_the_strategy_and_misses_no_later_change() {
    let nodes = gossip_nodes(&["ua", "ub"]);
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut watch = Watch::start(b, "orders", false, a);
    let builds = tempfile::tempdir().expect("a build directory");
    let (upgraded, version) = restamped_versions(&plugin("gossip"), builds.path(), "gossip", 1).remove(0);
    publish_file(b.home.path(), &upgraded, "gossip.so");
    let b_url = b.process.admin_url();
    wait_until("ub to run the upgraded gossip", DEADLINE, || {
        active_version(&b_url, "gossip").as_deref() == Some(version.as_str())
    });
    wait_for_view(&[a, b], &["ua", "ub"]);
    // The upgrade is complete: every change from now on reaches the watch, in order.
    for i in 0..10 {
        a.put("orders", &format!("o{i}"), &i.to_string());
    }
    let seen: Vec<String> = (0..10).map(|_| line(&watch.next())).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("added o{i}={i} by ua")).collect();
    assert_eq!(seen, expected, "{}", watch.what);
}
