//! Maps plugin libraries and calls into them, each call contained.
//!
//! Libraries are loaded from a private copy with a unique path: glibc caches
//! `dlopen` by path and inode, and overwriting a mapped `.so` in place
//! crashes the process, so the files in plugins/ are never mapped.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RStr, RString};
use abi_stable::type_layout::TypeLayout;
use clusterhost_plugin_api::abi::{HostServices, HostServicesBox, HostServices_TO, LogLevel, PluginBox, PluginModRef};
use clusterhost_plugin_api::{PluginError, PluginErrorKind};

/// Why a library could not be mapped as a plugin (after its manifest passed).
#[derive(Debug, thiserror::Error)]
pub enum AbiError {
    #[error("plugin {id}: the dynamic loader refused its private copy {path}: {detail}; if the temp directory is mounted noexec, set TMPDIR to one that is not")]
    Open { id: String, path: PathBuf, detail: String },
    #[error("plugin {id} has no clusterhost root module ({detail}); it was not built with declare_plugin!")]
    MissingRootModule { id: String, detail: String },
    #[error("plugin {id} was built against an incompatible plugin API ({detail}); rebuild it against clusterhost-plugin-api {host_api}")]
    VersionMismatch { id: String, detail: String, host_api: String },
    #[error("plugin {id}'s root module does not have the layout this host expects; rebuild it against clusterhost-plugin-api {host_api}. Details: {detail}")]
    LayoutMismatch { id: String, detail: String, host_api: String },
    #[error("plugin {id}'s root module failed to initialise: {detail}; this is a defect in the plugin: report it to its author")]
    RootModuleFailed { id: String, detail: String },
}

/// Why a call into a running plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("plugin {id} failed in {phase}: {message}; fix the cause and publish the plugin file again")]
    Failed { id: String, phase: LifecycleCall, message: String },
    #[error("plugin {id} panicked in {phase}: {message}; the panic was contained and the plugin taken out of service")]
    Panicked { id: String, phase: LifecycleCall, message: String },
    #[error("plugin {id} did not finish {phase} within {budget:?} (cluster.max.execution.seconds); it was taken out of service")]
    TimedOut { id: String, phase: LifecycleCall, budget: Duration },
}

/// A lifecycle call into a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleCall {
    /// The plugin's constructor (`create` of its root module).
    Create,
    /// `Plugin::start`: into service.
    Start,
    /// `Plugin::stop`: out of service.
    Stop,
}

impl std::fmt::Display for LifecycleCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LifecycleCall::Create => "create",
            LifecycleCall::Start => "start",
            LifecycleCall::Stop => "stop",
        })
    }
}

/// A private copy of a published plugin file.
pub struct PrivateCopy {
    /// Where the copy is; the only path ever mapped.
    pub path: PathBuf,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The content, exactly as written to `path`.
    pub bytes: Vec<u8>,
}

/// The directory of private library copies; removed when the store drops.
pub struct PrivateStore {
    /// `clusterhost-PID-XXXX` under the temp dir: the pid lets a later node
    /// sweep the copies of one that was killed.
    dir: tempfile::TempDir,
    /// Numbers the copies, so each gets a path never mapped before.
    next: AtomicU64,
}

