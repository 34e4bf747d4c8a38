//! Spread caches (`partitions` in conf/redis.toml, docs/redis.md "Spread
//! caches"): a big cache shares out evenly over the masters of a Redis
//! Cluster, whole-cache operations see every partition, a cache bounded
//! by entries when first written stays on one slot, and a member whose
//! `partitions` differs from the cluster's is refused with the reason.
//! In-process nodes loading the real plugin against redis-servers started
//! for the test.

use std::time::Duration;

use clusterhost::cluster::{ClusterState, Delivery, EntryEventKind, ListenOptions};
use clusterhost_plugin_api::cluster::CacheBounds;
use clusterhost_tests::cluster::{quick_config, wait_for, wait_until, Backend, RedisBackend, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_thousand_entries_of_one_cache_share_out_evenly_over_three_masters() {
    let cluster = TestCluster::clustered_spread(Backend::RedisCluster, &["a", "b"], 64).await;
    let Some(RedisBackend::Cluster(redis)) = &cluster.redis else { panic!("a Redis Cluster") };
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let on_a = a.caches().cache::<String, u32>("big");
    for chunk in 0..30u32 {
        let entries: Vec<(String, u32)> = (0..1000).map(|i| (format!("user-{}", chunk * 1000 + i), i)).collect();
        on_a.put_all(&entries).await.unwrap();
    }
    let on_b = b.caches().cache::<String, u32>("big");
    assert_eq!(on_b.len().await.unwrap(), 30_000, "b counts every partition");

    // Within ±15 % of an even share (10 000) on each master.
    let shares: Vec<u64> = redis.nodes.iter().map(|n| n.hash_fields("suite:cache:big:*")).collect();
    assert_eq!(shares.iter().sum::<u64>(), 30_000, "every entry is in a partition hash: {shares:?}");
    for (node, share) in redis.nodes.iter().zip(&shares) {
        assert!((8_500..=11_500).contains(share), "master :{} holds {share} of 30000 entries ({shares:?})", node.port);
    }
    eprintln!("entries per master: {shares:?}");

    // Whole-cache reads see every partition, in any order.
    assert_eq!(on_b.keys().await.unwrap().len(), 30_000);
    let asked: Vec<String> = ["user-0", "user-29999", "nobody", "user-12345"].map(String::from).to_vec();
    assert_eq!(on_b.get_all(&asked).await.unwrap(), vec![Some(0), Some(999), None, Some(345)], "in the order asked");
    assert_eq!(on_b.get(&"user-777".into()).await.unwrap(), Some(777));

    // Entry events reach a listener whichever partition changed.
    let mut listener = b.caches().raw("big").listen(ListenOptions::clustered()).await.unwrap();
    for key in ["user-1", "user-2", "user-3", "user-4"] {
        on_a.put(&key.to_string(), &7).await.unwrap();
    }
    for _ in 0..4 {
        let event = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await;
        assert!(matches!(event, Ok(Some(_))), "an event for each put, got {event:?}");
    }

    // Clear empties every partition on every master.
    on_b.clear().await.unwrap();
    assert_eq!(on_a.len().await.unwrap(), 0);
    let left: u64 = redis.nodes.iter().map(|n| n.hash_fields("suite:cache:big:*")).sum();
    assert_eq!(left, 0, "no entry left on any master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_bounded_by_entries_stays_on_one_slot_and_a_spread_one_is_gathered_there_when_bounded_later() {
    let cluster = TestCluster::clustered_spread(Backend::Redis, &["a", "b"], 8).await;
    let Some(RedisBackend::Single(redis)) = &cluster.redis else { panic!("one redis-server") };
    let (a, b) = (cluster.node("a"), cluster.node("b"));

    // Bounded at first use: one hash, exact order of use.
    let bounds = CacheBounds { max_entries: 3, ..CacheBounds::NONE };
    let lru = a.bounded_cache::<String, u32>("lru", bounds).await.unwrap();
    b.bounded_cache::<String, u32>("lru", bounds).await.unwrap();
    for i in 0..10 {
        lru.put(&format!("k{i}"), &i).await.unwrap();
    }
    assert_eq!(redis.cli(&["HGET", "{suite}:layout", "lru"]).trim(), "1");
    assert_eq!(redis.cli(&["HLEN", "suite:cache:lru"]).trim(), "3", "one hash, bounded at 3");
    let mut kept = b.caches().cache::<String, u32>("lru").keys().await.unwrap();
    kept.sort();
    assert_eq!(kept, ["k7", "k8", "k9"], "the three written last");

    // Written unbounded first, it spreads; bounded by entries later, it is
    // gathered onto one partition (quietly: moves are not changes), then shrunk.
    let wide = a.caches().cache::<String, u32>("wide");
    for i in 0..100 {
        wide.put(&format!("k{i}"), &i).await.unwrap();
    }
    assert_eq!(redis.cli(&["HGET", "{suite}:layout", "wide"]).trim(), "8");
    let mut events = b.caches().raw("wide").listen(ListenOptions::clustered()).await.unwrap();
    a.bounded_cache::<String, u32>("wide", bounds).await.unwrap();
    assert_eq!(redis.cli(&["HGET", "{suite}:layout", "wide"]).trim(), "1", "recorded on one partition");
    assert_eq!(redis.cli(&["HLEN", "suite:cache:wide"]).trim(), "3", "in one hash, bounded at 3");
    assert_eq!(redis.cli(&["--scan", "--pattern", "suite:cache:wide:*"]).trim(), "", "no partition left");
    assert_eq!(b.caches().cache::<String, u32>("wide").len().await.unwrap(), 3, "b reads the one hash");
    for _ in 0..97 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        match event {
            Ok(Some(Delivery::Event(e))) => assert_eq!(e.kind, EntryEventKind::Evicted, "only evictions: {e:?}"),
            other => panic!("expected 97 evictions, got {other:?}"),
        }
    }
    assert!(events.try_recv().is_none(), "no event for the moves");

    let on_b = b.caches().cache::<String, u32>("wide");
    let keys = on_b.keys().await.unwrap();
    let values = on_b.get_all(&keys).await.unwrap();
    for (key, value) in keys.iter().zip(&values) {
        assert_eq!(Some(key.clone()), value.map(|v| format!("k{v}")), "each kept entry has its own value");
    }

    // A time to live of its own, on keys in every partition of a spread cache.
    let own = a.caches().cache::<String, u32>("own");
    own.put(&"plain".into(), &0).await.unwrap();
    assert_eq!(redis.cli(&["HGET", "{suite}:layout", "own"]).trim(), "8");
    let keys: Vec<String> = (0..16).map(|i| format!("t{i}")).collect();
    for key in &keys {
        own.put_ttl(key, &1, Duration::from_millis(300)).await.unwrap();
    }
    let on_b = b.caches().cache::<String, u32>("own");
    wait_until("every entry with a time to live of its own to expire, on b", Duration::from_secs(10), || async {
        on_b.get_all(&keys).await.unwrap().iter().all(Option::is_none)
    })
    .await;
    assert_eq!(on_b.get(&"plain".into()).await.unwrap(), Some(0), "the entry without one stays");

    // A time to live applies to every partition of a spread cache.
    let timed = a.caches().cache::<String, u32>("timed");
    for i in 0..20 {
        timed.put(&format!("k{i}"), &i).await.unwrap();
    }
    assert_eq!(redis.cli(&["HGET", "{suite}:layout", "timed"]).trim(), "8");
    let bounded = CacheBounds { ttl_ms: 300, ..CacheBounds::NONE };
    let timed = a.bounded_cache::<String, u32>("timed", bounded).await.unwrap();
    timed.put(&"fresh".into(), &1).await.unwrap();
    wait_for("every entry of the spread cache to expire", Duration::from_secs(10), || {
        redis.cli(&["--scan", "--pattern", "suite:cache:timed:*"]).trim().is_empty()
    })
    .await;
    assert_eq!(timed.len().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_partitions_differ_from_the_clusters_is_refused_saying_both() {
    let mut cluster = TestCluster::standalone_spread(Backend::Redis, &["a", "b"], quick_config(), 8);
    cluster.attach("a").await;
    let a = cluster.node("a").clone();
    wait_for("a to join", Duration::from_secs(20), || matches!(a.state(), ClusterState::Clustered)).await;
    let Some(RedisBackend::Single(redis)) = &cluster.redis else { panic!("one redis-server") };
    assert_eq!(redis.cli(&["HGET", "{suite}:layout", "*"]).trim(), "8", "the first member recorded its value");
    // As if the cluster had been made with 4: b (8) must not join it.
    redis.cli(&["HSET", "{suite}:layout", "*", "4"]);
    cluster.attach("b").await;
    let b = cluster.node("b").clone();
    wait_for("b to give up joining", Duration::from_secs(20), || {
        matches!(b.state(), ClusterState::Standalone { reason: Some(_) } | ClusterState::Faulted { .. })
    })
    .await;
    let said = format!("{:?}", b.state());
    assert!(
        said.contains("partitions = 8 in conf/redis.toml, the cluster under key prefix \\\"suite\\\" uses 4"),
        "{said}"
    );
    assert_eq!(a.members().len(), 1, "b never joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_from_another_member_during_a_gather_are_all_kept() {
    let cluster = TestCluster::clustered_spread(Backend::Redis, &["a", "b"], 8).await;
    let (a, b) = (cluster.node("a").clone(), cluster.node("b").clone());
    let on_a = a.caches().cache::<String, u32>("busy");
    let before: Vec<(String, u32)> = (0..200).map(|i| (format!("old{i}"), i)).collect();
    on_a.put_all(&before).await.unwrap();
    for i in (0..200).step_by(10) {
        on_a.remove(&format!("old{i}")).await.unwrap();
    }
    // b puts all along, on its own layout (spread, until it hears of the gather).
    let writer = tokio::spawn(async move {
        let on_b = b.caches().cache::<String, u32>("busy");
        let mut written = 0u32;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(2500) {
            on_b.put(&format!("new{written}"), &written).await.unwrap();
            written += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        written
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Bounded by entries (far above what it holds): gathered onto one hash.
    let bounds = CacheBounds { max_entries: 100_000, ..CacheBounds::NONE };
    a.bounded_cache::<String, u32>("busy", bounds).await.unwrap();
    let written = writer.await.unwrap();
    wait_until("the gather to end", Duration::from_secs(20), || async {
        let Some(RedisBackend::Single(redis)) = &cluster.redis else { return false };
        redis.cli(&["HLEN", "{suite}:gathering"]).trim() == "0"
    })
    .await;
    let expected = 180 + u64::from(written);
    for node in [&a, cluster.node("b")] {
        let cache = node.caches().cache::<String, u32>("busy");
        assert_eq!(cache.len().await.unwrap(), expected, "every put kept ({written} during the gather)");
        for i in (0..written).step_by(37) {
            assert_eq!(cache.get(&format!("new{i}")).await.unwrap(), Some(i));
        }
        assert_eq!(cache.get(&"old10".into()).await.unwrap(), None, "a removal before the gather stays removed");
        assert_eq!(cache.get(&"old11".into()).await.unwrap(), Some(11));
    }
}
