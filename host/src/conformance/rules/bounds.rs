//! Rules for bounded caches (capability `BOUNDED`, API 0.1.3): on one
//! member, a size bound evicts the least recently written entries first
//! (reads are not made here, so the strategies' rules of use agree),
//! a time to live (the cache's, or a put's own) removes an entry and
//! reports `expired`, and tighter bounds set live shrink the cache at
//! once; across members, a bound holds on every member after concurrent
//! writes from all of them settle, an entry with a TTL is gone on every
//! member within TTL + 1 s with `expired` told to another member's
//! clustered listener, and a live edit shrinks the cache everywhere. A
//! strategy that does not report the capability gets `unsupported`.

use std::collections::BTreeMap;

use clusterhost_plugin_api::cluster::{CacheBounds, Capabilities};

use super::support::*;
use crate::cluster::bounds::BoundsSetting;
use crate::cluster::{ClusterManager, Delivery, EntryEventKind, EntryListener, ListenOptions};

/// Past a TTL, how long an entry may stay before the rule fails (the "t + 1 s").
const EXPIRY_SLACK: Duration = Duration::from_secs(1);
/// How long writes may take to settle everywhere.
const SETTLE: Duration = Duration::from_secs(10);

/// Fails as unsupported unless `node`'s strategy reports bounded caches.
async fn require_bounded(node: &ClusterManager) -> Result<(), Failure> {
    if node.caches().strategy_capabilities().await.contains(Capabilities::BOUNDED) {
        return Ok(());
    }
    let strategy = node.status().strategy.unwrap_or_else(|| "standalone".into());
    Err(Failure::Unsupported(format!("strategy {strategy} reports no bounded caches")))
}

/// The entries `node` holds for `cache` now (its local size).
async fn held(node: &ClusterManager, cache: &str) -> u64 {
    node.caches().stats().await.into_iter().find(|s| s.name == cache).map_or(0, |s| s.entries)
}

/// Waits for the next event of `kind` on `key` (skipping others) within `budget`.
async fn wait_event(
    listener: &mut EntryListener,
    kind: EntryEventKind,
    key: &[u8],
    budget: Duration,
    what: &str,
) -> Result<(), Failure> {
    let deadline = Instant::now() + budget;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, listener.recv()).await {
            Ok(Some(Delivery::Event(e))) if e.kind == kind && e.key == key => return Ok(()),
            Ok(Some(Delivery::Event(_))) => {}
            Ok(Some(Delivery::Lagged { missed })) => {
                return Err(Failure::failed(format!("{what}: {missed} events were dropped")))
            }
            Ok(None) => return Err(Failure::failed(format!("{what}: the listener was closed"))),
            Err(_) => {
                return Err(Failure::failed(format!(
                    "{what}: no {} event for {} within {:.1} s",
                    kind.name(),
                    String::from_utf8_lossy(key),
                    budget.as_secs_f64()
                )))
            }
        }
    }
}

/// The properties' bounds for one cache, as a live edit sets them.
fn live_edit(node: &ClusterManager, cache: &str, max_entries: u64) {
    let mut setting = BoundsSetting::default();
    setting.set("max.entries", max_entries);
    let bounds: BTreeMap<String, BoundsSetting> = [(cache.to_string(), setting)].into();
    node.apply(crate::cluster::ClusterConfig { bounds, ..quick_config() });
}

