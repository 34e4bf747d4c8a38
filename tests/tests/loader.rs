//! The loader's checks, one test per refusal, against real libraries.
//!
//! The fixture plugin has a library constructor that creates the file named
//! by its manifest's `metadata.marker`; every refusal made before `dlopen`
//! asserts that file was never created, i.e. no plugin code ran.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clusterhost::plugins::loader::{AbiError, LifecycleCall, LifecycleError};
use clusterhost::plugins::manifest::InspectError;
use clusterhost::plugins::registry::AdmissionError;
use clusterhost::{LoadError, LoadOutcome, ManagerConfig, PluginManager, PluginState};
use clusterhost_plugin_api::{Manifest, CLUSTER_STRATEGY};
use clusterhost_tests::{plugin, restamp, restamp_raw};
use semver::Version;
use tempfile::TempDir;

/// A home directory, a manager over it, and fixture variants written into it.
struct Bench {
    dir: TempDir,
    manager: PluginManager,
}

impl Bench {
    fn new() -> Bench {
        Self::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut ManagerConfig)) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::new(dir.path());
        config.private_dir = Some(dir.path().to_owned());
        config.lifecycle_budget = Duration::from_secs(5);
        adjust(&mut config);
        Bench { manager: PluginManager::new(config).unwrap(), dir }
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.marker"))
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// Writes plugins/NAME.so: the fixture with its manifest edited and a
    /// marker of its own.
    fn variant(&self, name: &str, edit: impl FnOnce(&mut Manifest)) -> PathBuf {
        let path = self.dir.path().join("plugins").join(format!("{name}.so"));
        let marker = self.marker(name);
        let journal = self.journal();
        restamp(&plugin("fixture_plugin"), &path, |m| {
            m.metadata.insert("marker".into(), marker.display().to_string());
            m.metadata.insert("journal".into(), journal.display().to_string());
            edit(m);
        });
        path
    }

    async fn load(&self, path: &Path) -> Result<LoadOutcome, LoadError> {
        self.manager.load(path).await
    }

    /// The steps the last load of `path` timed, by name.
    fn steps(&self, path: &Path) -> Vec<&'static str> {
        let report = self.manager.last_load(path).expect("the load's report");
        report.steps.iter().map(|(step, _)| step.name()).collect()
    }

    fn state(&self, path: &Path) -> (PluginState, String) {
        let record = self.manager.record(path).expect("the file has a record");
        (record.state, record.reason.unwrap_or_default())
    }

    /// Asserts `path` was refused before dlopen: Rejected, reason recorded,
    /// and its constructor never ran.
    fn assert_refused_unrun(&self, path: &Path, name: &str, error: &LoadError) {
        assert!(error.before_dlopen(), "{error} should be decided before dlopen");
        let (state, reason) = self.state(path);
        assert_eq!(state, PluginState::Rejected);
        assert_eq!(reason, error.to_string());
        assert!(!self.marker(name).exists(), "the plugin's constructor ran although it was refused: {error}");
        // The private copy of a refused file was never mapped and is removed.
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let copies: Vec<_> = std::fs::read_dir(self.manager.private_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(&format!("-{stem}.so")))
            .collect();
        assert!(copies.is_empty(), "refused copies left behind: {copies:?}");
    }
}

fn with_id<'a>(id: &'a str, version: &'a str) -> impl FnOnce(&mut Manifest) + 'a {
    move |m| {
        m.id = id.into();
        m.version = Version::parse(version).unwrap();
    }
}

#[tokio::test]
async fn a_valid_plugin_becomes_active_and_its_constructor_runs() {
    let bench = Bench::new();
    let path = bench.variant("valid", |_| {});
    let outcome = bench.load(&path).await.unwrap();
    assert_eq!(outcome, LoadOutcome::Activated { id: "fixture".into(), version: Version::new(0, 1, 0) });
    assert_eq!(bench.state(&path).0, PluginState::Active);
    // The positive control for every "never ran" assertion below.
    assert!(bench.marker("valid").exists());
    let record = bench.manager.record(&path).unwrap();
    // The hash made beside the copy's write is the file's, as sha256sum says.
    let sum = std::process::Command::new("sha256sum").arg(&path).output().expect("sha256sum runs");
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(record.sha256.as_deref(), sum.split_whitespace().next(), "{sum}");
    // Each step of the load was timed, in order.
    assert_eq!(bench.steps(&path), ["copy", "admit", "map", "create", "start", "attach"]);
    // The library was mapped from a private copy, never from plugins/.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(!maps.contains(&path.display().to_string()), "the published file is mapped");
    assert!(maps.contains(&bench.manager.private_dir().display().to_string()));
}

