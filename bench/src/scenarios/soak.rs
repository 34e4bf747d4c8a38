//! The soak (issue 14): 3 gossip `clusterhost run` processes in network
//! namespaces under steady writers, while one member is hot-upgraded again
//! and again, another is SIGKILLed and restarted, and the third's link
//! flaps. At the end nothing acknowledged may be lost, every member holds
//! every acknowledged write, and the upgraded member's descriptors are
//! back to their baseline. Needs root (network namespaces).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterhost_tests::admin::TOKEN;
use clusterhost_tests::netns::{self, in_netns, Lab};
use clusterhost_tests::procfs::usage;
use clusterhost_tests::{plugin, restamped_versions, wait_until, NodeProcess};

use super::partition::{members_seen, write_home, ADMIN, PORT};
use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

const SUBNET: &str = "10.215.0";
const DEADLINE: Duration = Duration::from_secs(60);
const NAMES: [&str; 3] = ["sa", "sb", "sc"];
/// Writes per second, per writer.
const RATE: u32 = 20;
/// The most resident memory a hot upgrade of sa may add, median over the
/// run (docs/plugins.md, "What a retired version leaves behind": the
/// figure there is for release builds; this bound holds for debug ones too).
const RSS_PER_UPGRADE_KIB: f64 = 2048.0;

pub struct Soak;

