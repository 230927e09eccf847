//! Every message from a peer enters here: address and structure checks, the term rules that
//! apply to every message (Raft Figure 2, "All Servers"), then the handler of its kind.

use crate::message::{Message, MessageBody};
use crate::node::RawNode;
use crate::ready::{ChangeReason, ReadState};
use crate::safety::SafetyViolation;
use crate::types::{NodeId, Role, Term};
use crate::validate::validate_message;

impl RawNode {
    /// A message from a peer. Stale, duplicated, reordered or malformed messages are harmless.
    pub fn step(&mut self, m: Message) {
        if !self.accepts(&m) {
            self.debug_assert_invariants();
            return;
        }
        self.maybe_inform_removed_candidate(&m);
        if self.apply_term_rules(&m) {
            self.note_follower_active(&m);
            self.dispatch(m);
        }
        self.debug_assert_invariants();
    }

    /// Whether `m` is addressed to us and well formed. The sender need not be in our
    /// configuration: ours may lag behind the leader's (a node being added knows none), and
    /// what a stranger's message can do is bounded by the term rules and by counting only
    /// voters.
    fn accepts(&self, m: &Message) -> bool {
        if m.to != self.id || m.from == self.id || m.from == 0 {
            tracing::debug!(
                id = self.id,
                term = self.term,
                from = m.from,
                to = m.to,
                "dropping misaddressed message"
            );
            return false;
        }
        if let Err(why) = validate_message(m) {
            tracing::warn!(
                id = self.id,
                term = self.term,
                from = m.from,
                kind = m.body.kind_name(),
                why,
                "dropping malformed message"
            );
            return false;
        }
        true
    }

    /// The term rules. Returns whether the message goes on to its handler.
    fn apply_term_rules(&mut self, m: &Message) -> bool {
        if m.term < self.term {
            self.answer_stale_term(m);
            return false;
        }
        if m.term == self.term {
            return true;
        }
        let is_vote_request = matches!(
            m.body,
            MessageBody::PreVoteRequest { .. } | MessageBody::VoteRequest { .. }
        );
        let transfer = matches!(
            m.body,
            MessageBody::PreVoteRequest { transfer: true, .. }
                | MessageBody::VoteRequest { transfer: true, .. }
        );
        if is_vote_request && self.in_leader_lease() && !transfer {
            // check-quorum: while we hear from a leader, a candidate cannot unseat it (a
            // removed server among them, thesis §4.2.3), unless that leader handed over.
            tracing::debug!(
                id = self.id,
                term = self.term,
                from = m.from,
                "ignoring vote request inside the leader lease"
            );
            return false;
        }
        match m.body {
            // A pre-vote never raises anyone's term, and a granted pre-vote answers our own
            // pre-campaign for the next term.
            MessageBody::PreVoteRequest { .. } | MessageBody::PreVoteResponse { granted: true } => {
            }
            MessageBody::AppendRequest { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.change_reason = ChangeReason::LeaderFound { leader: m.from };
                self.become_follower(m.term, Some(m.from))
            }
            _ => {
                self.change_reason = ChangeReason::HigherTerm { from: m.from };
                self.adopt_higher_term(m.term)
            }
        }
        true
    }

    /// With check-quorum, any message a follower sends in our term shows it follows us, however
    /// late it arrives.
    fn note_follower_active(&mut self, m: &Message) {
        if self.role == Role::Leader && m.term == self.term {
            if let Some(pr) = self.progress.get_mut(&m.from) {
                pr.recently_active = true;
            }
        }
    }

