//! Health gates: wait, with a deadline, until what each member reports
//! about itself passes a check.

use std::time::{Duration, Instant};

use super::api_error;
use super::survey::Member;
use crate::admin::client::ClientError;
use crate::admin::contract::state_and_reason;

/// What one member reports: (state, enabled, members seen, its strategy version).
pub(super) type Seen = (String, bool, usize, Option<String>);

fn observe(member: &Member) -> Result<Seen, String> {
    let view = member.client.cluster().map_err(api_error)?;
    let status = view.status;
    let state = state_and_reason(&status.state).0.to_string();
    let seen = if state == "clustered" { status.members.len() } else { 0 };
    let version = status.strategy.as_deref().and_then(|s| s.split(' ').nth(1)).map(str::to_string);
    Ok((state, status.enabled, seen, version))
}

/// Waits until `check` holds for every member of `members`; Err with the
/// last thing seen when the gate times out.
pub(super) fn gate(
    timeout: Duration,
    members: &[&Member],
    mut on_slow: impl FnMut(&Member, &Seen),
    check: impl Fn(&Member, &Seen) -> Result<(), String>,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let mut failing = None;
        for m in members {
            let seen = observe(m);
            let verdict = seen.as_ref().map_err(|e| e.clone()).and_then(|s| check(m, s));
            if let Err(why) = verdict {
                if let Ok(s) = &seen {
                    on_slow(m, s);
                }
                failing = Some(format!("{}: {why}", m.label()));
                break;
            }
        }
        match failing {
            None => return Ok(started.elapsed()),
            Some(why) if started.elapsed() >= timeout => {
                return Err(format!("gate not passed within {} s: {why}", timeout.as_secs()))
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
/// Waits until `member` answers `/readyz` with 200 (ready for client
/// traffic); a node without the endpoint (404, an older host) passes.
pub(super) fn ready_gate(timeout: Duration, member: &Member) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let why = match member.client.get("/readyz") {
            Ok(_) | Err(ClientError::Api { status: 404, .. }) => return Ok(started.elapsed()),
            Err(ClientError::Api { body, .. }) => {
                body["reason"].as_str().unwrap_or("the node gave no reason").to_string()
            }
            Err(e) => api_error(e),
        };
        if started.elapsed() >= timeout {
            return Err(format!(
                "gate not passed within {} s: {}: not ready: {}",
                timeout.as_secs(),
                member.label(),
                crate::text::clip(&why)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The gate of a member in the cluster: clustered, `size` members, `version`.
pub(super) fn clustered_check(size: usize, version: String) -> impl Fn(&Member, &Seen) -> Result<(), String> {
    move |_, (state, _, seen, running)| {
        if state != "clustered" {
            return Err(format!("it is {state}"));
        }
        if *seen != size {
            return Err(format!("it sees {seen} members, expected {size}"));
        }
        if running.as_deref() != Some(version.as_str()) {
            return Err(format!("it runs {}, expected {version}", running.as_deref().unwrap_or("no strategy")));
        }
        Ok(())
    }
}
/// The gate of a member out of the cluster: standalone, clustering disabled.
pub(super) fn standalone(_: &Member, (state, enabled, _, _): &Seen) -> Result<(), String> {
    if state == "standalone" && !enabled {
        Ok(())
    } else {
        Err(format!("it is {state}, clustering {}", if *enabled { "enabled" } else { "disabled" }))
    }
}

/// The gate of every member while one is upgraded: clustered, `size` members.
pub(super) fn in_cluster(size: usize) -> impl Fn(&Member, &Seen) -> Result<(), String> {
    move |_, (state, _, seen, _)| {
        if state == "clustered" && *seen == size {
            Ok(())
        } else {
            Err(format!("it is {state} and sees {seen} members, expected {size}"))
        }
    }
}
