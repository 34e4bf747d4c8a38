//! Near cache (`[near_cache]` in conf/redis.toml, docs/redis.md "Near
//! cache"): a member keeps copies of the entries it reads and Redis's
//! client tracking invalidates them. A value read on B and updated on A is
//! never stale on B once the invalidation arrived; B reads its own writes
//! at once; B's reads never go back in time; when B's tracking connection
//! is killed its copies are gone until it reconnects; the cache rules of
//! the strategy contract hold with every cache near-cached. In-process
//! nodes loading the real plugin against redis-servers started for the test.

use std::time::Duration;

use clusterhost::cluster::{ClusterManager, ClusterState};
use clusterhost_tests::cluster::{check_configured, wait_for, wait_until, Backend, RedisBackend, TestCluster};

const NEAR_ROUTES: &str = "[near_cache]\ncaches = [\"routes\"]\n";
const NEAR_EVERY: &str = "[near_cache]\ncaches = [\"*\"]\n";

/// The strategy counter `name` on `node` (0 when absent).
fn stat(node: &ClusterManager, name: &str) -> u64 {
    node.strategy_stats().iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
}

async fn wait_connected(node: &ClusterManager) {
    wait_for("the near cache's tracking connection", Duration::from_secs(10), || {
        stat(node, "near_cache_connected") == 1
    })
    .await;
}

