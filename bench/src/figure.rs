//! One measured figure: its samples summarised as a median and spread, in a
//! unit that knows how to print itself.

use std::time::Duration;

/// What a figure's numbers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Nanos,
    Micros,
    Millis,
    Seconds,
    KiB,
    Bytes,
    OpsPerSec,
    Ratio,
    /// A fraction (0.05), printed as a percentage (5.0 %).
    Percent,
    Count,
}

impl Unit {
    /// `value` (in this unit) for a report.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Nanos => format!("{value:.1} ns"),
            Unit::Micros if value < 10.0 => format!("{value:.2} µs"),
            Unit::Micros => format!("{value:.0} µs"),
            Unit::Millis if value < 10.0 => format!("{value:.2} ms"),
            Unit::Millis => format!("{value:.1} ms"),
            Unit::Seconds => format!("{value:.2} s"),
            Unit::KiB => format!("{value:.0} KiB"),
            Unit::Bytes => format!("{value:.0} B"),
            Unit::OpsPerSec if value >= 1e6 => format!("{:.2} M/s", value / 1e6),
            Unit::OpsPerSec if value >= 1e3 => format!("{:.1} k/s", value / 1e3),
            Unit::OpsPerSec => format!("{value:.0} /s"),
            Unit::Ratio if value.abs() < 0.1 => format!("{value:.3}×"),
            Unit::Ratio => format!("{value:.2}×"),
            Unit::Percent => format!("{:.1} %", value * 100.0),
            Unit::Count => format!("{value:.0}"),
        }
    }

    /// A duration in this unit (for the time units).
    pub fn of(self, d: Duration) -> f64 {
        match self {
            Unit::Nanos => d.as_nanos() as f64,
            Unit::Micros => d.as_nanos() as f64 / 1e3,
            Unit::Millis => d.as_nanos() as f64 / 1e6,
            Unit::Seconds => d.as_secs_f64(),
            other => panic!("{other:?} is not a unit of time"),
        }
    }
}

/// Median and spread of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub n: usize,
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The summary of `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        // Nearest rank, as every figure in the report is computed.
        let pick = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some(Spread {
            n: sorted.len(),
            median: pick(0.5),
            p10: pick(0.1),
            p90: pick(0.9),
            p99: pick(0.99),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// One figure of the report.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Stable id, used by the goals table (e.g. `drop.active`).
    pub id: String,
    /// The scenario that measured it.
    pub scenario: String,
    /// What it is, for a reader.
    pub label: String,
    pub unit: Unit,
    /// `None` when the figure was not measured.
    pub spread: Option<Spread>,
    /// Whether p99 means something for this figure (latency distributions).
    pub show_p99: bool,
    /// How it was measured, or why it was not.
    pub note: String,
}

impl Figure {
    /// The figure's one line for the console.
    pub fn line(&self) -> String {
        match &self.spread {
            Some(s) => {
                let u = self.unit;
                let p99 = if self.show_p99 { format!(" p99={}", u.format(s.p99)) } else { String::new() };
                format!(
                    "{:<58} n={:<6} median={:>11}{p99} p10={} p90={} min={} max={}",
                    self.label,
                    s.n,
                    u.format(s.median),
                    u.format(s.p10),
                    u.format(s.p90),
                    u.format(s.min),
                    u.format(s.max)
                )
            }
            None => format!("{:<58} {}", self.label, self.note),
        }
    }
}
