//! The split command through `apply`: the parent keeps `[start, at)`, the new range gets
//! `[at, end)` with its keys' counts, index rows and sessions, atomically with the entry.

use super::tests_layout::{all_rows, clock, command, set, Rows};
use super::*;
use crate::command::{Deadline, Op};
use crate::query::Query;
use crate::ranges::{RangeDescriptor, Split, FIRST_RANGE};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

/// Applies one command at the next index of `sm`'s log; its result.
fn run(sm: &mut KvStateMachine, client: u64, seq: u64, op: Op) -> CommandResult {
    let e = command(sm.applied_index() + 1, client, seq, op);
    sm.apply(&[e]).unwrap()[0].1.clone().unwrap()
}

fn tick(sm: &mut KvStateMachine, ms: u64) {
    sm.apply(&[clock(sm.applied_index() + 1, ms)]).unwrap();
}

fn split_at(range: &RangeDescriptor, at: &str, new_range: u64) -> Op {
    Op::Split(Split {
        range: range.id,
        epoch: range.epoch,
        at: b(at),
        new_range,
    })
}

fn halves() -> (RangeDescriptor, RangeDescriptor) {
    RangeDescriptor::whole(FIRST_RANGE)
        .split_at(b"m", 2)
        .unwrap()
}

/// Keys on both sides of `m`, some with deadlines (at log time 1000), and client 7's
/// session whose last command (seq 3) incremented `y`.
fn populated(dir: &Path) -> KvStateMachine {
    let mut sm = KvStateMachine::open(dir).unwrap();
    sm.seed_members(MemberTable {
        membership: raft_core::Membership::with_voters([1, 2, 3]),
        addrs: Default::default(),
    })
    .unwrap();
    tick(&mut sm, 1_000);
    for (seq, (key, deadline)) in [
        ("a", Deadline::None),
        ("b", Deadline::In(1_000)),
        ("n", Deadline::None),
        ("x", Deadline::In(2_000)),
        ("z", Deadline::In(60_000)),
    ]
    .into_iter()
    .enumerate()
    {
        let op = set(key, key, deadline);
        assert_eq!(run(&mut sm, 5, seq as u64 + 1, op), CommandResult::Ok);
    }
    let incr = Op::Incr { key: b("y"), by: 1 };
    assert_eq!(run(&mut sm, 7, 3, incr), CommandResult::Value(1));
    sm
}

/// Allocates the new range's id and splits the first range at `m`; returns the child.
fn split_populated(sm: &mut KvStateMachine) -> KvStateMachine {
    assert_eq!(run(sm, 9, 1, Op::AllocateRangeId), CommandResult::Value(2));
    let (left, right) = halves();
    let op = split_at(sm.descriptor(), "m", 2);
    assert_eq!(
        run(sm, 9, 2, op),
        CommandResult::Split {
            left: left.clone(),
            right: right.clone()
        }
    );
    assert_eq!(sm.created_ranges(), std::slice::from_ref(&right));
    sm.open_range(right).unwrap()
}

fn scanned(sm: &mut KvStateMachine) -> Vec<Bytes> {
    let (mut cursor, mut keys) = (0u64, Vec::new());
    loop {
        let q = Query::Scan {
            cursor,
            pattern: None,
            count: 2,
        };
        let Ok(CommandResult::Array(reply)) = sm.query_now(&q) else {
            panic!("SCAN answers an array");
        };
        let [CommandResult::Bulk(next), CommandResult::Array(found)] = &reply[..] else {
            panic!("SCAN answers a cursor and keys: {reply:?}");
        };
        for k in found {
            let CommandResult::Bulk(k) = k else {
                panic!("a key: {k:?}")
            };
            keys.push(k.clone());
        }
        cursor = std::str::from_utf8(next).unwrap().parse().unwrap();
        if cursor == 0 {
            keys.sort();
            return keys;
        }
    }
}

fn counts(keys: u64, volatile: u64) -> KeyCounts {
    KeyCounts { keys, volatile }
}

fn names(keys: &[&str]) -> Vec<Bytes> {
    keys.iter().map(|k| b(k)).collect()
}

