//! The health decision behind `GET /health`: a node is healthy when it is a member of a
//! cluster with a known leader and a quorum reachable. A leader judges the quorum by the
//! voters it heard from lately; a follower by whether it hears from its leader.

use std::collections::BTreeSet;
use std::fmt;

use raft_core::{Membership, NodeId, Role};

/// What the node loop knows when it decides, once per tick.
pub struct HealthView<'a> {
    pub me: NodeId,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub membership: &'a Membership,
    /// Milliseconds since the node last heard from a peer (`None`: never).
    pub silent_ms: &'a dyn Fn(NodeId) -> Option<u64>,
    /// A peer silent for longer than this is out of reach (an election timeout).
    pub stale_after_ms: u64,
}

/// The decision, with the reason when unhealthy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// The node has not started yet.
    #[default]
    Starting,
    /// The node is in no configuration: waiting to be added, or removed.
    NotAMember,
    NoLeader {
        role: Role,
    },
    LeaderSilent {
        leader: NodeId,
        for_ms: Option<u64>,
    },
    /// Leading, but a majority of some voter set was not heard from lately.
    NoQuorum {
        reachable: usize,
        voters: usize,
        within_ms: u64,
    },
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        *self == Health::Healthy
    }

    pub fn decide(view: &HealthView) -> Health {
        let m = view.membership;
        let member = m.voters.contains(&view.me)
            || m.outgoing.contains(&view.me)
            || m.learners.contains(&view.me);
        if !member {
            return Health::NotAMember;
        }
        let fresh = |id: NodeId| {
            id == view.me || (view.silent_ms)(id).is_some_and(|ms| ms <= view.stale_after_ms)
        };
        match view.leader {
            Some(leader) if leader == view.me && view.role == Role::Leader => {
                for voters in [&m.voters, &m.outgoing] {
                    if let Some(short) = short_of_quorum(voters, &fresh, view.stale_after_ms) {
                        return short;
                    }
                }
                Health::Healthy
            }
            Some(leader) if leader != view.me && fresh(leader) => Health::Healthy,
            Some(leader) if leader != view.me => Health::LeaderSilent {
                leader,
                for_ms: (view.silent_ms)(leader),
            },
            _ => Health::NoLeader { role: view.role },
        }
    }
}

/// `Some(NoQuorum)` when fewer than a majority of `voters` (if any) are fresh.
fn short_of_quorum(
    voters: &BTreeSet<NodeId>,
    fresh: &dyn Fn(NodeId) -> bool,
    within_ms: u64,
) -> Option<Health> {
    if voters.is_empty() {
        return None;
    }
    let reachable = voters.iter().filter(|&&v| fresh(v)).count();
    (reachable <= voters.len() / 2).then_some(Health::NoQuorum {
        reachable,
        voters: voters.len(),
        within_ms,
    })
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => write!(f, "ok"),
            Health::Starting => write!(f, "starting: the node is not serving yet"),
            Health::NotAMember => write!(
                f,
                "not a member of the cluster's configuration (not added yet, or removed)"
            ),
            Health::NoLeader { role } => write!(f, "no leader known (this node is {role:?})"),
            Health::LeaderSilent {
                leader,
                for_ms: Some(ms),
            } => write!(f, "leader {leader} not heard from for {ms} ms"),
            Health::LeaderSilent {
                leader,
                for_ms: None,
            } => write!(f, "leader {leader} never heard from"),
            Health::NoQuorum {
                reachable,
                voters,
                within_ms,
            } => write!(
                f,
                "quorum not reachable: heard from {reachable} of {voters} voters (this leader \
                 included) within {within_ms} ms"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(
        role: Role,
        leader: Option<NodeId>,
        voters: &[NodeId],
        silent: &[(NodeId, u64)],
    ) -> Health {
        let membership = Membership::with_voters(voters.iter().copied());
        let silent_ms = |id: NodeId| silent.iter().find(|(p, _)| *p == id).map(|(_, ms)| *ms);
        Health::decide(&HealthView {
            me: 1,
            role,
            leader,
            membership: &membership,
            silent_ms: &silent_ms,
            stale_after_ms: 1000,
        })
    }

    #[test]
    fn a_follower_is_healthy_while_it_hears_from_its_leader() {
        let healthy = decide(Role::Follower, Some(2), &[1, 2, 3], &[(2, 100)]);
        assert_eq!(healthy, Health::Healthy);
        let silent = decide(Role::Follower, Some(2), &[1, 2, 3], &[(2, 1500)]);
        assert_eq!(
            silent.to_string(),
            "leader 2 not heard from for 1500 ms",
            "{silent:?}"
        );
        let never = decide(Role::Follower, Some(2), &[1, 2, 3], &[]);
        assert_eq!(never.to_string(), "leader 2 never heard from");
    }

    #[test]
    fn no_leader_is_unhealthy_whatever_the_peers() {
        let h = decide(Role::PreCandidate, None, &[1, 2, 3], &[(2, 1), (3, 1)]);
        assert_eq!(h.to_string(), "no leader known (this node is PreCandidate)");
    }

    #[test]
    fn a_leader_needs_a_majority_heard_from_lately_itself_included() {
        let one_peer = decide(Role::Leader, Some(1), &[1, 2, 3], &[(2, 10), (3, 5000)]);
        assert_eq!(one_peer, Health::Healthy);
        let none = decide(Role::Leader, Some(1), &[1, 2, 3], &[(2, 5000)]);
        assert_eq!(
            none.to_string(),
            "quorum not reachable: heard from 1 of 3 voters (this leader included) within 1000 ms"
        );
        let alone = decide(Role::Leader, Some(1), &[1], &[]);
        assert_eq!(
            alone,
            Health::Healthy,
            "a single-node cluster is its own quorum"
        );
        let half = decide(Role::Leader, Some(1), &[1, 2, 3, 4], &[(2, 10)]);
        assert!(
            matches!(half, Health::NoQuorum { reachable: 2, .. }),
            "{half:?}"
        );
    }

    #[test]
    fn a_joint_leader_needs_both_majorities() {
        let mut membership = Membership::with_voters([1, 2, 3]);
        membership.outgoing = [4, 5, 6].into();
        let silent_ms = |id: NodeId| (id == 2).then_some(10);
        let view = HealthView {
            me: 1,
            role: Role::Leader,
            leader: Some(1),
            membership: &membership,
            silent_ms: &silent_ms,
            stale_after_ms: 1000,
        };
        assert!(matches!(
            Health::decide(&view),
            Health::NoQuorum {
                reachable: 0,
                voters: 3,
                ..
            }
        ));
    }

    #[test]
    fn a_node_outside_the_configuration_is_not_a_member() {
        let h = decide(Role::Follower, Some(2), &[2, 3], &[(2, 1)]);
        assert_eq!(h, Health::NotAMember);
    }
}
