//! Many power cuts in a row on the in-memory power-cut environment: after each reboot the Raft
//! log holds every acknowledged write, the state machine is a consistent prefix of the log, and
//! replaying the log over it reaches the same state as a machine that never crashed.

use std::path::Path;

use bytes::Bytes;
use kv::{Command, KvStateMachine, Op, PowerCutEnv, RaftStorage, StorageEnv};
use raft_core::{Entry, EntryKind, HardState, Index, Persist, WriteId};

/// A tiny deterministic generator, so that a failure reproduces.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn command(i: Index) -> Bytes {
    // Client i % 7 with sequence i: every entry is a new request of some client.
    let op = if i.is_multiple_of(5) {
        Op::Incr {
            key: Bytes::from_static(b"counter"),
            by: 1,
        }
    } else {
        Op::Set {
            key: Bytes::from(format!("k{}", i % 97)),
            value: Bytes::from(vec![(i % 251) as u8; 100 + (i as usize % 3000)]),
        }
    };
    Command::new(i % 7, i, op).encode()
}

fn entry(term: u64, i: Index) -> Entry {
    Entry::new(term, i, EntryKind::Normal, command(i))
}

#[test]
fn repeated_power_cuts_lose_nothing_acknowledged() {
    let env = PowerCutEnv::new();
    let senv = StorageEnv::PowerCut(env.clone());
    let dir = Path::new("/data");
    let mut rng = Lcg(42);
    let mut acked: Index = 0;

    for cycle in 1..=25u64 {
        env.power_on();
        let mut log = RaftStorage::open_with(dir, &senv).unwrap();
        let mut sm = KvStateMachine::open_with(dir, &senv, 1000).unwrap();
        let rs = log.load().unwrap();
        let last = rs.entries.last().map_or(rs.snapshot.index, |e| e.index);
        assert_eq!(last, acked, "cycle {cycle}: acknowledged entries lost");
        assert!(rs.hard_state.term >= cycle - 1);
        assert!(
            sm.applied_index() >= rs.snapshot.index,
            "cycle {cycle}: log compacted past the durable applied index"
        );
        // Replay: apply what the state machine lost.
        let replay: Vec<Entry> = rs
            .entries
            .iter()
            .filter(|e| e.index > sm.applied_index())
            .cloned()
            .collect();
        sm.apply(&replay).unwrap();
        assert_eq!(sm.applied_index(), acked);

        let writes = 1 + rng.next(40);
        for _ in 0..writes {
            let n = 1 + rng.next(20);
            let es: Vec<Entry> = (acked + 1..=acked + n).map(|i| entry(cycle, i)).collect();
            log.persist(&Persist {
                id: WriteId {
                    seq: 0,
                    term: cycle,
                },
                hard_state: Some(HardState {
                    term: cycle,
                    vote: None,
                    commit: acked + n,
                }),
                entries: es.clone(),
            })
            .unwrap();
            acked += n;
            sm.apply(&es).unwrap();
            match rng.next(10) {
                0 => {
                    sm.sync().unwrap();
                }
                1 => {
                    // Compaction may only drop what the state machine has durably applied.
                    let up_to = sm.durable_applied_index().saturating_sub(rng.next(10));
                    if up_to > log.snapshot().index {
                        log.compact(up_to, &raft_core::Membership::default())
                            .unwrap();
                    }
                }
                _ => {}
            }
        }
        env.cut_power();
        drop(sm);
        drop(log);
    }

    // Finally compare with a machine that applied the whole log without crashing.
    env.power_on();
    let mut log = RaftStorage::open_with(dir, &senv).unwrap();
    let mut sm = KvStateMachine::open_with(dir, &senv, 1000).unwrap();
    let rs = log.load().unwrap();
    let replay: Vec<Entry> = rs
        .entries
        .iter()
        .filter(|e| e.index > sm.applied_index())
        .cloned()
        .collect();
    sm.apply(&replay).unwrap();

    let clean_env = StorageEnv::PowerCut(PowerCutEnv::new());
    let mut clean = KvStateMachine::open_with(dir, &clean_env, 1000).unwrap();
    // Terms differ per cycle in the crashed run but do not affect the state.
    let all: Vec<Entry> = (1..=acked).map(|i| entry(1, i)).collect();
    clean.apply(&all).unwrap();
    assert_eq!(
        sm.scan_range(b"", None, usize::MAX).unwrap(),
        clean.scan_range(b"", None, usize::MAX).unwrap()
    );
    assert_eq!(sm.session_clients(), clean.session_clients());
    assert!(
        acked > 1000,
        "the run must be long enough to matter: {acked}"
    );
}
