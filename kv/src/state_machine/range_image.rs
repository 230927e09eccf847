//! A range's snapshot image in the shared database, and its crash-safe install.
//!
//! **The image** ([`KvStateMachine::range_image`]) is the range's own rows (its metadata,
//! descriptor included, and its index rows: `row_keys.rs`) and the user rows inside its bounds,
//! as stored, in key order. It is read in one go: ranges are kept small by splitting, so a
//! range's image is bounded by the split size (the whole-directory image of `crate::snapshot`,
//! built in steps, stays for the first range alone).
//!
//! **The install** ([`KvStateMachine::install_range_image`]) replaces the range's rows with the
//! image's without touching any other range's, in batches of a bounded number of rows:
//! 1. the image rows are staged under the range's staging prefix (`0x05 | range id | 0x01 |
//!    row`), leftovers of an earlier attempt removed first;
//! 2. the install marker (`0x05 | range id | 0x00`: the bounds whose user rows go, those of the
//!    range before and after the install together) is written, synced: **the commit point**;
//! 3. the range's own rows and its user rows inside the marker's bounds are deleted, the staged
//!    rows copied to their places, the marker removed (synced), and the staged rows deleted.
//!
//! Opening the range ([`KvStateMachine::open_with`], [`KvStateMachine::open_range`]) finishes an
//! install whose marker it finds (step 3 again from the start: it reads only the marker and the
//! staged rows, which it leaves until the end) and drops staged rows without a marker (an
//! install that never reached its commit point: the range keeps its old state).

use bytes::Bytes;
use raft_core::{Index, Term};
use rusty_leveldb::WriteBatch;

use super::records::decode_applied;
use super::row_keys::{user_row, USER};
use super::KvStateMachine;
use crate::error::{Error, Result};
use crate::ranges::{RangeDescriptor, FIRST_RANGE};

/// Rows per batch of an install's steps.
pub const RANGE_INSTALL_BATCH_ROWS: usize = 1024;

/// A range's rows at one applied index (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeImage {
    pub descriptor: RangeDescriptor,
    pub applied_index: Index,
    pub applied_term: Term,
    /// Every row, as stored, in key order.
    pub rows: Vec<(Vec<u8>, Bytes)>,
}

impl KvStateMachine {
    /// The range's image at its applied index.
    pub fn range_image(&mut self) -> Result<RangeImage> {
        self.check_poison()?;
        let (user_from, user_to) = self.owned_user_rows(vec![USER]);
        let mut slices = self.keys.own_slices();
        slices.push((user_from, user_to));
        slices.sort();
        let mut rows = Vec::new();
        for (from, to) in slices {
            self.db().scan_from(&from, |k, v| {
                if k >= to.as_slice() {
                    return Ok(false);
                }
                rows.push((k.to_vec(), v));
                Ok(true)
            })?;
        }
        Ok(RangeImage {
            descriptor: self.range.clone(),
            applied_index: self.applied_index,
            applied_term: self.applied_term,
            rows,
        })
    }

    /// Replaces the range's state with `image`'s (module docs), then reloads it.
    pub fn install_range_image(&mut self, image: &RangeImage) -> Result<()> {
        self.install_range_image_in(image, RANGE_INSTALL_BATCH_ROWS)
    }

    pub(crate) fn install_range_image_in(
        &mut self,
        image: &RangeImage,
        batch_rows: usize,
    ) -> Result<()> {
        self.check_poison()?;
        if self.image_in_progress.is_some() || self.pending_install.is_some() {
            return Err(Error::InvalidRequest(format!(
                "{}: a whole-directory snapshot is being built or installed",
                self.path.display()
            )));
        }
        self.check_image(image)?;
        let batch_rows = batch_rows.max(1);
        let result = self.stage_and_commit(image, batch_rows).and_then(|()| {
            self.finish_range_install(batch_rows)?;
            self.reload()
        });
        if let Err(e) = &result {
            // Memory may no longer match the disk: the owner reopens, which finishes or drops
            // the install.
            self.poisoned = Some(e.to_string());
        }
        result
    }

    /// An image must be of this range, with its applied record, and hold only the rows of its
    /// own range and bounds.
    fn check_image(&self, image: &RangeImage) -> Result<()> {
        let bad = |detail: String| {
            Err(Error::InvalidRequest(format!(
                "{}: range image of range {}: {detail}",
                self.path.display(),
                image.descriptor.id
            )))
        };
        if image.descriptor.id != self.range.id {
            return bad(format!("this is range {}", self.range.id));
        }
        let mut previous: Option<&[u8]> = None;
        let own_slices = self.keys.own_slices();
        let applied = self.keys.applied();
        let mut saw_applied = false;
        for (k, v) in &image.rows {
            if previous.is_some_and(|p| p >= k.as_slice()) {
                return bad(format!("rows out of order at {k:02x?}"));
            }
            previous = Some(k);
            let own = own_slices.iter().any(|(from, to)| k >= from && k < to);
            let user = k.first() == Some(&USER) && image.descriptor.contains(&k[1..]);
            if !own && !user {
                return bad(format!(
                    "row {:02x?} is not the range's",
                    &k[..k.len().min(16)]
                ));
            }
            if *k == applied {
                match decode_applied(v) {
                    Ok((i, t, _)) if (i, t) == (image.applied_index, image.applied_term) => {
                        saw_applied = true
                    }
                    Ok((i, t, _)) => return bad(format!("the applied record says {i}/{t}")),
                    Err(e) => return bad(format!("applied record: {e}")),
                }
            }
        }
        if !saw_applied {
            return bad("no applied record".into());
        }
        Ok(())
    }

