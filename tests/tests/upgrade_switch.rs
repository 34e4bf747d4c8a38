//! `clusterhost cluster upgrade --mode switch`: 3 members (real `clusterhost`
//! processes) move from the gossip strategy to redis (one Redis server)
//! while a client loop writes and reads through every member's admin cache
//! API, then back from redis to gossip. Checked: each command succeeds,
//! every member runs the new strategy in a 3-member cluster, and every
//! entry written before and every write acknowledged during a switch is
//! readable on every member afterwards (the members' standalone copies
//! merged into the new strategy by version). Printed: requests served and
//! failed, the longest stall, each switch's time.

use std::time::{Duration, Instant};

use clusterhost_tests::admin::{call, TOKEN};
use clusterhost_tests::cluster::write_redis_conf;
use clusterhost_tests::redis::RedisServer;
use clusterhost_tests::upgrade::{gossip_build, wait_readable, ClientLoad, GossipCluster};
use clusterhost_tests::{manifest_of, plugin};

/// Runs one switch under client load on `cache`; the acknowledged writes.
fn switch(cluster: &GossipCluster, to: &std::path::Path, from: &std::path::Path, cache: &str) -> Vec<(String, String)> {
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.admin_url()).collect();
    let load = ClientLoad::start(&urls, cache, Duration::from_millis(20), 5000);
    load.wait_served(60, Duration::from_secs(30));
    let started = Instant::now();
    let run = cluster.switch_to(to, from);
    assert!(run.success, "the switch failed:\n{}\n{}", run.stdout, run.stderr);
    let took = started.elapsed();
    // A moment on the new strategy, then the load stops.
    load.wait_served(30, Duration::from_secs(30));
    let report = load.finish();
    println!(
        "figure: switch to {} in {:.1} s under load: {} requests served, {} failed, longest stall {:?}",
        to.display(),
        took.as_secs_f64(),
        report.served,
        report.failed,
        report.longest_stall
    );
    report.acknowledged
}

#[test]
fn three_members_switch_from_gossip_to_redis_and_back_under_load_keeping_every_entry() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let wire = manifest_of(&plugin("gossip")).wire_protocol.to_string();
    let gossip = gossip_build(&dir.path().join("builds/gossip-0.1.0.so"), "0.1.0", &wire);
    let redis_build = plugin("redis_strategy");
    let (url, prefix) = (redis.url(), format!("switch-{}", std::process::id()));
    let cluster = GossipCluster::start_with(3, &gossip, dir, "", |home| {
        write_redis_conf(&home.join("conf"), "single", std::slice::from_ref(&url), &prefix)
    });
    // Entries from before the switch.
    let first = cluster.nodes[0].admin_url();
    let mut before = Vec::new();
    for i in 0..50 {
        let (key, value) = (format!("pre-{i}"), format!("v{i}"));
        let (status, body) =
            call("PUT", &format!("{first}/api/caches/kept/{key}"), Some(TOKEN), Some(value.as_bytes()));
        assert_eq!(status, 200, "{body}");
        before.push((key, value));
    }

    let to_redis = switch(&cluster, &redis_build, &gossip, "to-redis");
    for (id, _) in cluster.strategies() {
        assert_eq!(id, "redis", "every member runs redis after the switch");
    }
    let missing = wait_readable(&cluster, "kept", &before);
    assert!(missing.is_empty(), "entries from before the switch are missing on redis: {missing:?}");
    let missing = wait_readable(&cluster, "to-redis", &to_redis);
    assert!(missing.is_empty(), "writes acknowledged during the switch are missing: {missing:?}");

    let to_gossip = switch(&cluster, &gossip, &redis_build, "to-gossip");
    for (id, version) in cluster.strategies() {
        assert_eq!((id.as_str(), version.as_str()), ("gossip", "0.1.0"), "every member runs gossip again");
    }
    for (cache, entries) in [("kept", &before), ("to-redis", &to_redis), ("to-gossip", &to_gossip)] {
        let missing = wait_readable(&cluster, cache, entries);
        assert!(missing.is_empty(), "{cache}: entries missing after the switch back to gossip: {missing:?}");
    }
}
