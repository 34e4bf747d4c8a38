//! `clusterhost cluster upgrade`: drives an upgrade of the cluster-strategy
//! plugin across the members through their admin APIs (see docs/upgrade.md).
//!
//! - **rolling**: one member at a time, a hot replace (upload under the
//!   running file's name), then a health gate: the member is back in the
//!   cluster, every member sees the cluster size from before, and the member
//!   reports the new version. The senior member goes last.
//! - **split-brain**: clustering disabled cluster-wide, the plugin
//!   hot-replaced on every member while each runs standalone, clustering
//!   enabled again, then the gate on every member.
//! - **offline**: needs the nodes stopped and started, which a client of
//!   the admin API cannot do across machines: the command prints the runbook.
//!
//! A member that fails its gate (or refuses the file) triggers a rollback:
//! every member changed by this run gets the previous file back (given with
//! `--previous`; the admin API does not serve plugin files), each with its
//! own gate. `--dry-run` prints the plan and changes nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clusterhost_plugin_api::Manifest;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::admin::client::{segment, AdminClient, ClientError};
use crate::admin::contract::{Refusal, UploadOutcome, Uploaded};
use crate::plugins::manifest;
use crate::plugins::outcome::RefusalCause;

/// How the plugin is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Rolling,
    SplitBrain,
    Offline,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Rolling => "rolling",
            Mode::SplitBrain => "split-brain",
            Mode::Offline => "offline",
        }
    }
}

/// What to upgrade, where, how.
#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    /// The new plugin file.
    pub plugin: PathBuf,
    /// The file the members run now, re-uploaded on rollback.
    pub previous: Option<PathBuf>,
    pub mode: Mode,
    /// Every member's admin API URL.
    pub nodes: Vec<String>,
    /// The admin token (the same on every member).
    pub token: Option<String>,
    pub dry_run: bool,
    /// The longest a member may take to pass a gate.
    pub gate_timeout: Duration,
}

/// Why the upgrade stopped; the message says what happened, to what, and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct UpgradeError(pub String);

fn err(message: impl Into<String>) -> UpgradeError {
    UpgradeError(message.into())
}

/// A plugin file read for upload.
struct PluginFile {
    path: PathBuf,
    manifest: Manifest,
    bytes: Vec<u8>,
    sha256: String,
}

impl PluginFile {
    fn read(path: &std::path::Path, what: &str) -> Result<PluginFile, UpgradeError> {
        let manifest = manifest::read_manifest(path).map_err(|e| err(format!("{what} {}: {e}", path.display())))?;
        let bytes = std::fs::read(path).map_err(|e| err(format!("could not read {what} {}: {e}", path.display())))?;
        let sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        Ok(PluginFile { path: path.to_owned(), manifest, bytes, sha256 })
    }

    fn label(&self) -> String {
        format!("{} {}", self.manifest.id, self.manifest.version)
    }
}

/// One member as found before the upgrade.
struct Member {
    url: String,
    client: AdminClient,
    /// Its member id.
    name: String,
    senior: bool,
    /// The plugins/ file name of its active strategy plugin.
    file: String,
    /// The version and file hash it runs.
    version: String,
    sha256: String,
}

impl Member {
    fn label(&self) -> String {
        format!("{} ({})", self.name, self.url)
    }
}