pub(super) async fn bounded_alone(ctx: Ctx) -> Result<(), Failure> {
    let nodes = Nodes::alone(ctx.subject.clone(), "a").await?;
    let a = nodes.node("a");
    require_bounded(a).await?;

    // A size bound: the oldest writes go first, each reported.
    let sized =
        a.bounded_cache::<String, u32>("bounded-size", CacheBounds { max_entries: 3, ..CacheBounds::NONE }).await?;
    let mut events = sized.raw().listen(ListenOptions::clustered().with_value(false)).await?;
    for i in 0..6 {
        sized.put(&format!("k{i}"), &i).await?;
    }
    wait_until("the cache bounded at 3 entries to hold 3", SETTLE, || async {
        sized.len().await.is_ok_and(|n| n == 3)
    })
    .await?;
    let mut keys = sized.keys().await?;
    keys.sort();
    ensure_eq!(keys, ["k3", "k4", "k5"], "what a cache bounded at 3 kept of 6 writes");
    for i in 0..3 {
        let key = postcard::to_allocvec(&format!("k{i}")).expect("a string encodes");
        wait_event(&mut events, EntryEventKind::Evicted, &key, SETTLE, "the listener of the bounded cache").await?;
    }

    // A cache's TTL, and a put's own.
    let ttl = Duration::from_millis(300);
    let timed = a.bounded_cache::<String, u32>("bounded-ttl", CacheBounds { ttl_ms: 300, ..CacheBounds::NONE }).await?;
    let mut expiries = timed.raw().listen(ListenOptions::clustered()).await?;
    let written = Instant::now();
    timed.put(&"soon".into(), &1).await?;
    let plain = a.caches().cache::<String, u32>("bounded-own-ttl");
    let own_written = Instant::now();
    plain.put_ttl(&"own".into(), &2, ttl).await?;
    plain.put(&"stays".into(), &3).await?;
    wait_until("the entry with a 300 ms TTL to be gone", ttl + EXPIRY_SLACK + SETTLE, || async {
        timed.get(&"soon".into()).await.is_ok_and(|v| v.is_none())
    })
    .await?;
    let gone_after = written.elapsed();
    ensure!(
        gone_after <= ttl + EXPIRY_SLACK,
        "the entry with a 300 ms TTL was still there {gone_after:?} after its write"
    );
    // Timed from before the write, so a strategy that keeps the rule is
    // never seen to break it, however slow the machine.
    ensure!(
        gone_after >= ttl,
        "the entry with a 300 ms TTL was gone {gone_after:?} after its write, before its TTL: an entry lives at least its TTL (expire once the clock is past the deadline, never in its millisecond: cluster::is_past)"
    );
    let key = postcard::to_allocvec(&"soon".to_string()).expect("a string encodes");
    wait_event(&mut expiries, EntryEventKind::Expired, &key, EXPIRY_SLACK, "the listener of the cache with a TTL")
        .await?;
    wait_until("the entry put with a 300 ms TTL of its own to be gone", ttl + EXPIRY_SLACK, || async {
        plain.get(&"own".into()).await.is_ok_and(|v| v.is_none())
    })
    .await?;
    let own_gone_after = own_written.elapsed();
    ensure!(
        own_gone_after >= ttl,
        "the entry put with a 300 ms TTL of its own was gone {own_gone_after:?} after its write, before its TTL (cluster::is_past)"
    );
    ensure_eq!(plain.get(&"stays".into()).await?, Some(3), "an entry put without a TTL beside one with");

    // A live edit shrinks at once.
    let edited = a.caches().cache::<String, u32>("bounded-edit");
    for i in 0..5 {
        edited.put(&format!("k{i}"), &i).await?;
    }
    live_edit(a, "bounded-edit", 2);
    wait_until("cache.bounded-edit.max.entries = 2 to shrink the cache to 2", SETTLE, || async {
        edited.len().await.is_ok_and(|n| n == 2)
    })
    .await?;
    Ok(())
}

pub(super) async fn bounded_across_members(ctx: Ctx) -> Result<(), Failure> {
    let names = ctx.names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let nodes = Nodes::clustered(ctx.subject.clone(), &refs).await?;
    let (first, last) = (&names[0], &names[names.len() - 1]);
    let (a, b) = (nodes.node(first), nodes.node(last));
    require_bounded(a).await?;

    // Every member opens the cache with the same bound and writes at once.
    const BOUND: u64 = 5;
    let bounds = CacheBounds { max_entries: BOUND, ..CacheBounds::NONE };
    let mut writers = Vec::new();
    for name in &names {
        let cache = nodes.node(name).bounded_cache::<String, u32>("bounded-shared", bounds).await?;
        let name = name.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..20 {
                cache.put(&format!("{name}-{i}"), &i).await?;
            }
            Ok::<(), crate::cluster::ClusterError>(())
        }));
    }
    for writer in writers {
        writer.await.map_err(|e| Failure::failed(format!("a writer panicked: {e}")))??;
    }
    for name in &names {
        let node = nodes.node(name);
        wait_until(&format!("{name} to hold at most {BOUND} entries of the bounded cache"), SETTLE, || async {
            held(node, "bounded-shared").await <= BOUND
        })
        .await?;
    }
    // Settled: the same entries everywhere, within the bound.
    let mut seen = Vec::new();
    for name in &names {
        let mut keys = nodes.node(name).caches().cache::<String, u32>("bounded-shared").keys().await?;
        keys.sort();
        ensure!(keys.len() as u64 <= BOUND, "{name} lists {} entries of a cache bounded at {BOUND}", keys.len());
        seen.push(keys);
    }
    ensure!(seen.windows(2).all(|w| w[0] == w[1]), "members disagree on what the bounded cache holds: {seen:?}");

    // A TTL: gone on every member within TTL + 1 s; B's listener is told.
    let ttl_bounds = CacheBounds { ttl_ms: 500, ..CacheBounds::NONE };
    let mut caches = Vec::new();
    for name in &names {
        caches.push(nodes.node(name).bounded_cache::<String, u32>("bounded-expiring", ttl_bounds).await?);
    }
    let mut on_b = b.caches().raw("bounded-expiring").listen(ListenOptions::clustered()).await?;
    let written = Instant::now();
    caches[0].put(&"k".into(), &1).await?;
    let key = postcard::to_allocvec(&"k".to_string()).expect("a string encodes");
    wait_event(
        &mut on_b,
        EntryEventKind::Expired,
        &key,
        Duration::from_millis(500) + EXPIRY_SLACK + SETTLE,
        &format!("{last}'s clustered listener"),
    )
    .await?;
    let expired_after = written.elapsed();
    for (name, cache) in names.iter().zip(&caches) {
        ensure_eq!(cache.get(&"k".into()).await?, None, "{name}'s read of the expired entry");
    }
    ensure!(
        expired_after <= Duration::from_millis(500) + EXPIRY_SLACK,
        "an entry with a 500 ms TTL put on {first} was reported expired on {last} only {expired_after:?} after its write"
    );

    // A live edit on every member shrinks the cache on every member.
    let edited = a.caches().cache::<String, u32>("bounded-edited");
    for i in 0..8 {
        edited.put(&format!("k{i}"), &i).await?;
    }
    for name in &names {
        let node = nodes.node(name);
        wait_until(&format!("{name} to hold the 8 entries"), SETTLE, || async {
            held(node, "bounded-edited").await == 8
        })
        .await?;
    }
    for name in &names {
        live_edit(nodes.node(name), "bounded-edited", 3);
    }
    for name in &names {
        let node = nodes.node(name);
        wait_until(&format!("{name} to shrink to 3 entries after the live edit"), SETTLE, || async {
            held(node, "bounded-edited").await == 3
        })
        .await?;
    }
    Ok(())
}

