//! Partition heal → merged, with 3 gossip processes in network namespaces
//! (root only): one member's link is cut, both sides write, the link comes
//! back, and the time until one cluster and merged caches is measured.

use std::path::Path;
use std::time::{Duration, Instant};

use clusterhost_tests::admin::TOKEN;
use clusterhost_tests::cluster::write_gossip_conf;
use clusterhost_tests::netns::{self, in_netns, Lab};
use clusterhost_tests::{plugin, wait_until, NodeProcess};
use serde_json::Value;

use super::drop_active::wait_for_line;
use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

/// Namespace names start with this (and the pid); stale ones are swept.
pub const PREFIX: &str = "chb";
const SUBNET: &str = "10.214.0";
pub(super) const PORT: u16 = 5701;
pub(super) const ADMIN: &str = "http://127.0.0.1:9090";
const DEADLINE: Duration = Duration::from_secs(60);

pub struct Partition;

impl Scenario for Partition {
    fn name(&self) -> &'static str {
        "partition"
    }

    fn about(&self) -> &'static str {
        "3 `clusterhost run` processes, each in its own network namespace linked to a bridge by a veth pair. \
         One member's link is cut until both sides have a view of their own (cut → dropped: from the cut to \
         the last member of either side logging `member left` for the other side); each side writes a key; the link \
         is brought up again. Heal → one view: from the link up to the last member logging `member joined` for \
         the other side. Heal → merged: to every member reading both sides' keys (polled every 20 ms). Needs \
         root; not measured otherwise."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        if let Some(why) = netns::unavailable() {
            println!("  SKIPPED partition: {why}");
            let why = format!("not measured: {why}");
            report.not_measured(
                "partition.detect",
                "link cut → the other side dropped on all (silent member)",
                Unit::Seconds,
                &why,
            );
            report.not_measured("partition.view", "partition heal → one view on all", Unit::Seconds, &why);
            report.not_measured("partition.merged", "partition heal → caches merged on all", Unit::Seconds, &why);
            return;
        }
        // 20 cuts: the goal has a p99.
        let cycles = ctx.pick(20, 1);
        let lab = Lab::new(PREFIX, SUBNET, "part", 3);
        let names = ["pa", "pb", "pc"];
        let members: Vec<String> = (0..3).map(|i| format!("{}:{PORT}", lab.address(i))).collect();
        let gossip = plugin("gossip");
        let nodes: Vec<NodeProcess> = (0..3)
            .map(|i| {
                let home = ctx.work.join(names[i]);
                write_home(&home, &members, &gossip);
                let port = PORT.to_string();
                NodeProcess::start_wrapped(
                    &["ip", "netns", "exec", &lab.members[i]],
                    &home,
                    &[
                        "--node-name",
                        names[i],
                        "--cluster-port",
                        &port,
                        "--bind",
                        &lab.address(i),
                        "--admin-port",
                        "9090",
                    ],
                    &[],
                )
            })
            .collect();
        let sees = |i: usize, n: usize| members_seen(&lab.members[i]) == n;
        wait_until("3 members on all", DEADLINE, || (0..3).all(|i| sees(i, 3)));

        let (mut views, mut merged, mut detected) = (Vec::new(), Vec::new(), Vec::new());
        for cycle in 0..cycles {
            let marks: Vec<usize> = nodes.iter().map(NodeProcess::log_len).collect();
            let cut = Instant::now();
            lab.link(2, false);
            // Each side drops the other: pa and pb drop pc, pc drops both.
            let mut last = cut;
            for (i, node) in nodes.iter().enumerate() {
                let others: Vec<&str> = if i == 2 { vec!["pa", "pb"] } else { vec!["pc"] };
                for other in others {
                    let member = format!("member={other}");
                    last = last.max(wait_for_line(node, marks[i], &["member left", &member]));
                }
            }
            detected.push(last - cut);
            wait_until("the two sides apart", DEADLINE, || sees(0, 2) && sees(1, 2) && sees(2, 1));
            let (ab_key, c_key) = (format!("ab-{cycle}"), format!("c-{cycle}"));
            put(&lab.members[0], &ab_key);
            put(&lab.members[2], &c_key);
            let marks: Vec<usize> = nodes.iter().map(NodeProcess::log_len).collect();
            let healed = Instant::now();
            lab.link(2, true);
            // Each side logs the other side's members joining.
            let mut last = healed;
            for (i, node) in nodes.iter().enumerate() {
                let others: Vec<&str> = if i == 2 { vec!["pa", "pb"] } else { vec!["pc"] };
                for other in others {
                    let member = format!("member={other}");
                    last = last.max(wait_for_line(node, marks[i], &["member joined", &member]));
                }
            }
            views.push(last - healed);
            let deadline = Instant::now() + DEADLINE;
            loop {
                let done = (0..3).all(|i| has(&lab.members[i], &ab_key) && has(&lab.members[i], &c_key));
                if done {
                    merged.push(healed.elapsed());
                    break;
                }
                assert!(Instant::now() < deadline, "the caches did not merge within {DEADLINE:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
            wait_until("3 members on all again", DEADLINE, || (0..3).all(|i| sees(i, 3)));
        }
        drop(nodes);
        drop(lab);
        report.add_durations(
            "partition.detect",
            "link cut → the other side dropped on all (silent member)",
            Unit::Seconds,
            &detected,
            "3 members, per cut: the last `member left` of both sides",
        );
        report.add_durations(
            "partition.view",
            "partition heal → one view on all",
            Unit::Seconds,
            &views,
            "3 members, per heal",
        );
        report.add_durations(
            "partition.merged",
            "partition heal → caches merged on all",
            Unit::Seconds,
            &merged,
            "3 members, per heal",
        );
    }
}

