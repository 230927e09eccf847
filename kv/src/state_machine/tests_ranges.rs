//! Several ranges in one database: each sees, counts, scans, sweeps and flushes only its own
//! keys, and refuses at apply a command naming a key outside its bounds.

use super::tests_layout::{all_rows, clock, command, set, Rows};
use super::*;
use crate::command::{Deadline, Op};
use crate::query::Query;
use crate::ranges::{RangeDescriptor, FIRST_RANGE};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

/// One range's state machine and its log position.
struct Range {
    sm: KvStateMachine,
    index: Index,
}

impl Range {
    fn new(sm: KvStateMachine) -> Range {
        let index = sm.applied_index();
        Range { sm, index }
    }

    fn run_as(&mut self, client: u64, seq: u64, op: Op) -> CommandResult {
        self.index += 1;
        let e = command(self.index, client, seq, op);
        self.sm.apply(&[e]).unwrap()[0].1.clone().unwrap()
    }

    fn run(&mut self, op: Op) -> CommandResult {
        self.run_as(SESSIONLESS_CLIENT, self.index + 1, op)
    }

    fn clock(&mut self, ms: u64) {
        self.index += 1;
        self.sm.apply(&[clock(self.index, ms)]).unwrap();
    }

    fn ask(&mut self, q: Query) -> CommandResult {
        self.sm.query_now(&q).unwrap()
    }

    /// Every live key SCAN visits, walking the whole cursor, sorted.
    fn scanned(&mut self) -> Vec<Bytes> {
        let (mut cursor, mut keys) = (0u64, Vec::new());
        loop {
            let CommandResult::Array(reply) = self.ask(Query::Scan {
                cursor,
                pattern: None,
                count: 2,
            }) else {
                panic!("SCAN answers an array");
            };
            let [CommandResult::Bulk(next), CommandResult::Array(found)] = &reply[..] else {
                panic!("SCAN answers a cursor and keys: {reply:?}");
            };
            keys.extend(found.iter().map(|k| match k {
                CommandResult::Bulk(k) => k.clone(),
                other => panic!("a key: {other:?}"),
            }));
            cursor = std::str::from_utf8(next).unwrap().parse().unwrap();
            if cursor == 0 {
                keys.sort();
                return keys;
            }
        }
    }

    fn keys(&mut self) -> Vec<Bytes> {
        match self.ask(Query::Keys { pattern: b("*") }) {
            CommandResult::Array(keys) => keys
                .into_iter()
                .map(|k| match k {
                    CommandResult::Bulk(k) => k,
                    other => panic!("a key: {other:?}"),
                })
                .collect(),
            other => panic!("KEYS answers an array: {other:?}"),
        }
    }

    fn dbsize(&mut self) -> CommandResult {
        self.ask(Query::DbSize)
    }
}

fn keys(names: &[&str]) -> Vec<Bytes> {
    names.iter().map(|n| b(n)).collect()
}

/// `[.., m)` is the first range (unprefixed rows) at epoch 2, `[m, ..)` range 2.
fn left_bounds() -> RangeDescriptor {
    RangeDescriptor {
        id: FIRST_RANGE,
        start: Bytes::new(),
        end: Some(b("m")),
        epoch: 2,
    }
}

fn right_bounds() -> RangeDescriptor {
    RangeDescriptor {
        id: 2,
        start: b("m"),
        end: None,
        epoch: 2,
    }
}

fn open_split(dir: &Path) -> (Range, Range) {
    let mut left = KvStateMachine::open(dir).unwrap();
    if left.descriptor().end.is_none() {
        left.record_descriptor(left_bounds()).unwrap();
    }
    let right = left.open_range(right_bounds()).unwrap();
    (Range::new(left), Range::new(right))
}

fn count(keys: u64, volatile: u64) -> KeyCounts {
    KeyCounts { keys, volatile }
}

/// Interleaved keys, some with deadlines, written to the range owning each.
fn write_interleaved(left: &mut Range, right: &mut Range) {
    for (key, deadline) in [
        ("a", Deadline::None),
        ("n", Deadline::None),
        ("b", Deadline::In(1_000)),
        ("x", Deadline::In(1_000)),
        ("k", Deadline::In(5_000)),
        ("z", Deadline::None),
        ("m", Deadline::In(5_000)),
    ] {
        let range = if key < "m" { &mut *left } else { &mut *right };
        assert_eq!(
            range.run(set(key, key, deadline)),
            CommandResult::Ok,
            "{key}"
        );
    }
}

