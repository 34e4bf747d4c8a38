//! `GET /api/samples`: the node's own recent history for the console's
//! charts: once a second, the members it sees, the cache operations per
//! second and the plugins replaced, in a ring of the last 10 minutes, kept
//! by a task of the admin server (no external service).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use clusterhost_plugin_api::sync::lock;
use tokio::sync::watch;

use super::contract::{Sample, SamplesView};
use super::{AdminContext, AdminState};
use crate::event_log::What;

/// The time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How many samples the ring keeps (10 minutes).
pub const KEPT: usize = 600;

/// The ring of samples, oldest first.
#[derive(Default)]
pub(super) struct Samples {
    ring: Mutex<VecDeque<Sample>>,
}

impl Samples {
    fn push(&self, sample: Sample) {
        let mut ring = lock(&self.ring);
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    fn view(&self) -> SamplesView {
        SamplesView { interval_ms: INTERVAL.as_millis() as u64, samples: lock(&self.ring).iter().copied().collect() }
    }
}

/// What a sample is the difference of: the counters at the sample before.
struct Last {
    cache_ops: u64,
    event_seq: u64,
    at: Instant,
}

/// Takes a sample every [`INTERVAL`] into `samples` until `closing` turns true.
pub(super) async fn sample(ctx: AdminContext, samples: Arc<Samples>, mut closing: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Last> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = closing.changed() => if changed.is_err() || *closing.borrow() { return },
        }
        let log = ctx.cluster.event_log();
        let cache_ops: u64 = ctx.cluster.caches().stats().await.iter().map(|c| c.hits + c.misses + c.conflicts).sum();
        let event_seq = log.last_seq();
        let now = Instant::now();
        let (cache_ops_per_second, plugin_swaps) = match &last {
            None => (0, 0),
            Some(last) => {
                let seconds = now.duration_since(last.at).as_secs_f64().max(0.001);
                let per_second = (cache_ops.saturating_sub(last.cache_ops) as f64 / seconds).round() as u64;
                let swaps = log
                    .after(last.event_seq)
                    .iter()
                    .filter(|e| e.seq <= event_seq && matches!(e.what, What::PluginReplaced { .. }))
                    .count() as u32;
                (per_second, swaps)
            }
        };
        samples.push(Sample {
            at_ms: clusterhost_plugin_api::cluster::now_ms(),
            members: ctx.cluster.members().len() as u32,
            cache_ops_per_second,
            plugin_swaps,
        });
        last = Some(Last { cache_ops, event_seq, at: now });
    }
}

/// `GET /api/samples`.
pub(super) async fn samples(State(state): State<AdminState>) -> Json<SamplesView> {
    Json(state.shared.samples.view())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_ten_minutes() {
        let samples = Samples::default();
        for n in 0..(KEPT as u64 + 5) {
            samples.push(Sample { at_ms: n, members: 1, cache_ops_per_second: 0, plugin_swaps: 0 });
        }
        let view = samples.view();
        assert_eq!(view.samples.len(), KEPT);
        assert_eq!(view.samples[0].at_ms, 5);
        assert_eq!(view.interval_ms, 1000);
    }
}
