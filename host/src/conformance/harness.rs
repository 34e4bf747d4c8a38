//! In-process members for the suite. Each member has its own cluster
//! manager; a plugin's members each load the file through their own plugin
//! manager, from their own private copy, with their own home and conf/
//! (so each has its own statics, runtime and sockets, as separate
//! processes would). Every cluster a rule makes gets a fresh namespace.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterhost_plugin_api::memory::{MemoryFabric, MemoryStrategy};
use clusterhost_plugin_api::ClusterHost;

use super::check::{wait_for, Failure};
use crate::cluster::{ClusterConfig, ClusterManager, ClusterState, EventTap};
use crate::properties::NodeValues;
use crate::{ManagerConfig, PluginManager};

/// The strategy under test.
pub enum Subject {
    /// The host's built-in standalone strategy (single-member rules only).
    Standalone,
    /// The in-memory reference strategy (`clusterhost_plugin_api::memory`),
    /// crossing the real boundary on its own runtime per member.
    Memory,
    /// The in-memory strategy with deliberate contract bugs
    /// ([`Broken`](super::broken::Broken)): what failures look like.
    Broken,
    /// A strategy plugin file.
    Plugin(PluginSubject),
}

/// A strategy plugin and how to configure each member.
pub struct PluginSubject {
    /// The `.so` each member loads (from its own private copy).
    pub file: PathBuf,
    /// Writes a member's conf/ before it loads the plugin.
    pub configure: Configure,
}

/// Writes one member's configuration files into `setup.conf`.
pub type Configure = Arc<dyn Fn(&MemberSetup<'_>) -> std::io::Result<()> + Send + Sync>;

/// What a member's configuration may depend on.
pub struct MemberSetup<'a> {
    /// The member's conf/ directory (made already).
    pub conf: &'a Path,
    /// The member's name (`node.name`).
    pub name: &'a str,
    /// Its member port (`cluster.port`), free on 127.0.0.1 for TCP and UDP.
    pub port: u16,
    /// Every member port of its cluster, this one included, in member order.
    pub ports: &'a [u16],
    /// Unique to this cluster: a key prefix, directory or cluster name made
    /// from it keeps the suite's clusters apart.
    pub namespace: &'a str,
}

impl Subject {
    /// Whether members of this subject cluster (all but standalone).
    pub fn clusters(&self) -> bool {
        !matches!(self, Subject::Standalone)
    }
}

/// What a rule runs against: the subject, and how many members a rule
/// that scales (membership, caches, settings) starts.
#[derive(Clone)]
pub struct Ctx {
    pub subject: Arc<Subject>,
    pub members: usize,
}

impl Ctx {
    pub fn new(subject: Arc<Subject>, members: usize) -> Self {
        Ctx { subject, members: members.max(2) }
    }

    /// Member names for a scaling rule: a, b, c, ... (`members` of them).
    pub fn names(&self) -> Vec<String> {
        (0..self.members).map(member_name).collect()
    }
}

/// The name of member `i`: a .. z, then m26, m27, ...
fn member_name(i: usize) -> String {
    match u8::try_from(i).ok().filter(|i| *i < 26) {
        Some(i) => char::from(b'a' + i).to_string(),
        None => format!("m{i}"),
    }
}

