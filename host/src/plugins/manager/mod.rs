//! The plugin manager: takes a plugin file from discovery to service and
//! back out, recording every step in the registry.
//!
//! One load or unload runs at a time (the `ops` lock), so admission always
//! sees the plugins that are really active. Every change of a record is
//! announced on a watch channel ([`PluginManager::subscribe`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abi_stable::std_types::ROption;
use clusterhost_plugin_api::abi::{PluginBox, PluginModRef};
use clusterhost_plugin_api::{Manifest, CLUSTER_STRATEGY};
use semver::Version;

use crate::plugins::loader::{self, HostContext, LifecycleCall, LifecycleError, PrivateStore};
use crate::plugins::manifest::{self, InspectError};
use crate::plugins::outcome::Laps;
pub use crate::plugins::outcome::{LoadEnd, LoadError, LoadOutcome, LoadReport, LoadStep, RefusalCause};
use crate::plugins::registry::{
    admit, check_rolling_wire, now_ms, Admission, HostVersions, PluginRecord, PluginState, Registry,
};
use crate::plugins::signature::{SignaturePolicy, SignatureStatus};

mod prepared;
mod replace;
mod trust;

use prepared::Prepared;

/// Settings for the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Node home (passed to plugins).
    pub home: PathBuf,
    /// `cluster.config.directory` (passed to plugins).
    pub config_dir: PathBuf,
    /// Longest a create / start / stop call may take (`cluster.max.execution.seconds`).
    pub lifecycle_budget: Duration,
    /// Whether an older version may replace an active plugin.
    pub allow_downgrade: bool,
    /// Where private library copies go; the system temp dir when `None`.
    pub private_dir: Option<PathBuf>,
    /// The versions requirements are checked against.
    pub versions: HostVersions,
    /// Node values plugins can read (`Host::property`).
    pub values: crate::properties::NodeValues,
    /// Where cluster strategies go once their plugin is active.
    pub cluster: Option<crate::cluster::ClusterManager>,
    /// `plugins.signature` and `plugins.signature.revoked` at creation
    /// (later changes: [`PluginManager::apply_signature`]).
    pub signature: SignaturePolicy,
    /// The trusted public keys (`conf/trusted-keys/`), read at each load.
    pub trusted_keys_dir: PathBuf,
}

impl ManagerConfig {
    /// Defaults for a node whose home is `home`.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        let home: PathBuf = home.into();
        ManagerConfig {
            config_dir: crate::home::conf_dir(&home),
            trusted_keys_dir: crate::home::trusted_keys_dir(&home),
            home,
            lifecycle_budget: Duration::from_secs(30),
            allow_downgrade: false,
            private_dir: None,
            versions: HostVersions::current(),
            values: crate::properties::NodeValues::default(),
            cluster: None,
            signature: SignaturePolicy::default(),
        }
    }
}

/// A plugin in service.
struct Active {
    /// What admission checked it against (id, version, capabilities).
    manifest: Manifest,
    /// The published file this plugin came from (its registry key).
    file: PathBuf,
    /// The running instance; dropped once stopped.
    instance: PluginBox,
    /// Kept so a failed upgrade can bring the previous version back.
    module: PluginModRef,
    /// The private copy it was mapped from (deleted once mapped; its
    /// mappings keep the name), so its pages can be given back once retired.
    copy: PathBuf,
}

/// How long after a plugin is retired its library's pages are given back:
/// its runtime's threads exit in the background meanwhile.
const PAGE_OUT_DELAY: Duration = Duration::from_secs(1);

/// Loads, upgrades and stops plugins; cheap to clone.
#[derive(Clone)]
pub struct PluginManager {
    shared: Arc<Shared>,
}

