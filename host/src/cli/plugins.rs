//! `clusterhost plugins`: inspect a file, and list, install and remove a
//! running node's plugins through its admin API (keys and signatures:
//! `signing`).

use std::path::Path;
use std::process::ExitCode;

use super::render::{print_manifest, print_plugins};
use super::signing::{inspect_line, TrustSource};
use super::{api, fail, print_json, AdminTarget};
use crate::admin::client::segment;
use crate::admin::contract::{Removed, Uploaded};
use crate::plugins::manifest;
use crate::plugins::registry::PluginRecord;
use crate::plugins::signature;

/// `plugins inspect FILE`: the manifest, read without loading the plugin,
/// and who signed it (against `trust`'s keys).
pub fn inspect(file: &Path, json: bool, trust: &TrustSource) -> ExitCode {
    match manifest::read_manifest(file) {
        Ok(m) if json => {
            let mut value = serde_json::to_value(&m).unwrap_or_default();
            let signature = match trust.check(file) {
                Ok(Ok(status)) => serde_json::to_value(status).unwrap_or_default(),
                Ok(Err(e)) => {
                    serde_json::json!({"status": "untrusted", "key_id": e.key_id(), "problem": e.to_string()})
                }
                Err(e) => serde_json::json!({"status": "error", "problem": e}),
            };
            value["signature"] = signature;
            print_json(&value)
        }
        Ok(m) => {
            print_manifest(&m);
            println!("signature:     {}", inspect_line(file, trust));
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

/// `plugins install FILE [--name NAME] [--signature SIG]`: uploads it, with
/// its signature (SIG, default FILE.minisig when it exists); waits for the outcome.
pub fn install(admin: &AdminTarget, file: &Path, name: Option<String>, signature_file: Option<&Path>) -> ExitCode {
    let name = name.or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => return fail(format!("could not read the plugin file {}: {e}", file.display())),
    };
    let signature = match signature_file {
        Some(sig) => match std::fs::read_to_string(sig) {
            Ok(text) => Some(text),
            Err(e) => return fail(format!("could not read the signature {}: {e}", sig.display())),
        },
        None => match signature::read_signature_of(file) {
            Ok(text) => text,
            Err(e) => return fail(e.to_string()),
        },
    };
    let path = format!("/api/plugins?name={}", segment(&name));
    api(
        admin,
        |c| c.upload_signed(&path, &bytes, signature.as_deref()),
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
