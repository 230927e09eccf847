//! Operator requests through the node loop: list the members, change them (add a learner,
//! promote it, remove a member, change a member's addresses), and move the leadership. They
//! reach the group like client writes ([`crate::request::NodeHandle::admin`]); a change is
//! proposed with `propose_conf_change` and answered once applied (a change of the voters once
//! the entry leaving the joint configuration is applied too), a transfer once the target leads.
//! The waiting is [`super::admin_waits`].

use std::time::Duration;

use bytes::Bytes;
use kv::{MemberAddrs, MemberContext};
use raft_core::{Index, MemberChange, Membership, NodeId, ProposeError, Role, Term};
use tokio::time::Instant;

use super::admin_waits::{AdminAnswer, TransferGoal};
use super::group::Group;
use crate::request::{ClientRequest, RequestError};

/// A learner may be promoted only while at most this many entries behind the leader's last
/// index: a voter that must first catch up would make every commit wait for it as soon as it
/// counts toward a majority (etcd refuses such a promotion the same way).
pub const LEARNER_READY_LAG: u64 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// The configuration, every member's addresses and, on the leader, how far each has got.
    ListMembers,
    /// Adds a learner, reachable at these addresses.
    AddLearner { id: NodeId, addrs: MemberAddrs },
    /// Makes a learner that has caught up a voter.
    Promote { id: NodeId },
    /// Removes a voter or a learner.
    Remove { id: NodeId },
    /// Records new addresses for a member (the configuration is unchanged).
    UpdateAddrs { id: NodeId, addrs: MemberAddrs },
    /// Makes `to` the leader.
    TransferLeader { to: NodeId },
    /// Before a graceful stop: if this node leads, hands the leadership to the most caught-up
    /// voter and answers once another node leads or an election timeout passed.
    HandOffLeadership,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminReply {
    Members(MemberList),
    /// The change is applied; its last entry is at `index`.
    Changed {
        index: Index,
    },
    /// This node now leads, as asked.
    LeaderIs(NodeId),
    /// Nothing was to be done (the reason, for logs).
    Unchanged(String),
}

/// The answer to [`AdminRequest::ListMembers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberList {
    /// The node that answered.
    pub answered_by: NodeId,
    pub leader: Option<NodeId>,
    pub joint: bool,
    pub members: Vec<MemberStatus>,
    /// Once the keyspace is split: the ranges whose configuration the answering node still
    /// sees differ from the first range's (they follow it by themselves, `member_follow.rs`).
    pub ranges_behind: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    /// Empty when the answering node does not know it.
    pub peer_addr: String,
    pub client_addr: String,
    pub role: MemberRole,
    /// On the leader: the member's match index (the leader's own last index for itself).
    pub match_index: Option<Index>,
    /// On the leader: how many entries the member lacks of the leader's log.
    pub lag: Option<u64>,
}

/// A node's place in a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    /// A voter of the configuration (of both halves while joint).
    Voter,
    /// While joint: a voter of the new configuration only.
    IncomingVoter,
    /// While joint: a voter of the old configuration only, on its way out.
    OutgoingVoter,
    Learner,
    /// Not in the configuration (removed, or waiting to be added).
    None,
}

