use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn split(range: &RangeDescriptor, at: &str, new_range: RangeId) -> Split {
    Split {
        range: range.id,
        epoch: range.epoch,
        at: b(at),
        new_range,
    }
}

#[test]
fn the_first_range_owns_every_key_the_empty_one_included() {
    let table = RangeTable::first();
    assert_eq!(table.check_tiling(), Ok(()));
    for key in ["", "a", "\u{7f}\u{7f}", "zzzz"] {
        assert_eq!(table.owner(key.as_bytes()).map(|d| d.id), Some(FIRST_RANGE));
    }
    assert_eq!(table.owner(&[0xff; 100]).map(|d| d.id), Some(FIRST_RANGE));
}

#[test]
fn a_split_gives_the_keys_from_the_split_key_on_to_the_new_range() {
    let mut table = RangeTable::first();
    let whole = table.get(FIRST_RANGE).unwrap().clone();
    let (left, right) = table.apply_split(&split(&whole, "m", 2)).unwrap();
    assert_eq!(
        (left.id, left.start.as_ref(), left.end),
        (1, &b""[..], Some(b("m")))
    );
    assert_eq!((right.id, right.start, right.end), (2, b("m"), None));
    assert_eq!((left.epoch, right.epoch), (2, 2));
    assert_eq!(table.owner(b"lzzz").map(|d| d.id), Some(1));
    assert_eq!(table.owner(b"m").map(|d| d.id), Some(2));
    assert_eq!(table.owner(b"m\0").map(|d| d.id), Some(2));
    assert_eq!(table.check_tiling(), Ok(()));
}

#[test]
fn a_split_key_must_leave_both_halves_non_empty() {
    let whole = RangeDescriptor::whole(1);
    let (left, right) = whole.split_at(b"m", 2).unwrap();
    assert!(matches!(
        left.split_at(b"", 3),
        Err(SplitError::KeyNotInside { .. })
    ));
    assert!(matches!(
        right.split_at(b"m", 3),
        Err(SplitError::KeyNotInside { .. })
    ));
    assert!(matches!(
        left.split_at(b"m", 3),
        Err(SplitError::KeyNotInside { .. })
    ));
    assert!(matches!(
        left.split_at(b"x", 3),
        Err(SplitError::KeyNotInside { .. })
    ));
    assert_eq!(right.split_at(b"x", 2), Err(SplitError::IdInUse(2)));
    assert!(right.split_at(b"m\0", 3).is_ok());
}

#[test]
fn a_split_proposed_before_the_range_changed_is_refused_at_apply() {
    let mut table = RangeTable::first();
    let whole = table.get(1).unwrap().clone();
    table.apply_split(&split(&whole, "m", 2)).unwrap();
    // Proposed against the epoch the range had before its first split.
    let stale = split(&whole, "f", 3);
    assert_eq!(
        table.apply_split(&stale),
        Err(SplitError::StaleEpoch {
            proposed: 1,
            current: 2
        })
    );
    assert_eq!(table.get(3), None);
    let wrong = Split { range: 2, ..stale };
    assert_eq!(
        wrong.apply_to(table.get(1).unwrap()),
        Err(SplitError::WrongRange { split: 2, range: 1 })
    );
    let taken = split(table.get(1).unwrap(), "f", 2);
    assert_eq!(table.apply_split(&taken), Err(SplitError::IdInUse(2)));
}

#[test]
fn a_command_is_refused_for_keys_its_range_does_not_own() {
    let (left, right) = RangeDescriptor::whole(1).split_at(b"m", 2).unwrap();
    assert_eq!(left.check_owns([&b"a"[..], b"l"]), Ok(()));
    let refused = left.check_owns([&b"a"[..], b"q", b"z"]).unwrap_err();
    assert_eq!((refused.range, refused.epoch), (1, 2));
    assert_eq!(refused.key, b("q"));
    assert!(refused.to_string().contains("\"q\""), "{refused}");
    assert!(right.check_owns([&b"m"[..]]).is_ok());
}

#[test]
fn keys_of_two_ranges_are_a_crossing_and_unknown_keys_are_named() {
    let mut table = RangeTable::first();
    let whole = table.get(1).unwrap().clone();
    table.apply_split(&split(&whole, "m", 2)).unwrap();
    let one = table.single_owner([&b"a"[..], b"b"]).unwrap().unwrap();
    assert_eq!(one.id, 1);
    assert_eq!(table.single_owner(std::iter::empty()), Ok(None));
    assert_eq!(
        table.single_owner([&b"a"[..], b"z"]),
        Err(Placement::Crossing { first: 1, other: 2 })
    );
    let mut partial = RangeTable::default();
    partial.learn(table.get(2).unwrap().clone()).unwrap();
    assert_eq!(
        partial.single_owner([&b"z"[..], b"a"]),
        Err(Placement::Unknown { key: b("a") })
    );
}

#[test]
fn learning_an_older_descriptor_changes_nothing_and_a_newer_one_replaces_what_it_overlaps() {
    let mut authority = RangeTable::first();
    let whole = authority.get(1).unwrap().clone();
    let (left, right) = authority.apply_split(&split(&whole, "m", 2)).unwrap();
    let mut view = RangeTable::first();
    assert_eq!(
        view.learn(right.clone()),
        Ok(Learned::Added { replaced: vec![1] })
    );
    // Range 1 is gone until its new bounds are heard: a gap, never an overlap.
    assert_eq!(view.owner(b"a"), None);
    assert_eq!(view.learn(whole.clone()), Ok(Learned::Stale));
    assert_eq!(view.learn(right.clone()), Ok(Learned::Known));
    assert_eq!(view.learn(left), Ok(Learned::Added { replaced: vec![] }));
    assert_eq!(view, authority);
}