impl PrivateStore {
    /// Creates the store under `parent` (the system temp dir when `None`).
    pub fn new(parent: Option<&Path>) -> std::io::Result<Self> {
        let base = parent.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        sweep_stale(&base);
        let prefix = format!("clusterhost-{}-", std::process::id());
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        // Only the node may write here: a signature is checked on a copy's
        // bytes and the copy is mapped later, so nobody else may swap or
        // change it in between (the directory is the node's, mode 0700).
        builder.permissions(std::fs::Permissions::from_mode(0o700));
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent)?,
            None => builder.tempdir()?,
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        Ok(PrivateStore { dir, next: AtomicU64::new(1) })
    }

    /// Creates a new, empty copy with a unique path, named after the
    /// published file `name`. The returned handle is the only one ever open
    /// for writing: the file is created read-only (0400) in the node's own
    /// directory, so once that handle is closed its bytes stay as written.
    pub fn create(&self, name: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let stem = Path::new(name).file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
        let target = self.dir.path().join(format!("{n:04}-{stem}.so"));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&target)?;
        Ok((target, file))
    }

    /// Copies `source` to a new unique path.
    pub fn copy_in(&self, source: &Path) -> std::io::Result<PrivateCopy> {
        self.copy_in_checked(source, |_| ()).map(|(copy, ())| copy)
    }

    /// [`copy_in`](Self::copy_in), running `check` on the bytes read (the
    /// very bytes written to the copy) on a thread of its own while they
    /// are hashed and written, so a check that reads every byte (a
    /// signature) adds little to the copy's time.
    pub fn copy_in_checked<R: Send>(
        &self,
        source: &Path,
        check: impl FnOnce(&[u8]) -> R + Send,
    ) -> std::io::Result<(PrivateCopy, R)> {
        let name = source.file_name().and_then(|s| s.to_str()).unwrap_or("plugin.so");
        let mut input = std::fs::File::open(source)?;
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        // Three passes over the bytes side by side: the check, the
        // SHA-256 and the write (each reads every byte; two cores or more
        // run them at once).
        let (written, sha256, checked) = std::thread::scope(|scope| {
            let checking = scope.spawn(|| check(&bytes));
            let hashing = scope.spawn(|| super::digest::sha256_hex(&bytes));
            let written = (|| {
                let (target, mut out) = self.create(name)?;
                std::io::Write::write_all(&mut out, &bytes)?;
                start_writeback(&out);
                // Closed: no writer of the copy is left.
                drop(out);
                Ok::<_, std::io::Error>(target)
            })();
            (written, hashing.join(), checking.join())
        });
        let (sha256, checked) = match (sha256, checked) {
            (Ok(sha256), Ok(checked)) => (sha256, checked),
            (Err(panic), _) | (_, Err(panic)) => std::panic::resume_unwind(panic),
        };
        let path = written?;
        Ok((PrivateCopy { path, sha256, bytes }, checked))
    }

    /// Where the copies live.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Deletes every copy (the node is stopping; mapped libraries stay
    /// usable: unlinking a mapped file does not unmap it).
    pub fn discard(&self) {
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

/// Starts writing `file` back to disk, without waiting. The copy is
/// unlinked once mapped, and the dirty page-cache pages of an unlinked file
/// are never written back, so they could never be reclaimed (see
/// [`page_out`]); clean ones can, once the version is retired.
fn start_writeback(file: &std::fs::File) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: `file` is an open descriptor for the duration of the call;
    // sync_file_range only queues writeback of its pages (0, 0: all of it).
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// [`start_writeback`] of the copy at `path` (one written elsewhere, e.g.
/// by an upload); a copy that cannot be opened is left as it is.
pub fn start_writeback_of(path: &Path) {
    if let Ok(file) = std::fs::File::open(path) {
        start_writeback(&file);
    }
}

/// Removes the private directories of node processes that no longer run
/// (a node killed with SIGKILL cannot clean up after itself).
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("clusterhost-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == 0 || pid == std::process::id() {
            continue;
        }
        // A node run by another user still runs: its copies are kept.
        let gone = !crate::process::is_running(pid);
        if gone && entry.path().is_dir() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(dir = %entry.path().display(), "removed the private plugin copies of a node that no longer runs")
                }
                Err(e) => tracing::debug!(dir = %entry.path().display(), "could not remove stale private copies: {e}"),
            }
        }
    }
}

