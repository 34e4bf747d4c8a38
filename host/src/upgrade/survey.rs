//! Before an upgrade: the plugin files read, and every member asked for
//! its state and the strategy plugin it runs.

use std::path::{Path, PathBuf};

use clusterhost_plugin_api::Manifest;

use super::{UpgradeError, UpgradeOptions};
use crate::admin::client::{AdminClient, ClientError};
use crate::admin::contract::state_and_reason;
use crate::plugins::registry::PluginState;
use crate::plugins::{digest, manifest};

/// A plugin file read for upload.
pub(super) struct PluginFile {
    pub(super) path: PathBuf,
    pub(super) manifest: Manifest,
    pub(super) bytes: Vec<u8>,
    pub(super) sha256: String,
    /// FILE.minisig, read once beside the file when it exists: carried to
    /// every member with the file, so a node under `plugins.signature =
    /// require` can trust it.
    pub(super) signature: Option<String>,
}

impl PluginFile {
    /// Reads `path` once: its manifest, bytes and hash. `what` names it in errors.
    pub(super) fn read(path: &Path, what: &'static str) -> Result<PluginFile, UpgradeError> {
        let (manifest, bytes) = manifest::read_plugin_file(path).map_err(|source| UpgradeError::PluginFile {
            what,
            path: path.to_owned(),
            source,
        })?;
        let sha256 = digest::sha256_hex(&bytes);
        let signature = crate::plugins::signature::read_signature_of(path)
            .map_err(|e| UpgradeError::Signature { path: path.to_owned(), detail: e.to_string() })?;
        Ok(PluginFile { path: path.to_owned(), manifest, bytes, sha256, signature })
    }

    /// "id version".
    pub(super) fn label(&self) -> String {
        format!("{} {}", self.manifest.id, self.manifest.version)
    }
}

/// One member as found before the upgrade.
pub(super) struct Member {
    pub(super) url: String,
    pub(super) client: AdminClient,
    /// Its member id.
    pub(super) name: String,
    pub(super) senior: bool,
    /// The plugins/ file name of its active strategy plugin.
    pub(super) file: String,
    /// The version and file hash it runs.
    pub(super) version: String,
    pub(super) sha256: String,
}

impl Member {
    /// "name (url)".
    pub(super) fn label(&self) -> String {
        format!("{} ({})", self.name, self.url)
    }
}

/// Asks every member for its state and its strategy plugin; returns them and
/// the cluster size every member must agree on.
pub(super) fn survey(
    options: &UpgradeOptions,
    new: &PluginFile,
    previous: Option<&PluginFile>,
) -> Result<(Vec<Member>, usize), UpgradeError> {
    let mut members = Vec::new();
    let mut size = None;
    for url in &options.nodes {
        let client = AdminClient::new(url, options.tokens.for_url(url));
        let cluster = client
            .cluster()
            .map_err(|source| UpgradeError::Unreachable { url: url.clone(), source: Box::new(source) })?;
        let status = cluster.status;
        let name = status.node.clone();
        let state = state_and_reason(&status.state).0;
        if state != "clustered" {
            return Err(UpgradeError::NotClustered { name, url: url.clone(), state: state.to_string() });
        }
        let count = status.members.len();
        match size {
            None => size = Some(count),
            Some(n) if n != count => {
                return Err(UpgradeError::SizesDiffer {
                    name,
                    url: url.clone(),
                    count,
                    first: options.nodes[0].clone(),
                    first_count: n,
                })
            }
            _ => {}
        }
        let plugins = client.plugins().map_err(|source| UpgradeError::Plugins {
            name: name.clone(),
            url: url.clone(),
            source: Box::new(source),
        })?;
        // The strategy the members run now: the new one's id, or for a
        // switch the previous one's.
        let running = match (options.mode, previous) {
            (super::Mode::Switch, Some(previous)) => &previous.manifest.id,
            _ => &new.manifest.id,
        };
        let record =
            plugins.into_iter().find(|r| r.id.as_deref() == Some(running.as_str()) && r.state == PluginState::Active);
        let Some(record) = record else {
            return Err(UpgradeError::NoActivePlugin { name, url: url.clone(), id: running.clone() });
        };
        let file = record.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // The token this member gets must open its writes, or the flow would
        // stop half-way: an empty upload (refused for its body, changing
        // nothing) is refused at its headers when the token is not the one.
        let probe = format!("/api/plugins?name={}", crate::admin::client::segment(&file));
        // 503: the member has no token file to check writes against.
        if let Err(ClientError::Api { status: status @ (401 | 403 | 421 | 503), message, .. }) =
            client.post(&probe, b"")
        {
            return Err(UpgradeError::TokenRefused {
                name,
                url: url.clone(),
                detail: format!("{message} (HTTP {status})"),
            });
        }
        // An unsigned build would be refused there, and left in its plugins/
        // (an unsigned --previous: its rollback would be refused): stop
        // before the first upload instead. A member whose policy cannot be
        // read is not taken to allow unsigned plugins.
        if let Some(unsigned) = std::iter::once(new).chain(previous).find(|f| f.signature.is_none()) {
            let properties = client.properties().map_err(|source| UpgradeError::Policy {
                name: name.clone(),
                url: url.clone(),
                source: Box::new(source),
            })?;
            if properties.effective.get("plugins.signature").is_some_and(|mode| mode == "require") {
                let what = if std::ptr::eq(unsigned, new) { "" } else { "--previous " };
                return Err(UpgradeError::Unsigned { name, url: url.clone(), what, path: unsigned.path.clone() });
            }
        }
        members.push(Member {
            senior: status.senior.as_deref() == Some(name.as_str()),
            url: url.clone(),
            client,
            name,
            file,
            version: record.version.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
            sha256: record.sha256.unwrap_or_default(),
        });
    }
    let size = size.unwrap_or(0);
    if size != options.nodes.len() {
        return Err(UpgradeError::NodesMissing { size, listed: options.nodes.len() });
    }
    Ok((members, size))
}