#[tokio::test]
async fn a_directory_is_refused_as_not_a_regular_file() {
    let bench = Bench::new();
    let path = bench.dir.path().join("plugins").join("dir.so");
    std::fs::create_dir_all(&path).unwrap();
    let error = bench.load(&path).await.unwrap_err();
    assert!(matches!(error, LoadError::Inspect(InspectError::NotRegularFile { .. })), "{error}");
    assert!(error.to_string().contains("is not a regular file"));
    bench.assert_refused_unrun(&path, "dir", &error);
}

#[tokio::test]
async fn a_non_elf_file_is_refused() {
    let bench = Bench::new();
    let path = bench.dir.path().join("notes.so");
    std::fs::write(&path, "these are not the droids").unwrap();
    let error = bench.load(&path).await.unwrap_err();
    assert!(matches!(error, LoadError::Inspect(InspectError::NotElf { .. })), "{error}");
    assert!(error.to_string().contains("is not an ELF shared library"));
    bench.assert_refused_unrun(&path, "notes", &error);
}

#[tokio::test]
async fn a_truncated_file_is_refused_and_never_run() {
    let bench = Bench::new();
    let full = bench.variant("full", |_| {});
    let path = bench.dir.path().join("truncated.so");
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let error = bench.load(&path).await.unwrap_err();
    assert!(matches!(error, LoadError::Inspect(InspectError::Truncated { .. })), "{error}");
    assert!(error.to_string().contains("copy the complete file again"));
    bench.assert_refused_unrun(&path, "full", &error);
}

#[tokio::test]
async fn a_library_for_another_machine_is_refused_and_never_run() {
    let bench = Bench::new();
    let path = bench.variant("arm", |_| {});
    let mut bytes = std::fs::read(&path).unwrap();
    // e_machine (ELF header offset 18, little-endian): 0x28 is 32-bit ARM.
    bytes[18] = 0x28;
    bytes[19] = 0;
    std::fs::write(&path, bytes).unwrap();
    let error = bench.load(&path).await.unwrap_err();
    assert!(matches!(error, LoadError::Inspect(InspectError::WrongKind { .. })), "{error}");
    assert!(error.to_string().contains("build the plugin for this target"), "{error}");
    bench.assert_refused_unrun(&path, "arm", &error);
}

#[tokio::test]
async fn a_library_without_a_manifest_is_refused_and_never_run() {
    let bench = Bench::new();
    let path = bench.variant("nomanifest", |_| {});
    // Rename the section (same length) so the file has no manifest section.
    let mut bytes = std::fs::read(&path).unwrap();
    let name = b".clusterhost.manifest";
    let mut renamed = 0;
    for i in 0..bytes.len() - name.len() {
        if &bytes[i..i + name.len()] == name {
            bytes[i + name.len() - 1] = b'x';
            renamed += 1;
        }
    }
    assert!(renamed >= 1);
    std::fs::write(&path, bytes).unwrap();
    let error = bench.load(&path).await.unwrap_err();
    assert!(matches!(error, LoadError::Inspect(InspectError::NoManifest { .. })), "{error}");
    bench.assert_refused_unrun(&path, "nomanifest", &error);
}

