//! The commands over the whole keyspace, once it is split: each range answers for its own keys,
//! in key order, and the replies are joined. SCAN is walked one range at a time instead
//! ([`super::cursor`]).

use crate::resp::Reply;

/// How the ranges' replies to a whole-keyspace command make the client's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EveryRangeJoin {
    /// KEYS: the ranges' keys, concatenated in range order.
    Concatenate,
    /// DBSIZE: the sum of the counts.
    Sum,
    /// FLUSHALL, FLUSHDB: OK once every range answered OK.
    AllOk,
}

/// The join for whole-keyspace command `name` (upper case); None for SCAN and the rest.
pub fn every_range_join(name: &str) -> Option<EveryRangeJoin> {
    match name {
        "KEYS" => Some(EveryRangeJoin::Concatenate),
        "DBSIZE" => Some(EveryRangeJoin::Sum),
        "FLUSHALL" | "FLUSHDB" => Some(EveryRangeJoin::AllOk),
        _ => None,
    }
}

/// The client's reply from every range's (in key order). An error from any range is the
/// reply: the client retries the whole command (FLUSHALL again flushes, KEYS lists again).
pub fn join_every_range(join: EveryRangeJoin, replies: Vec<Reply>) -> Reply {
    if let Some(error) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
        return error.clone();
    }
    match join {
        EveryRangeJoin::Concatenate => {
            let mut keys = Vec::new();
            for reply in replies {
                match reply {
                    Reply::Array(mut items) => keys.append(&mut items),
                    other => return unexpected(&other),
                }
            }
            Reply::Array(keys)
        }
        EveryRangeJoin::Sum => super::sum_of_counts(&replies, unexpected),
        EveryRangeJoin::AllOk => match replies.iter().find(|r| **r != Reply::ok()) {
            Some(other) => unexpected(other),
            None => Reply::ok(),
        },
    }
}

fn unexpected(reply: &Reply) -> Reply {
    Reply::error(format!("ERR a range answered with {reply:?}"))
}
