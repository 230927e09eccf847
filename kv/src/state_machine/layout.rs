//! Opening the key space: the counts and log time rows, and the conversion of a data directory
//! written before values carried a version and a deadline (raw values, no index rows) to the
//! current layout, in one synced batch before anything else is read.

use bytes::Bytes;
use rusty_leveldb::WriteBatch;

use super::keyspace::{decode_clock, hashed_row, KeyCounts, Record};
use super::records::LAYOUT_RECORDS;
use super::row_keys::USER;
use super::KvStateMachine;
use crate::error::Result;

impl KvStateMachine {
    pub(super) fn load_keyspace(&mut self) -> Result<()> {
        let layout = self.db().get(&self.keys.layout())?;
        match layout {
            // Only a directory of the first range can predate the layout row; another range
            // writes it when it is created.
            None if self.keys.is_first() => self.convert_raw_values()?,
            None => return Err(self.corrupt(None, "the range has no layout row".into())),
            Some(v) if v.as_ref() == [LAYOUT_RECORDS] => {}
            Some(v) => {
                return Err(self.corrupt(
                    None,
                    format!(
                        "key layout {v:02x?} is unknown to this version (which writes {LAYOUT_RECORDS}): \
                         the data directory was written by a newer kvstore"
                    ),
                ))
            }
        }
        let counts = self.db().get(&self.keys.counts())?;
        if let Some(v) = counts {
            self.counts = KeyCounts::decode(&v)
                .map_err(|e| self.corrupt(None, format!("key counts: {e}")))?;
        }
        let clock = self.db().get(&self.keys.clock())?;
        if let Some(v) = clock {
            self.clock_ms =
                decode_clock(&v).map_err(|e| self.corrupt(None, format!("log time: {e}")))?;
        }
        Ok(())
    }

    /// Rewrites every raw value as a record (version 0: older than any write; no deadline),
    /// adds its scan index row, counts the keys and marks the layout.
    fn convert_raw_values(&mut self) -> Result<()> {
        let mut raw: Vec<(Vec<u8>, Bytes)> = Vec::new();
        let (from, end) = self.owned_user_rows(vec![USER]);
        self.db().scan_from(&from, |k, v| {
            if k >= end.as_slice() {
                return Ok(false);
            }
            raw.push((k.to_vec(), v));
            Ok(true)
        })?;
        let mut batch = WriteBatch::default();
        let counts = KeyCounts {
            keys: raw.len() as u64,
            volatile: 0,
        };
        for (row, value) in raw {
            let record = Record {
                version: 0,
                expires_at: 0,
                value,
            };
            batch.put(&row, &record.encode());
            batch.put(&hashed_row(&self.keys, &row[1..]), &[]);
        }
        batch.put(&self.keys.counts(), &counts.encode());
        batch.put(&self.keys.layout(), &[LAYOUT_RECORDS]);
        self.db().write(batch, true)?;
        Ok(())
    }
}
