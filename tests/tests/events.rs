//! The node's event log across 3 real gossip members (issue 20, item 3):
//! member ev-a's `/api/events` stream and a `clusterhost cluster events
//! --follow` both deliver, in order, the other members joining, one leaving
//! and a hot swap of ev-a's strategy plugin; `?after=` and `Last-Event-ID`
//! resume without a gap or a duplicate; past the cap of streams a new one
//! is refused with 503 and a reason, and a closed one frees its slot; when
//! the node stops, every stream (and the CLI) ends at once. One cluster
//! serves every check. (The slow-reader drop is proven without a network in
//! host/src/admin/events.rs: a stalled socket takes megabytes to fill.)

mod gossip_kit;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterhost::admin::client::{AdminClient, ClientError, StreamFrame};
use clusterhost::admin::MAX_EVENT_STREAMS;
use clusterhost::event_log::{NodeEvent, What};
use clusterhost_tests::admin::{call, publish_file, TOKEN};
use clusterhost_tests::{clusterhost_bin, plugin, restamp};
use gossip_kit::{
    free_member_port, gossip_home, loopback_members, random_key, start_local, unique_cluster, wait_for_view, HomeSpec,
    DEADLINE,
};

/// What a stream reader thread reports.
enum Report {
    Frame(StreamFrame),
    /// The stream ended (`Ok`) or was refused / broke (`Err`).
    Ended(Result<(), String>),
}

/// Opens `/api/events` on `url` as a stream (with `headers`) in a thread;
/// each frame comes out of the channel. The thread stops taking frames once
/// `stop` is set (at the next frame).
fn open_stream(url: &str, headers: Vec<(String, String)>, stop: Arc<AtomicBool>) -> mpsc::Receiver<Report> {
    let (tx, rx) = mpsc::channel();
    let client = AdminClient::new(url, None);
    std::thread::spawn(move || {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let ended = client.stream_with("/api/events", &headers, |frame| {
            !stop.load(Ordering::Relaxed) && tx.send(Report::Frame(frame)).is_ok()
        });
        let ended = ended.map_err(|e| match e {
            ClientError::Api { status, message, .. } => format!("HTTP {status}: {message}"),
            other => other.to_string(),
        });
        let _ = tx.send(Report::Ended(ended));
    });
    rx
}

/// Reads `rx`'s events into `seen` until `done(seen)`, within [`DEADLINE`].
fn read_until(rx: &mpsc::Receiver<Report>, seen: &mut Vec<NodeEvent>, what: &str, done: impl Fn(&[NodeEvent]) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Report::Frame(frame)) if frame.event == "message" => {
                let event: NodeEvent = serde_json::from_str(&frame.data).expect("an event's data is its JSON");
                assert_eq!(frame.id, Some(event.seq.to_string()), "the SSE id is the sequence number");
                seen.push(event);
            }
            Ok(Report::Frame(frame)) => {
                panic!("an unexpected {} frame while waiting for {what}: {}", frame.event, frame.data)
            }
            Ok(Report::Ended(how)) => panic!("the stream ended ({how:?}) while waiting for {what}; got {seen:#?}"),
            Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}; got {seen:#?}"),
        }
    }
}

fn position(events: &[NodeEvent], what: &str, matches: impl Fn(&What) -> bool) -> usize {
    events.iter().position(|e| matches(&e.what)).unwrap_or_else(|| panic!("no {what} in {events:#?}"))
}

/// The sequence numbers of `events`, which must follow each other from `first`.
fn assert_contiguous(events: &[NodeEvent], first: u64) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (first..first + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "no gap and no duplicate");
}

/// A line of `cluster events` text: `YYYY-MM-DD HH:MM:SS.mmm  #N  …`.
fn has_local_time(line: &str) -> bool {
    let b = line.as_bytes();
    line.len() > 23
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && b[10] == b' '
        && [13, 16].iter().all(|&i| b[i] == b':')
        && b[19] == b'.'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22].iter().all(|&i| b[i].is_ascii_digit())
}

