//! Operator requests between the core's answer and the client's: a membership change waits for
//! its entry to commit (and, if that entry made the configuration joint, for the entry that
//! leaves the joint state), then for the apply worker; a leadership transfer waits for the new
//! leader. Pure bookkeeping, fed by the group: committed entries, applied indexes, role
//! changes, the clock.

use raft_core::{ConfChangeEntry, Entry, EntryKind, Index, NodeId, Role, Term};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::admin::AdminReply;
use crate::request::RequestError;

pub type AdminAnswer = oneshot::Sender<Result<AdminReply, RequestError>>;

/// What a membership change still waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    /// Its entry, `(index, term)`, to be handed out committed.
    Commit { index: Index, term: Term },
    /// Its entry made the configuration joint: the next conf-change entry that leaves it.
    Leave { after: Index },
    /// The entry at `index` is committed: the apply worker to apply it.
    Apply { index: Index },
}

struct ChangeWaiter {
    awaiting: Awaiting,
    reply: AdminAnswer,
    deadline: Instant,
}

/// Whom a leadership transfer waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferGoal {
    /// This node leads (`RAFT.TRANSFER-LEADER`).
    To(NodeId),
    /// Any other node leads, or the deadline passes (a graceful stop's hand-off).
    AwayFrom(NodeId),
}

struct TransferWaiter {
    goal: TransferGoal,
    reply: AdminAnswer,
    deadline: Instant,
}

#[derive(Default)]
pub struct AdminWaits {
    changes: Vec<ChangeWaiter>,
    transfers: Vec<TransferWaiter>,
}

impl AdminWaits {
    /// A change proposed as the entry `(index, term)` (or, when the configuration already was
    /// what the operator asked, the last entry then, so that the answer waits for whatever
    /// change brought it to be applied).
    pub fn track_change(
        &mut self,
        index: Index,
        term: Term,
        reply: AdminAnswer,
        deadline: Instant,
    ) {
        self.changes.push(ChangeWaiter {
            awaiting: Awaiting::Commit { index, term },
            reply,
            deadline,
        });
    }

    /// A change whose entry at `index` was already handed out committed: only its apply is
    /// awaited.
    pub fn track_apply(&mut self, index: Index, reply: AdminAnswer, deadline: Instant) {
        self.changes.push(ChangeWaiter {
            awaiting: Awaiting::Apply { index },
            reply,
            deadline,
        });
    }

    pub fn track_transfer(&mut self, goal: TransferGoal, reply: AdminAnswer, deadline: Instant) {
        self.transfers.push(TransferWaiter {
            goal,
            reply,
            deadline,
        });
    }

    #[cfg(test)]
    fn transferring(&self) -> bool {
        !self.transfers.is_empty()
    }

    /// Entries handed to the apply worker, committed, in log order.
    pub fn committed(&mut self, entries: &[Entry]) {
        if self.changes.is_empty() {
            return;
        }
        for waiter in std::mem::take(&mut self.changes) {
            let awaiting = advance(waiter.awaiting, entries);
            match awaiting {
                Err(lost) => {
                    let _ = waiter.reply.send(Err(RequestError::TryAgain(lost)));
                }
                Ok(awaiting) => self.changes.push(ChangeWaiter { awaiting, ..waiter }),
            }
        }
    }

    /// The apply worker applied entries up to `applied_index`.
    pub fn applied(&mut self, applied_index: Index) {
        for waiter in self.changes.extract_if(
            ..,
            |w| matches!(w.awaiting, Awaiting::Apply { index } if index <= applied_index),
        ) {
            let Awaiting::Apply { index } = waiter.awaiting else {
                continue;
            };
            let _ = waiter.reply.send(Ok(AdminReply::Changed { index }));
        }
    }

    /// The role or the leader changed.
    pub fn role_changed(&mut self, role: Role, leader: Option<NodeId>) {
        for waiter in self.transfers.extract_if(.., |w| match w.goal {
            TransferGoal::To(to) => leader == Some(to),
            TransferGoal::AwayFrom(me) => role != Role::Leader && leader.is_some_and(|l| l != me),
        }) {
            let _ = waiter
                .reply
                .send(Ok(AdminReply::LeaderIs(leader.unwrap_or_default())));
        }
    }

    /// Answers every request whose deadline has passed.
    pub fn expire(&mut self, now: Instant) {
        for waiter in self.changes.extract_if(.., |w| w.deadline <= now) {
            let _ = waiter.reply.send(Err(RequestError::Timeout(
                "the membership change was proposed but not applied within the request timeout; \
                 run `member list` to see whether it took effect"
                    .into(),
            )));
        }
        for waiter in self.transfers.extract_if(.., |w| w.deadline <= now) {
            let reply = match waiter.goal {
                TransferGoal::To(to) => Err(RequestError::Failed(format!(
                    "leadership transfer to node {to} did not complete in time (is it up and caught up?)"
                ))),
                // A hand-off that did not happen: the node stops anyway.
                TransferGoal::AwayFrom(_) => Ok(AdminReply::Unchanged(
                    "leadership was not handed off in time".into(),
                )),
            };
            let _ = waiter.reply.send(reply);
        }
    }

