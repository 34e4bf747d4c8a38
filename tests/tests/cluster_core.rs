//! The cluster-core suite. Its first part is the strategy contract: every
//! rule of `clusterhost::conformance` (the code `clusterhost strategy
//! verify` runs) as one test per strategy (`memory::`, `gossip::`, and the
//! redis plugin on one server, `redis::`, through a Sentinel,
//! `redis_sentinel::`, and on a Redis Cluster, `redis_cluster::`); the
//! single-member rules also against the host's built-in standalone
//! strategy (`standalone::`). Then tests of the host's own behaviour
//! (startup delay and retries, budgets) on the memory strategy's failure
//! injection, and of redis specifics.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterState, Target, TaskFailure};
use clusterhost_tests::cluster::{check, quick_config, same_kind, wait_for, wait_until, Backend, TestCluster};

/// One module per backend, each running the listed tests against it.
/// `alone:` tests need one member and run on every backend, the host's
/// built-in standalone strategy included; `clustered:` tests need several
/// members and run on every backend that clusters.
macro_rules! every_strategy {
    (alone: [$($alone:ident),* $(,)?], clustered: [$($clustered:ident),* $(,)?] $(,)?) => {
        /// The host's built-in standalone strategy (no plugin).
        mod standalone {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $alone() {
                check(Backend::Standalone, stringify!($alone)).await
            })*
        }
        every_strategy!(@clustering memory, Memory, [$($alone,)* $($clustered,)*]);
        every_strategy!(@clustering gossip, Gossip, [$($alone,)* $($clustered,)*]);
        // Against one `redis-server`.
        every_strategy!(@clustering redis, Redis, [$($alone,)* $($clustered,)*]);
        // Against a master and replica found through a Sentinel.
        every_strategy!(@clustering redis_sentinel, RedisSentinel, [$($alone,)* $($clustered,)*]);
        // Against a 3-master Redis Cluster.
        every_strategy!(@clustering redis_cluster, RedisCluster, [$($alone,)* $($clustered,)*]);
    };
    (@clustering $module:ident, $backend:ident, [$($test:ident,)*]) => {
        mod $module {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                check(Backend::$backend, stringify!($test)).await
            })*
        }
    };
}

every_strategy!(
    alone: [alone_caches, alone_tasks, alone_locks, alone_settings, atomic_alone, entry_events_alone, bounded_alone],
    clustered: [
        membership_converges,
        join_events,
        view_empty_while_not_joined,
        stop_emits_no_own_left,
        listener_order,
        member_stops_without_leaving,
        cache_across_members,
        join_and_leave_keep_entries,
        tasks_every_target,
        locks,
        fenced_locks,
        settings_everywhere,
        clustering_switch,
        cancellation,
        atomic_put_if_absent_race,
        atomic_update_counter,
        entry_events_across_members,
        bounded_across_members,
        entry_times,
    ],
);

