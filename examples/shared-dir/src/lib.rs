//! An example cluster strategy, small enough to read top to bottom: the
//! members, cache entries and settings are files in one directory every
//! member reaches (a shared mount). It offers no tasks and no locks: the
//! trait's defaults answer `Unsupported`. `files` is the directory's
//! layout, `view` the poller that turns what changed into events.

mod config;
mod files;
mod view;

use std::sync::Arc;

use clusterhost_plugin_api::cluster::{Entry, Member};
use clusterhost_plugin_api::{ClusterHost, Host, PluginResult, Strategy};

use crate::files::Dir;
use crate::view::{Poller, Shared};
use clusterhost_plugin_api::sync::lock;

clusterhost_plugin_api::declare_strategy! {
    id: "shared-dir",
    description: "Example cluster strategy: members, cache entries and settings as files in a shared directory",
    host_req: "^0.1",
    conflicts: [],
    wire_protocol: "1.0",
    strategy: SharedDir::make,
}

/// The strategy: its state, and the poller that lives as long as it does.
pub struct SharedDir {
    shared: Arc<Shared>,
    _poller: Poller,
}

impl SharedDir {
    /// Reads conf/shared-dir.toml, opens the directory and starts the poller
    /// (it reads settings at once; members once this member joins).
    fn make(host: &Host, cluster: &ClusterHost) -> PluginResult<SharedDir> {
        let config = config::Config::load(&host.config_file())?;
        let me = Member {
            id: host.node_name(),
            address: host.property("node.bind").unwrap_or_default(),
            started_at_ms: 0,
            plugin_version: host.manifest().version.to_string(),
        };
        let dir = Dir::open(&config.dir, &me.id)?;
        tracing::info!(dir = %config.dir.display(), "shared-dir strategy ready");
        let (shared, poller) = Shared::start(dir, config, me, cluster.clone());
        Ok(SharedDir { shared, _poller: poller })
    }

    /// Runs `op` on the blocking pool: file calls block. A dropped caller
    /// leaves it to finish, and every write is whole (rename into place).
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Shared) -> files::Result<T> + Send + 'static,
    ) -> PluginResult<T> {
        let shared = self.shared.clone();
        Ok(tokio::task::spawn_blocking(move || op(&shared)).await??)
    }
}

impl Strategy for SharedDir {
    async fn start_clustering(&self) -> PluginResult<()> {
        self.run(|s| s.join()).await
    }

    async fn stop_clustering(&self) -> PluginResult<()> {
        self.run(|s| s.leave()).await
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
        let (cache, key) = (cache.to_owned(), key.to_vec());
        self.run(move |s| Ok(s.dir.get(&cache, &key)?.map(|(_, value)| value))).await
    }

    async fn cache_put(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> PluginResult<()> {
        let (cache, version) = (cache.to_owned(), self.cluster_time_ms());
        self.run(move |s| s.dir.put(&cache, &key, version, &value)).await
    }

    async fn cache_remove(&self, cache: &str, key: &[u8]) -> PluginResult<bool> {
        let (cache, key) = (cache.to_owned(), key.to_vec());
        self.run(move |s| s.dir.remove(&cache, &key)).await
    }

    async fn cache_clear(&self, cache: &str) -> PluginResult<()> {
        let cache = cache.to_owned();
        self.run(move |s| s.dir.clear(&cache)).await
    }

    async fn cache_keys(&self, cache: &str) -> PluginResult<Vec<Vec<u8>>> {
        let cache = cache.to_owned();
        self.run(move |s| s.dir.keys(&cache)).await
    }

    async fn cache_entries(&self, cache: &str) -> PluginResult<Vec<Entry>> {
        let cache = cache.to_owned();
        self.run(move |s| s.dir.entries(&cache)).await
    }

    /// Keeps the newer of each entry and what the directory holds, with
    /// its own version (two members merging the same key at once: the
    /// last rename wins; a real strategy decides in one place).
    async fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> PluginResult<()> {
        let cache = cache.to_owned();
        self.run(move |s| {
            for e in entries {
                if s.dir.get(&cache, &e.key)?.is_none_or(|(version, _)| version < e.version) {
                    s.dir.put(&cache, &e.key, e.version, &e.value)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn cache_names(&self) -> PluginResult<Vec<String>> {
        self.run(|s| s.dir.cache_names()).await
    }

    fn settings(&self) -> Vec<(String, String)> {
        lock(&self.shared.view).settings.clone().into_iter().collect()
    }

    /// Writes the setting, then reads the directory at once: this member's
    /// `SettingChanged` comes from that read, the others' from their poller.
    async fn put_setting(&self, key: &str, value: &str) -> PluginResult<()> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.run(move |s| s.dir.put_setting(&key, &value).and_then(|()| s.refresh())).await
    }
}
