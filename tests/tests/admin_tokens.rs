//! One token story, with 3 gossip members as real `clusterhost` processes:
//! - one token for the cluster: every member's `admin.token.file` names the
//!   same file; `cluster upgrade --token-file` and the CLI's writes work on
//!   every member with it, and the CLI run in a member's home follows the
//!   file that member reads (its run/admin.json);
//! - a token per member: `--tokens FILE` maps each admin URL to its token;
//!   `cluster upgrade --tokens` and writes to each member work; the CLI run
//!   in one member's home sends its token to that member only.
//!
//! And the redis strategy, loaded but unable to reach its server: its
//! plugin record says why (`plugins list`, `GET /api/plugins`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clusterhost_tests::admin::{call, home_with_strategy, DEADLINE};
use clusterhost_tests::cluster::write_redis_conf;
use clusterhost_tests::upgrade::{cli, gossip_build, GossipCluster};
use clusterhost_tests::{clusterhost_bin, free_port, plugin, wait_until, NodeProcess};

/// `clusterhost ARGS` run in `dir` with no token variables from outside:
/// (success, stdout, stderr).
fn cli_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(clusterhost_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("CLUSTERHOST_ADMIN_TOKEN_FILE")
        .env_remove("CLUSTERHOST_ADMIN_TOKENS")
        .output()
        .unwrap();
    let (out, err) =
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());
    eprintln!("$ (in {}) clusterhost {}\n{out}{err}", dir.display(), args.join(" "));
    (output.status.success(), out, err)
}

fn cached(url: &str, key: &str) -> Option<String> {
    let (status, body) = call("GET", &format!("{url}/api/caches/sessions/{key}"), None, None);
    (status == 200).then(|| body["value"].as_str().unwrap_or_default().to_string())
}

fn rolling(cluster: &GossipCluster, to: &Path, from: &Path, token_args: &[&str]) -> clusterhost_tests::upgrade::CliRun {
    let urls = cluster.urls();
    let mut args = vec!["cluster", "upgrade", "--mode", "rolling", "--plugin", to.to_str().unwrap(), "--previous"];
    args.extend([from.to_str().unwrap(), "--nodes", &urls, "--drain", "0"]);
    args.extend(token_args);
    cli(&args)
}