#[test]
fn two_different_descriptors_overlapping_at_one_epoch_are_a_conflict() {
    let mut table = RangeTable::first();
    let whole = table.get(1).unwrap().clone();
    table.apply_split(&split(&whole, "m", 2)).unwrap();
    let forged = RangeDescriptor {
        id: 3,
        start: b("k"),
        end: Some(b("p")),
        epoch: 2,
    };
    let conflict = table.learn(forged.clone()).unwrap_err();
    assert_eq!(conflict.offered, forged);
    let moved = RangeDescriptor {
        id: 2,
        start: b("a"),
        end: Some(b("b")),
        epoch: 9,
    };
    assert!(
        table.learn(moved).is_err(),
        "an id keeps its start for life"
    );
}

#[test]
fn encodings_round_trip_and_damage_is_an_error() {
    let mut table = RangeTable::first();
    let whole = table.get(1).unwrap().clone();
    table.apply_split(&split(&whole, "m", 2)).unwrap();
    let encoded = table.encode();
    assert_eq!(RangeTable::decode(&encoded), Ok(table.clone()));
    for d in table.ranges() {
        assert_eq!(RangeDescriptor::decode(&d.encode()).as_ref(), Ok(d));
    }
    let s = split(table.get(2).unwrap(), "t", 7);
    assert_eq!(Split::decode(&s.encode()), Ok(s));
    let mut flipped = encoded.clone();
    flipped[5] ^= 1;
    assert!(matches!(
        RangeTable::decode(&flipped),
        Err(DecodeError::BadChecksum { .. })
    ));
    assert!(RangeTable::decode(&encoded[..encoded.len() - 1]).is_err());
}

#[test]
fn a_table_encoding_with_overlapping_ranges_is_refused() {
    let mut buf = vec![TABLE_VERSION];
    crate::codec::put_u64(&mut buf, 2);
    RangeDescriptor::whole(1).encode_body(&mut buf);
    RangeDescriptor {
        id: 2,
        start: b("m"),
        end: None,
        epoch: 2,
    }
    .encode_body(&mut buf);
    crate::codec::seal(&mut buf);
    assert_eq!(
        RangeTable::decode(&buf),
        Err(DecodeError::Invalid(
            "a range table with overlapping ranges"
        ))
    );
}

/// A history of splits: each step splits the range owning `key` at `key`, if it can.
fn run_splits(keys: &[Vec<u8>]) -> (RangeTable, Vec<RangeDescriptor>) {
    let mut table = RangeTable::first();
    let mut every_descriptor: Vec<RangeDescriptor> = table.ranges().cloned().collect();
    let mut next_id = FIRST_RANGE + 1;
    for key in keys {
        let parent = table.owner(key).expect("the table tiles").clone();
        let s = Split {
            range: parent.id,
            epoch: parent.epoch,
            at: Bytes::copy_from_slice(key),
            new_range: next_id,
        };
        match table.apply_split(&s) {
            Ok((left, right)) => {
                next_id += 1;
                every_descriptor.push(left);
                every_descriptor.push(right);
            }
            Err(SplitError::KeyNotInside { .. }) => assert_eq!(key, &parent.start),
            Err(e) => panic!("{e}"),
        }
    }
    (table, every_descriptor)
}

fn short_keys() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(0u8..4, 0..4), 0..40)
}

proptest! {
    #[test]
    fn splits_keep_every_key_owned_by_exactly_one_range(keys in short_keys(), probes in short_keys()) {
        let (table, _) = run_splits(&keys);
        prop_assert_eq!(table.check_tiling(), Ok(()));
        for probe in probes.iter().chain(keys.iter()) {
            let owners: Vec<RangeId> =
                table.ranges().filter(|d| d.contains(probe)).map(|d| d.id).collect();
            prop_assert_eq!(owners.len(), 1);
            prop_assert_eq!(table.owner(probe).map(|d| d.id), Some(owners[0]));
        }
    }

    #[test]
    fn descriptors_learned_in_any_order_give_the_newest_table(
        keys in short_keys(),
        order in proptest::collection::vec(any::<u32>(), 0..120),
    ) {
        let (authority, history) = run_splits(&keys);
        let mut shuffled = history.clone();
        for (i, r) in order.iter().enumerate() {
            let n = shuffled.len();
            shuffled.swap(i % n, *r as usize % n);
        }
        let mut view = RangeTable::default();
        for d in shuffled {
            view.learn(d).map_err(|c| TestCaseError::fail(c.to_string()))?;
            prop_assert_eq!(view.check_disjoint(), Ok(()));
        }
        prop_assert_eq!(view, authority);
    }

    #[test]
    fn for_one_key_the_epochs_of_its_owners_only_grow(keys in short_keys(), probe in proptest::collection::vec(0u8..4, 0..4)) {
        let (_, history) = run_splits(&keys);
        let epochs: Vec<u64> = history.iter().filter(|d| d.contains(&probe)).map(|d| d.epoch).collect();
        prop_assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{:?}", epochs);
    }

    #[test]
    fn hostile_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = RangeTable::decode(&bytes);
        let _ = RangeDescriptor::decode(&bytes);
        let _ = Split::decode(&bytes);
        let mut sealed = bytes.clone();
        crate::codec::seal(&mut sealed);
        if let Ok(table) = RangeTable::decode(&sealed) {
            prop_assert_eq!(table.check_disjoint(), Ok(()));
        }
        let _ = RangeDescriptor::decode(&sealed);
        let _ = Split::decode(&sealed);
    }
}
