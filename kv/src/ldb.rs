//! One owned rusty-leveldb handle, with the crate's durability options and the workarounds for
//! the measured pitfalls of rusty-leveldb 4.0.2 (DESIGN.md §4).
//!
//! * `reuse_logs = false`: reusing a write-ahead log whose tail was torn by a crash appends new
//!   records behind the garbage, where recovery stops reading, so later synced writes were lost.
//!   `reuse_manifest = false` for the same reason on the manifest.
//! * `get` turns read errors into `None`, and so does `get_at` (its table lookup drops errors
//!   too): a damaged table block reads as "absent". `table_check` verifies every table block when
//!   the database is opened instead, and refuses a damaged database. Values that matter carry
//!   their own CRC on top.
//! * `WriteBatch::clear` corrupts the batch: callers always build a fresh batch.
//! * Point lookups, fixed in the vendored copy (`vendor/rusty-leveldb`, one commit per fix, each
//!   with a test there; the tests below check the same shapes through this crate). The
//!   simulator found the first two as a Raft log whose last-index record was missing, or old,
//!   after a reboot; until they were fixed, [`Ldb::get`] read through an iterator (about a fifth
//!   more per read).
//!   - `Version::get` (version.rs) asked each table that may hold the key for the first entry at
//!     or after it and stopped with "absent" at a deletion without checking that it was of the
//!     same user key. A newer table spanning the key without holding it, whose first entry after
//!     it is a deletion and whose Bloom filter let the lookup in (a false positive), hid the
//!     key an older table holds.
//!   - `Table::get` (table_reader.rs) used a data block only if the lookup key was strictly below
//!     the block's index key, which may equal the block's last entry: the newest version of the
//!     key written last, looked up at the last sequence number, skipped its table (after a
//!     reboot the recovered log becomes a table and the last write is exactly that), and an
//!     older table's version was returned.
//!   - `Version::overlap_in_level` binary-searched level 0, whose files overlap each other, so a
//!     flushed memtable could be placed in a deeper level beneath an older level-0 file holding
//!     older versions of its keys, which `Version::get` (level 0 first) then returned. Iterators
//!     merge by sequence number and were right; the point lookup depends on this fix.
//! * Lost garbage collection: once any snapshot (every iterator takes one) has been created,
//!   `SnapshotList::empty()` never becomes true again, and `oldest()` then returns the smallest
//!   live snapshot *handle number* (or 0 if none is live) instead of a sequence number. Compaction
//!   keeps every version newer than that value, so from then on deleted and overwritten data is
//!   never dropped. Handle numbers grow by one per snapshot, so the workaround keeps one pinned
//!   snapshot whose handle number is at least the database's last sequence number: before every
//!   write it creates (and at once drops) throw-away snapshots until the counter has passed the
//!   sequence numbers that write will use, then re-pins. Every scan and batched read takes a
//!   snapshot, so every database, the Raft log included, runs with this. Compaction then sees a horizon at or above
//!   every stored sequence number, which is what it would see with no snapshot at all. This is
//!   sound only because no iterator or snapshot outlives a call into this type (scans collect and
//!   drop their iterator), so nothing can observe the versions compaction drops. The cost is one
//!   hash-map insert and remove per sequence number written; after a restart the counter starts
//!   from zero while the sequence number does not, and the catch-up is spread over writes
//!   ([`MAX_CATCH_UP_PER_WRITE`]) so that no single write stalls, or done at once by
//!   [`Ldb::compact_all`].

use std::any::Any;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use rusty_leveldb::{LdbIterator, Options, Status, StatusCode, WriteBatch, DB};

use crate::env::{PowerCutEnv, SyncDiskEnv, SyncStats};
use crate::error::{Error, Result};

/// Which environment a database runs on.
#[derive(Clone, Default)]
pub enum StorageEnv {
    /// The real disk, through [`SyncDiskEnv`].
    #[default]
    Disk,
    /// The in-memory power-cut environment (tests and the simulator).
    PowerCut(PowerCutEnv),
}

impl StorageEnv {
    /// A file-system handle on this environment, for the files kv keeps beside its databases
    /// (snapshot images, install markers): the same durability rules as the databases.
    pub(crate) fn files(&self) -> Box<dyn rusty_leveldb::env::Env> {
        match self {
            StorageEnv::Disk => Box::new(SyncDiskEnv::new()),
            StorageEnv::PowerCut(e) => Box::new(e.clone()),
        }
    }
}

