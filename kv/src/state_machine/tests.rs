use super::*;
use crate::command::{Command, Op};
use crate::env::PowerCutEnv;
use raft_core::EntryKind;

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

fn cmd_entry(index: Index, client: u64, seq: u64, op: Op) -> Entry {
    Entry::new(
        1,
        index,
        EntryKind::Normal,
        Command::new(client, seq, op).encode(),
    )
}

fn set(k: &str, v: &str) -> Op {
    Op::Set {
        key: b(k),
        value: b(v),
    }
}

fn incr(k: &str, by: i64) -> Op {
    Op::Incr { key: b(k), by }
}

fn results(r: Applied) -> Vec<Option<CommandResult>> {
    r.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn sessionless_commands_are_applied_every_time_and_keep_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    // The same (client, seq) twice: without a session both apply, so the counter says 2.
    let es = vec![
        cmd_entry(1, SESSIONLESS_CLIENT, 9, incr("n", 1)),
        cmd_entry(2, SESSIONLESS_CLIENT, 9, incr("n", 1)),
    ];
    let r = results(sm.apply(&es).unwrap());
    assert_eq!(
        r,
        vec![Some(CommandResult::Value(1)), Some(CommandResult::Value(2))]
    );
    assert_eq!(sm.session_count(), 0);
}

#[test]
fn operations_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    let es = vec![
        cmd_entry(1, 1, 1, set("a", "1")),
        cmd_entry(2, 1, 2, incr("a", 41)),
        cmd_entry(3, 1, 3, incr("n", -5)),
        cmd_entry(4, 1, 4, set("s", "text")),
        cmd_entry(5, 1, 5, incr("s", 1)),
        cmd_entry(
            6,
            1,
            6,
            Op::Cas {
                key: b("c"),
                expected: None,
                new: Some(b("x")),
            },
        ),
        cmd_entry(
            7,
            1,
            7,
            Op::Cas {
                key: b("c"),
                expected: None,
                new: Some(b("y")),
            },
        ),
        cmd_entry(
            8,
            1,
            8,
            Op::Cas {
                key: b("c"),
                expected: Some(b("x")),
                new: None,
            },
        ),
        cmd_entry(9, 1, 9, Op::Delete { key: b("a") }),
        cmd_entry(10, 1, 10, Op::Delete { key: b("a") }),
        Entry::new(1, 11, EntryKind::Noop, Bytes::new()),
        cmd_entry(12, 1, 11, set("big", "9223372036854775807")),
        cmd_entry(13, 1, 12, incr("big", 1)),
        Entry::new(1, 14, EntryKind::Normal, Bytes::from_static(b"garbage")),
        cmd_entry(15, 1, 13, Op::Noop),
    ];
    let r = results(sm.apply(&es).unwrap());
    use CommandResult as R;
    assert_eq!(r[0], Some(R::Ok));
    assert_eq!(r[1], Some(R::Value(42)));
    assert_eq!(r[2], Some(R::Value(-5)));
    assert!(matches!(&r[4], Some(R::Error(m)) if m.contains("not an integer")));
    assert_eq!(r[5], Some(R::CasOk));
    assert_eq!(
        r[6],
        Some(R::CasFailed {
            current: Some(b("x"))
        })
    );
    assert_eq!(r[7], Some(R::CasOk));
    assert_eq!(r[8], Some(R::Deleted { existed: true }));
    assert_eq!(r[9], Some(R::Deleted { existed: false }));
    assert_eq!(r[10], None);
    assert!(matches!(&r[12], Some(R::Error(m)) if m.contains("overflow")));
    assert!(matches!(&r[13], Some(R::Error(m)) if m.contains("entry 14")));
    assert_eq!(r[14], Some(R::Ok));
    assert_eq!(sm.get(b"a").unwrap(), None);
    assert_eq!(sm.get(b"c").unwrap(), None);
    assert_eq!(sm.get(b"n").unwrap(), Some(b("-5")));
    assert_eq!(sm.get(b"s").unwrap(), Some(b("text")));
    assert_eq!(sm.applied_index(), 15);
}