/// Asks the kernel to reclaim the resident pages of the library mapped
/// from `copy` (a retired plugin's private copy): `abi_stable` never
/// unmaps a library, but its pages need not stay in memory. Returns how
/// many bytes of mappings were advised.
///
/// `MADV_PAGEOUT` only reclaims: a clean file-backed page is dropped and
/// read again from the (unlinked, still open) file if it is ever touched;
/// a dirty private page goes to swap, or stays where there is none. The
/// contents a mapping shows never change, so whatever of the retired
/// library is still reachable (statics, vtables) stays valid.
pub fn page_out(copy: &Path) -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return 0 };
    let wanted = copy.to_string_lossy();
    let mut advised = 0;
    for line in maps.lines() {
        let Some((start, end, path)) = mapping(line) else { continue };
        if path != wanted || end <= start {
            continue;
        }
        // SAFETY: the range is a whole mapping of this process, read from
        // /proc/self/maps; MADV_PAGEOUT does not change what it maps or
        // what reading it returns (see above), so no reference into it is
        // invalidated. A range unmapped meanwhile makes madvise fail with
        // ENOMEM, which is ignored.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if rc == 0 {
            advised += end - start;
        }
    }
    advised
}

/// One line of /proc/PID/maps (or a mapping's header line in smaps):
/// `start-end perms offset dev inode   path` as (start, end, path), the
/// path without the ` (deleted)` an unlinked file gets.
fn mapping(line: &str) -> Option<(usize, usize, &str)> {
    let (range, _) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
    let path = line.splitn(6, char::is_whitespace).nth(5).map(str::trim_start).unwrap_or_default();
    Some((start, end, path.strip_suffix(" (deleted)").unwrap_or(path)))
}

/// Maps the library at `copy` and checks its root module's version and layout.
///
/// A plugin built against this API is checked against this API's layout.
/// One built against an earlier 0.1.x is checked against that version's
/// layout, kept frozen ([`FROZEN`]): abi_stable's check refuses a library
/// whose prefix types (the strategy's vtable) have fewer members than the
/// host's, although reading an appended member is safe. The accessors of
/// appended members check the plugin's own vtable, so the host sees them
/// as missing and falls back (docs/cluster.md, "How the contract grows").
///
/// The library stays mapped for the life of the process (abi_stable never
/// unloads), even when a check here fails.
pub fn open(id: &str, copy: &Path) -> Result<PluginModRef, AbiError> {
    let host_api = clusterhost_plugin_api::API_VERSION.to_string();
    let header = lib_header_from_path(copy).map_err(|e| match e {
        LibraryError::GetSymbolError { .. } => AbiError::MissingRootModule { id: id.into(), detail: e.to_string() },
        other => AbiError::Open { id: id.into(), path: copy.to_owned(), detail: other.to_string() },
    })?;
    let built_with = header.version_strings().version;
    let frozen = FROZEN.iter().find(|(version, _)| *version == built_with && *version != host_api);
    let loaded = match frozen {
        None => header.init_root_module::<PluginModRef>(),
        Some((_, frozen_layout)) => {
            let Some(layout) = header.layout() else {
                return Err(AbiError::LayoutMismatch {
                    id: id.into(),
                    detail: "its root module carries no layout to check".into(),
                    host_api,
                });
            };
            abi_stable::abi_stability::abi_checking::check_layout_compatibility(frozen_layout, layout).map_err(
                |e| AbiError::LayoutMismatch {
                    id: id.into(),
                    detail: first_lines(&e.to_string(), 12),
                    host_api: host_api.clone(),
                },
            )?;
            // SAFETY: the library's root module has the layout of API
            // `built_with`, checked just above; this API's layout is that one
            // with members appended after the `last_prefix_field` of its
            // prefix types (the growth rule), and every appended member is
            // read through an accessor that checks the library's own
            // vtable, which reports it missing.
            unsafe { header.init_root_module_with_unchecked_layout::<PluginModRef>() }
        }
    };
    loaded.map_err(|e| match e {
        LibraryError::IncompatibleVersionNumber { .. } | LibraryError::ParseVersionError(_) => {
            AbiError::VersionMismatch { id: id.into(), detail: e.to_string(), host_api: host_api.clone() }
        }
        LibraryError::AbiInstability(_) => AbiError::LayoutMismatch {
            id: id.into(),
            detail: first_lines(&e.to_string(), 12),
            host_api: host_api.clone(),
        },
        other => AbiError::RootModuleFailed { id: id.into(), detail: other.to_string() },
    })
}

