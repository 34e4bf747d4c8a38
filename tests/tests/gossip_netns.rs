//! The gossip strategy across real processes in network namespaces (root
//! needed; CI runs as root, so there these tests must run; elsewhere, when
//! not root, they print why they did not run and return).
//!
//! Topology, per test: a "switch" namespace with a bridge, and one
//! namespace per member, each linked to the bridge by a veth pair, with an
//! address in 10.213.0.0/24 that exists only inside these namespaces. Each
//! member runs with `ip netns exec NS clusterhost run --bind 10.213.0.X`;
//! its admin API is on the namespace's own 127.0.0.1:9090 and is read with
//! `ip netns exec NS clusterhost cluster status --json` (and `cache get/put`).
//! The namespaces are deleted when the test ends, also on failure.
//!
//! - a partition (one member's link down) and its healing: one cluster and
//!   one senior again, caches merged by the policy (latest wins);
//! - multicast discovery: three members with no static list form a cluster;
//! - DNS discovery: members listed by one name form a cluster, and a member
//!   added to the name later is found by the others' next resolution. The
//!   name lives in each namespace's own `/etc/netns/NS/hosts`, which
//!   `ip netns exec` mounts over `/etc/hosts` for the member (what the
//!   system resolver reads, as it reads a cluster DNS server's answer).

mod gossip_kit;

use std::time::Duration;

use clusterhost_tests::netns::{self, Lab};
use clusterhost_tests::wait_until;
use gossip_kit::{
    gossip_home, in_ci, random_key, start_in_netns, unique_cluster, view_of, wait_for_view, HomeSpec, Node, DEADLINE,
};

const PREFIX: &str = "chg";
const SUBNET: &str = "10.213.0";
const PORT: u16 = 5701;

/// Whether namespaces can be made here; outside CI, says why not and returns false.
fn namespaces_available(test: &str) -> bool {
    match netns::unavailable() {
        None => true,
        Some(why) if in_ci() => panic!("{test} must run in CI, but {why}"),
        Some(why) => {
            println!("SKIPPED (not run, not passed) {test}: {why}");
            eprintln!("SKIPPED (not run, not passed) {test}: {why}");
            false
        }
    }
}

/// Starts member `names[i]` in the lab's namespace i.
fn start_members(
    lab: &Lab,
    cluster: &str,
    key: &str,
    names: &[&str],
    members: &[String],
    multicast: bool,
) -> Vec<Node> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut spec = HomeSpec::new(cluster, key, members);
            spec.multicast = multicast;
            start_in_netns(&lab.members[i], name, &lab.address(i), PORT, gossip_home(&spec))
        })
        .collect()
}

