//! The Redis command set on the state machine: expiry by log time, transactions, scans, counts.

use super::*;
use crate::command::{Command, Deadline, ExpireCondition, Op, SetCondition};
use crate::query::{Query, TtlForm};
use raft_core::EntryKind;

pub(super) fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

pub(super) struct Sm {
    pub(super) sm: KvStateMachine,
    pub(super) index: Index,
    pub(super) dir: tempfile::TempDir,
}

impl Sm {
    pub(super) fn new() -> Sm {
        let dir = tempfile::tempdir().unwrap();
        Sm {
            sm: KvStateMachine::open(dir.path()).unwrap(),
            index: 0,
            dir,
        }
    }

    pub(super) fn run(&mut self, op: Op) -> CommandResult {
        self.index += 1;
        let e = Entry::new(
            1,
            self.index,
            EntryKind::Normal,
            Command::new(0, self.index, op).encode(),
        );
        self.sm.apply(&[e]).unwrap()[0].1.clone().unwrap()
    }

    pub(super) fn clock(&mut self, ms: u64) {
        self.index += 1;
        let e = Entry::new(
            1,
            self.index,
            EntryKind::Clock,
            raft_core::clock::encode_clock(ms),
        );
        assert_eq!(self.sm.apply(&[e]).unwrap()[0].1, None);
    }

    pub(super) fn ask(&mut self, q: Query) -> CommandResult {
        self.sm.query_now(&q).unwrap()
    }
}

pub(super) fn set_px(key: &str, value: &str, ms: u64) -> Op {
    Op::SetWith {
        key: b(key),
        value: b(value),
        condition: SetCondition::Always,
        deadline: Deadline::In(ms),
        get: false,
    }
}

#[test]
fn a_key_expires_when_the_log_time_passes_its_deadline_and_is_swept_through_the_log() {
    let mut s = Sm::new();
    s.clock(1_000);
    assert_eq!(s.run(set_px("k", "v", 100)), CommandResult::Ok);
    assert_eq!(
        s.ask(Query::Ttl {
            key: b("k"),
            form: TtlForm::Millis
        }),
        CommandResult::Value(100)
    );
    assert_eq!(
        s.sm.key_counts(),
        KeyCounts {
            keys: 1,
            volatile: 1
        }
    );
    s.clock(1_099);
    assert_eq!(s.sm.get(b"k").unwrap(), Some(b("v")));
    // Time in the log moves only forward: an older stamp (a leader whose clock is behind)
    // changes nothing.
    s.clock(500);
    assert_eq!(s.sm.clock_ms(), 1_099);
    s.clock(1_100);
    assert_eq!(s.sm.get(b"k").unwrap(), None, "gone at its deadline");
    assert_eq!(s.sm.key_counts(), KeyCounts::default(), "and swept");
    assert_eq!(
        s.ask(Query::Ttl {
            key: b("k"),
            form: TtlForm::Seconds
        }),
        CommandResult::Value(-2)
    );
}

#[test]
fn set_options_behave_as_in_redis() {
    let mut s = Sm::new();
    s.clock(10_000);
    let set = |cond, deadline, get| Op::SetWith {
        key: b("k"),
        value: b("new"),
        condition: cond,
        deadline,
        get,
    };
    assert_eq!(
        s.run(set(SetCondition::IfPresent, Deadline::None, false)),
        CommandResult::Nil
    );
    assert_eq!(
        s.run(set(SetCondition::IfAbsent, Deadline::In(5_000), true)),
        CommandResult::Nil
    );
    assert_eq!(
        s.run(set(SetCondition::IfAbsent, Deadline::None, false)),
        CommandResult::Nil
    );
    // KEEPTTL keeps the deadline; a plain SET clears it.
    assert_eq!(
        s.run(set(SetCondition::Always, Deadline::Keep, true)),
        CommandResult::Bulk(b("new"))
    );
    assert_eq!(
        s.ask(Query::Ttl {
            key: b("k"),
            form: TtlForm::Seconds
        }),
        CommandResult::Value(5)
    );
    assert_eq!(
        s.run(Op::Set {
            key: b("k"),
            value: b("v")
        }),
        CommandResult::Ok
    );
    assert_eq!(
        s.ask(Query::Ttl {
            key: b("k"),
            form: TtlForm::Seconds
        }),
        CommandResult::Value(-1)
    );
    // A deadline already past leaves no key.
    assert_eq!(
        s.run(set(SetCondition::Always, Deadline::At(9_000), false)),
        CommandResult::Ok
    );
    assert_eq!(s.sm.get(b"k").unwrap(), None);
}

