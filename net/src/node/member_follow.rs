//! Membership changes on a split keyspace: the first range's configuration is the cluster's,
//! and every other range's configuration follows it.
//!
//! The operator changes the members as on an unsplit cluster (`RAFT.MEMBER ...`, which only the
//! first range's group acts on). On every node, each range this node leads compares its
//! configuration with the first range's as this node has it, once that one is settled (its
//! entry committed, not joint), and proposes the next step towards it through its own log:
//! new members join as learners (with the addresses the first range knows), a member's new
//! addresses are recorded, a learner the first range made a voter is promoted once it has
//! caught up with this range's log (as the operator's promotion requires of the first range),
//! and members the first range no longer has are removed, voters only once every promotion is
//! done (so that replacing a node never shrinks a range below the voters it had). One change at
//! a time per range: the core refuses a second while one is under way, and a voter change goes
//! through joint consensus as any other.
//!
//! A new node hosts the other ranges as its copy of the first range applies the splits that
//! made them (and their own logs the splits of theirs); until then the messages sent to it for
//! a range it does not host are dropped, which Raft tolerates. `member list` names the ranges
//! whose configuration this node still sees differ from the first range's, and the
//! `kvstore member` commands wait for them.
//!
//! Why the first range and not a node-level table: the first range already is where the
//! operator's changes are ordered, answered and made durable, and a range's own log is the
//! only place its configuration may change (Raft's rule: a configuration is an entry of the
//! log it governs). Following needs no new entry kind and no new message.

use std::collections::BTreeMap;

use bytes::Bytes;
use kv::ranges::{RangeId, FIRST_RANGE};
use kv::{MemberAddrs, MemberContext};
use raft_core::{MemberChange, Membership, NodeId, Role};

use super::admin::LEARNER_READY_LAG;
use super::group::Group;

/// How many ticks pass between two comparisons (a tick is 100 ms by default).
const FOLLOW_EVERY_TICKS: u64 = 3;

/// The next change that brings a range's configuration closer to the first range's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FollowStep {
    AddLearner(NodeId, MemberAddrs),
    UpdateAddrs(NodeId, MemberAddrs),
    Promote(NodeId),
    Remove(NodeId),
}

/// A configuration and the addresses its group knows for its members.
pub(super) struct Replica<'a> {
    pub membership: &'a Membership,
    pub addrs: &'a dyn Fn(NodeId) -> Option<&'a MemberAddrs>,
}

/// The next step from `current` towards `target` (which is settled: not joint), or `None` when
/// there is none to take now. `ready(id)`: learner `id` has caught up enough to vote. `me` (the
/// range's leader) is removed last, after any other member.
pub(super) fn next_step(
    target: &Replica,
    current: &Replica,
    ready: impl Fn(NodeId) -> bool,
    me: NodeId,
) -> Option<FollowStep> {
    let (want, have) = (target.membership, current.membership);
    if have.is_joint() {
        // The core leaves it by itself once it commits.
        return None;
    }
    for id in want.members() {
        let Some(addrs) = (target.addrs)(id) else {
            continue;
        };
        if !have.contains(id) {
            return Some(FollowStep::AddLearner(id, addrs.clone()));
        }
        if (current.addrs)(id) != Some(addrs) {
            return Some(FollowStep::UpdateAddrs(id, addrs.clone()));
        }
    }
    if let Some(&id) = want
        .voters
        .iter()
        .find(|&&id| have.is_learner(id) && ready(id))
    {
        return Some(FollowStep::Promote(id));
    }
    let mut leaving: Vec<NodeId> = have
        .members()
        .into_iter()
        .filter(|&id| !want.contains(id) || (have.is_voter(id) && want.is_learner(id)))
        .collect();
    let promotions_done = want.voters.iter().all(|&id| have.is_voter(id));
    if !promotions_done {
        leaving.retain(|&id| !have.is_voter(id));
    }
    // This node last: removing the leader hands the range to an election.
    leaving.sort_by_key(|&id| (id == me, id));
    leaving.first().map(|&id| FollowStep::Remove(id))
}

/// Whether `current` is `target` (voters, learners, the addresses of the target's members).
pub(super) fn same_configuration(target: &Replica, current: &Replica) -> bool {
    let (want, have) = (target.membership, current.membership);
    !have.is_joint()
        && want.voters == have.voters
        && want.learners == have.learners
        && want.members().into_iter().all(|id| {
            let wanted = (target.addrs)(id);
            wanted.is_none() || (current.addrs)(id) == wanted
        })
}

/// The store's part: every few ticks, each range compared with the first and, where this
/// node leads it, moved one step towards it.
#[derive(Default)]
pub(super) struct MemberFollowing {
    ticks: u64,
}

