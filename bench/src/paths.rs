//! The four ways one cache get can be made, set up once and shared by the
//! criterion micro-benchmark (`benches/boundary.rs`) and the `boundary`
//! scenario, so both measure exactly the same calls:
//!
//! - `direct`: the in-memory strategy called as a Rust trait, in-process;
//! - `boundary`: the same strategy behind the ABI (`ClusterHost::into_boundary`:
//!   sabi trait object, panic guard, runtime context; the synchronous read
//!   `cache_get_sync`, API 0.1.3, since the strategy answers from memory),
//!   called through the host's `StrategyRef` as the host's cache does;
//! - `standalone`: the host's `RawCache::get` with no strategy (its own map);
//! - `clustered`: `RawCache::get` with the fixture strategy loaded from a
//!   real `.so` by the plugin manager: the whole clustered path.
//!
//! Every get reads a 64-byte value that is there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterhost::cluster::{CacheRef, ClusterConfig, ClusterManager, ClusterState, RawCache, StrategyRef};
use clusterhost::{ManagerConfig, PluginManager};
use clusterhost_plugin_api::memory::{MemoryFabric, MemoryStrategy};
use clusterhost_plugin_api::{ClusterHost, Strategy, CLUSTER_STRATEGY};
use clusterhost_tests::{plugin, restamp};

const CACHE: &str = "c";

/// The four paths, ready to call; owns everything they need.
pub struct Paths {
    /// The runtime the gets are made on (current thread, as a request handler's would be).
    pub runtime: tokio::runtime::Runtime,
    /// The in-memory strategy's own runtime, as a loaded plugin owns one.
    strategy_runtime: Option<tokio::runtime::Runtime>,
    key: Vec<u8>,
    direct: Arc<MemoryStrategy>,
    boundary: Arc<StrategyRef>,
    /// The cache the boundary path names, made once (as a cache handle is).
    boundary_cache: CacheRef,
    standalone: RawCache,
    clustered: RawCache,
    plugins: PluginManager,
    _home: tempfile::TempDir,
    _managers: (ClusterManager, ClusterManager),
}

impl Paths {
    /// Sets up all four paths, each holding the entry.
    pub fn new() -> Paths {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let strategy_runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
        let key = b"user:12345".to_vec();
        let value = vec![7u8; 64];
        let quiet = ClusterConfig { startup_delay: Duration::ZERO, ..ClusterConfig::default() };

        // Direct and boundary: one strategy each on one fabric, same data.
        let (manager, _faults) = runtime.block_on(async { ClusterManager::start("bench", quiet.clone(), true, false) });
        let fabric = MemoryFabric::new();
        let (callbacks, _) = manager.callbacks();
        let host = ClusterHost::new(callbacks, strategy_runtime.handle().clone());
        let direct = Arc::new(MemoryStrategy::new(fabric.clone(), host.clone(), "direct", "1.0.0"));
        runtime.block_on(direct.cache_put(CACHE, key.clone(), value.clone())).expect("the direct put");
        let boxed = host.into_boundary(MemoryStrategy::new(fabric, host.clone(), "boundary", "1.0.0"));
        let boundary = Arc::new(StrategyRef::new("memory".into(), "1.0.0".into(), boxed));

        // The host's cache API: standalone, and over the fixture strategy loaded from its .so.
        let standalone = manager.caches().raw(CACHE);
        runtime.block_on(standalone.put(key.clone(), value.clone())).expect("the standalone put");
        let home = tempfile::tempdir().expect("a temporary home");
        let file = home.path().join("strategy.so");
        restamp(&plugin("fixture_plugin"), &file, |m| {
            m.id = "strat".into();
            m.provides = vec![CLUSTER_STRATEGY.into()];
            m.metadata.insert("strategy".into(), "memory".into());
        });
        let (plugins, loaded, clustered) = runtime.block_on(async {
            let (cluster, _faults) = ClusterManager::start("loaded", quiet, true, false);
            let mut config = ManagerConfig::new(home.path());
            config.cluster = Some(cluster.clone());
            let plugins = PluginManager::new(config).expect("a plugin manager");
            plugins.load(&file).await.expect("the fixture strategy loads");
            let deadline = Instant::now() + Duration::from_secs(10);
            while cluster.state() != ClusterState::Clustered {
                assert!(Instant::now() < deadline, "the loaded strategy did not cluster: {:?}", cluster.state());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let cache = cluster.caches().raw(CACHE);
            cache.put(key.clone(), value).await.expect("the clustered put");
            (plugins, cluster, cache)
        });
        Paths {
            runtime,
            strategy_runtime: Some(strategy_runtime),
            key,
            direct,
            boundary,
            boundary_cache: CacheRef::named(CACHE),
            standalone,
            clustered,
            plugins,
            _home: home,
            _managers: (manager, loaded),
        }
    }

    /// One get on the strategy as a plain Rust trait.
    pub async fn direct(&self) -> bool {
        self.direct.cache_get(CACHE, &self.key).await.expect("a direct get").is_some()
    }

    /// One get through the ABI boundary, as the host's cache makes it: the
    /// synchronous read first (API 0.1.3), the future when it says so.
    pub async fn boundary(&self) -> bool {
        let value = match self.boundary.get_now(&self.boundary_cache, &self.key) {
            Some(value) => value,
            None => self.boundary.get(&self.boundary_cache, &self.key).await,
        };
        value.expect("a boundary get").is_some()
    }

    /// One get on the host's cache with no strategy.
    pub async fn standalone(&self) -> bool {
        self.standalone.get(&self.key).await.expect("a standalone get").is_some()
    }

    /// One get on the host's cache, clustered over the loaded `.so`.
    pub async fn clustered(&self) -> bool {
        self.clustered.get(&self.key).await.expect("a clustered get").is_some()
    }
}

impl Default for Paths {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Paths {
    fn drop(&mut self) {
        self.runtime.block_on(self.plugins.stop_all());
        if let Some(rt) = self.strategy_runtime.take() {
            rt.shutdown_background();
        }
    }
}