/// Bytes of a full memtable's entries that each following write adds to its level-0 table (and
/// at least twice the write's size): the table is written over the next few hundred writes
/// instead of all by the write that found the memtable full, which stalled the log and apply
/// threads for 20-35 ms per 4 MiB memtable (docs/PERFORMANCE.md, "The write tail").
pub const MEMTABLE_FLUSH_STEP: usize = 64 << 10;

/// Upper bound on throw-away snapshots created by one write while catching up after a restart.
pub const MAX_CATCH_UP_PER_WRITE: u64 = 1 << 16;

pub(crate) struct Ldb {
    db: DB,
    path: PathBuf,
    stats: Option<Arc<SyncStats>>,
    /// Snapshot handles created on this handle so far. Never more than LevelDB's own counter
    /// (nothing else in this process creates snapshots on it), which is the safe direction.
    handles: u64,
    /// rusty-leveldb does not export its snapshot type, so the pin is kept type-erased; it only
    /// has to stay alive.
    pin: Option<Box<dyn Any>>,
}

impl Ldb {
    pub(crate) fn open(path: &Path, env: &StorageEnv) -> Result<Ldb> {
        let mut opt = Options {
            create_if_missing: true,
            reuse_logs: false,
            reuse_manifest: false,
            paranoid_checks: true,
            memtable_flush_step: MEMTABLE_FLUSH_STEP,
            ..Options::default()
        };
        let stats = match env {
            StorageEnv::Disk => {
                crate::deferred_delete::remove_leftovers(path).map_err(|e| Error::Io {
                    path: path.to_path_buf(),
                    detail: format!("removing files left to delete: {e}"),
                })?;
                let e = SyncDiskEnv::new().deleting_in_background();
                let stats = e.stats();
                opt.env = Rc::new(Box::new(e));
                Some(stats)
            }
            StorageEnv::PowerCut(e) => {
                opt.env = Rc::new(Box::new(e.clone()));
                None
            }
        };
        let env_handle = opt.env.clone();
        let db = DB::open(path, opt).map_err(|s| status_error(path, s))?;
        // After the open, so that only live tables are checked (LevelDB has deleted obsolete
        // ones, which a crash may have left half-written).
        crate::table_check::verify_dir(env_handle.as_ref().as_ref(), path).map_err(|detail| {
            Error::Corruption {
                path: path.to_path_buf(),
                index: None,
                detail,
            }
        })?;
        let ldb = Ldb {
            db,
            path: path.to_path_buf(),
            stats,
            handles: 0,
            pin: None,
        };
        ldb.check_failure()?;
        Ok(ldb)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn sync_stats(&self) -> Option<Arc<SyncStats>> {
        self.stats.clone()
    }

    fn err(&self, s: Status) -> Error {
        status_error(&self.path, s)
    }

    fn check_failure(&self) -> Result<()> {
        if let Some(f) = self.stats.as_ref().and_then(|s| s.failure()) {
            return Err(Error::Io {
                path: self.path.clone(),
                detail: format!("an earlier sync failed, the database cannot be trusted: {f}"),
            });
        }
        Ok(())
    }

    /// Reads one key with rusty-leveldb's own lookup, which takes no snapshot. A table read
    /// error reads as "absent" (module docs; `table_check` refuses damaged tables at open).
    /// A lookup that had to read several tables may run a compaction (LevelDB's seek-triggered
    /// one), whose sync can fail: checked after the read too.
    pub(crate) fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.check_failure()?;
        let found = self.db.get(key);
        self.check_failure()?;
        Ok(found)
    }

    /// The same read through an iterator, which merges the memtables and every level by
    /// sequence number: what [`Ldb::get`] is checked against.
    #[cfg(test)]
    pub(crate) fn iterator_get(&mut self, key: &[u8]) -> Option<Bytes> {
        let mut found = None;
        self.scan_from(key, |k, v| {
            if k == key {
                found = Some(v);
            }
            Ok(false)
        })
        .expect("scan");
        found
    }

    /// Reads several keys (in ascending order) with one iterator and a seek per key. One
    /// [`Ldb::get`] per key instead measured the same within the noise (`kv_apply_unsynced`).
    pub(crate) fn get_sorted(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Bytes>>> {
        self.check_failure()?;
        debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        self.handles += 1;
        let snap = self.db.get_snapshot();
        let mut it = self.db.new_iter_at(snap).map_err(|s| self.err(s))?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            it.seek(key);
            found.push(match it.current() {
                Some((k, v)) if it.valid() && k == *key => Some(v),
                _ => None,
            });
        }
        Ok(found)
    }

