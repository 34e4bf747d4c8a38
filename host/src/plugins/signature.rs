//! Whether a plugin is signed by a key this node trusts: its detached
//! minisign signature (`NAME.so.minisig`, beside the published file) checked
//! against the keys in `conf/trusted-keys/`, on the bytes of the private copy.
//!
//! Only bytes are read here; the plugin's code never runs. The format and
//! the Ed25519 checks are the `minisign` crate's; the BLAKE2b-512 prehash
//! of the plugin's bytes is `blake2b_simd`'s (see [`Pending::run`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The largest signature file read: a minisig is a few hundred bytes.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// The largest public key file read from `conf/trusted-keys/`.
const MAX_KEY_BYTES: u64 = 4096;

/// The suffix of a detached signature: `gossip.so` → `gossip.so.minisig`.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// `plugins.signature`: what a node does with a plugin that is not signed
/// by a trusted key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    /// No signature is read.
    Off,
    /// Every plugin is checked; one that is not signed by a trusted key
    /// still loads, with a warning in the log and in its record.
    #[default]
    Warn,
    /// Only a plugin signed by a trusted, unrevoked key loads.
    Require,
}

impl SignatureMode {
    /// The property's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMode::Off => "off",
            SignatureMode::Warn => "warn",
            SignatureMode::Require => "require",
        }
    }
}

/// The signature policy in force (live: read by each load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignaturePolicy {
    /// `plugins.signature`.
    pub mode: SignatureMode,
    /// `plugins.signature.revoked`: key ids (16 hex digits, upper case)
    /// refused even while their public key is still in `conf/trusted-keys/`.
    pub revoked: Vec<String>,
}

/// What a load found out about a plugin's signature, kept in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignatureStatus {
    /// Signed by a trusted key, and the signature covers exactly these bytes.
    Verified {
        /// The signer's key id, 16 hex digits.
        key_id: String,
        /// The trusted key's file in `conf/trusted-keys/`.
        key_file: String,
        /// The signature's trusted comment (signed with the file).
        trusted_comment: String,
    },
    /// No `NAME.so.minisig` beside the file.
    Unsigned,
    /// A signature that does not make the plugin trusted (loaded under
    /// `warn` only); `problem` says why.
    Untrusted {
        /// The signer's key id, when the signature file could be read.
        key_id: Option<String>,
        /// The refusal `require` would give.
        problem: String,
    },
    /// `plugins.signature = off`: nothing was read.
    NotChecked,
}

impl SignatureStatus {
    /// What a record says of a plugin whose signature did not make it
    /// trusted: `unsigned`, or `untrusted` with the key and the problem.
    pub fn of_failure(error: &SignatureError) -> SignatureStatus {
        match error {
            SignatureError::Unsigned { .. } => SignatureStatus::Unsigned,
            e => SignatureStatus::Untrusted { key_id: e.key_id().map(str::to_string), problem: e.to_string() },
        }
    }

    /// One line for tables: `KEYID`, `unsigned`, `untrusted (KEYID)`, `-`.
    pub fn summary(&self) -> String {
        match self {
            SignatureStatus::Verified { key_id, .. } => key_id.clone(),
            SignatureStatus::Unsigned => "unsigned".into(),
            SignatureStatus::Untrusted { key_id: Some(k), .. } => format!("untrusted ({k})"),
            SignatureStatus::Untrusted { key_id: None, .. } => "untrusted".into(),
            SignatureStatus::NotChecked => "-".into(),
        }
    }
}

