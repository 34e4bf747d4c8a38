//! Criterion micro-benchmark: one cache get of a 64-byte value, four ways
//! side by side (see `bench::paths`): a direct Rust trait call, the same
//! strategy through the ABI boundary, the host's cache standalone, and the
//! host's cache clustered through the loaded fixture `.so`.
//!
//! `cargo bench -p bench --bench boundary`. The `boundary` scenario of the
//! bench runner measures the same calls for docs/performance.md.

use criterion::{criterion_group, criterion_main, Criterion};

fn cache_get(c: &mut Criterion) {
    let paths = bench::paths::Paths::new();
    let mut group = c.benchmark_group("cache get (64-byte value)");
    group.bench_function("direct Rust trait", |b| b.to_async(&paths.runtime).iter(|| paths.direct()));
    group.bench_function("through the ABI boundary", |b| b.to_async(&paths.runtime).iter(|| paths.boundary()));
    group.bench_function("host, standalone", |b| b.to_async(&paths.runtime).iter(|| paths.standalone()));
    group.bench_function("host, clustered .so", |b| b.to_async(&paths.runtime).iter(|| paths.clustered()));
    group.finish();
}

criterion_group!(benches, cache_get);
criterion_main!(benches);
