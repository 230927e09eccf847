//! The two commands that split a range, as the log applies them.
//!
//! **Range ids** come from a counter in the first range's metadata (`0x00 'n'`, the next id to
//! hand out, 2 when absent): [`Op::AllocateRangeId`] answers the next id and raises the
//! counter in the same batch, so an id is never handed out twice, across restarts and across
//! the first range's own splits (it keeps its id and its metadata as the left half). Any
//! other range refuses it: two counters would hand out the same ids.
//!
//! **A split** ([`Op::Split`]) is decided by [`Split::apply_to`] on the range's descriptor at
//! its place in the log, the same on every replica; a refusal applies nothing. A split that
//! passes writes, into the entry's own apply batch (so with the applied index, atomically):
//! the parent's descriptor shrunk to the left half; the child's descriptor, layout row,
//! applied record at [`RANGE_INITIAL_INDEX`]/[`RANGE_INITIAL_TERM`] with the configuration in
//! force, member addresses, sessions (a client's retry may reach either half), counts, log
//! time and WATCH rows; and the index rows (expiry and scan) of the keys from the split key
//! on, moved from the parent's prefix to the child's. User rows stay where they are: they are
//! keyed by the user key alone. The child's counts are those of the index rows moved: every
//! key has one scan row and every key with a deadline one expiry row, which is what the
//! counts count (expired keys not yet swept included).

use raft_core::{Index, Term};

use super::keyspace::{decode_clock, KeyCounts, Txn};
use super::records::{encode_applied, encode_member_addrs, encode_session, Session};
use super::row_keys::{StateKeys, EXPIRY, HASHED};
use super::KvStateMachine;
use crate::codec;
use crate::command::CommandResult;
use crate::error::Result;
use crate::ranges::{RangeDescriptor, RangeId, Split, FIRST_RANGE};

/// The applied index a range created by a split starts at, and the index of its Raft log's
/// start (TiKV's choice of 5: above 0, so that the new group's log start is a real snapshot
/// point, and the same on every replica).
pub const RANGE_INITIAL_INDEX: Index = 5;
/// The term of that start, and the first term of the new range's Raft group.
pub const RANGE_INITIAL_TERM: Term = 5;

impl KvStateMachine {
    /// The ranges created by splits in the last call to [`KvStateMachine::apply`], in log
    /// order: the node opens each ([`KvStateMachine::open_range`] and the log's
    /// `RaftStorage::start_split_range`) once that apply has returned.
    pub fn created_ranges(&self) -> &[RangeDescriptor] {
        &self.created_ranges
    }

    pub(super) fn allocate_range_id(&mut self, t: &mut Txn) -> Result<CommandResult> {
        if !self.keys.is_first() {
            return Ok(CommandResult::Error(format!(
                "range ids are handed out by range {FIRST_RANGE}, not by range {}",
                self.range.id
            )));
        }
        let row = self.keys.next_range_id();
        let next: RangeId = match self.row(t, &row)? {
            None => FIRST_RANGE + 1,
            Some(v) => decode_clock(&v)
                .map_err(|e| self.corrupt(Some(t.index), format!("next range id: {e}")))?,
        };
        let (Ok(answer), Some(after)) = (i64::try_from(next), next.checked_add(1)) else {
            return Ok(CommandResult::Error("range ids are exhausted".into()));
        };
        let mut value = Vec::with_capacity(12);
        codec::put_u64(&mut value, after);
        codec::seal(&mut value);
        t.put(row, value);
        Ok(CommandResult::Value(answer))
    }

