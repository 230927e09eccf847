//! Log time and the sweep. The state machine's clock is the largest stamp the leader put in
//! the log (`EntryKind::Clock`, see `raft_core::clock`): every replica reads the same time at
//! the same index, and a replay decides as the first run did. A key past its deadline is
//! absent at once; its rows go through the log too: each clock entry deletes up to
//! [`SWEEP_PER_STAMP`] expired keys, oldest deadline first.

use super::keyspace::{expiry_row, Txn, EXPIRY, HASHED};
use super::records::USER;
use super::KvStateMachine;
use crate::error::Result;

/// Expired keys deleted per clock entry, so that one entry never makes a huge batch.
pub const SWEEP_PER_STAMP: usize = 256;

impl KvStateMachine {
    /// A clock entry: time moves to `stamp` if that is later, and expired keys are swept.
    pub(super) fn advance_clock(&mut self, t: &mut Txn, stamp: u64) -> Result<()> {
        t.clock = t.clock.max(stamp);
        let now = t.clock;
        let due = |k: &[u8]| {
            k.first() == Some(&EXPIRY) && k.len() >= 9 && {
                let mut a = [0u8; 8];
                a.copy_from_slice(&k[1..9]);
                u64::from_be_bytes(a) <= now
            }
        };
        let rows = self.rows_from(t, &[EXPIRY], SWEEP_PER_STAMP, due)?;
        for (row, _) in rows {
            let mut a = [0u8; 8];
            a.copy_from_slice(&row[1..9]);
            let deadline = u64::from_be_bytes(a);
            let key = row[9..].to_vec();
            match self.stored(t, &key)? {
                Some(r) if r.expires_at == deadline => {
                    self.unstore(t, &key)?;
                }
                // An index row the key no longer matches (it cannot happen while every write
                // keeps the index exact, but a stale row must not stay forever).
                _ => {
                    t.rows.insert(expiry_row(deadline, &key), None);
                }
            }
        }
        Ok(())
    }

    /// `FLUSHALL`: every key and index row goes.
    pub(super) fn flush_all(&mut self, t: &mut Txn) -> Result<()> {
        for tag in [USER, EXPIRY, HASHED] {
            let rows = self.rows_from(t, &[tag], usize::MAX, |k| k.first() == Some(&tag))?;
            for (row, _) in rows {
                t.rows.insert(row, None);
            }
        }
        t.counts = Default::default();
        Ok(())
    }
}
