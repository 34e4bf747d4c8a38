//! How cost grows with the cluster: replicated puts/s and bytes sent per
//! put at 1, 3, 5 and 10 in-process gossip members. Each size runs in a
//! helper process; as root, inside a network namespace of its own, whose
//! loopback counters then see only that cluster's traffic.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clusterhost_tests::cluster::{Backend, TestCluster};
use clusterhost_tests::netns::{self, Lab};
use serde_json::{json, Value};

use super::cache_ops::{concurrent_round, BenchCache};
use super::partition::PREFIX;
use super::{Ctx, Mode, Scenario};
use crate::figure::Unit;
use crate::report::Report;

const WRITERS: u64 = 16;

pub struct Scaling;

impl Scenario for Scaling {
    fn name(&self) -> &'static str {
        "scaling"
    }

    fn about(&self) -> &'static str {
        "N in-process gossip members (N = 1, 3, 5, 10) in a helper process; 16 concurrent writers put 64-byte \
         values on one member (each put acknowledged by every member), in rounds. Bytes per put: the data-plane \
         bytes every member sent (the gossip plugin's `bytes_sent` counter: sealed frames and their length \
         prefixes), and, as root, everything on the wire (the loopback `tx_bytes` of a network namespace holding \
         only that cluster: IP and TCP/UDP headers, acknowledgements and chitchat's UDP gossip included). Both \
         have the idle rate, measured just before with no puts, subtracted."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let sizes: &[usize] = ctx.pick(&[1, 3, 5, 10], &[1, 3]);
        let why_not = netns::unavailable();
        if let Some(why) = &why_not {
            println!("  bytes on the wire not measured: {why}");
        }
        let exe = std::env::current_exe().expect("the runner's own path");
        let mode = if ctx.mode == Mode::Full { "full" } else { "quick" };
        for &n in sizes {
            let lab = why_not.is_none().then(|| Lab::isolated(PREFIX, &format!("scale{n}")));
            let mut command = match &lab {
                Some(lab) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", &lab.members[0]]).arg(&exe);
                    c
                }
                None => Command::new(&exe),
            };
            command
                .args(["__scaling-worker", &n.to_string(), mode, if lab.is_some() { "lo" } else { "none" }])
                .env(clusterhost_tests::ARTIFACTS_ENV, clusterhost_tests::artifacts());
            let output = run_bounded(command, HELPER_DEADLINE);
            drop(lab);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "the scaling helper for {n} members failed ({}): {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
            let result: Value = stdout
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
                .unwrap_or_else(|| panic!("no result from the scaling helper: {stdout}"));
            let numbers = |key: &str| -> Vec<f64> {
                result[key].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
            };
            report.add(
                &format!("scaling.rate.{n}"),
                &format!("puts/s, {WRITERS} writers, {}", members(n)),
                Unit::OpsPerSec,
                &numbers("rates"),
                "per round",
            );
            let idle = result["idle_data_plane_bytes_per_s"].as_f64().unwrap_or(0.0);
            report.add(
                &format!("scaling.data_plane.{n}"),
                &format!("data-plane bytes sent per put, {}", members(n)),
                Unit::Bytes,
                &numbers("data_plane_per_put"),
                &format!("all members; idle {idle:.0} B/s subtracted"),
            );
            let label = format!("bytes on the wire per put, {}", members(n));
            match &why_not {
                None => {
                    let idle = result["idle_wire_bytes_per_s"].as_f64().unwrap_or(0.0);
                    report.add(
                        &format!("scaling.wire.{n}"),
                        &label,
                        Unit::Bytes,
                        &numbers("wire_per_put"),
                        &format!("namespace loopback tx; idle {idle:.0} B/s subtracted"),
                    );
                    report.add(
                        &format!("scaling.idle.{n}"),
                        &format!("idle bytes/s on the wire per member, {}", members(n)),
                        Unit::Bytes,
                        &[idle / n as f64],
                        "namespace loopback tx with no puts (chitchat's gossip, the data plane's idle connections), ÷ members",
                    );
                }
                Some(why) => report.not_measured(
                    &format!("scaling.wire.{n}"),
                    &label,
                    Unit::Bytes,
                    &format!("not measured: {why}"),
                ),
            }
        }
    }
}

/// How long one helper may take before it is killed (a full one takes about 10 s).
const HELPER_DEADLINE: Duration = Duration::from_secs(180);

/// Runs `command` to completion, capturing its output; kills it after `deadline`.
fn run_bounded(mut command: Command, deadline: Duration) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the scaling helper starts");
    // Drain both pipes on threads, so a chatty helper never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the helper can be waited for") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the scaling helper did not finish within {deadline:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The helper process: `__scaling-worker N full|quick lo|none`; prints one JSON line.
pub fn worker(args: &[String]) -> Result<()> {
    let [n, mode, wire] = args else { bail!("usage: __scaling-worker N full|quick lo|none") };
    let n: usize = n.parse().context("N members")?;
    let (rounds, round, idle) = match mode.as_str() {
        "full" => (5, Duration::from_millis(600), Duration::from_secs(2)),
        _ => (2, Duration::from_millis(200), Duration::from_millis(500)),
    };
    let wire = wire == "lo";
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(async {
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut cluster = TestCluster::clustered(Backend::Gossip, &refs).await;
        let cache: BenchCache = cluster.node("m0").caches().cache("scale");
        // Let the join's state transfers finish before anything is counted.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counters = |cluster: &TestCluster| -> (f64, f64) {
            let data_plane: u64 = cluster
                .nodes
                .iter()
                .flat_map(|node| node.cluster.strategy_stats())
                .filter(|(name, _)| name == "bytes_sent")
                .map(|(_, v)| v)
                .sum();
            let lo = if wire {
                std::fs::read_to_string("/sys/class/net/lo/statistics/tx_bytes")
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            } else {
                f64::NAN
            };
            (data_plane as f64, lo)
        };
        let before = counters(&cluster);
        let started = std::time::Instant::now();
        tokio::time::sleep(idle).await;
        let after = counters(&cluster);
        let secs = started.elapsed().as_secs_f64();
        let idle_rate = ((after.0 - before.0) / secs, (after.1 - before.1) / secs);
        let (mut rates, mut data_plane, mut on_wire) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let before = counters(&cluster);
            let (puts, took) = concurrent_round(&cache, WRITERS, round).await;
            let after = counters(&cluster);
            let secs = took.as_secs_f64();
            rates.push(puts as f64 / secs);
            data_plane.push(((after.0 - before.0) - idle_rate.0 * secs) / puts as f64);
            if wire {
                on_wire.push(((after.1 - before.1) - idle_rate.1 * secs) / puts as f64);
            }
        }
        for name in &refs {
            cluster.detach(name).await;
        }
        json!({
            "members": n,
            "rates": rates,
            "data_plane_per_put": data_plane,
            "wire_per_put": on_wire,
            "idle_data_plane_bytes_per_s": idle_rate.0,
            "idle_wire_bytes_per_s": if wire { idle_rate.1 } else { 0.0 },
        })
    });
    println!("{result}");
    Ok(())
}

/// "1 member", "3 members".
fn members(n: usize) -> String {
    if n == 1 {
        "1 member".into()
    } else {
        format!("{n} members")
    }
}
