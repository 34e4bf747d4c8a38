//! The two flows that change members: rolling (each member hot-replaced
//! while clustered) and split-brain (clustering off, each member replaced
//! standalone, clustering on). Both replace the members one at a time with
//! [`replace_each`]; a failure hands the members changed so far to rollback.

use std::time::{Duration, Instant};

use super::gates::{clustered_check, gate, in_cluster, ready_gate, standalone, Seen};
use super::rollback::{rollback, rollback_timeout, split_brain_rollback};
use super::survey::{Member, PluginFile};
use super::{api_error, UpgradeError, UpgradeOptions};
use crate::admin::client::segment;
use crate::admin::contract::{Refusal, UploadOutcome, Uploaded};
use crate::plugins::outcome::RefusalCause;

/// One upgrade run: what is upgraded, where, and the file to roll back to.
pub(super) struct Run<'r> {
    pub(super) options: &'r UpgradeOptions,
    pub(super) new: &'r PluginFile,
    pub(super) previous: &'r PluginFile,
    /// The members to upgrade, in order (the senior last).
    pub(super) todo: &'r [Member],
    /// Every member, those already upgraded first.
    pub(super) all: &'r [&'r Member],
    /// The cluster size every member must see.
    pub(super) size: usize,
}

/// Uploads `file` to `member` as its strategy file; Ok once the node reports it active.
///
/// A replacement whose start failed leaves the member on its running
/// version (the host restarts it); that upload is retried once after a
/// second, since the usual cause is a resource the stopped version had not
/// released yet (e.g. its member port). Admission refusals are not retried.
pub(super) fn upload(
    member: &Member,
    file: &PluginFile,
    drain: Duration,
    out: &mut dyn FnMut(&str),
) -> Result<UploadOutcome, String> {
    upload_as(member, &member.file, file, drain, out)
}

/// [`upload`] as plugins/`name`.
pub(super) fn upload_as(
    member: &Member,
    name: &str,
    file: &PluginFile,
    drain: Duration,
    out: &mut dyn FnMut(&str),
) -> Result<UploadOutcome, String> {
    match upload_once(member, name, file, drain) {
        Err((why, Some(Refusal { cause: RefusalCause::FailedInStart, kept_running: true }))) => {
            out(&format!("[retry] {}: the new version failed to start and the running one was kept ({why}); uploading again in 1 s", member.label()));
            std::thread::sleep(Duration::from_secs(1));
            upload_once(member, name, file, drain).map_err(|(why, _)| why)
        }
        other => other.map_err(|(why, _)| why),
    }
}

