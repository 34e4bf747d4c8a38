//! The admin HTTP API of a real node: every endpoint, its token rules, and
//! bad input refused with a 4xx and a message while nothing changes.

use clusterhost_tests::admin::{
    call, call_text, call_with_headers, home_with_strategy, start_clustered, DEADLINE, TOKEN,
};
use clusterhost_tests::{plugin, restamp, wait_until, NodeProcess};
use serde_json::Value;

const QUICK: &str = "cluster.startup.delay.seconds = 0\n";

fn get(node: &NodeProcess, path: &str) -> (u16, Value) {
    call("GET", &format!("{}{path}", node.admin_url()), None, None)
}

fn write(node: &NodeProcess, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    call(method, &format!("{}{path}", node.admin_url()), token, Some(body))
}

fn error_of(body: &Value) -> String {
    body["error"].as_str().unwrap_or_else(|| panic!("an error message in {body}")).to_string()
}

fn state_of(node: &NodeProcess) -> String {
    get(node, "/api/cluster").1["state"]["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn cluster_status_reports_members_senior_and_each_members_plugin_without_a_token_on_loopback() {
    let home = home_with_strategy(QUICK);
    let node = start_clustered(home.path(), "n1");
    let (status, body) = get(&node, "/api/cluster");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"], "n1");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["strategy"], "strat 1.0.0");
    assert_eq!(body["senior"], "n1");
    assert_eq!(body["members"][0]["id"], "n1");
    assert_eq!(body["members"][0]["senior"], true);
    assert_eq!(body["members"][0]["plugin_version"], "1.0.0");
    let detail = &body["details"][0];
    assert_eq!(detail["id"], "n1");
    assert_eq!(detail["cluster"]["state"], "clustered");
    assert_eq!(detail["plugin"]["version"], "1.0.0");
    assert_eq!(detail["plugin"]["state"], "active");
    assert!(body["warn"].is_null(), "one member, one version: {body}");
}

#[test]
fn enable_and_disable_switch_clustering_only_with_the_right_token() {
    let home = home_with_strategy(QUICK);
    let node = start_clustered(home.path(), "n1");

    let (status, body) = write(&node, "POST", "/api/cluster/disable", None, b"");
    assert_eq!(status, 401, "{body}");
    assert!(error_of(&body).contains("needs the admin token"), "{body}");
    let (status, body) = write(&node, "POST", "/api/cluster/disable", Some("wrong-token"), b"");
    assert_eq!(status, 403, "{body}");
    assert!(error_of(&body).contains("does not match"), "{body}");
    assert_eq!(state_of(&node), "clustered", "a refused write changes nothing");
    assert_eq!(get(&node, "/api/cluster").1["enabled"], true);

    let (status, body) = write(&node, "POST", "/api/cluster/disable", Some(TOKEN), b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], false);
    wait_until("standalone after disable", DEADLINE, || state_of(&node) == "standalone");
    let cluster = get(&node, "/api/cluster").1;
    assert!(cluster["state"]["reason"].as_str().unwrap().contains("disabled cluster-wide by n1"), "{cluster}");

    let (status, body) = write(&node, "POST", "/api/cluster/enable", Some(TOKEN), b"");
    assert_eq!(status, 200, "{body}");
    wait_until("clustered after enable", DEADLINE, || state_of(&node) == "clustered");
}