#[test]
fn replayed_entries_are_skipped_and_gaps_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    sm.apply(&[
        cmd_entry(1, 1, 1, incr("k", 1)),
        cmd_entry(2, 2, 1, incr("k", 1)),
    ])
    .unwrap();
    // Entries 1 and 2 again (a replay after restart) plus a new one.
    let r = sm
        .apply(&[
            cmd_entry(1, 1, 1, incr("k", 1)),
            cmd_entry(2, 2, 1, incr("k", 1)),
            cmd_entry(3, 3, 1, incr("k", 1)),
        ])
        .unwrap();
    assert_eq!(r, vec![(3, Some(CommandResult::Value(3)))]);
    let e = sm.apply(&[cmd_entry(5, 3, 2, incr("k", 1))]).unwrap_err();
    assert!(e.to_string().contains("expected index 4"), "{e}");
    // Refused before anything was changed.
    assert_eq!(sm.get(b"k").unwrap(), Some(b("3")));
    sm.apply(&[cmd_entry(4, 3, 2, incr("k", 1))]).unwrap();
}

#[test]
fn exactly_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let r = sm
            .apply(&[
                cmd_entry(1, 7, 1, incr("ctr", 10)),
                // The client retried the same request; it got into the log twice.
                cmd_entry(2, 7, 1, incr("ctr", 10)),
            ])
            .unwrap();
        assert_eq!(
            results(r),
            vec![
                Some(CommandResult::Value(10)),
                Some(CommandResult::Value(10))
            ]
        );
        sm.apply(&[cmd_entry(3, 7, 2, incr("ctr", 1))]).unwrap();
    }
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    let r = sm
        .apply(&[
            cmd_entry(4, 7, 2, incr("ctr", 1)),
            cmd_entry(5, 7, 1, incr("ctr", 10)),
            cmd_entry(6, 7, 3, incr("ctr", 1)),
        ])
        .unwrap();
    assert_eq!(
        results(r),
        vec![
            Some(CommandResult::Value(11)),
            Some(CommandResult::Stale { last_seq: 2 }),
            Some(CommandResult::Value(12)),
        ]
    );
    assert_eq!(sm.get(b"ctr").unwrap(), Some(b("12")));
}

fn run_eviction(dir: &Path) -> (Vec<u64>, Vec<Option<CommandResult>>, Option<Bytes>) {
    let mut sm = KvStateMachine::open_with(dir, &StorageEnv::Disk, 3).unwrap();
    // Clients 10, 20, 30, 40 in that log order; then 10 again (moves to most recent),
    // then 50: evicts 20 and 30, the least recently used by log position.
    let mut es = vec![];
    for (i, c) in [10u64, 20, 30, 40].iter().enumerate() {
        es.push(cmd_entry(i as u64 + 1, *c, 1, incr("x", 1)));
    }
    es.push(cmd_entry(5, 10, 2, incr("x", 1)));
    es.push(cmd_entry(6, 50, 1, incr("x", 1)));
    let mut r = results(sm.apply(&es).unwrap());
    assert_eq!(sm.session_clients(), vec![10, 40, 50]);
    drop(sm);
    let mut sm = KvStateMachine::open_with(dir, &StorageEnv::Disk, 3).unwrap();
    assert_eq!(sm.session_clients(), vec![10, 40, 50]);
    // 40 is still known: its retry is answered from the cache. 20 was forgotten: its retry
    // is applied again (the documented cost of a bounded table).
    r.extend(results(
        sm.apply(&[
            cmd_entry(7, 40, 1, incr("x", 1)),
            cmd_entry(8, 20, 1, incr("x", 1)),
        ])
        .unwrap(),
    ));
    (sm.session_clients(), r, sm.get(b"x").unwrap())
}

#[test]
fn session_eviction_is_by_log_position_and_deterministic() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let a = run_eviction(d1.path());
    let b_ = run_eviction(d2.path());
    assert_eq!(a, b_);
    assert_eq!(a.0, vec![10, 20, 50]);
    assert_eq!(a.1[6], Some(CommandResult::Value(4)));
    assert_eq!(a.1[7], Some(CommandResult::Value(7)));
    assert_eq!(a.2, Some(b("7")));
}

