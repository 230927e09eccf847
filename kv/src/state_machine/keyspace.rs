//! The user key space and its bookkeeping, as one apply batch sees it.
//!
//! A user key's row (`0x01 | key`) holds a [`Record`]: the value, the version (the log index
//! that last wrote it: `WATCH` compares versions) and the expiry deadline in log time. Two index
//! rows (empty values) of the key's range go with it (`row_keys.rs`): `0x02 | deadline | key`
//! for every key with a deadline, so the sweep finds expired keys in deadline order, and
//! `0x03 | hash(key) | key` for every key, so
//! `SCAN` walks the keys in hash order with a cursor that is a plain integer (what Redis
//! clients expect) and stays valid however the key space changes. The counts of keys and of
//! keys with a deadline (`DBSIZE`, `INFO keyspace`) and the log time are metadata rows.
//!
//! Within one apply batch every change goes to [`Txn`]'s overlay first and reaches LevelDB as
//! one `WriteBatch`; reads see the overlay before the database.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::Index;

use super::key_meta::KeyMeta;
use super::row_keys::{user_row, StateKeys};
use super::KvStateMachine;
use crate::codec;
use crate::error::{DecodeError, Result};

const RECORD_STRING: u8 = 1;

/// A key's stored value and what goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The log index of the entry that last wrote the key.
    pub version: u64,
    /// Log time (milliseconds) from which the key is gone; 0: never.
    pub expires_at: u64,
    pub value: Bytes,
}

impl Record {
    /// Whether the key is gone at log time `now`.
    pub fn expired_at(&self, now: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(21 + self.value.len());
        b.push(RECORD_STRING);
        codec::put_u64(&mut b, self.version);
        codec::put_u64(&mut b, self.expires_at);
        b.extend_from_slice(&self.value);
        codec::seal(&mut b);
        b
    }

    pub(crate) fn decode(row: &Bytes) -> std::result::Result<Record, DecodeError> {
        let body = codec::unseal(row)?;
        if body.len() < 17 {
            return Err(DecodeError::Truncated {
                needed: 17,
                have: body.len(),
            });
        }
        if body[0] != RECORD_STRING {
            return Err(DecodeError::UnknownTag {
                what: "value record",
                tag: body[0],
            });
        }
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(a)
        };
        Ok(Record {
            version: u64_at(1),
            expires_at: u64_at(9),
            value: row.slice(17..body.len()),
        })
    }

    /// The version and deadline of a record this process encoded (an apply batch's own row,
    /// whose checksum there is no need to verify); `None` if it is not a record.
    pub(crate) fn meta_of_own(row: &[u8]) -> Option<KeyMeta> {
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(row.get(at..at + 8)?.try_into().ok()?))
        };
        if row.first() != Some(&RECORD_STRING) {
            return None;
        }
        Some(KeyMeta {
            version: u64_at(1)?,
            expires_at: u64_at(9)?,
        })
    }
}

/// How many keys there are, and how many of them have a deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyCounts {
    pub keys: u64,
    pub volatile: u64,
}

impl KeyCounts {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(20);
        codec::put_u64(&mut b, self.keys);
        codec::put_u64(&mut b, self.volatile);
        codec::seal(&mut b);
        b
    }

    pub(crate) fn decode(v: &[u8]) -> std::result::Result<KeyCounts, DecodeError> {
        let body = codec::unseal(v)?;
        if body.len() != 16 {
            return Err(DecodeError::Invalid("key counts are not 16 bytes"));
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[..8]);
        let keys = u64::from_le_bytes(a);
        a.copy_from_slice(&body[8..]);
        Ok(KeyCounts {
            keys,
            volatile: u64::from_le_bytes(a),
        })
    }
}

pub(crate) fn encode_clock(ms: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    codec::put_u64(&mut b, ms);
    codec::seal(&mut b);
    b
}

pub(crate) fn decode_clock(v: &[u8]) -> std::result::Result<u64, DecodeError> {
    let body = codec::unseal(v)?;
    let a: [u8; 8] = body
        .try_into()
        .map_err(|_| DecodeError::Invalid("log time is not 8 bytes"))?;
    Ok(u64::from_le_bytes(a))
}

