//! ReadIndex (Raft thesis §6.4): linearizable reads without writing to the log.
//!
//! A read is registered with the leader's commit index at the time it arrives. The leader then
//! proves it was still the leader *after* that moment by a round of heartbeats acknowledged by a
//! majority. Rounds are numbered; every read gets the number of a round that starts after it
//! arrived (a fresh round per batch of reads, never an older one), and a majority acknowledging
//! round `r` (or a later one) confirms every read of round `r` and earlier. Reads arriving
//! between two drains of the core share one round, so a burst of reads costs one heartbeat each.
//! In lease mode (`lease.rs`) a read inside the leader's lease is served at once instead.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::message::MessageBody;
use crate::node::RawNode;
use crate::ready::ReadState;
use crate::types::{Index, NodeId};

impl RawNode {
    /// A read on the leader, for itself or for a follower. It waits until this leader has
    /// committed an entry of its own term: before that, its commit index may lag behind what an
    /// earlier leader acknowledged to clients.
    pub(crate) fn leader_read(&mut self, ctx: Bytes, requester: NodeId) {
        if self.log.term(self.log.committed()) != Some(self.term) {
            self.reads_awaiting_commit.push((ctx, requester));
            return;
        }
        let index = self.log.committed();
        let alone = self.quorum().committed_index(|v| Index::from(v == self.id)) >= 1;
        if alone || self.lease_holds() || self.bugs().read_index_without_quorum {
            self.deliver_read(PendingRead {
                ctx,
                requester,
                index,
                round: 0,
            });
        } else {
            self.reads.register(ctx, requester, index);
        }
    }

    pub(crate) fn serve_reads_awaiting_commit(&mut self) {
        if self.reads_awaiting_commit.is_empty()
            || self.log.term(self.log.committed()) != Some(self.term)
        {
            return;
        }
        for (ctx, requester) in std::mem::take(&mut self.reads_awaiting_commit) {
            self.leader_read(ctx, requester);
        }
    }

    pub(crate) fn confirm_reads(&mut self, from: NodeId, round: u64) {
        let count_learners = self.bugs().learners_count_in_quorum;
        let quorum = crate::quorum::Quorum::with_bugs(self.log.membership(), count_learners);
        let confirmed = self.reads.acknowledge(quorum, self.id, from, round);
        let round = self.reads.confirmed_round();
        self.lease_confirmed(round);
        for read in confirmed {
            self.deliver_read(read);
        }
    }

