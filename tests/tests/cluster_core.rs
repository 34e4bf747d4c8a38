//! The cluster-core suite: event order, caches across join and leave,
//! tasks, locks and the cluster-wide switch, on in-process nodes whose
//! strategies cross the real plugin boundary. The same tests run against
//! every strategy (`memory::`, `gossip::`, and the redis plugin on one
//! server, `redis::`, through a Sentinel, `redis_sentinel::`, and on a Redis
//! Cluster, `redis_cluster::`, below); the single-member ones also against
//! the host's built-in standalone strategy (`standalone::`). The ones about
//! startup failures use the memory strategy's failure injection.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterEvent, ClusterState, Target, TaskFailure};
use clusterhost_tests::cluster::{quick_config, same_kind, wait_for, wait_until, Backend, TestCluster};

type Log = Arc<Mutex<Vec<String>>>;

fn recorder(log: &Log, tag: &'static str) -> impl Fn(&ClusterEvent) -> Result<(), String> + Send + Sync + 'static {
    let log = log.clone();
    move |event| {
        log.lock().unwrap().push(format!("{tag}: {}", describe(event)));
        Ok(())
    }
}

fn describe(event: &ClusterEvent) -> String {
    match event {
        ClusterEvent::JoinedCluster { member, local } => {
            format!("joined {member}{}", if *local { " (local)" } else { "" })
        }
        ClusterEvent::LeftCluster { member, local } => format!("left {member}{}", if *local { " (local)" } else { "" }),
        ClusterEvent::MarkedSeniorClusterMember { member, local } => {
            format!("senior {member}{}", if *local { " (local)" } else { "" })
        }
        ClusterEvent::SettingChanged { key, .. } => format!("setting {key}"),
    }
}

fn lines(log: &Log, tag: &str) -> Vec<String> {
    let prefix = format!("{tag}: ");
    log.lock().unwrap().iter().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
}

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
                super::$alone(Backend::Standalone).await
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
                super::$test(Backend::$backend).await
            })*
        }
    };
}

every_strategy!(
    alone: [
        a_member_alone_serves_every_cache_operation,
        a_member_alone_runs_every_task_target_itself,
        a_member_alone_grants_a_lock_to_one_owner_at_a_time,
        a_member_alone_keeps_and_announces_its_settings,
    ],
    clustered: [
        events_cache_factory_first_then_listeners_in_order_failures_isolated,
        join_and_leave_lose_no_entry,
        a_synchronous_task_returns_one_answer_per_member_even_when_one_hangs,
        disabling_and_enabling_on_one_node_changes_every_node,
        locks_exclude_across_members_and_die_with_their_holder,
        cluster_wide_settings_reach_every_member,
    ],
);

async fn a_member_alone_serves_every_cache_operation(backend: Backend) {
    let cluster = TestCluster::alone(backend, "solo").await;
    let solo = cluster.node("solo");
    let cache = solo.caches().cache::<String, Vec<u32>>("alone");
    assert!(cache.is_empty().await.unwrap());
    assert_eq!(cache.get(&"a".into()).await.unwrap(), None);
    cache.put(&"a".into(), &vec![1]).await.unwrap();
    cache.put(&"a".into(), &vec![1, 1]).await.unwrap();
    cache.put_all(&[("b".into(), vec![2]), ("c".into(), vec![3, 3])]).await.unwrap();
    assert_eq!(cache.get(&"a".into()).await.unwrap(), Some(vec![1, 1]), "a later put replaces the value");
    assert_eq!(
        cache.get_all(&["c".into(), "zz".into(), "b".into()]).await.unwrap(),
        vec![Some(vec![3, 3]), None, Some(vec![2])],
        "get_all answers in the order asked"
    );
    assert!(cache.contains(&"b".into()).await.unwrap());
    assert!(!cache.contains(&"zz".into()).await.unwrap());
    let mut keys = cache.keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, vec!["a", "b", "c"]);
    assert_eq!(cache.len().await.unwrap(), 3);
    assert!(cache.remove(&"a".into()).await.unwrap());
    assert!(!cache.remove(&"a".into()).await.unwrap(), "a second remove finds nothing");
    assert_eq!(cache.len().await.unwrap(), 2);
    // Another cache is another namespace.
    let other = solo.caches().cache::<String, Vec<u32>>("alone-other");
    assert_eq!(other.get(&"b".into()).await.unwrap(), None);

    let stats = solo.caches().stats().await;
    let mine = stats.iter().find(|s| s.name == "alone").expect("stats for the cache");
    // Reads: get a (miss), get a (hit), get_all (2 hits, 1 miss).
    assert_eq!((mine.hits, mine.misses), (3, 2), "{mine:?}");
    assert_eq!(mine.clustered, backend != Backend::Standalone, "{mine:?}");
    assert_eq!(mine.entries, 2, "{mine:?}");
    assert!(mine.bytes > 0, "{mine:?}");

    cache.clear().await.unwrap();
    assert!(cache.is_empty().await.unwrap());
    assert_eq!(cache.get(&"b".into()).await.unwrap(), None);
}

