//! Safety breaches the core detects, and the invariants it asserts on itself.
//!
//! Two kinds of wrong state are told apart. A breach that a peer or the driver caused (another
//! node leading our term, a leader contradicting a committed entry, a driver reporting more
//! applied than it was given) cannot be prevented by this core: it is refused where it can be,
//! logged, and kept as a [`SafetyViolation`] that the driver can check with
//! [`RawNode::safety_violation`]. It is not an assertion, because hostile or broken input must
//! never panic a node. The core's own invariants (the log's indexes, the progress tracker's
//! window) are asserted after every public entry point in debug builds, TigerBeetle style, so
//! that the seeded harness runs exercise them.

use std::fmt;

use crate::node::RawNode;
use crate::progress::ReplicationState;
use crate::types::{Index, NodeId, Role, Term};

/// A breach of Raft's safety that this node detected and that someone else caused. Once one
/// is seen, the cluster's guarantees no longer hold; a driver should stop serving and alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SafetyViolation {
    /// This node leads `term` and `other` sent it an append, heartbeat or snapshot offer of the
    /// same term: two leaders in one term (election safety). Some node lost a durable vote, or
    /// `other` is broken or hostile. The message was ignored.
    TwoLeadersInOneTerm {
        /// The term both lead.
        term: Term,
        /// The other node acting as leader.
        other: NodeId,
    },
    /// The leader `leader` of `term` sent an entry at `index` that differs from this node's
    /// entry there, which is committed (up to `committed`): a committed entry would be
    /// overwritten (state machine safety). The append was refused.
    CommittedEntryConflict {
        /// The leader's term.
        term: Term,
        /// The leader that sent the append.
        leader: NodeId,
        /// The first committed index it contradicts.
        index: Index,
        /// This node's commit index.
        committed: Index,
    },
    /// The driver reported `on_applied(index)` beyond the last entry handed out for applying
    /// (`handed_out`): it applied something the core never gave it. The report was ignored.
    AppliedBeyondHandedOut {
        /// The index reported applied.
        index: Index,
        /// The last index handed out for applying.
        handed_out: Index,
    },
    /// A follower acknowledged holding entries up to `index` in our term, beyond this leader's
    /// last index `last_index`: entries this leader never sent. The acknowledgement was
    /// ignored.
    AckBeyondLog {
        /// The follower that acknowledged.
        from: NodeId,
        /// The index it acknowledged.
        index: Index,
        /// This leader's last index.
        last_index: Index,
    },
}

impl fmt::Display for SafetyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SafetyViolation::TwoLeadersInOneTerm { term, other } => write!(
                f,
                "election safety: node {other} also leads term {term}, which this node leads"
            ),
            SafetyViolation::CommittedEntryConflict {
                term,
                leader,
                index,
                committed,
            } => write!(
                f,
                "state machine safety: leader {leader} of term {term} sent an entry at {index} \
                 that conflicts with this node's committed log (committed up to {committed})"
            ),
            SafetyViolation::AppliedBeyondHandedOut { index, handed_out } => write!(
                f,
                "driver contract: applied index {index} reported beyond what was handed out \
                 ({handed_out})"
            ),
            SafetyViolation::AckBeyondLog {
                from,
                index,
                last_index,
            } => write!(
                f,
                "log matching: node {from} acknowledged index {index} beyond this leader's last \
                 index {last_index}"
            ),
        }
    }
}

impl RawNode {
    /// The first safety breach this node detected that a peer or the driver caused, if any
    /// (later ones are logged only). See [`SafetyViolation`]. A driver should check it after
    /// each round, or at least in its tests.
    pub fn safety_violation(&self) -> Option<SafetyViolation> {
        self.safety_violation
    }

    pub(crate) fn record_violation(&mut self, violation: SafetyViolation) {
        tracing::error!(id = self.id, term = self.term, %violation, "safety violation");
        self.safety_violation.get_or_insert(violation);
    }

    /// Asserts the core's own invariants; compiled to nothing without debug assertions.
    pub(crate) fn debug_assert_invariants(&self) {
        if cfg!(debug_assertions) {
            self.assert_invariants();
        }
    }

    fn assert_invariants(&self) {
        self.log.assert_invariants();
        let (id, role) = (self.id, self.role);
        assert!(
            self.term >= self.log.last_term(),
            "n{id}: term {} below the last log term {}",
            self.term,
            self.log.last_term()
        );
        assert_eq!(
            role == Role::Leader,
            self.leader == Some(id),
            "n{id}: a node names itself leader exactly when it leads ({role:?})"
        );
        if matches!(role, Role::Candidate | Role::Leader) {
            assert_eq!(self.vote, Some(id), "n{id}: a {role:?} voted for itself");
        }
        assert!(
            self.applied <= self.log.applying(),
            "n{id}: applied {} beyond handed out {}",
            self.applied,
            self.log.applying()
        );
        assert!(
            self.applied >= self.log.snapshot().index,
            "n{id}: applied {} below the snapshot {}",
            self.applied,
            self.log.snapshot().index
        );
        let membership = self.log.membership();
        if let Err(why) = membership.validate() {
            panic!("n{id}: the configuration in force is invalid ({why}): {membership:?}");
        }
        if role != Role::Leader {
            assert!(
                self.progress.is_empty(),
                "n{id}: progress kept outside leadership"
            );
            assert!(
                self.transfer.is_none(),
                "n{id}: a transfer outside leadership"
            );
            return;
        }
        let tracked: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, pr)| pr.removed_by.is_none())
            .map(|(&peer, _)| peer)
            .collect();
        let others: Vec<NodeId> = membership
            .members()
            .into_iter()
            .filter(|&m| m != id)
            .collect();
        assert_eq!(
            tracked, others,
            "n{id}: the leader tracks exactly the members but itself, and removed peers"
        );
        for (&peer, pr) in &self.progress {
            if let Some(by) = pr.removed_by {
                assert!(
                    !membership.contains(peer),
                    "n{id}: n{peer} is tracked as removed by entry {by} but is a member"
                );
            }
        }
        let conf_durable = self
            .log
            .last_conf_index()
            .is_none_or(|i| i <= self.log.persisted());
        if conf_durable && self.bugs() == crate::bugs::Bugs::default() {
            // Every change to what the commit rule counts recounts where it happens, so
            // acknowledgements that move no match can skip the count. A configuration entry
            // changes the quorum when it is appended, and is counted with once it is durable
            // here (`on_persisted` counts).
            assert_eq!(
                self.commit_candidate(),
                None,
                "n{id}: a commit left uncounted (commit index {})",
                self.log.committed()
            );
        }
        let (last, snapshot) = (self.log.last_index(), self.log.snapshot().index);
        for (&peer, pr) in &self.progress {
            pr.assert_invariants(peer, last);
            if let ReplicationState::Snapshot { pending } = pr.state {
                assert!(
                    pending <= snapshot,
                    "n{id}: n{peer} waits for snapshot {pending} beyond ours {snapshot}"
                );
            }
        }
    }
}