#[test]
fn a_healed_partition_leaves_one_cluster_one_senior_and_caches_merged_latest_wins() {
    if !namespaces_available("a_healed_partition_leaves_one_cluster_one_senior_and_caches_merged_latest_wins") {
        return;
    }
    let lab = Lab::new(PREFIX, SUBNET, "part", 3);
    let cluster = unique_cluster("partition");
    let key = random_key();
    let members: Vec<String> = (0..3).map(|i| format!("{}:{PORT}", lab.address(i))).collect();
    let names = ["pa-a", "pa-b", "pa-c"];
    let nodes = start_members(&lab, &cluster, &key, &names, &members, false);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for_view(&all, &names);
    // Split-brain protection on cache "guarded": at least 2 members (the
    // properties are reloaded live).
    for node in &nodes {
        let file = node.home.path().join("conf/clusterhost.properties");
        let mut text = std::fs::read_to_string(&file).expect("the properties are readable");
        text.push_str("cache.guarded.min.members = 2\n");
        std::fs::write(&file, text).expect("the properties can be written");
    }
    for node in &nodes {
        wait_until(&format!("{} to apply the protection", node.name), DEADLINE, || {
            node.status().is_some_and(|s| s["protection"][0]["cache"] == "guarded")
        });
    }
    nodes[0].put("guarded", "before", "all-three");
    nodes[0].put("sessions", "before", "split");
    assert_eq!(nodes[2].get("sessions", "before").as_deref(), Some("split"));

    // Cut pa-c off: each side goes on as a cluster of its own. Each member
    // finds the other side silent (no gossip heartbeat, a member port that
    // does not answer) and takes it out of its view before chitchat's
    // accrual detector would.
    let cut = std::time::Instant::now();
    lab.link(2, false);
    let (ab, c) = (vec![&nodes[0], &nodes[1]], vec![&nodes[2]]);
    wait_for_view(&ab, &["pa-a", "pa-b"]);
    wait_for_view(&c, &["pa-c"]);
    println!("figure: link cut -> both sides apart: {:?}", cut.elapsed());
    for (i, node) in nodes.iter().enumerate() {
        let silent: &[&str] = if i == 2 { &["pa-a", "pa-b"] } else { &["pa-c"] };
        for other in silent {
            let says = format!("member {other} is silent: no member has heard from it");
            node.process.wait_for_log(&[&says], Duration::from_secs(10));
        }
    }

    // Writes on both sides. "both" is written on the majority side first,
    // then on pa-c (pa-c's is later: it wins); "both-2" the other way round.
    nodes[0].put("sessions", "both", "from-ab");
    nodes[2].put("sessions", "both", "from-c");
    nodes[2].put("sessions", "both-2", "from-c");
    nodes[1].put("sessions", "both-2", "from-ab");
    nodes[0].put("sessions", "only-a", "a");
    nodes[1].put("rooms", "only-b", "b");
    nodes[2].put("sessions", "only-c", "c");
    nodes[2].put("rooms", "only-c", "c");
    // The protected cache: the pair writes it, the single member refuses,
    // naming the rule and the sizes, and still reads.
    nodes[0].put("guarded", "during", "the-pair");
    let refused = nodes[2].try_put("guarded", "during", "alone").expect_err("pa-c alone wrote a protected cache");
    assert!(
        refused.contains("cache.guarded.min.members = 2") && refused.contains("sees 1 member"),
        "the refusal names the rule and sizes: {refused}"
    );
    assert_eq!(nodes[2].get("guarded", "before").as_deref(), Some("all-three"), "reads stay allowed");
    let status = nodes[2].status().expect("a status");
    assert_eq!(status["protection"][0]["refusing"], true, "the status shows the protection active: {status}");
    assert_eq!(nodes[1].get("sessions", "both").as_deref(), Some("from-ab"));
    assert_eq!(nodes[2].get("sessions", "both").as_deref(), Some("from-c"));
    assert_eq!(nodes[0].get("sessions", "only-c"), None, "the sides are apart");

    // Heal: one cluster, one senior on all.
    lab.link(2, true);
    let senior = wait_for_view(&all, &names);
    println!("healed: one cluster, senior {senior}");
    // Caches merged: distinct keys from both sides everywhere; a key written
    // on both sides holds the later write.
    let expected = [
        ("guarded", "before", "all-three"),
        ("guarded", "during", "the-pair"),
        ("sessions", "before", "split"),
        ("sessions", "both", "from-c"),
        ("sessions", "both-2", "from-ab"),
        ("sessions", "only-a", "a"),
        ("rooms", "only-b", "b"),
        ("sessions", "only-c", "c"),
        ("rooms", "only-c", "c"),
    ];
    for node in &nodes {
        wait_until(&format!("{} to hold the merged caches", node.name), DEADLINE, || {
            expected.iter().all(|(cache, k, v)| node.get(cache, k).as_deref() == Some(*v))
        });
    }
    // And the healed cluster replicates again.
    nodes[2].put("sessions", "after", "healed");
    for node in &nodes {
        assert_eq!(node.get("sessions", "after").as_deref(), Some("healed"), "on {}", node.name);
    }
    let status = nodes[2].status().expect("a status");
    assert_eq!(view_of(&status).and_then(|v| v.1), Some(senior), "{status}");
}

