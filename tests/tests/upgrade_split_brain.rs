//! The split-brain flow, orchestrated: 3 gossip members on 0.1.0 holding
//! data are moved to 0.2.0 with wire protocol 2.0 (which a rolling upgrade
//! refuses) by `clusterhost cluster upgrade --mode split-brain`: clustering
//! disabled cluster-wide, the plugin hot-replaced on every member while it
//! runs standalone, clustering enabled again. Checked: every member kept its
//! data while standalone, the re-formed cluster has 3 members on 0.2.0 with
//! one senior, and every write acknowledged before and during the flow is
//! readable on every member.

use std::time::Duration;

use clusterhost_tests::admin::{call, TOKEN};
use clusterhost_tests::upgrade::{cli, gossip_build, wait_readable, ClientLoad, GossipCluster};

#[test]
fn split_brain_upgrade_to_an_incompatible_wire_major() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = gossip_build(&dir.path().join("builds/gossip-0.1.0.so"), "0.1.0", "1.0");
    let v2 = gossip_build(&dir.path().join("builds/gossip-0.2.0-wire2.so"), "0.2.0", "2.0");
    let cluster = GossipCluster::start(3, &v1, dir);
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let node = &cluster.nodes[i % 3];
        let (key, value) = (format!("before-{i}"), format!("v{i}"));
        let url = format!("{}/api/caches/sessions/{key}", node.admin_url());
        assert_eq!(call("PUT", &url, Some(TOKEN), Some(value.as_bytes())).0, 200);
        acknowledged.push((key, value));
    }
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.admin_url()).collect();
    let load = ClientLoad::start(&urls, "sessions", Duration::from_millis(50), 2000);
    let token = cluster.token_file();
    let run = cli(&[
        "cluster",
        "upgrade",
        "--mode",
        "split-brain",
        "--plugin",
        v2.to_str().unwrap(),
        "--previous",
        v1.to_str().unwrap(),
        "--nodes",
        &cluster.urls(),
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let report = load.finish();
    assert!(run.success, "the split-brain upgrade failed: {}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.iter().any(|l| l.contains("disable clustering cluster-wide")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("every member standalone")), "{lines:#?}");
    for name in &cluster.names {
        assert!(
            lines.iter().any(|l| l.contains(&format!("{name} (")) && l.contains("replaced, standalone on 0.2.0")),
            "{lines:#?}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("gate passed: every member clustered, 3 members")), "{lines:#?}");
    assert!(lines.last().unwrap().contains("done: 3 members run gossip 0.2.0"), "{lines:#?}");

    let views = cluster.views();
    for (state, seen, strategy, _) in &views {
        assert!(state == "clustered" && *seen == 3 && strategy == "gossip 0.2.0", "{views:?}");
    }
    let seniors: std::collections::BTreeSet<&String> = views.iter().map(|v| &v.3).collect();
    assert_eq!(seniors.len(), 1, "one senior: {views:?}");
    acknowledged.extend(report.acknowledged.iter().cloned());
    let missing = wait_readable(&cluster, "sessions", &acknowledged);
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    println!(
        "SPLIT-BRAIN FIGURES: flow {:.1} s for 3 members; client requests served {}, failed {}, longest stall {:.0} ms; {} acknowledged writes readable on every member",
        run.elapsed.as_secs_f64(),
        report.served,
        report.failed,
        report.longest_stall.as_secs_f64() * 1000.0,
        acknowledged.len()
    );
}