/// Rounds of: B reads (a copy), A writes, B's invalidation arrives, B reads
/// the new value at once and again from its copy.
async fn read_update_rounds(cluster: &TestCluster, rounds: u32, keys: u32) {
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    wait_connected(b).await;
    let on_a = a.caches().cache::<String, u32>("routes");
    let on_b = b.caches().cache::<String, u32>("routes");
    for k in 0..keys {
        on_a.put(&format!("k{k}"), &0).await.unwrap();
    }
    let hits_before = stat(b, "near_cache_hits");
    for round in 1..=rounds {
        let key = format!("k{}", round % keys);
        // B holds a copy (its read is tracked): a second read hits it.
        let seen = on_b.get(&key).await.unwrap();
        assert_eq!(on_b.get(&key).await.unwrap(), seen);
        let invalidations = stat(b, "near_cache_invalidations");
        on_a.put(&key, &round).await.unwrap();
        wait_for("B's invalidation", Duration::from_secs(10), || stat(b, "near_cache_invalidations") > invalidations)
            .await;
        assert_eq!(on_b.get(&key).await.unwrap(), Some(round), "round {round}: B stale after its invalidation");
        assert_eq!(on_b.get(&key).await.unwrap(), Some(round), "round {round}: B's copy");
        // B's own write: read back at once, on B and (after its invalidation) on A.
        on_b.put(&key, &(round + 1_000_000)).await.unwrap();
        assert_eq!(on_b.get(&key).await.unwrap(), Some(round + 1_000_000), "round {round}: B's own write");
    }
    let hits = stat(b, "near_cache_hits") - hits_before;
    assert!(hits >= u64::from(rounds), "B answered from its copies ({hits} hits in {rounds} rounds)");
    eprintln!("{rounds} rounds: {hits} near-cache hits on b, stats {:?}", b.strategy_stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_read_on_b_and_updated_on_a_is_never_stale_on_b_once_the_invalidation_arrived() {
    let cluster = TestCluster::clustered_configured(Backend::Redis, &["a", "b"], 1, NEAR_ROUTES).await;
    read_update_rounds(&cluster, 300, 7).await;

    // A cache not named is not copied.
    let b = cluster.node("b");
    let misses = stat(b, "near_cache_misses");
    let other = b.caches().cache::<String, u32>("other");
    other.put(&"x".into(), &1).await.unwrap();
    assert_eq!(other.get(&"x".into()).await.unwrap(), Some(1));
    assert_eq!(stat(b, "near_cache_misses"), misses, "\"other\" is read from Redis, not looked up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_writer_loop_b_never_reads_back_in_time_and_ends_on_the_last_value() {
    let cluster = TestCluster::clustered_configured(Backend::Redis, &["a", "b"], 1, NEAR_ROUTES).await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    wait_connected(b).await;
    let on_a = a.caches().cache::<String, u32>("routes");
    let on_b = b.caches().cache::<String, u32>("routes");
    on_a.put(&"n".into(), &0).await.unwrap();
    const LAST: u32 = 3_000;
    let writer = tokio::spawn(async move {
        for i in 1..=LAST {
            on_a.put(&"n".into(), &i).await.unwrap();
        }
    });
    let (mut last, mut reads) = (0, 0u64);
    while !writer.is_finished() {
        let now = on_b.get(&"n".into()).await.unwrap().expect("n is there");
        assert!(now >= last, "B read {now} after {last}: back in time");
        last = now;
        reads += 1;
    }
    writer.await.unwrap();
    wait_until("B sees the last write", Duration::from_secs(10), || async {
        on_b.get(&"n".into()).await.unwrap() == Some(LAST)
    })
    .await;
    let hits = stat(b, "near_cache_hits");
    assert!(hits > 0, "some of B's {reads} reads were answered from its copy");
    eprintln!("{reads} reads on b during {LAST} writes on a, {hits} near-cache hits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_tracking_connection_is_killed_b_holds_no_copy_until_it_reconnects() {
    let cluster = TestCluster::clustered_configured(Backend::Redis, &["a", "b"], 1, NEAR_ROUTES).await;
    let Some(RedisBackend::Single(redis)) = &cluster.redis else { panic!("one redis-server") };
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    wait_connected(b).await;
    let on_a = a.caches().cache::<String, u32>("routes");
    let on_b = b.caches().cache::<String, u32>("routes");
    // Written first: a write to the cache's hash drops B's copies of it.
    for k in 0..20 {
        on_a.put(&format!("k{k}"), &k).await.unwrap();
    }
    for k in 0..20 {
        assert_eq!(on_b.get(&format!("k{k}")).await.unwrap(), Some(k));
    }
    assert_eq!(stat(b, "near_cache_entries"), 20, "B copied what it read");

    // Its tracking connection (named in CLIENT LIST), and only it.
    let list = redis.cli(&["CLIENT", "LIST"]);
    let id = list
        .lines()
        .find(|l| l.contains("name=clusterhost-near-b "))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("b's tracking connection in CLIENT LIST:\n{list}"))
        .to_string();
    let drops = stat(b, "near_cache_drops");
    assert_eq!(redis.cli(&["CLIENT", "KILL", "ID", &id]).trim(), "1");
    wait_for("b's copies dropped", Duration::from_secs(10), || stat(b, "near_cache_drops") > drops).await;
    assert_eq!(stat(b, "near_cache_entries"), 0, "no copy once the connection is gone");

    // Meanwhile A writes; B reads from Redis, and keeps no copy until reconnected.
    on_a.put(&"k3".into(), &333).await.unwrap();
    assert_eq!(on_b.get(&"k3".into()).await.unwrap(), Some(333));
    if stat(b, "near_cache_connected") == 0 {
        assert_eq!(stat(b, "near_cache_entries"), 0, "no copy while disconnected");
    }
    assert_eq!(b.state(), ClusterState::Clustered, "the member itself stays in the cluster");

    // Reconnected: copies again, invalidated again.
    wait_connected(b).await;
    assert_eq!(on_b.get(&"k3".into()).await.unwrap(), Some(333));
    let hits = stat(b, "near_cache_hits");
    assert_eq!(on_b.get(&"k3".into()).await.unwrap(), Some(333));
    assert_eq!(stat(b, "near_cache_hits"), hits + 1, "a copy again after the reconnect");
    let invalidations = stat(b, "near_cache_invalidations");
    on_a.put(&"k3".into(), &334).await.unwrap();
    wait_for("the invalidation on the new connection", Duration::from_secs(10), || {
        stat(b, "near_cache_invalidations") > invalidations
    })
    .await;
    assert_eq!(on_b.get(&"k3".into()).await.unwrap(), Some(334));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_copies_of_spread_caches_are_read_and_invalidated_on_every_master() {
    let near = "[near_cache]\ncaches = [\"routes\"]\nmax_entries = 1000\n";
    let cluster = TestCluster::clustered_configured(Backend::RedisCluster, &["a", "b"], 8, near).await;
    read_update_rounds(&cluster, 60, 16).await;
    let Some(RedisBackend::Cluster(redis)) = &cluster.redis else { panic!("a Redis Cluster") };
    // B tracks on every master (its partitions spread over all three).
    for node in &redis.nodes {
        let list = node.cli(&["CLIENT", "LIST"]);
        assert!(list.contains("name=clusterhost-near-b "), "b's tracking connection on :{}:\n{list}", node.port);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_sentinel_copies_are_read_and_invalidated_on_the_master_sentinel_names() {
    let cluster = TestCluster::clustered_configured(Backend::RedisSentinel, &["a", "b"], 1, NEAR_ROUTES).await;
    read_update_rounds(&cluster, 60, 7).await;
    let Some(RedisBackend::Sentinel(redis)) = &cluster.redis else { panic!("Redis under Sentinel") };
    let list = redis.master.cli(&["CLIENT", "LIST"]);
    assert!(list.contains("name=clusterhost-near-b "), "b's tracking connection on the master:\n{list}");
}

/// The strategy contract's cache rules with every cache near-cached (one redis-server).
mod contract_with_every_cache_near {
    use super::*;

    macro_rules! rules {
        ($($rule:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() {
                check_configured(Backend::Redis, stringify!($rule), 4, NEAR_EVERY).await
            }
        )*};
    }

    rules!(alone_caches, atomic_alone, cache_across_members, atomic_update_counter, atomic_put_if_absent_race);
}
