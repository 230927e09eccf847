//! What the harness does with a node's output: route it (disk queue, network, state machine)
//! and check every Raft property the output touches.

use crate::cluster::{Cluster, QueuedWrite};
use crate::invariants::{violation, Violation};
use raft_core::{
    ConfChangeEntry, Entry, EntryKind, Index, Membership, Message, MessageBody, NodeId, Persist,
    Role, SafetyViolation, Term,
};

impl Cluster {
    /// Drains `id`'s ready, routes its output, and checks every property its output touches.
    pub(crate) fn process_ready(&mut self, id: NodeId) -> Result<(), Violation> {
        loop {
            let node = self.nodes.get_mut(&id).expect("unknown node");
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if let Some(breach) = core.safety_violation() {
                // The core saw a peer or the harness break a rule; with every node correct,
                // that is a bug this run found.
                return violation(rule_of(breach), format!("n{id} detected: {breach}"));
            }
            if !core.has_ready() {
                return Ok(());
            }
            let ready = core.take_ready();
            let (term, role) = (core.term(), core.role());

            if let Some(soft) = ready.soft_state {
                if soft.role == Role::Leader {
                    self.note(|| format!("n{id} leads term {}", soft.term));
                    self.check_new_leader(id, soft.term)?;
                }
            }
            if let Some(fetch) = ready.snapshot_to_fetch {
                self.note(|| {
                    format!(
                        "n{id} asks for snapshot {}@{} from n{}",
                        fetch.snapshot.index, fetch.snapshot.term, fetch.from
                    )
                });
                self.nodes.get_mut(&id).expect("exists").fetch = Some(fetch);
            }
            if let Some(write) = ready.snapshot_write {
                let node = self.nodes.get_mut(&id).expect("exists");
                node.applied = write.snapshot.index;
                node.pending_writes.push_back(QueuedWrite::Snapshot(write));
            }
            if let Some(write) = ready.persist {
                self.check_written_entries(id, &write)?;
                self.nodes
                    .get_mut(&id)
                    .expect("exists")
                    .pending_writes
                    .push_back(QueuedWrite::Persist(write));
            }
            for msg in ready.messages {
                self.send(msg);
            }
            self.check_commit_advance(id)?;
            for entry in ready.committed {
                self.apply(id, entry)?;
            }
            for rs in ready.read_states {
                self.check
                    .read_served(id, &rs.ctx, rs.index)
                    .map_err(|v| Violation {
                        detail: format!("{} (n{id} in term {term}, {role:?})", v.detail),
                        ..v
                    })?;
            }
        }
    }

    pub(crate) fn send(&mut self, msg: Message) {
        if self.faults.drop > 0.0 && self.rng.gen_bool(self.faults.drop) {
            return;
        }
        let mut delay = if self.faults.max_delay > 0 {
            self.rng.gen_range(0..=self.faults.max_delay)
        } else {
            0
        };
        if let Some(slow) = self.slow_replies {
            if is_reply(&msg.body) && self.rng.gen_bool(slow.share) {
                delay = self.rng.gen_range(slow.min_steps..=slow.max_steps);
            }
        }
        if self.faults.duplicate > 0.0 && self.rng.gen_bool(self.faults.duplicate) {
            let again = self.rng.gen_range(0..=self.faults.max_delay.max(1));
            self.in_flight.push_back((self.now + again, msg.clone()));
        }
        self.in_flight.push_back((self.now + delay, msg));
    }

    /// Election safety, and leader completeness: a new leader holds every committed entry.
    pub(crate) fn check_new_leader(&mut self, id: NodeId, term: Term) -> Result<(), Violation> {
        self.check.leader_elected(id, term)?;
        let node = &self.nodes[&id];
        let core = node.core.as_ref().expect("a leader is up");
        let snapshot_index = core.snapshot().index;
        self.check.leader_holds_committed(id, term, |index| {
            if index < snapshot_index {
                node.durable_entry(index).map(|e| e.term)
            } else {
                core.term_at(index)
            }
        })
    }

