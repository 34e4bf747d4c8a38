//! `/healthz` and `/readyz` on a real node (the fixture's one-member memory
//! strategy): readiness from start to clustered, through a hot replace of
//! the strategy (uploaded with a drain, and dropped into plugins/), with
//! clustering disabled cluster-wide, and without a token off loopback.
//! A poller reads both endpoints every 20 ms and records each change of
//! readiness; healthz must answer 200 at every poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterhost_plugin_api::CLUSTER_STRATEGY;
use clusterhost_tests::admin::{call, home_with_strategy, publish_strategy, DEADLINE, TOKEN};
use clusterhost_tests::{plugin, restamp, wait_until, NodeProcess};

/// Each change of `/readyz` seen: (status, state, reason).
type Seen = Vec<(u16, String, String)>;

/// Polls `/readyz` and `/healthz` of `url` until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    /// healthz answers other than 200 (status, body).
    unhealthy: Arc<Mutex<Vec<String>>>,
    polls: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(url: &str) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::<Mutex<Seen>>::default();
        let unhealthy = Arc::<Mutex<Vec<String>>>::default();
        let polls = Arc::<Mutex<u64>>::default();
        let thread = {
            let (url, stop, seen, unhealthy, polls) =
                (url.to_string(), stop.clone(), seen.clone(), Arc::clone(&unhealthy), Arc::clone(&polls));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = call("GET", &format!("{url}/readyz"), None, None);
                    let state = body["state"].as_str().unwrap_or("?").to_string();
                    let reason = body["reason"].as_str().unwrap_or("").to_string();
                    let mut seen = seen.lock().unwrap();
                    if seen.last().is_none_or(|(s, st, r)| (*s, st, r) != (status, &state, &reason)) {
                        seen.push((status, state, reason));
                    }
                    drop(seen);
                    let (status, body) = call("GET", &format!("{url}/healthz"), None, None);
                    if status != 200 || body["state"] != "serving" {
                        unhealthy.lock().unwrap().push(format!("{status} {body}"));
                    }
                    *polls.lock().unwrap() += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Poller { stop, seen, unhealthy, polls, thread: Some(thread) }
    }

    /// Every change seen so far, and forgets them.
    fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Waits until readyz was last seen with `status` and a reason containing `part`.
    fn wait_for(&self, status: u16, part: &str) {
        wait_until(&format!("/readyz {status} with {part:?}"), DEADLINE, || {
            self.seen.lock().unwrap().last().is_some_and(|(s, _, r)| *s == status && r.contains(part))
        });
    }

    fn finish(mut self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let unhealthy = self.unhealthy.lock().unwrap().clone();
        let polls = *self.polls.lock().unwrap();
        (unhealthy, polls)
    }
}

/// The index of the first change after `from` whose status is `status`
/// and whose reason contains `part`.
fn position(seen: &Seen, from: usize, status: u16, part: &str) -> Option<usize> {
    seen.iter().enumerate().skip(from).find(|(_, (s, _, r))| *s == status && r.contains(part)).map(|(i, _)| i)
}

/// The fixture strategy as `strat VERSION`, written to `dst`: what an upload sends.
fn strategy_build(dst: &std::path::Path, version: &str) -> Vec<u8> {
    restamp(&plugin("fixture_plugin"), dst, |m| {
        m.id = "strat".into();
        m.version = version.parse().unwrap();
        m.provides = vec![CLUSTER_STRATEGY.into()];
        m.metadata.insert("strategy".into(), "memory".into());
    });
    std::fs::read(dst).unwrap()
}