#[test]
fn the_event_stream_and_the_cli_deliver_joins_a_leave_and_a_plugin_swap_in_order() {
    let cluster = unique_cluster("events");
    let key = random_key();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let port = free_member_port(&ports);
        ports.push(port);
    }
    let members = loopback_members(&ports);
    let home = |_: &str| gossip_home(&HomeSpec::new(&cluster, &key, &members));
    let mut a = start_local("ev-a", ports[0], home("ev-a"));
    a.process.wait_for_admin(DEADLINE);
    let url = a.process.admin_url();

    // A stream from the start, and the CLI following it.
    let stream = open_stream(&url, Vec::new(), Arc::default());
    let mut cli = Command::new(clusterhost_bin())
        .args(["cluster", "events", "--follow", "--admin", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the CLI starts");
    let (line_tx, lines) = mpsc::channel::<String>();
    let stdout = cli.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("[cli] {line}");
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });

    // ev-a clustered alone first: a member already there when this node
    // joins is no join event of its own, only one that comes later is.
    wait_for_view(&[&a], &["ev-a"]);
    let b = start_local("ev-b", ports[1], home("ev-b"));
    let mut c = start_local("ev-c", ports[2], home("ev-c"));
    wait_for_view(&[&a, &b, &c], &["ev-a", "ev-b", "ev-c"]);
    // A leave: ev-c stops (and says goodbye).
    c.process.terminate(DEADLINE);
    wait_for_view(&[&a, &b], &["ev-a", "ev-b"]);
    // A swap: ev-a's gossip plugin replaced by a newer build of it.
    let manifest = clusterhost_tests::manifest_of(&plugin("gossip"));
    let mut newer = manifest.version.clone();
    newer.patch += 1;
    let build = a.home.path().join("gossip-newer.so");
    restamp(&plugin("gossip"), &build, |m| m.version = newer.clone());
    publish_file(a.home.path(), &build, "gossip.so");

    let mut seen = Vec::new();
    read_until(&stream, &mut seen, "the plugin swap", |events| {
        events.iter().any(|e| matches!(&e.what, What::PluginReplaced { .. }))
    });
    assert_contiguous(&seen, 1);
    let joined = position(&seen, "ev-b's join", |w| matches!(w, What::MemberJoined { member, .. } if member == "ev-b"));
    let joined_c =
        position(&seen, "ev-c's join", |w| matches!(w, What::MemberJoined { member, .. } if member == "ev-c"));
    let left = position(&seen, "ev-c's leave", |w| matches!(w, What::MemberLeft { member, .. } if member == "ev-c"));
    let swapped = position(
        &seen,
        "the swap",
        |w| matches!(w, What::PluginReplaced { plugin, to, .. } if plugin == "gossip" && *to == newer.to_string()),
    );
    assert!(joined < left && joined_c < left && left < swapped, "join, leave, swap in order: {seen:#?}");

    // The CLI printed the same, in order, with local times.
    let deadline = Instant::now() + DEADLINE;
    let mut printed: Vec<String> = Vec::new();
    while !printed.iter().any(|l| l.contains("replaced by")) {
        let left = deadline.saturating_duration_since(Instant::now());
        printed.push(
            lines.recv_timeout(left).unwrap_or_else(|_| panic!("the CLI printed no swap; it printed {printed:#?}")),
        );
    }
    let at = |part: &str| {
        printed.iter().position(|l| l.contains(part)).unwrap_or_else(|| panic!("no {part:?} in {printed:#?}"))
    };
    assert!(at("ev-b joined the cluster") < at("ev-c left the cluster"), "{printed:#?}");
    assert!(at("ev-c left the cluster") < at(&format!("replaced by {newer}")), "{printed:#?}");
    assert!(printed.iter().all(|l| has_local_time(l)), "every line starts with a local time: {printed:#?}");

    // ?after= resumes after the join, without a gap or a duplicate.
    let after = seen[joined].seq;
    let (status, body) = call("GET", &format!("{url}/api/events?after={after}"), None, None);
    assert_eq!(status, 200, "{body}");
    let resumed: Vec<NodeEvent> = serde_json::from_value(body["events"].clone()).expect("events");
    assert_contiguous(&resumed, after + 1);
    assert_eq!(resumed[..seen.len() - joined - 1], seen[joined + 1..], "the same events as the stream");
    // So does Last-Event-ID (a browser's reconnect).
    let reconnect = open_stream(&url, vec![("Last-Event-ID".into(), after.to_string())], Arc::default());
    let mut again = Vec::new();
    let last = seen.last().expect("events were seen").seq;
    read_until(&reconnect, &mut again, "the resumed stream", |events| events.iter().any(|e| e.seq >= last));
    assert_contiguous(&again, after + 1);
    assert_eq!(again[..seen.len() - joined - 1], seen[joined + 1..]);
    // And `cluster events --after K --json`: one JSON object a line, epoch ms.
    let out = Command::new(clusterhost_bin())
        .args(["cluster", "events", "--json", "--after", &after.to_string(), "--admin", &url])
        .output()
        .expect("the CLI runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<NodeEvent> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one event a line ({e}): {l}")))
        .collect();
    assert_contiguous(&printed, after + 1);
    assert_eq!(printed[..seen.len() - joined - 1], seen[joined + 1..]);
    // Bad numbers are refused with a reason.
    let (status, body) = call("GET", &format!("{url}/api/events?after=soon"), None, None);
    assert!(status == 400 && body["error"].as_str().unwrap().contains("not an event sequence number"), "{body}");

    // The cap: 3 streams are open (the first, the CLI's, the resumed one);
    // more open until the cap, then one is refused with a reason.
    let held = Arc::new(AtomicBool::new(false));
    let mut open = Vec::new();
    let refusal = loop {
        assert!(open.len() <= MAX_EVENT_STREAMS, "more than {MAX_EVENT_STREAMS} streams were served");
        let rx = open_stream(&url, Vec::new(), held.clone());
        match rx.recv_timeout(DEADLINE) {
            Ok(Report::Frame(_)) => open.push(rx),
            Ok(Report::Ended(Err(refused))) => break refused,
            Ok(Report::Ended(Ok(()))) => panic!("a stream ended at once"),
            Err(_) => panic!("a stream neither opened nor was refused within {DEADLINE:?}"),
        }
    };
    assert_eq!(open.len() + 3, MAX_EVENT_STREAMS, "{refusal}");
    assert!(refusal.starts_with("HTTP 503") && refusal.contains("event streams are open on this node"), "{refusal}");
    // Closed streams free their slots: the held readers stop at their next
    // frame (switching clustering off makes events) and close their
    // connections; a new stream is served again.
    held.store(true, Ordering::Relaxed);
    assert_eq!(call("POST", &format!("{url}/api/cluster/disable"), Some(TOKEN), Some(b"")).0, 200);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let rx = open_stream(&url, Vec::new(), Arc::default());
        match rx.recv_timeout(DEADLINE) {
            Ok(Report::Frame(_)) => break,
            Ok(Report::Ended(Err(refused))) if refused.starts_with("HTTP 503") => {
                assert!(Instant::now() < deadline, "no stream slot was freed within {DEADLINE:?}: {refused}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(Report::Ended(other)) => panic!("a stream after the cap: {other:?}"),
            Err(_) => panic!("a stream neither opened nor was refused within {DEADLINE:?}"),
        }
    }

    // The node stops: its streams end (saying so), the CLI exits, promptly.
    let stopping = Instant::now();
    a.process.terminate(DEADLINE);
    println!("figure: ev-a stopped (SIGTERM to exit) with event streams open in {:?}", stopping.elapsed());
    let deadline = Instant::now() + DEADLINE;
    let said = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match stream.recv_timeout(left) {
            Ok(Report::Frame(frame)) if frame.event == "closing" => break frame.data,
            Ok(Report::Frame(_)) => {}
            other => panic!("the first stream did not end with a closing event: {:?}", other.is_ok()),
        }
    };
    assert!(said.contains("the node is stopping"), "{said}");
    let exited = loop {
        if let Some(status) = cli.try_wait().expect("the CLI can be waited for") {
            break status;
        }
        assert!(Instant::now() < deadline, "the CLI did not exit after the node stopped");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exited.success(), "the CLI ends cleanly when the node stops: {exited}");
    // Its last line says why it ended.
    let mut rest: Vec<String> = Vec::new();
    while !rest.iter().any(|l| l.contains("the node is stopping")) {
        let left = deadline.saturating_duration_since(Instant::now());
        rest.push(
            lines.recv_timeout(left).unwrap_or_else(|_| panic!("the CLI did not say the node stopped: {rest:#?}")),
        );
    }
    drop(b);
}
