//! Three cores on an in-memory network with in-memory "disks": one is elected, five entries
//! are committed and applied everywhere, and a linearizable read is served through ReadIndex
//! from a follower. Every step prints what happened.
//!
//! `cargo run -p raft-core --example three_mem_nodes`
//!
//! The driver here is the smallest honest one: writes become durable at once, messages arrive
//! in the next round, and each node drains its `Ready`s until it has none left.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::{
    Config, Entry, EntryKind, Message, NodeId, Proposed, RawNode, ReadState, Ready, Role,
};

/// One node: its core, its stored log, and its state machine (a list of applied commands).
struct MemNode {
    core: RawNode,
    disk: Vec<Entry>,
    applied: Vec<Bytes>,
    /// Reads the core said are servable, waiting for the state machine to reach their index.
    reads: Vec<ReadState>,
    reads_served: u64,
}

struct MemCluster {
    nodes: BTreeMap<NodeId, MemNode>,
    network: Vec<Message>,
}

impl MemCluster {
    fn new(ids: &[NodeId]) -> Self {
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut cfg = Config::new(id, ids.to_vec());
                // The read below is asked on a follower, which forwards it to the leader; a
                // forwarded request may be lost, so forwarding is opt-in.
                cfg.forward_to_leader = true;
                let core = RawNode::new(cfg).expect("valid config");
                let node = MemNode {
                    core,
                    disk: Vec::new(),
                    applied: Vec::new(),
                    reads: Vec::new(),
                    reads_served: 0,
                };
                (id, node)
            })
            .collect();
        Self {
            nodes,
            network: Vec::new(),
        }
    }

    /// One round: every node handles all of its output, then every message sent is delivered.
    fn round(&mut self) {
        for (&id, node) in self.nodes.iter_mut() {
            // Reporting a write often makes the next Ready (e.g. the acknowledgement it held
            // back) available at once; taking only one per round would delay it a round.
            while node.core.has_ready() {
                let ready = node.core.take_ready();
                handle_ready(id, node, ready, &mut self.network);
            }
        }
        for msg in std::mem::take(&mut self.network) {
            if let Some(node) = self.nodes.get_mut(&msg.to) {
                node.core.step(msg);
            }
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.core.role() == Role::Leader)
            .map(|(&id, _)| id)
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..100 {
            if done(self) {
                return;
            }
            self.round();
        }
        panic!("{what} did not happen within 100 rounds");
    }
}

fn handle_ready(id: NodeId, node: &mut MemNode, ready: Ready, network: &mut Vec<Message>) {
    if let Some(soft) = ready.soft_state {
        println!(
            "n{id}: {:?} in term {}, leader {:?}",
            soft.role, soft.term, soft.leader
        );
    }
    // No compaction here, so no snapshot is ever asked for; a real driver would install
    // `ready.snapshot_write` now, before `ready.persist`.
    if let Some(write) = ready.persist {
        if let Some(from) = write.overwrite_from() {
            node.disk.truncate(from as usize - 1);
        }
        node.disk.extend(write.entries);
        // A real driver makes the write durable (fsync) before reporting it.
        node.core.on_persisted(write.id);
    }
    network.extend(ready.messages);
    for entry in ready.committed {
        if entry.kind == EntryKind::Normal {
            println!(
                "n{id}: applies {} at index {}",
                String::from_utf8_lossy(&entry.payload),
                entry.index
            );
            node.applied.push(entry.payload.clone());
        }
        node.core.on_applied(entry.index);
    }
    node.reads.extend(ready.read_states);
    let applied = node.core.applied_index();
    let waiting = node.reads.len();
    node.reads.retain(|read| {
        if read.index > applied {
            return true;
        }
        println!(
            "n{id}: serves read {} at index {}: {} commands applied, last {:?}",
            String::from_utf8_lossy(&read.ctx),
            read.index,
            node.applied.len(),
            node.applied
                .last()
                .map(|c| String::from_utf8_lossy(c).into_owned())
        );
        false
    });
    node.reads_served += (waiting - node.reads.len()) as u64;
}

fn main() {
    let mut cluster = MemCluster::new(&[1, 2, 3]);

    // Ticks would elect someone after a randomized timeout; campaigning at once is quicker.
    cluster.nodes.get_mut(&1).expect("node 1").core.campaign();
    cluster.run_until("an election", |c| c.leader().is_some());
    let leader = cluster.leader().expect("elected");
    println!("n{leader} won the election");

    for i in 1..=5 {
        let command = Bytes::from(format!("set x={i}"));
        let core = &mut cluster.nodes.get_mut(&leader).expect("leader").core;
        match core.propose(command) {
            Ok(Proposed::Appended { last, term, .. }) => {
                println!("n{leader}: proposed set x={i} at index {last} in term {term}")
            }
            other => panic!("the leader refused a proposal: {other:?}"),
        }
    }
    cluster.run_until("five commands applied everywhere", |c| {
        c.nodes.values().all(|n| n.applied.len() == 5)
    });

    // A linearizable read on a follower: it asks the leader for a read index, the leader
    // confirms it still leads with a quorum round, and the follower serves the read once it
    // has applied that index.
    let follower = if leader == 2 { 3 } else { 2 };
    cluster
        .nodes
        .get_mut(&follower)
        .expect("follower")
        .core
        .read_index(Bytes::from_static(b"get x"))
        .expect("the follower forwards the read to its leader");
    cluster.run_until("the read served", |c| c.nodes[&follower].reads_served == 1);

    for (id, node) in &cluster.nodes {
        assert_eq!(node.applied.len(), 5, "n{id} applied everything");
        println!(
            "n{id}: commit index {}, {} entries stored",
            node.core.commit_index(),
            node.disk.len()
        );
    }
}

/// `cargo test` runs the example (see `[[example]]` in Cargo.toml), so it cannot rot.
#[test]
fn the_example_runs() {
    main();
}
