//! The first range's rows are the rows written before ranges existed, byte for byte: a data
//! directory of an older version opens unchanged, and a new one is written as it would have been.

use super::*;
use crate::command::{Command, Deadline, Op, SetCondition};
use crate::members::{MemberAddrs, MemberContext};
use crate::ranges::{RangeDescriptor, FIRST_RANGE};
use raft_core::{ConfChangeEntry, EntryKind, Membership};

/// Rows as keys and values.
pub(super) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Every row of the database, in key order.
pub(super) fn all_rows(sm: &mut KvStateMachine) -> Rows {
    let mut rows = Vec::new();
    sm.ldb()
        .scan_from(&[], |k, v| {
            rows.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })
        .unwrap();
    rows
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn command(index: Index, client: u64, seq: u64, op: Op) -> Entry {
    Entry::new(
        1,
        index,
        EntryKind::Normal,
        Command::new(client, seq, op).encode(),
    )
}

pub(super) fn clock(index: Index, ms: u64) -> Entry {
    Entry::new(
        1,
        index,
        EntryKind::Clock,
        raft_core::clock::encode_clock(ms),
    )
}

pub(super) fn set(key: &str, value: &str, deadline: Deadline) -> Op {
    Op::SetWith {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
        condition: SetCondition::Always,
        deadline,
        get: false,
    }
}

/// Batches that write every kind of row: the applied record and the member table, sessions,
/// user rows with and without deadlines, both index rows, counts, log time, the WATCH rows
/// (a removed key's bucket and the last FLUSHALL).
pub(super) fn workload() -> Vec<Vec<Entry>> {
    let addrs = MemberContext {
        addrs: (1..=3)
            .map(|i| {
                (
                    i,
                    MemberAddrs::new(format!("h:710{i}"), format!("h:700{i}")),
                )
            })
            .collect(),
    };
    let conf = ConfChangeEntry {
        membership: Membership::with_voters([1, 2, 3]),
        context: addrs.encode(),
    };
    vec![
        vec![
            Entry::new(1, 1, EntryKind::ConfChange, conf.encode()),
            command(2, 5, 1, Op::FlushAll),
        ],
        vec![
            clock(3, 1000),
            command(4, 7, 1, set("a", "1", Deadline::None)),
            command(5, 7, 2, set("b", "2", Deadline::In(500))),
            command(6, SESSIONLESS_CLIENT, 1, set("c", "3", Deadline::None)),
            command(
                7,
                8,
                1,
                Op::Incr {
                    key: Bytes::from_static(b"n"),
                    by: 4,
                },
            ),
        ],
        vec![
            command(
                8,
                7,
                3,
                Op::Delete {
                    key: Bytes::from_static(b"a"),
                },
            ),
            clock(9, 2000),
            command(10, 9, 1, set("d", "4", Deadline::In(10_000))),
        ],
    ]
}

/// What commit 5e37374 (before ranges) wrote for [`workload`]: every row, in key order.
pub(super) fn rows_before_ranges() -> Rows {
    let unhex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    include_str!("testdata/rows_before_ranges.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (unhex(k), unhex(v))
        })
        .collect()
}

fn show(rows: &[(Vec<u8>, Vec<u8>)]) -> String {
    rows.iter()
        .map(|(k, v)| format!("{} {}\n", hex(k), hex(v)))
        .collect()
}

#[test]
fn a_new_first_range_writes_what_was_written_before_ranges_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    for batch in workload() {
        sm.apply(&batch).unwrap();
    }
    let expected = rows_before_ranges();
    assert_eq!(expected.len(), 19, "the fixture is complete");
    assert_eq!(show(&all_rows(&mut sm)), show(&expected));
}

#[test]
fn a_directory_written_before_ranges_opens_unchanged_as_the_first_range() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut db =
            crate::ldb::Ldb::open(&dir.path().join(KV_DATA_DIR), &StorageEnv::Disk).unwrap();
        let mut batch = WriteBatch::default();
        for (k, v) in rows_before_ranges() {
            batch.put(&k, &v);
        }
        db.write(batch, true).unwrap();
    }
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.descriptor(), &RangeDescriptor::whole(FIRST_RANGE));
    assert_eq!((sm.applied_index(), sm.applied_term()), (10, 1));
    assert_eq!(sm.session_clients(), vec![5, 7, 8, 9]);
    assert_eq!(sm.members().addrs.len(), 3);
    assert_eq!(sm.clock_ms(), 2000);
    assert_eq!(
        sm.key_counts(),
        KeyCounts {
            keys: 3,
            volatile: 1
        }
    );
    assert_eq!(sm.get(b"c").unwrap(), Some(Bytes::from_static(b"3")));
    assert_eq!(sm.get(b"a").unwrap(), None, "deleted");
    assert_eq!(sm.get(b"b").unwrap(), None, "expired and swept");
    assert_eq!(show(&all_rows(&mut sm)), show(&rows_before_ranges()));
    // A retry of a command applied before gets its cached result.
    let retry = command(
        11,
        8,
        1,
        Op::Incr {
            key: Bytes::from_static(b"n"),
            by: 4,
        },
    );
    assert_eq!(
        sm.apply(&[retry]).unwrap()[0].1,
        Some(CommandResult::Value(4))
    );
}
