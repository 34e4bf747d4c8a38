//! `clusterhost plugins`: inspect a file, and list, install and remove a
//! running node's plugins through its admin API.

use std::path::Path;
use std::process::ExitCode;

use super::render::{print_manifest, print_plugins};
use super::{api, fail, print_json, AdminTarget};
use crate::admin::client::segment;
use crate::admin::contract::{Removed, Uploaded};
use crate::plugins::manifest;
use crate::plugins::registry::PluginRecord;

/// `plugins inspect FILE`: the manifest, read without loading the plugin.
pub fn inspect(file: &Path, json: bool) -> ExitCode {
    match manifest::read_manifest(file) {
        Ok(m) if json => print_json(&m),
        Ok(m) => {
            print_manifest(&m);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

/// `plugins list`.
pub fn list(admin: &AdminTarget) -> ExitCode {
    api(
        admin,
        |c| c.get("/api/plugins"),
        |answer| {
            let records: Vec<PluginRecord> = answer.view().unwrap_or_default();
            print_plugins(&records);
            Ok(())
        },
    )
}

/// `plugins install FILE [--name NAME]`: uploads it; waits for the outcome.
pub fn install(admin: &AdminTarget, file: &Path, name: Option<String>) -> ExitCode {
    let name = name.or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => return fail(format!("could not read the plugin file {}: {e}", file.display())),
    };
    let path = format!("/api/plugins?name={}", segment(&name));
    api(
        admin,
        |c| c.upload(&path, &bytes),
        |answer| {
            let uploaded: Uploaded = answer.view()?;
            println!("{name}: {}", uploaded.outcome);
            if let Some(note) = &uploaded.note {
                println!("{note}");
            }
            if let Some(record) = uploaded.plugin {
                print_plugins(&[record]);
            }
            Ok(())
        },
    )
}

/// `plugins remove NAME`.
pub fn remove(admin: &AdminTarget, name: &str) -> ExitCode {
    let path = format!("/api/plugins/{}", segment(name));
    api(
        admin,
        |c| c.delete(&path),
        |answer| {
            let removed: Removed = answer.view()?;
            println!("{name}: removed from plugins/");
            if let Some(record) = removed.plugin {
                print_plugins(&[record]);
            }
            Ok(())
        },
    )
}