    pub(super) fn split(&mut self, t: &mut Txn, split: &Split) -> Result<CommandResult> {
        let (left, right) = match split.apply_to(&self.range) {
            Ok(halves) => halves,
            Err(refused) => return Ok(CommandResult::Error(refused.to_string())),
        };
        if right.id <= FIRST_RANGE {
            return Ok(CommandResult::Error(format!(
                "range id {} cannot name a new range",
                right.id
            )));
        }
        let child = StateKeys::of(right.id);
        if self.row(t, &child.descriptor())?.is_some() {
            // Ids come from one counter: a second range of one id is a bug upstream, and
            // writing over the first would destroy it. Stop here, loudly.
            return Err(self.corrupt(
                Some(t.index),
                format!(
                    "a split creates range {} but this database already holds it",
                    right.id
                ),
            ));
        }
        let moved = self.move_index_rows(t, &child, &split.at)?;
        t.counts.keys -= moved.keys;
        t.counts.volatile -= moved.volatile;
        t.put(self.keys.descriptor(), left.encode());
        self.write_child_rows(t, &child, &right, moved)?;
        self.range = left.clone();
        // The cache may hold keys the parent no longer owns; an image in steps would miss
        // the moved rows: both start again.
        self.key_meta.clear();
        self.image_in_progress = None;
        self.created_ranges.push(right.clone());
        Ok(CommandResult::Split { left, right })
    }

    /// Moves the index rows of the keys from `at` on to `child`'s prefix; returns what they
    /// count.
    fn move_index_rows(&mut self, t: &mut Txn, child: &StateKeys, at: &[u8]) -> Result<KeyCounts> {
        let mut moved = KeyCounts::default();
        let keys = self.keys.clone();
        for (tag, prefix) in [
            (HASHED, keys.hashed_prefix()),
            (EXPIRY, keys.expiry_prefix()),
        ] {
            // Bounded by the range's size, which splitting bounds.
            let rows = self.rows_from(t, &prefix, usize::MAX, |k| k.starts_with(&prefix))?;
            for (row, _) in rows {
                let Some((_, key)) = keys.index_entry(tag, &row) else {
                    return Err(self.corrupt(
                        Some(t.index),
                        format!("malformed index row {:02x?}", &row[..row.len().min(32)]),
                    ));
                };
                if key < at {
                    continue;
                }
                let Some(to) = child.rebased(&keys, &row) else {
                    continue;
                };
                if tag == HASHED {
                    moved.keys += 1;
                } else {
                    moved.volatile += 1;
                }
                t.delete(row);
                t.put(to, Vec::new());
            }
        }
        Ok(moved)
    }

    /// The child's own rows but its index rows.
    fn write_child_rows(
        &mut self,
        t: &mut Txn,
        child: &StateKeys,
        right: &RangeDescriptor,
        counts: KeyCounts,
    ) -> Result<()> {
        let members = t.members.clone().unwrap_or_else(|| self.members.clone());
        t.put(child.descriptor(), right.encode());
        t.put(child.layout(), vec![super::LAYOUT_RECORDS]);
        t.put(
            child.applied(),
            encode_applied(RANGE_INITIAL_INDEX, RANGE_INITIAL_TERM, &members.membership),
        );
        t.put(child.members(), encode_member_addrs(&members.addrs));
        for (client, s) in &self.sessions {
            // Older than anything the child's log will apply, so that the child evicts them
            // before its own (ties by client id, the same on every replica).
            let copy = Session {
                last_index: RANGE_INITIAL_INDEX,
                ..s.clone()
            };
            t.put(child.session(*client), encode_session(&copy));
        }
        t.put(child.counts(), counts.encode());
        t.put(child.clock(), super::keyspace::encode_clock(t.clock));
        // What WATCH remembers of removed keys holds for the child's keys too: a key watched
        // absent in the parent and checked in the child must still see a removal.
        let keys = self.keys.clone();
        let watch = keys.watch_prefix();
        let buckets = self.rows_from(t, &watch, usize::MAX, |k| k.starts_with(&watch))?;
        for (row, value) in buckets {
            if let Some(to) = child.rebased(&keys, &row) {
                t.put(to, value.to_vec());
            }
        }
        if let Some(v) = self.row(t, &keys.flushed())? {
            t.put(child.flushed(), v.to_vec());
        }
        Ok(())
    }
}
