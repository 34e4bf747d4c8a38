//! The chat showcase (examples/chat) on a 3-node gossip cluster of real
//! `clusterhost-chat` processes, driven by two pages in headless Chromium
//! on two different nodes: they see each other online and exchange 100
//! messages each way, none lost or duplicated, in order per sender. Then
//! the pages keep chatting (a message each way every 50 ms, scripted in the
//! pages) while `clusterhost cluster upgrade --mode rolling` replaces the
//! gossip strategy on all 3 nodes: every message sent arrives, once, in
//! order; the longest delivery delay is printed. Last, bob's node is
//! killed and ada's page shows bob offline (the time is printed). In CI (CI=true) a missing
//! browser fails the test; elsewhere the test says why it did not run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterhost_tests::browser::{browser, driver};
use clusterhost_tests::upgrade::{cli, gossip_build, GossipCluster};
use clusterhost_tests::{chat_bin, free_port, manifest_of, plugin, NodeProcess};
use fantoccini::Client;
use serde_json::Value;

/// How long a page may take to see what the test waits for.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `script` in `page` until it returns true.
async fn wait_js(page: &Client, what: &str, script: &str, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        if page.execute(script, vec![]).await.ok().and_then(|v| v.as_bool()) == Some(true) {
            return;
        }
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The messages `page` received from `from` whose text starts with
/// `prefix`: (text, seq, delay in ms from the sender's node to the page).
async fn received(page: &Client, from: &str, prefix: &str) -> Vec<(String, u64, i64)> {
    let script = format!(
        "return chat.received.filter(m => m.from === {from:?} && m.text.startsWith({prefix:?})).map(m => [m.text, m.seq, m.at_ms - m.sent_ms])"
    );
    let value = page.execute(&script, vec![]).await.expect("the page answers");
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|m| (m[0].as_str().unwrap().to_string(), m[1].as_u64().unwrap(), m[2].as_i64().unwrap()))
        .collect()
}

