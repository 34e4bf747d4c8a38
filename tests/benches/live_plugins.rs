//! Benchmark: the live plugins directory and hot upgrades, with the shipped
//! `hello` plugin.
//!
//! 1. **file drop -> Active**: a real `clusterhost run` node with
//!    `plugins.watch = notify`; the plugin is published into plugins/ by
//!    writing `.hello.so.tmp` and renaming it to `hello.so`, and the time is
//!    taken from the rename to the node logging `hello` active. This includes
//!    the inotify debounce, the settle window (a file is acted on once it has
//!    been unchanged for 300 ms, `SETTLE` in host/src/node.rs) and the load.
//!    The two parts are printed too: rename -> the node acting on the file,
//!    and acting -> Active. Each drop is followed by removing the file and
//!    waiting for the node to retire the plugin.
//! 2. **hot upgrade**: `PluginManager::load(path)` replacing an active
//!    `hello` with a higher version (restamped v0.1.N builds).
//! 3. **resident memory per hot upgrade**: VmRSS of this process before and
//!    after a series of hot upgrades in one manager (after a few warm-up
//!    upgrades). `abi_stable` never unloads a library, so this is what each
//!    retired version keeps.
//!
//! 2 and 3 are also measured with the gossip strategy plugin, in a manager
//! wired to a cluster manager (a one-member cluster): its upgrade leaves the
//! cluster, stops chitchat and the data plane, starts the new version and
//! hands its strategy over; the re-join that follows is not counted.
//!
//! `cargo bench -p clusterhost-tests --bench live_plugins` (release build).
//! `BENCH_ITERATIONS=N` (quick mode; CI uses 5) sets the number of drops and
//! of timed upgrades to N and the memory series to min(50, 2N) upgrades;
//! the defaults are 30, 30 and 50.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clusterhost::cluster::{ClusterConfig, ClusterManager, ClusterState};
use clusterhost::properties::{NodeValues, Properties};
use clusterhost::{LoadOutcome, ManagerConfig, PluginManager, PluginState};
use clusterhost_tests::{plugin, restamp, summary, wait_until, NodeProcess};
use semver::Version;

const DEADLINE: Duration = Duration::from_secs(30);
/// Upgrades made before the memory series, so allocator and runtime growth
/// that happens once is not counted.
const RSS_WARM_UP: usize = 5;

fn main() {
    let quick: Option<usize> = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok());
    let (drops, upgrades, rss_upgrades) = match quick {
        Some(n) => {
            let n = n.max(1);
            (n, n, (n * 2).min(50))
        }
        None => (30, 30, 50),
    };
    let hello = plugin("hello");
    let size = std::fs::metadata(&hello).map(|m| m.len()).unwrap_or(0);
    println!(
        "plugin: {} ({} KiB); {drops} drops, {upgrades} timed upgrades, {rss_upgrades} upgrades for memory",
        hello.display(),
        size / 1024
    );

    let work = tempfile::tempdir().expect("a temp dir");
    // Every version the upgrade series need, restamped before anything is
    // measured: hello-0.1.0.so, hello-0.1.1.so, ...
    let versions = (2 + upgrades).max(1 + RSS_WARM_UP + rss_upgrades);
    let builds: Vec<PathBuf> = (0..versions)
        .map(|n| {
            let path = work.path().join("builds").join(format!("hello-0.1.{n}.so"));
            restamp(&hello, &path, |m| m.version = Version::new(0, 1, n as u64));
            path
        })
        .collect();

    drop_to_active(&hello, &work.path().join("node"), drops);

    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    hot_upgrade_duration(&runtime, &work.path().join("upgrade"), &builds[..2 + upgrades], Kind::Hello);
    memory_per_upgrade(&runtime, &work.path().join("memory"), &builds[..=RSS_WARM_UP + rss_upgrades], Kind::Hello);

    let gossip = plugin("gossip");
    println!("plugin: {} ({} KiB)", gossip.display(), std::fs::metadata(&gossip).map(|m| m.len()).unwrap_or(0) / 1024);
    let gossip_builds: Vec<PathBuf> = (0..versions)
        .map(|n| {
            let path = work.path().join("builds").join(format!("gossip-0.1.{n}.so"));
            restamp(&gossip, &path, |m| m.version = Version::new(0, 1, n as u64));
            path
        })
        .collect();
    hot_upgrade_duration(&runtime, &work.path().join("gossip-upgrade"), &gossip_builds[..2 + upgrades], Kind::Gossip);
    memory_per_upgrade(
        &runtime,
        &work.path().join("gossip-memory"),
        &gossip_builds[..=RSS_WARM_UP + rss_upgrades],
        Kind::Gossip,
    );
}