/// Every conformance rule has its test here (the list above is complete).
#[test]
fn every_conformance_rule_runs_here() {
    let source = include_str!("cluster_core.rs");
    let start = source.find("every_strategy!(\n    alone:").expect("the every_strategy! invocation");
    let list = &source[start..start + source[start..].find(");").expect("its end")];
    for rule in clusterhost::conformance::rules() {
        let test = rule.name.replace('-', "_");
        assert!(
            list.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|word| word == test),
            "rule {} has no test in cluster_core.rs",
            rule.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_without_a_strategy_serves_caches_tasks_and_locks_locally() {
    let cluster = TestCluster::standalone(Backend::Memory, &["solo"], quick_config());
    let solo = cluster.node("solo");
    assert_eq!(solo.state(), ClusterState::Standalone { reason: None });
    assert_eq!(solo.senior_member(), "solo");
    assert!(solo.is_senior());

    let cache = solo.caches().cache::<String, Vec<u32>>("lists");
    cache.put_all(&[("a".into(), vec![1]), ("b".into(), vec![2, 3])]).await.unwrap();
    assert_eq!(cache.get_all(&["a".into(), "zz".into()]).await.unwrap(), vec![Some(vec![1]), None]);
    assert!(cache.contains(&"b".into()).await.unwrap());
    let mut keys = cache.keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, vec!["a", "b"]);
    assert!(cache.remove(&"a".into()).await.unwrap());
    assert_eq!(cache.len().await.unwrap(), 1);
    let stats = solo.caches().stats().await;
    assert_eq!((stats[0].hits, stats[0].misses, stats[0].clustered), (1, 1, false));
    cache.clear().await.unwrap();
    assert!(cache.is_empty().await.unwrap());

    solo.register_task("double", |n: u32| async move { Ok(n * 2) });
    let replies = solo.call_task::<u32, u32>(Target::All, "double", &21).await.unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].member.as_str(), replies[0].outcome.clone()), ("solo", Ok(42)));
    let replies = solo.call_task::<u32, u32>(Target::Others, "double", &1).await.unwrap();
    assert!(replies.is_empty());
    let replies = solo.call_task::<u32, u32>(Target::Member("other".into()), "double", &1).await.unwrap();
    assert!(matches!(&replies[0].outcome, Err(TaskFailure::Error(e)) if e.contains("standalone")));

    let lock = solo.lock("l").await.unwrap();
    assert!(solo.try_lock("l", Duration::from_millis(50)).await.unwrap().is_none());
    assert!(lock.unlock().await.unwrap());
    assert!(solo.try_lock("l", Duration::from_millis(50)).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_delay_and_retries_then_standalone_with_the_reason() {
    let mut config = quick_config();
    config.startup_delay = Duration::from_millis(300);
    config.retry_count = 2;
    config.retry_interval = Duration::from_millis(200);
    let mut cluster = TestCluster::standalone(Backend::Memory, &["a", "b"], config);
    let attempts_a = Arc::new(Mutex::new(Vec::new()));
    let log = attempts_a.clone();
    let attached_at = Instant::now();
    // a fails twice, then joins on its third attempt.
    cluster
        .attach_with("a", move |s| {
            s.fail_first_starts(2).on_start_attempt(move |n| log.lock().unwrap().push((n, Instant::now())))
        })
        .await;
    let a = cluster.node("a").clone();
    assert!(matches!(a.state(), ClusterState::Starting { attempt: 1, attempts: 3, .. }), "{:?}", a.state());
    wait_for("a clustered", Duration::from_secs(10), || same_kind(&a.state(), &ClusterState::Clustered)).await;
    let attempts = attempts_a.lock().unwrap().clone();
    assert_eq!(attempts.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(attempts[0].1 - attached_at >= Duration::from_millis(300), "the first attempt waited for the delay");
    for pair in attempts.windows(2) {
        assert!(pair[1].1 - pair[0].1 >= Duration::from_millis(200), "retries are spaced by retry seconds");
    }

    // b fails every attempt: after 1 + 2 retries it runs standalone, saying why.
    cluster.attach_with("b", |s| s.fail_first_starts(100)).await;
    let b = cluster.node("b").clone();
    wait_for(
        "b to give up",
        Duration::from_secs(10),
        || matches!(b.state(), ClusterState::Standalone { reason: Some(ref r) } if r.contains("after 3 attempt")),
    )
    .await;
    let ClusterState::Standalone { reason: Some(reason) } = b.state() else { unreachable!() };
    assert!(reason.contains("simulated cluster start failure (attempt 3)"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_the_strategy_away_cancels_a_cluster_start_in_progress() {
    let mut config = quick_config();
    config.max_execution = Duration::from_secs(120);
    let mut cluster = TestCluster::standalone(Backend::Memory, &["a"], config);
    let mut attempts = None;
    cluster
        .attach_with("a", |s| {
            attempts = Some(s.attempts());
            s.hang_in_start()
        })
        .await;
    let attempts = attempts.expect("the memory strategy was made");
    let a = cluster.node("a").clone();
    wait_for("the start attempt to begin", Duration::from_secs(10), || {
        matches!(a.state(), ClusterState::Starting { .. }) && attempts.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    // A hot upgrade or removal must not wait out the 120 s budget.
    tokio::time::timeout(Duration::from_secs(30), cluster.detach("a"))
        .await
        .expect("detach returned while the start was still hanging");
    assert!(same_kind(&a.state(), &ClusterState::Standalone { reason: None }), "{:?}", a.state());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_that_hangs_in_start_is_faulted_after_the_budget() {
    let mut cluster = TestCluster::standalone(Backend::Memory, &["a"], quick_config());
    cluster.attach_with("a", |s| s.hang_in_start()).await;
    let a = cluster.node("a").clone();
    wait_for("a faulted", Duration::from_secs(10), || {
        same_kind(&a.state(), &ClusterState::Faulted { reason: String::new() })
    })
    .await;
    let ClusterState::Faulted { reason } = a.state() else { unreachable!() };
    assert!(reason.contains("did not finish start_clustering within 2s"), "{reason}");
    // The node goes on, standalone.
    a.caches().cache::<u8, u8>("c").put(&1, &1).await.unwrap();
    assert_eq!(a.caches().cache::<u8, u8>("c").get(&1).await.unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_failover_moves_every_member_to_the_new_master() {
    let cluster = TestCluster::clustered(Backend::RedisSentinel, &["a", "b"]).await;
    let Some(clusterhost_tests::cluster::RedisBackend::Sentinel(redis)) = &cluster.redis else {
        panic!("a sentinel backend")
    };
    let (a, b) = (cluster.node("a").clone(), cluster.node("b").clone());
    let users_a = a.caches().cache::<u32, String>("users");
    for i in 0..20 {
        users_a.put(&i, &format!("u{i}")).await.unwrap();
    }
    // Replication is asynchronous: fail over only once the replica has it all.
    let replica_has_all = || redis.replica.cli(&["HLEN", "suite:cache:users"]).trim() == "20";
    wait_for("the replica to have every entry", Duration::from_secs(10), replica_has_all).await;
    let old = redis.master_port();
    let out = redis.sentinel.cli(&["SENTINEL", "FAILOVER", "mymaster"]);
    assert!(out.contains("OK"), "SENTINEL FAILOVER: {out}");
    wait_for("Sentinel to name the replica master", Duration::from_secs(20), || {
        redis.master_port() == Some(redis.replica.port)
    })
    .await;
    assert_ne!(old, redis.master_port());
    // Until Sentinel turns the old master into a replica it still takes
    // writes, which it then drops when it syncs from the new master: Redis
    // replication is asynchronous (docs/redis.md says so). From then on its
    // READONLY answers send every member to the new master.
    wait_for("the old master to be a replica", Duration::from_secs(20), || {
        redis.master.cli(&["INFO", "replication"]).contains("role:slave")
    })
    .await;
    // Writes reach the new master from both members (they follow Sentinel).
    let users_b = b.caches().cache::<u32, String>("users");
    wait_until("a write on b after the failover", Duration::from_secs(30), || async {
        users_b.put(&100, &"after".to_string()).await.is_ok()
    })
    .await;
    wait_until("a write on a after the failover", Duration::from_secs(30), || async {
        users_a.put(&101, &"after too".to_string()).await.is_ok()
    })
    .await;
    cluster.wait_all(ClusterState::Clustered).await;
    cluster.wait_members(2).await;
    for i in 0..20 {
        assert_eq!(users_b.get(&i).await.unwrap(), Some(format!("u{i}")), "entry {i} survived the failover");
    }
    assert_eq!(users_b.get(&101).await.unwrap().as_deref(), Some("after too"));
    assert_eq!(users_a.get(&100).await.unwrap().as_deref(), Some("after"));
    assert_eq!(redis.replica.cli(&["HLEN", "suite:cache:users"]).trim(), "22", "the writes are on the new master");
}

fn single(cluster: &TestCluster) -> &clusterhost_tests::redis::RedisServer {
    match &cluster.redis {
        Some(clusterhost_tests::cluster::RedisBackend::Single(server)) => server,
        _ => panic!("a single-server backend"),
    }
}

/// The lock's value in Redis: "member\nowner\nfence".
fn redis_lock(server: &clusterhost_tests::redis::RedisServer, name: &str) -> Option<(String, u64)> {
    let raw = server.cli(&["GET", &format!("suite:lock:{{{name}}}")]);
    let lines: Vec<&str> = raw.trim_end().lines().collect();
    match lines.as_slice() {
        [member, _owner, fence] => Some((member.to_string(), fence.parse().ok()?)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_locks_carry_growing_fencing_numbers_and_release_only_their_own() {
    let mut cluster = TestCluster::clustered(Backend::Redis, &["a", "b"]).await;
    let (a, b) = (cluster.node("a").clone(), cluster.node("b").clone());
    let held = a.lock("orders").await.unwrap();
    let (holder, first) = redis_lock(single(&cluster), "orders").expect("the lock is in Redis");
    assert_eq!(holder, "a");
    assert!(held.unlock().await.unwrap());
    assert_eq!(redis_lock(single(&cluster), "orders"), None, "released");
    let held = b.lock("orders").await.unwrap();
    let (holder, second) = redis_lock(single(&cluster), "orders").expect("the lock is in Redis");
    assert_eq!(holder, "b");
    assert!(second > first, "fencing numbers grow: {first} then {second}");

    // Safe release: once the lock is someone else's (here: written over, as
    // after an expired lease), the old owner's release leaves it alone.
    single(&cluster).cli(&["SET", "suite:lock:{orders}", "intruder\nx\n1"]);
    assert!(!held.unlock().await.unwrap(), "b no longer holds it");
    assert_eq!(redis_lock(single(&cluster), "orders").map(|l| l.0).as_deref(), Some("intruder"));
    single(&cluster).cli(&["DEL", "suite:lock:{orders}"]);

    // A restart without persistence loses the counter, not the order.
    match &mut cluster.redis {
        Some(clusterhost_tests::cluster::RedisBackend::Single(server)) => server.restart(),
        _ => unreachable!(),
    }
    wait_until("a write after the restart", Duration::from_secs(30), || async {
        a.caches().cache::<u8, u8>("c").put(&1, &1).await.is_ok()
    })
    .await;
    let _again = a.lock("orders").await.unwrap();
    let (_, third) = redis_lock(single(&cluster), "orders").expect("the lock is in Redis");
    assert!(third > second, "fencing numbers still grow after a restart that lost the counter: {second} then {third}");
}

/// Issue 14, finding 14: a lock held while its strategy plugin stops (the
/// plugin is removed) is released afterwards without a panic in the
/// plugin: the stopped plugin's runtime is never polled, the release
/// answers that the strategy has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_released_after_its_strategy_plugin_stopped_answers_without_a_panic() {
    for backend in [Backend::Redis, Backend::Gossip] {
        let mut cluster = TestCluster::clustered(backend, &["a"]).await;
        let a = cluster.node("a").clone();
        let held = a.lock("orders").await.unwrap();
        cluster.detach("a").await;
        let answer = held.unlock().await;
        let message = match &answer {
            Ok(released) => format!("Ok({released})"),
            Err(e) => e.to_string(),
        };
        assert!(!message.contains("panic"), "{message}");
        assert!(
            matches!(answer, Ok(false)) || message.contains("has stopped"),
            "the release says the strategy stopped (or that the lock was already released): {message}"
        );
    }
}

/// The next entry event of `listener` as "kind key by origin", within 10 s.
async fn next_entry(listener: &mut clusterhost::cluster::EntryListener) -> String {
    use clusterhost::cluster::Delivery;
    match tokio::time::timeout(Duration::from_secs(10), listener.recv()).await {
        Ok(Some(Delivery::Event(e))) => {
            format!("{} {} by {}", e.kind.name(), String::from_utf8_lossy(&e.key), e.origin)
        }
        other => panic!("expected an entry event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_listeners_stay_registered_across_a_strategy_replacement_and_standalone_clustered_switches() {
    use clusterhost::cluster::ListenOptions;
    let mut cluster = TestCluster::clustered(Backend::Memory, &["a", "b"]).await;
    let on_b = cluster.node("b").caches().raw("c");
    let mut listener = on_b.listen(ListenOptions::clustered()).await.expect("a clustered listener on b");
    let a = cluster.node("a").caches().raw("c");
    a.put(b"k1".to_vec(), b"1".to_vec()).await.unwrap();
    assert_eq!(next_entry(&mut listener).await, "added k1 by a");

    // b's strategy replaced by a new instance (a hot replacement: the old
    // one out of service, then the new one in).
    cluster.detach("b").await;
    cluster.attach("b").await;
    cluster.wait_all(ClusterState::Clustered).await;
    cluster.wait_members(2).await;
    a.put(b"k2".to_vec(), b"2".to_vec()).await.unwrap();
    assert_eq!(next_entry(&mut listener).await, "added k2 by a", "b's leave and rejoin moved entries: no event");

    // Standalone: b's own changes.
    cluster.node("a").set_enabled(false).await.unwrap();
    cluster.wait_all(ClusterState::Standalone { reason: None }).await;
    on_b.put(b"k3".to_vec(), b"3".to_vec()).await.unwrap();
    assert_eq!(next_entry(&mut listener).await, "added k3 by b");

    // Clustered again: b's standalone k3 merged into the cluster is a move here.
    cluster.node("b").set_enabled(true).await.unwrap();
    cluster.wait_all(ClusterState::Clustered).await;
    cluster.wait_members(2).await;
    a.put(b"k4".to_vec(), b"4".to_vec()).await.unwrap();
    assert_eq!(next_entry(&mut listener).await, "added k4 by a");
    assert!(listener.try_recv().is_none(), "nothing more");
}