#[test]
fn readyz_follows_start_hot_replace_and_the_cluster_wide_switch_while_healthz_stays_200() {
    // A startup delay long enough to be seen: not ready while it runs.
    let home = home_with_strategy("cluster.startup.delay.seconds = 2\n");
    let node = NodeProcess::start_with(home.path(), &["--node-name", "r1"], &[]);
    node.wait_for_admin(DEADLINE);
    let url = node.admin_url();
    let poller = Poller::start(&url);

    // Start -> ready: starting (503) first, then clustered (200).
    poller.wait_for(200, "clustered");
    let seen = poller.take();
    let starting = position(&seen, 0, 503, "clustering is starting").unwrap_or_else(|| panic!("{seen:#?}"));
    let ready = position(&seen, starting, 200, "clustered (strat 1.0.0)").unwrap_or_else(|| panic!("{seen:#?}"));
    assert_eq!(seen[starting].1, "not_ready", "{seen:#?}");
    assert_eq!(seen[ready].1, "ready", "{seen:#?}");

    // A hot replace uploaded with a drain: not ready while it drains (the
    // node has not touched the strategy yet), while the new version comes
    // in and clustering starts again, then ready on 1.1.0.
    let build = strategy_build(&home.path().join("strat-1.1.0.so"), "1.1.0");
    let upload = {
        let url = url.clone();
        std::thread::spawn(move || {
            call("POST", &format!("{url}/api/plugins?name=strategy.so&drain=1.5"), Some(TOKEN), Some(&build))
        })
    };
    poller.wait_for(503, "draining: the upload of plugins/strategy.so (strat 1.1.0) starts in");
    let (status, body) = call("GET", &format!("{url}/api/cluster"), None, None);
    assert!(status == 200 && body["strategy"] == "strat 1.0.0", "still on 1.0.0 while it drains: {body}");
    let (status, body) = upload.join().unwrap();
    assert_eq!((status, body["outcome"].as_str()), (200, Some("replaced")), "{body}");
    poller.wait_for(200, "clustered (strat 1.1.0)");
    let seen = poller.take();
    let drain = position(&seen, 0, 503, "draining").unwrap_or_else(|| panic!("{seen:#?}"));
    let starting = position(&seen, drain, 503, "clustering is starting (strat 1.1.0)");
    let ready = position(&seen, drain, 200, "clustered (strat 1.1.0)").unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(starting.is_some_and(|s| s < ready), "not ready until it re-joined: {seen:#?}");
    assert!(!seen[drain..ready].iter().any(|(s, _, _)| *s == 200), "ready again only once re-joined: {seen:#?}");

    // A hot replace dropped into plugins/ (no drain): not ready, then ready on 1.2.0.
    publish_strategy(home.path(), "strategy.so", "1.2.0");
    poller.wait_for(200, "clustered (strat 1.2.0)");
    let seen = poller.take();
    let down = position(&seen, 0, 503, "").unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(position(&seen, down, 200, "clustered (strat 1.2.0)").is_some(), "{seen:#?}");

    // Clustering disabled cluster-wide: standalone is what was asked, so
    // ready, and the reason says who disabled it. Enabled again: ready once
    // clustered.
    let (status, body) = call("POST", &format!("{url}/api/cluster/disable"), Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    poller.wait_for(200, "standalone, as asked: clustering was disabled cluster-wide by r1");
    let (status, body) = call("POST", &format!("{url}/api/cluster/enable"), Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    poller.wait_for(200, "clustered (strat 1.2.0)");

    let (unhealthy, polls) = poller.finish();
    assert!(polls > 50, "the poller ran {polls} times");
    assert!(unhealthy.is_empty(), "healthz must answer 200 while the node serves: {unhealthy:?}");
}

#[test]
fn a_bad_drain_is_refused_before_anything_is_written() {
    let home = home_with_strategy("cluster.startup.delay.seconds = 0\n");
    let node = NodeProcess::start_with(home.path(), &["--node-name", "r2"], &[]);
    node.wait_for_admin(DEADLINE);
    let url = node.admin_url();
    wait_until("ready", DEADLINE, || call("GET", &format!("{url}/readyz"), None, None).0 == 200);
    let build = strategy_build(&home.path().join("strat-1.1.0.so"), "1.1.0");
    for drain in ["abc", "-1", "61", "NaN"] {
        let (status, body) =
            call("POST", &format!("{url}/api/plugins?name=strategy.so&drain={drain}"), Some(TOKEN), Some(&build));
        assert_eq!(status, 400, "drain={drain}: {body}");
        assert!(body["error"].as_str().unwrap().contains("is not a number of seconds from 0 to 60"), "{body}");
    }
    let (_, body) = call("GET", &format!("{url}/api/cluster"), None, None);
    assert_eq!(body["strategy"], "strat 1.0.0", "{body}");
}

/// Off loopback every API request needs the token; the health checks do
/// not (a load balancer has none), and they answer only state and reason.
#[test]
fn health_checks_need_no_token_off_loopback_and_carry_only_state_and_reason() {
    let home = home_with_strategy("cluster.startup.delay.seconds = 0\n");
    let node = NodeProcess::start_with(home.path(), &["--node-name", "r3", "--admin-bind", "0.0.0.0"], &[]);
    node.wait_for_admin(DEADLINE);
    let url = node.admin_url();
    let (status, _) = call("GET", &format!("{url}/api/cluster"), None, None);
    assert_eq!(status, 401, "off loopback a read needs the token");
    wait_until("ready without a token", DEADLINE, || call("GET", &format!("{url}/readyz"), None, None).0 == 200);
    for path in ["/readyz", "/healthz"] {
        let (status, body) = call("GET", &format!("{url}{path}"), None, None);
        assert_eq!(status, 200, "{path}: {body}");
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|k| *k == "state" || *k == "reason"), "{path}: {body}");
    }
    // The same guards as every route: only GET, and Host must name the node.
    let (status, _) = call("POST", &format!("{url}/readyz"), None, None);
    assert_eq!(status, 405, "only GET");
    let (status, text) = clusterhost_tests::admin::call_with_headers(
        "GET",
        &format!("{url}/readyz"),
        &[("Host", "rebind.attacker.example".to_string())],
        None,
    );
    assert_eq!(status, 421, "{text}");
}

