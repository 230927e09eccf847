//! The Raft node: its state, the public API, the term rules that apply to every message, and
//! the plumbing that turns state changes into a [`Ready`] and durability acks into released
//! messages. Elections live in `election.rs`, log replication in `replication.rs`, reads in
//! `read_index.rs`, snapshots in `snapshot.rs`.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::error::{ConfigError, ProposeError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::read_index::ReadIndexTracker;
use crate::ready::{Persist, ReadState, Ready, SnapshotToFetch, SnapshotWrite, SoftState, WriteId};
use crate::rng::SeededRng;
use crate::snapshot::PendingFetch;
use crate::types::{Entry, HardState, Index, NodeId, RestartState, Role, Term};

/// At most this many bytes of committed entries are handed out in one [`Ready`]; the rest
/// follow in the next one ([`RawNode::has_ready`] says so).
const MAX_COMMITTED_BYTES_PER_READY: u64 = 64 << 20;

/// Where a proposal went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proposed {
    /// Appended to this leader's log at `first..=last` in `term`. The proposal took effect if
    /// and only if the entry committed at `last` has this term.
    Appended {
        /// The first proposal's index.
        first: Index,
        /// The last proposal's index.
        last: Index,
        /// The leader's term.
        term: Term,
    },
    /// Forwarded to the leader `to` (only with `Config::forward_to_leader`). This is not an
    /// acceptance: the message may be lost, or the leader may refuse it, and nothing tells the
    /// caller. A caller that must know watches for its payload among the committed entries and
    /// retries on a timeout.
    Forwarded {
        /// The leader the proposal was sent to.
        to: NodeId,
    },
}

/// Something that must wait until everything written so far is durable.
#[derive(Debug)]
pub(crate) enum Held {
    /// A message that promises durability: a vote grant or an append acknowledgement.
    Send(Message),
    /// A candidate's vote for itself counts only once the vote is on disk.
    SelfVote(Term),
}

/// A write handed to the driver and not yet reported durable.
#[derive(Debug)]
struct OutstandingWrite {
    id: WriteId,
    last_entry: Option<(Index, Term)>,
    held: Vec<Held>,
}

