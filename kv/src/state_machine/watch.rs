//! What `WATCH` remembers of a key and what `EXEC` checks, as Redis has it: a transaction
//! aborts if a watched key was written, deleted or expired since it was watched, even when it
//! is back to what it was (absent, say: created and deleted again).
//!
//! A present key's token is its version (the log index that last wrote it): any later write
//! or removal changes it. An absent key has no version to compare, so its token is
//! [`WATCHED_ABSENT`] with the applied index `R` it was read at, and `EXEC` asks whether a
//! record of that key newer than `R` may have existed since. It may have if:
//! - the key's stored record (live or expired, not yet swept) is newer than `R`;
//! - or a record newer than `R` was removed from the key's *bucket*: 4096 metadata rows
//!   (`0x00 'w' | bucket`), each holding the largest version of any record removed from keys
//!   hashing there (deleted, expired and swept, renamed away, or stored with a deadline already
//!   past: a record written and gone at once);
//! - or a `FLUSHALL` ran after `R` (`0x00 'f'`: the index of the last one).
//!
//! Each range has its own rows (`row_keys.rs`), as it has its own keys.
//!
//! So no touch is missed, and the memory is bounded (at most 4096 small rows). The price is
//! a spurious abort: when another key of the same bucket was written and then removed between
//! the WATCH and the EXEC (one chance in 4096 per such key), or when a FLUSHALL ran in
//! between. A key that was already expired when watched and is then swept does not abort, as
//! in Redis: its removed record is older than `R`. The rows are state-machine rows like any
//! other: written in the apply batch, carried by snapshots, the same on every replica; a copy
//! in memory ([`RemovedVersions`]) spares a removal the read of its bucket.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::keyspace::{scan_hash, Txn};
use super::row_keys::{StateKeys, KEY_FLUSHED, WATCH_PREFIX};
use super::KvStateMachine;
use crate::codec;
use crate::error::{DecodeError, Result};

/// The bit that marks a watch token as "absent when read at the index in the other bits". Log
/// indexes never reach it. A token of 0 (absent, as read at index 0) is the most cautious.
pub const WATCHED_ABSENT: u64 = 1 << 63;

/// How many buckets of removed keys there are: the bound on the rows kept for WATCH, and the
/// odds against a spurious abort per key removed during a transaction.
const BUCKETS: usize = 4096;

fn bucket_of(key: &[u8]) -> u16 {
    (scan_hash(key) % BUCKETS as u64) as u16
}

/// What the rows hold as of the applied index, kept in memory (32 KiB) so that a removal, and
/// EXEC's check, read no row.
#[derive(Clone, Debug)]
pub(crate) struct RemovedVersions {
    buckets: Vec<u64>,
    flushed: u64,
}

impl Default for RemovedVersions {
    fn default() -> Self {
        RemovedVersions {
            buckets: vec![0; BUCKETS],
            flushed: 0,
        }
    }
}

impl RemovedVersions {
    /// Takes in the rows an apply batch wrote.
    pub(crate) fn note_written(
        &mut self,
        keys: &StateKeys,
        rows: &BTreeMap<Vec<u8>, Option<Bytes>>,
    ) {
        let prefix = keys.watch_prefix();
        let flushed = keys.flushed();
        let ours = rows
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .chain(rows.get_key_value(&flushed));
        for (row, value) in ours {
            if let Some(index) = value.as_deref().and_then(|v| decode_index(v).ok()) {
                self.set(keys, row, index);
            }
        }
    }

    fn set(&mut self, keys: &StateKeys, row: &[u8], index: u64) {
        if keys.local(row) == Some(KEY_FLUSHED) {
            self.flushed = index;
        } else if let Some(slot) = keys
            .bucket_of_watch_row(row)
            .and_then(|b| self.buckets.get_mut(usize::from(b)))
        {
            *slot = index;
        }
    }

    fn bucket(&self, bucket: u16) -> u64 {
        self.buckets.get(usize::from(bucket)).copied().unwrap_or(0)
    }
}

/// The index in a row this process wrote (so it decodes); a deletion reads as 0.
fn own_index(v: &Option<Bytes>) -> u64 {
    v.as_deref().and_then(|v| decode_index(v).ok()).unwrap_or(0)
}

