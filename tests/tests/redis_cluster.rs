//! The redis strategy across real `clusterhost run` processes on one
//! `redis-server` each test starts for itself (issue 6's acceptance):
//! 3 nodes form one cluster, share caches, drop a SIGKILLed member and
//! agree on one new senior, and ride out killed connections; a Redis
//! restart makes members leave and rejoin, with what docs/redis.md says
//! is kept and lost, with and without persistence; gossip and redis are
//! refused together, whichever is dropped second.
//!
//! Figures printed (not asserted): join visible on all, failure detection.

mod gossip_kit;

use std::path::Path;
use std::time::Instant;

use clusterhost_tests::admin::{call, TOKEN};
use clusterhost_tests::cluster::{loopback_members, write_gossip_conf, write_redis_conf};
use clusterhost_tests::redis::RedisServer;
use clusterhost_tests::{plugin, wait_until, NodeProcess};
use gossip_kit::{free_member_port, member_home, start_local, unique_cluster, wait_for_view, Node, DEADLINE};

/// A home with conf/redis.toml (`urls`, key prefix `prefix`), a quick
/// start, metrics on, the admin token, and plugins/redis_strategy.so.
fn redis_home(urls: &[String], prefix: &str) -> tempfile::TempDir {
    member_home(&plugin("redis_strategy"), "redis_strategy.so", |conf| write_redis_conf(conf, "single", urls, prefix))
}

fn start_all(server: &RedisServer, prefix: &str, names: &[&str]) -> Vec<Node> {
    let mut taken = Vec::new();
    names
        .iter()
        .map(|name| {
            let port = free_member_port(&taken);
            taken.push(port);
            start_local(name, port, redis_home(&[server.url()], prefix))
        })
        .collect()
}

