//! Helpers for the admin API, CLI and console tests: a node home with the
//! fixture's one-member memory strategy and a known token, and plain HTTP
//! calls that return the status and body whatever the status is.

use std::path::Path;
use std::time::Duration;

use clusterhost_plugin_api::CLUSTER_STRATEGY;
use serde_json::Value;

use crate::{plugin, restamp, wait_until, NodeProcess};

/// The token the test homes use.
pub const TOKEN: &str = "test-token-0123456789";

/// How long a test waits for a node to reach a state.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A home with `properties`, the token file holding [`TOKEN`], and the
/// fixture plugin published as `plugins/strategy.so`: a memory strategy, so
/// the node is a one-member cluster of its own.
pub fn home_with_strategy(properties: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("a temporary home");
    let conf = home.path().join("conf");
    std::fs::create_dir_all(&conf).expect("conf/ can be made");
    std::fs::write(conf.join("clusterhost.properties"), properties).expect("the properties file can be written");
    std::fs::write(conf.join("admin.token"), format!("{TOKEN}\n")).expect("the token file can be written");
    publish_strategy(home.path(), "strategy.so", "1.0.0");
    home
}

/// Publishes the fixture as strategy `strat` VERSION under plugins/FILE (write, then rename).
pub fn publish_strategy(home: &Path, file: &str, version: &str) {
    let plugins = home.join("plugins");
    let tmp = plugins.join(format!(".{file}.tmp"));
    restamp(&plugin("fixture_plugin"), &tmp, |m| {
        m.id = "strat".into();
        m.version = version.parse().expect("a semver version");
        m.provides = vec![CLUSTER_STRATEGY.into()];
        m.metadata.insert("strategy".into(), "memory".into());
    });
    std::fs::rename(tmp, plugins.join(file)).expect("the plugin can be renamed into place");
}

/// Starts a node named `name` on `home` and waits until its admin API answers
/// and it is clustered.
pub fn start_clustered(home: &Path, name: &str) -> NodeProcess {
    let node = NodeProcess::start_with(home, &["--node-name", name], &[]);
    node.wait_for_admin(DEADLINE);
    wait_until(&format!("{name} to be clustered"), DEADLINE, || {
        let (status, body) = call("GET", &format!("{}/api/cluster", node.admin_url()), None, None);
        status == 200 && body["state"]["state"] == "clustered"
    });
    node
}

/// A member's home: conf/ as `write_conf` makes it, plus a quick start,
/// metrics on and the admin token; `plugin` published as plugins/`file_name`.
pub fn member_home(plugin: &Path, file_name: &str, write_conf: impl FnOnce(&Path)) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("a temporary home");
    let conf = home.path().join("conf");
    std::fs::create_dir_all(&conf).expect("conf/ can be made");
    std::fs::create_dir_all(home.path().join("plugins")).expect("plugins/ can be made");
    write_conf(&conf);
    std::fs::write(
        conf.join("clusterhost.properties"),
        "cluster.startup.delay.seconds = 0\ncluster.metrics.enabled = true\n",
    )
    .expect("the properties can be written");
    std::fs::write(conf.join("admin.token"), format!("{TOKEN}\n")).expect("the token can be written");
    std::fs::copy(plugin, home.path().join("plugins").join(file_name)).expect("the plugin can be copied");
    home
}

/// Publishes `src` as `plugins/NAME` of `home` the way an operator's tool
/// does: a temporary name, then a rename into place.
pub fn publish_file(home: &Path, src: &Path, name: &str) {
    let tmp = home.join("plugins").join(format!(".{name}.tmp"));
    std::fs::copy(src, &tmp).expect("the build can be copied into plugins/");
    std::fs::rename(&tmp, home.join("plugins").join(name)).expect("the build can be renamed into place");
}

/// The version of active plugin `id` as the admin API at `url` lists it.
pub fn active_version(url: &str, id: &str) -> Option<String> {
    let (status, body) = call("GET", &format!("{url}/api/plugins"), None, None);
    if status != 200 {
        return None;
    }
    body.as_array()?
        .iter()
        .find(|r| r["id"] == id && r["state"] == "active")
        .and_then(|r| r["version"].as_str().map(str::to_string))
}

/// An HTTP client that returns every status as an answer and gives up on
/// a request after `timeout`.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

/// One HTTP call: (status, JSON body, or `{"text": body}` when it is not JSON).
pub fn call(method: &str, url: &str, token: Option<&str>, body: Option<&[u8]>) -> (u16, Value) {
    let (status, text) = call_text(method, url, token, body);
    let json = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "text": text }));
    (status, json)
}

/// One HTTP call: (status, body text).
pub fn call_text(method: &str, url: &str, token: Option<&str>, body: Option<&[u8]>) -> (u16, String) {
    call_with_headers(
        method,
        url,
        &token.map(|t| ("Authorization", format!("Bearer {t}"))).into_iter().collect::<Vec<_>>(),
        body,
    )
}

/// One HTTP call with extra headers: (status, body text).
pub fn call_with_headers(method: &str, url: &str, headers: &[(&str, String)], body: Option<&[u8]>) -> (u16, String) {
    let agent = agent(Duration::from_secs(120));
    let result = match method {
        "GET" => headers.iter().fold(agent.get(url), |r, (k, v)| r.header(*k, v)).call(),
        "DELETE" => headers.iter().fold(agent.delete(url), |r, (k, v)| r.header(*k, v)).call(),
        "PUT" => headers.iter().fold(agent.put(url), |r, (k, v)| r.header(*k, v)).send(body.unwrap_or_default()),
        "POST" => headers.iter().fold(agent.post(url), |r, (k, v)| r.header(*k, v)).send(body.unwrap_or_default()),
        "PATCH" => headers.iter().fold(agent.patch(url), |r, (k, v)| r.header(*k, v)).send(body.unwrap_or_default()),
        other => panic!("the kit does not send {other} requests"),
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {url} could not be sent: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}
