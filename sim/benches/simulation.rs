//! How fast the simulator runs: one 5-node cluster under load from 5 clients for 10 simulated
//! seconds (plus the liveness probe), no faults. Simulated seconds per wall-clock second is
//! `simulated / time`; the run prints `simulated` once.
//!
//! `cargo bench -p sim --bench simulation`. On a shared machine, CPU time holds better than
//! criterion's wall clock: `SIM_BENCH_RUNS=N` runs the cluster N times without criterion and
//! prints each run (its trace hash shows it is the same run every time), for `perf stat -e
//! task-clock` over the bench binary.

use std::time::Duration;

use criterion::{criterion_group, Criterion};
use sim::cluster::{run, RunConfig};
use sim::faults::FaultKinds;

fn five_nodes() -> RunConfig {
    let mut cfg = RunConfig::from_seed(1);
    cfg.nodes = 5;
    cfg.kinds = FaultKinds::default();
    cfg.workload = Duration::from_secs(10);
    cfg.clients = 5;
    cfg.keys = 5;
    // Seed 1's drawn operator plan is for its own 3 nodes; this run has no operator.
    cfg.membership = None;
    cfg
}

fn five_nodes_under_load(c: &mut Criterion) {
    let cfg = five_nodes();
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

/// `SIM_BENCH_RUNS=N`: N runs, each printed with its wall-clock time.
fn runs_without_criterion(runs: &str) {
    let runs: u32 = runs
        .parse()
        .unwrap_or_else(|_| panic!("SIM_BENCH_RUNS={runs:?} is not a number"));
    let cfg = five_nodes();
    for _ in 0..runs {
        let started = std::time::Instant::now();
        let report = run(&cfg).unwrap_or_else(|f| panic!("{f}"));
        println!(
            "{:.1}s simulated, {} operations, applied up to index {}, trace {:016x}, in {:.3}s",
            report.simulated.as_secs_f64(),
            report.ops,
            report.max_applied,
            report.trace_hash,
            started.elapsed().as_secs_f64()
        );
    }
}

criterion_group!(benches, five_nodes_under_load);

fn main() {
    match std::env::var("SIM_BENCH_RUNS") {
        Ok(runs) => runs_without_criterion(&runs),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
