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
//! - **switch**: to another strategy (gossip → redis, redis → gossip):
//!   member by member (the senior last), the strategy it runs (`--previous`)
//!   is removed (it goes standalone, keeping every entry) and `--plugin` is
//!   installed (it joins the new cluster, merging its entries by version),
//!   each gated: standalone, then in the new cluster with every member
//!   switched so far.
//! - **offline**: needs the nodes stopped and started, which a client of
//!   the admin API cannot do across machines: the command prints the runbook.
//!
//! A member that fails its gate (or refuses the file) triggers a rollback:
//! every member changed by this run gets the previous file back (given with
//! `--previous`; the admin API does not serve plugin files), each with its
//! own gate. `--dry-run` prints the plan and changes nothing.
//!
//! Before its plugin is replaced a member drains: the upload asks it to be
//! not ready (`/readyz` 503) for `--drain` seconds first, so a load
//! balancer stops sending it requests; once it passed its gate and is
//! ready again, the flow waits as long again before the next member, so
//! the balancer has put it back (docs/load-balancing.md).
//!
//! [`survey`] finds the members, [`plan`] says what will happen, [`gates`]
//! wait for a member's health, [`flows`] replace the plugin member by
//! member, [`rollback`] brings the previous file back.

mod flows;
mod gates;
mod plan;
mod rollback;
mod survey;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::admin::client::ClientError;
use crate::plugins::manifest::InspectError;
use survey::{Member, PluginFile};

/// How the plugin is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One member at a time, each a hot replace while clustered.
    Rolling,
    /// Clustering off, every member replaced standalone, clustering on.
    SplitBrain,
    /// Every node stopped, replaced and started: printed as a runbook.
    Offline,
    /// Another strategy plugin: each member removes the one it runs, then installs the new one.
    Switch,
}

impl Mode {
    /// The mode's name, as `--mode` takes it and progress lines show it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Rolling => "rolling",
            Mode::SplitBrain => "split-brain",
            Mode::Offline => "offline",
            Mode::Switch => "switch",
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
    /// How the plugin is replaced.
    pub mode: Mode,
    /// Every member's admin API URL.
    pub nodes: Vec<String>,
    /// Which admin token goes to which member (one for all, or a map).
    pub tokens: crate::admin::tokens::Tokens,
    /// Print the plan; change nothing.
    pub dry_run: bool,
    /// The longest a member may take to pass a gate.
    pub gate_timeout: Duration,
    /// How long a member is not ready (`/readyz` 503) before its plugin is
    /// replaced, so a load balancer stops sending it requests first; and
    /// how long the flow waits after it is ready again before the next
    /// member drains, so the balancer has put it back. Zero: no drain.
    pub drain: Duration,
}

/// Why the upgrade stopped: what happened, to what, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("{what} {}: {source}", path.display())]
    PluginFile { what: &'static str, path: PathBuf, source: InspectError },
    #[error("the signature beside {} could not be read: {detail}; fix or remove it before the upgrade", path.display())]
    Signature { path: PathBuf, detail: String },
    #[error("member {name} ({url}) requires signed plugins (plugins.signature = require), but {what}{} has no signature beside it; sign it (clusterhost plugins sign {} --key KEY) and run the upgrade again; no member was changed", path.display(), path.display())]
    Unsigned { name: String, url: String, what: &'static str, path: PathBuf },
    #[error("member {name} ({url}): could not read its plugins.signature to know whether it accepts an unsigned build ({source}); sign the build, or fix the member's admin API and run the upgrade again; no member was changed")]
    Policy { name: String, url: String, source: Box<ClientError> },
    #[error("--mode switch moves the members to another strategy, but --plugin and --previous are both {id}; to replace {id} with another build use --mode rolling")]
    SwitchToSame { id: String },
    #[error("--mode switch needs --previous FILE: the strategy plugin the members run now (how each member's running strategy is found, and what a failure puts back)")]
    SwitchNeedsPrevious,
    #[error("no members: pass every member's admin API URL with --nodes URL,URL,...")]
    NoMembers,
    #[error(
        "--previous {} is plugin {previous}, but {} is plugin {new}; pass the file of the same plugin the members run now",
        previous_path.display(), new_path.display()
    )]
    PreviousOfAnotherPlugin { previous_path: PathBuf, previous: String, new_path: PathBuf, new: String },
    #[error(
        "member {member} runs {runs} from a file whose sha256 ({sha256}) differs from --previous {previous}; a rollback would not restore what it runs: pass the file the members run now"
    )]
    PreviousDiffers { member: String, runs: String, sha256: String, previous: String },
    #[error("a rollback needs the plugin file the members run now, and the admin API does not serve plugin files back: pass it with --previous FILE (or use --dry-run to see the plan)")]
    NoPrevious,
    #[error("member at {url} could not be asked (every member must be up before an upgrade): {source}")]
    Unreachable { url: String, source: Box<ClientError> },
    #[error("member {name} ({url}) is {state}, not clustered; an upgrade starts from a healthy cluster: `clusterhost cluster status --admin {url}` says why")]
    NotClustered { name: String, url: String, state: String },
    #[error(
        "member {name} ({url}) sees {count} members, {first} sees {first_count}; wait until the cluster has settled"
    )]
    SizesDiffer { name: String, url: String, count: usize, first: String, first_count: usize },
    #[error("member {name} ({url}) refuses the admin token sent to it: {detail}; give every member the same token (admin.token.file, then --token-file FILE) or list each member's own with --tokens FILE (`URL TOKEN` per line); no member was changed")]
    TokenRefused { name: String, url: String, detail: String },
    #[error("member {name} ({url}): {source}")]
    Plugins { name: String, url: String, source: Box<ClientError> },
    #[error("member {name} ({url}) has no active {id} plugin; an upgrade replaces a running plugin: install it with `clusterhost plugins install`")]
    NoActivePlugin { name: String, url: String, id: String },
    #[error("the cluster has {size} members but --nodes lists {listed} admin URLs; list every member's admin URL so none is left on the old version")]
    NodesMissing { size: usize, listed: usize },
    #[error("could not disable clustering on {member}: {detail}; nothing was changed")]
    DisableFailed { member: String, detail: String },
    #[error("not every member left the cluster after the cluster-wide disable: {why}; clustering was enabled again and no plugin was changed")]
    NotStandalone { why: String },
    #[error("{reason}; no member was changed, every member still runs its previous version")]
    NothingChanged { reason: String },
    #[error("{reason}; rolled back: {members} run {previous} again (from {}); fix the new build before trying again", path.display())]
    RolledBack { reason: String, members: String, previous: String, path: PathBuf },
    #[error("{reason}; the rollback to {previous} did not complete ({failed}); check `clusterhost cluster status` and upload {} by hand with `clusterhost plugins install` on those members", path.display())]
    RollbackIncomplete { reason: String, previous: String, failed: String, path: PathBuf },
}