/// The hash that orders keys for `SCAN` (64-bit FNV-1a). Stored in index rows, so it must
/// never change; never 0, which is the cursor that starts and ends a scan.
pub fn scan_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// The scan index row of `key` in the range whose keys are `keys`.
pub(crate) fn hashed_row(keys: &StateKeys, key: &[u8]) -> Vec<u8> {
    keys.hashed(scan_hash(key), key)
}

/// One apply batch's view: the rows it changed, the entry being applied and the log time.
pub(crate) struct Txn {
    pub(crate) rows: BTreeMap<Vec<u8>, Option<Bytes>>,
    /// The entry being applied: the version of what it writes.
    pub(crate) index: Index,
    pub(crate) clock: u64,
    pub(crate) counts: KeyCounts,
    /// Stored rows read ahead for the whole batch ([`KvStateMachine::prefetch`]).
    prefetched: BTreeMap<Vec<u8>, Option<Bytes>>,
    /// The member table as the batch's configuration changes left it so far (`None`: none
    /// yet): what a split in the same batch gives its new range.
    pub(crate) members: Option<crate::members::MemberTable>,
}

impl Txn {
    pub(crate) fn new(sm: &KvStateMachine) -> Txn {
        Txn {
            rows: BTreeMap::new(),
            index: sm.applied_index,
            clock: sm.clock_ms,
            counts: sm.counts,
            prefetched: BTreeMap::new(),
            members: None,
        }
    }

    /// Forgets the rows read ahead: they no longer are what is stored (FLUSHALL).
    pub(crate) fn forget_read_ahead(&mut self) {
        self.prefetched.clear();
    }

    pub(crate) fn put(&mut self, row: Vec<u8>, value: Vec<u8>) {
        self.rows.insert(row, Some(Bytes::from(value)));
    }

    pub(crate) fn delete(&mut self, row: Vec<u8>) {
        self.rows.insert(row, None);
    }

    /// The metadata rows this batch must write besides its user rows.
    pub(crate) fn finish(&mut self, sm: &KvStateMachine) {
        if self.counts != sm.counts {
            self.put(sm.keys.counts(), self.counts.encode());
        }
        if self.clock != sm.clock_ms {
            self.put(sm.keys.clock(), encode_clock(self.clock));
        }
    }
}

impl KvStateMachine {
    pub(crate) fn row(&mut self, t: &Txn, row: &[u8]) -> Result<Option<Bytes>> {
        match t.rows.get(row).or_else(|| t.prefetched.get(row)) {
            Some(v) => Ok(v.clone()),
            None => self.db().get(row),
        }
    }

