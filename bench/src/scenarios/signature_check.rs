//! The cost of checking a plugin's signature (issue 21): the check a load
//! makes on the private copy's bytes, for the gossip plugin, and its share
//! of that plugin's load → Active under `plugins.signature = require`.

use std::time::{Duration, Instant};

use clusterhost::plugins::loader::PrivateStore;
use clusterhost::plugins::signature::{self, SignatureMode, SignaturePolicy};
use clusterhost::properties::NodeValues;
use clusterhost::{ManagerConfig, PluginManager};
use clusterhost_tests::plugin;
use clusterhost_tests::signing::Signer;

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct SignatureCheck;

impl Scenario for SignatureCheck {
    fn name(&self) -> &'static str {
        "signature"
    }

    fn about(&self) -> &'static str {
        "The signature check a load makes (`signature::check`: the .minisig read beside the file, the trusted keys \
         read from conf/trusted-keys/, BLAKE2b over the whole copy in memory, two Ed25519 verifications) on the \
         gossip plugin, and `PluginManager::load(path)` → Active of the same signed file under \
         `plugins.signature = require` (a new manager each time: copy, manifest, signature, dlopen, create, start; \
         no cluster manager, so no join), and the same load under `off` alternated with it: the check runs on the \
         copy's bytes on a thread of its own while they are hashed and written, so what it adds to a load \
         (the copy with the check beside it, minus the copy alone, interleaved) is less than its own time."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let runs = ctx.pick(40, 4);
        let home = ctx.work.join("signature-home");
        let file = home.join("plugins/gossip.so");
        std::fs::create_dir_all(file.parent().expect("plugins/")).expect("plugins/ can be made");
        std::fs::copy(plugin("gossip"), &file).expect("the plugin can be published");
        let conf = home.join("conf");
        std::fs::write(conf_file(&conf, "cluster.key"), "7e".repeat(32)).expect("the key can be written");
        std::fs::write(conf.join("gossip.toml"), "[discovery.multicast]\nenabled = false\n").expect("gossip.toml");
        let signer = Signer::new();
        signer.trust(&home, "release");
        signer.sign(&file);
        let bytes = std::fs::read(&file).expect("the plugin reads");
        let sha256 = clusterhost::plugins::digest::sha256_hex(&bytes);
        let manifest = clusterhost_tests::manifest_of(&file);
        let label = format!("{} {}", manifest.id, manifest.version);
        let policy = SignaturePolicy { mode: SignatureMode::Require, revoked: Vec::new() };
        let keys = clusterhost::home::trusted_keys_dir(&home);
        let check = || {
            let subject = signature::Subject { file: "gossip.so", sha256: &sha256, plugin: &label };
            let started = Instant::now();
            signature::check(&policy, &file, &subject, &bytes, &keys).expect("the signature verifies");
            started.elapsed()
        };
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let load = |mode: SignatureMode| {
            let mut config = ManagerConfig::new(&home);
            config.private_dir = Some(ctx.work.to_owned());
            config.signature = SignaturePolicy { mode, revoked: Vec::new() };
            config.values = NodeValues::member("bench", clusterhost_tests::cluster::free_member_port());
            let manager = PluginManager::new(config).expect("a manager");
            let started = Instant::now();
            runtime.block_on(manager.load(&file)).expect("the signed gossip plugin loads");
            let loaded = started.elapsed();
            runtime.block_on(manager.stop_all());
            std::thread::sleep(Duration::from_millis(50));
            loaded
        };
        // The step the check runs beside: the copy into the private store,
        // without and with the check of its bytes (what a load waits for).
        let store = PrivateStore::new(Some(ctx.work)).expect("a private store");
        let begun = signature::begin(&policy, &file, &keys);
        let copy = |checked: bool| {
            let started = Instant::now();
            let path = if checked {
                let (copy, verdict) =
                    store.copy_in_checked(&file, |b| begun.run_bytes(b)).expect("the copy is written");
                assert_eq!(verdict, Some(Ok(())), "the signature verifies");
                copy.path
            } else {
                store.copy_in(&file).expect("the copy is written").path
            };
            let took = started.elapsed();
            let _ = std::fs::remove_file(path);
            took
        };
        let (mut checks, mut loads, mut offs, mut copies, mut checked_copies) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut added, mut shares, mut check_shares) = (Vec::new(), Vec::new(), Vec::new());
        check();
        for run in 0..runs {
            let checked = check();
            checks.push(checked);
            // Alternated, so whatever the first of a pair pays (the previous
            // copy's writeback, a cold cache) falls on each side as often.
            let (plain, with_check) = if run % 2 == 0 {
                let plain = copy(false);
                std::thread::sleep(Duration::from_millis(20));
                (plain, copy(true))
            } else {
                let with_check = copy(true);
                std::thread::sleep(Duration::from_millis(20));
                (copy(false), with_check)
            };
            copies.push(plain);
            checked_copies.push(with_check);
            let (off, required) = if run % 2 == 0 {
                let off = load(SignatureMode::Off);
                (off, load(SignatureMode::Require))
            } else {
                let required = load(SignatureMode::Require);
                (load(SignatureMode::Off), required)
            };
            offs.push(off);
            loads.push(required);
            let extra = (with_check.as_secs_f64() - plain.as_secs_f64()) * 1000.0;
            added.push(extra);
            shares.push(extra / 1000.0 / required.as_secs_f64().max(1e-9));
            check_shares.push(checked.as_secs_f64() / required.as_secs_f64().max(1e-9));
        }
        let note = format!("`gossip`, {} KiB, release key trusted", bytes.len() / 1024);
        report.add_durations("signature.check", "signature check (gossip), alone", Unit::Millis, &checks, &note);
        report.add_durations("signature.load", "load(path) → Active, signed, require", Unit::Millis, &loads, &note);
        report.add_durations("signature.load_off", "load(path) → Active, same file, off", Unit::Millis, &offs, &note);
        report.add_durations("signature.copy", "private copy, no check", Unit::Millis, &copies, &note);
        report.add_durations(
            "signature.copy_checked",
            "private copy with the check beside",
            Unit::Millis,
            &checked_copies,
            &note,
        );
        report.add("signature.added", "what the check adds to the copy", Unit::Millis, &added, &note);
        report.add("signature.share", "what the check adds / load → Active", Unit::Ratio, &shares, &note);
        report.add("signature.check_share", "check alone / load → Active", Unit::Ratio, &check_shares, &note);
    }
}

fn conf_file(conf: &std::path::Path, name: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(conf).expect("conf/ can be made");
    conf.join(name)
}
