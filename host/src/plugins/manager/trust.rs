//! The signature policy in force and the check a load makes with it: who
//! signed the private copy's bytes (`plugins.signature`), logged and recorded.

use std::path::Path;

use clusterhost_plugin_api::Manifest;

use super::PluginManager;
use crate::plugins::signature::{self, SignatureError, SignatureMode, SignaturePolicy, SignatureStatus};

impl PluginManager {
    /// Applies a reloaded signature policy; it counts from the next load.
    pub fn apply_signature(&self, policy: SignaturePolicy) {
        *clusterhost_plugin_api::sync::lock(&self.shared.signature) = policy;
    }

    /// What an operator must hear about the signature policy in force: under
    /// `require` with no trusted key, every plugin will be refused.
    pub fn signature_warning(&self) -> Option<String> {
        let policy = clusterhost_plugin_api::sync::lock(&self.shared.signature).clone();
        let dir = &self.shared.config.trusted_keys_dir;
        (policy.mode == SignatureMode::Require && signature::trusted_keys(dir).is_empty()).then(|| {
            format!(
                "plugins.signature = require, but {} holds no trusted public key (*.pub): every plugin will be refused; copy the signers' public keys there (clusterhost plugins keygen writes one)",
                dir.display()
            )
        })
    }

    /// Checks who signed the private copy's bytes (`data`, or the copy
    /// itself when they are not in memory) under the policy in force.
    pub(super) fn check_signature(
        &self,
        file: &Path,
        copy: &Path,
        data: Option<&[u8]>,
        sha256: &str,
        manifest: &Manifest,
    ) -> Result<SignatureStatus, SignatureError> {
        let policy = clusterhost_plugin_api::sync::lock(&self.shared.signature).clone();
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let plugin = format!("{} {}", manifest.id, manifest.version);
        let subject = signature::Subject { file: &name, sha256, plugin: &plugin };
        let dir = &self.shared.config.trusted_keys_dir;
        let status = match data {
            Some(bytes) => signature::check(&policy, file, &subject, std::io::Cursor::new(bytes), dir),
            None => {
                // The copy was written by this node, in its own 0700 directory,
                // through the only handle ever open for writing (now closed).
                let handle = std::fs::File::open(copy)
                    .map_err(|e| SignatureError::Unreadable { path: copy.to_owned(), detail: e.to_string() })?;
                signature::check(&policy, file, &subject, std::io::BufReader::new(handle), dir)
            }
        }?;
        match &status {
            SignatureStatus::Unsigned => {
                tracing::warn!(plugin = %manifest.id, file = %file.display(), "{plugin} is unsigned (plugins.signature = warn: loaded anyway)")
            }
            SignatureStatus::Untrusted { problem, .. } => {
                tracing::warn!(plugin = %manifest.id, file = %file.display(), "{problem} (plugins.signature = warn: loaded anyway)")
            }
            SignatureStatus::Verified { key_id, .. } => {
                tracing::info!(plugin = %manifest.id, file = %file.display(), "{plugin} is signed by trusted key {key_id}")
            }
            SignatureStatus::NotChecked => {}
        }
        Ok(status)
    }
}
