//! Configuration changes on the leader (Raft thesis §4): proposing one, leaving a joint
//! configuration once it commits (etcd's auto-leave), stepping down once the change that
//! removed this leader commits, and keeping one progress tracker per member.
//!
//! A configuration is in force from the moment its entry is appended (thesis §4.1): the log
//! (`log.rs`) tracks the last configuration entry, and truncating it reverts the configuration
//! by itself. Any change of the voter set goes through a joint configuration (voters = new,
//! outgoing = old), left by an entry the leader appends alone once the joint one commits.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::error::ProposeError;
use crate::membership::{ConfChangeEntry, MemberChange, Membership};
use crate::message::{Message, MessageBody};
use crate::node::RawNode;
use crate::progress::Progress;
use crate::types::{Entry, EntryKind, Index, NodeId, Role};

impl RawNode {
    /// Proposes a change of the configuration (several changes at once are one change). Any
    /// change of the voters goes through joint consensus: the entry appended holds the joint
    /// configuration, and once it commits the leader appends the final one by itself. Adding
    /// or removing learners alone is one step. No change at all appends the configuration in
    /// force again, for its `context` alone (a member's new address, say). `context` travels in the entry for the driver
    /// (the core never reads it). Returns the index of the appended entry; the change is in
    /// force on this node at once and has taken effect when that entry commits.
    ///
    /// Refused with [`ProposeError::ConfChangeInProgress`] while another change is under way
    /// (an uncommitted configuration entry, or a joint configuration not left yet) and until
    /// this leader has committed an entry of its own term; with
    /// [`ProposeError::InvalidConfChange`] when the change does not fit the configuration in
    /// force; with [`ProposeError::NotLeader`] on a follower and
    /// [`ProposeError::TransferringLeadership`] during a transfer.
    pub fn propose_conf_change(
        &mut self,
        changes: &[MemberChange],
        context: Bytes,
    ) -> Result<Index, ProposeError> {
        let result = self.propose_conf_change_inner(changes, context);
        self.debug_assert_invariants();
        result
    }

    fn propose_conf_change_inner(
        &mut self,
        changes: &[MemberChange],
        context: Bytes,
    ) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(t) = &self.transfer {
            return Err(ProposeError::TransferringLeadership { to: t.to });
        }
        let committed = self.log.committed();
        let unsettled = self.log.last_conf_index().is_some_and(|i| i > committed)
            || self.log.membership().is_joint()
            // The fix for the single-server change bug: a new leader's configuration may come
            // from an uncommitted entry of an earlier term until its own no-op commits.
            || self.log.term(committed) != Some(self.term);
        if unsettled {
            return Err(ProposeError::ConfChangeInProgress);
        }
        let current = self.log.membership().clone();
        let mut next = changed(&current, changes)
            .map_err(|reason| ProposeError::InvalidConfChange { reason })?;
        if next.voters != current.voters && !self.bugs().conf_change_without_joint {
            next.outgoing = current.voters.clone();
        }
        tracing::info!(id = self.id, term = self.term, from = ?current, to = ?next, "proposing a configuration change");
        let index = self.append_conf_entry(next, context);
        if self.bugs().leave_joint_before_commit {
            self.leave_joint();
        }
        Ok(index)
    }

    /// Appends a configuration entry and brings the progress trackers in line with it.
    fn append_conf_entry(&mut self, membership: Membership, context: Bytes) -> Index {
        let index = self.log.last_index() + 1;
        let payload = ConfChangeEntry {
            membership,
            context,
        }
        .encode();
        self.log.append(vec![Entry::new(
            self.term,
            index,
            EntryKind::ConfChange,
            payload,
        )]);
        // Quorums of the configuration before the one in force may not meet the next
        // leader's: only rounds sent from here on may hold a lease (`lease.rs`).
        self.lease.end();
        // New members are sent this entry first (and probed back from it).
        self.sync_progress_with_membership(index);
        self.broadcast_pending = true;
        if self.bug_ack_before_persist() {
            self.maybe_commit();
        }
        index
    }

    /// Leaves a joint configuration: the same voters, no outgoing ones, the same learners.
    fn leave_joint(&mut self) {
        let joint = self.log.membership();
        if !joint.is_joint() {
            return;
        }
        let left = Membership {
            voters: joint.voters.clone(),
            outgoing: BTreeSet::new(),
            learners: joint.learners.clone(),
        };
        tracing::info!(id = self.id, term = self.term, to = ?left, "leaving the joint configuration");
        self.append_conf_entry(left, Bytes::new());
    }

    /// The leader's commit index advanced: leave a joint configuration whose entry committed,
    /// and step down if the configuration that committed no longer has this node as a voter.
    pub(crate) fn membership_commit_advanced(&mut self) {
        let committed = self.log.committed();
        let settled = self.log.last_conf_index().is_none_or(|i| i <= committed);
        if !settled {
            return;
        }
        if self.log.membership().is_joint() {
            self.leave_joint();
            return;
        }
        if !self.is_voter() {
            tracing::info!(
                id = self.id,
                term = self.term,
                "removed from the configuration, which committed: stepping down"
            );
            // Tell the followers the commit first; a voter of the new configuration then
            // campaigns when it stops hearing from us.
            self.broadcast_append();
            self.change_reason = crate::ready::ChangeReason::RemovedFromConfiguration;
            self.become_follower(self.term, None);
        }
    }

    /// One progress tracker per member but this node: new members start at `next` (the first
    /// entry the next broadcast carries). A member the configuration no longer lists keeps its
    /// tracker, marked with the entry that removed it, until it holds that entry
    /// ([`RawNode::forget_informed_removed_peers`]): its own log then tells it that it was
    /// removed, so it stops campaigning and its driver can tell its clients. Dropped at once, it
    /// would never hear of its removal (etcd's servers tell a removed member from the
    /// transport; here the log does it).
    pub(crate) fn sync_progress_with_membership(&mut self, next: Index) {
        let members = self.log.membership().members();
        let removed_by = self.log.last_conf_index().unwrap_or(0);
        for (id, pr) in self.progress.iter_mut() {
            let member = members.binary_search(id).is_ok();
            pr.removed_by = match pr.removed_by {
                _ if member => None,
                Some(earlier) => Some(earlier),
                None => Some(removed_by),
            };
        }
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
        for id in members.into_iter().filter(|&m| m != self.id) {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next, max_msgs, max_bytes));
        }
        self.forget_informed_removed_peers();
    }

    /// A leader asked for a vote by a node outside its configuration starts replicating to it
    /// as to a removed member: such a node missed the entry that removed it (it was cut off,
    /// and the leader that removed it is gone), and its own log will then tell it. A stranger
    /// that never was a member gets the log too, which counts for nothing.
    pub(crate) fn maybe_inform_removed_candidate(&mut self, m: &Message) {
        let asks_for_vote = matches!(
            m.body,
            MessageBody::PreVoteRequest { .. } | MessageBody::VoteRequest { .. }
        );
        if self.role != Role::Leader
            || !asks_for_vote
            || self.progress.contains_key(&m.from)
            || self.log.membership().contains(m.from)
        {
            return;
        }
        // The configuration in force is that of the last change in the log, else the
        // snapshot's: the node must hold that much.
        let removed_by = self
            .log
            .last_conf_index()
            .unwrap_or(self.log.snapshot().index)
            .max(1);
        tracing::info!(
            id = self.id,
            term = self.term,
            from = m.from,
            removed_by,
            "a node outside the configuration asks for votes: sending it the log that removed it"
        );
        let mut pr = Progress::new(
            self.log.last_index() + 1,
            self.cfg.max_inflight_msgs,
            self.cfg.max_inflight_bytes,
        );
        pr.removed_by = Some(removed_by);
        self.progress.insert(m.from, pr);
        self.broadcast_pending = true;
    }

    /// Drops the trackers of removed peers that hold the entry that removed them and were told
    /// that it committed: a removed node then applies everything up to its removal, so the
    /// writes it took and forwarded before are answered with their outcome.
    pub(crate) fn forget_informed_removed_peers(&mut self) {
        self.progress.retain(|_, pr| {
            pr.removed_by
                .is_none_or(|by| pr.matched < by || pr.commit_sent < by)
        });
    }

    /// Drops the trackers of removed peers not heard from over a check-quorum period: a removed
    /// node that is gone for good is not probed forever.
    pub(crate) fn forget_silent_removed_peers(&mut self) {
        self.progress
            .retain(|_, pr| pr.removed_by.is_none() || pr.recently_active);
    }
}

