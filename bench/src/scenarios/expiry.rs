//! Expiry accuracy (issue 18): how long after its time to live an entry
//! is gone everywhere, i.e. every member's clustered listener has its
//! `expired` event, with no read to find it: the strategy's own sweep
//! removes it (redis: the senior's sweep script, every 100 ms).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clusterhost::cluster::{Delivery, EntryEventKind, EntryListener, ListenOptions};
use clusterhost_plugin_api::cluster::CacheBounds;
use clusterhost_tests::cluster::{Backend, TestCluster};

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct Expiry;

/// The cache's time to live.
const TTL: Duration = Duration::from_millis(500);

/// Time between two puts (so the samples spread over the sweep's period).
const SPACING: Duration = Duration::from_millis(7);

/// Until `listener` has had an `expired` event for every key of `pending`:
/// when each came.
async fn expiries(mut listener: EntryListener, mut pending: usize) -> HashMap<Vec<u8>, Instant> {
    let mut seen = HashMap::new();
    while pending > 0 {
        let delivery = tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .expect("every expiry within 30 s")
            .expect("the listener is open");
        match delivery {
            Delivery::Event(e) if e.kind == EntryEventKind::Expired => {
                if seen.insert(e.key, Instant::now()).is_none() {
                    pending -= 1;
                }
            }
            Delivery::Event(_) => {}
            Delivery::Lagged { missed } => panic!("a listener dropped {missed} events"),
        }
    }
    seen
}

/// `puts` entries put on the first member: for each, the time past its
/// TTL until the last member's listener was told it expired (ms).
async fn measure(backend: Backend, puts: usize) -> Vec<f64> {
    let names = ["a", "b", "c"];
    let mut cluster = TestCluster::clustered(backend, &names).await;
    let bounds = CacheBounds { ttl_ms: TTL.as_millis() as u64, ..CacheBounds::NONE };
    let mut waits = Vec::new();
    for name in names {
        let node = cluster.node(name);
        node.bounded_cache::<Vec<u8>, Vec<u8>>("expiry-bench", bounds).await.expect("a bounded cache");
        let listener = node.caches().raw("expiry-bench").listen(ListenOptions::clustered()).await.expect("a listener");
        waits.push(tokio::spawn(expiries(listener, puts)));
    }
    let cache = cluster.node("a").caches().raw("expiry-bench");
    let mut written = HashMap::new();
    for i in 0..puts {
        let key = format!("k{i}").into_bytes();
        let at = Instant::now();
        cache.put(key.clone(), b"v".to_vec()).await.expect("a put");
        written.insert(key, at);
        tokio::time::sleep(SPACING).await;
    }
    let mut last: HashMap<Vec<u8>, Instant> = HashMap::new();
    for wait in waits {
        for (key, at) in wait.await.expect("a listener task") {
            let slot = last.entry(key).or_insert(at);
            *slot = (*slot).max(at);
        }
    }
    for name in names {
        cluster.detach(name).await;
    }
    written
        .into_iter()
        .map(|(key, at)| {
            let gone = last[&key].duration_since(at);
            gone.saturating_sub(TTL).as_secs_f64() * 1e3
        })
        .collect()
}

impl Scenario for Expiry {
    fn name(&self) -> &'static str {
        "expiry"
    }

    fn about(&self) -> &'static str {
        "Expiry accuracy: entries put on member A of a cache with a 500 ms time to live, never read; for each, \
         the time past its TTL (from the put call) until the clustered listeners of all 3 members have its \
         expired event. Redis: 3 members on one redis-server, the senior's sweep script every 100 ms removes \
         expired entries and publishes each expiry (a read would find it expired at once)."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let puts = ctx.pick(300, 30);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        let samples = runtime.block_on(measure(Backend::Redis, puts));
        report.add_latency(
            "expiry.redis3",
            "time past the TTL until removed everywhere, redis, 3 members on one server",
            Unit::Millis,
            &samples,
            &format!("{puts} entries with a 500 ms TTL put {} ms apart, never read", SPACING.as_millis()),
        );
    }
}