/// One in-process member.
pub struct Node {
    pub name: String,
    pub cluster: ClusterManager,
    /// Every event its strategies emitted (the host's filtering aside).
    pub tap: EventTap,
    /// Memory: the strategy's own runtime, as a plugin would own one.
    runtime: Option<tokio::runtime::Runtime>,
    /// Plugin: the member's plugin manager, home and the file it loaded.
    plugins: Option<(PluginManager, tempfile::TempDir, PathBuf)>,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The members of one cluster under test.
pub struct Nodes {
    pub subject: Arc<Subject>,
    pub fabric: Arc<MemoryFabric>,
    pub nodes: Vec<Node>,
    config: ClusterConfig,
    ports: Vec<u16>,
    namespace: String,
}

/// Settings for quick rules: no startup delay, a 2 s budget.
pub fn quick_config() -> ClusterConfig {
    ClusterConfig {
        startup_delay: Duration::ZERO,
        retry_count: 1,
        retry_interval: Duration::from_millis(100),
        max_execution: Duration::from_secs(2),
        ..ClusterConfig::default()
    }
}

/// Where member ports come from, when a test process hands out its ports
/// from one place of its own ([`use_port_allocator`]).
static ALLOCATOR: std::sync::OnceLock<fn() -> u16> = std::sync::OnceLock::new();

/// Makes the suite take member ports from `allocator` (a test kit that
/// hands out every port of its process itself).
pub fn use_port_allocator(allocator: fn() -> u16) {
    let _ = ALLOCATOR.set(allocator);
}

/// A port free for both UDP and TCP on 127.0.0.1, below the ephemeral
/// range and handed out once per process (rules run side by side in tests).
pub fn free_member_port() -> u16 {
    if let Some(allocator) = ALLOCATOR.get() {
        return allocator();
    }
    static HANDED_OUT: Mutex<std::collections::BTreeSet<u16>> = Mutex::new(std::collections::BTreeSet::new());
    const RANGE: std::ops::Range<u16> = 26_000..32_768;
    let seed = std::process::id() as u64 ^ clusterhost_plugin_api::cluster::now_ms();
    for attempt in 0u64..10_000 {
        let port = RANGE.start
            + ((seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(attempt * 7919))
                % u64::from(RANGE.end - RANGE.start)) as u16;
        let mut handed_out = clusterhost_plugin_api::sync::lock(&HANDED_OUT);
        if !handed_out.contains(&port)
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in {RANGE:?} on 127.0.0.1")
}

fn new_namespace() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "v{}x{}x{}",
        std::process::id(),
        clusterhost_plugin_api::cluster::now_ms() % 100_000_000,
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

impl Nodes {
    /// Standalone members named `names` (no strategy yet).
    pub fn standalone(subject: Arc<Subject>, names: &[&str], config: ClusterConfig) -> Nodes {
        let ports = names.iter().map(|_| free_member_port()).collect();
        let mut nodes = Nodes {
            subject,
            fabric: MemoryFabric::new(),
            nodes: Vec::new(),
            config,
            ports,
            namespace: new_namespace(),
        };
        for name in names {
            nodes.add_standalone(name);
        }
        nodes
    }

    /// Adds a standalone member.
    pub fn add_standalone(&mut self, name: &str) -> &Node {
        let (cluster, _faults) = ClusterManager::start(name, self.config.clone(), true, false);
        let tap = cluster.tap_events();
        let index = self.nodes.len();
        if index >= self.ports.len() {
            self.ports.push(free_member_port());
        }
        let port = self.ports[index];
        self.nodes.push(Node { name: name.to_string(), cluster, tap, runtime: None, plugins: None, port });
        self.nodes.last().expect("just pushed")
    }

    /// Gives member `name` its strategy (as a loaded plugin would get it).
    pub async fn attach(&mut self, name: &str) -> Result<(), Failure> {
        self.attach_with(name, |s| s).await
    }

    /// As [`attach`](Self::attach); `adjust` changes the memory strategy
    /// (failure injection; memory subject only).
    pub async fn attach_with(
        &mut self,
        name: &str,
        adjust: impl FnOnce(MemoryStrategy) -> MemoryStrategy,
    ) -> Result<(), Failure> {
        let subject = self.subject.clone();
        match &*subject {
            Subject::Standalone => Ok(()),
            Subject::Memory | Subject::Broken => {
                self.attach_memory(name, adjust).await;
                Ok(())
            }
            Subject::Plugin(plugin) => self.attach_plugin(name, plugin).await,
        }
    }

    async fn attach_memory(&mut self, name: &str, adjust: impl FnOnce(MemoryStrategy) -> MemoryStrategy) {
        let fabric = self.fabric.clone();
        let subject = self.subject.clone();
        let node = self.node_mut(name);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a strategy runtime");
        let (callbacks, generation) = node.cluster.callbacks();
        let host = ClusterHost::new(callbacks.clone(), runtime.handle().clone());
        let events_to = match &*subject {
            Subject::Broken => ClusterHost::new(super::broken::own_origin(callbacks, name), runtime.handle().clone()),
            _ => host.clone(),
        };
        let strategy = adjust(MemoryStrategy::new(fabric, events_to, name, "1.0.0"));
        let boxed = match &*subject {
            Subject::Broken => host.into_boundary(super::broken::Broken::new(strategy, host.clone(), name)),
            _ => host.into_boundary(strategy),
        };
        node.cluster.attach("memory", "1.0.0", boxed, generation).await;
        if let Some(old) = node.runtime.replace(runtime) {
            old.shutdown_background();
        }
    }

    /// Loads the plugin (a private copy) on member `name`, configured by the subject.
    async fn attach_plugin(&mut self, name: &str, plugin: &PluginSubject) -> Result<(), Failure> {
        let ports = self.ports.clone();
        let namespace = self.namespace.clone();
        let node = self.node_mut(name);
        let home = tempfile::tempdir().map_err(|e| Failure::failed(format!("could not make a member home: {e}")))?;
        let conf = home.path().join("conf");
        std::fs::create_dir_all(&conf).map_err(|e| Failure::failed(format!("could not make conf/: {e}")))?;
        let setup = MemberSetup { conf: &conf, name, port: node.port, ports: &ports, namespace: &namespace };
        (plugin.configure)(&setup)
            .map_err(|e| Failure::failed(format!("could not write member {name}'s configuration: {e}")))?;
        let mut config = ManagerConfig::new(home.path());
        config.values = NodeValues::member(name, node.port);
        config.cluster = Some(node.cluster.clone());
        config.lifecycle_budget = Duration::from_secs(20);
        let plugins = PluginManager::new(config)
            .map_err(|e| Failure::failed(format!("could not make member {name}'s plugin manager: {e}")))?;
        plugins
            .load(&plugin.file)
            .await
            .map_err(|e| Failure::failed(format!("member {name} could not load {}: {e}", plugin.file.display())))?;
        node.plugins = Some((plugins, home, plugin.file.clone()));
        Ok(())
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).expect("a member with that name")
    }

    /// Takes member `name`'s strategy away: it leaves the cluster (its
    /// strategy's `stop_clustering`), keeping its caches.
    pub async fn detach(&mut self, name: &str) {
        let node = self.node_mut(name);
        if let Some((plugins, _, file)) = &node.plugins {
            plugins.unload(file, "detached by the conformance suite").await;
        } else if node.runtime.is_some() {
            node.cluster.detach("memory").await;
        }
    }

    /// Member `name` dies without a goodbye: its strategy is dropped with
    /// no `stop_clustering` (a plugin's runtime, sockets and timers go).
    pub async fn crash(&mut self, name: &str) {
        let fabric = self.fabric.clone();
        let node = self.node_mut(name);
        if let Some((plugins, _, file)) = &node.plugins {
            plugins.abandon(file).await;
        } else if node.runtime.is_some() {
            fabric.crash(name);
            node.cluster.abandon("memory").await;
        }
    }

    /// Members `names` started and attached; waits until all are clustered
    /// and see each other.
    pub async fn clustered(subject: Arc<Subject>, names: &[&str]) -> Result<Nodes, Failure> {
        let mut nodes = Nodes::standalone(subject, names, quick_config());
        for name in names {
            nodes.attach(name).await?;
        }
        nodes.wait_all(ClusterState::Clustered).await?;
        nodes.wait_members(names.len()).await?;
        Ok(nodes)
    }

    /// As [`clustered`](Self::clustered), each member joining only once the
    /// one before it is in: the cluster's age order is `names`' order.
    pub async fn clustered_in_order(subject: Arc<Subject>, names: &[&str]) -> Result<Nodes, Failure> {
        let mut nodes = Nodes::standalone(subject, names, quick_config());
        for (i, name) in names.iter().enumerate() {
            nodes.attach(name).await?;
            let cluster = nodes.node(name).clone();
            wait_for(&format!("{name} to join as member {}", i + 1), Duration::from_secs(30), || {
                same_kind(&cluster.state(), &ClusterState::Clustered) && cluster.members().len() == i + 1
            })
            .await?;
            // The members already there see it too before the next one
            // comes: "already there" means in every earlier member's view,
            // not only in the joiner's (gossip spreads a join in rounds).
            for earlier in &names[..i] {
                let cluster = nodes.node(earlier).clone();
                wait_for(&format!("{earlier} to see {name} as member {}", i + 1), Duration::from_secs(30), || {
                    cluster.members().len() == i + 1
                })
                .await?;
            }
        }
        nodes.wait_members(names.len()).await?;
        Ok(nodes)
    }

    /// One member, `name`, as the subject runs a member alone: clustered
    /// on its own for a plugin, standalone for [`Subject::Standalone`].
    pub async fn alone(subject: Arc<Subject>, name: &str) -> Result<Nodes, Failure> {
        match &*subject {
            Subject::Standalone => Ok(Nodes::standalone(subject, &[name], quick_config())),
            _ => Nodes::clustered(subject, &[name]).await,
        }
    }

    /// Member `name`'s cluster manager.
    pub fn node(&self, name: &str) -> &ClusterManager {
        &self.member(name).cluster
    }

    /// Member `name`.
    pub fn member(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).expect("a member with that name")
    }

