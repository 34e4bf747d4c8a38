//! Entry event latency (issue 18): a put on member A until a clustered
//! listener on member B has the event, with gossip (3 in-process members)
//! and redis (3 members on one `redis-server`: the write's script
//! publishes it, every member's subscription hears it).

use std::time::{Duration, Instant};

use clusterhost::cluster::{Delivery, EntryEvent, EntryListener, ListenOptions, RawCache};
use clusterhost_tests::cluster::{Backend, TestCluster};

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct EntryEvents;

/// `puts` puts on `a`, one at a time, each timed from just before the call
/// until `b`'s listener has its event (ms).
async fn latencies(a: &RawCache, b: &RawCache, puts: usize) -> Vec<f64> {
    let mut listener = b.listen(ListenOptions::clustered()).await.expect("a clustered listener on b");
    let mut out = Vec::with_capacity(puts);
    for i in 0..puts {
        let key = format!("k{i}").into_bytes();
        let started = Instant::now();
        a.put(key.clone(), b"v".to_vec()).await.expect("a put on a");
        while next_event(&mut listener, "b's listener").await.key != key {}
        out.push(started.elapsed().as_secs_f64() * 1e3);
    }
    out
}

/// The next event `listener` (`what`, for the panic) gets within 10 s;
/// panics when it dropped events, closed or got none in time.
pub(super) async fn next_event(listener: &mut EntryListener, what: &str) -> EntryEvent {
    let delivery = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} got no event within 10 s"))
        .unwrap_or_else(|| panic!("{what} was closed"));
    match delivery {
        Delivery::Event(event) => event,
        Delivery::Lagged { missed } => panic!("{what} dropped {missed} events"),
    }
}

async fn measure(report: &mut Report, backend: Backend, tag: &str, what: &str, puts: usize) {
    let names = ["a", "b", "c"];
    let mut cluster = TestCluster::clustered(backend, &names).await;
    let (a, b) = (cluster.node("a").caches().raw("events-bench"), cluster.node("b").caches().raw("events-bench"));
    // Warm-up: connections, the cache's first write.
    latencies(&a, &b, 20).await;
    let samples = latencies(&a, &b, puts).await;
    report.add_latency(
        &format!("entries.latency.{tag}"),
        &format!("put on A → clustered listener on B, {what}"),
        Unit::Millis,
        &samples,
        &format!("{puts} puts one after another; from the put call to the event on B"),
    );
    for name in names {
        cluster.detach(name).await;
    }
}

impl Scenario for EntryEvents {
    fn name(&self) -> &'static str {
        "entry-events"
    }

    fn about(&self) -> &'static str {
        "Entry event latency: a put on member A, timed from the call until a clustered listener on member B has \
         the event (A's origin), one put at a time, with gossip (3 in-process members on loopback: B applies the \
         replicated write and reports it) and redis (3 members on one redis-server: the write's Lua script \
         publishes the change, B's subscription hears it)."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let puts = ctx.pick(2000, 100);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        runtime.block_on(async {
            measure(report, Backend::Gossip, "gossip3", "gossip, 3 members", puts).await;
            measure(report, Backend::Redis, "redis3", "redis, 3 members on one server", puts).await;
        });
    }
}
