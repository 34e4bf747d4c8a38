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

/// A time in milliseconds since the Unix epoch as a person reads it, in
/// UTC to the second: `2026-12-01T07:29:14Z`.
pub fn human_time(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(super::human_time(1_796_001_791_772), "2026-11-30T01:23:11Z");
        assert_eq!(super::human_time(0), "1970-01-01T00:00:00Z");
    }
}
