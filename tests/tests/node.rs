//! A real `clusterhost` process: plugins loaded at start, states reported,
//! plugin logs in the node's log, clean stop on SIGTERM; and the CLI.

use std::process::Command;
use std::time::Duration;

use clusterhost_tests::{clusterhost_bin, plugin, restamp, workspace_root, NodeProcess};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

fn clusterhost(args: &[&str]) -> std::process::Output {
    Command::new(clusterhost_bin()).args(args).output().expect("clusterhost runs")
}

fn plugins_list(node: &NodeProcess) -> std::process::Output {
    clusterhost(&["plugins", "list", "--json", "--admin", &node.admin_url()])
}

#[test]
fn a_node_loads_its_plugins_reports_their_states_and_stops_them_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let plugins = home.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("hello"), plugins.join("hello.so")).unwrap();
    let journal = home.path().join("journal");
    restamp(&plugin("fixture_plugin"), &plugins.join("fixture.so"), |m| {
        m.metadata.insert("journal".into(), journal.display().to_string());
    });
    std::fs::write(plugins.join("broken.so"), "not a library").unwrap();
    // Hidden and temporary files are not plugins.
    std::fs::write(plugins.join(".hidden.so"), "ignored").unwrap();
    std::fs::write(plugins.join("upload.so.tmp"), "ignored").unwrap();

    let mut node = NodeProcess::start(home.path());
    node.wait_for_log(&["initial plugin scan done", "plugins=3", "active=2", "refused=1"], DEADLINE);
    // The plugin's own tracing event reaches the host's log, tagged with its id.
    node.wait_for_log(&["hello from a clusterhost plugin", "plugin=\"hello\""], DEADLINE);
    node.wait_for_log(&["broken.so is not an ELF shared library", "rejected"], DEADLINE);

    node.wait_for_admin(DEADLINE);
    let out = plugins_list(&node);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{list:#}");
    let by_file = |name: &str| rows.iter().find(|r| r["file"].as_str().unwrap().ends_with(name)).unwrap().clone();
    assert_eq!(by_file("hello.so")["state"], "active");
    assert_eq!(by_file("hello.so")["id"], "hello");
    assert_eq!(by_file("fixture.so")["state"], "active");
    assert_eq!(by_file("broken.so")["state"], "rejected");
    assert!(by_file("broken.so")["reason"].as_str().unwrap().contains("not an ELF shared library"));

    node.wait_for_admin(DEADLINE);
    let table = clusterhost(&["plugins", "list", "--admin", &node.admin_url()]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.lines().any(|l| l.starts_with("hello") && l.contains("active")), "{table}");

    let status = node.terminate(DEADLINE);
    assert!(status.success(), "the node exited with {status}");
    node.wait_for_log(&["goodbye", "plugin=\"hello\""], DEADLINE);
    node.wait_for_log(&["node stopped"], DEADLINE);
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "fixture start\nfixture stop\n");

    let out = plugins_list(&node);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not reach the admin API"));
}

#[test]
fn a_node_keeps_running_when_a_plugin_panics_at_start() {
    let home = tempfile::tempdir().unwrap();
    let plugins = home.path().join("plugins");
    restamp(&plugin("fixture_plugin"), &plugins.join("panics.so"), |m| {
        m.metadata.insert("behavior".into(), "panic-in-start".into());
    });
    std::fs::copy(plugin("hello"), plugins.join("hello.so")).unwrap();
    let mut node = NodeProcess::start(home.path());
    node.wait_for_log(&["initial plugin scan done", "active=1", "refused=1"], DEADLINE);
    node.wait_for_log(&["panicked in start", "faulted"], DEADLINE);
    node.wait_for_admin(DEADLINE);
    let list: Value = serde_json::from_slice(&plugins_list(&node).stdout).unwrap();
    let states: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["active", "faulted"]);
    assert!(node.terminate(DEADLINE).success());
}

/// The lib names of the plugin crates shipped under plugins/.
fn shipped_plugins() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("plugins")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            let lib =
                text.split("[lib]").nth(1).and_then(|lib| lib.lines().find(|l| l.trim_start().starts_with("name")));
            names.push(lib.and_then(|l| l.split('"').nth(1)).expect("a plugin crate names its lib").to_string());
        }
    }
    names
}

#[test]
fn inspect_prints_the_manifest_of_every_shipped_plugin() {
    let shipped = shipped_plugins();
    assert!(!shipped.is_empty());
    for name in shipped {
        let file = plugin(&name);
        let out = clusterhost(&["plugins", "inspect", "--json", file.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(manifest["id"].is_string() && manifest["version"].is_string(), "{manifest:#}");
        assert!(manifest["host_req"].is_string() && manifest["api_req"].is_string(), "{manifest:#}");
        assert!(manifest["wire_protocol"].is_string() && manifest["provides"].is_array(), "{manifest:#}");
        let text = clusterhost(&["plugins", "inspect", file.to_str().unwrap()]);
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(text.contains(&format!("id:            {}", manifest["id"].as_str().unwrap())), "{text}");
    }
}

#[test]
fn inspect_reports_a_non_plugin_with_an_actionable_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.so");
    std::fs::write(&file, "text").unwrap();
    let out = clusterhost(&["plugins", "inspect", "--json", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not an ELF shared library"), "{stderr}");
}