struct Shared {
    /// The settings fixed at creation (home, directories, versions, cluster).
    config: ManagerConfig,
    /// Settings that a properties reload changes: (lifecycle budget, allow downgrade).
    live: Mutex<(Duration, bool)>,
    /// The signature policy in force; a properties reload replaces it and
    /// the next load reads it.
    signature: Mutex<SignaturePolicy>,
    /// Where every library is copied before it is mapped.
    store: PrivateStore,
    /// Active plugins in activation order; held across a whole operation.
    ops: tokio::sync::Mutex<Vec<Active>>,
    /// Readable at any time, also while an operation runs (a std mutex:
    /// it is never held across an await).
    registry: Mutex<Registry>,
    /// How the last load of each file ended, for whoever published it and
    /// waits for its outcome (the admin API).
    reports: Mutex<HashMap<PathBuf, LoadReport>>,
    /// Uploads checked by their receiver, by published file; taken by the
    /// file's next load.
    prepared: Mutex<HashMap<PathBuf, Prepared>>,
    /// Bumped after every change of a record or report, so a waiter wakes
    /// on the change instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    /// What happens to the cluster strategy right now (`gossip 0.1.0 is
    /// being replaced by 0.2.0`), while a load that brings one in service
    /// runs: held by a [`StrategyChange`] guard from its admission until the
    /// load returns, so the readiness check sees the whole replacement,
    /// also the moment between the old strategy's detach and the new one's
    /// attach, when the cluster manager has no strategy.
    strategy_change: Mutex<Option<String>>,
    /// Why no cluster strategy is in service although one was and the
    /// operator did not remove it (it faulted, or a failed upgrade could
    /// not restart the old version); cleared when one is attached again or
    /// its file is removed.
    strategy_lost: Mutex<Option<String>>,
    /// Where loads, refusals, faults and removals are recorded: the
    /// cluster manager's log (the node's one), or one of its own without one.
    events: crate::event_log::EventLog,
}

/// While alive, [`PluginManager::strategy_change`] says what is happening
/// to the cluster strategy; dropped when the load that made it returns
/// (whatever its outcome), so it cannot outlive the change.
struct StrategyChange<'m> {
    manager: &'m PluginManager,
}

impl<'m> StrategyChange<'m> {
    fn begin(manager: &'m PluginManager, what: String) -> Self {
        *clusterhost_plugin_api::sync::lock(&manager.shared.strategy_change) = Some(what);
        StrategyChange { manager }
    }
}

impl Drop for StrategyChange<'_> {
    fn drop(&mut self) {
        *clusterhost_plugin_api::sync::lock(&self.manager.shared.strategy_change) = None;
    }
}

impl PluginManager {
    /// Creates a manager; fails only if the private copy directory cannot be made.
    pub fn new(config: ManagerConfig) -> std::io::Result<Self> {
        let store = PrivateStore::new(config.private_dir.as_deref())?;
        let events = config.cluster.as_ref().map(|c| c.event_log().clone()).unwrap_or_default();
        Ok(PluginManager {
            shared: Arc::new(Shared {
                events,
                live: Mutex::new((config.lifecycle_budget, config.allow_downgrade)),
                signature: Mutex::new(config.signature.clone()),
                config,
                store,
                ops: tokio::sync::Mutex::new(Vec::new()),
                registry: Mutex::new(Registry::default()),
                reports: Mutex::default(),
                prepared: Mutex::default(),
                changes: tokio::sync::watch::Sender::new(0),
                strategy_change: Mutex::new(None),
                strategy_lost: Mutex::new(None),
            }),
        })
    }

    /// Applies reloaded settings; they count from the next lifecycle call.
    pub fn apply(&self, lifecycle_budget: Duration, allow_downgrade: bool) {
        *clusterhost_plugin_api::sync::lock(&self.shared.live) = (lifecycle_budget, allow_downgrade);
    }

    fn budget(&self) -> Duration {
        clusterhost_plugin_api::sync::lock(&self.shared.live).0
    }

    fn allow_downgrade(&self) -> bool {
        clusterhost_plugin_api::sync::lock(&self.shared.live).1
    }

