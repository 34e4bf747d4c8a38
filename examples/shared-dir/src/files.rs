//! The files of the shared directory: each named by its key in [`hex`], holding a version (8 bytes,
//! big-endian) then a value. A write is whole (a temporary file, which readers skip, renamed into
//! place), so nobody reads half a file, even after a crash or a dropped call.

use std::io::{ErrorKind::NotFound, Write};
use std::path::{Path, PathBuf};

/// What went wrong with the shared directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not {action} {}: {source}; check that the shared directory is mounted and this node may write to it", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

/// What a file call gives.
pub type Result<T> = std::result::Result<T, Error>;

/// The error for `action` on `path`.
pub fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { action, path: path.to_owned(), source }
}

/// What `action` on `path` gave; `None` if the file is not there (another member removed it, say).
fn found<T>(result: std::io::Result<T>, action: &'static str, path: &Path) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == NotFound => Ok(None),
        Err(e) => Err(io(action, path)(e)),
    }
}

/// Writes `version` and `value` as `path`, whole or not at all (a failed temporary file is removed).
pub fn write(path: &Path, version: u64, value: &[u8]) -> Result<()> {
    let dir = path.parent().expect("every path here is inside the shared directory");
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("create a file in", dir))?;
    tmp.write_all(&[&version.to_be_bytes()[..], value].concat()).map_err(io("write a file in", dir))?;
    tmp.persist(path).map_err(|e| io("rename a file to", path)(e.error)).map(drop)
}

/// The version and value of `path`, if it is there (and long enough to hold a version).
pub fn read(path: &Path) -> Result<Option<(u64, Vec<u8>)>> {
    let Some(mut value) = found(std::fs::read(path), "read", path)?.filter(|v| v.len() >= 8) else { return Ok(None) };
    let version = u64::from_be_bytes(value[..8].try_into().expect("8 bytes make a u64"));
    Ok(Some((version, value.split_off(8))))
}

/// Removes `path`; whether it was there.
pub fn remove(path: &Path) -> Result<bool> {
    Ok(found(std::fs::remove_file(path), "remove", path)?.is_some())
}

/// The key and path of each file in `dir` (none if it is not there); temporary files are skipped.
pub fn list(dir: &Path) -> Result<Vec<(Vec<u8>, PathBuf)>> {
    let files = found(std::fs::read_dir(dir), "list", dir)?.into_iter().flatten().flatten();
    Ok(files.filter_map(|file| Some((unhex(file.file_name().to_str()?)?, file.path()))).collect())
}

/// A file name for any bytes (a cache name, a key, a member id): `x`, then their hex.
pub fn hex(bytes: &[u8]) -> String {
    format!("x{}", bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
}

/// The bytes a [`hex`] name stands for; `None` for a name it cannot have made.
fn unhex(name: &str) -> Option<Vec<u8>> {
    let digits = name.strip_prefix('x')?.as_bytes();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()).collect()
}
