//! How fast the simulator runs: one 5-node cluster under load from 5 clients for 10 simulated
//! seconds (plus the liveness probe), no faults. Simulated seconds per wall-clock second is
//! `simulated / time`; the run prints `simulated` once.
//!
//! `cargo bench -p sim --bench simulation`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sim::cluster::{run, RunConfig};
use sim::faults::FaultKinds;

fn five_nodes_under_load(c: &mut Criterion) {
    let mut cfg = RunConfig::from_seed(1);
    cfg.nodes = 5;
    cfg.kinds = FaultKinds::default();
    cfg.workload = Duration::from_secs(10);
    cfg.clients = 5;
    cfg.keys = 5;
    // Seed 1's drawn operator plan is for its own 3 nodes; this run has no operator.
    cfg.membership = None;
    let report = run(&cfg).unwrap_or_else(|f| panic!("{f}"));
    println!(
        "one run: {:.1}s simulated, {} operations, applied up to index {}",
        report.simulated.as_secs_f64(),
        report.ops,
        report.max_applied
    );
    let mut group = c.benchmark_group("simulation");
    group.sample_size(10);
    group.bench_function("5_nodes_5_clients_10s", |b| {
        b.iter(|| run(&cfg).unwrap_or_else(|f| panic!("{f}")))
    });
    group.finish();
}

criterion_group!(benches, five_nodes_under_load);
criterion_main!(benches);