    /// Every plugin file seen, with state and reason. The active strategy
    /// plugin's reason also says why it does not serve when clustering is
    /// asked for but cannot start (e.g. its engine is unreachable: `cluster
    /// start attempt 2 of 2 in 10.0 s; attempt 1 failed: ...`), from the
    /// cluster manager's state: the record alone would say `active`.
    pub fn records(&self) -> Vec<PluginRecord> {
        let mut records = self.registry().records();
        let problem = self.shared.config.cluster.as_ref().and_then(|c| c.strategy_problem());
        if let Some((plugin, problem)) = problem {
            let serving = |r: &PluginRecord| r.state == PluginState::Active && r.id.as_deref() == Some(plugin.as_str());
            for record in records.iter_mut().filter(|r| serving(r)) {
                record.reason = Some(match record.reason.take() {
                    Some(own) => format!("{problem} ({own})"),
                    None => problem.clone(),
                });
            }
        }
        records
    }

    /// The record for one file.
    pub fn record(&self, file: &Path) -> Option<PluginRecord> {
        self.registry().get(file).cloned()
    }

    /// How the last load of `file` ended, if it was loaded.
    pub fn last_load(&self, file: &Path) -> Option<LoadReport> {
        clusterhost_plugin_api::sync::lock(&self.shared.reports).get(file).cloned()
    }

    /// A receiver that wakes after every change of a record or a load
    /// report; read them with [`records`](Self::records) and
    /// [`last_load`](Self::last_load).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Ids and versions of the active plugins, in activation order.
    pub async fn active(&self) -> Vec<(String, Version)> {
        let active = self.shared.ops.lock().await;
        active.iter().map(|a| (a.manifest.id.clone(), a.manifest.version.clone())).collect()
    }

    /// What is happening to the cluster strategy while a load that brings
    /// one into service runs (e.g. `cluster strategy gossip 0.1.0 is being
    /// replaced by 0.2.0`); `None` otherwise. Never waits: readable while
    /// the load runs.
    pub fn strategy_change(&self) -> Option<String> {
        clusterhost_plugin_api::sync::lock(&self.shared.strategy_change).clone()
    }

    /// Why the node has no cluster strategy in service although it had
    /// one that was not removed (faulted, or lost in a failed upgrade);
    /// `None` otherwise. Never waits.
    pub fn strategy_lost(&self) -> Option<String> {
        clusterhost_plugin_api::sync::lock(&self.shared.strategy_lost).clone()
    }

    /// Records (or, with `None`, clears) why the cluster strategy is lost.
    pub(super) fn set_strategy_lost(&self, manifest: &Manifest, why: Option<String>) {
        if manifest.provides.iter().any(|p| p == CLUSTER_STRATEGY) {
            *clusterhost_plugin_api::sync::lock(&self.shared.strategy_lost) = why;
        }
    }

    /// Where private copies are kept.
    pub fn private_dir(&self) -> &Path {
        self.shared.store.path()
    }

    /// Deletes the private copies (the node is stopping).
    pub fn discard_private_copies(&self) {
        self.shared.store.discard();
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock leaves the map itself consistent
        // (each update is one insert), so a poisoned lock is still usable.
        clusterhost_plugin_api::sync::lock(&self.shared.registry)
    }

    /// Creates or replaces a record, and tells the subscribers.
    fn put_record(&self, record: PluginRecord) {
        self.registry().put(record);
        self.shared.changes.send_modify(|n| *n += 1);
    }

    fn set_state(&self, file: &Path, state: PluginState, reason: Option<String>) {
        let mut registry = self.registry();
        registry.set(file, state, reason.clone());
        let record = registry.get(file).cloned();
        drop(registry);
        self.shared.changes.send_modify(|n| *n += 1);
        if let Some(record) = record {
            let plugin = match &record.id {
                Some(id) => id.clone(),
                None => file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            };
            let label = record.label();
            match (&reason, state) {
                (Some(reason), PluginState::Rejected | PluginState::Faulted) => {
                    tracing::warn!(plugin, file = %file.display(), %state, "{reason}")
                }
                (Some(reason), _) => tracing::info!(plugin, file = %file.display(), %state, "{label}: {reason}"),
                (None, _) => tracing::info!(plugin, file = %file.display(), %state, "{label} {state}"),
            }
        }
    }