/// One Raft node, without any IO. See the crate documentation for the driver loop.
pub struct RawNode {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) voters: Vec<NodeId>,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,
    /// The leader's view of each other voter; empty unless leading.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Votes (or pre-votes) received in the current campaign.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_timeout: u32,
    rng: SeededRng,
    pub(crate) msgs: Vec<Message>,
    held_for_next_write: Vec<Held>,
    writes: VecDeque<OutstandingWrite>,
    next_write_seq: u64,
    /// The hard state as of the last write asked for.
    written_hard_state: HardState,
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
    /// The snapshot this follower waits for its driver to fetch.
    pub(crate) pending_fetch: Option<PendingFetch>,
    /// A fetch request for the next `Ready`.
    pub(crate) fetch_request: Option<SnapshotToFetch>,
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
        check_restart_state(&cfg, &state)?;
        let mut voters = cfg.voters.clone();
        voters.sort_unstable();
        let hs = state.hard_state;
        let log = RaftLog::restore(state.snapshot, state.entries, hs.commit, state.applied);
        let applied = log.applying();
        let mut node = Self {
            id: cfg.id,
            voters,
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
            held_for_next_write: Vec::new(),
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
            },
            pending_fetch: None,
            fetch_request: None,
            cfg,
        };
        node.reset_election_timer();
        Ok(node)
    }

    // ----- inputs -------------------------------------------------------------------------

    /// One unit of logical time.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
    }

    /// A message from a peer. Stale, duplicated, reordered or malformed messages are harmless.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id || !self.voters.contains(&m.from) {
            tracing::debug!(
                id = self.id,
                term = self.term,
                from = m.from,
                to = m.to,
                "dropping misaddressed message"
            );
            return;
        }
        if let Err(why) = validate_message(&m) {
            tracing::warn!(
                id = self.id,
                term = self.term,
                from = m.from,
                kind = m.body.kind_name(),
                why,
                "dropping malformed message"
            );
            return;
        }
        if m.term > self.term {
            let is_vote_request = matches!(
                m.body,
                MessageBody::PreVoteRequest { .. } | MessageBody::VoteRequest { .. }
            );
            if is_vote_request && self.in_leader_lease() {
                // check-quorum: while we hear from a leader, a candidate cannot unseat it.
                tracing::debug!(
                    id = self.id,
                    term = self.term,
                    from = m.from,
                    "ignoring vote request inside the leader lease"
                );
                return;
            }
            match m.body {
                // A pre-vote never raises anyone's term, and a granted pre-vote answers our own
                // pre-campaign for the next term.
                MessageBody::PreVoteRequest { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::AppendRequest { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            self.answer_stale_term(&m);
            return;
        }

        match m.body {
            MessageBody::PreVoteRequest {
                last_log_index,
                last_log_term,
            } => self.handle_vote_request(m.from, m.term, last_log_index, last_log_term, true),
            MessageBody::VoteRequest {
                last_log_index,
                last_log_term,
            } => self.handle_vote_request(m.from, m.term, last_log_index, last_log_term, false),
            MessageBody::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate && (!granted || m.term == self.term + 1) {
                    self.record_vote(m.from, granted);
                }
            }
            MessageBody::VoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.record_vote(m.from, granted);
                }
            }
            body @ (MessageBody::AppendRequest { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }) => {
                if self.role == Role::Leader {
                    tracing::error!(
                        id = self.id,
                        term = self.term,
                        from = m.from,
                        "another leader in my term: election safety is broken"
                    );
                    return;
                }
                if self.role != Role::Follower {
                    self.become_follower(m.term, Some(m.from));
                }
                self.leader = Some(m.from);
                self.election_elapsed = 0;
                match body {
                    MessageBody::AppendRequest {
                        prev_log_index,
                        prev_log_term,
                        entries,
                        commit,
                    } => self.handle_append_request(
                        m.from,
                        prev_log_index,
                        prev_log_term,
                        entries,
                        commit,
                    ),
                    MessageBody::Heartbeat { commit, read_round } => {
                        self.handle_heartbeat(m.from, commit, read_round)
                    }
                    MessageBody::InstallSnapshot { snapshot } => {
                        self.handle_install_snapshot(m.from, snapshot)
                    }
                    _ => unreachable!("matched above"),
                }
            }
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_response(m.from, success, index, hint_index, hint_term);
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(m.from, read_round);
                }
            }
            MessageBody::Propose { payloads } => {
                // Only the leader accepts forwarded proposals; forwarding again could loop.
                if self.role == Role::Leader {
                    if let Err(e) = self.append_proposals(payloads) {
                        tracing::debug!(id = self.id, term = self.term, from = m.from, error = %e, "dropping forwarded proposal");
                    }
                }
            }
            MessageBody::ReadIndexRequest { ctx } => {
                if self.role == Role::Leader {
                    self.leader_read(ctx, m.from);
                }
            }
            MessageBody::ReadIndexResponse { ctx, index } => {
                if self.role == Role::Follower && self.leader == Some(m.from) {
                    self.read_states.push(ReadState { ctx, index });
                }
            }
        }
    }

    /// Proposes one command. On the leader it is appended; on a follower it is forwarded to
    /// the leader or refused, as configured.
    pub fn propose(&mut self, payload: Bytes) -> Result<Proposed, ProposeError> {
        self.propose_batch(vec![payload])
    }

    /// Proposes several commands, appended as consecutive entries.
    pub fn propose_batch(&mut self, payloads: Vec<Bytes>) -> Result<Proposed, ProposeError> {
        if payloads.is_empty() {
            return Err(ProposeError::Empty);
        }
        match self.role {
            Role::Leader => {
                let (first, last) = self.append_proposals(payloads)?;
                Ok(Proposed::Appended {
                    first,
                    last,
                    term: self.term,
                })
            }
            _ => {
                let to = self.forward_target()?;
                self.send(to, MessageBody::Propose { payloads });
                Ok(Proposed::Forwarded { to })
            }
        }
    }

    /// Asks for a linearizable read. Once it is confirmed, a [`ReadState`] with the same `ctx`
    /// appears in a later [`Ready`]; a read that cannot be confirmed (leadership lost, message
    /// lost) never appears, so drivers time requests out and retry.
    pub fn read_index(&mut self, ctx: Bytes) -> Result<(), ProposeError> {
        if self.role == Role::Leader {
            self.leader_read(ctx, self.id);
            return Ok(());
        }
        let to = self.forward_target()?;
        self.send(to, MessageBody::ReadIndexRequest { ctx });
        Ok(())
    }

    /// Starts an election now (with a pre-vote first if configured). Does nothing on a leader.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader {
            self.start_campaign();
        }
    }

    /// The driver finished the write `id` (and, since writes complete in order, every earlier
    /// one). An id that names no outstanding write is stale and ignored.
    pub fn on_persisted(&mut self, id: WriteId) {
        let Some(pos) = self.writes.iter().position(|w| w.id == id) else {
            tracing::debug!(id = self.id, term = self.term, write = ?id, "ignoring stale persistence ack");
            return;
        };
        let done: Vec<OutstandingWrite> = self.writes.drain(..=pos).collect();
        for write in done {
            if let Some((index, term)) = write.last_entry {
                self.log.persisted_to(index, term);
            }
            for held in write.held {
                self.release(held);
            }
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// The state machine applied everything up to `index`.
    pub fn on_applied(&mut self, index: Index) {
        if index > self.log.applying() {
            tracing::warn!(
                id = self.id,
                term = self.term,
                index,
                handed_out = self.log.applying(),
                "applied index beyond what was handed out"
            );
            return;
        }
        self.applied = self.applied.max(index);
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
    }

    // ----- outputs ------------------------------------------------------------------------

    /// Whether [`take_ready`](Self::take_ready) has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || self.broadcast_pending
            || self.soft_state() != self.last_soft_state
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
            if let Some(round) = self.reads.start_round() {
                self.broadcast_heartbeats(round);
            }
            if self.broadcast_pending {
                self.broadcast_pending = false;
                self.broadcast_append();
            }
        }
        let (snapshot_write, persist) = self.next_write();
        let soft = self.soft_state();
        let soft_state = (soft != self.last_soft_state).then(|| {
            self.last_soft_state = soft;
            soft
        });
        Ready {
            persist,
            messages: std::mem::take(&mut self.msgs),
            committed: self.log.take_committed(MAX_COMMITTED_BYTES_PER_READY),
            read_states: std::mem::take(&mut self.read_states),
            soft_state,
            snapshot_to_fetch: self.fetch_request.take(),
            snapshot_write,
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
    /// Role, term and leader as they are now.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.term,
            leader: self.leader,
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

    /// Sends `body` once everything written so far is durable.
    pub(crate) fn send_when_durable(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        self.hold_until_durable(Held::Send(msg));
    }

    pub(crate) fn hold_until_durable(&mut self, held: Held) {
        if self.bug_ack_before_persist() {
            return self.release(held);
        }
        if self.log.has_unpersisted() || self.hard_state_changed() {
            self.held_for_next_write.push(held);
        } else if let Some(last) = self.writes.back_mut() {
            last.held.push(held);
        } else {
            self.release(held);
        }
    }

    fn release(&mut self, held: Held) {
        match held {
            // A promise made in an earlier term answers a question nobody asks any more.
            Held::Send(m) if m.term == self.term => self.msgs.push(m),
            Held::Send(_) => {}
            Held::SelfVote(term) => {
                if term == self.term && self.role == Role::Candidate {
                    self.record_vote(self.id, true);
                }
            }
        }
    }

    fn hard_state_changed(&self) -> bool {
        (self.term, self.vote) != (self.written_hard_state.term, self.written_hard_state.vote)
    }

    fn next_write_id(&mut self) -> WriteId {
        let id = WriteId {
            seq: self.next_write_seq,
            term: self.term,
        };
        self.next_write_seq += 1;
        id
    }

    /// Turns the changes since the last write into the next writes: a snapshot install, if one
    /// was fetched, then hard state and entries. Held messages go with the last of them.
    fn next_write(&mut self) -> (Option<SnapshotWrite>, Option<Persist>) {
        let snapshot_write = self.log.take_unwritten_snapshot().map(|snapshot| {
            let id = self.next_write_id();
            self.writes.push_back(OutstandingWrite {
                id,
                last_entry: Some((snapshot.index, snapshot.term)),
                held: Vec::new(),
            });
            SnapshotWrite { id, snapshot }
        });
        let entries = self.log.take_unpersisted();
        if entries.is_empty() && !self.hard_state_changed() {
            debug_assert!(
                snapshot_write.is_some() || self.held_for_next_write.is_empty(),
                "held messages with nothing to write"
            );
            // With a snapshot write they join it (the last outstanding write).
            for held in std::mem::take(&mut self.held_for_next_write) {
                self.hold_until_durable(held);
            }
            return (snapshot_write, None);
        }
        let hs = self.hard_state();
        let hard_state = (hs != self.written_hard_state).then_some(hs);
        self.written_hard_state = hs;
        let id = self.next_write_id();
        self.writes.push_back(OutstandingWrite {
            id,
            last_entry: entries.last().map(|e| (e.index, e.term)),
            held: std::mem::take(&mut self.held_for_next_write),
        });
        let persist = Persist {
            id,
            hard_state,
            entries,
        };
        (snapshot_write, Some(persist))
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

    /// Steps down (or stays down) as follower in `term`, led by `leader` if known.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            tracing::info!(id = self.id, term = self.term, "stepping down");
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_role_state();
    }

    pub(crate) fn reset_role_state(&mut self) {
        self.reset_election_timer();
        self.heartbeat_elapsed = 0;
        self.votes.clear();
        self.progress.clear();
        self.reads.reset();
        self.reads_awaiting_commit.clear();
        self.uncommitted_bytes = 0;
        self.broadcast_pending = false;
    }

    /// A message from an earlier term. A stale leader (or a partitioned node whose pre-vote we
    /// ignore) learns our term from the answer, so that it steps down instead of lingering.
    fn answer_stale_term(&mut self, m: &Message) {
        match m.body {
            MessageBody::AppendRequest { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
                if self.cfg.check_quorum || self.cfg.pre_vote =>
            {
                self.send(
                    m.from,
                    MessageBody::AppendResponse {
                        success: false,
                        index: 0,
                        hint_index: 0,
                        hint_term: 0,
                    },
                );
            }
            MessageBody::PreVoteRequest { .. } => {
                self.send(m.from, MessageBody::PreVoteResponse { granted: false })
            }
            _ => {}
        }
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

/// Structural checks on a message; anything failing them is dropped before it touches state.
fn validate_message(m: &Message) -> Result<(), &'static str> {
    if let MessageBody::AppendRequest {
        prev_log_index,
        prev_log_term,
        entries,
        ..
    } = &m.body
    {
        let mut expected_index = prev_log_index
            .checked_add(1)
            .ok_or("prev_log_index overflows")?;
        let mut min_term = *prev_log_term;
        for e in entries {
            if e.index != expected_index {
                return Err("entries are not contiguous after prev_log_index");
            }
            if e.term < min_term || e.term > m.term {
                return Err("entry terms must not decrease and not exceed the message term");
            }
            min_term = e.term;
            expected_index = expected_index
                .checked_add(1)
                .ok_or("entry index overflows")?;
        }
        if *prev_log_term > m.term {
            return Err("prev_log_term beyond the message term");
        }
    }
    if let MessageBody::InstallSnapshot { snapshot } = &m.body {
        if snapshot.index == 0 || snapshot.term == 0 {
            return Err("a snapshot must cover at least one entry");
        }
        if snapshot.term > m.term {
            return Err("snapshot term beyond the message term");
        }
    }
    Ok(())
}

fn check_restart_state(cfg: &Config, state: &RestartState) -> Result<(), ConfigError> {
    let snapshot = state.snapshot;
    let current_term = state.hard_state.term;
    if snapshot.index > 0 && snapshot.term == 0 {
        return Err(ConfigError::SnapshotWithoutTerm {
            index: snapshot.index,
        });
    }
    if snapshot.term > current_term {
        return Err(ConfigError::TermAboveCurrentTerm {
            term: snapshot.term,
            current_term,
        });
    }
    if state.applied < snapshot.index {
        return Err(ConfigError::AppliedBelowSnapshot {
            applied: state.applied,
            snapshot_index: snapshot.index,
        });
    }
    if let Some(first) = state.entries.first() {
        if first.index <= snapshot.index {
            return Err(ConfigError::EntriesOverlapSnapshot {
                first: first.index,
                snapshot_index: snapshot.index,
            });
        }
    }
    let mut expected = snapshot.index + 1;
    let mut prev_term = snapshot.term;
    for e in &state.entries {
        if e.index != expected {
            return Err(ConfigError::LogGap {
                expected,
                found: e.index,
            });
        }
        if e.term < prev_term {
            return Err(ConfigError::TermDecreases { index: e.index });
        }
        prev_term = e.term;
        expected += 1;
    }
    let last_index = expected - 1;
    if prev_term > current_term {
        return Err(ConfigError::TermAboveCurrentTerm {
            term: prev_term,
            current_term,
        });
    }
    if let Some(vote) = state.hard_state.vote {
        if !cfg.voters.contains(&vote) {
            return Err(ConfigError::VoteForNonVoter { vote });
        }
    }
    if state.applied > last_index {
        return Err(ConfigError::AppliedBeyondLog {
            applied: state.applied,
            last_index,
        });
    }
    Ok(())
}