    /// Reads the stored rows of `keys` into the batch with one iterator, before the batch's
    /// commands run: most writes read their key first (its deadline, whether it is new). Keys
    /// whose version and deadline are cached are left out: most writes need no more, and the
    /// few that need the value read it alone.
    pub(crate) fn prefetch<'a>(
        &mut self,
        t: &mut Txn,
        keys: impl Iterator<Item = &'a Bytes>,
    ) -> Result<()> {
        let rows: std::collections::BTreeSet<Vec<u8>> = keys
            .filter(|k| !self.key_meta.contains(k))
            .map(|k| user_row(k))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<Vec<u8>> = rows.into_iter().collect();
        let found = self.db().get_sorted(&rows)?;
        t.prefetched = rows.into_iter().zip(found).collect();
        Ok(())
    }

    fn decode_stored(&self, key: &[u8], row: Option<Bytes>) -> Result<Option<Record>> {
        let Some(row) = row else {
            return Ok(None);
        };
        Record::decode(&row).map(Some).map_err(|e| {
            self.corrupt(
                None,
                format!("the value of key {:02x?}: {e}", &key[..key.len().min(32)]),
            )
        })
    }

    /// The key's record, expired or not.
    pub(crate) fn stored(&mut self, t: &Txn, key: &[u8]) -> Result<Option<Record>> {
        let row = self.row(t, &user_row(key))?;
        self.decode_stored(key, row)
    }

    /// The key's record unless it is absent or expired at the batch's log time.
    pub(crate) fn live(&mut self, t: &Txn, key: &[u8]) -> Result<Option<Record>> {
        Ok(self.stored(t, key)?.filter(|r| !r.expired_at(t.clock)))
    }

    /// The version and deadline of the key's record, expired or not: the batch's own write,
    /// else the cache (`key_meta.rs`), else the database, which the cache then learns.
    pub(crate) fn stored_meta(&mut self, t: &Txn, key: &[u8]) -> Result<Option<KeyMeta>> {
        let row = user_row(key);
        if let Some(own) = t.rows.get(&row) {
            return Ok(own.as_deref().and_then(Record::meta_of_own));
        }
        if let Some(cached) = self.key_meta.get(key) {
            return Ok(cached);
        }
        let found = match t.prefetched.get(&row) {
            Some(v) => v.clone(),
            None => self.db().get(&row)?,
        };
        let meta = self.decode_stored(key, found)?.as_ref().map(KeyMeta::of);
        self.key_meta.put(key, meta);
        Ok(meta)
    }

    /// [`KvStateMachine::stored_meta`] unless the key is expired at the batch's log time.
    pub(crate) fn live_meta(&mut self, t: &Txn, key: &[u8]) -> Result<Option<KeyMeta>> {
        Ok(self.stored_meta(t, key)?.filter(|m| !m.expired_at(t.clock)))
    }

    /// Writes `value` with deadline `expires_at` (0: none) at the batch's index.
    pub(crate) fn store(
        &mut self,
        t: &mut Txn,
        key: &[u8],
        value: Bytes,
        expires_at: u64,
    ) -> Result<()> {
        let old = self.stored_meta(t, key)?;
        match &old {
            None => {
                t.counts.keys += 1;
                t.put(hashed_row(&self.keys, key), Vec::new());
            }
            Some(old) if old.expires_at != 0 => {
                t.counts.volatile -= 1;
                t.delete(self.keys.expiry(old.expires_at, key));
            }
            Some(_) => {}
        }
        if expires_at != 0 {
            t.counts.volatile += 1;
            t.put(self.keys.expiry(expires_at, key), Vec::new());
        }
        let record = Record {
            version: t.index,
            expires_at,
            value,
        };
        t.put(user_row(key), record.encode());
        Ok(())
    }

    /// Removes the key (expired or not) and its index rows, noting the removal for WATCH
    /// (`watch.rs`); returns the version and deadline it had.
    pub(crate) fn unstore(&mut self, t: &mut Txn, key: &[u8]) -> Result<Option<KeyMeta>> {
        let Some(old) = self.stored_meta(t, key)? else {
            return Ok(None);
        };
        t.counts.keys -= 1;
        t.delete(hashed_row(&self.keys, key));
        if old.expires_at != 0 {
            t.counts.volatile -= 1;
            t.delete(self.keys.expiry(old.expires_at, key));
        }
        t.delete(user_row(key));
        self.note_removed(t, key, old.version)?;
        Ok(Some(old))
    }

    /// Rows from `start` (inclusive) while `keep` holds, at most `limit`, overlay applied.
    pub(crate) fn rows_from(
        &mut self,
        t: &Txn,
        start: &[u8],
        limit: usize,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<(Vec<u8>, Bytes)>> {
        let pending: Vec<(&Vec<u8>, &Option<Bytes>)> = t
            .rows
            .range(start.to_vec()..)
            .take_while(|(k, _)| keep(k))
            .collect();
        // Deletions in the overlay can hide at most that many stored rows.
        let want = limit.saturating_add(pending.len());
        let mut merged: BTreeMap<Vec<u8>, Bytes> = BTreeMap::new();
        self.db().scan_from(start, |k, v| {
            if !keep(k) || merged.len() >= want {
                return Ok(false);
            }
            merged.insert(k.to_vec(), v);
            Ok(true)
        })?;
        let scanned_all = merged.len() < want;
        let horizon = merged.keys().next_back().cloned();
        for (k, v) in pending {
            // Past the last stored row scanned, an overlay row may only come in if the scan
            // reached the end: otherwise a stored row before it could be missing.
            if !scanned_all && horizon.as_ref().is_some_and(|h| k > h) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}
