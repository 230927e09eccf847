//! Random configuration changes for a share of the random runs: learners added and promoted,
//! members removed, voters replaced, several voters changed at once (joint consensus), and
//! leadership transfers, all under the run's faults.

use raft_core::{MemberChange, NodeId};

use crate::cluster::Cluster;
use crate::invariants::Violation;

/// At most this many nodes ever exist in a run (removed ones stay, harmless).
const MAX_NODES: u64 = 7;

impl Cluster {
    /// Asks the current leader, if any, for one random change or a transfer. Refusals (a
    /// change in flight, a transfer under way) are part of the exercise.
    pub(crate) fn random_conf_change(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let membership = self.core(leader).membership().clone();
        let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
        let learners: Vec<NodeId> = membership.learners.iter().copied().collect();
        let next_id = self.nodes.keys().max().copied().unwrap_or(0) + 1;
        let pick = |rng: &mut raft_core::SeededRng, ids: &[NodeId]| -> Option<NodeId> {
            (!ids.is_empty()).then(|| ids[rng.gen_range(0..ids.len())])
        };
        let changes: Vec<MemberChange> = match self.rng.gen_range(0..6u32) {
            0 if next_id <= MAX_NODES => {
                self.add_node(next_id);
                vec![MemberChange::AddLearner(next_id)]
            }
            1 => match pick(&mut self.rng, &learners) {
                Some(l) => vec![MemberChange::AddVoter(l)],
                None => return Ok(()),
            },
            2 => {
                let members = membership.members();
                match pick(&mut self.rng, &members) {
                    Some(m) => vec![MemberChange::Remove(m)],
                    None => return Ok(()),
                }
            }
            3 => match (pick(&mut self.rng, &voters), pick(&mut self.rng, &learners)) {
                (Some(v), Some(l)) => vec![MemberChange::Remove(v), MemberChange::AddVoter(l)],
                _ => return Ok(()),
            },
            4 if voters.len() >= 3 && !learners.is_empty() => {
                // Several voters at once: two out, every learner in.
                let mut changes: Vec<MemberChange> = learners
                    .iter()
                    .map(|&l| MemberChange::AddVoter(l))
                    .collect();
                changes.push(MemberChange::Remove(voters[0]));
                changes.push(MemberChange::Remove(voters[voters.len() - 1]));
                changes
            }
            5 => {
                if let Some(to) = pick(&mut self.rng, &voters) {
                    if self.transfer_leader(leader, to)?.is_ok() && to != leader {
                        self.transfers_started += 1;
                    }
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        if self.propose_conf_change(leader, &changes)?.is_ok() {
            self.conf_changes_accepted += 1;
        }
        Ok(())
    }
}
