//! `clusterhost plugins keygen | sign | verify`: minisign keys and detached
//! signatures for plugin files, made and checked without a node.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::fail;
use crate::plugins::signature::{self, SignatureStatus, TrustedKey};
use crate::plugins::{digest, manifest};
use crate::properties::Properties;

/// How a secret key's password is had: from a file (automation), or asked
/// on the terminal.
fn password(password_file: Option<&Path>) -> Result<Option<String>, String> {
    let Some(file) = password_file else { return Ok(None) };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("could not read the password file {}: {e}", file.display()))?;
    Ok(Some(text.lines().next().unwrap_or_default().to_string()))
}

/// Writes `text` to `path` atomically with `mode` (a temporary file beside
/// it, renamed over it); refuses to replace an existing file unless `force`.
fn write_new(path: &Path, text: &[u8], mode: u32, force: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() && !force {
        return Err(format!("{} exists; choose another --out or pass --force to replace it", path.display()));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let failed = |e: std::io::Error| format!("could not write {}: {e}", path.display());
    let mut file = tempfile::Builder::new().prefix(".clusterhost-").tempfile_in(dir).map_err(failed)?;
    file.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(failed)?;
    std::io::Write::write_all(&mut file, text).map_err(failed)?;
    file.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

/// `plugins keygen [--out PATH] [--unencrypted] [--password-file FILE] [--force]`:
/// writes PATH.key (the secret key, mode 0600) and PATH.pub.
pub fn keygen(out: &Path, unencrypted: bool, password_file: Option<&Path>, force: bool) -> ExitCode {
    let run = || -> Result<(), String> {
        let pair = if unencrypted {
            minisign::KeyPair::generate_unencrypted_keypair()
        } else {
            minisign::KeyPair::generate_encrypted_keypair(password(password_file)?)
        }
        .map_err(|e| format!("could not make a key pair: {e}"))?;
        let id = signature::key_id(pair.pk.keynum());
        let secret = pair
            .sk
            .to_box(Some(&format!("clusterhost plugin signing secret key {id}")))
            .map_err(|e| e.to_string())?
            .to_string();
        let public = pair.pk.to_box().map_err(|e| e.to_string())?.to_string();
        let (key_file, pub_file) = (with_suffix(out, ".key"), with_suffix(out, ".pub"));
        write_new(&key_file, secret.as_bytes(), 0o600, force)?;
        write_new(&pub_file, public.as_bytes(), 0o644, force)?;
        println!("key id:     {id}");
        println!("secret key: {} (keep it off the nodes; mode 0600)", key_file.display());
        println!("public key: {} (copy it into every node's conf/trusted-keys/)", pub_file.display());
        if unencrypted {
            println!("the secret key is not password-protected: keep it where only the signing job can read it");
        }
        Ok(())
    };
    run().map_or_else(fail, |()| ExitCode::SUCCESS)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Reads a minisign secret key: unencrypted as it is, encrypted with the
/// password from `password_file` or asked on the terminal.
fn read_secret_key(key: &Path, password_file: Option<&Path>) -> Result<minisign::SecretKey, String> {
    let text =
        std::fs::read_to_string(key).map_err(|e| format!("could not read the secret key {}: {e}", key.display()))?;
    let secret = minisign::SecretKeyBox::from_string(&text)
        .map_err(|e| format!("{} is not a minisign secret key: {e}", key.display()))?;
    if let Ok(sk) = secret.clone().into_unencrypted_secret_key() {
        return Ok(sk);
    }
    secret
        .into_secret_key(password(password_file)?)
        .map_err(|e| format!("could not open the secret key {}: {e}", key.display()))
}

/// `plugins sign FILE --key KEY [--password-file FILE]`: writes FILE.minisig.
pub fn sign(file: &Path, key: &Path, password_file: Option<&Path>) -> ExitCode {
    let run = || -> Result<(), String> {
        let (manifest, bytes) = manifest::read_plugin_file(file).map_err(|e| e.to_string())?;
        let sk = read_secret_key(key, password_file)?;
        let id = signature::key_id(sk.keynum());
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let plugin = format!("{} {}", manifest.id, manifest.version);
        let sha256 = digest::sha256_hex(&bytes);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let comment = signature::trusted_comment(now, &name, &plugin, &sha256);
        let untrusted = format!("signature from clusterhost secret key {id}");
        let sig = minisign::sign(None, &sk, bytes.as_slice(), Some(&comment), Some(&untrusted))
            .map_err(|e| format!("could not sign {}: {e}", file.display()))?;
        let out = signature::signature_path(file);
        write_new(&out, sig.into_string().as_bytes(), 0o644, true)?;
        println!("wrote {} ({plugin}, key {id})", out.display());
        println!("publish it beside the plugin, before the plugin itself (or: clusterhost plugins install FILE)");
        Ok(())
    };
    run().map_or_else(fail, |()| ExitCode::SUCCESS)
}

/// Trusted keys by key id.
type TrustedKeys = std::collections::BTreeMap<String, TrustedKey>;

/// The keys `verify` and `inspect` check against: one `--key FILE.pub`, or
/// the home's `conf/trusted-keys/` (and its properties' revocations).
pub struct TrustSource {
    /// `--key`: trust exactly this public key.
    pub key: Option<PathBuf>,
    /// `--home` (default `.`): its conf/trusted-keys and conf/clusterhost.properties.
    pub home: PathBuf,
}

impl TrustSource {
    /// The trusted keys by id, where they come from, and the revoked ids.
    fn keys(&self) -> Result<(TrustedKeys, PathBuf, Vec<String>), String> {
        if let Some(key) = &self.key {
            let pk = signature::read_public_key(key).map_err(|e| format!("{}: {e}", key.display()))?;
            let file = key.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let mut keys = std::collections::BTreeMap::new();
            keys.insert(signature::key_id(pk.keynum()), TrustedKey { file, key: pk });
            return Ok((keys, key.clone(), Vec::new()));
        }
        let dir = crate::home::trusted_keys_dir(&self.home);
        // Unreadable properties are an error, not "nothing revoked".
        let revoked = Properties::load(&crate::home::properties_file(&self.home))
            .map(|(p, _)| p.signature_revoked)
            .map_err(|e| format!("{e}; its plugins.signature.revoked cannot be honoured: fix it, or pass --key PUB"))?;
        Ok((signature::trusted_keys(&dir), dir, revoked))
    }

    /// The verdict on `file` as a node with `require` would give it.
    pub fn check(&self, file: &Path) -> Result<Result<SignatureStatus, signature::SignatureError>, String> {
        let (manifest, bytes) = manifest::read_plugin_file(file).map_err(|e| e.to_string())?;
        let (keys, dir, revoked) = self.keys()?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let plugin = format!("{} {}", manifest.id, manifest.version);
        let sha256 = digest::sha256_hex(&bytes);
        let subject = signature::Subject { file: &name, sha256: &sha256, plugin: &plugin };
        let text = match signature::read_signature_of(file) {
            Ok(Some(text)) => text,
            Ok(None) => return Ok(Err(signature::SignatureError::Unsigned { file: name })),
            Err(e) => return Ok(Err(e)),
        };
        let sig_file = signature::signature_path(file);
        Ok(signature::verify(&subject, &text, &sig_file, std::io::Cursor::new(&bytes), &keys, &dir, &revoked))
    }
}

/// `plugins verify FILE [--key PUB | --home DIR]`: the signer's key id, the
/// trusted comment and the verdict; non-zero unless trusted.
pub fn verify(file: &Path, trust: &TrustSource) -> ExitCode {
    let sig_file = signature::signature_path(file);
    if let Ok(Some(text)) = signature::read_signature_of(file) {
        if let Ok(sig) = minisign::SignatureBox::from_string(&text) {
            println!("signature:       {}", sig_file.display());
            println!("signer key id:   {}", signature::key_id(sig.keynum()));
            println!("trusted comment: {}", sig.trusted_comment().unwrap_or_default());
        }
    }
    match trust.check(file) {
        Ok(Ok(SignatureStatus::Verified { key_id, key_file, .. })) => {
            println!("verdict:         trusted (key {key_id}, {key_file})");
            ExitCode::SUCCESS
        }
        Ok(Ok(other)) => fail(format!("verdict: not trusted ({})", other.summary())),
        Ok(Err(e)) => {
            println!("verdict:         refused");
            fail(e.to_string())
        }
        Err(e) => fail(e),
    }
}

/// The `signature:` line of `plugins inspect`.
pub fn inspect_line(file: &Path, trust: &TrustSource) -> String {
    match trust.check(file) {
        Ok(Ok(SignatureStatus::Verified { key_id, key_file, .. })) => {
            format!("signed by {key_id} (trusted: {key_file})")
        }
        Ok(Err(signature::SignatureError::Unsigned { .. })) => "unsigned".into(),
        Ok(Err(e)) => match e.key_id() {
            Some(id) => format!("signed by {id}, not trusted here: {e}"),
            None => format!("not trusted here: {e}"),
        },
        Ok(Ok(other)) => other.summary(),
        Err(e) => e,
    }
}
