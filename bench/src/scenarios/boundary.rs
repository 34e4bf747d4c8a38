//! Host → plugin call overhead per cache get: the four paths of
//! [`crate::paths`], sampled in turn in one process.

use std::future::Future;
use std::time::Instant;

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::paths::Paths;
use crate::report::Report;

pub struct Boundary;

/// `rounds` timings (ns per get) of `ops` calls of `get` each, after one warm-up round.
fn sample<F: Future<Output = bool>>(paths: &Paths, rounds: usize, ops: u32, get: impl Fn() -> F) -> Vec<f64> {
    let round = || async {
        for _ in 0..ops {
            assert!(get().await, "the entry is there");
        }
    };
    paths.runtime.block_on(round());
    (0..rounds)
        .map(|_| {
            let started = Instant::now();
            paths.runtime.block_on(round());
            started.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect()
}

impl Scenario for Boundary {
    fn name(&self) -> &'static str {
        "boundary"
    }

    fn about(&self) -> &'static str {
        "One cache get of a 64-byte value: the in-memory strategy called directly as a Rust trait, the same \
         strategy through the ABI boundary, the host's cache standalone, and the host's cache clustered through the \
         fixture strategy loaded from its .so. Each sample is the mean of one round of gets; rounds of the four \
         paths are interleaved, so they share the machine's state. (`cargo bench -p bench` measures the same calls \
         with criterion.)"
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let (rounds, ops) = ctx.pick((15, 100_000), (3, 10_000));
        let paths = Paths::new();
        let (mut d, mut b, mut s, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            d.extend(sample(&paths, 1, ops, || paths.direct()));
            b.extend(sample(&paths, 1, ops, || paths.boundary()));
            s.extend(sample(&paths, 1, ops, || paths.standalone()));
            c.extend(sample(&paths, 1, ops, || paths.clustered()));
        }
        let note = format!("{ops} gets per round");
        report.add("boundary.direct", "get, direct Rust trait", Unit::Nanos, &d, &note);
        report.add("boundary.abi", "get, through the ABI boundary", Unit::Nanos, &b, &note);
        let added: Vec<f64> = b.iter().zip(&d).map(|(b, d)| b - d).collect();
        report.add(
            "boundary.added",
            "added by the boundary (ABI − direct, per round)",
            Unit::Nanos,
            &added,
            "paired rounds",
        );
        let ratio: Vec<f64> = b.iter().zip(&d).map(|(b, d)| b / d).collect();
        report.add("boundary.ratio", "ratio ABI / direct", Unit::Ratio, &ratio, "paired rounds");
        report.add("boundary.standalone", "get, host cache standalone", Unit::Nanos, &s, &note);
        report.add("boundary.clustered", "get, host cache clustered through the loaded .so", Unit::Nanos, &c, &note);
        let over: Vec<f64> = c.iter().zip(&s).map(|(c, s)| c - s).collect();
        report.add(
            "boundary.host_added",
            "clustered .so − standalone (per round)",
            Unit::Nanos,
            &over,
            "paired rounds",
        );
    }
}
