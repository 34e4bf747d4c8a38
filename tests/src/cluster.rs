//! In-process cluster nodes for the cluster-core suite: each node is a
//! [`ClusterManager`] whose strategy crosses the real plugin boundary
//! (`ClusterHost::into_boundary`) on its own runtime, as a loaded plugin's
//! would. The strategy is the in-memory one; the gossip issue adds the
//! variant that loads the gossip plugin per node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterConfig, ClusterManager, ClusterState};
use clusterhost_plugin_api::memory::{MemoryFabric, MemoryStrategy};
use clusterhost_plugin_api::ClusterHost;

/// One in-process node.
pub struct TestNode {
    pub name: String,
    pub cluster: ClusterManager,
    /// The strategy's own runtime, as a plugin would own one.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Nodes on one in-memory fabric.
pub struct TestCluster {
    pub fabric: Arc<MemoryFabric>,
    pub nodes: Vec<TestNode>,
    config: ClusterConfig,
}

/// Settings for quick tests: no startup delay, a 1 s budget.
pub fn quick_config() -> ClusterConfig {
    ClusterConfig {
        startup_delay: Duration::ZERO,
        retry_count: 1,
        retry_interval: Duration::from_millis(100),
        max_execution: Duration::from_secs(1),
    }
}

impl TestCluster {
    /// A fabric with standalone nodes named `names` (no strategy yet).
    pub fn standalone(names: &[&str], config: ClusterConfig) -> TestCluster {
        let mut cluster = TestCluster { fabric: MemoryFabric::new(), nodes: Vec::new(), config };
        for name in names {
            cluster.add_standalone(name);
        }
        cluster
    }

    /// Adds a standalone node.
    pub fn add_standalone(&mut self, name: &str) -> &TestNode {
        let (cluster, _faults) = ClusterManager::start(name, self.config.clone(), true, false);
        self.nodes.push(TestNode { name: name.to_string(), cluster, runtime: None });
        self.nodes.last().expect("just pushed")
    }

    /// Gives node `name` its strategy (as a loaded plugin would get it).
    pub async fn attach(&mut self, name: &str) {
        self.attach_with(name, |s| s).await
    }

    /// As [`attach`](Self::attach), with the strategy adjusted by `adjust`.
    pub async fn attach_with(&mut self, name: &str, adjust: impl FnOnce(MemoryStrategy) -> MemoryStrategy) {
        let fabric = self.fabric.clone();
        let node = self.nodes.iter_mut().find(|n| n.name == name).expect("a node with that name");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a strategy runtime");
        let (callbacks, generation) = node.cluster.callbacks();
        let host = ClusterHost::new(callbacks, runtime.handle().clone());
        let strategy = adjust(MemoryStrategy::new(fabric, host.clone(), name, "1.0.0"));
        let boxed = host.into_boundary(strategy);
        node.cluster.attach("memory", "1.0.0", boxed, generation).await;
        if let Some(old) = node.runtime.replace(runtime) {
            old.shutdown_background();
        }
    }

    /// Nodes `names` started and attached; waits until all are clustered.
    pub async fn clustered(names: &[&str]) -> TestCluster {
        let mut cluster = TestCluster::standalone(names, quick_config());
        for name in names {
            cluster.attach(name).await;
        }
        cluster.wait_all(ClusterState::Clustered).await;
        cluster
    }

    pub fn node(&self, name: &str) -> &ClusterManager {
        &self.nodes.iter().find(|n| n.name == name).expect("a node with that name").cluster
    }

    /// Waits until every node is in `state`.
    pub async fn wait_all(&self, state: ClusterState) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for name in names {
            let node = self.node(&name).clone();
            let wanted = state.clone();
            wait_for(&format!("{name} to be {wanted:?}"), Duration::from_secs(10), || {
                same_kind(&node.state(), &wanted)
            })
            .await;
        }
    }
}

/// Whether two states are the same kind (reasons and timings aside).
pub fn same_kind(a: &ClusterState, b: &ClusterState) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Polls `condition` every 10 ms until it holds; panics after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