/// `current` with `changes` made, or why they cannot be. No change at all re-states the
/// configuration: the entry then only carries a new `context` (a member's new address).
fn changed(current: &Membership, changes: &[MemberChange]) -> Result<Membership, String> {
    let mut touched = BTreeSet::new();
    let mut next = current.clone();
    for &change in changes {
        let id = target(change);
        if id == 0 {
            return Err("node id 0 is reserved".into());
        }
        if !touched.insert(id) {
            return Err(format!("node {id} is named twice"));
        }
        match change {
            MemberChange::AddVoter(id) => {
                if next.voters.contains(&id) {
                    return Err(format!("node {id} is a voter already"));
                }
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            MemberChange::AddLearner(id) => {
                if next.voters.contains(&id) {
                    return Err(format!("node {id} is a voter (remove it first)"));
                }
                if !next.learners.insert(id) {
                    return Err(format!("node {id} is a learner already"));
                }
            }
            MemberChange::Remove(id) => {
                if !next.voters.remove(&id) && !next.learners.remove(&id) {
                    return Err(format!("node {id} is not a member"));
                }
            }
        }
    }
    if next.voters.is_empty() {
        return Err("the change would leave no voter".into());
    }
    Ok(next)
}

fn target(change: MemberChange) -> NodeId {
    match change {
        MemberChange::AddVoter(id) | MemberChange::AddLearner(id) | MemberChange::Remove(id) => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        Membership {
            voters: voters.iter().copied().collect(),
            outgoing: BTreeSet::new(),
            learners: learners.iter().copied().collect(),
        }
    }

    #[test]
    fn changes_are_checked_against_the_configuration_in_force() {
        use MemberChange::*;
        let now = m(&[1, 2, 3], &[4]);
        assert_eq!(changed(&now, &[AddVoter(4)]), Ok(m(&[1, 2, 3, 4], &[])));
        assert_eq!(changed(&now, &[AddLearner(5)]), Ok(m(&[1, 2, 3], &[4, 5])));
        assert_eq!(
            changed(&now, &[Remove(3), AddVoter(6)]),
            Ok(m(&[1, 2, 6], &[4]))
        );
        assert_eq!(changed(&now, &[Remove(4)]), Ok(m(&[1, 2, 3], &[])));
        assert_eq!(changed(&now, &[]), Ok(now.clone()));
        for bad in [
            vec![AddVoter(1)],
            vec![AddLearner(2)],
            vec![AddLearner(4)],
            vec![Remove(9)],
            vec![AddVoter(0)],
            vec![AddVoter(5), Remove(5)],
            vec![Remove(1), Remove(2), Remove(3)],
        ] {
            assert!(changed(&now, &bad).is_err(), "{bad:?} accepted");
        }
    }
}