/// What each half holds after the split of `populated` (before any expiry).
fn check_halves(left: &mut KvStateMachine, right: &mut KvStateMachine) {
    let (left_bounds, right_bounds) = halves();
    assert_eq!(left.descriptor(), &left_bounds);
    assert_eq!(right.descriptor(), &right_bounds);
    assert_eq!(left.key_counts(), counts(2, 1));
    assert_eq!(right.key_counts(), counts(4, 2));
    assert_eq!(scanned(left), names(&["a", "b"]));
    assert_eq!(scanned(right), names(&["n", "x", "y", "z"]));
    assert_eq!(right.get(b"n").unwrap(), Some(b("n")));
    // Client 9's allocation came before the split: both halves answer its retry.
    assert_eq!(right.session_clients(), vec![5, 7, 9]);
    assert_eq!(left.session_clients(), vec![5, 7, 9]);
    assert_eq!(right.clock_ms(), 1_000);
    assert_eq!(
        left.stored_ranges().unwrap(),
        vec![left_bounds, right_bounds]
    );
}

#[test]
fn a_split_hands_the_keys_from_the_split_key_to_the_new_range_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut left = populated(dir.path());
        let mut right = split_populated(&mut left);
        assert_eq!(
            (right.applied_index(), right.applied_term()),
            (RANGE_INITIAL_INDEX, RANGE_INITIAL_TERM)
        );
        let voters = raft_core::Membership::with_voters([1, 2, 3]);
        assert_eq!(right.applied_membership(), &voters);
        assert_eq!(left.applied_membership(), &voters);
        check_halves(&mut left, &mut right);
        // The left half refuses what it gave away, the right half what it never had.
        let (l, r) = halves();
        assert_eq!(
            run(&mut left, 5, 10, set("x", "again", Deadline::None)),
            CommandResult::NotOwned {
                range: l.id,
                epoch: l.epoch
            }
        );
        assert_eq!(
            run(&mut right, 5, 10, set("a", "again", Deadline::None)),
            CommandResult::NotOwned {
                range: r.id,
                epoch: r.epoch
            }
        );
        left.sync().unwrap();
        right.sync().unwrap();
    }
    let mut left = KvStateMachine::open(dir.path()).unwrap();
    let ranges = left.stored_ranges().unwrap();
    let mut right = left.open_range(ranges[1].clone()).unwrap();
    check_halves(&mut left, &mut right);
    // The new range's log goes on from its initial index.
    assert_eq!(
        run(&mut right, 5, 11, set("q", "q", Deadline::None)),
        CommandResult::Ok
    );
    assert_eq!(right.key_counts(), counts(5, 2));
    assert_eq!(left.key_counts(), counts(2, 1));
}

#[test]
fn deadlines_of_the_moved_keys_fire_through_the_new_range_s_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut left = populated(dir.path());
    let mut right = split_populated(&mut left);
    tick(&mut right, 3_500);
    tick(&mut left, 3_500);
    // `x` (deadline 3000) is swept by the new range; `b` (2000) by the parent.
    assert_eq!(right.key_counts(), counts(3, 1));
    assert_eq!(left.key_counts(), counts(1, 0));
    assert_eq!(right.raw_get(&user_row(b"x")).unwrap(), None);
    assert!(right.raw_get(&user_row(b"z")).unwrap().is_some());
    assert_eq!(left.raw_get(&user_row(b"b")).unwrap(), None);
    let ttl = Query::Ttl {
        key: b("z"),
        form: crate::query::TtlForm::Millis,
    };
    assert_eq!(
        right.query_now(&ttl).unwrap(),
        CommandResult::Value(61_000 - 3_500)
    );
}

#[test]
fn a_retry_of_a_command_applied_before_the_split_gets_its_first_result_in_both_halves() {
    let dir = tempfile::tempdir().unwrap();
    let mut left = populated(dir.path());
    let mut right = split_populated(&mut left);
    let retry = || Op::Incr { key: b("y"), by: 1 };
    assert_eq!(run(&mut left, 7, 3, retry()), CommandResult::Value(1));
    assert_eq!(run(&mut right, 7, 3, retry()), CommandResult::Value(1));
    assert_eq!(right.get(b"y").unwrap(), Some(b("1")), "applied once");
    // The next command of that client runs in the half that owns its key.
    assert_eq!(run(&mut right, 7, 4, retry()), CommandResult::Value(2));
    assert!(matches!(
        run(&mut left, 7, 4, retry()),
        CommandResult::NotOwned { .. }
    ));
}