impl MemberRole {
    pub fn of(membership: &Membership, id: NodeId) -> Self {
        let (new, old) = (
            membership.voters.contains(&id),
            membership.outgoing.contains(&id),
        );
        match (new, old) {
            (true, true) => MemberRole::Voter,
            (true, false) if membership.is_joint() => MemberRole::IncomingVoter,
            (true, false) => MemberRole::Voter,
            (false, true) => MemberRole::OutgoingVoter,
            (false, false) if membership.is_learner(id) => MemberRole::Learner,
            (false, false) => MemberRole::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Voter => "voter",
            MemberRole::IncomingVoter => "incoming-voter",
            MemberRole::OutgoingVoter => "outgoing-voter",
            MemberRole::Learner => "learner",
            MemberRole::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            MemberRole::Voter,
            MemberRole::IncomingVoter,
            MemberRole::OutgoingVoter,
            MemberRole::Learner,
            MemberRole::None,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// What becomes of an operator request once the group has acted on it.
enum Next {
    Answer(AdminReply),
    /// Wait for the entry `(index, term)` (see `AdminWaits::track_change`).
    WaitForEntry {
        index: Index,
        term: Term,
    },
    WaitForLeader {
        goal: TransferGoal,
        within: Duration,
    },
}

/// Why an operator request was refused.
enum Refused {
    /// By the core: parked while no leader is known, else answered as a client write would be.
    Core(ProposeError),
    Other(RequestError),
}

impl From<ProposeError> for Refused {
    fn from(e: ProposeError) -> Self {
        Refused::Core(e)
    }
}

fn failed(why: String) -> Refused {
    Refused::Other(RequestError::Failed(why))
}

/// A proposal refused by the core, as the client sees it.
fn refused(e: &ProposeError, leader_client_addr: Option<&str>) -> RequestError {
    match e {
        ProposeError::InvalidConfChange { reason } => {
            RequestError::Failed(format!("invalid membership change: {reason}"))
        }
        ProposeError::InvalidTransferTarget { to } => {
            RequestError::Failed(format!("node {to} is not a voter; only a voter can lead"))
        }
        ProposeError::NotLeader {
            leader_hint: Some(leader),
        } => RequestError::TryAgain(format!(
            "not the leader; node {leader} leads{}",
            leader_client_addr
                .map(|a| format!(" (clients at {a})"))
                .unwrap_or_default()
        )),
        other => RequestError::TryAgain(other.to_string()),
    }
}

impl Group {
    /// An operator request arrived (or was parked until a leader was known).
    pub(super) fn on_admin(&mut self, req: AdminRequest, reply: AdminAnswer, deadline: Instant) {
        match self.act_on(req.clone()) {
            Ok(Next::Answer(answer)) => {
                let _ = reply.send(Ok(answer));
            }
            // An entry already handed out committed never passes `committed` again: the
            // answer to a request for what already is waits only for the apply, or not at all.
            Ok(Next::WaitForEntry { index, .. }) if index <= self.applied_index => {
                let _ = reply.send(Ok(AdminReply::Changed { index }));
            }
            Ok(Next::WaitForEntry { index, .. }) if index <= self.handed_to_apply => {
                self.admin.track_apply(index, reply, deadline);
            }
            Ok(Next::WaitForEntry { index, term }) => {
                self.admin.track_change(index, term, reply, deadline);
            }
            Ok(Next::WaitForLeader { goal, within }) => {
                self.admin
                    .track_transfer(goal, reply, Instant::now() + within);
            }
            Err(Refused::Core(e)) if self.requests.worth_parking(&e) => {
                self.requests
                    .park(ClientRequest::Admin { req, reply }, deadline);
            }
            Err(Refused::Core(e)) => {
                let e = refused(&e, self.leader_client_addr().as_deref());
                let _ = reply.send(Err(e));
            }
            Err(Refused::Other(e)) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn act_on(&mut self, req: AdminRequest) -> Result<Next, Refused> {
        let membership = self.core.membership().clone();
        match req {
            AdminRequest::ListMembers => Ok(Next::Answer(AdminReply::Members(self.member_list()))),
            AdminRequest::AddLearner { id, addrs } => {
                if membership.is_learner(id) && self.member_addrs(id).as_ref() == Some(&addrs) {
                    return self.wait_for_last_entry();
                }
                self.propose_change(&[MemberChange::AddLearner(id)], Some((id, addrs)))
            }
            AdminRequest::Promote { id } => {
                if membership.voters.contains(&id) {
                    return self.wait_for_last_entry();
                }
                self.learner_ready(id)?;
                self.propose_change(&[MemberChange::AddVoter(id)], None)
            }
            AdminRequest::Remove { id } => {
                if !membership.contains(id) {
                    return self.wait_for_last_entry();
                }
                self.propose_change(&[MemberChange::Remove(id)], None)
            }
            AdminRequest::UpdateAddrs { id, addrs } => {
                if !membership.contains(id) {
                    return Err(failed(format!("node {id} is not a member")));
                }
                if self.member_addrs(id).as_ref() == Some(&addrs) {
                    return self.wait_for_last_entry();
                }
                self.propose_change(&[], Some((id, addrs)))
            }
            AdminRequest::TransferLeader { to } => self.transfer_leader(to),
            AdminRequest::HandOffLeadership => Ok(self.hand_off_leadership()),
        }
    }

    /// Proposes the change; the reply waits for its entry.
    fn propose_change(
        &mut self,
        changes: &[MemberChange],
        new_addrs: Option<(NodeId, MemberAddrs)>,
    ) -> Result<Next, Refused> {
        let context = match new_addrs {
            Some((id, addrs)) => MemberContext {
                addrs: [(id, addrs)].into(),
            }
            .encode(),
            None => Bytes::new(),
        };
        let index = self.core.propose_conf_change(changes, context)?;
        let term = self.core.term();
        Ok(Next::WaitForEntry { index, term })
    }

    /// The operator asked for what the configuration in force already is (perhaps by an
    /// earlier try whose answer was lost): the reply waits for whatever entry is last now to
    /// be applied, which brings any change still on its way into effect. Only a leader knows
    /// its log to be the one that commits.
    fn wait_for_last_entry(&self) -> Result<Next, Refused> {
        if self.core.role() != Role::Leader {
            return Err(Refused::Core(ProposeError::NotLeader {
                leader_hint: self.core.leader(),
            }));
        }
        Ok(Next::WaitForEntry {
            index: self.core.last_index(),
            term: self.core.last_term(),
        })
    }

    /// Refuses to promote `id` unless it is a learner close enough behind the leader.
    fn learner_ready(&self, id: NodeId) -> Result<(), Refused> {
        if !self.core.membership().is_learner(id) {
            return Err(failed(format!(
                "node {id} is not a learner; add it with `member add` first"
            )));
        }
        let Some(progress) = self.core.peer_progress(id) else {
            // Not the leader: the proposal is refused with the usual redirection.
            return Ok(());
        };
        // A learner never heard from (not started yet, or down) is not ready however short
        // the log is: promoting it would add a voter that cannot vote.
        if !progress.recently_active || progress.match_index == 0 {
            return Err(failed(format!(
                "learner not ready: node {id} has not been heard from recently (is it running? \
                 start it with `kvstore serve --id {id} ... --join ...`); retry once it has \
                 caught up"
            )));
        }
        let last = self.core.last_index();
        let lag = last.saturating_sub(progress.match_index);
        if lag > LEARNER_READY_LAG {
            return Err(failed(format!(
                "learner not ready: node {id} has the leader's log up to {} of {last} ({lag} \
                 entries behind; at most {LEARNER_READY_LAG} may be); retry when it has caught up",
                progress.match_index
            )));
        }
        Ok(())
    }

    fn transfer_leader(&mut self, to: NodeId) -> Result<Next, Refused> {
        if self.core.role() == Role::Leader && to == self.cfg.id {
            return Ok(Next::Answer(AdminReply::LeaderIs(to)));
        }
        if self.core.role() == Role::Leader && !self.core.membership().voters.contains(&to) {
            return Err(failed(format!(
                "node {to} is not a voter; only a voter can lead"
            )));
        }
        self.core.transfer_leader(to)?;
        // The core gives up after an election timeout; a randomized one is up to twice that.
        Ok(Next::WaitForLeader {
            goal: TransferGoal::To(to),
            within: self.election_timeout() * 2,
        })
    }

    fn hand_off_leadership(&mut self) -> Next {
        let Some(to) = self.hand_off_target() else {
            return Next::Answer(AdminReply::Unchanged(
                "not the leader, or no other voter to hand off to".into(),
            ));
        };
        match self.core.transfer_leader(to) {
            Ok(()) => Next::WaitForLeader {
                goal: TransferGoal::AwayFrom(self.cfg.id),
                within: self.election_timeout(),
            },
            Err(e) => Next::Answer(AdminReply::Unchanged(e.to_string())),
        }
    }

    fn election_timeout(&self) -> Duration {
        self.cfg.tick * self.cfg.election_ticks
    }

    /// If this node leads: the voter (of the configuration in force, not this node) with the
    /// highest match index; ties go to the lowest id.
    pub(super) fn hand_off_target(&self) -> Option<NodeId> {
        if self.core.role() != Role::Leader {
            return None;
        }
        let membership = self.core.membership();
        let mut best: Option<(Index, NodeId)> = None;
        for &id in membership.voters.iter().chain(&membership.outgoing) {
            if id == self.cfg.id || !membership.voters.contains(&id) {
                continue;
            }
            let matched = self.core.peer_progress(id).map_or(0, |p| p.match_index);
            if best.is_none_or(|(m, _)| matched > m) {
                best = Some((matched, id));
            }
        }
        best.map(|(_, id)| id)
    }

    fn member_list(&self) -> MemberList {
        let membership = self.core.membership();
        let leading = self.core.role() == Role::Leader;
        let last = self.core.last_index();
        let members = membership
            .members()
            .into_iter()
            .map(|id| {
                let addrs = self.member_addrs(id);
                let matched = if id == self.cfg.id && leading {
                    Some(last)
                } else if leading {
                    self.core.peer_progress(id).map(|p| p.match_index)
                } else {
                    None
                };
                MemberStatus {
                    id,
                    peer_addr: addrs
                        .as_ref()
                        .map(|a| a.peer_addr.clone())
                        .unwrap_or_default(),
                    client_addr: addrs.map(|a| a.client_addr).unwrap_or_default(),
                    role: MemberRole::of(membership, id),
                    match_index: matched,
                    lag: matched.map(|m| last.saturating_sub(m)),
                }
            })
            .collect();
        MemberList {
            answered_by: self.cfg.id,
            leader: self.core.leader(),
            joint: membership.is_joint(),
            members,
            ranges_behind: self.ranges_behind.clone(),
        }
    }

    /// A member's addresses, as this node's address book has them.
    fn member_addrs(&self, id: NodeId) -> Option<MemberAddrs> {
        self.members.addresses().remove(&id)
    }

    fn leader_client_addr(&self) -> Option<String> {
        self.members.client_addr(self.core.leader()?)
    }
}
