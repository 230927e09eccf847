//! The cache of key versions and deadlines (`key_meta.rs`): it must always say what the
//! database holds, and a state machine with it must decide exactly as one that reads every key.

use super::key_meta::KeyMetaCache;
use super::row_keys::user_row;
use super::tests_redis::{b, set_px, Sm};
use super::*;
use crate::command::{Command, Deadline, ExpireCondition, Op, SetCondition};
use crate::query::Query;
use raft_core::EntryKind;

impl KvStateMachine {
    /// Every cached entry against the stored record.
    fn assert_key_meta_matches_the_database(&mut self) {
        for (key, cached) in self.key_meta.entries() {
            let stored = self
                .raw_get(&user_row(&key))
                .unwrap()
                .map(|row| KeyMeta::of(&Record::decode(&row).unwrap()));
            assert_eq!(cached, stored, "key {:?}", String::from_utf8_lossy(&key));
        }
    }
}

use super::key_meta::KeyMeta;

/// A small deterministic generator (xorshift), so that every run tries the same histories.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn key(&mut self) -> Bytes {
        b(&format!("k{}", self.below(6)))
    }

    fn deadline(&mut self, now: u64) -> Deadline {
        match self.below(5) {
            0 => Deadline::None,
            1 => Deadline::Keep,
            2 => Deadline::In(1 + self.below(50)),
            3 => Deadline::At(now + self.below(60)),
            _ => Deadline::At(now.saturating_sub(self.below(10))),
        }
    }

    fn op(&mut self, now: u64, index: Index) -> Op {
        let (key, value) = (self.key(), b(&self.below(100).to_string()));
        match self.below(14) {
            0 | 1 => Op::Set { key, value },
            2 | 3 => Op::SetWith {
                key,
                value,
                condition: [
                    SetCondition::Always,
                    SetCondition::IfAbsent,
                    SetCondition::IfPresent,
                ][self.below(3) as usize],
                deadline: self.deadline(now),
                get: self.below(2) == 0,
            },
            4 => Op::Delete { key },
            5 => Op::DeleteMany {
                keys: vec![key, self.key()],
            },
            6 => Op::Expire {
                key,
                deadline: self.deadline(now),
                condition: ExpireCondition::Always,
            },
            7 => Op::Rename {
                from: key,
                to: self.key(),
                if_absent: self.below(2) == 0,
            },
            8 => Op::Incr { key, by: 1 },
            9 => Op::GetDel { key },
            10 => Op::MSet {
                pairs: vec![(key, value), (self.key(), b("m"))],
                if_none_exist: self.below(2) == 0,
            },
            11 if self.below(8) == 0 => Op::FlushAll,
            11 => Op::Append { key, value },
            12 => {
                // A token from a recent index, present or absent: some match, most do not.
                let version = index.saturating_sub(self.below(4));
                let token = if self.below(2) == 0 {
                    version
                } else {
                    WATCHED_ABSENT | version
                };
                Op::Multi {
                    watches: vec![(key.clone(), token)],
                    ops: vec![Op::Set { key, value }, Op::Delete { key: self.key() }],
                }
            }
            _ => Op::Query(Query::Get { key }),
        }
    }
}

/// Applies the same random batches (commands and clock entries) to a state machine with the
/// cache and to one whose cache holds almost nothing, and compares every result, the counts and
/// the stored rows; and checks the cache against the database after every batch.
#[test]
fn the_cache_changes_no_decision_and_always_matches_the_database() {
    for seed in 1..=12u64 {
        let mut g = Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (mut cached, mut uncached) = (Sm::new(), Sm::new());
        uncached.sm.key_meta = KeyMetaCache::with_budget(1);
        let (mut index, mut now) = (0u64, 1_000u64);
        for _ in 0..150 {
            let mut batch = Vec::new();
            for _ in 0..1 + g.below(6) {
                index += 1;
                batch.push(if g.below(6) == 0 {
                    now += g.below(40);
                    Entry::new(
                        1,
                        index,
                        EntryKind::Clock,
                        raft_core::clock::encode_clock(now),
                    )
                } else {
                    let op = g.op(now, index);
                    let client = g.below(3);
                    Entry::new(
                        1,
                        index,
                        EntryKind::Normal,
                        Command::new(client, index, op).encode(),
                    )
                });
            }
            let want = uncached.sm.apply(&batch).unwrap();
            assert_eq!(cached.sm.apply(&batch).unwrap(), want, "seed {seed}");
            assert_eq!(cached.sm.key_counts(), uncached.sm.key_counts());
            cached.sm.assert_key_meta_matches_the_database();
        }
        assert!(cached.sm.key_meta.len() > 0, "seed {seed}: nothing cached");
        let all = |s: &mut Sm| {
            let mut rows = Vec::new();
            s.sm.ldb()
                .scan_from(&[], |k, v| {
                    rows.push((k.to_vec(), v));
                    Ok(true)
                })
                .unwrap();
            rows
        };
        assert_eq!(all(&mut cached), all(&mut uncached), "seed {seed}");
    }
}

