//! The figures of one run, and docs/performance.md written from them:
//! when and where the run was made, every figure with its median, spread
//! and n, and every goal the issues state beside its measured value.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::figure::{Figure, Spread, Unit};
use crate::goals::{Goal, Verdict, GOALS};

/// Everything one run measured, in the order it was measured.
#[derive(Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Scenarios that failed: (scenario, what went wrong).
    pub failures: Vec<(String, String)>,
    /// How long each scenario took.
    pub durations: Vec<(String, Duration)>,
    /// Scenario being run; figures added are tagged with it.
    current: String,
}

impl Report {
    /// Tags the figures added from now on with `scenario`.
    pub fn start(&mut self, scenario: &str) {
        self.current = scenario.to_string();
    }

    fn push(&mut self, figure: Figure) {
        println!("  {}", figure.line());
        self.figures.push(figure);
    }

    /// A figure from `samples` (in `unit`).
    pub fn add(&mut self, id: &str, label: &str, unit: Unit, samples: &[f64], note: &str) {
        self.push(Figure {
            id: id.into(),
            scenario: self.current.clone(),
            label: label.into(),
            unit,
            spread: Spread::of(samples),
            show_p99: false,
            note: note.into(),
        });
    }

    /// A latency distribution: as [`add`](Self::add), with its p99 shown.
    pub fn add_latency(&mut self, id: &str, label: &str, unit: Unit, samples: &[f64], note: &str) {
        self.add(id, label, unit, samples, note);
        self.figures.last_mut().expect("just added").show_p99 = true;
    }

    /// Durations as a figure in `unit`.
    pub fn add_durations(&mut self, id: &str, label: &str, unit: Unit, samples: &[Duration], note: &str) {
        let values: Vec<f64> = samples.iter().map(|d| unit.of(*d)).collect();
        self.add(id, label, unit, &values, note);
    }

    /// A figure that was not measured, and why.
    pub fn not_measured(&mut self, id: &str, label: &str, unit: Unit, why: &str) {
        self.push(Figure {
            id: id.into(),
            scenario: self.current.clone(),
            label: label.into(),
            unit,
            spread: None,
            show_p99: false,
            note: why.into(),
        });
    }