#[test]
fn expire_conditions_and_persist() {
    let mut s = Sm::new();
    s.clock(1_000);
    s.run(Op::Set {
        key: b("k"),
        value: b("v"),
    });
    let expire = |d, c| Op::Expire {
        key: b("k"),
        deadline: d,
        condition: c,
    };
    assert_eq!(
        s.run(expire(Deadline::In(10_000), ExpireCondition::IfSome)),
        CommandResult::Value(0)
    );
    assert_eq!(
        s.run(expire(Deadline::In(10_000), ExpireCondition::IfNone)),
        CommandResult::Value(1)
    );
    assert_eq!(
        s.run(expire(Deadline::In(20_000), ExpireCondition::IfEarlier)),
        CommandResult::Value(0)
    );
    assert_eq!(
        s.run(expire(Deadline::In(20_000), ExpireCondition::IfLater)),
        CommandResult::Value(1)
    );
    assert_eq!(
        s.ask(Query::Ttl {
            key: b("k"),
            form: TtlForm::AtMillis
        }),
        CommandResult::Value(21_000)
    );
    assert_eq!(
        s.run(expire(Deadline::None, ExpireCondition::Always)),
        CommandResult::Value(1)
    );
    assert_eq!(
        s.run(expire(Deadline::None, ExpireCondition::Always)),
        CommandResult::Value(0)
    );
    assert_eq!(s.sm.key_counts().volatile, 0);
    assert_eq!(
        s.run(expire(Deadline::At(1), ExpireCondition::Always)),
        CommandResult::Value(1)
    );
    assert_eq!(
        s.sm.get(b"k").unwrap(),
        None,
        "a deadline in the past deletes the key"
    );
}

#[test]
fn a_transaction_applies_all_its_commands_unless_a_watched_key_changed() {
    let mut s = Sm::new();
    s.run(Op::Set {
        key: b("a"),
        value: b("1"),
    });
    let watched = match s.ask(Query::Versions {
        keys: vec![b("a"), b("missing")],
    }) {
        CommandResult::Array(v) => v,
        other => panic!("{other:?}"),
    };
    let version = |r: &CommandResult| match r {
        CommandResult::Value(v) => *v as u64,
        other => panic!("{other:?}"),
    };
    let multi = |va: u64| Op::Multi {
        watches: vec![(b("a"), va), (b("missing"), 0)],
        ops: vec![
            Op::Incr { key: b("a"), by: 1 },
            Op::Query(Query::Get { key: b("a") }),
            Op::Incr {
                key: b("text"),
                by: 1,
            },
        ],
    };
    s.run(Op::Set {
        key: b("text"),
        value: b("x"),
    });
    assert_eq!(
        s.run(multi(version(&watched[0]))),
        CommandResult::Array(vec![
            CommandResult::Value(2),
            CommandResult::Bulk(b("2")),
            CommandResult::Error("value is not an integer or out of range".into()),
        ]),
        "every command runs; one failing does not undo the others, as in Redis"
    );
    // `a` changed since it was watched: nothing is applied.
    assert_eq!(s.run(multi(version(&watched[0]))), CommandResult::Aborted);
    assert_eq!(s.sm.get(b"a").unwrap(), Some(b("2")));
}