    fn dispatch(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::PreVoteRequest {
                last_log_index,
                last_log_term,
                transfer,
            } => self.handle_vote_request(
                from,
                m.term,
                last_log_index,
                last_log_term,
                true,
                transfer,
            ),
            MessageBody::VoteRequest {
                last_log_index,
                last_log_term,
                transfer,
            } => self.handle_vote_request(
                from,
                m.term,
                last_log_index,
                last_log_term,
                false,
                transfer,
            ),
            MessageBody::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate && (!granted || m.term == self.term + 1) {
                    self.record_vote(from, granted);
                }
            }
            MessageBody::VoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.record_vote(from, granted);
                }
            }
            body @ (MessageBody::AppendRequest { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }) => self.step_from_leader(from, body),
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_response(from, success, index, hint_index, hint_term);
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(from, read_round);
                }
            }
            MessageBody::Propose { payloads } => {
                // Only the leader accepts forwarded proposals; forwarding again could loop.
                // A server the configuration no longer lists may still forward what its
                // clients sent before it learned of its removal. Those entries would come
                // after the entry removing it, which it will never be sent, so it could not
                // tell its clients their outcome: refusing them makes "not applied" certain.
                if self.role == Role::Leader && !self.log.membership().contains(from) {
                    tracing::debug!(
                        id = self.id,
                        term = self.term,
                        from,
                        "dropping a proposal forwarded by a server the configuration does not list"
                    );
                } else if self.role == Role::Leader {
                    let bytes = crate::replication::proposal_bytes(&payloads);
                    if let Err(e) = self.append_proposals(payloads, bytes) {
                        tracing::debug!(id = self.id, term = self.term, from, error = %e, "dropping forwarded proposal");
                    }
                }
            }
            MessageBody::ReadIndexRequest { ctx } => {
                if self.role == Role::Leader {
                    self.leader_read(ctx, from);
                }
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
            MessageBody::ReadIndexResponse { ctx, index } => {
                if self.role == Role::Follower && self.leader == Some(from) {
                    self.read_states.push(ReadState { ctx, index });
                }
            }
        }
    }

    /// An append, heartbeat or snapshot offer from the leader of our term (the term rules ran).
    fn step_from_leader(&mut self, from: NodeId, body: MessageBody) {
        if self.role == Role::Leader {
            // Only the leader of a term sends these, and we lead this term: some node voted
            // twice in it (a lost disk, a bug) or is hostile. We cannot tell which, so it is
            // reported rather than asserted.
            self.record_violation(SafetyViolation::TwoLeadersInOneTerm {
                term: self.term,
                other: from,
            });
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.change_reason = ChangeReason::LeaderFound { leader: from };
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        // Figure 2: hearing from the current leader restarts the election timer.
        self.leader = Some(from);
        self.election_elapsed = 0;
        self.retry_failed_fetch(from);
        match body {
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            } => self.handle_append_request(from, prev_log_index, prev_log_term, entries, commit),
            MessageBody::Heartbeat { commit, read_round } => {
                self.handle_heartbeat(from, commit, read_round)
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.handle_install_snapshot(from, *snapshot)
            }
            _ => unreachable!("only leader messages come here"),
        }
    }

    /// Steps down (or stays down) as follower in `term`, led by `leader` if known, and restarts
    /// the election timer.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.step_down(term, leader);
        self.reset_election_timer();
    }

    /// A higher term from a node that is not its leader (a candidate, or a reply to us). Figure
    /// 2 restarts a follower's election timer only when it grants a vote or hears from the
    /// current leader, so the timer runs on: a stale candidate whose vote request we reject
    /// must not hold back our own campaign. (A leader stepping down starts a fresh timer: its
    /// elapsed count measured the check-quorum window.)
    fn adopt_higher_term(&mut self, term: Term) {
        let was_leader = self.role == Role::Leader;
        self.step_down(term, None);
        if was_leader {
            self.reset_election_timer();
        }
    }

    fn step_down(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            tracing::debug!(id = self.id, term = self.term, "stepping down");
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_role_state();
    }

    /// Forgets what belonged to the previous role. The election timer is the caller's concern.
    pub(crate) fn reset_role_state(&mut self) {
        self.heartbeat_elapsed = 0;
        self.votes.clear();
        self.progress.clear();
        self.reads.reset();
        self.lease.reset();
        self.reads_awaiting_commit.clear();
        self.uncommitted_bytes = 0;
        self.broadcast_pending = false;
        self.transfer = None;
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
}
