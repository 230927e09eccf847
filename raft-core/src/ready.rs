//! What the core asks its driver to do. Drain it with [`crate::RawNode::take_ready`].

use bytes::Bytes;

use crate::message::Message;
use crate::types::{Entry, HardState, Index, NodeId, Role, SnapshotMeta, Term};

/// Names one write the core asked for, so that its completion can be reported with
/// [`crate::RawNode::on_persisted`]. `seq` grows by one per write within one life of the core;
/// `term` is the node's term when the write was asked for. Reporting a write completes it and
/// every write asked for before it (writes are durable in order, so those are durable too); a
/// report naming no outstanding write exactly is stale (from an earlier term or an earlier life
/// of the core) and is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId {
    /// The write's position among this core's writes.
    pub seq: u64,
    /// The node's term when the write was asked for.
    pub term: Term,
}

/// One write to stable storage. The driver must apply writes atomically, in the order they were
/// emitted, make each durable (fsync), and then report it with `on_persisted(write.id)`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a write that is never made durable and reported stalls the node"]
pub struct Persist {
    /// The name to report the write's completion with.
    pub id: WriteId,
    /// New hard state to store, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to store. If non-empty, every stored entry with an index `>= entries[0].index`
    /// must be removed first (they were overwritten by a new leader, or are being rewritten).
    pub entries: Vec<Entry>,
}

impl Persist {
    /// The index from which stored entries are replaced, if this write carries entries.
    pub fn overwrite_from(&self) -> Option<Index> {
        self.entries.first().map(|e| e.index)
    }
}

/// The core asks its driver to fetch the data of the leader's snapshot `snapshot` from `from`
/// (out of band: the core only knows the snapshot's metadata). When it has the data, staged but
/// not installed, the driver reports [`crate::RawNode::on_snapshot_fetched`] with the snapshot it
/// got (this one, or a later one the leader took meanwhile); the core then asks for the install
/// as a [`SnapshotWrite`], ordered with its other writes.
///
/// The same request may be handed out again (the leader offers the snapshot again after a lost
/// message or a failed transfer): a driver already fetching it carries on; one that failed
/// starts again. A request for a different snapshot supersedes the earlier one, whose report
/// would be ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotToFetch {
    /// The node to fetch from (the leader that offered the snapshot).
    pub from: NodeId,
    /// The snapshot the leader offered.
    pub snapshot: SnapshotMeta,
}

/// One write that installs a fetched snapshot. It comes before the `persist` of the same
/// [`Ready`] (and after every earlier write) and, like a [`Persist`], must be made durable
/// atomically and reported with `on_persisted(write.id)`. Atomically: the state machine
/// becomes the snapshot's data, every stored log entry is removed, and the log start (snapshot
/// metadata) becomes `snapshot`, so that a restart finds `RestartState { snapshot, entries:
/// [], applied: snapshot.index, .. }` or the state from before the write, never a mix.
/// Entries already handed out for applying with an index at or below `snapshot.index` must
/// not be applied on top of the installed state: an asynchronous applier compares each entry's
/// index with the index of the last snapshot it installed and skips those at or below it.
///
/// For the core, the state machine is the snapshot from the moment this write is handed out:
/// entries after `snapshot.index` come next in `Ready::committed`, and `on_applied` reports
/// count from `snapshot.index`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a snapshot install that is never made durable and reported stalls the node"]
pub struct SnapshotWrite {
    /// The name to report the write's completion with.
    pub id: WriteId,
    /// The snapshot to install: the one the driver reported fetched.
    pub snapshot: SnapshotMeta,
}

/// A linearizable read that became servable: once the state machine has applied `index`, the
/// read identified by `ctx` may be answered from local state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The context the read was requested with.
    pub ctx: Bytes,
    /// The index the state machine must have applied before the read is answered.
    pub index: Index,
}

