//! Plugin file drop → Active on a real `clusterhost run` node watching its
//! plugins/ directory with inotify.

use std::path::Path;
use std::time::{Duration, Instant};

use clusterhost::PluginState;
use clusterhost_tests::{plugin, wait_until, NodeProcess};

use super::plugin_load::load_once;
use super::{Ctx, Scenario};
use crate::figure::{Spread, Unit};
use crate::report::Report;

const DEADLINE: Duration = Duration::from_secs(30);

pub struct DropToActive;

impl Scenario for DropToActive {
    fn name(&self) -> &'static str {
        "drop"
    }

    fn about(&self) -> &'static str {
        "A real node (`plugins.watch = notify`); `hello` is published into plugins/ by writing `.hello.so.tmp` and \
         renaming it to `hello.so`; timed from the rename to the node logging it active (the configured startup \
         delay does not apply to plugins). Split into rename → the node acts on the file, and acting → Active. \
         Each drop is followed by removing the file; the first drop is a warm-up. After each drop, `load(path)` → \
         Active of the same `hello` file in this process (a new manager each time, as in `plugin-load`), so each \
         drop is paired with a load made beside it: drop → Active minus that load is what the watcher adds."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let drops = ctx.pick(30, 3);
        let hello = plugin("hello");
        let home = ctx.work.join("node");
        let plugins = home.join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins/ can be made");
        std::fs::create_dir_all(home.join("conf")).expect("conf/ can be made");
        std::fs::write(home.join("conf/clusterhost.properties"), "plugins.watch = notify\n")
            .expect("the properties file can be written");
        let load_home = ctx.work.join("load");
        std::fs::create_dir_all(&load_home).expect("the load directory can be made");
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let mut node = NodeProcess::start(&home);
        let watching = node.wait_for_log(&["watching the plugins directory"], DEADLINE);
        assert!(watching.contains("mode=\"notify\""), "the node fell back to polling: {watching}");

        let target = plugins.join("hello.so");
        let tmp = plugins.join(".hello.so.tmp");
        let (mut to_active, mut to_acting, mut acting_to_active) = (Vec::new(), Vec::new(), Vec::new());
        let mut loads = Vec::new();
        for drop in 0..=drops {
            std::fs::copy(&hello, &tmp).expect("the temporary file can be written");
            // Let the watcher see and ignore the temporary file first, so the
            // rename is the only change the timing covers.
            std::thread::sleep(Duration::from_millis(150));
            let mark = node.log_len();
            let renamed = Instant::now();
            std::fs::rename(&tmp, &target).expect("the rename succeeds");
            let acting = wait_for_line(&node, mark, &["plugin file added or replaced", "hello.so"]);
            let active = wait_for_line(&node, mark, &["state=active", "hello.so"]);
            wait_until("the status file shows hello.so active", DEADLINE, || {
                status_state(&home, "hello.so") == Some(PluginState::Active)
            });
            if drop > 0 {
                to_active.push(active - renamed);
                to_acting.push(acting - renamed);
                acting_to_active.push(active - acting);
            }
            let mark = node.log_len();
            std::fs::remove_file(&target).expect("the plugin file can be removed");
            wait_for_line(&node, mark, &["state=retired", "hello.so"]);
            let loaded = load_once(&runtime, &load_home, &hello);
            if drop > 0 {
                loads.push(loaded);
            }
        }
        node.terminate(DEADLINE);
        report.add_durations("drop.active", "file drop → Active (notify)", Unit::Millis, &to_active, "real node");
        report.add_durations("drop.acting", "  of which rename → node acts", Unit::Millis, &to_acting, "");
        report.add_durations("drop.loading", "  of which node acts → Active", Unit::Millis, &acting_to_active, "");
        report.add_durations(
            "drop.load",
            "load(path) → Active, same file, beside",
            Unit::Millis,
            &loads,
            "this process",
        );
        let ms = |v: &[Duration]| -> Vec<f64> { v.iter().map(|d| Unit::Millis.of(*d)).collect() };
        let (drop_ms, load_ms) = (ms(&to_active), ms(&loads));
        let over: Vec<f64> = drop_ms.iter().zip(&load_ms).map(|(d, l)| d - l).collect();
        let of_medians = match (Spread::of(&drop_ms), Spread::of(&load_ms)) {
            (Some(d), Some(l)) => format!("; median drop − median load = {:.2} ms", d.median - l.median),
            _ => String::new(),
        };
        report.add(
            "drop.over_load",
            "file drop → Active minus load(path) → Active",
            Unit::Millis,
            &over,
            &format!("paired: each drop minus the load made after it{of_medians}"),
        );
    }
}

/// When the node logged the first line, from the `from`-th on, with every one of `parts`.
pub fn wait_for_line(node: &NodeProcess, from: usize, parts: &[&str]) -> Instant {
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