    /// Waits until every member is in `state` (of the same kind).
    pub async fn wait_all(&self, state: ClusterState) -> Result<(), Failure> {
        for node in &self.nodes {
            let cluster = node.cluster.clone();
            let waited = wait_for(&format!("{} to be {state:?}", node.name), Duration::from_secs(30), || {
                same_kind(&cluster.state(), &state)
            })
            .await;
            // Say where it stands at the deadline, not where it started.
            waited.map_err(|e| match e {
                Failure::Failed(reason) => Failure::Failed(format!("{reason} (it is {:?})", cluster.state())),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Waits until every member sees `n` members.
    pub async fn wait_members(&self, n: usize) -> Result<(), Failure> {
        for node in &self.nodes {
            let cluster = node.cluster.clone();
            wait_for(&format!("{} to see {n} members", node.name), Duration::from_secs(30), || {
                cluster.members().len() == n
            })
            .await?;
        }
        Ok(())
    }

    /// Member `name`'s plugin manager and home (plugin subjects).
    pub fn plugin_manager(&self, name: &str) -> Option<(&PluginManager, &Path)> {
        self.member(name).plugins.as_ref().map(|(plugins, home, _)| (plugins, home.path()))
    }
}

/// Whether two states are the same kind (reasons and timings aside).
pub fn same_kind(a: &ClusterState, b: &ClusterState) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}
