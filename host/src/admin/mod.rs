//! The node's admin surface: an HTTP JSON API, a server-rendered web console
//! and Prometheus metrics on `admin.bind:admin.port`, served from the node's
//! runtime; [`client`] is the blocking client the CLI uses. See docs/admin.md.

mod api;
mod auth;
pub mod client;
mod connections;
mod console;
pub mod contract;
mod details;
mod events;
mod guard;
mod health;
mod limits;
mod metrics;
mod samples;
pub mod token;
pub mod tokens;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::sync::oneshot;

use crate::cluster::ClusterManager;
use crate::properties::{NodeValues, Properties};
use crate::PluginManager;
pub use details::NODE_DETAIL_TASK;
pub use events::MAX_STREAMS as MAX_EVENT_STREAMS;

/// What the admin server works on: the node's managers and files.
#[derive(Clone)]
pub struct AdminContext {
    /// The node's home (holds conf/ and plugins/).
    pub home: PathBuf,
    /// `conf/clusterhost.properties`.
    pub properties_file: PathBuf,
    /// The node's cluster manager.
    pub cluster: ClusterManager,
    /// The node's plugin manager.
    pub plugins: PluginManager,
    /// The settings in force, kept current by the node's properties watcher.
    pub values: NodeValues,
}

/// Why the admin server could not start; the node refuses to start then.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "the admin API is asked to listen on {bind}, which is not a loopback address, but the admin token file {} does not exist or is empty; write a token into it (e.g. `head -c 32 /dev/urandom | base64 > {}`) or set admin.bind / --admin-bind to 127.0.0.1",
        file.display(), file.display()
    )]
    NoTokenOffLoopback { bind: IpAddr, file: PathBuf },
    #[error("could not create the admin token file {}: {source}; create it yourself with a secret on one line", file.display())]
    TokenFile { file: PathBuf, source: std::io::Error },
    #[error("the admin API could not listen on {addr}: {source}; choose a free port with --admin-port / CLUSTERHOST_ADMIN_PORT (admin.port), or stop what uses it")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Shared by every request; cheap to clone.
#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
}

struct Shared {
    ctx: AdminContext,
    /// Where the token lives; read on each request that needs it, so a
    /// rotated token applies without a restart.
    token_file: PathBuf,
    /// Reads need no token only on a loopback address.
    loopback: bool,
    /// The body caps (`admin.max.*`, fixed at start).
    limits: limits::Limits,
    /// The open connections, their limits and counters (for `/metrics`).
    connections: Arc<connections::Connections>,
    /// What `Host` may name (the bind address, loopback names, `admin.allowed.hosts`).
    allowed_hosts: guard::AllowedHosts,
    /// The console's login sessions.
    sessions: auth::Sessions,
    /// The name of this node's session cookie (it holds the port).
    cookie: String,
    /// One writer at a time per file (a plugin file, the properties file):
    /// a write, its rename and the answer about it happen under the
    /// target's lock, so parallel writers never interleave and each answer
    /// is about its own body. Entries nobody holds are dropped as it grows.
    writers: std::sync::Mutex<std::collections::HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Uploads that asked the node to drain first (`?drain=SECONDS`): the
    /// node is not ready while one is in flight.
    drains: Arc<health::Drains>,
    /// The event streams open now (bounded), ended when the server stops.
    streams: events::Streams,
    /// The recent samples the console's charts draw.
    samples: Arc<samples::Samples>,
    /// The cache entry event streams open now (bounded), ended when the server stops.
    entry_streams: events::Streams,
}

impl AdminState {
    fn ctx(&self) -> &AdminContext {
        &self.shared.ctx
    }

