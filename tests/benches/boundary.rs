//! Benchmark: the cost of one cache get through the plugin boundary, side
//! by side in one run:
//!
//! - `direct`: the in-memory strategy called as a Rust trait, in-process;
//! - `boundary`: the same strategy behind the ABI (`ClusterHost::into_boundary`:
//!   sabi trait object, `FfiFuture`, panic guard, runtime context), called
//!   through the host's `StrategyRef`;
//! - `host, standalone`: `RawCache::get` with no strategy (the host's own map);
//! - `host, clustered .so`: `RawCache::get` with the fixture strategy loaded
//!   from a real `.so` by the plugin manager: the whole clustered path.
//!
//! `cargo bench -p clusterhost-tests --bench boundary`. `BENCH_ITERATIONS`
//! sets the number of samples (default 15); each sample is 100 000 gets.

use std::future::Future;
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterConfig, ClusterManager, ClusterState, StrategyRef};
use clusterhost::{ManagerConfig, PluginManager};
use clusterhost_plugin_api::memory::{MemoryFabric, MemoryStrategy};
use clusterhost_plugin_api::{ClusterHost, Strategy, CLUSTER_STRATEGY};
use clusterhost_tests::{plugin, restamp};

const OPS: u32 = 100_000;

/// `samples` timings (ns per get) of OPS calls of `get`, which must find
/// the entry, after one warm-up round.
fn sample<F: Future<Output = bool>>(
    runtime: &tokio::runtime::Runtime,
    samples: usize,
    get: impl Fn() -> F,
) -> Vec<f64> {
    let round = || async {
        for _ in 0..OPS {
            assert!(get().await, "the entry is there");
        }
    };
    runtime.block_on(round());
    (0..samples)
        .map(|_| {
            let started = Instant::now();
            runtime.block_on(round());
            started.elapsed().as_nanos() as f64 / OPS as f64
        })
        .collect()
}

fn report(name: &str, mut ns: Vec<f64>, baseline: Option<f64>) -> f64 {
    ns.sort_by(f64::total_cmp);
    let pick = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize];
    let median = pick(0.5);
    let added = baseline.map(|b| format!("  added vs direct: {:>7.1} ns  ratio {:.2}", median - b, median / b));
    println!(
        "{name:<28} n={:<3} median={median:>7.1} ns/get  p10={:>7.1}  p90={:>7.1}{}",
        ns.len(),
        pick(0.1),
        pick(0.9),
        added.unwrap_or_default()
    );
    median
}

fn main() {
    let samples: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let strategy_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let key = postcard_key();

    // Direct and boundary: one strategy each on one fabric, same data.
    let (manager, _faults) = runtime.block_on(async { ClusterManager::start("bench", quiet(), true, false) });
    let fabric = MemoryFabric::new();
    let (callbacks, _) = manager.callbacks();
    let host = ClusterHost::new(callbacks, strategy_runtime.handle().clone());
    let direct = std::sync::Arc::new(MemoryStrategy::new(fabric.clone(), host.clone(), "direct", "1.0.0"));
    runtime.block_on(direct.cache_put("c", key.clone(), vec![7; 64])).unwrap();
    let boxed = host.into_boundary(MemoryStrategy::new(fabric, host.clone(), "boundary", "1.0.0"));
    let boundary = std::sync::Arc::new(StrategyRef::new("memory".into(), "1.0.0".into(), boxed));

    let d = {
        let (direct, key) = (&direct, &key);
        sample(&runtime, samples, move || async move { direct.cache_get("c", key).await.unwrap().is_some() })
    };
    let b = {
        let (boundary, key) = (&boundary, &key);
        sample(&runtime, samples, move || async move { boundary.get("c", key).await.unwrap().is_some() })
    };

    // The host's cache API, standalone and over a loaded .so.
    let standalone = manager.caches().raw("c");
    runtime.block_on(standalone.put(key.clone(), vec![7; 64])).unwrap();
    let s = {
        let (cache, key) = (&standalone, &key);
        sample(&runtime, samples, move || async move { cache.get(key).await.unwrap().is_some() })
    };

    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("strategy.so");
    restamp(&plugin("fixture_plugin"), &file, |m| {
        m.id = "strat".into();
        m.provides = vec![CLUSTER_STRATEGY.into()];
        m.metadata.insert("strategy".into(), "memory".into());
    });
    let loaded = runtime.block_on(async {
        let (cluster, _faults) = ClusterManager::start("loaded", quiet(), true, false);
        let mut config = ManagerConfig::new(home.path());
        config.cluster = Some(cluster.clone());
        let plugins = PluginManager::new(config).unwrap();
        plugins.load(&file).await.expect("the fixture strategy loads");
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster.state() != ClusterState::Clustered {
            assert!(Instant::now() < deadline, "the loaded strategy did not cluster: {:?}", cluster.state());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cache = cluster.caches().raw("c");
        cache.put(key.clone(), vec![7; 64]).await.unwrap();
        (plugins, cluster, cache)
    });
    let l = {
        let (cache, key) = (&loaded.2, &key);
        sample(&runtime, samples, move || async move { cache.get(key).await.unwrap().is_some() })
    };

    println!("cache get of a 64-byte value, {OPS} gets per sample, {samples} samples");
    let base = report("direct (Rust trait)", d, None);
    report("boundary (ABI, in-process)", b, Some(base));
    let host_base = report("host, standalone", s, None);
    let clustered = report("host, clustered .so", l, Some(base));
    println!("host clustered .so vs host standalone: {:+.1} ns per get", clustered - host_base);
    runtime.block_on(loaded.0.stop_all());
    strategy_runtime.shutdown_background();
}

fn quiet() -> ClusterConfig {
    ClusterConfig { startup_delay: Duration::ZERO, ..ClusterConfig::default() }
}

fn postcard_key() -> Vec<u8> {
    b"user:12345".to_vec()
}
