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
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterConfig, ClusterState};
pub use clusterhost::conformance::{quick_config, same_kind};
use clusterhost::conformance::{MemberSetup, Nodes, PluginSubject, Subject, Verdict};
use clusterhost::PluginManager;
use clusterhost_plugin_api::memory::MemoryStrategy;

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
    write_spread_redis_conf(conf, mode, urls, prefix, 1)
}

/// As [`write_redis_conf`], with `partitions` per cache (spread caches).
pub fn write_spread_redis_conf(conf: &std::path::Path, mode: &str, urls: &[String], prefix: &str, partitions: u32) {
    write_redis_conf_with(conf, mode, urls, prefix, partitions, "")
}

/// As [`write_spread_redis_conf`], with `extra` TOML at the end (tables
/// such as `[near_cache]`).
pub fn write_redis_conf_with(
    conf: &std::path::Path,
    mode: &str,
    urls: &[String],
    prefix: &str,
    partitions: u32,
    extra: &str,
) {
    std::fs::create_dir_all(conf).expect("conf/ can be made");
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let text = format!(
        "mode = {mode:?}\nurls = [{}]\nkey_prefix = {prefix:?}\npartitions = {partitions}\n{extra}",
        urls.join(", ")
    );
    std::fs::write(conf.join("redis.toml"), text).expect("redis.toml can be written");
}

/// The partitions per cache of the redis members [`check`] runs the
/// conformance rules on: the rules hold for spread caches (the default
/// of one hash per cache is checked by `clusterhost strategy verify` in
/// tests/strategy_verify.rs and by every other redis test).
pub const SUITE_PARTITIONS: u32 = 8;

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

/// The conformance suite's subject for `backend`, and the Redis it runs
/// against (stopped when dropped). Gossip members list each other on
/// 127.0.0.1 with the ports the suite picks; redis members use key prefix
/// `suite` on a server of their own.
pub fn subject(backend: Backend) -> (Arc<Subject>, Option<RedisBackend>) {
    subject_with(backend, 1)
}

/// As [`subject`]; redis members have `partitions` per cache.
pub fn subject_with(backend: Backend, partitions: u32) -> (Arc<Subject>, Option<RedisBackend>) {
    subject_configured(backend, partitions, "")
}

/// As [`subject_with`]; redis members' conf/redis.toml ends with `extra`.
pub fn subject_configured(backend: Backend, partitions: u32, extra: &str) -> (Arc<Subject>, Option<RedisBackend>) {
    let extra = extra.to_string();
    clusterhost::conformance::use_port_allocator(free_member_port);
    let redis = RedisBackend::start(backend);
    let subject = match backend {
        Backend::Standalone => Subject::Standalone,
        Backend::Memory => Subject::Memory,
        Backend::Gossip => Subject::Plugin(PluginSubject {
            file: crate::plugin("gossip"),
            configure: Arc::new(|setup: &MemberSetup<'_>| {
                write_gossip_conf(setup.conf, "suite", &"5a".repeat(32), &loopback_members(setup.ports), false);
                Ok(())
            }),
        }),
        Backend::Redis | Backend::RedisSentinel | Backend::RedisCluster => {
            let (mode, urls) = redis.as_ref().expect("a redis backend").target();
            Subject::Plugin(PluginSubject {
                file: crate::plugin("redis_strategy"),
                configure: Arc::new(move |setup: &MemberSetup<'_>| {
                    write_redis_conf_with(setup.conf, mode, &urls, "suite", partitions, &extra);
                    Ok(())
                }),
            })
        }
    };
    (Arc::new(subject), redis)
}

/// Runs the conformance rule `name` (a test's name, `_` for `-`) against
/// `backend` (redis members with [`SUITE_PARTITIONS`]); panics with the rule's reason unless it passes.
pub async fn check(backend: Backend, name: &str) {
    check_configured(backend, name, SUITE_PARTITIONS, "").await
}

/// As [`check`], redis members with `partitions` per cache and `extra` at
/// the end of their conf/redis.toml.
pub async fn check_configured(backend: Backend, name: &str, partitions: u32, extra: &str) {
    init_logging();
    let rule_name = name.replace('_', "-");
    let rule = clusterhost::conformance::rule(&rule_name).unwrap_or_else(|| panic!("no conformance rule {rule_name}"));
    let (subject, _redis) = subject_configured(backend, partitions, extra);
    let report = rule.run(clusterhost::conformance::Ctx::new(subject, 3)).await;
    assert_eq!(report.verdict, Verdict::Passed, "rule {rule_name} on {backend:?} with {extra:?}: {report:?}");
}

