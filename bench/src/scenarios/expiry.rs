//! Expiry accuracy (issue 18): an entry written with a time to live on
//! member A, timed until every member (gossip, 3 in-process members; redis,
//! 3 members on one redis-server) has removed it and told its listener
//! `expired`: how long past the deadline the last member did. No read
//! finds it: the strategy's own sweep removes it.

use std::time::{Duration, Instant};

use clusterhost::cluster::{EntryEventKind, EntryListener, ListenOptions};
use clusterhost_tests::cluster::{Backend, TestCluster};

use super::entry_events::next_event;
use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct Expiry;

/// The time to live of every entry written.
const TTL: Duration = Duration::from_millis(200);

/// Waits until `listener` has `expired` for `key`; when.
async fn expired(listener: &mut EntryListener, key: &[u8]) -> Instant {
    loop {
        let event = next_event(listener, "a member's listener").await;
        if event.key == key && event.kind == EntryEventKind::Expired {
            return Instant::now();
        }
    }
}

/// `puts` puts with a TTL on the first of 3 members, one at a time: for
/// each, how long past its deadline the last member's listener had `expired` (ms).
async fn late(backend: Backend, puts: usize) -> Vec<f64> {
    let names = ["a", "b", "c"];
    let mut cluster = TestCluster::clustered(backend, &names).await;
    let caches: Vec<_> = names.iter().map(|n| cluster.node(n).caches().raw("expiry-bench")).collect();
    let mut listeners = Vec::new();
    for cache in &caches {
        listeners.push(cache.listen(ListenOptions::clustered()).await.expect("a clustered listener"));
    }
    let mut late = Vec::with_capacity(puts);
    for i in 0..puts {
        let key = format!("k{i}").into_bytes();
        let started = Instant::now();
        caches[0].put_ttl(key.clone(), b"v".to_vec(), TTL).await.expect("a put with a ttl on a");
        let mut last = started;
        for listener in &mut listeners {
            last = last.max(expired(listener, &key).await);
        }
        for cache in &caches {
            assert!(cache.get(&key).await.expect("a get").is_none(), "an expired entry is never answered");
        }
        late.push(last.saturating_duration_since(started + TTL).as_secs_f64() * 1e3);
    }
    for name in names {
        cluster.detach(name).await;
    }
    late
}

impl Scenario for Expiry {
    fn name(&self) -> &'static str {
        "expiry"
    }

    fn about(&self) -> &'static str {
        "Expiry accuracy: a put with a 200 ms time to live on member A (gossip, 3 in-process members on loopback), \
         one at a time, timed from just before the put until every member's listener has `expired` for it; the \
         figure is how long after the deadline (the put's start + 200 ms) the last member removed it. Gossip: each \
         member sweeps at the next deadline it holds (at most 100 ms apart, at least 5 ms). Then the same with \
         redis (3 members on one redis-server): the senior's sweep script runs every 100 ms and publishes each \
         expiry."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let puts = ctx.pick(200, 10);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        let note = format!("{puts} puts with a 200 ms TTL one after another; deadline = put start + TTL");
        let gossip = runtime.block_on(late(Backend::Gossip, puts));
        report.add_latency(
            "expiry.late.gossip3",
            "time past the TTL until removed on every member, gossip, 3 members",
            Unit::Millis,
            &gossip,
            &note,
        );
        let redis = runtime.block_on(late(Backend::Redis, puts));
        report.add_latency(
            "expiry.late.redis3",
            "time past the TTL until removed on every member, redis, 3 members on one server",
            Unit::Millis,
            &redis,
            &note,
        );
    }
}