    /// Calls `f` on each key ≥ `start` in order until it returns `Ok(false)`.
    pub(crate) fn scan_from(
        &mut self,
        start: &[u8],
        mut f: impl FnMut(&[u8], Bytes) -> Result<bool>,
    ) -> Result<()> {
        self.handles += 1;
        let snap = self.db.get_snapshot();
        let mut it = self.db.new_iter_at(snap).map_err(|s| self.err(s))?;
        it.seek(start);
        // `advance` on an exhausted iterator starts over from the first key, so stop as soon as
        // it reports the end.
        while it.valid() {
            let Some((k, v)) = it.current() else { break };
            if !f(&k, v)? {
                break;
            }
            if !it.advance() {
                break;
            }
        }
        Ok(())
    }

    pub(crate) fn write(&mut self, batch: WriteBatch, sync: bool) -> Result<()> {
        let ops = u64::from(batch.count());
        self.move_gc_horizon(ops, MAX_CATCH_UP_PER_WRITE);
        self.db.write(batch, sync).map_err(|s| self.err(s))?;
        self.check_failure()
    }

    /// Makes every write so far durable.
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.db.flush().map_err(|s| self.err(s))?;
        self.check_failure()
    }

    /// Compacts the whole key space, dropping deleted and overwritten data.
    pub(crate) fn compact_all(&mut self) -> Result<()> {
        self.move_gc_horizon(0, u64::MAX);
        self.db
            .compact_range(&[], &[0xff; 8])
            .map_err(|s| self.err(s))?;
        crate::deferred_delete::wait_for_background();
        self.check_failure()
    }

    /// Compacts the keys from `from` to `to` (inclusive) through every level, after writing the
    /// memtable to a table: deleted and overwritten data in that range is dropped, and tables
    /// left holding nothing are deleted.
    pub(crate) fn compact_range(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        self.move_gc_horizon(0, MAX_CATCH_UP_PER_WRITE);
        self.db.compact_range(from, to).map_err(|s| self.err(s))?;
        self.check_failure()
    }

    /// See the module docs: keeps the pinned snapshot's handle number at or above every sequence
    /// number the next `upcoming` operations will use.
    fn move_gc_horizon(&mut self, upcoming: u64, budget: u64) {
        if self.handles == 0 {
            // No snapshot was ever taken on this handle: LevelDB's own horizon is still correct.
            return;
        }
        self.handles += 1;
        let probe = self.db.get_snapshot();
        let target = probe.sequence().saturating_add(upcoming);
        drop(probe);
        let mut spent = 0;
        while self.handles < target && spent < budget {
            self.handles += 1;
            drop(self.db.get_snapshot());
            spent += 1;
        }
        // The new pin is created before the old one is released, so the horizon never falls to 0.
        self.handles += 1;
        let pin = self.db.get_snapshot();
        self.pin = Some(Box::new(pin));
    }
}