#[test]
fn scan_visits_every_key_once_across_calls_and_keys_matches_globs() {
    let mut s = Sm::new();
    let pairs: Vec<(Bytes, Bytes)> = (0..500).map(|i| (b(&format!("key:{i}")), b("v"))).collect();
    s.run(Op::MSet {
        pairs,
        if_none_exist: false,
    });
    s.run(Op::Set {
        key: b("other"),
        value: b("v"),
    });
    assert_eq!(s.ask(Query::DbSize), CommandResult::Value(501));
    let mut cursor = 0;
    let mut seen = std::collections::BTreeSet::new();
    let mut calls = 0;
    loop {
        let page = s.ask(Query::Scan {
            cursor,
            pattern: Some(b("key:*")),
            count: 37,
        });
        let CommandResult::Array(parts) = page else {
            panic!()
        };
        let (CommandResult::Bulk(next), CommandResult::Array(keys)) = (&parts[0], &parts[1]) else {
            panic!()
        };
        for k in keys {
            let CommandResult::Bulk(k) = k else { panic!() };
            assert!(seen.insert(k.clone()), "{k:?} returned twice");
        }
        calls += 1;
        cursor = std::str::from_utf8(next).unwrap().parse().unwrap();
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen.len(), 500);
    assert!(calls >= 500 / 37, "bounded per call: {calls} calls");
    let CommandResult::Array(keys) = s.ask(Query::Keys {
        pattern: b("key:1?"),
    }) else {
        panic!()
    };
    assert_eq!(keys.len(), 10);
}

#[test]
fn counts_rename_append_getdel_msetnx_and_flushall() {
    let mut s = Sm::new();
    assert_eq!(
        s.run(Op::Append {
            key: b("a"),
            value: b("ab")
        }),
        CommandResult::Value(2)
    );
    assert_eq!(
        s.run(Op::Append {
            key: b("a"),
            value: b("c")
        }),
        CommandResult::Value(3)
    );
    assert_eq!(
        s.run(Op::Rename {
            from: b("a"),
            to: b("b"),
            if_absent: false
        }),
        CommandResult::Ok
    );
    assert_eq!(
        s.run(Op::Rename {
            from: b("a"),
            to: b("b"),
            if_absent: false
        }),
        CommandResult::Error("no such key".into())
    );
    let pairs = vec![(b("b"), b("x")), (b("c"), b("y"))];
    assert_eq!(
        s.run(Op::MSet {
            pairs,
            if_none_exist: true
        }),
        CommandResult::Value(0)
    );
    assert_eq!(s.sm.get(b"c").unwrap(), None, "MSETNX is all or nothing");
    assert_eq!(
        s.run(Op::GetDel { key: b("b") }),
        CommandResult::Bulk(b("abc"))
    );
    assert_eq!(s.sm.key_counts().keys, 0);
    s.run(Op::DeleteMany { keys: vec![b("x")] });
    let pairs = vec![(b("x"), b("1")), (b("y"), b("2"))];
    s.run(Op::MSet {
        pairs,
        if_none_exist: false,
    });
    assert_eq!(
        s.run(Op::DeleteMany {
            keys: vec![b("x"), b("x"), b("z")]
        }),
        CommandResult::Value(1)
    );
    assert_eq!(s.run(Op::FlushAll), CommandResult::Ok);
    assert_eq!(s.ask(Query::DbSize), CommandResult::Value(0));
    assert_eq!(
        s.ask(Query::Scan {
            cursor: 0,
            pattern: None,
            count: 10
        }),
        CommandResult::Array(vec![
            CommandResult::Bulk(b("0")),
            CommandResult::Array(vec![]),
        ])
    );
}

#[test]
fn a_data_directory_of_raw_values_is_converted_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut db =
            crate::ldb::Ldb::open(&dir.path().join(KV_DATA_DIR), &crate::ldb::StorageEnv::Disk)
                .unwrap();
        let mut batch = WriteBatch::default();
        batch.put(&user_row(b"old"), b"raw value");
        db.write(batch, true).unwrap();
    }
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.get(b"old").unwrap(), Some(b("raw value")));
    assert_eq!(sm.key_counts().keys, 1);
    assert_eq!(
        sm.query_now(&Query::Keys { pattern: b("*") }).unwrap(),
        CommandResult::Array(vec![CommandResult::Bulk(b("old"))])
    );
}
