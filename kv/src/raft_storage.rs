//! The Raft log and hard state on LevelDB (`<data-dir>/raft_logs`).
//!
//! Layout, one prefix byte per kind of key so that metadata and entries never collide and
//! entries sort by index:
//! * `0x00 'h'` hard state, `0x00 's'` log start (the snapshot's index and term), `0x00 'l'` the
//!   last index, so that a log whose tail disappeared is noticed rather than silently shortened,
//!   `0x00 'p'` the first index of an unfinished compaction;
//! * `0x01 | index: u64 BE` one entry: `version | kind | term | index | payload | crc32`.
//!
//! Every [`Persist`] is one synced `WriteBatch`, so the hard state and the entries it carries are
//! durable together or not at all. An entry records its own index and a CRC: a value moved to the
//! wrong key, damaged on disk, or missing from the middle of the log is reported on load, naming
//! the directory and the index, instead of being handed to Raft.
//!
//! This database is only ever read by key: the metadata says where the log begins and ends, so
//! loading is one point read per entry and finishing a compaction needs no scan. A point read
//! that misses (the compaction marker, usually, at open) is confirmed by an iterator in `ldb`,
//! because rusty-leveldb's `get` can answer "absent" for a stored key; that once read the last
//! index as missing after a compaction and a reboot, and the log looked as if it ended at the
//! log start. The iterator's snapshot would stop garbage collection, which `ldb`'s pinned
//! snapshot keeps going.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft_core::{Entry, EntryKind, HardState, Index, Persist, RestartState, SnapshotMeta, Term};
use rusty_leveldb::WriteBatch;

use crate::codec::{self, Reader};
use crate::env::SyncStats;
use crate::error::{DecodeError, Error, Result};
use crate::ldb::{Ldb, StorageEnv};

/// Subdirectory of the data directory that holds the log.
pub const RAFT_LOGS_DIR: &str = "raft_logs";

const META: u8 = 0x00;
const ENTRY: u8 = 0x01;
const KEY_HARD_STATE: &[u8] = &[META, b'h'];
const KEY_LOG_START: &[u8] = &[META, b's'];
const KEY_LAST_INDEX: &[u8] = &[META, b'l'];
/// Present while a compaction's deletions are unfinished: the first index still to delete.
const KEY_PURGE_FROM: &[u8] = &[META, b'p'];
const FORMAT_VERSION: u8 = 1;
/// Deletions per batch when compacting, so that compaction never builds one huge batch.
pub const COMPACT_CHUNK: u64 = 1024;
/// Bound on a stored payload; larger lengths can only come from damage.
const MAX_PAYLOAD: usize = 256 << 20;

fn entry_key(index: Index) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut b = Vec::with_capacity(e.payload.len() + 30);
    b.push(FORMAT_VERSION);
    b.push(e.kind.code());
    codec::put_u64(&mut b, e.term);
    codec::put_u64(&mut b, e.index);
    codec::put_bytes(&mut b, &e.payload);
    codec::seal(&mut b);
    b
}

fn decode_entry(v: Bytes) -> Result<Entry, DecodeError> {
    codec::unseal(&v)?;
    let body = v.slice(..v.len() - 4);
    let mut r = Reader::new(body);
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let tag = r.u8()?;
    let kind = EntryKind::from_code(tag).ok_or(DecodeError::UnknownTag {
        what: "entry kind",
        tag,
    })?;
    let term = r.u64()?;
    let index = r.u64()?;
    let payload = r.bytes("payload", MAX_PAYLOAD)?;
    r.finish()?;
    Ok(Entry::new(term, index, kind, payload))
}

fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut b = vec![FORMAT_VERSION];
    codec::put_u64(&mut b, hs.term);
    // Node id 0 is reserved for "nobody", so it can stand for "no vote".
    codec::put_u64(&mut b, hs.vote.unwrap_or(0));
    codec::put_u64(&mut b, hs.commit);
    codec::seal(&mut b);
    b
}

