//! `clusterhost strategy verify`: runs the strategy contract suite
//! ([`crate::conformance`]) against a strategy plugin file, on in-process
//! members, one line per rule (docs/strategy-authoring.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use super::{fail, print_json};
use crate::conformance::{self, MemberSetup, PluginSubject, RuleReport, Subject, Verdict};
use crate::plugins::manifest;

/// What `strategy verify` was asked.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The strategy plugin (`.so`); `None` with `builtin`.
    pub file: Option<PathBuf>,
    /// `memory`: the in-memory reference strategy instead of a file.
    pub builtin: Option<String>,
    /// The strategy's configuration, written as each member's `conf/<id>.toml`.
    pub config: Option<PathBuf>,
    /// More files for each member's conf/ (a key file, say), under their own names.
    pub conf_files: Vec<PathBuf>,
    /// Members a scaling rule starts (at least 2).
    pub members: usize,
    /// Only these rules (all when empty).
    pub rules: Vec<String>,
    pub json: bool,
}

/// The suite's report, for `--json`.
#[derive(serde::Serialize)]
struct Report<'a> {
    subject: String,
    members: usize,
    rules: &'a [RuleReport],
    passed: usize,
    failed: usize,
    unsupported: usize,
    seconds: f64,
}

/// A configuration file's text with the suite's placeholders filled in
/// for one member: `{namespace}`, `{member}`, `{port}` and `{members}`
/// (every member's `"127.0.0.1:PORT"`, quoted and comma-separated, for a
/// TOML array).
pub fn fill(text: &str, setup: &MemberSetup<'_>) -> String {
    let members: Vec<String> = setup.ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    text.replace("{namespace}", setup.namespace)
        .replace("{member}", setup.name)
        .replace("{port}", &setup.port.to_string())
        .replace("{members}", &members.join(", "))
}

fn read(file: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| format!("could not read {what} {}: {e}", file.display()))
}

/// The subject the options name, and its label.
fn subject(options: &VerifyOptions) -> Result<(Subject, String), String> {
    match (&options.file, options.builtin.as_deref()) {
        (None, Some("memory")) => Ok((Subject::Memory, "the built-in in-memory strategy".into())),
        (None, Some("broken")) => {
            Ok((Subject::Broken, "the built-in broken strategy (deliberate contract bugs)".into()))
        }
        (None, Some(other)) => {
            Err(format!("there is no built-in strategy {other:?}; the built-in ones are `memory` and `broken`"))
        }
        (Some(_), Some(_)) => Err("give a plugin FILE or --builtin, not both".into()),
        (None, None) => Err("give the strategy plugin FILE to verify (or --builtin memory)".into()),
        (Some(file), None) => {
            let manifest = manifest::read_manifest(file).map_err(|e| e.to_string())?;
            if !manifest.provides.iter().any(|p| p == clusterhost_plugin_api::CLUSTER_STRATEGY) {
                return Err(format!(
                    "{} (plugin {}) does not provide {}: only a cluster strategy can be verified",
                    file.display(),
                    manifest.id,
                    clusterhost_plugin_api::CLUSTER_STRATEGY
                ));
            }
            let config = options.config.as_ref().map(|f| read(f, "the strategy configuration")).transpose()?;
            let mut extra = Vec::new();
            for path in &options.conf_files {
                let name =
                    path.file_name().ok_or_else(|| format!("--conf-file {} names no file", path.display()))?.to_owned();
                extra.push((name, read(path, "the configuration file")?));
            }
            let id = manifest.id.clone();
            let configure: conformance::Configure = Arc::new(move |setup: &MemberSetup<'_>| {
                if let Some(text) = &config {
                    std::fs::write(setup.conf.join(format!("{id}.toml")), fill(text, setup))?;
                }
                for (name, text) in &extra {
                    std::fs::write(setup.conf.join(name), fill(text, setup))?;
                }
                Ok(())
            });
            let label = format!("{} {} ({})", manifest.id, manifest.version, file.display());
            Ok((Subject::Plugin(PluginSubject { file: file.clone(), configure }), label))
        }
    }
}

/// `strategy verify`: every rule's verdict; non-zero exit on any failure.
pub fn verify(options: VerifyOptions) -> ExitCode {
    let (subject, label) = match subject(&options) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    for name in &options.rules {
        if conformance::rule(name).is_none() {
            let known: Vec<&str> = conformance::rules().iter().map(|r| r.name).collect();
            return fail(format!("there is no rule {name:?}; the rules are: {}", known.join(", ")));
        }
    }
    // RUST_LOG=info shows the members' and the strategy's logs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // A rule that fails by an assertion panics; its message is the verdict's reason.
    std::panic::set_hook(Box::new(|_| {}));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("could not start the async runtime: {e}")),
    };
    let members = options.members.max(2);
    if !options.json {
        println!("verifying {label} with {members} members");
    }
    let started = Instant::now();
    let json = options.json;
    let reports = runtime.block_on(conformance::run(Arc::new(subject), members, &options.rules, |report| {
        if !json {
            println!("{}", line(report));
        }
    }));
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    let count = |f: fn(&Verdict) -> bool| reports.iter().filter(|r| f(&r.verdict)).count();
    let passed = count(|v| matches!(v, Verdict::Passed));
    let failed = count(|v| matches!(v, Verdict::Failed(_)));
    let unsupported = count(|v| matches!(v, Verdict::Unsupported(_)));
    let seconds = started.elapsed().as_secs_f64();
    if json {
        let report = Report { subject: label, members, rules: &reports, passed, failed, unsupported, seconds };
        let code = print_json(&report);
        return if failed > 0 { ExitCode::FAILURE } else { code };
    }
    let rules = if reports.len() == 1 { "1 rule".to_string() } else { format!("{} rules", reports.len()) };
    println!("{rules}: {passed} passed, {failed} failed, {unsupported} unsupported, in {seconds:.1} s");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One rule's line: verdict, name, time, reason.
fn line(report: &RuleReport) -> String {
    let took = crate::text::duration(std::time::Duration::from_secs_f64(report.seconds.max(0.0)));
    match &report.verdict {
        Verdict::Passed => format!("passed       {} ({took})", report.rule),
        Verdict::Failed(reason) => format!("FAILED       {} ({took}): {reason}", report.rule),
        Verdict::Unsupported(reason) => format!("unsupported  {} ({took}): {reason}", report.rule),
    }
}
