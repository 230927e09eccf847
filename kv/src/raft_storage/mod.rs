//! The Raft log and hard state on LevelDB (`<data-dir>/raft_logs`).
//!
//! Layout, one prefix byte per kind of key so that metadata and entries never collide and
//! entries sort by index:
//! * `0x00 'h'` hard state, `0x00 's'` log start (the snapshot's index, term and configuration
//!   in force at it), `0x00 'l'` the
//!   last index, so that a log whose tail disappeared is noticed rather than silently shortened,
//!   `0x00 'p'` the first index of an unfinished compaction;
//! * `0x01 | index: u64 BE` one entry: `version | kind | term | index | payload | crc32`;
//! * `0x02 | range id: u64 BE | ...` the same rows of a range other than the first, when the
//!   keyspace is split among several Raft groups (`crate::ranges`). The first range's rows keep
//!   the unprefixed keys, so a log written before ranges existed is the first range's log.
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

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

#[cfg(test)]
use bytes::Bytes;
use raft_core::{Entry, HardState, Index, Membership, Persist, RestartState, SnapshotMeta, Term};
use rusty_leveldb::WriteBatch;

use crate::env::SyncStats;
use crate::error::{Error, Result};
use crate::ldb::{Ldb, StorageEnv};
use crate::ranges::{RangeId, FIRST_RANGE};

mod records;
pub use records::COMPACT_CHUNK;
use records::{
    decode_entry, decode_hard_state, decode_log_start, decode_pair, encode_entry,
    encode_hard_state, encode_log_start, encode_pair, LogKeys,
};
#[cfg(test)]
use records::{entry_key, KEY_HARD_STATE, KEY_LAST_INDEX, KEY_LOG_START, KEY_PURGE_FROM};

/// Subdirectory of the data directory that holds the log.
pub const RAFT_LOGS_DIR: &str = "raft_logs";

/// The durable Raft state of one range's group on this node. One owner; every method takes
/// `&mut self`. The groups of one node share one database ([`RaftStorage::open_range`]), each
/// under its own key prefix, so that one synced batch can carry all their writes
/// ([`RaftStorage::persist_together`]).
pub struct RaftStorage {
    db: Rc<RefCell<Ldb>>,
    path: PathBuf,
    range: RangeId,
    keys: LogKeys,
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Index of the last stored entry (`snapshot.index` when the log is empty).
    last_index: Index,
    /// Entries deleted by compactions and installs whose disk space LevelDB has not been asked
    /// to give back yet: an inclusive range, oldest first (see [`RaftStorage::reclaim_step`]).
    unreclaimed: Option<(Index, Index)>,
}

impl RaftStorage {
    /// Opens (creating if needed) `<data_dir>/raft_logs` on the real disk.
    pub fn open(data_dir: &Path) -> Result<RaftStorage> {
        Self::open_with(data_dir, &StorageEnv::Disk)
    }

    /// Opens (creating if needed) `<data_dir>/raft_logs` and in it the first range's log.
    pub fn open_with(data_dir: &Path, env: &StorageEnv) -> Result<RaftStorage> {
        let db = Ldb::open(&data_dir.join(RAFT_LOGS_DIR), env)?;
        let path = db.path().to_path_buf();
        Self::load_range(Rc::new(RefCell::new(db)), path, FIRST_RANGE)
    }

    /// The log of another range in the same database (empty if it has none yet).
    pub fn open_range(&self, range: RangeId) -> Result<RaftStorage> {
        Self::load_range(self.db.clone(), self.path.clone(), range)
    }

