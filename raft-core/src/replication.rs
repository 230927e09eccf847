//! Log replication (Raft §5.3): the leader's appends, heartbeats and commit rule, and the
//! follower's side of AppendEntries.

use bytes::Bytes;

use crate::error::ProposeError;
use crate::message::MessageBody;
use crate::node::RawNode;
use crate::progress::ReplicationState;
use crate::safety::SafetyViolation;
use crate::types::{Entry, EntryKind, Index, NodeId, Role, Term};

impl RawNode {
    // ----- leader -------------------------------------------------------------------------

    /// Appends client payloads (`bytes` of entries, see [`proposal_bytes`]) to the leader's log;
    /// followers get them with the next drain, so that proposals made between two drains
    /// travel in one message.
    pub(crate) fn append_proposals(
        &mut self,
        payloads: impl IntoIterator<Item = Bytes>,
        bytes: u64,
    ) -> Result<(Index, Index), ProposeError> {
        debug_assert_eq!(self.role, Role::Leader);
        if let Some(t) = &self.transfer {
            return Err(ProposeError::TransferringLeadership { to: t.to });
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes.saturating_add(bytes) > self.cfg.max_uncommitted_bytes
        {
            return Err(ProposeError::TooManyUncommittedBytes);
        }
        self.append_clock_stamp_if_due(self.log.last_index() + 1);
        let first = self.log.last_index() + 1;
        let term = self.term;
        let entries = (first..)
            .zip(payloads)
            .map(|(index, p)| Entry::new(term, index, EntryKind::Normal, p));
        self.log.append(entries);
        let last = self.log.last_index();
        debug_assert_eq!(
            (first..=last)
                .filter_map(|i| self.log.entry(i))
                .map(Entry::size)
                .sum::<u64>(),
            bytes,
            "the bytes counted are those appended"
        );
        self.uncommitted_bytes += bytes;
        self.broadcast_pending = true;
        if self.bug_ack_before_persist() {
            self.maybe_commit();
        }
        Ok((first, last))
    }

    /// Sends every follower what it is missing, or a commit-only append where the new commit
    /// index lets it apply entries it already holds.
    pub(crate) fn broadcast_append(&mut self) {
        let committed = self.log.committed();
        let peers = self.peer_indexes();
        for peer in &peers {
            let mut sent_entries = false;
            while self.send_append(peer.id, false) {
                sent_entries = true;
            }
            if !sent_entries && committed.min(peer.matched) > peer.commit_sent {
                self.send_commit(peer.id);
            }
        }
        self.peer_scratch = peers;
    }

    /// Tells `to` the commit index up to what it is known to hold, in an empty append anchored
    /// at its match index rather than at `next`: it cannot overtake appends in flight and be
    /// rejected, and it takes no room in the flow-control window.
    fn send_commit(&mut self, to: NodeId) {
        let committed = self.log.committed();
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        if matches!(pr.state, ReplicationState::Snapshot { .. }) {
            // Nothing but heartbeats goes to a follower waiting for a snapshot.
            return;
        }
        let commit = committed.min(pr.matched);
        if commit <= pr.commit_sent {
            return;
        }
        let Some(prev_log_term) = self.log.term(pr.matched) else {
            return;
        };
        pr.commit_sent = commit;
        let prev_log_index = pr.matched;
        self.send(
            to,
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries: Vec::new(),
                commit,
            },
        );
    }

