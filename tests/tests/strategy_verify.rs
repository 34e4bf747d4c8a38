//! `clusterhost strategy verify`, run as a user runs it: it passes for
//! every strategy the project ships or documents (gossip on the rules that
//! start several members, redis on one server, the in-memory strategy,
//! the shared-dir example: every rule), and fails the
//! deliberately broken strategy with the names of the rules it breaks.
//! The runs take turns: each starts several members on this machine's two
//! cores, and the rules wait on deadlines.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use clusterhost_tests::{clusterhost_bin, plugin, workspace_root};

/// One verify run at a time.
static TURN: Mutex<()> = Mutex::new(());

fn verify(args: &[&str]) -> (Output, String) {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let output = Command::new(clusterhost_bin())
        .args(["strategy", "verify"])
        .args(args)
        .output()
        .expect("clusterhost can be run");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output, text)
}

/// Every rule passed (or, where the strategy says so, is unsupported).
fn assert_passes(what: &str, (output, text): (Output, String), unsupported: &[&str]) {
    assert!(output.status.success(), "verify {what} failed:\n{text}");
    for line in text.lines().filter(|l| l.starts_with("unsupported")) {
        assert!(unsupported.iter().any(|rule| line.split_whitespace().nth(1) == Some(rule)), "{what}: {line}");
    }
    assert!(text.contains(" 0 failed"), "{text}");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The documented example config with three members. cluster_core.rs runs
/// every rule on gossip (the same rule code, three members); here the
/// rules that start several members check the command's side of it:
/// placeholders, conf files, member ports, the report.
#[test]
fn gossip_passes_the_multi_member_rules_with_three_members() {
    let dir = workspace_root().join("examples/verify");
    let (gossip, config, key) = (plugin("gossip"), dir.join("gossip.toml"), dir.join("cluster.key"));
    let mut args = vec![path(&gossip), "--config", path(&config), "--conf-file", path(&key), "--members", "3"];
    let rules =
        ["membership-converges", "cache-across-members", "tasks-every-target", "locks", "entry-events-across-members"];
    for rule in &rules {
        args.extend(["--rule", rule]);
    }
    let run = verify(&args);
    assert!(run.1.contains(&format!("{} rules: {} passed", rules.len(), rules.len())), "{}", run.1);
    assert_passes("gossip", run, &[]);
}

#[test]
fn redis_on_one_server_passes_every_rule() {
    let server = clusterhost_tests::redis::RedisServer::start();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("redis.toml");
    std::fs::write(
        &config,
        format!("mode = \"single\"\nurls = [\"{}\"]\nkey_prefix = \"verify-{{namespace}}\"\n", server.url()),
    )
    .unwrap();
    assert_passes("redis", verify(&[path(&plugin("redis_strategy")), "--config", path(&config)]), &[]);
}

#[test]
fn the_in_memory_strategy_passes_every_rule() {
    assert_passes("memory", verify(&["--builtin", "memory"]), &[]);
}

#[test]
fn the_shared_dir_example_passes_every_rule_but_tasks_locks_atomic_operations_entry_events_and_bounds() {
    // (fenced-locks included: no locks, so no fencing numbers)
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("shared-dir.toml");
    std::fs::write(&config, format!("dir = \"{}/{{namespace}}\"\n", home.path().display())).unwrap();
    let run = verify(&[path(&plugin("shared_dir_strategy")), "--config", path(&config)]);
    let unsupported = ["alone-tasks", "alone-locks", "tasks-every-target", "locks", "fenced-locks"];
    let atomic = ["atomic-alone", "atomic-put-if-absent-race", "atomic-update-counter"];
    let events = ["entry-events-alone", "entry-events-across-members"];
    let bounded = ["bounded-alone", "bounded-across-members", "entry-times"];
    assert_passes("shared-dir", run, &[&unsupported[..], &atomic[..], &events[..], &bounded[..]].concat());
}

#[test]
fn the_broken_strategy_fails_the_rules_it_breaks() {
    let (output, text) = verify(&["--builtin", "broken", "--json"]);
    assert!(!output.status.success(), "a failing rule makes a non-zero exit:\n{text}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
    let failed: Vec<&str> = report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["verdict"] == "failed")
        .map(|r| r["rule"].as_str().expect("a rule name"))
        .collect();
    // Its six bugs: its own Left from stop, every member senior, Joined
    // for members already there, a hang once a put is dropped, atomic
    // operations that check, pause, then write, entry events that all
    // claim the member reporting them as their origin.
    for rule in [
        "stop-emits-no-own-left",
        "membership-converges",
        "join-events",
        "cancellation",
        "atomic-put-if-absent-race",
        "atomic-update-counter",
        "entry-events-across-members",
    ] {
        assert!(failed.contains(&rule), "{rule} did not fail: {failed:?}\n{text}");
    }
    // Rules its bugs do not touch still pass.
    let passed: Vec<&str> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "passed")
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    for rule in ["alone-caches", "cache-across-members", "settings-everywhere", "atomic-alone", "entry-events-alone"] {
        assert!(passed.contains(&rule), "{rule} did not pass: {passed:?}");
    }
    assert_eq!(report["failed"].as_u64(), Some(failed.len() as u64));
}

#[test]
fn bad_input_is_refused_with_what_to_do() {
    let (output, text) = verify(&[]);
    assert!(!output.status.success());
    assert!(text.contains("FILE") || text.contains("--builtin"), "{text}");
    let (output, text) = verify(&[path(&plugin("hello"))]);
    assert!(!output.status.success());
    assert!(text.contains("does not provide cluster-strategy"), "{text}");
    let (output, text) = verify(&["--builtin", "memory", "--rule", "no-such-rule"]);
    assert!(!output.status.success());
    assert!(text.contains("there is no rule \"no-such-rule\"") && text.contains("membership-converges"), "{text}");
    let (output, text) = verify(&["--builtin", "nope"]);
    assert!(!output.status.success());
    assert!(text.contains("`memory` and `broken`"), "{text}");
    let (output, text) = verify(&[path(&plugin("gossip")), "--config", "/nonexistent/gossip.toml"]);
    assert!(!output.status.success());
    assert!(text.contains("could not read the strategy configuration /nonexistent/gossip.toml"), "{text}");
    // One rule only.
    let (output, text) = verify(&["--builtin", "memory", "--rule", "locks"]);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("1 rule: 1 passed"), "{text}");
}
