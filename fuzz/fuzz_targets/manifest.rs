//! The plugin manifest reader: ELF parsing and the manifest TOML.
//!
//! First byte picks the mode (the rest is the input):
//! - 0: the rest is a whole file, read as `host::manifest::manifest_from_bytes` does for
//!   every file in plugins/ and every admin upload;
//! - 1: the rest is manifest section bytes (`Manifest::parse_bytes`); a manifest that
//!   parses must survive `to_toml` and parse back equal;
//! - 2: the rest is put in the manifest section of a minimal shared object, which must
//!   read exactly as the bytes alone do.
#![no_main]

use std::path::Path;

use clusterhost::plugins::manifest::{manifest_from_bytes, InspectError};
use clusterhost_fuzz::elf_with_manifest;
use clusterhost_plugin_api::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let path = Path::new("plugins/fuzz.so");
    match mode % 3 {
        0 => {
            let _ = manifest_from_bytes(path, rest);
        }
        1 => {
            if let Ok(manifest) = Manifest::parse_bytes(rest) {
                let text = manifest.to_toml();
                let again = Manifest::parse(&text).unwrap_or_else(|e| panic!("to_toml gave {text:?}: {e}"));
                assert_eq!(again, manifest);
            }
        }
        _ => {
            let elf = elf_with_manifest(rest);
            match (manifest_from_bytes(path, &elf), Manifest::parse_bytes(rest)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(InspectError::Malformed { source, .. }), Err(e)) => assert_eq!(source, e),
                (a, b) => panic!("the ELF reader and the text parser disagree: {a:?} / {b:?}"),
            }
        }
    }
});
