//! Rules for entry events (capability `ENTRY_EVENTS`, API 0.1.2): on one
//! member every change reaches its listeners in order with this member as
//! the origin; across members a change made on one reaches the clustered
//! listeners of every other with that member as the origin, a key's
//! changes in order, removals included, and never a local listener
//! elsewhere. A strategy that does not report the capability gets
//! `unsupported` for each.

use clusterhost_plugin_api::cluster::Capabilities;

use super::support::*;
use crate::cluster::{ClusterManager, Delivery, EntryEvent, EntryListener, ListenOptions};

/// How long an event may take to reach a listener before the rule fails.
const EVENT_BUDGET: Duration = Duration::from_secs(10);

/// Fails as unsupported unless `node`'s strategy reports entry events.
async fn require_entry_events(node: &ClusterManager) -> Result<(), Failure> {
    if node.caches().strategy_capabilities().await.contains(Capabilities::ENTRY_EVENTS) {
        return Ok(());
    }
    let strategy = node.status().strategy.unwrap_or_else(|| "standalone".into());
    Err(Failure::Unsupported(format!("strategy {strategy} reports no entry events")))
}

/// The next event `listener` gets within [`EVENT_BUDGET`]; a `Lagged`
/// (events dropped) fails the rule: its queue is far longer than any rule writes.
async fn next(listener: &mut EntryListener, what: &str) -> Result<EntryEvent, Failure> {
    match tokio::time::timeout(EVENT_BUDGET, listener.recv()).await {
        Ok(Some(Delivery::Event(event))) => Ok(event),
        Ok(Some(Delivery::Lagged { missed })) => Err(Failure::failed(format!("{what}: {missed} events were dropped"))),
        Ok(None) => Err(Failure::failed(format!("{what}: the listener was closed"))),
        Err(_) => Err(Failure::failed(format!("{what}: no event within {} s", EVENT_BUDGET.as_secs()))),
    }
}

/// The lines of [`line`] of key `k`, then of key `m`, each in the order seen.
fn per_key(lines: &[String]) -> [Vec<&str>; 2] {
    let of = |key: &str| {
        lines
            .iter()
            .map(String::as_str)
            .filter(|l| l.split(' ').nth(1).is_some_and(|k| k.split('=').next() == Some(key)))
            .collect()
    };
    [of("k"), of("m")]
}

/// An event in a line: "added k=v by a".
fn line(event: &EntryEvent) -> String {
    let value = event.value.as_deref().map(|v| format!("={}", String::from_utf8_lossy(v))).unwrap_or_default();
    format!("{} {}{value} by {}", event.kind.name(), String::from_utf8_lossy(&event.key), event.origin)
}

pub(super) async fn entry_events_alone(ctx: Ctx) -> Result<(), Failure> {
    let nodes = Nodes::alone(ctx.subject.clone(), "a").await?;
    let a = nodes.node("a");
    require_entry_events(a).await?;
    let cache = a.caches().raw("events");
    let mut clustered = cache.listen(ListenOptions::clustered()).await?;
    let mut local = cache.listen(ListenOptions::local().with_value(false)).await?;
    cache.put(b"k".to_vec(), b"1".to_vec()).await?;
    cache.put(b"k".to_vec(), b"2".to_vec()).await?;
    ensure!(cache.remove(b"k").await?, "the key was not there to remove");
    cache.put(b"m".to_vec(), b"3".to_vec()).await?;
    cache.clear().await?;
    // In order per key (changes of different keys have no order between
    // them: a strategy may spread a cache's keys over servers).
    let mut seen = Vec::new();
    let mut versions = Vec::new();
    for _ in 0..5 {
        let event = next(&mut clustered, "the clustered listener on a").await?;
        ensure_eq!(event.cache, "events", "the event's cache");
        if event.key == b"k" {
            versions.push(event.version);
        }
        seen.push(line(&event));
    }
    ensure_eq!(
        per_key(&seen),
        [vec!["added k=1 by a", "updated k=2 by a", "removed k by a"], vec!["added m=3 by a", "removed m by a"]],
        "what a clustered listener on the only member saw, per key"
    );
    ensure!(versions[1] > versions[0], "the update's version {} is not above the add's {}", versions[1], versions[0]);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(line(&next(&mut local, "the local listener on a").await?));
    }
    // A local listener gets the strategy's events of this member's own
    // changes: in order per key too.
    ensure_eq!(
        per_key(&seen),
        [vec!["added k by a", "updated k by a", "removed k by a"], vec!["added m by a", "removed m by a"]],
        "what a local listener without values saw, per key"
    );
    if a.caches().strategy_capabilities().await.contains(Capabilities::ATOMIC) {
        ensure!(cache.put_if_absent(b"n".to_vec(), b"4".to_vec()).await?.applied, "put_if_absent on an absent key");
        ensure!(!cache.put_if_absent(b"n".to_vec(), b"5".to_vec()).await?.applied, "put_if_absent on a present key");
        cache.put(b"n".to_vec(), b"6".to_vec()).await?;
        ensure_eq!(
            [
                line(&next(&mut clustered, "after put_if_absent").await?),
                line(&next(&mut clustered, "after a put").await?)
            ],
            ["added n=4 by a", "updated n=6 by a"],
            "a put_if_absent that applied, one that did not, then a put"
        );
    }
    Ok(())
}

