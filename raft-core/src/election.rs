//! Leader election (Raft §5.2 and §5.4.1), pre-vote (thesis §9.6) and check-quorum (§6.2).

use crate::durability::Held;
use crate::message::MessageBody;
use crate::node::RawNode;
use crate::quorum::VoteResult;
use crate::ready::ChangeReason;
use crate::types::{Entry, EntryKind, NodeId, Role, Term};

impl RawNode {
    /// Followers and candidates: campaign when no leader was heard from for a randomized
    /// election timeout.
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_timeout {
            self.change_reason = ChangeReason::ElectionTimeout {
                leader: self.leader,
                ticks: self.election_elapsed,
            };
            self.start_campaign();
        }
    }

    /// Leaders: heartbeat every `heartbeat_ticks`, and with check-quorum step down when a
    /// majority was not heard from within a check-quorum window (`election_elapsed` counts
    /// the window on a leader).
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.check_quorum_window() {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.quorum_recently_active() {
                    tracing::debug!(
                        id = self.id,
                        term = self.term,
                        "check-quorum: a majority is unreachable, stepping down"
                    );
                    self.change_reason = ChangeReason::QuorumLost {
                        ticks: self.cfg.check_quorum_window(),
                    };
                    self.become_follower(self.term, None);
                    return;
                }
                self.forget_silent_removed_peers();
                for pr in self.progress.values_mut() {
                    pr.recently_active = false;
                }
            }
        }
        self.tick_transfer();
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            let round = self.heartbeat_round();
            self.broadcast_heartbeats(round);
        }
    }

    fn quorum_recently_active(&self) -> bool {
        self.quorum().is_reached_by(|v| {
            v == self.id || self.progress.get(&v).is_some_and(|p| p.recently_active)
        })
    }

    /// With check-quorum, a node that heard from a leader within the election timeout refuses to
    /// help unseat it, and a leader (which steps down by itself once a majority goes quiet)
    /// refuses to be unseated: a removed server's vote requests must not depose it (thesis
    /// §4.2.3). In lease mode a node that just started refuses too: it may have acknowledged a
    /// leader's lease before it stopped (`lease.rs`).
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && (self.role == Role::Leader
                || (self.leader.is_some() && self.election_elapsed < self.cfg.election_ticks)
                || self.in_restart_quiet())
    }

    pub(crate) fn start_campaign(&mut self) {
        if !self.is_voter() {
            // A learner, a removed node or one waiting to be added: it could never win, and
            // a campaign would only disturb the voters.
            self.reset_election_timer();
            return;
        }
        if self.cfg.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
    }

    /// Pre-vote: ask whether we could win in the next term without raising our own, so that a
    /// node cut off from the cluster does not force a new election when it comes back.
    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_election_timer();
        self.reset_role_state();
        tracing::debug!(id = self.id, term = self.term, "starting pre-vote");
        self.request_votes(self.term + 1, true, false);
        // Our own pre-vote promises nothing, so it counts at once.
        self.record_vote(self.id, true);
    }

    fn become_candidate(&mut self) {
        self.campaign_in_new_term(false);
    }

    /// Raises the term and asks for votes; `transfer` when the leader handed over to us.
    pub(crate) fn campaign_in_new_term(&mut self, transfer: bool) {
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.reset_election_timer();
        self.reset_role_state();
        tracing::debug!(id = self.id, term = self.term, "starting election");
        self.request_votes(self.term, false, transfer);
        // Our own vote counts only once it is durable: voting for ourselves and then, after a
        // crash that lost the vote, for someone else in the same term could elect two leaders.
        self.hold_until_durable(Held::SelfVote(self.term));
    }

    /// Asks every voter of the configuration in force (incoming and outgoing) for its vote;
    /// `transfer` says the leader handed leadership over to us.
    pub(crate) fn request_votes(&mut self, term: Term, pre: bool, transfer: bool) {
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        let membership = self.log.membership();
        let peers: Vec<NodeId> = membership
            .voters
            .union(&membership.outgoing)
            .copied()
            .filter(|&v| v != self.id)
            .collect();
        for to in peers {
            let body = if pre {
                MessageBody::PreVoteRequest {
                    last_log_index,
                    last_log_term,
                    transfer,
                }
            } else {
                MessageBody::VoteRequest {
                    last_log_index,
                    last_log_term,
                    transfer,
                }
            };
            self.msgs.push(crate::message::Message {
                from: self.id,
                to,
                term,
                body,
            });
        }
    }

    /// RequestVote receiver (Figure 2): grant if we have not voted for someone else in this term
    /// and the candidate's log is at least as up to date as ours (§5.4.1).
    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: u64,
        last_log_term: Term,
        pre: bool,
        transfer: bool,
    ) {
        // Thesis §9.6: no pre-vote for anyone while we still hear from a leader, so that a node
        // rejoining with an up-to-date log cannot start an election the cluster does not need.
        let hears_leader = self.leader.is_some() && self.election_elapsed < self.cfg.election_ticks;
        let free_to_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && term > self.term && (!hears_leader || transfer));
        let log_ok = self.log.is_up_to_date(last_log_index, last_log_term)
            || self.bugs().vote_without_log_check;
        let granted = free_to_vote && log_ok;
        tracing::debug!(
            id = self.id,
            term = self.term,
            candidate = from,
            pre,
            granted,
            "vote request"
        );
        if pre {
            let answer_term = if granted { term } else { self.term };
            self.msgs.push(crate::message::Message {
                from: self.id,
                to: from,
                term: answer_term,
                body: MessageBody::PreVoteResponse { granted },
            });
        } else if granted {
            self.election_elapsed = 0;
            self.vote = Some(from);
            // The vote must be on disk before the candidate may count it.
            self.send_when_durable(from, MessageBody::VoteResponse { granted: true });
        } else {
            self.send(from, MessageBody::VoteResponse { granted: false });
        }
    }

    pub(crate) fn record_vote(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
        match self.quorum().vote_result(&self.votes) {
            VoteResult::Pending => {}
            VoteResult::Lost => {
                self.change_reason = ChangeReason::ElectionLost {
                    pre_vote: self.role == Role::PreCandidate,
                };
                self.become_follower(self.term, None)
            }
            VoteResult::Won => match self.role {
                Role::PreCandidate => {
                    self.change_reason = ChangeReason::PreVoteWon;
                    self.become_candidate()
                }
                Role::Candidate => {
                    self.change_reason = ChangeReason::ElectionWon;
                    self.become_leader()
                }
                Role::Follower | Role::Leader => {}
            },
        }
    }

    /// A new leader appends a no-op of its own term: entries of earlier terms commit only
    /// through it (§5.4.2), and ReadIndex waits for it.
    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.reset_election_timer();
        self.reset_role_state();
        let next = self.log.last_index() + 1;
        self.sync_progress_with_membership(next);
        tracing::debug!(
            id = self.id,
            term = self.term,
            last_index = next - 1,
            "became leader"
        );
        let noop = Entry::new(self.term, next, EntryKind::Noop, bytes::Bytes::new());
        self.log.append(vec![noop]);
        self.forget_clock_stamp();
        self.append_clock_stamp_if_due(next + 1);
        self.broadcast_pending = true;
        if self.bug_ack_before_persist() {
            self.maybe_commit();
        }
    }
}