#[test]
fn caches_get_put_remove_with_the_token_for_writes_and_bad_input_refused() {
    let home = home_with_strategy(QUICK);
    let node = start_clustered(home.path(), "n1");
    let url = |key: &str| format!("/api/caches/sessions/{key}");

    let (status, body) = write(&node, "PUT", &url("s1"), None, b"ada");
    assert_eq!(status, 401, "{body}");
    assert_eq!(get(&node, &url("s1")).0, 404, "the refused put stored nothing");
    let (status, body) = write(&node, "PUT", &url("s1"), Some(TOKEN), &[0xff, 0xfe]);
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("not UTF-8"), "{body}");
    assert_eq!(get(&node, &url("s1")).0, 404, "the refused put stored nothing");

    let (status, body) = write(&node, "PUT", &url("a%20key%2Fwith%20slash"), Some(TOKEN), "über".as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key"], "a key/with slash");
    let (status, body) = get(&node, &url("a%20key%2Fwith%20slash"));
    assert_eq!((status, body["value"].as_str()), (200, Some("über")), "{body}");

    let (status, body) = get(&node, &url("missing"));
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("cache \"sessions\" has no key \"missing\""), "{body}");
    let (status, body) = write(&node, "DELETE", &url("missing"), Some(TOKEN), b"");
    assert_eq!(status, 404, "{body}");
    let (status, _) = write(&node, "DELETE", &url("a%20key%2Fwith%20slash"), None, b"");
    assert_eq!(status, 401);
    assert_eq!(get(&node, &url("a%20key%2Fwith%20slash")).0, 200, "the refused remove removed nothing");
    let (status, body) = write(&node, "DELETE", &url("a%20key%2Fwith%20slash"), Some(TOKEN), b"");
    assert_eq!((status, &body["removed"]), (200, &Value::Bool(true)), "{body}");
    assert_eq!(get(&node, &url("a%20key%2Fwith%20slash")).0, 404);
}

#[test]
fn conditional_cache_writes_apply_only_when_their_condition_holds() {
    let home = home_with_strategy(QUICK);
    let node = start_clustered(home.path(), "n1");
    let url = |query: &str| format!("/api/caches/sessions/s1{query}");

    let (status, body) = write(&node, "PUT", &url("?if-absent"), Some(TOKEN), b"ada");
    assert_eq!(status, 200, "{body}");
    let first = body["version"].as_u64().expect("a conditional write answers the new version");
    let (status, body) = write(&node, "PUT", &url("?if-absent"), Some(TOKEN), b"bob");
    assert_eq!(status, 409, "{body}");
    assert!(error_of(&body).contains(&format!("it holds version {first}")), "{body}");
    let (status, body) = get(&node, &url(""));
    assert_eq!((status, body["value"].as_str(), body["version"].as_u64()), (200, Some("ada"), Some(first)), "{body}");

    let (status, body) = write(&node, "PUT", &url(&format!("?if-version={first}")), Some(TOKEN), b"cy");
    assert_eq!(status, 200, "{body}");
    let second = body["version"].as_u64().expect("the replaced entry's version");
    assert!(second > first, "{first} then {second}");
    let (status, body) = write(&node, "PUT", &url(&format!("?if-version={first}")), Some(TOKEN), b"stale");
    assert_eq!(status, 409, "a stale version is refused: {body}");
    let (status, body) = write(&node, "DELETE", &url(&format!("?if-version={first}")), Some(TOKEN), b"");
    assert_eq!(status, 409, "{body}");
    assert_eq!(get(&node, &url("")).1["value"], "cy", "refused writes changed nothing");
    let (status, body) = write(&node, "DELETE", &url(&format!("?if-version={second}")), Some(TOKEN), b"");
    assert_eq!((status, &body["removed"]), (200, &Value::Bool(true)), "{body}");
    let (status, body) = write(&node, "PUT", &url("?if-version=1"), Some(TOKEN), b"x");
    assert_eq!(status, 409, "an absent key never matches: {body}");
    assert!(error_of(&body).contains("it holds nothing"), "{body}");

    for bad in ["?if-version=abc", "?when=now", "?if-absent=maybe"] {
        let (status, body) = write(&node, "PUT", &url(bad), Some(TOKEN), b"x");
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(error_of(&body).contains("?if-absent, ?if-version=N or ?ttl-ms=N"), "{body}");
    }
    let (status, body) = write(&node, "DELETE", &url("?if-absent"), Some(TOKEN), b"");
    assert_eq!(status, 400, "a remove takes no if-absent: {body}");
    assert_eq!(get(&node, &url("")).0, 404, "nothing was written by the refused requests");
}

