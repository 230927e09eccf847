//! Majority arithmetic, the one place that knows what a quorum is. A configuration's quorum is a
//! majority of its `voters`, and while it is joint (Raft thesis §4.3) also a majority of its
//! `outgoing` voters: every decision (election, commit, ReadIndex, check-quorum) needs both.
//! Learners are never counted. An empty voter set imposes nothing (the outgoing set of a
//! configuration that is not joint); a node whose own configuration has no voter never
//! campaigns or leads, so it never asks.

use std::collections::{BTreeMap, BTreeSet};

use crate::membership::Membership;
use crate::types::{Index, NodeId};

/// How many of `voters` make a majority.
pub(crate) fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// Voter sets up to this size are counted in a buffer on the stack: commit counting runs on
/// every acknowledgement, and real configurations have a handful of voters.
const INLINE_VOTERS: usize = 16;

/// The highest value a majority of `voters` has reached (voters `acked` knows nothing of count
/// as 0); `Index::MAX` for an empty set, which constrains nothing.
fn majority_index(voters: &BTreeSet<NodeId>, acked: &impl Fn(NodeId) -> Index) -> Index {
    if voters.is_empty() {
        return Index::MAX;
    }
    let index = if voters.len() <= INLINE_VOTERS {
        let mut buffer = [0; INLINE_VOTERS];
        for (slot, &v) in buffer.iter_mut().zip(voters) {
            *slot = acked(v);
        }
        majority_th_highest(&mut buffer[..voters.len()])
    } else {
        let mut indexes: Vec<Index> = voters.iter().map(|&v| acked(v)).collect();
        majority_th_highest(&mut indexes)
    };
    let reached = |beyond: bool| {
        voters
            .iter()
            .filter(|&&v| {
                if beyond {
                    acked(v) > index
                } else {
                    acked(v) >= index
                }
            })
            .count()
    };
    debug_assert!(
        reached(false) >= majority(voters.len()),
        "a majority has reached the index counted"
    );
    debug_assert!(
        reached(true) < majority(voters.len()),
        "no majority has reached beyond the index counted"
    );
    index
}

/// The value a majority of `indexes` has reached: the majority-th highest. Reorders `indexes`.
fn majority_th_highest(indexes: &mut [Index]) -> Index {
    if indexes.len() > INLINE_VOTERS {
        indexes.sort_unstable_by(|a, b| b.cmp(a));
    } else {
        // An insertion sort, highest first: the usual set is a handful of voters.
        for sorted in 1..indexes.len() {
            let mut at = sorted;
            while at > 0 && indexes[at - 1] < indexes[at] {
                indexes.swap(at - 1, at);
                at -= 1;
            }
        }
    }
    indexes[majority(indexes.len()) - 1]
}

/// The outcome of counting votes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

fn majority_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let need = majority(voters.len());
    let count = |want: bool| {
        voters
            .iter()
            .filter(|v| votes.get(v) == Some(&want))
            .count()
    };
    if count(true) >= need {
        VoteResult::Won
    } else if count(false) > voters.len() - need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// The quorum view of a configuration: its incoming voters and, while joint, its outgoing ones.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quorum<'a> {
    incoming: &'a BTreeSet<NodeId>,
    outgoing: &'a BTreeSet<NodeId>,
    /// Deliberate bug: learners count as voters.
    learners: Option<&'a BTreeSet<NodeId>>,
}

impl<'a> Quorum<'a> {
    pub(crate) fn of(membership: &'a Membership) -> Self {
        Self {
            incoming: &membership.voters,
            outgoing: &membership.outgoing,
            learners: None,
        }
    }

    /// [`Quorum::of`], or with `count_learners` the deliberately broken variant.
    pub(crate) fn with_bugs(membership: &'a Membership, count_learners: bool) -> Self {
        if count_learners {
            Self::counting_learners(membership)
        } else {
            Self::of(membership)
        }
    }

    /// Deliberately broken: counts `membership`'s learners as incoming voters.
    pub(crate) fn counting_learners(membership: &'a Membership) -> Self {
        Self {
            learners: Some(&membership.learners),
            ..Self::of(membership)
        }
    }

