//! In-process cluster nodes for the cluster-core suite, one suite for every
//! strategy:
//!
//! - [`Backend::Standalone`]: no plugin at all; each node's built-in
//!   standalone strategy serves it (a "cluster" of one, never joined);
//! - [`Backend::Memory`]: each node's strategy is the in-memory one, made
//!   with `ClusterHost::into_boundary` on its own runtime, as a loaded
//!   plugin's would be;
//! - [`Backend::Gossip`]: each node loads the real gossip plugin (`.so`)
//!   through its own `PluginManager` (a private copy per node, so each has
//!   its own chitchat and data plane), on 127.0.0.1 with ports chosen per test;
//! - [`Backend::Redis`] / [`Backend::RedisSentinel`] /
//!   [`Backend::RedisCluster`]: each node loads the real redis plugin,
//!   against a `redis-server` (a master with a replica and a Sentinel, or a
//!   3-master Redis Cluster) the cluster starts for itself and stops when
//!   dropped.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterConfig, ClusterManager, ClusterState};
use clusterhost::properties::{NodeValues, Properties};
use clusterhost::{ManagerConfig, PluginManager};
use clusterhost_plugin_api::memory::{MemoryFabric, MemoryStrategy};
use clusterhost_plugin_api::ClusterHost;

/// Which strategy the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The host's built-in standalone strategy: nothing is attached.
    Standalone,
    Memory,
    Gossip,
    Redis,
    RedisSentinel,
    RedisCluster,
}

/// The Redis a redis-backed test cluster runs against.
pub enum RedisBackend {
    Single(crate::redis::RedisServer),
    Sentinel(crate::redis::RedisSentinel),
    Cluster(crate::redis::RedisCluster),
}

impl RedisBackend {
    pub fn start(backend: Backend) -> Option<RedisBackend> {
        match backend {
            Backend::Redis => Some(RedisBackend::Single(crate::redis::RedisServer::start())),
            Backend::RedisSentinel => Some(RedisBackend::Sentinel(crate::redis::RedisSentinel::start())),
            Backend::RedisCluster => Some(RedisBackend::Cluster(crate::redis::RedisCluster::start())),
            Backend::Standalone | Backend::Memory | Backend::Gossip => None,
        }
    }

    /// (mode, urls) for conf/redis.toml.
    pub fn target(&self) -> (&'static str, Vec<String>) {
        match self {
            RedisBackend::Single(server) => ("single", vec![server.url()]),
            RedisBackend::Sentinel(s) => ("sentinel", vec![s.sentinel.url()]),
            RedisBackend::Cluster(cluster) => ("cluster", cluster.urls()),
        }
    }
}

/// Writes a redis member's conf/redis.toml: `mode`, `urls`, `prefix`.
pub fn write_redis_conf(conf: &std::path::Path, mode: &str, urls: &[String], prefix: &str) {
    std::fs::create_dir_all(conf).expect("conf/ can be made");
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let text = format!("mode = {mode:?}\nurls = [{}]\nkey_prefix = {prefix:?}\n", urls.join(", "));
    std::fs::write(conf.join("redis.toml"), text).expect("redis.toml can be written");
}

