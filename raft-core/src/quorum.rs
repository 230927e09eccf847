//! Majority arithmetic, kept apart so that joint consensus can replace it later in one place.

use std::collections::BTreeMap;

use crate::types::{Index, NodeId};

/// How many of `voters` make a majority.
pub(crate) fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index that a majority of voters has reached: sort descending and take the
/// majority-th value. Voters missing from `acked` count as 0.
pub(crate) fn committed_index(voters: &[NodeId], acked: impl Fn(NodeId) -> Index) -> Index {
    let mut indexes: Vec<Index> = voters.iter().map(|&v| acked(v)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[majority(voters.len()) - 1]
}

/// The outcome of counting votes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

pub(crate) fn vote_result(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let need = majority(voters.len());
    let granted = voters
        .iter()
        .filter(|v| votes.get(v) == Some(&true))
        .count();
    let rejected = voters
        .iter()
        .filter(|v| votes.get(v) == Some(&false))
        .count();
    if granted >= need {
        VoteResult::Won
    } else if rejected > voters.len() - need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_index_is_the_majority_th_highest() {
        let acked = |v: NodeId| [0, 5, 3, 9, 1, 7][v as usize];
        assert_eq!(committed_index(&[1, 2, 3], acked), 5);
        assert_eq!(committed_index(&[1, 2, 3, 4, 5], acked), 5);
        assert_eq!(committed_index(&[1, 2, 3, 4], acked), 3);
        assert_eq!(committed_index(&[1], acked), 5);
    }

    #[test]
    fn votes_need_a_majority_either_way() {
        let voters = [1, 2, 3, 4, 5];
        let mut votes = BTreeMap::from([(1, true), (2, true)]);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(3, true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Won);
        let votes = BTreeMap::from([(1, true), (2, false), (3, false)]);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        let votes = BTreeMap::from([(2, false), (3, false), (4, false)]);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Lost);
    }
}