    /// The figure with `id`, if it was recorded.
    pub fn figure(&self, id: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.id == id)
    }

    /// docs/performance.md for this run.
    pub fn markdown(&self, run: &RunInfo) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Performance\n");
        let _ = writeln!(
            md,
            "Written by the benchmark runner (`bench/`): `cargo run -p bench --release -- all` rewrites \
             docs/performance.md; do not edit it by hand. Every figure is a median with its spread (p10 / p90, min / max) and n, the number of samples; \
             comparisons were measured side by side in this one run. See \"How to read\" at the end.\n"
        );
        let _ = writeln!(md, "## The run\n");
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| mode | {} |", run.mode);
        let _ = writeln!(md, "| date (UTC) | {} |", run.date);
        let _ = writeln!(
            md,
            "| commit | `{}`{} |",
            run.commit,
            if run.dirty { " (tree dirty: uncommitted changes)" } else { " (tree clean)" }
        );
        let _ = writeln!(md, "| machine | {} |", run.machine);
        let _ = writeln!(md, "| kernel | {} |", run.kernel);
        let _ = writeln!(md, "| toolchain | {} |", run.rustc);
        let _ = writeln!(md, "| build | {} |", run.profile);
        let _ = writeln!(
            md,
            "| run as | {} |",
            if run.root {
                "root (network-namespace scenarios ran)"
            } else {
                "not root (network-namespace scenarios not run)"
            }
        );
        let _ = writeln!(md, "| whole run | {:.0} s |", run.elapsed.as_secs_f64());
        let _ = writeln!(md);

        let _ = writeln!(md, "## Goals\n");
        let _ = writeln!(md, "Each goal stated in the issues, beside the figure that measures it.\n");
        let _ = writeln!(md, "| issue | goal | measured | verdict |\n|---|---|---|---|");
        for goal in GOALS {
            let (measured, verdict) = self.judge(goal);
            let _ = writeln!(md, "| #{} | {} | {} | {} |", goal.issue, goal.text, measured, verdict);
        }
        let _ = writeln!(md);

        self.growth(&mut md);
        let _ = writeln!(md, "## Figures\n");
        let mut scenarios: Vec<&str> = Vec::new();
        for f in &self.figures {
            if !scenarios.contains(&f.scenario.as_str()) {
                scenarios.push(&f.scenario);
            }
        }
        for scenario in scenarios {
            let took = self.durations.iter().find(|(s, _)| s == scenario).map(|(_, d)| d.as_secs_f64());
            let about = crate::scenarios::about(scenario).unwrap_or_default();
            let _ = writeln!(md, "### `{scenario}`{}\n", took.map(|t| format!(" ({t:.0} s)")).unwrap_or_default());
            let _ = writeln!(md, "{about}\n");
            let _ = writeln!(
                md,
                "| figure | median | p10 / p90 | min / max | p99 | n | how |\n|---|---|---|---|---|---|---|"
            );
            for f in self.figures.iter().filter(|f| f.scenario == scenario) {
                let u = f.unit;
                match &f.spread {
                    Some(s) => {
                        let p99 = if f.show_p99 { u.format(s.p99) } else { String::new() };
                        let _ = writeln!(
                            md,
                            "| {} | **{}** | {} / {} | {} / {} | {} | {} | {} |",
                            f.label,
                            u.format(s.median),
                            u.format(s.p10),
                            u.format(s.p90),
                            u.format(s.min),
                            u.format(s.max),
                            p99,
                            s.n,
                            f.note
                        );
                    }
                    None => {
                        let _ = writeln!(md, "| {} | — | | | | | {} |", f.label, f.note);
                    }
                }
            }
            let _ = writeln!(md);
        }
        if !self.failures.is_empty() {
            let _ = writeln!(md, "## Scenarios that failed\n");
            for (scenario, why) in &self.failures {
                let _ = writeln!(md, "- `{scenario}`: {}", why.replace('\n', " "));
            }
            let _ = writeln!(md);
        }
        md.push_str(HOW_TO_READ);
        md
    }

    /// The `scaling` and `redis-scaling` figures side by side, one row per
    /// cluster size (medians).
    fn growth(&self, md: &mut String) {
        let sizes = |prefix: &str| {
            let mut sizes: Vec<u32> =
                self.figures.iter().filter_map(|f| f.id.strip_prefix(prefix)?.parse().ok()).collect();
            sizes.sort();
            sizes.dedup();
            sizes
        };
        let (gossip, redis) = (sizes("scaling.rate."), sizes("redis_scaling.single.puts."));
        if gossip.is_empty() && redis.is_empty() {
            return;
        }
        let _ = writeln!(md, "## How cost grows\n");
        self.size_table(
            md,
            "gossip, from the `scaling` scenario (16 writers on one member, every put acknowledged by all).",
            &gossip,
            &[
                ("puts/s", "scaling.rate."),
                ("data-plane bytes per put", "scaling.data_plane."),
                ("bytes on the wire per put", "scaling.wire."),
            ],
        );
        self.size_table(
            md,
            "redis, from the `redis-scaling` scenario (16 writers spread over the members; every member in this one \
             bench process, sharing its 2 cores with the redis-servers: what grows with the member count here is \
             the members' own client-side work on the same cores, not Redis's).",
            &redis,
            &[
                ("puts/s, one redis-server", "redis_scaling.single.puts."),
                ("puts/s, 3-master Redis Cluster", "redis_scaling.cluster.puts."),
                ("gets/s, one redis-server", "redis_scaling.single.gets."),
                ("gets/s, Redis Cluster", "redis_scaling.cluster.gets."),
            ],
        );
    }

    /// One table of [`growth`](Self::growth) under `intro` (none without
    /// `sizes`): a row per member count, a column per (heading, figure id
    /// prefix), each cell the median of figure `PREFIX{members}`.
    fn size_table(&self, md: &mut String, intro: &str, sizes: &[u32], columns: &[(&str, &str)]) {
        if sizes.is_empty() {
            return;
        }
        let headings: Vec<&str> = columns.iter().map(|(heading, _)| *heading).collect();
        let _ = writeln!(md, "{intro}\n");
        let _ = writeln!(md, "| members | {} |\n|---|{}", headings.join(" | "), "---|".repeat(columns.len()));
        for n in sizes {
            let cells: Vec<String> = columns
                .iter()
                .map(|(_, prefix)| {
                    self.figure(&format!("{prefix}{n}"))
                        .and_then(|f| f.spread.map(|s| f.unit.format(s.median)))
                        .unwrap_or_else(|| "not measured".into())
                })
                .collect();
            let _ = writeln!(md, "| {n} | {} |", cells.join(" | "));
        }
        let _ = writeln!(md);
    }

    /// (measured value, verdict) of one goal.
    fn judge(&self, goal: &Goal) -> (String, String) {
        match self.figure(goal.figure) {
            None => ("—".into(), "not measured: its scenario did not run".into()),
            Some(f) => match &f.spread {
                None if f.note.starts_with("not ") => ("—".into(), f.note.clone()),
                None => ("—".into(), format!("not measured: {}", f.note)),
                Some(s) => {
                    let value = goal.stat.pick(s);
                    let verdict = match goal.verdict(value) {
                        Verdict::Met => "met".to_string(),
                        Verdict::NotMet => match crate::goals::limit(goal.figure) {
                            Some(why) => format!("**not met**: {why}"),
                            None => "**not met** (what limits it was not analysed)".to_string(),
                        },
                    };
                    (format!("{} {} (n={})", goal.stat.name(), f.unit.format(value), s.n), verdict)
                }
            },
        }
    }
}

