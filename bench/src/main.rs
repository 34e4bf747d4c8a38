//! `bench`: runs the cluster scenarios and writes the performance report.
//!
//! - `all`: every scenario, full size; rewrites docs/performance.md;
//! - `quick`: every scenario with few samples (CI); writes the report under
//!   the target directory, never docs/;
//! - `SCENARIO...` (`--quick` for few samples): just those; report under
//!   the target directory;
//! - `list`: the scenarios and what each measures;
//! - `compare BASE SCENARIO... [--rounds K] [--same-profile]`: those
//!   scenarios at commit BASE and at this tree, side by side (see
//!   `bench::compare`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bench::report::{Report, RunInfo};
use bench::scenarios::{registry, Ctx, Mode};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__scaling-worker") {
        // A helper process started by the `scaling` scenario (inside a network namespace).
        return bench::scenarios::scaling_worker(&args[1..]);
    }
    let mut out: Option<PathBuf> = None;
    let mut quick_flag = false;
    let mut same_profile = false;
    let mut rounds = 1;
    let mut names: Vec<String> = Vec::new();
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--out" => out = Some(rest.next().context("--out needs a path")?.into()),
            "--quick" => quick_flag = true,
            "--same-profile" => same_profile = true,
            "--rounds" => {
                let k = rest.next().context("--rounds needs a number")?;
                rounds = k
                    .parse()
                    .ok()
                    .filter(|k| (1..=20).contains(k))
                    .with_context(|| format!("--rounds {k:?}: give a number of rounds from 1 to 20"))?;
            }
            _ => names.push(arg),
        }
    }
    let scenarios = registry();
    if names.first().map(String::as_str) == Some("compare") {
        let Some(base) = names.get(1).cloned() else {
            bail!("usage: bench compare BASE SCENARIO... [--rounds K] [--same-profile] [--quick] [--out FILE]")
        };
        let chosen = names[2..].to_vec();
        if chosen.is_empty() {
            bail!("bench compare {base}: name the scenarios to compare (`bench list` shows them)");
        }
        for name in &chosen {
            if !scenarios.iter().any(|s| s.name() == name) {
                bail!("no scenario named {name:?}; `bench list` shows them");
            }
        }
        let request = bench::compare::Request {
            base,
            scenarios: chosen,
            rounds,
            quick: quick_flag,
            same_profile,
            out: out.unwrap_or_else(|| scratch_report("compare.md")),
        };
        return bench::compare::run(&request);
    }
    let (mode, selected, default_out) = match names.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            println!("usage: bench all | quick | list | SCENARIO... [--quick] [--out FILE]");
            println!("       bench compare BASE SCENARIO... [--rounds K] [--same-profile] [--quick] [--out FILE]");
            return Ok(());
        }
        Some("list") => {
            for s in &scenarios {
                println!("{:<20} {}", s.name(), s.about());
            }
            return Ok(());
        }
        Some("all") => (Mode::Full, scenarios, clusterhost_tests::workspace_root().join("docs/performance.md")),
        Some("quick") => (Mode::Quick, scenarios, scratch_report("performance-quick.md")),
        Some(_) => {
            for name in &names {
                if !scenarios.iter().any(|s| s.name() == name) {
                    bail!("no scenario named {name:?}; `bench list` shows them");
                }
            }
            let mode = if quick_flag { Mode::Quick } else { Mode::Full };
            let selected = scenarios.into_iter().filter(|s| names.iter().any(|n| n == s.name())).collect();
            (mode, selected, scratch_report("performance-selected.md"))
        }
    };
    let out = out.unwrap_or(default_out);

    let started = Instant::now();
    let mut report = Report::default();
    for scenario in &selected {
        println!("== {} ({:?}): {}", scenario.name(), mode, scenario.about());
        let work = tempfile::tempdir().context("a scratch directory")?;
        let ctx = Ctx { mode, work: work.path() };
        report.start(scenario.name());
        let began = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario.run(&ctx, &mut report)));
        let took = began.elapsed();
        report.durations.push((scenario.name().to_string(), took));
        match outcome {
            Ok(()) => println!("== {} done in {:.1} s", scenario.name(), took.as_secs_f64()),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into());
                println!("== {} FAILED after {:.1} s: {why}", scenario.name(), took.as_secs_f64());
                report.failures.push((scenario.name().to_string(), why));
            }
        }
    }
    let command = match (names.first().map(String::as_str), mode) {
        (Some("all"), _) => "`all`: every scenario, full size".to_string(),
        (Some("quick"), _) => "`quick`: every scenario, few samples (checks the harness; not a report)".to_string(),
        (_, Mode::Quick) => format!("`{} --quick`: few samples (checks the harness; not a report)", names.join(" ")),
        (_, Mode::Full) => format!("`{}`: these scenarios only", names.join(" ")),
    };
    let mut run = RunInfo::gather(&command);
    run.elapsed = started.elapsed();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, report.markdown(&run)).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "report written to {} ({} figures, {:.0} s)",
        out.display(),
        report.figures.len(),
        run.elapsed.as_secs_f64()
    );
    if !report.failures.is_empty() {
        let names: Vec<&str> = report.failures.iter().map(|(s, _)| s.as_str()).collect();
        bail!("scenarios failed: {}", names.join(", "));
    }
    Ok(())
}

/// A report path under the target directory (never docs/).
fn scratch_report(file: &str) -> PathBuf {
    clusterhost_tests::profile_dir().join("bench-report").join(file)
}
