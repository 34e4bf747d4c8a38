//! Health gates: wait, with a deadline, until what each member reports
//! about itself passes a check.

use std::time::{Duration, Instant};

use super::api_error;
use super::survey::Member;
use crate::admin::client::ClientError;
use crate::admin::contract::state_and_reason;

/// What one member reports of itself.
pub(super) struct Seen {
    pub(super) state: String,
    pub(super) enabled: bool,
    /// The members it sees (0 unless clustered).
    pub(super) members: usize,
    /// Its strategy, "id version".
    pub(super) strategy: Option<String>,
}

impl Seen {
    /// Its strategy's version.
    pub(super) fn version(&self) -> Option<&str> {
        self.strategy.as_deref().and_then(|s| s.split(' ').nth(1))
    }
}

fn observe(member: &Member) -> Result<Seen, String> {
    let status = member.client.cluster().map_err(api_error)?.status;
    let state = state_and_reason(&status.state).0.to_string();
    let members = if state == "clustered" { status.members.len() } else { 0 };
    Ok(Seen { state, enabled: status.enabled, members, strategy: status.strategy })
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
    move |_, seen| {
        if seen.state != "clustered" {
            return Err(format!("it is {}", seen.state));
        }
        if seen.members != size {
            return Err(format!("it sees {} members, expected {size}", seen.members));
        }
        if seen.version() != Some(version.as_str()) {
            return Err(format!("it runs {}, expected {version}", seen.version().unwrap_or("no strategy")));
        }
        Ok(())
    }
}
/// The gate of a member out of the cluster: standalone, clustering disabled.
pub(super) fn standalone(_: &Member, seen: &Seen) -> Result<(), String> {
    if seen.state == "standalone" && !seen.enabled {
        Ok(())
    } else {
        Err(format!("it is {}, clustering {}", seen.state, if seen.enabled { "enabled" } else { "disabled" }))
    }
}

/// The gate of every member while one is upgraded: clustered, `size` members.
pub(super) fn in_cluster(size: usize) -> impl Fn(&Member, &Seen) -> Result<(), String> {
    move |_, seen| {
        if seen.state == "clustered" && seen.members == size {
            Ok(())
        } else {
            Err(format!("it is {} and sees {} members, expected {size}", seen.state, seen.members))
        }
    }
}
