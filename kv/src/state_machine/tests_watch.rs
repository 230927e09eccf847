//! WATCH as Redis has it (a watched key touched in any way aborts EXEC, even when it is back to
//! what it was), and FLUSHALL in batches of bounded size.

use super::tests_redis::{b, set_px, Sm};
use super::*;
use crate::command::{Deadline, Op, SetCondition};
use crate::query::Query;
use crate::snapshot::SnapshotReceiver;

fn token(s: &mut Sm, key: &str) -> u64 {
    match s.ask(Query::Versions { keys: vec![b(key)] }) {
        CommandResult::Array(v) => match v[..] {
            [CommandResult::Value(t)] => t as u64,
            _ => panic!("{v:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// EXEC of a transaction that watched `key` and got `token`: whether it applied.
fn exec(s: &mut Sm, key: &str, token: u64) -> bool {
    let multi = Op::Multi {
        watches: vec![(b(key), token)],
        ops: vec![set("out", "1")],
    };
    match s.run(multi) {
        CommandResult::Array(_) => true,
        CommandResult::Aborted => false,
        other => panic!("{other:?}"),
    }
}

fn set(key: &str, value: &str) -> Op {
    Op::Set {
        key: b(key),
        value: b(value),
    }
}

fn del(key: &str) -> Op {
    Op::Delete { key: b(key) }
}

#[test]
fn a_watched_absent_key_created_and_deleted_again_aborts_exec() {
    let mut s = Sm::new();
    s.run(set("other", "x"));
    let t = token(&mut s, "k");
    s.run(set("k", "1"));
    s.run(del("k"));
    assert!(
        !exec(&mut s, "k", t),
        "the key was touched, as Redis sees it"
    );
    let t = token(&mut s, "never");
    s.run(del("other"));
    s.run(set("other", "y"));
    assert!(exec(&mut s, "never", t), "an untouched absent key passes");
    let t = token(&mut s, "k");
    assert!(exec(&mut s, "k", t), "watched again, it passes");
}

#[test]
fn a_watched_key_that_expires_aborts_exec_but_one_expired_before_the_watch_does_not() {
    let mut s = Sm::new();
    s.clock(1_000);
    // More keys due first than one sweep takes, so that the keys below stay stored (expired,
    // not swept) after the clock passes their deadline.
    for i in 0..SWEEP_PER_STAMP + 10 {
        s.run(set_px(&format!("due{i}"), "x", 50));
    }
    s.run(set_px("present", "1", 100));
    s.run(set_px("old", "1", 100));
    let present = token(&mut s, "present");
    let absent = token(&mut s, "absent");
    s.run(set_px("absent", "1", 100));
    s.clock(1_200);
    assert!(s.sm.stored(&Txn::new(&s.sm), b"present").unwrap().is_some());
    let old = token(&mut s, "old");
    assert!(!exec(&mut s, "present", present), "expired, not swept");
    assert!(!exec(&mut s, "absent", absent), "created, then expired");
    s.clock(1_300);
    assert_eq!(s.sm.key_counts().keys, 0, "all swept now");
    assert!(
        exec(&mut s, "old", old),
        "expired when watched, then swept: no logical change (Redis passes too)"
    );
    assert!(
        !exec(&mut s, "absent", absent),
        "created, then expired and swept"
    );
}

#[test]
fn every_other_touch_aborts_exec() {
    let mut s = Sm::new();
    s.clock(1_000);
    let t = token(&mut s, "k");
    let past = Op::SetWith {
        key: b("k"),
        value: b("v"),
        condition: SetCondition::Always,
        deadline: Deadline::At(10),
        get: false,
    };
    assert_eq!(s.run(past), CommandResult::Ok);
    assert_eq!(s.sm.get(b"k").unwrap(), None);
    assert!(!exec(&mut s, "k", t), "SET with a deadline already past");

    let t = token(&mut s, "k");
    s.run(set("src", "v"));
    let rename = |from: &str, to: &str| Op::Rename {
        from: b(from),
        to: b(to),
        if_absent: false,
    };
    s.run(rename("src", "k"));
    s.run(rename("k", "src"));
    assert!(!exec(&mut s, "k", t), "renamed into and away");

    s.run(set("k", "1"));
    let t = token(&mut s, "k");
    s.run(del("k"));
    s.run(set("k", "1"));
    assert!(
        !exec(&mut s, "k", t),
        "deleted and written again, same value"
    );

    let t = token(&mut s, "k");
    s.run(Op::FlushAll);
    assert!(!exec(&mut s, "k", t), "flushed");
    s.run(set("k", "1"));
    s.run(Op::FlushAll);
    let t = token(&mut s, "k");
    assert!(
        exec(&mut s, "k", t),
        "a FLUSHALL before the watch is no touch"
    );
    // The one spurious abort left by design (module docs of `watch.rs`): a FLUSHALL between
    // the WATCH and the EXEC, even of a store without the key.
    let t = token(&mut s, "never");
    s.run(Op::FlushAll);
    assert!(!exec(&mut s, "never", t));
}

#[test]
fn what_watch_compares_survives_a_restart_and_a_snapshot() {
    let mut s = Sm::new();
    let t = token(&mut s, "k");
    s.run(set("k", "1"));
    s.run(del("k"));
    drop(s.sm);
    s.sm = KvStateMachine::open(s.dir.path()).unwrap();
    assert_eq!(s.sm.applied_index(), s.index);

    let meta = s.sm.build_snapshot(7, 256).unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = KvStateMachine::open(dst_dir.path()).unwrap();
    let mut rx = SnapshotReceiver::new(dst_dir.path(), &StorageEnv::Disk, meta, 7).unwrap();
    let mut reader = s.sm.snapshot_reader().unwrap();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        rx.push(&chunk).unwrap();
    }
    let mut dst = dst.install(rx.finish().unwrap()).unwrap();
    dst.finish_install().unwrap();
    let mut copy = Sm {
        sm: dst,
        index: s.index,
        dir: dst_dir,
    };
    assert!(!exec(&mut copy, "k", t), "after a snapshot");
    assert!(!exec(&mut s, "k", t), "after a restart");
}

/// Every row of the store, as (row, value).
fn all_rows(sm: &mut KvStateMachine) -> Vec<(Vec<u8>, Bytes)> {
    let mut rows = Vec::new();
    sm.ldb()
        .scan_from(&[], |k, v| {
            rows.push((k.to_vec(), v));
            Ok(true)
        })
        .unwrap();
    rows
}

fn user_and_index_rows(sm: &mut KvStateMachine) -> usize {
    all_rows(sm)
        .iter()
        .filter(|(k, _)| matches!(k.first(), Some(&(USER | EXPIRY | HASHED))))
        .count()
}

/// A store of `n` keys, every third with a deadline, some deleted (for WATCH's rows).
fn filled(n: usize) -> Sm {
    let mut s = Sm::new();
    s.clock(1_000);
    let mut entries = Vec::new();
    for i in 0..n {
        let op = if i % 3 == 0 {
            set_px(&format!("key{i}"), "v", 60_000)
        } else {
            set(&format!("key{i}"), "v")
        };
        s.index += 1;
        entries.push(entry(s.index, op));
    }
    s.sm.apply(&entries).unwrap();
    for i in (0..n).step_by(7) {
        s.run(del(&format!("key{i}")));
    }
    s
}

fn entry(index: Index, op: Op) -> Entry {
    Entry::new(
        1,
        index,
        EntryKind::Normal,
        crate::command::Command::new(0, index, op).encode(),
    )
}

#[test]
fn flushall_deletes_more_keys_than_one_batch_and_leaves_nothing() {
    let mut s = filled(FLUSH_CHUNK_ROWS * 5 / 2);
    assert!(user_and_index_rows(&mut s.sm) > 2 * FLUSH_CHUNK_ROWS);
    // Entries before and after it in the same apply, and a transaction around one.
    let first = s.index + 1;
    let ops = [
        set("before", "1"),
        Op::FlushAll,
        set("after", "1"),
        Op::Multi {
            watches: vec![],
            ops: vec![
                set("in-tx-before", "1"),
                Op::FlushAll,
                set("in-tx-after", "1"),
            ],
        },
    ];
    let entries: Vec<Entry> = ops
        .into_iter()
        .enumerate()
        .map(|(k, op)| entry(first + k as u64, op))
        .collect();
    s.index += entries.len() as u64;
    let results = s.sm.apply(&entries).unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[1].1, Some(CommandResult::Ok));
    for key in ["before", "after", "in-tx-before", "key1", "key3"] {
        assert_eq!(s.sm.get(key.as_bytes()).unwrap(), None, "{key}");
    }
    assert_eq!(s.sm.get(b"in-tx-after").unwrap(), Some(b("1")));
    let counts = KeyCounts {
        keys: 1,
        volatile: 0,
    };
    assert_eq!(s.sm.key_counts(), counts);
    assert_eq!(s.ask(Query::DbSize), CommandResult::Value(1));
    assert_eq!(
        user_and_index_rows(&mut s.sm),
        2,
        "in-tx-after's row and scan row"
    );
    let dir = s.dir.path().to_path_buf();
    drop(s.sm);
    let mut sm = KvStateMachine::open(&dir).unwrap();
    assert_eq!(sm.key_counts(), counts);
    assert_eq!(sm.applied_index(), s.index);
    assert_eq!(user_and_index_rows(&mut sm), 2);
}

/// A crash in the middle of a FLUSHALL applied with a session's INCR before it, in one apply:
/// the restart applies again what was not recorded as applied, and must end where a run without
/// the crash ends, session results included. It would not if the INCR were replayed on the
/// half-flushed store (it would answer 1 instead of 42).
#[test]
fn a_flush_cut_by_a_crash_replays_to_the_same_state_and_session_results() {
    let n = FLUSH_CHUNK_ROWS * 2;
    let (mut whole, mut cut) = (filled(n), filled(n));
    for s in [&mut whole, &mut cut] {
        s.run(set("key1", "41"));
    }
    let first = whole.index + 1;
    let incr = crate::command::Command::new(
        9,
        1,
        Op::Incr {
            key: b("key1"),
            by: 1,
        },
    );
    let batch = [
        Entry::new(1, first, EntryKind::Normal, incr.encode()),
        entry(first + 1, Op::FlushAll),
    ];
    let results = whole.sm.apply(&batch).unwrap();
    assert_eq!(results[0].1, Some(CommandResult::Value(42)));

    super::expiry::crash_point::fail_after(1);
    assert!(cut.sm.apply(&batch).is_err());
    drop(cut.sm);
    let mut reopened = KvStateMachine::open(cut.dir.path()).unwrap();
    assert_eq!(
        reopened.get(b"key1").unwrap(),
        None,
        "the flush's first batch (key1's row in it) is on disk"
    );
    assert!(reopened.key_counts().keys > 0, "the flush is not recorded");
    reopened.apply(&batch).unwrap();
    assert_same_rows(&mut reopened, &mut whole.sm);
}

#[test]
fn a_flush_cut_by_a_crash_and_applied_again_leaves_what_a_whole_flush_leaves() {
    let n = FLUSH_CHUNK_ROWS * 2;
    let (mut whole, mut cut) = (filled(n), filled(n));
    let flush = entry(whole.index + 1, Op::FlushAll);
    whole.sm.apply(std::slice::from_ref(&flush)).unwrap();
    // The crash: the first batches of deletions are on disk, the applied index is not.
    let mut first_rows = Vec::new();
    cut.sm
        .ldb()
        .scan_from(&[USER], |k, _| {
            first_rows.push(k.to_vec());
            Ok(first_rows.len() < FLUSH_CHUNK_ROWS * 3 / 2)
        })
        .unwrap();
    let mut batch = WriteBatch::default();
    for row in &first_rows {
        batch.delete(row);
    }
    cut.sm.ldb().write(batch, true).unwrap();
    let dir = cut.dir.path().to_path_buf();
    drop(cut.sm);
    let mut reopened = KvStateMachine::open(&dir).unwrap();
    assert_eq!(reopened.applied_index(), flush.index - 1);
    reopened.apply(&[flush]).unwrap();
    assert_same_rows(&mut reopened, &mut whole.sm);
}

fn assert_same_rows(ours: &mut KvStateMachine, theirs: &mut KvStateMachine) {
    let (ours, theirs) = (all_rows(ours), all_rows(theirs));
    let differing: Vec<&Vec<u8>> = ours
        .iter()
        .filter(|r| !theirs.contains(r))
        .map(|(k, _)| k)
        .take(4)
        .collect();
    assert!(
        ours == theirs,
        "{} rows against {}; the first rows that differ: {differing:02x?}",
        ours.len(),
        theirs.len()
    );
}