pub(super) async fn entry_events_across_members(ctx: Ctx) -> Result<(), Failure> {
    let names = ctx.names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let nodes = Nodes::clustered(ctx.subject.clone(), &refs).await?;
    let (first, last) = (&names[0], &names[names.len() - 1]);
    let (a, b) = (nodes.node(first), nodes.node(last));
    require_entry_events(a).await?;
    let mut on_b = b.caches().raw("events").listen(ListenOptions::clustered()).await?;
    let mut local_b = b.caches().raw("events").listen(ListenOptions::local()).await?;
    let mut on_a = a.caches().raw("events").listen(ListenOptions::clustered().with_value(false)).await?;
    let cache_a = a.caches().raw("events");

    // A's put reaches B's clustered listener with A as the origin.
    cache_a.put(b"k".to_vec(), b"from-a".to_vec()).await?;
    let event = next(&mut on_b, &format!("{last}'s clustered listener, after a put on {first}")).await?;
    ensure_eq!(line(&event), format!("added k=from-a by {first}"), "the event {last} got for {first}'s put");
    ensure_eq!(
        line(&next(&mut on_a, &format!("{first}'s own listener")).await?),
        format!("added k by {first}"),
        "the event {first} got for its own put (no value asked)"
    );

    // A key's changes in order: versions only grow, the last write last.
    const WRITES: usize = 20;
    for i in 0..WRITES {
        cache_a.put(b"seq".to_vec(), i.to_string().into_bytes()).await?;
    }
    let mut last_version = 0;
    loop {
        let event =
            next(&mut on_b, &format!("{last}'s listener, during {WRITES} writes of one key on {first}")).await?;
        ensure!(event.key == b"seq", "an event for another key came in: {}", line(&event));
        ensure!(
            event.version > last_version,
            "out of order: version {} came after {last_version} ({})",
            event.version,
            line(&event)
        );
        last_version = event.version;
        if event.value.as_deref() == Some((WRITES - 1).to_string().as_bytes()) {
            break;
        }
    }

    // A removal, from A, on B.
    ensure!(cache_a.remove(b"k").await?, "{first} found no k to remove");
    let event = next(&mut on_b, &format!("{last}'s listener, after a remove on {first}")).await?;
    ensure_eq!(line(&event), format!("removed k by {first}"), "the event {last} got for {first}'s remove");

    // B's own put: its local listener's first event (A's changes never reached it).
    b.caches().raw("events").put(b"own".to_vec(), b"from-b".to_vec()).await?;
    let event = next(&mut local_b, &format!("{last}'s local listener")).await?;
    ensure_eq!(line(&event), format!("added own=from-b by {last}"), "the first event of {last}'s local listener");
    loop {
        let event = next(&mut on_a, &format!("{first}'s listener, after a put on {last}")).await?;
        if event.key == b"own" {
            ensure_eq!(line(&event), format!("added own by {last}"), "the event {first} got for {last}'s put");
            break;
        }
    }
    Ok(())
}