#[tokio::test]
async fn a_malformed_manifest_is_refused_and_never_run() {
    let bench = Bench::new();
    let path = bench.dir.path().join("plugins").join("malformed.so");
    let marker = bench.marker("malformed");
    // Keeps the marker key the constructor would use if it ran.
    let raw = format!("id = \"broken\nmarker = \"{}\"\n", marker.display());
    restamp_raw(&plugin("fixture_plugin"), &path, &raw);
    let error = bench.load(&path).await.unwrap_err();
    assert!(matches!(error, LoadError::Inspect(InspectError::Malformed { .. })), "{error}");
    assert!(error.to_string().contains("manifest is malformed"), "{error}");
    bench.assert_refused_unrun(&path, "malformed", &error);
    // Its report times the steps it made: the copy, no mapping.
    assert_eq!(bench.steps(&path), ["copy"]);
}

#[tokio::test]
async fn an_unmet_api_requirement_is_refused_naming_both_versions() {
    let bench = Bench::new();
    let path = bench.variant("api", |m| m.api_req = "^7.1".parse().unwrap());
    let error = bench.load(&path).await.unwrap_err();
    assert!(matches!(error, LoadError::Admission(AdmissionError::ApiMismatch { .. })), "{error}");
    let api = clusterhost_plugin_api::API_VERSION;
    assert!(error.to_string().contains(&format!("needs plugin API ^7.1, but this host provides API {api}")), "{error}");
    bench.assert_refused_unrun(&path, "api", &error);
}

#[tokio::test]
async fn an_unmet_host_requirement_is_refused_naming_both_versions() {
    let bench = Bench::new();
    let path = bench.variant("host", |m| m.host_req = ">=3.0".parse().unwrap());
    let error = bench.load(&path).await.unwrap_err();
    assert!(matches!(error, LoadError::Admission(AdmissionError::HostMismatch { .. })), "{error}");
    let host = env!("CARGO_PKG_VERSION");
    assert!(error.to_string().contains(&format!("needs host >=3.0, but this host is {host}")), "{error}");
    bench.assert_refused_unrun(&path, "host", &error);
}

#[tokio::test]
async fn same_id_equal_is_a_no_op_higher_upgrades_lower_is_refused() {
    let bench = Bench::new();
    let v1 = bench.variant("v1", with_id("fixture", "1.0.0"));
    assert!(matches!(bench.load(&v1).await.unwrap(), LoadOutcome::Activated { .. }));

    let again = bench.variant("v1-again", with_id("fixture", "1.0.0"));
    let outcome = bench.load(&again).await.unwrap();
    assert_eq!(outcome, LoadOutcome::Unchanged { id: "fixture".into(), version: Version::new(1, 0, 0) });
    assert!(!bench.marker("v1-again").exists(), "a no-op must not map the library");
    assert_eq!(bench.state(&v1).0, PluginState::Active);

    let older = bench.variant("v0", with_id("fixture", "0.9.0"));
    let error = bench.load(&older).await.unwrap_err();
    assert!(matches!(error, LoadError::Admission(AdmissionError::Downgrade { .. })), "{error}");
    bench.assert_refused_unrun(&older, "v0", &error);

    let v2 = bench.variant("v2", with_id("fixture", "2.0.0"));
    let outcome = bench.load(&v2).await.unwrap();
    assert_eq!(
        outcome,
        LoadOutcome::Replaced { id: "fixture".into(), from: Version::new(1, 0, 0), to: Version::new(2, 0, 0) }
    );
    assert_eq!(bench.state(&v2).0, PluginState::Active);
    assert_eq!(bench.state(&v1).0, PluginState::Retired);
    assert_eq!(bench.manager.active().await, vec![("fixture".to_string(), Version::new(2, 0, 0))]);
}

#[tokio::test]
async fn a_downgrade_is_carried_out_when_explicitly_allowed() {
    let bench = Bench::with(|c| c.allow_downgrade = true);
    let v2 = bench.variant("v2", with_id("fixture", "2.0.0"));
    bench.load(&v2).await.unwrap();
    let v1 = bench.variant("v1", with_id("fixture", "1.0.0"));
    let outcome = bench.load(&v1).await.unwrap();
    assert!(matches!(outcome, LoadOutcome::Replaced { .. }), "{outcome:?}");
    assert_eq!(bench.manager.active().await, vec![("fixture".to_string(), Version::new(1, 0, 0))]);
}

