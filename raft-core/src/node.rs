//! The Raft node: its state, the public API for inputs other than messages, and the
//! [`Ready`] it hands out. Messages enter through `step.rs` (the term rules), writes and what
//! waits for them live in `durability.rs`, elections in `election.rs`, log replication in
//! `replication.rs`, reads in `read_index.rs`, snapshots in `snapshot.rs`, detected breaches and
//! asserted invariants in `safety.rs`.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::durability::{Held, OutstandingWrite};
use crate::error::{ConfigError, ProposeError};
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::quorum::Quorum;
use crate::read_index::ReadIndexTracker;
use crate::ready::{ChangeReason, ReadState, Ready, SnapshotToFetch, SoftState};
use crate::replication::proposal_bytes;
use crate::rng::SeededRng;
use crate::safety::SafetyViolation;
use crate::snapshot::PendingFetch;
use crate::types::{Entry, EntryKind, HardState, Index, NodeId, RestartState, Role, Term};
use crate::validate::check_restart_state;

/// At most this many bytes of committed entries are handed out in one [`Ready`]; the rest
/// follow in the next one ([`RawNode::has_ready`] says so).
const MAX_COMMITTED_BYTES_PER_READY: u64 = 64 << 20;

/// Where a proposal went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proposed {
    /// Appended to this leader's log at `first..=last` in `term`. The proposal took effect if
    /// and only if the entry committed at `last` has this term. Raft indexes count every entry,
    /// each new leader's no-op ([`EntryKind::Noop`](crate::EntryKind::Noop)) included, so they
    /// skip: an application that numbers its own commands counts `Normal` entries itself.
    Appended {
        /// The first proposal's index.
        first: Index,
        /// The last proposal's index.
        last: Index,
        /// The leader's term.
        term: Term,
    },
    /// Forwarded to the leader `to` (only with [`Config::forward_to_leader`]). This is not an
    /// acceptance: the message may be lost, or the leader may refuse it, and nothing tells the
    /// caller. A caller that must know watches for its payload among the committed entries and
    /// retries on a timeout.
    Forwarded {
        /// The leader the proposal was sent to.
        to: NodeId,
    },
}

/// The leader's view of one member's log ([`RawNode::peer_progress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerProgress {
    /// The highest index known to be durable on the member and to match the leader's log.
    pub match_index: Index,
    /// The next index the leader will send it.
    pub next_index: Index,
    /// Heard from within the current check-quorum window.
    pub recently_active: bool,
}

/// One Raft node, without any IO. See the crate documentation for the driver loop.
pub struct RawNode {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,
    /// The leader's view of every other member (voters, outgoing voters and learners); empty
    /// unless leading.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Votes (or pre-votes) received in the current campaign.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_timeout: u32,
    pub(crate) rng: SeededRng,
    pub(crate) msgs: Vec<Message>,
    /// Lists the driver gave back ([`RawNode::recycle`]), for the next ones handed out.
    pub(crate) spares: crate::spares::Spares,
    /// The followers a broadcast walks, kept between broadcasts (see `peer_indexes`).
    pub(crate) peer_scratch: Vec<crate::replication::PeerIndexes>,
    pub(crate) held_for_next_write: Vec<Held>,
    /// The last append acknowledgement this follower sent (or holds until durable): its term,
    /// the leader it went to and the index it acknowledged.
    pub(crate) last_append_ack: Option<(Term, NodeId, Index)>,
    pub(crate) writes: VecDeque<OutstandingWrite>,
    pub(crate) next_write_seq: u64,
    /// The hard state as of the last write asked for.
    pub(crate) written_hard_state: HardState,
    pub(crate) reads: ReadIndexTracker,
    /// Reads that arrived before this leader committed an entry of its own term.
    pub(crate) reads_awaiting_commit: Vec<(Bytes, NodeId)>,
    pub(crate) read_states: Vec<ReadState>,
    /// Entry bytes this leader appended that are not committed yet.
    pub(crate) uncommitted_bytes: u64,
    /// The leader owes followers an append (new entries or a new commit index).
    pub(crate) broadcast_pending: bool,
    pub(crate) applied: Index,
    last_soft_state: SoftState,
    /// Why role, term or leader last changed (set wherever one of them changes).
    pub(crate) change_reason: ChangeReason,
    /// The snapshot this follower waits for its driver to fetch.
    pub(crate) pending_fetch: Option<PendingFetch>,
    /// A fetch request for the next `Ready`.
    pub(crate) fetch_request: Option<SnapshotToFetch>,
    /// The first breach of safety caused by a peer or the driver (see `safety.rs`).
    pub(crate) safety_violation: Option<SafetyViolation>,
    /// A leadership transfer this leader is making (see `transfer.rs`).
    pub(crate) transfer: Option<crate::transfer::Transfer>,
    /// The leader's clock and its last stamp (see `clock.rs`).
    pub(crate) clock: crate::clock::LeaderClock,
    /// The tick count, and in lease mode the leader's lease (see `lease.rs`).
    pub(crate) lease: crate::lease::Lease,
}

