//! Errors the core returns to its driver.

use std::fmt;

use crate::types::{Index, NodeId};

/// Why a proposal or read request was not accepted. None of these means the request was
/// applied: the caller may retry it elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader and does not forward (or knows no leader to forward to).
    NotLeader { leader_hint: Option<NodeId> },
    /// The leader holds too many uncommitted bytes; back off and retry.
    TooManyUncommittedBytes,
    /// A proposal with no payload or an empty batch.
    Empty,
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
        }
    }
}

impl std::error::Error for ProposeError {}

/// A configuration or restart state the core refuses to start with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid raft configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Why [`crate::RawNode::compact`] refused; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactError {
    /// The state machine has not applied `up_to` (as reported by `on_applied`): a snapshot up
    /// to it cannot exist yet, and the entries may still be needed for applying.
    NotApplied { up_to: Index, applied: Index },
    /// The log already starts after `up_to`.
    AlreadyCompacted { up_to: Index, snapshot_index: Index },
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
