//! The test kit: builds the binaries and fixture plugins the tests use,
//! restamps fixture manifests, and runs real `clusterhost` processes.
//!
//! Fixtures are built once per test process by `cargo build` into the same
//! target directory the tests were built in.

pub mod admin;
pub mod browser;
pub mod cluster;
pub mod haproxy;
pub mod netns;
pub mod procfs;
pub mod redis;
pub mod signing;
pub mod upgrade;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clusterhost_plugin_api::manifest::MANIFEST_SECTION;
use clusterhost_plugin_api::Manifest;
use object::{Object, ObjectSection};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_owned()
}

/// The profile directory the running executable was built into (e.g.
/// target/debug): tests and benches live in target/<profile>/deps/, binaries
/// (the `bench` runner) in target/<profile>/.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let dir = exe.parent().expect("an executable lives in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>/deps has a parent").to_owned()
    } else {
        dir.to_owned()
    }
}

/// Set to a directory of already built artifacts (a profile directory) to
/// skip the build in [`artifacts`]: for helper processes a benchmark starts,
/// which would otherwise each run `cargo build` again.
pub const ARTIFACTS_ENV: &str = "CLUSTERHOST_TEST_ARTIFACTS";

/// Builds every binary and plugin the tests need (once per process) and
/// returns the directory they are in.
pub fn artifacts() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        if let Some(dir) = std::env::var_os(ARTIFACTS_ENV) {
            return PathBuf::from(dir);
        }
        let profile_dir = profile_dir();
        let target_dir = profile_dir.parent().expect("a profile dir is inside the target dir");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .arg("build")
            .arg("--quiet")
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            command.arg("--release");
        }
        // Every member (new plugins are covered without listing them here)
        // but the bench runner, which calls this while it runs: relinking it
        // would replace the running executable, which it starts again as a helper.
        command.args(["--workspace", "--exclude", "bench"]);
        let status = command.status().expect("cargo can be run from the tests");
        assert!(status.success(), "building the test fixtures failed: {status}");
        profile_dir
    })
}

/// The strategy built against plugin API 0.1.0, before any method was
/// appended to the strategy contract (tests/fixtures/old-api: its own
/// workspace around a frozen copy of that API). Built once per process
/// into the same target directory; `libfixture_old_api.so`.
pub fn old_api_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let profile_dir = artifacts().to_owned();
            if std::env::var_os(ARTIFACTS_ENV).is_none() {
                let target_dir = profile_dir.parent().expect("a profile dir is inside the target dir");
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let mut command = Command::new(cargo);
                command
                    .args(["build", "--quiet", "--manifest-path"])
                    .arg(workspace_root().join("tests/fixtures/old-api/Cargo.toml"))
                    .env("CARGO_TARGET_DIR", target_dir);
                if profile_dir.file_name().is_some_and(|n| n == "release") {
                    command.arg("--release");
                }
                let status = command.status().expect("cargo can be run from the tests");
                assert!(status.success(), "building tests/fixtures/old-api failed: {status}");
            }
            let path = profile_dir.join("libfixture_old_api.so");
            assert!(path.is_file(), "{} was not built", path.display());
            path
        })
        .clone()
}

