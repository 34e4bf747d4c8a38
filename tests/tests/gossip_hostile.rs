//! The gossip data plane under a stranger's traffic (issue 14, findings 3,
//! 4 and 12), against real `clusterhost run` processes on 127.0.0.1: a
//! client without the cluster key that announces huge frames costs the
//! member almost no memory; running out of file descriptors does not spin
//! the accept loop; every refused connection is counted.

mod gossip_kit;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use clusterhost_tests::procfs::{cpu_time, status_kib};
use clusterhost_tests::{wait_until, NodeProcess};
use gossip_kit::{
    free_member_port, gossip_home, loopback_members, random_key, unique_cluster, HomeSpec, Node, DEADLINE,
};

/// A one-member gossip cluster on 127.0.0.1, started through `wrapper`
/// (e.g. `prlimit`); returns the node and its member port.
fn lone_member(test: &str, wrapper: &[&str]) -> (Node, u16) {
    let cluster = unique_cluster(test);
    let key = random_key();
    let port = free_member_port(&[]);
    let home = gossip_home(&HomeSpec::new(&cluster, &key, &loopback_members(&[port])));
    let port_arg = port.to_string();
    let args = ["--node-name", test, "--cluster-port", port_arg.as_str(), "--bind", "127.0.0.1"];
    let process = NodeProcess::start_wrapped(wrapper, home.path(), &args, &[]);
    let access = gossip_kit::Access::Http(process.admin_url());
    let node = Node { name: test.into(), process, home, access };
    wait_until(&format!("{test} to be clustered"), DEADLINE, || {
        node.status().is_some_and(|s| s["state"]["state"] == "clustered")
    });
    (node, port)
}

#[test]
fn four_strangers_announcing_huge_frames_cost_the_member_little_memory() {
    let (node, port) = lone_member("hostile-frames", &[]);
    let pid = node.process.pid();
    let before = status_kib(pid, "VmHWM");
    let stop = Instant::now() + Duration::from_secs(5);
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let chunk = vec![0u8; 1 << 20];
                let mut connections = 0u64;
                while Instant::now() < stop {
                    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                    connections += 1;
                    // A frame of 250 MiB announced, then as fast as the member takes it.
                    if stream.write_all(&(250u32 << 20).to_be_bytes()).is_err() {
                        continue;
                    }
                    while Instant::now() < stop && stream.write_all(&chunk).is_ok() {}
                }
                connections
            })
        })
        .collect();
    let connections: u64 = attackers.into_iter().map(|a| a.join().expect("an attacker thread")).sum();
    let peak = status_kib(pid, "VmHWM");
    println!("figure: 4 strangers, {connections} connections in 5 s: peak resident {before} -> {peak} KiB");
    assert!(
        peak < before + 64 * 1024,
        "the member's peak resident memory rose by {} KiB (from {before} KiB) under 4 strangers announcing 250 MiB frames",
        peak - before
    );
    let refused = node.strategy_counter("connections_refused").expect("the gossip counters on /metrics");
    assert!(refused >= 4 && refused >= connections.saturating_sub(4), "{refused} refused of {connections} connections");
    // The member still serves.
    node.put("c", "k", "v");
    assert_eq!(node.get("c", "k").as_deref(), Some("v"));
}

#[test]
fn running_out_of_file_descriptors_does_not_spin_the_accept_loop() {
    // 40 descriptors: the node needs about 25; idle connections exhaust the
    // rest before the per-address limit (64) would close them.
    let (node, port) = lone_member("hostile-fds", &["prlimit", "--nofile=40:40"]);
    let pid = node.process.pid();
    let mut idle = Vec::new();
    for _ in 0..300 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => idle.push(stream),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let start = cpu_time(pid);
    let window = Instant::now();
    // Keep the member out of descriptors for the whole window: as its Hello
    // deadline closes idle connections, new ones take their place.
    while window.elapsed() < Duration::from_secs(5) {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            idle.push(stream);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let used = cpu_time(pid) - start;
    println!("figure: out of descriptors for 5 s with {} connections made: {used:?} CPU", idle.len());
    drop(idle);
    assert!(used < Duration::from_millis(1500), "the member used {used:?} of CPU in 5 s while out of descriptors");
    // It noticed, and it recovers.
    wait_until("the member to answer again", DEADLINE, || node.status().is_some());
    let errors = node.strategy_counter("accept_errors").expect("the gossip counters on /metrics");
    assert!(errors > 0, "the test did not exhaust the member's descriptors (no accept error counted)");
    node.put("c", "k", "v");
}