    fn deliver_read(&mut self, read: PendingRead) {
        if read.requester == self.id {
            self.read_states.push(ReadState {
                ctx: read.ctx,
                index: read.index,
            });
        } else {
            self.send(
                read.requester,
                MessageBody::ReadIndexResponse {
                    ctx: read.ctx,
                    index: read.index,
                },
            );
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingRead {
    pub(crate) ctx: Bytes,
    /// Who asked: this node, or a follower that forwarded the request.
    pub(crate) requester: NodeId,
    pub(crate) index: Index,
    round: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ReadIndexTracker {
    /// The latest round whose heartbeats were sent.
    round: u64,
    /// Reads registered since the last round started, which need a new one.
    round_needed: bool,
    /// The highest round each peer has acknowledged.
    acked: BTreeMap<NodeId, u64>,
    /// The highest round a quorum has acknowledged.
    confirmed: u64,
    pending: VecDeque<PendingRead>,
}

impl ReadIndexTracker {
    pub(crate) fn register(&mut self, ctx: Bytes, requester: NodeId, index: Index) {
        self.pending.push_back(PendingRead {
            ctx,
            requester,
            index,
            round: self.round + 1,
        });
        self.round_needed = true;
    }

    /// Starts a new round if reads wait for one; returns its number for the heartbeats.
    pub(crate) fn start_round(&mut self) -> Option<u64> {
        if !self.round_needed {
            return None;
        }
        self.round_needed = false;
        self.round += 1;
        Some(self.round)
    }

    /// Starts a new round whether reads wait or not (a lease's heartbeats); returns its number.
    pub(crate) fn start_round_now(&mut self) -> u64 {
        self.round_needed = false;
        self.round += 1;
        self.round
    }

    /// The highest round a quorum has acknowledged since the leadership began.
    pub(crate) fn confirmed_round(&self) -> u64 {
        self.confirmed
    }

    pub(crate) fn round_needed(&self) -> bool {
        self.round_needed
    }

    /// The round that heartbeats carry: the latest started.
    pub(crate) fn current_round(&self) -> u64 {
        self.round
    }

    /// Records `from`'s acknowledgement of `round` and returns the reads it confirms, oldest
    /// first. `me` always counts as having acknowledged the current round.
    pub(crate) fn acknowledge(
        &mut self,
        quorum: crate::quorum::Quorum<'_>,
        me: NodeId,
        from: NodeId,
        round: u64,
    ) -> Vec<PendingRead> {
        if round == 0 || round > self.round {
            return Vec::new();
        }
        let seen = self.acked.entry(from).or_insert(0);
        *seen = (*seen).max(round);
        let confirmed = quorum.committed_index(|v| {
            if v == me {
                self.round
            } else {
                self.acked.get(&v).copied().unwrap_or(0)
            }
        });
        self.confirmed = self.confirmed.max(confirmed);
        self.take_confirmed(confirmed)
    }

    /// Every read of round `upto` or earlier.
    pub(crate) fn take_confirmed(&mut self, upto: u64) -> Vec<PendingRead> {
        let mut out = Vec::new();
        while self.pending.front().is_some_and(|r| r.round <= upto) {
            out.extend(self.pending.pop_front());
        }
        out
    }

    /// Forgets every pending read (on losing leadership: the requesters retry).
    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.acked.clear();
        self.confirmed = 0;
        self.round_needed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_needs_a_majority_to_acknowledge_a_round_started_after_it() {
        let three = crate::Membership::with_voters([1, 2, 3]);
        let voters = crate::quorum::Quorum::of(&three);
        let mut t = ReadIndexTracker::default();
        let old = t.start_round();
        assert_eq!(old, None, "no round without reads");
        t.register(Bytes::from_static(b"a"), 1, 7);
        let r = t.start_round().unwrap();
        // An acknowledgement of an earlier round proves nothing about leadership after the read.
        assert!(t.acknowledge(voters, 1, 2, r - 1).is_empty());
        let done = t.acknowledge(voters, 1, 3, r);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].index, 7);
    }

    #[test]
    fn reads_between_rounds_share_one_round() {
        let three = crate::Membership::with_voters([1, 2, 3]);
        let voters = crate::quorum::Quorum::of(&three);
        let mut t = ReadIndexTracker::default();
        t.register(Bytes::from_static(b"a"), 1, 1);
        t.register(Bytes::from_static(b"b"), 2, 1);
        let r = t.start_round().unwrap();
        assert_eq!(t.start_round(), None);
        t.register(Bytes::from_static(b"c"), 1, 2);
        assert_eq!(t.acknowledge(voters, 1, 2, r).len(), 2);
        let r2 = t.start_round().unwrap();
        assert_eq!(t.acknowledge(voters, 1, 3, r2).len(), 1);
    }

    #[test]
    fn a_joint_round_needs_both_majorities_and_learners_never_count() {
        let joint = crate::Membership {
            voters: [1, 2, 3].into(),
            outgoing: [1, 4, 5].into(),
            learners: [6].into(),
        };
        let quorum = crate::quorum::Quorum::of(&joint);
        let mut t = ReadIndexTracker::default();
        let r = t.start_round_now();
        t.acknowledge(quorum, 1, 2, r);
        t.acknowledge(quorum, 1, 6, r);
        assert_eq!(
            t.confirmed_round(),
            0,
            "the outgoing majority has not answered"
        );
        t.acknowledge(quorum, 1, 4, r);
        assert_eq!(t.confirmed_round(), r);
    }
}