    fn incoming(&self) -> std::borrow::Cow<'a, BTreeSet<NodeId>> {
        match self.learners {
            None => std::borrow::Cow::Borrowed(self.incoming),
            Some(l) => std::borrow::Cow::Owned(self.incoming.union(l).copied().collect()),
        }
    }

    /// The highest index both majorities have reached.
    pub(crate) fn committed_index(&self, acked: impl Fn(NodeId) -> Index) -> Index {
        majority_index(&self.incoming(), &acked).min(majority_index(self.outgoing, &acked))
    }

    /// Won once both majorities granted; lost once either refused.
    pub(crate) fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        match (
            majority_vote(&self.incoming(), votes),
            majority_vote(self.outgoing, votes),
        ) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether the nodes for which `active` holds include both majorities.
    pub(crate) fn is_reached_by(&self, active: impl Fn(NodeId) -> bool) -> bool {
        self.committed_index(|id| Index::from(active(id))) >= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joint(incoming: &[NodeId], outgoing: &[NodeId]) -> Membership {
        Membership {
            voters: incoming.iter().copied().collect(),
            outgoing: outgoing.iter().copied().collect(),
            learners: BTreeSet::new(),
        }
    }

    #[test]
    fn committed_index_is_the_majority_th_highest() {
        let acked = |v: NodeId| [0, 5, 3, 9, 1, 7][v as usize];
        let at = |ids: &[NodeId]| Quorum::of(&joint(ids, &[])).committed_index(acked);
        assert_eq!(at(&[1, 2, 3]), 5);
        assert_eq!(at(&[1, 2, 3, 4, 5]), 5);
        assert_eq!(at(&[1, 2, 3, 4]), 3);
        assert_eq!(at(&[1]), 5);
    }

    #[test]
    fn committed_index_agrees_with_sorting_for_every_size_on_and_off_the_stack() {
        let mut rng = crate::rng::SeededRng::new(7);
        for size in 1..=2 * INLINE_VOTERS as u64 + 1 {
            for _ in 0..20 {
                let acked: Vec<Index> = (0..=size).map(|_| rng.gen_range(0..6u64)).collect();
                let ids: Vec<NodeId> = (1..=size).collect();
                let mut sorted: Vec<Index> = ids.iter().map(|&v| acked[v as usize]).collect();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                let expected = sorted[majority(ids.len()) - 1];
                let counted = Quorum::of(&joint(&ids, &[])).committed_index(|v| acked[v as usize]);
                assert_eq!(counted, expected, "{size} voters acked {acked:?}");
            }
        }
    }

    #[test]
    fn a_joint_commit_needs_both_majorities() {
        let acked = |v: NodeId| [0, 9, 9, 1, 1, 1, 9][v as usize];
        // {1,2,3} alone would commit 9; {3,4,5} holds it back to 1.
        let m = joint(&[3, 4, 5], &[1, 2, 3]);
        assert_eq!(Quorum::of(&m).committed_index(acked), 1);
        assert_eq!(
            Quorum::of(&joint(&[1, 2, 3], &[])).committed_index(acked),
            9
        );
        let m = joint(&[1, 2, 6], &[3, 4, 5]);
        assert_eq!(Quorum::of(&m).committed_index(acked), 1);
        assert_eq!(
            Quorum::of(&joint(&[1, 2, 6], &[])).committed_index(acked),
            9
        );
    }

    #[test]
    fn votes_need_a_majority_either_way() {
        let q = joint(&[1, 2, 3, 4, 5], &[]);
        let q = Quorum::of(&q);
        let mut votes = BTreeMap::from([(1, true), (2, true)]);
        assert_eq!(q.vote_result(&votes), VoteResult::Pending);
        votes.insert(3, true);
        assert_eq!(q.vote_result(&votes), VoteResult::Won);
        let votes = BTreeMap::from([(1, true), (2, false), (3, false)]);
        assert_eq!(q.vote_result(&votes), VoteResult::Pending);
        let votes = BTreeMap::from([(2, false), (3, false), (4, false)]);
        assert_eq!(q.vote_result(&votes), VoteResult::Lost);
    }

    #[test]
    fn a_joint_election_needs_both_majorities_and_is_lost_by_either() {
        let m = joint(&[1, 4, 5], &[1, 2, 3]);
        let q = Quorum::of(&m);
        let votes = BTreeMap::from([(1, true), (2, true), (3, true)]);
        assert_eq!(
            q.vote_result(&votes),
            VoteResult::Pending,
            "old majority only"
        );
        let votes = BTreeMap::from([(1, true), (4, true), (2, true)]);
        assert_eq!(q.vote_result(&votes), VoteResult::Won);
        let votes = BTreeMap::from([(1, true), (2, true), (3, true), (4, false), (5, false)]);
        assert_eq!(
            q.vote_result(&votes),
            VoteResult::Lost,
            "new majority refused"
        );
    }

    #[test]
    fn learners_and_strangers_never_count() {
        let m = Membership {
            voters: [1, 2, 3].into(),
            outgoing: BTreeSet::new(),
            learners: [4, 5].into(),
        };
        let votes = BTreeMap::from([(1, true), (4, true), (5, true), (9, true)]);
        assert_eq!(Quorum::of(&m).vote_result(&votes), VoteResult::Pending);
        assert_eq!(
            Quorum::counting_learners(&m).vote_result(&votes),
            VoteResult::Won
        );
        let active = |id: NodeId| id == 1 || id >= 4;
        assert!(!Quorum::of(&m).is_reached_by(active));
        assert!(Quorum::of(&m).is_reached_by(|id| id <= 2));
    }

    #[test]
    fn an_empty_outgoing_set_constrains_nothing() {
        let m = joint(&[1], &[]);
        assert_eq!(Quorum::of(&m).committed_index(|_| 4), 4);
        assert_eq!(
            Quorum::of(&m).vote_result(&BTreeMap::from([(1, true)])),
            VoteResult::Won
        );
    }
}