/// A member home: gossip.toml with the static list, key, quick start, token, plugin.
pub(super) fn write_home(home: &Path, members: &[String], gossip: &Path) {
    let conf = home.join("conf");
    write_gossip_conf(&conf, &format!("bench-partition-{}", std::process::id()), &"3c".repeat(32), members, false);
    std::fs::write(conf.join("clusterhost.properties"), "cluster.startup.delay.seconds = 0\n").expect("properties");
    std::fs::write(conf.join("admin.token"), format!("{TOKEN}\n")).expect("the token");
    std::fs::create_dir_all(home.join("plugins")).expect("plugins/");
    std::fs::copy(gossip, home.join("plugins/gossip.so")).expect("the plugin can be copied");
}

/// One HTTP call made inside namespace `ns`: (status, body), or None when nothing answered.
pub(super) fn http(ns: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let url = format!("{ADMIN}{path}");
    in_netns(ns, || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let response = match method {
            "PUT" => agent
                .put(&url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .send(body.unwrap_or_default().as_bytes()),
            _ => agent.get(&url).call(),
        };
        let mut response = response.ok()?;
        let status = response.status().as_u16();
        Some((status, response.body_mut().read_to_string().unwrap_or_default()))
    })
}

/// How many members the member in `ns` lists while clustered (0 otherwise).
pub(super) fn members_seen(ns: &str) -> usize {
    let Some((200, text)) = http(ns, "GET", "/api/cluster", None) else { return 0 };
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if body["state"]["state"] == "clustered" {
        body["members"].as_array().map(Vec::len).unwrap_or(0)
    } else {
        0
    }
}

pub(super) fn put(ns: &str, key: &str) {
    let answer = http(ns, "PUT", &format!("/api/caches/bench/{key}"), Some("v"));
    assert!(matches!(answer, Some((200, _))), "put {key} in {ns}: {answer:?}");
}

pub(super) fn has(ns: &str, key: &str) -> bool {
    matches!(http(ns, "GET", &format!("/api/caches/bench/{key}"), None), Some((200, _)))
}