fn decode_hard_state(v: Bytes) -> Result<HardState, DecodeError> {
    let mut r = versioned(v)?;
    let term = r.u64()?;
    let vote = r.u64()?;
    let commit = r.u64()?;
    r.finish()?;
    Ok(HardState {
        term,
        vote: (vote != 0).then_some(vote),
        commit,
    })
}

fn encode_pair(a: u64, b: u64) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    codec::put_u64(&mut out, a);
    codec::put_u64(&mut out, b);
    codec::seal(&mut out);
    out
}

fn decode_pair(v: Bytes) -> Result<(u64, u64), DecodeError> {
    let mut r = versioned(v)?;
    let a = r.u64()?;
    let b = r.u64()?;
    r.finish()?;
    Ok((a, b))
}

fn versioned(v: Bytes) -> Result<Reader, DecodeError> {
    codec::unseal(&v)?;
    let mut r = Reader::new(v.slice(..v.len() - 4));
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    Ok(r)
}

/// The durable Raft state of one node. One owner; every method takes `&mut self`.
pub struct RaftStorage {
    db: Ldb,
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Index of the last stored entry (`snapshot.index` when the log is empty).
    last_index: Index,
}

impl RaftStorage {
    /// Opens (creating if needed) `<data_dir>/raft_logs` on the real disk.
    pub fn open(data_dir: &Path) -> Result<RaftStorage> {
        Self::open_with(data_dir, &StorageEnv::Disk)
    }

    pub fn open_with(data_dir: &Path, env: &StorageEnv) -> Result<RaftStorage> {
        let db = Ldb::open(&data_dir.join(RAFT_LOGS_DIR), env)?;
        let mut s = RaftStorage {
            db,
            hard_state: HardState::default(),
            snapshot: SnapshotMeta::default(),
            last_index: 0,
        };
        if let Some(v) = s.db.get(KEY_HARD_STATE)? {
            s.hard_state = decode_hard_state(v).map_err(|e| s.corrupt(None, "hard state", e))?;
        }
        if let Some(v) = s.db.get(KEY_LOG_START)? {
            let (index, term) = decode_pair(v).map_err(|e| s.corrupt(None, "log start", e))?;
            s.snapshot = SnapshotMeta { index, term };
        }
        s.last_index = match s.db.get(KEY_LAST_INDEX)? {
            Some(v) => decode_pair(v)
                .map_err(|e| s.corrupt(None, "last index", e))?
                .0
                .max(s.snapshot.index),
            None => s.snapshot.index,
        };
        s.purge_below_start()?;
        Ok(s)
    }

