//! Bounded caches on gossip, in process with the real plugin and 3
//! members: a size bound holds on every member while all three write at
//! once and every member ends with the same entries; an entry with a time
//! to live is removed on every member, each telling its listeners
//! `expired`; max idle is refused with the reason (docs/gossip.md,
//! "Bounded caches").

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterError, Delivery, EntryEventKind, ListenOptions};
use clusterhost_plugin_api::cluster::CacheBounds;
use clusterhost_tests::cluster::{wait_until, Backend, TestCluster};

const NAMES: [&str; 3] = ["a", "b", "c"];

fn counter(cluster: &TestCluster, node: &str, name: &str) -> u64 {
    let stats = cluster.node(node).strategy_stats();
    stats.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_writing_at_once_never_hold_more_than_the_bound_and_end_with_the_same_entries() {
    let cluster = TestCluster::clustered(Backend::Gossip, &NAMES).await;
    let bound = CacheBounds { max_entries: 20, ..CacheBounds::NONE };
    for name in NAMES {
        let opened = cluster.node(name).bounded_cache::<String, String>("bounded", bound).await;
        opened.expect("gossip keeps an entry bound");
    }
    let raws: Vec<_> = NAMES.iter().map(|n| cluster.node(n).caches().raw("bounded")).collect();
    let mut writers = tokio::task::JoinSet::new();
    for (i, raw) in raws.iter().enumerate() {
        let raw = raw.clone();
        writers.spawn(async move {
            for n in 0..150 {
                raw.put(format!("{i}-{n}").into_bytes(), b"v".to_vec()).await.expect("a put");
            }
        });
    }
    // While they write, no member ever holds more than the bound.
    let mut checks = 0;
    while !writers.is_empty() {
        for raw in &raws {
            let len = raw.len().await.expect("a size");
            assert!(len <= 20, "a member holds {len} entries of a cache bounded at 20");
        }
        checks += 1;
        if let Ok(Some(done)) = tokio::time::timeout(Duration::from_millis(5), writers.join_next()).await {
            done.expect("a writer");
        }
    }
    assert!(checks > 1, "the sizes were checked while the writes went on");
    let keys_of = |i: usize| {
        let raw = raws[i].clone();
        async move { raw.keys().await.expect("keys").into_iter().collect::<BTreeSet<_>>() }
    };
    wait_until("every member to hold the same 20 entries", Duration::from_secs(20), || async {
        let (a, b, c) = (keys_of(0).await, keys_of(1).await, keys_of(2).await);
        a.len() == 20 && a == b && b == c
    })
    .await;
    for (i, name) in NAMES.iter().enumerate() {
        assert_eq!(raws[i].len().await.unwrap(), 20);
        assert!(counter(&cluster, name, "cache_evictions") >= 430, "{name} counted its evictions");
    }
    // The 20 kept are the 20 written last (highest versions): a late
    // writer's last writes are among them.
    let kept = keys_of(0).await;
    let last = (0..3).filter(|i| kept.contains(format!("{i}-149").as_bytes())).count();
    assert!(last >= 1, "the most recent writes are kept: {kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_a_ttl_is_removed_on_every_member_and_each_member_tells_its_listeners_expired() {
    let cluster = TestCluster::clustered(Backend::Gossip, &NAMES).await;
    let raws: Vec<_> = NAMES.iter().map(|n| cluster.node(n).caches().raw("timed")).collect();
    let mut listeners = Vec::new();
    for raw in &raws {
        listeners.push(raw.listen(ListenOptions::clustered()).await.expect("a clustered listener"));
    }
    let ttl = Duration::from_millis(300);
    let started = Instant::now();
    raws[0].put_ttl(b"k".to_vec(), b"v".to_vec(), ttl).await.expect("a put with a ttl");
    raws[0].put(b"stays".to_vec(), b"v".to_vec()).await.expect("a plain put");
    for raw in &raws {
        assert!(raw.get(b"k").await.unwrap().is_some(), "held everywhere once acknowledged");
    }
    for (i, listener) in listeners.iter_mut().enumerate() {
        loop {
            let delivery = tokio::time::timeout(Duration::from_secs(10), listener.recv())
                .await
                .expect("expired within 10 s")
                .expect("the listener is open");
            if let Delivery::Event(event) = delivery {
                if event.kind == EntryEventKind::Expired {
                    assert_eq!(event.key, b"k");
                    assert_eq!(event.origin, "a", "the writer");
                    break;
                }
            }
        }
        assert!(started.elapsed() >= ttl, "not before its deadline");
        assert!(raws[i].get(b"k").await.unwrap().is_none(), "never answered once expired");
        assert!(raws[i].get(b"stays").await.unwrap().is_some(), "a plain entry stays");
    }
    for name in NAMES {
        assert_eq!(counter(&cluster, name, "cache_expiries"), 1, "{name}");
    }

    // The cache's own TTL, set live on every member, applies to what is there.
    for name in NAMES {
        let bounds = CacheBounds { ttl_ms: 200, ..CacheBounds::NONE };
        cluster.node(name).bounded_cache::<String, String>("timed", bounds).await.expect("a ttl is kept");
    }
    for raw in &raws {
        let raw = raw.clone();
        wait_until("the cache ttl to expire the plain entry", Duration::from_secs(10), || {
            let raw = raw.clone();
            async move { raw.get(b"stays").await.unwrap().is_none() }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_idle_is_refused_with_the_reason_and_what_to_use_instead() {
    let cluster = TestCluster::clustered(Backend::Gossip, &NAMES[..2]).await;
    let bounds = CacheBounds { max_entries: 5, max_idle_ms: 1000, ..CacheBounds::NONE };
    let err = match cluster.node("a").bounded_cache::<String, String>("idle", bounds).await {
        Err(e) => e,
        Ok(_) => panic!("max idle is refused on gossip"),
    };
    let message = err.to_string();
    for part in ["gossip strategy cannot keep a max idle time on cache idle", "cache.idle.ttl.ms"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(!matches!(err, ClusterError::Stopped), "{err:?}");
    // Nothing of those bounds applies: more than 5 entries stay.
    let raw = cluster.node("a").caches().raw("idle");
    for i in 0..8u8 {
        raw.put(vec![i], b"v".to_vec()).await.unwrap();
    }
    assert_eq!(raw.len().await.unwrap(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_announcing_wire_1_2_gets_every_write_without_its_deadline_in_the_frames_it_knows() {
    use clusterhost::cluster::ClusterState;
    use clusterhost::LoadOutcome;
    use clusterhost_plugin_api::WireVersion;
    use clusterhost_tests::cluster::wait_for;
    use clusterhost_tests::{plugin, restamp};

    let cluster = TestCluster::clustered(Backend::Gossip, &NAMES).await;
    // a runs a build that announces wire 1.2 (a rolling upgrade from the
    // build before bounded caches): the others send it the 1.2 frames.
    let (manager, home) = cluster.plugin_manager("a");
    let older = home.join("builds").join("gossip-wire-1.2.so");
    restamp(&plugin("gossip"), &older, |m| {
        m.version = "0.2.0".parse().unwrap();
        m.wire_protocol = WireVersion { major: 1, minor: 2 };
    });
    let outcome = manager.load(&older).await.expect("a wire 1.2 build is admitted beside 1.3");
    assert!(matches!(outcome, LoadOutcome::Replaced { .. }), "{outcome:?}");
    wait_for("a to rejoin on wire 1.2", Duration::from_secs(30), || {
        NAMES.iter().all(|n| cluster.node(n).state() == ClusterState::Clustered && cluster.node(n).members().len() == 3)
    })
    .await;
    let raws: Vec<_> = NAMES.iter().map(|n| cluster.node(n).caches().raw("mixed")).collect();
    let mut on_c = raws[2].listen(ListenOptions::clustered()).await.expect("a clustered listener on c");
    let ttl = Duration::from_millis(300);
    raws[1].put_ttl(b"k".to_vec(), b"v".to_vec(), ttl).await.expect("a put with a ttl on b");
    raws[1].put(b"plain".to_vec(), b"p".to_vec()).await.expect("a plain put on b");
    raws[0].put(b"from-a".to_vec(), b"q".to_vec()).await.expect("a plain put on a");
    for raw in &raws {
        assert_eq!(raw.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]), "every member has the write");
        assert_eq!(raw.get(b"from-a").await.unwrap().as_deref(), Some(&b"q"[..]), "a's writes reach 1.3 members");
    }
    loop {
        let delivery = tokio::time::timeout(Duration::from_secs(10), on_c.recv())
            .await
            .expect("c expired it within 10 s")
            .expect("the listener is open");
        if matches!(&delivery, Delivery::Event(e) if e.kind == EntryEventKind::Expired && e.key == b"k") {
            break;
        }
    }
    // Past the deadline (c removed it): b and c never answer it; a got it
    // without its deadline (a read there checks the deadline it has).
    assert!(raws[1].get(b"k").await.unwrap().is_none());
    assert!(raws[2].get(b"k").await.unwrap().is_none());
    assert_eq!(raws[0].get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]), "the 1.2 frame carried no deadline");
    assert_eq!(raws[0].get(b"plain").await.unwrap().as_deref(), Some(&b"p"[..]));
}
