//! The stepped memtable flush (`Options::memtable_flush_step`).

use super::*;
use crate::options;
use crate::test_util::LdbIteratorIter;
use std::io::Read;

fn stepped_options() -> Options {
    let mut opt = options::for_test();
    opt.reuse_logs = false;
    opt.write_buffer_size = 8 << 10;
    opt.memtable_flush_step = 256;
    opt
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; 100]
}

/// Writes keys from `from` on until a flush is in progress (the memtable was swapped and its
/// table is not done). Returns the next key to write.
fn write_until_flushing(db: &mut DB, from: usize) -> usize {
    let mut i = from;
    while db.imm_flush.is_none() {
        db.put(&key(i), &value(i)).unwrap();
        i += 1;
        assert!(i < from + 10_000, "no stepped flush started");
    }
    i
}

fn assert_all_readable(db: &mut DB, n: usize) {
    for i in 0..n {
        assert_eq!(
            db.get(&key(i)).map(|v| v.to_vec()),
            Some(value(i)),
            "key {i}"
        );
    }
    let mut it = db.new_iter().unwrap();
    assert_eq!(LdbIteratorIter::wrap(&mut it).count(), n);
}

fn table_files(db: &DB) -> Vec<FileNum> {
    let mut nums: Vec<FileNum> = db
        .opt
        .env
        .children(&db.path)
        .unwrap()
        .iter()
        .filter_map(|name| match parse_file_name(name) {
            Ok((num, FileType::Table)) => Some(num),
            _ => None,
        })
        .collect();
    nums.sort_unstable();
    nums
}

/// A full memtable is written over several writes, not by the one that found it full; meanwhile
/// every key reads back (from the immutable memtable), and the table is installed before the new
/// memtable is half full, so no write has to finish a flush itself.
#[test]
fn stepped_flush_spreads_a_memtable_over_writes() {
    let opt = stepped_options();
    let mut db = DB::open("db", opt.clone()).unwrap();
    let mut n = 0;
    let mut flushes = 0;
    while flushes < 3 {
        n = write_until_flushing(&mut db, n);
        assert_eq!(
            db.vset.borrow().live_files().len(),
            flushes,
            "the write that swapped the memtable installed its table"
        );
        let mut writes_during_flush = 0;
        while db.imm.is_some() {
            assert_all_readable(&mut db, n);
            db.put(&key(n), &value(n)).unwrap();
            n += 1;
            writes_during_flush += 1;
        }
        flushes += 1;
        assert!(writes_during_flush > 3, "{writes_during_flush} writes");
        assert!(db.mem.approx_mem_usage() < opt.write_buffer_size / 2);
        assert_eq!(db.vset.borrow().live_files().len(), flushes);
        assert_eq!(table_files(&db).len(), flushes);
    }
    assert_all_readable(&mut db, n);
    drop(db);
    let mut db = DB::open("db", opt).unwrap();
    assert_all_readable(&mut db, n);
}

/// A flush cut short (the handle closed, as a crash would) leaves a partial table that is not
/// part of the database: reopened, the old memtable's log is replayed, every key reads back and
/// the partial file is gone.
#[test]
fn stepped_flush_cut_short_loses_nothing() {
    let opt = stepped_options();
    let mut db = DB::open("db", opt.clone()).unwrap();
    let n = write_until_flushing(&mut db, 0);
    db.put(&key(n), &value(n)).unwrap();
    let partial = db.imm_flush.as_ref().unwrap().file_num();
    assert!(table_files(&db).contains(&partial));
    drop(db);
    let mut db = DB::open("db", opt).unwrap();
    assert_all_readable(&mut db, n + 1);
    assert!(
        !table_files(&db).contains(&partial) || db.vset.borrow().live_files().contains(&partial)
    );
    let live = db.vset.borrow().live_files();
    assert!(table_files(&db).iter().all(|t| live.contains(t)));
}

/// `compact_range` in the middle of a stepped flush finishes it first.
#[test]
fn compact_range_finishes_a_stepped_flush() {
    let mut db = DB::open("db", stepped_options()).unwrap();
    let n = write_until_flushing(&mut db, 0);
    db.compact_range(b"", b"\xff").unwrap();
    assert!(db.imm.is_none() && db.imm_flush.is_none());
    assert_all_readable(&mut db, n);
}

/// A memtable filled far past its size by one batch takes longer to write than the new memtable
/// takes to fill: the write that finds the new one full finishes the pending
/// flush before swapping again, and nothing is lost.
#[test]
fn a_swap_during_a_flush_finishes_it_first() {
    let opt = stepped_options();
    let mut db = DB::open("db", opt.clone()).unwrap();
    let mut batch = WriteBatch::default();
    let batched = |i: usize| format!("batched{i:06}").into_bytes();
    for i in 0..2000 {
        batch.put(&batched(i), &value(i));
    }
    db.write(batch, false).unwrap();
    let mut n = write_until_flushing(&mut db, 0);
    let mut swapped_while_flushing = false;
    while db.imm.is_some() {
        let usage = db.mem.approx_mem_usage();
        db.put(&key(n), &value(n)).unwrap();
        n += 1;
        swapped_while_flushing |= db.mem.approx_mem_usage() < usage;
    }
    assert!(swapped_while_flushing);
    for i in 0..2000 {
        assert_eq!(
            db.get(&batched(i)).map(|v| v.to_vec()),
            Some(value(i)),
            "batched {i}"
        );
    }
    for i in 0..n {
        assert_eq!(
            db.get(&key(i)).map(|v| v.to_vec()),
            Some(value(i)),
            "key {i}"
        );
    }
}

/// CURRENT names the manifest and is written when a new manifest is started, not again for
/// every edit appended to it (each rewrite cost a file creation, a sync and a rename).
#[test]
fn current_is_not_rewritten_for_an_edit() {
    let opt = stepped_options();
    let mut db = DB::open("db", opt.clone()).unwrap();
    db.put(b"a", b"1").unwrap();
    db.compact_range(b"", b"\xff").unwrap();
    let current = Path::new("db").join("CURRENT");
    let named = db.opt.env.open_sequential_file(&current).map(|mut f| {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    });
    assert!(named.unwrap().starts_with("MANIFEST-"));
    opt.env.delete(&current).unwrap();
    db.put(b"b", b"2").unwrap();
    db.compact_range(b"", b"\xff").unwrap();
    assert!(!opt.env.exists(&current).unwrap());
}

/// A flushed memtable is freed over the following writes; reads and the table are unaffected.
#[test]
fn a_flushed_memtable_is_freed_over_later_writes() {
    let mut db = DB::open("db", stepped_options()).unwrap();
    let mut n = write_until_flushing(&mut db, 0);
    while db.imm.is_some() {
        db.put(&key(n), &value(n)).unwrap();
        n += 1;
    }
    let retired = db.retired.as_ref().map_or(0, |m| m.len());
    assert!(retired > 0);
    while db.retired.is_some() {
        db.put(&key(n), &value(n)).unwrap();
        n += 1;
    }
    assert_all_readable(&mut db, n);
}
