//! SCAN's cursor across ranges: it names the range and the place inside it, resumes at or
//! before the place it names (never after), and walks the ranges in key order to 0.

use kv::ranges::{RangeTable, Split, FIRST_RANGE};

use super::cursor::{self, NextCursor, ScanPlace, RANGE_BITS};
use super::tests::three_ranges;

#[test]
fn a_cursor_names_its_range_and_resumes_at_or_before_the_inner_cursor() {
    for (range, inner) in [
        (1, 0),
        (1, 1),
        (2, u64::MAX),
        (3, 0x1234_5678_9abc_def0),
        ((1 << RANGE_BITS) - 1, 42 << RANGE_BITS),
    ] {
        let place = ScanPlace { range, inner };
        let client = cursor::encode(place).expect("the id fits");
        assert_ne!(client, 0, "0 ends a scan, so no place encodes to it");
        let back = cursor::decode(client).expect("a place");
        assert_eq!(back.range, range);
        assert!(back.inner <= inner, "{back:?} resumes after {inner:#x}");
        assert!(
            inner - back.inner < 1 << RANGE_BITS,
            "{back:?} repeats more than one bucket before {inner:#x}"
        );
    }
    let exact = ScanPlace {
        range: 2,
        inner: 7 << RANGE_BITS,
    };
    assert_eq!(cursor::decode(cursor::encode(exact).unwrap()), Some(exact));
}

#[test]
fn range_ids_too_large_for_a_cursor_are_refused_not_truncated() {
    for range in [0, 1 << RANGE_BITS, u64::MAX] {
        assert_eq!(
            cursor::encode(ScanPlace { range, inner: 5 }),
            None,
            "{range}"
        );
    }
    assert_eq!(cursor::decode(0), None);
    assert_eq!(cursor::decode(12345), None, "a cursor naming range 0");
}

#[test]
fn a_scan_starts_at_the_first_range_and_restarts_there_for_an_unknown_range() {
    let table = three_ranges();
    let first = ScanPlace {
        range: FIRST_RANGE,
        inner: 0,
    };
    assert_eq!(cursor::start(0, &table), Some(first));
    let in_third = ScanPlace {
        range: 3,
        inner: 9 << RANGE_BITS,
    };
    assert_eq!(
        cursor::start(cursor::encode(in_third).unwrap(), &table),
        Some(in_third)
    );
    let unknown = cursor::encode(ScanPlace {
        range: 77,
        inner: 9 << RANGE_BITS,
    });
    assert_eq!(cursor::start(unknown.unwrap(), &table), Some(first));
    assert_eq!(cursor::start(0, &RangeTable::default()), None);
}

#[test]
fn a_finished_range_hands_on_to_the_next_in_key_order_and_the_last_ends_the_scan() {
    let table = three_ranges();
    let start_of = |range| cursor::encode(ScanPlace { range, inner: 0 }).map(NextCursor::Client);
    let at = |range| ScanPlace { range, inner: 0 };
    assert_eq!(Some(cursor::next(at(1), 0, &table)), start_of(2));
    assert_eq!(Some(cursor::next(at(2), 0, &table)), start_of(3));
    assert_eq!(cursor::next(at(3), 0, &table), NextCursor::Client(0));
}

#[test]
fn a_walk_visits_every_range_once_in_key_order() {
    let table = three_ranges();
    let mut client = 0;
    let mut visited = Vec::new();
    for _ in 0..10 {
        let place = cursor::start(client, &table).unwrap();
        visited.push(place.range);
        // Each range answers one page with a next cursor, then one that ends it.
        let inner_next = if place.inner == 0 { 5 << 40 } else { 0 };
        match cursor::next(place, inner_next, &table) {
            NextCursor::Client(0) => break,
            NextCursor::Client(c) => client = c,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(visited, [1, 1, 2, 2, 3, 3]);
}

#[test]
fn a_cursor_in_a_range_that_split_since_finishes_the_left_half_then_the_right() {
    let mut table = three_ranges();
    let place = ScanPlace {
        range: 2,
        inner: 3 << RANGE_BITS,
    };
    let client = cursor::encode(place).unwrap();
    let epoch = table.get(2).unwrap().epoch;
    let split = Split {
        range: 2,
        epoch,
        at: bytes::Bytes::from("k"),
        new_range: 4,
    };
    table.apply_split(&split).unwrap();
    assert_eq!(cursor::start(client, &table), Some(place));
    let right_half = cursor::encode(ScanPlace { range: 4, inner: 0 }).unwrap();
    assert_eq!(
        cursor::next(place, 0, &table),
        NextCursor::Client(right_half)
    );
}

#[test]
fn a_page_that_would_round_back_to_its_start_reads_on_instead() {
    let table = three_ranges();
    let at = ScanPlace {
        range: 2,
        inner: 8 << RANGE_BITS,
    };
    // The range's next cursor lies in the bucket the page started in.
    let same_bucket = (8 << RANGE_BITS) + 17;
    assert_eq!(
        cursor::next(at, same_bucket, &table),
        NextCursor::SameBucket
    );
    let next_bucket = 9 << RANGE_BITS;
    let expected = cursor::encode(ScanPlace {
        range: 2,
        inner: next_bucket,
    })
    .unwrap();
    assert_eq!(
        cursor::next(at, next_bucket + 3, &table),
        NextCursor::Client(expected)
    );
    assert_eq!(
        cursor::past_bucket(2, same_bucket, &table),
        NextCursor::Client(expected)
    );
    let last_bucket = u64::MAX;
    assert_eq!(
        cursor::past_bucket(2, last_bucket, &table),
        cursor::next(at, 0, &table),
        "past the last bucket is the next range"
    );
}

#[test]
fn a_gap_after_a_finished_range_is_not_skipped() {
    let mut table = RangeTable::default();
    let full = three_ranges();
    for id in [1, 3] {
        table.learn(full.get(id).unwrap().clone()).unwrap();
    }
    let at = ScanPlace { range: 1, inner: 0 };
    assert_eq!(cursor::next(at, 0, &table), NextCursor::Gap);
}