    fn load_range(db: Rc<RefCell<Ldb>>, path: PathBuf, range: RangeId) -> Result<RaftStorage> {
        let mut s = RaftStorage {
            db,
            path,
            range,
            keys: LogKeys::of(range),
            hard_state: HardState::default(),
            snapshot: SnapshotMeta::default(),
            last_index: 0,
            unreclaimed: None,
        };
        if let Some(v) = s.get(&s.keys.hard_state())? {
            s.hard_state = decode_hard_state(v).map_err(|e| s.corrupt(None, "hard state", e))?;
        }
        if let Some(v) = s.get(&s.keys.log_start())? {
            s.snapshot = decode_log_start(v).map_err(|e| s.corrupt(None, "log start", e))?;
        }
        s.last_index = match s.get(&s.keys.last_index())? {
            Some(v) => decode_pair(v)
                .map_err(|e| s.corrupt(None, "last index", e))?
                .0
                .max(s.snapshot.index),
            None => s.snapshot.index,
        };
        s.purge_below_start()?;
        // Whatever an earlier run deleted without giving the space back (a crash mid-way, or a
        // version that never did) is returned now, before the node serves: usually nothing is
        // left there and this costs a look at the table list.
        if s.snapshot.index > 0 {
            let (from, to) = (s.keys.entry(0), s.keys.entry(s.snapshot.index));
            s.db.borrow_mut().compact_range(&from, &to)?;
        }
        Ok(s)
    }

    /// The range whose log this is.
    pub fn range(&self) -> RangeId {
        self.range
    }

    fn get(&self, key: &[u8]) -> Result<Option<bytes::Bytes>> {
        self.db.borrow_mut().get(key)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.db.borrow_mut().write(batch, sync)
    }