/// Two replicas applying the same log: every refused split is refused by both, with the
/// same answer, and leaves the database as it was.
#[test]
fn stale_and_misdirected_splits_are_refused_alike_and_change_nothing() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas: Vec<KvStateMachine> = dirs.iter().map(|d| populated(d.path())).collect();
    let before: Vec<Rows> = replicas.iter_mut().map(all_rows).collect();
    let whole = RangeDescriptor::whole(FIRST_RANGE);
    let stale = Op::Split(Split {
        epoch: whole.epoch - 1,
        ..split_of(&whole)
    });
    let elsewhere = Op::Split(Split {
        range: 3,
        ..split_of(&whole)
    });
    let outside = Op::Split(Split {
        at: Bytes::new(),
        ..split_of(&whole)
    });
    let first_id = Op::Split(Split {
        new_range: FIRST_RANGE,
        ..split_of(&whole)
    });
    for (seq, op) in [stale, elsewhere, outside, first_id]
        .into_iter()
        .enumerate()
    {
        let answers: Vec<CommandResult> = replicas
            .iter_mut()
            .map(|sm| run(sm, SESSIONLESS_CLIENT, seq as u64, op.clone()))
            .collect();
        assert!(matches!(answers[0], CommandResult::Error(_)), "{answers:?}");
        assert_eq!(answers[0], answers[1]);
    }
    for (sm, before) in replicas.iter_mut().zip(before) {
        assert_eq!(sm.descriptor(), &whole);
        assert!(sm.created_ranges().is_empty());
        assert_eq!(sm.stored_ranges().unwrap(), vec![whole.clone()]);
        let after: Rows = all_rows(sm)
            .into_iter()
            .filter(|(k, _)| k.as_slice() != KEY_APPLIED)
            .collect();
        let before: Rows = before
            .into_iter()
            .filter(|(k, _)| k.as_slice() != KEY_APPLIED)
            .collect();
        assert_eq!(after, before);
    }
    // And an accepted one writes the same rows on both.
    for sm in replicas.iter_mut() {
        let answer = run(sm, SESSIONLESS_CLIENT, 9, Op::Split(split_of(&whole)));
        assert!(matches!(answer, CommandResult::Split { .. }), "{answer:?}");
    }
    let rows: Vec<Rows> = replicas.iter_mut().map(all_rows).collect();
    assert_eq!(rows[0], rows[1]);
}

fn split_of(range: &RangeDescriptor) -> Split {
    Split {
        range: range.id,
        epoch: range.epoch,
        at: b("m"),
        new_range: 2,
    }
}

#[test]
fn range_ids_are_never_handed_out_twice_across_reopen_and_the_first_range_s_splits() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let alloc = Op::AllocateRangeId;
        assert_eq!(run(&mut sm, 4, 1, alloc.clone()), CommandResult::Value(2));
        assert_eq!(run(&mut sm, 4, 2, alloc.clone()), CommandResult::Value(3));
        // A retry is answered from the session, not given a new id.
        assert_eq!(run(&mut sm, 4, 2, alloc), CommandResult::Value(3));
        sm.sync().unwrap();
    }
    let mut left = KvStateMachine::open(dir.path()).unwrap();
    assert_eq!(
        run(&mut left, 4, 3, Op::AllocateRangeId),
        CommandResult::Value(4)
    );
    let op = split_at(left.descriptor(), "m", 4);
    assert!(matches!(
        run(&mut left, 4, 4, op),
        CommandResult::Split { .. }
    ));
    assert_eq!(
        run(&mut left, 4, 5, Op::AllocateRangeId),
        CommandResult::Value(5)
    );
    // Only the first range hands out ids.
    let mut right = left
        .open_range(left.stored_ranges().unwrap()[1].clone())
        .unwrap();
    assert!(matches!(
        run(&mut right, 4, 6, Op::AllocateRangeId),
        CommandResult::Error(_)
    ));
    assert_eq!(
        run(&mut left, 4, 7, Op::AllocateRangeId),
        CommandResult::Value(6)
    );
}

