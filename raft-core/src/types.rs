//! The vocabulary of Raft: ids, terms, indexes, log entries and the state that must survive a crash.

use bytes::Bytes;

use crate::membership::Membership;

/// A node's id inside one cluster. `0` is reserved to mean "nobody".
pub type NodeId = u64;
/// A Raft term. Terms only grow.
pub type Term = u64;
/// A position in the replicated log. The first entry has index 1; index 0 is "before the log".
pub type Index = u64;

/// What an entry means to the layers above the core.
///
/// Raft indexes count every entry, the leaders' no-ops included: an application that numbers
/// its own commands counts the `Normal` entries it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EntryKind {
    /// Carries an application command in its payload.
    Normal,
    /// Appended by every new leader so that it can commit entries of earlier terms (Raft §5.4.2).
    /// The payload is empty and the application ignores it.
    Noop,
    /// A configuration change: the payload is a [`ConfChangeEntry`](crate::ConfChangeEntry)
    /// holding the complete configuration in force from this entry on.
    ConfChange,
    /// The leader's clock, in milliseconds (payload: a little-endian `u64`), stamped only with
    /// [`Config::clock_stamps`](crate::Config::clock_stamps); see [`crate::clock`].
    Clock,
}

impl EntryKind {
    /// The kind's one-byte code, as the wire format writes it (stable across versions; storage
    /// formats may use it too).
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::ConfChange => 2,
            EntryKind::Clock => 3,
        }
    }

    /// The kind a code names, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::ConfChange),
            3 => Some(EntryKind::Clock),
            _ => None,
        }
    }
}

/// One log entry. An `(index, term)` pair names exactly one entry in the whole cluster: only the
/// leader of `term` creates entries in `term`, and it creates at most one per index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// What the entry means to the application.
    pub kind: EntryKind,
    /// The application's command, opaque to the core (empty for a no-op).
    pub payload: Bytes,
}

impl Entry {
    /// An entry with these parts.
    pub fn new(term: Term, index: Index, kind: EntryKind, payload: Bytes) -> Self {
        Self {
            term,
            index,
            kind,
            payload,
        }
    }

    /// Bytes this entry counts for in flow control and batching limits: the payload plus a fixed
    /// allowance for the header, so that empty entries are not free.
    pub fn size(&self) -> u64 {
        self.payload.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// The per-entry header allowance used by [`Entry::size`].
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// The state a node must have on stable storage before it answers anyone (Raft Figure 2:
/// `currentTerm`, `votedFor`), plus the commit index, which is kept only as a hint to speed up
/// restarts: losing it is safe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known committed when the state was written (a hint).
    pub commit: Index,
}

/// Where the in-memory log begins after compaction: the last entry covered by a snapshot, and
/// the configuration in force at it. `SnapshotMeta::default()` (index 0, term 0, empty
/// configuration) means "no snapshot, the log starts at 1".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The configuration in force at `index`: that of the last configuration-change entry at or
    /// below it. A cluster's first start has the initial voters here at index 0.
    pub membership: Membership,
}

impl SnapshotMeta {
    /// A snapshot covering the log up to `(index, term)`, with this configuration.
    pub fn new(index: Index, term: Term, membership: Membership) -> Self {
        Self {
            index,
            term,
            membership,
        }
    }
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Accepts entries from the leader of its term and votes; campaigns when it hears from no
    /// leader for an election timeout.
    Follower,
    /// Asking for pre-votes: the term has not been raised yet (Raft thesis §9.6).
    PreCandidate,
    /// Asking for votes in a term it raised.
    Candidate,
    /// Won its term's election: accepts proposals, replicates and commits.
    Leader,
}

/// What a driver loads from stable storage to rebuild a core after a restart. Everything in it
/// must have been acknowledged as durable; nothing else may be assumed.
///
/// With a snapshot: `snapshot` is the log start the driver stored with its last compaction or
/// snapshot install, `entries` the stored log after it (possibly none), and `applied` at least
/// `snapshot.index` (the state machine holds the snapshot). `hard_state.commit` below
/// `snapshot.index` is lifted to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartState {
    /// The last durably written hard state.
    pub hard_state: HardState,
    /// The last entry covered by the state machine's snapshot; the log continues after it.
    pub snapshot: SnapshotMeta,
    /// The stored log after `snapshot.index`, contiguous and in order.
    pub entries: Vec<Entry>,
    /// The highest index the state machine has durably applied (at least `snapshot.index`).
    /// Committed entries above it are handed out again for applying.
    pub applied: Index,
}
