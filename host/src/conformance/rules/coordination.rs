//! Rules for what members do together: tasks to every target, locks,
//! cluster-wide settings and the clustering switch.

use super::support::*;

pub(super) async fn tasks_every_target(ctx: Ctx) -> Result<(), Failure> {
    let cluster = Nodes::clustered(ctx.subject.clone(), &["a", "b", "c"]).await?;
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
    let mut replies = a.call_task::<String, String>(Target::All, "whoami", &"hi".into()).await?;
    let took = started.elapsed();
    replies.sort_by(|x, y| x.member.cmp(&y.member));
    let outcomes: Vec<_> = replies.iter().map(|r| (r.member.as_str(), r.outcome.clone())).collect();
    assert_eq!(
        outcomes,
        vec![("a", Ok("hi from a".to_string())), ("b", Ok("hi from b".to_string())), ("c", Err(TaskFailure::TimedOut))]
    );
    // Bounded by the 1 s budget (plus the grace); 10 s means it waited for the hung member.
    assert!(took < Duration::from_secs(10), "the call took {took:?}");

    let replies = a.call_task::<String, String>(Target::Member("b".into()), "whoami", &"fail".into()).await?;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].outcome, Err(TaskFailure::Error("b refuses".into())));
    // Every member agrees on one senior, and the task goes there.
    let senior = a.senior_member();
    assert!(cluster.nodes.iter().all(|n| n.cluster.senior_member() == senior));
    let replies = a.call_task::<String, String>(Target::Senior, "whoami", &"hey".into()).await?;
    assert_eq!(replies.iter().map(|r| r.member.as_str()).collect::<Vec<_>>(), vec![senior.as_str()]);
    let replies = a.call_task::<String, String>(Target::Others, "whoami", &"yo".into()).await?;
    let mut members: Vec<_> = replies.iter().map(|r| r.member.as_str()).collect();
    members.sort();
    assert_eq!(members, vec!["b", "c"]);
    let replies = a.call_task::<String, String>(Target::Member("zed".into()), "whoami", &"hi".into()).await?;
    assert!(matches!(&replies[0].outcome, Err(TaskFailure::Error(e)) if e.contains("zed is not in the cluster")));
    let replies = a.call_task::<String, String>(Target::Member("b".into()), "nosuchtask", &"hi".into()).await?;
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
    a.send_task_raw(Target::All, "count", Vec::new()).await?;
    wait_for("3 fire-and-forget runs", Duration::from_secs(10), || hits.load(std::sync::atomic::Ordering::SeqCst) == 3)
        .await?;
    Ok(())
}

pub(super) async fn clustering_switch(ctx: Ctx) -> Result<(), Failure> {
    let cluster = Nodes::clustered(ctx.subject.clone(), &["a", "b", "c"]).await?;
    let cache = cluster.node("b").caches().cache::<String, u64>("counters");
    cache.put(&"x".into(), &1).await?;

    cluster.node("a").set_enabled(false).await?;
    cluster.wait_all(ClusterState::Standalone { reason: None }).await?;
    for node in &cluster.nodes {
        let ClusterState::Standalone { reason: Some(reason) } = node.cluster.state() else {
            panic!("{} is not standalone with a reason: {:?}", node.name, node.cluster.state())
        };
        assert!(reason.contains("disabled cluster-wide by a"), "{reason}");
        // When, as a person reads it (issue 14, finding 15; issue 20): a local
        // date and time to the millisecond, not epoch milliseconds.
        let when = reason.rsplit(" at ").next().unwrap_or_default().as_bytes();
        assert!(
            when.len() == 23 && when[10] == b' ' && when[19] == b'.' && when[..4].iter().all(u8::is_ascii_digit),
            "{reason}"
        );
        assert!(!node.cluster.enabled());
        // Each kept the clustered entry as a standalone one.
        let mine = node.cluster.caches().cache::<String, u64>("counters");
        assert_eq!(mine.get(&"x".into()).await?, Some(1), "{} kept the entry", node.name);
    }
    // Standalone writes on two members; both survive the re-join.
    cluster.node("a").caches().cache::<String, u64>("counters").put(&"from-a".into(), &2).await?;
    cluster.node("c").caches().cache::<String, u64>("counters").put(&"from-c".into(), &3).await?;

    cluster.node("b").set_enabled(true).await?;
    cluster.wait_all(ClusterState::Clustered).await?;
    cluster.wait_members(3).await?;
    for node in &cluster.nodes {
        let mine = node.cluster.caches().cache::<String, u64>("counters");
        wait_until(&format!("{} to hold the merged entries", node.name), Duration::from_secs(30), || async {
            mine.len().await.is_ok_and(|n| n == 3)
        })
        .await?;
    }
    for node in &cluster.nodes {
        assert!(node.cluster.enabled());
        assert_eq!(node.cluster.members().len(), 3);
        let mine = node.cluster.caches().cache::<String, u64>("counters");
        for (key, value) in [("x", 1), ("from-a", 2), ("from-c", 3)] {
            assert_eq!(mine.get(&key.to_string()).await?, Some(value), "{} reads {key}", node.name);
        }
    }
    Ok(())
}

