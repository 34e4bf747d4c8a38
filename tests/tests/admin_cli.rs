//! The CLI over the admin API: `cluster`, `plugins` and `cache` commands
//! against a real node, tables and --json, and a non-zero exit code with
//! the server's message on any error.

use std::process::{Command, Output};

use clusterhost_tests::admin::{home_with_strategy, start_clustered, DEADLINE};
use clusterhost_tests::{clusterhost_bin, plugin, wait_until, NodeProcess};
use serde_json::Value;

const QUICK: &str = "cluster.startup.delay.seconds = 0\n";

/// Runs `clusterhost ARGS --admin URL [--token-file F]` from an empty directory
/// (so no conf/admin.token is picked up by default).
fn cli(node: &NodeProcess, token_file: Option<&std::path::Path>, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    let mut command = Command::new(clusterhost_bin());
    command.current_dir(cwd.path()).args(args).args(["--admin", &node.admin_url()]);
    if let Some(file) = token_file {
        command.arg("--token-file").arg(file);
    }
    command.env_remove("CLUSTERHOST_ADMIN").env_remove("CLUSTERHOST_ADMIN_TOKEN_FILE").output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}{}", out.status, stdout(&out), stderr(&out));
    stdout(&out)
}

fn cluster_json(node: &NodeProcess) -> Value {
    serde_json::from_str(&ok(cli(node, None, &["cluster", "status", "--json"]))).unwrap()
}