#[test]
fn node_detail_shows_the_members_caches_with_stats_and_its_plugins() {
    let home = home_with_strategy(QUICK);
    let node = start_clustered(home.path(), "n1");
    for (k, v) in [("k1", "v1"), ("k2", "v2")] {
        assert_eq!(write(&node, "PUT", &format!("/api/caches/users/{k}"), Some(TOKEN), v.as_bytes()).0, 200);
    }
    assert_eq!(get(&node, "/api/caches/users/k1").0, 200);
    assert_eq!(get(&node, "/api/caches/users/nope").0, 404);

    let (status, body) = get(&node, "/api/node");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"], "n1");
    assert_eq!(body["cluster"]["state"], "clustered");
    let users =
        body["caches"].as_array().unwrap().iter().find(|c| c["name"] == "users").expect("the users cache").clone();
    assert_eq!(users["clustered"], true);
    assert_eq!(users["entries"], 2);
    assert_eq!(users["hits"], 1);
    assert_eq!(users["misses"], 1);
    assert_eq!(body["plugins"][0]["id"], "strat");
    assert_eq!(body["plugins"][0]["state"], "active");

    assert_eq!(get(&node, "/api/node?member=n1").1["node"], "n1", "this member by name");
    let (status, body) = get(&node, "/api/node?member=ghost");
    assert_eq!(status, 404, "{body}");
    assert!(error_of(&body).contains("no member \"ghost\""), "{body}");
}

#[test]
fn plugins_are_uploaded_replaced_and_removed_and_bad_uploads_change_nothing() {
    let home = home_with_strategy(QUICK);
    let node = start_clustered(home.path(), "n1");
    let plugins_dir = home.path().join("plugins");
    let files = || {
        let mut names: Vec<String> =
            std::fs::read_dir(&plugins_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    };
    let before = (files(), get(&node, "/api/plugins").1);
    let hello = std::fs::read(plugin("hello")).unwrap();

    // Refused up front: no token, bad names, not ELF, an ELF without a manifest.
    // (Without the token the refusal comes at the headers and the node reads
    // no body: admin_hostile.rs sends large ones; a small one here.)
    let (status, _) = write(&node, "POST", "/api/plugins?name=hello.so", None, &hello[..4096]);
    assert_eq!(status, 401);
    for name in ["..%2Fhello.so", ".hello.so", "hello.txt", "sub%2Fhello.so", ""] {
        let (status, body) = write(&node, "POST", &format!("/api/plugins?name={name}"), Some(TOKEN), &hello);
        assert_eq!(status, 400, "{name}: {body}");
        assert!(error_of(&body).contains("use a plain file name"), "{body}");
    }
    let (status, body) = write(&node, "POST", "/api/plugins", Some(TOKEN), &hello);
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("needs ?name="), "{body}");
    let (status, body) = write(&node, "POST", "/api/plugins?name=x.so", Some(TOKEN), b"#!/bin/sh\necho not a plugin\n");
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("not an ELF shared library"), "{body}");
    let (status, body) = write(&node, "POST", "/api/plugins?name=x.so", Some(TOKEN), &hello[..4096]);
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("refused before it was written"), "{body}");
    assert_eq!((files(), get(&node, "/api/plugins").1), before, "refused uploads changed nothing");

    // Install, then replace (a hot upgrade), then remove.
    let (status, body) = write(&node, "POST", "/api/plugins?name=hello.so", Some(TOKEN), &hello);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "installed");
    assert_eq!(body["plugin"]["state"], "active");
    let newer = home.path().join("hello-9.so");
    restamp(&plugin("hello"), &newer, |m| m.version = "9.0.0".parse().unwrap());
    let (status, body) =
        write(&node, "POST", "/api/plugins?name=hello.so", Some(TOKEN), &std::fs::read(&newer).unwrap());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "replaced");
    assert_eq!(body["plugin"]["version"], "9.0.0");
    assert!(!files().iter().any(|f| f.starts_with('.')), "no temporary file left: {:?}", files());

    // A plugin the node refuses: written, reported with the node's reason.
    let refused = home.path().join("future.so");
    restamp(&plugin("hello"), &refused, |m| {
        m.id = "future".into();
        m.api_req = "^9".parse().unwrap();
    });
    let (status, body) =
        write(&node, "POST", "/api/plugins?name=future.so", Some(TOKEN), &std::fs::read(&refused).unwrap());
    assert_eq!(status, 422, "{body}");
    assert!(error_of(&body).contains("needs plugin API ^9"), "{body}");
    assert_eq!(body["plugin"]["state"], "rejected");

    let (status, _) = write(&node, "DELETE", "/api/plugins/hello.so", None, b"");
    assert_eq!(status, 401);
    assert!(files().contains(&"hello.so".to_string()), "the refused remove removed nothing");
    let (status, body) = write(&node, "DELETE", "/api/plugins/hello.so", Some(TOKEN), b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["state"], "retired");
    let (status, body) = write(&node, "DELETE", "/api/plugins/hello.so", Some(TOKEN), b"");
    assert_eq!(status, 404, "{body}");
    let (status, body) = write(&node, "DELETE", "/api/plugins/.hidden.so", Some(TOKEN), b"");
    assert_eq!(status, 400, "{body}");
    assert_eq!(write(&node, "DELETE", "/api/plugins/future.so", Some(TOKEN), b"").0, 200);
    let list = get(&node, "/api/plugins").1;
    let hello_record =
        list.as_array().unwrap().iter().find(|r| r["file"].as_str().unwrap().ends_with("hello.so")).unwrap().clone();
    assert_eq!(hello_record["state"], "retired");
}

