//! Rules for the atomic cache operations (capability `ATOMIC`): what each
//! operation does on one member, a put-if-absent race across members with
//! exactly one winner, and concurrent `update`s of one counter from every
//! member that lose no increment. A strategy that does not report the
//! capability gets `unsupported` for each.

use clusterhost_plugin_api::cluster::Capabilities;

use super::support::*;
use crate::cluster::{ClusterError, ClusterManager};

/// Fails as unsupported unless `node`'s strategy reports atomic operations.
async fn require_atomic(node: &ClusterManager) -> Result<(), Failure> {
    if node.caches().strategy_capabilities().await.contains(Capabilities::ATOMIC) {
        return Ok(());
    }
    let strategy = node.status().strategy.unwrap_or_else(|| "standalone".into());
    Err(Failure::Unsupported(format!("strategy {strategy} reports no atomic operations")))
}

pub(super) async fn atomic_alone(ctx: Ctx) -> Result<(), Failure> {
    let nodes = Nodes::alone(ctx.subject.clone(), "a").await?;
    let a = nodes.node("a");
    require_atomic(a).await?;
    let cache = a.caches().cache::<String, String>("atomic");
    let k = "k".to_string();
    ensure_eq!(cache.put_if_absent(&k, &"first".into()).await?, None, "put_if_absent on an absent key");
    ensure_eq!(
        cache.put_if_absent(&k, &"second".into()).await?,
        Some("first".into()),
        "put_if_absent on a present key"
    );
    let (value, v1) = cache.get_versioned(&k).await?.ok_or_else(|| Failure::failed("get_versioned found nothing"))?;
    ensure_eq!(value, "first", "get_versioned's value");
    // A plain put changes the version, even within the same millisecond.
    cache.put(&k, &"plain".into()).await?;
    let (_, v2) = cache.get_versioned(&k).await?.ok_or_else(|| Failure::failed("the put's entry is missing"))?;
    ensure!(v2 > v1, "a put did not raise the version ({v1} then {v2})");
    ensure!(!cache.replace_if_version(&k, v1, &"stale".into()).await?, "replace_if matched a replaced version");
    ensure!(
        !cache.replace_if_value(&k, &"first".into(), &"stale".into()).await?,
        "replace_if matched a replaced value"
    );
    ensure!(cache.replace_if_version(&k, v2, &"by-version".into()).await?, "replace_if missed the current version");
    ensure!(cache.replace_if_value(&k, &"by-version".into(), &"by-value".into()).await?, "replace_if missed the value");
    let (value, v3) = cache.get_versioned(&k).await?.ok_or_else(|| Failure::failed("the entry is missing"))?;
    ensure!(value == "by-value" && v3 > v2, "after two replaces: {value:?} at version {v3} (was {v2})");
    ensure!(!cache.remove_if_version(&k, v2).await?, "remove_if matched an old version");
    ensure!(!cache.remove_if_value(&k, &"by-version".into()).await?, "remove_if matched an old value");
    ensure!(cache.remove_if_version(&k, v3).await?, "remove_if missed the current version");
    ensure_eq!(cache.get(&k).await?, None, "the key after remove_if");
    ensure!(!cache.replace_if_value(&k, &"by-value".into(), &"x".into()).await?, "replace_if matched an absent key");
    ensure!(!cache.remove_if_value(&k, &"by-value".into()).await?, "remove_if matched an absent key");
    ensure_eq!(cache.get(&k).await?, None, "an absent key after refused writes");
    let counter = a.caches().cache::<String, u64>("atomic-counter");
    for _ in 0..3 {
        counter.update(&k, |n| n.unwrap_or(0) + 1).await?;
    }
    ensure_eq!(counter.get(&k).await?, Some(3), "three updates of a new counter");
    Ok(())
}

