//! Cluster startup in a real node: clustering waits for the initial plugin
//! scan and `cluster.startup.delay.seconds`, retries `retry.count` times
//! every `retry.seconds`, ends standalone with the reason, faults a strategy
//! that exceeds `cluster.max.execution.seconds`; properties edits apply
//! live; node-specific values come from flags and the environment.

use std::path::Path;
use std::time::Duration;

use clusterhost::cluster::ClusterState;
use clusterhost::status::NodeStatus;
use clusterhost::PluginState;
use clusterhost_plugin_api::CLUSTER_STRATEGY;
use clusterhost_tests::{clusterhost_bin, plugin, restamp, NodeProcess};

const DEADLINE: Duration = Duration::from_secs(30);

/// A home whose plugins/ holds the fixture as a memory strategy, set up by `metadata`.
fn home_with_strategy(properties: &str, metadata: &[(&str, &str)]) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("conf")).unwrap();
    std::fs::write(home.path().join("conf/clusterhost.properties"), properties).unwrap();
    publish_strategy(home.path(), "a-strategy.so", "1.0.0", metadata);
    home
}

fn publish_strategy(home: &Path, file: &str, version: &str, metadata: &[(&str, &str)]) {
    let journal = journal_path(home);
    let target = home.join("plugins").join(file);
    let tmp = home.join("plugins").join(format!(".{file}.tmp"));
    restamp(&plugin("fixture_plugin"), &tmp, |m| {
        m.id = "strat".into();
        m.version = version.parse().unwrap();
        m.provides = vec![CLUSTER_STRATEGY.into()];
        m.metadata.insert("strategy".into(), "memory".into());
        m.metadata.insert("journal".into(), journal.display().to_string());
        for (k, v) in metadata {
            m.metadata.insert(k.to_string(), v.to_string());
        }
    });
    std::fs::rename(tmp, target).unwrap();
}

fn journal_path(home: &Path) -> std::path::PathBuf {
    home.join("journal")
}

fn journal(home: &Path) -> Vec<String> {
    std::fs::read_to_string(journal_path(home)).unwrap_or_default().lines().map(str::to_string).collect()
}

/// The times (ms) of the strategy's cluster start attempts, in order.
fn attempts(home: &Path) -> Vec<u64> {
    journal(home)
        .iter()
        .filter_map(|l| l.strip_prefix("strat cluster-start "))
        .map(|rest| rest.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn cluster_state(status: &NodeStatus) -> ClusterState {
    status.cluster.as_ref().expect("the node reports its clustering").state.clone()
}

fn is_clustered(status: &NodeStatus) -> bool {
    cluster_state(status) == ClusterState::Clustered
}

#[test]
fn clustering_starts_after_the_initial_scan_and_the_delay() {
    let home = home_with_strategy("cluster.startup.delay.seconds = 0.5\n", &[]);
    // Loaded after the strategy (name order), and slow to start: clustering
    // must not begin before it is up.
    restamp(&plugin("fixture_plugin"), &home.path().join("plugins/z-slow.so"), |m| {
        m.id = "slow".into();
        m.metadata.insert("behavior".into(), "slow-start".into());
        m.metadata.insert("journal".into(), journal_path(home.path()).display().to_string());
    });
    let node = NodeProcess::start_with(home.path(), &["--node-name", "n1"], &[]);
    let status = node.wait_for_status("the node to cluster", DEADLINE, is_clustered);
    let cluster = status.cluster.unwrap();
    assert_eq!(cluster.node, "n1");
    assert_eq!(cluster.members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec!["n1"]);
    assert_eq!(cluster.senior.as_deref(), Some("n1"));
    assert_eq!(cluster.strategy.as_deref(), Some("strat 1.0.0"));

    let lines = journal(home.path());
    let slow_done = lines.iter().position(|l| l == "slow started-slowly").expect("the slow plugin started");
    let first_attempt = lines.iter().position(|l| l.starts_with("strat cluster-start 1 ")).expect("an attempt");
    assert!(slow_done < first_attempt, "clustering began before the initial scan finished: {lines:?}");
    assert_eq!(attempts(home.path()).len(), 1);
    node.wait_for_log(&["clustering starts in 500 ms"], DEADLINE);
}

#[test]
fn failed_starts_are_retried_with_spacing_then_the_node_runs_standalone_saying_why() {
    let props =
        "cluster.startup.delay.seconds = 0\ncluster.startup.retry.count = 2\ncluster.startup.retry.seconds = 0.4\n";
    let recovers = home_with_strategy(props, &[("cluster_fail", "2")]);
    let gives_up = home_with_strategy(
        "cluster.startup.delay.seconds = 0\ncluster.startup.retry.count = 1\ncluster.startup.retry.seconds = 0.2\n",
        &[("cluster_fail", "100")],
    );
    let node_a = NodeProcess::start_with(recovers.path(), &[], &[("CLUSTERHOST_NODE_NAME", "recovers")]);
    let node_b = NodeProcess::start(gives_up.path());

    let status = node_a.wait_for_status("a to cluster on its third attempt", DEADLINE, is_clustered);
    assert_eq!(status.cluster.unwrap().node, "recovers", "the name came from the environment");
    let times = attempts(recovers.path());
    assert_eq!(times.len(), 3, "{:?}", journal(recovers.path()));
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= 400, "attempts closer than retry.seconds: {times:?}");
    }

    let status = node_b.wait_for_status("b to give up", DEADLINE, |s| {
        matches!(cluster_state(s), ClusterState::Standalone { reason: Some(_) }) && attempts(gives_up.path()).len() == 2
    });
    let ClusterState::Standalone { reason: Some(reason) } = cluster_state(&status) else { unreachable!() };
    assert!(reason.contains("could not start after 2 attempt(s)"), "{reason}");
    assert!(reason.contains("simulated cluster start failure (attempt 2)"), "{reason}");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(attempts(gives_up.path()).len(), 2, "no attempt after the last retry");
    // The plugin itself stays active (it can be re-enabled); only clustering gave up.
    assert!(status.plugins.iter().any(|p| p.id.as_deref() == Some("strat") && p.state == PluginState::Active));
}