impl Scenario for Soak {
    fn name(&self) -> &'static str {
        "soak"
    }

    fn about(&self) -> &'static str {
        "3 gossip `clusterhost run` processes, each in its own network namespace, under 2 writers (20 acknowledged \
         puts/s each through the admin API of members sa and sb, in turn) while member sa is hot-upgraded again and \
         again (restamped builds, write-then-rename, waiting for 3 members each time), sb is SIGKILLed and \
         restarted, and sc's link is cut until both sides split and brought back. Then the writers stop and every \
         acknowledged write must be read, with its value, on every member (0 lost), and sa's descriptors must be \
         back within 4 of their count after its first join. Needs root."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        if let Some(why) = netns::unavailable() {
            println!("  SKIPPED soak: {why}");
            report.not_measured(
                "soak.lost",
                "soak: acknowledged writes lost",
                Unit::Count,
                &format!("not measured: {why}"),
            );
            return;
        }
        // (upgrades of sa, kills of sb, flaps of sc), interleaved.
        let (upgrades, kills, flaps) = ctx.pick((30, 3, 3), (3, 1, 1));
        let lab = Lab::new(super::partition::PREFIX, SUBNET, "soak", 3);
        let members: Vec<String> = (0..3).map(|i| format!("{}:{PORT}", lab.address(i))).collect();
        let gossip = plugin("gossip");
        let homes: Vec<PathBuf> = NAMES.iter().map(|n| ctx.work.join(format!("soak-{n}"))).collect();
        for home in &homes {
            write_home(home, &members, &gossip);
        }
        let start = |i: usize| start_member(&lab, i, &homes[i]);
        let mut nodes: Vec<NodeProcess> = (0..3).map(start).collect();
        let all_see = |n: usize| (0..3).all(|i| members_seen(&lab.members[i]) == n);
        wait_until("3 members on all", DEADLINE, || all_see(3));
        let builds = restamped_versions(&gossip, &ctx.work.join("soak-builds"), "gossip", upgrades);
        std::thread::sleep(Duration::from_secs(1));
        let base = usage(nodes[0].pid());

        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (stop, acknowledged, attempts) = (stop.clone(), acknowledged.clone(), attempts.clone());
                let targets = [lab.members[0].clone(), lab.members[1].clone()];
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (key, value) = (format!("w{w}-{n}"), format!("{n}"));
                        attempts.fetch_add(1, Ordering::Relaxed);
                        if put(&targets[(n % 2) as usize], &key, &value) {
                            clusterhost_plugin_api::sync::lock(&acknowledged).push((key, value));
                        }
                        n += 1;
                        std::thread::sleep(Duration::from_secs(1) / RATE);
                    }
                })
            })
            .collect();

        let started = Instant::now();
        let mut rss_per_upgrade = Vec::new();
        let rounds = upgrades.max(kills).max(flaps);
        for round in 0..rounds {
            if let Some((path, version)) = builds.get(round) {
                let before = usage(nodes[0].pid()).rss_kib;
                publish(&homes[0], path);
                wait_until(&format!("sa on gossip {version}, 3 members on all"), DEADLINE, || {
                    active_version(&lab.members[0]).as_deref() == Some(version.as_str()) && all_see(3)
                });
                std::thread::sleep(Duration::from_millis(1500));
                rss_per_upgrade.push(usage(nodes[0].pid()).rss_kib as f64 - before as f64);
            }
            if round < kills {
                nodes[1].kill();
                wait_until("sa and sc to drop the killed sb", DEADLINE, || {
                    members_seen(&lab.members[0]) == 2 && members_seen(&lab.members[2]) == 2
                });
                nodes[1] = start(1);
                wait_until("sb back, 3 members on all", DEADLINE, || all_see(3));
            }
            if round < flaps {
                lab.link(2, false);
                wait_until("the two sides apart", DEADLINE, || {
                    members_seen(&lab.members[0]) == 2 && members_seen(&lab.members[2]) == 1
                });
                lab.link(2, true);
                wait_until("one cluster again", DEADLINE, || all_see(3));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            let _ = writer.join();
        }
        let took = started.elapsed();
        let acknowledged = std::mem::take(&mut *clusterhost_plugin_api::sync::lock(&acknowledged));
        let attempts = attempts.load(Ordering::Relaxed);

        // Every member ends up with every acknowledged write (anti-entropy
        // after the heal may take a moment).
        let deadline = Instant::now() + DEADLINE;
        let missing = loop {
            let missing: Vec<Vec<String>> = (0..3).map(|i| missing_on(&lab.members[i], &acknowledged)).collect();
            if missing.iter().all(Vec::is_empty) || Instant::now() >= deadline {
                break missing;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let lost: usize = missing.iter().map(Vec::len).sum();
        let after = usage(nodes[0].pid());
        drop(nodes);
        drop(lab);
        println!(
            "  {} acknowledged of {attempts} writes in {took:.0?}; sa: {base} after its first join, {after} at the end",
            acknowledged.len()
        );
        report.add(
            "soak.acknowledged",
            "soak: acknowledged writes",
            Unit::Count,
            &[acknowledged.len() as f64],
            &format!(
                "of {attempts} attempted in {:.0} s; {upgrades} upgrades, {kills} kills, {flaps} flaps",
                took.as_secs_f64()
            ),
        );
        report.add("soak.lost", "soak: acknowledged writes lost", Unit::Count, &[lost as f64], "must be 0");
        report.add(
            "soak.rss",
            "soak: resident memory added per hot upgrade of sa, under load",
            Unit::KiB,
            &rss_per_upgrade,
            "VmRSS 1.5 s after the cluster is whole again",
        );
        report.add(
            "soak.fds",
            "soak: sa's descriptors at the end minus after its first join",
            Unit::Count,
            &[after.fds as f64 - base.fds as f64],
            "must be at most 4",
        );
        for (i, keys) in missing.iter().enumerate() {
            assert!(
                keys.is_empty(),
                "{} acknowledged writes missing on {}, e.g. {:?}",
                keys.len(),
                NAMES[i],
                &keys[..keys.len().min(5)]
            );
        }
        assert!(after.fds <= base.fds + 4, "sa holds {after}, against {base} after its first join");
        let median = crate::figure::Spread::of(&rss_per_upgrade).map(|s| s.median).unwrap_or(0.0);
        assert!(
            median <= RSS_PER_UPGRADE_KIB,
            "a hot upgrade of sa added {median:.0} KiB resident (median), over the {RSS_PER_UPGRADE_KIB:.0} KiB docs/plugins.md states"
        );
    }
}

fn start_member(lab: &Lab, i: usize, home: &Path) -> NodeProcess {
    let (port, address) = (PORT.to_string(), lab.address(i));
    NodeProcess::start_wrapped(
        &["ip", "netns", "exec", &lab.members[i]],
        home,
        &["--node-name", NAMES[i], "--cluster-port", &port, "--bind", &address, "--admin-port", "9090"],
        &[],
    )
}

/// Publishes `build` as the member's gossip.so (write, then rename).
fn publish(home: &Path, build: &Path) {
    clusterhost_tests::admin::publish_file(home, build, "gossip.so");
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// PUT inside `ns`: true when acknowledged (200).
fn put(ns: &str, key: &str, value: &str) -> bool {
    let url = format!("{ADMIN}/api/caches/soak/{key}");
    in_netns(ns, || {
        agent()
            .put(&url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send(value.as_bytes())
            .is_ok_and(|r| r.status() == 200)
    })
}

/// The keys of `writes` that the member in `ns` does not hold with their value.
fn missing_on(ns: &str, writes: &[(String, String)]) -> Vec<String> {
    in_netns(ns, || {
        let agent = agent();
        writes
            .iter()
            .filter(|(key, value)| {
                let Ok(mut response) = agent.get(&format!("{ADMIN}/api/caches/soak/{key}")).call() else { return true };
                if response.status() != 200 {
                    return true;
                }
                let body: serde_json::Value =
                    serde_json::from_str(&response.body_mut().read_to_string().unwrap_or_default()).unwrap_or_default();
                body["value"].as_str() != Some(value.as_str())
            })
            .map(|(key, _)| key.clone())
            .collect()
    })
}

/// The active gossip version of the member in `ns`.
fn active_version(ns: &str) -> Option<String> {
    in_netns(ns, || clusterhost_tests::admin::active_version(ADMIN, "gossip"))
}