async fn a_member_alone_runs_every_task_target_itself(backend: Backend) {
    let cluster = TestCluster::alone(backend, "solo").await;
    let solo = cluster.node("solo");
    solo.register_task("double", |n: u32| async move {
        if n == 0 {
            std::future::pending::<()>().await;
        }
        if n == 13 {
            return Err("13 is refused".to_string());
        }
        Ok(n * 2)
    });
    let outcomes = |replies: Vec<clusterhost::cluster::TaskResult<u32>>| {
        replies.into_iter().map(|r| (r.member, r.outcome)).collect::<Vec<_>>()
    };
    let me = || "solo".to_string();
    for target in [Target::All, Target::Senior, Target::Member("solo".into())] {
        let replies = solo.call_task::<u32, u32>(target.clone(), "double", &21).await.unwrap();
        assert_eq!(outcomes(replies), vec![(me(), Ok(42))], "{target:?}");
    }
    assert!(solo.call_task::<u32, u32>(Target::Others, "double", &1).await.unwrap().is_empty());
    let replies = solo.call_task::<u32, u32>(Target::All, "double", &13).await.unwrap();
    assert_eq!(outcomes(replies), vec![(me(), Err(TaskFailure::Error("13 is refused".into())))]);
    let replies = solo.call_task::<u32, u32>(Target::Member("zed".into()), "double", &1).await.unwrap();
    assert!(
        matches!(&replies[..], [r] if r.member == "zed" && matches!(&r.outcome, Err(TaskFailure::Error(e)) if e.contains("zed is not in the cluster"))),
        "{replies:?}"
    );
    // A hung handler: one answer, timed out, within the budget (2 s) and its grace.
    let replies = solo.call_task::<u32, u32>(Target::All, "double", &0).await.unwrap();
    assert_eq!(outcomes(replies), vec![(me(), Err(TaskFailure::TimedOut))]);
    let replies = solo.call_task::<u32, u32>(Target::All, "nosuchtask", &1).await.unwrap();
    assert!(
        matches!(&replies[..], [r] if matches!(&r.outcome, Err(TaskFailure::Error(e)) if e.contains("no handler for task nosuchtask"))),
        "{replies:?}"
    );

    let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = hits.clone();
    solo.register_task_raw("count", move |_from, _payload| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Vec::new())
        }
    });
    solo.send_task_raw(Target::Others, "count", Vec::new()).await.unwrap();
    solo.send_task_raw(Target::All, "count", Vec::new()).await.unwrap();
    wait_for("the fire-and-forget run", Duration::from_secs(10), || {
        hits.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let stats = solo.task_stats();
    assert_eq!((stats.sent, stats.calls, stats.values, stats.errors, stats.timed_out), (2, 8, 3, 3, 1), "{stats:?}");
}

async fn a_member_alone_grants_a_lock_to_one_owner_at_a_time(backend: Backend) {
    let cluster = TestCluster::alone(backend, "solo").await;
    let solo = cluster.node("solo");
    let held = solo.lock("orders").await.unwrap();
    assert!(solo.try_lock("orders", Duration::from_millis(100)).await.unwrap().is_none(), "a second owner waits");
    let other = solo.try_lock("invoices", Duration::from_millis(100)).await.unwrap().expect("another lock is free");
    let waiter = {
        let solo = solo.clone();
        tokio::spawn(async move { solo.lock("orders").await })
    };
    assert!(held.unlock().await.unwrap());
    let second = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter got the lock once it was released")
        .unwrap()
        .unwrap();
    assert_ne!(second.owner(), other.owner(), "every lock has its own owner token");
    // Dropping a held lock releases it (in the background).
    drop(second);
    let again = solo.try_lock("orders", Duration::from_secs(10)).await.unwrap();
    assert!(again.is_some(), "a dropped lock is released");
    assert!(other.unlock().await.unwrap());
}

async fn a_member_alone_keeps_and_announces_its_settings(backend: Backend) {
    let cluster = TestCluster::alone(backend, "solo").await;
    let solo = cluster.node("solo");
    let log: Log = Arc::default();
    solo.add_listener("solo", recorder(&log, "solo"));
    solo.put_setting("motd", "hello").await.unwrap();
    wait_for("the setting event", Duration::from_secs(10), || lines(&log, "solo").contains(&"setting motd".into()))
        .await;
    assert!(solo.settings().contains(&("motd".to_string(), "hello".to_string())), "{:?}", solo.settings());
}

async fn events_cache_factory_first_then_listeners_in_order_failures_isolated(backend: Backend) {
    let mut cluster = TestCluster::standalone(backend, &["a", "b"], quick_config());
    let a = cluster.node("a").clone();
    a.caches().cache::<String, String>("sessions").put(&"k".into(), &"standalone".into()).await.unwrap();

    let log: Log = Arc::default();
    // 1: sees the cache factory's work already done when this node joins.
    let (seen, caches) = (log.clone(), a.caches().clone());
    a.add_listener("first", move |event: &ClusterEvent| {
        if let ClusterEvent::JoinedCluster { local: true, .. } = event {
            seen.lock().unwrap().push(format!("first: caches clustered = {}", caches.clustered_now()));
        }
        seen.lock().unwrap().push(format!("first: {}", describe(event)));
        Ok(())
    });
    // 2 fails, 3 panics: both reported, neither stops 4.
    a.add_listener("failing", |_: &ClusterEvent| Err("this listener always fails".to_string()));
    a.add_listener("panicking", |_: &ClusterEvent| -> Result<(), String> { panic!("this listener always panics") });
    a.add_listener("last", recorder(&log, "last"));

    cluster.attach("a").await;
    wait_for("a clustered", Duration::from_secs(10), || same_kind(&a.state(), &ClusterState::Clustered)).await;
    // Registered before b gets its strategy, so it sees b's own join.
    let b = cluster.node("b").clone();
    b.add_listener("b", recorder(&log, "b"));
    cluster.attach("b").await;
    wait_for("b clustered", Duration::from_secs(10), || same_kind(&b.state(), &ClusterState::Clustered)).await;
    wait_for("a to see b join", Duration::from_secs(10), || lines(&log, "last").contains(&"joined b".to_string()))
        .await;

    // The senior (a, the oldest) leaves: b is marked senior, exactly once.
    cluster.detach("a").await;
    wait_for("b to become senior", Duration::from_secs(10), || lines(&log, "b").contains(&"senior b (local)".into()))
        .await;

    assert_eq!(
        lines(&log, "first"),
        vec!["caches clustered = true", "joined a (local)", "senior a (local)", "joined b", "left a (local)"],
        "the cache factory acts before listeners; events arrive in order"
    );
    assert_eq!(lines(&log, "last"), lines(&log, "first")[1..].to_vec(), "the failing listeners did not stop the last");
    let b_events = lines(&log, "b");
    assert_eq!(b_events, vec!["joined b (local)", "left a", "senior b (local)"], "{b_events:?}");
    assert_eq!(b.senior_member(), "b");
    assert_eq!(b.members().len(), 1);
    // The entry a wrote standalone went into the cluster and is still there.
    let sessions = b.caches().cache::<String, String>("sessions");
    assert_eq!(sessions.get(&"k".into()).await.unwrap().as_deref(), Some("standalone"));
}

async fn join_and_leave_lose_no_entry(backend: Backend) {
    let mut cluster = TestCluster::standalone(backend, &["a", "b"], quick_config());
    let (a, b) = (cluster.node("a").clone(), cluster.node("b").clone());
    let users_a = a.caches().cache::<u32, String>("users");
    let users_b = b.caches().cache::<u32, String>("users");
    for i in 0..100 {
        users_a.put(&i, &format!("a{i}")).await.unwrap();
    }
    for i in 100..150 {
        users_b.put(&i, &format!("b{i}")).await.unwrap();
    }
    // Written on both while standalone; b's write is the later one.
    users_a.put(&7, &"a-early".into()).await.unwrap();
    // Versions are in ms: wait for the clock to move on.
    let written = clusterhost_plugin_api::cluster::now_ms();
    wait_for("the next millisecond", Duration::from_secs(1), || clusterhost_plugin_api::cluster::now_ms() > written)
        .await;
    users_b.put(&7, &"b-late".into()).await.unwrap();

    cluster.attach("a").await;
    cluster.attach("b").await;
    cluster.wait_all(ClusterState::Clustered).await;
    cluster.wait_members(2).await;
    wait_until("b's entries to reach a", Duration::from_secs(30), || async {
        users_a.len().await.is_ok_and(|n| n == 150)
    })
    .await;
    assert_eq!(users_a.len().await.unwrap(), 150);
    for i in 0..150u32 {
        let expected = match i {
            7 => "b-late".to_string(),
            0..100 => format!("a{i}"),
            _ => format!("b{i}"),
        };
        assert_eq!(users_a.get(&i).await.unwrap(), Some(expected.clone()), "a reads key {i}");
        assert_eq!(users_b.get(&i).await.unwrap(), Some(expected), "b reads key {i}");
    }
    let stats = a.caches().stats().await;
    let users = stats.iter().find(|s| s.name == "users").expect("stats for users");
    assert!(users.clustered && users.entries == 150 && users.bytes > 0 && users.hits >= 150, "{users:?}");

    // b leaves: it keeps everything it held; a keeps serving the cluster.
    users_a.put(&500, &"while both in".into()).await.unwrap();
    cluster.detach("b").await;
    assert!(same_kind(&b.state(), &ClusterState::Standalone { reason: None }));
    assert_eq!(users_b.len().await.unwrap(), 151, "b kept every entry it held");
    assert_eq!(users_b.get(&500).await.unwrap().as_deref(), Some("while both in"));
    wait_for("a to see b gone", Duration::from_secs(30), || a.members().len() == 1).await;
    users_a.put(&501, &"after b left".into()).await.unwrap();
    assert_eq!(users_b.get(&501).await.unwrap(), None, "b is standalone now");
    assert_eq!(users_a.len().await.unwrap(), 152);
}

async fn a_synchronous_task_returns_one_answer_per_member_even_when_one_hangs(backend: Backend) {
    let cluster = TestCluster::clustered(backend, &["a", "b", "c"]).await;
    for node in &cluster.nodes {
        let name = node.name.clone();
        node.cluster.register_task("whoami", move |greeting: String| {
            let name = name.clone();
            async move {
                if name == "c" {
                    std::future::pending::<()>().await;
                }
                if greeting == "fail" {
                    return Err(format!("{name} refuses"));
                }
                Ok(format!("{greeting} from {name}"))
            }
        });
    }
    let a = cluster.node("a");
    let started = Instant::now();
    let mut replies = a.call_task::<String, String>(Target::All, "whoami", &"hi".into()).await.unwrap();
    let took = started.elapsed();
    replies.sort_by(|x, y| x.member.cmp(&y.member));
    let outcomes: Vec<_> = replies.iter().map(|r| (r.member.as_str(), r.outcome.clone())).collect();
    assert_eq!(
        outcomes,
        vec![("a", Ok("hi from a".to_string())), ("b", Ok("hi from b".to_string())), ("c", Err(TaskFailure::TimedOut))]
    );
    // Bounded by the 1 s budget (plus the grace); 10 s means it waited for the hung member.
    assert!(took < Duration::from_secs(10), "the call took {took:?}");

    let replies = a.call_task::<String, String>(Target::Member("b".into()), "whoami", &"fail".into()).await.unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].outcome, Err(TaskFailure::Error("b refuses".into())));
    // Every member agrees on one senior, and the task goes there.
    let senior = a.senior_member();
    assert!(cluster.nodes.iter().all(|n| n.cluster.senior_member() == senior));
    let replies = a.call_task::<String, String>(Target::Senior, "whoami", &"hey".into()).await.unwrap();
    assert_eq!(replies.iter().map(|r| r.member.as_str()).collect::<Vec<_>>(), vec![senior.as_str()]);
    let replies = a.call_task::<String, String>(Target::Others, "whoami", &"yo".into()).await.unwrap();
    let mut members: Vec<_> = replies.iter().map(|r| r.member.as_str()).collect();
    members.sort();
    assert_eq!(members, vec!["b", "c"]);
    let replies = a.call_task::<String, String>(Target::Member("zed".into()), "whoami", &"hi".into()).await.unwrap();
    assert!(matches!(&replies[0].outcome, Err(TaskFailure::Error(e)) if e.contains("zed is not in the cluster")));
    let replies = a.call_task::<String, String>(Target::Member("b".into()), "nosuchtask", &"hi".into()).await.unwrap();
    assert!(matches!(&replies[0].outcome, Err(TaskFailure::Error(e)) if e.contains("no handler for task nosuchtask")));

    // Fire and forget reaches every member.
    let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
    for node in &cluster.nodes {
        let hits = hits.clone();
        node.cluster.register_task_raw("count", move |_from, _payload| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(Vec::new())
            }
        });
    }
    a.send_task_raw(Target::All, "count", Vec::new()).await.unwrap();
    wait_for("3 fire-and-forget runs", Duration::from_secs(10), || hits.load(std::sync::atomic::Ordering::SeqCst) == 3)
        .await;
}