#[tokio::test]
async fn a_second_cluster_strategy_is_refused_naming_both_plugins() {
    let bench = Bench::new();
    let gossip = bench.variant("gossip", |m| {
        with_id("gossip", "1.2.0")(m);
        m.provides = vec![CLUSTER_STRATEGY.into()];
    });
    bench.load(&gossip).await.unwrap();
    let redis = bench.variant("redis", |m| {
        with_id("redis", "0.3.0")(m);
        m.provides = vec![CLUSTER_STRATEGY.into()];
    });
    let error = bench.load(&redis).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "plugin redis 0.3.0 rejected: it provides cluster-strategy, already provided by gossip 1.2.0; remove one of them"
    );
    bench.assert_refused_unrun(&redis, "redis", &error);
    assert_eq!(bench.state(&gossip).0, PluginState::Active);
}

#[tokio::test]
async fn a_conflict_declared_by_the_new_plugin_is_refused() {
    let bench = Bench::new();
    let enterprise = bench.variant("enterprise", with_id("enterprise", "1.0.0"));
    bench.load(&enterprise).await.unwrap();
    let hazelcast = bench.variant("hazelcast", |m| {
        with_id("hazelcast", "2.0.0")(m);
        m.conflicts = vec!["enterprise".into()];
    });
    let error = bench.load(&hazelcast).await.unwrap_err();
    assert!(matches!(error, LoadError::Admission(AdmissionError::ConflictDeclared { .. })), "{error}");
    assert!(error.to_string().contains("declares a conflict with \"enterprise\", and enterprise 1.0.0 is active"));
    bench.assert_refused_unrun(&hazelcast, "hazelcast", &error);
}

#[tokio::test]
async fn a_conflict_declared_by_an_active_plugin_is_refused() {
    let bench = Bench::new();
    let hazelcast = bench.variant("hazelcast", |m| {
        with_id("hazelcast", "2.0.0")(m);
        m.conflicts = vec!["legacy-clustering".into()];
    });
    bench.load(&hazelcast).await.unwrap();
    // Conflicts match capabilities too, not only ids.
    let clustering = bench.variant("clustering", |m| {
        with_id("clustering", "1.0.0")(m);
        m.provides = vec!["legacy-clustering".into()];
    });
    let error = bench.load(&clustering).await.unwrap_err();
    assert!(matches!(error, LoadError::Admission(AdmissionError::ConflictedBy { .. })), "{error}");
    assert!(error
        .to_string()
        .contains("the active plugin hazelcast 2.0.0 declares a conflict with \"legacy-clustering\""));
    bench.assert_refused_unrun(&clustering, "clustering", &error);
}

#[tokio::test]
async fn a_root_module_of_the_wrong_layout_is_refused() {
    let bench = Bench::new();
    let error = bench.load(&plugin("fixture_bad_layout")).await.unwrap_err();
    assert!(matches!(error, LoadError::Abi(AbiError::LayoutMismatch { .. })), "{error}");
    assert!(error.to_string().contains("rebuild it against clusterhost-plugin-api"), "{error}");
    assert_eq!(bench.state(&plugin("fixture_bad_layout")), (PluginState::Rejected, error.to_string()));
}

#[tokio::test]
async fn a_root_module_of_an_incompatible_version_is_refused() {
    let bench = Bench::new();
    let error = bench.load(&plugin("fixture_bad_version")).await.unwrap_err();
    assert!(matches!(error, LoadError::Abi(AbiError::VersionMismatch { .. })), "{error}");
    assert!(error.to_string().contains("9.0.0"), "{error}");
    assert_eq!(bench.state(&plugin("fixture_bad_version")), (PluginState::Rejected, error.to_string()));
}

#[tokio::test]
async fn a_library_without_a_root_module_is_refused() {
    let bench = Bench::new();
    let error = bench.load(&plugin("fixture_no_root_module")).await.unwrap_err();
    assert!(matches!(error, LoadError::Abi(AbiError::MissingRootModule { .. })), "{error}");
    assert!(error.to_string().contains("not built with declare_plugin!"), "{error}");
    assert_eq!(bench.state(&plugin("fixture_no_root_module")), (PluginState::Rejected, error.to_string()));
}

