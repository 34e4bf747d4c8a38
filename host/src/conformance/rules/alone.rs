//! Rules for one member alone: every cache operation, every task target,
//! locks and settings (they also run on the host's standalone strategy).

use super::support::*;

pub(super) async fn alone_caches(ctx: Ctx) -> Result<(), Failure> {
    let cluster = Nodes::alone(ctx.subject.clone(), "solo").await?;
    let solo = cluster.node("solo");
    let cache = solo.caches().cache::<String, Vec<u32>>("alone");
    assert!(cache.is_empty().await?);
    assert_eq!(cache.get(&"a".into()).await?, None);
    cache.put(&"a".into(), &vec![1]).await?;
    cache.put(&"a".into(), &vec![1, 1]).await?;
    cache.put_all(&[("b".into(), vec![2]), ("c".into(), vec![3, 3])]).await?;
    assert_eq!(cache.get(&"a".into()).await?, Some(vec![1, 1]), "a later put replaces the value");
    assert_eq!(
        cache.get_all(&["c".into(), "zz".into(), "b".into()]).await?,
        vec![Some(vec![3, 3]), None, Some(vec![2])],
        "get_all answers in the order asked"
    );
    assert!(cache.contains(&"b".into()).await?);
    assert!(!cache.contains(&"zz".into()).await?);
    let mut keys = cache.keys().await?;
    keys.sort();
    assert_eq!(keys, vec!["a", "b", "c"]);
    assert_eq!(cache.len().await?, 3);
    assert!(cache.remove(&"a".into()).await?);
    assert!(!cache.remove(&"a".into()).await?, "a second remove finds nothing");
    assert_eq!(cache.len().await?, 2);
    // Another cache is another namespace.
    let other = solo.caches().cache::<String, Vec<u32>>("alone-other");
    assert_eq!(other.get(&"b".into()).await?, None);

    let stats = solo.caches().stats().await;
    let mine = stats.iter().find(|s| s.name == "alone").expect("stats for the cache");
    // Reads: get a (miss), get a (hit), get_all (2 hits, 1 miss).
    assert_eq!((mine.hits, mine.misses), (3, 2), "{mine:?}");
    assert_eq!(mine.clustered, ctx.subject.clusters(), "{mine:?}");
    assert_eq!(mine.entries, 2, "{mine:?}");
    assert!(mine.bytes > 0, "{mine:?}");

    cache.clear().await?;
    assert!(cache.is_empty().await?);
    assert_eq!(cache.get(&"b".into()).await?, None);
    Ok(())
}

pub(super) async fn alone_tasks(ctx: Ctx) -> Result<(), Failure> {
    let cluster = Nodes::alone(ctx.subject.clone(), "solo").await?;
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
    let outcomes = |replies: Vec<crate::cluster::TaskResult<u32>>| {
        replies.into_iter().map(|r| (r.member, r.outcome)).collect::<Vec<_>>()
    };
    let me = || "solo".to_string();
    for target in [Target::All, Target::Senior, Target::Member("solo".into())] {
        let replies = solo.call_task::<u32, u32>(target.clone(), "double", &21).await?;
        assert_eq!(outcomes(replies), vec![(me(), Ok(42))], "{target:?}");
    }
    assert!(solo.call_task::<u32, u32>(Target::Others, "double", &1).await?.is_empty());
    let replies = solo.call_task::<u32, u32>(Target::All, "double", &13).await?;
    assert_eq!(outcomes(replies), vec![(me(), Err(TaskFailure::Error("13 is refused".into())))]);
    let replies = solo.call_task::<u32, u32>(Target::Member("zed".into()), "double", &1).await?;
    assert!(
        matches!(&replies[..], [r] if r.member == "zed" && matches!(&r.outcome, Err(TaskFailure::Error(e)) if e.contains("zed is not in the cluster"))),
        "{replies:?}"
    );
    // A hung handler: one answer, timed out, within the budget (2 s) and its grace.
    let replies = solo.call_task::<u32, u32>(Target::All, "double", &0).await?;
    assert_eq!(outcomes(replies), vec![(me(), Err(TaskFailure::TimedOut))]);
    let replies = solo.call_task::<u32, u32>(Target::All, "nosuchtask", &1).await?;
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
    solo.send_task_raw(Target::Others, "count", Vec::new()).await?;
    solo.send_task_raw(Target::All, "count", Vec::new()).await?;
    wait_for("the fire-and-forget run", Duration::from_secs(10), || {
        hits.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await?;
    let stats = solo.task_stats();
    assert_eq!((stats.sent, stats.calls, stats.values, stats.errors, stats.timed_out), (2, 8, 3, 3, 1), "{stats:?}");
    Ok(())
}

pub(super) async fn alone_locks(ctx: Ctx) -> Result<(), Failure> {
    let cluster = Nodes::alone(ctx.subject.clone(), "solo").await?;
    let solo = cluster.node("solo");
    let held = solo.lock("orders").await?;
    assert!(solo.try_lock("orders", Duration::from_millis(100)).await?.is_none(), "a second owner waits");
    let other = solo.try_lock("invoices", Duration::from_millis(100)).await?.expect("another lock is free");
    let waiter = {
        let solo = solo.clone();
        tokio::spawn(async move { solo.lock("orders").await })
    };
    assert!(held.unlock().await?);
    let second = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter got the lock once it was released")
        .unwrap()
        .unwrap();
    assert_ne!(second.owner(), other.owner(), "every lock has its own owner token");
    // Dropping a held lock releases it (in the background).
    drop(second);
    let again = solo.try_lock("orders", Duration::from_secs(10)).await?;
    assert!(again.is_some(), "a dropped lock is released");
    assert!(other.unlock().await?);
    Ok(())
}

pub(super) async fn alone_settings(ctx: Ctx) -> Result<(), Failure> {
    let cluster = Nodes::alone(ctx.subject.clone(), "solo").await?;
    let solo = cluster.node("solo");
    let log: Log = Arc::default();
    solo.add_listener("solo", recorder(&log, "solo"));
    solo.put_setting("motd", "hello").await?;
    wait_for("the setting event", Duration::from_secs(10), || lines(&log, "solo").contains(&"setting motd".into()))
        .await?;
    assert!(solo.settings().contains(&("motd".to_string(), "hello".to_string())), "{:?}", solo.settings());
    Ok(())
}