/// A power cut right after the split's apply batch, the batch synced or not, or after a later
/// sync: the database holds the old parent and no new range, or both halves; never one half
/// without the other.
#[test]
fn a_power_cut_around_a_split_leaves_no_half_without_the_other() {
    let mut outcomes = Vec::new();
    for (sync_batch, sync_after) in [(false, false), (true, false), (false, true)] {
        let power = crate::env::PowerCutEnv::new();
        let env = StorageEnv::PowerCut(power.clone());
        let dir = Path::new("/split");
        {
            let mut sm = KvStateMachine::open_with(dir, &env, DEFAULT_MAX_SESSIONS).unwrap();
            tick(&mut sm, 1_000);
            for (seq, key) in ["a", "n", "x"].into_iter().enumerate() {
                run(
                    &mut sm,
                    5,
                    seq as u64 + 1,
                    set(key, key, Deadline::In(9_000)),
                );
            }
            sm.sync().unwrap();
            sm.set_sync_writes(sync_batch);
            let op = split_at(sm.descriptor(), "m", 2);
            assert!(matches!(
                run(&mut sm, 5, 9, op),
                CommandResult::Split { .. }
            ));
            if sync_after {
                sm.sync().unwrap();
            }
            power.cut_power();
        }
        power.power_on();
        let mut sm = KvStateMachine::open_with(dir, &env, DEFAULT_MAX_SESSIONS).unwrap();
        let ranges = sm.stored_ranges().unwrap();
        let has_child_rows = all_rows(&mut sm)
            .iter()
            .any(|(k, _)| k.first() == Some(&0x04));
        if ranges.len() == 1 {
            assert_eq!(ranges[0], RangeDescriptor::whole(FIRST_RANGE));
            assert!(!has_child_rows, "rows of the new range without the split");
            assert_eq!(sm.key_counts(), counts(3, 3));
            outcomes.push("before");
        } else {
            let (left, right) = halves();
            assert_eq!(ranges, vec![left.clone(), right.clone()]);
            assert_eq!(sm.descriptor(), &left);
            assert_eq!(sm.key_counts(), counts(1, 1));
            let child = sm.open_range(right).unwrap();
            assert_eq!(child.key_counts(), counts(2, 2));
            outcomes.push("after");
        }
    }
    assert_eq!(outcomes, vec!["before", "after", "after"]);
}

/// The whole-directory image would carry the new range's rows as the first range's; it is
/// refused once the first range has split, even while the new range is not open.
#[test]
fn a_first_range_that_has_split_takes_no_whole_directory_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut left = populated(dir.path());
    drop(split_populated(&mut left));
    let err = left.build_snapshot(1, 4096).unwrap_err().to_string();
    assert!(err.contains("whole-directory snapshot"), "{err}");
}

#[test]
fn damaged_or_missing_descriptor_rows_are_reported_by_stored_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let mut left = populated(dir.path());
    drop(split_populated(&mut left));
    let child_descriptor = row_keys::StateKeys::of(2).descriptor();
    let write = |sm: &mut KvStateMachine, value: Option<&[u8]>| {
        let mut batch = WriteBatch::default();
        match value {
            Some(v) => batch.put(&child_descriptor, v),
            None => batch.delete(&child_descriptor),
        }
        sm.ldb().write(batch, true).unwrap();
    };
    write(&mut left, Some(b"garbage"));
    let err = left.stored_ranges().unwrap_err().to_string();
    assert!(err.contains("descriptor row of range 2"), "{err}");
    write(&mut left, Some(&RangeDescriptor::whole(3).encode()));
    let err = left.stored_ranges().unwrap_err().to_string();
    assert!(err.contains("describes range 3"), "{err}");
    write(&mut left, None);
    let err = left.stored_ranges().unwrap_err().to_string();
    assert!(err.contains("no descriptor"), "{err}");
}