/// A built plugin library, e.g. `plugin("fixture_plugin")`.
pub fn plugin(lib_name: &str) -> PathBuf {
    let path = artifacts().join(format!("lib{lib_name}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The `clusterhost` binary.
pub fn clusterhost_bin() -> PathBuf {
    artifacts().join("clusterhost")
}

/// The chat showcase's binary (examples/chat).
pub fn chat_bin() -> PathBuf {
    let path = artifacts().join("clusterhost-chat");
    assert!(path.is_file(), "{} was not built (cargo build --workspace)", path.display());
    path
}

/// Where the manifest section lies in an ELF image: (file offset, size).
fn manifest_range(data: &[u8]) -> (usize, usize) {
    let file = object::File::parse(data).expect("the fixture is an ELF file");
    let section = file.section_by_name(MANIFEST_SECTION).expect("the fixture has a manifest");
    let (offset, size) = section.file_range().expect("the manifest section has file data");
    (offset as usize, size as usize)
}

/// The manifest embedded in `path`.
pub fn manifest_of(path: &Path) -> Manifest {
    let data = std::fs::read(path).expect("the plugin file is readable");
    let (offset, size) = manifest_range(&data);
    Manifest::parse_bytes(&data[offset..offset + size]).expect("the embedded manifest parses")
}

/// Writes `raw` as the manifest section of a copy of `src` at `dst`.
pub fn restamp_raw(src: &Path, dst: &Path, raw: &str) {
    let mut data = std::fs::read(src).expect("the plugin file is readable");
    let (offset, size) = manifest_range(&data);
    assert!(raw.len() <= size, "the new manifest ({} bytes) does not fit the section ({size} bytes)", raw.len());
    let section = &mut data[offset..offset + size];
    section.fill(b' ');
    section[..raw.len()].copy_from_slice(raw.as_bytes());
    write_file(dst, &data);
}

/// Copies `src` to `dst` with its manifest changed by `edit`, as a release
/// tool restamping a build would.
pub fn restamp(src: &Path, dst: &Path, edit: impl FnOnce(&mut Manifest)) {
    let mut manifest = manifest_of(src);
    edit(&mut manifest);
    restamp_raw(src, dst, &manifest.to_toml());
}

/// Builds of `src` restamped as versions 1.N.0 for N in 1..=n (above any
/// shipped version), written to `dir` as `NAME-1.N.0.so`: what a series of
/// hot upgrades publishes. Returns (file, version) in order.
pub fn restamped_versions(src: &Path, dir: &Path, name: &str, n: usize) -> Vec<(PathBuf, String)> {
    (1..=n)
        .map(|i| {
            let version = format!("1.{i}.0");
            let path = dir.join(format!("{name}-{version}.so"));
            restamp(src, &path, |m| m.version = version.parse().expect("1.N.0 is a semver version"));
            (path, version)
        })
        .collect()
}

fn write_file(dst: &Path, data: &[u8]) {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).expect("the destination directory can be created");
    }
    std::fs::write(dst, data).expect("the destination is writable");
}

/// Polls `condition` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    free_port_in(PORTS, |port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// Where node, member and admin ports come from (Redis servers use
/// 10000..16000, and their cluster-bus ports 20000..26000).
pub const PORTS: std::ops::Range<u16> = 26_000..32_768;

/// A random port from `range` for which `free` holds (it binds what it
/// needs, then releases it). Test ports come from below the kernel's
/// ephemeral range (32768 and up): a port taken with `bind(0)` could be
/// handed out again as the local port of some outgoing connection before
/// the node under test binds it. A port is handed out once per process,
/// so tests running in parallel never get the same one.
pub fn free_port_in(range: std::ops::Range<u16>, free: impl Fn(u16) -> bool) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: Mutex<std::collections::BTreeSet<u16>> = Mutex::new(std::collections::BTreeSet::new());
    for attempt in 0u32..10_000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(attempt);
        let port = range.start + (hasher.finish() % u64::from(range.end - range.start)) as u16;
        let mut handed_out = clusterhost_plugin_api::sync::lock(&HANDED_OUT);
        if !handed_out.contains(&port) && free(port) {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in {range:?} on 127.0.0.1")
}

/// A `clusterhost run` process; killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// Each log line with when it was read from the node's stderr.
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    /// The node's home.
    pub home: PathBuf,
    /// The admin API's port: the one passed in, else a free one the kit chose
    /// (so parallel tests never share the default 9090).
    pub admin_port: u16,
}

impl NodeProcess {
    /// Starts `clusterhost run --home HOME`, collecting its log lines.
    pub fn start(home: &Path) -> NodeProcess {
        Self::start_with(home, &[], &[])
    }

