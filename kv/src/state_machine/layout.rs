//! Opening the key space: the counts and log time rows, and the conversion of a data directory
//! written before values carried a version and a deadline (raw values, no index rows) to the
//! current layout, in one synced batch before anything else is read.

use bytes::Bytes;
use rusty_leveldb::WriteBatch;

use super::keyspace::{decode_clock, hashed_row, KeyCounts, Record};
use super::records::{KEY_CLOCK, KEY_COUNTS, KEY_LAYOUT, LAYOUT_RECORDS, USER};
use super::KvStateMachine;
use crate::error::Result;

impl KvStateMachine {
    pub(super) fn load_keyspace(&mut self) -> Result<()> {
        match self.db.get(KEY_LAYOUT)? {
            None => self.convert_raw_values()?,
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
        if let Some(v) = self.db.get(KEY_COUNTS)? {
            self.counts = KeyCounts::decode(&v)
                .map_err(|e| self.corrupt(None, format!("key counts: {e}")))?;
        }
        if let Some(v) = self.db.get(KEY_CLOCK)? {
            self.clock_ms =
                decode_clock(&v).map_err(|e| self.corrupt(None, format!("log time: {e}")))?;
        }
        Ok(())
    }

    /// Rewrites every raw value as a record (version 0: older than any write; no deadline),
    /// adds its scan index row, counts the keys and marks the layout.
    fn convert_raw_values(&mut self) -> Result<()> {
        let mut raw: Vec<(Vec<u8>, Bytes)> = Vec::new();
        self.db.scan_from(&[USER], |k, v| {
            if k.first() != Some(&USER) {
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
            batch.put(&hashed_row(&row[1..]), &[]);
        }
        batch.put(KEY_COUNTS, &counts.encode());
        batch.put(KEY_LAYOUT, &[LAYOUT_RECORDS]);
        self.db.write(batch, true)?;
        Ok(())
    }
}