#[test]
fn two_ranges_in_one_database_count_scan_and_sweep_only_their_own_keys_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut left, mut right) = open_split(dir.path());
        write_interleaved(&mut left, &mut right);
        assert_eq!(left.sm.key_counts(), count(3, 2));
        assert_eq!(right.sm.key_counts(), count(4, 2));
        left.sm.sync().unwrap();
        right.sm.sync().unwrap();
    }
    let (mut left, mut right) = open_split(dir.path());
    assert_eq!(left.sm.descriptor(), &left_bounds(), "stored");
    assert_eq!(right.sm.descriptor(), &right_bounds(), "stored");
    assert_eq!(left.sm.key_counts(), count(3, 2));
    assert_eq!(right.sm.key_counts(), count(4, 2));
    assert_eq!(left.dbsize(), CommandResult::Value(3));
    assert_eq!(right.dbsize(), CommandResult::Value(4));
    assert_eq!(left.scanned(), keys(&["a", "b", "k"]));
    assert_eq!(right.scanned(), keys(&["m", "n", "x", "z"]));
    assert_eq!(left.keys(), keys(&["a", "b", "k"]));
    assert_eq!(right.keys(), keys(&["m", "n", "x", "z"]));
    let scanned: Vec<Bytes> = left
        .sm
        .scan_range(b"", None, 100)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(scanned, keys(&["a", "b", "k"]));
    assert_eq!(right.sm.scan_prefix(b"", 100).unwrap().len(), 4);

    // Each range's log time sweeps its own keys only: b expires in the left range, x (same
    // deadline) waits for the right range's clock.
    left.clock(2_000);
    assert_eq!(left.sm.key_counts(), count(2, 1));
    assert_eq!(left.scanned(), keys(&["a", "k"]));
    assert_eq!(right.sm.key_counts(), count(4, 2));
    assert_eq!(
        right.ask(Query::Get { key: b("x") }),
        CommandResult::Bulk(b("x"))
    );
    right.clock(6_000);
    assert_eq!(right.sm.key_counts(), count(2, 0));
    assert_eq!(right.scanned(), keys(&["n", "z"]));
    assert_eq!(left.sm.key_counts(), count(2, 1), "k is still there");
    assert_eq!(
        left.ask(Query::Get { key: b("k") }),
        CommandResult::Bulk(b("k"))
    );
}

#[test]
fn flushall_in_one_range_leaves_the_other_range_s_keys_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (mut left, mut right) = open_split(dir.path());
    write_interleaved(&mut left, &mut right);
    // Small chunks would only show more of the same; the flush walks bounded by the range.
    assert_eq!(right.run(Op::FlushAll), CommandResult::Ok);
    assert_eq!(right.sm.key_counts(), count(0, 0));
    assert_eq!(right.scanned(), Vec::<Bytes>::new());
    assert_eq!(left.sm.key_counts(), count(3, 2));
    assert_eq!(left.scanned(), keys(&["a", "b", "k"]));
    assert_eq!(
        left.ask(Query::Get { key: b("b") }),
        CommandResult::Bulk(b("b"))
    );
    // The user rows left are the left range's keys; the right range has no index row left,
    // and the left range all of its own (a, b, k in the scan index; b, k in the expiry index).
    let rows = all_rows(&mut left.sm);
    let user: Vec<&[u8]> = rows
        .iter()
        .filter(|(r, _)| r.first() == Some(&USER))
        .map(|(r, _)| &r[1..])
        .collect();
    assert_eq!(user, vec![&b"a"[..], b"b", b"k"]);
    let right_keys = StateKeys::of(2);
    let right_index = rows
        .iter()
        .filter(|(r, _)| {
            r.starts_with(&right_keys.hashed_prefix()) || r.starts_with(&right_keys.expiry_prefix())
        })
        .count();
    assert_eq!(right_index, 0);
    let left_index = rows
        .iter()
        .filter(|(r, _)| matches!(r.first(), Some(&(EXPIRY | HASHED))))
        .count();
    assert_eq!(left_index, 5);
    assert_eq!(left.run(Op::FlushAll), CommandResult::Ok);
    assert_eq!(left.sm.key_counts(), count(0, 0));
}