/// FLUSHALL deletes the rows under the cache: a key cached as present must be new again after
/// it (counted, given its scan row), and a key cached with a deadline must not have an expiry
/// row deleted that is no longer there (or the volatile count go below zero).
#[test]
fn flushall_empties_the_cache() {
    let mut s = Sm::new();
    s.clock(1_000);
    s.run(Op::Set {
        key: b("a"),
        value: b("1"),
    });
    s.run(set_px("v", "1", 500));
    s.run(Op::FlushAll);
    s.run(Op::Set {
        key: b("a"),
        value: b("2"),
    });
    s.run(set_px("v", "2", 500));
    assert_eq!(
        s.sm.key_counts(),
        KeyCounts {
            keys: 2,
            volatile: 1
        }
    );
    assert_eq!(s.ask(Query::DbSize), CommandResult::Value(2));
    s.sm.assert_key_meta_matches_the_database();
    s.clock(2_000);
    assert_eq!(
        s.sm.key_counts(),
        KeyCounts {
            keys: 1,
            volatile: 0
        }
    );
    assert_eq!(s.sm.get(b"v").unwrap(), None);
}

/// A snapshot install replaces every row: what the node had cached before must not outlive it.
/// Here the installed image lacks a key the receiver had (cached as present) and holds another
/// one with a deadline the receiver had cached without.
#[test]
fn a_snapshot_install_leaves_no_stale_cache() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let set = |index: Index, key: &str| {
        let op = Op::Set {
            key: b(key),
            value: b("x"),
        };
        Entry::new(
            1,
            index,
            EntryKind::Normal,
            Command::new(0, index, op).encode(),
        )
    };
    let mut src = KvStateMachine::open(src_dir.path()).unwrap();
    let expiring = Op::SetWith {
        key: b("b"),
        value: b("x"),
        condition: SetCondition::Always,
        deadline: Deadline::At(10_000),
        get: false,
    };
    src.apply(&[
        Entry::new(
            1,
            1,
            EntryKind::Normal,
            Command::new(0, 1, expiring).encode(),
        ),
        set(2, "c"),
        set(3, "d"),
    ])
    .unwrap();
    let meta = src.build_snapshot(1, 256).unwrap();

    let mut dst = KvStateMachine::open(dst_dir.path()).unwrap();
    dst.apply(&[set(1, "a"), set(2, "b")]).unwrap();
    assert!(dst.key_meta.contains(b"a") && dst.key_meta.contains(b"b"));
    let mut rx =
        crate::snapshot::SnapshotReceiver::new(dst_dir.path(), &StorageEnv::Disk, meta, 1).unwrap();
    let mut reader = src.snapshot_reader().unwrap();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        rx.push(&chunk).unwrap();
    }
    let mut dst = dst.install(rx.finish().unwrap()).unwrap();
    dst.finish_install().unwrap();
    dst.apply(&[set(4, "a"), set(5, "b")]).unwrap();
    dst.assert_key_meta_matches_the_database();
    // a is new again; b's expiry row is gone with its deadline, as the install left it.
    assert_eq!(
        dst.key_counts(),
        KeyCounts {
            keys: 4,
            volatile: 0
        }
    );
    let mut expiry_rows = 0;
    dst.ldb()
        .scan_from(&[EXPIRY], |k, _| {
            expiry_rows += usize::from(k.first() == Some(&EXPIRY));
            Ok(k.first() == Some(&EXPIRY))
        })
        .unwrap();
    assert_eq!(expiry_rows, 0);
}
