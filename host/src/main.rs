//! The `clusterhost` command: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use clusterhost::admin::client;
use clusterhost::cli::{self, AdminTarget};
use clusterhost::upgrade;

#[derive(Parser)]
#[command(name = "clusterhost", version, about = "Pluggable clustering runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: load every plugin in HOME/plugins, run until SIGTERM or Ctrl-C.
    Run {
        /// The node's home: holds conf/ and plugins/.
        #[arg(long, default_value = ".", env = "CLUSTERHOST_HOME")]
        home: PathBuf,
        #[command(flatten)]
        flags: cli::run::RunFlags,
    },
    /// Inspect, list, install and remove plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// The running node's clustering, through its admin API.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Read and write cache entries (string keys and values), through the admin API.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Check a cluster-strategy plugin against the strategy contract.
    Strategy {
        #[command(subcommand)]
        command: StrategyCommand,
    },
}

#[derive(Subcommand)]
enum StrategyCommand {
    /// Run the strategy contract suite against FILE on in-process members,
    /// one line per rule (docs/strategy-authoring.md); exits non-zero on any failure.
    Verify {
        /// The strategy plugin's .so file.
        #[arg(required_unless_present = "builtin")]
        file: Option<PathBuf>,
        /// Verify a built-in strategy instead of a file: `memory`, or `broken` (deliberate contract bugs).
        #[arg(long, value_name = "NAME", conflicts_with = "file")]
        builtin: Option<String>,
        /// The strategy's configuration, written as each member's conf/<plugin id>.toml;
        /// {namespace}, {member}, {port} and {members} in it are filled in per member.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Another file for each member's conf/, under its own name (placeholders filled in).
        #[arg(long, value_name = "FILE")]
        conf_file: Vec<PathBuf>,
        /// How many members the rules that scale start.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=26))]
        members: u16,
        /// Run only this rule (repeatable).
        #[arg(long, value_name = "NAME")]
        rule: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How to reach a node's admin API.
#[derive(Args, Clone)]
struct AdminArgs {
    /// The node's admin API.
    #[arg(long = "admin", value_name = "URL", env = "CLUSTERHOST_ADMIN", default_value = client::DEFAULT_URL)]
    admin: String,
    /// The admin token file, for writes (and reads off loopback): one token for every node not in --tokens.
    /// Default: the token of the node whose home is the current directory, when it is the node asked
    /// (its run/admin.json), else conf/admin.token when no node runs here.
    #[arg(long, value_name = "FILE", env = "CLUSTERHOST_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A map of admin URLs to tokens, `URL TOKEN` per line, for members with tokens of their own.
    #[arg(long, value_name = "FILE", env = "CLUSTERHOST_ADMIN_TOKENS")]
    tokens: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl AdminArgs {
    fn target(self) -> AdminTarget {
        AdminTarget { url: self.admin, token_file: self.token_file, tokens_file: self.tokens, json: self.json }
    }
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, senior, this node's state, each member's plugin version, state and reason.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Switch clustering on, on every member.
    Enable {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Switch clustering off, on every member (each keeps its caches).
    Disable {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// This node's events (joins, leaves, senior, clustering state, plugins,
    /// settings, drains), one a line with its local time; --json: one JSON
    /// object a line with epoch milliseconds.
    Events {
        /// Then print every new event as it happens, until the node stops or Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Only the events after this sequence number (each line shows its #number).
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Upgrade the cluster-strategy plugin on every member (docs/upgrade.md).
    Upgrade {
        /// The new plugin file.
        #[arg(long, value_name = "FILE")]
        plugin: PathBuf,
        /// How: rolling (one member at a time, hot replace), split-brain
        /// (disable, replace everywhere, enable), offline (prints the runbook).
        #[arg(long, value_enum)]
        mode: UpgradeMode,
        /// Every member's admin API URL (default: --admin alone).
        #[arg(long, value_name = "URL,URL,...", value_delimiter = ',')]
        nodes: Vec<String>,
        /// The plugin file the members run now, uploaded back if a member fails its gate.
        #[arg(long, value_name = "FILE")]
        previous: Option<PathBuf>,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The longest a member may take to pass a health gate, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        gate_timeout: u64,
        /// How long each member is not ready (/readyz 503) before its plugin
        /// is replaced, and how long the flow waits after it is ready again:
        /// at least a load balancer's fall x inter (docs/load-balancing.md).
        /// 0: no drain.
        #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = drain_seconds)]
        drain: std::time::Duration,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum UpgradeMode {
    Rolling,
    SplitBrain,
    Offline,
    /// Another strategy: each member in turn removes the one it runs and installs --plugin.
    Switch,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Print the value of KEY in CACHE.
    Get {
        cache: String,
        key: String,
        /// Also print the entry's version (what --if-version expects).
        #[arg(long)]
        version: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set KEY in CACHE to VALUE.
    Put {
        cache: String,
        key: String,
        value: String,
        /// Only if KEY holds nothing (atomic across the cluster); exit 3 if it holds a value.
        #[arg(long, conflicts_with = "if_version")]
        if_absent: bool,
        /// Only if KEY's entry carries version N (see `cache get --version`); exit 3 if not.
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        /// The entry expires this long after the write, whatever the cache's
        /// own time to live (e.g. 30s, 500ms, 2m, 1h).
        #[arg(long, value_name = "DURATION", value_parser = ttl, conflicts_with_all = ["if_absent", "if_version"])]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove KEY from CACHE.
    Remove {
        cache: String,
        key: String,
        /// Only if KEY's entry carries version N; exit 3 if not.
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print CACHE's entry events as they happen (every member's, each with
    /// the member it came from), one a line, until interrupted or the node stops.
    Watch {
        cache: String,
        /// Only the changes made through this node.
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Print a plugin file's manifest, read without loading the plugin, and who signed it.
    Inspect {
        /// The plugin's .so file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Make a minisign key pair for signing plugins: OUT.key (secret) and OUT.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, default_value = "clusterhost-signing")]
        out: PathBuf,
        /// Leave the secret key without a password (for automation; protect the file instead).
        #[arg(long)]
        unencrypted: bool,
        /// Read the secret key's password from the first line of FILE instead of the terminal.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Sign a plugin file: writes FILE.minisig beside it.
    Sign {
        /// The plugin's .so file.
        file: PathBuf,
        /// The minisign secret key (from keygen).
        #[arg(long)]
        key: PathBuf,
        /// Read the secret key's password from the first line of FILE instead of the terminal.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Check FILE.minisig: prints the signer's key id, the trusted comment and the verdict.
    Verify {
        /// The plugin's .so file.
        file: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// List the running node's plugin files with state and reason.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Upload FILE into the node's plugins/ (a hot upgrade if the name exists); waits for the outcome.
    Install {
        /// The plugin's .so file.
        file: PathBuf,
        /// The name to publish it under (default: FILE's name).
        #[arg(long)]
        name: Option<String>,
        /// Its detached signature (default: FILE.minisig, sent when it exists).
        #[arg(long)]
        signature: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove plugins/NAME from the node; the node stops the plugin.
    Remove {
        /// The plugin file's name, e.g. hello.so.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Which keys a signature is checked against.
#[derive(clap::Args)]
struct TrustArgs {
    /// Trust exactly this minisign public key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// A node home: its conf/trusted-keys/ and the revocations in its conf/clusterhost.properties.
    #[arg(long, default_value = ".")]
    home: PathBuf,
}

impl TrustArgs {
    fn source(self) -> cli::signing::TrustSource {
        cli::signing::TrustSource { key: self.key, home: self.home }
    }
}

/// `--drain SECONDS`: 0 to 60 (a node refuses a longer drain).
fn drain_seconds(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
        .filter(|d| *d <= std::time::Duration::from_secs(60))
        .ok_or_else(|| format!("{text:?} is not a number of seconds from 0 to 60; e.g. --drain 3"))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { home, flags } => cli::run::run(home, flags),
        Command::Plugins { command } => match command {
            PluginsCommand::Inspect { file, json, trust } => cli::plugins::inspect(&file, json, &trust.source()),
            PluginsCommand::Keygen { out, unencrypted, password_file, force } => {
                cli::signing::keygen(&out, unencrypted, password_file.as_deref(), force)
            }
            PluginsCommand::Sign { file, key, password_file } => {
                cli::signing::sign(&file, &key, password_file.as_deref())
            }
            PluginsCommand::Verify { file, trust } => cli::signing::verify(&file, &trust.source()),
            PluginsCommand::List { admin } => cli::plugins::list(&admin.target()),
            PluginsCommand::Install { file, name, signature, admin } => {
                cli::plugins::install(&admin.target(), &file, name, signature.as_deref())
            }
            PluginsCommand::Remove { name, admin } => cli::plugins::remove(&admin.target(), &name),
        },
        Command::Cluster { command } => match command {
            ClusterCommand::Status { admin } => cli::cluster::status(&admin.target()),
            ClusterCommand::Enable { admin } => cli::cluster::switch(&admin.target(), true),
            ClusterCommand::Disable { admin } => cli::cluster::switch(&admin.target(), false),
            ClusterCommand::Events { follow, after, admin } => cli::cluster::events(&admin.target(), follow, after),
            ClusterCommand::Upgrade { plugin, mode, nodes, previous, dry_run, gate_timeout, drain, admin } => {
                let options = upgrade::UpgradeOptions {
                    plugin,
                    previous,
                    mode: match mode {
                        UpgradeMode::Rolling => upgrade::Mode::Rolling,
                        UpgradeMode::SplitBrain => upgrade::Mode::SplitBrain,
                        UpgradeMode::Offline => upgrade::Mode::Offline,
                        UpgradeMode::Switch => upgrade::Mode::Switch,
                    },
                    nodes,
                    tokens: Default::default(),
                    dry_run,
                    gate_timeout: std::time::Duration::from_secs(gate_timeout),
                    drain,
                };
                cli::cluster::upgrade(&admin.target(), options)
            }
        },
        Command::Strategy { command } => match command {
            StrategyCommand::Verify { file, builtin, config, conf_file, members, rule, json } => {
                cli::strategy::verify(cli::strategy::VerifyOptions {
                    file,
                    builtin,
                    config,
                    conf_files: conf_file,
                    members: usize::from(members),
                    rules: rule,
                    json,
                })
            }
        },
        Command::Cache { command } => match command {
            CacheCommand::Get { cache, key, version, admin } => cli::cache::get(&admin.target(), &cache, &key, version),
            CacheCommand::Put { cache, key, value, if_absent, if_version, ttl, admin } => {
                let condition = match (if_absent, if_version, ttl) {
                    (true, _, _) => cli::cache::Condition::Absent,
                    (false, Some(n), _) => cli::cache::Condition::Version(n),
                    (false, None, Some(ttl)) => cli::cache::Condition::Ttl(ttl),
                    (false, None, None) => cli::cache::Condition::None,
                };
                cli::cache::put(&admin.target(), &cache, &key, &value, condition)
            }
            CacheCommand::Remove { cache, key, if_version, admin } => {
                let condition = if_version.map_or(cli::cache::Condition::None, cli::cache::Condition::Version);
                cli::cache::remove(&admin.target(), &cache, &key, condition)
            }
            CacheCommand::Watch { cache, local, admin } => cli::cache::watch(&admin.target(), &cache, local),
        },
    }
}

/// A `--ttl`: a human duration (30s, 500ms, 2m, 1h) from 1 ms to 100 years.
fn ttl(text: &str) -> Result<std::time::Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e}; write it like 30s, 500ms, 2m or 1h"))?;
    // The admin API's bound (100 years of 365 days, in ms).
    if ttl < std::time::Duration::from_millis(1) || ttl > std::time::Duration::from_secs(100 * 365 * 86_400) {
        return Err("a time to live is from 1ms to 36500 days (write 36500d at most)".into());
    }
    Ok(ttl)
}
