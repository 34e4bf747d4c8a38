//! The signature policy in force and the check a load makes with it: who
//! signed the private copy's bytes (`plugins.signature`), logged and recorded.

use std::path::Path;

use clusterhost_plugin_api::Manifest;

use super::PluginManager;
use crate::plugins::signature::{self, Begun, SignatureError, SignatureMode, SignaturePolicy, SignatureStatus};

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

    /// The policy in force and what can be known of `file`'s signature
    /// before its bytes are read (the `.minisig` beside it, the trusted keys).
    pub(super) fn begin_signature(&self, file: &Path) -> (SignaturePolicy, Begun) {
        let policy = clusterhost_plugin_api::sync::lock(&self.shared.signature).clone();
        let begun = signature::begin(&policy, file, &self.shared.config.trusted_keys_dir);
        (policy, begun)
    }

    /// Verifies a prepared upload's copy, read back from the file: written by
    /// this node, in its own 0700 directory, through the only handle ever
    /// open for writing (closed since).
    pub(super) fn run_signature_on_copy(begun: &Begun, copy: &Path) -> Option<Result<(), String>> {
        match std::fs::File::open(copy) {
            Ok(handle) => begun.run(std::io::BufReader::new(handle)),
            Err(e) => Some(Err(format!("could not read the private copy {}: {e}", copy.display()))),
        }
    }

    /// The verdict on the bytes of `file`'s copy (`outcome` of the check that
    /// read them), logged; `Err` when the plugin must be refused.
    pub(super) fn finish_signature(
        &self,
        file: &Path,
        (policy, begun): (SignaturePolicy, Begun),
        outcome: Option<Result<(), String>>,
        sha256: &str,
        manifest: &Manifest,
    ) -> Result<SignatureStatus, SignatureError> {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let plugin = format!("{} {}", manifest.id, manifest.version);
        let subject = signature::Subject { file: &name, sha256, plugin: &plugin };
        let status = begun.finish(&policy, outcome, &subject)?;
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