    fn stage_and_commit(&mut self, image: &RangeImage, batch_rows: usize) -> Result<()> {
        self.delete_slice(self.keys.staged_slice(), batch_rows)?;
        for chunk in image.rows.chunks(batch_rows) {
            let mut batch = WriteBatch::default();
            for (k, v) in chunk {
                batch.put(&self.keys.staged(k), v);
            }
            self.write_install_batch(batch, false)?;
        }
        // A range keeps its start for life: the user rows to replace run from it to the
        // farther of the two ends.
        let end = match (&self.range.end, &image.descriptor.end) {
            (Some(a), Some(b)) => Some(a.max(b).clone()),
            _ => None,
        };
        let bounds = RangeDescriptor {
            end,
            ..image.descriptor.clone()
        };
        let mut batch = WriteBatch::default();
        batch.put(&self.keys.install_marker(), &bounds.encode());
        self.write_install_batch(batch, true)
    }

    /// Step 3 of the module docs if a marker is stored, else drops any staged rows. Returns
    /// whether an install was finished.
    pub(super) fn finish_range_install(&mut self, batch_rows: usize) -> Result<bool> {
        let marker = self.db().get(&self.keys.install_marker())?;
        let Some(marker) = marker else {
            self.delete_slice(self.keys.staged_slice(), batch_rows)?;
            return Ok(false);
        };
        let bounds = RangeDescriptor::decode(&marker)
            .map_err(|e| self.corrupt(None, format!("range install marker: {e}")))?;
        if bounds.id != self.range.id {
            return Err(self.corrupt(
                None,
                format!("the install marker names range {}", bounds.id),
            ));
        }
        for slice in self.keys.own_slices() {
            self.delete_slice(slice, batch_rows)?;
        }
        let user_end = bounds.end.as_deref().map_or(vec![USER + 1], user_row);
        self.delete_slice((user_row(&bounds.start), user_end), batch_rows)?;
        let (mut from, to) = self.keys.staged_slice();
        loop {
            let staged = self.rows_between(&from, &to, batch_rows)?;
            let Some((last, _)) = staged.last() else {
                break;
            };
            from = last.clone();
            from.push(0);
            let mut batch = WriteBatch::default();
            for (k, v) in &staged {
                let row = self.keys.unstaged(k).ok_or_else(|| {
                    self.corrupt(None, format!("staged row {k:02x?} outside its prefix"))
                })?;
                batch.put(row, v);
            }
            self.write_install_batch(batch, false)?;
        }
        let mut batch = WriteBatch::default();
        batch.delete(&self.keys.install_marker());
        self.write_install_batch(batch, true)?;
        self.delete_slice(self.keys.staged_slice(), batch_rows)?;
        Ok(true)
    }

    /// Up to `limit` stored rows in `[from, to)`.
    fn rows_between(
        &mut self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>> {
        let mut rows = Vec::new();
        self.db().scan_from(from, |k, v| {
            if k >= to || rows.len() == limit {
                return Ok(false);
            }
            rows.push((k.to_vec(), v));
            Ok(true)
        })?;
        Ok(rows)
    }

    /// Deletes every row in `[from, to)`, `batch_rows` at a time.
    fn delete_slice(&mut self, (from, to): (Vec<u8>, Vec<u8>), batch_rows: usize) -> Result<()> {
        loop {
            let rows = self.rows_between(&from, &to, batch_rows)?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut batch = WriteBatch::default();
            for (k, _) in &rows {
                batch.delete(k);
            }
            self.write_install_batch(batch, false)?;
        }
    }

    fn write_install_batch(&mut self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.db().write(batch, sync)?;
        #[cfg(test)]
        super::expiry::crash_point::after_batch()?;
        Ok(())
    }

    /// Reads the range's state from the database again, as opening it does.
    fn reload(&mut self) -> Result<()> {
        // The first range has no descriptor row while it is the initial one; another range
        // always has one.
        let assumed = if self.range.id == FIRST_RANGE {
            RangeDescriptor::whole(FIRST_RANGE)
        } else {
            self.range.clone()
        };
        let fresh = Self::unloaded(
            self.db.clone(),
            self.path.clone(),
            assumed,
            &self.data_dir,
            &self.env,
            self.max_sessions,
        );
        let sync_writes = self.sync_writes;
        *self = fresh;
        self.sync_writes = sync_writes;
        self.load()
    }
}