/// Checks that `got` is exactly `PREFIX1..=PREFIXn` (or `PREFIX0..n-1`) in order,
/// with seqs growing; returns the longest delay.
fn exactly_in_order(got: &[(String, u64, i64)], expected: &[String], what: &str) -> i64 {
    let texts: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(texts, expected, "{what}: lost, duplicated or out of order");
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{what}: sequence numbers do not grow");
    got.iter().map(|(_, _, delay)| *delay).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_on_two_nodes_chat_and_keep_chatting_through_a_rolling_upgrade() {
    let Some(driver_a) = driver("the chat browser test") else { return };
    let driver_b = driver("the chat browser test").expect("a second chromedriver");
    let dir = tempfile::tempdir().unwrap();
    // The build's own wire protocol: the chat's atomic route removal needs it.
    let wire = manifest_of(&plugin("gossip")).wire_protocol.to_string();
    let v1 = gossip_build(&dir.path().join("builds/gossip-0.1.0.so"), "0.1.0", &wire);
    let v2 = gossip_build(&dir.path().join("builds/gossip-0.2.0.so"), "0.2.0", &wire);
    let web: Arc<Mutex<HashMap<String, u16>>> = Arc::default();
    let ports = web.clone();
    let launch = move |home: &std::path::Path, name: &str, port: u16, admin: Option<u16>| {
        let web = *ports.lock().unwrap().entry(name.to_string()).or_insert_with(free_port);
        let (listen, port) = (format!("127.0.0.1:{web}"), port.to_string());
        let admin = admin.map(|a| a.to_string());
        let mut args = vec!["--listen", &listen, "--node-name", name, "--cluster-port", &port, "--bind", "127.0.0.1"];
        if let Some(admin) = &admin {
            args.extend(["--admin-port", admin]);
        }
        NodeProcess::start_program(&chat_bin(), home, &args)
    };
    let cluster = GossipCluster::start_launched(3, &v1, dir, "", |_| {}, Box::new(launch));
    let page_url = |node: &str, user: &str| format!("http://127.0.0.1:{}/?user={user}", web.lock().unwrap()[node]);

    let a = browser(&driver_a).await;
    let b = browser(&driver_b).await;
    a.goto(&page_url("n1", "ada")).await.unwrap();
    b.goto(&page_url("n2", "bob")).await.unwrap();
    wait_js(&a, "ada's page (on n1) to show bob online", "return chat.online.has('bob')", DEADLINE).await;
    wait_js(&b, "bob's page (on n2) to show ada online", "return chat.online.has('ada')", DEADLINE).await;
    assert_eq!(a.execute("return chat.node", vec![]).await.unwrap(), Value::from("n1"));
    assert_eq!(b.execute("return chat.node", vec![]).await.unwrap(), Value::from("n2"));

    // 100 messages each way, sent as fast as the pages can.
    a.execute("for (let i = 0; i < 100; i++) chat.send('bob', 'ada-' + i)", vec![]).await.unwrap();
    b.execute("for (let i = 0; i < 100; i++) chat.send('ada', 'bob-' + i)", vec![]).await.unwrap();
    let count = |from: &str| format!("return chat.received.filter(m => m.from === '{from}').length >= 100");
    wait_js(&b, "bob's page to receive ada's 100 messages", &count("ada"), DEADLINE).await;
    wait_js(&a, "ada's page to receive bob's 100 messages", &count("bob"), DEADLINE).await;
    let expect = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
    exactly_in_order(&received(&b, "ada", "ada-").await, &expect("ada-", 100), "ada → bob");
    exactly_in_order(&received(&a, "bob", "bob-").await, &expect("bob-", 100), "bob → ada");
    for page in [&a, &b] {
        let errors = page.execute("return chat.errors.concat(chat.undelivered)", vec![]).await.unwrap();
        assert_eq!(errors, Value::Array(vec![]), "the pages got no error and nothing undelivered");
    }

    // Chatting through a rolling upgrade of the strategy on every node.
    let chatter = |to: &str, prefix: &str| {
        format!("window.n = 0; window.loop = setInterval(() => chat.send('{to}', '{prefix}' + (window.n++)), 50)")
    };
    a.execute(&chatter("bob", "up-ada-"), vec![]).await.unwrap();
    b.execute(&chatter("ada", "up-bob-"), vec![]).await.unwrap();
    let (urls, token) = (cluster.urls(), cluster.token_file());
    let (v1, v2) = (v1.display().to_string(), v2.display().to_string());
    let started = Instant::now();
    let upgrade = tokio::task::spawn_blocking(move || {
        let token = token.display().to_string();
        let args = ["cluster", "upgrade", "--mode", "rolling", "--plugin", &v2, "--previous", &v1, "--nodes", &urls];
        cli(&[&args[..], &["--token-file", &token]].concat())
    })
    .await
    .unwrap();
    assert!(upgrade.success, "the rolling upgrade failed:\n{}\n{}", upgrade.stdout, upgrade.stderr);
    let took = started.elapsed();
    // A little more chat on the upgraded cluster, then the loops stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent_a = a.execute("clearInterval(window.loop); return window.n", vec![]).await.unwrap().as_u64().unwrap();
    let sent_b = b.execute("clearInterval(window.loop); return window.n", vec![]).await.unwrap().as_u64().unwrap();
    let all = |from: &str, n: u64| {
        format!("return chat.received.filter(m => m.from === '{from}' && m.text.startsWith('up-')).length >= {n}")
    };
    wait_js(&b, "bob's page to receive every message ada sent during the upgrade", &all("ada", sent_a), DEADLINE * 2)
        .await;
    wait_js(&a, "ada's page to receive every message bob sent during the upgrade", &all("bob", sent_b), DEADLINE * 2)
        .await;
    let longest_a = exactly_in_order(
        &received(&b, "ada", "up-ada-").await,
        &expect("up-ada-", sent_a as usize),
        "ada → bob during the upgrade",
    );
    let longest_b = exactly_in_order(
        &received(&a, "bob", "up-bob-").await,
        &expect("up-bob-", sent_b as usize),
        "bob → ada during the upgrade",
    );
    for (version, _) in cluster.active_gossip() {
        assert_eq!(version, "0.2.0", "every node runs the new build");
    }
    // bob's node dies: ada's page shows bob offline (the senior removes
    // the dead node's routes once the failure detection removes it).
    let mut cluster = cluster;
    let killed = Instant::now();
    cluster.nodes[1].kill();
    wait_js(&a, "ada's page to show bob offline after bob's node died", "return !chat.online.has('bob')", DEADLINE)
        .await;
    let offline_after = killed.elapsed();
    println!("bob's node SIGKILLed: bob offline on ada's page after {:.2} s", offline_after.as_secs_f64());
    println!(
        "chat through a rolling upgrade ({:.1} s): {sent_a} + {sent_b} messages, 0 lost, 0 duplicated; longest delivery delay {} ms (ada → bob) and {} ms (bob → ada)",
        took.as_secs_f64(),
        longest_a,
        longest_b
    );
}
