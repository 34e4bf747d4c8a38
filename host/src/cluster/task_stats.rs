//! Counters of the cluster tasks this node called, for `/metrics`: calls,
//! replies by outcome, and the latency of synchronous calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the latency histogram's buckets; +Inf is implied.
pub const LATENCY_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Lock-free counters; owned by the cluster manager.
#[derive(Debug, Default)]
pub(crate) struct TaskCounters {
    sent: AtomicU64,
    calls: AtomicU64,
    values: AtomicU64,
    errors: AtomicU64,
    timed_out: AtomicU64,
    latency_micros: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
}

/// A snapshot of the task counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskStats {
    /// Fire-and-forget sends.
    pub sent: u64,
    /// Synchronous calls.
    pub calls: u64,
    /// Replies that carried a value.
    pub values: u64,
    /// Replies that carried an error.
    pub errors: u64,
    /// Members that did not answer within the budget.
    pub timed_out: u64,
    /// Total time spent in synchronous calls.
    pub latency_seconds_sum: f64,
    /// Calls that took at most `LATENCY_BUCKETS[i]` seconds (cumulative).
    pub latency_buckets: Vec<u64>,
}

impl TaskCounters {
    pub(crate) fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn called(&self, took: Duration, values: u64, errors: u64, timed_out: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.values.fetch_add(values, Ordering::Relaxed);
        self.errors.fetch_add(errors, Ordering::Relaxed);
        self.timed_out.fetch_add(timed_out, Ordering::Relaxed);
        self.latency_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> TaskStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TaskStats {
            sent: get(&self.sent),
            calls: get(&self.calls),
            values: get(&self.values),
            errors: get(&self.errors),
            timed_out: get(&self.timed_out),
            latency_seconds_sum: get(&self.latency_micros) as f64 / 1e6,
            latency_buckets: self.buckets.iter().map(get).collect(),
        }
    }
}
