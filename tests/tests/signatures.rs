//! Signed plugins (`plugins.signature`), against real libraries: a corpus of
//! bad signatures, each refused with its reason before any plugin code runs
//! (the fixture's constructor would leave a marker file, as in loader.rs);
//! a file swapped under the loader many times; `require` and `warn` loading
//! what they should; and the CLI's keygen, sign, verify and inspect.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clusterhost::plugins::signature::{
    signature_path, SignatureError, SignatureMode, SignaturePolicy, SignatureStatus,
};
use clusterhost::{LoadError, LoadOutcome, ManagerConfig, PluginManager, PluginState};
use clusterhost_plugin_api::Manifest;
use clusterhost_tests::signing::Signer;
use clusterhost_tests::upgrade::cli;
use clusterhost_tests::{plugin, restamp};
use semver::Version;
use tempfile::TempDir;

/// A home whose manager runs under `mode`, trusting `trusted`'s key.
struct Home {
    dir: TempDir,
    manager: PluginManager,
    trusted: Signer,
}

impl Home {
    fn new(mode: SignatureMode) -> Home {
        Self::with(mode, Vec::new())
    }

    fn with(mode: SignatureMode, revoked: Vec<String>) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let trusted = Signer::new();
        trusted.trust(dir.path(), "release");
        let mut config = ManagerConfig::new(dir.path());
        config.private_dir = Some(dir.path().to_owned());
        config.lifecycle_budget = Duration::from_secs(5);
        config.signature = SignaturePolicy { mode, revoked };
        Home { manager: PluginManager::new(config).unwrap(), dir, trusted }
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.marker"))
    }

    /// plugins/NAME.so: the fixture, with a marker of its own and `edit`.
    fn variant(&self, name: &str, edit: impl FnOnce(&mut Manifest)) -> PathBuf {
        let path = self.dir.path().join("plugins").join(format!("{name}.so"));
        let marker = self.marker(name);
        restamp(&plugin("fixture_plugin"), &path, |m| {
            m.metadata.insert("marker".into(), marker.display().to_string());
            edit(m);
        });
        path
    }

    /// Loads `path` expecting a signature refusal: Rejected with that reason,
    /// decided before dlopen, the marker never created, no copy left.
    async fn refused(&self, path: &Path, name: &str) -> SignatureError {
        let error = self.manager.load(path).await.expect_err("the plugin must be refused");
        let LoadError::Signature(signature) = &error else { panic!("not a signature refusal: {error}") };
        assert!(error.before_dlopen());
        let record = self.manager.record(path).unwrap();
        assert_eq!(record.state, PluginState::Rejected);
        assert_eq!(record.reason.as_deref(), Some(error.to_string().as_str()));
        assert!(!self.marker(name).exists(), "the refused plugin's constructor ran: {error}");
        let left: Vec<_> = std::fs::read_dir(self.manager.private_dir()).unwrap().flatten().collect();
        assert!(left.is_empty(), "private copies left: {left:?}");
        signature.clone()
    }
}

fn version(v: &str) -> impl FnOnce(&mut Manifest) + '_ {
    move |m| m.version = Version::parse(v).unwrap()
}

#[tokio::test]
async fn an_unsigned_plugin_is_refused_under_require_and_never_runs() {
    let home = Home::new(SignatureMode::Require);
    let path = home.variant("unsigned", |_| {});
    let error = home.refused(&path, "unsigned").await;
    assert!(matches!(error, SignatureError::Unsigned { .. }), "{error}");
    let text = error.to_string();
    assert!(text.contains("unsigned.so is unsigned") && text.contains("clusterhost plugins sign"), "{text}");
    let record = home.manager.record(&path).unwrap();
    assert_eq!(record.signature, Some(SignatureStatus::Unsigned));
}

