//! A range's image and its install in a database shared with another range, crash-safe.

use super::expiry::crash_point;
use super::tests_layout::{command, set};
use super::*;
use crate::command::{Deadline, Op};
use crate::ranges::{RangeDescriptor, FIRST_RANGE};

fn left_bounds() -> RangeDescriptor {
    RangeDescriptor {
        id: FIRST_RANGE,
        start: Bytes::new(),
        end: Some(Bytes::from_static(b"m")),
        epoch: 2,
    }
}

fn right_bounds() -> RangeDescriptor {
    RangeDescriptor {
        id: 2,
        start: Bytes::from_static(b"m"),
        end: None,
        epoch: 2,
    }
}

/// The first range `[.., m)` and range 2 `[m, ..)` of `dir`.
fn open_both(dir: &Path, env: &StorageEnv) -> (KvStateMachine, KvStateMachine) {
    let mut left = KvStateMachine::open_with(dir, env, DEFAULT_MAX_SESSIONS).unwrap();
    if left.descriptor().end.is_none() {
        left.record_descriptor(left_bounds()).unwrap();
    }
    let right = left.open_range(right_bounds()).unwrap();
    (left, right)
}

fn apply(sm: &mut KvStateMachine, client: u64, ops: Vec<Op>) {
    let from = sm.applied_index() + 1;
    let entries: Vec<Entry> = ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| command(from + i as u64, client, from + i as u64, op))
        .collect();
    sm.apply(&entries).unwrap();
}

/// The leader's range 2: its image.
fn leader_image() -> RangeImage {
    let dir = tempfile::tempdir().unwrap();
    let (_left, mut right) = open_both(dir.path(), &StorageEnv::Disk);
    apply(
        &mut right,
        7,
        vec![
            set("m1", "leader", Deadline::None),
            set("x", "leader", Deadline::In(60_000)),
            set("zz", "leader", Deadline::None),
            Op::Delete {
                key: Bytes::from_static(b"zz"),
            },
        ],
    );
    right.range_image().unwrap()
}

/// A follower whose ranges hold other keys: the first range's, which the install must leave,
/// and range 2's, which it must replace.
fn follower(dir: &Path, env: &StorageEnv) -> (RangeImage, RangeImage) {
    let (mut left, mut right) = open_both(dir, env);
    apply(
        &mut left,
        3,
        vec![
            set("a", "left", Deadline::None),
            set("b", "left", Deadline::In(5_000)),
        ],
    );
    apply(
        &mut right,
        9,
        vec![
            set("p", "stale", Deadline::In(1_000)),
            set("q", "stale", Deadline::None),
        ],
    );
    left.sync().unwrap();
    right.sync().unwrap();
    (left.range_image().unwrap(), right.range_image().unwrap())
}

#[test]
fn an_image_replaces_its_range_and_leaves_the_other_range_alone() {
    let image = leader_image();
    assert_eq!(image.descriptor, right_bounds());
    assert!(image.rows.iter().any(|(k, _)| k.first() == Some(&USER)));
    let dir = tempfile::tempdir().unwrap();
    let (left_before, _) = follower(dir.path(), &StorageEnv::Disk);
    {
        let (mut left, mut right) = open_both(dir.path(), &StorageEnv::Disk);
        right.install_range_image_in(&image, 2).unwrap();
        assert_eq!(right.range_image().unwrap(), image);
        assert_eq!(right.applied_index(), image.applied_index);
        assert_eq!(right.session_clients(), vec![7]);
        assert_eq!(
            right.key_counts(),
            KeyCounts {
                keys: 2,
                volatile: 1
            }
        );
        assert_eq!(right.get(b"p").unwrap(), None);
        assert_eq!(
            right.get(b"x").unwrap(),
            Some(Bytes::from_static(b"leader"))
        );
        assert_eq!(left.range_image().unwrap(), left_before);
    }
    let (mut left, mut right) = open_both(dir.path(), &StorageEnv::Disk);
    assert_eq!(right.range_image().unwrap(), image);
    assert_eq!(left.range_image().unwrap(), left_before);
}

