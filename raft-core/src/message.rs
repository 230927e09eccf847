//! Messages between Raft nodes. The wire format lives in [`crate::codec`].

use bytes::Bytes;

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// One message from `from` to `to`, sent in `term` (the sender's term, or for a pre-vote request
/// the term the sender would campaign in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me in `term` if I campaigned?" Raises nobody's term.
    PreVoteRequest {
        last_log_index: Index,
        last_log_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// RequestVote RPC (Raft Figure 2).
    VoteRequest {
        last_log_index: Index,
        last_log_term: Term,
    },
    VoteResponse {
        granted: bool,
    },
    /// AppendEntries RPC with entries; `commit` is the leader's commit index.
    AppendRequest {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// On success `index` is the last index the follower now durably holds that matches the
    /// leader's log. On rejection `index` echoes the request's `prev_log_index`, and
    /// (`hint_index`, `hint_term`) point at the follower's last entry that may match, for fast
    /// backtracking.
    AppendResponse {
        success: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// Keeps followers from campaigning and carries the commit index. `read_round` is the
    /// leader's read-confirmation round (see [`crate::read_index`]); 0 means none.
    Heartbeat {
        commit: Index,
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// The leader no longer holds the entries the follower needs (they are compacted): it names
    /// its snapshot, and the follower's driver fetches the data out of band from the sender.
    /// Answered with an `AppendResponse`: success at the follower's commit index if it already
    /// holds the snapshot, else success at `snapshot.index` once the snapshot is installed.
    InstallSnapshot {
        snapshot: SnapshotMeta,
    },
    /// Proposals a follower forwards to its leader.
    Propose {
        payloads: Vec<Bytes>,
    },
    /// A follower asks the leader for a read index on behalf of a client request `ctx`.
    ReadIndexRequest {
        ctx: Bytes,
    },
    /// The leader's answer: once the follower has applied `index`, reading its state is linearizable.
    ReadIndexResponse {
        ctx: Bytes,
        index: Index,
    },
}

impl MessageBody {
    /// A short, stable name for logs and metrics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::PreVoteRequest { .. } => "PreVoteRequest",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::VoteRequest { .. } => "VoteRequest",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::AppendRequest { .. } => "AppendRequest",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::ReadIndexRequest { .. } => "ReadIndexRequest",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}