#[test]
fn user_keys_cannot_touch_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    let mut evil_session = SESSION_PREFIX.to_vec();
    evil_session.extend_from_slice(&5u64.to_be_bytes());
    let evil: Vec<Bytes> = vec![
        Bytes::from_static(KEY_APPLIED),
        Bytes::from(evil_session),
        Bytes::from_static(&[0x00]),
        Bytes::from_static(&[0x01, 0x00, b'a']),
        Bytes::new(),
    ];
    let mut es = vec![cmd_entry(1, 5, 1, incr("k", 1))];
    for (i, k) in evil.iter().enumerate() {
        es.push(cmd_entry(
            i as u64 + 2,
            9,
            i as u64 + 1,
            Op::Set {
                key: k.clone(),
                value: Bytes::from_static(b"\xff\xff"),
            },
        ));
    }
    sm.apply(&es).unwrap();
    drop(sm);
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.applied_index(), 6);
    assert_eq!(sm.session_clients(), vec![5, 9]);
    for k in &evil {
        assert_eq!(sm.get(k).unwrap(), Some(Bytes::from_static(b"\xff\xff")));
    }
    // The real metadata is intact, under its own keys.
    assert!(sm.raw_get(KEY_APPLIED).unwrap().unwrap().len() > 2);
    let all = sm.scan_range(b"", None, 100).unwrap();
    let mut want = evil.clone();
    want.push(b("k"));
    want.sort();
    assert_eq!(all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), want);
    // Retry of client 5's command: still cached, so the session survived the evil keys.
    let r = sm.apply(&[cmd_entry(7, 5, 1, incr("k", 1))]).unwrap();
    assert_eq!(r, vec![(7, Some(CommandResult::Value(1)))]);
}

#[test]
fn scans() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    let keys = ["a", "a|1", "a|2", "ab", "b", "b|x", "c"];
    let es: Vec<Entry> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| cmd_entry(i as u64 + 1, 1, i as u64 + 1, set(k, k)))
        .collect();
    sm.apply(&es).unwrap();
    let ks = |v: Vec<(Bytes, Bytes)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        ks(sm.scan_prefix(b"a|", 10).unwrap()),
        vec![b("a|1"), b("a|2")]
    );
    // Byte order: "ab" < "a|1" (b'b' = 0x62 < b'|' = 0x7c).
    assert_eq!(ks(sm.scan_prefix(b"a", 2).unwrap()), vec![b("a"), b("ab")]);
    assert_eq!(ks(sm.scan_prefix(b"z", 10).unwrap()), Vec::<Bytes>::new());
    assert_eq!(
        ks(sm.scan_range(b"ab", Some(b"b|x"), 10).unwrap()),
        vec![b("ab"), b("a|1"), b("a|2"), b("b")]
    );
    assert_eq!(
        ks(sm.scan_range(b"b|", None, 10).unwrap()),
        vec![b("b|x"), b("c")]
    );
    assert_eq!(sm.scan_range(b"", None, 0).unwrap(), vec![]);
}

