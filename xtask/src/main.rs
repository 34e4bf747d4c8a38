//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `node [--strategy gossip|redis] [ARGS...]`: build the host and the
//!   shipped plugins, publish the plugins into ./plugins/ (write, then
//!   rename) with one cluster strategy (gossip by default: no external
//!   server), and run a node whose home is the repository root, passing
//!   ARGS to `clusterhost run`;
//! - `chat`: the showcase (examples/chat, docs/showcase.md) on two nodes of
//!   a gossip cluster on this machine, homes under ./run/chat-1 and
//!   ./run/chat-2: open http://127.0.0.1:8081/?user=ada and
//!   http://127.0.0.1:8082/?user=bob in two tabs;
//! - `build`: the workspace build `node` starts with, alone (after a plain
//!   `cargo build --workspace` it compiles nothing; CI checks that);
//! - `test`: what CI runs: format check, clippy, the whole test suite, every
//!   fuzz target for 10 s (`fuzz/run.sh`, nightly Rust), and the benchmark
//!   runner in quick mode (`cargo run -p bench -- quick`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("node") => node(args.collect()),
        Some("test") => test(),
        Some("chat") => chat(),
        Some("build") => cargo(&["build", "--workspace"]),
        _ => bail!(
            "usage: cargo xtask node [--strategy gossip|redis] [clusterhost run args...] | cargo xtask chat | cargo xtask test | cargo xtask build"
        ),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ is inside the workspace").to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Removes the variables cargo set for xtask itself (`CARGO_PKG_NAME`,
/// `CARGO_MANIFEST_DIR`, ...) from a nested cargo's environment: build
/// scripts that watch them (ring's does) would run again, and the next
/// plain build would undo it. What the user set (`CARGO_TARGET_DIR`,
/// `CARGO_HOME`, `CARGO_INCREMENTAL`, ...) is kept.
fn without_xtask_env(command: &mut Command) -> &mut Command {
    const SET_BY_CARGO_RUN: [&str; 6] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if SET_BY_CARGO_RUN.iter().any(|prefix| key.starts_with(prefix)) {
            command.env_remove(key);
        }
    }
    command
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("+ cargo {}", args.join(" "));
    let status =
        without_xtask_env(Command::new(cargo).args(args).current_dir(root())).status().context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The gossip strategy needs a cluster key; a fresh clone has none (it is
/// a secret, so git-ignored): make one for this machine's node.
fn ensure_cluster_key() -> Result<()> {
    let key = root().join("conf").join("cluster.key");
    if key.exists() {
        return Ok(());
    }
    let mut bytes = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key, hex + "\n").with_context(|| format!("writing {}", key.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    eprintln!("generated conf/cluster.key (the gossip cluster key): copy the same file to every member of a cluster");
    Ok(())
}

/// The library names of the plugin crates under plugins/.
fn shipped_plugins() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root().join("plugins"))? {
        let manifest = entry?.path().join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)?;
        // The `name` line under `[lib]`.
        let lib = text
            .split("[lib]")
            .nth(1)
            .and_then(|lib| lib.lines().find(|l| l.trim_start().starts_with("name")))
            .and_then(|l| l.split('"').nth(1))
            .with_context(|| format!("{} has no [lib] name", manifest.display()))?;
        names.push(lib.to_string());
    }
    names.sort();
    Ok(names)
}

/// The shipped cluster strategies: (name for --strategy, library name).
/// Only one may be in plugins/ at a time (both provide cluster-strategy).
const STRATEGIES: [(&str, &str); 2] = [("gossip", "gossip"), ("redis", "redis_strategy")];

fn node(mut run_args: Vec<String>) -> Result<()> {
    let mut strategy = "gossip".to_string();
    if run_args.first().map(String::as_str) == Some("--strategy") {
        strategy = run_args.get(1).cloned().context("--strategy needs a value: gossip or redis")?;
        run_args.drain(..2);
    }
    let Some(&(_, chosen)) = STRATEGIES.iter().find(|(name, _)| *name == strategy) else {
        bail!("unknown strategy {strategy:?}: use --strategy gossip (embedded) or --strategy redis (conf/redis.toml)");
    };
    cargo(&["build", "--workspace"])?;
    ensure_cluster_key()?;
    let plugins = root().join("plugins");
    for name in shipped_plugins()? {
        let is_strategy = STRATEGIES.iter().any(|(_, lib)| *lib == name);
        if is_strategy && name != chosen {
            let published = plugins.join(format!("{name}.so"));
            if published.exists() {
                std::fs::remove_file(&published)?;
                eprintln!("removed plugins/{name}.so: the node runs the {strategy} strategy");
            }
            continue;
        }
        let built = target_dir().join("debug").join(format!("lib{name}.so"));
        // Publish under a temporary name, then rename: a running node never
        // sees a half-written file.
        let tmp = plugins.join(format!(".{name}.so.tmp"));
        std::fs::copy(&built, &tmp).with_context(|| format!("copying {}", built.display()))?;
        std::fs::rename(&tmp, plugins.join(format!("{name}.so")))?;
        eprintln!("published plugins/{name}.so");
    }
    let bin = target_dir().join("debug").join("clusterhost");
    // Become the node, so SIGTERM and Ctrl-C reach it directly.
    use std::os::unix::process::CommandExt;
    let error = Command::new(&bin).arg("run").arg("--home").arg(root()).args(run_args).exec();
    Err(error).with_context(|| format!("running {}", bin.display()))
}