    fn corrupt(&self, index: Option<Index>, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Corruption {
            path: self.db.path().to_path_buf(),
            index,
            detail: format!("{what}: {e}"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.db.path().to_path_buf()
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The last entry covered by the snapshot; the log continues after it.
    pub fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }

    pub fn first_index(&self) -> Index {
        self.snapshot.index + 1
    }

    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// Sync counters of the disk environment (`None` on a simulated one).
    pub fn sync_stats(&self) -> Option<Arc<SyncStats>> {
        self.db.sync_stats()
    }

    /// Stores one write of the core atomically and durably (one synced `WriteBatch`). If it
    /// carries entries, every stored entry from the first one's index on is replaced.
    pub fn persist(&mut self, p: &Persist) -> Result<()> {
        let mut batch = WriteBatch::default();
        let mut new_last = self.last_index;
        if let Some(first) = p.overwrite_from() {
            if first <= self.snapshot.index || first > self.last_index + 1 {
                return Err(Error::InvalidRequest(format!(
                    "entries from index {first} cannot be stored in {}: the log holds {}..={}",
                    self.db.path().display(),
                    self.first_index(),
                    self.last_index
                )));
            }
            for (k, e) in p.entries.iter().enumerate() {
                if e.index != first + k as u64 {
                    return Err(Error::InvalidRequest(format!(
                        "entries to persist are not contiguous: index {} follows {}",
                        e.index,
                        first + k as u64 - 1
                    )));
                }
            }
            for i in first..=self.last_index {
                batch.delete(&entry_key(i));
            }
            for e in &p.entries {
                batch.put(&entry_key(e.index), &encode_entry(e));
            }
            new_last = first + p.entries.len() as u64 - 1;
            batch.put(KEY_LAST_INDEX, &encode_pair(new_last, 0));
        }
        if let Some(hs) = &p.hard_state {
            batch.put(KEY_HARD_STATE, &encode_hard_state(hs));
        }
        if batch.count() == 0 {
            return Ok(());
        }
        self.db.write(batch, true)?;
        self.last_index = new_last;
        if let Some(hs) = p.hard_state {
            self.hard_state = hs;
        }
        Ok(())
    }

    /// Reads one stored entry.
    pub fn entry(&mut self, index: Index) -> Result<Option<Entry>> {
        let Some(v) = self.db.get(&entry_key(index))? else {
            return Ok(None);
        };
        let e = decode_entry(v).map_err(|e| self.corrupt(Some(index), "entry", e))?;
        if e.index != index {
            return Err(self.corrupt(
                Some(index),
                "entry",
                format!("stored under index {index} but records index {}", e.index),
            ));
        }
        Ok(Some(e))
    }

    /// Everything a restarting core needs, checked: each entry's CRC and index, no gaps up to the
    /// recorded last index, terms that never decrease. `applied` is the log start; the caller raises it
    /// to the state machine's applied index.
    pub fn load(&mut self) -> Result<RestartState> {
        let mut entries = Vec::new();
        let mut expected = self.snapshot.index + 1;
        while expected <= self.last_index {
            let Some(v) = self.db.get(&entry_key(expected))? else {
                return Err(self.corrupt(
                    Some(expected),
                    "log",
                    format!(
                        "entry {expected} is missing (gap: the log should end at {})",
                        self.last_index
                    ),
                ));
            };
            let e = decode_entry(v)
                .map_err(|e| self.corrupt(Some(expected), "entry does not decode", e))?;
            if e.index != expected {
                return Err(self.corrupt(
                    Some(expected),
                    "log",
                    format!(
                        "entry stored under index {expected} records index {}",
                        e.index
                    ),
                ));
            }
            if let Some(prev) = entries.last().map(|p: &Entry| p.term) {
                if e.term < prev {
                    return Err(self.corrupt(
                        Some(expected),
                        "log",
                        format!("term {} follows term {prev}: terms never decrease", e.term),
                    ));
                }
            }
            entries.push(e);
            expected += 1;
        }
        let corrupt = |index: Index, detail: String| Error::Corruption {
            path: self.db.path().to_path_buf(),
            index: Some(index),
            detail,
        };
        if let Some(first) = entries.first() {
            if first.term < self.snapshot.term {
                return Err(corrupt(
                    first.index,
                    format!(
                        "term {} is below the snapshot's term {}",
                        first.term, self.snapshot.term
                    ),
                ));
            }
        }
        Ok(RestartState {
            hard_state: self.hard_state,
            snapshot: self.snapshot,
            entries,
            applied: self.snapshot.index,
        })
    }

    /// Drops the log up to and including `up_to`, which must be stored. The new log start is
    /// made durable first, then the entries are deleted in chunks of [`COMPACT_CHUNK`]; a crash
    /// in between leaves entries below the start, which the next open deletes. The caller must
    /// not compact past what the state machine has durably applied.
    pub fn compact(&mut self, up_to: Index) -> Result<()> {
        if up_to <= self.snapshot.index {
            return Ok(());
        }
        if up_to > self.last_index {
            return Err(Error::InvalidRequest(format!(
                "cannot compact {} up to {up_to}: the log ends at {}",
                self.db.path().display(),
                self.last_index
            )));
        }
        let term: Term = match self.entry(up_to)? {
            Some(e) => e.term,
            None => {
                return Err(self.corrupt(Some(up_to), "compaction", "entry is missing"));
            }
        };
        let old_first = self.first_index();
        let mut batch = WriteBatch::default();
        batch.put(KEY_LOG_START, &encode_pair(up_to, term));
        batch.put(KEY_PURGE_FROM, &encode_pair(old_first, 0));
        self.db.write(batch, true)?;
        self.snapshot = SnapshotMeta { index: up_to, term };
        self.purge(old_first, 0)
    }

    /// Installs a snapshot's log part (the state machine's part is the caller's): in one synced
    /// `WriteBatch`, the log start becomes `meta`, the log becomes empty after it, and the hard
    /// state's commit is raised to at least `meta.index` (term and vote are kept). Then every
    /// stored entry is deleted in chunks of [`COMPACT_CHUNK`], as [`RaftStorage::compact`] does;
    /// a crash in between leaves entries that the next open deletes, and that `load` never
    /// reads (they lie outside the recorded log).
    ///
    /// Installing the current log start again does nothing (a restart finishing an interrupted
    /// install repeats it). A snapshot below the current log start is refused.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<()> {
        if meta == self.snapshot {
            return self.purge_below_start();
        }
        if meta.index <= self.snapshot.index {
            return Err(Error::InvalidRequest(format!(
                "cannot install snapshot {}/{} in {}: the log already starts after {}/{}",
                meta.index,
                meta.term,
                self.db.path().display(),
                self.snapshot.index,
                self.snapshot.term
            )));
        }
        let (old_first, old_last) = (self.first_index(), self.last_index);
        let hs = HardState {
            commit: self.hard_state.commit.max(meta.index),
            ..self.hard_state
        };
        let mut batch = WriteBatch::default();
        batch.put(KEY_LOG_START, &encode_pair(meta.index, meta.term));
        batch.put(KEY_LAST_INDEX, &encode_pair(meta.index, 0));
        batch.put(KEY_HARD_STATE, &encode_hard_state(&hs));
        batch.put(KEY_PURGE_FROM, &encode_pair(old_first, old_last));
        self.db.write(batch, true)?;
        self.snapshot = meta;
        self.last_index = meta.index;
        self.hard_state = hs;
        self.purge(old_first, old_last)
    }

    /// Deletes the entries from `from` up to the log start (or up to `to` if that is further:
    /// an install drops the whole old log), then the marker.
    fn purge(&mut self, from: Index, to: Index) -> Result<()> {
        self.delete_range(from, self.snapshot.index.max(to))?;
        let mut batch = WriteBatch::default();
        batch.delete(KEY_PURGE_FROM);
        self.db.write(batch, false)
    }

    fn delete_range(&mut self, from: Index, to: Index) -> Result<()> {
        let mut lo = from;
        while lo <= to {
            let hi = to.min(lo.saturating_add(COMPACT_CHUNK - 1));
            let mut batch = WriteBatch::default();
            for i in lo..=hi {
                batch.delete(&entry_key(i));
            }
            self.db.write(batch, false)?;
            lo = hi + 1;
        }
        Ok(())
    }

    /// Finishes a compaction that a crash interrupted.
    fn purge_below_start(&mut self) -> Result<()> {
        match self.db.get(KEY_PURGE_FROM)? {
            Some(v) => {
                let (from, to) =
                    decode_pair(v).map_err(|e| self.corrupt(None, "compaction marker", e))?;
                self.purge(from, to)
            }
            None => Ok(()),
        }
    }

    /// Asks LevelDB to compact the whole database now, so that the space of entries dropped by
    /// [`RaftStorage::compact`] is returned at once rather than by background compactions.
    pub fn reclaim_space(&mut self) -> Result<()> {
        self.db.compact_all()
    }

    /// Forces LevelDB's buffers to disk (writes here are synced already; used before close).
    pub fn flush(&mut self) -> Result<()> {
        self.db.flush()
    }

    #[cfg(test)]
    pub(crate) fn raw_get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.db.get(key)
    }

