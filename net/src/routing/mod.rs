//! Which range (Raft group) a client request goes to, once the keyspace is split into key
//! ranges (issue 16): decided from the request's keys, where the command table says they are,
//! and the node's [`RangeTable`]. Pure: no IO, so that every rule is a unit test.
//!
//! - A request naming no key (PING, INFO, ...) is the node's own ([`Route::NoKeys`]).
//! - Every key in one range: that range's leader serves it ([`Route::One`]); multi-key writes
//!   (MSET, DEL with several keys, RENAME) and transactions stay atomic because one range's
//!   log orders them.
//! - Keys of several ranges: a read that Redis Cluster clients would have split by slot
//!   (MGET, EXISTS) is split here instead, by range, and the replies are joined
//!   ([`Route::FanOut`], [`join_replies`]); anything else is refused with Redis Cluster's
//!   `CROSSSLOT` error, which clients already know ([`CROSS_RANGE`]): an atomic write over two
//!   Raft groups would need a distributed transaction.
//! - A command over the whole keyspace (SCAN, KEYS, DBSIZE, FLUSHALL, FLUSHDB) walks every
//!   range in key order ([`Route::EveryRange`]).
//! - A key no range in the table owns (a gap: the node has not heard of a split's right half
//!   yet) is [`Route::Unknown`]: the node learns the table from a peer and routes again.

use bytes::Bytes;
use kv::ranges::{Placement, RangeId, RangeTable};

use crate::auth::permissions::WHOLE_KEYSPACE;
use crate::command_table;
use crate::resp::Reply;
use crate::server::upper;

pub mod cursor;
pub mod every_range;
pub mod retry;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cursor;
#[cfg(test)]
mod tests_joins;

/// The refusal of a request whose keys lie in several ranges; the `CROSSSLOT` code is Redis
/// Cluster's, so that clients treat it as they treat keys of several slots.
pub const CROSS_RANGE: &str =
    "CROSSSLOT Keys in request don't belong to the same key range (kvstore ranges)";

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// It names no key.
    NoKeys,
    /// Every key it names is in this range.
    One(RangeId),
    /// A read over keys of several ranges, sent in parts and joined as `join` says.
    FanOut { join: Join, parts: Vec<Part> },
    /// It reads or changes every key: every range, in key order.
    EveryRange(Vec<RangeId>),
    /// A write (or transaction) over keys of several ranges: refused with [`CROSS_RANGE`].
    CrossRange,
    /// No range in the table owns this key.
    Unknown { key: Bytes },
}

/// How the replies of a fanned-out read make the client's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// MGET: one value per key, in the request's key order.
    ValuesInKeyOrder,
    /// EXISTS: the sum of the counts.
    SumOfCounts,
}

/// One range's part of a fanned-out read: the request to send it, and where its keys were in
/// the client's request (their order in the reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub range: RangeId,
    pub request: Vec<Bytes>,
    pub key_positions: Vec<usize>,
}

/// Routes the request `args` (its name first) by `table`.
pub fn route(args: &[Bytes], table: &RangeTable) -> Route {
    let Some(name) = args.first() else {
        return Route::NoKeys;
    };
    let name = upper(name);
    if name == "SEQ" {
        // `SEQ client seq command ...`: the inner command decides.
        return match args.get(3..) {
            Some(inner) if !inner.is_empty() => route(inner, table),
            _ => Route::NoKeys,
        };
    }
    if WHOLE_KEYSPACE.contains(&name.as_str()) {
        return Route::EveryRange(table.ranges().map(|r| r.id).collect());
    }
    let Some(spec) = command_table::lookup(name.as_bytes()) else {
        // Unknown: the command's own error answers it, wherever it runs.
        return Route::NoKeys;
    };
    let keys: Vec<&Bytes> = spec.keys(args).collect();
    match table.single_owner(keys.iter().map(|k| k.as_ref())) {
        Ok(None) => Route::NoKeys,
        Ok(Some(owner)) => Route::One(owner.id),
        Err(Placement::Unknown { key }) => Route::Unknown { key },
        Err(Placement::Crossing { .. }) => match fan_out_join(&name) {
            Some(join) => fan_out(&name, &keys, join, table),
            None => Route::CrossRange,
        },
    }
}