/// The earlier plugin APIs a plugin may have been built against, each with
/// its root module's layout, frozen (frozen-api/VERSION: a copy of
/// that API's sources, never updated). A version appended to the contract
/// adds its predecessor here.
const FROZEN: &[(&str, &TypeLayout)] = &[
    ("0.1.0", <plugin_api_0_1_0::abi::PluginModRef as abi_stable::StableAbi>::LAYOUT),
    ("0.1.1", <plugin_api_0_1_1::abi::PluginModRef as abi_stable::StableAbi>::LAYOUT),
    ("0.1.2", <plugin_api_0_1_2::abi::PluginModRef as abi_stable::StableAbi>::LAYOUT),
    ("0.1.3", <plugin_api_0_1_3::abi::PluginModRef as abi_stable::StableAbi>::LAYOUT),
];

fn first_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().take(n).collect();
    lines.join(" ")
}

/// Builds the plugin instance on a thread of its own, so a create that hangs
/// costs one parked thread, never the node.
pub async fn create(
    id: &str,
    module: PluginModRef,
    services: HostServicesBox,
    budget: Duration,
) -> Result<PluginBox, LifecycleError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let create_fn = module.create();
    let spawned = std::thread::Builder::new().name(format!("create-{id}")).spawn(move || {
        let _ = tx.send(create_fn(services));
    });
    if let Err(e) = spawned {
        return Err(LifecycleError::Failed {
            id: id.into(),
            phase: LifecycleCall::Create,
            message: format!("could not start a thread for it: {e}"),
        });
    }
    match tokio::time::timeout(budget, rx).await {
        Ok(Ok(result)) => result_of(id, LifecycleCall::Create, result),
        Ok(Err(_)) => Err(LifecycleError::Failed {
            id: id.into(),
            phase: LifecycleCall::Create,
            message: "its create thread ended without an answer".into(),
        }),
        Err(_) => Err(LifecycleError::TimedOut { id: id.into(), phase: LifecycleCall::Create, budget }),
    }
}

/// Calls start or stop within `budget`.
pub async fn call(
    id: &str,
    instance: &PluginBox,
    phase: LifecycleCall,
    budget: Duration,
) -> Result<(), LifecycleError> {
    let future = match phase {
        LifecycleCall::Start => instance.start(),
        LifecycleCall::Stop => instance.stop(),
        LifecycleCall::Create => unreachable!("create goes through loader::create"),
    };
    match tokio::time::timeout(budget, future).await {
        Ok(result) => result_of(id, phase, result),
        Err(_) => Err(LifecycleError::TimedOut { id: id.into(), phase, budget }),
    }
}

fn result_of<T>(id: &str, phase: LifecycleCall, result: RResult<T, PluginError>) -> Result<T, LifecycleError> {
    result.into_result().map_err(|e| match e.kind {
        PluginErrorKind::Failed => LifecycleError::Failed { id: id.into(), phase, message: e.message.into() },
        PluginErrorKind::Panicked => LifecycleError::Panicked { id: id.into(), phase, message: e.message.into() },
    })
}

/// The host's services for one plugin.
#[derive(Clone)]
pub struct HostContext {
    /// The plugin these services are for.
    pub plugin_id: String,
    /// Node home directory.
    pub home_dir: String,
    /// `cluster.config.directory`.
    pub config_dir: String,
    /// What `property` answers.
    pub values: crate::properties::NodeValues,
}