/// Who leads, and in what role this node is; reported when any of it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// This node's term.
    pub term: Term,
    /// The leader of `term`, if this node knows it.
    pub leader: Option<NodeId>,
    /// Why role, term or leader last changed. When several changes happen between two
    /// `Ready`s (a single voter wins its pre-vote and its vote at once), it is the last one's.
    pub reason: ChangeReason,
}

impl SoftState {
    /// Same role, term and leader: a change of `reason` alone is not reported.
    pub(crate) fn same_view(&self, other: &SoftState) -> bool {
        (self.role, self.term, self.leader) == (other.role, other.term, other.leader)
    }
}

/// Why a node's role, term or leader changed ([`SoftState::reason`]): what an operator needs
/// beside a role change to tell a dead leader from a transfer or a partition. Durations are in
/// ticks, the core's unit of time; a driver multiplies them by its tick length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeReason {
    /// The node started: a follower in its stored term, no leader known yet.
    Started,
    /// The election timeout ran out: no message from a leader for `ticks` ticks, so the node
    /// campaigns (with a pre-vote first if configured).
    ElectionTimeout {
        /// The leader the node followed until then, if it knew one.
        leader: Option<NodeId>,
        /// Ticks since it last heard from a leader (or since its last campaign began).
        ticks: u32,
    },
    /// The driver asked for an election ([`crate::RawNode::campaign`]).
    CampaignRequested,
    /// The leader `from` handed leadership over to this node, which campaigns at once.
    TransferFrom {
        /// The leader that handed over.
        from: NodeId,
    },
    /// A majority granted the pre-vote, so the node starts the real election in a new term.
    PreVoteWon,
    /// A majority voted for this node: it leads the term.
    ElectionWon,
    /// A majority refused the pre-vote or the vote; the node follows again.
    ElectionLost {
        /// Whether it was the pre-vote that was lost.
        pre_vote: bool,
    },
    /// Check-quorum: as leader, the node heard from no majority within `ticks` ticks and
    /// stepped down.
    QuorumLost {
        /// The check-quorum window, in ticks.
        ticks: u32,
    },
    /// `leader` showed that it leads the term (with an append, heartbeat or snapshot).
    LeaderFound {
        /// The leader.
        leader: NodeId,
    },
    /// A message from `from` carried a higher term, which the node adopted.
    HigherTerm {
        /// The sender of the message (a candidate, or a node answering this one).
        from: NodeId,
    },
    /// This leader was removed from the configuration and stepped down once that committed.
    RemovedFromConfiguration,
}

/// Everything the core asks for since the last [`crate::RawNode::take_ready`].
///
/// One ordering rule binds the driver: the writes (`snapshot_write`, then `persist`) are made
/// durable in that order, after every write of earlier `Ready`s, since a later write may build
/// on an earlier one. Everything else can be acted on at once, in any order and concurrently with
/// the writes: messages are safe to send before any write completes (anything that needed
/// durability is held back inside the core until its write is reported), and `committed` entries
/// are already durable locally. Dropping a `Ready` loses its work: the core hands nothing out
/// twice, so a lost write is never reported and the node stalls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a dropped Ready loses writes, messages and committed entries; the node stalls"]
pub struct Ready {
    /// Hard state and entries to make durable, after `snapshot_write` (see [`Persist`]).
    pub persist: Option<Persist>,
    /// Messages to send; each is safe to send at once.
    pub messages: Vec<Message>,
    /// Entries to apply to the state machine, in log order, continuing where the last batch ended.
    pub committed: Vec<Entry>,
    /// Reads that became servable (see [`ReadState`]).
    pub read_states: Vec<ReadState>,
    /// Set when role, term or leader changed.
    pub soft_state: Option<SoftState>,
    /// Fetch a snapshot from the leader (see [`SnapshotToFetch`]).
    pub snapshot_to_fetch: Option<SnapshotToFetch>,
    /// Install a fetched snapshot, before `persist` (see [`SnapshotWrite`]).
    pub snapshot_write: Option<SnapshotWrite>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_none()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && self.soft_state.is_none()
            && self.snapshot_to_fetch.is_none()
            && self.snapshot_write.is_none()
    }
}
