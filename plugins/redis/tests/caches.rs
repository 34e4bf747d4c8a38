//! The redis strategy's caches as Redis holds them: entry events
//! published only while some member listens (and none missed after a
//! listener is registered), bounded caches kept by scripts (order of use
//! with reads, max idle, max bytes, the books in Redis, the senior's
//! sweep carried on by the next senior). In-process nodes loading the
//! real plugin against one `redis-server` started for the test.

use std::time::Duration;

use clusterhost::cluster::{ClusterConfig, ClusterState, Delivery, EntryEventKind, EntryListener, ListenOptions};
use clusterhost_plugin_api::cluster::CacheBounds;
use clusterhost_tests::cluster::{quick_config, wait_until, Backend, RedisBackend, TestCluster};
use clusterhost_tests::redis::RedisServer;

/// The server of a single-server cluster.
fn server(cluster: &TestCluster) -> &RedisServer {
    match &cluster.redis {
        Some(RedisBackend::Single(server)) => server,
        _ => panic!("a single redis-server"),
    }
}

/// How many PUBLISH commands the server ran since `CONFIG RESETSTAT`
/// (those run by scripts included).
fn publishes(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_publish:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.trim().parse().ok())
        .unwrap_or(0)
}

/// The next entry event of `listener` within 10 s, as "kind key by origin".
async fn next(listener: &mut EntryListener) -> String {
    match tokio::time::timeout(Duration::from_secs(10), listener.recv()).await {
        Ok(Some(Delivery::Event(e))) => {
            format!("{} {} by {}", e.kind.name(), String::from_utf8_lossy(&e.key), e.origin)
        }
        other => panic!("expected an entry event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_published_only_while_someone_listens_and_none_is_missed_once_listen_returns() {
    let cluster = TestCluster::clustered(Backend::Redis, &["a", "b"]).await;
    let redis = server(&cluster);
    let on_a = cluster.node("a").caches().raw("quiet");
    // Nobody listens: writes publish nothing, and nobody subscribes to the entries channel.
    redis.cli(&["CONFIG", "RESETSTAT"]);
    for i in 0..20u8 {
        on_a.put(vec![i], vec![i]).await.unwrap();
    }
    assert_eq!(publishes(redis), 0, "a cache no one listens to publishes nothing");
    assert_eq!(redis.cli(&["PUBSUB", "NUMSUB", "suite:entries"]).lines().nth(1).map(str::trim), Some("0"));

    // A listener on b: every change a makes after listen() returns reaches
    // it, in order, with no wait in between.
    let mut listener = cluster.node("b").caches().raw("quiet").listen(ListenOptions::clustered()).await.unwrap();
    for i in 0..50u8 {
        on_a.put(vec![b'k', i], vec![i]).await.unwrap();
    }
    for i in 0..50u8 {
        assert_eq!(next(&mut listener).await, format!("added k{} by a", String::from_utf8_lossy(&[i])));
    }
    assert_eq!(redis.cli(&["HKEYS", "{suite:cache:quiet}:listeners"]).trim(), "b", "b's interest is in Redis");

    // Dropped: b withdraws within a heartbeat or two, and writes publish nothing again.
    drop(listener);
    wait_until("b to withdraw its interest in the cache", Duration::from_secs(10), || async {
        redis.cli(&["EXISTS", "{suite:cache:quiet}:listeners"]).trim() == "0"
    })
    .await;
    wait_until("b to unsubscribe from the entries channel", Duration::from_secs(10), || async {
        redis.cli(&["PUBSUB", "NUMSUB", "suite:entries"]).lines().nth(1).map(str::trim) == Some("0")
    })
    .await;
    redis.cli(&["CONFIG", "RESETSTAT"]);
    on_a.put(b"after".to_vec(), b"1".to_vec()).await.unwrap();
    assert_eq!(publishes(redis), 0, "no listener left: nothing published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_stays_announced_across_a_replacement_of_its_members_strategy() {
    // A startup delay of 1 s: the new instance beats (every 250 ms) between
    // its attach and its join, asking the host whether the cache is still
    // listened; the host must say yes before it serves (it said no once,
    // and the instance dropped the listener it had been told of).
    let config = ClusterConfig { startup_delay: Duration::from_secs(1), ..quick_config() };
    let mut cluster = TestCluster::standalone(Backend::Redis, &["a", "b"], config);
    for name in ["a", "b"] {
        cluster.attach(name).await;
    }
    cluster.wait_all(ClusterState::Clustered).await;
    cluster.wait_members(2).await;
    let mut listener = cluster.node("b").caches().raw("c").listen(ListenOptions::clustered()).await.unwrap();
    let on_a = cluster.node("a").caches().raw("c");
    on_a.put(b"k1".to_vec(), b"1".to_vec()).await.unwrap();
    assert_eq!(next(&mut listener).await, "added k1 by a");

    // b's strategy replaced by a new instance: the host tells it of the
    // listener again when it attaches, and it announces it at its join.
    cluster.detach("b").await;
    cluster.attach("b").await;
    cluster.wait_all(ClusterState::Clustered).await;
    cluster.wait_members(2).await;
    on_a.put(b"k2".to_vec(), b"2".to_vec()).await.unwrap();
    assert_eq!(next(&mut listener).await, "added k2 by a");
    assert!(listener.try_recv().is_none(), "nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_put_on_a_cache_another_member_just_bounded_keeps_the_books() {
    let cluster = TestCluster::clustered(Backend::Redis, &["a"]).await;
    let redis = server(&cluster);
    let on_a = cluster.node("a").caches().raw("late");
    // No books: a plain put is the lean PUT script, which writes no index.
    on_a.put(b"x".to_vec(), b"1".to_vec()).await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", "{suite:cache:late}:used"]).trim(), "0");
    // Books started in Redis by another member whose announcement has
    // not reached a: a's next put finds them and keeps them.
    redis.cli(&[
        "HSET",
        "{suite:cache:late}:meta",
        "entries",
        "0",
        "bytes",
        "0",
        "ttl",
        "0",
        "idle",
        "0",
        "size",
        "3",
        "last",
        "0",
    ]);
    on_a.put(b"y".to_vec(), b"2".to_vec()).await.unwrap();
    assert_ne!(redis.cli(&["ZSCORE", "{suite:cache:late}:used", "y"]).trim(), "", "y's use is in the books");
    assert_eq!(redis.cli(&["HGET", "{suite:cache:late}:meta", "size"]).trim(), "5", "and its size");
    assert_eq!(on_a.get(b"y").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(on_a.get(b"x").await.unwrap(), Some(b"1".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_keep_the_order_of_use_idle_entries_expire_and_bytes_are_bounded() {
    let cluster = TestCluster::clustered(Backend::Redis, &["a", "b"]).await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let redis = server(&cluster);

    // Two entries at most: a read makes "x" the most recently used, so "y" goes.
    let bounds = CacheBounds { max_entries: 2, ..CacheBounds::NONE };
    let lru = a.bounded_cache::<String, u32>("lru", bounds).await.unwrap();
    b.bounded_cache::<String, u32>("lru", bounds).await.unwrap();
    lru.put(&"x".into(), &1).await.unwrap();
    lru.put(&"y".into(), &2).await.unwrap();
    let on_b = b.caches().cache::<String, u32>("lru");
    assert_eq!(on_b.get(&"x".into()).await.unwrap(), Some(1), "b reads x");
    lru.put(&"z".into(), &3).await.unwrap();
    let mut keys = lru.keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, ["x", "z"], "the entry read last stays, the one not read goes");
    assert_eq!(redis.cli(&["HGET", "{suite:cache:lru}:meta", "entries"]).trim(), "2", "the bound is in Redis");

    // Max idle: the entry read keeps living, the other expires.
    let idle = a.bounded_cache::<String, u32>("idle", CacheBounds { max_idle_ms: 600, ..CacheBounds::NONE }).await;
    let idle = idle.unwrap();
    idle.put(&"read".into(), &1).await.unwrap();
    idle.put(&"left".into(), &2).await.unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(idle.get(&"read".into()).await.unwrap(), Some(1), "an entry read every 100 ms never idles");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        idle.get(&"left".into()).await.unwrap(),
        None,
        "an entry left alone for 1.5 s expired (max idle 600 ms)"
    );

    // Max bytes (keys plus values as the host encodes them): the oldest go.
    let bytes = a.bounded_cache::<String, String>("bytes", CacheBounds { max_bytes: 100, ..CacheBounds::NONE });
    let bytes = bytes.await.unwrap();
    for i in 0..10 {
        bytes.put(&format!("k{i}"), &"v".repeat(20)).await.unwrap();
    }
    let size: u64 = redis.cli(&["HGET", "{suite:cache:bytes}:meta", "size"]).trim().parse().unwrap();
    assert!(size <= 100, "{size} bytes held in a cache bounded at 100");
    assert!(bytes.get(&"k9".into()).await.unwrap().is_some(), "the last write stays");
    assert_eq!(bytes.get(&"k0".into()).await.unwrap(), None, "the first write went");

    // Unbounded again: the books go, the entries stay.
    let (evictions, _) = counters(a);
    assert!(evictions >= 1, "a's evictions counted: {evictions}");
    a.bounded_cache::<String, u32>("lru", CacheBounds::NONE).await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", "{suite:cache:lru}:meta", "{suite:cache:lru}:used"]).trim(), "0");
    assert_eq!(redis.cli(&["HLEN", "suite:cache:lru"]).trim(), "2");
}

/// The strategy's cache_evictions and cache_expiries on `node`.
fn counters(node: &clusterhost::cluster::ClusterManager) -> (u64, u64) {
    let stats = node.strategy_stats();
    let find = |name: &str| stats.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
    (find("cache_evictions"), find("cache_expiries"))
}

/// The next `expired` event of `listener` (others skipped), within 5 s.
async fn next_expiry(listener: &mut EntryListener) -> clusterhost::cluster::EntryEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), listener.recv()).await {
            Ok(Some(Delivery::Event(e))) if e.kind == EntryEventKind::Expired => return e,
            Ok(Some(_)) => {}
            other => panic!("expected an expiry, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_are_swept_by_the_senior_and_by_the_next_one_when_it_leaves() {
    let mut cluster = TestCluster::clustered(Backend::Redis, &["a", "b"]).await;
    let bounds = CacheBounds { ttl_ms: 400, ..CacheBounds::NONE };
    for name in ["a", "b"] {
        cluster.node(name).bounded_cache::<String, u32>("timed", bounds).await.unwrap();
    }
    assert_eq!(cluster.node("b").senior_member(), "a");
    let mut listener = cluster.node("b").caches().raw("timed").listen(ListenOptions::clustered()).await.unwrap();
    let timed = cluster.node("b").caches().raw("timed");
    timed.put(b"first".to_vec(), b"1".to_vec()).await.unwrap();
    // Nobody reads it: the senior (a) sweeps it and says so.
    assert_eq!(next(&mut listener).await, "added first by b");
    let expired = next_expiry(&mut listener).await;
    assert_eq!(expired.origin, "a", "the senior swept it");
    assert_eq!(server(&cluster).cli(&["HLEN", "suite:cache:timed"]).trim(), "0");

    // a leaves: b is the senior and sweeps from then on.
    cluster.detach("a").await;
    wait_until("b to be the senior", Duration::from_secs(10), || async { cluster.node("b").is_senior() }).await;
    timed.put(b"second".to_vec(), b"2".to_vec()).await.unwrap();
    let expired = next_expiry(&mut listener).await;
    assert_eq!(expired.origin, "b", "the new senior swept it");
    // The script publishes the event before its reply reaches b, which counts on the reply.
    wait_until("b to count its expiry", Duration::from_secs(5), || async { counters(cluster.node("b")).1 >= 1 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_a_cache_whose_keys_cannot_share_its_slot_is_refused_bounds_and_still_tells_its_changes() {
    let cluster = TestCluster::clustered(Backend::RedisCluster, &["a", "b"]).await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let bounds = CacheBounds { max_entries: 2, ..CacheBounds::NONE };
    let refused = a.bounded_cache::<String, u32>("odd}name", bounds).await.map(|_| ()).expect_err("refused");
    let said = refused.to_string();
    assert!(said.contains("cache odd}name cannot keep bounds on Redis Cluster"), "{said}");
    let own_ttl = a.caches().cache::<String, u32>("odd}name").put_ttl(&"k".into(), &1, Duration::from_secs(5)).await;
    assert!(own_ttl.expect_err("refused").to_string().contains("a time to live of its own"));
    // Its changes are published whoever listens (no key to announce in).
    let mut listener = b.caches().raw("odd}name").listen(ListenOptions::clustered()).await.unwrap();
    a.caches().raw("odd}name").put(b"k".to_vec(), b"1".to_vec()).await.unwrap();
    assert_eq!(next(&mut listener).await, "added k by a");
    // A well-named cache next to it is bounded as usual.
    let fine = a.bounded_cache::<String, u32>("fine", bounds).await.unwrap();
    for i in 0..5 {
        fine.put(&format!("k{i}"), &i).await.unwrap();
    }
    assert_eq!(fine.len().await.unwrap(), 2);
}
