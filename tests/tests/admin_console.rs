//! The web console in headless Chromium (driven through chromedriver): a
//! 2-node cluster (two `clusterhost` processes with the gossip strategy);
//! clustering is switched off on one member's page and both members' pages
//! show them standalone, then on again from the other member's page and both
//! show the 2-member cluster. The cluster page's timeline shows joins (and
//! a leave as it happens) from the event stream, and its charts draw the
//! node's samples as inline SVG.
//!
//! With `CLUSTERHOST_SCREENSHOTS=DIR` it saves a screenshot of every page
//! (docs/screenshots/ holds the committed ones). In CI (CI=true) a missing
//! browser fails the test; elsewhere the test says why it did not run.

use std::time::Duration;

use clusterhost_tests::admin::{call, DEADLINE, TOKEN};
use clusterhost_tests::browser::{browser, driver, wait_for};
use clusterhost_tests::cluster::{free_member_port, loopback_members, write_gossip_conf};
use clusterhost_tests::{plugin, wait_until, NodeProcess};
use fantoccini::Client;

async fn screenshot(client: &Client, name: &str) {
    if let Ok(dir) = std::env::var("CLUSTERHOST_SCREENSHOTS") {
        let png = client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}

async fn open_cluster_page(client: &Client, node: &NodeProcess, expect: &str) {
    client.goto(&format!("{}/", node.admin_url())).await.unwrap();
    wait_for(client, &format!("#cluster-state[data-state='{expect}']")).await;
}

/// Switches clustering with the page's switch; waits until the page shows `expect`.
async fn flip_switch(client: &Client, expect: &str) {
    wait_for(client, "#clustering-switch").await.click().await.unwrap();
    wait_for(client, &format!("#cluster-state[data-state='{expect}']")).await;
}

/// A home for a gossip member: the plugin, a static member list, the shared key.
fn gossip_home(properties: &str, ports: &[u16]) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(home.path().join("plugins")).unwrap();
    std::fs::write(conf.join("clusterhost.properties"), properties).unwrap();
    std::fs::write(conf.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    write_gossip_conf(&conf, "console", &"3c".repeat(32), &loopback_members(ports), false);
    std::fs::copy(plugin("gossip"), home.path().join("plugins/gossip.so")).unwrap();
    home
}

fn members_seen(node: &NodeProcess) -> usize {
    let (status, body) = call("GET", &format!("{}/api/cluster", node.admin_url()), None, None);
    if status == 200 && body["state"]["state"] == "clustered" {
        body["members"].as_array().map(Vec::len).unwrap_or(0)
    } else {
        0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_switches_clustering_off_and_on_cluster_wide() {
    let Some(driver) = driver("the console browser test") else { return };
    let ports = [free_member_port(), free_member_port()];
    let home1 = gossip_home("cluster.startup.delay.seconds = 0\ncluster.metrics.enabled = true\n", &ports);
    std::fs::copy(plugin("hello"), home1.path().join("plugins/hello.so")).unwrap();
    let home2 = gossip_home("cluster.startup.delay.seconds = 0\n", &ports);
    let start = |home: &std::path::Path, name: &str, port: u16| {
        let node = NodeProcess::start_with(home, &["--node-name", name, "--cluster-port", &port.to_string()], &[]);
        node.wait_for_admin(DEADLINE);
        node
    };
    let n1 = start(home1.path(), "n1", ports[0]);
    let n2 = start(home2.path(), "n2", ports[1]);
    wait_until("both members to see a 2-member cluster", DEADLINE, || members_seen(&n1) == 2 && members_seen(&n2) == 2);
    for (k, v) in [("s1", "ada"), ("s2", "grace")] {
        let url = format!("{}/api/caches/sessions/{k}", n1.admin_url());
        assert_eq!(call("PUT", &url, Some(TOKEN), Some(v.as_bytes())).0, 200);
    }
    // Written on n1, read on n2.
    let (status, body) = call("GET", &format!("{}/api/caches/sessions/s1", n2.admin_url()), None, None);
    assert_eq!(status, 200, "{body}");

    let client = browser(&driver).await;
    // Writes need a login on each node: the form exchanges the token for a
    // session cookie (HttpOnly, one per node); no page keeps the token.
    for node in [&n1, &n2] {
        client.goto(&format!("{}/", node.admin_url())).await.unwrap();
        wait_for(&client, "#login-link").await.click().await.unwrap();
        wait_for(&client, "#token").await.send_keys(TOKEN).await.unwrap();
        wait_for(&client, "#login").await.click().await.unwrap();
        wait_for(&client, "#signed-in").await;
        let stored = client.execute("return document.cookie + JSON.stringify(localStorage)", vec![]).await.unwrap();
        assert!(!stored.to_string().contains(TOKEN), "the token is kept nowhere a script reads: {stored}");
    }

    open_cluster_page(&client, &n1, "clustered").await;
    let members = wait_for(&client, "#members-table").await.text().await.unwrap();
    assert!(members.contains("n1") && members.contains("n2"), "both members are listed: {members}");
    assert!(members.contains("senior"), "the senior member is marked: {members}");
    let started = wait_for(&client, "#members-table tr[data-member='n1'] td:nth-child(3)").await.text().await.unwrap();
    assert!(started.starts_with("20") && started.contains(':') && !started.contains("ms"), "a local time: {started}");
    // The timeline: this node's events from the event stream, joins among them.
    let joined = wait_for(&client, "#timeline li.kind-member_joined").await.text().await.unwrap();
    assert!(joined.contains("joined the cluster"), "{joined}");
    // The charts: inline SVG drawn from the node's samples; the members
    // chart ends at the 2 members.
    wait_for(&client, "#chart-members[data-points] polyline").await;
    wait_for(&client, "figure.chart figcaption[data-now='2']").await;
    let points = client
        .execute(
            "return document.querySelector('#chart-members polyline').getAttribute('points').trim().split(' ').length",
            vec![],
        )
        .await
        .unwrap();
    assert!(points.as_u64().is_some_and(|n| n >= 1), "the members chart has data points: {points}");
    screenshot(&client, "cluster.png").await;

    // Off on n1's page: n2's page shows it off too (cluster-wide).
    flip_switch(&client, "standalone").await;
    let reason = wait_for(&client, "#cluster-reason").await.text().await.unwrap();
    assert!(reason.contains("disabled cluster-wide by n1"), "{reason}");
    assert!(!wait_for(&client, "#clustering-switch").await.is_selected().await.unwrap());
    screenshot(&client, "cluster-disabled.png").await;
    open_cluster_page(&client, &n2, "standalone").await;
    let reason = wait_for(&client, "#cluster-reason").await.text().await.unwrap();
    assert!(reason.contains("disabled cluster-wide by n1"), "n2 follows n1's switch: {reason}");

    // On again from n2's page: both pages show the 2-member cluster.
    flip_switch(&client, "clustered").await;
    for node in [&n2, &n1] {
        open_cluster_page(&client, node, "clustered").await;
        wait_until("both members listed again", DEADLINE, || members_seen(node) == 2);
    }
    client.refresh().await.unwrap();
    let members = wait_for(&client, "#members-table").await.text().await.unwrap();
    assert!(members.contains("n1") && members.contains("n2"), "{members}");

    // A change made elsewhere shows without a reload: the page polls, and
    // its events come in on the stream.
    open_cluster_page(&client, &n1, "clustered").await;
    let newest =
        "return Math.max(0, ...[...document.querySelectorAll('#timeline li[data-seq]')].map((li) => +li.dataset.seq))";
    wait_for(&client, "#timeline li[data-seq]").await;
    let before = client.execute(newest, vec![]).await.unwrap().as_u64().unwrap();
    let disable = format!("{}/api/cluster/disable", n1.admin_url());
    assert_eq!(call("POST", &disable, Some(TOKEN), Some(b"")).0, 200);
    wait_for(&client, "#cluster-state[data-state='standalone']").await;
    // A leave newer than what the page showed before the switch, added live.
    let newer_leave = format!(
        "return [...document.querySelectorAll('#timeline li.kind-member_left')].filter((li) => +li.dataset.seq > {before}).map((li) => li.textContent).join(' | ')"
    );
    let deadline = std::time::Instant::now() + DEADLINE;
    let left = loop {
        let found = client.execute(&newer_leave, vec![]).await.unwrap();
        let found = found.as_str().unwrap_or_default().to_string();
        if !found.is_empty() {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "no leave after #{before} appeared on the timeline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(left.contains("n1 (this node) left the cluster"), "{left}");
    assert_eq!(call("POST", &format!("{}/api/cluster/enable", n1.admin_url()), Some(TOKEN), Some(b"")).0, 200);
    wait_for(&client, "#cluster-state[data-state='clustered']").await;
    // Some cache reads for the operations chart, then its picture.
    for _ in 0..40 {
        assert_eq!(call("GET", &format!("{}/api/caches/sessions/s1", n1.admin_url()), None, None).0, 200);
    }
    // And a hot swap (hello replaced by a newer build) for the swaps chart.
    let hello = clusterhost_tests::manifest_of(&plugin("hello"));
    let newer = home1.path().join("hello-newer.so");
    clusterhost_tests::restamp(&plugin("hello"), &newer, |m| m.version.patch = hello.version.patch + 1);
    clusterhost_tests::admin::publish_file(home1.path(), &newer, "hello.so");
    let swapped = wait_for(&client, "#timeline li.kind-plugin_replaced").await.text().await.unwrap();
    assert!(swapped.contains("plugin hello") && swapped.contains("replaced by"), "{swapped}");
    wait_for(&client, "#chart-plugin-swaps rect.bar").await;
    wait_for(&client, "figure.chart figcaption[data-now='2']").await;
    wait_for(&client, "#chart-cache-ops[data-points] polyline").await;
    let charts = wait_for(&client, "#charts").await;
    client.execute("document.getElementById('charts').scrollIntoView()", vec![]).await.unwrap();
    assert!(charts.is_displayed().await.unwrap());
    screenshot(&client, "cluster-history.png").await;

    // The other pages render their tables.
    client.goto(&format!("{}/node", n1.admin_url())).await.unwrap();
    let caches = wait_for(&client, "#caches-table tr[data-cache='sessions']").await.text().await.unwrap();
    assert!(caches.contains("sessions") && caches.contains("clustered"), "{caches}");
    screenshot(&client, "node.png").await;
    client.goto(&format!("{}/plugins", n1.admin_url())).await.unwrap();
    let hello = wait_for(&client, "#plugins-table tr[data-file='hello.so']").await.text().await.unwrap();
    assert!(hello.contains("active"), "{hello}");
    wait_for(&client, "#upload").await;
    screenshot(&client, "plugins.png").await;

    // A file whose name holds %2F (allowed: it stays inside plugins/) is
    // removed from the console: the script encodes each URL part.
    let odd = "x..%2F..%2Fevil.so";
    let url = format!("{}/api/plugins?name={}", n1.admin_url(), odd.replace('%', "%25"));
    let (status, body) = call("POST", &url, Some(TOKEN), Some(&std::fs::read(plugin("hello")).unwrap()));
    assert!([200, 422].contains(&status), "{body}");
    let odd_file = home1.path().join("plugins").join(odd);
    assert!(odd_file.exists(), "the upload is in plugins/ under its own name");
    client.refresh().await.unwrap();
    wait_for(&client, &format!("button[data-remove='{odd}']")).await.click().await.unwrap();
    let message = wait_for(&client, "#message.ok").await.text().await.unwrap();
    assert!(message.contains("removed"), "{message}");
    wait_until("the odd file to be removed", DEADLINE, || !odd_file.exists());
    client.goto(&format!("{}/properties", n1.admin_url())).await.unwrap();
    let effective =
        wait_for(&client, "#effective-table tr[data-key='cluster.metrics.enabled']").await.text().await.unwrap();
    assert!(effective.contains("true"), "{effective}");
    wait_for(&client, "#properties-text").await;
    screenshot(&client, "properties.png").await;

    client.close().await.unwrap();
}
