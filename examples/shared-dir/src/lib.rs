//! An example cluster strategy, small enough to read top to bottom: members, cache entries and
//! settings are files (`members/<id>`, `caches/<name>/<key>`, `settings/<key>`, each name in hex) in
//! a directory every member reaches (a shared mount). No tasks, no locks: the trait's defaults say so.

mod files;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterhost_plugin_api::cluster::{now_ms, Entry, Member, StrategyEvent};
use clusterhost_plugin_api::config_file::{ConfigError, ConfigFile};
use clusterhost_plugin_api::membership::AnnouncedView;
use clusterhost_plugin_api::sync::lock;
use clusterhost_plugin_api::{ClusterHost, Host, PluginResult, Strategy};
use files::hex;

clusterhost_plugin_api::declare_strategy! {
    id: "shared-dir",
    description: "Example cluster strategy: members, cache entries and settings as files in a shared directory",
    host_req: "^0.1",
    conflicts: [],
    wire_protocol: "1.0",
    strategy: SharedDir::make,
}

/// conf/shared-dir.toml; the repository's copy lists every key with its default.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The directory every member reaches; relative to the config folder.
    dir: PathBuf,
    /// How often a member rewrites its own file and reads the others' (200 if unset).
    heartbeat_ms: Option<u64>,
    /// A member whose file is older than this is gone (1500 if unset).
    expiry_ms: Option<u64>,
}

/// Reads conf/shared-dir.toml: the shared directory, the heartbeat and the expiry.
fn load(file: &Path) -> Result<(PathBuf, Duration, Duration), ConfigError> {
    let Some(text) = ConfigFile::read(file)? else {
        let detail = "it does not exist, and dir (the shared directory) has no default".into();
        return Err(ConfigError::Unreadable { file: file.to_owned(), name: "shared-dir.toml".into(), detail });
    };
    let source = ConfigFile { plugin: "shared-dir", file, text: &text };
    let config: Config = source.parse()?;
    let (heartbeat, expiry) = (config.heartbeat_ms.unwrap_or(200), config.expiry_ms.unwrap_or(1500));
    if heartbeat == 0 || expiry < 2 * heartbeat {
        let message = "heartbeat_ms must be above 0, and expiry_ms at least twice heartbeat_ms";
        return Err(source.invalid("expiry_ms", message));
    }
    let dir = file.parent().unwrap_or(Path::new(".")).join(config.dir);
    Ok((dir, Duration::from_millis(heartbeat), Duration::from_millis(expiry)))
}

/// The strategy: its state, and its two tasks (poller, event delivery), aborted when it is dropped.
pub struct SharedDir {
    shared: Arc<Shared>,
    _tasks: tokio::task::JoinSet<()>,
}

/// The strategy's state, shared with its poller.
struct Shared {
    /// The shared directory.
    root: PathBuf,
    /// A member whose file is older than this is gone.
    expiry: Duration,
    /// This member, as its file says (`started_at_ms` is set at each join).
    me: Member,
    /// Held through each read of the directory, so views are applied in the order they were read.
    scan: Mutex<()>,
    /// The last view; held only to copy or replace it, never during I/O.
    view: Mutex<View>,
    /// Events in order, for a task to deliver under no lock (delivering one may drop the strategy).
    events: tokio::sync::mpsc::UnboundedSender<StrategyEvent>,
}

/// What this member last read of the directory.
#[derive(Default)]
struct View {
    /// The live members, senior first; this one among them (with its join time) while joined.
    members: Vec<Member>,
    /// What the host was told of `members`: the next view's events come from it.
    announced: AnnouncedView,
    /// The settings last read, to tell which ones changed.
    settings: Vec<(String, String)>,
}

