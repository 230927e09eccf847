//! How long the linearizability checker takes on linearizable histories of 1k, 10k and 100k
//! operations (seeded; 8 clients; 10 keys; 2% timed out, 1% failed).
//!
//! Run: `cargo bench -p sim --bench checker`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{generate, GenConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sim::linearizability::check;

fn checker(c: &mut Criterion) {
    let mut g = c.benchmark_group("check_linearizable");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for (ops, keys) in [
        (1_000, 10),
        (10_000, 10),
        (100_000, 10),
        (100_000, 50),
        (10_000, 1),
    ] {
        let h = generate(42, &GenConfig::new(ops, keys, 8));
        check(&h).expect("linearizable by construction");
        g.throughput(Throughput::Elements(ops as u64));
        g.bench_with_input(BenchmarkId::new(format!("{keys}_keys"), ops), &h, |b, h| {
            b.iter(|| check(h).expect("linearizable"))
        });
    }
    g.finish();
}

criterion_group!(benches, checker);
criterion_main!(benches);
