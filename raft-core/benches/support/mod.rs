//! The cluster both benches drive: three cores with instant, in-memory disks and network.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::{Config, Message, RawNode, Role};

pub struct Cluster {
    nodes: BTreeMap<u64, RawNode>,
    network: Vec<Message>,
    leader_applied: u64,
}

impl Cluster {
    /// A cluster whose node 1 leads and has applied its no-op.
    pub fn elected() -> Self {
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

    /// Drains every node as a driver does (persisting instantly, taking `Ready`s while there
    /// are any: reporting a write releases the acknowledgements it held; giving each one's
    /// lists back) and delivers everything sent.
    fn round(&mut self) {
        for (&id, node) in self.nodes.iter_mut() {
            while node.has_ready() {
                let mut ready = node.take_ready();
                if let Some(write) = &ready.persist {
                    node.on_persisted(write.id);
                }
                self.network.append(&mut ready.messages);
                if id == 1 {
                    if let Some(last) = ready.committed.last() {
                        self.leader_applied = last.index;
                    }
                }
                // Its lists go back to the core for the next `Ready`s.
                node.recycle(&mut ready);
            }
        }
        for msg in self.network.drain(..) {
            if let Some(node) = self.nodes.get_mut(&msg.to) {
                node.step(msg);
            }
        }
    }

    pub fn commit_batch(&mut self, payloads: &[Bytes]) {
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
