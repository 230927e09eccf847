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

use std::collections::BTreeMap;

use kv::ranges::{RangeId, FIRST_RANGE};
use raft_core::{Membership, NodeId, Role};

use super::group::Group;

/// How many election timeouts pass before a range's leader tries a transfer again.
pub(super) const RETRY_ELECTION_TIMEOUTS: u64 = 10;

/// The voter a range's leadership belongs with, if any (none for the first range, or while the
/// configuration is joint).
pub(super) fn preferred_leader(range: RangeId, membership: &Membership) -> Option<NodeId> {
    if range == FIRST_RANGE || membership.is_joint() || membership.voters.is_empty() {
        return None;
    }
    let position = (range % membership.voters.len() as u64) as usize;
    membership.voters.iter().nth(position).copied()
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
        for (&range, group) in groups.iter_mut() {
            let retry_after = RETRY_ELECTION_TIMEOUTS * u64::from(group.cfg.election_ticks);
            let tried_lately = self
                .last_try
                .get(&range)
                .is_some_and(|&at| self.ticks < at + retry_after);
            if !tried_lately && group.hand_to_preferred_leader() {
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
    pub(super) fn hand_to_preferred_leader(&mut self) -> bool {
        if self.core.role() != Role::Leader {
            return false;
        }
        let Some(to) = preferred_leader(self.range, self.core.membership()) else {
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
        let preferred: Vec<_> = (1..=7).map(|r| preferred_leader(r, &three)).collect();
        assert_eq!(
            preferred,
            [None, Some(3), Some(1), Some(2), Some(3), Some(1), Some(2)]
        );
        let mut joint = Membership::with_voters([1, 2, 4]);
        joint.outgoing = [1, 2, 3].into();
        assert_eq!(
            preferred_leader(2, &joint),
            None,
            "nothing moves while joint"
        );
    }
}