    fn corrupt(&self, index: Option<Index>, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Corruption {
            path: self.path.clone(),
            index,
            detail: format!("{range}{what}: {e}", range = self.range_label()),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Names the range in errors, except the first (a node with one range has only it).
    fn range_label(&self) -> String {
        if self.range == FIRST_RANGE {
            String::new()
        } else {
            format!("range {}: ", self.range)
        }
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The last entry covered by the snapshot; the log continues after it.
    pub fn snapshot(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    pub fn first_index(&self) -> Index {
        self.snapshot.index + 1
    }

    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// Sync counters of the disk environment (`None` on a simulated one).
    pub fn sync_stats(&self) -> Option<Arc<SyncStats>> {
        self.db.borrow().sync_stats()
    }

    /// Stores one write of the core atomically and durably (one synced `WriteBatch`). If it
    /// carries entries, every stored entry from the first one's index on is replaced.
    pub fn persist(&mut self, p: &Persist) -> Result<()> {
        let mut batch = WriteBatch::default();
        let staged = self.stage(p, &mut batch)?;
        if batch.count() == 0 {
            return Ok(());
        }
        self.write(batch, true)?;
        self.commit(staged);
        Ok(())
    }

    /// Stores one write for each of several ranges of one database in one synced `WriteBatch`
    /// (group commit across groups: one fsync for all). Each write is checked as
    /// [`RaftStorage::persist`] checks it; a range may appear once.
    pub fn persist_together(writes: &mut [(&mut RaftStorage, &Persist)]) -> Result<()> {
        let Some(db) = writes.first().map(|(log, _)| log.db.clone()) else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        let mut staged = Vec::with_capacity(writes.len());
        for (k, (log, p)) in writes.iter().enumerate() {
            if !Rc::ptr_eq(&log.db, &db) {
                return Err(Error::InvalidRequest(format!(
                    "range {} keeps its log in another database than range {}",
                    log.range, writes[0].0.range
                )));
            }
            if writes[..k]
                .iter()
                .any(|(other, _)| other.range == log.range)
            {
                return Err(Error::InvalidRequest(format!(
                    "two writes of range {} in one batch: merge them first",
                    log.range
                )));
            }
            staged.push(log.stage(p, &mut batch)?);
        }
        if batch.count() == 0 {
            return Ok(());
        }
        db.borrow_mut().write(batch, true)?;
        for ((log, _), s) in writes.iter_mut().zip(staged) {
            log.commit(s);
        }
        Ok(())
    }

    /// Checks one write and adds its rows to `batch`; nothing changes until [`Self::commit`].
    fn stage(&self, p: &Persist, batch: &mut WriteBatch) -> Result<Staged> {
        let mut new_last = self.last_index;
        if let Some(first) = p.overwrite_from() {
            if first <= self.snapshot.index || first > self.last_index + 1 {
                return Err(Error::InvalidRequest(format!(
                    "entries from index {first} cannot be stored in {}: the {}log holds {}..={}",
                    self.path.display(),
                    self.range_label(),
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
                batch.delete(&self.keys.entry(i));
            }
            for e in &p.entries {
                batch.put(&self.keys.entry(e.index), &encode_entry(e));
            }
            new_last = first + p.entries.len() as u64 - 1;
            batch.put(&self.keys.last_index(), &encode_pair(new_last, 0));
        }
        if let Some(hs) = &p.hard_state {
            batch.put(&self.keys.hard_state(), &encode_hard_state(hs));
        }
        Ok(Staged {
            last_index: new_last,
            hard_state: p.hard_state,
        })
    }

    fn commit(&mut self, staged: Staged) {
        self.last_index = staged.last_index;
        if let Some(hs) = staged.hard_state {
            self.hard_state = hs;
        }
    }

    /// Reads one stored entry.
    pub fn entry(&mut self, index: Index) -> Result<Option<Entry>> {
        let Some(v) = self.get(&self.keys.entry(index))? else {
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
            let Some(v) = self.get(&self.keys.entry(expected))? else {
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
            path: self.path.clone(),
            index: Some(index),
            detail: format!("{}{detail}", self.range_label()),
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
            snapshot: self.snapshot.clone(),
            entries,
            applied: self.snapshot.index,
        })
    }

    /// Gives the log of a range created by a split its start, if it has no state yet: the log
    /// start becomes `meta` (the new range's initial index and term, the parent's
    /// configuration), the log is empty after it, and the hard state is `meta.term` with no
    /// vote and `meta.index` committed, in one synced batch. Every replica of the parent
    /// writes the same, so the new group starts as followers of one term in one configuration,
    /// which can elect a leader. A log that has any state (an earlier call, or a snapshot or
    /// entries from the new group's leader) is left as it is: the node calls this for every
    /// range at every start.
    pub fn start_split_range(&mut self, meta: SnapshotMeta) -> Result<()> {
        let untouched = self.hard_state == HardState::default()
            && self.snapshot == SnapshotMeta::default()
            && self.last_index == 0;
        if !untouched {
            return Ok(());
        }
        if self.range == FIRST_RANGE || meta.index == 0 || meta.term == 0 {
            return Err(Error::InvalidRequest(format!(
                "{}: a split range's log starts at a snapshot point of a range other than the \
                 first, not at {}/{} of range {}",
                self.path.display(),
                meta.index,
                meta.term,
                self.range
            )));
        }
        let hs = HardState {
            term: meta.term,
            vote: None,
            commit: meta.index,
        };
        let mut batch = WriteBatch::default();
        batch.put(&self.keys.log_start(), &encode_log_start(&meta));
        batch.put(&self.keys.last_index(), &encode_pair(meta.index, 0));
        batch.put(&self.keys.hard_state(), &encode_hard_state(&hs));
        self.write(batch, true)?;
        self.last_index = meta.index;
        self.snapshot = meta;
        self.hard_state = hs;
        Ok(())
    }

    /// Drops the log up to and including `up_to`, which must be stored; `membership` is the
    /// configuration in force at `up_to` (the core's `snapshot()` after its own compaction).
    /// The new log start is made durable first, then the entries are deleted in chunks of
    /// [`COMPACT_CHUNK`]; a crash in between leaves entries below the start, which the next
    /// open deletes. The caller must not compact past what the state machine has durably
    /// applied.
    pub fn compact(&mut self, up_to: Index, membership: &Membership) -> Result<()> {
        if up_to <= self.snapshot.index {
            return Ok(());
        }
        if up_to > self.last_index {
            return Err(Error::InvalidRequest(format!(
                "cannot compact {} up to {up_to}: the {}log ends at {}",
                self.path.display(),
                self.range_label(),
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
        let start = SnapshotMeta::new(up_to, term, membership.clone());
        let mut batch = WriteBatch::default();
        batch.put(&self.keys.log_start(), &encode_log_start(&start));
        batch.put(&self.keys.purge_from(), &encode_pair(old_first, 0));
        self.write(batch, true)?;
        self.snapshot = start;
        self.purge(old_first, 0)?;
        self.note_deleted(old_first, up_to);
        Ok(())
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
                "cannot install snapshot {}/{} in {}: the {}log already starts after {}/{}",
                meta.index,
                meta.term,
                self.path.display(),
                self.range_label(),
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
        batch.put(&self.keys.log_start(), &encode_log_start(&meta));
        batch.put(&self.keys.last_index(), &encode_pair(meta.index, 0));
        batch.put(&self.keys.hard_state(), &encode_hard_state(&hs));
        batch.put(&self.keys.purge_from(), &encode_pair(old_first, old_last));
        self.write(batch, true)?;
        self.last_index = meta.index;
        self.snapshot = meta;
        self.hard_state = hs;
        self.purge(old_first, old_last)?;
        self.note_deleted(old_first, old_last);
        Ok(())
    }

    /// Deletes the entries from `from` up to the log start (or up to `to` if that is further:
    /// an install drops the whole old log), then the marker.
    fn purge(&mut self, from: Index, to: Index) -> Result<()> {
        self.delete_range(from, self.snapshot.index.max(to))?;
        let mut batch = WriteBatch::default();
        batch.delete(&self.keys.purge_from());
        self.write(batch, false)
    }

    fn delete_range(&mut self, from: Index, to: Index) -> Result<()> {
        let mut lo = from;
        while lo <= to {
            let hi = to.min(lo.saturating_add(COMPACT_CHUNK - 1));
            let mut batch = WriteBatch::default();
            for i in lo..=hi {
                batch.delete(&self.keys.entry(i));
            }
            self.write(batch, false)?;
            lo = hi + 1;
        }
        Ok(())
    }

    /// Finishes a compaction that a crash interrupted.
    fn purge_below_start(&mut self) -> Result<()> {
        match self.get(&self.keys.purge_from())? {
            Some(v) => {
                let (from, to) =
                    decode_pair(v).map_err(|e| self.corrupt(None, "compaction marker", e))?;
                self.purge(from, to)
            }
            None => Ok(()),
        }
    }

    fn note_deleted(&mut self, from: Index, to: Index) {
        if from > to {
            return;
        }
        self.unreclaimed = Some(match self.unreclaimed {
            Some((lo, hi)) => (lo.min(from), hi.max(to)),
            None => (from, to),
        });
    }

    /// Entries deleted whose space has not been given back yet.
    pub fn unreclaimed_entries(&self) -> u64 {
        self.unreclaimed.map_or(0, |(lo, hi)| hi - lo + 1)
    }

    /// Gives back the disk space of up to `max_entries` of the oldest deleted entries, and
    /// returns how many are left. Deleting an entry only writes a tombstone beside it; LevelDB
    /// drops both when a compaction of that key range reaches the level holding the entry,
    /// which with a log's ever-growing keys its background compactions may never do (a log
    /// kept 111 MB of compacted entries). This compacts their key range through every level;
    /// the cost grows with `max_entries` (docs/PERFORMANCE.md, "Giving the log's disk back"),
    /// so a writer calls it in steps between its writes.
    pub fn reclaim_step(&mut self, max_entries: u64) -> Result<u64> {
        let Some((lo, hi)) = self.unreclaimed else {
            return Ok(0);
        };
        let step_end = hi.min(lo.saturating_add(max_entries.max(1) - 1));
        let (from, to) = (self.keys.entry(lo), self.keys.entry(step_end));
        self.db.borrow_mut().compact_range(&from, &to)?;
        self.unreclaimed = (step_end < hi).then_some((step_end + 1, hi));
        Ok(self.unreclaimed_entries())
    }

    /// Asks LevelDB to compact the whole database now, so that the space of entries dropped by
    /// [`RaftStorage::compact`] is returned at once rather than by background compactions.
    pub fn reclaim_space(&mut self) -> Result<()> {
        self.db.borrow_mut().compact_all()
    }

    /// Forces LevelDB's buffers to disk (writes here are synced already; used before close).
    pub fn flush(&mut self) -> Result<()> {
        self.db.borrow_mut().flush()
    }

    #[cfg(test)]
    pub(crate) fn raw_get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.get(key)
    }

    #[cfg(test)]
    pub(crate) fn raw_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put(key, value);
        self.write(b, true)
    }

    #[cfg(test)]
    pub(crate) fn raw_delete(&mut self, key: &[u8]) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete(key);
        self.write(b, true)
    }
}

/// A write checked and added to a batch, to take effect in memory once the batch is durable.
struct Staged {
    last_index: Index,
    hard_state: Option<HardState>,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ranges;
#[cfg(test)]
mod tests_split;
