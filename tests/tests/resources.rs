//! Resources that must not grow with hot upgrades and re-joins (issue 24):
//! a node's open file descriptors and threads come back to their count
//! after the first load however many times a plugin is replaced, and a
//! gossip member holds one data-plane connection each way with each other
//! member however often it, or the other member, leaves and re-joins.
//!
//! Real `clusterhost run` processes on 127.0.0.1, counted through /proc.
//! Figures printed (not asserted): resident memory added per upgrade.

mod gossip_kit;

use std::time::Duration;

use clusterhost_tests::admin::{active_version, call, publish_file, TOKEN};
use clusterhost_tests::procfs::{member_links, usage, Usage};
use clusterhost_tests::{plugin, restamped_versions, wait_until, NodeProcess};
use gossip_kit::{
    free_member_port, gossip_home, loopback_members, random_key, start_local, unique_cluster, wait_for_view, HomeSpec,
    Node, DEADLINE,
};

/// What the counts may exceed their baseline by once things settle: the
/// host's blocking-pool threads come and go (they idle out after 10 s), and
/// a status request from the test may hold a socket for a moment.
const FD_SLACK: usize = 4;
const THREAD_SLACK: usize = 4;

/// How long a count may take to settle back (retired runtimes' threads
/// exit in the background; idle blocking threads after 10 s).
const SETTLE: Duration = Duration::from_secs(30);

/// Waits until `pid`'s descriptors and threads are within the slack of `base`.
fn wait_back_to(what: &str, pid: u32, base: Usage) -> Usage {
    let mut last = usage(pid);
    let deadline = std::time::Instant::now() + SETTLE;
    while last.fds > base.fds + FD_SLACK || last.threads > base.threads + THREAD_SLACK {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: after {SETTLE:?} the node still holds {last}, against {base} after the first load \
             (allowed: +{FD_SLACK} fds, +{THREAD_SLACK} threads)"
        );
        std::thread::sleep(Duration::from_millis(200));
        last = usage(pid);
    }
    last
}

/// The files in the private copy directory of node `pid` (in the system
/// temp dir: `clusterhost-PID-*`).
fn private_copies(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("clusterhost-{pid}-");
    let dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("the temp dir is readable")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert_eq!(dirs.len(), 1, "node {pid} has one private copy directory");
    std::fs::read_dir(dirs[0].path()).expect("the private directory is readable").flatten().map(|e| e.path()).collect()
}

#[test]
fn fifty_hot_upgrades_of_a_plugin_leave_no_descriptors_or_threads_behind() {
    const UPGRADES: usize = 50;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("plugins")).unwrap();
    let builds = restamped_versions(&plugin("hello"), &home.path().join("builds"), "hello", UPGRADES + 1);
    publish_file(home.path(), &builds[0].0, "hello.so");
    let node = NodeProcess::start(home.path());
    node.wait_for_admin(DEADLINE);
    let url = node.admin_url();
    let first = builds[0].1.clone();
    wait_until("the first hello to be active", DEADLINE, || active_version(&url, "hello") == Some(first.clone()));
    // Let the start-up's own threads (blocking pool) idle out of the count.
    std::thread::sleep(Duration::from_secs(1));
    let base = usage(node.pid());
    println!("after the first load: {base}");
    for (path, version) in &builds[1..] {
        publish_file(home.path(), path, "hello.so");
        wait_until(&format!("hello {version} to be active"), DEADLINE, || {
            active_version(&url, "hello").as_deref() == Some(version.as_str())
        });
    }
    // The log names the version that stops, not the one replacing it (issue 14, finding 15).
    node.wait_for_log(&["hello 1.2.0 stopping (replaced by 1.3.0)"], DEADLINE);
    let after = wait_back_to(&format!("{UPGRADES} hot upgrades of hello"), node.pid(), base);
    // No private copy is kept on disk once it is mapped.
    let copies = private_copies(node.pid());
    assert!(copies.is_empty(), "private copies left on disk after {UPGRADES} upgrades: {copies:?}");
    println!(
        "figure: after {UPGRADES} hot upgrades of hello: {after} ({:+} fds, {:+} threads, {:.1} KiB resident per upgrade)",
        after.fds as i64 - base.fds as i64,
        after.threads as i64 - base.threads as i64,
        (after.rss_kib as f64 - base.rss_kib as f64) / UPGRADES as f64
    );
}

