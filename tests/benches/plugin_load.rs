//! Benchmark: time from `PluginManager::load(path)` to Active for a small
//! plugin (the shipped `hello` example), and, side by side in the same run,
//! the manifest read alone (the part made before dlopen).
//!
//! `cargo bench -p clusterhost-tests --bench plugin_load` (release build).
//! Set `BENCH_ITERATIONS` to change the number of loads (default 60).
//! Every load maps a new private copy, as a hot upgrade would.

use std::time::Instant;

use clusterhost::{ManagerConfig, PluginManager};
use clusterhost_tests::{plugin, summary};

fn main() {
    let iterations: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let file = plugin("hello");
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!("plugin: {} ({} KiB), {iterations} loads", file.display(), size / 1024);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let home = tempfile::tempdir().expect("a temp dir");

    let mut manifest_reads = Vec::new();
    let mut loads = Vec::new();
    for _ in 0..iterations {
        let started = Instant::now();
        clusterhost::manifest::read_manifest(&file).expect("the manifest reads");
        manifest_reads.push(started.elapsed());

        let mut config = ManagerConfig::new(home.path());
        config.private_dir = Some(home.path().to_owned());
        let manager = PluginManager::new(config).expect("a manager");
        let started = Instant::now();
        runtime.block_on(manager.load(&file)).expect("hello loads");
        loads.push(started.elapsed());
        runtime.block_on(manager.stop_all());
    }
    summary("manifest read (before dlopen)", manifest_reads);
    summary("load(path) -> Active", loads);
}