/// Why a plugin's signature does not make it trusted. Each variant names the
/// file, the key id where there is one, and what to do.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("plugin {file} is unsigned: there is no {file}{SIGNATURE_SUFFIX} beside it, and plugins.signature = require; sign it (clusterhost plugins sign FILE --key KEY) and publish {file}{SIGNATURE_SUFFIX} before {file}")]
    Unsigned { file: String },
    #[error("could not read the signature {path}: {detail}; check that it is a readable file")]
    Unreadable { path: PathBuf, detail: String },
    #[error("the signature {path} has {size} bytes, more than a minisign signature ever has ({MAX_SIGNATURE_BYTES}); publish the .minisig that clusterhost plugins sign wrote")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("the signature {path} is not a minisign signature ({detail}); sign the plugin again and publish the new .minisig")]
    Garbage { path: PathBuf, detail: String },
    #[error("the signature of {file} is a legacy minisign signature (not prehashed); sign it again with clusterhost plugins sign or a current minisign")]
    Legacy { file: String },
    #[error("{file} is signed by key {key_id}, but this node trusts no key: {dir} holds no *.pub file; copy the signer's public key there")]
    NoTrustedKeys { file: String, key_id: String, dir: PathBuf },
    #[error("{file} is signed by key {key_id}, which this node does not trust (not among the keys in {dir}: {known}); copy that key's .pub file there if you trust it, or sign the plugin with a trusted key")]
    UnknownKey { file: String, key_id: String, dir: PathBuf, known: String },
    #[error("{file} is signed by key {key_id}, which is revoked (plugins.signature.revoked); sign the plugin with a current key")]
    RevokedKey { file: String, key_id: String },
    #[error("the signature of {file} (key {key_id}) is a signature of another file ({signed_for}), not of this {this}; publish the .minisig made for this build")]
    OtherFile { file: String, key_id: String, signed_for: String, this: String },
    #[error("{file} was modified after it was signed: its signature (key {key_id}) was made for {signed_for}, and these bytes differ (sha256 {sha256}); publish the file exactly as signed, or sign it again")]
    ModifiedAfterSigning { file: String, key_id: String, signed_for: String, sha256: String },
    #[error("the signature of {file} (key {key_id}) does not match its bytes: the file was changed after it was signed, or the signature is of another file; publish the file and the .minisig made for it together")]
    Mismatch { file: String, key_id: String },
    #[error(
        "the signature of {file} (key {key_id}) is bad: {detail}; it was damaged or forged: sign the plugin again"
    )]
    BadSignature { file: String, key_id: String, detail: String },
    #[error("could not read the bytes of {file} to check its signature (key {key_id}): {detail}; nothing of it was loaded: check the disk and the private copy directory, then load it again")]
    BytesUnreadable { file: String, key_id: String, detail: String },
}

/// Why the byte-reading part of a check ([`Pending::run`]) did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BytesError {
    /// The bytes could not be read: nothing is known of the signature.
    Read(String),
    /// The bytes were read and the signature does not verify over them.
    Verify(String),
}

impl SignatureError {
    /// The signer's key id, when the signature names one.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            SignatureError::NoTrustedKeys { key_id, .. }
            | SignatureError::UnknownKey { key_id, .. }
            | SignatureError::RevokedKey { key_id, .. }
            | SignatureError::OtherFile { key_id, .. }
            | SignatureError::ModifiedAfterSigning { key_id, .. }
            | SignatureError::Mismatch { key_id, .. }
            | SignatureError::BadSignature { key_id, .. }
            | SignatureError::BytesUnreadable { key_id, .. } => Some(key_id),
            _ => None,
        }
    }
}

/// A minisign key id as minisign prints it: the 8 key-number bytes as a
/// little-endian number, 16 upper-case hex digits.
pub fn key_id(keynum: &[u8]) -> String {
    let mut le = [0u8; 8];
    let n = keynum.len().min(8);
    le[..n].copy_from_slice(&keynum[..n]);
    format!("{:016X}", u64::from_le_bytes(le))
}

/// Where `file`'s detached signature is: `NAME.so.minisig` beside it.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(SIGNATURE_SUFFIX);
    file.with_file_name(name)
}

/// The plugin file a published signature is for: `plugins/NAME.so` for
/// `plugins/NAME.so.minisig` (not hidden); `None` for any other name.
pub fn plugin_of_signature(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let plugin = name.strip_suffix(SIGNATURE_SUFFIX)?;
    (!plugin.starts_with('.') && plugin.ends_with(".so") && plugin.len() > 3).then(|| path.with_file_name(plugin))
}