/// Which plugin a series upgrades.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hello,
    Gossip,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Hello => "",
            Kind::Gossip => " (gossip)",
        }
    }
}

/// Figure 1, against a real node process.
fn drop_to_active(hello: &Path, home: &Path, drops: usize) {
    let plugins = home.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins/ can be made");
    std::fs::create_dir_all(home.join("conf")).expect("conf/ can be made");
    std::fs::write(home.join("conf/clusterhost.properties"), "plugins.watch = notify\n")
        .expect("the properties file can be written");
    let mut node = NodeProcess::start(home);
    let watching = node.wait_for_log(&["watching the plugins directory"], DEADLINE);
    assert!(
        watching.contains("mode=\"notify\""),
        "the node could not use inotify and fell back to polling: {watching}"
    );

    let target = plugins.join("hello.so");
    let tmp = plugins.join(".hello.so.tmp");
    let (mut to_active, mut to_acting, mut acting_to_active) = (Vec::new(), Vec::new(), Vec::new());
    // The first drop warms the page cache and the node's allocator; not counted.
    for drop in 0..=drops {
        std::fs::copy(hello, &tmp).expect("the temporary file can be written");
        // Let the watcher see and ignore the temporary file first, so the
        // rename is the only change the timing covers.
        std::thread::sleep(Duration::from_millis(150));
        let mark = node.log_len();
        let renamed = Instant::now();
        std::fs::rename(&tmp, &target).expect("the rename succeeds");
        let acting = wait_for_line(&node, mark, &["plugin file added or replaced", "hello.so"]);
        let active = wait_for_line(&node, mark, &["state=active", "hello.so"]);
        // The status file (what `plugins list` shows) is written just after.
        wait_until("the status file shows hello.so active", DEADLINE, || {
            status_state(home, "hello.so") == Some(PluginState::Active)
        });
        if drop > 0 {
            to_active.push(active - renamed);
            to_acting.push(acting - renamed);
            acting_to_active.push(active - acting);
        }

        let mark = node.log_len();
        std::fs::remove_file(&target).expect("the plugin file can be removed");
        wait_for_line(&node, mark, &["state=retired", "hello.so"]);
    }
    node.terminate(DEADLINE);
    summary("drop -> Active (notify)", to_active);
    summary("  of which drop -> node acts", to_acting);
    summary("  of which node acts -> Active", acting_to_active);
}

