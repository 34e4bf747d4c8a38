//! The admin surface under hostile and concurrent input (issue 14): a
//! client without the token cannot make the node buffer its upload, an
//! upload streams to disk within its cap, parallel writers never tear a
//! file or get an untrue answer, node-specific settings wait for the
//! restart, foreign Host and Origin headers are refused, malformed property
//! bodies change nothing, and huge bad values are not echoed whole.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clusterhost_tests::admin::{call, call_with_headers, home_with_strategy, publish_strategy, DEADLINE, TOKEN};
use clusterhost_tests::procfs::status_kib;
use clusterhost_tests::{plugin, restamp, wait_until, NodeProcess};
use serde_json::Value;

const QUICK: &str = "cluster.startup.delay.seconds = 0\n";

/// The most a node's peak resident memory may grow under the hostile clients.
const MAX_GROWTH_KIB: u64 = 64 * 1024;

fn start(properties: &str) -> (tempfile::TempDir, NodeProcess) {
    let home = home_with_strategy(properties);
    let node = NodeProcess::start(home.path());
    node.wait_for_admin(DEADLINE);
    wait_until("the node to be clustered", DEADLINE, || {
        let (status, body) = call("GET", &format!("{}/api/cluster", node.admin_url()), None, None);
        status == 200 && body["state"]["state"] == "clustered"
    });
    (home, node)
}

/// Resets the node's peak resident memory (VmHWM) to its current
/// resident memory (Linux `clear_refs` 5), so a test measures its own peak,
/// not the start's; returns the new baseline.
fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("/proc/PID/clear_refs is writable by the owner");
    status_kib(pid, "VmHWM")
}

fn error_of(body: &Value) -> String {
    body["error"].as_str().unwrap_or_else(|| panic!("an error message in {body}")).to_string()
}

/// What a client that sends a body as fast as it can saw.
#[derive(Debug)]
struct Hostile {
    /// The status of the answer, if one came.
    status: Option<u16>,
    /// Body bytes sent when the answer's status line arrived.
    sent_at_answer: u64,
    /// The body's whole length.
    total: u64,
}

/// Sends `head` (request line and headers, without the blank line), then
/// `total` bytes of body (chunked when `chunked`) as fast as the socket
/// takes them, while another thread waits for the answer's status line.
/// The body is zeros but for its first bytes, `first`.
fn hostile(port: u16, head: &str, total: u64, chunked: bool) -> Hostile {
    hostile_with(port, head, total, chunked, b"")
}

fn hostile_with(port: u16, head: &str, total: u64, chunked: bool, first: &'static [u8]) -> Hostile {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the admin port accepts");
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let reader = stream.try_clone().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let sent_by_writer = sent.clone();
    let head = head.to_string();
    let writer = std::thread::spawn(move || {
        let framing =
            if chunked { "Transfer-Encoding: chunked".to_string() } else { format!("Content-Length: {total}") };
        let head = format!("{head}\r\nHost: 127.0.0.1:{port}\r\n{framing}\r\n\r\n");
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        chunk[..first.len()].copy_from_slice(first);
        let mut sent_so_far = 0u64;
        while sent_so_far < total {
            if sent_so_far > 0 {
                chunk[..first.len()].fill(0);
            }
            let n = chunk.len().min((total - sent_so_far) as usize);
            let ok = if chunked {
                stream.write_all(format!("{n:x}\r\n").as_bytes()).is_ok()
                    && stream.write_all(&chunk[..n]).is_ok()
                    && stream.write_all(b"\r\n").is_ok()
            } else {
                stream.write_all(&chunk[..n]).is_ok()
            };
            if !ok {
                return;
            }
            sent_so_far += n as u64;
            sent_by_writer.store(sent_so_far, Ordering::SeqCst);
        }
        if chunked {
            let _ = stream.write_all(b"0\r\n\r\n");
        }
    });
    let mut line = String::new();
    let status = BufReader::new(reader)
        .read_line(&mut line)
        .ok()
        .and_then(|_| line.split_whitespace().nth(1).and_then(|s| s.parse().ok()));
    let sent_at_answer = sent.load(Ordering::SeqCst);
    writer.join().expect("the writer thread ends");
    Hostile { status, sent_at_answer, total }
}

