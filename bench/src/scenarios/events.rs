//! The node's event stream (issue 20): how long an event takes from being
//! recorded to reaching the readers of `/api/events`, with one reader and
//! with the most a node serves, and how long the node takes to stop with
//! that many streams open.

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clusterhost::admin::client::AdminClient;
use clusterhost::admin::MAX_EVENT_STREAMS;
use clusterhost::event_log::NodeEvent;
use clusterhost_tests::admin::{call, home_with_strategy, start_clustered, TOKEN};

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct Events;

impl Scenario for Events {
    fn name(&self) -> &'static str {
        "events"
    }

    fn about(&self) -> &'static str {
        "One `clusterhost run` process (the fixture's one-member memory strategy) with R readers of \
         `GET /api/events` as server-sent events (the CLI's client, one thread each); clustering is switched off \
         and on through the API, and every event (setting, state, leave, join) is timed from its `at_ms` (when \
         the node recorded it) to when each reader parsed it (the same machine's clock, so ms resolution). Then \
         SIGTERM → exit with the R streams open (each ends with a `closing` event)."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let switches = ctx.pick(40, 4);
        let runs = ctx.pick(3, 1);
        for readers in [1, MAX_EVENT_STREAMS] {
            let mut latencies = Vec::new();
            let mut stops = Vec::new();
            for _ in 0..runs {
                let (run_latencies, stop) = run_once(readers, switches);
                latencies.extend(run_latencies);
                stops.push(stop);
            }
            let note = format!("{readers} reader(s), {switches} switches a run, {runs} run(s)");
            report.add_latency(
                &format!("events.delivery.{readers}"),
                &format!("event recorded → parsed by a stream reader, {readers} reader(s)"),
                Unit::Millis,
                &latencies,
                &note,
            );
            report.add_durations(
                &format!("events.stop.{readers}"),
                &format!("SIGTERM → exit with {readers} event stream(s) open"),
                Unit::Millis,
                &stops,
                &note,
            );
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One node, `readers` streams, `switches` switches of clustering: every
/// reader's delivery times (ms), and the node's stop time.
fn run_once(readers: usize, switches: usize) -> (Vec<f64>, Duration) {
    let home = home_with_strategy("cluster.startup.delay.seconds = 0\n");
    let mut node = start_clustered(home.path(), "bench-events");
    let url = node.admin_url();
    let (_, body) = call("GET", &format!("{url}/api/events"), None, None);
    let last = body["last_seq"].as_u64().expect("a last_seq");
    let (tx, rx) = mpsc::channel::<Option<f64>>();
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            let (tx, url) = (tx.clone(), url.clone());
            std::thread::spawn(move || {
                // One event of the history first: the reader is connected.
                let path = format!("/api/events?after={}", last.saturating_sub(1));
                let _ = AdminClient::new(&url, None).stream(&path, |frame| {
                    if frame.event != "message" {
                        return frame.event == "missed";
                    }
                    let Ok(event) = serde_json::from_str::<NodeEvent>(&frame.data) else { return true };
                    let latency = (event.seq > last).then(|| now_ms().saturating_sub(event.at_ms) as f64);
                    tx.send(latency).is_ok()
                });
            })
        })
        .collect();
    drop(tx);
    for _ in 0..readers {
        rx.recv_timeout(Duration::from_secs(30)).expect("every reader connects");
    }
    for switch in 0..switches {
        let (path, state) = if switch % 2 == 0 { ("disable", "standalone") } else { ("enable", "clustered") };
        assert_eq!(call("POST", &format!("{url}/api/cluster/{path}"), Some(TOKEN), Some(b"")).0, 200);
        let deadline = Instant::now() + Duration::from_secs(30);
        while call("GET", &format!("{url}/api/cluster"), None, None).1["state"]["state"] != state {
            assert!(Instant::now() < deadline, "the node did not become {state}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let (_, body) = call("GET", &format!("{url}/api/events"), None, None);
    let recorded = body["last_seq"].as_u64().expect("a last_seq") - last;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.len() < recorded as usize * readers {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(latency) = rx.recv_timeout(left).expect("every event reaches every reader") {
            latencies.push(latency);
        }
    }
    let stopping = Instant::now();
    node.terminate(Duration::from_secs(30));
    let stop = stopping.elapsed();
    for thread in threads {
        let _ = thread.join();
    }
    (latencies, stop)
}