    /// Log matching, for every entry `id` is asked to write.
    pub(crate) fn check_written_entries(
        &mut self,
        id: NodeId,
        write: &Persist,
    ) -> Result<(), Violation> {
        let core = self.nodes[&id].core.as_ref().expect("a writer is up");
        for e in &write.entries {
            let prev_term = if e.index == 1 {
                0
            } else {
                core.term_at(e.index - 1).unwrap_or(0)
            };
            self.check.entry_written(id, e, prev_term)?;
        }
        Ok(())
    }

    /// Whatever a node's commit index passes is the same entry everywhere, and durable on a
    /// majority of disks.
    pub(crate) fn check_commit_advance(&mut self, id: NodeId) -> Result<(), Violation> {
        let node = &self.nodes[&id];
        let core = node.core.as_ref().expect("checked by caller");
        let commit = core.commit_index();
        if commit <= node.seen_commit {
            return Ok(());
        }
        // Below the snapshot the log is gone; an installed snapshot's data is checked on install.
        let from = node.seen_commit.max(core.snapshot().index);
        for index in from + 1..=commit {
            let Some(term) = core.term_at(index) else {
                return violation(
                    "commit",
                    format!("n{id} committed {index}, which its log does not hold"),
                );
            };
            self.check.committed(id, index, term)?;
        }
        let term = core.term_at(commit).expect("checked above");
        if core.role() == Role::Leader {
            self.check.leader_committed(id, core.term(), commit, term)?;
            // Against the configuration in force at the leader, the one that decided. A
            // follower's own may differ (an uncommitted entry of a deposed leader), so only
            // leaders are checked here; followers learn commits from them.
            let nodes = &self.nodes;
            let durable = |v: NodeId| {
                nodes
                    .get(&v)
                    .and_then(|n| n.durable_entry(commit))
                    .is_some_and(|e| e.term == term)
            };
            self.check
                .commit_durable_on(id, commit, term, core.membership(), durable)?;
            for earlier in configurations_before_changes_above(core, node.seen_commit) {
                self.check
                    .commit_overlaps_earlier_configuration(id, commit, term, &earlier, durable)?;
            }
        }
        self.nodes.get_mut(&id).expect("exists").seen_commit = commit;
        Ok(())
    }

    /// Applies in order only durable, committed entries (contract rule 2).
    pub(crate) fn apply(&mut self, id: NodeId, entry: Entry) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("exists");
        if entry.index != node.applied + 1 {
            return violation(
                "apply order",
                format!("n{id} was handed {} after {}", entry.index, node.applied),
            );
        }
        if node
            .durable_entry(entry.index)
            .is_none_or(|e| e.term != entry.term)
        {
            return violation(
                "apply only durable entries",
                format!("n{id} was handed {} before it was durable", entry.index),
            );
        }
        self.check.applied(id, &entry)?;
        let node = self.nodes.get_mut(&id).expect("exists");
        node.applied = entry.index;
        if let Some(core) = node.core.as_mut() {
            core.on_applied(entry.index);
        }
        Ok(())
    }
}

fn is_reply(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::PreVoteResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::AppendResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::ReadIndexResponse { .. }
    )
}

/// The property a breach detected by a core belongs to, named as the harness's own checks.
fn rule_of(breach: SafetyViolation) -> &'static str {
    match breach {
        SafetyViolation::TwoLeadersInOneTerm { .. } => "election safety",
        SafetyViolation::CommittedEntryConflict { .. } => "state machine safety",
        SafetyViolation::AckBeyondLog { .. } => "log matching",
        SafetyViolation::AppliedBeyondHandedOut { .. } => "driver contract",
        _ => "core-detected breach",
    }
}

/// The configuration in force before each configuration-change entry of `core`'s log above
/// `index` (changes that were not committed at `index`). Unknown (and left out) before the
/// first change in the log of a node that joined with no configuration and no snapshot.
fn configurations_before_changes_above(core: &raft_core::RawNode, index: Index) -> Vec<Membership> {
    let mut current = core.snapshot().membership.clone();
    let mut earlier = Vec::new();
    for e in core.log_entries() {
        if e.kind != EntryKind::ConfChange {
            continue;
        }
        let Ok(change) = ConfChangeEntry::decode(&e.payload) else {
            continue;
        };
        if e.index > index && !current.is_empty() {
            earlier.push(current);
        }
        current = change.membership;
    }
    earlier
}