#[test]
fn cluster_status_enable_and_disable_from_the_cli() {
    let home = home_with_strategy(QUICK);
    let token = home.path().join("conf/admin.token");
    let node = start_clustered(home.path(), "n1");

    let table = ok(cli(&node, None, &["cluster", "status"]));
    assert!(table.contains("node n1: clustered; clustering enabled; strategy strat 1.0.0"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("n1 (this node)") && l.contains("yes") && l.contains("1.0.0")),
        "{table}"
    );
    assert_eq!(cluster_json(&node)["senior"], "n1");

    // No token, a wrong one, a missing file: refused, non-zero, the reason on stderr.
    let out = cli(&node, None, &["cluster", "disable"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs the admin token") && stderr(&out).contains("HTTP 401"), "{}", stderr(&out));
    let wrong = home.path().join("wrong.token");
    std::fs::write(&wrong, "nope\n").unwrap();
    let out = cli(&node, Some(&wrong), &["cluster", "disable"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not match") && stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    let out = cli(&node, Some(&home.path().join("absent.token")), &["cluster", "disable"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("could not read the admin token file"), "{}", stderr(&out));
    assert_eq!(cluster_json(&node)["state"]["state"], "clustered", "nothing changed");

    assert!(ok(cli(&node, Some(&token), &["cluster", "disable"])).contains("clustering disabled cluster-wide"));
    wait_until("standalone", DEADLINE, || cluster_json(&node)["state"]["state"] == "standalone");
    let table = ok(cli(&node, None, &["cluster", "status"]));
    assert!(table.contains("standalone (clustering was disabled cluster-wide by n1"), "{table}");
    ok(cli(&node, Some(&token), &["cluster", "enable", "--json"]));
    wait_until("clustered", DEADLINE, || cluster_json(&node)["state"]["state"] == "clustered");
}

#[test]
fn plugins_list_install_and_remove_from_the_cli() {
    let home = home_with_strategy(QUICK);
    let token = home.path().join("conf/admin.token");
    let node = start_clustered(home.path(), "n1");

    let table = ok(cli(&node, None, &["plugins", "list"]));
    assert!(
        table.lines().any(|l| l.starts_with("strat") && l.contains("active") && l.contains("strategy.so")),
        "{table}"
    );

    let hello = plugin("hello");
    let out = cli(&node, None, &["plugins", "install", hello.to_str().unwrap(), "--name", "hello.so"]);
    assert!(!out.status.success(), "no token");
    assert!(stderr(&out).contains("HTTP 401"), "{}", stderr(&out));
    let not_elf = home.path().join("notes.so");
    std::fs::write(&not_elf, "just text").unwrap();
    let out = cli(&node, Some(&token), &["plugins", "install", not_elf.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not an ELF shared library") && stderr(&out).contains("HTTP 400"),
        "{}",
        stderr(&out)
    );
    assert!(!home.path().join("plugins/notes.so").exists(), "nothing was written");

    let out = ok(cli(&node, Some(&token), &["plugins", "install", hello.to_str().unwrap(), "--name", "hello.so"]));
    assert!(
        out.contains("hello.so: installed") && out.lines().any(|l| l.starts_with("hello") && l.contains("active")),
        "{out}"
    );
    let list: Value = serde_json::from_str(&ok(cli(&node, None, &["plugins", "list", "--json"]))).unwrap();
    assert!(list.as_array().unwrap().iter().any(|r| r["id"] == "hello" && r["state"] == "active"), "{list}");

    let out = ok(cli(&node, Some(&token), &["plugins", "remove", "hello.so"]));
    assert!(out.contains("hello.so: removed") && out.contains("retired"), "{out}");
    let out = cli(&node, Some(&token), &["plugins", "remove", "hello.so"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no plugin file hello.so") && stderr(&out).contains("HTTP 404"), "{}", stderr(&out));
}

#[test]
fn cache_get_put_remove_from_the_cli() {
    let home = home_with_strategy(QUICK);
    let token = home.path().join("conf/admin.token");
    let node = start_clustered(home.path(), "n1");

    let out = cli(&node, None, &["cache", "put", "sessions", "s 1", "ada"]);
    assert!(!out.status.success() && stderr(&out).contains("HTTP 401"), "{}", stderr(&out));
    assert!(ok(cli(&node, Some(&token), &["cache", "put", "sessions", "s 1", "ada"])).contains("sessions/s 1 set"));
    assert_eq!(ok(cli(&node, None, &["cache", "get", "sessions", "s 1"])), "ada\n");
    let json: Value =
        serde_json::from_str(&ok(cli(&node, None, &["cache", "get", "sessions", "s 1", "--json"]))).unwrap();
    assert_eq!(json["value"], "ada");
    // Conditional writes: a refused one exits 3 and changes nothing.
    let out = cli(&node, Some(&token), &["cache", "put", "sessions", "s 1", "bob", "--if-absent"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 409") && stderr(&out).contains("nothing was changed"), "{}", stderr(&out));
    let shown = ok(cli(&node, None, &["cache", "get", "sessions", "s 1", "--version"]));
    let version: u64 =
        shown.strip_prefix("ada\nversion ").and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("{shown}"));
    let stale = (version - 1).to_string();
    let out = cli(&node, Some(&token), &["cache", "put", "sessions", "s 1", "cy", "--if-version", &stale]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let set =
        ok(cli(&node, Some(&token), &["cache", "put", "sessions", "s 1", "cy", "--if-version", &version.to_string()]));
    assert!(set.contains("sessions/s 1 set (version "), "{set}");
    assert!(ok(cli(&node, Some(&token), &["cache", "put", "sessions", "new", "v", "--if-absent"]))
        .contains("sessions/new set"));
    assert_eq!(ok(cli(&node, None, &["cache", "get", "sessions", "s 1"])), "cy\n");
    // A put with a time to live of its own expires.
    assert!(ok(cli(&node, Some(&token), &["cache", "put", "sessions", "brief", "v", "--ttl", "300ms"]))
        .contains("sessions/brief set"));
    clusterhost_tests::wait_until(
        "the entry put with --ttl 300ms to expire",
        std::time::Duration::from_secs(20),
        || !cli(&node, None, &["cache", "get", "sessions", "brief"]).status.success(),
    );
    let out = cli(&node, Some(&token), &["cache", "put", "sessions", "brief", "v", "--ttl", "soon"]);
    assert!(!out.status.success() && stderr(&out).contains("30s, 500ms, 2m or 1h"), "{}", stderr(&out));
    ok(cli(&node, Some(&token), &["cache", "remove", "sessions", "s 1"]));
    let out = cli(&node, None, &["cache", "get", "sessions", "s 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cache \"sessions\" has no key \"s 1\"") && stderr(&out).contains("HTTP 404"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_cli_says_when_no_node_answers() {
    let port = clusterhost_tests::free_port();
    let out = Command::new(clusterhost_bin())
        .args(["cluster", "status", "--admin", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("could not reach the admin API") && stderr(&out).contains("--admin URL"),
        "{}",
        stderr(&out)
    );
}
