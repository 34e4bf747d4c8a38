//! The live plugins directory and properties file, against a real node, run
//! once with inotify (`plugins.watch = notify`) and once polling: one suite,
//! both watcher implementations.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clusterhost::status;
use clusterhost::{PluginRecord, PluginState};
use clusterhost_tests::{plugin, restamp, wait_until, NodeProcess};
use semver::Version;

const DEADLINE: Duration = Duration::from_secs(30);

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(mode: &str, extra: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        let props = format!("plugins.watch = {mode}\nplugins.poll.seconds = 0.1\n{extra}");
        std::fs::write(dir.path().join("conf/clusterhost.properties"), props).unwrap();
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// A fixture build stamped with `version` (and `behavior`), outside plugins/.
    fn build(&self, name: &str, version: &str, behavior: &str) -> PathBuf {
        let path = self.dir.path().join("builds").join(name);
        let journal = self.dir.path().join("journal");
        restamp(&plugin("fixture_plugin"), &path, |m| {
            m.version = Version::parse(version).unwrap();
            m.metadata.insert("journal".into(), journal.display().to_string());
            if !behavior.is_empty() {
                m.metadata.insert("behavior".into(), behavior.into());
            }
        });
        path
    }

    fn record(&self, file: &str) -> Option<PluginRecord> {
        let status = status::read(self.path()).ok()?;
        status.plugins.into_iter().find(|r| r.file.file_name().is_some_and(|n| n == file))
    }

    fn wait_for(&self, file: &str, state: PluginState, version: &str) -> PluginRecord {
        let mut last = None;
        wait_until(&format!("{file} {state} at {version}"), DEADLINE, || {
            last = self.record(file);
            last.as_ref().is_some_and(|r| {
                r.state == state && r.version.as_ref().map(|v| v.to_string()).as_deref() == Some(version)
            })
        });
        last.expect("wait_until saw it")
    }

    fn set_properties(&self, mode: &str, extra: &str) {
        let tmp = self.dir.path().join("conf/.clusterhost.properties.tmp");
        std::fs::write(&tmp, format!("plugins.watch = {mode}\nplugins.poll.seconds = 0.1\n{extra}")).unwrap();
        std::fs::rename(tmp, self.dir.path().join("conf/clusterhost.properties")).unwrap();
    }
}

