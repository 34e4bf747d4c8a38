//! `bench compare BASE SCENARIO...`: the same scenarios at an earlier
//! commit and at this tree, side by side on this machine. BASE is checked
//! out in a git worktree under the target directory and its own bench
//! runner built there (in release); then, `--rounds` times, BASE's runner
//! and this one run the scenarios one after the other (each in a fresh
//! process), and the figures both reports have (matched by scenario and
//! label) are set side by side: each side's median over the rounds' medians,
//! and after ÷ before.
//!
//! `--same-profile` builds BASE with this tree's release profile (LTO and
//! codegen units), so the comparison is of the code alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// What `bench compare` was asked.
pub struct Request {
    pub base: String,
    pub scenarios: Vec<String>,
    pub rounds: usize,
    pub quick: bool,
    pub same_profile: bool,
    pub out: PathBuf,
}

/// This tree's release profile as cargo environment variables (mirrors
/// Cargo.toml's `[profile.release]`; the per-package `strip = "symbols"` of
/// the plugins only changes file sizes, so it is not carried over).
const SAME_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_LTO", "fat"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_STRIP", "debuginfo"),
];

pub fn run(request: &Request) -> Result<()> {
    let root = clusterhost_tests::workspace_root();
    let sha = git(&root, &["rev-parse", "--verify", &format!("{}^{{commit}}", request.base)])
        .with_context(|| format!("{:?} is not a commit of this repository", request.base))?;
    let here = git(&root, &["rev-parse", "HEAD"]).unwrap_or_default();
    let dirty = !git(&root, &["status", "--porcelain", "--untracked-files=no"]).unwrap_or_default().is_empty();
    let dir = clusterhost_tests::profile_dir().join("compare").join(&sha[..12]);
    let src = dir.join("src");
    if !src.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = git(&root, &["worktree", "prune"]);
        git(&root, &["worktree", "add", "--force", "--detach", &src.to_string_lossy(), &sha])
            .with_context(|| format!("checking out {sha} in {}", src.display()))?;
    }
    let target = dir.join(if request.same_profile { "target-same-profile" } else { "target" });
    let env: &[(&str, &str)] = if request.same_profile { SAME_PROFILE } else { &[] };
    println!("== building the bench runner of {} in {}", &sha[..12], src.display());
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "bench"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target)
        .envs(env.iter().copied())
        .status()
        .context("cargo can be run")?;
    ensure!(status.success(), "building the bench runner of {sha} failed ({status})");
    let base_exe = target.join("release/bench");
    let this_exe = std::env::current_exe().context("the runner's own path")?;
    let scratch = clusterhost_tests::profile_dir().join("bench-report/compare").join(&sha[..12]);
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;

    let mut before: Vec<Figures> = Vec::new();
    let mut after: Vec<Figures> = Vec::new();
    for round in 0..request.rounds {
        for (side, exe, reports) in [("before", &base_exe, &mut before), ("after", &this_exe, &mut after)] {
            let out = scratch.join(format!("{side}-{round}.md"));
            println!("== round {} of {}: {side} ({})", round + 1, request.rounds, exe.display());
            let mut command = Command::new(exe);
            command.args(&request.scenarios).arg("--out").arg(&out).envs(env.iter().copied());
            if request.quick {
                command.arg("--quick");
            }
            let _ = std::fs::remove_file(&out);
            let status = command.status().with_context(|| format!("{} can be run", exe.display()))?;
            // A failed scenario still writes its report; its figures are simply missing.
            if !status.success() {
                println!("== {side} exited {status}: figures it could not measure are left out");
            }
            // A runner that knew none of the scenarios wrote no report: no figures from it.
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            reports.push(figures(&text));
        }
    }
    let mut md = String::new();
    let _ = writeln!(md, "# Side by side: {} → {}\n", &sha[..12], short(&here, dirty));
    let _ = writeln!(
        md,
        "Written by `cargo run -p bench --release -- compare {} {}{}{}`. Before is commit `{}`, after is `{}`; \
         both ran on this machine, {} round(s), each round before then after, each side a fresh process. A cell \
         is that side's median over the rounds' medians (each round's median is in the reports under \
         target/release/bench-report/compare/{}). {}\n",
        request.base,
        request.scenarios.join(" "),
        if request.same_profile { " --same-profile" } else { "" },
        if request.rounds != 1 { format!(" --rounds {}", request.rounds) } else { String::new() },
        &sha[..12],
        short(&here, dirty),
        request.rounds,
        &sha[..12],
        if request.same_profile {
            "Both were built with this tree's release profile (fat LTO, one codegen unit)."
        } else {
            "Each side was built with its own tree's release profile."
        },
    );
    let _ = writeln!(md, "| scenario | figure | before | after | after ÷ before |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    // Every figure either side measured, in report order (scenario, then
    // label): one measured on one side only (new, or labelled otherwise
    // there) shows "—" on the other.
    let mut keys: Vec<(String, String)> = Vec::new();
    for figures in after.iter().chain(&before) {
        for (key, _) in figures {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    keys.sort_by_key(|(scenario, _)| request.scenarios.iter().position(|s| s == scenario));
    let mut shown = 0;
    for key in &keys {
        let (b, a) = (median_of(&before, key), median_of(&after, key));
        let ratio = match (&b, &a) {
            (Some(b), Some(a)) if b.0 != 0.0 => {
                shown += 1;
                format!("{:.2}", a.0 / b.0)
            }
            _ => "—".into(),
        };
        let printed = |side: &Option<(f64, String)>| side.as_ref().map_or("—".to_string(), |s| s.1.clone());
        let _ = writeln!(md, "| `{}` | {} | {} | {} | {ratio} |", key.0, key.1, printed(&b), printed(&a));
    }
    if shown == 0 {
        bail!("no figure was measured on both sides (see the reports in {})", scratch.display());
    }
    if let Some(dir) = request.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&request.out, md).with_context(|| format!("writing {}", request.out.display()))?;
    println!("side by side written to {} ({shown} figures)", request.out.display());
    Ok(())
}

fn short(sha: &str, dirty: bool) -> String {
    let s = sha.get(..12).unwrap_or(sha);
    if dirty {
        format!("{s} with uncommitted changes")
    } else {
        s.to_string()
    }
}

/// `git ARGS` in `dir`; its trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().context("git can be run")?;
    ensure!(out.status.success(), "git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A report's figures: (scenario, label) → (median in the printed unit's
/// base, as printed).
type Figures = Vec<((String, String), (f64, String))>;

/// The figures of a report written by this runner (its markdown tables).
fn figures(report: &str) -> Figures {
    let mut out = Figures::new();
    let mut scenario = String::new();
    for line in report.lines() {
        if let Some(rest) = line.strip_prefix("### `") {
            scenario = rest.split('`').next().unwrap_or_default().to_string();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | label | **median** | p10 / p90 | min / max | p99 | n | how |
        if scenario.is_empty() || cells.len() < 4 {
            continue;
        }
        let Some(median) = cells[2].strip_prefix("**").and_then(|m| m.strip_suffix("**")) else { continue };
        if let Some(value) = value_of(median) {
            out.push(((scenario.clone(), cells[1].to_string()), (value, median.to_string())));
        }
    }
    out
}

/// A printed figure as a number in its unit's base (ns, B, ops/s, ratio).
fn value_of(printed: &str) -> Option<f64> {
    let (number, unit) = match printed.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')) {
        Some(i) => printed.split_at(i),
        None => (printed, ""),
    };
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "ns" => 1.0,
        "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "B" | "/s" | "×" | "" => 1.0,
        "KiB" => 1024.0,
        "k/s" => 1e3,
        "M/s" => 1e6,
        "%" => 0.01,
        _ => return None,
    };
    Some(number * scale)
}

/// The median over the rounds of figure `key`, with the printed median
/// of the round closest to it.
fn median_of(rounds: &[Figures], key: &(String, String)) -> Option<(f64, String)> {
    let mut values: Vec<&(f64, String)> =
        rounds.iter().filter_map(|f| f.iter().find(|(k, _)| k == key).map(|(_, v)| v)).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(values[values.len() / 2].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_s_figures_are_read_back_by_scenario_and_label() {
        let report = "## Figures\n\n### `boundary` (2 s)\n\ntext\n\n| figure | median | p10 / p90 | min / max | p99 | n | how |\n\
                      |---|---|---|---|---|---|---|\n\
                      | get, direct Rust trait | **83.8 ns** | 67.4 ns / 94.7 ns | 65.6 ns / 95.1 ns |  | 15 | r |\n\
                      | ratio ABI / direct | **1.36×** | 1 | 1 |  | 15 | r |\n\
                      | something not measured | — | | | | | why |\n\n\
                      ### `cache-ops` (12 s)\n\n| gets/s, standalone | **3.73 M/s** | a | b | | 10 | c |\n\
                      | put latency, gossip, 3 members | **156 µs** | a | b | | 3 | c |\n";
        let f = figures(report);
        assert_eq!(f.len(), 4, "{f:?}");
        let get = |s: &str, l: &str| f.iter().find(|(k, _)| k.0 == s && k.1 == l).expect("the figure").1 .0;
        assert_eq!(f[0].0 .1, "get, direct Rust trait", "in the report's order");
        assert_eq!(get("boundary", "get, direct Rust trait"), 83.8);
        assert_eq!(get("boundary", "ratio ABI / direct"), 1.36);
        assert_eq!(get("cache-ops", "gets/s, standalone"), 3.73e6);
        assert_eq!(get("cache-ops", "put latency, gossip, 3 members"), 156e3);
    }

    #[test]
    fn the_middle_round_is_the_median() {
        let key = ("s".to_string(), "l".to_string());
        let rounds: Vec<Figures> =
            [3.0, 1.0, 2.0].iter().map(|v| Figures::from([(key.clone(), (*v, format!("{v} ns")))])).collect();
        assert_eq!(median_of(&rounds, &key), Some((2.0, "2 ns".to_string())));
        assert_eq!(median_of(&rounds, &("x".into(), "y".into())), None);
    }
}
