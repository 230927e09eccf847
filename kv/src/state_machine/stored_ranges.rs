//! Which ranges the shared database holds, for a node starting up: it opens each one's state
//! machine and log.

use std::collections::BTreeSet;

use super::row_keys::{StateKeys, KEY_DESCRIPTOR, RANGE, STAGING};
use super::KvStateMachine;
use crate::error::Result;
use crate::ranges::{RangeDescriptor, RangeId, FIRST_RANGE};

impl KvStateMachine {
    /// Every range with rows in this database, in id order: the first range (its descriptor
    /// row, or [`RangeDescriptor::whole`] while it has none) and each range behind the
    /// `0x04 | id` prefix, by its descriptor row. A range whose install was interrupted after
    /// its commit point is listed by the descriptor of the image being installed (opening the
    /// range finishes the install). A range with rows and no descriptor, or a descriptor that
    /// does not decode or names another range, is reported as corruption.
    pub fn stored_ranges(&self) -> Result<Vec<RangeDescriptor>> {
        self.check_poison()?;
        let mut ranges = vec![self
            .stored_descriptor(FIRST_RANGE)?
            .unwrap_or_else(|| RangeDescriptor::whole(FIRST_RANGE))];
        // A range in the middle of an install may have no rows of its own left for a moment,
        // but it has its staged rows.
        let own = self.ids_behind(RANGE)?;
        let mut ids = self.ids_behind(STAGING)?;
        ids.extend(own.iter().copied());
        ids.remove(&FIRST_RANGE);
        for id in ids {
            match self.stored_descriptor(id)? {
                Some(d) => ranges.push(d),
                // Staged rows without a marker: an install that never committed, which
                // opening drops. Not a range.
                None if !own.contains(&id) => {}
                None => {
                    return Err(self.corrupt(
                        None,
                        format!("range {id} has rows in the database but no descriptor"),
                    ))
                }
            }
        }
        Ok(ranges)
    }

    /// The ids of the ranges with rows behind `tag | range id`: one seek per range.
    fn ids_behind(&self, tag: u8) -> Result<BTreeSet<RangeId>> {
        let mut ids = BTreeSet::new();
        let mut from = vec![tag];
        loop {
            let mut found = None;
            self.db().scan_from(&from, |k, _| {
                found = StateKeys::range_of_row(tag, k);
                Ok(false)
            })?;
            let Some(id) = found else { break };
            ids.insert(id);
            let Some(next) = id.checked_add(1) else { break };
            from = vec![tag];
            from.extend_from_slice(&next.to_be_bytes());
        }
        Ok(ids)
    }

    /// The range's descriptor as its rows hold it: the staged one if an install of its image
    /// is past its commit point, else its own row.
    fn stored_descriptor(&self, id: RangeId) -> Result<Option<RangeDescriptor>> {
        let keys = StateKeys::of(id);
        let marked = self.db().get(&keys.install_marker())?.is_some();
        let row = if marked {
            keys.staged(&keys.descriptor())
        } else {
            keys.descriptor()
        };
        let Some(v) = self.db().get(&row)? else {
            return Ok(None);
        };
        let d = RangeDescriptor::decode(&v).map_err(|e| {
            self.corrupt(
                None,
                format!("the descriptor row of range {id} ({KEY_DESCRIPTOR:02x?}): {e}"),
            )
        })?;
        if d.id != id {
            return Err(self.corrupt(
                None,
                format!("the descriptor row of range {id} describes range {}", d.id),
            ));
        }
        Ok(Some(d))
    }
}