fn publish_by_rename(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("so.tmp");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

fn drop_replace_remove(mode: &str) {
    let home = Home::new(mode, "");
    let node = NodeProcess::start(home.path());
    node.wait_for_log(&["watching the plugins directory", &format!("mode=\"{mode}\"")], DEADLINE);
    let target = home.plugins().join("fixture.so");

    // Drop (write + rename).
    publish_by_rename(&home.build("v1.so", "1.0.0", ""), &target);
    home.wait_for("fixture.so", PluginState::Active, "1.0.0");

    // Replace by cp in place: the host never maps plugins/, so this is safe.
    std::fs::copy(home.build("v2.so", "2.0.0", ""), &target).unwrap();
    let record = home.wait_for("fixture.so", PluginState::Active, "2.0.0");
    assert_eq!(record.reason.as_deref(), Some("upgraded from 1.0.0"));

    // Replace by write + rename.
    publish_by_rename(&home.build("v3.so", "3.0.0", ""), &target);
    home.wait_for("fixture.so", PluginState::Active, "3.0.0");

    // A broken replacement keeps v3 running and says why.
    std::fs::write(&target, "not a library").unwrap();
    wait_until("the broken replacement is reported", DEADLINE, || {
        home.record("fixture.so").and_then(|r| r.reason).is_some_and(|r| r.contains("not an ELF shared library"))
    });
    let record = home.record("fixture.so").unwrap();
    assert_eq!((record.state, record.version.unwrap().to_string()), (PluginState::Active, "3.0.0".to_string()));

    // An incompatible replacement (another API) also keeps v3.
    restamp(&home.build("v4.so", "4.0.0", ""), &target, |m| m.api_req = "^9".parse().unwrap());
    wait_until("the incompatible replacement is reported", DEADLINE, || {
        home.record("fixture.so").and_then(|r| r.reason).is_some_and(|r| r.contains("needs plugin API ^9"))
    });
    assert_eq!(home.record("fixture.so").unwrap().state, PluginState::Active);

    // Remove: the plugin stops.
    std::fs::remove_file(&target).unwrap();
    let record = home.wait_for("fixture.so", PluginState::Retired, "3.0.0");
    assert_eq!(record.reason.as_deref(), Some("its file was removed"));
    let journal = std::fs::read_to_string(home.path().join("journal")).unwrap();
    assert!(journal.ends_with("fixture stop\n"), "{journal}");
}

/// Issue 14, finding 13: a directory or a dangling symlink dropped into a
/// running node is listed as rejected with its reason, as at start.
fn a_directory_or_dangling_symlink_dropped_live_is_rejected_with_a_reason(mode: &str) {
    let home = Home::new(mode, "");
    let node = NodeProcess::start(home.path());
    node.wait_for_log(&["watching the plugins directory", &format!("mode=\"{mode}\"")], DEADLINE);
    std::fs::create_dir(home.plugins().join("y5.so")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", home.plugins().join("y6.so")).unwrap();
    for file in ["y5.so", "y6.so"] {
        let mut last = None;
        wait_until(&format!("{file} to be listed as rejected"), DEADLINE, || {
            last = home.record(file);
            last.as_ref().is_some_and(|r| r.state == PluginState::Rejected)
        });
        let reason = last.and_then(|r| r.reason).unwrap_or_default();
        assert!(reason.contains("is not a regular file"), "{file}: {reason}");
    }
    // Made a real plugin afterwards, it loads.
    std::fs::remove_file(home.plugins().join("y6.so")).unwrap();
    publish_by_rename(&home.build("v1.so", "1.0.0", ""), &home.plugins().join("y6.so"));
    home.wait_for("y6.so", PluginState::Active, "1.0.0");
}

fn slow_write_is_not_loaded_before_complete(mode: &str) {
    let home = Home::new(mode, "");
    let node = NodeProcess::start(home.path());
    node.wait_for_log(&["watching the plugins directory"], DEADLINE);
    let bytes = std::fs::read(home.build("v1.so", "1.0.0", "")).unwrap();
    let target = home.plugins().join("slow.so");
    let mut file = std::fs::File::create(&target).unwrap();
    let chunk = bytes.len().div_ceil(12);
    for part in bytes.chunks(chunk) {
        file.write_all(part).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(home.record("slow.so").is_none(), "a half-written file was acted on: {:?}", home.record("slow.so"));
    }
    drop(file);
    home.wait_for("slow.so", PluginState::Active, "1.0.0");
}

fn quick_successive_replaces_end_with_the_last(mode: &str) {
    let home = Home::new(mode, "");
    let node = NodeProcess::start(home.path());
    node.wait_for_log(&["watching the plugins directory"], DEADLINE);
    let target = home.plugins().join("fixture.so");
    let builds: Vec<PathBuf> = (1..=4).map(|n| home.build(&format!("v{n}.so"), &format!("{n}.0.0"), "")).collect();
    for build in &builds {
        publish_by_rename(build, &target);
        std::thread::sleep(Duration::from_millis(30));
    }
    home.wait_for("fixture.so", PluginState::Active, "4.0.0");
}

fn properties_edits_apply_live_and_bad_edits_change_nothing(mode: &str) {
    let home = Home::new(mode, "plugins.allow.downgrade = false\n");
    let node = NodeProcess::start(home.path());
    node.wait_for_log(&["watching the plugins directory"], DEADLINE);
    publish_by_rename(&home.build("v2.so", "2.0.0", ""), &home.plugins().join("a.so"));
    home.wait_for("a.so", PluginState::Active, "2.0.0");
    publish_by_rename(&home.build("v1.so", "1.0.0", ""), &home.plugins().join("b.so"));
    let refused = home.wait_for("b.so", PluginState::Rejected, "1.0.0");
    assert!(refused.reason.unwrap().contains("downgrades are refused"));

    home.set_properties(mode, "plugins.allow.downgrade = true\n");
    node.wait_for_log(&["properties reloaded", "allow_downgrade: true"], DEADLINE);
    publish_by_rename(&home.build("v1.so", "1.0.0", ""), &home.plugins().join("c.so"));
    home.wait_for("c.so", PluginState::Active, "1.0.0");

    // A bad edit is reported with file:line, and the previous values stay.
    home.set_properties(mode, "plugins.allow.downgrade = maybe\n");
    node.wait_for_log(&["clusterhost.properties:3: plugins.allow.downgrade", "previous settings stay"], DEADLINE);
    publish_by_rename(&home.build("v0.so", "0.5.0", ""), &home.plugins().join("d.so"));
    home.wait_for("d.so", PluginState::Active, "0.5.0");

    // The budget is live too: a plugin hanging in start is faulted after it.
    let started = Instant::now();
    home.set_properties(mode, "cluster.max.execution.seconds = 0.5\n");
    node.wait_for_log(&["properties reloaded", "max_execution: 500ms"], DEADLINE);
    restamp(&home.build("hang.so", "1.0.0", "hang-in-start"), &home.plugins().join(".e.tmp"), |m| {
        m.id = "hangs".into()
    });
    std::fs::rename(home.plugins().join(".e.tmp"), home.plugins().join("e.so")).unwrap();
    let faulted = home.wait_for("e.so", PluginState::Faulted, "1.0.0");
    assert!(faulted.reason.unwrap().contains("did not finish start within 500ms"));
    assert!(started.elapsed() < DEADLINE);
}

#[test]
fn notify_drop_replace_remove() {
    drop_replace_remove("notify");
}

#[test]
fn poll_drop_replace_remove() {
    drop_replace_remove("poll");
}

#[test]
fn notify_slow_write_is_not_loaded_before_complete() {
    slow_write_is_not_loaded_before_complete("notify");
}

#[test]
fn poll_slow_write_is_not_loaded_before_complete() {
    slow_write_is_not_loaded_before_complete("poll");
}

#[test]
fn notify_quick_successive_replaces_end_with_the_last() {
    quick_successive_replaces_end_with_the_last("notify");
}

#[test]
fn poll_quick_successive_replaces_end_with_the_last() {
    quick_successive_replaces_end_with_the_last("poll");
}

#[test]
fn notify_properties_edits_apply_live_and_bad_edits_change_nothing() {
    properties_edits_apply_live_and_bad_edits_change_nothing("notify");
}

#[test]
fn poll_properties_edits_apply_live_and_bad_edits_change_nothing() {
    properties_edits_apply_live_and_bad_edits_change_nothing("poll");
}

#[test]
fn notify_a_directory_or_dangling_symlink_dropped_live_is_rejected_with_a_reason() {
    a_directory_or_dangling_symlink_dropped_live_is_rejected_with_a_reason("notify");
}

#[test]
fn poll_a_directory_or_dangling_symlink_dropped_live_is_rejected_with_a_reason() {
    a_directory_or_dangling_symlink_dropped_live_is_rejected_with_a_reason("poll");
}