/// One raw request (`Connection: close`): (status, head, body).
fn raw(port: u16, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the admin port accepts");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get_with_host(port: u16, path: &str, host: &str, extra: &str) -> (u16, String, String) {
    raw(port, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"))
}

#[test]
fn refused_requests_are_answered_at_the_headers_and_the_node_buffers_no_body() {
    let (_home, node) = start(QUICK);
    let port = node.admin_port;
    let before = reset_peak(node.pid());
    const BIG: u64 = 256 << 20;
    let clients: Vec<(&str, String, bool, &[u16])> = vec![
        ("no token, chunked", "POST /api/cluster/disable HTTP/1.1".into(), true, &[401]),
        ("no token, Content-Length", "POST /api/cluster/disable HTTP/1.1".into(), false, &[401]),
        (
            "wrong token, plugin upload",
            "POST /api/plugins?name=x.so HTTP/1.1\r\nAuthorization: Bearer wrong".into(),
            false,
            &[403],
        ),
        (
            "right token, cache value over the cap",
            format!("PUT /api/caches/c/k HTTP/1.1\r\nAuthorization: Bearer {TOKEN}"),
            false,
            &[413],
        ),
        (
            "right token, chunked cache value over the cap",
            format!("PUT /api/caches/c/k HTTP/1.1\r\nAuthorization: Bearer {TOKEN}"),
            true,
            &[413],
        ),
    ];
    let threads: Vec<_> = clients
        .into_iter()
        .map(|(what, head, chunked, expected)| {
            std::thread::spawn(move || (what, expected, hostile(port, &head, BIG, chunked)))
        })
        .collect();
    for thread in threads {
        let (what, expected, seen) = thread.join().expect("a hostile client thread ends");
        assert!(seen.status.is_some_and(|s| expected.contains(&s)), "{what}: expected {expected:?}, saw {seen:?}");
        assert!(seen.sent_at_answer < seen.total / 4, "{what}: the answer came before the upload was done: {seen:?}");
    }
    let after = status_kib(node.pid(), "VmHWM");
    assert!(
        after.saturating_sub(before) < MAX_GROWTH_KIB,
        "the node's peak resident memory grew from {before} KiB to {after} KiB under 5 hostile uploads"
    );
    // Still serving.
    assert_eq!(call("GET", &format!("{}/api/cluster", node.admin_url()), None, None).0, 200);
}

#[test]
fn a_plugin_upload_streams_to_disk_and_is_cut_at_its_cap() {
    let (home, node) = start(&format!("{QUICK}admin.max.upload.bytes = 67108864\n"));
    let port = node.admin_port;
    let before = reset_peak(node.pid());
    // 60 MiB, under the cap: streamed to the temporary file, then refused
    // as no plugin (an ELF magic and zeros).
    let mut body = b"\x7fELF".to_vec();
    body.resize(60 << 20, 0);
    let (status, answer) =
        call("POST", &format!("{}/api/plugins?name=big.so", node.admin_url()), Some(TOKEN), Some(&body));
    assert_eq!(status, 400, "{answer}");
    assert!(error_of(&answer).contains("refused before it was written"), "{answer}");
    drop(body);
    let after = status_kib(node.pid(), "VmHWM");
    assert!(
        after.saturating_sub(before) < MAX_GROWTH_KIB / 2,
        "a 60 MiB upload raised the node's peak resident memory from {before} KiB to {after} KiB"
    );
    // Over the cap: refused at the header, and a chunked one while streaming.
    let head = format!("POST /api/plugins?name=big.so HTTP/1.1\r\nAuthorization: Bearer {TOKEN}");
    let seen = hostile(port, &head, 128 << 20, false);
    assert_eq!(seen.status, Some(413), "{seen:?}");
    let seen = hostile_with(port, &head, 128 << 20, true, b"\x7fELF");
    assert_eq!(seen.status, Some(413), "{seen:?}");
    assert!(seen.sent_at_answer < 100 << 20, "cut at the cap of 64 MiB: {seen:?}");
    let files: Vec<String> = std::fs::read_dir(home.path().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["strategy.so".to_string()], "no temporary file left behind");
}

#[test]
fn parallel_property_writes_leave_one_whole_body_and_every_answer_is_true() {
    let (home, node) = start(QUICK);
    let file = home.path().join("conf/clusterhost.properties");
    let url = format!("{}/api/properties", node.admin_url());
    for round in 0..4 {
        let bodies: Vec<String> = (0..6)
            .map(|i| {
                // Large enough that writes interleave: a comment of 300 to 550 KB.
                let pad = "x".repeat(300_000 + i * 50_000);
                format!("{QUICK}cluster.startup.retry.count = {i}\n# round {round} writer {i} {pad}\n")
            })
            .collect();
        let threads: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let url = url.clone();
                std::thread::spawn(move || call("PUT", &url, Some(TOKEN), Some(body.as_bytes())))
            })
            .collect();
        let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let text = std::fs::read_to_string(&file).unwrap();
        let written = bodies.iter().position(|b| *b == text);
        assert!(
            written.is_some(),
            "round {round}: the file is exactly one of the bodies, not {} bytes of a mix",
            text.len()
        );
        for (i, (status, answer)) in answers.iter().enumerate() {
            // Each answer says the body was written (and it was, at its
            // turn): no answer claims a failure of a write that happened.
            assert_eq!(*status, 200, "round {round} writer {i}: {answer}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(home.path().join("conf"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left: {leftovers:?}");
    }
}

