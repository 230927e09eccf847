//! Leadership transfer (Raft thesis §3.10): the leader stops taking proposals, brings the
//! target's log up to its own, and tells it to campaign at once (`TimeoutNow`); the target's
//! vote requests say so (`transfer: true`), so that voters answer even inside a leader lease.
//! A transfer that has not succeeded within an election timeout is abandoned.

use crate::error::ProposeError;
use crate::message::MessageBody;
use crate::node::RawNode;
use crate::types::{NodeId, Role};

/// A transfer in progress on the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// The node leadership goes to.
    pub(crate) to: NodeId,
    /// Ticks since the transfer began.
    pub(crate) elapsed: u32,
    /// `TimeoutNow` went out.
    pub(crate) sent: bool,
}

impl RawNode {
    /// Hands leadership over to the voter `to`: proposals and configuration changes are refused
    /// with [`ProposeError::TransferringLeadership`] meanwhile; once `to` holds the whole log it
    /// is told to campaign at once. The transfer ends when a new leader (or term) appears, and
    /// is abandoned after an election timeout without one. Asking for this node is a no-op;
    /// asking again for another node replaces the transfer.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        let result = self.transfer_leader_inner(to);
        self.debug_assert_invariants();
        result
    }

    fn transfer_leader_inner(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.log.membership().voters.contains(&to) || !self.progress.contains_key(&to) {
            return Err(ProposeError::InvalidTransferTarget { to });
        }
        tracing::info!(
            id = self.id,
            term = self.term,
            to,
            "transferring leadership"
        );
        self.transfer = Some(Transfer {
            to,
            elapsed: 0,
            sent: false,
        });
        // The target's vote requests will pass through the followers' side of the lease.
        self.lease.bar();
        if !self.maybe_send_timeout_now(to) {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// The node a transfer in progress hands leadership to, if any.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }

    /// Leader tick: abandon a transfer that took an election timeout.
    pub(crate) fn tick_transfer(&mut self) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        t.elapsed += 1;
        if t.elapsed >= self.cfg.election_ticks {
            tracing::info!(
                id = self.id,
                term = self.term,
                to = t.to,
                "leadership transfer abandoned"
            );
            self.transfer = None;
        }
    }

    /// If `peer` is the transfer's target and holds our whole log, tells it to campaign.
    /// Returns whether it did.
    pub(crate) fn maybe_send_timeout_now(&mut self, peer: NodeId) -> bool {
        let last = self.log.last_index();
        let ready = match (&self.transfer, self.progress.get(&peer)) {
            (Some(t), Some(pr)) => t.to == peer && !t.sent && pr.matched == last,
            _ => false,
        };
        if ready {
            if let Some(t) = self.transfer.as_mut() {
                t.sent = true;
            }
            self.send(peer, MessageBody::TimeoutNow);
        }
        ready
    }

    /// The leader hands leadership to us: campaign now, without a pre-vote. Only a voter may.
    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader || !self.is_voter() {
            return;
        }
        tracing::debug!(
            id = self.id,
            term = self.term,
            from,
            "leadership handed over: campaigning"
        );
        self.change_reason = crate::ready::ChangeReason::TransferFrom { from };
        self.campaign_in_new_term(true);
    }
}
