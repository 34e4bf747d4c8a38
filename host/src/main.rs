//! The `clusterhost` command: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clusterhost::{manifest, node, status};

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
    },
    /// Inspect and list plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
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
    /// List the plugins of the node running with home HOME, with state and reason.
    List {
        #[arg(long, default_value = ".", env = "CLUSTERHOST_HOME")]
        home: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { home, node_name, bind, cluster_port, admin_port } => {
            let overrides = [
                ("node.name", node_name, "--node-name / CLUSTERHOST_NODE_NAME"),
                ("node.bind", bind, "--bind / CLUSTERHOST_BIND"),
                ("cluster.port", cluster_port, "--cluster-port / CLUSTERHOST_CLUSTER_PORT"),
                ("admin.port", admin_port, "--admin-port / CLUSTERHOST_ADMIN_PORT"),
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
        Command::Plugins { command: PluginsCommand::List { home, json } } => match status::read(&home) {
            Ok(s) if json => print_json(&s.plugins),
            Ok(s) => {
                println!("{:<16} {:<10} {:<9} {:<40} REASON", "ID", "VERSION", "STATE", "FILE");
                for p in s.plugins {
                    let version = p.version.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<16} {:<10} {:<9} {:<40} {}",
                        p.id.as_deref().unwrap_or("-"),
                        version,
                        p.state.to_string(),
                        p.file.display(),
                        p.reason.as_deref().unwrap_or("")
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e.to_string()),
        },
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
