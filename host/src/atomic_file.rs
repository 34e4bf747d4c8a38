//! A file replaced whole: written under a new hidden temporary name in its
//! own directory, then renamed over it, so a reader sees the old content
//! or the new, never part of either, and parallel writers never interleave.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` (its directory is created if missing).
/// With `durable`, the data reaches the disk before the rename, so a crash
/// cannot leave an empty file under the name.
pub fn replace(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_replaced_file_has_the_new_content_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run/node.json");
        super::replace(&file, b"one", false).unwrap();
        super::replace(&file, b"two", true).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path().join("run")).unwrap().count(), 1);
    }
}