#[test]
fn three_members_with_no_static_list_find_each_other_by_multicast() {
    if !namespaces_available("three_members_with_no_static_list_find_each_other_by_multicast") {
        return;
    }
    let lab = Lab::new(PREFIX, SUBNET, "mcast", 3);
    let cluster = unique_cluster("multicast");
    let key = random_key();
    let names = ["mc-a", "mc-b", "mc-c"];
    let nodes = start_members(&lab, &cluster, &key, &names, &[], true);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for_view(&all, &names);
    for node in &nodes {
        node.process.wait_for_log(&["gossip started", "encrypted=true"], Duration::from_secs(5));
    }
    nodes[1].put("sessions", "found", "by-multicast");
    for node in &nodes {
        assert_eq!(node.get("sessions", "found").as_deref(), Some("by-multicast"), "on {}", node.name);
    }
}

/// Each member namespace's own hosts file (`/etc/netns/NS/hosts`, mounted
/// over `/etc/hosts` by `ip netns exec`); the directories are removed on
/// drop. Rewritten in place, so a running member reads the new contents.
struct HostsFiles {
    dirs: Vec<std::path::PathBuf>,
}

impl HostsFiles {
    fn new(lab: &Lab) -> HostsFiles {
        let dirs: Vec<_> = lab.members.iter().map(|ns| std::path::Path::new("/etc/netns").join(ns)).collect();
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{} cannot be made: {e}", dir.display()));
        }
        let files = HostsFiles { dirs };
        for i in 0..files.dirs.len() {
            files.list(i, "", &[]);
        }
        files
    }

    /// In namespace `i`, `name` lists `addresses`.
    fn list(&self, i: usize, name: &str, addresses: &[String]) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for address in addresses {
            text.push_str(&format!("{address} {name}\n"));
        }
        let file = self.dirs[i].join("hosts");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{} cannot be written: {e}", file.display()));
    }
}

impl Drop for HostsFiles {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn members_listed_by_one_dns_name_form_a_cluster_and_find_a_member_added_to_the_name() {
    let test = "members_listed_by_one_dns_name_form_a_cluster_and_find_a_member_added_to_the_name";
    if !namespaces_available(test) {
        return;
    }
    let lab = Lab::new(PREFIX, SUBNET, "dns", 4);
    let hosts = HostsFiles::new(&lab);
    let cluster = unique_cluster("dns");
    let key = random_key();
    let name = format!("members-{}.clusterhost.test", std::process::id());
    let addresses: Vec<String> = (0..4).map(|i| lab.address(i)).collect();
    // The name lists three members; the fourth's own resolver lists only itself.
    for i in 0..3 {
        hosts.list(i, &name, &addresses[..3]);
    }
    hosts.list(3, &name, &addresses[3..]);
    let names = ["dn-a", "dn-b", "dn-c", "dn-d"];
    let nodes: Vec<Node> = names
        .iter()
        .enumerate()
        .map(|(i, member)| {
            let home = gossip_home(&HomeSpec::new(&cluster, &key, &[]));
            let conf = home.path().join("conf/gossip.toml");
            let text = std::fs::read_to_string(&conf).expect("gossip.toml was written");
            let text = text
                .replace("[discovery]\n", &format!("[discovery]\ndns = \"{name}:{PORT}\"\ndns_interval_ms = 300\n"));
            std::fs::write(&conf, text).expect("gossip.toml can be rewritten");
            start_in_netns(&lab.members[i], member, &lab.address(i), PORT, home)
        })
        .collect();
    let started = std::time::Instant::now();
    let first: Vec<&Node> = nodes[..3].iter().collect();
    wait_for_view(&first, &names[..3]);
    println!("figure: 3 members listed by one name -> one cluster: {:?}", started.elapsed());
    wait_for_view(&[&nodes[3]], &names[3..]);
    nodes[0].process.wait_for_log(&["dns discovery", &name, "resolves to"], Duration::from_secs(5));

    // The name gains the fourth member: the others' next resolution finds it.
    for i in 0..4 {
        hosts.list(i, &name, &addresses);
    }
    let added = std::time::Instant::now();
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for_view(&all, &names);
    println!("figure: a fourth member added to the name -> one cluster of 4: {:?}", added.elapsed());
    nodes[3].put("sessions", "found", "by-dns");
    for node in &nodes {
        assert_eq!(node.get("sessions", "found").as_deref(), Some("by-dns"), "on {}", node.name);
    }
}
