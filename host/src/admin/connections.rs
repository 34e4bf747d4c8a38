//! The admin server's connections: accepted within limits (in all and per
//! client address), each with a deadline for its request headers, served by
//! hyper until the node stops. The limits are listed in docs/admin.md, "Limits".

use clusterhost_plugin_api::accept::{Backoff, ConnectionLimit, Over, Refusal};
use clusterhost_plugin_api::throttle::Throttled;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::properties::Properties;

/// The connection limits, fixed at start from `admin.header.timeout.seconds`,
/// `admin.max.connections` and `admin.max.connections.per.address`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    /// How long a client may take to send a request's headers; also how
    /// long a kept-alive connection may sit idle between two requests.
    pub header_timeout: Duration,
    /// Open connections in all.
    pub max_total: usize,
    /// Open connections from one client IP address (loopback included).
    pub max_per_address: usize,
}

impl ConnectionLimits {
    pub(super) fn new(properties: &Properties) -> Self {
        ConnectionLimits {
            header_timeout: properties.admin_header_timeout,
            max_total: properties.admin_max_connections,
            max_per_address: properties.admin_max_connections_per_address,
        }
    }
}

/// What `/metrics` shows of the connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ConnectionStats {
    /// Connections open now.
    pub open: u64,
    /// Closed at once: `admin.max.connections` were open.
    pub refused_total: u64,
    /// Closed at once: `admin.max.connections.per.address` were open from its address.
    pub refused_per_address: u64,
    /// Closed because the headers of their first request did not arrive in
    /// time (a kept-alive connection idle until the deadline is not counted).
    pub header_timeouts: u64,
    /// Failed `accept` calls (out of file descriptors, say).
    pub accept_errors: u64,
}

/// The open connections and the counters; owned by the admin server, read
/// by `/metrics`.
pub(super) struct Connections {
    /// `admin.max.connections*` and the header deadline (fixed at start).
    limits: ConnectionLimits,
    /// Admits each connection within the limits; its guard frees the slot.
    open: Arc<ConnectionLimit>,
    /// Connections refused over the total limit (for `/metrics`).
    refused_total: AtomicU64,
    /// Connections refused over the per-address limit (for `/metrics`).
    refused_per_address: AtomicU64,
    /// Connections closed at the header deadline (for `/metrics`).
    header_timeouts: AtomicU64,
    /// Failed `accept` calls (for `/metrics`).
    accept_errors: AtomicU64,
    /// One throttle per kind of warning: refusals, header deadlines, accept errors.
    refusals: Throttled,
    timeouts: Throttled,
    accept_failures: Throttled,
}

impl Connections {
    pub(super) fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            open: ConnectionLimit::new(limits.max_total, limits.max_per_address),
            refused_total: AtomicU64::new(0),
            refused_per_address: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            refusals: Throttled::default(),
            timeouts: Throttled::default(),
            accept_failures: Throttled::default(),
        })
    }

    /// The figures for `/metrics`.
    pub(super) fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            open: self.open.open() as u64,
            refused_total: self.refused_total.load(Ordering::Relaxed),
            refused_per_address: self.refused_per_address.load(Ordering::Relaxed),
            header_timeouts: self.header_timeouts.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }

    /// Closes a connection over a limit at once: counted, logged (throttled),
    /// answered `503` if the socket takes it without waiting.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr, Over { refusal, total, here }: Over) {
        let (counter, limit) = match refusal {
            Refusal::Total => (&self.refused_total, "admin.max.connections"),
            Refusal::PerAddress => (&self.refused_per_address, "admin.max.connections.per.address"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.refusals.warn(format_args!(
            "closed an admin connection from {peer} at once: {total} admin connections are open ({here} from {}), the limits are admin.max.connections = {} and admin.max.connections.per.address = {}; raise {limit} (from the next start) if these clients are yours",
            peer.ip(),
            self.limits.max_total,
            self.limits.max_per_address,
        ));
        let message = format!(
            "{{\"error\":\"too many admin connections are open ({limit} reached); close idle ones or try again later\"}}"
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{message}",
            message.len()
        );
        // What the client already sent is read first, so closing does not
        // reset the connection before the answer; neither call waits.
        let mut sent = [0u8; 4096];
        let _ = stream.try_read(&mut sent);
        let _ = stream.try_write(answer.as_bytes());
    }

    /// Counts and logs (throttled) a connection closed at its header
    /// deadline before it sent a whole request.
    fn timed_out(&self, peer: SocketAddr) {
        self.header_timeouts.fetch_add(1, Ordering::Relaxed);
        self.timeouts.warn(format_args!(
            "closed the admin connection from {peer}: it sent no whole request headers within {:?} (admin.header.timeout.seconds)",
            self.limits.header_timeout
        ));
    }
}

/// Accepts and serves connections on `listener` with `app` until `stop`
/// fires (or its sender is dropped); then closes the listener, lets the
/// requests in flight finish and returns once every connection is closed.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    connections: Arc<Connections>,
    stop: oneshot::Receiver<()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(connections.limits.header_timeout).keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let mut backoff = Backoff::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            // The client gave up before its connection was accepted: nothing
            // of ours is short, so accept the next one at once.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: the connection stays
                // queued, so accepting again at once would spin a core.
                let pause = backoff.pause();
                connections.accept_errors.fetch_add(1, Ordering::Relaxed);
                connections.accept_failures.warn(format_args!(
                    "the admin API could not accept a connection: {e}; trying again in {pause:?} (if this is EMFILE, raise the node's open files limit or lower admin.max.connections)"
                ));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = &mut stop => break,
                }
                continue;
            }
        };
        let admitted = match connections.open.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                connections.refuse(stream, peer, refusal);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Set once a request's headers arrived: a kept-alive connection
        // that then sits idle until the deadline is no stranger's doing.
        let answered = Arc::new(AtomicBool::new(false));
        let service = {
            let answered = answered.clone();
            let app = TowerToHyperService::new(app.clone());
            hyper::service::service_fn(move |request| {
                answered.store(true, Ordering::Relaxed);
                app.call(request)
            })
        };
        let served = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let connections = connections.clone();
        tokio::spawn(async move {
            match served.await {
                Ok(()) => {}
                Err(e) if e.is_timeout() && !answered.load(Ordering::Relaxed) => connections.timed_out(peer),
                Err(e) if e.is_timeout() => tracing::debug!(%peer, "closed an idle kept-alive admin connection"),
                Err(e) => tracing::debug!(%peer, "an admin connection ended with an error: {e}"),
            }
            drop(admitted);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An `accept` error about one connection only (its client went away).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(max_total: usize, max_per_address: usize) -> Arc<Connections> {
        Connections::new(ConnectionLimits { header_timeout: Duration::from_secs(1), max_total, max_per_address })
    }

    #[test]
    fn the_open_count_follows_admission() {
        let c = connections(3, 2);
        let a: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = c.open.admit(a).unwrap();
        let _a2 = c.open.admit(a).unwrap();
        assert_eq!(c.open.admit(a).err().map(|o| o.refusal), Some(Refusal::PerAddress));
        assert_eq!(c.stats().open, 2);
        drop(a1);
        assert_eq!(c.stats().open, 1);
    }
}