async fn disabling_and_enabling_on_one_node_changes_every_node(backend: Backend) {
    let cluster = TestCluster::clustered(backend, &["a", "b", "c"]).await;
    let cache = cluster.node("b").caches().cache::<String, u64>("counters");
    cache.put(&"x".into(), &1).await.unwrap();

    cluster.node("a").set_enabled(false).await.unwrap();
    cluster.wait_all(ClusterState::Standalone { reason: None }).await;
    for node in &cluster.nodes {
        let ClusterState::Standalone { reason: Some(reason) } = node.cluster.state() else {
            panic!("{} is not standalone with a reason: {:?}", node.name, node.cluster.state())
        };
        assert!(reason.contains("disabled cluster-wide by a"), "{reason}");
        // When, as a person reads it (issue 14, finding 15): a UTC date, not epoch milliseconds.
        let when = reason.rsplit(" at ").next().unwrap_or_default();
        assert!(when.len() == 20 && when.ends_with('Z') && when.as_bytes()[10] == b'T', "{reason}");
        assert!(!node.cluster.enabled());
        // Each kept the clustered entry as a standalone one.
        let mine = node.cluster.caches().cache::<String, u64>("counters");
        assert_eq!(mine.get(&"x".into()).await.unwrap(), Some(1), "{} kept the entry", node.name);
    }
    // Standalone writes on two members; both survive the re-join.
    cluster.node("a").caches().cache::<String, u64>("counters").put(&"from-a".into(), &2).await.unwrap();
    cluster.node("c").caches().cache::<String, u64>("counters").put(&"from-c".into(), &3).await.unwrap();

    cluster.node("b").set_enabled(true).await.unwrap();
    cluster.wait_all(ClusterState::Clustered).await;
    cluster.wait_members(3).await;
    for node in &cluster.nodes {
        let mine = node.cluster.caches().cache::<String, u64>("counters");
        wait_until(&format!("{} to hold the merged entries", node.name), Duration::from_secs(30), || async {
            mine.len().await.is_ok_and(|n| n == 3)
        })
        .await;
    }
    for node in &cluster.nodes {
        assert!(node.cluster.enabled());
        assert_eq!(node.cluster.members().len(), 3);
        let mine = node.cluster.caches().cache::<String, u64>("counters");
        for (key, value) in [("x", 1), ("from-a", 2), ("from-c", 3)] {
            assert_eq!(mine.get(&key.to_string()).await.unwrap(), Some(value), "{} reads {key}", node.name);
        }
    }
}

