//! The host's log: `tracing` to stderr through a non-blocking writer, so a
//! plugin thread that logs never waits on the terminal.

use tracing_subscriber::EnvFilter;

/// Installs the host's subscriber; keep the guard alive until exit so
/// buffered lines are flushed. `RUST_LOG` overrides the default `info`.
pub fn init() -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(false).init();
    guard
}
