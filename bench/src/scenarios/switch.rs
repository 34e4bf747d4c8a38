//! `clusterhost cluster upgrade --mode switch` with data (issue 19): 3
//! gossip members (real `clusterhost run` processes) holding many entries
//! move to the redis strategy on one `redis-server` and back, under a
//! client loop. Timed: each switch as the CLI runs it; the longest time a
//! client went without a served request; failed requests. Counted after
//! each switch: entries that cannot be read back (the scenario fails if
//! any is lost).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clusterhost_tests::admin::{agent, call, TOKEN};
use clusterhost_tests::cluster::write_redis_conf;
use clusterhost_tests::redis::RedisServer;
use clusterhost_tests::upgrade::{wait_readable, ClientLoad, GossipCluster};
use clusterhost_tests::{plugin, wait_until, NodeProcess};

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct Switch;

/// The cache that holds the bulk of the data.
const BULK: &str = "bulk";
/// Threads writing (and reading back) the bulk entries, per member.
const THREADS_PER_MEMBER: usize = 3;
/// Pause between a client's requests during a switch.
const PAUSE: Duration = Duration::from_millis(2);

/// The value of bulk entry `i`: 64 bytes.
fn value_of(i: u64) -> String {
    format!("{:<64}", format!("value-{i}"))
}

