//! Membership in the simulated cluster: nodes joining with an empty disk, nodes taken away,
//! and the core's configuration changes and leadership transfers driven from a test.

use std::collections::VecDeque;

use bytes::Bytes;
use raft_core::{Index, MemberChange, NodeId, ProposeError, RestartState};

use crate::cluster::{boot, Cluster, SimNode};
use crate::invariants::Violation;

impl Cluster {
    /// A new node `id` with an empty disk and no configuration (empty `voters`): it waits to
    /// be added, never campaigns, and learns its configuration from the leader that adds it.
    /// Its settings are the first node's (timing, pre-vote, check-quorum).
    pub fn add_node(&mut self, id: NodeId) {
        assert!(!self.nodes.contains_key(&id), "n{id} exists already");
        let mut cfg = self
            .nodes
            .values()
            .next()
            .expect("a cluster has a node")
            .cfg
            .clone();
        cfg.id = id;
        cfg.voters = Vec::new();
        cfg.seed = self.rng.next_u64();
        let state = RestartState::default();
        let mut node = SimNode {
            core: None,
            cfg,
            disk_hard_state: state.hard_state,
            disk_snapshot: state.snapshot,
            disk_snapshot_data: Vec::new(),
            disk_log: state.entries,
            pending_writes: VecDeque::new(),
            fetch: None,
            staged: None,
            applied: 0,
            seen_commit: 0,
        };
        boot(&mut node);
        self.note(|| format!("add n{id}"));
        self.nodes.insert(id, node);
    }

    /// Takes `id` out of the simulation for good (its disk too), as an operator decommissions
    /// a removed node. Messages to it are lost from now on.
    pub fn remove_node(&mut self, id: NodeId) {
        self.note(|| format!("remove n{id}"));
        self.nodes.remove(&id);
    }

    /// Asks `id`'s core for a configuration change; the inner result is the core's answer.
    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        changes: &[MemberChange],
    ) -> Result<Result<Index, ProposeError>, Violation> {
        self.note(|| format!("n{id} proposes {changes:?}"));
        let answer = self
            .core_mut(id)
            .propose_conf_change(changes, Bytes::from_static(b"ctx"));
        self.process_ready(id)?;
        Ok(answer)
    }

    /// Asks `id`'s core to hand leadership to `to`; the inner result is the core's answer.
    pub fn transfer_leader(
        &mut self,
        id: NodeId,
        to: NodeId,
    ) -> Result<Result<(), ProposeError>, Violation> {
        self.note(|| format!("n{id} transfers leadership to n{to}"));
        let answer = self.core_mut(id).transfer_leader(to);
        self.process_ready(id)?;
        Ok(answer)
    }
}
