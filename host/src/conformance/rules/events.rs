//! Rules for membership and its events: the view converges on one senior,
//! events follow the contract's order, a member that stops without leaving
//! is removed.

use super::support::*;

pub(super) async fn listener_order(ctx: Ctx) -> Result<(), Failure> {
    let mut cluster = Nodes::standalone(ctx.subject.clone(), &["a", "b"], quick_config());
    let a = cluster.node("a").clone();
    a.caches().cache::<String, String>("sessions").put(&"k".into(), &"standalone".into()).await?;

    let log: Log = Arc::default();
    // 1: sees the cache factory's work already done when this node joins.
    let (seen, caches) = (log.clone(), a.caches().clone());
    a.add_listener("first", move |event: &ClusterEvent| {
        if let ClusterEvent::JoinedCluster { local: true, .. } = event {
            seen.lock().expect("the log lock").push(format!("first: caches clustered = {}", caches.clustered_now()));
        }
        seen.lock().expect("the log lock").push(format!("first: {}", describe(event)));
        Ok(())
    });
    // 2 fails, 3 panics: both reported, neither stops 4.
    a.add_listener("failing", |_: &ClusterEvent| Err("this listener always fails".to_string()));
    a.add_listener("panicking", |_: &ClusterEvent| -> Result<(), String> { panic!("this listener always panics") });
    a.add_listener("last", recorder(&log, "last"));

    cluster.attach("a").await?;
    wait_for("a clustered", Duration::from_secs(10), || same_kind(&a.state(), &ClusterState::Clustered)).await?;
    // Registered before b gets its strategy, so it sees b's own join.
    let b = cluster.node("b").clone();
    b.add_listener("b", recorder(&log, "b"));
    cluster.attach("b").await?;
    wait_for("b clustered", Duration::from_secs(10), || same_kind(&b.state(), &ClusterState::Clustered)).await?;
    wait_for("a to see b join", Duration::from_secs(10), || lines(&log, "last").contains(&"joined b".to_string()))
        .await?;

    // The senior (a, the oldest) leaves: b is marked senior, exactly once.
    cluster.detach("a").await;
    wait_for("b to become senior", Duration::from_secs(10), || lines(&log, "b").contains(&"senior b (local)".into()))
        .await?;

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
    assert_eq!(sessions.get(&"k".into()).await?.as_deref(), Some("standalone"));
    Ok(())
}

/// The raw events of member `name`'s strategies, settings left out.
fn membership_events(nodes: &Nodes, name: &str) -> Vec<String> {
    nodes
        .member(name)
        .tap
        .events()
        .iter()
        .filter(|(_, e)| !matches!(e, StrategyEvent::SettingChanged { .. }))
        .map(|(_, e)| raw(e))
        .collect()
}

pub(super) async fn membership_converges(ctx: Ctx) -> Result<(), Failure> {
    let names = ctx.names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let nodes = Nodes::clustered_in_order(ctx.subject.clone(), &names).await?;
    let mut expected: Vec<&str> = names.clone();
    expected.sort();
    for node in &nodes.nodes {
        let mut seen: Vec<String> = node.cluster.members().into_iter().map(|m| m.id).collect();
        seen.sort();
        ensure_eq!(seen, expected, "{}'s members()", node.name);
        let ids = node.cluster.members().into_iter().map(|m| m.id).collect::<Vec<_>>();
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        ensure!(unique.len() == ids.len(), "{} lists a member twice: {ids:?}", node.name);
    }
    let seniors: std::collections::BTreeSet<String> = nodes.nodes.iter().map(|n| n.cluster.senior_member()).collect();
    ensure!(seniors.len() == 1, "the members name different seniors: {seniors:?}");
    let senior = seniors.into_iter().next().unwrap_or_default();
    ensure_eq!(senior.as_str(), names[0], "the senior is the oldest member (the first to join)");
    let marked: Vec<String> = nodes
        .nodes
        .iter()
        .filter(|n| membership_events(&nodes, &n.name).contains(&format!("senior {}", n.name)))
        .map(|n| n.name.clone())
        .collect();
    ensure_eq!(marked, vec![senior.clone()], "the members that marked themselves senior");
    Ok(())
}

