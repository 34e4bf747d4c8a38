//! `clusterhost cluster status` never depends on tasks: the members, the
//! senior and their plugin versions come from the strategy's view, this
//! node's own detail is computed locally, and each other member is asked on
//! its own, by one deadline. With a strategy that offers no tasks (the
//! shared-dir example) every member is listed and none is unreachable;
//! with gossip and a SIGKILLed member that still looks alive, status
//! answers in time and marks only that member.

mod gossip_kit;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clusterhost_tests::admin::{call, member_home, DEADLINE, TOKEN};
use clusterhost_tests::{clusterhost_bin, plugin, wait_until, NodeProcess};
use gossip_kit::{
    free_member_port, gossip_home, loopback_members, random_key, unique_cluster, wait_for_view, HomeSpec,
};
use serde_json::Value;

/// `clusterhost cluster status [--json]` against `url`: (stdout, how long it took).
fn status_cli(url: &str, json: bool) -> (String, Duration) {
    let started = Instant::now();
    let mut command = Command::new(clusterhost_bin());
    command.args(["cluster", "status", "--admin", url]).env_remove("CLUSTERHOST_ADMIN");
    if json {
        command.arg("--json");
    }
    let out = command.output().expect("the CLI runs");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "exit {:?}: {stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    (stdout, elapsed)
}

fn status_json(url: &str) -> Value {
    serde_json::from_str(&status_cli(url, true).0).expect("the CLI prints JSON")
}

/// The member ids a status lists, sorted.
fn member_ids(status: &Value) -> Vec<String> {
    let mut ids: Vec<String> = status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The detail of member `id` in a status.
fn detail<'a>(status: &'a Value, id: &str) -> &'a Value {
    let details = status["details"].as_array().expect("details");
    details.iter().find(|d| d["id"] == id).unwrap_or_else(|| panic!("a detail for {id} in {status}"))
}

/// A home with the shared-dir strategy on directory `dir`.
fn shared_dir_home(dir: &Path) -> tempfile::TempDir {
    member_home(&plugin("shared_dir_strategy"), "shared-dir.so", |conf| {
        std::fs::write(conf.join("shared-dir.toml"), format!("dir = {:?}\n", dir.display().to_string()))
            .expect("shared-dir.toml can be written");
    })
}

#[test]
fn with_a_strategy_that_offers_no_tasks_status_lists_every_member_and_none_is_unreachable() {
    let shared = tempfile::tempdir().expect("a shared directory");
    let homes = [shared_dir_home(shared.path()), shared_dir_home(shared.path())];
    let nodes: Vec<NodeProcess> = ["sd-a", "sd-b"]
        .iter()
        .zip(&homes)
        .map(|(name, home)| NodeProcess::start_with(home.path(), &["--node-name", name], &[]))
        .collect();
    for node in &nodes {
        node.wait_for_admin(DEADLINE);
        wait_until("both members clustered in each view", DEADLINE, || {
            let status = status_json(&node.admin_url());
            status["state"]["state"] == "clustered" && member_ids(&status) == ["sd-a", "sd-b"]
        });
    }
    for (node, (me, other)) in nodes.iter().zip([("sd-a", "sd-b"), ("sd-b", "sd-a")]) {
        let status = status_json(&node.admin_url());
        let version = status["members"][0]["plugin_version"].as_str().expect("a version from the view");
        assert!(status["members"].as_array().unwrap().iter().all(|m| m["plugin_version"] == version), "{status}");
        assert_eq!(status["members"].as_array().unwrap().iter().filter(|m| m["senior"] == true).count(), 1);
        // This node: its own detail, computed locally.
        let mine = detail(&status, me);
        assert_eq!(mine["cluster"]["state"], "clustered", "{status}");
        assert_eq!(mine["plugin"]["id"], "shared-dir", "{status}");
        assert!(mine["missing"].is_null(), "{status}");
        // The other: listed from the view; its detail is honestly unavailable.
        let theirs = detail(&status, other);
        assert_eq!(theirs["missing"]["cause"], "unsupported", "{status}");
        assert_eq!(theirs["missing"]["reason"], "detail unavailable: the strategy does not offer tasks");

        let (table, _) = status_cli(&node.admin_url(), false);
        println!("{table}");
        assert!(!table.contains("unreachable"), "{table}");
        let line = |id: &str| table.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} in {table}"));
        assert!(line(&format!("{me} (this node)")).contains("clustered"), "{table}");
        let other_line = line(other);
        assert!(other_line.contains(" member ") && other_line.contains("detail unavailable"), "{table}");
        assert!(other_line.contains(version), "the version from the view: {table}");
    }

    // The same directory: a write on one member is read on the other at once.
    let (a, b) = (nodes[0].admin_url(), nodes[1].admin_url());
    assert_eq!(call("PUT", &format!("{a}/api/caches/sessions/s1"), Some(TOKEN), Some(b"ada")).0, 200);
    assert_eq!(call("GET", &format!("{b}/api/caches/sessions/s1"), None, None).1["value"], "ada");
    // A member killed stops refreshing its file: once it expires, the other lists itself alone, as senior.
    let mut nodes = nodes;
    nodes[1].kill();
    wait_until("sd-a to drop the killed sd-b", DEADLINE, || {
        let status = status_json(&a);
        member_ids(&status) == ["sd-a"] && status["senior"] == "sd-a"
    });
}

