//! The admin token file: a secret on its first line, read by the node
//! (checked on each request, so a rotated token applies at once) and by
//! the CLI (sent with each request); made on first start on loopback.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use super::AdminError;

/// Makes sure a token exists: off loopback the file must already hold one;
/// on loopback a missing file is created with a random token (mode 0600).
pub(super) fn prepare(file: &Path, bind: IpAddr) -> Result<(), AdminError> {
    if read(file).is_ok() {
        return Ok(());
    }
    if !bind.is_loopback() {
        return Err(AdminError::NoTokenOffLoopback { bind, file: file.to_owned() });
    }
    if file.exists() {
        // Present but empty: leave the operator's file alone; writes are
        // refused with a message naming it until it holds a token.
        tracing::warn!(file = %file.display(), "the admin token file is empty; writes are refused until it holds a token");
        return Ok(());
    }
    let token_error = |source| AdminError::TokenFile { file: file.to_owned(), source };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(token_error)?;
    }
    let token = random().map_err(token_error)?;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file) {
        Ok(mut f) => {
            f.write_all(format!("{token}\n").as_bytes()).map_err(token_error)?;
            tracing::info!(file = %file.display(), "wrote a new random admin token");
            Ok(())
        }
        // Another node sharing this conf/ directory made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(token_error(e)),
    }
}

/// A new random secret: 24 bytes from /dev/urandom as hex (also a session id).
pub(super) fn random() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(crate::plugins::digest::hex(&bytes))
}

/// Why a token file gives no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file is missing or cannot be read.
    #[error("{0}")]
    Unreadable(#[from] std::io::Error),
    /// Its first line holds no token.
    #[error("it is empty")]
    Empty,
}

/// The token in `file`: its first line, trimmed.
/// The most of a token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

pub fn read(file: &Path) -> Result<String, TokenFileError> {
    use std::io::Read;
    // A token is one short line: what follows the first few KiB is never
    // read (a token file pointing at /dev/zero costs nothing).
    let mut bytes = Vec::new();
    std::fs::File::open(file)?.take(MAX_TOKEN_FILE_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        return Err(TokenFileError::Empty);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_node_creates_a_token_and_an_exposed_one_refuses_without() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conf/admin.token");
        let err = prepare(&file, "0.0.0.0".parse().unwrap()).unwrap_err().to_string();
        assert!(err.contains("not a loopback address") && err.contains("admin.token"), "{err}");
        prepare(&file, "127.0.0.1".parse().unwrap()).unwrap();
        let token = read(&file).unwrap();
        assert_eq!(token.len(), 48);
        prepare(&file, "0.0.0.0".parse().unwrap()).unwrap();
        assert_eq!(read(&file).unwrap(), token, "an existing token is kept");
    }
}