    /// Waits for, then holds, the write lock of `target`.
    async fn lock_target(&self, target: &Path) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut writers = clusterhost_plugin_api::sync::lock(&self.shared.writers);
            if writers.len() > 64 {
                writers.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            writers.entry(target.to_path_buf()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// The node's readiness, as `/readyz` tells a caller with read access
/// (state and full reason); cheap to clone.
#[derive(Clone)]
pub struct ReadinessProbe(AdminState);

impl ReadinessProbe {
    /// The verdict now.
    pub fn readiness(&self) -> contract::Health {
        self.0.readiness().health
    }
}

/// The running admin server; stops when dropped (the node drops it on shutdown).
pub struct AdminServer {
    /// Tells the server to stop accepting and finish what is in flight.
    stop: Option<oneshot::Sender<()>>,
    /// The serving task, awaited (briefly) by [`AdminServer::stop`].
    served: Option<tokio::task::JoinHandle<()>>,
    /// `run/admin.json`, removed when the server stops.
    endpoint_file: PathBuf,
    /// Set to true when the server stops: event streams and the sampler end,
    /// so the graceful stop does not wait on a stream that never finishes.
    closing: tokio::sync::watch::Sender<bool>,
    /// Where it listens.
    addr: SocketAddr,
    /// What its handlers share (for [`AdminServer::readiness`]).
    state: AdminState,
}

impl AdminServer {
    /// Checks the token set-up, binds `admin.bind:admin.port` and serves
    /// until dropped. Registers [`NODE_DETAIL_TASK`] on the cluster manager.
    pub async fn start(ctx: AdminContext, properties: &Properties) -> Result<AdminServer, AdminError> {
        let bind = properties.admin_bind();
        let token_file = crate::home::token_file(&ctx.home, &properties.admin_token_file);
        let loopback = bind.is_loopback();
        token::prepare(&token_file, bind)?;
        let addr = SocketAddr::new(bind, properties.admin_port());
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| AdminError::Bind { addr, source })?;
        details::register_detail_task(&ctx);
        let connections = connections::Connections::new(connections::ConnectionLimits::new(properties));
        let (closing, closed) = tokio::sync::watch::channel(false);
        let samples = Arc::new(samples::Samples::default());
        tokio::spawn(samples::sample(ctx.clone(), samples.clone(), closed.clone()));
        let state = AdminState {
            shared: Arc::new(Shared {
                ctx,
                token_file: token_file.clone(),
                loopback,
                limits: limits::Limits::new(properties),
                connections: connections.clone(),
                allowed_hosts: guard::AllowedHosts::new(bind, &properties.admin_allowed_hosts),
                sessions: auth::Sessions::default(),
                cookie: auth::cookie_name(addr.port()),
                writers: Default::default(),
                drains: Default::default(),
                streams: events::Streams::new(events::MAX_STREAMS, closed.clone()),
                samples,
                entry_streams: events::Streams::new(api::MAX_ENTRY_STREAMS, closed),
            }),
        };
        let endpoint = tokens::AdminEndpoint {
            pid: std::process::id(),
            url: format!("http://{addr}"),
            token_file: token_file.clone(),
        };
        let endpoint_file = crate::home::admin_file(&state.shared.ctx.home);
        if let Err(e) = endpoint.write(&state.shared.ctx.home) {
            tracing::warn!(
                "could not write {}: {e}; the CLI run in this home will not find this node's token",
                endpoint_file.display()
            );
        }
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(connections::serve(listener, app, connections, stopped));
        tracing::info!(
            %addr,
            token_file = %token_file.display(),
            "admin API and console on http://{addr}/ (writes{} need the token)",
            if loopback { "" } else { " and reads" }
        );
        Ok(AdminServer { stop: Some(stop), served: Some(served), endpoint_file, closing, addr, state })
    }

    /// Where the admin API listens (its port is the one bound, also for `admin.port = 0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Tells the node's readiness, also once the server is moved away.
    pub fn probe(&self) -> ReadinessProbe {
        ReadinessProbe(self.state.clone())
    }

    /// Stops accepting requests and waits (at most 5 s) for those in flight,
    /// so no write is acknowledged once the node starts leaving.
    pub async fn stop(mut self) {
        let _ = std::fs::remove_file(&self.endpoint_file);
        self.closing.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            if tokio::time::timeout(std::time::Duration::from_secs(5), served).await.is_err() {
                tracing::warn!("the admin API did not finish its requests within 5 s of the stop");
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.endpoint_file);
        self.closing.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(state: AdminState) -> Router {
    // The checks of a load balancer: no token (not even read: no file is
    // opened for a stranger's request), behind the same Host, body-length
    // and connection limits as every route.
    let health = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::check_length));
    let api = Router::new()
        .route("/api/cluster", get(api::cluster))
        .route("/api/cluster/enable", post(api::enable))
        .route("/api/cluster/disable", post(api::disable))
        .route("/api/node", get(api::node))
        .route("/api/events", get(events::events))
        .route("/api/samples", get(samples::samples))
        .route("/api/plugins", get(api::plugins).post(api::install_plugin))
        .route("/api/plugins/{name}", axum::routing::delete(api::remove_plugin))
        .route("/api/properties", get(api::properties).put(api::put_properties).patch(api::patch_properties))
        // GET .../events is the cache's event stream; a key named `events`
        // is still written and removed there (read it as JSON: GET
        // /api/caches/C/events with Accept: application/json).
        .route("/api/caches/{cache}", get(api::cache_list))
        .route(
            "/api/caches/{cache}/events",
            get(api::cache_events).put(api::events_key_put).delete(api::events_key_remove),
        )
        .route("/api/caches/{cache}/{key}", get(api::cache_get).put(api::cache_put).delete(api::cache_remove))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(console::cluster_page))
        .route("/node", get(console::node_page))
        .route("/cache", get(console::cache_page))
        .route("/plugins", get(console::plugins_page))
        .route("/properties", get(console::properties_page))
        .route("/login", get(console::login_form).post(console::login))
        .route("/logout", post(console::logout))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::check_length))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    // Run in this order (the last layer added runs first): the linger
    // (after the answer, drops what the client still sends), Host and
    // Origin (which also add the answer's headers), the token (every route
    // but the health checks), the body's length; none of them reads the
    // body before the answer. Each handler reads its body through
    // limits::CappedBody, within the route's cap.
    api.merge(health)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::check_host_and_origin))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::linger))
        .with_state(state)
}

/// The file name of `path`, for messages and matching.
fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
