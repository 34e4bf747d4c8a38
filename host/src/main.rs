//! The `clusterhost` command: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use clusterhost::admin::client::{self, AdminClient, Answer, ClientError};
use clusterhost::plugins::manifest;
use clusterhost::{node, upgrade, PluginRecord};
use serde_json::Value;

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
        /// This node's name, its member id (`node.name`; default: the host name).
        #[arg(long, env = "CLUSTERHOST_NODE_NAME")]
        node_name: Option<String>,
        /// Address cluster strategies bind to (`node.bind`; default 127.0.0.1).
        #[arg(long, env = "CLUSTERHOST_BIND")]
        bind: Option<String>,
        /// The strategy's member port (`cluster.port`; default: the strategy's own, e.g. 5701).
        #[arg(long, env = "CLUSTERHOST_CLUSTER_PORT")]
        cluster_port: Option<String>,
        /// The admin API port (`admin.port`; default 9090).
        #[arg(long, env = "CLUSTERHOST_ADMIN_PORT")]
        admin_port: Option<String>,
        /// The admin API address (`admin.bind`; default 127.0.0.1; off loopback the token is needed for reads too).
        #[arg(long, env = "CLUSTERHOST_ADMIN_BIND")]
        admin_bind: Option<String>,
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
}

/// How to reach a node's admin API.
#[derive(Args, Clone)]
struct AdminArgs {
    /// The node's admin API.
    #[arg(long = "admin", value_name = "URL", env = "CLUSTERHOST_ADMIN", default_value = client::DEFAULT_URL)]
    admin: String,
    /// The node's admin token file, for writes (and reads off loopback); default: conf/admin.token when it exists.
    #[arg(long, value_name = "FILE", env = "CLUSTERHOST_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl AdminArgs {
    fn client(&self) -> Result<AdminClient, ClientError> {
        let token = match &self.token_file {
            Some(file) => Some(client::read_token_file(file)?),
            None => client::read_token_file(std::path::Path::new(clusterhost::home::TOKEN_FILE)).ok(),
        };
        Ok(AdminClient::new(&self.admin, token))
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
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum UpgradeMode {
    Rolling,
    SplitBrain,
    Offline,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Print the value of KEY in CACHE.
    Get {
        cache: String,
        key: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set KEY in CACHE to VALUE.
    Put {
        cache: String,
        key: String,
        value: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove KEY from CACHE.
    Remove {
        cache: String,
        key: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Print a plugin file's manifest, read without loading the plugin.
    Inspect {
        /// The plugin's .so file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { home, node_name, bind, cluster_port, admin_port, admin_bind } => {
            let overrides = [
                ("node.name", node_name, "--node-name / CLUSTERHOST_NODE_NAME"),
                ("node.bind", bind, "--bind / CLUSTERHOST_BIND"),
                ("cluster.port", cluster_port, "--cluster-port / CLUSTERHOST_CLUSTER_PORT"),
                ("admin.port", admin_port, "--admin-port / CLUSTERHOST_ADMIN_PORT"),
                ("admin.bind", admin_bind, "--admin-bind / CLUSTERHOST_ADMIN_BIND"),
            ]
            .into_iter()
            .filter_map(|(key, value, source)| value.map(|v| (key.to_string(), v, source.to_string())))
            .collect();
            let _guard = clusterhost::logging::init();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(format!("could not start the async runtime: {e}")),
            };
            let result = runtime.block_on(node::run(node::NodeOptions { home, overrides }));
            // A plugin thread stuck in its code must not keep the process alive.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.to_string()),
            }
        }
        Command::Plugins { command: PluginsCommand::Inspect { file, json } } => match manifest::read_manifest(&file) {
            Ok(m) if json => print_json(&m),
            Ok(m) => {
                println!("id:            {}", m.id);
                println!("version:       {}", m.version);
                println!("description:   {}", m.description);
                println!("host_req:      {}", m.host_req);
                println!("api_req:       {}", m.api_req);
                println!("provides:      {}", m.provides.join(", "));
                println!("conflicts:     {}", m.conflicts.join(", "));
                println!("wire_protocol: {}", m.wire_protocol);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e.to_string()),
        },
        Command::Plugins { command: PluginsCommand::List { admin } } => api(
            &admin,
            |c| c.get("/api/plugins"),
            |body| {
                let records: Vec<PluginRecord> = serde_json::from_value(body.clone()).unwrap_or_default();
                print_plugins(&records);
            },
        ),
        Command::Plugins { command: PluginsCommand::Install { file, name, admin } } => {
            let name = name.or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
            let bytes = match std::fs::read(&file) {
                Ok(bytes) => bytes,
                Err(e) => return fail(format!("could not read the plugin file {}: {e}", file.display())),
            };
            let path = format!("/api/plugins?name={}", client::segment(&name));
            api(
                &admin,
                |c| c.upload(&path, &bytes),
                |body| {
                    let outcome = body["outcome"].as_str().unwrap_or("written");
                    println!("{name}: {outcome}");
                    if let Some(note) = body["note"].as_str() {
                        println!("{note}");
                    }
                    if let Ok(record) = serde_json::from_value::<PluginRecord>(body["plugin"].clone()) {
                        print_plugins(&[record]);
                    }
                },
            )
        }
        Command::Plugins { command: PluginsCommand::Remove { name, admin } } => {
            let path = format!("/api/plugins/{}", client::segment(&name));
            api(
                &admin,
                |c| c.delete(&path),
                |body| {
                    println!("{name}: removed from plugins/");
                    if let Ok(record) = serde_json::from_value::<PluginRecord>(body["plugin"].clone()) {
                        print_plugins(&[record]);
                    }
                },
            )
        }
        Command::Cluster { command: ClusterCommand::Status { admin } } => {
            api(&admin, |c| c.get("/api/cluster"), print_cluster)
        }
        Command::Cluster { command: ClusterCommand::Enable { admin } } => {
            api(&admin, |c| c.post("/api/cluster/enable", b""), |_| println!("clustering enabled cluster-wide"))
        }
        Command::Cluster { command: ClusterCommand::Disable { admin } } => {
            api(&admin, |c| c.post("/api/cluster/disable", b""), |_| println!("clustering disabled cluster-wide"))
        }
        Command::Cluster {
            command: ClusterCommand::Upgrade { plugin, mode, nodes, previous, dry_run, gate_timeout, admin },
        } => {
            let token = match &admin.token_file {
                Some(file) => match client::read_token_file(file) {
                    Ok(token) => Some(token),
                    Err(e) => return fail(e.to_string()),
                },
                None => client::read_token_file(std::path::Path::new(clusterhost::home::TOKEN_FILE)).ok(),
            };
            let options = upgrade::UpgradeOptions {
                plugin,
                previous,
                mode: match mode {
                    UpgradeMode::Rolling => upgrade::Mode::Rolling,
                    UpgradeMode::SplitBrain => upgrade::Mode::SplitBrain,
                    UpgradeMode::Offline => upgrade::Mode::Offline,
                },
                nodes: if nodes.is_empty() { vec![admin.admin.clone()] } else { nodes },
                token,
                dry_run,
                gate_timeout: std::time::Duration::from_secs(gate_timeout),
            };
            let mut out = |line: &str| {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{line}");
                let _ = stdout.flush();
            };
            match upgrade::run(&options, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.to_string()),
            }
        }
        Command::Cache { command: CacheCommand::Get { cache, key, admin } } => {
            let path = cache_path(&cache, &key);
            api(&admin, |c| c.get(&path), |body| println!("{}", body["value"].as_str().unwrap_or_default()))
        }
        Command::Cache { command: CacheCommand::Put { cache, key, value, admin } } => {
            let path = cache_path(&cache, &key);
            api(&admin, |c| c.put(&path, value.as_bytes()), |_| println!("{cache}/{key} set"))
        }
        Command::Cache { command: CacheCommand::Remove { cache, key, admin } } => {
            let path = cache_path(&cache, &key);
            api(&admin, |c| c.delete(&path), |_| println!("{cache}/{key} removed"))
        }
    }
}

fn cache_path(cache: &str, key: &str) -> String {
    format!("/api/caches/{}/{}", client::segment(cache), client::segment(key))
}

/// Calls the API; prints its JSON with --json, else `text(body)`. An error
/// (the server's message) goes to stderr with a non-zero exit code.
fn api(
    admin: &AdminArgs,
    call: impl FnOnce(&AdminClient) -> Result<Answer, ClientError>,
    text: impl FnOnce(&Value),
) -> ExitCode {
    match admin.client().and_then(|c| call(&c)) {
        Ok(answer) if admin.json => print_json(&answer.body),
        Ok(answer) => {
            text(&answer.body);
            ExitCode::SUCCESS
        }
        Err(e) => {
            if admin.json {
                if let ClientError::Api { body, .. } = &e {
                    if let Ok(s) = serde_json::to_string_pretty(body) {
                        println!("{s}");
                    }
                }
            }
            fail(e.to_string())
        }
    }
}

fn print_plugins(records: &[PluginRecord]) {
    println!("{:<16} {:<10} {:<9} {:<24} REASON", "ID", "VERSION", "STATE", "FILE");
    for p in records {
        let version = p.version.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let file = p.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        println!(
            "{:<16} {:<10} {:<9} {:<24} {}",
            p.id.as_deref().unwrap_or("-"),
            version,
            p.state.to_string(),
            file,
            p.reason.as_deref().unwrap_or("")
        );
    }
}

fn state_text(state: &Value) -> String {
    let name = state["state"].as_str().unwrap_or("unknown");
    match state["reason"].as_str().or(state["detail"].as_str()) {
        Some(reason) => format!("{name} ({reason})"),
        None => name.to_string(),
    }
}

fn print_cluster(body: &Value) {
    println!(
        "node {}: {}; clustering {}; strategy {}",
        body["node"].as_str().unwrap_or("?"),
        state_text(&body["state"]),
        if body["enabled"].as_bool() == Some(true) { "enabled" } else { "disabled" },
        body["strategy"].as_str().unwrap_or("none"),
    );
    if let Some(warn) = body["warn"].as_str() {
        println!("warning: {warn}");
    }
    let members = body["members"].as_array().cloned().unwrap_or_default();
    if members.is_empty() {
        println!("no members: this node is not in a cluster right now");
        return;
    }
    let details = body["details"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<20} {:<22} {:<7} {:<10} {:<10} {:<22} REASON",
        "MEMBER", "ADDRESS", "SENIOR", "PLUGIN", "PLUGIN-ST", "STATE"
    );
    for m in members {
        let id = m["id"].as_str().unwrap_or("?");
        let detail = details.iter().find(|d| d["id"].as_str() == Some(id)).cloned().unwrap_or(Value::Null);
        let (state, reason) = match detail["unreachable"].as_str() {
            Some(why) => ("unreachable".to_string(), why.to_string()),
            None => (
                detail["cluster"]["state"].as_str().unwrap_or("unknown").to_string(),
                [detail["cluster"]["reason"].as_str(), detail["plugin"]["reason"].as_str()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        let local = if m["local"].as_bool() == Some(true) { " (this node)" } else { "" };
        println!(
            "{:<20} {:<22} {:<7} {:<10} {:<10} {:<22} {}",
            format!("{id}{local}"),
            m["address"].as_str().unwrap_or(""),
            if m["senior"].as_bool() == Some(true) { "yes" } else { "" },
            m["plugin_version"].as_str().unwrap_or(""),
            detail["plugin"]["state"].as_str().unwrap_or("-"),
            state,
            reason
        );
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("could not encode JSON: {e}")),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