impl RawNode {
    /// A node with an empty log, as on the very first start of a cluster.
    pub fn new(cfg: Config) -> Result<Self, ConfigError> {
        Self::restart(cfg, RestartState::default())
    }

    /// A node rebuilt from what its storage holds. Everything in `state` must have been
    /// acknowledged durable; nothing else is assumed.
    pub fn restart(cfg: Config, state: RestartState) -> Result<Self, ConfigError> {
        cfg.validate()?;
        check_restart_state(&state)?;
        let hs = state.hard_state;
        let mut snapshot = state.snapshot;
        let log_has_conf = state
            .entries
            .iter()
            .any(|e| e.kind == EntryKind::ConfChange);
        if snapshot.membership.is_empty() && !log_has_conf {
            // Storage holds no configuration: a first start, or a driver that never stored one.
            snapshot.membership = Membership::with_voters(cfg.voters.iter().copied());
        }
        let log = RaftLog::restore(snapshot, state.entries, hs.commit, state.applied);
        let applied = log.applying();
        let mut node = Self {
            id: cfg.id,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            log,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_ticks,
            rng: SeededRng::new(cfg.seed),
            msgs: Vec::new(),
            spares: Default::default(),
            peer_scratch: Vec::new(),
            held_for_next_write: Vec::new(),
            last_append_ack: None,
            writes: VecDeque::new(),
            next_write_seq: 1,
            written_hard_state: hs,
            reads: ReadIndexTracker::default(),
            reads_awaiting_commit: Vec::new(),
            read_states: Vec::new(),
            uncommitted_bytes: 0,
            broadcast_pending: false,
            applied,
            last_soft_state: SoftState {
                role: Role::Follower,
                term: hs.term,
                leader: None,
                reason: ChangeReason::Started,
            },
            change_reason: ChangeReason::Started,
            pending_fetch: None,
            fetch_request: None,
            safety_violation: None,
            transfer: None,
            clock: Default::default(),
            lease: Default::default(),
            cfg,
        };
        node.reset_election_timer();
        node.debug_assert_invariants();
        Ok(node)
    }

    // ----- inputs -------------------------------------------------------------------------

    /// One unit of logical time.
    pub fn tick(&mut self) {
        self.lease.tick();
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
        self.debug_assert_invariants();
    }

    /// Proposes one command. On the leader it is appended; on a follower it is forwarded to
    /// the leader or refused, as configured.
    pub fn propose(&mut self, payload: Bytes) -> Result<Proposed, ProposeError> {
        // One payload goes into the log without a collection around it.
        let result = if self.role == Role::Leader {
            let bytes = proposal_bytes(std::slice::from_ref(&payload));
            self.append_as_leader(std::iter::once(payload), bytes)
        } else {
            self.forward_proposals(vec![payload])
        };
        self.debug_assert_invariants();
        result
    }

    /// Proposes several commands, appended as consecutive entries.
    pub fn propose_batch(&mut self, payloads: Vec<Bytes>) -> Result<Proposed, ProposeError> {
        let result = if payloads.is_empty() {
            Err(ProposeError::Empty)
        } else if self.role == Role::Leader {
            let bytes = proposal_bytes(&payloads);
            self.append_as_leader(payloads, bytes)
        } else {
            self.forward_proposals(payloads)
        };
        self.debug_assert_invariants();
        result
    }

    fn append_as_leader(
        &mut self,
        payloads: impl IntoIterator<Item = Bytes>,
        bytes: u64,
    ) -> Result<Proposed, ProposeError> {
        let (first, last) = self.append_proposals(payloads, bytes)?;
        Ok(Proposed::Appended {
            first,
            last,
            term: self.term,
        })
    }