fn status_error(path: &Path, s: Status) -> Error {
    if s.code == StatusCode::Corruption {
        Error::Corruption {
            path: path.to_path_buf(),
            index: None,
            detail: s.err,
        }
    } else if s.code == StatusCode::LockError {
        Error::Io {
            path: path.to_path_buf(),
            detail: "in use by another process: is another kvstore running on this data \
                     directory? (its lock is held)"
                .to_string(),
        }
    } else {
        Error::Io {
            path: path.to_path_buf(),
            detail: format!("{:?}: {}", s.code, s.err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_size(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    /// `put(key, None)` deletes.
    fn churn(mut put: impl FnMut(&[u8], Option<&[u8]>)) {
        let v = [b'v'; 100];
        for i in 0..40_000u32 {
            put(format!("k{i:06}").as_bytes(), Some(&v));
        }
        for i in 0..36_000u32 {
            put(format!("k{i:06}").as_bytes(), None);
        }
    }

    /// The pitfall itself, on a bare handle: one iterator, and compaction keeps all garbage.
    /// The same churn through `Ldb` is collected. If a later rusty-leveldb fixes the bug, the
    /// first assertion fails and the workaround can go.
    #[test]
    fn bare_handle_loses_gc_after_an_iterator_and_ldb_does_not() {
        let bare = tempfile::tempdir().unwrap();
        let opt = Options {
            reuse_logs: false,
            ..Options::default()
        };
        let mut db = DB::open(bare.path(), opt).unwrap();
        drop(db.new_iter().unwrap());
        churn(|k, v| match v {
            Some(v) => db.put(k, v).unwrap(),
            None => db.delete(k).unwrap(),
        });
        db.compact_range(&[], &[0xff; 8]).unwrap();
        let bare_size = dir_size(bare.path());

        let ours = tempfile::tempdir().unwrap();
        let mut ldb = Ldb::open(ours.path(), &StorageEnv::Disk).unwrap();
        ldb.scan_from(b"", |_, _| Ok(false)).unwrap();
        churn(|k, v| {
            let mut b = WriteBatch::default();
            match v {
                Some(v) => b.put(k, v),
                None => b.delete(k),
            }
            ldb.write(b, false).unwrap();
        });
        ldb.compact_all().unwrap();
        let our_size = dir_size(ours.path());
        let live = 4_000 * 107;
        assert!(
            bare_size > 5 * live,
            "pitfall not reproduced: {bare_size} bytes"
        );
        assert!(our_size < 2 * live, "workaround failed: {our_size} bytes");
    }

    /// The pitfall behind "always build a fresh batch": `clear` drops the batch header, and the
    /// next `put` then indexes past the end of it. If this ever stops panicking, the rule can go.
    #[test]
    fn write_batch_clear_breaks_the_batch() {
        let r = std::panic::catch_unwind(|| {
            let mut b = WriteBatch::default();
            b.put(b"a", b"1");
            b.clear();
            b.put(b"b", b"2");
            b.count()
        });
        assert!(r.is_err(), "WriteBatch::clear no longer corrupts: {r:?}");
    }

    /// rusty-leveldb answers "absent" when a table block cannot be read, through `get` and
    /// `get_at` alike; `Ldb::open` finds the damage first and refuses the database.
    #[test]
    fn damaged_table_is_refused_not_read_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut ldb = Ldb::open(dir.path(), &StorageEnv::Disk).unwrap();
            let mut b = WriteBatch::default();
            b.put(b"key", &[b'x'; 2000]);
            ldb.write(b, true).unwrap();
            ldb.compact_all().unwrap();
        }
        let table = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "ldb"))
            .expect("a table file");
        let mut bytes = std::fs::read(&table).unwrap();
        for b in &mut bytes[10..1000] {
            *b ^= 0x5a;
        }
        std::fs::write(&table, &bytes).unwrap();

        let err = Ldb::open(dir.path(), &StorageEnv::Disk).err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, Error::Corruption { .. }), "{msg}");
        assert!(msg.contains(&table.display().to_string()), "{msg}");
        assert!(msg.contains("checksum"), "{msg}");

        let mut db = DB::open(dir.path(), Options::default()).unwrap();
        let snap = db.get_snapshot();
        assert_eq!(
            db.get_at(&snap, b"key"),
            Ok(None),
            "the pitfall: damage reads as absent"
        );
    }

    /// A filter that lets every lookup into every table, which is what a Bloom filter's false
    /// positive does for one lookup; without it the pitfall below needs a hash collision.
    /// A rusty-leveldb handle without this module's workarounds, on the power-cut disk.
    fn bare_db(
        env: &PowerCutEnv,
        path: &Path,
        filter: Option<Box<dyn rusty_leveldb::FilterPolicy>>,
    ) -> DB {
        let mut opt = Options {
            reuse_logs: false,
            env: Rc::new(Box::new(env.clone())),
            ..Options::default()
        };
        if let Some(f) = filter {
            opt.filter_policy = Rc::new(f);
        }
        DB::open(path, opt).unwrap()
    }

    impl Ldb {
        /// This module's wrapper around a handle opened by a test.
        fn over(db: DB, path: &Path) -> Ldb {
            Ldb {
                db,
                path: path.to_path_buf(),
                stats: None,
                handles: 0,
                pin: None,
            }
        }
    }

    struct MatchAll;

    impl rusty_leveldb::FilterPolicy for MatchAll {
        fn name(&self) -> &'static str {
            "kv.test.match-all"
        }
        fn create_filter(&self, _: &[u8], _: &[usize]) -> Vec<u8> {
            // rusty-leveldb asserts that a filter is not empty.
            vec![0]
        }
        fn key_may_match(&self, _: &[u8], _: &[u8]) -> bool {
            true
        }
    }

    /// The first lookup bug (module docs): `b` lives in an older table; a newer table spans
    /// `a..c` without `b`, and the first key after `b` there is a deletion of `c`, which
    /// rusty-leveldb 4.0.2's `DB::get` took for a deletion of `b`. The filter lets every lookup
    /// in, as a false positive does. `DB::get` (which `Ldb::get` is) must agree with an iterator.
    #[test]
    fn get_ignores_a_deletion_of_the_next_key() {
        let env = PowerCutEnv::new();
        let path = Path::new("/db");
        let open = || bare_db(&env, path, Some(Box::new(MatchAll)));
        {
            let mut db = open();
            db.put(b"b", b"kept").unwrap();
        }
        // Each reopen writes the recovered log into a level-0 table of its own.
        {
            let mut db = open();
            db.put(b"a", b"1").unwrap();
            db.put(b"c", b"3").unwrap();
            db.delete(b"c").unwrap();
        }
        let mut ldb = Ldb::over(open(), path);
        for (key, want) in [
            (&b"b"[..], Some(&b"kept"[..])),
            (b"a", Some(b"1")),
            (b"c", None),
            (b"bb", None),
        ] {
            let want = want.map(Bytes::from_static);
            assert_eq!(ldb.iterator_get(key), want, "{key:?}");
            assert_eq!(ldb.get(key).unwrap(), want, "{key:?}");
        }
        let snap = ldb.db.get_snapshot();
        assert_eq!(
            ldb.db.get_at(&snap, b"b"),
            Ok(Some(Bytes::from_static(b"kept")))
        );
    }

    /// The second lookup bug (module docs; sim seed 70200): every block holds one entry
    /// (values larger than a block), the recovered log becomes one table whose last block ends
    /// with the newest version of `k`, and rusty-leveldb 4.0.2's `DB::get` skipped that table
    /// and returned the older table's version.
    #[test]
    fn get_finds_the_newest_version_where_it_ends_a_block() {
        let env = PowerCutEnv::new();
        let path = Path::new("/db");
        let open = || bare_db(&env, path, None);
        let big = |c: u8| vec![c; 5000];
        {
            let mut db = open();
            db.put(b"k", &big(b'1')).unwrap();
        }
        // Reopened, the first version sits in an older table; the next three are written last.
        {
            let mut db = open();
            for c in [b'2', b'3', b'4'] {
                db.put(b"k", &big(c)).unwrap();
            }
        }
        let mut ldb = Ldb::over(open(), path);
        assert_eq!(ldb.iterator_get(b"k").map(|v| v[0]), Some(b'4'));
        assert_eq!(ldb.get(b"k").unwrap().map(|v| v[0]), Some(b'4'));
    }

    /// The third lookup bug (module docs): level 0 holds a wide table with an old `m` and a
    /// narrow one after it; a memtable holding a newer `m` is flushed, and rusty-leveldb
    /// 4.0.2's binary search over level 0 missed the wide table, placed the flush in a deeper
    /// level, and `DB::get` (level 0 first) read the old `m`.
    #[test]
    fn get_reads_a_flush_placed_above_an_older_level_0_table() {
        let env = PowerCutEnv::new();
        let path = Path::new("/db");
        // Each reopen writes the recovered log into a level-0 table of its own.
        {
            let mut db = bare_db(&env, path, None);
            db.put(b"a", b"1").unwrap();
            db.put(b"m", b"old").unwrap();
            db.put(b"z", b"1").unwrap();
        }
        {
            let mut db = bare_db(&env, path, None);
            db.put(b"b", b"1").unwrap();
            db.put(b"c", b"1").unwrap();
        }
        let opt = Options {
            reuse_logs: false,
            write_buffer_size: 1000,
            env: Rc::new(Box::new(env.clone())),
            ..Options::default()
        };
        let mut ldb = Ldb::over(DB::open(path, opt).unwrap(), path);
        let mut put = |k: &[u8], v: &[u8]| {
            let mut b = WriteBatch::default();
            b.put(k, v);
            ldb.write(b, false).unwrap();
        };
        put(b"m", b"new");
        put(b"n", &[0; 2000]);
        // The memtable (m..n) is now past its size: this write flushes it.
        put(b"o", b"1");
        let new = Some(Bytes::from_static(b"new"));
        assert_eq!(ldb.iterator_get(b"m"), new);
        assert_eq!(ldb.get(b"m").unwrap(), new);
    }
}
