//! DNS discovery: `discovery.dns = "name:port"` is resolved to every
//! address it has, now and again every `discovery.dns_interval_ms`; this
//! member gossips with each address not yet in its view (chitchat does
//! the rest). The name is what a Kubernetes headless service or a Consul
//! service gives: one A/AAAA record per member, changing as members come
//! and go. Resolution goes through the system resolver (`getaddrinfo`:
//! `/etc/hosts`, `/etc/resolv.conf`), one lookup at a time, each waited
//! for a bounded time, its answer bounded in count. The member must be
//! bound to the address the name lists for it (`--bind` / `node.bind`,
//! e.g. the pod IP): that is how its own entry is told from the others.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// At most this many addresses of one answer are used (the first ones).
pub const MAX_ADDRESSES: usize = 256;

/// The longest a name may be (RFC 1035: 253 characters in text form).
const MAX_NAME: usize = 253;

/// What [`run`] calls with each answer: the addresses, this member's own left out.
pub type Found = Arc<dyn Fn(Vec<SocketAddr>) + Send + Sync>;

/// Checks `name:port` without resolving it (the name may have no records
/// yet: a headless service before its first member is ready).
pub fn check(target: &str) -> Result<(), String> {
    let Some((host, port)) = target.rsplit_once(':') else {
        return Err(format!("dns {target:?} is not name:port (e.g. \"clusterhost.prod.svc.cluster.local:5701\")"));
    };
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() || host.len() > MAX_NAME || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("dns {target:?}: the name must have 1 to {MAX_NAME} characters and no spaces"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("dns {target:?}: the port must be from 1 to 65535")),
    }
}

/// One lookup of `target` on a blocking thread (the system resolver
/// blocks): its addresses in order, at most [`MAX_ADDRESSES`], duplicates
/// dropped.
fn lookup(target: &str) -> tokio::task::JoinHandle<Result<Vec<SocketAddr>, String>> {
    let target = target.to_string();
    tokio::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs;
        let addrs = target.to_socket_addrs().map_err(|e| e.to_string())?;
        let unique: BTreeSet<SocketAddr> = addrs.take(MAX_ADDRESSES).collect();
        Ok(unique.into_iter().collect())
    })
}

/// Waits up to `timeout` for `lookup`; `None` while it is still running
/// (it is then left to finish: a blocking lookup cannot be stopped).
async fn answer(
    lookup: &mut tokio::task::JoinHandle<Result<Vec<SocketAddr>, String>>,
    timeout: Duration,
) -> Option<Result<Vec<SocketAddr>, String>> {
    match tokio::time::timeout(timeout, lookup).await {
        Err(_) => None,
        Ok(Err(e)) => Some(Err(format!("the lookup failed: {e}"))),
        Ok(Ok(result)) => Some(result),
    }
}

/// Resolves `target` every `interval` (the first time at once) and calls
/// `found` with each answer, `own` left out, until the task is dropped.
/// One lookup at a time: a lookup that outlives its wait (a resolver that
/// does not answer) is waited for in the next rounds rather than joined
/// by another. A failure is logged when it starts and when it ends, not
/// every round.
pub async fn run(target: String, interval: Duration, own: SocketAddr, found: Found) {
    let timeout = interval.clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Result<Vec<SocketAddr>, String>> = None;
    let mut in_flight: Option<tokio::task::JoinHandle<Result<Vec<SocketAddr>, String>>> = None;
    loop {
        tick.tick().await;
        let mut running = in_flight.take().unwrap_or_else(|| lookup(&target));
        let answer = match answer(&mut running, timeout).await {
            Some(answer) => answer,
            None => {
                in_flight = Some(running);
                Err(format!("no answer within {} ms", timeout.as_millis()))
            }
        };
        if last.as_ref() != Some(&answer) {
            match &answer {
                Ok(addrs) => tracing::info!(
                    name = %target,
                    addresses = addrs.len(),
                    "dns discovery: {target} resolves to {}",
                    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
                Err(e) => {
                    tracing::warn!(name = %target, "dns discovery: {target} does not resolve ({e}); trying again every {} ms", interval.as_millis())
                }
            }
        }
        if let Ok(addrs) = &answer {
            found(addrs.iter().copied().filter(|a| *a != own).collect());
        }
        last = Some(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One lookup of `target`, within `timeout`.
    async fn resolve(target: &str, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
        answer(&mut lookup(target), timeout).await.unwrap_or_else(|| Err("no answer in time".into()))
    }

    #[test]
    fn targets_are_checked_without_resolving() {
        assert!(check("clusterhost.prod.svc.cluster.local:5701").is_ok());
        assert!(check("no-records-yet.invalid:5701").is_ok(), "not resolved at load");
        assert!(check("[::1]:5701").is_ok());
        for (bad, says) in [
            ("members", "not name:port"),
            (":5701", "1 to 253 characters"),
            ("a b:5701", "no spaces"),
            ("host:0", "port must be"),
            ("host:x", "port must be"),
        ] {
            let err = check(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(check(&format!("{}:1", "a".repeat(254))).unwrap_err().contains("253"));
    }

    #[tokio::test]
    async fn a_name_resolves_to_every_address_once_and_own_is_left_out() {
        let addrs = resolve("localhost:5701", Duration::from_secs(5)).await.expect("localhost resolves");
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.port() == 5701), "{addrs:?}");
        let unique: BTreeSet<_> = addrs.iter().collect();
        assert_eq!(unique.len(), addrs.len());
        let err = resolve("no-such-name.invalid:5701", Duration::from_secs(5)).await.unwrap_err();
        assert!(!err.is_empty());

        let own: SocketAddr = "127.0.0.1:5701".parse().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let found: Found = Arc::new(move |addrs| {
            let _ = tx.send(addrs);
        });
        let task = tokio::spawn(run("127.0.0.1:5701".into(), Duration::from_millis(50), own, found.clone()));
        // Resolved again and again; this member's own address never passed on.
        for _ in 0..3 {
            assert_eq!(rx.recv().await, Some(Vec::new()));
        }
        task.abort();
        let task = tokio::spawn(run("127.0.0.1:5702".into(), Duration::from_millis(50), own, found));
        assert_eq!(rx.recv().await, Some(vec!["127.0.0.1:5702".parse().unwrap()]));
        task.abort();
    }
}
