//! What most writes need to know of a key's stored record, kept in memory: whether it exists,
//! its version and its deadline. A `SET` needs no more (the key count and the scan row go with
//! a new key, the expiry row with a deadline, WATCH compares versions), and reading the record
//! from LevelDB for it (a seek over the memtable and every table) was most of an apply's cost.
//!
//! The cache holds the state of the database, never of an apply batch in progress: a batch sees
//! its own writes in its overlay first, and the keys it wrote are written through once the batch
//! is in LevelDB ([`KeyMetaCache::write_through`]). A key the cache does not hold is read from
//! the database. Whatever changes the database otherwise empties the cache: FLUSHALL does at
//! once; a snapshot install or a restart opens a new state machine with an empty one.
//!
//! Bounded: keys longer than [`MAX_CACHED_KEY`] are never cached, and the entries are kept in two
//! generations of at most [`GENERATION_BYTES`] each (counting each entry's key and a fixed
//! overhead). When the newer fills up, the older is dropped and the newer takes its place; a hit
//! in the older moves the key to the newer. Which keys are cached depends only on the sequence of
//! applies, so every replica (and a replay) caches alike; and a hit or a miss answers the same.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

use bytes::Bytes;

use super::keyspace::Record;

/// Longer keys are read from the database every time.
pub(crate) const MAX_CACHED_KEY: usize = 256;

/// Budget of one generation: the sum over its entries of the key's length plus
/// [`ENTRY_OVERHEAD`]. Two generations: at most twice this (plus the tables' slack).
pub(crate) const GENERATION_BYTES: usize = 8 << 20;

/// Roughly what an entry costs besides its key bytes (the table slot, the key's allocation).
const ENTRY_OVERHEAD: usize = 64;

/// A stored key's version and deadline ([`Record`] without the value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyMeta {
    pub(crate) version: u64,
    pub(crate) expires_at: u64,
}

impl KeyMeta {
    pub(crate) fn of(record: &Record) -> KeyMeta {
        KeyMeta {
            version: record.version,
            expires_at: record.expires_at,
        }
    }

    /// Whether the key is gone at log time `now` (as [`Record::expired_at`]).
    pub(crate) fn expired_at(&self, now: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }
}

/// A fixed-key hasher: lookups only, never an iteration, so the order does not matter, but the
/// state machine takes no randomness from the OS.
type Table = HashMap<Box<[u8]>, Option<KeyMeta>, BuildHasherDefault<DefaultHasher>>;

/// Per user key: `Some(meta)` if the database holds a record, `None` if it holds none.
#[derive(Default)]
pub(crate) struct KeyMetaCache {
    newer: Table,
    older: Table,
    newer_bytes: usize,
    budget: usize,
}

impl KeyMetaCache {
    pub(crate) fn new() -> KeyMetaCache {
        Self::with_budget(GENERATION_BYTES)
    }

    pub(crate) fn with_budget(budget: usize) -> KeyMetaCache {
        KeyMetaCache {
            budget,
            ..KeyMetaCache::default()
        }
    }

    /// What the database holds for `key`, if known: `Some(None)` is "no record".
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<Option<KeyMeta>> {
        if let Some(m) = self.newer.get(key) {
            return Some(*m);
        }
        let (key, meta) = self.older.remove_entry(key)?;
        self.insert_new(key, meta);
        Some(meta)
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.newer.contains_key(key) || self.older.contains_key(key)
    }

    /// Records what the database holds for `key` (read from it, or just written to it).
    pub(crate) fn put(&mut self, key: &[u8], meta: Option<KeyMeta>) {
        if key.len() > MAX_CACHED_KEY {
            return;
        }
        if let Some(slot) = self.newer.get_mut(key) {
            *slot = meta;
            return;
        }
        // A stale copy in the older generation is shadowed by the newer one until it is dropped.
        self.insert_new(key.into(), meta);
    }

    fn insert_new(&mut self, key: Box<[u8]>, meta: Option<KeyMeta>) {
        let cost = key.len() + ENTRY_OVERHEAD;
        if self.newer_bytes + cost > self.budget && !self.newer.is_empty() {
            self.older = std::mem::take(&mut self.newer);
            self.newer_bytes = 0;
        }
        self.newer_bytes += cost;
        self.newer.insert(key, meta);
    }

    /// After a batch is written: the user rows it wrote (`0x01 | key`, a record or a deletion).
    pub(crate) fn write_through<'a>(
        &mut self,
        user_rows: impl Iterator<Item = (&'a Vec<u8>, &'a Option<Bytes>)>,
    ) {
        for (row, value) in user_rows {
            let meta = value.as_deref().and_then(Record::meta_of_own);
            self.put(&row[1..], meta);
        }
    }

    /// Forgets everything (the database changed under the cache: FLUSHALL).
    pub(crate) fn clear(&mut self) {
        self.newer = Table::default();
        self.older = Table::default();
        self.newer_bytes = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }

    /// What the cache says of each key it holds (the newer generation's word where both have
    /// it), in key order.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<(Vec<u8>, Option<KeyMeta>)> {
        let mut all = std::collections::BTreeMap::new();
        for (k, m) in self.older.iter().chain(self.newer.iter()) {
            all.insert(k.to_vec(), *m);
        }
        all.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: u64) -> Option<KeyMeta> {
        Some(KeyMeta {
            version,
            expires_at: 0,
        })
    }

    #[test]
    fn stays_within_two_generations_and_keeps_what_is_used() {
        let per_key = 4 + ENTRY_OVERHEAD;
        let mut c = KeyMetaCache::with_budget(10 * per_key);
        for i in 0..100u32 {
            c.put(&i.to_be_bytes(), meta(u64::from(i)));
            // Key 0 is read all along: every hit in the older generation brings it back.
            assert_eq!(c.get(&0u32.to_be_bytes()), Some(meta(0)), "after {i}");
            assert!(c.len() <= 20, "{} entries after {i}", c.len());
        }
        assert_eq!(
            c.get(&1u32.to_be_bytes()),
            None,
            "an old key unused is dropped"
        );
        assert_eq!(c.get(&99u32.to_be_bytes()), Some(meta(99)));
    }

    #[test]
    fn a_newer_entry_shadows_a_stale_older_one() {
        let per_key = 1 + ENTRY_OVERHEAD;
        let mut c = KeyMetaCache::with_budget(2 * per_key);
        c.put(b"a", meta(1));
        c.put(b"b", meta(2));
        c.put(b"c", meta(3)); // a and b are now the older generation
        c.put(b"a", None);
        assert_eq!(c.get(b"a"), Some(None));
        c.put(b"d", meta(4));
        c.put(b"e", meta(5));
        assert_eq!(c.get(b"a"), Some(None), "the older copy never comes back");
    }

    #[test]
    fn long_keys_are_not_cached() {
        let mut c = KeyMetaCache::new();
        let long = vec![7u8; MAX_CACHED_KEY + 1];
        c.put(&long, meta(1));
        assert_eq!(c.get(&long), None);
        assert!(!c.contains(&long));
    }
}