    /// Sends one append to `to` if flow control allows. An empty append (commit index only, or a
    /// probe) is sent only if `allow_empty`. Returns whether entries were sent, so that callers
    /// in `Replicate` can keep streaming.
    pub(crate) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let (next, prev_log_index) = (pr.next, pr.next - 1);
        if prev_log_index < self.log.snapshot().index {
            // The follower needs entries we compacted.
            self.send_snapshot(to);
            return false;
        }
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // Beyond our log: only a hostile acknowledgement could have put `next` there.
            tracing::warn!(
                id = self.id,
                term = self.term,
                to,
                prev_log_index,
                "follower's next index is beyond this log"
            );
            return false;
        };
        let entries = self.log.entries_from(next, self.cfg.max_msg_bytes);
        if entries.is_empty() && !allow_empty {
            return false;
        }
        match entries.last() {
            Some(last) => pr.sent_entries(last.index, entries.iter().map(Entry::size).sum()),
            None if pr.state == ReplicationState::Probe => pr.probe_sent = true,
            None => {}
        }
        let entries = self.spares.entries_from(entries);
        let sent_entries = !entries.is_empty();
        let commit = self.log.committed();
        pr.commit_sent = pr.commit_sent.max(commit.min(pr.matched));
        self.send(
            to,
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            },
        );
        sent_entries
    }

    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if !success {
            // Fast backtracking: skip every entry of ours that cannot match the follower's log.
            let retry_from = if hint_term > 0 {
                match self.log.find_conflict_by_term(hint_index, hint_term) {
                    Some((probe, _)) => probe + 1,
                    // Any match lies in what we compacted: the follower needs the snapshot.
                    None => self.log.snapshot().index,
                }
            } else {
                hint_index.saturating_add(1)
            };
            // A hint beyond our log can only come from a broken peer.
            let retry_from = retry_from.min(self.log.last_index() + 1);
            if pr.back_off(index, retry_from) {
                self.send_append(from, true);
            }
            return;
        }
        let last_index = self.log.last_index();
        if index > last_index {
            self.record_violation(SafetyViolation::AckBeyondLog {
                from,
                index,
                last_index,
            });
            return;
        }
        let matched_before = pr.matched;
        if let ReplicationState::Snapshot { .. } = pr.state {
            if !self.snapshot_acknowledged(from, index) {
                if self
                    .progress
                    .get(&from)
                    .is_some_and(|p| p.matched > matched_before)
                {
                    self.maybe_commit();
                }
                return;
            }
        } else if pr.update_matched(index) && pr.state == ReplicationState::Probe {
            pr.become_replicate();
        }
        let pr = self.progress.get_mut(&from).expect("checked above");
        let matched_moved = pr.matched > matched_before;
        if pr.state == ReplicationState::Replicate {
            pr.inflight.free_up_to(index);
        }
        if pr.removed_by.is_some() {
            self.forget_informed_removed_peers();
            if !self.progress.contains_key(&from) {
                return;
            }
        }
        // An acknowledgement that moves no match (the answer to a commit-only append, a
        // duplicate) cannot move the count: every other change to what is counted (the
        // leader's own writes, a configuration appended) recounts where it happens.
        if matched_moved {
            self.maybe_commit();
        }
        if self.role != Role::Leader {
            // The commit removed this leader from the configuration.
            return;
        }
        self.maybe_send_timeout_now(from);
        let mut sent_entries = false;
        while self.send_append(from, false) {
            sent_entries = true;
        }
        if !sent_entries {
            // A follower that acknowledged after the commit (it was the slower one) would
            // otherwise learn it only from the next heartbeat, and so would its clients.
            self.send_commit(from);
        }
    }

    pub(crate) fn broadcast_heartbeats(&mut self, read_round: u64) {
        let committed = self.log.committed();
        let peers = self.peer_indexes();
        for peer in &peers {
            // A follower's log may not match ours beyond `matched`, so it may not commit past it.
            let commit = committed.min(peer.matched);
            self.send(peer.id, MessageBody::Heartbeat { commit, read_round });
        }
        self.peer_scratch = peers;
    }

    /// Every follower with its match index and the commit index it was told, as they are
    /// before a walk that sends to each, in a list kept between walks (a broadcast runs
    /// several times per commit; give the list back to `peer_scratch` when done).
    fn peer_indexes(&mut self) -> Vec<PeerIndexes> {
        let mut peers = std::mem::take(&mut self.peer_scratch);
        peers.clear();
        peers.extend(self.progress.iter().map(|(&id, pr)| PeerIndexes {
            id,
            matched: pr.matched,
            commit_sent: pr.commit_sent,
        }));
        peers
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let stalled = pr.matched == pr.matched_at_last_heartbeat;
        pr.matched_at_last_heartbeat = pr.matched;
        if pr.matched < last {
            match pr.state {
                // The follower is alive; probe again in case the last probe was lost.
                ReplicationState::Probe => {
                    pr.probe_sent = false;
                    self.send_append(from, true);
                }
                // An append was probably lost: no progress over a whole heartbeat interval.
                // (An empty append would overtake the ones in flight and be rejected.)
                ReplicationState::Replicate if stalled => {
                    pr.become_probe();
                    self.send_append(from, true);
                }
                ReplicationState::Replicate => while self.send_append(from, false) {},
                // No appends until the snapshot is installed (or reported failed).
                ReplicationState::Snapshot { .. } => self.snapshot_heartbeat_answered(from),
            }
        }
        self.confirm_reads(from, read_round);
    }

    /// The commit rule (§5.3, §5.4.2): the highest index stored durably on a majority, and only
    /// if its entry is of the current term. The leader counts itself only for what its own
    /// storage has acknowledged.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let Some(candidate) = self.commit_candidate() else {
            return false;
        };
        let old = self.log.committed();
        self.log.commit_to(candidate);
        let newly: u64 = (old + 1..=candidate)
            .filter_map(|i| self.log.entry(i))
            .filter(|e| e.term == self.term && e.kind == EntryKind::Normal)
            .map(Entry::size)
            .sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(newly);
        self.broadcast_pending = true;
        self.serve_reads_awaiting_commit();
        self.membership_commit_advanced();
        true
    }

    /// The index the commit rule allows beyond the commit index, if any.
    pub(crate) fn commit_candidate(&self) -> Option<Index> {
        let own = if self.bug_ack_before_persist() {
            self.log.last_index()
        } else {
            self.log.persisted()
        };
        let candidate = self.quorum().committed_index(|v| {
            if v == self.id {
                own
            } else {
                self.progress.get(&v).map_or(0, |p| p.matched)
            }
        });
        if candidate <= self.log.committed() {
            return None;
        }
        let current_term = self.log.term(candidate) == Some(self.term);
        (current_term || self.bugs().commit_earlier_term_by_counting).then_some(candidate)
    }

    // ----- follower -----------------------------------------------------------------------

    /// AppendEntries receiver (Figure 2): accept entries that follow an entry matching
    /// `(prev_log_index, prev_log_term)`, replacing any conflicting suffix; reject otherwise
    /// with a hint for fast backtracking.
    pub(crate) fn handle_append_request(
        &mut self,
        from: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) {
        let committed = self.log.committed();
        if let Some(index) = self.conflict_with_committed(prev_log_index, prev_log_term, &entries) {
            self.record_violation(SafetyViolation::CommittedEntryConflict {
                term: self.term,
                leader: from,
                index,
                committed,
            });
            return;
        }
        if prev_log_index < committed {
            // Everything up to our commit index already matches the leader's log.
            self.acknowledge_append(from, committed);
            return;
        }
        if !self.log.matches(prev_log_index, prev_log_term) {
            let snapshot = self.log.snapshot();
            // Below our snapshot, its last entry is the best hint: it is committed, so the
            // leader holds it (or has compacted it, and will send its own snapshot).
            let (hint_index, hint_term) = self
                .log
                .find_conflict_by_term(prev_log_index.min(self.log.last_index()), prev_log_term)
                .unwrap_or((snapshot.index, snapshot.term));
            self.last_append_ack = None;
            self.send(
                from,
                MessageBody::AppendResponse {
                    success: false,
                    index: prev_log_index,
                    hint_index,
                    hint_term,
                },
            );
            return;
        }
        if entries.is_empty() && self.repeats_last_append_ack(from, prev_log_index) {
            // Commit news only, anchored at the match the leader holds: equal to our last
            // acknowledgement, so the leader has it. Had it been lost, the leader's match would
            // be lower, the anchor would differ, and we would answer.
            self.log.commit_to(commit.min(prev_log_index));
            return;
        }
        let last_new = prev_log_index + entries.len() as u64;
        let emptied = self.log.append_after_match(entries);
        self.spares.keep_entries(emptied);
        self.log.commit_to(commit.min(last_new));
        self.acknowledge_append(from, last_new);
    }

    /// Tells the leader `to` (once durable) that our log matches its own up to `index`.
    pub(crate) fn acknowledge_append(&mut self, to: NodeId, index: Index) {
        self.last_append_ack = Some((self.term, to, index));
        self.send_when_durable(to, success_ack(index));
    }

    /// Whether acknowledging `index` to `leader` would repeat the last acknowledgement, in this
    /// term. A member the configuration no longer lists always answers: its leader forgets
    /// it only once it answers after being told that its removal committed.
    fn repeats_last_append_ack(&self, leader: NodeId, index: Index) -> bool {
        self.last_append_ack == Some((self.term, leader, index))
            && self.log.membership().contains(self.id)
    }

    /// The first index at or below our commit index where the append (its `prev` entry or its
    /// entries) names a different term than our log: by Leader Completeness a leader holds
    /// every committed entry, so this is a breach. Compacted indexes are not checked.
    fn conflict_with_committed(
        &self,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: &[Entry],
    ) -> Option<Index> {
        let committed = self.log.committed();
        std::iter::once((prev_log_index, prev_log_term))
            .filter(|&(index, _)| index > 0)
            .chain(entries.iter().map(|e| (e.index, e.term)))
            .take_while(|&(index, _)| index <= committed)
            .find(|&(index, term)| self.log.term(index).is_some_and(|ours| ours != term))
            .map(|(index, _)| index)
    }

    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: Index, read_round: u64) {
        // The leader never sends a commit index beyond what it knows we match; clamping only
        // guards against a broken peer.
        self.log.commit_to(commit.min(self.log.last_index()));
        self.send(from, MessageBody::HeartbeatResponse { read_round });
    }
}

/// The bytes proposals of these payloads count for in flow control ([`Entry::size`]).
pub(crate) fn proposal_bytes(payloads: &[Bytes]) -> u64 {
    payloads
        .iter()
        .map(|p| p.len() as u64 + crate::types::ENTRY_OVERHEAD_BYTES)
        .sum()
}

/// What a walk over the followers reads of one before sending to it.
pub(crate) struct PeerIndexes {
    id: NodeId,
    matched: Index,
    commit_sent: Index,
}

pub(crate) fn success_ack(index: Index) -> MessageBody {
    MessageBody::AppendResponse {
        success: true,
        index,
        hint_index: 0,
        hint_term: 0,
    }
}