/// Reads `file`'s signature from beside it, once, at most
/// [`MAX_SIGNATURE_BYTES`]; `None` when there is none.
pub fn read_signature_of(file: &Path) -> Result<Option<String>, SignatureError> {
    let path = signature_path(file);
    let unreadable = |e: std::io::Error| SignatureError::Unreadable { path: path.clone(), detail: e.to_string() };
    // Non-blocking, and only a regular file: a FIFO (or device) under the
    // name would otherwise block the load, and every load after it.
    use std::os::unix::fs::OpenOptionsExt;
    let handle = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path) {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    if !handle.metadata().map_err(unreadable)?.is_file() {
        return Err(unreadable(std::io::Error::other(
            "it is not a regular file; replace it with the .minisig that plugins sign wrote",
        )));
    }
    let mut bytes = Vec::new();
    handle.take(MAX_SIGNATURE_BYTES + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SIGNATURE_BYTES {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(bytes.len() as u64);
        return Err(SignatureError::TooLarge { path, size });
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(_) => Err(SignatureError::Garbage { path, detail: "it is not text".into() }),
    }
}

/// A trusted public key, read from `conf/trusted-keys/NAME.pub`.
pub struct TrustedKey {
    /// Its file name (for records and messages).
    pub file: String,
    /// The key.
    pub key: minisign::PublicKey,
}

/// Every `*.pub` in `dir`, by key id; a file that is not a minisign public
/// key is skipped with a warning (it can make no plugin trusted).
pub fn trusted_keys(dir: &Path) -> BTreeMap<String, TrustedKey> {
    let mut keys = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return keys };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pub") {
            continue;
        }
        match read_public_key(&path) {
            Ok(key) => {
                let file = entry.file_name().to_string_lossy().into_owned();
                keys.insert(key_id(key.keynum()), TrustedKey { file, key });
            }
            Err(e) => tracing::warn!(file = %path.display(), "not a minisign public key, ignored: {e}"),
        }
    }
    keys
}

/// Reads one minisign public key file (bounded in size).
pub fn read_public_key(path: &Path) -> Result<minisign::PublicKey, String> {
    let handle = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    handle.take(MAX_KEY_BYTES).read_to_string(&mut text).map_err(|e| e.to_string())?;
    minisign::PublicKeyBox::from_string(&text).and_then(|b| b.into_public_key()).map_err(|e| e.to_string())
}

/// What the checked file is, for telling "modified after signing" from
/// "another file's signature".
pub struct Subject<'a> {
    /// The published file's name, for messages.
    pub file: &'a str,
    /// SHA-256 (hex) of the bytes checked.
    pub sha256: &'a str,
    /// `id version` from its manifest.
    pub plugin: &'a str,
}

/// The trusted comment `clusterhost plugins sign` writes: what minisign
/// writes (`timestamp`, `file`) and the plugin and hash the signature is for.
pub fn trusted_comment(timestamp: u64, file: &str, plugin: &str, sha256: &str) -> String {
    format!("timestamp:{timestamp}\tfile:{file}\tplugin:{plugin}\tsha256:{sha256}")
}

/// A field of a trusted comment (`key:value`, tab-separated).
fn comment_field<'c>(comment: &'c str, key: &str) -> Option<&'c str> {
    comment.split('\t').find_map(|part| part.strip_prefix(key)?.strip_prefix(':'))
}

/// A signature read and matched to a trusted, unrevoked key; the part that
/// reads every byte (BLAKE2b, then Ed25519) is [`run`](Self::run), which may
/// run on another thread while the bytes are written to the private copy.
pub struct Pending {
    /// The published file's name, for messages.
    file: String,
    /// The parsed `.minisig`.
    sig: minisign::SignatureBox,
    /// The same signature read as one over the prehash itself (see
    /// [`over_prehash`]).
    over_digest: minisign::SignatureBox,
    /// The signer's key id.
    key_id: String,
    /// The trusted key's file in `conf/trusted-keys/`.
    key_file: String,
    /// The trusted key.
    key: minisign::PublicKey,
}