#[test]
fn status_on_a_survivor_answers_in_time_and_marks_only_a_sigkilled_member_that_still_looks_alive() {
    let cluster = unique_cluster("status-kill");
    let key = random_key();
    let mut ports = Vec::new();
    for _ in 0..3 {
        ports.push(free_member_port(&ports));
    }
    let members = loopback_members(&ports);
    let names = ["sk-a", "sk-b", "sk-c"];
    let mut nodes: Vec<gossip_kit::Node> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| gossip_kit::start_local(name, *port, gossip_home(&HomeSpec::new(&cluster, &key, &members))))
        .collect();
    let refs: Vec<&gossip_kit::Node> = nodes.iter().collect();
    wait_for_view(&refs, &names);

    nodes[2].process.kill();
    let survivor = nodes[0].process.admin_url();
    let (text, elapsed) = status_cli(&survivor, true);
    assert!(elapsed < Duration::from_secs(20), "cluster status took {elapsed:?}");
    let status: Value = serde_json::from_str(&text).expect("the CLI prints JSON");
    assert_eq!(member_ids(&status), names, "every member, the killed one still in the view: {status}");
    for id in ["sk-a", "sk-b"] {
        let answered = detail(&status, id);
        assert!(answered["missing"].is_null(), "{id} answered: {status}");
        assert_eq!(answered["cluster"]["state"], "clustered", "{status}");
        assert_eq!(answered["plugin"]["id"], "gossip", "{status}");
    }
    let killed = detail(&status, "sk-c");
    println!("figure: cluster status on a survivor right after a SIGKILL: {elapsed:?}; sk-c: {}", killed["missing"]);
    assert!(["timed_out", "error"].contains(&killed["missing"]["cause"].as_str().unwrap_or("")), "{status}");
    assert!(killed["cluster"].is_null(), "{status}");

    // The other survivor was asked through a cluster task, counted on /metrics.
    let (_, metrics) = clusterhost_tests::admin::call_text("GET", &format!("{survivor}/metrics"), None, None);
    let values = metrics.lines().find_map(|l| l.strip_prefix("clusterhost_task_replies_total{outcome=\"value\"} "));
    assert!(values.and_then(|v| v.trim().parse::<f64>().ok()).is_some_and(|v| v >= 1.0), "{metrics}");

    // A member that hangs (SIGSTOP: its sockets accept, nothing answers)
    // costs the status its deadline, not this node's own detail.
    let stopped = nodes[1].process.pid() as libc::pid_t;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // the pid is the test's own child, not yet reaped (so not reused).
    unsafe { libc::kill(stopped, libc::SIGSTOP) };
    let (text, elapsed) = status_cli(&survivor, true);
    // SAFETY: as above.
    unsafe { libc::kill(stopped, libc::SIGCONT) };
    assert!(elapsed < Duration::from_secs(20), "cluster status took {elapsed:?}");
    let status: Value = serde_json::from_str(&text).expect("the CLI prints JSON");
    // Checked while the survivor still lists the stopped member (its
    // failure detector takes seconds; the status returns within 3).
    if member_ids(&status).iter().any(|id| id == "sk-b") {
        let hung = &detail(&status, "sk-b")["missing"];
        println!("figure: cluster status with a stopped member: {elapsed:?}; sk-b: {hung}");
        assert_eq!(hung["cause"], "timed_out", "{status}");
        assert_eq!(detail(&status, "sk-a")["cluster"]["state"], "clustered", "{status}");
        assert!(detail(&status, "sk-a")["missing"].is_null(), "{status}");
    }
}