    /// Validates, loads and starts the plugin in `file`.
    ///
    /// Every refusal is recorded against `file` (state and reason) and
    /// logged. Checks that need no plugin code run before the library is
    /// mapped; see [`LoadError::before_dlopen`].
    pub async fn load(&self, file: &Path) -> Result<LoadOutcome, LoadError> {
        let mut active = self.shared.ops.lock().await;
        let before = self.record(file);
        let mut laps = Laps::start();
        let result = self.load_locked(&mut active, file, &mut laps).await;
        if let Ok(LoadOutcome::Activated { id, version } | LoadOutcome::Replaced { id, to: version, .. }) = &result {
            let took = laps.total().as_secs_f64() * 1e3;
            tracing::info!(plugin = %id, file = %file.display(), "{id} {version} in service {took:.2} ms after its load began ({})", laps.describe());
        }
        // What this load read, before a refusal's record names what runs.
        let sha256 = self.record(file).and_then(|r| r.sha256);
        let mut kept_running = false;
        if let Err(error) = &result {
            match active.iter().find(|a| a.file == file) {
                // The file of a running plugin was replaced by one that was
                // refused: the running version stays, and its record says why
                // (with the hash of what runs, not of the refused file).
                Some(running) => {
                    let mut record = PluginRecord::discovered(file);
                    record.id = Some(running.manifest.id.clone());
                    record.version = Some(running.manifest.version.clone());
                    record.signature = before.as_ref().and_then(|b| b.signature.clone());
                    record.sha256 = before.and_then(|b| b.sha256);
                    record.state = PluginState::Active;
                    record.reason = Some(format!("still running; the replacement file was refused: {error}"));
                    tracing::warn!(plugin = %running.manifest.id, "{}", record.reason.as_deref().unwrap_or_default());
                    self.put_record(record);
                    kept_running = true;
                }
                None => self.set_state(file, error.state(), Some(error.to_string())),
            }
        }
        self.record_load(file, &result, kept_running);
        let end = match &result {
            Ok(outcome) => LoadEnd::Done(outcome.clone()),
            Err(error) => LoadEnd::Refused { cause: error.cause(), kept_running },
        };
        let report = LoadReport { sha256, at_ms: now_ms(), end, steps: laps.steps };
        clusterhost_plugin_api::sync::lock(&self.shared.reports).insert(file.to_owned(), report);
        self.shared.changes.send_modify(|n| *n += 1);
        result
    }

    /// The node's event log (the cluster manager's, when it has one).
    pub fn event_log(&self) -> &crate::event_log::EventLog {
        &self.shared.events
    }

