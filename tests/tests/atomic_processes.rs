//! Atomic cache operations across real `clusterhost run` processes: three
//! members (gossip, then redis on one `redis-server`) and 16 concurrent
//! increments of one counter, spread over the three members' admin APIs,
//! each a read of the entry's version followed by a write conditional on
//! it (`PUT ?if-absent` / `?if-version=N`), retried on 409 as
//! `Cache::update` does. No increment is lost: the counter ends at 16 on
//! every member, and each value 1..=16 was written exactly once.

mod gossip_kit;

use clusterhost_tests::admin::{call_text, TOKEN};
use clusterhost_tests::cluster::loopback_members;
use clusterhost_tests::redis::RedisServer;
use clusterhost_tests::wait_until;
use gossip_kit::{
    free_member_port, gossip_home, random_key, start_local, start_redis_members, unique_cluster, wait_for_view,
    HomeSpec, Node, DEADLINE,
};

/// Increments per counter (the acceptance).
const INCREMENTS: u64 = 16;
/// Attempts per increment before the test gives up (as `Cache::update`).
const ATTEMPTS: u32 = 100;

/// One increment of `counters/hits` through the admin API at `url`: the
/// value it wrote.
fn increment(url: &str) -> u64 {
    let entry = format!("{url}/api/caches/counters/hits");
    for attempt in 0..ATTEMPTS {
        let (status, body) = call_text("GET", &entry, None, None);
        let (query, next) = match status {
            404 => ("?if-absent".to_string(), 1),
            200 => {
                let body: serde_json::Value = serde_json::from_str(&body).expect("the API answers JSON");
                let value: u64 = body["value"].as_str().and_then(|v| v.parse().ok()).expect("a number");
                let version = body["version"].as_u64().expect("the strategy reports versions");
                (format!("?if-version={version}"), value + 1)
            }
            other => panic!("GET {entry}: {other} {body}"),
        };
        let (status, body) =
            call_text("PUT", &format!("{entry}{query}"), Some(TOKEN), Some(next.to_string().as_bytes()));
        match status {
            200 => return next,
            409 => std::thread::sleep(std::time::Duration::from_micros(200 << attempt.min(6))),
            other => panic!("PUT {entry}{query}: {other} {body}"),
        }
    }
    panic!("an increment at {url} lost {ATTEMPTS} races in a row")
}

/// Runs the 16 increments at once over `nodes`, then checks every member.
fn sixteen_increments_lose_nothing(nodes: &[Node]) {
    let urls: Vec<String> = nodes.iter().map(|n| n.process.admin_url()).collect();
    let writers: Vec<_> = (0..INCREMENTS as usize)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            std::thread::spawn(move || increment(&url))
        })
        .collect();
    let mut written: Vec<u64> = writers.into_iter().map(|w| w.join().expect("a writer panicked")).collect();
    written.sort_unstable();
    assert_eq!(written, (1..=INCREMENTS).collect::<Vec<_>>(), "each value was written by exactly one increment");
    for node in nodes {
        wait_until(&format!("{} to read {INCREMENTS}", node.name), DEADLINE, || {
            node.get("counters", "hits").as_deref() == Some(&INCREMENTS.to_string()[..])
        });
    }
}

#[test]
fn sixteen_concurrent_increments_on_three_gossip_processes_lose_none() {
    let (cluster, key) = (unique_cluster("atomic"), random_key());
    let mut ports = Vec::new();
    for _ in 0..3 {
        ports.push(free_member_port(&ports));
    }
    let members = loopback_members(&ports);
    let nodes: Vec<Node> = ["ga", "gb", "gc"]
        .iter()
        .zip(&ports)
        .map(|(name, port)| start_local(name, *port, gossip_home(&HomeSpec::new(&cluster, &key, &members))))
        .collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_view(&refs, &["ga", "gb", "gc"]);
    sixteen_increments_lose_nothing(&nodes);
}

#[test]
fn sixteen_concurrent_increments_on_three_redis_processes_lose_none() {
    let server = RedisServer::start();
    let nodes = start_redis_members(&server.url(), &unique_cluster("atomic"), &["ra", "rb", "rc"]);
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_view(&refs, &["ra", "rb", "rc"]);
    sixteen_increments_lose_nothing(&nodes);
}
