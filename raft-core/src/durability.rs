//! Durability: the writes handed to the driver and not yet reported durable, and what waits
//! for them. A message that promises durability (a vote grant, an append acknowledgement) and a
//! candidate's own vote are held until every write asked for so far is reported durable.

use crate::message::{Message, MessageBody};
use crate::node::RawNode;
use crate::ready::{Persist, SnapshotWrite, WriteId};
use crate::types::{Index, NodeId, Role, Term};

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
pub(crate) struct OutstandingWrite {
    pub(crate) id: WriteId,
    pub(crate) last_entry: Option<(Index, Term)>,
    pub(crate) held: Vec<Held>,
}

impl RawNode {
    /// The driver finished the write `id` (and, since writes complete in order, every earlier
    /// one). An id that names no outstanding write is stale and ignored.
    pub fn on_persisted(&mut self, id: WriteId) {
        let Some(pos) = self.writes.iter().position(|w| w.id == id) else {
            tracing::debug!(id = self.id, term = self.term, write = ?id, "ignoring stale persistence ack");
            return;
        };
        for _ in 0..=pos {
            let mut write = self.writes.pop_front().expect("pos names a queued write");
            if let Some((index, term)) = write.last_entry {
                self.log.persisted_to(index, term);
            }
            for held in write.held.drain(..) {
                self.release(held);
            }
            self.reuse_held_buffer(write.held);
        }
        debug_assert!(
            self.writes.front().is_none_or(|w| w.id.seq > id.seq),
            "every write up to the one reported is done"
        );
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.debug_assert_invariants();
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

    /// Keeps an emptied list of held items for the next write, so that a follower's steady
    /// stream of acknowledgements does not allocate one list per write.
    fn reuse_held_buffer(&mut self, emptied: Vec<Held>) {
        debug_assert!(emptied.is_empty());
        if self.held_for_next_write.capacity() == 0 {
            self.held_for_next_write = emptied;
        }
    }

    pub(crate) fn release(&mut self, held: Held) {
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

    pub(crate) fn hard_state_changed(&self) -> bool {
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
    pub(crate) fn next_write(&mut self) -> (Option<SnapshotWrite>, Option<Persist>) {
        let snapshot_write = self.log.take_unwritten_snapshot().map(|snapshot| {
            let id = self.next_write_id();
            self.writes.push_back(OutstandingWrite {
                id,
                last_entry: Some((snapshot.index, snapshot.term)),
                held: Vec::new(),
            });
            SnapshotWrite { id, snapshot }
        });
        let entries = self.spares.entries_from(self.log.take_unpersisted());
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
}