impl MemberFollowing {
    pub(super) fn on_tick(&mut self, groups: &mut BTreeMap<RangeId, Group>) {
        self.ticks += 1;
        if self.ticks.is_multiple_of(FOLLOW_EVERY_TICKS) {
            compare_with_first(groups, true);
        }
    }
}

/// Records on the first range's group which ranges differ from it now (for `member list`,
/// which must not answer with a comparison made before the change it follows).
pub(super) fn note_ranges_behind(groups: &mut BTreeMap<RangeId, Group>) {
    compare_with_first(groups, false);
}

/// Compares every range with the first one, records those that differ, and if `step`, moves
/// each this node leads one step towards it once the first range's configuration is settled.
fn compare_with_first(groups: &mut BTreeMap<RangeId, Group>, step: bool) {
    if groups.len() < 2 {
        return;
    }
    let Some(first) = groups.get(&FIRST_RANGE) else {
        return;
    };
    let settled = first.settled_membership().is_some();
    let target = first.core.membership().clone();
    let target_addrs = first.members.addresses();
    let lookup = |id| target_addrs.get(&id);
    let target = Replica {
        membership: &target,
        addrs: &lookup,
    };
    let mut behind = Vec::new();
    for (&range, group) in groups.iter_mut().filter(|(&r, _)| r != FIRST_RANGE) {
        if !group.follows(&target) {
            behind.push(range);
            if step && settled {
                group.step_towards(&target);
            }
        }
    }
    if let Some(first) = groups.get_mut(&FIRST_RANGE) {
        first.ranges_behind = behind;
    }
}

impl Group {
    /// The configuration in force once its entry is committed and it is not joint.
    fn settled_membership(&self) -> Option<&Membership> {
        let membership = self.core.membership();
        let committed = self
            .core
            .membership_index()
            .is_none_or(|i| i <= self.core.commit_index());
        (committed && !membership.is_joint() && !membership.is_empty()).then_some(membership)
    }

    fn follows(&self, target: &Replica) -> bool {
        let lookup = |id| self.members.addrs(id);
        let current = Replica {
            membership: self.core.membership(),
            addrs: &lookup,
        };
        same_configuration(target, &current)
    }

    /// If this node leads the range and no change is under way, proposes the next step.
    fn step_towards(&mut self, target: &Replica) {
        if self.core.role() != Role::Leader || self.settled_membership().is_none() {
            return;
        }
        let lookup = |id| self.members.addrs(id);
        let current = Replica {
            membership: self.core.membership(),
            addrs: &lookup,
        };
        let ready = |id| self.learner_caught_up(id);
        let Some(step) = next_step(target, &current, ready, self.cfg.id) else {
            return;
        };
        if step == FollowStep::Remove(self.cfg.id) {
            // Handing the range over first costs its clients a transfer, not an election.
            if let Some(to) = self.hand_off_target() {
                if let Err(e) = self.core.transfer_leader(to) {
                    tracing::debug!(id = self.cfg.id, range = self.range, to, error = %e, "no hand-off");
                }
                return;
            }
        }
        let (changes, addrs) = match &step {
            FollowStep::AddLearner(id, addrs) => {
                (vec![MemberChange::AddLearner(*id)], Some((*id, addrs)))
            }
            FollowStep::UpdateAddrs(id, addrs) => (vec![], Some((*id, addrs))),
            FollowStep::Promote(id) => (vec![MemberChange::AddVoter(*id)], None),
            FollowStep::Remove(id) => (vec![MemberChange::Remove(*id)], None),
        };
        let context = addrs.map_or_else(Bytes::new, |(id, addrs)| {
            MemberContext {
                addrs: [(id, addrs.clone())].into(),
            }
            .encode()
        });
        match self.core.propose_conf_change(&changes, context) {
            Ok(index) => tracing::info!(
                id = self.cfg.id,
                range = self.range,
                ?step,
                index,
                "following the first range's configuration"
            ),
            Err(e) => tracing::debug!(
                id = self.cfg.id,
                range = self.range,
                ?step,
                error = %e,
                "a step towards the first range's configuration was refused"
            ),
        }
    }

    /// Whether learner `id` is heard from and at most [`LEARNER_READY_LAG`] entries behind
    /// (the bar the operator's promotion of the first range meets).
    fn learner_caught_up(&self, id: NodeId) -> bool {
        self.core.peer_progress(id).is_some_and(|p| {
            p.recently_active
                && p.match_index > 0
                && self.core.last_index().saturating_sub(p.match_index) <= LEARNER_READY_LAG
        })
    }
}

#[cfg(test)]
mod tests;