    /// Records how a load ended in the event log (an unchanged republish is no event).
    fn record_load(&self, file: &Path, result: &Result<LoadOutcome, LoadError>, kept_running: bool) {
        use crate::event_log::What;
        let what = match result {
            Ok(LoadOutcome::Activated { id, version }) => {
                What::PluginLoaded { plugin: id.clone(), version: version.to_string() }
            }
            Ok(LoadOutcome::Replaced { id, from, to }) => {
                What::PluginReplaced { plugin: id.clone(), from: from.to_string(), to: to.to_string() }
            }
            Ok(LoadOutcome::Unchanged { .. }) => return,
            Err(error) => What::PluginRefused {
                file: file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| file.display().to_string()),
                cause: error.cause(),
                reason: error.to_string(),
                kept_running,
            },
        };
        self.shared.events.record(what);
    }

    async fn load_locked(
        &self,
        active: &mut Vec<Active>,
        file: &Path,
        laps: &mut Laps,
    ) -> Result<LoadOutcome, LoadError> {
        let config = &self.shared.config;
        let previous = self.record(file);
        let mut record = PluginRecord::discovered(file);
        self.put_record(record.clone());

        // Everything below until `loader::open` reads bytes only. The copy is
        // checked, not the published file, so what is checked is what is mapped.
        if !std::fs::metadata(file).map(|m| m.is_file()).unwrap_or(false) {
            return Err(InspectError::NotRegularFile { path: file.to_owned() }.into());
        }
        // An upload was copied, hashed and parsed as it came in: not again.
        // The signature is read (and its key matched) first; its check of
        // every byte runs on the copy's bytes, beside their hashing and writing.
        let begun = self.begin_signature(file);
        let (copy, sha256, manifest, verified) = match self.take_prepared(file) {
            Some(prepared) => {
                let verified = Self::run_signature_on_copy(&begun.1, &prepared.copy);
                (prepared.copy, prepared.sha256, Ok(prepared.manifest), verified)
            }
            None => {
                let (copy, verified) = self
                    .shared
                    .store
                    .copy_in_checked(file, |bytes| begun.1.run_bytes(bytes))
                    .map_err(|source| LoadError::Copy { path: file.to_owned(), source })?;
                let manifest = manifest::manifest_from_bytes(file, &copy.bytes);
                (copy.path, copy.sha256, manifest, verified)
            }
        };
        laps.lap(LoadStep::Copy);
        record.sha256 = Some(sha256.clone());
        self.put_record(record.clone());
        // A copy refused before dlopen was never mapped: remove it.
        let discard = |error: LoadError| {
            let _ = std::fs::remove_file(&copy);
            error
        };
        let manifest = manifest.map_err(|e| discard(e.into()))?;
        record.id = Some(manifest.id.clone());
        record.version = Some(manifest.version.clone());
        self.put_record(record.clone());

        // Trust before fit: the signature was checked on the copy's bytes,
        // which nothing but this node can change before they are mapped.
        let checked = self.finish_signature(file, begun, verified, &sha256, &manifest);
        record.signature = Some(match &checked {
            Ok(status) => status.clone(),
            Err(e) => SignatureStatus::of_failure(e),
        });
        self.put_record(record.clone());
        checked.map_err(|e| discard(e.into()))?;

        let admission = admit(active.iter().map(|a| &a.manifest), &manifest, &config.versions, self.allow_downgrade())
            .map_err(|e| discard(e.into()))?;
        if let Admission::Replace { .. } = admission {
            if let Some(running) = active.iter().find(|a| a.manifest.id == manifest.id) {
                check_rolling_wire(&running.manifest, &manifest, &self.clustered_with())
                    .map_err(|e| discard(e.into()))?;
            }
        }
        if admission == Admission::Unchanged {
            let _ = std::fs::remove_file(&copy);
            let current = active.iter().find(|a| a.manifest.id == manifest.id).map(|a| a.file.clone());
            if current.as_deref() == Some(file) {
                // The same file republished: keep its record as it was.
                if let Some(previous) = previous {
                    self.put_record(previous);
                }
            } else {
                let from = current.map(|p| p.display().to_string()).unwrap_or_default();
                self.set_state(
                    file,
                    PluginState::Rejected,
                    Some(format!("{} {} is already active from {from}; nothing to do", manifest.id, manifest.version)),
                );
            }
            return Ok(LoadOutcome::Unchanged { id: manifest.id, version: manifest.version });
        }
        let _changing = manifest.provides.iter().any(|p| p == CLUSTER_STRATEGY).then(|| {
            let what = match &admission {
                Admission::Replace { from } => {
                    format!("cluster strategy {} {from} is being replaced by {}", manifest.id, manifest.version)
                }
                _ => format!("cluster strategy {} {} is being loaded", manifest.id, manifest.version),
            };
            StrategyChange::begin(self, what)
        });
        self.set_state(file, PluginState::Validated, None);

        laps.lap(LoadStep::Admit);
        let id = manifest.id.clone();
        let module = loader::open(&id, &copy);
        // Mapped now (or refused): the mapping keeps the pages it needs, and
        // the path is never opened again (each load makes a new one), so the
        // copy goes at once; otherwise every hot upgrade would keep one more
        // library on disk until the node stops.
        let _ = std::fs::remove_file(&copy);
        let module = module?;
        laps.lap(LoadStep::Map);
        let instance = loader::create(&id, module, self.services(&id), self.budget()).await?;
        laps.lap(LoadStep::Create);
        self.set_state(file, PluginState::Loaded, None);

        match admission {
            Admission::Replace { from } => {
                let new = Active { manifest, file: file.to_owned(), instance, module, copy };
                let replaced = self.replace(active, new, from).await;
                laps.lap(LoadStep::Replace);
                replaced
            }
            _ => {
                loader::call(&id, &instance, LifecycleCall::Start, self.budget()).await?;
                laps.lap(LoadStep::Start);
                self.attach_strategy(&manifest, &instance).await?;
                laps.lap(LoadStep::Attach);
                active.push(Active { manifest: manifest.clone(), file: file.to_owned(), instance, module, copy });
                self.set_state(file, PluginState::Active, None);
                Ok(LoadOutcome::Activated { id, version: manifest.version })
            }
        }
    }

    /// The other members this node is clustered with right now (empty
    /// while standalone or alone in its cluster).
    fn clustered_with(&self) -> Vec<String> {
        let Some(cluster) = &self.shared.config.cluster else { return Vec::new() };
        if cluster.state() != crate::cluster::ClusterState::Clustered {
            return Vec::new();
        }
        cluster.members().into_iter().map(|m| m.id).filter(|id| id != cluster.node()).collect()
    }

    fn services(&self, id: &str) -> clusterhost_plugin_api::abi::HostServicesBox {
        let config = &self.shared.config;
        HostContext {
            plugin_id: id.to_string(),
            home_dir: config.home.display().to_string(),
            config_dir: config.config_dir.display().to_string(),
            values: config.values.clone(),
        }
        .into_services()
    }

    /// Stops the plugin loaded from `file` (`reason` is recorded); returns
    /// false if none is active.
    pub async fn unload(&self, file: &Path, reason: &str) -> bool {
        let mut active = self.shared.ops.lock().await;
        let Some(index) = active.iter().position(|a| a.file == file) else {
            return false;
        };
        let plugin = active.remove(index);
        // Taken out by the operator: standalone is what is asked now.
        self.set_strategy_lost(&plugin.manifest, None);
        let (id, version) = (plugin.manifest.id.clone(), plugin.manifest.version.to_string());
        self.stop_one(plugin, reason).await;
        let what = crate::event_log::What::PluginRemoved { plugin: id, version, reason: reason.to_string() };
        self.shared.events.record(what);
        true
    }

    /// Drops the plugin loaded from `file` without stopping it or its
    /// strategy (no `stop_clustering`, no `stop`): its runtime goes away
    /// with every socket and timer, as when the process dies. The other
    /// members learn it only by their own failure detection. For the
    /// conformance suite's in-process "crash"; returns false if none is active.
    pub async fn abandon(&self, file: &Path) -> bool {
        let mut active = self.shared.ops.lock().await;
        let Some(index) = active.iter().position(|a| a.file == file) else {
            return false;
        };
        let plugin = active.remove(index);
        if let Some(cluster) = &self.shared.config.cluster {
            if plugin.manifest.provides.iter().any(|p| p == CLUSTER_STRATEGY) {
                cluster.abandon(&plugin.manifest.id).await;
            }
        }
        self.set_state(
            &plugin.file,
            PluginState::Retired,
            Some("abandoned without stopping (a simulated crash)".into()),
        );
        drop(plugin.instance);
        page_out_later(&plugin.manifest.id, plugin.copy);
        true
    }

    /// Hands a cluster-strategy plugin's strategy to the cluster manager.
    /// A plugin that declares the capability but cannot produce it fails
    /// its start (it is stopped and marked Faulted by the caller).
    async fn attach_strategy(&self, manifest: &Manifest, instance: &PluginBox) -> Result<(), LifecycleError> {
        let Some(cluster) = &self.shared.config.cluster else { return Ok(()) };
        if !manifest.provides.iter().any(|p| p == CLUSTER_STRATEGY) {
            return Ok(());
        }
        let id = manifest.id.clone();
        let failed = |message: String| LifecycleError::Failed { id: id.clone(), phase: LifecycleCall::Start, message };
        let (callbacks, generation) = cluster.callbacks();
        let outcome = match instance.cluster_strategy(callbacks).into_result() {
            Ok(ROption::RSome(strategy)) => {
                cluster.attach(&id, &manifest.version.to_string(), strategy, generation).await;
                self.set_strategy_lost(manifest, None);
                return Ok(());
            }
            Ok(ROption::RNone) => failed(format!(
                "it declares {CLUSTER_STRATEGY} but returned no strategy; implement Plugin::cluster_strategy"
            )),
            Err(e) => failed(format!("cluster_strategy: {e}")),
        };
        // Started but unusable: stop it before reporting.
        if let Err(e) = loader::call(&id, instance, LifecycleCall::Stop, self.budget()).await {
            tracing::warn!(plugin = %id, "{e}");
        }
        Err(outcome)
    }

    async fn detach_strategy(&self, manifest: &Manifest) {
        if let Some(cluster) = &self.shared.config.cluster {
            if manifest.provides.iter().any(|p| p == CLUSTER_STRATEGY) {
                cluster.detach(&manifest.id).await;
            }
        }
    }

    /// Takes the active plugin `id` out of service as Faulted (the cluster
    /// manager reports a strategy that exceeded its budget).
    pub async fn fault(&self, id: &str, reason: &str) {
        let mut active = self.shared.ops.lock().await;
        let Some(index) = active.iter().position(|a| a.manifest.id == id) else { return };
        let plugin = active.remove(index);
        self.set_strategy_lost(
            &plugin.manifest,
            Some(format!("cluster strategy {id} was taken out of service: {}", crate::text::clip(reason))),
        );
        self.detach_strategy(&plugin.manifest).await;
        if let Err(e) = loader::call(id, &plugin.instance, LifecycleCall::Stop, self.budget()).await {
            tracing::warn!(plugin = %id, "{e}");
        }
        self.set_state(&plugin.file, PluginState::Faulted, Some(reason.to_string()));
        let what = crate::event_log::What::PluginFaulted { plugin: id.to_string(), reason: reason.to_string() };
        self.shared.events.record(what);
    }

    async fn stop_one(&self, plugin: Active, reason: &str) {
        let id = plugin.manifest.id.clone();
        self.detach_strategy(&plugin.manifest).await;
        self.set_state(&plugin.file, PluginState::Stopping, None);
        match loader::call(&id, &plugin.instance, LifecycleCall::Stop, self.budget()).await {
            Ok(()) => self.set_state(&plugin.file, PluginState::Retired, Some(reason.into())),
            Err(e) => self.set_state(&plugin.file, PluginState::Faulted, Some(e.to_string())),
        }
        drop(plugin.instance);
        page_out_later(&id, plugin.copy);
    }

    /// Stops every active plugin, the most recently started first.
    pub async fn stop_all(&self) {
        let mut active = self.shared.ops.lock().await;
        while let Some(plugin) = active.pop() {
            self.stop_one(plugin, "stopped with the node").await;
        }
    }

    /// Loads every `*.so` in `dir` (in name order); returns each file's result.
    pub async fn load_dir(&self, dir: &Path) -> std::io::Result<Vec<(PathBuf, Result<LoadOutcome, LoadError>)>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if is_plugin_file_name(&path) {
                files.push(path);
            }
        }
        files.sort();
        let mut results = Vec::new();
        for file in files {
            let result = self.load(&file).await;
            results.push((file, result));
        }
        Ok(results)
    }
}

/// Gives a retired library's resident pages back to the kernel, a moment
/// after its instance was dropped (see [`loader::page_out`]).
fn page_out_later(id: &str, copy: PathBuf) {
    let id = id.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(PAGE_OUT_DELAY).await;
        let paged = tokio::task::spawn_blocking(move || loader::page_out(&copy)).await.unwrap_or(0);
        tracing::debug!(plugin = %id, "gave back the pages of a retired version's library ({} KiB mapped)", paged / 1024);
    });
}

/// Whether `path` names a plugin to load: `*.so`, not hidden, not a temporary.
pub fn is_plugin_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.ends_with(".so")
}
