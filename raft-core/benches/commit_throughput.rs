//! Committed entries per second on a 3-node cluster of cores with instant, in-memory disks and
//! network: the cost of the Raft logic itself. Each iteration proposes a batch of 128-byte
//! entries on the leader and drives the cluster until the leader has applied them.
//!
//! `cargo bench -p raft-core --bench commit_throughput`

mod support;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use support::Cluster;

fn commit_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_3_nodes_128B");
    for batch in [1usize, 64] {
        let payloads: Vec<Bytes> = (0..batch)
            .map(|i| Bytes::from(vec![i as u8; 128]))
            .collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("batch", batch),
            &payloads,
            |b, payloads| {
                let mut cluster = Cluster::elected();
                b.iter(|| cluster.commit_batch(payloads));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, commit_throughput);
criterion_main!(benches);
