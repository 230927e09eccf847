//! The retry rule after a refusal for a moved range, and the joins of whole-keyspace replies.

use bytes::Bytes;

use super::every_range::{every_range_join, join_every_range, EveryRangeJoin};
use super::retry::{self, Attempt, Step, ROUTING_ATTEMPTS};
use crate::request::RequestError;
use crate::resp::Reply;

#[test]
fn a_moved_request_is_routed_again_then_answered_tryagain() {
    let moved = || Attempt::Moved(retry::moved_out(2, 5));
    for attempt in 0..ROUTING_ATTEMPTS - 1 {
        assert_eq!(retry::after(attempt, moved()), Step::RouteAgain);
    }
    assert_eq!(
        retry::after(ROUTING_ATTEMPTS - 1, moved()),
        Step::Answer(Reply::error(
            "TRYAGAIN the key moved out of range 2 (epoch 5)"
        ))
    );
    let answered = Attempt::Done(Reply::Integer(3));
    assert_eq!(retry::after(0, answered), Step::Answer(Reply::Integer(3)));
    let failed = Attempt::Done(Reply::error("ERR no"));
    assert_eq!(
        retry::after(0, failed),
        Step::Answer(Reply::error("ERR no"))
    );
}

#[test]
fn only_the_refusal_of_an_unhosted_range_counts_as_moved() {
    let unhosted = RequestError::TryAgain("range 4 is not hosted on this node".into());
    assert_eq!(
        retry::not_hosted(&unhosted),
        Some("range 4 is not hosted on this node")
    );
    for other in [
        RequestError::TryAgain("not the leader".into()),
        RequestError::Timeout("range 4 is not hosted on this node".into()),
        RequestError::Failed("disk".into()),
    ] {
        assert_eq!(retry::not_hosted(&other), None, "{other:?}");
    }
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn keys_are_concatenated_in_range_order() {
    let join = every_range_join("KEYS").unwrap();
    let replies = vec![
        Reply::Array(vec![bulk("a"), bulk("b")]),
        Reply::Array(vec![]),
        Reply::Array(vec![bulk("x")]),
    ];
    assert_eq!(
        join_every_range(join, replies),
        Reply::Array(vec![bulk("a"), bulk("b"), bulk("x")])
    );
}

#[test]
fn dbsize_is_summed_and_flushall_is_ok_only_if_every_range_is() {
    let sum = every_range_join("DBSIZE").unwrap();
    assert_eq!(
        join_every_range(
            sum,
            vec![Reply::Integer(2), Reply::Integer(0), Reply::Integer(5)]
        ),
        Reply::Integer(7)
    );
    let flush = every_range_join("FLUSHALL").unwrap();
    assert_eq!(every_range_join("FLUSHDB"), Some(EveryRangeJoin::AllOk));
    assert_eq!(
        join_every_range(flush, vec![Reply::ok(), Reply::ok()]),
        Reply::ok()
    );
    assert!(matches!(
        join_every_range(flush, vec![Reply::ok(), Reply::Integer(1)]),
        Reply::Error(_)
    ));
    assert_eq!(every_range_join("SCAN"), None);
}

#[test]
fn an_error_from_any_range_is_the_reply() {
    for join in [
        EveryRangeJoin::Concatenate,
        EveryRangeJoin::Sum,
        EveryRangeJoin::AllOk,
    ] {
        let replies = vec![
            Reply::Integer(1),
            Reply::error("TIMEOUT range 2"),
            Reply::ok(),
        ];
        assert_eq!(
            join_every_range(join, replies),
            Reply::error("TIMEOUT range 2"),
            "{join:?}"
        );
    }
}