    fn forward_proposals(&mut self, payloads: Vec<Bytes>) -> Result<Proposed, ProposeError> {
        let to = self.forward_target()?;
        self.send(to, MessageBody::Propose { payloads });
        Ok(Proposed::Forwarded { to })
    }

    /// Asks for a linearizable read. Once it is confirmed, a [`ReadState`] with the same `ctx`
    /// appears in a later [`Ready`]; a read that cannot be confirmed (leadership lost, message
    /// lost) never appears, so drivers time requests out and retry.
    pub fn read_index(&mut self, ctx: Bytes) -> Result<(), ProposeError> {
        let result = if self.role == Role::Leader {
            self.leader_read(ctx, self.id);
            Ok(())
        } else {
            self.forward_target()
                .map(|to| self.send(to, MessageBody::ReadIndexRequest { ctx }))
        };
        self.debug_assert_invariants();
        result
    }

    /// Starts an election now (with a pre-vote first if configured). Does nothing on a leader,
    /// nor on a node that is not a voter of its configuration (a learner, a removed node, a node
    /// waiting to be added). In [`ReadMode::Lease`](crate::ReadMode::Lease) it does nothing
    /// either while this node may be vouching for a leader's lease (it heard from a leader
    /// within the election timeout, or started less than one ago): hand leadership over with
    /// [`transfer_leader`](Self::transfer_leader) instead.
    pub fn campaign(&mut self) {
        let vouching = self.lease_mode() && self.in_leader_lease();
        if self.role != Role::Leader && !vouching {
            self.change_reason = ChangeReason::CampaignRequested;
            self.start_campaign();
        }
        self.debug_assert_invariants();
    }

    /// The state machine applied everything up to `index`. An index beyond the entries
    /// handed out breaks the driver contract: it is ignored and kept as a
    /// [`SafetyViolation::AppliedBeyondHandedOut`] (see [`safety_violation`](Self::safety_violation)).
    pub fn on_applied(&mut self, index: Index) {
        let handed_out = self.log.applying();
        if index > handed_out {
            self.record_violation(SafetyViolation::AppliedBeyondHandedOut { index, handed_out });
        } else {
            self.applied = self.applied.max(index);
        }
        self.debug_assert_invariants();
    }

    /// The transport could not reach `to`: stop streaming to it optimistically. A follower
    /// waiting for a snapshot is treated as a failed transfer (see `report_snapshot`).
    pub fn report_unreachable(&mut self, to: NodeId) {
        use crate::progress::ReplicationState;
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        match pr.state {
            ReplicationState::Replicate => pr.become_probe(),
            ReplicationState::Snapshot { .. } => self.report_snapshot(to, false),
            ReplicationState::Probe => {}
        }
        self.debug_assert_invariants();
    }

    // ----- outputs ------------------------------------------------------------------------