/// How far an expiry time may sit from the one the rule computes: the
/// members' clocks and the time a write takes.
const TIME_SLACK_MS: u64 = 2_000;

/// Whether `at` is `expected` within [`TIME_SLACK_MS`].
fn near(at: Option<u64>, expected: u64) -> bool {
    at.is_some_and(|at| at.abs_diff(expected) <= TIME_SLACK_MS)
}

/// Rule `entry-times` (capability `ENTRY_TIMES`, API 0.1.4): every member
/// tells when an entry expires (the cache's TTL from the write, or a
/// put's own), none for an entry without a TTL or an absent key, without
/// the look counting as a use; and counts, per cache, the entries it
/// evicted and expired.
pub(super) async fn entry_times(ctx: Ctx) -> Result<(), Failure> {
    let names = ctx.names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let nodes = Nodes::clustered(ctx.subject.clone(), &refs).await?;
    let a = nodes.node(&names[0]);
    require_bounded(a).await?;
    if !a.caches().strategy_capabilities().await.contains(Capabilities::ENTRY_TIMES) {
        let strategy = a.status().strategy.unwrap_or_else(|| "standalone".into());
        return Err(Failure::Unsupported(format!("strategy {strategy} reports no entry times")));
    }
    let key = |k: &str| postcard::to_allocvec(&k.to_string()).expect("a string encodes");

    // The cache's TTL (60 s from the write), a put's own (30 s), none.
    let mut timed = Vec::new();
    for name in &names {
        let bounds = CacheBounds { ttl_ms: 60_000, ..CacheBounds::NONE };
        timed.push(nodes.node(name).bounded_cache::<String, u32>("times-ttl", bounds).await?);
    }
    let written = clusterhost_plugin_api::cluster::now_ms();
    timed[0].put(&"k".into(), &1).await?;
    let plain = a.caches().cache::<String, u32>("times-own");
    plain.put_ttl(&"own".into(), &2, Duration::from_secs(30)).await?;
    plain.put(&"stays".into(), &3).await?;
    for name in &names {
        let node = nodes.node(name);
        let (ttl, own) = (node.caches().raw("times-ttl"), node.caches().raw("times-own"));
        let deadline = Instant::now() + SETTLE;
        loop {
            let t = ttl.expiries(vec![key("k"), key("absent")]).await?;
            let o = own.expiries(vec![key("own"), key("stays")]).await?;
            if near(t[0], written + 60_000) && t[1].is_none() && near(o[0], written + 30_000) && o[1].is_none() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{name} answered {t:?} for [an entry of a cache with a 60 s TTL, an absent key] and {o:?} for [an entry put with a 30 s TTL, one without]; expected about [{}, none] and [{}, none] (ms since the epoch, within {TIME_SLACK_MS} ms)",
                written + 60_000,
                written + 30_000
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Counts by cache: evictions on the member that wrote past the bound.
    let sized =
        a.bounded_cache::<String, u32>("times-sized", CacheBounds { max_entries: 2, ..CacheBounds::NONE }).await?;
    for i in 0..5 {
        sized.put(&format!("k{i}"), &i).await?;
    }
    wait_until("the writer to count 3 evictions of the cache bounded at 2", SETTLE, || async {
        let stats = a.caches().stats().await;
        stats.iter().find(|s| s.name == "times-sized").and_then(|s| s.evictions).is_some_and(|n| n >= 3)
    })
    .await?;
    let other = a.caches().stats().await.into_iter().find(|s| s.name == "times-ttl").and_then(|s| s.evictions);
    ensure_eq!(other, Some(0), "evictions counted for an unbounded-by-size cache beside it");
    Ok(())
}
