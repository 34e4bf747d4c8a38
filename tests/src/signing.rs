//! Plugin signing for tests: a key pair made in the test (never a committed
//! secret key), its public key trusted by a home, and detached signatures
//! written as `clusterhost plugins sign` writes them.

use std::path::Path;

use clusterhost::plugins::{digest, signature};

/// A minisign key pair made for one test.
pub struct Signer {
    /// The key pair (unencrypted: nobody types a password in a test).
    pub pair: minisign::KeyPair,
    /// Its key id, as minisign prints it.
    pub id: String,
}

impl Default for Signer {
    fn default() -> Self {
        Self::new()
    }
}

impl Signer {
    /// A new key pair.
    pub fn new() -> Signer {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("a key pair can be made");
        let id = signature::key_id(pair.pk.keynum());
        Signer { pair, id }
    }

    /// Writes the public key as `HOME/conf/trusted-keys/NAME.pub`.
    pub fn trust(&self, home: &Path, name: &str) {
        let dir = clusterhost::home::trusted_keys_dir(home);
        std::fs::create_dir_all(&dir).expect("the trusted keys directory can be made");
        let text = self.pair.pk.to_box().expect("a public key boxes").to_string();
        std::fs::write(dir.join(format!("{name}.pub")), text).expect("the key file is writable");
    }

    /// The text of a signature of `file` (its bytes now), with the trusted
    /// comment `clusterhost plugins sign` writes.
    pub fn signature_of(&self, file: &Path) -> String {
        let bytes = std::fs::read(file).expect("the plugin file is readable");
        let manifest = crate::manifest_of(file);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let plugin = format!("{} {}", manifest.id, manifest.version);
        let comment = signature::trusted_comment(1, &name, &plugin, &digest::sha256_hex(&bytes));
        minisign::sign(Some(&self.pair.pk), &self.pair.sk, bytes.as_slice(), Some(&comment), None)
            .expect("signing works")
            .into_string()
    }

    /// Signs `file`: writes `FILE.minisig` beside it.
    pub fn sign(&self, file: &Path) {
        std::fs::write(signature::signature_path(file), self.signature_of(file)).expect("the signature is writable");
    }
}