#[test]
fn parallel_uploads_of_one_name_leave_one_whole_file_and_true_answers() {
    let (home, node) = start(QUICK);
    let url = format!("{}/api/plugins?name=p.so", node.admin_url());
    let builds: Vec<Vec<u8>> = (1..=3)
        .map(|v| {
            let out = home.path().join(format!("p-{v}.so"));
            restamp(&plugin("hello"), &out, |m| {
                m.id = "p".into();
                m.version = format!("1.0.{v}").parse().unwrap();
            });
            std::fs::read(&out).unwrap()
        })
        .collect();
    let threads: Vec<_> = builds
        .iter()
        .cloned()
        .map(|body| {
            let url = url.clone();
            std::thread::spawn(move || call("POST", &url, Some(TOKEN), Some(&body)))
        })
        .collect();
    let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let on_disk = std::fs::read(home.path().join("plugins/p.so")).unwrap();
    assert!(builds.contains(&on_disk), "plugins/p.so is exactly one of the uploads");
    for (i, (status, answer)) in answers.iter().enumerate() {
        // 200: loaded; 422: written and refused (an older version after a
        // newer one). Never 500 for a body that was written.
        assert!([200, 422].contains(status), "upload {i}: {status} {answer}");
        if *status == 200 {
            assert_eq!(answer["plugin"]["version"], format!("1.0.{}", i + 1), "upload {i}: {answer}");
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(home.path().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left: {leftovers:?}");
}

#[test]
fn node_specific_settings_are_pending_until_the_restart() {
    let (home, node) = start(&format!("{QUICK}node.name = first\n"));
    let url = node.admin_url();
    let changed = format!("{QUICK}node.name = second\ncluster.port = 22032\n");
    let (status, body) = call("PUT", &format!("{url}/api/properties"), Some(TOKEN), Some(changed.as_bytes()));
    assert_eq!(status, 200, "{body}");
    wait_until("the node to show the pending settings", DEADLINE, || {
        let body = call("GET", &format!("{url}/api/properties"), None, None).1;
        body["pending_restart"]["node.name"] == "second" && body["pending_restart"]["cluster.port"] == "22032"
    });
    let body = call("GET", &format!("{url}/api/properties"), None, None).1;
    assert_eq!(body["effective"]["node.name"], "first", "{body}");
    // The strategy, re-added, still runs as the member the node is.
    std::fs::remove_file(home.path().join("plugins/strategy.so")).unwrap();
    wait_until("the strategy to stop", DEADLINE, || {
        call("GET", &format!("{url}/api/cluster"), None, None).1["state"]["state"] != "clustered"
    });
    publish_strategy(home.path(), "strategy2.so", "1.0.1");
    wait_until("the re-added strategy to cluster", DEADLINE, || {
        call("GET", &format!("{url}/api/cluster"), None, None).1["state"]["state"] == "clustered"
    });
    let cluster = call("GET", &format!("{url}/api/cluster"), None, None).1;
    let members: Vec<&str> = cluster["members"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(members, vec!["first"], "{cluster}");
    assert_eq!(cluster["node"], "first", "{cluster}");
    let page = call_with_headers("GET", &format!("{url}/properties"), &[], None).1;
    assert!(page.contains("pending restart"), "the console shows the pending settings");
}

#[test]
fn foreign_host_and_origin_headers_are_refused() {
    let (_home, node) = start(&format!("{QUICK}admin.allowed.hosts = admin.example, Other.Example\n"));
    let port = node.admin_port;
    let token = format!("Authorization: Bearer {TOKEN}\r\n");
    assert_eq!(call("PUT", &format!("{}/api/caches/c/k", node.admin_url()), Some(TOKEN), Some(b"v")).0, 200);
    let (status, _, body) = get_with_host(port, "/api/caches/c/k", "rebind.attacker.example", "");
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("admin.allowed.hosts") && !body.contains("\"value\""), "{body}");
    let (status, _, body) = get_with_host(port, "/", &format!("rebind.attacker.example:{port}"), "");
    assert_eq!(status, 421, "{body}");
    for host in
        [format!("127.0.0.1:{port}"), format!("localhost:{port}"), "admin.example".into(), "other.example:80".into()]
    {
        let (status, _, body) = get_with_host(port, "/api/caches/c/k", &host, "");
        assert_eq!(status, 200, "{host}: {body}");
    }
    let post = |origin: &str| {
        raw(
            port,
            &format!(
                "POST /api/cluster/enable HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{token}{origin}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let (status, _, body) = post("Origin: http://rebind.attacker.example\r\n");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Origin"), "{body}");
    let (status, _, body) = post(&format!("Origin: http://127.0.0.1:{}\r\n", port.wrapping_add(1)));
    assert_eq!(status, 403, "another port is another origin: {body}");
    let (status, _, body) = post(&format!("Origin: http://127.0.0.1:{port}\r\n"));
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post("");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn malformed_property_bodies_change_nothing_and_patch_merges() {
    let text = format!("{QUICK}cluster.startup.retry.count = 7\n# kept\nplugins.poll.seconds = 3\n");
    let (home, node) = start(&text);
    let file = home.path().join("conf/clusterhost.properties");
    let url = format!("{}/api/properties", node.admin_url());
    let truncated = br#"{"cluster.metrics.enabled": true, "#;
    for method in ["PUT", "PATCH"] {
        let (status, body) = call(method, &url, Some(TOKEN), Some(truncated));
        assert_eq!(status, 400, "{method}: {body}");
        assert!(error_of(&body).contains("not changed"), "{method}: {body}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "{method} of a malformed body changed the file");
    }
    let (status, body) = call("PATCH", &url, Some(TOKEN), Some(br#"{"cluster.metrics.enabld": true}"#));
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("cluster.metrics.enabld"), "{body}");
    let (status, body) = call("PATCH", &url, Some(TOKEN), Some(br#"{"cluster.startup.retry.count": "many"}"#));
    assert_eq!(status, 400, "{body}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // PATCH: one key set, one removed, every other line kept.
    let (status, body) = call(
        "PATCH",
        &url,
        Some(TOKEN),
        Some(br#"{"cluster.metrics.enabled": true, "plugins.poll.seconds": null, "cluster.startup.retry.count": 9}"#),
    );
    assert_eq!(status, 200, "{body}");
    let now = std::fs::read_to_string(&file).unwrap();
    assert_eq!(now, format!("{QUICK}cluster.startup.retry.count = 9\n# kept\ncluster.metrics.enabled = true\n"));
    wait_until("the node to apply the patch", DEADLINE, || {
        let body = call("GET", &url, None, None).1;
        body["effective"]["cluster.metrics.enabled"] == "true"
            && body["effective"]["cluster.startup.retry.count"] == "9"
    });
    // PUT replaces, and says which settings return to their defaults.
    let (status, body) = call("PUT", &url, Some(TOKEN), Some(QUICK.as_bytes()));
    assert_eq!(status, 200, "{body}");
    let reset: Vec<&str> = body["reset"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(reset, vec!["cluster.metrics.enabled", "cluster.startup.retry.count"], "{body}");
}

#[test]
fn a_huge_bad_value_is_cut_in_the_answer_and_the_log() {
    let (_home, node) = start(QUICK);
    // Under the 1 MiB body cap, so it is read and refused for its value.
    let huge = "9".repeat(1_000_000);
    let body = format!("cluster.port = {huge}\n");
    let (status, answer) =
        call("PUT", &format!("{}/api/properties", node.admin_url()), Some(TOKEN), Some(body.as_bytes()));
    assert_eq!(status, 400, "{answer}");
    let message = error_of(&answer);
    assert!(message.len() < 2000, "the error echoes {} bytes", message.len());
    assert!(message.contains("(1000000 bytes)"), "{message}");
    let (status, answer) = call(
        "PATCH",
        &format!("{}/api/properties", node.admin_url()),
        Some(TOKEN),
        Some(serde_json::json!({ "cluster.port": huge }).to_string().as_bytes()),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(error_of(&answer).len() < 2000, "{}", error_of(&answer).len());
    let key = "k".repeat(5_000);
    let (status, answer) = call("GET", &format!("{}/api/caches/c/{key}", node.admin_url()), None, None);
    assert_eq!(status, 404, "{answer}");
    assert!(error_of(&answer).len() < 2000, "{}", error_of(&answer).len());
    let longest = node.log().iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 4000, "a log line of {longest} bytes");
}

#[test]
fn console_pages_forbid_framing_and_the_session_cookie_holds_no_token() {
    let (_home, node) = start(QUICK);
    let port = node.admin_port;
    for path in ["/", "/node", "/plugins", "/properties", "/login", "/api/cluster"] {
        let (status, head, _) = get_with_host(port, path, &format!("127.0.0.1:{port}"), "");
        assert_eq!(status, 200, "{path}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-security-policy:") && head.contains("frame-ancestors 'none'"), "{path}: {head}");
        assert!(head.contains("x-frame-options: deny"), "{path}: {head}");
    }
    let (_, _, script) = get_with_host(port, "/console.js", &format!("127.0.0.1:{port}"), "");
    assert!(!script.contains("document.cookie"), "the script never touches cookies");
    // The login form: a wrong token sets nothing; the right one an
    // HttpOnly, SameSite=Strict session cookie that is not the token.
    let login = |token: &str, origin: &str| {
        let form = format!("token={token}&next=%2Fplugins");
        raw(
            port,
            &format!(
                "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            ),
        )
    };
    let own = format!("http://127.0.0.1:{port}");
    let (status, head, _) = login("wrong", &own);
    assert_eq!(status, 403, "{head}");
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    let (status, head, _) = login(TOKEN, "http://127.0.0.1:1");
    assert_eq!(status, 403, "a login from another origin is refused: {head}");
    let (status, head, _) = login(TOKEN, &own);
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .unwrap_or_else(|| panic!("a session cookie in {head}"));
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(TOKEN), "the cookie is not the token: {cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let write = |origin: &str| {
        raw(
            port,
            &format!(
                "POST /api/cluster/enable HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {session}\r\n{origin}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    assert_eq!(write(&format!("Origin: {own}\r\n")).0, 200, "the console's own write with its session");
    assert_eq!(write("").0, 401, "a session cookie without the page's Origin is not enough");
    assert_eq!(write("Origin: http://127.0.0.1:1\r\n").0, 403, "another port's page cannot use the session");
}