impl SharedDir {
    /// Reads the config, makes the directory and starts the poller (settings at once, members once joined).
    fn make(host: &Host, cluster: &ClusterHost) -> PluginResult<SharedDir> {
        let (root, heartbeat, expiry) = load(&host.config_file())?;
        // Made now, so a directory this node cannot write is refused at load.
        let members = root.join("members");
        std::fs::create_dir_all(&members).map_err(files::io("create", &members))?;
        tracing::info!(dir = %root.display(), "shared-dir strategy ready");
        let (address, plugin_version) =
            (host.property("node.bind").unwrap_or_default(), host.manifest().version.to_string());
        let me = Member { id: host.node_name(), address, started_at_ms: 0, plugin_version };
        let (events, mut queued) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared { root, expiry, me, scan: Mutex::default(), view: Mutex::default(), events });
        let mut tasks = tokio::task::JoinSet::new();
        let cluster = cluster.clone();
        tasks.spawn(async move {
            while let Some(event) = queued.recv().await {
                cluster.emit(event);
            }
        });
        tasks.spawn(poll(shared.clone(), heartbeat));
        Ok(SharedDir { shared, _tasks: tasks })
    }
}

/// Runs `op(arg)` on the blocking pool, as file calls block. A dropped caller leaves it to finish.
async fn run<A: Send + 'static, T: Send + 'static>(
    arg: A,
    op: impl FnOnce(A) -> files::Result<T> + Send + 'static,
) -> PluginResult<T> {
    Ok(tokio::task::spawn_blocking(move || op(arg)).await??)
}

/// Reads the directory every `heartbeat`; a directory gone away fails each time: one line per 10 s.
async fn poll(shared: Arc<Shared>, heartbeat: Duration) {
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let failed = clusterhost_plugin_api::throttle::Throttled::default();
    loop {
        beat.tick().await;
        if let Err(e) = run(shared.clone(), |s| s.refresh(None)).await {
            failed.warn(format_args!("{e}"));
        }
    }
}

impl Shared {
    /// Removes this member's file, silently: `stop_clustering` never announces its own `Left`.
    fn leave(&self) -> files::Result<()> {
        let _scan = lock(&self.scan);
        let mut view = lock(&self.view);
        view.members.clear();
        view.announced.forget();
        drop(view);
        files::remove(&self.root.join("members").join(hex(self.me.id.as_bytes()))).map(drop)
    }

    /// One read of the directory, at a heartbeat or as member `joining` joins: the settings (even
    /// while not joined, so a member switched off sees the switch), then, while joined, the members.
    fn refresh(&self, joining: Option<Member>) -> files::Result<()> {
        let _scan = lock(&self.scan);
        let mut settings = Vec::new();
        for (key, path) in files::list(&self.root.join("settings"))? {
            let Some((_, value)) = files::read(&path)? else { continue };
            settings.extend(String::from_utf8(key).ok().zip(String::from_utf8(value).ok()));
        }
        settings.sort();
        let mut view = lock(&self.view);
        let changed = settings.iter().filter(|setting| !view.settings.contains(setting)).cloned();
        let events: Vec<_> = changed.map(|(key, value)| StrategyEvent::SettingChanged { key, value }).collect();
        view.settings = settings;
        let me = joining.clone().or_else(|| view.members.iter().find(|m| m.id == self.me.id).cloned());
        drop(view);
        self.queue(events); // Before the members are read, so a failure there cannot lose them.
        let Some(me) = me else { return Ok(()) };
        let members = self.beat(&me)?;
        let ids = members.iter().map(|m| m.id.clone()).collect();
        let senior = members.first().map(|m| m.id.clone());
        let mut view = lock(&self.view);
        let events = view.announced.update(&me.id, ids, senior);
        view.members = members;
        drop(view);
        // No Joined for this member's own join: the host announces it when start_clustering returns.
        self.queue(events);
        Ok(())
    }

    /// Rewrites member `me`'s file and reads the live members, senior first (the oldest join, the
    /// smaller id on a tie). A file older than the expiry is gone: whoever sees it first removes it.
    fn beat(&self, me: &Member) -> files::Result<Vec<Member>> {
        let folder = self.root.join("members");
        let value = format!("{}\n{}", me.plugin_version, me.address);
        files::write(&folder.join(hex(me.id.as_bytes())), me.started_at_ms, value.as_bytes())?;
        let mut members = vec![me.clone()];
        let others = files::list(&folder)?.into_iter().filter(|(id, _)| id != me.id.as_bytes());
        for (id, path) in others.filter_map(|(id, path)| Some((String::from_utf8(id).ok()?, path))) {
            let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else { continue };
            if modified.elapsed().unwrap_or_default() > self.expiry {
                let _ = files::remove(&path);
            } else if let Ok(Some((started_at_ms, value))) = files::read(&path) {
                let text = String::from_utf8_lossy(&value);
                let (plugin_version, address) = text.split_once('\n').unwrap_or((&text, ""));
                let (plugin_version, address) = (plugin_version.to_string(), address.to_string());
                members.push(Member { id, address, started_at_ms, plugin_version });
            }
        }
        members.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        Ok(members)
    }

