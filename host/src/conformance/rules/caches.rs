//! Rules for caches across members: what a write on one member means on
//! the others, versions and merges on join, entries kept on leave.

use super::support::*;

pub(super) async fn join_and_leave_keep_entries(ctx: Ctx) -> Result<(), Failure> {
    let mut cluster = Nodes::standalone(ctx.subject.clone(), &["a", "b"], quick_config());
    let (a, b) = (cluster.node("a").clone(), cluster.node("b").clone());
    let users_a = a.caches().cache::<u32, String>("users");
    let users_b = b.caches().cache::<u32, String>("users");
    for i in 0..100 {
        users_a.put(&i, &format!("a{i}")).await?;
    }
    for i in 100..150 {
        users_b.put(&i, &format!("b{i}")).await?;
    }
    // Written on both while standalone; b's write is the later one.
    users_a.put(&7, &"a-early".into()).await?;
    // Versions are in ms (or the previous version + 1 within one): wait
    // for the clock to pass the version a's write got.
    let written = match users_a.get_versioned(&7).await {
        Ok(Some((_, version))) => version,
        _ => clusterhost_plugin_api::cluster::now_ms(),
    };
    wait_for("the clock to pass a's write", Duration::from_secs(1), || {
        clusterhost_plugin_api::cluster::now_ms() > written
    })
    .await?;
    users_b.put(&7, &"b-late".into()).await?;

    cluster.attach("a").await?;
    cluster.attach("b").await?;
    cluster.wait_all(ClusterState::Clustered).await?;
    cluster.wait_members(2).await?;
    wait_until("b's entries to reach a", Duration::from_secs(30), || async {
        users_a.len().await.is_ok_and(|n| n == 150)
    })
    .await?;
    assert_eq!(users_a.len().await?, 150);
    for i in 0..150u32 {
        let expected = match i {
            7 => "b-late".to_string(),
            0..100 => format!("a{i}"),
            _ => format!("b{i}"),
        };
        assert_eq!(users_a.get(&i).await?, Some(expected.clone()), "a reads key {i}");
        assert_eq!(users_b.get(&i).await?, Some(expected), "b reads key {i}");
    }
    let stats = a.caches().stats().await;
    let users = stats.iter().find(|s| s.name == "users").expect("stats for users");
    assert!(users.clustered && users.entries == 150 && users.bytes > 0 && users.hits >= 150, "{users:?}");

    // b leaves: it keeps everything it held; a keeps serving the cluster.
    users_a.put(&500, &"while both in".into()).await?;
    cluster.detach("b").await;
    assert!(same_kind(&b.state(), &ClusterState::Standalone { reason: None }));
    assert_eq!(users_b.len().await?, 151, "b kept every entry it held");
    assert_eq!(users_b.get(&500).await?.as_deref(), Some("while both in"));
    wait_for("a to see b gone", Duration::from_secs(30), || a.members().len() == 1).await?;
    users_a.put(&501, &"after b left".into()).await?;
    assert_eq!(users_b.get(&501).await?, None, "b is standalone now");
    assert_eq!(users_a.len().await?, 152);
    Ok(())
}

pub(super) async fn cache_across_members(ctx: Ctx) -> Result<(), Failure> {
    let names = ctx.names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let nodes = Nodes::clustered(ctx.subject.clone(), &refs).await?;
    let caches: Vec<_> = names.iter().map(|n| nodes.node(n).caches().cache::<String, String>("shared")).collect();
    let seen_everywhere = |key: String, want: Option<String>| {
        let caches = caches.clone();
        async move {
            for cache in &caches {
                if cache.get(&key).await.ok() != Some(want.clone()) {
                    return false;
                }
            }
            true
        }
    };
    for (i, cache) in caches.iter().enumerate() {
        cache.put(&format!("k{i}"), &format!("from {}", names[i])).await?;
        let (key, want) = (format!("k{i}"), Some(format!("from {}", names[i])));
        wait_until(&format!("every member to read k{i} written on {}", names[i]), Duration::from_secs(10), || {
            seen_everywhere(key.clone(), want.clone())
        })
        .await?;
    }
    // A later write replaces, wherever it is made.
    caches[1].put(&"k0".into(), &"rewritten".into()).await?;
    wait_until("every member to read the rewrite", Duration::from_secs(10), || {
        seen_everywhere("k0".into(), Some("rewritten".into()))
    })
    .await?;
    for (i, cache) in caches.iter().enumerate() {
        ensure_eq!(cache.len().await?, names.len() as u64, "{}'s len()", names[i]);
        let mut keys = cache.keys().await?;
        keys.sort();
        let mut expected: Vec<String> = (0..names.len()).map(|i| format!("k{i}")).collect();
        expected.sort();
        ensure_eq!(keys, expected, "{}'s keys()", names[i]);
        ensure!(cache.contains(&"k1".into()).await?, "{} does not contain k1", names[i]);
    }
    // A remove on one member removes it for all.
    ensure!(caches[0].remove(&"k1".into()).await?, "remove of k1 found nothing");
    wait_until("every member to miss k1", Duration::from_secs(10), || seen_everywhere("k1".into(), None)).await?;
    // Clear on the last member empties it everywhere.
    caches[names.len() - 1].clear().await?;
    for (i, cache) in caches.iter().enumerate() {
        let cache = cache.clone();
        wait_until(&format!("{} to see the cache cleared", names[i]), Duration::from_secs(10), || {
            let cache = cache.clone();
            async move { cache.len().await.is_ok_and(|n| n == 0) }
        })
        .await?;
    }
    Ok(())
}
