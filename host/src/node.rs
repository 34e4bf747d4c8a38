//! A node: the plugin manager over a home directory, running until told to stop.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use crate::cluster::{ClusterConfig, ClusterManager};
use crate::home;
use crate::plugins::manager::{is_plugin_file_name, LoadEnd, LoadOutcome, ManagerConfig, PluginManager};
use crate::plugins::watcher::{Change, Reconciler, Trigger};
use crate::properties::{NodeValues, Properties, PropertiesError};
use crate::status::{self, NodeStatus};

/// How long a changed file must stay unchanged before it is acted on.
const SETTLE: Duration = Duration::from_millis(300);

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Holds conf/ and plugins/.
    pub home: PathBuf,
    /// Node-specific values from CLI flags and the environment, which win
    /// over clusterhost.properties: (key, value, where it came from).
    pub overrides: Vec<(String, String, String)>,
}

impl NodeOptions {
    /// A node with home `home` and no overrides.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        NodeOptions { home: home.into(), overrides: Vec::new() }
    }
}

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("home directory {home} is not usable: {source}; pass --home with a writable directory")]
    Home { home: PathBuf, source: std::io::Error },
    #[error("could not read the plugins directory {dir}: {source}")]
    PluginsDir { dir: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    #[error("could not install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("{0}; fix the flag or environment variable")]
    Override(String),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("the node's background work ended abnormally while stopping: {0}")]
    Stopped(String),
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM (for an application
/// that runs a [`Node`] until told to stop).
///
/// A thread waits on signal-hook rather than tokio's signal driver: tokio's
/// `signal` feature would be compiled into every plugin too (features are
/// unified across the workspace), and each copy of tokio keeps a socket pair
/// in its statics; a plugin library is never unloaded, so each hot upgrade
/// would leak two file descriptors.
pub fn stop_signal() -> Result<impl std::future::Future<Output = ()>, NodeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(NodeError::Signal)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut tx = Some(tx);
            // Later signals are absorbed: the node is already stopping.
            for signal in signals.forever() {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(signal);
                }
            }
        })
        .map_err(NodeError::Signal)?;
    Ok(async move {
        match rx.await {
            Ok(SIGTERM) => tracing::info!("SIGTERM received; stopping"),
            Ok(_) => tracing::info!("interrupted; stopping"),
            // The thread cannot end while the process runs; never stop on a lost sender.
            Err(_) => std::future::pending().await,
        }
    })
}

/// Runs a node until SIGTERM or Ctrl-C, then stops its plugins in reverse order.
pub async fn run(options: NodeOptions) -> Result<(), NodeError> {
    // Installed before the first plugin runs, so a stop request during the
    // initial scan still stops what has started.
    let mut stop_requested = Box::pin(stop_signal()?);
    let Some(node) = Node::start_until(options, &mut stop_requested).await? else { return Ok(()) };
    stop_requested.await;
    node.shutdown().await
}

/// A running node: everything `clusterhost run` starts for a home
/// directory (the plugins/ watcher, the live properties file, the cluster
/// manager with its startup delay, retries and budget, the admin API and
/// console, run/node.json), started by one call and stopped by
/// [`shutdown`](Node::shutdown). An application embeds clusterhost with it
/// (docs/embedding.md): its caches, listeners, tasks and locks are the
/// [`cluster`](Node::cluster)'s.
pub struct Node {
    cluster: ClusterManager,
    plugins: PluginManager,
    admin: AdminHandle,
    /// Ends the background work (the watchers and reporters).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The background work; ends with the node stopped.
    serving: Option<tokio::task::JoinHandle<()>>,
}

/// What a [`Node`] keeps of its admin server while the background work owns it.
struct AdminHandle {
    addr: std::net::SocketAddr,
    probe: crate::admin::ReadinessProbe,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("node", &self.cluster.node()).field("admin", &self.admin.addr).finish()
    }
}

impl Node {
    /// Starts a node over `options.home` (made if missing): reads
    /// conf/clusterhost.properties, loads every plugin in plugins/, starts
    /// the admin API, then lets clustering begin its startup delay and
    /// watches plugins/ and the properties file. Resolves once the initial
    /// plugin scan is done and the admin API listens.
    pub async fn start(options: NodeOptions) -> Result<Node, NodeError> {
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        let node = Node::start_until(options, &mut never).await?;
        Ok(node.expect("a start that is never asked to stop returns a node"))
    }