fn state_of(node: &Node) -> String {
    node.status().map(|s| s["state"]["state"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
}

/// Waits until the node's GET /api/cluster says `state`; returns the body.
fn wait_for_state(process: &NodeProcess, state: &str) -> serde_json::Value {
    process.wait_for_admin(DEADLINE);
    let url = format!("{}/api/cluster", process.admin_url());
    let mut last = serde_json::Value::Null;
    wait_until(&format!("the node to be {state}"), DEADLINE, || {
        last = call("GET", &url, None, None).1;
        last["state"]["state"] == state
    });
    last
}

#[test]
fn three_nodes_on_one_redis_share_caches_and_drop_a_killed_member() {
    let server = RedisServer::start();
    let prefix = unique_cluster("r3");
    let spawned = Instant::now();
    let mut nodes = start_all(&server, &prefix, &["ra", "rb", "rc"]);
    let refs: Vec<&Node> = nodes.iter().collect();
    let senior = wait_for_view(&refs, &["ra", "rb", "rc"]);
    println!("figure: 3 processes spawned -> all 3 list 3 members with one senior: {:?}", spawned.elapsed());
    let status = nodes[0].status().expect("a status");
    for detail in status["details"].as_array().expect("details") {
        assert_eq!(detail["cluster"]["state"], "clustered", "{status}");
        assert_eq!(detail["plugin"]["id"], "redis", "{status}");
    }
    // The senior is the first to join: every node starts at once here, so
    // only agreement is checked; the join order decides.
    assert!(["ra", "rb", "rc"].contains(&senior.as_str()));

    // A write on one member is read on the others at once (one shared store).
    nodes[0].put("sessions", "s1", "ada");
    nodes[1].put("sessions", "s2", "bob");
    for node in &nodes {
        assert_eq!(node.get("sessions", "s1").as_deref(), Some("ada"), "on {}", node.name);
        assert_eq!(node.get("sessions", "s2").as_deref(), Some("bob"), "on {}", node.name);
    }

    // Killed connections (every client, pub/sub included): members reconnect
    // within the member TTL and nobody leaves.
    let killed = server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let killed_pubsub = server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.trim().parse::<u32>().is_ok_and(|n| n >= 3), "CLIENT KILL normal: {killed}");
    assert!(killed_pubsub.trim().parse::<u32>().is_ok_and(|n| n >= 3), "CLIENT KILL pubsub: {killed_pubsub}");
    wait_until("a write after the connection drop", DEADLINE, || {
        call("PUT", &format!("{}/api/caches/sessions/s3", nodes[2].process.admin_url()), Some(TOKEN), Some(b"cy")).0
            == 200
    });
    for node in &nodes {
        assert_eq!(node.get("sessions", "s3").as_deref(), Some("cy"), "on {}", node.name);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    assert_eq!(wait_for_view(&refs, &["ra", "rb", "rc"]), senior, "the senior did not change");
    for node in &nodes {
        assert_eq!(node.strategy_counter("redis_lost"), Some(0), "{} left over a dropped connection", node.name);
        assert_eq!(
            node.strategy_counter("process_deaths_confirmed"),
            Some(0),
            "{} took a member with dropped connections for dead",
            node.name
        );
    }
    // Pub/sub came back too: a cluster task (the status's per-member
    // details) reaches every member.
    wait_until("every member to answer the status task", DEADLINE, || {
        nodes[0].status().is_some_and(|s| {
            s["details"]
                .as_array()
                .is_some_and(|d| d.len() == 3 && d.iter().all(|d| d["cluster"]["state"] == "clustered"))
        })
    });

    // SIGKILL the senior: Redis drops its connections, and the first
    // survivor to see that (and its key missing two refreshes) removes it
    // for all, without waiting for the key to expire; they agree on one new senior.
    let index = nodes.iter().position(|n| n.name == senior).expect("the senior is a node");
    let mut dead = nodes.remove(index);
    let killed_at = Instant::now();
    dead.process.kill();
    let rest: Vec<&Node> = nodes.iter().collect();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let new_senior = wait_for_view(&rest, &names);
    println!("figure: senior SIGKILLed -> the others agree on a new senior: {:?}", killed_at.elapsed());
    assert_ne!(new_senior, senior);
    let confirmed: u64 = nodes.iter().map(|n| n.strategy_counter("process_deaths_confirmed").unwrap_or(0)).sum();
    assert_eq!(confirmed, 1, "one survivor removed the killed senior on its closed connections (not its TTL)");
    for node in &nodes {
        node.process.wait_for_log(&["member left", &senior], DEADLINE);
        assert_eq!(node.get("sessions", "s1").as_deref(), Some("ada"), "data outlives members, on {}", node.name);
    }
}

/// Kills Redis under a clustered 3-node cluster and starts it again:
/// members leave (standalone, with the reason) and rejoin; what each wrote
/// while Redis was away is merged back. Returns (nodes, whether "before",
/// written before the restart, is still there).
fn restart_redis(server: &mut RedisServer, prefix: &str) -> (Vec<Node>, bool) {
    let nodes = start_all(server, prefix, &["xa", "xb", "xc"]);
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_view(&refs, &["xa", "xb", "xc"]);
    nodes[0].put("rooms", "before", "lobby");
    // AOF with fsync always: acknowledged means on disk (when enabled).
    server.kill();
    let lost_at = Instant::now();
    for node in &nodes {
        wait_until(&format!("{} to go standalone", node.name), DEADLINE, || state_of(node) == "standalone");
        // Out before its key could expire, not after.
        node.process.wait_for_log(&["leaving the cluster before it expires"], DEADLINE);
        let status = node.status().expect("a status");
        let reason = status["state"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("lost the cluster"), "{} standalone because: {status}", node.name);
    }
    println!("figure: Redis killed -> all 3 members standalone: {:?}", lost_at.elapsed());
    // Standalone writes while Redis is away.
    nodes[2].put("rooms", "during", "hall");
    nodes[1].put("rooms", "during-b", "attic");

    server.restart();
    let back_at = Instant::now();
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_view(&refs, &["xa", "xb", "xc"]);
    println!("figure: Redis restarted -> all 3 members clustered again: {:?}", back_at.elapsed());
    for node in &nodes {
        node.process.wait_for_log(&["Redis is back: rejoining the cluster"], DEADLINE);
        assert_eq!(node.strategy_counter("rejoins"), Some(1), "{}", node.name);
        // The members' own writes from the outage were merged into Redis.
        assert_eq!(node.get("rooms", "during").as_deref(), Some("hall"), "on {}", node.name);
        assert_eq!(node.get("rooms", "during-b").as_deref(), Some("attic"), "on {}", node.name);
    }
    let kept = nodes.iter().map(|n| n.get("rooms", "before")).collect::<Vec<_>>();
    assert!(kept.iter().all(|k| *k == kept[0]), "every member reads the same: {kept:?}");
    let before = kept[0].as_deref() == Some("lobby");
    (nodes, before)
}

#[test]
fn a_redis_restart_without_persistence_loses_what_it_held_and_keeps_what_members_wrote_meanwhile() {
    let mut server = RedisServer::start();
    let (_nodes, before) = restart_redis(&mut server, &unique_cluster("restart"));
    // As docs/redis.md says: without persistence, what Redis held is gone.
    assert!(!before, "an entry written before a restart without persistence survived");
}

#[test]
fn a_redis_restart_with_persistence_keeps_everything() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (_nodes, before) = restart_redis(&mut server, &unique_cluster("aof"));
    assert!(before, "an acknowledged entry was lost across a restart with appendfsync always");
}

/// Drops `second` into a node running `first` (both cluster strategies):
/// the second is refused, naming the first.
fn refused_second(first: &str, second: &str, first_id: &str, second_id: &str) {
    let server = RedisServer::start();
    let cluster = unique_cluster("both");
    let home = redis_home(&[server.url()], &cluster);
    // gossip's configuration too: a cluster of one on its own port.
    let port = free_member_port(&[]);
    write_gossip_conf(&home.path().join("conf"), &cluster, &"7e".repeat(32), &loopback_members(&[port]), false);
    let plugins = home.path().join("plugins");
    std::fs::remove_file(plugins.join("redis_strategy.so")).expect("the redis plugin was published");
    std::fs::copy(plugin(first), plugins.join(format!("{first}.so"))).expect("copy");
    let port = port.to_string();
    let process = NodeProcess::start_with(
        home.path(),
        &["--node-name", "both", "--bind", "127.0.0.1", "--cluster-port", &port],
        &[],
    );
    wait_for_state(&process, "clustered");
    publish(home.path(), second);
    let line = process.wait_for_log(&["rejected", "already provided by"], DEADLINE);
    assert!(
        line.contains(&format!("plugin {second_id} ")) && line.contains(&format!("already provided by {first_id} ")),
        "{line}"
    );
    assert!(line.contains("remove one of them"), "{line}");
    let (status, body) = call("GET", &format!("{}/api/plugins", process.admin_url()), None, None);
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(text.contains("rejected") && text.contains(&format!("already provided by {first_id}")), "{text}");
    // The first strategy still serves.
    let status = wait_for_state(&process, "clustered");
    assert_eq!(status["details"][0]["plugin"]["id"], first_id, "{status}");
}

fn publish(home: &Path, lib: &str) {
    let tmp = home.join(format!("plugins/.{lib}.tmp"));
    std::fs::copy(plugin(lib), &tmp).expect("copy");
    std::fs::rename(&tmp, home.join(format!("plugins/{lib}.so"))).expect("rename");
}

#[test]
fn gossip_then_redis_refuses_redis() {
    refused_second("gossip", "redis_strategy", "gossip", "redis");
}

#[test]
fn redis_then_gossip_refuses_gossip() {
    refused_second("redis_strategy", "gossip", "redis", "gossip");
}

#[test]
fn a_node_started_before_redis_joins_once_redis_is_up() {
    // No server yet on the port the node is given.
    let port = clusterhost_tests::redis::free_redis_port();
    let home = redis_home(&[format!("redis://127.0.0.1:{port}")], &unique_cluster("late"));
    std::fs::write(
        home.path().join("conf/clusterhost.properties"),
        "cluster.startup.delay.seconds = 0\ncluster.startup.retry.count = 1\ncluster.startup.retry.seconds = 1\n",
    )
    .expect("properties");
    std::fs::write(home.path().join("conf/admin.token"), format!("{TOKEN}\n")).expect("the token");
    let process = NodeProcess::start_with(home.path(), &["--node-name", "early", "--bind", "127.0.0.1"], &[]);
    let status = wait_for_state(&process, "standalone");
    let reason = status["state"]["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("could not reach Redis") && reason.contains(&format!("127.0.0.1:{port}")),
        "the reason names Redis and where: {status}"
    );
    // Redis comes up: the node joins on its own, no re-enable needed.
    let _server = RedisServer::start_on(port, &[]);
    wait_for_state(&process, "clustered");
    // A rejoin on the plugin's own tells the host before the plugin has
    // read the member list again (it does right after).
    let url = format!("{}/api/cluster", process.admin_url());
    let mut status = serde_json::Value::Null;
    wait_until("the node to list itself as the one member", DEADLINE, || {
        status = call("GET", &url, None, None).1;
        status["members"].as_array().map(Vec::len) == Some(1)
    });
    assert_eq!(status["state"]["state"], "clustered", "{status}");
}

/// A test CA (ca.pem) and a server certificate for 127.0.0.1 it signed
/// (cert.pem, key.pem), in `dir`.
fn test_certificates(dir: &Path) {
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext.cnf");
    let steps: [&[&str]; 3] = [
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=clusterhost test CA"],
        &["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "srv.csr"],
        &["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"],
    ];
    let tails: [&[&str]; 3] =
        [&["-keyout", "ca.key", "-out", "ca.pem"], &[], &["-extfile", "ext.cnf", "-out", "cert.pem"]];
    for (step, tail) in steps.iter().zip(tails) {
        let out = std::process::Command::new("openssl")
            .args(*step)
            .args(tail)
            .current_dir(dir)
            .output()
            .expect("openssl runs (.ci/run installs it)");
        assert!(out.status.success(), "openssl {step:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn tls_with_the_servers_ca_clusters_and_an_unknown_ca_is_refused_with_the_reason() {
    let certs = tempfile::tempdir().expect("a certificate folder");
    test_certificates(certs.path());
    let (ca, cert, key) = (certs.path().join("ca.pem"), certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let tls_port = clusterhost_tests::redis::free_redis_port().to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert.to_str().expect("a UTF-8 path"),
        "--tls-key-file",
        key.to_str().expect("a UTF-8 path"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let prefix = unique_cluster("tls");

    // Trusting the server's CA (tls_ca_file): clustered, over TLS.
    let home = redis_home(std::slice::from_ref(&url), &prefix);
    std::fs::copy(&ca, home.path().join("conf/ca.pem")).expect("the CA copies");
    let conf = home.path().join("conf/redis.toml");
    let text = std::fs::read_to_string(&conf).expect("redis.toml");
    std::fs::write(&conf, format!("tls_ca_file = \"ca.pem\"\n{text}")).expect("redis.toml");
    let node = start_local("tls-a", free_member_port(&[]), home);
    wait_for_view(&[&node], &["tls-a"]);
    node.put("sessions", "over-tls", "yes");
    assert_eq!(node.get("sessions", "over-tls").as_deref(), Some("yes"));
    // The entry is in the server (read over the plain port).
    let stored = server.cli(&["HLEN", &format!("{prefix}:cache:sessions")]);
    assert_eq!(stored.trim(), "1", "{stored}");
    let clients = server.cli(&["CLIENT", "LIST"]);
    assert!(clients.lines().any(|l| l.contains(&format!("laddr=127.0.0.1:{tls_port}"))), "{clients}");

    // Without it, the test CA is not trusted: standalone, saying why.
    let home = redis_home(&[url], &unique_cluster("tls-untrusted"));
    std::fs::write(
        home.path().join("conf/clusterhost.properties"),
        "cluster.startup.delay.seconds = 0\ncluster.startup.retry.count = 0\n",
    )
    .expect("properties");
    let untrusted = NodeProcess::start_with(home.path(), &["--node-name", "tls-b", "--bind", "127.0.0.1"], &[]);
    let status = wait_for_state(&untrusted, "standalone");
    let reason = status["state"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("could not reach Redis") && reason.to_lowercase().contains("certificate"), "{status}");
}

#[test]
fn a_hot_upgrade_of_one_member_rejoins_it_on_the_new_version_and_loses_nothing() {
    let server = RedisServer::start();
    let nodes = start_all(&server, &unique_cluster("hot"), &["ua", "ub", "uc"]);
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_view(&refs, &["ua", "ub", "uc"]);
    for i in 0..20 {
        nodes[i % 3].put("sessions", &format!("k{i}"), &format!("v{i}"));
    }
    // A 0.2.0 build replaces ub's plugin file (write, then rename).
    let builds = tempfile::tempdir().expect("a build folder");
    let newer = builds.path().join("redis-0.2.0.so");
    clusterhost_tests::restamp(&plugin("redis_strategy"), &newer, |m| {
        m.version = "0.2.0".parse().expect("a version");
    });
    let plugins = nodes[1].home.path().join("plugins");
    std::fs::copy(&newer, plugins.join(".redis_strategy.so.tmp")).expect("copy");
    std::fs::rename(plugins.join(".redis_strategy.so.tmp"), plugins.join("redis_strategy.so")).expect("rename");
    let replaced = Instant::now();
    wait_until("ub back in the cluster on 0.2.0, seen by every member", DEADLINE, || {
        nodes.iter().all(|n| {
            n.status().is_some_and(|s| {
                s["members"].as_array().is_some_and(|m| {
                    m.len() == 3 && m.iter().any(|m| m["id"] == "ub" && m["plugin_version"] == "0.2.0")
                })
            })
        })
    });
    println!("figure: redis plugin replaced on one member -> every member lists it on 0.2.0: {:?}", replaced.elapsed());
    let status = nodes[0].status().expect("a status");
    assert!(status["warn"].as_str().is_some_and(|w| w.contains("different versions")), "{status}");
    // Nothing was lost: the data lives in Redis, not in the replaced plugin.
    for node in &nodes {
        for i in 0..20 {
            assert_eq!(node.get("sessions", &format!("k{i}")), Some(format!("v{i}")), "k{i} on {}", node.name);
        }
    }
    nodes[1].put("sessions", "from-new", "0.2.0");
    assert_eq!(nodes[2].get("sessions", "from-new").as_deref(), Some("0.2.0"));
}