pub(super) async fn join_events(ctx: Ctx) -> Result<(), Failure> {
    let nodes = Nodes::clustered_in_order(ctx.subject.clone(), &["a", "b", "c"]).await?;
    // Events are queued: give late ones a moment to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expect = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // A strategy need not emit its own Joined for the join start_clustering
    // made (the host announces it when start_clustering returns).
    let without_own_join = |name: &str| {
        let own = format!("joined {name}");
        membership_events(&nodes, name).into_iter().filter(|e| *e != own).collect::<Vec<_>>()
    };
    ensure_eq!(
        without_own_join("a"),
        expect(&["senior a", "joined b", "joined c"]),
        "the first member's events (senior at its join, then each joiner)"
    );
    ensure_eq!(
        without_own_join("b"),
        expect(&["joined c"]),
        "the second member's events (no Joined for a, already there; no SeniorChanged: a stays senior)"
    );
    ensure_eq!(without_own_join("c"), expect(&[]), "the third member's events (no Joined for a or b, already there)");
    Ok(())
}

pub(super) async fn view_empty_while_not_joined(ctx: Ctx) -> Result<(), Failure> {
    let mut config = quick_config();
    config.startup_delay = Duration::from_millis(800);
    let mut nodes = Nodes::standalone(ctx.subject.clone(), &["a"], config);
    nodes.attach("a").await?;
    let a = nodes.node("a").clone();
    let empty = |view: Option<(Vec<clusterhost_plugin_api::cluster::Member>, Option<String>)>| {
        view.is_none_or(|(members, senior)| members.is_empty() && senior.is_none())
    };
    // The startup delay (800 ms) holds start_clustering back.
    let starting = ClusterState::Starting { attempt: 0, attempts: 0, next_in_ms: 0, detail: String::new() };
    ensure!(same_kind(&a.state(), &starting), "a is not waiting to start clustering: {:?}", a.state());
    let view = a.strategy_view();
    ensure!(empty(view.clone()), "before start_clustering the strategy reports {view:?}");
    nodes.wait_all(ClusterState::Clustered).await?;
    let view = a.strategy_view();
    ensure!(
        view.as_ref().is_some_and(|(m, s)| m.iter().any(|m| m.id == "a") && s.as_deref() == Some("a")),
        "once joined the strategy reports {view:?}"
    );
    a.set_enabled(false).await?;
    nodes.wait_all(ClusterState::Standalone { reason: None }).await?;
    let view = a.strategy_view();
    ensure!(empty(view.clone()), "after stop_clustering the strategy reports {view:?}");
    a.set_enabled(true).await?;
    nodes.wait_all(ClusterState::Clustered).await?;
    Ok(())
}

pub(super) async fn stop_emits_no_own_left(ctx: Ctx) -> Result<(), Failure> {
    let mut nodes = Nodes::clustered(ctx.subject.clone(), &["a", "b"]).await?;
    // The switch: both members stop clustering, their strategies stay loaded.
    nodes.node("a").set_enabled(false).await?;
    nodes.wait_all(ClusterState::Standalone { reason: None }).await?;
    nodes.node("a").set_enabled(true).await?;
    nodes.wait_all(ClusterState::Clustered).await?;
    nodes.wait_members(2).await?;
    // And a leave: b's strategy stops for good.
    nodes.detach("b").await;
    let a = nodes.node("a").clone();
    wait_for("a to see b leave", Duration::from_secs(30), || a.members().len() == 1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["a", "b"] {
        let own_left = format!("left {name}");
        let events = membership_events(&nodes, name);
        ensure!(!events.contains(&own_left), "{name}'s strategy emitted its own Left: {events:?}");
    }
    Ok(())
}

pub(super) async fn member_stops_without_leaving(ctx: Ctx) -> Result<(), Failure> {
    let mut nodes = Nodes::clustered_in_order(ctx.subject.clone(), &["a", "b", "c"]).await?;
    ensure_eq!(nodes.node("b").senior_member(), "a", "the senior is the oldest member");
    // The senior dies: the others remove it and agree on a new senior.
    nodes.crash("a").await;
    for name in ["b", "c"] {
        let cluster = nodes.node(name).clone();
        wait_for(&format!("{name} to remove a, which died"), Duration::from_secs(60), || {
            let members = cluster.members();
            members.len() == 2 && !members.iter().any(|m| m.id == "a")
        })
        .await?;
    }
    let (b, c) = (nodes.node("b").clone(), nodes.node("c").clone());
    wait_for("b and c to agree on a new senior", Duration::from_secs(30), || {
        b.senior_member() == c.senior_member() && b.senior_member() != "a"
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let senior = b.senior_member();
    for name in ["b", "c"] {
        let events = membership_events(&nodes, name);
        ensure!(events.contains(&"left a".to_string()), "{name} saw no Left for a: {events:?}");
        let left = events.iter().position(|e| e == "left a");
        let marked = events.iter().rposition(|e| *e == format!("senior {senior}"));
        if name == senior {
            ensure!(marked > left, "{name}, the new senior, was not marked senior after a left: {events:?}");
        }
    }
    Ok(())
}