#[test]
fn sessions_and_watch_rows_are_per_range() {
    let dir = tempfile::tempdir().unwrap();
    let (mut left, mut right) = open_split(dir.path());
    // The same client and sequence number in two ranges are two commands.
    assert_eq!(
        left.run_as(7, 1, set("a", "1", Deadline::None)),
        CommandResult::Ok
    );
    assert_eq!(
        right.run_as(7, 1, set("n", "1", Deadline::None)),
        CommandResult::Ok
    );
    assert_eq!(right.sm.get(b"n").unwrap(), Some(b("1")));
    // A flush in the right range aborts a transaction there, not in the left one.
    let token = |r: &mut Range, key: &str| match r.ask(Query::Versions { keys: vec![b(key)] }) {
        CommandResult::Array(v) => match v[..] {
            [CommandResult::Value(t)] => t as u64,
            _ => panic!("{v:?}"),
        },
        other => panic!("{other:?}"),
    };
    let (left_token, right_token) = (token(&mut left, "c"), token(&mut right, "q"));
    right.run(Op::FlushAll);
    let multi = |key: &str, token: u64| Op::Multi {
        watches: vec![(b(key), token)],
        ops: vec![set(key, "v", Deadline::None)],
    };
    assert!(matches!(
        left.run(multi("c", left_token)),
        CommandResult::Array(_)
    ));
    assert_eq!(right.run(multi("q", right_token)), CommandResult::Aborted);
    drop((left, right));
    let (left, right) = open_split(dir.path());
    assert_eq!(left.sm.session_clients(), vec![7]);
    assert_eq!(right.sm.session_clients(), vec![7]);
}

#[test]
fn a_range_s_descriptor_is_its_state_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = KvStateMachine::open(dir.path()).unwrap();
    assert_eq!(first.descriptor(), &RangeDescriptor::whole(FIRST_RANGE));
    assert!(first
        .open_range(RangeDescriptor::whole(FIRST_RANGE))
        .is_err());
    {
        let second = first.open_range(right_bounds()).unwrap();
        assert_eq!(second.applied_index(), 0);
        // Opened again with an older view of it, the range keeps what is stored.
        let mut stale = right_bounds();
        stale.epoch = 1;
        drop(second);
        assert_eq!(
            first.open_range(stale).unwrap().descriptor(),
            &right_bounds()
        );
    }
    // A descriptor row naming another range is damage.
    let mut third = right_bounds();
    third.id = 3;
    let mut batch = WriteBatch::default();
    batch.put(&StateKeys::of(3).descriptor(), &right_bounds().encode());
    first.db().write(batch, true).unwrap();
    let err = first.open_range(third).err().unwrap().to_string();
    assert!(err.contains("describes range 2"), "{err}");
}

#[test]
fn whole_directory_snapshots_refuse_while_ranges_share_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = KvStateMachine::open(dir.path()).unwrap();
    let mut second = first.open_range(right_bounds()).unwrap();
    let err = first.build_snapshot(0, 4096).err().unwrap().to_string();
    assert!(err.contains("first range alone"), "{err}");
    assert!(second.build_snapshot(0, 4096).is_err());
    drop(second);
    assert!(first.build_snapshot(0, 4096).is_ok(), "alone again");
}

