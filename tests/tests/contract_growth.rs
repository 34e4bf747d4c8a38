//! The strategy contract grows without breaking older plugins: a strategy
//! built against plugin API 0.1.0 (tests/fixtures/old-api, a frozen copy of
//! that API, never updated) still loads into this host, passes the layout
//! check, serves every operation it has, and is refused the operations
//! appended since with a message naming it and its version.

use std::sync::Arc;

use clusterhost::cluster::{ClusterError, Delivery, EntryEventKind, ListenOptions};
use clusterhost::conformance::{Nodes, PluginSubject, Subject};
use clusterhost_plugin_api::cluster::Capabilities;
use clusterhost_tests::old_api_plugin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_built_before_atomic_operations_loads_works_and_is_refused_them_by_name() {
    let subject = Arc::new(Subject::Plugin(PluginSubject { file: old_api_plugin(), configure: Arc::new(|_| Ok(())) }));
    let nodes = Nodes::alone(subject, "a").await.unwrap_or_else(|e| panic!("the old strategy did not join: {e:?}"));
    let a = nodes.node("a");
    let status = a.status();
    assert_eq!(status.strategy.as_deref(), Some("old-api 0.1.0"), "{status:?}");
    assert_eq!(a.caches().strategy_capabilities().await, Capabilities::NONE);

    // The operations it was built with work through the new host.
    let cache = a.caches().cache::<String, u32>("counters");
    cache.put(&"k".into(), &1).await.expect("put");
    assert_eq!(cache.get(&"k".into()).await.expect("get"), Some(1));
    assert!(cache.remove(&"k".into()).await.expect("remove"));
    assert_eq!(cache.len().await.expect("len"), 0);

    // The appended ones are refused before any call reaches the plugin.
    let refusals = [
        ("cache put_if_absent", cache.put_if_absent(&"k".into(), &2).await.map(|_| ())),
        ("cache replace_if", cache.replace_if_value(&"k".into(), &1, &2).await.map(|_| ())),
        ("cache remove_if", cache.remove_if_version(&"k".into(), 1).await.map(|_| ())),
        ("cache get_versioned", cache.get_versioned(&"k".into()).await.map(|_| ())),
        ("cache get_versioned", cache.update(&"k".into(), |n| n.unwrap_or(0) + 1).await.map(|_| ())),
    ];
    for (op, refused) in refusals {
        let error = refused.expect_err("an old strategy has no atomic operations");
        assert_eq!(
            error,
            ClusterError::Lacks { plugin: "old-api 0.1.0".into(), what: "atomic operations", op, since: "0.1.1" }
        );
        let message = error.to_string();
        assert!(message.starts_with("strategy old-api 0.1.0 has no atomic operations"), "{message}");
        assert!(message.contains("upgrade it"), "{message}");
    }
    assert_eq!(cache.len().await.expect("len"), 0, "nothing was written by the refused operations");
    // Still serving after the refusals.
    cache.put(&"k".into(), &3).await.expect("put after the refusals");
    assert_eq!(cache.get(&"k".into()).await.expect("get"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_built_before_entry_events_gets_local_listeners_from_the_host_and_refuses_clustered_ones() {
    let subject = Arc::new(Subject::Plugin(PluginSubject { file: old_api_plugin(), configure: Arc::new(|_| Ok(())) }));
    let nodes = Nodes::alone(subject, "a").await.unwrap_or_else(|e| panic!("the old strategy did not join: {e:?}"));
    let a = nodes.node("a");
    assert!(!a.caches().strategy_capabilities().await.contains(Capabilities::ENTRY_EVENTS));
    let cache = a.caches().raw("sessions");

    let refused = cache.listen(ListenOptions::clustered()).await.expect_err("no clustered listener on it");
    assert_eq!(
        refused,
        ClusterError::Lacks {
            plugin: "old-api 0.1.0".into(),
            what: "entry events",
            op: "a clustered entry listener",
            since: "0.1.2"
        }
    );
    let message = refused.to_string();
    assert!(message.starts_with("strategy old-api 0.1.0 has no entry events"), "{message}");
    assert!(message.contains("plugin API 0.1.2 or later"), "{message}");

    // Local listeners: the host tells them what this node's calls changed.
    let mut local = cache.listen(ListenOptions::local()).await.expect("a local listener");
    cache.put(b"k".to_vec(), b"1".to_vec()).await.expect("put");
    cache.put(b"k".to_vec(), b"2".to_vec()).await.expect("put again");
    assert!(cache.remove(b"k").await.expect("remove"));
    assert!(!cache.remove(b"k").await.expect("remove again"), "nothing left to remove");
    let mut seen = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(std::time::Duration::from_secs(10), local.recv()).await {
            Ok(Some(Delivery::Event(e))) => seen.push((e.kind, e.value, e.origin)),
            other => panic!("expected an event, got {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            (EntryEventKind::Added, Some(b"1".to_vec()), "a".to_string()),
            (EntryEventKind::Updated, Some(b"2".to_vec()), "a".to_string()),
            (EntryEventKind::Removed, None, "a".to_string()),
        ]
    );
    assert!(local.try_recv().is_none(), "a remove of nothing is no event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_built_before_bounded_caches_is_refused_bounds_and_ttls_by_name_and_keeps_serving() {
    let subject = Arc::new(Subject::Plugin(PluginSubject { file: old_api_plugin(), configure: Arc::new(|_| Ok(())) }));
    let nodes = Nodes::alone(subject, "a").await.unwrap_or_else(|e| panic!("the old strategy did not join: {e:?}"));
    let a = nodes.node("a");
    assert!(!a.caches().strategy_capabilities().await.contains(Capabilities::BOUNDED));
    let bounds = clusterhost_plugin_api::cluster::CacheBounds { max_entries: 2, ..Default::default() };
    let Err(refused) = a.bounded_cache::<String, u32>("sessions", bounds).await else {
        panic!("bounds on an old strategy")
    };
    assert_eq!(
        refused,
        ClusterError::Lacks {
            plugin: "old-api 0.1.0".into(),
            what: "bounded caches",
            op: "cache bounds",
            since: "0.1.3"
        }
    );
    let message = refused.to_string();
    assert!(message.starts_with("strategy old-api 0.1.0 has no bounded caches"), "{message}");
    assert!(message.contains("plugin API 0.1.3 or later"), "{message}");
    // The refusal shows in the cache's status.
    let shown = a.caches().bounded();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].refused.as_deref().is_some_and(|r| r.contains("has no bounded caches")), "{shown:?}");

    let cache = a.caches().cache::<String, u32>("sessions");
    let ttl = std::time::Duration::from_secs(1);
    let refused = cache.put_ttl(&"k".into(), &1, ttl).await.expect_err("no TTL on it");
    assert_eq!(
        refused,
        ClusterError::Lacks {
            plugin: "old-api 0.1.0".into(),
            what: "bounded caches",
            op: "cache put with a time to live",
            since: "0.1.3"
        }
    );
    assert_eq!(cache.get(&"k".into()).await.expect("get"), None, "the refused put wrote nothing");
    // The old operations still work, unbounded.
    for i in 0..5 {
        cache.put(&format!("k{i}"), &i).await.expect("put");
    }
    assert_eq!(cache.len().await.expect("len"), 5);
}