/// Two gossip members on 127.0.0.1: (nodes, their member ports).
fn two_members(test: &str) -> (Vec<Node>, Vec<u16>) {
    let cluster = unique_cluster(test);
    let key = random_key();
    let first = free_member_port(&[]);
    let ports = vec![first, free_member_port(&[first])];
    let members = loopback_members(&ports);
    let names = [format!("{test}-a"), format!("{test}-b")];
    let nodes: Vec<Node> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| start_local(name, *port, gossip_home(&HomeSpec::new(&cluster, &key, &members))))
        .collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_view(&refs, &[&names[0], &names[1]]);
    (nodes, ports)
}

/// Member `i`'s data-plane connections with the other member.
fn links_of(nodes: &[Node], ports: &[u16], i: usize) -> usize {
    member_links(nodes[i].process.pid(), ports[i], ports[1 - i]).len()
}

/// [`wait_settled`] for member `i` alone (the other may not run).
fn wait_settled_one(what: &str, nodes: &[Node], ports: &[u16], i: usize, base: &Usage, most: usize) {
    let mut last = (links_of(nodes, ports, i), usage(nodes[i].process.pid()));
    let deadline = std::time::Instant::now() + SETTLE;
    while last.0 > most || last.1.fds > base.fds + FD_SLACK {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: member {} holds {} connections with the other member (at most {most}) and {}, \
             against {base} after the first join (allowed: +{FD_SLACK} fds)",
            nodes[i].name,
            last.0,
            last.1
        );
        std::thread::sleep(Duration::from_millis(200));
        last = (links_of(nodes, ports, i), usage(nodes[i].process.pid()));
    }
}

/// Waits until each member holds at most `most` connections with the
/// other (one it made, one it accepted: connections are made on first use,
/// so a late view change may leave one to be made by the next write) and
/// its descriptors are within the slack of `base`.
fn wait_settled(what: &str, nodes: &[Node], ports: &[u16], base: &[Usage], most: usize) {
    for (i, base) in base.iter().enumerate() {
        wait_settled_one(what, nodes, ports, i, base, most);
    }
}