impl HostContext {
    /// Boxes these services for the boundary.
    pub fn into_services(self) -> HostServicesBox {
        HostServices_TO::from_ptr(abi_stable::std_types::RArc::new(self), TD_Opaque)
    }
}

impl HostServices for HostContext {
    fn plugin_id(&self) -> RString {
        self.plugin_id.as_str().into()
    }

    fn host_version(&self) -> RString {
        env!("CARGO_PKG_VERSION").into()
    }

    fn home_dir(&self) -> RString {
        self.home_dir.as_str().into()
    }

    fn config_dir(&self) -> RString {
        self.config_dir.as_str().into()
    }

    fn property(&self, key: RStr<'_>) -> ROption<RString> {
        self.values.get(key.as_str()).map(RString::from).into()
    }

    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        let (plugin, target, message) = (self.plugin_id.as_str(), target.as_str(), message.as_str());
        // The host's writer is non-blocking, so this never stalls the plugin thread.
        match level {
            LogLevel::Error => tracing::error!(target: "plugin", plugin, source = target, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", plugin, source = target, "{message}"),
            LogLevel::Info => tracing::info!(target: "plugin", plugin, source = target, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "plugin", plugin, source = target, "{message}"),
            LogLevel::Trace => tracing::trace!(target: "plugin", plugin, source = target, "{message}"),
        }
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;

    /// Resident KiB of the mappings of `path` in this process (smaps).
    fn resident_kib(path: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let wanted = path.to_string_lossy().into_owned();
        let mut inside = false;
        let mut total = 0;
        for line in smaps.lines() {
            if let Some((_, _, name)) = mapping(line) {
                inside = name == wanted;
            } else if inside {
                if let Some(kib) = line.strip_prefix("Rss:") {
                    total += kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap();
                }
            }
        }
        total
    }

    #[test]
    fn page_out_gives_back_the_resident_pages_of_a_mapped_file() {
        use std::os::unix::io::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0001-lib.so");
        let len = 8 << 20;
        std::fs::write(&path, vec![7u8; len]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a fresh private read-only mapping of a file this test owns,
        // unmapped below before the file is dropped.
        let map =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        assert_ne!(map, libc::MAP_FAILED);
        // SAFETY: `map` is `len` readable bytes, mapped above.
        let bytes = unsafe { std::slice::from_raw_parts(map as *const u8, len) };
        let sum: u64 = bytes.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        assert_eq!(sum, 7 * (len as u64 / 4096));
        std::fs::remove_file(&path).unwrap();
        let before = resident_kib(&path);
        assert!(before >= 4 << 10, "the touched mapping is resident: {before} KiB");
        assert_eq!(page_out(&path), len);
        let after = resident_kib(&path);
        assert!(after < before / 4, "resident {before} KiB before, {after} KiB after");
        // Still readable, same contents.
        assert_eq!(bytes[len - 1], 7);
        // SAFETY: unmapping what was mapped above; `bytes` is not used after.
        unsafe { libc::munmap(map, len) };
    }

    #[test]
    fn a_new_store_sweeps_the_copies_of_dead_nodes_and_discard_removes_its_own() {
        let parent = tempfile::tempdir().unwrap();
        // pid_max on Linux is at most 2^22: this pid cannot be running.
        let stale = parent.path().join("clusterhost-2147483000-abc");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("0001-x.so"), b"x").unwrap();
        let unrelated = parent.path().join("other-dir");
        std::fs::create_dir_all(&unrelated).unwrap();
        let store = PrivateStore::new(Some(parent.path())).unwrap();
        assert!(!stale.exists(), "the dead node's copies were removed");
        assert!(unrelated.exists(), "other directories are left alone");
        let mine = store.path().to_owned();
        std::fs::write(mine.join("0001-y.so"), b"y").unwrap();
        // Another store of this same process does not sweep the live one.
        let _second = PrivateStore::new(Some(parent.path())).unwrap();
        assert!(mine.exists());
        store.discard();
        assert!(!mine.exists());
    }
}
