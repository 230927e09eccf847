//! The range a state machine serves: its descriptor row and the user rows it owns.
//!
//! The descriptor is state like the applied record: a metadata row (`row_keys.rs`) changed only
//! in an apply batch, the same on every replica at the same index. The first range has no row
//! while it owns every key at the initial epoch ([`RangeDescriptor::whole`]), so that a data
//! directory of one range is written as before ranges existed; another range's row is written
//! when it is created.

use rusty_leveldb::WriteBatch;

use super::records::{encode_applied, LAYOUT_RECORDS};
use super::row_keys::{user_row, USER};
use super::KvStateMachine;
use crate::error::Result;
use crate::ranges::RangeDescriptor;

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
        if !self.keys.is_first() || self.shares_database() {
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
    /// it must stop before (`None`: the end of the user rows).
    pub(super) fn owned_user_rows(&self, start_row: Vec<u8>) -> (Vec<u8>, Option<Vec<u8>>) {
        let first = user_row(&self.range.start);
        let end = match &self.range.end {
            Some(end) => Some(user_row(end)),
            None => Some(vec![USER + 1]),
        };
        (start_row.max(first), end)
    }
}
