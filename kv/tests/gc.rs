//! rusty-leveldb loses garbage collection after the first iterator or snapshot; the workaround in
//! `kv` must keep the disk bounded by the live data.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use kv::state_machine::KV_DATA_DIR;
use kv::{Command, KvStateMachine, Op};
use raft_core::{Entry, EntryKind};

const PUTS: u64 = 300_000;
const DELETES: u64 = 250_000;
const VALUE_LEN: usize = 100;
const BATCH: u64 = 1000;

fn dir_size(p: &Path) -> u64 {
    fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key{i:08}"))
}

#[test]
fn deleted_data_is_collected_after_iterators_were_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    let value = Bytes::from(vec![b'v'; VALUE_LEN]);
    let mut index = 0;
    let mut seq = 0;
    let mut apply = |sm: &mut KvStateMachine, ops: &mut dyn Iterator<Item = Op>| {
        let es: Vec<Entry> = ops
            .map(|op| {
                index += 1;
                seq += 1;
                Entry::new(
                    1,
                    index,
                    EntryKind::Normal,
                    Command::new(1, seq, op).encode(),
                )
            })
            .collect();
        sm.apply(&es).unwrap();
    };
    // Iterators and snapshots before, between and after the churn: each one used to switch
    // garbage collection off for the rest of the handle's life.
    assert!(sm.scan_prefix(b"key", 10).unwrap().is_empty());
    for b in 0..PUTS / BATCH {
        apply(
            &mut sm,
            &mut (b * BATCH..(b + 1) * BATCH).map(|i| Op::Set {
                key: key(i),
                value: value.clone(),
            }),
        );
        if b % 50 == 0 {
            sm.scan_prefix(b"key", 5).unwrap();
        }
    }
    for b in 0..DELETES / BATCH {
        apply(
            &mut sm,
            &mut (b * BATCH..(b + 1) * BATCH).map(|i| Op::Delete { key: key(i) }),
        );
        if b % 50 == 0 {
            sm.scan_prefix(b"key", 5).unwrap();
        }
    }
    sm.compact().unwrap();

    let live_keys = PUTS - DELETES;
    // A live key is its row (key, 21 bytes of record header, value) and its scan index row
    // (9 bytes and the key). Deleted keys leave their tombstones (about 35 bytes each here):
    // rusty-leveldb drops them only at the bottom level. Without collection the directory
    // would hold everything ever written, more than six times the live data.
    let key_len = key(0).len() as u64;
    let live_bytes = live_keys * (2 * key_len + VALUE_LEN as u64 + 30);
    let size = dir_size(&dir.path().join(KV_DATA_DIR));
    eprintln!("kv_data holds {size} bytes for {live_bytes} bytes of live data");
    assert!(
        size <= 3 * live_bytes,
        "kv_data holds {size} bytes for {live_bytes} bytes of live data"
    );
    // And the survivors are all there.
    assert_eq!(sm.get(&key(DELETES - 1)).unwrap(), None);
    assert_eq!(sm.get(&key(DELETES)).unwrap(), Some(value.clone()));
    assert_eq!(sm.get(&key(PUTS - 1)).unwrap(), Some(value));
    let first = sm.scan_prefix(b"key", 1).unwrap();
    assert_eq!(first[0].0, key(DELETES));

    // Reopening verifies every block of these multi-block tables (with filter blocks).
    drop(sm);
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.applied_index(), PUTS + DELETES);
    assert_eq!(
        sm.get(&key(PUTS - 1)).unwrap().map(|v| v.len()),
        Some(VALUE_LEN)
    );
}

#[test]
fn compacted_raft_log_returns_its_space() {
    use kv::raft_storage::RAFT_LOGS_DIR;
    use kv::RaftStorage;
    use raft_core::{Persist, WriteId};

    let dir = tempfile::tempdir().unwrap();
    let mut log = RaftStorage::open(dir.path()).unwrap();
    let payload = Bytes::from(vec![b'p'; 128]);
    let total = 200_000u64;
    for b in 0..total / BATCH {
        let entries = (b * BATCH + 1..=(b + 1) * BATCH)
            .map(|i| Entry::new(1, i, EntryKind::Normal, payload.clone()))
            .collect();
        log.persist(&Persist {
            id: WriteId { seq: b, term: 1 },
            hard_state: None,
            entries,
        })
        .unwrap();
        // Raft compacts as it goes, keeping a tail of 10,000 entries.
        if b % 20 == 19 {
            log.compact((b + 1) * BATCH - 10_000, &raft_core::Membership::default())
                .unwrap();
        }
    }
    log.compact(total - 10_000, &raft_core::Membership::default())
        .unwrap();
    log.reclaim_space().unwrap();
    let live = 10_000 * (128 + 9 + 30);
    let size = dir_size(&dir.path().join(RAFT_LOGS_DIR));
    eprintln!("raft_logs holds {size} bytes for {live} bytes of live entries");
    assert!(
        size <= 2 * live,
        "raft_logs holds {size} bytes for {live} bytes of live entries"
    );
    drop(log);
    let mut log = RaftStorage::open(dir.path()).unwrap();
    let rs = log.load().unwrap();
    assert_eq!(rs.entries.len(), 10_000);
    assert_eq!(rs.snapshot.index, total - 10_000);
}
