//! `clusterhost cache`: read and write cache entries (string keys and
//! values) through the admin API; a put or remove may carry a condition
//! (`--if-absent`, `--if-version N`), applied atomically by the strategy.

use std::process::ExitCode;

use super::{api, AdminTarget};
use crate::admin::client::{segment, ClientError};
use crate::admin::contract::CacheValue;

/// The exit code of a conditional write whose condition did not hold.
pub const CONFLICT_EXIT: u8 = 3;

/// A put's or remove's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    None,
    /// `--if-absent`.
    Absent,
    /// `--if-version N`.
    Version(u64),
    /// `--ttl DURATION`: not a condition, the entry's own time to live.
    Ttl(std::time::Duration),
}

impl Condition {
    fn query(self) -> String {
        match self {
            Condition::None => String::new(),
            Condition::Absent => "?if-absent".into(),
            Condition::Version(n) => format!("?if-version={n}"),
            Condition::Ttl(ttl) => format!("?ttl-ms={}", ttl.as_millis().max(1)),
        }
    }
}

fn cache_path(cache: &str, key: &str) -> String {
    format!("/api/caches/{}/{}", segment(cache), segment(key))
}

/// As [`api`], a 409 (the condition did not hold) exiting with [`CONFLICT_EXIT`].
fn conditional(
    admin: &AdminTarget,
    call: impl FnOnce(&crate::admin::client::AdminClient) -> Result<crate::admin::client::Answer, ClientError>,
    text: impl FnOnce(&crate::admin::client::Answer) -> Result<(), ClientError>,
) -> ExitCode {
    let mut conflict = false;
    let code = api(
        admin,
        |c| {
            let answer = call(c);
            conflict = matches!(answer, Err(ClientError::Api { status: 409, .. }));
            answer
        },
        text,
    );
    if conflict {
        ExitCode::from(CONFLICT_EXIT)
    } else {
        code
    }
}

/// `cache get CACHE KEY [--version]`: prints the value (and its version).
pub fn get(admin: &AdminTarget, cache: &str, key: &str, with_version: bool) -> ExitCode {
    let path = cache_path(cache, key);
    api(
        admin,
        |c| c.get(&path),
        |answer| {
            let entry = answer.view::<CacheValue>()?;
            match (with_version, entry.version) {
                (true, Some(version)) => println!("{}\nversion {version}", entry.value),
                (true, None) => println!("{}\nversion unknown (the strategy has no atomic operations)", entry.value),
                (false, _) => println!("{}", entry.value),
            }
            Ok(())
        },
    )
}

/// `cache put CACHE KEY VALUE [--if-absent | --if-version N | --ttl DURATION]`.
pub fn put(admin: &AdminTarget, cache: &str, key: &str, value: &str, condition: Condition) -> ExitCode {
    let path = format!("{}{}", cache_path(cache, key), condition.query());
    conditional(
        admin,
        |c| c.put(&path, value.as_bytes()),
        |answer| {
            match answer.view::<CacheValue>()?.version {
                Some(version) => println!("{cache}/{key} set (version {version})"),
                None => println!("{cache}/{key} set"),
            }
            Ok(())
        },
    )
}

/// `cache remove CACHE KEY [--if-version N]`.
pub fn remove(admin: &AdminTarget, cache: &str, key: &str, condition: Condition) -> ExitCode {
    let path = format!("{}{}", cache_path(cache, key), condition.query());
    conditional(
        admin,
        |c| c.delete(&path),
        |_| {
            println!("{cache}/{key} removed");
            Ok(())
        },
    )
}

/// `cache watch CACHE [--local] [--json]`: the cache's entry events as
/// they happen, one a line (`added k=v by a (version N)`, or with
/// `--json` one [`CacheEventView`](crate::admin::contract::CacheEventView)
/// a line), until interrupted or the node ends the stream. A reader the
/// node dropped for falling behind says so and exits non-zero.
pub fn watch(admin: &AdminTarget, cache: &str, local: bool) -> ExitCode {
    use crate::admin::contract::{CacheEventView, CacheStreamEnd};
    let client = match admin.client() {
        Ok(client) => client,
        Err(e) => return super::fail(e.to_string()),
    };
    let json = admin.json;
    let path = format!("/api/caches/{}/events{}", segment(cache), if local { "?local" } else { "" });
    let mut ended: Option<(String, CacheStreamEnd)> = None;
    let streamed = client.stream(&path, |frame| {
        match frame.event.as_str() {
            "dropped" | "closing" => {
                let end = serde_json::from_str::<CacheStreamEnd>(&frame.data)
                    .unwrap_or(CacheStreamEnd { missed: 0, reason: frame.data.clone() });
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "end": frame.event, "missed": end.missed, "reason": end.reason })
                    );
                } else {
                    println!("-- {}", end.reason);
                }
                ended = Some((frame.event.clone(), end));
                return false;
            }
            _ => match serde_json::from_str::<CacheEventView>(&frame.data) {
                Ok(event) if json => println!("{}", serde_json::to_string(&event).unwrap_or_default()),
                Ok(event) => {
                    let value = event.value.as_deref().map(|v| format!("={v}")).unwrap_or_default();
                    println!("{} {}{value} by {} (version {})", event.kind, event.key, event.origin, event.version);
                }
                Err(e) => eprintln!("warning: skipped an event this client cannot read ({e}): {}", frame.data),
            },
        }
        // Each line reaches a pipe as it happens.
        use std::io::Write;
        let _ = std::io::stdout().flush();
        true
    });
    if let Err(e) = streamed {
        return super::fail(e.to_string());
    }
    match ended {
        Some((kind, _)) if kind == "closing" => ExitCode::SUCCESS,
        Some((_, end)) => super::fail(format!("the node dropped this watch: {}", end.reason)),
        None => super::fail(format!("the node at {} ended the event stream; is it stopping?", admin.url)),
    }
}
