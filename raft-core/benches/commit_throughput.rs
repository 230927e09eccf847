//! Committed entries per second on a 3-node cluster of cores with instant, in-memory disks and
//! network: the cost of the Raft logic itself. Each iteration proposes a batch of 128-byte
//! entries on the leader and drives the cluster until the leader has applied them.
//!
//! `cargo bench -p raft-core --bench commit_throughput`

use std::collections::BTreeMap;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_core::{Config, Message, RawNode, Role};

struct Cluster {
    nodes: BTreeMap<u64, RawNode>,
    network: Vec<Message>,
    leader_applied: u64,
}

impl Cluster {
    fn new() -> Self {
        let ids = vec![1, 2, 3];
        let nodes = ids
            .iter()
            .map(|&id| {
                let cfg = Config::new(id, ids.clone());
                (id, RawNode::new(cfg).expect("valid config"))
            })
            .collect();
        let mut c = Self {
            nodes,
            network: Vec::new(),
            leader_applied: 0,
        };
        c.nodes.get_mut(&1).expect("node 1").campaign();
        while c.nodes[&1].role() != Role::Leader || c.leader_applied == 0 {
            c.round();
        }
        c
    }

    /// Drains every node once (persisting instantly) and delivers everything sent.
    fn round(&mut self) {
        for (&id, node) in self.nodes.iter_mut() {
            let ready = node.take_ready();
            if let Some(write) = ready.persist {
                node.on_persisted(write.id);
            }
            self.network.extend(ready.messages);
            if id == 1 {
                if let Some(last) = ready.committed.last() {
                    self.leader_applied = last.index;
                }
            }
        }
        for msg in std::mem::take(&mut self.network) {
            if let Some(node) = self.nodes.get_mut(&msg.to) {
                node.step(msg);
            }
        }
    }

    fn commit_batch(&mut self, payloads: &[Bytes]) {
        let leader = self.nodes.get_mut(&1).expect("node 1");
        for p in payloads {
            leader.propose(p.clone()).expect("the leader accepts");
        }
        let target = leader.last_index();
        while self.leader_applied < target {
            self.round();
        }
    }
}

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
                let mut cluster = Cluster::new();
                b.iter(|| cluster.commit_batch(payloads));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, commit_throughput);
criterion_main!(benches);
