//! Log time and the sweep. The state machine's clock is the largest stamp the leader put in
//! the log (`EntryKind::Clock`, see `raft_core::clock`): every replica reads the same time at
//! the same index, and a replay decides as the first run did. A key past its deadline is
//! absent at once; its rows go through the log too: each clock entry deletes up to
//! [`SWEEP_PER_STAMP`] expired keys, oldest deadline first. FLUSHALL is here too.

use rusty_leveldb::WriteBatch;

use super::keyspace::Txn;
use super::row_keys::{EXPIRY, USER};
use super::KvStateMachine;
use crate::command::Op;
use crate::error::Result;

/// Expired keys deleted per clock entry, so that one entry never makes a huge batch.
pub const SWEEP_PER_STAMP: usize = 256;

/// Rows FLUSHALL deletes per LevelDB batch.
pub const FLUSH_CHUNK_ROWS: usize = 1024;

impl KvStateMachine {
    /// A clock entry: time moves to `stamp` if that is later, and expired keys are swept.
    pub(super) fn advance_clock(&mut self, t: &mut Txn, stamp: u64) -> Result<()> {
        t.clock = t.clock.max(stamp);
        let now = t.clock;
        let keys = self.keys.clone();
        let due = |k: &[u8]| {
            keys.index_entry(EXPIRY, k)
                .is_some_and(|(deadline, _)| deadline <= now)
        };
        let rows = self.rows_from(t, &self.keys.expiry_prefix(), SWEEP_PER_STAMP, due)?;
        for (row, _) in rows {
            let Some((deadline, key)) = keys.index_entry(EXPIRY, &row) else {
                continue;
            };
            let key = key.to_vec();
            match self.stored_meta(t, &key)? {
                Some(m) if m.expires_at == deadline => {
                    self.unstore(t, &key)?;
                }
                // An index row the key no longer matches (it cannot happen while every write
                // keeps the index exact, but a stale row must not stay forever).
                _ => {
                    t.rows.insert(keys.expiry(deadline, &key), None);
                }
            }
        }
        Ok(())
    }

    /// `FLUSHALL`: every key and index row goes, in LevelDB batches of at most
    /// [`FLUSH_CHUNK_ROWS`] deletions written at once, so that a store of any size is flushed in
    /// bounded memory; the overlay's rows of those kinds (this batch's writes before it) go
    /// too.
    ///
    /// Atomic for clients all the same: reads are served between applies, never during one.
    /// After a crash in the middle, some rows are deleted but the applied index is not moved
    /// (it is written with the apply batch, after the flush): the restart applies the entry
    /// again. That replay decides as the first run did because:
    /// 1. `apply` writes the entries before a flushing entry first, in a batch of their own,
    ///    and LevelDB keeps its writes in order (a deletion here survives a crash only if that
    ///    batch does), so no entry before it is replayed on a half-flushed store;
    /// 2. what the flush leaves does not depend on how far the first run went: no key, counts
    ///    of zero, the flush's own index for WATCH (`watch.rs`);
    /// 3. a command before the flush in the same transaction may answer differently when
    ///    replayed (its keys may be gone already), but the answer reaches no one (the node
    ///    crashed before replying, and the client port sends EXEC without a session, so none
    ///    keeps it), its effects on keys are flushed, and what it leaves for WATCH is
    ///    outranked by the flush's index.
    ///
    /// An image being built (`snapshot/build.rs`) would have to keep every row deleted here,
    /// unbounded: it is abandoned, and a later one is built.
    pub(super) fn flush_all(&mut self, t: &mut Txn) -> Result<()> {
        self.image_in_progress = None;
        // From the first deletion on, the database no longer holds what the cache says.
        self.key_meta.clear();
        // The range's own user rows (its bounds), then its index rows (its prefix).
        let (user_from, user_end) = self.owned_user_rows(vec![USER]);
        let (expiry, hashed) = (self.keys.expiry_prefix(), self.keys.hashed_prefix());
        let walks = [
            (user_from, user_end),
            (expiry.clone(), after_prefix(&expiry)),
            (hashed.clone(), after_prefix(&hashed)),
        ];
        for (start, end) in walks {
            let mut from = start;
            loop {
                let mut rows = Vec::new();
                self.ldb().scan_from(&from, |k, _| {
                    if k >= end.as_slice() || rows.len() == FLUSH_CHUNK_ROWS {
                        return Ok(false);
                    }
                    rows.push(k.to_vec());
                    Ok(true)
                })?;
                let Some(last) = rows.last() else { break };
                from = last.clone();
                from.push(0);
                let mut batch = WriteBatch::default();
                for row in &rows {
                    batch.delete(row);
                }
                self.ldb().write(batch, false)?;
                #[cfg(test)]
                crash_point::after_batch()?;
            }
        }
        // The overlay holds only this range's rows (a command naming another range's key is
        // refused before it runs).
        t.rows.retain(|row, _| {
            row.first() != Some(&USER) && !row.starts_with(&expiry) && !row.starts_with(&hashed)
        });
        t.forget_read_ahead();
        t.counts = Default::default();
        self.note_flushed(t);
        Ok(())
    }

    /// Whether applying `op` flushes the store (a FLUSHALL, or a transaction holding one).
    pub(super) fn flushes(op: &Op) -> bool {
        match op {
            Op::FlushAll => true,
            Op::Multi { ops, .. } => ops.iter().any(Self::flushes),
            _ => false,
        }
    }
}

/// The first row after every row starting with `prefix` (whose last byte is below 0xff).
fn after_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Tests stop a flush after some batches, as a crash would.
#[cfg(test)]
pub(super) mod crash_point {
    use std::cell::Cell;

    thread_local! {
        static BATCHES_LEFT: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// The next flush on this thread fails after writing `batches` batches.
    pub(crate) fn fail_after(batches: usize) {
        BATCHES_LEFT.with(|b| b.set(Some(batches)));
    }

    pub(crate) fn after_batch() -> crate::error::Result<()> {
        BATCHES_LEFT.with(|b| match b.get() {
            Some(0) => {
                b.set(None);
                Err(crate::error::Error::InvalidRequest("crash point".into()))
            }
            Some(n) => {
                b.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        })
    }
}
