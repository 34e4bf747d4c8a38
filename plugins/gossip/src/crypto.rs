//! The cluster key and the AEAD every packet and frame goes through:
//! XChaCha20-Poly1305 with a random 24-byte nonce, the cluster name as
//! associated data. A packet that does not open is counted and dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Bytes of the random nonce at the start of a sealed message.
const NONCE: usize = 24;

/// Why the cluster key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not read the cluster key {file}: {detail}; create it with `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {file}` (the same file on every member), or set security.insecure = true for a trusted test network")]
    Unreadable { file: PathBuf, detail: String },
    #[error("the cluster key {file} must hold 64 hex digits (32 bytes); it holds {found}")]
    Malformed { file: PathBuf, found: String },
}

/// Seals and opens cluster traffic; cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    /// `None` when `security.insecure`: traffic goes in the clear.
    cipher: Option<Arc<XChaCha20Poly1305>>,
    /// The cluster name, the associated data: a packet of another cluster
    /// with the same key does not open.
    cluster: Arc<[u8]>,
    /// Packets and frames that did not open (wrong key, wrong cluster, tampered).
    pub dropped: Arc<AtomicU64>,
}

impl Sealer {
    /// A sealer with the key in `file`.
    pub fn from_file(file: &Path, cluster: &str) -> Result<Sealer, KeyError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| KeyError::Unreadable { file: file.to_owned(), detail: e.to_string() })?;
        let hex = text.trim();
        let key = decode_hex(hex)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| KeyError::Malformed { file: file.to_owned(), found: format!("{} characters", hex.len()) })?;
        Ok(Sealer::with_key(&key, cluster))
    }

    /// A sealer with a 32-byte key.
    pub fn with_key(key: &[u8], cluster: &str) -> Sealer {
        let cipher = XChaCha20Poly1305::new_from_slice(key).expect("a 32-byte key");
        Sealer { cipher: Some(Arc::new(cipher)), cluster: cluster.as_bytes().into(), dropped: Arc::default() }
    }

    /// No encryption, no authentication.
    pub fn insecure(cluster: &str) -> Sealer {
        Sealer { cipher: None, cluster: cluster.as_bytes().into(), dropped: Arc::default() }
    }

    /// Whether traffic is encrypted and authenticated (not `insecure`).
    pub fn is_secure(&self) -> bool {
        self.cipher.is_some()
    }

    /// `plain`, sealed.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        match &self.cipher {
            None => plain.to_vec(),
            Some(cipher) => {
                let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
                let sealed = cipher
                    .encrypt(&nonce, Payload { msg: plain, aad: &self.cluster })
                    .expect("encryption of an in-memory buffer cannot fail");
                let mut out = Vec::with_capacity(NONCE + sealed.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                out
            }
        }
    }

    /// The plain bytes, or `None` (counted in `dropped`).
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let opened = match &self.cipher {
            None => Some(sealed.to_vec()),
            Some(cipher) if sealed.len() > NONCE => {
                let (nonce, body) = sealed.split_at(NONCE);
                cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad: &self.cluster }).ok()
            }
            Some(_) => None,
        };
        if opened.is_none() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        opened
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_opens_only_with_the_same_key_and_cluster() {
        let a = Sealer::with_key(&[7; 32], "c1");
        let sealed = a.seal(b"hello");
        assert_ne!(&sealed[sealed.len() - 5..], b"hello");
        assert_eq!(a.open(&sealed).as_deref(), Some(&b"hello"[..]));
        let wrong_key = Sealer::with_key(&[8; 32], "c1");
        assert_eq!(wrong_key.open(&sealed), None);
        assert_eq!(wrong_key.dropped.load(Ordering::Relaxed), 1);
        let wrong_cluster = Sealer::with_key(&[7; 32], "c2");
        assert_eq!(wrong_cluster.open(&sealed), None);
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert_eq!(a.open(&tampered), None);
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.key");
        std::fs::write(&file, "ab".repeat(32) + "\n").unwrap();
        assert!(Sealer::from_file(&file, "c").is_ok());
        std::fs::write(&file, "abc").unwrap();
        let err = Sealer::from_file(&file, "c").err().unwrap().to_string();
        assert!(err.contains("must hold 64 hex digits"), "{err}");
        let err = Sealer::from_file(&dir.path().join("missing"), "c").err().unwrap().to_string();
        assert!(err.contains("could not read the cluster key"), "{err}");
    }
}