pub(super) async fn atomic_put_if_absent_race(ctx: Ctx) -> Result<(), Failure> {
    let names = ctx.names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let nodes = Nodes::clustered(ctx.subject.clone(), &refs).await?;
    require_atomic(nodes.node(&names[0])).await?;
    let caches: Vec<_> = names.iter().map(|n| nodes.node(n).caches().cache::<String, String>("race")).collect();
    for round in 0..8 {
        let key = format!("k{round}");
        let mut racers = tokio::task::JoinSet::new();
        for (i, cache) in caches.iter().enumerate() {
            for j in 0..2 {
                let (cache, key, value) = (cache.clone(), key.clone(), format!("{}-{j}", names[i]));
                racers.spawn(async move { (value.clone(), cache.put_if_absent(&key, &value).await) });
            }
        }
        let mut winners = Vec::new();
        let mut seen = Vec::new();
        while let Some(joined) = racers.join_next().await {
            let (value, outcome) = joined.map_err(|e| Failure::failed(format!("a racer panicked: {e}")))?;
            match outcome? {
                None => winners.push(value),
                Some(there) => seen.push(there),
            }
        }
        ensure!(winners.len() == 1, "round {round}: {} racers won put_if_absent: {winners:?}", winners.len());
        let winner = &winners[0];
        ensure!(seen.iter().all(|s| s == winner), "round {round}: losers saw {seen:?}, the winner wrote {winner}");
        for (i, cache) in caches.iter().enumerate() {
            let cache = cache.clone();
            let (key, want) = (key.clone(), Some(winner.clone()));
            wait_until(&format!("{} to read round {round}'s winner", names[i]), Duration::from_secs(10), || {
                let (cache, key, want) = (cache.clone(), key.clone(), want.clone());
                async move { cache.get(&key).await.ok() == Some(want) }
            })
            .await?;
        }
        // A version read on one member decides a replace on another.
        let last = caches.len() - 1;
        let (_, version) =
            caches[0].get_versioned(&key).await?.ok_or_else(|| Failure::failed("the winner's entry is missing"))?;
        ensure!(
            caches[last].replace_if_version(&key, version, &"replaced".into()).await?,
            "round {round}: {} could not replace by the version {} read",
            names[last],
            names[0]
        );
        ensure!(
            !caches[0].replace_if_version(&key, version, &"stale".into()).await?,
            "round {round}: a stale version replaced the entry"
        );
    }
    Ok(())
}

/// Increments per counter: the "16 concurrent updates".
const INCREMENTS: u64 = 16;

pub(super) async fn atomic_update_counter(ctx: Ctx) -> Result<(), Failure> {
    let mut names = ctx.names();
    if names.len() < 3 {
        names = vec!["a".into(), "b".into(), "c".into()];
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let nodes = Nodes::clustered(ctx.subject.clone(), &refs).await?;
    require_atomic(nodes.node(&names[0])).await?;
    let counters: Vec<_> = names.iter().map(|n| nodes.node(n).caches().cache::<String, u64>("counters")).collect();
    let key = "hits".to_string();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..INCREMENTS as usize {
        let (counter, key) = (counters[i % counters.len()].clone(), key.clone());
        writers.spawn(async move { counter.update(&key, |n| n.unwrap_or(0) + 1).await });
    }
    let mut written = Vec::new();
    while let Some(joined) = writers.join_next().await {
        match joined.map_err(|e| Failure::failed(format!("a writer panicked: {e}")))? {
            Ok(value) => written.push(value),
            Err(e @ ClusterError::Contended { .. }) => return Err(Failure::failed(format!("an update gave up: {e}"))),
            Err(e) => return Err(e.into()),
        }
    }
    written.sort_unstable();
    ensure_eq!(written, (1..=INCREMENTS).collect::<Vec<_>>(), "the values the updates wrote (each once)");
    for (i, counter) in counters.iter().enumerate() {
        let (counter, key) = (counter.clone(), key.clone());
        wait_until(&format!("{} to read {INCREMENTS}", names[i]), Duration::from_secs(10), || {
            let (counter, key) = (counter.clone(), key.clone());
            async move { counter.get(&key).await.ok() == Some(Some(INCREMENTS)) }
        })
        .await?;
    }
    Ok(())
}
