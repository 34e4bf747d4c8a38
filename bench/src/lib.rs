//! The benchmark suite: the cluster scenarios run by the `bench` binary
//! (`cargo run -p bench --release -- all | quick | SCENARIO...`), the
//! report they write (docs/performance.md), and the measured paths shared
//! with the criterion micro-benchmarks in `benches/`.

pub mod compare;
pub mod figure;
pub mod goals;
pub mod paths;
pub mod report;
pub mod scenarios;