/// One upload: its outcome, or why not (with the node's refusal, if it refused).
fn upload_once(
    member: &Member,
    name: &str,
    file: &PluginFile,
    drain: Duration,
) -> Result<UploadOutcome, (String, Option<Refusal>)> {
    let mut path = format!("/api/plugins?name={}", segment(name));
    if !drain.is_zero() {
        path.push_str(&format!("&drain={}", drain.as_secs_f64()));
    }
    let answer = member.client.post_signed(&path, &file.bytes, file.signature.as_deref()).map_err(|e| {
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

/// Which flow a [`replace_each`] runs: its words and its gate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Rolling,
    SplitBrain,
}

/// A member's step failed: the members changed so far, and why.
struct Failed<'r> {
    changed: Vec<&'r Member>,
    reason: String,
}

/// Uploads the new file to each member to do, in order, gating each; stops
/// at the first member that refuses the file or fails its gate.
fn replace_each<'r>(flow: Flow, run: &Run<'r>, out: &mut dyn FnMut(&str)) -> Result<(), Failed<'r>> {
    let (new, size) = (run.new, run.size);
    let version = new.manifest.version.to_string();
    let total = run.todo.len();
    let mut changed: Vec<&Member> = Vec::new();
    for (i, m) in run.todo.iter().enumerate() {
        let name = if flow == Flow::Rolling { "rolling" } else { "split-brain" };
        let step = format!("[{name}] {}/{total} {}", i + 1, m.label());
        let t = Instant::now();
        let drain = run.options.drain;
        if drain.is_zero() {
            out(&format!("{step}: upload {} as plugins/{} ...", new.label(), m.file));
        } else {
            out(&format!(
                "{step}: upload {} as plugins/{} (the member drains for {} first: not ready, so a load balancer stops sending it requests) ...",
                new.label(),
                m.file,
                crate::text::duration(drain)
            ));
        }
        if let Err(why) = upload(m, new, drain, out) {
            // A refused replacement leaves the member on its running version.
            let (line, reason) = match flow {
                Flow::Rolling => {
                    (format!("{step}: refused: {why}"), format!("member {} refused {}: {why}", m.label(), new.label()))
                }
                Flow::SplitBrain => (
                    format!("{step}: {why}"),
                    format!("member {} failed its upgrade to {}: {why}", m.label(), new.label()),
                ),
            };
            out(&line);
            return Err(Failed { changed, reason });
        }
        changed.push(m);
        let gated = match flow {
            Flow::Rolling => {
                out(&format!(
                    "{step}: replaced ({}); gate: back in the cluster, {size} members, on {version} ...",
                    crate::text::duration(t.elapsed())
                ));
                gate(run.options.gate_timeout, &[m], |_, _| {}, clustered_check(size, version.clone()))
                    .and_then(|_| gate(run.options.gate_timeout, run.all, |_, _| {}, in_cluster(size)))
            }
            Flow::SplitBrain => gate(
                run.options.gate_timeout,
                &[m],
                |_, _| {},
                |_, seen: &Seen| {
                    if seen.version() != Some(version.as_str()) {
                        Err(format!("it runs {}, expected {version}", seen.version().unwrap_or("no strategy")))
                    } else if seen.state != "standalone" {
                        Err(format!("it is {}, expected standalone", seen.state))
                    } else {
                        Ok(())
                    }
                },
            ),
        };
        match gated {
            Ok(_) if flow == Flow::Rolling => {
                out(&format!("{step}: gate passed ({} for the member)", crate::text::duration(t.elapsed())));
                if let Err(why) = back_in_service(run.options, m, i + 1 < total, &step, out) {
                    out(&format!("{step}: {why}"));
                    let reason =
                        format!("member {} failed its gate after the upgrade to {}: {why}", m.label(), new.label());
                    return Err(Failed { changed, reason });
                }
            }
            Ok(_) => {
                out(&format!("{step}: replaced, standalone on {version} ({})", crate::text::duration(t.elapsed())))
            }
            Err(why) => {
                out(&format!("{step}: {why}"));
                let reason = match flow {
                    Flow::Rolling => {
                        format!("member {} failed its gate after the upgrade to {}: {why}", m.label(), new.label())
                    }
                    Flow::SplitBrain => format!("member {} failed its upgrade to {}: {why}", m.label(), new.label()),
                };
                return Err(Failed { changed, reason });
            }
        }
    }
    Ok(())
}

/// After a member passed its gate: waits until it is ready (`/readyz`),
/// then, when another member drains next, waits the drain once more so a
/// load balancer's rising checks have put this one back first.
fn back_in_service(
    options: &UpgradeOptions,
    m: &Member,
    another_follows: bool,
    step: &str,
    out: &mut dyn FnMut(&str),
) -> Result<(), String> {
    if options.drain.is_zero() {
        return Ok(());
    }
    let waited = ready_gate(options.gate_timeout, m)?;
    if another_follows {
        out(&format!(
            "{step}: ready again ({}); waiting {} before the next member drains, so a load balancer has put it back",
            crate::text::duration(waited),
            crate::text::duration(options.drain)
        ));
        std::thread::sleep(options.drain);
    }
    Ok(())
}