    #[cfg(test)]
    pub(crate) fn raw_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put(key, value);
        self.db.write(b, true)
    }

    #[cfg(test)]
    pub(crate) fn raw_delete(&mut self, key: &[u8]) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete(key);
        self.db.write(b, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::WriteId;

    fn ent(term: Term, index: Index, payload: &str) -> Entry {
        Entry::new(
            term,
            index,
            EntryKind::Normal,
            Bytes::from(payload.to_owned()),
        )
    }

    fn persist(hs: Option<HardState>, entries: Vec<Entry>) -> Persist {
        Persist {
            id: WriteId { seq: 0, term: 0 },
            hard_state: hs,
            entries,
        }
    }

    fn hs(term: Term, vote: Option<u64>, commit: Index) -> HardState {
        HardState { term, vote, commit }
    }

    #[test]
    fn empty_storage_loads_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RaftStorage::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), RestartState::default());
        assert!(dir.path().join(RAFT_LOGS_DIR).is_dir());
    }

    #[test]
    fn persist_overwrite_and_load() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = RaftStorage::open(dir.path()).unwrap();
            let first: Vec<Entry> = (1..=5).map(|i| ent(1, i, &format!("a{i}"))).collect();
            s.persist(&persist(Some(hs(1, Some(2), 0)), first)).unwrap();
            // A new leader overwrites from 3 with a shorter suffix: 4 and 5 must go.
            s.persist(&persist(Some(hs(2, None, 2)), vec![ent(2, 3, "b3")]))
                .unwrap();
            assert_eq!(s.last_index(), 3);
            // Hard state alone leaves the log as it is.
            s.persist(&persist(Some(hs(3, Some(1), 3)), vec![]))
                .unwrap();
        }
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let rs = s.load().unwrap();
        assert_eq!(rs.hard_state, hs(3, Some(1), 3));
        assert_eq!(
            rs.entries,
            vec![ent(1, 1, "a1"), ent(1, 2, "a2"), ent(2, 3, "b3")]
        );
        assert_eq!(s.entry(4).unwrap(), None);
        assert_eq!(s.entry(5).unwrap(), None);
        // Appending after an overwrite continues from the new end.
        s.persist(&persist(None, vec![ent(3, 4, "c4")])).unwrap();
        assert_eq!(s.load().unwrap().entries.len(), 4);
    }

    #[test]
    fn persist_refuses_gaps_and_rewriting_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RaftStorage::open(dir.path()).unwrap();
        s.persist(&persist(None, vec![ent(1, 1, "x")])).unwrap();
        assert!(matches!(
            s.persist(&persist(None, vec![ent(1, 3, "x")])),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            s.persist(&persist(None, vec![ent(1, 2, "x"), ent(1, 4, "y")])),
            Err(Error::InvalidRequest(_))
        ));
        s.persist(&persist(None, vec![ent(1, 2, "x")])).unwrap();
        s.compact(1).unwrap();
        assert!(matches!(
            s.persist(&persist(None, vec![ent(2, 1, "x")])),
            Err(Error::InvalidRequest(_))
        ));
        assert_eq!(s.load().unwrap().entries, vec![ent(1, 2, "x")]);
    }

    #[test]
    fn compaction_moves_the_log_start_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = RaftStorage::open(dir.path()).unwrap();
            let es: Vec<Entry> = (1..=3000).map(|i| ent(1 + i / 1000, i, "p")).collect();
            s.persist(&persist(None, es)).unwrap();
            s.compact(2500).unwrap();
            assert!(s.compact(3001).is_err());
            s.compact(100).unwrap(); // below the start: nothing to do
        }
        let mut s = RaftStorage::open(dir.path()).unwrap();
        let rs = s.load().unwrap();
        assert_eq!(
            rs.snapshot,
            SnapshotMeta {
                index: 2500,
                term: 3
            }
        );
        assert_eq!(rs.applied, 2500);
        assert_eq!(rs.entries.first().map(|e| e.index), Some(2501));
        assert_eq!(rs.entries.len(), 500);
        assert_eq!(s.entry(1).unwrap(), None);
        assert_eq!(s.entry(2500).unwrap(), None);
    }

    #[test]
    fn interrupted_compaction_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = RaftStorage::open(dir.path()).unwrap();
            let es: Vec<Entry> = (1..=10).map(|i| ent(1, i, "p")).collect();
            s.persist(&persist(None, es)).unwrap();
            // The crash window: log start and marker durable, no entry deleted yet.
            let mut b = WriteBatch::default();
            b.put(KEY_LOG_START, &encode_pair(6, 1));
            b.put(KEY_PURGE_FROM, &encode_pair(1, 0));
            s.db.write(b, true).unwrap();
        }
        let mut s = RaftStorage::open(dir.path()).unwrap();
        for i in 1..=6 {
            assert_eq!(s.raw_get(&entry_key(i)).unwrap(), None, "entry {i}");
        }
        assert_eq!(s.raw_get(KEY_PURGE_FROM).unwrap(), None);
        let rs = s.load().unwrap();
        assert_eq!(rs.entries.first().map(|e| e.index), Some(7));
    }

    fn expect_corruption(dir: &Path, index: Index, needle: &str) {
        let mut s = RaftStorage::open(dir).unwrap();
        let e = s.load().unwrap_err();
        let msg = e.to_string();
        match &e {
            Error::Corruption {
                index: Some(i),
                path,
                ..
            } => {
                assert_eq!(*i, index, "{msg}");
                assert!(path.ends_with(RAFT_LOGS_DIR), "{msg}");
            }
            other => panic!("expected corruption at {index}, got {other}"),
        }
        assert!(msg.contains(&format!("index {index}")), "{msg}");
        assert!(msg.contains(RAFT_LOGS_DIR), "{msg}");
        assert!(msg.contains(needle), "{msg}");
    }

    fn five_entries(dir: &Path) {
        let mut s = RaftStorage::open(dir).unwrap();
        let es: Vec<Entry> = (1..=5).map(|i| ent(1, i, "payload")).collect();
        s.persist(&persist(Some(hs(1, None, 0)), es)).unwrap();
    }

    #[test]
    fn flipped_byte_in_an_entry_is_reported_with_its_index() {
        let dir = tempfile::tempdir().unwrap();
        five_entries(dir.path());
        {
            let mut s = RaftStorage::open(dir.path()).unwrap();
            let mut v = s.raw_get(&entry_key(3)).unwrap().unwrap().to_vec();
            v[20] ^= 0x40;
            s.raw_put(&entry_key(3), &v).unwrap();
        }
        expect_corruption(dir.path(), 3, "checksum");
    }

    #[test]
    fn entry_under_the_wrong_key_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        five_entries(dir.path());
        {
            let mut s = RaftStorage::open(dir.path()).unwrap();
            let v = s.raw_get(&entry_key(4)).unwrap().unwrap();
            s.raw_put(&entry_key(2), &v).unwrap();
        }
        expect_corruption(dir.path(), 2, "records index 4");
    }

    #[test]
    fn decreasing_terms_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        five_entries(dir.path());
        RaftStorage::open(dir.path())
            .unwrap()
            .raw_put(&entry_key(4), &encode_entry(&ent(0, 4, "payload")))
            .unwrap();
        expect_corruption(dir.path(), 4, "never decrease");
    }

    #[test]
    fn gap_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        five_entries(dir.path());
        RaftStorage::open(dir.path())
            .unwrap()
            .raw_delete(&entry_key(3))
            .unwrap();
        expect_corruption(dir.path(), 3, "missing");
    }

    #[test]
    fn lost_tail_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        five_entries(dir.path());
        RaftStorage::open(dir.path())
            .unwrap()
            .raw_delete(&entry_key(5))
            .unwrap();
        expect_corruption(dir.path(), 5, "should end at 5");
    }

    #[test]
    fn damaged_hard_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        five_entries(dir.path());
        {
            let mut s = RaftStorage::open(dir.path()).unwrap();
            let mut v = s.raw_get(KEY_HARD_STATE).unwrap().unwrap().to_vec();
            v[3] ^= 1;
            s.raw_put(KEY_HARD_STATE, &v).unwrap();
        }
        let e = RaftStorage::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("hard state"), "{e}");
    }

    #[test]
    fn power_cut_keeps_acknowledged_writes() {
        use crate::env::PowerCutEnv;
        let env = PowerCutEnv::new();
        let senv = StorageEnv::PowerCut(env.clone());
        let dir = Path::new("/node");
        {
            let mut s = RaftStorage::open_with(dir, &senv).unwrap();
            for i in 1..=50 {
                s.persist(&persist(Some(hs(i, None, 0)), vec![ent(i, i, "x")]))
                    .unwrap();
            }
            env.cut_power();
            // Refused after the cut: not acknowledged, and not stored.
            assert!(s
                .persist(&persist(Some(hs(99, None, 0)), vec![ent(99, 51, "y")]))
                .is_err());
        }
        env.power_on();
        let mut s = RaftStorage::open_with(dir, &senv).unwrap();
        let rs = s.load().unwrap();
        assert_eq!(rs.hard_state.term, 50);
        assert_eq!(rs.entries.len(), 50);
    }

    /// The shape the simulator found (seed 10 with sticky clients): the entries and the last
    /// index reach one table; a compaction (log start, marker, then the deletions of the entries
    /// and of the marker) reaches a newer table that holds no last-index record. Through
    /// rusty-leveldb's `DB::get` the last index then read as absent whenever that newer table's
    /// Bloom filter let the lookup in (a false positive, about one compaction point in a few
    /// hundred here), because the first key after it there is a deletion (see `ldb`): the log
    /// looked as if it ended at the log start. Every compaction point of a 300-entry log is
    /// tried, so the shape is hit whatever the filter's hashing; the test also checks that it
    /// still is. Both reopens are power cuts; a clean close and reopen does the same.
    #[test]
    fn last_index_survives_a_compaction_and_power_cuts() {
        use crate::env::PowerCutEnv;
        const N: Index = 300;
        let dir = Path::new("/node");
        let mut upstream_misses = Vec::new();
        for up_to in 1..N {
            let env = PowerCutEnv::new();
            let senv = StorageEnv::PowerCut(env.clone());
            {
                let mut s = RaftStorage::open_with(dir, &senv).unwrap();
                let entries: Vec<Entry> = (1..=N).map(|i| ent(1, i, "x")).collect();
                s.persist(&persist(Some(hs(1, Some(1), N)), entries))
                    .unwrap();
                env.cut_power();
            }
            // Reopening writes the recovered log into a table.
            env.power_on();
            {
                let mut s = RaftStorage::open_with(dir, &senv).unwrap();
                assert_eq!(s.last_index(), N);
                s.compact(up_to).unwrap();
                // A synced write after the compaction's unsynced deletions makes them durable.
                s.persist(&persist(Some(hs(1, Some(1), N)), vec![]))
                    .unwrap();
                env.cut_power();
            }
            env.power_on();
            let mut s = RaftStorage::open_with(dir, &senv).unwrap();
            if s.db.upstream_get(KEY_LAST_INDEX).is_none() {
                upstream_misses.push(up_to);
            }
            assert_eq!(
                s.snapshot(),
                SnapshotMeta {
                    index: up_to,
                    term: 1
                }
            );
            assert_eq!(
                s.last_index(),
                N,
                "compaction to {up_to}: the synced last index was lost"
            );
            let rs = s.load().unwrap();
            assert_eq!(rs.entries.len() as u64, N - up_to);
            assert_eq!(rs.entries.last().map(|e| e.index), Some(N));
            assert_eq!(rs.hard_state, hs(1, Some(1), N));
        }
        assert!(
            !upstream_misses.is_empty(),
            "no compaction point hits the rusty-leveldb lookup bug any more: fixed upstream, or \
             this test needs another shape"
        );
    }
}
