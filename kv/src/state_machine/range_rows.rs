//! The range a state machine serves: its descriptor row, the user rows it owns, and the check
//! that refuses, at apply, a command naming a key outside its bounds.
//!
//! The descriptor is state like the applied record: a metadata row (`row_keys.rs`) changed only
//! in an apply batch, the same on every replica at the same index. The first range has no row
//! while it owns every key at the initial epoch ([`RangeDescriptor::whole`]), so that a data
//! directory of one range is written as before ranges existed; another range's row is written
//! when it is created.

use bytes::Bytes;
use rusty_leveldb::WriteBatch;

use super::records::{encode_applied, LAYOUT_RECORDS};
use super::row_keys::{user_row, USER};
use super::KvStateMachine;
use crate::command::{Command, CommandResult, Op};
use crate::error::Result;
use crate::query::Query;
use crate::ranges::RangeDescriptor;

/// A batch entry's command as decoded for apply (an undecodable one is refused alike everywhere).
pub(super) type DecodedCommand = std::result::Result<Command, crate::DecodeError>;

impl KvStateMachine {
    /// Takes the stored descriptor, if there is one.
    pub(super) fn load_descriptor(&mut self) -> Result<()> {
        let stored = self.db().get(&self.keys.descriptor())?;
        let Some(v) = stored else {
            return Ok(());
        };
        let d = RangeDescriptor::decode(&v)
            .map_err(|e| self.corrupt(None, format!("range descriptor: {e}")))?;
        if d.id != self.range.id {
            return Err(self.corrupt(
                None,
                format!(
                    "the descriptor row of range {} describes range {}",
                    self.range.id, d.id
                ),
            ));
        }
        self.range = d;
        Ok(())
    }

    /// A range other than the first that has no rows yet gets its descriptor, its layout and an
    /// applied record at index 0, in one synced batch.
    pub(super) fn create_range_rows(&mut self) -> Result<()> {
        if self.db().get(&self.keys.descriptor())?.is_some() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.put(&self.keys.descriptor(), &self.range.encode());
        batch.put(&self.keys.layout(), &[LAYOUT_RECORDS]);
        batch.put(
            &self.keys.applied(),
            &encode_applied(0, 0, &raft_core::Membership::default()),
        );
        self.db().write(batch, true)
    }

    /// Replaces the descriptor (same id, higher epoch), synced, with the applied record as it
    /// is. Stands in for a split's apply batch, which will carry the new descriptor with the
    /// rest of its writes.
    #[cfg(test)]
    pub(crate) fn record_descriptor(&mut self, d: RangeDescriptor) -> Result<()> {
        if d.id != self.range.id || d.epoch <= self.range.epoch {
            return Err(crate::error::Error::InvalidRequest(format!(
                "descriptor {d:?} does not follow {:?}",
                self.range
            )));
        }
        let mut batch = WriteBatch::default();
        batch.put(&self.keys.descriptor(), &d.encode());
        batch.put(
            &self.keys.applied(),
            &encode_applied(
                self.applied_index,
                self.applied_term,
                &self.members.membership,
            ),
        );
        self.db().write(batch, true)?;
        self.range = d;
        Ok(())
    }

    /// Snapshots image and replace the whole database (`crate::snapshot`): only the first range
    /// may take them, and only while no other range shares the database.
    pub(crate) fn check_whole_directory(&self, what: &str) -> Result<()> {
        // A first range that has split holds its children's rows in the directory even while
        // no child is open.
        let split = self.range.end.is_some();
        if !self.keys.is_first() || self.shares_database() || split {
            return Err(crate::error::Error::InvalidRequest(format!(
                "{}: cannot {what} of range {}: the whole-directory snapshot is for the first \
                 range alone, with no other range in its database",
                self.path.display(),
                self.range.id
            )));
        }
        Ok(())
    }

    /// Where a walk of this range's user rows from `start_row` (a user row) begins, and the row
    /// it must stop before.
    pub(super) fn owned_user_rows(&self, start_row: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        let first = user_row(&self.range.start);
        let end = match &self.range.end {
            Some(end) => user_row(end),
            None => vec![USER + 1],
        };
        (start_row.max(first), end)
    }

    /// The refusal of a command naming a key this range does not own at its place in the log;
    /// `None` if every key is the range's. Every replica holds the same descriptor at the same
    /// index, so every replica refuses alike.
    pub(super) fn refusal(&self, op: &Op) -> Option<CommandResult> {
        if self.owns_every_key() {
            return None;
        }
        let mut keys = Vec::new();
        named_keys(op, &mut keys);
        self.refusal_of(keys)
    }

    /// [`KvStateMachine::refusal`] for a read.
    pub(super) fn query_refusal(&self, q: &Query) -> Option<CommandResult> {
        if self.owns_every_key() {
            return None;
        }
        let mut keys = Vec::new();
        query_keys(q, &mut keys);
        self.refusal_of(keys)
    }

