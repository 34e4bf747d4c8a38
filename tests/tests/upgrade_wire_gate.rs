//! The rolling-upgrade wire gate, in process with the real gossip plugin:
//! a new version of the active strategy with another wire-protocol major is
//! refused while the node is clustered with other members (the running
//! version stays, its record says why, the cluster is untouched), and
//! admitted once the node runs standalone (the split-brain flow).

use std::time::Duration;

use clusterhost::cluster::ClusterState;
use clusterhost::{LoadError, LoadOutcome, PluginState};
use clusterhost_plugin_api::WireVersion;
use clusterhost_tests::cluster::{wait_for, Backend, TestCluster};
use clusterhost_tests::{plugin, restamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_of_another_wire_major_is_refused_while_clustered_and_admitted_standalone() {
    let cluster = TestCluster::clustered(Backend::Gossip, &["a", "b"]).await;
    let (manager, home) = cluster.plugin_manager("a");
    let builds = home.join("builds");
    let compatible = builds.join("gossip-0.2.0.so");
    restamp(&plugin("gossip"), &compatible, |m| {
        m.version = "0.2.0".parse().unwrap();
        m.wire_protocol = WireVersion { major: 1, minor: 1 };
    });
    let incompatible = builds.join("gossip-0.3.0-wire2.so");
    restamp(&plugin("gossip"), &incompatible, |m| {
        m.version = "0.3.0".parse().unwrap();
        m.wire_protocol = WireVersion { major: 2, minor: 0 };
    });

    // A compatible minor: a rolling (hot) upgrade while clustered is fine.
    let outcome = manager.load(&compatible).await.expect("a wire 1.1 build replaces 1.0 while clustered");
    assert!(matches!(outcome, LoadOutcome::Replaced { .. }), "{outcome:?}");
    wait_for("a to rejoin after its hot upgrade", Duration::from_secs(30), || {
        cluster.node("a").state() == ClusterState::Clustered && cluster.node("a").members().len() == 2
    })
    .await;

    // Another major while clustered with b: refused, naming the flows.
    let err = manager.load(&incompatible).await.expect_err("a wire 2.0 build is refused while clustered");
    assert!(matches!(err, LoadError::Admission(_)), "{err:?}");
    let message = err.to_string();
    for part in [
        "plugin gossip 0.3.0 speaks wire protocol 2.0, the running cluster 1.x",
        "clustered with b",
        "a rolling upgrade cannot mix them",
        "use the split-brain flow (clusterhost cluster disable, replace the plugin on every member, clusterhost cluster enable) or the offline flow",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(err.before_dlopen(), "refused before the new library ran");
    let record = manager.record(&incompatible).expect("the refused file has a record");
    assert_eq!(record.state, PluginState::Rejected, "{record:?}");
    assert!(record.reason.as_deref().unwrap_or_default().contains("split-brain flow"), "{record:?}");
    let active = manager.active().await;
    assert_eq!(active, vec![("gossip".to_string(), "0.2.0".parse().unwrap())], "the running version stays");
    assert_eq!(manager.record(&compatible).map(|r| r.state), Some(PluginState::Active));
    // The cluster never noticed.
    assert_eq!(cluster.node("a").state(), ClusterState::Clustered);
    assert_eq!(cluster.node("b").members().len(), 2);

    // Standalone (clustering disabled cluster-wide): the same file is admitted.
    cluster.node("a").set_enabled(false).await.expect("clustering can be disabled");
    cluster.wait_all(ClusterState::Standalone { reason: None }).await;
    let outcome = manager.load(&incompatible).await.expect("a wire 2.0 build is admitted standalone");
    assert!(matches!(outcome, LoadOutcome::Replaced { .. }), "{outcome:?}");
    assert_eq!(manager.active().await, vec![("gossip".to_string(), "0.3.0".parse().unwrap())]);
}