pub(super) async fn locks(ctx: Ctx) -> Result<(), Failure> {
    let mut cluster = Nodes::clustered(ctx.subject.clone(), &["a", "b", "c"]).await?;
    let (a, b, c) = (cluster.node("a").clone(), cluster.node("b").clone(), cluster.node("c").clone());
    // c leaves holding a lock: it is released for the others.
    let _c_lock = c.lock("invoices").await?;
    assert!(a.try_lock("invoices", Duration::from_millis(100)).await?.is_none(), "a must not get c's lock");
    cluster.detach("c").await;
    let freed = a.try_lock("invoices", Duration::from_secs(10)).await?;
    assert!(freed.is_some(), "the lock of a member that left is released");

    let held = a.lock("orders").await?;
    assert!(b.try_lock("orders", Duration::from_millis(100)).await?.is_none(), "b must not get a's lock");
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.lock("orders").await })
    };
    let mut waiter = waiter;
    let early = tokio::time::timeout(Duration::from_millis(50), &mut waiter).await;
    assert!(early.is_err(), "b waits while a holds the lock");
    assert!(held.unlock().await?);
    let b_lock = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("b got the lock once a released it")
        .expect("the waiter task")?;

    // b dies holding the lock (no stop_clustering): it is released for a
    // with b's removal from the view (the detection), not later (a lease
    // that outlives it). The 1.5 s is slack for a loaded machine: a release
    // made with the removal is granted in a round trip or a poll.
    cluster.crash("b").await;
    wait_for("a to see the crashed b gone", Duration::from_secs(30), || a.status().members.iter().all(|m| m.id != "b"))
        .await?;
    let again = a.try_lock("orders", Duration::from_millis(1500)).await?;
    assert!(again.is_some(), "the lock of a crashed member is released once it is removed from the view");
    drop(b_lock);
    Ok(())
}

/// Rule `fenced-locks` (capability `FENCED_LOCKS`): every grant of a lock
/// carries a fencing number above every earlier grant's, whoever holds it,
/// also after the senior dies; a lock a living member holds survives the
/// senior's death.
pub(super) async fn fenced_locks(ctx: Ctx) -> Result<(), Failure> {
    use clusterhost_plugin_api::cluster::Capabilities;
    let mut cluster = Nodes::clustered(ctx.subject.clone(), &["a", "b", "c"]).await?;
    let a = cluster.node("a").clone();
    if !a.caches().strategy_capabilities().await.contains(Capabilities::FENCED_LOCKS) {
        let strategy = a.status().strategy.unwrap_or_else(|| "standalone".into());
        return Err(Failure::Unsupported(format!("strategy {strategy} reports no fenced locks")));
    }
    let senior = a.status().senior.ok_or_else(|| Failure::failed("no senior once every member is clustered"))?;
    // The holder and the next taker are members that are not the senior.
    let others: Vec<String> = ["a", "b", "c"].iter().filter(|n| **n != senior).map(|n| n.to_string()).collect();
    let (holder, taker) = (cluster.node(&others[0]).clone(), cluster.node(&others[1]).clone());
    let mut fences = Vec::new();
    for node in [&holder, &taker, &holder] {
        let lock = node.lock("fenced").await?;
        fences.push(lock.fence().ok_or_else(|| Failure::failed("a granted lock carries no fencing number"))?);
        ensure!(lock.unlock().await?, "the holder releases its lock");
    }
    let held = holder.lock("fenced").await?;
    let before = held.fence().ok_or_else(|| Failure::failed("a granted lock carries no fencing number"))?;
    fences.push(before);
    ensure!(fences.windows(2).all(|w| w[0] < w[1]), "every grant's fencing number is above the one before: {fences:?}");
    // The senior dies: the living holder keeps its lock.
    cluster.crash(&senior).await;
    wait_for("the others to see the senior gone", Duration::from_secs(30), || {
        holder.status().members.len() == 2 && taker.status().members.len() == 2
    })
    .await?;
    ensure!(
        taker.try_lock("fenced", Duration::from_millis(300)).await?.is_none(),
        "the lock held by a living member survives the senior's death"
    );
    ensure!(held.unlock().await?, "the holder still holds its lock after the senior's death and releases it");
    let after = taker.lock("fenced").await?;
    let next = after.fence().ok_or_else(|| Failure::failed("a granted lock carries no fencing number"))?;
    ensure!(next > before, "a grant after the senior's death ({next}) is above the one before it ({before})");
    Ok(())
}

pub(super) async fn settings_everywhere(ctx: Ctx) -> Result<(), Failure> {
    let cluster = Nodes::clustered(ctx.subject.clone(), &["a", "b"]).await?;
    let log: Log = Arc::default();
    cluster.node("b").add_listener("b", recorder(&log, "b"));
    cluster.node("a").put_setting("motd", "hello").await?;
    wait_for("b to see the setting", Duration::from_secs(10), || lines(&log, "b").contains(&"setting motd".into()))
        .await?;
    assert!(cluster.node("b").settings().contains(&("motd".to_string(), "hello".to_string())));
    Ok(())
}
