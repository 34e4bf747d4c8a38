//! Uploads checked by their receiver (the admin API): the copy, hash and
//! manifest it made, handed to the file's next load so it is not done twice.

use std::path::{Path, PathBuf};

use clusterhost_plugin_api::Manifest;

use super::PluginManager;
use crate::plugins::loader;
use crate::plugins::watcher::Stamp;

/// An uploaded file already copied, hashed and parsed by its receiver
/// (the admin API), so its load does not do it again.
pub(super) struct Prepared {
    /// The private copy, written as the upload streamed in; what is mapped.
    pub(super) copy: PathBuf,
    /// SHA-256 (hex) of the copy.
    pub(super) sha256: String,
    /// Read from the copy.
    pub(super) manifest: Manifest,
    /// The published file's stamp when it was renamed into place: a file
    /// with another stamp is another content, and is loaded the usual way.
    stamp: Stamp,
}

impl PluginManager {
    /// Creates a new private copy for an upload to write into; hand it to
    /// [`prepare`](Self::prepare) once checked, or remove it.
    pub fn new_private_copy(&self, name: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
        self.shared.store.create(name)
    }

    /// Announces that `file` is about to be published (renamed into place
    /// with the stamp it has now at `pending`) with the content of `copy`,
    /// already hashed and parsed: its next load maps `copy` as it is.
    pub fn prepare(&self, file: &Path, pending: &Path, copy: PathBuf, sha256: String, manifest: Manifest) {
        let Some(stamp) = Stamp::of(pending) else {
            let _ = std::fs::remove_file(&copy);
            return;
        };
        loader::start_writeback_of(&copy);
        let old = clusterhost_plugin_api::sync::lock(&self.shared.prepared)
            .insert(file.to_owned(), Prepared { copy, sha256, manifest, stamp });
        if let Some(old) = old {
            let _ = std::fs::remove_file(old.copy);
        }
    }

    /// Withdraws what [`prepare`](Self::prepare) announced for `file` (its
    /// publication failed).
    pub fn unprepare(&self, file: &Path) {
        if let Some(old) = clusterhost_plugin_api::sync::lock(&self.shared.prepared).remove(file) {
            let _ = std::fs::remove_file(old.copy);
        }
    }

    /// The prepared upload for `file`, if the file is still what was published.
    pub(super) fn take_prepared(&self, file: &Path) -> Option<Prepared> {
        let prepared = clusterhost_plugin_api::sync::lock(&self.shared.prepared).remove(file)?;
        if Stamp::of(file) == Some(prepared.stamp) {
            return Some(prepared);
        }
        let _ = std::fs::remove_file(&prepared.copy);
        None
    }
}