/// Unsynced apply batches may be lost on a power cut, but never partly: after the cut the
/// state is exactly "everything up to the applied index", and at least what was synced.
#[test]
fn power_cut_loses_only_unsynced_batches_and_never_half_a_batch() {
    let env = PowerCutEnv::new();
    let senv = StorageEnv::PowerCut(env.clone());
    let dir = Path::new("/n1");
    let batch = |n: u64| -> Vec<Entry> {
        // Batch n (1-based) sets keys n.0 .. n.9 and increments a counter.
        let mut es: Vec<Entry> = (0..10)
            .map(|j| {
                cmd_entry(
                    (n - 1) * 11 + j + 1,
                    1,
                    (n - 1) * 11 + j + 1,
                    set(&format!("{n}.{j}"), "v"),
                )
            })
            .collect();
        es.push(cmd_entry(n * 11, 1, n * 11, incr("batches", 1)));
        es
    };
    {
        let mut sm = KvStateMachine::open_with(dir, &senv, 100).unwrap();
        for n in 1..=40 {
            sm.apply(&batch(n)).unwrap();
            if n == 25 {
                assert_eq!(sm.sync().unwrap(), 275);
            }
        }
        assert_eq!(sm.durable_applied_index(), 275);
        env.cut_power();
    }
    env.power_on();
    let mut sm = KvStateMachine::open_with(dir, &senv, 100).unwrap();
    let applied = sm.applied_index();
    assert!(applied >= 275, "synced state lost: applied {applied}");
    assert!(
        applied < 440,
        "nothing unsynced was lost; the test proves nothing"
    );
    assert_eq!(applied % 11, 0, "half a batch survived: applied {applied}");
    let done = applied / 11;
    assert_eq!(
        sm.get(b"batches").unwrap(),
        Some(Bytes::from(done.to_string()))
    );
    for n in 1..=40u64 {
        for j in 0..10 {
            let present = sm.get(format!("{n}.{j}").as_bytes()).unwrap().is_some();
            assert_eq!(
                present,
                n <= done,
                "key {n}.{j} with {done} batches applied"
            );
        }
    }
    // The lost entries are replayed from the log and applied exactly once.
    for n in done + 1..=40 {
        sm.apply(&batch(n)).unwrap();
    }
    assert_eq!(sm.get(b"batches").unwrap(), Some(b("40")));
}

fn conf_entry(index: Index, membership: &raft_core::Membership) -> Entry {
    let change = raft_core::ConfChangeEntry {
        membership: membership.clone(),
        context: Bytes::from_static(b"addresses"),
    };
    Entry::new(1, index, EntryKind::ConfChange, change.encode())
}

#[test]
fn the_applied_configuration_is_recorded_and_carried_by_images() {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = raft_core::Membership::with_voters([1, 2, 3]);
    let grown = raft_core::Membership {
        voters: [1, 2, 3].into(),
        learners: [4].into(),
        ..Default::default()
    };
    {
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        sm.seed_membership(&bootstrap);
        assert_eq!(sm.applied_membership(), &bootstrap);
        sm.apply(&[cmd_entry(1, 7, 1, set("a", "1"))]).unwrap();
        let image = sm.build_snapshot(0, 4096).unwrap();
        assert_eq!(
            image.membership, bootstrap,
            "the seed until a change applies"
        );
        sm.apply(&[conf_entry(2, &grown), cmd_entry(3, 7, 2, set("b", "2"))])
            .unwrap();
        assert_eq!(sm.applied_membership(), &grown);
        sm.sync().unwrap();
    }
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    sm.seed_membership(&bootstrap);
    assert_eq!(sm.applied_membership(), &grown, "recorded, not the seed");
    let image = sm.build_snapshot(0, 4096).unwrap();
    assert_eq!(image.membership, grown);
    assert_eq!(sm.snapshot_reader().unwrap().meta(), image);
}

#[test]
fn an_undecodable_configuration_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    let bad = Entry::new(1, 1, EntryKind::ConfChange, b("garbage"));
    assert!(sm.apply(&[bad]).is_err());
}

mod members {
    use super::*;
    use crate::members::{MemberAddrs, MemberContext};
    use crate::snapshot::SnapshotReceiver;
    use raft_core::{ConfChangeEntry, Membership, SnapshotMeta};

    fn founding() -> MemberTable {
        MemberTable::founding(
            (1..=3)
                .map(|i| {
                    (
                        i,
                        MemberAddrs::new(format!("h:710{i}"), format!("h:700{i}")),
                    )
                })
                .collect(),
        )
    }

    fn conf_entry(index: Index, membership: Membership, added: &[(u64, &str)]) -> Entry {
        let context = if added.is_empty() {
            Bytes::new()
        } else {
            MemberContext {
                addrs: added
                    .iter()
                    .map(|&(id, a)| (id, MemberAddrs::new(a, "")))
                    .collect(),
            }
            .encode()
        };
        let cc = ConfChangeEntry {
            membership,
            context,
        };
        Entry::new(1, index, EntryKind::ConfChange, cc.encode())
    }

    fn with_learner_4() -> Membership {
        let mut m = Membership::with_voters([1, 2, 3]);
        m.learners.insert(4);
        m
    }

