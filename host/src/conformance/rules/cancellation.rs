//! Rule `cancellation`: the host drops a future it no longer waits for (a
//! caller's deadline); the strategy must leak nothing and break nothing.

use super::support::*;

/// How long a follow-up call may take before the strategy counts as hung.
const FOLLOW_UP: Duration = Duration::from_secs(10);

pub(super) async fn cancellation(ctx: Ctx) -> Result<(), Failure> {
    let nodes = Nodes::clustered(ctx.subject.clone(), &["a", "b"]).await?;
    let (a, b) = (nodes.node("a").clone(), nodes.node("b").clone());
    let cache = a.caches().cache::<u32, String>("cancelled");
    // Cache calls dropped at once, and after a moment.
    for i in 0..40u32 {
        let wait = Duration::from_micros(u64::from(i % 4) * 200);
        let _ = tokio::time::timeout(wait, cache.put(&i, &format!("v{i}"))).await;
        let _ = tokio::time::timeout(wait, cache.get(&i)).await;
        let _ = tokio::time::timeout(wait, cache.remove(&(i + 1000))).await;
    }
    let answered = tokio::time::timeout(FOLLOW_UP, async {
        cache.put(&7, &"after".into()).await?;
        b.caches().cache::<u32, String>("cancelled").get(&7).await
    })
    .await;
    match answered {
        Err(_) => {
            return Err(Failure::failed(format!(
                "after dropped cache calls, a put and a get did not finish within {} s (the strategy hangs)",
                FOLLOW_UP.as_secs()
            )))
        }
        Ok(result) => {
            result?;
            wait_until("b to read the value written after the dropped calls", FOLLOW_UP, || {
                let b = b.clone();
                async move {
                    b.caches().cache::<u32, String>("cancelled").get(&7).await.ok().flatten().as_deref()
                        == Some("after")
                }
            })
            .await?;
        }
    }

    // A lock wait dropped early must not take the lock afterwards.
    match a.lock("cancel-lock").await {
        Ok(held) => {
            let _ = tokio::time::timeout(Duration::from_millis(100), b.lock("cancel-lock")).await;
            ensure!(held.unlock().await?, "a's lock was not held when it released it");
            // Free again at once: the dropped wait on b may not keep it.
            let kept =
                "a lock wait on b, dropped before it was granted, kept the lock for more than 1 s after a released it";
            take_and_release(&a, Duration::from_secs(1), kept).await?;
            take_and_release(
                &a,
                Duration::from_secs(5),
                "a dropped lock wait on b took the lock: a cannot get it back",
            )
            .await?;
        }
        Err(crate::cluster::ClusterError::Unsupported { .. }) => {}
        Err(e) => return Err(e.into()),
    }

    // A task call dropped early; a later one still answers.
    b.register_task("echo", |n: u32| async move { Ok(n) });
    let _ =
        tokio::time::timeout(Duration::from_millis(1), a.call_task::<u32, u32>(Target::Member("b".into()), "echo", &1))
            .await;
    match tokio::time::timeout(FOLLOW_UP, a.call_task::<u32, u32>(Target::Member("b".into()), "echo", &2)).await {
        Err(_) => {
            return Err(Failure::failed("after a dropped task call, the next call did not answer (the strategy hangs)"))
        }
        Ok(Err(crate::cluster::ClusterError::Unsupported { .. })) => {}
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(replies)) => {
            let outcomes: Vec<_> = replies.into_iter().map(|r| (r.member, r.outcome)).collect();
            ensure_eq!(outcomes, vec![("b".to_string(), Ok(2))], "the task call after a dropped one");
        }
    }
    Ok(())
}

/// `a` takes lock `cancel-lock` within `wait` and releases it; fails with
/// `kept` when it cannot, and when the strategy does not answer at all.
async fn take_and_release(a: &crate::cluster::ClusterManager, wait: Duration, kept: &str) -> Result<(), Failure> {
    let Ok(result) = tokio::time::timeout(FOLLOW_UP, a.try_lock("cancel-lock", wait)).await else {
        return Err(Failure::failed("after a dropped lock wait, try_lock did not answer (the strategy hangs)"));
    };
    let lock = result?.ok_or_else(|| Failure::failed(kept))?;
    lock.unlock().await?;
    Ok(())
}
