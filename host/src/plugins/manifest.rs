//! Reads a plugin's manifest from its ELF file without loading it.
//!
//! Only bytes are read here: the library is never mapped, so a plugin
//! refused on these grounds never runs a line of its code.

use std::path::{Path, PathBuf};

use clusterhost_plugin_api::manifest::MANIFEST_SECTION;
use clusterhost_plugin_api::{Manifest, ManifestError};
use object::{Object, ObjectKind, ObjectSection};

/// Why a file's manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The path is missing, a directory, or otherwise not a regular file.
    #[error("{path} does not exist or is not a regular file; a plugin is a single .so file")]
    NotRegularFile { path: PathBuf },
    /// The file could not be read.
    #[error("could not read {path}: {source}; check that it exists and is readable")]
    Unreadable { path: PathBuf, source: std::io::Error },
    /// The file does not start with the ELF magic.
    #[error("{path} is not an ELF shared library; a plugin is the .so a plugin crate builds")]
    NotElf { path: PathBuf },
    /// The ELF structure does not fit in the file.
    #[error("{path} is truncated or corrupt ({detail}); copy the complete file again")]
    Truncated { path: PathBuf, detail: String },
    /// An ELF file, but not a shared library for this machine.
    #[error("{path} is {found}, not a shared library for this machine ({expected}); build the plugin for this target")]
    WrongKind { path: PathBuf, found: String, expected: String },
    /// No manifest section.
    #[error("{path} has no {MANIFEST_SECTION} section: it was not built with clusterhost_plugin_api::declare_plugin!")]
    NoManifest { path: PathBuf },
    /// The manifest section does not parse.
    #[error("{path}: {source}; fix the plugin's declare_plugin! values and rebuild it")]
    Malformed { path: PathBuf, source: ManifestError },
}

/// Reads and validates the manifest embedded in the file at `path`.
pub fn read_manifest(path: &Path) -> Result<Manifest, InspectError> {
    read_plugin_file(path).map(|(manifest, _)| manifest)
}

/// Reads the file at `path` once: its manifest, validated, and its bytes.
pub fn read_plugin_file(path: &Path) -> Result<(Manifest, Vec<u8>), InspectError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => InspectError::NotRegularFile { path: path.to_owned() },
        _ => InspectError::Unreadable { path: path.to_owned(), source },
    })?;
    if !meta.is_file() {
        return Err(InspectError::NotRegularFile { path: path.to_owned() });
    }
    let data = std::fs::read(path).map_err(|source| InspectError::Unreadable { path: path.to_owned(), source })?;
    Ok((manifest_from_bytes(path, &data)?, data))
}

/// Reads the manifest from an ELF image already in memory.
pub fn manifest_from_bytes(path: &Path, data: &[u8]) -> Result<Manifest, InspectError> {
    let bytes = manifest_section(path, data)?;
    Manifest::parse_bytes(bytes).map_err(|source| InspectError::Malformed { path: path.to_owned(), source })
}

/// Finds the raw manifest section, checking the file is a complete shared
/// library for this machine first.
pub fn manifest_section<'d>(path: &Path, data: &'d [u8]) -> Result<&'d [u8], InspectError> {
    if !data.starts_with(b"\x7fELF") {
        return Err(InspectError::NotElf { path: path.to_owned() });
    }
    let truncated = |detail: String| InspectError::Truncated { path: path.to_owned(), detail };
    let file = object::File::parse(data).map_err(|e| truncated(e.to_string()))?;
    for section in file.sections() {
        if let Some((offset, size)) = section.file_range() {
            if offset.saturating_add(size) > data.len() as u64 {
                let name = section.name().unwrap_or("?");
                return Err(truncated(format!(
                    "section {name} ends at byte {} but the file has {}",
                    offset.saturating_add(size),
                    data.len()
                )));
            }
        }
    }
    let expected = format!("{:?} shared library", host_architecture());
    if file.kind() != ObjectKind::Dynamic || file.architecture() != host_architecture() {
        return Err(InspectError::WrongKind {
            path: path.to_owned(),
            found: format!("a {:?} {:?} file", file.architecture(), file.kind()),
            expected,
        });
    }
    let section =
        file.section_by_name(MANIFEST_SECTION).ok_or_else(|| InspectError::NoManifest { path: path.to_owned() })?;
    section.data().map_err(|e| truncated(e.to_string()))
}

fn host_architecture() -> object::Architecture {
    match std::env::consts::ARCH {
        "x86_64" => object::Architecture::X86_64,
        "aarch64" => object::Architecture::Aarch64,
        "x86" => object::Architecture::I386,
        "riscv64" => object::Architecture::Riscv64,
        _ => object::Architecture::Unknown,
    }
}