/// One in-process node.
pub struct TestNode {
    pub name: String,
    pub cluster: ClusterManager,
    /// Memory: the strategy's own runtime, as a plugin would own one.
    runtime: Option<tokio::runtime::Runtime>,
    /// Gossip: the node's plugin manager, home and plugin file.
    plugins: Option<(PluginManager, tempfile::TempDir, PathBuf)>,
    port: u16,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Nodes of one cluster.
pub struct TestCluster {
    pub backend: Backend,
    pub fabric: Arc<MemoryFabric>,
    pub nodes: Vec<TestNode>,
    config: ClusterConfig,
    /// Gossip: every node's port (the static member list), fixed up front.
    ports: Vec<u16>,
    /// Redis backends: the server(s), stopped when the cluster is dropped.
    pub redis: Option<RedisBackend>,
}

/// Settings for quick tests: no startup delay, a 2 s budget.
pub fn quick_config() -> ClusterConfig {
    ClusterConfig {
        startup_delay: Duration::ZERO,
        retry_count: 1,
        retry_interval: Duration::from_millis(100),
        max_execution: Duration::from_secs(2),
    }
}

/// Writes a gossip member's configuration into `conf`: conf/gossip.toml
/// with the static member list `members` ("host:port"), auto-increment off
/// (a member is where the list says) and multicast as given, plus the
/// cluster key (64 hex digits).
pub fn write_gossip_conf(conf: &std::path::Path, cluster: &str, key: &str, members: &[String], multicast: bool) {
    std::fs::create_dir_all(conf).expect("conf/ can be made");
    let members: Vec<String> = members.iter().map(|m| format!("{m:?}")).collect();
    let gossip = format!(
        "cluster_name = {cluster:?}\n\n[network]\nport_auto_increment = false\n\n[discovery]\nmembers = [{}]\n\n[discovery.multicast]\nenabled = {multicast}\n",
        members.join(", ")
    );
    std::fs::write(conf.join("gossip.toml"), gossip).expect("gossip.toml can be written");
    std::fs::write(conf.join("cluster.key"), format!("{key}\n")).expect("the key can be written");
}

/// Members `127.0.0.1:port` for `ports`.
pub fn loopback_members(ports: &[u16]) -> Vec<String> {
    ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
}

/// A port free for both UDP and TCP on 127.0.0.1 (the gossip member port).
pub fn free_member_port() -> u16 {
    crate::free_port_in(crate::PORTS, |port| {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
    })
}

impl TestCluster {
    /// Standalone nodes named `names` (no strategy yet).
    pub fn standalone(backend: Backend, names: &[&str], config: ClusterConfig) -> TestCluster {
        // RUST_LOG=info shows the nodes' and plugins' logs in test output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let ports = names.iter().map(|_| free_member_port()).collect();
        let redis = RedisBackend::start(backend);
        let mut cluster = TestCluster { backend, fabric: MemoryFabric::new(), nodes: Vec::new(), config, ports, redis };
        for name in names {
            cluster.add_standalone(name);
        }
        cluster
    }

    /// Adds a standalone node.
    pub fn add_standalone(&mut self, name: &str) -> &TestNode {
        let (cluster, _faults) = ClusterManager::start(name, self.config.clone(), true, false);
        let index = self.nodes.len();
        if index >= self.ports.len() {
            self.ports.push(free_member_port());
        }
        let port = self.ports[index];
        self.nodes.push(TestNode { name: name.to_string(), cluster, runtime: None, plugins: None, port });
        self.nodes.last().expect("just pushed")
    }

    /// Gives node `name` its strategy (as a loaded plugin would get it).
    pub async fn attach(&mut self, name: &str) {
        self.attach_with(name, |s| s).await
    }

    /// As [`attach`](Self::attach); `adjust` changes the memory strategy
    /// (failure injection; memory backend only).
    pub async fn attach_with(&mut self, name: &str, adjust: impl FnOnce(MemoryStrategy) -> MemoryStrategy) {
        match self.backend {
            Backend::Standalone => {}
            Backend::Memory => self.attach_memory(name, adjust).await,
            Backend::Gossip | Backend::Redis | Backend::RedisSentinel | Backend::RedisCluster => {
                self.attach_plugin(name).await
            }
        }
    }