/// A crash at any point of an install of the new range's image: the range is listed (from
/// the staged image once the install has committed and its own rows are being replaced).
#[test]
fn a_range_whose_install_was_interrupted_is_still_listed() {
    let (left_bounds, right_bounds) = halves();
    let mut crashes = 0;
    for crash_after in 0.. {
        let dir = tempfile::tempdir().unwrap();
        let outcome = {
            let mut left = populated(dir.path());
            let mut right = split_populated(&mut left);
            let image = right.range_image().unwrap();
            run(&mut right, 5, 20, set("p", "later", Deadline::None));
            super::expiry::crash_point::fail_after(crash_after);
            let outcome = right.install_range_image_in(&image, 2);
            super::expiry::crash_point::fail_after(usize::MAX);
            outcome
        };
        let left = KvStateMachine::open(dir.path()).unwrap();
        assert_eq!(
            left.stored_ranges().unwrap(),
            vec![left_bounds.clone(), right_bounds.clone()],
            "crash after {crash_after} batches"
        );
        if outcome.is_ok() {
            break;
        }
        crashes += 1;
    }
    assert!(crashes > 10, "{crashes}");
}

/// One apply batch holding a configuration change, a write of a key past the split key, the
/// split and a later write of that key: the child gets the batch's own index rows and the
/// configuration as of the split, and the later write is refused.
#[test]
fn a_split_sees_what_earlier_entries_of_its_batch_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut left = populated(dir.path());
    let four = raft_core::Membership::with_voters([1, 2, 3, 4]);
    let conf = raft_core::ConfChangeEntry {
        membership: four.clone(),
        context: crate::members::MemberContext::default().encode(),
    };
    let at = left.applied_index();
    let (l, r) = halves();
    let batch = vec![
        Entry::new(2, at + 1, EntryKind::ConfChange, conf.encode()),
        command(at + 2, 5, 30, set("w", "w", Deadline::In(500))),
        command(
            at + 3,
            5,
            31,
            split_at(&RangeDescriptor::whole(FIRST_RANGE), "m", 2),
        ),
        command(at + 4, 5, 32, set("w", "again", Deadline::None)),
    ];
    let results = left.apply(&batch).unwrap();
    assert_eq!(results[1].1, Some(CommandResult::Ok));
    assert!(matches!(results[2].1, Some(CommandResult::Split { .. })));
    assert_eq!(
        results[3].1,
        Some(CommandResult::NotOwned {
            range: l.id,
            epoch: l.epoch
        })
    );
    let mut right = left.open_range(r).unwrap();
    assert_eq!(right.applied_membership(), &four);
    assert_eq!(right.key_counts(), counts(5, 3));
    assert_eq!(left.key_counts(), counts(2, 1));
    assert_eq!(scanned(&mut right), names(&["n", "w", "x", "y", "z"]));
    tick(&mut right, 2_000);
    assert_eq!(right.get(b"w").unwrap(), None, "expired through the child");
    assert_eq!(right.raw_get(&user_row(b"w")).unwrap(), None, "and swept");
}

#[test]
fn the_split_point_is_the_middle_key_of_the_range_and_none_below_two_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.split_point().unwrap(), None, "no key");
    assert_eq!(
        run(&mut sm, 5, 1, set("k", "v", Deadline::None)),
        CommandResult::Ok
    );
    assert_eq!(sm.split_point().unwrap(), None, "one key");
    for (seq, key) in ["a", "c", "e", "g"].into_iter().enumerate() {
        run(&mut sm, 5, seq as u64 + 2, set(key, "v", Deadline::None));
    }
    // a c e g k: two keys before the middle one.
    assert_eq!(sm.split_point().unwrap(), Some(b("e")));
    // The right half after a split at "f": f.. holds g and k, whose middle is k.
    let (left, _) = RangeDescriptor::whole(FIRST_RANGE)
        .split_at(b"f", 2)
        .unwrap();
    let whole = RangeDescriptor::whole(FIRST_RANGE);
    assert_eq!(
        run(&mut sm, 5, 10, split_at(&whole, "f", 2)),
        CommandResult::Split {
            left: left.clone(),
            right: RangeDescriptor::whole(FIRST_RANGE)
                .split_at(b"f", 2)
                .unwrap()
                .1
        }
    );
    let child = sm.created_ranges()[0].clone();
    let mut right = sm.open_range(child).unwrap();
    assert_eq!(right.split_point().unwrap(), Some(b("k")));
    assert_eq!(
        sm.split_point().unwrap(),
        Some(b("c")),
        "a c e: the left half's middle"
    );
}
