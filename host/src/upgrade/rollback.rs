//! A rollback: the previous plugin file uploaded back on every member
//! this run changed (downgrades allowed on each for the time it takes),
//! each gated again.

use std::time::{Duration, Instant};

use super::flows::{enable_all, upload};
use super::gates::{clustered_check, gate};
use super::survey::{Member, PluginFile};
use super::{api_error, UpgradeError, UpgradeOptions};

/// The property a rollback turns on for its downgrade.
const DOWNGRADE: &str = "plugins.allow.downgrade";

/// Makes `plugins.allow.downgrade = true` effective on `member` for the
/// rollback; returns the properties text to restore, if it was changed.
fn allow_downgrade(member: &Member) -> Result<Option<String>, String> {
    let view = member.client.properties().map_err(api_error)?;
    if view.effective.get(DOWNGRADE).map(String::as_str) == Some("true") {
        return Ok(None);
    }
    let text = view.text;
    let patched = format!(
        "{}\n# set by clusterhost cluster upgrade for a rollback; removed after it\nplugins.allow.downgrade = true\n",
        text.trim_end()
    );
    member.client.put_properties(&patched).map_err(api_error)?;
    wait_property(member, "true")?;
    Ok(Some(text))
}

fn wait_property(member: &Member, value: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = member.client.properties().map_err(api_error)?;
        if view.effective.get(DOWNGRADE).map(String::as_str) == Some(value) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the node did not apply plugins.allow.downgrade = {value} within 15 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Uploads the previous file back on `member` (downgrades allowed for it).
fn restore(member: &Member, previous: &PluginFile, drain: Duration, out: &mut dyn FnMut(&str)) -> Result<(), String> {
    let original = allow_downgrade(member)?;
    let uploaded = upload(member, previous, drain, out);
    if let Some(text) = original {
        let restored = member.client.put_properties(&text).map_err(api_error);
        restored.and_then(|_| wait_property(member, "false"))?;
    }
    uploaded.map(|_| ())
}

/// Rollback gates wait at least a minute, whatever --gate-timeout says:
/// the previous version is known to work, so waiting is the safer bet.
pub(super) fn rollback_timeout(options: &UpgradeOptions) -> Duration {
    options.gate_timeout.max(Duration::from_secs(60))
}

/// Uploads the previous file back on every member changed (the last
/// changed first), each gated in the cluster again.
pub(super) fn rollback(
    options: &UpgradeOptions,
    previous: &PluginFile,
    changed: &[&Member],
    size: usize,
    out: &mut dyn FnMut(&str),
    reason: &str,
) -> UpgradeError {
    if changed.is_empty() {
        return UpgradeError::NothingChanged { reason: reason.to_string() };
    }
    let mut failed = Vec::new();
    for m in changed.iter().rev() {
        out(&format!("[rollback] {}: upload {} back ...", m.label(), previous.label()));
        let result = restore(m, previous, options.drain, out).and_then(|_| {
            gate(
                rollback_timeout(options),
                &[m],
                |_, _| {},
                clustered_check(size, previous.manifest.version.to_string()),
            )
        });
        match result {
            Ok(_) => out(&format!("[rollback] {}: back on {}, gate passed", m.label(), previous.label())),
            Err(why) => {
                out(&format!("[rollback] {}: {why}", m.label()));
                failed.push(format!("{}: {why}", m.label()));
            }
        }
    }
    rollback_error(reason, changed, previous, &failed)
}

/// Uploads the previous file back on every member changed while they run
/// standalone, then re-forms the cluster on the previous version.
pub(super) fn split_brain_rollback(
    options: &UpgradeOptions,
    previous: &PluginFile,
    changed: &[&Member],
    all: &[&Member],
    size: usize,
    out: &mut dyn FnMut(&str),
    reason: &str,
) -> UpgradeError {
    let mut failed = Vec::new();
    for m in changed.iter().rev() {
        out(&format!("[rollback] {}: upload {} back (standalone) ...", m.label(), previous.label()));
        match restore(m, previous, options.drain, out) {
            Ok(()) => out(&format!("[rollback] {}: back on {}", m.label(), previous.label())),
            Err(why) => {
                out(&format!("[rollback] {}: {why}", m.label()));
                failed.push(format!("{}: {why}", m.label()));
            }
        }
    }
    if let Err(why) = enable_all(rollback_timeout(options), all, size, Some(previous.manifest.version.to_string()), out)
    {
        failed.push(format!("re-forming the cluster on {}: {why}", previous.label()));
    }
    rollback_error(reason, changed, previous, &failed)
}

pub(super) fn rollback_error(
    reason: &str,
    changed: &[&Member],
    previous: &PluginFile,
    failed: &[String],
) -> UpgradeError {
    let names: Vec<String> = changed.iter().map(|m| m.name.clone()).collect();
    if failed.is_empty() {
        UpgradeError::RolledBack {
            reason: reason.to_string(),
            members: names.join(", "),
            previous: previous.label(),
            path: previous.path.clone(),
        }
    } else {
        UpgradeError::RollbackIncomplete {
            reason: reason.to_string(),
            previous: previous.label(),
            failed: failed.join("; "),
            path: previous.path.clone(),
        }
    }
}
