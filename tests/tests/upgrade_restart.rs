//! The upgrade flows that restart nodes (docs/upgrade.md): offline (stop
//! every member, replace the plugin file on each, start them all) and
//! rolling by stop / replace / start, one member at a time, under client
//! load. Three real `clusterhost` processes with the gossip strategy.

use std::path::Path;
use std::time::{Duration, Instant};

use clusterhost_tests::admin::DEADLINE;
use clusterhost_tests::upgrade::{gossip_build, members_seen, wait_readable, ClientLoad, GossipCluster};
use clusterhost_tests::{wait_until, NodeProcess};

/// The member port of node `index`, from the static list every home shares.
fn member_port(home: &Path, index: usize) -> u16 {
    let text = std::fs::read_to_string(home.join("conf/gossip.toml")).unwrap();
    let list = text.split("members = [").nth(1).unwrap().split(']').next().unwrap();
    let entry = list.split(',').nth(index).unwrap().trim().trim_matches('"');
    entry.rsplit(':').next().unwrap().parse().unwrap()
}

/// Starts member `index` again on its home, name, member port and admin port.
fn restart(cluster: &GossipCluster, index: usize, admin_port: u16) -> NodeProcess {
    let home = cluster.dir.path().join(&cluster.names[index]);
    let port = member_port(&home, index).to_string();
    let admin = admin_port.to_string();
    let node = NodeProcess::start_with(
        &home,
        &["--node-name", &cluster.names[index], "--cluster-port", &port, "--admin-port", &admin],
        &[],
    );
    node.wait_for_admin(DEADLINE);
    node
}

/// Replaces plugins/gossip.so of a stopped member (write, then rename).
fn replace_plugin(cluster: &GossipCluster, index: usize, build: &Path) {
    let plugins = cluster.dir.path().join(&cluster.names[index]).join("plugins");
    std::fs::copy(build, plugins.join(".gossip.so.tmp")).unwrap();
    std::fs::rename(plugins.join(".gossip.so.tmp"), plugins.join("gossip.so")).unwrap();
}

fn wait_for_version(cluster: &GossipCluster, version: &str, n: usize) {
    wait_until(&format!("every member on {version}, seeing {n} members"), Duration::from_secs(60), || {
        cluster.nodes.iter().all(|node| members_seen(node) == n)
            && cluster.active_gossip().iter().all(|(v, _)| v == version)
    });
}

#[test]
fn offline_stop_all_replace_start_all_re_forms_the_cluster_on_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = gossip_build(&dir.path().join("builds/gossip-0.1.0.so"), "0.1.0", "1.0");
    let v2 = gossip_build(&dir.path().join("builds/gossip-0.2.0.so"), "0.2.0", "1.0");
    let mut cluster = GossipCluster::start(3, &v1, dir);
    let admin_ports: Vec<u16> = cluster.nodes.iter().map(|n| n.admin_port).collect();
    let started = Instant::now();

    // 1. Stop every member.
    for node in &mut cluster.nodes {
        assert!(node.terminate(DEADLINE).success(), "a member did not stop cleanly");
    }
    // 2. Replace the plugin file on each. 3. Start them all.
    for i in 0..3 {
        replace_plugin(&cluster, i, &v2);
    }
    for (i, port) in admin_ports.iter().enumerate() {
        cluster.nodes[i] = restart(&cluster, i, *port);
    }
    wait_for_version(&cluster, "0.2.0", 3);
    let views = cluster.views();
    let seniors: std::collections::BTreeSet<&String> = views.iter().map(|(_, _, _, s)| s).collect();
    assert_eq!(seniors.len(), 1, "one senior: {views:?}");
    assert!(views
        .iter()
        .all(|(state, seen, strategy, _)| state == "clustered" && *seen == 3 && strategy == "gossip 0.2.0"));
    println!(
        "OFFLINE FIGURES: flow {:.1} s for 3 members (stop, replace, start, re-formed)",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn rolling_by_stop_replace_start_under_load_loses_no_write_and_fails_no_request_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = gossip_build(&dir.path().join("builds/gossip-0.1.0.so"), "0.1.0", "1.0");
    let v2 = gossip_build(&dir.path().join("builds/gossip-0.2.0.so"), "0.2.0", "1.0");
    let mut cluster = GossipCluster::start(3, &v1, dir);
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.admin_url()).collect();
    let admin_ports: Vec<u16> = cluster.nodes.iter().map(|n| n.admin_port).collect();

    let load = ClientLoad::start(&urls, "sessions", Duration::from_millis(20), 5000);
    // Under load before the upgrade starts.
    load.wait_served(60, Duration::from_secs(30));
    let started = Instant::now();
    // Member i's window: from its stop until it is back with every member seeing 3.
    let mut windows = Vec::new();
    for (i, admin_port) in admin_ports.iter().enumerate() {
        let from = Instant::now();
        assert!(cluster.nodes[i].terminate(DEADLINE).success());
        // The others go on as a 2-member cluster.
        let others: Vec<usize> = (0..3).filter(|j| *j != i).collect();
        wait_until("the others to see 2 members", DEADLINE, || {
            others.iter().all(|j| members_seen(&cluster.nodes[*j]) == 2)
        });
        replace_plugin(&cluster, i, &v2);
        cluster.nodes[i] = restart(&cluster, i, *admin_port);
        wait_until("all three members back", Duration::from_secs(60), || {
            cluster.nodes.iter().all(|node| members_seen(node) == 3)
        });
        windows.push((i, from, Instant::now()));
    }
    let flow = started.elapsed();
    // And still under load once it is done.
    load.wait_served(60, Duration::from_secs(30));
    let report = load.finish();
    wait_for_version(&cluster, "0.2.0", 3);

    let missing = wait_readable(&cluster, "sessions", &report.acknowledged);
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let outside: Vec<_> = report
        .failures
        .iter()
        .filter(|(member, at)| !windows.iter().any(|(i, from, to)| i == member && at >= from && at <= to))
        .collect();
    assert!(outside.is_empty(), "members not being upgraded failed requests: {outside:?}");
    println!(
        "ROLLING-RESTART FIGURES: flow {:.1} s for 3 members; requests served {}, failed {} (all on the member being restarted); longest stall {:.0} ms; acknowledged writes {} readable on every member",
        flow.as_secs_f64(),
        report.served,
        report.failed,
        report.longest_stall.as_secs_f64() * 1000.0,
        report.acknowledged.len()
    );
}