#[tokio::test]
async fn a_plugin_that_panics_in_create_is_faulted_and_the_node_goes_on() {
    let bench = Bench::new();
    let path = bench.variant("panics", |m| {
        m.metadata.insert("behavior".into(), "panic-in-create".into());
    });
    let error = bench.load(&path).await.unwrap_err();
    assert!(
        matches!(&error, LoadError::Lifecycle(LifecycleError::Panicked { phase: LifecycleCall::Create, message, .. })
            if message.contains("fixture panics in create")),
        "{error}"
    );
    let (state, reason) = bench.state(&path);
    assert_eq!(state, PluginState::Faulted);
    assert!(reason.contains("panicked in create"), "{reason}");
    // The host is intact: the next plugin loads and runs.
    let next = bench.variant("next", with_id("next", "1.0.0"));
    assert!(matches!(bench.load(&next).await.unwrap(), LoadOutcome::Activated { .. }));
}

#[tokio::test]
async fn a_plugin_that_panics_or_fails_in_create_or_start_is_faulted() {
    let bench = Bench::new();
    for (name, behavior, expect) in [
        ("p", "panic-in-start", "panicked in start"),
        ("f", "fail-in-start", "failed in start"),
        ("c", "fail-in-create", "failed in create"),
    ] {
        let path = bench.variant(name, |m| {
            m.id = format!("fixture-{name}");
            m.metadata.insert("behavior".into(), behavior.into());
        });
        let error = bench.load(&path).await.unwrap_err();
        assert!(matches!(error, LoadError::Lifecycle(_)), "{error}");
        let (state, reason) = bench.state(&path);
        assert_eq!(state, PluginState::Faulted);
        assert!(reason.contains(expect), "{reason}");
    }
    assert!(bench.manager.active().await.is_empty());
}

#[tokio::test]
async fn a_plugin_that_hangs_in_create_or_start_is_faulted_after_the_budget() {
    let bench = Bench::with(|c| c.lifecycle_budget = Duration::from_millis(300));
    for (name, behavior) in [("hc", "hang-in-create"), ("hs", "hang-in-start")] {
        let path = bench.variant(name, |m| {
            m.id = format!("fixture-{name}");
            m.metadata.insert("behavior".into(), behavior.into());
        });
        let error = bench.load(&path).await.unwrap_err();
        assert!(matches!(error, LoadError::Lifecycle(LifecycleError::TimedOut { .. })), "{error}");
        assert!(error.to_string().contains("cluster.max.execution.seconds"), "{error}");
        assert_eq!(bench.state(&path).0, PluginState::Faulted);
    }
}

#[tokio::test]
async fn a_failed_upgrade_keeps_the_previous_version_active() {
    let bench = Bench::new();
    let v1 = bench.variant("v1", with_id("fixture", "1.0.0"));
    bench.load(&v1).await.unwrap();
    let v2 = bench.variant("v2", |m| {
        with_id("fixture", "2.0.0")(m);
        m.metadata.insert("behavior".into(), "fail-in-start".into());
    });
    let error = bench.load(&v2).await.unwrap_err();
    assert!(matches!(error, LoadError::Lifecycle(_)), "{error}");
    assert_eq!(bench.state(&v2).0, PluginState::Faulted);
    let (state, reason) = bench.state(&v1);
    assert_eq!(state, PluginState::Active);
    assert!(reason.contains("kept after the upgrade to 2.0.0 failed"), "{reason}");
    assert_eq!(bench.manager.active().await, vec![("fixture".to_string(), Version::new(1, 0, 0))]);
}

#[tokio::test]
async fn stop_all_stops_plugins_in_reverse_start_order() {
    let bench = Bench::new();
    for id in ["first", "second", "third"] {
        let path = bench.variant(id, with_id(id, "1.0.0"));
        bench.load(&path).await.unwrap();
    }
    bench.manager.stop_all().await;
    let journal = std::fs::read_to_string(bench.journal()).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines, ["first start", "second start", "third start", "third stop", "second stop", "first stop"]);
    assert!(bench.manager.records().iter().all(|r| r.state == PluginState::Retired));
}