/// Runs the upgrade; `out` gets one progress line per member and step.
pub fn run(options: &UpgradeOptions, out: &mut dyn FnMut(&str)) -> Result<(), UpgradeError> {
    let started = Instant::now();
    let new = PluginFile::read(&options.plugin, "the new plugin file")?;
    let mode = options.mode.name();
    if options.nodes.is_empty() {
        return Err(err("no members: pass every member's admin API URL with --nodes URL,URL,..."));
    }
    if options.mode == Mode::Offline {
        offline_runbook(options, &new, out);
        return Ok(());
    }
    let previous = match &options.previous {
        Some(path) => {
            let previous = PluginFile::read(path, "the previous plugin file (--previous)")?;
            if previous.manifest.id != new.manifest.id {
                return Err(err(format!(
                    "--previous {} is plugin {}, but {} is plugin {}; pass the file of the same plugin the members run now",
                    path.display(),
                    previous.label(),
                    new.path.display(),
                    new.label()
                )));
            }
            Some(previous)
        }
        None => None,
    };
    let (mut members, size) = survey(options, &new)?;
    // Members already on the new file (an earlier run that stopped half-way).
    let (done, mut todo): (Vec<Member>, Vec<Member>) =
        members.drain(..).partition(|m| m.sha256 == new.sha256 && m.version == new.manifest.version.to_string());
    if let Some(previous) = &previous {
        if let Some(m) = todo.iter().find(|m| m.sha256 != previous.sha256) {
            return Err(err(format!(
                "member {} runs {} {} from a file whose sha256 ({}) differs from --previous {} ({}); a rollback would not restore what it runs: pass the file the members run now",
                m.label(),
                new.manifest.id,
                m.version,
                short(&m.sha256),
                previous.path.display(),
                short(&previous.sha256)
            )));
        }
    }
    // The senior goes last: the cluster keeps its senior as long as possible.
    todo.sort_by_key(|m| m.senior);
    let from: Vec<String> =
        todo.iter().map(|m| m.version.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    out(&format!(
        "[{mode}] upgrade {} -> {} ({}, wire protocol {}) on {size} members{}",
        if from.is_empty() { "-".to_string() } else { from.join(", ") },
        new.label(),
        new.path.display(),
        new.manifest.wire_protocol,
        if options.dry_run { " -- dry run: nothing is changed" } else { "" }
    ));
    for m in &done {
        out(&format!("[{mode}] {}: already runs {}; skipped", m.label(), new.label()));
    }
    print_plan(options, &new, previous.as_ref(), &todo, size, out);
    if options.dry_run {
        out(&format!("[{mode}] dry run: no member was changed"));
        return Ok(());
    }
    let Some(previous) = previous else {
        return Err(err(
            "a rollback needs the plugin file the members run now, and the admin API does not serve plugin files back: pass it with --previous FILE (or use --dry-run to see the plan)",
        ));
    };
    if todo.is_empty() {
        out(&format!("[{mode}] every member already runs {}; nothing to do", new.label()));
        return Ok(());
    }
    let all: Vec<&Member> = done.iter().chain(todo.iter()).collect();
    let result = match options.mode {
        Mode::Rolling => rolling(options, &new, &previous, &todo, &all, size, out),
        Mode::SplitBrain => split_brain(options, &new, &previous, &todo, &all, size, out),
        Mode::Offline => unreachable!("handled above"),
    };
    match &result {
        Ok(()) => out(&format!(
            "[{mode}] done: {size} members run {} ({:.1} s)",
            new.label(),
            started.elapsed().as_secs_f64()
        )),
        Err(e) => out(&format!("[{mode}] failed after {:.1} s: {e}", started.elapsed().as_secs_f64())),
    }
    result
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Asks every member for its state and its strategy plugin; returns them and
/// the cluster size every member must agree on.
fn survey(options: &UpgradeOptions, new: &PluginFile) -> Result<(Vec<Member>, usize), UpgradeError> {
    let mut members = Vec::new();
    let mut size = None;
    for url in &options.nodes {
        let client = AdminClient::new(url, options.token.clone());
        let cluster = client
            .get("/api/cluster")
            .map_err(|e| {
                err(format!("member at {url} could not be asked (every member must be up before an upgrade): {e}"))
            })?
            .body;
        let name = cluster["node"].as_str().unwrap_or("?").to_string();
        let state = cluster["state"]["state"].as_str().unwrap_or("unknown").to_string();
        if state != "clustered" {
            return Err(err(format!(
                "member {name} ({url}) is {state}, not clustered; an upgrade starts from a healthy cluster: `clusterhost cluster status --admin {url}` says why"
            )));
        }
        let count = cluster["members"].as_array().map(Vec::len).unwrap_or(0);
        match size {
            None => size = Some(count),
            Some(n) if n != count => {
                return Err(err(format!(
                    "member {name} ({url}) sees {count} members, {} sees {n}; wait until the cluster has settled",
                    options.nodes[0]
                )))
            }
            _ => {}
        }
        let plugins = client.get("/api/plugins").map_err(|e| err(format!("member {name} ({url}): {e}")))?.body;
        let record = plugins
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"].as_str() == Some(new.manifest.id.as_str()) && r["state"].as_str() == Some("active"));
        let Some(record) = record else {
            return Err(err(format!(
                "member {name} ({url}) has no active {} plugin; an upgrade replaces a running plugin: install it with `clusterhost plugins install`",
                new.manifest.id
            )));
        };
        let file = record["file"].as_str().unwrap_or_default();
        let file = std::path::Path::new(file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        members.push(Member {
            senior: cluster["senior"].as_str() == Some(name.as_str()),
            url: url.clone(),
            client,
            name,
            file,
            version: record["version"].as_str().unwrap_or("?").to_string(),
            sha256: record["sha256"].as_str().unwrap_or_default().to_string(),
        });
    }
    let size = size.unwrap_or(0);
    if size != options.nodes.len() {
        return Err(err(format!(
            "the cluster has {size} members but --nodes lists {} admin URLs; list every member's admin URL so none is left on the old version",
            options.nodes.len()
        )));
    }
    Ok((members, size))
}

fn print_plan(
    options: &UpgradeOptions,
    new: &PluginFile,
    previous: Option<&PluginFile>,
    todo: &[Member],
    size: usize,
    out: &mut dyn FnMut(&str),
) {
    let mode = options.mode.name();
    let gate = format!(
        "gate: clustered, {size} members seen by every member, {} reports {} (at most {} s)",
        "the member",
        new.label(),
        options.gate_timeout.as_secs()
    );
    let mut step = 0;
    let mut plan = |line: String| {
        step += 1;
        out(&format!("[{mode}] plan {step}: {line}"));
    };
    match options.mode {
        Mode::Rolling => {
            for m in todo {
                plan(format!(
                    "{}: upload {} as plugins/{} (hot replace of {}); {gate}",
                    m.label(),
                    new.path.display(),
                    m.file,
                    m.version
                ));
            }
        }
        Mode::SplitBrain => {
            if let Some(first) = todo.first() {
                plan(format!("{}: disable clustering cluster-wide; gate: every member standalone", first.label()));
            }
            for m in todo {
                plan(format!(
                    "{}: upload {} as plugins/{} (hot replace of {}, standalone); gate: it reports {}",
                    m.label(),
                    new.path.display(),
                    m.file,
                    m.version,
                    new.label()
                ));
            }
            if let Some(first) = todo.first() {
                plan(format!(
                    "{}: enable clustering cluster-wide (each member that stays disabled is told too); gate: every member clustered, {size} members, all on {}",
                    first.label(),
                    new.label()
                ));
            }
        }
        Mode::Offline => {}
    }
    match previous {
        Some(p) => plan(format!(
            "on a failed gate: upload {} ({}) back on every member changed, each gated again",
            p.path.display(),
            p.label()
        )),
        None => plan("on a failed gate: rollback needs --previous FILE (not given)".to_string()),
    }
}

fn offline_runbook(options: &UpgradeOptions, new: &PluginFile, out: &mut dyn FnMut(&str)) {
    let file = new.path.display();
    out("[offline] the offline flow stops and starts the nodes, which this command cannot do across machines: nothing is changed; run these steps (docs/upgrade.md, \"Offline\"):");
    out("[offline] 1. on every member: stop the node (SIGTERM or Ctrl-C; e.g. systemctl stop clusterhost)");
    out(&format!(
        "[offline] 2. on every member: cp {file} HOME/plugins/.{id}.so.tmp && mv HOME/plugins/.{id}.so.tmp HOME/plugins/{id}.so   ({})",
        new.label(),
        id = new.manifest.id
    ));
    out("[offline] 3. on every member: start the node (clusterhost run --home HOME ...)");
    let nodes: Vec<&str> = options.nodes.iter().map(String::as_str).collect();
    out(&format!(
        "[offline] 4. check: clusterhost cluster status --admin {} lists {} members, each on {} {}",
        nodes.first().copied().unwrap_or("URL"),
        nodes.len(),
        new.manifest.id,
        new.manifest.version
    ));
}

fn api_error(e: ClientError) -> String {
    match e {
        ClientError::Api { message, status, .. } => format!("{message} (HTTP {status})"),
        other => other.to_string(),
    }
}

/// Uploads `file` to `member` as its strategy file; Ok once the node reports it active.
///
/// A replacement whose start failed leaves the member on its running
/// version (the host restarts it); that upload is retried once after a
/// second, since the usual cause is a resource the stopped version had not
/// released yet (e.g. its member port). Admission refusals are not retried.
fn upload(member: &Member, file: &PluginFile, out: &mut dyn FnMut(&str)) -> Result<UploadOutcome, String> {
    match upload_once(member, file) {
        Err((why, Some(Refusal { cause: RefusalCause::FailedInStart, kept_running: true }))) => {
            out(&format!("[retry] {}: the new version failed to start and the running one was kept ({why}); uploading again in 1 s", member.label()));
            std::thread::sleep(Duration::from_secs(1));
            upload_once(member, file).map_err(|(why, _)| why)
        }
        other => other.map_err(|(why, _)| why),
    }
}

/// One upload: its outcome, or why not (with the node's refusal, if it refused).
fn upload_once(member: &Member, file: &PluginFile) -> Result<UploadOutcome, (String, Option<Refusal>)> {
    let path = format!("/api/plugins?name={}", segment(&member.file));
    let answer = member.client.post(&path, &file.bytes).map_err(|e| {
        let refusal = e.refusal();
        (api_error(e), refusal)
    })?;
    let uploaded: Uploaded = answer.view().map_err(|e| (e.to_string(), None))?;
    match uploaded.outcome {
        outcome @ (UploadOutcome::Replaced | UploadOutcome::Installed | UploadOutcome::Unchanged) => Ok(outcome),
        _ => Err((
            format!(
                "the node has not reported on the file in time: {}",
                uploaded.note.as_deref().unwrap_or("no outcome")
            ),
            None,
        )),
    }
}

/// What one member reports: (state, enabled, members seen, its strategy version).
type Seen = (String, bool, usize, Option<String>);

fn observe(member: &Member) -> Result<Seen, String> {
    let body = member.client.get("/api/cluster").map_err(api_error)?.body;
    let state = body["state"]["state"].as_str().unwrap_or("unknown").to_string();
    let enabled = body["enabled"].as_bool() == Some(true);
    let seen = if state == "clustered" { body["members"].as_array().map(Vec::len).unwrap_or(0) } else { 0 };
    let version = body["strategy"].as_str().and_then(|s| s.split(' ').nth(1)).map(str::to_string);
    Ok((state, enabled, seen, version))
}

/// Waits until `check` holds for every member of `members`; Err with the
/// last thing seen when the gate times out.
fn gate(
    timeout: Duration,
    members: &[&Member],
    mut on_slow: impl FnMut(&Member, &Seen),
    check: impl Fn(&Member, &Seen) -> Result<(), String>,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let mut failing = None;
        for m in members {
            let seen = observe(m);
            let verdict = seen.as_ref().map_err(|e| e.clone()).and_then(|s| check(m, s));
            if let Err(why) = verdict {
                if let Ok(s) = &seen {
                    on_slow(m, s);
                }
                failing = Some(format!("{}: {why}", m.label()));
                break;
            }
        }
        match failing {
            None => return Ok(started.elapsed()),
            Some(why) if started.elapsed() >= timeout => {
                return Err(format!("gate not passed within {} s: {why}", timeout.as_secs()))
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The gate of a member in the cluster: clustered, `size` members, `version`.
fn clustered_check(size: usize, version: String) -> impl Fn(&Member, &Seen) -> Result<(), String> {
    move |_, (state, _, seen, running)| {
        if state != "clustered" {
            return Err(format!("it is {state}"));
        }
        if *seen != size {
            return Err(format!("it sees {seen} members, expected {size}"));
        }
        if running.as_deref() != Some(version.as_str()) {
            return Err(format!("it runs {}, expected {version}", running.as_deref().unwrap_or("no strategy")));
        }
        Ok(())
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn rolling(
    options: &UpgradeOptions,
    new: &PluginFile,
    previous: &PluginFile,
    todo: &[Member],
    all: &[&Member],
    size: usize,
    out: &mut dyn FnMut(&str),
) -> Result<(), UpgradeError> {
    let total = todo.len();
    let mut changed: Vec<&Member> = Vec::new();
    for (i, m) in todo.iter().enumerate() {
        let step = format!("[rolling] {}/{total} {}", i + 1, m.label());
        let t = Instant::now();
        out(&format!("{step}: upload {} as plugins/{} ...", new.label(), m.file));
        if let Err(why) = upload(m, new, out) {
            out(&format!("{step}: refused: {why}"));
            // A refused replacement leaves the member on its running version.
            return Err(rollback(
                options,
                previous,
                &changed,
                size,
                out,
                &format!("member {} refused {}: {why}", m.label(), new.label()),
            ));
        }
        changed.push(m);
        out(&format!(
            "{step}: replaced ({}); gate: back in the cluster, {size} members, on {} ...",
            secs(t.elapsed()),
            new.manifest.version
        ));
        match gate(options.gate_timeout, &[m], |_, _| {}, clustered_check(size, new.manifest.version.to_string()))
            .and_then(|_| {
                gate(
                    options.gate_timeout,
                    all,
                    |_, _| {},
                    |_, (state, _, seen, _)| {
                        if state == "clustered" && *seen == size {
                            Ok(())
                        } else {
                            Err(format!("it is {state} and sees {seen} members, expected {size}"))
                        }
                    },
                )
            }) {
            Ok(_) => out(&format!("{step}: gate passed ({} for the member)", secs(t.elapsed()))),
            Err(why) => {
                out(&format!("{step}: {why}"));
                return Err(rollback(
                    options,
                    previous,
                    &changed,
                    size,
                    out,
                    &format!("member {} failed its gate after the upgrade to {}: {why}", m.label(), new.label()),
                ));
            }
        }
    }
    Ok(())
}

fn split_brain(
    options: &UpgradeOptions,
    new: &PluginFile,
    previous: &PluginFile,
    todo: &[Member],
    all: &[&Member],
    size: usize,
    out: &mut dyn FnMut(&str),
) -> Result<(), UpgradeError> {
    let first = all[0];
    let t = Instant::now();
    out(&format!("[split-brain] {}: disable clustering cluster-wide ...", first.label()));
    first.client.post("/api/cluster/disable", b"").map_err(|e| {
        err(format!("could not disable clustering on {}: {}; nothing was changed", first.label(), api_error(e)))
    })?;
    let standalone = |_: &Member, (state, enabled, _, _): &Seen| {
        if state == "standalone" && !enabled {
            Ok(())
        } else {
            Err(format!("it is {state}, clustering {}", if *enabled { "enabled" } else { "disabled" }))
        }
    };
    if let Err(why) = gate(options.gate_timeout, all, |_, _| {}, standalone) {
        out(&format!("[split-brain] {why}; enabling clustering again"));
        let _ = enable_all(rollback_timeout(options), all, size, None, out);
        return Err(err(format!("not every member left the cluster after the cluster-wide disable: {why}; clustering was enabled again and no plugin was changed")));
    }
    out(&format!("[split-brain] every member standalone ({})", secs(t.elapsed())));
    let total = todo.len();
    let mut changed: Vec<&Member> = Vec::new();
    for (i, m) in todo.iter().enumerate() {
        let step = format!("[split-brain] {}/{total} {}", i + 1, m.label());
        let t = Instant::now();
        out(&format!("{step}: upload {} as plugins/{} ...", new.label(), m.file));
        let result = upload(m, new, out).and_then(|_| {
            changed.push(m);
            let version = new.manifest.version.to_string();
            gate(
                options.gate_timeout,
                &[m],
                |_, _| {},
                |_, (state, _, _, running)| {
                    if running.as_deref() != Some(version.as_str()) {
                        Err(format!("it runs {}, expected {version}", running.as_deref().unwrap_or("no strategy")))
                    } else if state != "standalone" {
                        Err(format!("it is {state}, expected standalone"))
                    } else {
                        Ok(())
                    }
                },
            )
        });
        match result {
            Ok(_) => out(&format!("{step}: replaced, standalone on {} ({})", new.manifest.version, secs(t.elapsed()))),
            Err(why) => {
                out(&format!("{step}: {why}"));
                let reason = format!("member {} failed its upgrade to {}: {why}", m.label(), new.label());
                return Err(split_brain_rollback(options, previous, &changed, all, size, out, &reason));
            }
        }
    }
    match enable_all(options.gate_timeout, all, size, Some(new.manifest.version.to_string()), out) {
        Ok(()) => Ok(()),
        Err(why) => {
            let reason = format!("the cluster did not re-form on {}: {why}", new.label());
            let _ = first.client.post("/api/cluster/disable", b"");
            let _ = gate(options.gate_timeout, all, |_, _| {}, standalone);
            Err(split_brain_rollback(options, previous, &changed, all, size, out, &reason))
        }
    }
}

/// Enables clustering from the first member; a member still standalone
/// and disabled after a few seconds is told too. Gates on every member
/// clustered with `size` members (on `version` when given).
fn enable_all(
    timeout: Duration,
    all: &[&Member],
    size: usize,
    version: Option<String>,
    out: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let first = all[0];
    let t = Instant::now();
    out(&format!("[split-brain] {}: enable clustering cluster-wide ...", first.label()));
    first
        .client
        .post("/api/cluster/enable", b"")
        .map_err(|e| format!("could not enable clustering on {}: {}", first.label(), api_error(e)))?;
    let mut told = vec![first.url.clone()];
    let mut nudges = Vec::new();
    let check = move |_: &Member, (state, _, seen, running): &Seen| {
        if state != "clustered" {
            return Err(format!("it is {state}"));
        }
        if *seen != size {
            return Err(format!("it sees {seen} members, expected {size}"));
        }
        match &version {
            Some(v) if running.as_deref() != Some(v.as_str()) => Err(format!("it runs {running:?}, expected {v}")),
            _ => Ok(()),
        }
    };
    let result = gate(
        timeout,
        all,
        |m, (state, enabled, _, _)| {
            if state == "standalone" && !enabled && !told.contains(&m.url) && t.elapsed() > Duration::from_secs(3) {
                let _ = m.client.post("/api/cluster/enable", b"");
                told.push(m.url.clone());
                nudges.push(m.label());
            }
        },
        check,
    );
    for n in nudges {
        out(&format!("[split-brain] {n} had not heard the switch; enabled there too"));
    }
    let passed = result?;
    out(&format!("[split-brain] gate passed: every member clustered, {size} members ({})", secs(passed)));
    Ok(())
}

/// Makes `plugins.allow.downgrade = true` effective on `member` for the
/// rollback; returns the properties text to restore, if it was changed.
fn allow_downgrade(member: &Member) -> Result<Option<String>, String> {
    let body: Value = member.client.get("/api/properties").map_err(api_error)?.body;
    if body["effective"]["plugins.allow.downgrade"].as_str() == Some("true") {
        return Ok(None);
    }
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let patched = format!(
        "{}\n# set by clusterhost cluster upgrade for a rollback; removed after it\nplugins.allow.downgrade = true\n",
        text.trim_end()
    );
    member.client.put("/api/properties", patched.as_bytes()).map_err(api_error)?;
    wait_property(member, "true")?;
    Ok(Some(text))
}

fn wait_property(member: &Member, value: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = member.client.get("/api/properties").map_err(api_error)?.body;
        if body["effective"]["plugins.allow.downgrade"].as_str() == Some(value) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the node did not apply plugins.allow.downgrade = {value} within 15 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Uploads the previous file back on `member` (downgrades allowed for it).
fn restore(member: &Member, previous: &PluginFile, out: &mut dyn FnMut(&str)) -> Result<(), String> {
    let original = allow_downgrade(member)?;
    let uploaded = upload(member, previous, out);
    if let Some(text) = original {
        let restored = member.client.put("/api/properties", text.as_bytes()).map_err(api_error);
        restored.and_then(|_| wait_property(member, "false"))?;
    }
    uploaded.map(|_| ())
}

/// Rollback gates wait at least a minute, whatever --gate-timeout says:
/// the previous version is known to work, so waiting is the safer bet.
fn rollback_timeout(options: &UpgradeOptions) -> Duration {
    options.gate_timeout.max(Duration::from_secs(60))
}

fn rollback(
    options: &UpgradeOptions,
    previous: &PluginFile,
    changed: &[&Member],
    size: usize,
    out: &mut dyn FnMut(&str),
    reason: &str,
) -> UpgradeError {
    if changed.is_empty() {
        return err(format!("{reason}; no member was changed, every member still runs its previous version"));
    }
    let mut failed = Vec::new();
    for m in changed.iter().rev() {
        out(&format!("[rollback] {}: upload {} back ...", m.label(), previous.label()));
        let result = restore(m, previous, out).and_then(|_| {
            gate(
                rollback_timeout(options),
                &[m],
                |_, _| {},
                clustered_check(size, previous.manifest.version.to_string()),
            )
        });
        match result {
            Ok(_) => out(&format!("[rollback] {}: back on {}, gate passed", m.label(), previous.label())),
            Err(why) => {
                out(&format!("[rollback] {}: {why}", m.label()));
                failed.push(format!("{}: {why}", m.label()));
            }
        }
    }
    rollback_error(reason, changed, previous, &failed)
}

fn split_brain_rollback(
    options: &UpgradeOptions,
    previous: &PluginFile,
    changed: &[&Member],
    all: &[&Member],
    size: usize,
    out: &mut dyn FnMut(&str),
    reason: &str,
) -> UpgradeError {
    let mut failed = Vec::new();
    for m in changed.iter().rev() {
        out(&format!("[rollback] {}: upload {} back (standalone) ...", m.label(), previous.label()));
        match restore(m, previous, out) {
            Ok(()) => out(&format!("[rollback] {}: back on {}", m.label(), previous.label())),
            Err(why) => {
                out(&format!("[rollback] {}: {why}", m.label()));
                failed.push(format!("{}: {why}", m.label()));
            }
        }
    }
    if let Err(why) = enable_all(rollback_timeout(options), all, size, Some(previous.manifest.version.to_string()), out)
    {
        failed.push(format!("re-forming the cluster on {}: {why}", previous.label()));
    }
    rollback_error(reason, changed, previous, &failed)
}

fn rollback_error(reason: &str, changed: &[&Member], previous: &PluginFile, failed: &[String]) -> UpgradeError {
    let names: Vec<String> = changed.iter().map(|m| m.name.clone()).collect();
    if failed.is_empty() {
        err(format!(
            "{reason}; rolled back: {} run {} again (from {}); fix the new build before trying again",
            names.join(", "),
            previous.label(),
            previous.path.display()
        ))
    } else {
        err(format!(
            "{reason}; the rollback to {} did not complete ({}); check `clusterhost cluster status` and upload {} by hand with `clusterhost plugins install` on those members",
            previous.label(),
            failed.join("; "),
            previous.path.display()
        ))
    }
}