#[test]
fn properties_are_read_and_written_only_when_valid() {
    let home = home_with_strategy(QUICK);
    let node = start_clustered(home.path(), "n1");
    let file = home.path().join("conf/clusterhost.properties");

    let (status, body) = get(&node, "/api/properties");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"], QUICK);
    assert_eq!(body["effective"]["cluster.startup.delay.seconds"], "0");
    assert_eq!(body["effective"]["node.name"], "n1", "the flag's value is in force");
    assert_eq!(body["effective"]["admin.bind"], "127.0.0.1");
    assert_eq!(body["effective"]["cluster.metrics.enabled"], "false");

    let (status, _) = write(&node, "PUT", "/api/properties", None, b"cluster.metrics.enabled = true\n");
    assert_eq!(status, 401);
    let (status, body) = write(
        &node,
        "PUT",
        "/api/properties",
        Some(TOKEN),
        b"clustering.enabled = true\ncluster.startup.delay.seconds = soon\n",
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("clusterhost.properties:2: cluster.startup.delay.seconds"), "{body}");
    assert!(error_of(&body).contains("was not changed"), "{body}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), QUICK, "the refused text was not written");

    let text = format!("{QUICK}cluster.metrics.enabled = true\ncluster.metrics.enabld = true\n");
    let (status, body) = write(&node, "PUT", "/api/properties", Some(TOKEN), text.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert!(body["warnings"][0].as_str().unwrap().contains("unknown property \"cluster.metrics.enabld\""), "{body}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    wait_until("the node to reload the properties", DEADLINE, || {
        get(&node, "/api/properties").1["effective"]["cluster.metrics.enabled"] == "true"
    });
    assert_eq!(get(&node, "/metrics").0, 200, "metrics follow the reloaded file");
}

#[test]
fn metrics_parse_as_prometheus_text_and_are_404_while_disabled() {
    let off = home_with_strategy(QUICK);
    let node_off = start_clustered(off.path(), "off");
    let (status, body) = get(&node_off, "/metrics");
    assert_eq!(status, 404, "{body}");
    assert!(error_of(&body).contains("set cluster.metrics.enabled = true"), "{body}");

    let home = home_with_strategy(&format!("{QUICK}cluster.metrics.enabled = true\n"));
    let node = start_clustered(home.path(), "n1");
    assert_eq!(write(&node, "PUT", "/api/caches/c1/k", Some(TOKEN), b"v").0, 200);
    assert_eq!(get(&node, "/api/caches/c1/k").0, 200);
    assert_eq!(get(&node, "/api/caches/c1/nope").0, 404);
    assert_eq!(write(&node, "PUT", "/api/caches/c1/k?if-absent", Some(TOKEN), b"w").0, 409);
    // Alone, the status asks no member through a task (this node's detail
    // is computed locally): the task figures are there, at zero.
    // tests/tests/cluster_status.rs counts a real call among members.
    assert_eq!(get(&node, "/api/cluster").0, 200);

    let (status, text) = call_text("GET", &format!("{}/metrics", node.admin_url()), None, None);
    assert_eq!(status, 200, "{text}");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the metrics parse as Prometheus text");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("a sample {name} {label:?} in\n{text}"));
        match &sample.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name} is not a plain value: {other:?}"),
        }
    };
    assert_eq!(value("clusterhost_cluster_members", None), 1.0);
    assert_eq!(value("clusterhost_cluster_senior", None), 1.0);
    assert_eq!(value("clusterhost_cluster_clustered", None), 1.0);
    assert_eq!(value("clusterhost_cache_entries", Some(("cache", "c1"))), 1.0);
    assert_eq!(value("clusterhost_cache_hits_total", Some(("cache", "c1"))), 1.0);
    assert_eq!(value("clusterhost_cache_misses_total", Some(("cache", "c1"))), 1.0);
    assert_eq!(value("clusterhost_cache_cas_conflicts_total", Some(("cache", "c1"))), 1.0);
    assert_eq!(value("clusterhost_plugins", Some(("state", "active"))), 1.0);
    assert_eq!(value("clusterhost_plugin_info", Some(("id", "strat"))), 1.0);
    assert_eq!(value("clusterhost_task_replies_total", Some(("outcome", "value"))), 0.0);
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "clusterhost_task_call_duration_seconds")
        .expect("the task latency histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let inf = buckets.iter().find(|b| b.less_than == f64::INFINITY).expect("a +Inf bucket");
            assert_eq!(inf.count, 0.0, "{buckets:?}");
        }
        other => panic!("the task latency is not a histogram: {other:?}"),
    }
    assert_eq!(scrape.docs.get("clusterhost_cluster_members").map(String::is_empty), Some(false), "HELP texts");
}