fn init_logging() {
    // RUST_LOG=info shows the nodes' and plugins' logs in test output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Nodes of one cluster, for tests beyond the conformance rules: the
/// suite's [`Nodes`] (every method of theirs works here), with the Redis
/// they run against, and waits that panic instead of failing a rule.
pub struct TestCluster {
    pub backend: Backend,
    nodes: Nodes,
    /// Redis backends: the server(s), stopped when the cluster is dropped.
    pub redis: Option<RedisBackend>,
}

impl std::ops::Deref for TestCluster {
    type Target = Nodes;
    fn deref(&self) -> &Nodes {
        &self.nodes
    }
}

impl std::ops::DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut Nodes {
        &mut self.nodes
    }
}

impl TestCluster {
    /// Standalone nodes named `names` (no strategy yet).
    pub fn standalone(backend: Backend, names: &[&str], config: ClusterConfig) -> TestCluster {
        init_logging();
        let (subject, redis) = subject(backend);
        TestCluster { backend, nodes: Nodes::standalone(subject, names, config), redis }
    }

    /// As [`standalone`](Self::standalone); redis members spread each cache
    /// over `partitions` (conf/redis.toml `partitions`).
    pub fn standalone_spread(backend: Backend, names: &[&str], config: ClusterConfig, partitions: u32) -> TestCluster {
        TestCluster::standalone_configured(backend, names, config, partitions, "")
    }

    /// As [`standalone_spread`](Self::standalone_spread); redis members'
    /// conf/redis.toml ends with `extra`.
    pub fn standalone_configured(
        backend: Backend,
        names: &[&str],
        config: ClusterConfig,
        partitions: u32,
        extra: &str,
    ) -> TestCluster {
        init_logging();
        let (subject, redis) = subject_configured(backend, partitions, extra);
        TestCluster { backend, nodes: Nodes::standalone(subject, names, config), redis }
    }

    /// Gives node `name` its strategy (as a loaded plugin would get it).
    pub async fn attach(&mut self, name: &str) {
        self.nodes.attach(name).await.unwrap_or_else(|e| panic!("attaching {name}: {e:?}"))
    }

    /// As [`attach`](Self::attach); `adjust` changes the memory strategy
    /// (failure injection; memory backend only).
    pub async fn attach_with(&mut self, name: &str, adjust: impl FnOnce(MemoryStrategy) -> MemoryStrategy) {
        self.nodes.attach_with(name, adjust).await.unwrap_or_else(|e| panic!("attaching {name}: {e:?}"))
    }

    /// Nodes `names` started and attached; waits until all are clustered
    /// and see each other.
    pub async fn clustered(backend: Backend, names: &[&str]) -> TestCluster {
        TestCluster::clustered_spread(backend, names, 1).await
    }

    /// As [`clustered`](Self::clustered); redis members spread each cache
    /// over `partitions`.
    pub async fn clustered_spread(backend: Backend, names: &[&str], partitions: u32) -> TestCluster {
        TestCluster::clustered_configured(backend, names, partitions, "").await
    }

    /// As [`clustered_spread`](Self::clustered_spread); redis members'
    /// conf/redis.toml ends with `extra`.
    pub async fn clustered_configured(backend: Backend, names: &[&str], partitions: u32, extra: &str) -> TestCluster {
        let mut cluster = TestCluster::standalone_configured(backend, names, quick_config(), partitions, extra);
        for name in names {
            cluster.attach(name).await;
        }
        cluster.wait_all(ClusterState::Clustered).await;
        cluster.wait_members(names.len()).await;
        cluster
    }

    /// Waits until every node is in `state`.
    pub async fn wait_all(&self, state: ClusterState) {
        self.nodes.wait_all(state).await.unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// Waits until every node sees `n` members.
    pub async fn wait_members(&self, n: usize) {
        self.nodes.wait_members(n).await.unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// Node `name`'s plugin manager and its home (plugin backends).
    pub fn plugin_manager(&self, name: &str) -> (&PluginManager, &std::path::Path) {
        self.nodes.plugin_manager(name).expect("a plugin-backed node has a plugin manager")
    }
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