    #[test]
    fn conf_entries_change_the_table_in_the_applied_batch_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let env = StorageEnv::PowerCut(PowerCutEnv::new());
        let mut sm = KvStateMachine::open_with(dir.path(), &env, 10).unwrap();
        sm.seed_members(founding()).unwrap();
        let es = vec![
            cmd_entry(1, 1, 1, set("a", "1")),
            conf_entry(2, with_learner_4(), &[(4, "h:7104")]),
            cmd_entry(3, 1, 2, set("b", "2")),
        ];
        let r = results(sm.apply(&es).unwrap());
        assert_eq!(r[1], None, "a conf entry has no client result");
        assert_eq!(sm.members().membership, with_learner_4());
        assert_eq!(sm.members().addrs_of(4).unwrap().peer_addr, "h:7104");
        let expected = sm.members().clone();
        sm.sync().unwrap();
        drop(sm);
        let sm = KvStateMachine::open_with(dir.path(), &env, 10).unwrap();
        assert_eq!((sm.applied_index(), sm.members()), (3, &expected));
    }

    #[test]
    fn an_unsynced_batch_lost_in_a_power_cut_takes_its_table_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let cut = PowerCutEnv::new();
        let env = StorageEnv::PowerCut(cut.clone());
        let mut sm = KvStateMachine::open_with(dir.path(), &env, 10).unwrap();
        sm.seed_members(founding()).unwrap();
        sm.apply(&[cmd_entry(1, 1, 1, set("a", "1"))]).unwrap();
        sm.sync().unwrap();
        sm.apply(&[conf_entry(2, with_learner_4(), &[(4, "h:7104")])])
            .unwrap();
        cut.cut_power();
        drop(sm);
        cut.power_on();
        let sm = KvStateMachine::open_with(dir.path(), &env, 10).unwrap();
        // Applied index and table are one record set: both at 1, or both at 2.
        match sm.applied_index() {
            1 => assert_eq!(sm.members(), &founding()),
            2 => assert_eq!(sm.members().membership, with_learner_4()),
            other => panic!("applied index {other} after the cut"),
        }
    }

    #[test]
    fn the_table_is_seeded_only_before_anything_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.members(), &MemberTable::default());
        sm.seed_members(founding()).unwrap();
        sm.apply(&[cmd_entry(1, 1, 1, set("a", "1"))]).unwrap();
        assert!(sm.seed_members(MemberTable::default()).is_err());
        assert_eq!(sm.members(), &founding());
    }

    #[test]
    fn a_snapshot_image_carries_the_table_and_its_configuration() {
        let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut src = KvStateMachine::open(src_dir.path()).unwrap();
        src.seed_members(founding()).unwrap();
        src.apply(&[
            cmd_entry(1, 1, 1, set("a", "1")),
            conf_entry(2, with_learner_4(), &[(4, "h:7104")]),
        ])
        .unwrap();
        let meta = src.build_snapshot(7, 256).unwrap();
        assert_eq!(meta.membership, with_learner_4());

        let dst = KvStateMachine::open(dst_dir.path()).unwrap();
        // The core asked for an older snapshot; the image's own configuration wins.
        let asked = SnapshotMeta {
            index: 1,
            term: 1,
            membership: Membership::with_voters([1, 2, 3]),
        };
        let mut rx = SnapshotReceiver::new(dst_dir.path(), &StorageEnv::Disk, asked, 7).unwrap();
        let mut reader = src.snapshot_reader().unwrap();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            rx.push(&chunk).unwrap();
        }
        let staged = rx.finish().unwrap();
        assert_eq!(staged.meta().membership, with_learner_4());
        let mut dst = dst.install(staged).unwrap();
        dst.finish_install().unwrap();
        assert_eq!(dst.members(), src.members());
        assert_eq!(dst.get(b"a").unwrap(), Some(b("1")));
    }

    #[test]
    fn a_damaged_table_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let mut raw = founding().encode();
        raw[2] ^= 0x40;
        let mut batch = WriteBatch::default();
        batch.put(KEY_MEMBERS, &raw);
        sm.ldb().write(batch, true).unwrap();
        drop(sm);
        let e = KvStateMachine::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("member table"), "{e}");
    }
}
