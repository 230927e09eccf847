//! Routing rules, one test per rule, over a table of three ranges: `[.., g)` is range 1,
//! `[g, p)` range 2 and `[p, ..)` range 3.

use super::*;
use kv::ranges::{RangeDescriptor, Split, FIRST_RANGE};

pub(super) fn req(text: &str) -> Vec<Bytes> {
    text.split(' ')
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

pub(super) fn three_ranges() -> RangeTable {
    let mut table = RangeTable::first();
    for (range, at, new_range) in [(FIRST_RANGE, "g", 2), (2, "p", 3)] {
        let epoch = table.get(range).unwrap().epoch;
        let split = Split {
            range,
            epoch,
            at: Bytes::from(at),
            new_range,
        };
        table.apply_split(&split).unwrap();
    }
    table.check_tiling().unwrap();
    table
}

#[test]
fn a_request_without_keys_is_the_nodes_own() {
    let table = three_ranges();
    for text in ["PING", "INFO", "CLIENT ID", "NOSUCHCOMMAND a b", "MULTI"] {
        assert_eq!(route(&req(text), &table), Route::NoKeys, "{text}");
    }
}

#[test]
fn keys_of_one_range_go_to_that_range() {
    let table = three_ranges();
    assert_eq!(route(&req("GET apple"), &table), Route::One(1));
    assert_eq!(route(&req("SET grape 1"), &table), Route::One(2));
    assert_eq!(route(&req("MSET pear 1 zebra 2"), &table), Route::One(3));
    assert_eq!(route(&req("DEL a b c"), &table), Route::One(1));
    assert_eq!(route(&req("RENAME h i"), &table), Route::One(2));
    // The split key itself belongs to the right half.
    assert_eq!(route(&req("GET g"), &table), Route::One(2));
    assert_eq!(route(&req("SEQ 7 1 SET pear 1"), &table), Route::One(3));
}

#[test]
fn writes_over_several_ranges_are_refused_as_crossslot() {
    let table = three_ranges();
    for text in [
        "MSET apple 1 pear 2",
        "DEL apple grape",
        "RENAME apple pear",
        "MSETNX a 1 z 1",
        "SEQ 7 1 MSET a 1 z 1",
    ] {
        assert_eq!(route(&req(text), &table), Route::CrossRange, "{text}");
    }
    assert!(CROSS_RANGE.starts_with("CROSSSLOT "));
}

#[test]
fn one_range_means_no_request_is_ever_refused_for_its_keys() {
    let table = RangeTable::first();
    assert_eq!(route(&req("MSET apple 1 pear 2"), &table), Route::One(1));
    assert_eq!(route(&req("MGET a z"), &table), Route::One(1));
}

#[test]
fn mget_over_ranges_fans_out_and_joins_in_the_clients_key_order() {
    let table = three_ranges();
    let Route::FanOut { join, parts } = route(&req("MGET zebra apple grape banana"), &table) else {
        panic!("MGET over three ranges fans out");
    };
    assert_eq!(join, Join::ValuesInKeyOrder);
    let shape: Vec<(RangeId, Vec<usize>)> = parts
        .iter()
        .map(|p| (p.range, p.key_positions.clone()))
        .collect();
    assert_eq!(shape, vec![(1, vec![1, 3]), (2, vec![2]), (3, vec![0])]);
    assert_eq!(parts[0].request, req("MGET apple banana"));
    let bulk = |s: &str| Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()));
    let replies = vec![
        Reply::Array(vec![bulk("A"), Reply::Nil]),
        Reply::Array(vec![bulk("G")]),
        Reply::Array(vec![bulk("Z")]),
    ];
    assert_eq!(
        join_replies(join, &parts, replies),
        Reply::Array(vec![bulk("Z"), bulk("A"), bulk("G"), Reply::Nil])
    );
}

#[test]
fn exists_over_ranges_sums_and_an_error_from_a_part_is_the_reply() {
    let table = three_ranges();
    let Route::FanOut { join, parts } = route(&req("EXISTS a z a"), &table) else {
        panic!("EXISTS over two ranges fans out");
    };
    assert_eq!(join, Join::SumOfCounts);
    let counts = vec![Reply::Integer(2), Reply::Integer(1)];
    assert_eq!(join_replies(join, &parts, counts), Reply::Integer(3));
    let failed = vec![Reply::Integer(2), Reply::error("TRYAGAIN no leader")];
    assert_eq!(
        join_replies(join, &parts, failed),
        Reply::error("TRYAGAIN no leader")
    );
    let short = vec![Reply::Integer(2)];
    assert!(matches!(join_replies(join, &parts, short), Reply::Error(_)));
    let wrong_shape = vec![Reply::Integer(2), Reply::Nil];
    assert!(matches!(
        join_replies(join, &parts, wrong_shape),
        Reply::Error(_)
    ));
}

#[test]
fn whole_keyspace_commands_walk_every_range_in_key_order() {
    let table = three_ranges();
    for text in ["SCAN 0", "KEYS *", "DBSIZE", "FLUSHALL", "flushdb"] {
        assert_eq!(
            route(&req(text), &table),
            Route::EveryRange(vec![1, 2, 3]),
            "{text}"
        );
    }
}

#[test]
fn a_key_in_a_gap_of_the_table_is_unknown() {
    let mut table = RangeTable::default();
    table
        .learn(RangeDescriptor {
            id: 3,
            start: Bytes::from("p"),
            end: None,
            epoch: 2,
        })
        .unwrap();
    assert_eq!(route(&req("GET zebra"), &table), Route::One(3));
    assert_eq!(
        route(&req("GET apple"), &table),
        Route::Unknown {
            key: Bytes::from("apple")
        }
    );
    assert_eq!(
        route(&req("MGET zebra apple"), &table),
        Route::Unknown {
            key: Bytes::from("apple")
        }
    );
}

#[test]
fn a_transaction_runs_in_one_range_or_not_at_all() {
    let table = three_ranges();
    let queued = |texts: &[&str]| texts.iter().map(|t| req(t)).collect::<Vec<_>>();
    assert_eq!(
        route_transaction(&queued(&["SET h 1", "INCR i"]), &[Bytes::from("j")], &table),
        Route::One(2)
    );
    assert_eq!(
        route_transaction(&queued(&["SET h 1"]), &[Bytes::from("zebra")], &table),
        Route::CrossRange,
        "a watched key of another range"
    );
    assert_eq!(
        route_transaction(&queued(&["MGET a z"]), &[], &table),
        Route::CrossRange,
        "a read that would fan out alone"
    );
    assert_eq!(
        route_transaction(&queued(&["DBSIZE"]), &[], &table),
        Route::CrossRange
    );
    assert_eq!(
        route_transaction(&queued(&["DBSIZE", "SET a 1"]), &[], &RangeTable::first()),
        Route::One(1)
    );
    assert_eq!(
        route_transaction(&queued(&["PING"]), &[], &table),
        Route::NoKeys
    );
    assert_eq!(
        route_transaction(&queued(&["SEQ 1 2 SET pear 1"]), &[], &table),
        Route::One(3)
    );
}