#[test]
fn one_token_file_shared_by_every_member_serves_upgrade_and_writes_on_each() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = gossip_build(&dir.path().join("builds/gossip-0.1.0.so"), "0.1.0", "1.0");
    let v2 = gossip_build(&dir.path().join("builds/gossip-0.2.0.so"), "0.2.0", "1.0");
    let shared = dir.path().join("shared/admin.token");
    std::fs::create_dir_all(shared.parent().unwrap()).unwrap();
    std::fs::write(&shared, "the-cluster-token\n").unwrap();
    let properties = format!("admin.token.file = {}\n", shared.display());
    // Each member's own conf/admin.token holds something else: unused.
    let cluster = GossipCluster::start_with(3, &v1, dir, &properties, |home| {
        std::fs::write(home.join("conf/admin.token"), "not-this-one\n").unwrap();
    });
    let shared_arg = shared.to_str().unwrap();

    let run = rolling(&cluster, &v2, &v1, &["--token-file", shared_arg]);
    assert!(run.success, "the upgrade with the shared token failed: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("done: 3 members run gossip 0.2.0"), "{}", run.stdout);

    // Every CLI write on every member with the one token.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let url = node.admin_url();
        let key = format!("shared-{i}");
        let (ok, _, err) = cli_in(
            Path::new("/"),
            &["cache", "put", "sessions", &key, "v", "--admin", &url, "--token-file", shared_arg],
        );
        assert!(ok, "{err}");
        let (ok, _, err) =
            cli_in(Path::new("/"), &["cache", "remove", "sessions", &key, "--admin", &url, "--token-file", shared_arg]);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = cli_in(
        Path::new("/"),
        &["cluster", "disable", "--admin", &cluster.nodes[2].admin_url(), "--token-file", shared_arg],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli_in(
        Path::new("/"),
        &["cluster", "enable", "--admin", &cluster.nodes[1].admin_url(), "--token-file", shared_arg],
    );
    assert!(ok, "{err}");
    wait_until("every member clustered again", Duration::from_secs(60), || {
        cluster.views().iter().all(|(state, seen, _, _)| state == "clustered" && *seen == 3)
    });

    // No flag, run in a member's home: the CLI follows the file that member
    // reads (admin.token.file), not its conf/admin.token.
    let home = &cluster.nodes[0].home;
    let url = cluster.nodes[0].admin_url();
    let (ok, _, err) = cli_in(home, &["cache", "put", "sessions", "here", "v1", "--admin", &url]);
    assert!(ok, "the CLI in n1's home did not find the token n1 reads: {err}");
    assert_eq!(cached(&url, "here").as_deref(), Some("v1"));
}

#[test]
fn a_token_per_member_through_a_token_map_serves_upgrade_and_writes_on_each() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = gossip_build(&dir.path().join("builds/gossip-0.1.0.so"), "0.1.0", "1.0");
    let v2 = gossip_build(&dir.path().join("builds/gossip-0.2.0.so"), "0.2.0", "1.0");
    let map = dir.path().join("tokens");
    let cluster = GossipCluster::start_with(3, &v1, dir, "", |home| {
        let name = home.file_name().unwrap().to_str().unwrap();
        std::fs::write(home.join("conf/admin.token"), format!("token-of-{name}\n")).unwrap();
    });
    let lines: Vec<String> = cluster
        .nodes
        .iter()
        .zip(&cluster.names)
        .map(|(n, name)| format!("{} token-of-{name}", n.admin_url()))
        .collect();
    std::fs::write(&map, format!("# each member's own token\n{}\n", lines.join("\n"))).unwrap();
    let map_arg = map.to_str().unwrap();

    // One member's token does not open another: the map is needed.
    let n1_token = cluster.nodes[0].home.join("conf/admin.token");
    let run = rolling(&cluster, &v2, &v1, &["--token-file", n1_token.to_str().unwrap()]);
    assert!(!run.success, "n1's token must not open n2 and n3: {}", run.stdout);
    assert!(
        run.stderr.contains("refuses the admin token sent to it") && run.stderr.contains("no member was changed"),
        "refused before any change, naming the member: {}",
        run.stderr
    );
    let run = rolling(&cluster, &v2, &v1, &["--tokens", map_arg]);
    assert!(run.success, "the upgrade with a token map failed: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("done: 3 members run gossip 0.2.0"), "{}", run.stdout);

    for (i, node) in cluster.nodes.iter().enumerate() {
        let url = node.admin_url();
        let key = format!("own-{i}");
        let (ok, _, err) =
            cli_in(Path::new("/"), &["cache", "put", "sessions", &key, "v", "--admin", &url, "--tokens", map_arg]);
        assert!(ok, "{err}");
    }

    // No flag, run in n1's home: n1's own token to n1; nothing to n2 (it
    // would be the wrong one), so n2 answers 401 asking for its token.
    let home = &cluster.nodes[0].home;
    let (n1, n2) = (cluster.nodes[0].admin_url(), cluster.nodes[1].admin_url());
    let (ok, _, err) = cli_in(home, &["cache", "put", "sessions", "from-home", "a", "--admin", &n1]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli_in(home, &["cache", "put", "sessions", "from-home", "b", "--admin", &n2]);
    assert!(!ok);
    assert!(err.contains("needs the admin token") && err.contains("401"), "no token sent to another member: {err}");
    // The environment variable gives the map too.
    let output = Command::new(clusterhost_bin())
        .args(["cache", "put", "sessions", "from-env", "c", "--admin", &n2])
        .current_dir(home)
        .env("CLUSTERHOST_ADMIN_TOKENS", &map)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The redis strategy cannot reach its server: it is active, and its
/// record says which start attempt is next and why the last one failed.
#[test]
fn a_strategy_that_cannot_reach_its_engine_says_why_in_its_plugin_record() {
    let home = home_with_strategy(
        "cluster.startup.delay.seconds = 0\ncluster.startup.retry.count = 1\ncluster.startup.retry.seconds = 20\n",
    );
    // Only the redis strategy, pointed at a port nothing listens on.
    std::fs::remove_file(home.path().join("plugins/strategy.so")).unwrap();
    let closed = free_port();
    write_redis_conf(&home.path().join("conf"), "single", &[format!("redis://127.0.0.1:{closed}")], "t");
    std::fs::copy(plugin("redis_strategy"), home.path().join("plugins/redis_strategy.so")).unwrap();
    let node = NodeProcess::start_with(home.path(), &["--node-name", "unreachable"], &[]);
    node.wait_for_admin(DEADLINE);
    let url = node.admin_url();
    let mut reason = String::new();
    wait_until("the redis record to say why it does not serve", Duration::from_secs(60), || {
        let (_, body) = call("GET", &format!("{url}/api/plugins"), None, None);
        let record = body.as_array().into_iter().flatten().find(|r| r["id"] == "redis").cloned();
        reason = record.as_ref().and_then(|r| r["reason"].as_str()).unwrap_or_default().to_string();
        record.is_some_and(|r| r["state"] == "active") && reason.contains("cluster start attempt 2 of 2")
    });
    assert!(reason.contains("attempt 1 failed:"), "the error of the failed attempt: {reason}");
    let (ok, out, err) = cli_in(home.path(), &["plugins", "list", "--admin", &url]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.contains("redis")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("active") && line.contains("cluster start attempt 2 of 2"), "{line}");
    // readyz says the same.
    let (status, body) = call("GET", &format!("{url}/readyz"), None, None);
    assert_eq!(status, 503, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("attempt 1 failed"), "{body}");
}