/// The rolling flow; a failure rolls back every member changed.
pub(super) fn rolling(run: &Run<'_>, out: &mut dyn FnMut(&str)) -> Result<(), UpgradeError> {
    replace_each(Flow::Rolling, run, out)
        .map_err(|failed| rollback(run.options, run.previous, &failed.changed, run.size, out, &failed.reason))
}

/// The split-brain flow; a failure rolls back every member changed, then
/// re-forms the cluster on the previous version.
pub(super) fn split_brain(run: &Run<'_>, out: &mut dyn FnMut(&str)) -> Result<(), UpgradeError> {
    let (options, all, size) = (run.options, run.all, run.size);
    let first = all[0];
    let t = Instant::now();
    out(&format!("[split-brain] {}: disable clustering cluster-wide ...", first.label()));
    first
        .client
        .post("/api/cluster/disable", b"")
        .map_err(|e| UpgradeError::DisableFailed { member: first.label(), detail: api_error(e) })?;
    if let Err(why) = gate(options.gate_timeout, all, |_, _| {}, standalone) {
        out(&format!("[split-brain] {why}; enabling clustering again"));
        let _ = enable_all(rollback_timeout(options), all, size, None, out);
        return Err(UpgradeError::NotStandalone { why });
    }
    out(&format!("[split-brain] every member standalone ({})", crate::text::duration(t.elapsed())));
    if let Err(failed) = replace_each(Flow::SplitBrain, run, out) {
        return Err(split_brain_rollback(options, run.previous, &failed.changed, all, size, out, &failed.reason));
    }
    match enable_all(options.gate_timeout, all, size, Some(run.new.manifest.version.to_string()), out) {
        Ok(()) => Ok(()),
        Err(why) => {
            let reason = format!("the cluster did not re-form on {}: {why}", run.new.label());
            let _ = first.client.post("/api/cluster/disable", b"");
            let _ = gate(options.gate_timeout, all, |_, _| {}, standalone);
            let changed: Vec<&Member> = run.todo.iter().collect();
            Err(split_brain_rollback(options, run.previous, &changed, all, size, out, &reason))
        }
    }
}