/// Both members' usage once the first join's connections exist: a write
/// replicates, so each has made its connection to the other.
fn baseline(nodes: &[Node], ports: &[u16]) -> Vec<Usage> {
    nodes[0].put("c", "k0", "v");
    nodes[1].put("c", "k1", "v");
    for i in 0..2 {
        wait_until(&format!("{} to hold its two data-plane connections", nodes[i].name), DEADLINE, || {
            links_of(nodes, ports, i) == 2
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    nodes.iter().map(|n| usage(n.process.pid())).collect()
}

fn names(nodes: &[Node]) -> Vec<&str> {
    nodes.iter().map(|n| n.name.as_str()).collect()
}

fn switch(node: &Node, on: bool) {
    let url = match &node.access {
        gossip_kit::Access::Http(url) => url.clone(),
        gossip_kit::Access::Netns { .. } => unreachable!("these members run on 127.0.0.1"),
    };
    let path = if on { "enable" } else { "disable" };
    let (status, body) = call("POST", &format!("{url}/api/cluster/{path}"), Some(TOKEN), Some(b""));
    assert_eq!(status, 200, "{path} on {}: {body}", node.name);
}

fn wait_standalone(nodes: &[Node]) {
    for node in nodes {
        wait_until(&format!("{} to leave the cluster", node.name), DEADLINE, || {
            node.status().is_some_and(|s| s["state"]["state"] != "clustered")
        });
    }
}

#[test]
fn twenty_cluster_wide_disable_enable_cycles_keep_one_connection_each_way() {
    const CYCLES: usize = 20;
    let (nodes, ports) = two_members("cycles");
    let base = baseline(&nodes, &ports);
    println!("after the first join: {} / {}", base[0], base[1]);
    let refs: Vec<&Node> = nodes.iter().collect();
    for cycle in 0..CYCLES {
        switch(&nodes[cycle % 2], false);
        wait_standalone(&nodes);
        switch(&nodes[cycle % 2], true);
        wait_for_view(&refs, &names(&nodes));
        // A write after each re-join makes the connections a join needs.
        nodes[0].put("c", &format!("a{cycle}"), "v");
        nodes[1].put("c", &format!("b{cycle}"), "v");
        wait_settled(&format!("cycle {}", cycle + 1), &nodes, &ports, &base, 2);
    }
    for (node, base) in nodes.iter().zip(&base) {
        let now = usage(node.process.pid());
        println!("figure: {} after {CYCLES} disable/enable cycles: {now} (first join: {base})", node.name);
    }
    assert_eq!(nodes[1].get("c", &format!("a{}", CYCLES - 1)).as_deref(), Some("v"));
}

#[test]
fn twenty_leaves_and_rejoins_of_a_peer_keep_one_connection_each_way() {
    // The peer leaves by stopping (SIGTERM: its Leaving notice, then its
    // sockets close) and re-joins by starting again on the same home and port.
    const CYCLES: usize = 20;
    let (mut nodes, ports) = two_members("peer");
    let base = baseline(&nodes, &ports);
    for cycle in 0..CYCLES {
        let status = nodes[1].process.terminate(DEADLINE);
        assert!(status.success(), "{} exited with {status}", nodes[1].name);
        wait_until(&format!("{} to see {} leave", nodes[0].name, nodes[1].name), DEADLINE, || {
            nodes[0].status().and_then(|s| s["members"].as_array().map(|m| m.len())) == Some(1)
        });
        // Member a holds no connection with a member that left.
        wait_settled_one(&format!("leave {}", cycle + 1), &nodes, &ports, 0, &base[0], 0);
        let port = ports[1].to_string();
        let args = ["--node-name", nodes[1].name.as_str(), "--cluster-port", port.as_str(), "--bind", "127.0.0.1"];
        nodes[1].process = NodeProcess::start_with(nodes[1].home.path(), &args, &[]);
        nodes[1].access = gossip_kit::Access::Http(nodes[1].process.admin_url());
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_for_view(&refs, &names(&nodes));
        nodes[0].put("c", &format!("a{cycle}"), "v");
        nodes[1].put("c", &format!("b{cycle}"), "v");
        wait_settled(&format!("re-join {}", cycle + 1), &nodes, &ports, &base, 2);
    }
    assert_eq!(nodes[1].get("c", &format!("a{}", CYCLES - 1)).as_deref(), Some("v"));
    let now = usage(nodes[0].process.pid());
    println!(
        "figure: {} after {CYCLES} leaves and re-joins of its peer: {now} (first join: {})",
        nodes[0].name, base[0]
    );
}

#[test]
fn hot_upgrades_of_gossip_with_rejoins_leave_no_descriptors_threads_or_connections_behind() {
    // Each upgrade leaves and re-joins the cluster (about a second each);
    // the bench's soak runs 200.
    const UPGRADES: usize = 10;
    let (nodes, ports) = two_members("gup");
    let base = baseline(&nodes, &ports);
    let builds = restamped_versions(&plugin("gossip"), &nodes[0].home.path().join("builds"), "gossip", UPGRADES);
    let refs: Vec<&Node> = nodes.iter().collect();
    let url = match &nodes[0].access {
        gossip_kit::Access::Http(url) => url.clone(),
        gossip_kit::Access::Netns { .. } => unreachable!("these members run on 127.0.0.1"),
    };
    for (path, version) in &builds {
        publish_file(nodes[0].home.path(), path, "gossip.so");
        wait_until(&format!("gossip {version} to be active"), DEADLINE, || {
            active_version(&url, "gossip").as_deref() == Some(version.as_str())
        });
        wait_for_view(&refs, &names(&nodes));
        nodes[0].put("c", &format!("a{version}"), "v");
        nodes[1].put("c", &format!("b{version}"), "v");
        wait_settled(&format!("upgrade to {version}"), &nodes, &ports, &base, 2);
    }
    // After an upgrade the join says what it merged: the entries this node held, not "standalone" ones.
    nodes[0].process.wait_for_log(&["joined the cluster;", "cache entries held on this node"], DEADLINE);
    let after = wait_back_to(&format!("{UPGRADES} hot upgrades of gossip"), nodes[0].process.pid(), base[0]);
    println!(
        "figure: after {UPGRADES} hot upgrades of gossip with re-joins: {after} ({:+} fds, {:+} threads, {:.1} KiB resident per upgrade)",
        after.fds as i64 - base[0].fds as i64,
        after.threads as i64 - base[0].threads as i64,
        (after.rss_kib as f64 - base[0].rss_kib as f64) / UPGRADES as f64
    );
}