    /// The node stops: every request still waiting is answered.
    pub fn shut_down(self) {
        const WHY: &str = "the node is shutting down";
        for w in self.changes {
            let _ = w.reply.send(Err(RequestError::Timeout(WHY.into())));
        }
        for w in self.transfers {
            let _ = w.reply.send(Err(RequestError::Failed(WHY.into())));
        }
    }
}

/// How far the committed `entries` move a waiter; an error (for the client) if its entry lost
/// its place in the log.
fn advance(mut awaiting: Awaiting, entries: &[Entry]) -> Result<Awaiting, String> {
    for entry in entries {
        awaiting = match awaiting {
            Awaiting::Commit { index, term } if entry.index == index => {
                if entry.term != term {
                    return Err(format!(
                        "the membership change lost its place in the log to a new leader \
                         (index {index}); it was not applied, retry it"
                    ));
                }
                if joint_conf_change(entry) == Some(true) {
                    Awaiting::Leave { after: index }
                } else {
                    Awaiting::Apply { index }
                }
            }
            Awaiting::Leave { after } if entry.index > after => {
                if joint_conf_change(entry) == Some(false) {
                    Awaiting::Apply { index: entry.index }
                } else {
                    awaiting
                }
            }
            other => other,
        };
    }
    Ok(awaiting)
}

/// For a conf-change entry, whether the configuration it sets is joint; `None` for others.
fn joint_conf_change(entry: &Entry) -> Option<bool> {
    if entry.kind != EntryKind::ConfChange {
        return None;
    }
    ConfChangeEntry::decode(&entry.payload)
        .ok()
        .map(|c| c.membership.is_joint())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use bytes::Bytes;
    use raft_core::Membership;

    use super::*;

    fn conf(term: Term, index: Index, voters: &[NodeId], outgoing: &[NodeId]) -> Entry {
        let membership = Membership {
            voters: voters.iter().copied().collect(),
            outgoing: outgoing.iter().copied().collect(),
            learners: BTreeSet::new(),
        };
        let payload = ConfChangeEntry {
            membership,
            context: Bytes::new(),
        }
        .encode();
        Entry::new(term, index, EntryKind::ConfChange, payload)
    }

    fn normal(term: Term, index: Index) -> Entry {
        Entry::new(term, index, EntryKind::Normal, Bytes::from_static(b"x"))
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    type Answer = oneshot::Receiver<Result<AdminReply, RequestError>>;

    fn change(waits: &mut AdminWaits, index: Index, term: Term) -> Answer {
        let (tx, rx) = oneshot::channel();
        waits.track_change(index, term, tx, later());
        rx
    }

    #[test]
    fn a_learner_change_is_answered_once_its_entry_is_applied() {
        let mut waits = AdminWaits::default();
        let mut answer = change(&mut waits, 5, 2);
        waits.committed(&[normal(2, 4), conf(2, 5, &[1, 2, 3], &[])]);
        waits.applied(4);
        assert!(answer.try_recv().is_err(), "not applied yet");
        waits.applied(5);
        assert_eq!(answer.try_recv(), Ok(Ok(AdminReply::Changed { index: 5 })));
    }

    #[test]
    fn a_voter_change_waits_for_the_entry_leaving_the_joint_configuration() {
        let mut waits = AdminWaits::default();
        let mut answer = change(&mut waits, 5, 2);
        waits.committed(&[conf(2, 5, &[1, 2, 4], &[1, 2, 3])]);
        waits.applied(5);
        assert!(answer.try_recv().is_err(), "still joint");
        waits.committed(&[normal(2, 6), conf(3, 7, &[1, 2, 4], &[])]);
        waits.applied(6);
        assert!(
            answer.try_recv().is_err(),
            "the leave entry is not applied yet"
        );
        waits.applied(7);
        assert_eq!(answer.try_recv(), Ok(Ok(AdminReply::Changed { index: 7 })));
    }

    #[test]
    fn a_change_whose_entry_was_replaced_is_answered_tryagain() {
        let mut waits = AdminWaits::default();
        let mut answer = change(&mut waits, 5, 2);
        waits.committed(&[normal(3, 5)]);
        assert!(matches!(
            answer.try_recv(),
            Ok(Err(RequestError::TryAgain(_)))
        ));
    }

    #[test]
    fn transfers_are_answered_by_the_new_leader_or_at_their_deadline() {
        let mut waits = AdminWaits::default();
        let (tx, mut to_three) = oneshot::channel();
        waits.track_transfer(TransferGoal::To(3), tx, later());
        let (tx, mut away) = oneshot::channel();
        waits.track_transfer(TransferGoal::AwayFrom(1), tx, Instant::now());
        assert!(waits.transferring());
        waits.role_changed(Role::Follower, Some(2));
        assert!(to_three.try_recv().is_err(), "node 2 is not the target");
        assert_eq!(away.try_recv(), Ok(Ok(AdminReply::LeaderIs(2))));
        waits.expire(Instant::now() + Duration::from_secs(61));
        assert!(matches!(
            to_three.try_recv(),
            Ok(Err(RequestError::Failed(_)))
        ));
        assert!(!waits.transferring());
    }

    #[test]
    fn a_change_without_an_outcome_times_out_as_unknown() {
        let mut waits = AdminWaits::default();
        let mut answer = change(&mut waits, 5, 2);
        waits.expire(Instant::now() + Duration::from_secs(61));
        assert!(matches!(
            answer.try_recv(),
            Ok(Err(RequestError::Timeout(_)))
        ));
    }
}
