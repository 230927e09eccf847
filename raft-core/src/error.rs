//! Errors the core returns to its driver.

use std::fmt;

use crate::types::{Index, NodeId, Term};

/// Why a proposal, configuration change, read request or leadership transfer was not accepted.
/// None of these means the request was applied: the caller may retry it elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node is not the leader and does not forward (or knows no leader to forward to).
    NotLeader {
        /// The leader this node last heard from in its current term, if any.
        leader_hint: Option<NodeId>,
    },
    /// The leader holds too many uncommitted bytes; back off and retry.
    TooManyUncommittedBytes,
    /// A proposal with no payload or an empty batch.
    Empty,
    /// A configuration change is still in progress (an uncommitted change in the log, or a
    /// joint configuration not left yet), or this leader has not yet committed an entry of its
    /// term: one change at a time. Retry once it completes.
    ConfChangeInProgress,
    /// The configuration change makes no sense against the configuration in force.
    InvalidConfChange {
        /// What is wrong with it.
        reason: String,
    },
    /// The leader is handing leadership over to `to` and takes no proposals meanwhile; retry
    /// shortly (at the new leader, most likely).
    TransferringLeadership {
        /// The node leadership is being handed to.
        to: NodeId,
    },
    /// Leadership can only be handed to a voter of the configuration in force.
    InvalidTransferTarget {
        /// The node asked for.
        to: NodeId,
    },
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader {
                leader_hint: Some(id),
            } => write!(f, "not the leader; node {id} leads"),
            ProposeError::NotLeader { leader_hint: None } => {
                write!(f, "not the leader, and no leader is known")
            }
            ProposeError::TooManyUncommittedBytes => {
                write!(f, "too many uncommitted bytes on the leader; retry later")
            }
            ProposeError::Empty => write!(f, "empty proposal"),
            ProposeError::ConfChangeInProgress => write!(
                f,
                "a configuration change is in progress (or the leader is new); retry later"
            ),
            ProposeError::InvalidConfChange { reason } => {
                write!(f, "invalid configuration change: {reason}")
            }
            ProposeError::TransferringLeadership { to } => write!(
                f,
                "leadership is being transferred to node {to}; retry shortly"
            ),
            ProposeError::InvalidTransferTarget { to } => {
                write!(f, "cannot transfer leadership to node {to}: not a voter")
            }
        }
    }
}

impl std::error::Error for ProposeError {}