#[tokio::test]
async fn a_plugin_signed_by_an_untrusted_key_is_refused_naming_the_key() {
    let home = Home::new(SignatureMode::Require);
    let path = home.variant("stranger", |_| {});
    let stranger = Signer::new();
    stranger.sign(&path);
    let error = home.refused(&path, "stranger").await;
    assert!(matches!(error, SignatureError::UnknownKey { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(&stranger.id) && text.contains("does not trust") && text.contains(&home.trusted.id),
        "{text}"
    );
}

#[tokio::test]
async fn a_plugin_signed_by_a_revoked_key_is_refused_although_the_key_is_still_trusted() {
    let signer = Signer::new();
    let home = Home::with(SignatureMode::Require, vec![signer.id.clone()]);
    signer.trust(home.dir.path(), "old");
    let path = home.variant("revoked", |_| {});
    signer.sign(&path);
    let error = home.refused(&path, "revoked").await;
    assert!(matches!(error, SignatureError::RevokedKey { .. }), "{error}");
    assert!(error.to_string().contains(&format!("key {}, which is revoked", signer.id)), "{error}");
}

#[tokio::test]
async fn a_valid_signature_of_another_file_is_refused() {
    let home = Home::new(SignatureMode::Require);
    let other = home.variant("other", version("9.9.9"));
    let path = home.variant("target", |_| {});
    std::fs::write(signature_path(&path), home.trusted.signature_of(&other)).unwrap();
    let error = home.refused(&path, "target").await;
    assert!(matches!(error, SignatureError::OtherFile { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("signature of another file (fixture 9.9.9") && text.contains("not of this fixture 0.1.0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_file_modified_after_signing_is_refused() {
    let home = Home::new(SignatureMode::Require);
    let path = home.variant("modified", |_| {});
    home.trusted.sign(&path);
    // The same plugin and version, other bytes (a metadata entry more).
    let marker = home.marker("modified");
    restamp(&plugin("fixture_plugin"), &path, |m| {
        m.metadata.insert("marker".into(), marker.display().to_string());
        m.metadata.insert("patched".into(), "yes".into());
    });
    let error = home.refused(&path, "modified").await;
    assert!(matches!(error, SignatureError::ModifiedAfterSigning { .. }), "{error}");
    assert!(error.to_string().contains("was modified after it was signed"), "{error}");
}

#[tokio::test]
async fn a_garbage_or_oversized_signature_file_is_refused() {
    let home = Home::new(SignatureMode::Require);
    let path = home.variant("garbage", |_| {});
    std::fs::write(signature_path(&path), "untrusted comment: hi\nnot base64 at all\n").unwrap();
    let error = home.refused(&path, "garbage").await;
    assert!(matches!(error, SignatureError::Garbage { .. }), "{error}");
    assert!(error.to_string().contains("is not a minisign signature"), "{error}");
    std::fs::write(signature_path(&path), vec![b'A'; 1 << 20]).unwrap();
    let error = home.refused(&path, "garbage").await;
    assert!(matches!(error, SignatureError::TooLarge { size: 1048576, .. }), "{error}");
}

#[tokio::test]
async fn a_properly_signed_plugin_loads_under_require_and_its_record_names_the_signer() {
    let home = Home::new(SignatureMode::Require);
    let path = home.variant("signed", |_| {});
    home.trusted.sign(&path);
    let outcome = home.manager.load(&path).await.unwrap();
    assert_eq!(outcome, LoadOutcome::Activated { id: "fixture".into(), version: Version::new(0, 1, 0) });
    assert!(home.marker("signed").exists());
    let record = home.manager.record(&path).unwrap();
    match record.signature {
        Some(SignatureStatus::Verified { key_id, key_file, trusted_comment }) => {
            assert_eq!((key_id.as_str(), key_file.as_str()), (home.trusted.id.as_str(), "release.pub"));
            assert!(trusted_comment.contains("plugin:fixture 0.1.0"), "{trusted_comment}");
        }
        other => panic!("not verified: {other:?}"),
    }
}

#[tokio::test]
async fn warn_loads_an_unsigned_plugin_and_records_it_unsigned() {
    let home = Home::new(SignatureMode::Warn);
    let path = home.variant("unsigned", |_| {});
    home.manager.load(&path).await.unwrap();
    let record = home.manager.record(&path).unwrap();
    assert_eq!((record.state, record.signature), (PluginState::Active, Some(SignatureStatus::Unsigned)));
    // A bad signature under warn loads too, and says what require would refuse.
    let stranger = Signer::new();
    let other = home.variant("other", |m| m.id = "other".into());
    stranger.sign(&other);
    home.manager.load(&other).await.unwrap();
    match home.manager.record(&other).unwrap().signature {
        Some(SignatureStatus::Untrusted { key_id, problem }) => {
            assert_eq!(key_id.as_deref(), Some(stranger.id.as_str()));
            assert!(problem.contains("does not trust"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_live_policy_change_applies_to_the_next_load_and_require_without_keys_is_announced() {
    let home = Home::new(SignatureMode::Off);
    let first = home.variant("first", |_| {});
    home.manager.load(&first).await.unwrap();
    assert_eq!(home.manager.record(&first).unwrap().signature, Some(SignatureStatus::NotChecked));
    home.manager.apply_signature(SignaturePolicy { mode: SignatureMode::Require, revoked: Vec::new() });
    assert_eq!(home.manager.signature_warning(), None, "a key is trusted");
    let second = home.variant("second", |m| m.id = "second".into());
    let error = home.refused(&second, "second").await;
    assert!(matches!(error, SignatureError::Unsigned { .. }), "{error}");
    // Rotation is a file copy: the old key removed, none left.
    std::fs::remove_file(clusterhost::home::trusted_keys_dir(home.dir.path()).join("release.pub")).unwrap();
    let warning = home.manager.signature_warning().expect("require without a trusted key is announced");
    assert!(warning.contains("holds no trusted public key"), "{warning}");
    home.trusted.sign(&second);
    let error = home.refused(&second, "second").await;
    assert!(matches!(error, SignatureError::NoTrustedKeys { .. }), "{error}");
    // A new key copied in is read by the next load.
    let next = Signer::new();
    next.trust(home.dir.path(), "next");
    next.sign(&second);
    home.manager.load(&second).await.unwrap();
    assert!(home.marker("second").exists());
}

/// The published file is swapped, again and again, between a signed build
/// and another build (whose constructor leaves a marker) while the node
/// loads it: whatever the loader read, the signature is checked on exactly
/// the bytes it maps, so the other build never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_file_swapped_between_its_check_and_its_load_never_runs() {
    const LOADS: u64 = 40;
    let home = Home::new(SignatureMode::Require);
    let plugins = home.dir.path().join("plugins");
    let good = home.variant("good", |_| {});
    home.trusted.sign(&good);
    let evil = home.variant("evil", |m| m.version = Version::new(0, 2, 0));
    let target = plugins.join("swapped.so");
    std::fs::copy(signature_path(&good), signature_path(&target)).unwrap();
    std::fs::copy(&good, &target).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, good, evil, target) = (stop.clone(), good.clone(), evil.clone(), target.clone());
        std::thread::spawn(move || {
            let tmp = target.with_file_name(".swapped.so.tmp");
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let source = if swaps.is_multiple_of(2) { &evil } else { &good };
                // A link renamed into place: each swap is atomic and cheap.
                let _ = std::fs::remove_file(&tmp);
                std::fs::hard_link(source, &tmp).unwrap();
                std::fs::rename(&tmp, &target).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let (mut loaded, mut refused) = (0, 0);
    for _ in 0..LOADS {
        match home.manager.load(&target).await {
            Ok(_) => {
                loaded += 1;
                // Unloaded again, so the next accepted load maps the file
                // anew (a second load of the same bytes would be a no-op).
                home.manager.unload(&target, "the next round").await;
            }
            Err(LoadError::Signature(e)) => {
                assert!(matches!(e, SignatureError::OtherFile { .. }), "{e}");
                refused += 1;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
        assert!(!home.marker("evil").exists(), "the swapped-in build ran");
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    println!("{LOADS} loads during {swaps} swaps: {loaded} loaded the signed build, {refused} refused the other");
    assert!(swaps > LOADS, "the file was swapped while it was loaded ({swaps} swaps)");
    assert!(!home.marker("evil").exists());
    let active = home.manager.active().await;
    assert!(active.iter().all(|(_, v)| *v == Version::new(0, 1, 0)), "{active:?}");
}

#[test]
fn keygen_sign_verify_and_inspect_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release");
    let made = cli(&["plugins", "keygen", "--unencrypted", "--out", key.to_str().unwrap()]);
    assert!(made.success, "{}", made.stderr);
    let id = made.stdout.lines().find_map(|l| l.strip_prefix("key id:")).unwrap().trim().to_string();
    let secret = dir.path().join("release.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    let file = dir.path().join("hello.so");
    std::fs::copy(plugin("hello"), &file).unwrap();
    let (file_s, secret_s) = (file.to_str().unwrap(), secret.to_str().unwrap());
    let signed = cli(&["plugins", "sign", file_s, "--key", secret_s]);
    assert!(signed.success, "{}", signed.stderr);
    let public = dir.path().join("release.pub");
    let verified = cli(&["plugins", "verify", file_s, "--key", public.to_str().unwrap()]);
    assert!(verified.success, "{}", verified.stderr);
    assert!(verified.stdout.contains(&format!("signer key id:   {id}")), "{}", verified.stdout);
    assert!(verified.stdout.contains("trusted comment: timestamp:") && verified.stdout.contains("plugin:hello"));
    assert!(verified.stdout.contains("verdict:         trusted"), "{}", verified.stdout);
    // Against a home that does not trust the key: refused, naming it.
    let home = dir.path().join("home");
    Signer::new().trust(&home, "other");
    let untrusted = cli(&["plugins", "verify", file_s, "--home", home.to_str().unwrap()]);
    assert!(!untrusted.success);
    assert!(untrusted.stderr.contains(&id) && untrusted.stderr.contains("does not trust"), "{}", untrusted.stderr);
    // A home whose properties cannot be read: an error, not "nothing revoked".
    let properties = clusterhost::home::properties_file(&home);
    std::fs::create_dir_all(&properties).unwrap();
    let unreadable = cli(&["plugins", "verify", file_s, "--home", home.to_str().unwrap()]);
    assert!(!unreadable.success);
    assert!(unreadable.stderr.contains("plugins.signature.revoked cannot be honoured"), "{}", unreadable.stderr);
    std::fs::remove_dir(&properties).unwrap();
    let inspected = cli(&["plugins", "inspect", file_s, "--key", public.to_str().unwrap()]);
    assert!(
        inspected.stdout.contains(&format!("signature:     signed by {id} (trusted: release.pub)")),
        "{}",
        inspected.stdout
    );
    std::fs::remove_file(signature_path(&file)).unwrap();
    let inspected = cli(&["plugins", "inspect", file_s]);
    assert!(inspected.stdout.contains("signature:     unsigned"), "{}", inspected.stdout);
}

/// A real node under `require`: it says at start that no key is trusted;
/// `plugins install` sends FILE.minisig with the file and `plugins list`
/// names the signer; an upload of new content without a signature is
/// refused as unsigned (the old signature is not left beside it); a
/// signature header that is not one is refused before anything is written;
/// DELETE removes the signature with the file; a signature dropped in after
/// its refused plugin makes the node load the plugin again.
#[test]
fn the_upload_api_and_plugins_install_carry_the_signature() {
    use clusterhost_tests::admin::{call, call_with_headers, DEADLINE, TOKEN};
    use clusterhost_tests::NodeProcess;
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("clusterhost.properties"), "plugins.signature = require\n").unwrap();
    std::fs::write(conf.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let node = NodeProcess::start_with(home.path(), &["--node-name", "s1"], &[]);
    node.wait_for_admin(DEADLINE);
    node.wait_for_log(&["plugins.signature = require", "holds no trusted public key"], DEADLINE);
    let signer = Signer::new();
    signer.trust(home.path(), "release");

    let builds = tempfile::tempdir().unwrap();
    let hello = builds.path().join("hello.so");
    std::fs::copy(plugin("hello"), &hello).unwrap();
    signer.sign(&hello);
    let token = conf.join("admin.token");
    let (url, token_s) = (node.admin_url(), token.to_str().unwrap().to_string());
    let installed = cli(&["plugins", "install", hello.to_str().unwrap(), "--admin", &url, "--token-file", &token_s]);
    assert!(installed.success, "{}", installed.stderr);
    assert!(
        installed.stdout.contains("hello.so: installed") && installed.stdout.contains(&signer.id),
        "{}",
        installed.stdout
    );
    let published = home.path().join("plugins/hello.so");
    assert_eq!(
        std::fs::read_to_string(signature_path(&published)).unwrap(),
        std::fs::read_to_string(signature_path(&hello)).unwrap()
    );
    let listed = cli(&["plugins", "list", "--admin", &url]);
    assert!(listed.stdout.contains("SIGNER") && listed.stdout.contains(&signer.id), "{}", listed.stdout);

    // New content without a signature: refused as unsigned; the running
    // version stays; the old signature was not left beside the new file.
    let v2 = builds.path().join("hello-2.so");
    restamp(&plugin("hello"), &v2, |m| m.version = Version::new(0, 2, 0));
    let upload = format!("{url}/api/plugins?name=hello.so");
    let (status, body) = call("POST", &upload, Some(TOKEN), Some(&std::fs::read(&v2).unwrap()));
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("hello.so is unsigned"), "{body}");
    assert!(!signature_path(&published).exists());
    // With its signature in the header: a hot upgrade.
    let signature = header_signature(&signer, &v2);
    let auth = ("authorization", format!("Bearer {TOKEN}"));
    let headers = [auth.clone(), ("x-clusterhost-signature", signature)];
    let (status, text) = call_with_headers("POST", &upload, &headers, Some(&std::fs::read(&v2).unwrap()));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"replaced\"") && text.contains(&signer.id), "{text}");
    // A header that is not a signature: 400, nothing written.
    let headers = [auth.clone(), ("x-clusterhost-signature", "bm90IGEgc2lnbmF0dXJl".to_string())];
    let (status, text) = call_with_headers("POST", &upload, &headers, Some(&std::fs::read(&hello).unwrap()));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("is not a minisign signature"), "{text}");
    assert!(std::fs::read_to_string(signature_path(&published)).unwrap().contains("plugin:hello 0.2.0"));
    // The same content again, with a signature `require` refuses (an
    // untrusted key's): 422, and the good signature beside it is kept.
    let v2_bytes = std::fs::read(&v2).unwrap();
    let kept = std::fs::read_to_string(signature_path(&published)).unwrap();
    let stranger = Signer::new();
    let foreign = header_signature(&stranger, &v2);
    let headers = [auth.clone(), ("x-clusterhost-signature", foreign)];
    let (status, text) = call_with_headers("POST", &upload, &headers, Some(&v2_bytes));
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("was refused and not written") && text.contains(&stranger.id), "{text}");
    assert_eq!(std::fs::read_to_string(signature_path(&published)).unwrap(), kept);
    // The same content with a signature by another trusted key (a key
    // rotation): written, and the running plugin's record names the new signer.
    let rotated = Signer::new();
    rotated.trust(home.path(), "next");
    let next_text = rotated.signature_of(&v2);
    let by_next = clusterhost::plugins::signature::encode_for_header(&next_text);
    let headers = [auth.clone(), ("x-clusterhost-signature", by_next)];
    let (status, text) = call_with_headers("POST", &upload, &headers, Some(&v2_bytes));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"unchanged\"") && text.contains(&rotated.id), "{text}");
    assert_eq!(std::fs::read_to_string(signature_path(&published)).unwrap(), next_text);
    // An upload that cannot be published (a directory holds its name): the
    // signature that was beside that name is put back as it was.
    let blocked = home.path().join("plugins/blocked.so");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(signature_path(&blocked), "the old signature\n").unwrap();
    let headers = [auth.clone(), ("x-clusterhost-signature", header_signature(&rotated, &v2))];
    let blocked_upload = format!("{url}/api/plugins?name=blocked.so");
    let (status, text) = call_with_headers("POST", &blocked_upload, &headers, Some(&v2_bytes));
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("could not rename the upload of blocked.so"), "{text}");
    assert_eq!(std::fs::read_to_string(signature_path(&blocked)).unwrap(), "the old signature\n");
    std::fs::remove_dir(&blocked).unwrap();
    std::fs::remove_file(signature_path(&blocked)).unwrap();
    // DELETE takes the signature with the file.
    let (status, body) = call("DELETE", &format!("{url}/api/plugins/hello.so"), Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    assert!(!signature_path(&published).exists() && !published.exists());

    // Dropped in by hand in the wrong order: the plugin first (refused,
    // unsigned), then its signature, which makes the node load it again.
    let late = home.path().join("plugins/late.so");
    restamp(&plugin("hello"), &late, |m| m.id = "late".into());
    let record_of = |file: &str| {
        let (_, body) = call("GET", &format!("{url}/api/plugins"), None, None);
        body.as_array().unwrap().iter().find(|r| r["file"].as_str().is_some_and(|f| f.ends_with(file))).cloned()
    };
    clusterhost_tests::wait_until("late.so to be refused as unsigned", DEADLINE, || {
        record_of("late.so").is_some_and(|r| r["state"] == "rejected" && r["signature"]["status"] == "unsigned")
    });
    let pending = home.path().join("plugins/.late.so.minisig.tmp");
    std::fs::write(&pending, signer.signature_of(&late)).unwrap();
    std::fs::rename(&pending, signature_path(&late)).unwrap();
    clusterhost_tests::wait_until("late.so to load once its signature is published", DEADLINE, || {
        record_of("late.so").is_some_and(|r| r["state"] == "active" && r["signature"]["key_id"] == signer.id.as_str())
    });
    // Its signature replaced by hand (re-signed by the rotated key) while it
    // runs: the record names the new signer, without a reload; removed: the
    // record says unsigned, and the plugin keeps running.
    let loaded_at = record_of("late.so").unwrap()["changed_at_ms"].clone();
    std::fs::write(&pending, rotated.signature_of(&late)).unwrap();
    std::fs::rename(&pending, signature_path(&late)).unwrap();
    clusterhost_tests::wait_until("late.so's record to name the new signer", DEADLINE, || {
        record_of("late.so").is_some_and(|r| r["state"] == "active" && r["signature"]["key_id"] == rotated.id.as_str())
    });
    std::fs::remove_file(signature_path(&late)).unwrap();
    clusterhost_tests::wait_until("late.so's record to say unsigned", DEADLINE, || {
        record_of("late.so").is_some_and(|r| r["state"] == "active" && r["signature"]["status"] == "unsigned")
    });
    assert_eq!(record_of("late.so").unwrap()["changed_at_ms"], loaded_at, "the plugin was not loaded again");

    // The token that uploads plugins cannot loosen the policy: lowering
    // plugins.signature or taking a key id off the revocation list through
    // the API is refused (403); tightening is allowed.
    let properties = format!("{url}/api/properties");
    let patch = |body: &str| call("PATCH", &properties, Some(TOKEN), Some(body.as_bytes()));
    let (status, body) = patch(r#"{"plugins.signature": "off"}"#);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("can only tighten plugin trust"), "{body}");
    let (status, body) = call("PUT", &properties, Some(TOKEN), Some(b"plugins.signature = warn\n"));
    assert_eq!(status, 403, "{body}");
    let (status, body) = patch(r#"{"plugins.signature.revoked": "00000000000000AA"}"#);
    assert_eq!(status, 200, "adding a revoked key id tightens: {body}");
    let (status, body) = patch(r#"{"plugins.signature.revoked": null}"#);
    assert_eq!(status, 403, "{body}");
    assert!(std::fs::read_to_string(conf.join("clusterhost.properties"))
        .unwrap()
        .contains("plugins.signature = require"));

    // A FIFO where a signature should be: refused at once, and the node
    // goes on loading (it neither blocks on it nor stops).
    let fifo_plugin = home.path().join("plugins/fifo.so");
    let fifo = signature_path(&fifo_plugin);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    restamp(&plugin("hello"), &fifo_plugin, |m| m.id = "fifo".into());
    clusterhost_tests::wait_until("fifo.so to be refused", DEADLINE, || {
        record_of("fifo.so").is_some_and(|r| r["state"] == "rejected")
    });
    let refused = record_of("fifo.so").unwrap();
    assert!(refused.to_string().contains("not a regular file"), "{refused}");
    let (status, body) = call("GET", &format!("{url}/api/plugins"), None, None);
    assert_eq!(status, 200, "the node still answers: {body}");
}

/// `signer`'s signature of `file`, as the upload header carries it.
fn header_signature(signer: &Signer, file: &Path) -> String {
    clusterhost::plugins::signature::encode_for_header(&signer.signature_of(file))
}
