//! The signature policy in force and the check a load makes with it: who
//! signed the private copy's bytes (`plugins.signature`), logged and recorded.

use std::path::Path;

use clusterhost_plugin_api::Manifest;

use super::PluginManager;
use crate::plugins::registry::PluginState;
use crate::plugins::signature::{
    self, Begun, BytesError, SignatureError, SignatureMode, SignaturePolicy, SignatureStatus,
};

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
    pub(super) fn run_signature_on_copy(begun: &Begun, copy: &Path) -> Option<Result<(), BytesError>> {
        match std::fs::File::open(copy) {
            Ok(handle) => begun.run(handle),
            Err(e) => Some(Err(BytesError::Read(format!("could not open the private copy {}: {e}", copy.display())))),
        }
    }

    /// The verdict on the bytes of `file`'s copy (`outcome` of the check that
    /// read them), logged; `Err` when the plugin must be refused.
    pub(super) fn finish_signature(
        &self,
        file: &Path,
        (policy, begun): (SignaturePolicy, Begun),
        outcome: Option<Result<(), BytesError>>,
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

    /// What `signature` (a `.minisig` text; `None`: none) makes of `data`,
    /// the bytes of the active plugin published as `file`, under the policy
    /// in force: `Err` when `require` would refuse them. Reads no file.
    pub fn judge_signature(
        &self,
        file: &Path,
        signature: Option<&str>,
        data: &[u8],
        sha256: &str,
        plugin: &str,
    ) -> Result<SignatureStatus, SignatureError> {
        let policy = clusterhost_plugin_api::sync::lock(&self.shared.signature).clone();
        let begun = signature::begin_with(&policy, file, signature, &self.shared.config.trusted_keys_dir);
        let outcome = begun.run(data);
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        begun.finish(&policy, outcome, &signature::Subject { file: &name, sha256, plugin })
    }

    /// The signature beside the active plugin `file` changed (written,
    /// replaced or removed) while its bytes did not: its record is brought
    /// up to date, so `plugins list` shows the signer the file now has. The
    /// running code was checked when it loaded and keeps running; what the
    /// record now says is what its next load will find. `None` when `file`
    /// is not active, or its bytes are not the active ones (their own load
    /// follows). Runs between loads, never beside one.
    pub async fn refresh_signature(&self, file: &Path) -> Option<SignatureStatus> {
        let _between_loads = self.shared.ops.lock().await;
        let record = self.record(file).filter(|r| r.state == PluginState::Active)?;
        let (sha256, id, version) = (record.sha256.clone()?, record.id.clone()?, record.version.clone()?);
        let (manager, path) = (self.clone(), file.to_owned());
        let judged = tokio::task::spawn_blocking(move || {
            let data = std::fs::read(&path).ok()?;
            if crate::plugins::digest::sha256_hex(&data) != sha256 {
                return None;
            }
            Some(match signature::read_signature_of(&path) {
                Ok(text) => manager.judge_signature(&path, text.as_deref(), &data, &sha256, &format!("{id} {version}")),
                Err(e) => Err(e),
            })
        })
        .await
        .ok()??;
        let status = judged.unwrap_or_else(|e| SignatureStatus::of_failure(&e));
        let label = record.label();
        match &status {
            SignatureStatus::Verified { key_id, .. } => {
                tracing::info!(file = %file.display(), "the signature of {label} changed: signed by trusted key {key_id}")
            }
            SignatureStatus::NotChecked => {}
            other => tracing::warn!(
                file = %file.display(),
                "the signature of {label} changed: {}; it keeps running (it was checked when it loaded), and its next load will be judged on this signature",
                other.summary()
            ),
        }
        let mut record = record;
        record.signature = Some(status.clone());
        self.put_record(record);
        Some(status)
    }
}