/// `clusterhost cluster upgrade` drains the member before it replaces its
/// strategy: not ready (draining) while the running version still serves,
/// then not ready until it re-joined on the new one, then ready.
#[test]
fn cluster_upgrade_turns_the_member_not_ready_before_the_replace_and_ready_after_the_rejoin() {
    let home = home_with_strategy("cluster.startup.delay.seconds = 1\n");
    let previous = home.path().join("strat-1.0.0.so");
    std::fs::copy(home.path().join("plugins/strategy.so"), &previous).unwrap();
    let new = home.path().join("strat-1.1.0.so");
    strategy_build(&new, "1.1.0");
    let node = NodeProcess::start_with(home.path(), &["--node-name", "u1"], &[]);
    node.wait_for_admin(DEADLINE);
    let url = node.admin_url();
    let poller = Poller::start(&url);
    poller.wait_for(200, "clustered (strat 1.0.0)");
    poller.take();
    let token = home.path().join("conf/admin.token");
    let run = clusterhost_tests::upgrade::cli(&[
        "cluster",
        "upgrade",
        "--mode",
        "rolling",
        "--plugin",
        new.to_str().unwrap(),
        "--previous",
        previous.to_str().unwrap(),
        "--nodes",
        &url,
        "--token-file",
        token.to_str().unwrap(),
        "--drain",
        "1.5",
    ]);
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("drains for 1.5 s first"), "{}", run.stdout);
    poller.wait_for(200, "clustered (strat 1.1.0)");
    let seen = poller.take();
    let drain = position(&seen, 0, 503, "draining: the upload of plugins/strategy.so (strat 1.1.0)")
        .unwrap_or_else(|| panic!("{seen:#?}"));
    let ready = position(&seen, drain, 200, "clustered (strat 1.1.0)").unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(!seen[..drain].iter().any(|(s, _, _)| *s != 200), "ready until the drain: {seen:#?}");
    assert!(!seen[drain..ready].iter().any(|(s, _, _)| *s == 200), "not ready from the drain to the rejoin: {seen:#?}");
    let (unhealthy, _) = poller.finish();
    assert!(unhealthy.is_empty(), "{unhealthy:?}");
    // The node's event log tells the upgrade's steps on it, in order: the
    // drain, the replace, the rejoin.
    let (status, body) = call("GET", &format!("{url}/api/events"), None, None);
    assert_eq!(status, 200, "{body}");
    let kinds: Vec<(String, String)> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (e["kind"].as_str().unwrap_or_default().to_string(), e["text"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    let at = |kind: &str, from: usize| {
        kinds
            .iter()
            .skip(from)
            .position(|(k, _)| k == kind)
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("no {kind} in {kinds:#?}"))
    };
    let drained = at("drain_started", 0);
    let replaced = at("plugin_replaced", drained);
    let rejoined = at("member_joined", replaced);
    assert!(kinds[drained].1.contains("acting in 1.5 s"), "{kinds:#?}");
    assert!(kinds[replaced].1.contains("strat 1.0.0 replaced by 1.1.0"), "{kinds:#?}");
    assert!(kinds[rejoined].1.contains("u1 (this node) joined"), "{kinds:#?}");
    at("drain_ended", drained);
}