    /// As [`start`](Self::start), with more `run` arguments and environment variables.
    /// Unless `args` or `envs` set the admin port, a free one is passed.
    pub fn start_with(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> NodeProcess {
        Self::start_wrapped(&[], home, args, envs)
    }

    /// As [`start_with`](Self::start_with), run through `wrapper` (e.g.
    /// `["ip", "netns", "exec", "NS"]`: a wrapper that execs, so the child
    /// is the node itself and a kill reaches it).
    pub fn start_wrapped(wrapper: &[&str], home: &Path, args: &[&str], envs: &[(&str, &str)]) -> NodeProcess {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(clusterhost_bin());
                command
            }
            None => Command::new(clusterhost_bin()),
        };
        command.arg("run");
        Self::launch(command, home, args, envs)
    }

    /// An application embedding a node ([`clusterhost::Node`]) started as
    /// `PROGRAM --home HOME ARGS`, taking `run`'s node flags (a free
    /// `--admin-port` unless `args` set one), e.g. the chat showcase.
    pub fn start_program(program: &Path, home: &Path, args: &[&str]) -> NodeProcess {
        Self::launch(Command::new(program), home, args, &[])
    }

    fn launch(mut command: Command, home: &Path, args: &[&str], envs: &[(&str, &str)]) -> NodeProcess {
        let given = args.iter().position(|a| *a == "--admin-port").and_then(|i| args.get(i + 1)).copied();
        let given = given.or_else(|| envs.iter().find(|(k, _)| *k == "CLUSTERHOST_ADMIN_PORT").map(|(_, v)| *v));
        let (admin_port, extra) = match given.and_then(|p| p.parse().ok()) {
            Some(port) => (port, Vec::new()),
            None => {
                let port = free_port();
                (port, vec!["--admin-port".to_string(), port.to_string()])
            }
        };
        let mut child = command
            .arg("--home")
            .arg(home)
            .args(args)
            .args(&extra)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("clusterhost starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let read_at = Instant::now();
                eprintln!("[node] {line}");
                clusterhost_plugin_api::sync::lock(&sink).push((read_at, line));
            }
        });
        NodeProcess { child, log, home: home.to_owned(), admin_port }
    }

    /// The admin API's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Waits until the admin API answers (it starts after the initial plugin scan).
    pub fn wait_for_admin(&self, timeout: Duration) {
        let url = format!("{}/api/plugins", self.admin_url());
        // Any HTTP answer (a 401 off loopback too) means it is serving.
        wait_until(&format!("the admin API at {url}"), timeout, || {
            matches!(ureq::get(&url).call(), Ok(_) | Err(ureq::Error::StatusCode(_)))
        });
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        clusterhost_plugin_api::sync::lock(&self.log).iter().map(|(_, line)| line.clone()).collect()
    }

    /// How many log lines have been read so far.
    pub fn log_len(&self) -> usize {
        clusterhost_plugin_api::sync::lock(&self.log).len()
    }

    /// The log lines from the `from`-th on, each with when it was read from
    /// the node's stderr (the node's writer does not buffer lines, so this
    /// is within a fraction of a millisecond of when it was logged).
    pub fn timed_log_since(&self, from: usize) -> Vec<(Instant, String)> {
        let log = clusterhost_plugin_api::sync::lock(&self.log);
        log.get(from..).unwrap_or_default().to_vec()
    }

    /// Waits for a log line containing every one of `parts`; returns it.
    pub fn wait_for_log(&self, parts: &[&str], timeout: Duration) -> String {
        let mut found = None;
        wait_until(&format!("a node log line with {parts:?}"), timeout, || {
            found = self.log().into_iter().find(|l| parts.iter().all(|p| l.contains(p)));
            found.is_some()
        });
        found.expect("wait_until returned, so a line was found")
    }

    /// The node's status file, once it parses and `check` holds on it.
    pub fn wait_for_status(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&clusterhost::status::NodeStatus) -> bool,
    ) -> clusterhost::status::NodeStatus {
        let mut found = None;
        wait_until(what, timeout, || {
            found = clusterhost::status::read(&self.home).ok().filter(&mut check);
            found.is_some()
        });
        found.expect("wait_until returned, so the status was found")
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL (no goodbye to anyone) and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) takes plain integers and touches no memory of ours;
        // the pid is our own child, not yet reaped (so not reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(Instant::now() < deadline, "the node did not exit within {timeout:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // SIGTERM first, so the node stops its plugins and removes its
        // private copies; SIGKILL if it does not exit soon.
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as in `terminate`: plain integers, our own unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
