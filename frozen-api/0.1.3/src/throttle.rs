//! A warning that may come with every connection a stranger makes, logged
//! at most once per [`LOG_EVERY`] with how many were held back: the host's
//! admin server and a strategy's data plane both refuse such traffic, and
//! neither may let a stranger fill the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per this long from one [`Throttled`].
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// One kind of warning, throttled; keep one per kind of refusal.
#[derive(Default)]
pub struct Throttled {
    /// When the last line was logged, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttled {
    /// Logs `message` as a warning, unless one was logged less than
    /// [`LOG_EVERY`] ago (then it is counted, and the next line says how
    /// many were held back).
    pub fn warn(&self, message: std::fmt::Arguments<'_>) {
        let mut state = crate::sync::lock(&self.state);
        let now = Instant::now();
        if state.0.is_some_and(|last| now.duration_since(last) < LOG_EVERY) {
            state.1 += 1;
            return;
        }
        let held_back = std::mem::take(&mut state.1);
        state.0 = Some(now);
        drop(state);
        if held_back > 0 {
            tracing::warn!("{message} (and {held_back} more like it in the last {LOG_EVERY:?})");
        } else {
            tracing::warn!("{message}");
        }
    }
}
