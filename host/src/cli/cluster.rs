//! `clusterhost cluster`: the running node's clustering through its admin
//! API: status, switched on and off, and the strategy plugin upgraded.

use std::process::ExitCode;

use super::render::print_cluster;
use super::{api, fail, AdminTarget};
use crate::admin::contract::{ClusterView, EventsView, StreamGap};
use crate::event_log::NodeEvent;
use crate::upgrade;

/// `cluster status`.
pub fn status(admin: &AdminTarget) -> ExitCode {
    api(
        admin,
        |c| c.get("/api/cluster"),
        |answer| {
            print_cluster(&answer.view::<ClusterView>()?);
            Ok(())
        },
    )
}

/// `cluster enable` / `cluster disable`, on every member.
pub fn switch(admin: &AdminTarget, enabled: bool) -> ExitCode {
    let (path, done) = if enabled {
        ("/api/cluster/enable", "clustering enabled cluster-wide")
    } else {
        ("/api/cluster/disable", "clustering disabled cluster-wide")
    };
    api(
        admin,
        |c| c.post(path, b""),
        |_| {
            println!("{done}");
            Ok(())
        },
    )
}

/// `cluster upgrade`: `options` without the tokens, which come from `admin`;
/// `nodes` empty means `--admin` alone. Progress goes to stdout line by line.
pub fn upgrade(admin: &AdminTarget, mut options: upgrade::UpgradeOptions) -> ExitCode {
    options.tokens = match admin.tokens() {
        Ok(tokens) => tokens,
        Err(e) => return fail(e.to_string()),
    };
    if options.nodes.is_empty() {
        options.nodes = vec![admin.url.clone()];
    }
    let mut out = |line: &str| {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    };
    match upgrade::run(&options, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.to_string()),
    }
}

/// `cluster events [--after SEQ] [--follow]`: the node's events after
/// `after`, one a line (text with local times, or with `--json` one JSON
/// object a line with epoch milliseconds); with `follow`, then every new
/// one as it happens, until the node stops or the command is interrupted.
/// A reader that fell behind resumes after the last event it printed.
pub fn events(admin: &AdminTarget, follow: bool, after: u64) -> ExitCode {
    let client = match admin.client() {
        Ok(client) => client,
        Err(e) => return fail(e.to_string()),
    };
    let json = admin.json;
    let print_event = |event: &NodeEvent| {
        if json {
            println!("{}", serde_json::to_string(event).unwrap_or_default());
        } else {
            println!("{}", event.line());
        }
    };
    let print_gap = |kind: &str, gap: &StreamGap| {
        if json {
            println!("{}", serde_json::json!({ "gap": kind, "missed": gap.missed, "reason": gap.reason }));
        } else {
            println!("-- {}", gap.reason);
        }
    };
    if !follow {
        let view = match client.get(&format!("/api/events?after={after}")).and_then(|a| a.view::<EventsView>()) {
            Ok(view) => view,
            Err(e) => return fail(e.to_string()),
        };
        if view.missed > 0 {
            let reason = format!("{} event(s) after #{after} are no longer in the node's history", view.missed);
            print_gap("missed", &StreamGap { missed: view.missed, reason });
        }
        view.events.iter().for_each(print_event);
        return ExitCode::SUCCESS;
    }
    let mut last = after;
    loop {
        let mut ended = None;
        let streamed = client.stream(&format!("/api/events?after={last}"), |frame| {
            match frame.event.as_str() {
                "message" => match serde_json::from_str::<NodeEvent>(&frame.data) {
                    Ok(event) => {
                        last = event.seq;
                        print_event(&event);
                    }
                    Err(e) => eprintln!("warning: skipped an event this client cannot read ({e}): {}", frame.data),
                },
                kind @ ("missed" | "lagged" | "closing") => {
                    let gap = serde_json::from_str::<StreamGap>(&frame.data)
                        .unwrap_or(StreamGap { missed: 0, reason: frame.data.clone() });
                    print_gap(kind, &gap);
                    if kind != "missed" {
                        ended = Some(kind.to_string());
                        return false;
                    }
                }
                _ => {}
            }
            true
        });
        if let Err(e) = streamed {
            return fail(e.to_string());
        }
        match ended.as_deref() {
            // Fell behind: read on from the last event printed.
            Some("lagged") => continue,
            Some(_) => return ExitCode::SUCCESS,
            None => return fail(format!("the node at {} ended the event stream; is it stopping?", admin.url)),
        }
    }
}