    /// Queues `events` for delivery, in order.
    fn queue(&self, events: impl IntoIterator<Item = StrategyEvent>) {
        for event in events {
            tracing::info!(?event, "announced");
            let _ = self.events.send(event); // Fails only once the delivery task ended with the strategy.
        }
    }

    /// The folder of `cache`.
    fn cache(&self, cache: &str) -> PathBuf {
        self.root.join("caches").join(hex(cache.as_bytes()))
    }
}

impl Strategy for SharedDir {
    async fn start_clustering(&self) -> PluginResult<()> {
        let me = Member { started_at_ms: now_ms(), ..self.shared.me.clone() };
        run(self.shared.clone(), |s| s.refresh(Some(me))).await
    }

    async fn stop_clustering(&self) -> PluginResult<()> {
        run(self.shared.clone(), |s| s.leave()).await
    }

    fn local_member(&self) -> String {
        self.shared.me.id.clone()
    }

    fn members(&self) -> Vec<Member> {
        lock(&self.shared.view).members.clone()
    }

    fn senior_member(&self) -> Option<String> {
        lock(&self.shared.view).members.first().map(|m| m.id.clone())
    }

    async fn cache_get(&self, cache: &str, key: &[u8]) -> PluginResult<Option<Vec<u8>>> {
        run(self.shared.cache(cache).join(hex(key)), |path| Ok(files::read(&path)?.map(|(_, value)| value))).await
    }

    async fn cache_put(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> PluginResult<()> {
        let version = self.cluster_time_ms();
        run(self.shared.cache(cache).join(hex(&key)), move |path| files::write(&path, version, &value)).await
    }

    async fn cache_remove(&self, cache: &str, key: &[u8]) -> PluginResult<bool> {
        run(self.shared.cache(cache).join(hex(key)), |path| files::remove(&path)).await
    }

    async fn cache_clear(&self, cache: &str) -> PluginResult<()> {
        let clear = |dir: PathBuf| files::list(&dir)?.iter().try_for_each(|(_, path)| files::remove(path).map(drop));
        run(self.shared.cache(cache), clear).await
    }

    async fn cache_keys(&self, cache: &str) -> PluginResult<Vec<Vec<u8>>> {
        let files = run(self.shared.cache(cache), |dir| files::list(&dir)).await?;
        Ok(files.into_iter().map(|(key, _)| key).collect())
    }

    async fn cache_entries(&self, cache: &str) -> PluginResult<Vec<Entry>> {
        run(self.shared.cache(cache), |dir| {
            let mut entries = Vec::new();
            for (key, path) in files::list(&dir)? {
                entries.extend(files::read(&path)?.map(|(version, value)| Entry { key, value, version }));
            }
            Ok(entries)
        })
        .await
    }

    /// Keeps the newer version of each key; two members merging one key at once: the last rename wins.
    async fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> PluginResult<()> {
        run(self.shared.cache(cache), |dir| {
            for e in entries {
                let path = dir.join(hex(&e.key));
                if files::read(&path)?.is_none_or(|(version, _)| version < e.version) {
                    files::write(&path, e.version, &e.value)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn cache_names(&self) -> PluginResult<Vec<String>> {
        let files = run(self.shared.root.join("caches"), |dir| files::list(&dir)).await?;
        Ok(files.into_iter().filter_map(|(name, _)| String::from_utf8(name).ok()).collect())
    }

    fn settings(&self) -> Vec<(String, String)> {
        lock(&self.shared.view).settings.clone()
    }

    /// Writes the setting, then reads the directory: this member's `SettingChanged` comes from that read.
    async fn put_setting(&self, key: &str, value: &str) -> PluginResult<()> {
        let (path, value) = (self.shared.root.join("settings").join(hex(key.as_bytes())), value.to_owned());
        let write =
            move |s: Arc<Shared>| files::write(&path, now_ms(), value.as_bytes()).and_then(|()| s.refresh(None));
        run(self.shared.clone(), write).await
    }
}