/// A configuration ([`crate::Config::validate`]) or restart state ([`crate::RawNode::restart`])
/// the core refuses to start with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Node id 0 means "nobody" and cannot name a node.
    ReservedNodeId,
    /// This node's id is not among the (non-empty) initial voters.
    NotAVoter {
        /// This node's id.
        id: NodeId,
        /// The configured voters.
        voters: Vec<NodeId>,
    },
    /// The same id appears twice among the voters.
    DuplicateVoters {
        /// The configured voters.
        voters: Vec<NodeId>,
    },
    /// `heartbeat_ticks` is 0.
    ZeroHeartbeatTicks,
    /// `election_ticks` must exceed `heartbeat_ticks`, or followers campaign between heartbeats.
    ElectionTicksNotAboveHeartbeat {
        /// The configured election timeout.
        election_ticks: u32,
        /// The configured heartbeat interval.
        heartbeat_ticks: u32,
    },
    /// The check-quorum window must exceed `heartbeat_ticks`, or no heartbeat answer could
    /// arrive within it.
    CheckQuorumWindowNotAboveHeartbeat {
        /// The check-quorum window in effect (`Config::check_quorum_window`).
        check_quorum_ticks: u32,
        /// The configured heartbeat interval.
        heartbeat_ticks: u32,
    },
    /// `max_inflight_msgs` is 0: nothing could ever be sent.
    ZeroInflightMessages,
    /// A lease's `max_clock_drift` is not a ratio between 0 and 1.
    ClockDriftOutOfRange,
    /// Lease reads rely on followers refusing votes while they hear from a leader, which is
    /// check-quorum's rule.
    LeaseWithoutCheckQuorum,
    /// The lease would end before the next heartbeat round could renew it.
    LeaseNotAboveHeartbeat {
        /// `Config::lease_ticks`.
        lease_ticks: u32,
        /// The configured heartbeat interval.
        heartbeat_ticks: u32,
    },
    /// `max_msg_bytes` or `max_inflight_bytes` is 0.
    ZeroByteLimit,
    /// The stored snapshot covers entries but has term 0.
    SnapshotWithoutTerm {
        /// The snapshot's last index.
        index: Index,
    },
    /// A stored term (of the snapshot or of an entry) is above the stored current term.
    TermAboveCurrentTerm {
        /// The offending term.
        term: Term,
        /// The stored current term (`hard_state.term`).
        current_term: Term,
    },
    /// The state machine is said to have applied less than the snapshot it holds.
    AppliedBelowSnapshot {
        /// `RestartState::applied`.
        applied: Index,
        /// `RestartState::snapshot.index`.
        snapshot_index: Index,
    },
    /// The stored entries start at or below the snapshot's index: after a compaction up to
    /// `up_to` the driver must drop its stored entries up to `up_to` too.
    EntriesOverlapSnapshot {
        /// The first stored entry's index.
        first: Index,
        /// The snapshot's last index.
        snapshot_index: Index,
    },
    /// The stored entries skip an index.
    LogGap {
        /// The index that should come next.
        expected: Index,
        /// The index found instead.
        found: Index,
    },
    /// A stored entry has a lower term than the entry before it.
    TermDecreases {
        /// The entry's index.
        index: Index,
    },
    /// The stored vote names node 0, which is nobody.
    VoteForNonVoter {
        /// The node voted for.
        vote: NodeId,
    },
    /// A stored configuration-change entry does not decode.
    BadConfChange {
        /// The entry's index.
        index: Index,
    },
    /// The stored snapshot's configuration breaks the invariants of [`crate::Membership`].
    BadSnapshotMembership {
        /// Which invariant.
        why: &'static str,
    },
    /// The state machine is said to have applied beyond the stored log.
    AppliedBeyondLog {
        /// `RestartState::applied`.
        applied: Index,
        /// The last stored index (the snapshot's, with no entries after it).
        last_index: Index,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid raft configuration: ")?;
        match self {
            ConfigError::ReservedNodeId => write!(f, "node id 0 is reserved"),
            ConfigError::NotAVoter { id, voters } => {
                write!(f, "node {id} is not among the voters {voters:?}")
            }
            ConfigError::DuplicateVoters { voters } => {
                write!(f, "duplicate voter ids in {voters:?}")
            }
            ConfigError::ZeroHeartbeatTicks => write!(f, "heartbeat_ticks must be at least 1"),
            ConfigError::ElectionTicksNotAboveHeartbeat {
                election_ticks,
                heartbeat_ticks,
            } => write!(
                f,
                "election_ticks ({election_ticks}) must exceed heartbeat_ticks ({heartbeat_ticks})"
            ),
            ConfigError::CheckQuorumWindowNotAboveHeartbeat {
                check_quorum_ticks,
                heartbeat_ticks,
            } => write!(
                f,
                "the check-quorum window ({check_quorum_ticks} ticks) must exceed heartbeat_ticks \
                 ({heartbeat_ticks})"
            ),
            ConfigError::ZeroInflightMessages => write!(f, "max_inflight_msgs must be at least 1"),
            ConfigError::ClockDriftOutOfRange => {
                write!(f, "max_clock_drift must be a ratio from 0 to 1")
            }
            ConfigError::LeaseWithoutCheckQuorum => {
                write!(f, "lease reads need check_quorum")
            }
            ConfigError::LeaseNotAboveHeartbeat {
                lease_ticks,
                heartbeat_ticks,
            } => write!(
                f,
                "the lease ({lease_ticks} ticks) must exceed heartbeat_ticks ({heartbeat_ticks}): \
                 raise election_ticks or lower max_clock_drift"
            ),
            ConfigError::ZeroByteLimit => {
                write!(f, "max_msg_bytes and max_inflight_bytes must be positive")
            }
            ConfigError::SnapshotWithoutTerm { index } => {
                write!(f, "snapshot at index {index} has term 0")
            }
            ConfigError::TermAboveCurrentTerm { term, current_term } => write!(
                f,
                "stored term {term} exceeds the stored current term {current_term}"
            ),
            ConfigError::AppliedBelowSnapshot {
                applied,
                snapshot_index,
            } => write!(
                f,
                "state machine applied {applied} but it holds the snapshot up to {snapshot_index}"
            ),
            ConfigError::EntriesOverlapSnapshot {
                first,
                snapshot_index,
            } => write!(
                f,
                "stored log starts at {first}, inside the snapshot up to {snapshot_index} \
                 (drop stored entries up to the compaction point)"
            ),
            ConfigError::LogGap { expected, found } => write!(
                f,
                "stored log has a gap: expected index {expected}, found {found}"
            ),
            ConfigError::TermDecreases { index } => write!(
                f,
                "stored entry {index} has a term lower than its predecessor"
            ),
            ConfigError::VoteForNonVoter { vote } => {
                write!(f, "stored vote for {vote}, who is not a voter")
            }
            ConfigError::BadConfChange { index } => {
                write!(f, "stored configuration change at {index} does not decode")
            }
            ConfigError::BadSnapshotMembership { why } => {
                write!(f, "stored snapshot configuration is invalid: {why}")
            }
            ConfigError::AppliedBeyondLog {
                applied,
                last_index,
            } => write!(
                f,
                "state machine applied {applied} but the log ends at {last_index}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why [`crate::RawNode::compact`] refused; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactError {
    /// The state machine has not applied `up_to` (as reported by `on_applied`): a snapshot up
    /// to it cannot exist yet, and the entries may still be needed for applying.
    NotApplied {
        /// The requested compaction point.
        up_to: Index,
        /// The highest index reported applied.
        applied: Index,
    },
    /// The log already starts after `up_to`.
    AlreadyCompacted {
        /// The requested compaction point.
        up_to: Index,
        /// Where the log's snapshot already ends.
        snapshot_index: Index,
    },
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::NotApplied { up_to, applied } => write!(
                f,
                "cannot compact up to {up_to}: the state machine applied only up to {applied}"
            ),
            CompactError::AlreadyCompacted {
                up_to,
                snapshot_index,
            } => write!(
                f,
                "cannot compact up to {up_to}: the log is already compacted up to {snapshot_index}"
            ),
        }
    }
}

impl std::error::Error for CompactError {}