    async fn attach_memory(&mut self, name: &str, adjust: impl FnOnce(MemoryStrategy) -> MemoryStrategy) {
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

    /// Loads the backend's real plugin (a private copy) on node `name`.
    async fn attach_plugin(&mut self, name: &str) {
        let members = loopback_members(&self.ports);
        let home = tempfile::tempdir().expect("a node home");
        let conf = home.path().join("conf");
        let lib = match &self.redis {
            Some(redis) => {
                let (mode, urls) = redis.target();
                write_redis_conf(&conf, mode, &urls, "suite");
                "redis_strategy"
            }
            None => {
                write_gossip_conf(&conf, "suite", &"5a".repeat(32), &members, false);
                "gossip"
            }
        };
        let node = self.nodes.iter_mut().find(|n| n.name == name).expect("a node with that name");
        let values = NodeValues::default();
        let properties =
            Properties { node_name: Some(name.to_string()), cluster_port: Some(node.port), ..Properties::default() };
        values.update(&properties);
        let mut config = ManagerConfig::new(home.path());
        config.values = values;
        config.cluster = Some(node.cluster.clone());
        config.lifecycle_budget = Duration::from_secs(20);
        let plugins = PluginManager::new(config).expect("a plugin manager");
        let file = crate::plugin(lib);
        plugins.load(&file).await.unwrap_or_else(|e| panic!("the {lib} plugin loads: {e}"));
        node.plugins = Some((plugins, home, file));
    }

    /// Takes node `name`'s strategy away: it leaves the cluster, keeping its caches.
    pub async fn detach(&mut self, name: &str) {
        let node = self.nodes.iter_mut().find(|n| n.name == name).expect("a node with that name");
        match self.backend {
            Backend::Standalone => {}
            Backend::Memory => node.cluster.detach("memory").await,
            Backend::Gossip | Backend::Redis | Backend::RedisSentinel | Backend::RedisCluster => {
                if let Some((plugins, _, file)) = &node.plugins {
                    plugins.unload(file, "detached by the test").await;
                }
            }
        }
    }

    /// Node `name` dies without a goodbye (memory), or its strategy stops
    /// (the plugin backends; real crashes are covered with processes).
    pub async fn crash(&mut self, name: &str) {
        match self.backend {
            Backend::Standalone => {}
            Backend::Memory => self.fabric.crash(name),
            Backend::Gossip | Backend::Redis | Backend::RedisSentinel | Backend::RedisCluster => {
                self.detach(name).await
            }
        }
    }

    /// Nodes `names` started and attached; waits until all are clustered
    /// and see each other.
    pub async fn clustered(backend: Backend, names: &[&str]) -> TestCluster {
        let mut cluster = TestCluster::standalone(backend, names, quick_config());
        for name in names {
            cluster.attach(name).await;
        }
        cluster.wait_all(ClusterState::Clustered).await;
        cluster.wait_members(names.len()).await;
        cluster
    }

    /// One node, `name`, as the backend runs a member alone: in service and
    /// clustered on its own for a plugin backend, standalone for
    /// [`Backend::Standalone`]. The suite's single-member tests start here.
    pub async fn alone(backend: Backend, name: &str) -> TestCluster {
        match backend {
            Backend::Standalone => TestCluster::standalone(backend, &[name], quick_config()),
            _ => TestCluster::clustered(backend, &[name]).await,
        }
    }

    /// Node `name`'s cluster manager.
    pub fn node(&self, name: &str) -> &ClusterManager {
        &self.nodes.iter().find(|n| n.name == name).expect("a node with that name").cluster
    }

    /// Waits until every node is in `state`.
    pub async fn wait_all(&self, state: ClusterState) {
        for node in &self.nodes {
            let wanted = state.clone();
            let cluster = node.cluster.clone();
            wait_for(&format!("{} to be {wanted:?}", node.name), Duration::from_secs(30), || {
                same_kind(&cluster.state(), &wanted)
            })
            .await;
        }
    }

    /// Waits until every node sees `n` members.
    pub async fn wait_members(&self, n: usize) {
        for node in &self.nodes {
            let cluster = node.cluster.clone();
            wait_for(&format!("{} to see {n} members", node.name), Duration::from_secs(30), || {
                cluster.members().len() == n
            })
            .await;
        }
    }

    /// Node `name`'s plugin manager and its home (plugin backends).
    pub fn plugin_manager(&self, name: &str) -> (&PluginManager, &std::path::Path) {
        let node = self.nodes.iter().find(|n| n.name == name).expect("a node with that name");
        let (plugins, home, _) = node.plugins.as_ref().expect("a plugin-backed node has a plugin manager");
        (plugins, home.path())
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

/// Awaits `condition` every 10 ms until it holds; panics after `timeout`
/// (for conditions that need I/O, such as a clustered cache's size).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
