//! What a node reads of a plugin's signature, from outside the process:
//!
//! - 0: the upload header `x-clusterhost-signature` (`decode_from_header`:
//!   bounded base64 of UTF-8), then the text it carries, as below;
//! - 1: a `NAME.so.minisig` text: parsed and matched to the trusted key
//!   (`match_key`), re-read as a signature over its prehash, and, when it
//!   names the key, verified over a fixed plugin's bytes and judged
//!   (`Pending::run`, `finish`): never a panic, never "verified" for a
//!   signature that is not the seed's;
//! - 2: a key id given on the command line or in `plugins.signature.revoked`
//!   (`parse_key_id`), and a file name in plugins/ (`plugin_of_signature`).
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use clusterhost::plugins::signature::{
    self, decode_from_header, match_key, parse_key_id, plugin_of_signature, Subject, TrustedKey,
};
use libfuzzer_sys::fuzz_target;

/// The key that signed the seed in corpus/signature/ (over `PLUGIN`).
const KEY: &str = "RWQnVsWFDIipzU/5/TAeiAEZlEy7ZoRLlgFr1UIIS+ej0sING8LC5FuN";
const PLUGIN: &[u8] = b"the plugin";
/// The seed's signature, exactly: the only text that may verify.
const SEED: &str = include_str!("signature-seed.minisig");

fn keys() -> &'static BTreeMap<String, TrustedKey> {
    static KEYS: OnceLock<BTreeMap<String, TrustedKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = minisign::PublicKey::from_base64(KEY).expect("the fuzz key reads");
        let mut keys = BTreeMap::new();
        keys.insert(signature::key_id(key.keynum()), TrustedKey { file: "fuzz.pub".into(), key });
        keys
    })
}

fn judge(text: &str) {
    let dir = Path::new("conf/trusted-keys");
    let Ok(pending) = match_key("p.so", text, Path::new("p.so.minisig"), keys(), dir, &[]) else { return };
    let outcome = pending.run(PLUGIN);
    let subject = Subject { file: "p.so", sha256: "00", plugin: "p 1.0.0" };
    let verified = matches!(pending.finish(outcome, &subject), Ok(signature::SignatureStatus::Verified { .. }));
    if verified {
        // Ed25519 signatures are not malleable: the signature bytes, the
        // trusted comment and the global signature are the seed's, as
        // minisign reads them (re-written in its own form: padding after
        // `trusted comment: ` or a base64 spelling of the same bytes is
        // the same signature); the untrusted comment is not signed.
        let fields = |t: &str| {
            let canonical = minisign::SignatureBox::from_string(t).expect("a verified signature parses").to_string();
            canonical.lines().skip(1).map(str::to_string).collect::<Vec<_>>()
        };
        assert_eq!(fields(text), fields(SEED), "a signature other than the seed's verified");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            if let Some(text) = decode_from_header(body) {
                assert!(text.len() as u64 <= signature::MAX_SIGNATURE_BYTES);
                judge(&text);
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(body) {
                judge(text);
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(body) else { return };
            if let Some(id) = parse_key_id(text) {
                assert_eq!(id.len(), 16);
                assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
            }
            if let Some(plugin) = plugin_of_signature(&Path::new("plugins").join(text)) {
                let name = plugin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                assert!(name.ends_with(".so") && !name.starts_with('.'), "{plugin:?}");
            }
        }
    }
});