#[test]
fn a_strategy_that_hangs_in_start_is_faulted_after_the_budget_and_the_node_goes_on() {
    let home = home_with_strategy(
        "cluster.startup.delay.seconds = 0\ncluster.max.execution.seconds = 1\n",
        &[("cluster_hang", "true")],
    );
    let mut node = NodeProcess::start(home.path());
    let status = node.wait_for_status("the strategy to be faulted", DEADLINE, |s| {
        s.plugins.iter().any(|p| p.id.as_deref() == Some("strat") && p.state == PluginState::Faulted)
    });
    let record = status.plugins.iter().find(|p| p.id.as_deref() == Some("strat")).unwrap();
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("did not finish start_clustering within 1s"), "{reason}");
    assert!(matches!(cluster_state(&status), ClusterState::Faulted { .. }));
    // Still running, and stops cleanly.
    assert!(node.terminate(DEADLINE).success());
}

#[test]
fn properties_edits_switch_clustering_and_apply_from_the_next_start() {
    let home = home_with_strategy("cluster.startup.delay.seconds = 0\n", &[]);
    let props = home.path().join("conf/clusterhost.properties");
    let node = NodeProcess::start(home.path());
    node.wait_for_status("clustered", DEADLINE, is_clustered);

    std::fs::write(&props, "cluster.startup.delay.seconds = 0\nclustering.enabled = false\n").unwrap();
    let status = node.wait_for_status(
        "standalone after the edit",
        DEADLINE,
        |s| matches!(cluster_state(s), ClusterState::Standalone { reason: Some(ref r) } if r.contains("disabled")),
    );
    assert!(!status.cluster.unwrap().enabled);

    // A bad edit is reported with file:line and changes nothing.
    std::fs::write(&props, "clustering.enabled = true\ncluster.startup.delay.seconds = soon\n").unwrap();
    node.wait_for_log(&["clusterhost.properties:2: cluster.startup.delay.seconds", "previous settings stay"], DEADLINE);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!is_clustered(&clusterhost::status::read(home.path()).unwrap()));

    // A longer delay applies to the next start: a new strategy version.
    std::fs::write(&props, "cluster.startup.delay.seconds = 1.5\nclustering.enabled = true\n").unwrap();
    node.wait_for_status("clustered again", DEADLINE, is_clustered);
    publish_strategy(home.path(), "a-strategy.so", "1.1.0", &[]);
    node.wait_for_log(&["clustering starts in 1.5 s"], DEADLINE);
    let status = node.wait_for_status("clustered on 1.1.0", DEADLINE, |s| {
        is_clustered(s) && s.cluster.as_ref().unwrap().strategy.as_deref() == Some("strat 1.1.0")
    });
    assert_eq!(status.cluster.unwrap().members.len(), 1);
}

#[test]
fn a_bad_node_flag_is_refused_with_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(clusterhost_bin())
        .args(["run", "--home", home.path().to_str().unwrap(), "--cluster-port", "70000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--cluster-port / CLUSTERHOST_CLUSTER_PORT = \"70000\": expected a port number"),
        "{stderr}"
    );
}