/// Reads `signature` (the text of `file`'s `.minisig`) and finds its
/// signer among `keys`, honouring `revoked`; no byte of the plugin is read.
pub fn match_key(
    file: &str,
    signature: &str,
    signature_file: &Path,
    keys: &BTreeMap<String, TrustedKey>,
    keys_dir: &Path,
    revoked: &[String],
) -> Result<Pending, SignatureError> {
    let file = file.to_string();
    let sig = minisign::SignatureBox::from_string(signature)
        .map_err(|e| SignatureError::Garbage { path: signature_file.to_owned(), detail: e.to_string() })?;
    // minisign slices the global signature as 64 bytes without checking
    // (a shorter one panics in its Ed25519 check): its length is checked here.
    let global = signature.lines().nth(3).map(|line| {
        use ct_codecs::Decoder;
        ct_codecs::Base64::decode_to_vec(line.trim().as_bytes(), None).map(|b| b.len()).unwrap_or(0)
    });
    if global != Some(ED25519_SIGNATURE_BYTES) {
        let detail = format!("its global signature has {} bytes, not {ED25519_SIGNATURE_BYTES}", global.unwrap_or(0));
        return Err(SignatureError::Garbage { path: signature_file.to_owned(), detail });
    }
    let key_id = key_id(sig.keynum());
    if !sig.is_prehashed() {
        return Err(SignatureError::Legacy { file });
    }
    let over_digest = over_prehash(signature)
        .map_err(|detail| SignatureError::Garbage { path: signature_file.to_owned(), detail })?;
    if revoked.iter().any(|r| r.eq_ignore_ascii_case(&key_id)) {
        return Err(SignatureError::RevokedKey { file, key_id });
    }
    if keys.is_empty() {
        return Err(SignatureError::NoTrustedKeys { file, key_id, dir: keys_dir.to_owned() });
    }
    let Some(trusted) = keys.get(&key_id) else {
        let known = keys.iter().map(|(id, k)| format!("{id} ({})", k.file)).collect::<Vec<_>>().join(", ");
        return Err(SignatureError::UnknownKey { file, key_id, dir: keys_dir.to_owned(), known });
    };
    Ok(Pending { file, sig, over_digest, key_id, key_file: trusted.file.clone(), key: trusted.key.clone() })
}

/// The length of an Ed25519 signature.
const ED25519_SIGNATURE_BYTES: usize = 64;

/// The length of minisign's prehash: BLAKE2b-512.
const PREHASH_BYTES: usize = 64;

/// A prehashed (`ED`) minisign signature, re-read as the same signature
/// over its message itself (`Ed`): a prehashed signature is the Ed25519
/// signature of the file's BLAKE2b-512 digest, so verifying this one over
/// the digest is the check `minisign::verify` makes after hashing. The
/// global signature (over the signature bytes and the trusted comment, not
/// the algorithm tag) is unchanged and still verified. This lets the digest
/// be computed by `blake2b_simd` while every Ed25519 check stays minisign's.
fn over_prehash(signature: &str) -> Result<minisign::SignatureBox, String> {
    use ct_codecs::{Decoder, Encoder};
    let lines: Vec<&str> = signature.lines().collect();
    let Some(encoded) = lines.get(1) else { return Err("no signature line".into()) };
    let mut bytes = ct_codecs::Base64::decode_to_vec(encoded.trim().as_bytes(), None).map_err(|e| e.to_string())?;
    match bytes.get_mut(..2) {
        Some(alg) if alg == b"ED" => alg.copy_from_slice(b"Ed"),
        _ => return Err("not a prehashed signature".into()),
    }
    let encoded = ct_codecs::Base64::encode_to_string(&bytes).map_err(|e| e.to_string())?;
    let mut text = String::with_capacity(signature.len());
    for (n, line) in lines.iter().enumerate() {
        text.push_str(if n == 1 { &encoded } else { line });
        text.push('\n');
    }
    minisign::SignatureBox::from_string(&text).map_err(|e| e.to_string())
}