#[test]
fn unknown_paths_get_a_json_404() {
    let home = home_with_strategy(QUICK);
    let node = start_clustered(home.path(), "n1");
    let (status, body) = get(&node, "/api/nothing");
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("nothing is served at /api/nothing"), "{body}");
}

#[test]
fn off_loopback_every_request_needs_the_token_and_without_a_token_file_the_node_refuses_to_start() {
    let home = home_with_strategy(QUICK);
    std::fs::remove_file(home.path().join("conf/admin.token")).unwrap();
    let port = clusterhost_tests::free_port().to_string();
    let out = std::process::Command::new(clusterhost_tests::clusterhost_bin())
        .args(["run", "--home", home.path().to_str().unwrap(), "--admin-bind", "0.0.0.0", "--admin-port", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address") && stderr.contains("admin.token"), "{stderr}");
    assert!(!home.path().join("conf/admin.token").exists(), "no token is made up for an exposed node");

    // With a token file: reads need the token too (header, or a console
    // session from the login form: admin_hostile.rs tests those).
    std::fs::write(home.path().join("conf/admin.token"), TOKEN).unwrap();
    let node = NodeProcess::start_with(home.path(), &["--admin-bind", "0.0.0.0", "--node-name", "n1"], &[]);
    let url = format!("{}/api/cluster", node.admin_url());
    node.wait_for_admin(DEADLINE);
    let (status, body) = call("GET", &url, None, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(call("GET", &url, Some("wrong"), None).0, 403);
    let page = format!("{}/", node.admin_url());
    let (status, html) = call_text("GET", &page, None, None);
    assert_eq!(status, 401);
    assert!(html.contains("Log in") && html.contains("name=\"token\""), "the login form: {html}");
    // The token itself in a cookie counts for nothing, for reads or writes.
    let cookie = [("Cookie", format!("clusterhost_session={TOKEN}"))];
    assert_eq!(call_with_headers("GET", &page, &cookie, None).0, 401);
    let disable = format!("{}/api/cluster/disable", node.admin_url());
    assert_eq!(call_with_headers("POST", &disable, &cookie, Some(b"")).0, 401);
    assert_eq!(call("GET", &url, Some(TOKEN), None).1["enabled"], true);
}

/// The entries `node` holds for `cache`, and its bounds as /api/node shows them.
fn cache_row(node: &NodeProcess, cache: &str) -> (u64, Value) {
    let body = get(node, "/api/node").1;
    let row = body["caches"].as_array().and_then(|c| c.iter().find(|c| c["name"] == cache)).cloned();
    row.map(|r| (r["entries"].as_u64().unwrap_or(0), r["bounds"].clone())).unwrap_or((0, Value::Null))
}

#[test]
fn bounded_caches_from_the_properties_shrink_on_a_live_edit_and_ttl_writes_expire() {
    let properties = |max: u32| {
        format!("{QUICK}cluster.metrics.enabled = true\ncache.sessions.max.entries = {max}\ncache.sessions.ttl.ms = 3600000\n")
    };
    let home = home_with_strategy(&properties(2));
    let node = start_clustered(home.path(), "n1");
    for key in ["s1", "s2", "s3"] {
        assert_eq!(write(&node, "PUT", &format!("/api/caches/sessions/{key}"), Some(TOKEN), b"v").0, 200);
    }
    wait_until("the cache bounded at 2 to hold 2", DEADLINE, || cache_row(&node, "sessions").0 == 2);
    assert_eq!(get(&node, "/api/caches/sessions/s1").0, 404, "the oldest entry was evicted");
    let (_, bounds) = cache_row(&node, "sessions");
    assert_eq!((bounds["max_entries"].as_u64(), bounds["ttl_ms"].as_u64()), (Some(2), Some(3_600_000)), "{bounds}");
    assert!(bounds["refused"].is_null(), "{bounds}");

    // A write with a time to live of its own.
    let (status, body) = write(&node, "PUT", "/api/caches/tokens/t1?ttl-ms=300", Some(TOKEN), b"x");
    assert_eq!(status, 200, "{body}");
    wait_until("the entry with a 300 ms TTL to expire", DEADLINE, || get(&node, "/api/caches/tokens/t1").0 == 404);
    for bad in ["?ttl-ms=0", "?ttl-ms=soon", "?ttl-ms=99999999999999999"] {
        let (status, body) = write(&node, "PUT", &format!("/api/caches/tokens/t2{bad}"), Some(TOKEN), b"x");
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(error_of(&body).contains("time to live"), "{body}");
    }
    assert_eq!(get(&node, "/api/caches/tokens/t2").0, 404, "refused writes stored nothing");

    // A live edit of the bound shrinks the cache at once.
    std::fs::write(home.path().join("conf/clusterhost.properties"), properties(1)).unwrap();
    wait_until("the live edit to shrink the cache to 1", DEADLINE, || cache_row(&node, "sessions").0 == 1);
    assert_eq!(get(&node, "/api/caches/sessions/s3").0, 200, "the most recently used entry stays");

    let (status, text) = call_text("GET", &format!("{}/metrics", node.admin_url()), None, None);
    assert_eq!(status, 200);
    let counter = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert!(counter("clusterhost_cache_evictions_total") >= 2.0, "{text}");
    assert!(counter("clusterhost_cache_expiries_total") >= 1.0, "{text}");
    let (status, html) = call_text("GET", &format!("{}/node", node.admin_url()), None, None);
    assert_eq!(status, 200);
    assert!(html.contains("max 1 entries, ttl 3600 s"), "the console shows the bounds: {html}");

    // Per cache: what this member evicted and expired.
    let row = |cache: &str| {
        let body = get(&node, "/api/node").1;
        body["caches"].as_array().and_then(|c| c.iter().find(|c| c["name"] == cache)).cloned().unwrap_or_default()
    };
    assert!(row("sessions")["evictions"].as_u64().is_some_and(|n| n >= 2), "{}", row("sessions"));
    assert!(row("tokens")["expiries"].as_u64().is_some_and(|n| n >= 1), "{}", row("tokens"));
    assert!(html.contains("class=\"evictions\">"), "the console shows evictions per cache: {html}");
    assert!(html.contains("href=\"/cache?name=sessions\""), "the console links each cache's entries: {html}");

    // The entries with the time each has left: the cache's TTL, a put's own, none.
    assert_eq!(write(&node, "PUT", "/api/caches/tokens/t3?ttl-ms=600000", Some(TOKEN), b"x").0, 200);
    assert_eq!(write(&node, "PUT", "/api/caches/tokens/plain", Some(TOKEN), b"y").0, 200);
    let (status, body) = get(&node, "/api/caches/sessions");
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["total"].as_u64(), body["values"].as_bool()), (Some(1), Some(false)), "{body}");
    let entry = &body["entries"][0];
    assert_eq!(entry["key"], "s3", "{body}");
    let left = entry["time_left_ms"].as_u64().expect("a time left");
    assert!((3_500_000..=3_600_000).contains(&left), "the cache's 3600 s TTL leaves {left} ms: {body}");
    assert!(entry["value"].is_null(), "no values unless asked: {body}");
    let (status, body) = get(&node, "/api/caches/tokens?values&limit=10");
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().expect("entries");
    let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap_or_default()).collect();
    assert_eq!(keys, ["plain", "t3"], "{body}");
    assert!(entries[0]["time_left_ms"].is_null() && entries[0]["value"] == "y", "{body}");
    let left = entries[1]["time_left_ms"].as_u64().expect("a time left");
    assert!((500_000..=600_000).contains(&left), "a put's own 600 s TTL leaves {left} ms: {body}");
    assert_eq!((entries[1]["value"].as_str(), entries[1]["bytes"].as_u64()), (Some("x"), Some(5)), "{body}");
    let (_, body) = get(&node, "/api/caches/tokens?limit=1");
    assert_eq!((body["total"].as_u64(), body["entries"].as_array().map(Vec::len)), (Some(2), Some(1)), "{body}");
    for bad in ["?limit=0", "?limit=many", "?limit=1001", "?sort=key"] {
        let (status, body) = get(&node, &format!("/api/caches/tokens{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(error_of(&body).contains("?limit=N (1 to 1000) and ?values"), "{body}");
    }
    let (status, html) = call_text("GET", &format!("{}/cache?name=tokens", node.admin_url()), None, None);
    assert_eq!(status, 200);
    assert!(html.contains("data-key=\"t3\"") && html.contains("class=\"time-left\">9 min"), "t3's time left: {html}");
    assert!(html.contains("class=\"expires\">never"), "plain never expires: {html}");
    assert!(html.contains("data-watch=\"/api/caches/tokens\""), "the page refreshes from the listing: {html}");
    let (status, html) = call_text("GET", &format!("{}/cache?name=tokens&values", node.admin_url()), None, None);
    assert_eq!(status, 200);
    assert!(html.contains("<td>y</td>") && html.contains("data-watch=\"\""), "values shown, no refresh: {html}");
}