    /// Whether [`take_ready`](Self::take_ready) has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || self.broadcast_pending
            || !self.soft_state().same_view(&self.last_soft_state)
            || self.hard_state_changed()
            || self.log.has_unpersisted()
            || self.fetch_request.is_some()
            || self.log.committed().min(self.log.persisted()) > self.log.applying()
            || (self.role == Role::Leader && self.reads.round_needed())
    }

    /// Everything to do since the last call. See [`Ready`] for what the driver must do with it.
    ///
    /// Acting on a `Ready` (reporting a write, delivering a message) often makes a new one ready
    /// at once, so a driver loops `while node.has_ready()` rather than taking one per round.
    /// (`Ready` is `#[must_use]`: dropping one loses its work and stalls the node.)
    pub fn take_ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            if let Some(round) = self.start_read_round() {
                self.broadcast_heartbeats(round);
            }
            if self.broadcast_pending {
                self.broadcast_pending = false;
                self.broadcast_append();
            }
        }
        let (snapshot_write, persist) = self.next_write();
        let soft = self.soft_state();
        let soft_state = (!soft.same_view(&self.last_soft_state)).then(|| {
            self.last_soft_state = soft;
            soft
        });
        let messages = if self.msgs.is_empty() {
            Vec::new()
        } else {
            std::mem::replace(&mut self.msgs, self.spares.messages())
        };
        let committed = self.log.take_committed(MAX_COMMITTED_BYTES_PER_READY);
        let ready = Ready {
            persist,
            messages,
            committed: self.spares.entries_from(committed),
            read_states: std::mem::take(&mut self.read_states),
            soft_state,
            snapshot_to_fetch: self.fetch_request.take(),
            snapshot_write,
        };
        self.debug_assert_invariants();
        ready
    }

    /// Takes back the lists of a [`Ready`] the driver is done with (messages, entries to write,
    /// committed entries), so that the next `Ready`s and appends reuse their allocations
    /// instead of making new ones. Optional: a driver that moves the lists elsewhere simply
    /// does not call it. Whatever the lists still hold is dropped, so take out (`drain`) what
    /// is still needed first; the rest of the `Ready` is left as it is.
    pub fn recycle(&mut self, ready: &mut Ready) {
        self.spares
            .keep_messages(std::mem::take(&mut ready.messages));
        self.spares
            .keep_entries(std::mem::take(&mut ready.committed));
        if let Some(persist) = &mut ready.persist {
            self.spares
                .keep_entries(std::mem::take(&mut persist.entries));
        }
    }

    // ----- read-only views ----------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// This node's current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// This node's role in its current term.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The candidate this node voted for in its current term, if any.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.vote
    }
    /// The highest index known committed.
    pub fn commit_index(&self) -> Index {
        self.log.committed()
    }
    /// The index of the last entry in the log (written or not).
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// The term of the last entry in the log.
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }
    /// The highest index known durable locally.
    pub fn persisted_index(&self) -> Index {
        self.log.persisted()
    }
    /// The highest index the driver reported applied.
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    /// The term of the entry at `index`, if the log still holds it.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }
    /// The entry at `index`, if the log still holds it in memory (not compacted away).
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// The configuration in force: that of the last configuration-change entry in the log
    /// (appended, not necessarily committed), else the snapshot's.
    pub fn membership(&self) -> &Membership {
        self.log.membership()
    }

    /// The index of the entry that set the configuration in force, if it is in the log (not
    /// folded into the snapshot).
    pub fn membership_index(&self) -> Option<Index> {
        self.log.last_conf_index()
    }

    /// The leader's view of member `id`'s log; `None` on a follower, for itself, or for a node
    /// that is not a member.
    pub fn peer_progress(&self, id: NodeId) -> Option<PeerProgress> {
        self.progress.get(&id).map(|p| PeerProgress {
            match_index: p.matched,
            next_index: p.next,
            recently_active: p.recently_active,
        })
    }

    /// Role, term and leader as they are now.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.term,
            leader: self.leader,
            reason: self.change_reason,
        }
    }
    /// Term, vote and commit index as they are now (not necessarily durable yet).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    /// The leader's view of each follower (match and next index, probe or replicate, paused),
    /// one line for diagnostics.
    pub fn describe_progress(&self) -> String {
        self.progress
            .iter()
            .map(|(id, p)| {
                format!(
                    "n{id}:{:?} match {} next {} paused {}",
                    p.state,
                    p.matched,
                    p.next,
                    p.is_paused()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every entry held in memory: those after the last snapshot, for diagnostics and
    /// invariant checks.
    pub fn log_entries(&self) -> &[Entry] {
        self.log.all_entries()
    }

    // ----- shared machinery ---------------------------------------------------------------

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    fn forward_target(&self) -> Result<NodeId, ProposeError> {
        match self.leader {
            Some(leader) if self.cfg.forward_to_leader && leader != self.id => Ok(leader),
            hint => Err(ProposeError::NotLeader { leader_hint: hint }),
        }
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.cfg.election_ticks;
        self.randomized_election_timeout = base + self.rng.gen_range(0..base);
    }

    /// The quorum of the configuration in force.
    pub(crate) fn quorum(&self) -> Quorum<'_> {
        Quorum::with_bugs(self.log.membership(), self.bugs().learners_count_in_quorum)
    }

    /// Whether this node votes in the configuration in force (may campaign).
    pub(crate) fn is_voter(&self) -> bool {
        self.log.membership().is_voter(self.id)
    }

    #[cfg(feature = "deliberate-bugs")]
    pub(crate) fn bugs(&self) -> crate::bugs::Bugs {
        self.cfg.bugs
    }

    /// In product builds the switches cannot be set, so every check folds to `false`.
    #[cfg(not(feature = "deliberate-bugs"))]
    #[inline(always)]
    pub(crate) fn bugs(&self) -> crate::bugs::Bugs {
        crate::bugs::Bugs::default()
    }

    pub(crate) fn bug_ack_before_persist(&self) -> bool {
        self.bugs().ack_before_persist
    }
}
