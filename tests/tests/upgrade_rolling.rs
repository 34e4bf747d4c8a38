//! The rolling flow, orchestrated: 3 gossip members (real `clusterhost`
//! processes) on gossip 0.1.0 are upgraded to 0.2.0 with
//! `clusterhost cluster upgrade --mode rolling` while a bounded client loop
//! writes and reads through every member's admin cache API. Checked: the
//! command succeeds, every member runs 0.2.0 in a 3-member cluster, the
//! cluster size at every step, and every acknowledged write is readable on
//! every member afterwards. Printed: requests served and failed, the
//! longest stall, the flow's total time. A second test runs the same flow
//! with signed builds on members under `plugins.signature = require`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterhost_tests::upgrade::{cli, gossip_build, wait_readable, ClientLoad, GossipCluster};
use clusterhost_tests::{clusterhost_bin, plugin};

#[test]
fn rolling_upgrade_of_three_members_under_client_load() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = gossip_build(&dir.path().join("builds/gossip-0.1.0.so"), "0.1.0", "1.0");
    let v2 = gossip_build(&dir.path().join("builds/gossip-0.2.0.so"), "0.2.0", "1.0");
    assert!(plugin("gossip").is_file());
    let cluster = GossipCluster::start(3, &v1, dir);
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.admin_url()).collect();

    let load = ClientLoad::start(&urls, "sessions", Duration::from_millis(20), 5000);
    // Under load before the upgrade starts.
    load.wait_served(60, Duration::from_secs(30));
    let started = Instant::now();
    let token = cluster.token_file();
    let mut child = Command::new(clusterhost_bin())
        .args(["cluster", "upgrade", "--mode", "rolling", "--plugin"])
        .arg(&v2)
        .arg("--previous")
        .arg(&v1)
        .args(["--nodes", &cluster.urls(), "--token-file"])
        .arg(&token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("clusterhost cluster upgrade starts");
    // Each progress line as it comes; at every passed gate, every member's view.
    type Step = (Instant, String, Vec<(String, usize, String, String)>);
    let steps: Arc<Mutex<Vec<Step>>> = Arc::default();
    let stdout = child.stdout.take().unwrap();
    let reader = {
        let steps = steps.clone();
        let nodes: Vec<String> = urls.clone();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{line}");
                let views = if line.contains("gate passed") {
                    nodes
                        .iter()
                        .map(|url| {
                            let (_, b) =
                                clusterhost_tests::admin::call("GET", &format!("{url}/api/cluster"), None, None);
                            (
                                b["state"]["state"].as_str().unwrap_or("?").to_string(),
                                b["members"].as_array().map(Vec::len).unwrap_or(0),
                                b["strategy"].as_str().unwrap_or("").to_string(),
                                b["senior"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                steps.lock().unwrap().push((Instant::now(), line.clone(), views));
                lines.push(line);
            }
            lines
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the rolling upgrade did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let flow_time = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let lines = reader.join().unwrap();
    // And still under load once it is done.
    load.wait_served(60, Duration::from_secs(30));
    let report = load.finish();
    assert!(status.success(), "the rolling upgrade failed: {stderr}\n{}", lines.join("\n"));

    // A progress line per member and step, in order, the senior last.
    for name in &cluster.names {
        assert!(
            lines.iter().any(|l| l.contains(&format!("{name} (")) && l.contains("upload gossip 0.2.0")),
            "{lines:#?}"
        );
        assert!(lines.iter().any(|l| l.contains(&format!("{name} (")) && l.contains("gate passed")), "{lines:#?}");
    }
    assert!(lines.last().unwrap().contains("done: 3 members run gossip 0.2.0"), "{lines:#?}");
    // The member count at every step: every gate saw 3 members on every member.
    let steps = steps.lock().unwrap().clone();
    let gates: Vec<_> = steps.iter().filter(|(_, l, _)| l.contains("gate passed")).collect();
    assert_eq!(gates.len(), 3, "{steps:#?}");
    for (_, line, views) in &gates {
        for (state, seen, _, _) in views {
            assert!(state == "clustered" && *seen == 3, "after {line:?}: {views:?}");
        }
    }
    // Afterwards: one 3-member cluster on 0.2.0, one senior.
    let views = cluster.views();
    for (state, seen, strategy, _) in &views {
        assert!(state == "clustered" && *seen == 3 && strategy == "gossip 0.2.0", "{views:?}");
    }
    let seniors: std::collections::BTreeSet<&String> = views.iter().map(|v| &v.3).collect();
    assert_eq!(seniors.len(), 1, "one senior: {views:?}");

    // Every acknowledged write is readable on every member.
    let missing = wait_readable(&cluster, "sessions", &report.acknowledged);
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    assert!(report.served > 0);

    // Which failures fell on a member while it was being upgraded.
    // Member i's window: from its upload line to its gate-passed line.
    let window = |i: usize| {
        let tag = format!(" n{} (", i + 1);
        let at = |what: &str| steps.iter().find(|(_, l, _)| l.contains(&tag) && l.contains(what)).map(|(t, _, _)| *t);
        (at("upload gossip").expect("an upload line"), at("gate passed").expect("a gate line"))
    };
    let in_window = report
        .failures
        .iter()
        .filter(|(member, at)| {
            let (from, to) = window(*member);
            *at >= from && *at <= to
        })
        .count();
    println!(
        "ROLLING FAILURES: {in_window} of {} failed requests fell on the member being upgraded, during its upload and gate",
        report.failed
    );
    assert_eq!(
        report.failed - in_window as u64,
        0,
        "members not being upgraded must fail no request: {:?}",
        report.failures
    );
    println!(
        "ROLLING FIGURES: flow {:.1} s for 3 members; requests served {}, failed {} (by member n1/n2/n3: {:?}); longest stall {:.0} ms; acknowledged writes {} all readable on every member",
        flow_time.as_secs_f64(),
        report.served,
        report.failed,
        report.failed_by_member,
        report.longest_stall.as_secs_f64() * 1000.0,
        report.acknowledged.len()
    );
}

/// Under `plugins.signature = require`, 3 members run a gossip build signed
/// with `clusterhost plugins sign`; `cluster upgrade --plugin FILE` carries
/// FILE.minisig to each member with the file, and every member ends on the
/// new build, verified as signed by the release key. An unsigned build, or
/// an unsigned `--previous`, is refused before any member is changed.
#[test]
fn rolling_upgrade_of_a_signed_gossip_build_under_require() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = gossip_build(&dir.path().join("builds/gossip-0.1.0.so"), "0.1.0", "1.0");
    let v2 = gossip_build(&dir.path().join("builds/gossip-0.2.0.so"), "0.2.0", "1.0");
    let v3 = gossip_build(&dir.path().join("builds/gossip-0.3.0.so"), "0.3.0", "1.0");
    let key = dir.path().join("release");
    let made = cli(&["plugins", "keygen", "--unencrypted", "--out", key.to_str().unwrap()]);
    assert!(made.success, "{}", made.stderr);
    let id = made.stdout.lines().find_map(|l| l.strip_prefix("key id:")).unwrap().trim().to_string();
    let secret = dir.path().join("release.key");
    for build in [&v1, &v2] {
        let signed = cli(&["plugins", "sign", build.to_str().unwrap(), "--key", secret.to_str().unwrap()]);
        assert!(signed.success, "{}", signed.stderr);
    }
    let public = dir.path().join("release.pub");
    let cluster = GossipCluster::start_with(3, &v1, dir, "plugins.signature = require\n", |home| {
        let keys = clusterhost::home::trusted_keys_dir(home);
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::copy(&public, keys.join("release.pub")).unwrap();
    });
    let token = cluster.token_file();
    let (urls, token) = (cluster.urls(), token.to_str().unwrap().to_string());
    let upgrade = |plugin: &std::path::Path, previous: &std::path::Path| {
        cli(&[
            "cluster",
            "upgrade",
            "--mode",
            "rolling",
            "--plugin",
            plugin.to_str().unwrap(),
            "--previous",
            previous.to_str().unwrap(),
            "--nodes",
            &urls,
            "--token-file",
            &token,
        ])
    };
    let run = upgrade(&v2, &v1);
    assert!(run.success, "the signed rolling upgrade failed: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("done: 3 members run gossip 0.2.0"), "{}", run.stdout);
    let views = cluster.views();
    for (state, seen, strategy, _) in &views {
        assert!(state == "clustered" && *seen == 3 && strategy == "gossip 0.2.0", "{views:?}");
    }
    for node in &cluster.nodes {
        let (_, body) = clusterhost_tests::admin::call("GET", &format!("{}/api/plugins", node.admin_url()), None, None);
        let record = body.as_array().unwrap().iter().find(|r| r["id"] == "gossip" && r["state"] == "active").unwrap();
        assert_eq!(record["signature"]["status"], "verified", "{record}");
        assert_eq!(record["signature"]["key_id"], id.as_str(), "{record}");
        let signature = node.home.join("plugins/gossip.so.minisig");
        assert!(std::fs::read_to_string(&signature).unwrap().contains("plugin:gossip 0.2.0"));
    }
    // An unsigned build: refused before any upload (the members require
    // signatures), naming the member and the file; every member keeps 0.2.0.
    let run = upgrade(&v3, &v2);
    assert!(!run.success, "an unsigned build must be refused: {}", run.stdout);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("requires signed plugins (plugins.signature = require)"), "{said}");
    assert!(
        said.contains("gossip-0.3.0.so has no signature beside it") && said.contains("no member was changed"),
        "{said}"
    );
    // A signed build with an unsigned --previous: its rollback would be
    // refused, so the upgrade is refused before any upload too.
    let signed = cli(&["plugins", "sign", v3.to_str().unwrap(), "--key", secret.to_str().unwrap()]);
    assert!(signed.success, "{}", signed.stderr);
    let unsigned_previous = v2.parent().unwrap().join("unsigned/gossip-0.2.0.so");
    std::fs::create_dir_all(unsigned_previous.parent().unwrap()).unwrap();
    std::fs::copy(&v2, &unsigned_previous).unwrap();
    let run = upgrade(&v3, &unsigned_previous);
    assert!(!run.success, "an unsigned --previous must be refused: {}", run.stdout);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("but --previous") && said.contains("unsigned/gossip-0.2.0.so has no signature beside it"),
        "{said}"
    );
    for node in &cluster.nodes {
        assert!(std::fs::read_to_string(node.home.join("plugins/gossip.so.minisig"))
            .unwrap()
            .contains("plugin:gossip 0.2.0"));
    }
    let views = cluster.views();
    for (state, seen, strategy, _) in &views {
        assert!(state == "clustered" && *seen == 3 && strategy == "gossip 0.2.0", "{views:?}");
    }
}
