//! Messages between Raft nodes. The wire format lives in [`crate::codec`].

use bytes::Bytes;

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// One message from `from` to `to`, sent in `term` (the sender's term, or for a pre-vote request
/// the term the sender would campaign in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's term (see above for pre-votes).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message Raft nodes exchange. New kinds may be added (membership change), so a
/// driver matching on it keeps a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageBody {
    /// "Would you vote for me in `term` if I campaigned?" Raises nobody's term.
    PreVoteRequest {
        /// The index of the candidate's last entry.
        last_log_index: Index,
        /// The term of the candidate's last entry.
        last_log_term: Term,
        /// The candidate campaigns because the leader handed leadership over to it
        /// ([`MessageBody::TimeoutNow`]): receivers answer even inside a leader lease.
        transfer: bool,
    },
    /// The answer to a pre-vote request.
    PreVoteResponse {
        /// Whether the sender would vote for the candidate.
        granted: bool,
    },
    /// RequestVote RPC (Raft Figure 2).
    VoteRequest {
        /// The index of the candidate's last entry.
        last_log_index: Index,
        /// The term of the candidate's last entry.
        last_log_term: Term,
        /// The candidate campaigns because the leader handed leadership over to it
        /// ([`MessageBody::TimeoutNow`]): receivers answer even inside a leader lease.
        transfer: bool,
    },
    /// The answer to a vote request; a grant is sent only once the vote is durable.
    VoteResponse {
        /// Whether the sender voted for the candidate.
        granted: bool,
    },
    /// AppendEntries RPC with entries; `commit` is the leader's commit index.
    AppendRequest {
        /// The index of the entry just before `entries`.
        prev_log_index: Index,
        /// The term of the entry at `prev_log_index`.
        prev_log_term: Term,
        /// The entries to store, in index order (empty for a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// On success `index` is the last index the follower now durably holds that matches the
    /// leader's log. On rejection `index` echoes the request's `prev_log_index`, and
    /// (`hint_index`, `hint_term`) point at the follower's last entry that may match, for fast
    /// backtracking.
    AppendResponse {
        /// Whether the follower's log matched at `prev_log_index`.
        success: bool,
        /// See above: the durable matching index, or the rejected `prev_log_index`.
        index: Index,
        /// On rejection, the follower's last index that may match the leader's log.
        hint_index: Index,
        /// On rejection, the term of the follower's entry at `hint_index`.
        hint_term: Term,
    },
    /// Keeps followers from campaigning and carries the commit index. `read_round` is the
    /// leader's read-confirmation round (see [`RawNode::read_index`](crate::RawNode::read_index));
    /// 0 means none.
    Heartbeat {
        /// The leader's commit index, capped at what the follower is known to hold.
        commit: Index,
        /// The leader's read-confirmation round, echoed in the response.
        read_round: u64,
    },
    /// The answer to a heartbeat: the follower still accepts this leader.
    HeartbeatResponse {
        /// The heartbeat's `read_round`, echoed.
        read_round: u64,
    },
    /// The leader no longer holds the entries the follower needs (they are compacted): it names
    /// its snapshot, and the follower's driver fetches the data out of band from the sender.
    /// Answered with an `AppendResponse`: success at the follower's commit index if it already
    /// holds the snapshot, else success at `snapshot.index` once the snapshot is installed.
    InstallSnapshot {
        /// The snapshot the follower should fetch from the sender. Boxed: inline, this rare
        /// message's configuration made every [`Message`] half as large again (120 bytes, not
        /// 80), and the common ones are moved around by the thousand.
        snapshot: Box<SnapshotMeta>,
    },
    /// Leadership transfer (Raft thesis §3.10): the leader, whose log the recipient now
    /// matches, tells it to campaign at once, without a pre-vote.
    TimeoutNow,
    /// Proposals a follower forwards to its leader.
    Propose {
        /// The proposals' payloads, in the order they were made.
        payloads: Vec<Bytes>,
    },
    /// A follower asks the leader for a read index on behalf of a client request `ctx`.
    ReadIndexRequest {
        /// The request's context, returned in the response and in the [`crate::ReadState`].
        ctx: Bytes,
    },
    /// The leader's answer: once the follower has applied `index`, reading its state is linearizable.
    ReadIndexResponse {
        /// The request's context.
        ctx: Bytes,
        /// The read index: the leader's commit index when it confirmed its leadership.
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
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::ReadIndexRequest { .. } => "ReadIndexRequest",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}