#[test]
fn a_command_naming_a_key_outside_the_range_is_refused_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut left, mut right) = open_split(dir.path());
    assert_eq!(left.run(set("a", "1", Deadline::None)), CommandResult::Ok);
    assert_eq!(right.run(set("x", "1", Deadline::None)), CommandResult::Ok);
    let refused = CommandResult::NotOwned {
        range: FIRST_RANGE,
        epoch: 2,
    };
    let foreign = [
        set("y", "2", Deadline::None),
        Op::MSet {
            pairs: vec![(b("a"), b("2")), (b("y"), b("2"))],
            if_none_exist: false,
        },
        Op::Rename {
            from: b("a"),
            to: b("y"),
            if_absent: false,
        },
        Op::DeleteMany {
            keys: vec![b("a"), b("x")],
        },
        Op::Incr { key: b("x"), by: 1 },
        Op::Cas {
            key: b("x"),
            expected: Some(b("1")),
            new: None,
        },
        Op::Multi {
            watches: vec![(b("x"), 0)],
            ops: vec![set("a", "2", Deadline::None)],
        },
        Op::Multi {
            watches: vec![],
            ops: vec![
                set("a", "2", Deadline::None),
                Op::Query(Query::Get { key: b("x") }),
            ],
        },
        Op::Query(Query::Exists {
            keys: vec![b("a"), b("z")],
        }),
    ];
    for (seq, op) in foreign.into_iter().enumerate() {
        let shown = format!("{op:?}");
        assert_eq!(left.run_as(7, seq as u64 + 1, op), refused, "{shown}");
    }
    assert_eq!(left.sm.session_clients(), Vec::<u64>::new(), "nothing kept");
    assert_eq!(left.sm.get(b"a").unwrap(), Some(b("1")));
    assert_eq!(left.sm.key_counts(), count(1, 0));
    assert_eq!(right.sm.key_counts(), count(1, 0));
    assert_eq!(right.sm.get(b"x").unwrap(), Some(b("1")));
    assert_eq!(right.sm.get(b"y").unwrap(), None);
    assert!(all_rows(&mut left.sm)
        .iter()
        .all(|(r, _)| r.first() != Some(&USER) || r[1..] == b"a"[..] || r[1..] == b"x"[..]));
    // The other way round, with the other range's id.
    assert_eq!(
        right.run(set("a", "3", Deadline::None)),
        CommandResult::NotOwned { range: 2, epoch: 2 }
    );
    // Reads are refused alike; walks of the range's own keys are not.
    assert_eq!(left.ask(Query::Get { key: b("x") }), refused);
    assert_eq!(
        left.ask(Query::MGet {
            keys: vec![b("a"), b("x")]
        }),
        refused
    );
    assert!(left.sm.get(b"x").is_err());
    assert_eq!(left.keys(), keys(&["a"]));
    assert_eq!(
        left.ask(Query::Scan {
            cursor: 0,
            pattern: Some(b("x*")),
            count: 10
        }),
        CommandResult::Array(vec![
            CommandResult::Bulk(b("0")),
            CommandResult::Array(vec![])
        ])
    );
}

/// Client 7 sets `x` while the first range owns every key; the range then shrinks to
/// `[.., m)`, and the same command comes again (a retry), then new ones.
fn replica(dir: &Path) -> (Vec<Option<CommandResult>>, Rows) {
    let mut sm = KvStateMachine::open(dir).unwrap();
    let mut results = results_of(
        sm.apply(&[command(1, 7, 1, set("x", "1", Deadline::None))])
            .unwrap(),
    );
    sm.record_descriptor(left_bounds()).unwrap();
    results.extend(results_of(
        sm.apply(&[
            command(2, 7, 1, set("x", "1", Deadline::None)),
            command(3, 7, 2, set("x", "2", Deadline::None)),
            command(4, 7, 3, set("a", "2", Deadline::None)),
            command(
                5,
                8,
                1,
                Op::Rename {
                    from: b("a"),
                    to: b("z"),
                    if_absent: false,
                },
            ),
        ])
        .unwrap(),
    ));
    (results, all_rows(&mut sm))
}

fn results_of(applied: Applied) -> Vec<Option<CommandResult>> {
    applied.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn replicas_refuse_alike_and_a_retry_of_a_command_applied_before_gets_its_first_result() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (results, rows) = replica(one.path());
    let refused = Some(CommandResult::NotOwned {
        range: FIRST_RANGE,
        epoch: 2,
    });
    assert_eq!(
        results,
        vec![
            Some(CommandResult::Ok),
            Some(CommandResult::Ok),
            refused.clone(),
            Some(CommandResult::Ok),
            refused
        ]
    );
    assert_eq!(replica(two.path()), (results, rows));
}

#[test]
fn a_refusal_encodes_and_older_results_decode_as_before() {
    let refusal = CommandResult::NotOwned {
        range: 9,
        epoch: u64::MAX,
    };
    assert_eq!(CommandResult::decode(&refusal.encode()).unwrap(), refusal);
    let nested = CommandResult::Array(vec![CommandResult::Ok, refusal.clone()]);
    assert_eq!(CommandResult::decode(&nested.encode()).unwrap(), nested);
    // What an older version cached: the session rows of the fixture decode to what they held.
    let held: Vec<CommandResult> = super::tests_layout::rows_before_ranges()
        .into_iter()
        .filter(|(k, _)| k.starts_with(SESSION_PREFIX))
        .map(|(_, v)| decode_session(Bytes::from(v)).unwrap().result)
        .collect();
    assert_eq!(
        held,
        vec![
            CommandResult::Ok,
            CommandResult::Deleted { existed: true },
            CommandResult::Value(4),
            CommandResult::Ok
        ]
    );
}

#[test]
fn a_damaged_descriptor_row_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sm = KvStateMachine::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        batch.put(KEY_DESCRIPTOR, b"\x01garbage");
        sm.db().write(batch, true).unwrap();
    }
    let err = KvStateMachine::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("range descriptor"), "{err}");
}