/// Routes a transaction: its queued requests and the keys it WATCHes must all lie in one
/// range, whose log then orders the whole EXEC. Reads that would fan out alone are refused
/// inside a transaction too, since its replies must come from one point in one log.
pub fn route_transaction(queued: &[Vec<Bytes>], watched: &[Bytes], table: &RangeTable) -> Route {
    let mut keys: Vec<&[u8]> = watched.iter().map(|k| k.as_ref()).collect();
    for request in queued {
        let inner = match request.first().map(|n| upper(n)).as_deref() {
            Some("SEQ") => request.get(3..).unwrap_or_default(),
            _ => request.as_slice(),
        };
        let Some(name) = inner.first() else { continue };
        if WHOLE_KEYSPACE.contains(&upper(name).as_str()) && table.len() > 1 {
            return Route::CrossRange;
        }
        if let Some(spec) = command_table::lookup(name) {
            keys.extend(spec.keys(inner).map(|k| k.as_ref()));
        }
    }
    match table.single_owner(keys) {
        Ok(None) => Route::NoKeys,
        Ok(Some(owner)) => Route::One(owner.id),
        Err(Placement::Unknown { key }) => Route::Unknown { key },
        Err(Placement::Crossing { .. }) => Route::CrossRange,
    }
}

fn fan_out_join(name: &str) -> Option<Join> {
    match name {
        "MGET" => Some(Join::ValuesInKeyOrder),
        "EXISTS" => Some(Join::SumOfCounts),
        _ => None,
    }
}

/// Splits a read of one key per argument (`NAME key key ...`) into one request per range,
/// ranges in key order, each part's keys in the client's order.
fn fan_out(name: &str, keys: &[&Bytes], join: Join, table: &RangeTable) -> Route {
    let mut parts: Vec<Part> = Vec::new();
    for (position, key) in keys.iter().enumerate() {
        let Some(owner) = table.owner(key) else {
            return Route::Unknown {
                key: (*key).clone(),
            };
        };
        match parts.iter_mut().find(|p| p.range == owner.id) {
            Some(part) => {
                part.request.push((*key).clone());
                part.key_positions.push(position);
            }
            None => parts.push(Part {
                range: owner.id,
                request: vec![Bytes::copy_from_slice(name.as_bytes()), (*key).clone()],
                key_positions: vec![position],
            }),
        }
    }
    let order: Vec<RangeId> = table.ranges().map(|r| r.id).collect();
    parts.sort_by_key(|p| order.iter().position(|&id| id == p.range));
    Route::FanOut { join, parts }
}

/// The client's reply from the parts' replies (in the order of `parts`). An error from any
/// part is the reply, as a failed single request would be.
pub fn join_replies(join: Join, parts: &[Part], replies: Vec<Reply>) -> Reply {
    if replies.len() != parts.len() {
        return Reply::error("ERR a part of the request across ranges went unanswered");
    }
    if let Some(error) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
        return error.clone();
    }
    match join {
        Join::SumOfCounts => sum_of_counts(&replies, unexpected),
        Join::ValuesInKeyOrder => {
            let keys = parts.iter().map(|p| p.key_positions.len()).sum();
            let mut values = vec![Reply::Nil; keys];
            for (part, reply) in parts.iter().zip(replies) {
                let Reply::Array(items) = reply else {
                    return unexpected(&reply);
                };
                if items.len() != part.key_positions.len() {
                    return Reply::error(
                        "ERR a range answered MGET with the wrong number of values",
                    );
                }
                for (&position, item) in part.key_positions.iter().zip(items) {
                    if let Some(slot) = values.get_mut(position) {
                        *slot = item;
                    }
                }
            }
            Reply::Array(values)
        }
    }
}

fn unexpected(reply: &Reply) -> Reply {
    Reply::error(format!(
        "ERR a range answered a part of the request with {reply:?}"
    ))
}

/// The sum of integer replies (EXISTS over parts, DBSIZE over ranges); `unexpected` names the
/// first reply that is not an integer.
fn sum_of_counts(replies: &[Reply], unexpected: fn(&Reply) -> Reply) -> Reply {
    let mut total = 0i64;
    for reply in replies {
        match reply {
            Reply::Integer(n) => total = total.saturating_add(*n),
            other => return unexpected(other),
        }
    }
    Reply::Integer(total)
}
