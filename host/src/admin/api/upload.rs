//! An uploaded plugin file coming in: the body streamed at once into a new
//! private copy (what the node will map) and a hidden temporary file in
//! plugins/ (what is published), hashed as it streams, its manifest read
//! from the copy; then published under its name. The node's load uses that
//! hash and manifest: the file is hashed and parsed once.

use std::path::Path;

use clusterhost_plugin_api::Manifest;
use sha2::{Digest, Sha256};
use tempfile::TempPath;

use super::ApiError;
use crate::admin::limits::CappedBody;
use crate::PluginManager;

/// An upload received and checked, not yet published.
pub(super) struct Upload {
    /// The private copy; removed when dropped unless published.
    copy: TempPath,
    /// `plugins/.NAME.XXXXXX.tmp`; removed when dropped unless renamed.
    pending: TempPath,
    /// SHA-256 of the body, hex.
    pub(super) sha256: String,
    /// Read from the copy.
    pub(super) manifest: Manifest,
}

/// A file mapped read-only, unmapped when dropped.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// Maps the first `len` bytes of `file` (`len` > 0).
    fn new(file: &std::fs::File, len: usize) -> std::io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only private mapping of an open file; the
        // pointer is only read through `bytes` while `self` lives.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`; the file is
        // the upload's own private copy (a unique name this request created
        // and finished writing), which nothing else writes while it is mapped.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made, once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Reads the manifest of the uploaded copy without reading the file into
/// memory (only the pages the ELF reader touches are loaded).
fn manifest_of_upload(name: &str, copy: &Path, len: u64) -> Result<Manifest, ApiError> {
    let failed = |e: std::io::Error| {
        ApiError::internal(format!("could not read back the upload of {name} from {}: {e}", copy.display()))
    };
    let file = std::fs::File::open(copy).map_err(failed)?;
    let len = usize::try_from(len).map_err(|_| ApiError::bad_request(format!("plugin {name} refused: too large")))?;
    let mapped = Mapped::new(&file, len).map_err(failed)?;
    crate::plugins::manifest::manifest_from_bytes(Path::new(name), mapped.bytes())
        .map_err(|e| ApiError::bad_request(format!("plugin {name} refused before it was written: {e}")))
}

/// Receives the upload of `name` into a private copy of `plugins` and a new
/// hidden temporary file in `dir`; refused at the first bytes if it is not
/// ELF, and before anything is published if its manifest does not read.
pub(super) async fn receive(
    name: &str,
    dir: &Path,
    plugins: &PluginManager,
    mut body: CappedBody,
) -> Result<Upload, ApiError> {
    let write_error = |e: std::io::Error| {
        ApiError::internal(format!(
            "could not write plugin {name} into {}: {e}; check the disk space and permissions of the node's plugins directory; plugins/{name} was not changed",
            dir.display()
        ))
    };
    let copy_error = |e: std::io::Error| {
        ApiError::internal(format!(
            "could not write plugin {name} into the node's private plugin directory {}: {e}; check that the temp directory ($TMPDIR) has space; plugins/{name} was not changed",
            plugins.private_dir().display()
        ))
    };
    tokio::fs::create_dir_all(dir).await.map_err(write_error)?;
    let pending =
        tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir).map_err(write_error)?;
    let (file, pending) = pending.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let (copy, copy_file) = plugins.new_private_copy(name).map_err(copy_error)?;
    // Fails only when a relative store path meets a vanished working directory.
    let copy = TempPath::try_from_path(copy).map_err(copy_error)?;
    let mut copy_file = tokio::fs::File::from_std(copy_file);
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut head: Vec<u8> = Vec::with_capacity(4);
    while let Some(data) = body.next().await? {
        if head.len() < 4 {
            head.extend(data.iter().take(4 - head.len()));
            if head.len() == 4 && head.as_slice() != b"\x7fELF" {
                return Err(not_elf(name));
            }
        }
        hasher.update(&data);
        len += data.len() as u64;
        tokio::io::AsyncWriteExt::write_all(&mut file, &data).await.map_err(write_error)?;
        tokio::io::AsyncWriteExt::write_all(&mut copy_file, &data).await.map_err(copy_error)?;
    }
    if len == 0 {
        return Err(ApiError::bad_request(format!(
            "plugin {name} refused: the request body is empty; send the .so file as the body"
        )));
    }
    if head.len() < 4 {
        return Err(not_elf(name));
    }
    file.sync_all().await.map_err(write_error)?;
    tokio::io::AsyncWriteExt::flush(&mut copy_file).await.map_err(copy_error)?;
    drop(copy_file);
    let sha256 = crate::plugins::digest::hex(&hasher.finalize());
    // Checks that read bytes only (complete ELF file, manifest), before
    // anything touches the plugin's name.
    let manifest = manifest_of_upload(name, &copy, len)?;
    Ok(Upload { copy, pending, sha256, manifest })
}

fn not_elf(name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "plugin {name} refused: the body is not an ELF shared library; send the built .so file itself"
    ))
}

impl Upload {
    /// The bytes received (read back from the private copy).
    pub(super) fn bytes(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(&self.copy)
    }

    /// Renames the file into place as `target`, after telling the manager
    /// that its load may use this copy, hash and manifest. The caller holds
    /// the target's write lock.
    pub(super) fn publish(self, name: &str, target: &Path, plugins: &PluginManager) -> Result<(), ApiError> {
        let Upload { copy, pending, sha256, manifest } = self;
        match copy.keep() {
            Ok(copy) => plugins.prepare(target, &pending, copy, sha256, manifest),
            // Not kept: the load copies and checks the file itself.
            Err(e) => drop(e.path),
        }
        pending.persist(target).map_err(|e| {
            plugins.unprepare(target);
            let dir = target.parent().unwrap_or(target);
            ApiError::internal(format!(
                "could not rename the upload of {name} into {}: {}; plugins/{name} was not changed",
                dir.display(),
                e.error
            ))
        })
    }
}