/// When the node logged (the first line from the `from`-th on with every one of `parts`).
fn wait_for_line(node: &NodeProcess, from: usize, parts: &[&str]) -> Instant {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let lines = node.timed_log_since(from);
        if let Some((at, _)) = lines.iter().find(|(_, line)| parts.iter().all(|p| line.contains(p))) {
            return *at;
        }
        assert!(Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for a node log line with {parts:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The state of `file` in the node's status file.
fn status_state(home: &Path, file: &str) -> Option<PluginState> {
    let status = clusterhost::status::read(home).ok()?;
    status.plugins.into_iter().find(|r| r.file.file_name().is_some_and(|n| n == file)).map(|r| r.state)
}

/// A manager over `home` with `first` published under plugins/ and active;
/// for gossip, wired to a cluster manager and configured as a one-member cluster.
fn manager_with(
    runtime: &tokio::runtime::Runtime,
    home: &Path,
    first: &Path,
    kind: Kind,
) -> (PluginManager, PathBuf, Option<ClusterManager>) {
    let name = if kind == Kind::Gossip { "gossip.so" } else { "hello.so" };
    let target = home.join("plugins").join(name);
    std::fs::create_dir_all(target.parent().expect("plugins/")).expect("plugins/ can be made");
    let mut config = ManagerConfig::new(home);
    config.private_dir = Some(home.to_owned());
    if kind == Kind::Gossip {
        let conf = home.join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("cluster.key"), "7e".repeat(32)).unwrap();
        std::fs::write(conf.join("gossip.toml"), "[discovery.multicast]\nenabled = false\n").unwrap();
        let values = NodeValues::default();
        let port = clusterhost_tests::cluster::free_member_port();
        values.update(&Properties {
            node_name: Some("bench".into()),
            cluster_port: Some(port),
            ..Properties::default()
        });
        config.values = values;
        let cluster = runtime.block_on(async {
            let quick = ClusterConfig { startup_delay: Duration::ZERO, ..ClusterConfig::default() };
            ClusterManager::start("bench", quick, true, false).0
        });
        config.cluster = Some(cluster);
    }
    let cluster = config.cluster.clone();
    let manager = PluginManager::new(config).expect("a manager");
    std::fs::copy(first, &target).expect("the plugin can be published");
    let outcome = runtime.block_on(manager.load(&target)).expect("the plugin loads");
    assert!(matches!(outcome, LoadOutcome::Activated { .. }), "{outcome:?}");
    wait_clustered(runtime, cluster.as_ref());
    (manager, target, cluster)
}

/// For gossip: waits (untimed) until the member has re-joined, so the next
/// upgrade does not wait for the previous version's join.
fn wait_clustered(runtime: &tokio::runtime::Runtime, cluster: Option<&ClusterManager>) {
    if let Some(cluster) = cluster {
        runtime.block_on(async {
            let deadline = Instant::now() + DEADLINE;
            while cluster.state() != ClusterState::Clustered {
                assert!(Instant::now() < deadline, "no re-join: {:?}", cluster.state());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
}

/// Replaces the published plugin with `build` and loads it; returns how long `load` took.
fn upgrade(
    runtime: &tokio::runtime::Runtime,
    manager: &PluginManager,
    target: &Path,
    build: &Path,
    cluster: Option<&ClusterManager>,
) -> Duration {
    std::fs::copy(build, target).expect("the new version can be published");
    let started = Instant::now();
    let outcome = runtime.block_on(manager.load(target)).expect("the upgrade succeeds");
    let took = started.elapsed();
    assert!(matches!(outcome, LoadOutcome::Replaced { .. }), "not a hot upgrade: {outcome:?}");
    wait_clustered(runtime, cluster);
    took
}

/// Figure 2: `load` replacing the active version. `builds[0]` is loaded
/// first, `builds[1]` is a warm-up upgrade, the rest are timed.
fn hot_upgrade_duration(runtime: &tokio::runtime::Runtime, home: &Path, builds: &[PathBuf], kind: Kind) {
    let (manager, target, cluster) = manager_with(runtime, home, &builds[0], kind);
    upgrade(runtime, &manager, &target, &builds[1], cluster.as_ref());
    let samples: Vec<Duration> =
        builds[2..].iter().map(|b| upgrade(runtime, &manager, &target, b, cluster.as_ref())).collect();
    runtime.block_on(manager.stop_all());
    summary(&format!("hot upgrade{}: load(path)", kind.label()), samples);
}

/// Figure 3: VmRSS growth over a series of hot upgrades in this process.
fn memory_per_upgrade(runtime: &tokio::runtime::Runtime, home: &Path, builds: &[PathBuf], kind: Kind) {
    let (manager, target, cluster) = manager_with(runtime, home, &builds[0], kind);
    let (warm_up, measured) = builds[1..].split_at(RSS_WARM_UP);
    for build in warm_up {
        upgrade(runtime, &manager, &target, build, cluster.as_ref());
    }
    let before = memory();
    for build in measured {
        upgrade(runtime, &manager, &target, build, cluster.as_ref());
    }
    let after = memory();
    let active = runtime.block_on(manager.active());
    assert_eq!(active.len(), 1, "one version is active after the upgrades: {active:?}");
    runtime.block_on(manager.stop_all());
    let n = measured.len() as i64;
    let total = after.rss - before.rss;
    println!(
        "{:<32} n={n:<4} total={total} KiB per upgrade={:.0} KiB (anon {:+} KiB, file {:+} KiB, shmem {:+} KiB; VmRSS {} -> {} KiB, threads {} -> {})",
        format!("RSS per hot upgrade{}", kind.label()),
        total as f64 / n as f64,
        after.anon - before.anon,
        after.file - before.file,
        after.shmem - before.shmem,
        before.rss,
        after.rss,
        before.threads,
        after.threads,
    );
}

/// This process's resident memory (KiB) and thread count, from /proc/self/status.
struct Memory {
    rss: i64,
    anon: i64,
    file: i64,
    shmem: i64,
    threads: i64,
}

fn memory() -> Memory {
    // A replaced plugin's runtime shuts down in the background: let its
    // threads exit, so they are not counted.
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable (Linux)");
    let field = |name: &str| -> i64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("/proc/self/status has no {name} line"))
    };
    Memory {
        rss: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        shmem: field("RssShmem:"),
        threads: field("Threads:"),
    }
}