#[test]
fn a_crash_anywhere_in_an_install_is_finished_or_undone_on_open() {
    let image = leader_image();
    // Staged in batches of 2 rows, then the marker: the commit point.
    let batches_to_commit = image.rows.len().div_ceil(2) + 1;
    let (mut before, mut after) = (0, 0);
    for crash_after in 0.. {
        let dir = tempfile::tempdir().unwrap();
        let (left_before, right_before) = follower(dir.path(), &StorageEnv::Disk);
        let outcome = {
            let (_left, mut right) = open_both(dir.path(), &StorageEnv::Disk);
            crash_point::fail_after(crash_after);
            let outcome = right.install_range_image_in(&image, 2);
            crash_point::fail_after(usize::MAX);
            outcome
        };
        let (mut left, mut right) = open_both(dir.path(), &StorageEnv::Disk);
        assert_eq!(
            left.range_image().unwrap(),
            left_before,
            "crash after {crash_after}"
        );
        let committed = crash_after + 1 >= batches_to_commit;
        let expected = if committed { &image } else { &right_before };
        assert_eq!(
            &right.range_image().unwrap(),
            expected,
            "crash after {crash_after} batches (committed: {committed})"
        );
        let leftovers = all_rows_from(&mut right, &[0x05]);
        assert_eq!(
            leftovers, 0,
            "crash after {crash_after}: staging left behind"
        );
        if outcome.is_ok() {
            break;
        }
        if committed {
            after += 1;
        } else {
            before += 1;
        }
    }
    assert_eq!(before, batches_to_commit - 1);
    assert!(after >= 3, "crashes after the commit point: {after}");
}

#[test]
fn a_power_cut_anywhere_in_an_install_leaves_the_old_state_or_the_image() {
    let image = leader_image();
    let batches_to_commit = image.rows.len().div_ceil(2) + 1;
    let mut cuts = 0;
    for crash_after in 0.. {
        let power = crate::env::PowerCutEnv::new();
        let env = StorageEnv::PowerCut(power.clone());
        let dir = Path::new("/follower");
        let (left_before, right_before) = follower(dir, &env);
        let outcome = {
            let (_left, mut right) = open_both(dir, &env);
            crash_point::fail_after(crash_after);
            let outcome = right.install_range_image_in(&image, 2);
            crash_point::fail_after(usize::MAX);
            // Before the handles close (closing flushes what is buffered).
            power.cut_power();
            outcome
        };
        power.power_on();
        let (mut left, mut right) = open_both(dir, &env);
        assert_eq!(
            left.range_image().unwrap(),
            left_before,
            "cut after {crash_after}"
        );
        let committed = crash_after + 1 >= batches_to_commit;
        let expected = if committed { &image } else { &right_before };
        assert_eq!(
            &right.range_image().unwrap(),
            expected,
            "cut after {crash_after} batches (committed: {committed})"
        );
        if outcome.is_ok() {
            break;
        }
        cuts += 1;
    }
    assert!(cuts > batches_to_commit + 2, "{cuts} cuts");
}

fn all_rows_from(sm: &mut KvStateMachine, from: &[u8]) -> usize {
    let mut n = 0;
    sm.ldb()
        .scan_from(from, |_, _| {
            n += 1;
            Ok(true)
        })
        .unwrap();
    n
}

#[test]
fn an_image_of_another_range_or_with_foreign_rows_is_refused() {
    let image = leader_image();
    let dir = tempfile::tempdir().unwrap();
    let (mut left, mut right) = open_both(dir.path(), &StorageEnv::Disk);
    let err = left.install_range_image(&image).unwrap_err().to_string();
    assert!(err.contains("this is range 1"), "{err}");
    let mut foreign = image.clone();
    foreign.rows.insert(0, (user_row(b"a"), Bytes::new()));
    let err = right.install_range_image(&foreign).unwrap_err().to_string();
    assert!(err.contains("is not the range's"), "{err}");
    let mut unapplied = image.clone();
    unapplied.applied_index += 1;
    let err = right
        .install_range_image(&unapplied)
        .unwrap_err()
        .to_string();
    assert!(err.contains("applied record says"), "{err}");
    assert_eq!(right.applied_index(), 0, "nothing installed");
}
