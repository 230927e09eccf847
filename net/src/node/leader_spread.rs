//! Spreading range leaders over the nodes, so that once the keyspace is split every node's CPU
//! serves writes, not the one that happened to win every new range's first election.
//!
//! Every range but the first has a preferred leader: the voter at position `range id mod
//! voters` in id order, so consecutive ranges take turns over the voters. A node leading a range
//! whose preferred leader is another voter hands the leadership to it by Raft's leadership
//! transfer (`RawNode::transfer_leader`), once that voter holds the whole log, and tries again
//! for that range only after [`RETRY_ELECTION_TIMEOUTS`] election timeouts: a preferred voter
//! that is down or slow keeps nothing from being served meanwhile, and a failed transfer is not
//! repeated at every tick. Every node computes the same preference from the same configuration,
//! so no two nodes pull one range's leadership back and forth.
//!
//! The first range is left where elections and the operator put it (`RAFT.TRANSFER-LEADER`
//! moves its leader, and the spreading would undo that); and nothing moves while a node hosts the
//! first range alone.

use std::collections::{BTreeMap, BTreeSet};

use kv::ranges::{RangeId, FIRST_RANGE};
use raft_core::{Membership, NodeId, Role};

use super::group::Group;

/// How many election timeouts pass before a range's leader tries a transfer again.
pub(super) const RETRY_ELECTION_TIMEOUTS: u64 = 10;

/// The voter a range's leadership belongs with, if any (none for the first range, or while the
/// configuration is joint): among the range's voters that are voters of the first range too
/// (`cluster_voters`), so that while a range follows a change of the members
/// (`member_follow.rs`) its leadership never goes to a voter on its way out, which would hand
/// it back before its removal (seed 546 of the simulator: the two kept passing ranges 3 and 7
/// back and forth and the removal never came).
pub(super) fn preferred_leader(
    range: RangeId,
    membership: &Membership,
    cluster_voters: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    if range == FIRST_RANGE || membership.is_joint() {
        return None;
    }
    let staying: Vec<NodeId> = membership
        .voters
        .iter()
        .copied()
        .filter(|id| cluster_voters.contains(id))
        .collect();
    if staying.is_empty() {
        return None;
    }
    let position = (range % staying.len() as u64) as usize;
    staying.get(position).copied()
}

/// When each range last tried a transfer, in ticks of this node.
#[derive(Default)]
pub(super) struct LeaderSpreading {
    ticks: u64,
    last_try: BTreeMap<RangeId, u64>,
}

impl LeaderSpreading {
    /// One tick: every group this node leads whose range belongs with another voter hands its
    /// leadership over, unless it tried too recently.
    pub(super) fn on_tick(&mut self, groups: &mut BTreeMap<RangeId, Group>) {
        self.ticks += 1;
        if groups.len() < 2 {
            return;
        }
        let Some(cluster_voters) = groups
            .get(&FIRST_RANGE)
            .map(|first| first.core.membership().voters.clone())
        else {
            return;
        };
        for (&range, group) in groups.iter_mut() {
            let retry_after = RETRY_ELECTION_TIMEOUTS * u64::from(group.cfg.election_ticks);
            let tried_lately = self
                .last_try
                .get(&range)
                .is_some_and(|&at| self.ticks < at + retry_after);
            if !tried_lately && group.hand_to_preferred_leader(&cluster_voters) {
                self.last_try.insert(range, self.ticks);
            }
        }
        // Forget ranges this node no longer hosts (none today: ranges only split).
        self.last_try.retain(|range, _| groups.contains_key(range));
    }
}

impl Group {
    /// If this node leads a range that belongs with another voter holding the whole log, starts
    /// handing the leadership to it. Whether a transfer began.
    pub(super) fn hand_to_preferred_leader(&mut self, cluster_voters: &BTreeSet<NodeId>) -> bool {
        if self.core.role() != Role::Leader {
            return false;
        }
        let Some(to) = preferred_leader(self.range, self.core.membership(), cluster_voters) else {
            return false;
        };
        let caught_up = self
            .core
            .peer_progress(to)
            .is_some_and(|p| p.match_index >= self.core.last_index());
        if to == self.cfg.id || !caught_up {
            return false;
        }
        match self.core.transfer_leader(to) {
            Ok(()) => {
                tracing::info!(
                    id = self.cfg.id,
                    range = self.range,
                    to,
                    "handing the range's leadership to its preferred leader"
                );
                true
            }
            Err(e) => {
                tracing::debug!(id = self.cfg.id, range = self.range, error = %e, "no transfer");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ranges_take_turns_over_the_voters_and_the_first_range_stays_put() {
        let three = Membership::with_voters([1, 2, 3]);
        let cluster = BTreeSet::from([1, 2, 3]);
        let preferred: Vec<_> = (1..=7)
            .map(|r| preferred_leader(r, &three, &cluster))
            .collect();
        assert_eq!(
            preferred,
            [None, Some(3), Some(1), Some(2), Some(3), Some(1), Some(2)]
        );
        let mut joint = Membership::with_voters([1, 2, 4]);
        joint.outgoing = [1, 2, 3].into();
        assert_eq!(
            preferred_leader(2, &joint, &cluster),
            None,
            "nothing moves while joint"
        );
    }

    #[test]
    fn a_voter_the_first_range_no_longer_has_is_never_preferred() {
        // Node 5 was removed from the first range; range 3 still has it as a voter.
        let range = Membership::with_voters([1, 2, 3, 5]);
        let cluster = BTreeSet::from([1, 2, 3]);
        for r in 2..=12 {
            let preferred = preferred_leader(r, &range, &cluster);
            assert!(matches!(preferred, Some(1..=3)), "range {r}: {preferred:?}");
        }
        assert_eq!(
            preferred_leader(3, &range, &BTreeSet::from([1, 2, 3, 5])),
            Some(5),
            "the same range with node 5 staying"
        );
    }
}