/// When, where and from what the run was made.
pub struct RunInfo {
    /// Which command made it (`all`, `quick`, or the scenarios named).
    pub mode: String,
    pub date: String,
    pub commit: String,
    pub dirty: bool,
    pub machine: String,
    pub kernel: String,
    pub rustc: String,
    pub profile: String,
    pub root: bool,
    pub elapsed: Duration,
}

impl RunInfo {
    /// Reads the facts of this machine and checkout for a run made by `mode`
    /// (`elapsed` is set by the caller).
    pub fn gather(mode: &str) -> RunInfo {
        let output = |program: &str, args: &[&str]| -> Option<String> {
            let out =
                Command::new(program).args(args).current_dir(clusterhost_tests::workspace_root()).output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        RunInfo {
            mode: mode.to_string(),
            date: output("date", &["-u", "+%Y-%m-%d %H:%M"]).unwrap_or_else(|| "unknown".into()),
            commit: output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into()),
            dirty: output("git", &["status", "--porcelain"]).is_none_or(|s| !s.is_empty()),
            machine: format!("{cores} cores ({model}), {:.1} GiB memory", mem_kib / 1024.0 / 1024.0),
            kernel: format!("Linux {kernel}"),
            rustc: output("rustc", &["-V"]).unwrap_or_else(|| "unknown".into()),
            profile: if cfg!(debug_assertions) { "debug (figures not representative)" } else { "release" }.into(),
            // SAFETY: geteuid(2) has no arguments, cannot fail and touches no memory.
            root: unsafe { libc::geteuid() } == 0,
            elapsed: Duration::ZERO,
        }
    }
}

const HOW_TO_READ: &str = "## How to read\n\n\
- **median** is the middle sample; **p10 / p90** bound the middle 80 %; **min / max** are the extremes; \
**p99** is shown for latency distributions; **n** is how many samples the figure has (operations for a latency, \
rounds or runs otherwise). Percentiles are nearest-rank.\n\
- A throughput figure's samples are rounds (each round's ops/s); a latency figure's samples are single operations.\n\
- In-process members each load their own private copy of `gossip.so` (own chitchat, own data plane) on 127.0.0.1; \
process figures use real `clusterhost run` processes; network-namespace figures use veth links on a bridge.\n\
- Nothing here is asserted by a test: CI runs `cargo run -p bench -- quick` to keep the harness working, not to time it.\n";