/// The chat showcase on two gossip nodes of this machine until Ctrl-C.
fn chat() -> Result<()> {
    cargo(&["build", "--workspace"])?;
    ensure_cluster_key()?;
    let debug = target_dir().join("debug");
    let members = "members = [\"127.0.0.1:5801\", \"127.0.0.1:5802\"]";
    let mut children = Vec::new();
    for (i, name) in ["chat-1", "chat-2"].into_iter().enumerate() {
        let home = root().join("run").join(name);
        std::fs::create_dir_all(home.join("plugins"))?;
        std::fs::create_dir_all(home.join("conf"))?;
        std::fs::copy(root().join("conf/cluster.key"), home.join("conf/cluster.key"))?;
        std::fs::write(home.join("conf/clusterhost.properties"), "cluster.startup.delay.seconds = 0\n")?;
        std::fs::write(
            home.join("conf/gossip.toml"),
            format!("[network]\nport_auto_increment = false\n\n[discovery]\n{members}\n"),
        )?;
        let tmp = home.join("plugins/.gossip.so.tmp");
        std::fs::copy(debug.join("libgossip.so"), &tmp).context("copying the gossip build")?;
        std::fs::rename(&tmp, home.join("plugins/gossip.so"))?;
        let web = format!("127.0.0.1:{}", 8081 + i);
        let child = Command::new(debug.join("clusterhost-chat"))
            .args(["--home"])
            .arg(&home)
            .args(["--listen", &web, "--node-name", name])
            .args(["--cluster-port", &(5801 + i).to_string(), "--admin-port", &(9191 + i).to_string()])
            .spawn()
            .context("starting clusterhost-chat")?;
        eprintln!("{name}: chat on http://{web}/?user=NAME, admin console on http://127.0.0.1:{}/", 9191 + i);
        children.push(child);
    }
    eprintln!(
        "open http://127.0.0.1:8081/?user=ada and http://127.0.0.1:8082/?user=bob in two tabs; Ctrl-C stops both nodes"
    );
    for mut child in children {
        child.wait()?;
    }
    Ok(())
}

/// Every fuzz target for a bounded time (`fuzz/run.sh`, 10 s each unless
/// FUZZ_SECONDS says otherwise), with nightly Rust; its own target
/// directory beside the workspace's, kept between runs.
fn fuzz() -> Result<()> {
    let dir = target_dir()
        .with_file_name(format!("{}-fuzz", target_dir().file_name().and_then(|n| n.to_str()).unwrap_or("target")));
    eprintln!("+ bash fuzz/run.sh (CARGO_TARGET_DIR={})", dir.display());
    let mut command = Command::new("bash");
    command.arg("fuzz/run.sh").current_dir(root());
    // Another toolchain: not this cargo, nor the toolchain rustup picked for xtask.
    without_xtask_env(&mut command).env_remove("CARGO").env_remove("RUSTUP_TOOLCHAIN");
    let status = command.env("CARGO_TARGET_DIR", &dir).status().context("running fuzz/run.sh")?;
    if !status.success() {
        bail!("fuzz/run.sh failed ({status}): a target found a crash (its input is under fuzz/artifacts/) or could not be built; see docs/fuzzing.md");
    }
    Ok(())
}

fn test() -> Result<()> {
    // Each step's wall time, printed at the end (and on a failure), so a
    // run that grows says where: CI must stay under 30 minutes.
    let mut took: Vec<(&str, std::time::Duration)> = Vec::new();
    let result = (|| {
        let mut step = |name: &'static str, run: &dyn Fn() -> Result<()>| {
            let started = std::time::Instant::now();
            let outcome = run();
            took.push((name, started.elapsed()));
            outcome
        };
        step("fmt", &|| cargo(&["fmt", "--all", "--", "--check"]))?;
        step("clippy", &|| cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
        step("test", &|| cargo(&["test", "--workspace"]))?;
        step("fuzz", &fuzz)?;
        // The benchmark runner in quick mode, so the harness cannot rot; CI
        // checks it runs, not how fast (docs/performance.md holds a full run).
        // A debug build: the tests above built most of it already, while a
        // release build of the workspace would add minutes to every CI run.
        step("bench quick", &|| cargo(&["run", "-p", "bench", "--", "quick"]))
    })();
    let steps: Vec<String> = took.iter().map(|(name, d)| format!("{name} {:.0} s", d.as_secs_f64())).collect();
    eprintln!("xtask test: {}", steps.join(", "));
    result
}