    /// A range owning every key (that of a cluster that never split) refuses nothing: the
    /// commands' keys need not be listed.
    fn owns_every_key(&self) -> bool {
        #[cfg(feature = "deliberate-bugs")]
        if self.ignores_ownership {
            return true;
        }
        self.range.start.is_empty() && self.range.end.is_none()
    }

    /// Switches on the deliberate bug of applying commands for keys outside the range (a
    /// range that no longer owns a key still applies what is routed to it), for the
    /// simulator's teeth test.
    #[cfg(feature = "deliberate-bugs")]
    pub fn ignore_ownership(&mut self, on: bool) {
        self.ignores_ownership = on;
    }

    /// Switches on the deliberate bug of applying a split ahead of the entries before it in
    /// the same batch (a replica that applies a split out of the log's order), for the
    /// simulator's teeth test.
    #[cfg(feature = "deliberate-bugs")]
    pub fn apply_splits_first(&mut self, on: bool) {
        self.splits_first = on;
    }

    /// The order in which a batch's decoded commands are applied: the log's.
    #[cfg(not(feature = "deliberate-bugs"))]
    pub(super) fn apply_order(
        &self,
        commands: &[Option<DecodedCommand>],
    ) -> std::ops::Range<usize> {
        0..commands.len()
    }

    /// The order in which a batch's decoded commands are applied: the log's, unless the
    /// deliberate bug of applying splits first is on.
    #[cfg(feature = "deliberate-bugs")]
    pub(super) fn apply_order(
        &self,
        commands: &[Option<DecodedCommand>],
    ) -> std::vec::IntoIter<usize> {
        let mut order: Vec<usize> = (0..commands.len()).collect();
        if self.splits_first {
            order.sort_by_key(
                |k| !matches!(&commands[*k], Some(Ok(c)) if matches!(c.op, Op::Split(_))),
            );
        }
        order.into_iter()
    }

    /// Where an automatic split cuts this range: its middle key (half of its keys come before
    /// it), or None while it holds fewer than two keys. Reads the keys from the range's start
    /// to the middle, so it costs a scan of half the range: asked once per split.
    pub fn split_point(&mut self) -> Result<Option<Bytes>> {
        self.check_poison()?;
        let keys = self.counts.keys;
        if keys < 2 {
            return Ok(None);
        }
        let (from, end) = self.owned_user_rows(vec![USER]);
        let (mut before, mut middle) = (0u64, None);
        self.db().scan_from(&from, |k, _| {
            if k >= end.as_slice() {
                return Ok(false);
            }
            if before == keys / 2 {
                middle = Some(Bytes::copy_from_slice(&k[1..]));
                return Ok(false);
            }
            before += 1;
            Ok(true)
        })?;
        // The range's first key cannot start a new range (the left half would be empty).
        Ok(middle.filter(|k| k.as_ref() > self.range.start.as_ref()))
    }

    fn refusal_of(&self, keys: Vec<&[u8]>) -> Option<CommandResult> {
        let refused = self.range.check_owns(keys).err()?;
        Some(CommandResult::NotOwned {
            range: refused.range,
            epoch: refused.epoch,
        })
    }
}

/// Every key `op` reads or writes (patterns are not keys: KEYS and SCAN walk the range's own).
fn named_keys<'a>(op: &'a Op, keys: &mut Vec<&'a [u8]>) {
    match op {
        Op::Set { key, .. }
        | Op::SetWith { key, .. }
        | Op::Append { key, .. }
        | Op::Delete { key }
        | Op::Incr { key, .. }
        | Op::GetDel { key }
        | Op::Expire { key, .. }
        | Op::Cas { key, .. } => keys.push(key),
        Op::DeleteMany { keys: ks } => keys.extend(ks.iter().map(|k| k.as_ref())),
        Op::MSet { pairs, .. } => keys.extend(pairs.iter().map(|(k, _)| k.as_ref())),
        Op::Rename { from, to, .. } => keys.extend([from.as_ref(), to.as_ref()]),
        Op::Multi { watches, ops } => {
            keys.extend(watches.iter().map(|(k, _)| k.as_ref()));
            for op in ops {
                named_keys(op, keys);
            }
        }
        Op::Query(q) => query_keys(q, keys),
        // A split names its range, which `Split::apply_to` checks.
        Op::Noop | Op::FlushAll | Op::AllocateRangeId | Op::Split(_) => {}
    }
}

fn query_keys<'a>(q: &'a Query, keys: &mut Vec<&'a [u8]>) {
    match q {
        Query::Get { key }
        | Query::Ttl { key, .. }
        | Query::StrLen { key }
        | Query::Type { key } => keys.push(key),
        Query::MGet { keys: ks } | Query::Exists { keys: ks } | Query::Versions { keys: ks } => {
            keys.extend(ks.iter().map(|k| k.as_ref()))
        }
        Query::Keys { .. } | Query::Scan { .. } | Query::DbSize => {}
    }
}