/// Runs the upgrade; `out` gets one progress line per member and step.
pub fn run(options: &UpgradeOptions, out: &mut dyn FnMut(&str)) -> Result<(), UpgradeError> {
    let started = Instant::now();
    let new = PluginFile::read(&options.plugin, "the new plugin file")?;
    let mode = options.mode.name();
    if options.nodes.is_empty() {
        return Err(UpgradeError::NoMembers);
    }
    if options.mode == Mode::Offline {
        plan::offline_runbook(options, &new, out);
        return Ok(());
    }
    let previous = match &options.previous {
        Some(path) => {
            let previous = PluginFile::read(path, "the previous plugin file (--previous)")?;
            let switch = options.mode == Mode::Switch;
            if switch && previous.manifest.id == new.manifest.id {
                return Err(UpgradeError::SwitchToSame { id: new.manifest.id.clone() });
            }
            if !switch && previous.manifest.id != new.manifest.id {
                return Err(UpgradeError::PreviousOfAnotherPlugin {
                    previous_path: path.clone(),
                    previous: previous.label(),
                    new_path: new.path.clone(),
                    new: new.label(),
                });
            }
            Some(previous)
        }
        None => None,
    };
    if options.mode == Mode::Switch && previous.is_none() {
        return Err(UpgradeError::SwitchNeedsPrevious);
    }
    let (mut members, size) = survey::survey(options, &new, previous.as_ref())?;
    // Members already on the new file (an earlier run that stopped half-way).
    let (done, mut todo): (Vec<Member>, Vec<Member>) =
        members.drain(..).partition(|m| m.sha256 == new.sha256 && m.version == new.manifest.version.to_string());
    if let Some(previous) = &previous {
        if let Some(m) = todo.iter().find(|m| m.sha256 != previous.sha256) {
            return Err(UpgradeError::PreviousDiffers {
                member: m.label(),
                runs: format!("{} {}", new.manifest.id, m.version),
                sha256: short(&m.sha256).to_string(),
                previous: format!("{} ({})", previous.path.display(), short(&previous.sha256)),
            });
        }
    }
    // The senior goes last: the cluster keeps its senior as long as possible.
    todo.sort_by_key(|m| m.senior);
    let running = match (&previous, options.mode) {
        (Some(previous), Mode::Switch) => format!("{} ", previous.manifest.id),
        _ => String::new(),
    };
    let from: Vec<String> = todo
        .iter()
        .map(|m| format!("{running}{}", m.version))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
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
    plan::print_plan(options, &new, previous.as_ref(), &todo, size, out);
    if options.dry_run {
        out(&format!("[{mode}] dry run: no member was changed"));
        return Ok(());
    }
    let Some(previous) = previous else {
        return Err(UpgradeError::NoPrevious);
    };
    if todo.is_empty() {
        out(&format!("[{mode}] every member already runs {}; nothing to do", new.label()));
        return Ok(());
    }
    let all: Vec<&Member> = done.iter().chain(todo.iter()).collect();
    let run = flows::Run { options, new: &new, previous: &previous, todo: &todo, all: &all, size };
    let result = match options.mode {
        Mode::Rolling => flows::rolling(&run, out),
        Mode::SplitBrain => flows::split_brain(&run, out),
        Mode::Switch => flows::switch(&run, out),
        Mode::Offline => unreachable!("handled above"),
    };
    match &result {
        Ok(()) => out(&format!(
            "[{mode}] done: {size} members run {} ({})",
            new.label(),
            crate::text::duration(started.elapsed())
        )),
        Err(e) => out(&format!("[{mode}] failed after {}: {e}", crate::text::duration(started.elapsed()))),
    }
    result
}

/// The first 12 hex digits of a hash, as messages show it.
fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// An admin API error as a gate or step reports it.
fn api_error(e: ClientError) -> String {
    match e {
        ClientError::Api { message, status, .. } => format!("{message} (HTTP {status})"),
        other => other.to_string(),
    }
}