fn encode_index(index: u64) -> Bytes {
    let mut b = Vec::with_capacity(12);
    codec::put_u64(&mut b, index);
    codec::seal(&mut b);
    Bytes::from(b)
}

fn decode_index(v: &[u8]) -> std::result::Result<u64, DecodeError> {
    let body = codec::unseal(v)?;
    let a: [u8; 8] = body
        .try_into()
        .map_err(|_| DecodeError::Invalid("a removed-version row is not 8 bytes"))?;
    Ok(u64::from_le_bytes(a))
}

/// For a snapshot's receiver (of the first range's image): `None` if `k` is not one of these
/// rows, else whether `v` decodes.
pub(crate) fn check_watch_row(k: &[u8], v: &[u8]) -> Option<bool> {
    let ours =
        k == KEY_FLUSHED || (k.len() == WATCH_PREFIX.len() + 2 && k.starts_with(WATCH_PREFIX));
    ours.then(|| decode_index(v).is_ok())
}

impl KvStateMachine {
    /// The token `WATCH` keeps for `key`: its version, or [`WATCHED_ABSENT`] with the index
    /// the batch reads at.
    pub(super) fn watch_token(&mut self, t: &Txn, key: &[u8]) -> Result<u64> {
        Ok(match self.live_meta(t, key)? {
            Some(m) => m.version,
            None => WATCHED_ABSENT | t.index,
        })
    }

    /// Whether `key` may be taken as untouched since `WATCH` gave it `token` (module docs).
    pub(super) fn unchanged_since_watch(
        &mut self,
        t: &Txn,
        key: &[u8],
        token: u64,
    ) -> Result<bool> {
        if token != 0 && token & WATCHED_ABSENT == 0 {
            return Ok(self.live_meta(t, key)?.map(|m| m.version) == Some(token));
        }
        let since = token & !WATCHED_ABSENT;
        if self.stored_meta(t, key)?.is_some_and(|m| m.version > since) {
            return Ok(false);
        }
        Ok(self.bucket_index(t, bucket_of(key)) <= since && self.flushed_index(t) <= since)
    }

    /// Notes that a record of `key` written at `version` is gone (deleted, swept, replaced by
    /// nothing): see the module docs.
    pub(crate) fn note_removed(&mut self, t: &mut Txn, key: &[u8], version: u64) -> Result<()> {
        let bucket = bucket_of(key);
        if version > self.bucket_index(t, bucket) {
            t.rows
                .insert(self.keys.watch_bucket(bucket), Some(encode_index(version)));
        }
        Ok(())
    }

    /// Notes a FLUSHALL at the batch's index.
    pub(super) fn note_flushed(&mut self, t: &mut Txn) {
        t.rows
            .insert(self.keys.flushed(), Some(encode_index(t.index)));
    }

    /// A bucket's index as this batch sees it: its own writes, else what is applied.
    fn bucket_index(&self, t: &Txn, bucket: u16) -> u64 {
        match t.rows.get(&self.keys.watch_bucket(bucket)) {
            Some(v) => own_index(v),
            None => self.removed.bucket(bucket),
        }
    }

    /// The last FLUSHALL's index as this batch sees it.
    fn flushed_index(&self, t: &Txn) -> u64 {
        match t.rows.get(&self.keys.flushed()) {
            Some(v) => own_index(v),
            None => self.removed.flushed,
        }
    }

    /// Reads the rows into memory when the state machine opens.
    pub(super) fn load_watch_rows(&mut self) -> Result<()> {
        let mut rows = Vec::new();
        let prefix = self.keys.watch_prefix();
        self.db().scan_from(&prefix, |k, v| {
            if !k.starts_with(&prefix) {
                return Ok(false);
            }
            rows.push((k.to_vec(), v));
            Ok(true)
        })?;
        let flushed = self.db().get(&self.keys.flushed())?;
        if let Some(v) = flushed {
            rows.push((self.keys.flushed(), v));
        }
        for (row, v) in rows {
            let index = decode_index(&v)
                .map_err(|e| self.corrupt(None, format!("watch row {row:02x?}: {e}")))?;
            self.removed.set(&self.keys, &row, index);
        }
        Ok(())
    }
}