async fn locks_exclude_across_members_and_die_with_their_holder(backend: Backend) {
    let mut cluster = TestCluster::clustered(backend, &["a", "b"]).await;
    let (a, b) = (cluster.node("a").clone(), cluster.node("b").clone());
    let held = a.lock("orders").await.unwrap();
    assert!(b.try_lock("orders", Duration::from_millis(100)).await.unwrap().is_none(), "b must not get a's lock");
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.lock("orders").await })
    };
    let mut waiter = waiter;
    let early = tokio::time::timeout(Duration::from_millis(50), &mut waiter).await;
    assert!(early.is_err(), "b waits while a holds the lock");
    assert!(held.unlock().await.unwrap());
    let b_lock = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap().unwrap();

    // b dies holding the lock: the lock is released for a.
    cluster.crash("b").await;
    let again = a.try_lock("orders", Duration::from_secs(10)).await.unwrap();
    assert!(again.is_some(), "the lock of a crashed member is released");
    drop(b_lock);
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

async fn cluster_wide_settings_reach_every_member(backend: Backend) {
    let cluster = TestCluster::clustered(backend, &["a", "b"]).await;
    let log: Log = Arc::default();
    cluster.node("b").add_listener("b", recorder(&log, "b"));
    cluster.node("a").put_setting("motd", "hello").await.unwrap();
    wait_for("b to see the setting", Duration::from_secs(10), || lines(&log, "b").contains(&"setting motd".into()))
        .await;
    assert!(cluster.node("b").settings().contains(&("motd".to_string(), "hello".to_string())));
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