/// Runs `work(url, i)` for every i in 0..n, spread over the members'
/// URLs with [`THREADS_PER_MEMBER`] threads each; the number of i for
/// which it returned false.
fn spread(urls: &[String], n: u64, work: impl Fn(&ureq::Agent, &str, u64) -> bool + Sync) -> u64 {
    let next = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for url in urls {
            for _ in 0..THREADS_PER_MEMBER {
                let (next, failed, work) = (&next, &failed, &work);
                scope.spawn(move || {
                    let agent = agent(Duration::from_secs(30));
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        if !work(&agent, url, i) {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        }
    });
    failed.load(Ordering::Relaxed)
}

/// Writes the `n` bulk entries through every member; panics on a refusal.
fn load(urls: &[String], n: u64) {
    let refused = spread(urls, n, |agent, url, i| {
        let put = agent
            .put(&format!("{url}/api/caches/{BULK}/e{i}"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send(value_of(i).as_bytes());
        matches!(put, Ok(r) if r.status() == 200)
    });
    assert_eq!(refused, 0, "{refused} of {n} bulk puts were refused");
}

/// How many of the `n` bulk entries `url` cannot read back with their value.
fn unreadable(url: &str, n: u64) -> u64 {
    spread(&[url.to_string()], n, |agent, url, i| match agent.get(&format!("{url}/api/caches/{BULK}/e{i}")).call() {
        Ok(mut r) if r.status() == 200 => {
            let text = r.body_mut().read_to_string().unwrap_or_default();
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            body["value"].as_str() == Some(value_of(i).as_str())
        }
        _ => false,
    })
}

/// The entries `node` says it holds in cache `name` (from `/api/node`).
fn entries_held(node: &NodeProcess, name: &str) -> u64 {
    let (_, body) = call("GET", &format!("{}/api/node", node.admin_url()), None, None);
    body["caches"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .and_then(|c| c["entries"].as_u64())
        .unwrap_or(0)
}

/// What one switch measured.
struct Outcome {
    took: Duration,
    stall: Duration,
    failed: u64,
    served: u64,
    lost: u64,
}

/// Switches every member to `to` (from `from`) under the client loop on
/// cache `live`, then counts what cannot be read back: the `n` bulk
/// entries on member `check` (every entry of a member, through its admin
/// API) and every member's entry count, and the loop's acknowledged
/// writes on every member.
fn switch(cluster: &GossipCluster, to: &Path, from: &Path, id: &str, live: &str, n: u64, check: usize) -> Outcome {
    let urls: Vec<String> = cluster.nodes.iter().map(NodeProcess::admin_url).collect();
    let load = ClientLoad::start(&urls, live, PAUSE, u64::MAX);
    load.wait_served(60, Duration::from_secs(30));
    let started = Instant::now();
    let run = cluster.switch_to(to, from);
    let took = started.elapsed();
    assert!(run.success, "the switch to {id} failed:\n{}\n{}", run.stdout, run.stderr);
    load.wait_served(60, Duration::from_secs(30));
    let seen = load.finish();
    let running = cluster.strategies();
    assert!(running.iter().all(|(s, _)| s == id), "every member runs {id} after the switch: {running:?}");
    wait_until(&format!("every member to hold the {n} bulk entries on {id}"), Duration::from_secs(60), || {
        cluster.nodes.iter().all(|node| entries_held(node, BULK) >= n)
    });
    let mut lost = unreadable(&urls[check], n);
    let missing = wait_readable(cluster, live, &seen.acknowledged);
    lost += missing.iter().map(|(_, keys)| keys.len() as u64).sum::<u64>();
    println!(
        "switch to {id} in {:.1} s: {} served, {} failed, longest stall {:?}, {lost} lost",
        took.as_secs_f64(),
        seen.served,
        seen.failed,
        seen.longest_stall
    );
    Outcome { took, stall: seen.longest_stall, failed: seen.failed, served: seen.served, lost }
}

impl Scenario for Switch {
    fn name(&self) -> &'static str {
        "switch"
    }

    fn about(&self) -> &'static str {
        "3 `clusterhost run` processes on gossip hold the `bulk` cache (100 000 entries of 64 bytes, written \
         through their admin APIs; quick mode: 2 000); `clusterhost cluster upgrade --mode switch` moves them to \
         redis (one `redis-server`) and back to gossip, while one client thread per member writes a new key and \
         reads it back through that member's admin API every 2 ms. Timed: each switch as the CLI runs it (its \
         members one at a time: drain, strategy removed, standalone copy kept, the other strategy installed, \
         copies merged by version, re-joined). Stall: the longest time any client went without a served request, \
         over the whole loop (from before the command until 60 requests after it). After each switch every bulk \
         entry is read back on one member and every member's entry count checked; every acknowledged write of \
         the loop is read back on every member (lost: what could not be)."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let (entries, rounds) = ctx.pick((100_000u64, 3usize), (2_000, 1));
        let redis = RedisServer::start();
        let gossip = ctx.work.join("gossip.so");
        std::fs::copy(plugin("gossip"), &gossip).expect("the gossip build can be copied");
        let redis_build = ctx.work.join("redis_strategy.so");
        std::fs::copy(plugin("redis_strategy"), &redis_build).expect("the redis build can be copied");
        let (url, prefix) = (redis.url(), format!("bench-switch-{}", std::process::id()));
        let dir = tempfile::tempdir_in(ctx.work).expect("a scratch directory");
        let cluster = GossipCluster::start_with(3, &gossip, dir, "", |home| {
            write_redis_conf(&home.join("conf"), "single", std::slice::from_ref(&url), &prefix)
        });
        let urls: Vec<String> = cluster.nodes.iter().map(NodeProcess::admin_url).collect();
        let started = Instant::now();
        load(&urls, entries);
        let loaded = started.elapsed();
        wait_until(&format!("every member to hold the {entries} bulk entries"), Duration::from_secs(120), || {
            cluster.nodes.iter().all(|node| entries_held(node, BULK) >= entries)
        });
        report.add(
            "switch.load_rate",
            "bulk puts/s through the admin APIs on gossip (before the switches)",
            Unit::OpsPerSec,
            &[entries as f64 / loaded.as_secs_f64()],
            &format!("{entries} puts, {} HTTP clients in all", THREADS_PER_MEMBER * 3),
        );

        let (mut to_redis, mut to_gossip) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            to_redis.push(switch(
                &cluster,
                &redis_build,
                &gossip,
                "redis",
                &format!("live-r{round}"),
                entries,
                round % 3,
            ));
            to_gossip.push(switch(
                &cluster,
                &gossip,
                &redis_build,
                "gossip",
                &format!("live-g{round}"),
                entries,
                (round + 1) % 3,
            ));
        }
        drop(cluster);
        drop(redis);
        let note = format!("{entries} entries in `bulk`, 3 members, per switch");
        for (tag, to, outcomes) in
            [("to_redis", "gossip → redis", &to_redis), ("to_gossip", "redis → gossip", &to_gossip)]
        {
            let took: Vec<Duration> = outcomes.iter().map(|o| o.took).collect();
            let stalls: Vec<Duration> = outcomes.iter().map(|o| o.stall).collect();
            let failed: Vec<f64> = outcomes.iter().map(|o| o.failed as f64).collect();
            let served: Vec<f64> = outcomes.iter().map(|o| o.served as f64).collect();
            let lost: Vec<f64> = outcomes.iter().map(|o| o.lost as f64).collect();
            report.add_durations(
                &format!("switch.{tag}.took"),
                &format!("switch {to}: whole command"),
                Unit::Seconds,
                &took,
                &note,
            );
            report.add_durations(
                &format!("switch.{tag}.stall"),
                &format!("switch {to}: longest client stall"),
                Unit::Millis,
                &stalls,
                "any of the 3 clients",
            );
            report.add(
                &format!("switch.{tag}.failed"),
                &format!("switch {to}: failed requests"),
                Unit::Count,
                &failed,
                "3 clients, every 2 ms each",
            );
            report.add(
                &format!("switch.{tag}.served"),
                &format!("switch {to}: requests served"),
                Unit::Count,
                &served,
                "3 clients",
            );
            report.add(
                &format!("switch.{tag}.lost"),
                &format!("switch {to}: entries lost"),
                Unit::Count,
                &lost,
                "bulk entries and acknowledged writes",
            );
        }
        let lost: u64 = to_redis.iter().chain(&to_gossip).map(|o| o.lost).sum();
        assert_eq!(lost, 0, "{lost} entries were lost by the switches");
    }
}