/// BLAKE2b-512 of everything `data` reads, as minisign prehashes a file.
fn prehash(mut data: impl Read) -> std::io::Result<[u8; PREHASH_BYTES]> {
    let mut state = blake2b_simd::Params::new().hash_length(PREHASH_BYTES).to_state();
    let mut buf = vec![0u8; 1 << 18];
    loop {
        match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                state.update(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut digest = [0u8; PREHASH_BYTES];
    digest.copy_from_slice(state.finalize().as_bytes());
    Ok(digest)
}

impl Pending {
    /// Verifies the signature over `data` (the private copy's bytes, read to
    /// the end): their BLAKE2b-512 digest, then minisign's two Ed25519
    /// checks over it (see [`over_prehash`]); `Err` holds the reason.
    pub fn run(&self, data: impl Read) -> Result<(), BytesError> {
        let digest = prehash(data).map_err(|e| BytesError::Read(e.to_string()))?;
        self.verify_digest(&digest)
    }

    /// [`run`](Self::run) over bytes in memory, hashed where they lie (no
    /// copy through a read buffer: a load's copy is already in memory).
    pub fn run_bytes(&self, data: &[u8]) -> Result<(), BytesError> {
        let mut digest = [0u8; PREHASH_BYTES];
        digest.copy_from_slice(blake2b_simd::Params::new().hash_length(PREHASH_BYTES).hash(data).as_bytes());
        self.verify_digest(&digest)
    }

    fn verify_digest(&self, digest: &[u8; PREHASH_BYTES]) -> Result<(), BytesError> {
        // Legacy is allowed only for this box: `match_key` refused a `.minisig`
        // that was not prehashed, and this one is its re-reading.
        minisign::verify(&self.key, &self.over_digest, std::io::Cursor::new(&digest[..]), true, false, true)
            .map_err(|e| BytesError::Verify(e.to_string()))
    }

    /// The verdict from [`run`](Self::run)'s outcome; a failure is told
    /// apart (modified, another file's, bad) with `subject`.
    pub fn finish(
        self,
        outcome: Result<(), BytesError>,
        subject: &Subject<'_>,
    ) -> Result<SignatureStatus, SignatureError> {
        let Pending { file, sig, key_id, key_file, .. } = self;
        // The comment is read before it is verified, only to explain a failure.
        let comment = sig.trusted_comment().unwrap_or_default();
        let detail = match outcome {
            Ok(()) => return Ok(SignatureStatus::Verified { key_id, key_file, trusted_comment: comment }),
            Err(BytesError::Read(detail)) => return Err(SignatureError::BytesUnreadable { file, key_id, detail }),
            Err(BytesError::Verify(detail)) => detail,
        };
        let signed_sha = comment_field(&comment, "sha256");
        let signed_plugin = comment_field(&comment, "plugin");
        let signed_for = match (signed_plugin, signed_sha) {
            (Some(p), Some(s)) => format!("{p}, sha256 {s}"),
            (None, Some(s)) => format!("sha256 {s}"),
            _ => String::new(),
        };
        Err(match signed_sha {
            Some(sha) if sha.eq_ignore_ascii_case(subject.sha256) => {
                SignatureError::BadSignature { file, key_id, detail }
            }
            Some(_) if signed_plugin == Some(subject.plugin) => {
                SignatureError::ModifiedAfterSigning { file, key_id, signed_for, sha256: subject.sha256.to_string() }
            }
            Some(_) => SignatureError::OtherFile {
                file,
                key_id,
                signed_for,
                this: format!("{}, sha256 {}", subject.plugin, subject.sha256),
            },
            None => SignatureError::Mismatch { file, key_id },
        })
    }
}

/// Checks `signature` (the text of `NAME.so.minisig`) over `data` (the
/// private copy's bytes, read to the end) against `keys`, honouring `revoked`.
pub fn verify(
    subject: &Subject<'_>,
    signature: &str,
    signature_file: &Path,
    data: impl Read,
    keys: &BTreeMap<String, TrustedKey>,
    keys_dir: &Path,
    revoked: &[String],
) -> Result<SignatureStatus, SignatureError> {
    let pending = match_key(subject.file, signature, signature_file, keys, keys_dir, revoked)?;
    let outcome = pending.run(data);
    pending.finish(outcome, subject)
}

/// What a load knows of a signature before it reads the plugin's bytes.
pub enum Begun {
    /// `plugins.signature = off`.
    Off,
    /// Already decided: no signature, or one that cannot make it trusted.
    Failed(SignatureError),
    /// A trusted key to verify the bytes with (boxed: two parsed signatures).
    Ready(Box<Pending>),
}

/// The part of a load's check made before the bytes are read: the policy,
/// the `.minisig` beside `published`, the trusted keys in `keys_dir`.
pub fn begin(policy: &SignaturePolicy, published: &Path, keys_dir: &Path) -> Begun {
    if policy.mode == SignatureMode::Off {
        return Begun::Off;
    }
    match read_signature_of(published) {
        Ok(text) => begin_with(policy, published, text.as_deref(), keys_dir),
        Err(e) => Begun::Failed(e),
    }
}

/// [`begin`] with `signature` as the text of `published`'s `.minisig`
/// (`None`: there is none), e.g. one that came with an upload.
pub fn begin_with(policy: &SignaturePolicy, published: &Path, signature: Option<&str>, keys_dir: &Path) -> Begun {
    if policy.mode == SignatureMode::Off {
        return Begun::Off;
    }
    let file = published.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let Some(text) = signature else { return Begun::Failed(SignatureError::Unsigned { file }) };
    let keys = trusted_keys(keys_dir);
    match match_key(&file, text, &signature_path(published), &keys, keys_dir, &policy.revoked) {
        Ok(pending) => Begun::Ready(Box::new(pending)),
        Err(e) => Begun::Failed(e),
    }
}

impl Begun {
    /// Runs the byte-reading part, if any (see [`Pending::run`]).
    pub fn run(&self, data: impl Read) -> Option<Result<(), BytesError>> {
        match self {
            Begun::Ready(pending) => Some(pending.run(data)),
            _ => None,
        }
    }

    /// [`run`](Self::run) over bytes in memory ([`Pending::run_bytes`]).
    pub fn run_bytes(&self, data: &[u8]) -> Option<Result<(), BytesError>> {
        match self {
            Begun::Ready(pending) => Some(pending.run_bytes(data)),
            _ => None,
        }
    }

    /// The verdict under `policy`: `Ok` with what to record (a problem
    /// under `warn` is recorded, not returned), `Err` when the plugin must
    /// be refused. `outcome` is what [`run`](Self::run) gave.
    pub fn finish(
        self,
        policy: &SignaturePolicy,
        outcome: Option<Result<(), BytesError>>,
        subject: &Subject<'_>,
    ) -> Result<SignatureStatus, SignatureError> {
        let verdict = match self {
            Begun::Off => return Ok(SignatureStatus::NotChecked),
            Begun::Failed(e) => Err(e),
            Begun::Ready(pending) => (*pending)
                .finish(outcome.unwrap_or_else(|| Err(BytesError::Read("they were not read".into()))), subject),
        };
        match (verdict, policy.mode) {
            (Ok(status), _) => Ok(status),
            (Err(e), SignatureMode::Require) => Err(e),
            (Err(e), _) => Ok(SignatureStatus::of_failure(&e)),
        }
    }
}

/// The whole check a load makes under `policy`, in one go: [`begin`],
/// [`Begun::run`] over `data`, [`Begun::finish`].
pub fn check(
    policy: &SignaturePolicy,
    published: &Path,
    subject: &Subject<'_>,
    data: &[u8],
    keys_dir: &Path,
) -> Result<SignatureStatus, SignatureError> {
    let begun = begin(policy, published, keys_dir);
    let outcome = begun.run_bytes(data);
    begun.finish(policy, outcome, subject)
}

/// The HTTP header an upload carries its detached signature in: the
/// `.minisig` file's text, base64 (standard alphabet, padded).
pub const SIGNATURE_HEADER: &str = "x-clusterhost-signature";

/// A `.minisig` text as [`SIGNATURE_HEADER`]'s value.
pub fn encode_for_header(signature: &str) -> String {
    use ct_codecs::Encoder;
    ct_codecs::Base64::encode_to_string(signature.as_bytes()).unwrap_or_default()
}

/// [`SIGNATURE_HEADER`]'s value back to the `.minisig` text; `None` unless
/// it is base64 of at most [`MAX_SIGNATURE_BYTES`] of UTF-8 text.
pub fn decode_from_header(value: &[u8]) -> Option<String> {
    use ct_codecs::Decoder;
    if value.len() as u64 > MAX_SIGNATURE_BYTES * 4 / 3 + 4 {
        return None;
    }
    let bytes = ct_codecs::Base64::decode_to_vec(value, None).ok()?;
    (bytes.len() as u64 <= MAX_SIGNATURE_BYTES).then_some(())?;
    String::from_utf8(bytes).ok()
}

/// Whether `id` is a minisign key id (16 hex digits); upper-cased.
pub fn parse_key_id(id: &str) -> Option<String> {
    (id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(data: &[u8], comment: &str) -> (minisign::KeyPair, String) {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let sig = minisign::sign(Some(&pair.pk), &pair.sk, data, Some(comment), None).unwrap();
        (pair, sig.into_string())
    }

    fn keys(pair: &minisign::KeyPair) -> BTreeMap<String, TrustedKey> {
        let mut keys = BTreeMap::new();
        keys.insert(key_id(pair.pk.keynum()), TrustedKey { file: "k.pub".into(), key: pair.pk.clone() });
        keys
    }

    #[test]
    fn each_failure_is_told_apart() {
        let data = b"the plugin".to_vec();
        let sha = crate::plugins::digest::sha256_hex(&data);
        let comment = trusted_comment(1, "p.so", "p 1.0.0", &sha);
        let (pair, sig) = signed(&data, &comment);
        let subject = Subject { file: "p.so", sha256: &sha, plugin: "p 1.0.0" };
        let dir = Path::new("conf/trusted-keys");
        let run = |sig: &str, data: &[u8], subject: &Subject<'_>, revoked: &[String]| {
            verify(subject, sig, Path::new("p.so.minisig"), std::io::Cursor::new(data), &keys(&pair), dir, revoked)
        };
        assert!(matches!(run(&sig, &data, &subject, &[]), Ok(SignatureStatus::Verified { .. })));
        let id = key_id(pair.pk.keynum());
        assert!(matches!(run(&sig, &data, &subject, &[id.to_lowercase()]), Err(SignatureError::RevokedKey { .. })));
        let changed = b"the plugin, changed".to_vec();
        let changed_sha = crate::plugins::digest::sha256_hex(&changed);
        let same_plugin = Subject { file: "p.so", sha256: &changed_sha, plugin: "p 1.0.0" };
        assert!(matches!(run(&sig, &changed, &same_plugin, &[]), Err(SignatureError::ModifiedAfterSigning { .. })));
        let other = Subject { file: "p.so", sha256: &changed_sha, plugin: "q 2.0.0" };
        assert!(matches!(run(&sig, &changed, &other, &[]), Err(SignatureError::OtherFile { .. })));
        assert!(matches!(run("garbage", &data, &subject, &[]), Err(SignatureError::Garbage { .. })));
        let (_stranger, foreign) = signed(&data, &comment);
        assert!(matches!(run(&foreign, &data, &subject, &[]), Err(SignatureError::UnknownKey { .. })));
    }

    /// The digest-then-verify path agrees with `minisign::verify` (which
    /// hashes with its own BLAKE2b) on every verdict: many sizes around the
    /// buffer and block boundaries, each byte flip, a damaged signature.
    #[test]
    fn the_prehash_path_agrees_with_minisign() {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let keys = keys(&pair);
        let dir = Path::new("conf/trusted-keys");
        for len in [0usize, 1, 127, 128, 129, 1 << 18, (1 << 18) + 1, 3 * (1 << 18) - 5] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let sig = minisign::sign(Some(&pair.pk), &pair.sk, &data[..], Some("c"), None).unwrap();
            let text = sig.to_string();
            let pending = match_key("p.so", &text, Path::new("p.so.minisig"), &keys, dir, &[]).unwrap();
            let theirs = |data: &[u8]| minisign::verify(&pair.pk, &sig, std::io::Cursor::new(data), true, false, false);
            assert_eq!(pending.run(&data[..]), Ok(()), "{len} bytes");
            assert_eq!(pending.run_bytes(&data), Ok(()), "{len} bytes, in memory");
            assert!(theirs(&data).is_ok());
            for at in [0, len / 2, len.saturating_sub(1)].into_iter().filter(|_| len > 0) {
                let mut flipped = data.clone();
                flipped[at] ^= 1;
                assert!(matches!(pending.run(&flipped[..]), Err(BytesError::Verify(_))), "{len} bytes, flip at {at}");
                assert!(matches!(pending.run_bytes(&flipped), Err(BytesError::Verify(_))), "{len} bytes, flip at {at}");
                assert!(theirs(&flipped).is_err());
            }
            let mut longer = data.clone();
            longer.push(0);
            assert!(matches!(pending.run(&longer[..]), Err(BytesError::Verify(_))), "{len} bytes + 1");
        }
        // The signature bytes themselves damaged: refused by both.
        let data = b"the plugin".to_vec();
        let sig = minisign::sign(Some(&pair.pk), &pair.sk, &data[..], Some("c"), None).unwrap().to_string();
        let lines: Vec<&str> = sig.lines().collect();
        let mut raw = {
            use ct_codecs::Decoder;
            ct_codecs::Base64::decode_to_vec(lines[1], None).unwrap()
        };
        raw[20] ^= 0x40;
        let damaged = {
            use ct_codecs::Encoder;
            format!(
                "{}\n{}\n{}\n{}\n",
                lines[0],
                ct_codecs::Base64::encode_to_string(&raw).unwrap(),
                lines[2],
                lines[3]
            )
        };
        let pending = match_key("p.so", &damaged, Path::new("p.so.minisig"), &keys, dir, &[]).unwrap();
        assert!(matches!(pending.run(&data[..]), Err(BytesError::Verify(_))));
        // A global signature of the wrong length: refused as garbage (it
        // made minisign panic), whatever its length.
        for len in [0usize, 14, 63, 65] {
            let short = {
                use ct_codecs::Encoder;
                ct_codecs::Base64::encode_to_string(vec![7u8; len]).unwrap()
            };
            let text = format!("{}\n{}\n{}\n{short}\n", lines[0], lines[1], lines[2]);
            let got = match_key("p.so", &text, Path::new("p.so.minisig"), &keys, dir, &[]);
            assert!(matches!(got, Err(SignatureError::Garbage { .. })), "{len} bytes");
        }
        // A trusted comment changed: the global signature no longer verifies.
        let forged = sig.replacen(lines[2], "trusted comment: forged", 1);
        let pending = match_key("p.so", &forged, Path::new("p.so.minisig"), &keys, dir, &[]).unwrap();
        assert!(matches!(pending.run(&data[..]), Err(BytesError::Verify(_))));
    }

    /// A read error is told as one, never as a bad signature.
    #[test]
    fn unreadable_bytes_are_not_a_bad_signature() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("the disk is gone"))
            }
        }
        let data = b"the plugin".to_vec();
        let sha = crate::plugins::digest::sha256_hex(&data);
        let (pair, sig) = signed(&data, &trusted_comment(1, "p.so", "p 1.0.0", &sha));
        let subject = Subject { file: "p.so", sha256: &sha, plugin: "p 1.0.0" };
        let dir = Path::new("conf/trusted-keys");
        let got = verify(&subject, &sig, Path::new("p.so.minisig"), Failing, &keys(&pair), dir, &[]);
        match got {
            Err(e @ SignatureError::BytesUnreadable { .. }) => {
                assert!(e.to_string().contains("the disk is gone"), "{e}")
            }
            other => panic!("expected BytesUnreadable, got {other:?}"),
        }
    }

    #[test]
    fn a_signature_names_its_plugin_file() {
        assert_eq!(plugin_of_signature(Path::new("p/gossip.so.minisig")), Some(PathBuf::from("p/gossip.so")));
        for other in ["p/.gossip.so.minisig", "p/gossip.so", "p/x.minisig", "p/.so.minisig"] {
            assert_eq!(plugin_of_signature(Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn key_ids_read_as_minisign_prints_them() {
        assert_eq!(key_id(&[0x01, 0, 0, 0, 0, 0, 0, 0xAB]), "AB00000000000001");
        assert_eq!(parse_key_id("ab00000000000001").as_deref(), Some("AB00000000000001"));
        assert_eq!(parse_key_id("xyz"), None);
    }
}
