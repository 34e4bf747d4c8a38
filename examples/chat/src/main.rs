//! `clusterhost-chat`: a small chat and presence server built on the
//! clusterhost embedding API ([`clusterhost::Node`]), the showcase of what
//! a clustered server puts in a cluster (docs/showcase.md).
//!
//! A user connects to any node over WebSocket. The routing table (user →
//! the node that holds the user's socket) is a clustered cache whose
//! entries expire unless refreshed while the socket lives; a message to a
//! user on another node travels as a cluster task to that node; presence
//! (online / offline, live in the page) comes from the routing table's
//! entry events; when a node dies the senior removes its users' routes.
//! The same binary runs standalone, on gossip or on redis, by what is in
//! its home's plugins/.

mod chat;
mod page;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A chat and presence server on clusterhost.
#[derive(Parser, Debug)]
#[command(name = "clusterhost-chat", version)]
struct Args {
    /// The node's home: holds conf/ and plugins/ (as for `clusterhost run`).
    #[arg(long, default_value = ".", env = "CLUSTERHOST_HOME")]
    home: PathBuf,
    /// Where the chat page and its WebSocket listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    node: clusterhost::cli::run::RunFlags,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _guard = clusterhost::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("could not start the async runtime: {e}")),
    };
    let result = runtime.block_on(serve(args));
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("clusterhost-chat: {message}");
    ExitCode::FAILURE
}

async fn serve(args: Args) -> Result<(), String> {
    let stop = clusterhost::node::stop_signal().map_err(|e| e.to_string())?;
    let options = clusterhost::NodeOptions { home: args.home, overrides: args.node.overrides() };
    let node = clusterhost::Node::start(options).await.map_err(|e| e.to_string())?;
    let chat = match chat::Chat::start(node.cluster().clone()).await {
        Ok(chat) => chat,
        Err(e) => {
            let _ = node.shutdown().await;
            return Err(format!("could not start the chat: {e}"));
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = node.shutdown().await;
            return Err(format!("could not listen on {}: {e}; pass --listen with a free address", args.listen));
        }
    };
    tracing::info!(node = %node.cluster().node(), "chat on http://{}/ (admin API on http://{}/)", args.listen, node.admin_addr());
    let closer = chat.clone();
    let stop = async move {
        stop.await;
        // Open sockets end too, or the graceful stop would wait on them.
        closer.close_all();
    };
    let served = axum::serve(listener, chat::router(chat)).with_graceful_shutdown(stop).await;
    node.shutdown().await.map_err(|e| e.to_string())?;
    served.map_err(|e| format!("the chat server failed: {e}"))
}