    /// [`start`](Node::start), stopped (and `None`) if `stop` resolves
    /// during the initial plugin scan.
    async fn start_until(
        options: NodeOptions,
        stop: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> Result<Option<Node>, NodeError> {
        let home = std::path::absolute(&options.home)
            .map_err(|source| NodeError::Home { home: options.home.clone(), source })?;
        let plugins = home::plugins_dir(&home);
        std::fs::create_dir_all(&plugins).map_err(|source| NodeError::Home { home: home.clone(), source })?;
        let properties_path = home::properties_file(&home);
        // The file's stamp is taken before it is read: an edit made from
        // here on is seen by the reload watch (one made while the node
        // starts up would otherwise be taken as the state already read).
        let properties_dir = properties_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let _ = std::fs::create_dir_all(&properties_dir);
        let mut properties_reconciler =
            Reconciler::new(&properties_dir, Duration::from_millis(100), home::is_properties_file);
        properties_reconciler.mark_acted(&properties_path);
        let (properties, unknown) = Properties::load(&properties_path)?;
        warn_unknown(&properties_path, &unknown);
        let properties = with_overrides(properties, &options.overrides)?;
        let values = NodeValues::default();
        values.update(&properties);
        let node_name = properties.node_name();
        let (cluster, mut faults) =
            ClusterManager::start(&node_name, cluster_config(&properties), properties.clustering_enabled, true);
        let mut config = ManagerConfig::new(&home);
        config.config_dir = properties.config_dir(&home);
        config.lifecycle_budget = properties.max_execution;
        config.allow_downgrade = properties.allow_downgrade;
        config.signature = properties.signature_policy();
        config.values = values.clone();
        config.cluster = Some(cluster.clone());
        let manager = PluginManager::new(config).map_err(|source| NodeError::Home { home: home.clone(), source })?;

        tracing::info!(home = %home.display(), node = %node_name, version = env!("CARGO_PKG_VERSION"), "node starting");
        if let Some(warning) = manager.signature_warning() {
            tracing::warn!("{warning}");
        }
        let scan = tokio::select! {
            scan = manager.load_dir(&plugins) => Some(scan),
            _ = stop => None,
        };
        let Some(scan) = scan else {
            // Dropping the scan future may leave a plugin half-loaded; what
            // did start is stopped here.
            shut_down(&home, &manager, &cluster).await?;
            return Ok(None);
        };
        let results = scan.map_err(|source| NodeError::PluginsDir { dir: plugins.clone(), source })?;
        let active = results
            .iter()
            .filter(|(_, r)| matches!(r, Ok(LoadOutcome::Activated { .. } | LoadOutcome::Replaced { .. })))
            .count();
        tracing::info!(plugins = results.len(), active, refused = results.len() - active, "initial plugin scan done");
        // The admin API and console, until the node stops.
        let admin = crate::admin::AdminContext {
            home: home.clone(),
            properties_file: properties_path.clone(),
            cluster: cluster.clone(),
            plugins: manager.clone(),
            values: values.clone(),
        };
        let admin_server = match crate::admin::AdminServer::start(admin, &properties).await {
            Ok(server) => server,
            Err(e) => return shut_down(&home, &manager, &cluster).await.and(Err(e.into())),
        };
        let admin = AdminHandle { addr: admin_server.addr(), probe: admin_server.probe() };
        // Subscribed before clustering may start: a state reached between the
        // first publish and a later subscription would never reach the status
        // file (a watch receiver starts with the current value as seen).
        let mut cluster_changes = cluster.subscribe();
        // Only now may clustering begin its startup delay.
        cluster.release();
        publish(&home, &manager, &cluster);

        let mut reconciler = Reconciler::new(&plugins, SETTLE, is_watched_file);
        for (file, _) in &results {
            reconciler.mark_acted(file);
            reconciler.mark_acted(&crate::plugins::signature::signature_path(file));
        }
        let plugin_trigger = Trigger::new(&plugins, properties.watch, properties.poll_interval);
        tracing::info!(
            dir = %plugins.display(),
            mode = if plugin_trigger.is_polling() { "poll" } else { "notify" },
            "watching the plugins directory"
        );
        let watch_plugins = watch_plugins(manager.clone(), cluster.clone(), home.clone(), reconciler, plugin_trigger);
        let properties_trigger = Trigger::new(&properties_dir, properties.watch, properties.poll_interval);
        let watch_properties = watch_properties(
            PropertiesWatch { reconciler: properties_reconciler, trigger: properties_trigger, file: properties_path },
            manager.clone(),
            cluster.clone(),
            values,
            properties,
            options.overrides.clone(),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (bg_manager, bg_cluster) = (manager.clone(), cluster.clone());
        let serving = tokio::spawn(async move {
            let (manager, cluster) = (bg_manager, bg_cluster);
            let report_cluster = async {
                loop {
                    tokio::select! {
                        changed = cluster_changes.changed() => {
                            if changed.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        Some(fault) = faults.recv() => manager.fault(&fault.plugin, &fault.reason).await,
                    }
                    publish(&home, &manager, &cluster);
                }
            };
            tokio::select! {
                _ = watch_plugins => {}
                _ = watch_properties => {}
                _ = report_cluster => {}
                _ = stop_rx => {}
            }
            // No more requests: a write acknowledged after the strategy left would
            // exist only here, and be lost with the process.
            admin_server.stop().await;
            if let Err(e) = shut_down(&home, &manager, &cluster).await {
                tracing::error!("the node did not stop cleanly: {e}");
            }
        });
        Ok(Some(Node { cluster, plugins: manager, admin, stop: Some(stop_tx), serving: Some(serving) }))
    }

    /// The cluster manager: caches, entry listeners, tasks, locks, status.
    pub fn cluster(&self) -> &ClusterManager {
        &self.cluster
    }

    /// The plugin manager: the records of every plugin file, loads and unloads.
    pub fn plugins(&self) -> &PluginManager {
        &self.plugins
    }

    /// Where the admin API and console listen.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.admin.addr
    }

    /// Whether the node is ready for client traffic and why, as `/readyz`
    /// answers it (docs/load-balancing.md).
    pub fn readiness(&self) -> crate::admin::contract::Health {
        self.admin.probe.readiness()
    }

    /// Stops the node: the admin API stops taking requests (those in flight
    /// finish, for at most 5 s), the plugins stop in reverse order (a
    /// strategy leaves the cluster, this node keeps its caches' entries),
    /// the cluster manager stops, run/node.json is removed.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            serving.await.map_err(|e| NodeError::Stopped(e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for Node {
    /// A node dropped without [`shutdown`](Node::shutdown) is stopped all
    /// the same, in the background (on the runtime it was started on).
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn with_overrides(mut properties: Properties, overrides: &[(String, String, String)]) -> Result<Properties, NodeError> {
    for (key, value, source) in overrides {
        properties.set_override(key, value, source).map_err(NodeError::Override)?;
    }
    Ok(properties)
}

fn cluster_config(properties: &Properties) -> ClusterConfig {
    ClusterConfig {
        startup_delay: properties.startup_delay,
        retry_count: properties.startup_retry_count,
        retry_interval: properties.startup_retry_interval,
        max_execution: properties.max_execution,
        protection: properties.protection.clone(),
        bounds: properties.bounds.clone(),
    }
}

async fn shut_down(home: &Path, manager: &PluginManager, cluster: &ClusterManager) -> Result<(), NodeError> {
    // Stopping the strategy plugin leaves the cluster first (caches kept).
    manager.stop_all().await;
    cluster.shutdown().await;
    manager.discard_private_copies();
    publish(home, manager, cluster);
    status::remove(home);
    tracing::info!("node stopped");
    Ok(())
}

/// What the plugins/ watcher acts on: plugin files and their signatures.
fn is_watched_file(path: &Path) -> bool {
    is_plugin_file_name(path) || is_signature_file(path)
}

fn is_signature_file(path: &Path) -> bool {
    crate::plugins::signature::plugin_of_signature(path).is_some()
}

/// Acts on changes in plugins/: load (or hot-upgrade) complete files, stop
/// removed ones, load again a refused plugin whose signature is published.
async fn watch_plugins(
    manager: PluginManager,
    cluster: ClusterManager,
    home: PathBuf,
    mut reconciler: Reconciler,
    mut trigger: Trigger,
) {
    loop {
        let complete = trigger.next(reconciler.has_pending().then_some(SETTLE / 3)).await;
        let changes = reconciler.scan_with(Instant::now(), &complete);
        for change in &changes {
            match change {
                // A signature published after its plugin: the plugin's last
                // load was refused (unsigned, say), so it is loaded again.
                // The signature of a running plugin changed: its record
                // shows the new signer (or its absence) from now on.
                Change::Ready(file) | Change::Removed(file) if is_signature_file(file) => {
                    let Some(plugin) = crate::plugins::signature::plugin_of_signature(file) else { continue };
                    let refused = manager.last_load(&plugin).is_some_and(|r| matches!(r.end, LoadEnd::Refused { .. }));
                    if refused && plugin.is_file() && matches!(change, Change::Ready(_)) {
                        tracing::info!(file = %plugin.display(), "signature published for a plugin whose last load was refused; loading it again");
                        let _ = manager.load(&plugin).await;
                    } else {
                        manager.refresh_signature(&plugin).await;
                    }
                }
                Change::Ready(file) => {
                    tracing::info!(file = %file.display(), "plugin file added or replaced");
                    let _ = manager.load(file).await;
                }
                Change::Removed(file) => {
                    tracing::info!(file = %file.display(), "plugin file removed");
                    manager.unload(file, "its file was removed").await;
                }
            }
        }
        if !changes.is_empty() {
            publish(&home, &manager, &cluster);
        }
    }
}

/// The properties file's watch, set up before the file is first read.
struct PropertiesWatch {
    reconciler: Reconciler,
    trigger: Trigger,
    file: PathBuf,
}

/// Reloads the properties file when it changes; a bad edit changes nothing.
async fn watch_properties(
    watch: PropertiesWatch,
    manager: PluginManager,
    cluster: ClusterManager,
    values: NodeValues,
    mut current: Properties,
    overrides: Vec<(String, String, String)>,
) {
    let PropertiesWatch { mut reconciler, mut trigger, file } = watch;
    loop {
        trigger
            .next(Some(if reconciler.has_pending() { Duration::from_millis(50) } else { Duration::from_secs(1) }))
            .await;
        if reconciler.scan(Instant::now()).is_empty() {
            continue;
        }
        let loaded = Properties::load(&file).map_err(|e| e.to_string()).and_then(|(properties, unknown)| {
            warn_unknown(&file, &unknown);
            with_overrides(properties, &overrides).map_err(|e| e.to_string())
        });
        match loaded {
            Ok(properties) => {
                if properties != current {
                    manager.apply(properties.max_execution, properties.allow_downgrade);
                    manager.apply_signature(properties.signature_policy());
                    if properties.signature_policy() != current.signature_policy() {
                        if let Some(warning) = manager.signature_warning() {
                            tracing::warn!("{warning}");
                        }
                    }
                    cluster.apply(cluster_config(&properties));
                    values.update(&properties);
                    tracing::info!(file = %file.display(), "properties reloaded: {properties:?}");
                    cluster
                        .event_log()
                        .record(crate::event_log::What::PropertiesReloaded { file: file.display().to_string() });
                    if properties.clustering_enabled != current.clustering_enabled {
                        if let Err(e) = cluster.set_enabled(properties.clustering_enabled).await {
                            tracing::warn!("could not switch clustering as clustering.enabled asks: {e}");
                        }
                    }
                    current = properties;
                }
            }
            Err(e) => tracing::warn!(file = %file.display(), "{e}"),
        }
    }
}

fn warn_unknown(file: &Path, unknown: &[crate::properties::UnknownKey]) {
    for key in unknown {
        tracing::warn!("{}:{}: unknown property {:?} ignored; check its spelling", file.display(), key.line, key.key);
    }
}

fn publish(home: &Path, manager: &PluginManager, cluster: &ClusterManager) {
    let status = NodeStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        plugins: manager.records(),
        cluster: Some(cluster.status()),
    };
    if let Err(e) = status::write(home, &status) {
        tracing::warn!("could not write the node status file {}: {e}", home::status_file(home).display());
    }
}