/// Enables clustering from the first member; a member still standalone
/// and disabled after a few seconds is told too. Gates on every member
/// clustered with `size` members (on `version` when given).
pub(super) fn enable_all(
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
    let check = move |_: &Member, seen: &Seen| {
        if seen.state != "clustered" {
            return Err(format!("it is {}", seen.state));
        }
        if seen.members != size {
            return Err(format!("it sees {} members, expected {size}", seen.members));
        }
        match &version {
            Some(v) if seen.version() != Some(v.as_str()) => Err(format!("it runs {:?}, expected {v}", seen.version())),
            _ => Ok(()),
        }
    };
    let result = gate(
        timeout,
        all,
        |m, seen| {
            if seen.state == "standalone"
                && !seen.enabled
                && !told.contains(&m.url)
                && t.elapsed() > Duration::from_secs(3)
            {
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
    out(&format!(
        "[split-brain] gate passed: every member clustered, {size} members ({})",
        crate::text::duration(passed)
    ));
    Ok(())
}

/// The file name a switch installs the new strategy under.
pub(super) fn switch_file(new: &PluginFile) -> String {
    format!("{}.so", new.manifest.id)
}

/// Waits until `member` runs `label` ("id version"; none: no strategy),
/// is in `state`, and (clustered, when given) sees `size` members.
fn strategy_gate(
    timeout: Duration,
    members: &[&Member],
    label: Option<&str>,
    state: &str,
    size: Option<usize>,
) -> Result<Duration, String> {
    gate(
        timeout,
        members,
        |_, _| {},
        |_, seen: &Seen| {
            if seen.strategy.as_deref() != label {
                return Err(format!(
                    "it runs {}, expected {}",
                    seen.strategy.as_deref().unwrap_or("no strategy"),
                    label.unwrap_or("no strategy")
                ));
            }
            if seen.state != state {
                return Err(format!("it is {}, expected {state}", seen.state));
            }
            match size {
                Some(size) if seen.members != size => Err(format!("it sees {} members, expected {size}", seen.members)),
                _ => Ok(()),
            }
        },
    )
}

/// The switch flow: member by member, the running strategy removed (the
/// member goes standalone with every entry it holds), then the new one
/// installed (it joins the new cluster and merges those entries into it by
/// version). A failure puts the previous strategy back on every member
/// changed.
pub(super) fn switch(run: &Run<'_>, out: &mut dyn FnMut(&str)) -> Result<(), UpgradeError> {
    let (new, previous, total) = (run.new, run.previous, run.todo.len());
    let (new_label, new_file) = (new.label(), switch_file(new));
    let timeout = run.options.gate_timeout;
    let mut changed: Vec<&Member> = Vec::new();
    for (i, m) in run.todo.iter().enumerate() {
        let step = format!("[switch] {}/{total} {}", i + 1, m.label());
        let t = Instant::now();
        out(&format!("{step}: remove plugins/{} ({}) ...", m.file, previous.label()));
        let removed = m
            .client
            .delete(&format!("/api/plugins/{}", segment(&m.file)))
            .map_err(api_error)
            .and_then(|_| strategy_gate(timeout, &[m], None, "standalone", None));
        if let Err(why) = removed {
            out(&format!("{step}: {why}"));
            let reason = format!("member {} did not go standalone without {}: {why}", m.label(), previous.label());
            return Err(switch_back(run, &changed, Some(m), out, &reason));
        }
        changed.push(m);
        out(&format!(
            "{step}: standalone with its entries ({}); upload {new_label} as plugins/{new_file} ...",
            crate::text::duration(t.elapsed())
        ));
        let joined = upload_as(m, &new_file, new, Duration::ZERO, out).and_then(|_| {
            let switched: Vec<&Member> = changed.clone();
            strategy_gate(timeout, &switched, Some(&new_label), "clustered", Some(i + 1))
        });
        if let Err(why) = joined {
            out(&format!("{step}: {why}"));
            let reason = format!("member {} did not join the {new_label} cluster: {why}", m.label());
            return Err(switch_back(run, &changed, None, out, &reason));
        }
        out(&format!(
            "{step}: gate passed: on {new_label} with {} member(s), its entries merged ({})",
            i + 1,
            crate::text::duration(t.elapsed())
        ));
    }
    Ok(())
}

/// Puts the previous strategy back on every member changed (and on
/// `half`, which lost it without getting the new one): the new file
/// removed, the previous one uploaded under its old name, each gated back
/// in the previous cluster.
fn switch_back(
    run: &Run<'_>,
    changed: &[&Member],
    half: Option<&Member>,
    out: &mut dyn FnMut(&str),
    reason: &str,
) -> UpgradeError {
    let members: Vec<&Member> = changed.iter().copied().chain(half).collect();
    if members.is_empty() {
        return UpgradeError::NothingChanged { reason: reason.to_string() };
    }
    let (previous, new_file) = (run.previous, switch_file(run.new));
    let timeout = super::rollback::rollback_timeout(run.options);
    let mut failed = Vec::new();
    for m in members.iter().rev() {
        out(&format!(
            "[rollback] {}: remove plugins/{new_file}, upload {} back as plugins/{} ...",
            m.label(),
            previous.label(),
            m.file
        ));
        let _ = m.client.delete(&format!("/api/plugins/{}", segment(&new_file)));
        let result = upload_as(m, &m.file, previous, Duration::ZERO, out)
            // Any size: the previous cluster grows back member by member.
            .and_then(|_| strategy_gate(timeout, &[m], Some(&previous.label()), "clustered", None));
        match result {
            Ok(_) => out(&format!("[rollback] {}: back on {}", m.label(), previous.label())),
            Err(why) => {
                out(&format!("[rollback] {}: {why}", m.label()));
                failed.push(format!("{}: {why}", m.label()));
            }
        }
    }
    super::rollback::rollback_error(reason, &members, previous, &failed)
}
