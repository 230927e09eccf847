//! The data commands of a node hosting several ranges: each goes to the group of the range
//! [`routing::route`] picks in the node's table; a read over several ranges is sent in parts
//! and joined; a command over the whole keyspace asks every range in key order (SCAN one range
//! at a time, [`routing::cursor`]); a write over several ranges is refused with `CROSSSLOT`.
//! A refusal because a range moved is retried once the table changes ([`routing::retry`]).
//!
//! A node hosting one range never comes here ([`crate::server_data::execute`]): it runs as
//! before ranges, and its SCAN cursors stay bare hashes.

use bytes::Bytes;
use kv::ranges::{show_key, RangeId, RangeTable, FIRST_RANGE};
use kv::{Command, CommandResult, Query};

use crate::request::{NodeHandle, NodeInfo, ReadOp, ReadResult};
use crate::resp::Reply;
use crate::routing::cursor::{self, NextCursor};
use crate::routing::every_range::{every_range_join, join_every_range};
use crate::routing::retry::{self, Attempt, Step};
use crate::routing::{self, join_replies, Route};
use crate::server::{join_in_order, request_error};
use crate::server_data::shaped;
use crate::server_parse::{parse, Parsed};

/// Most pages one SCAN call reads on inside a range when its next cursor would round back to
/// where it started (keys crafted to share the top bits of their hashes).
const SAME_BUCKET_PAGES: usize = 8;

/// Runs `parsed` (the data command `request`, its name first; `name` upper case) where its
/// keys live, inside `session`.
pub async fn execute(
    name: &str,
    request: &[Bytes],
    parsed: Parsed,
    node: &NodeHandle,
    session: (u64, u64),
) -> Reply {
    let mut table = node.ranges();
    let mut attempt = 0;
    loop {
        let outcome = attempt_once(name, request, &parsed, &table, node, session).await;
        match retry::after(attempt, outcome) {
            Step::Answer(reply) => return reply,
            Step::RouteAgain => {
                attempt += 1;
                table = node.ranges_after(&table, retry::TABLE_PATIENCE).await;
            }
        }
    }
}

async fn attempt_once(
    name: &str,
    request: &[Bytes],
    parsed: &Parsed,
    table: &RangeTable,
    node: &NodeHandle,
    session: (u64, u64),
) -> Attempt {
    match routing::route(request, table) {
        Route::NoKeys => run_in(FIRST_RANGE, parsed.clone(), node, session).await,
        Route::One(range) => run_in(range, parsed.clone(), node, session).await,
        Route::CrossRange => Attempt::Done(Reply::error(routing::CROSS_RANGE)),
        Route::Unknown { key } => Attempt::Moved(unknown_key(&key)),
        Route::FanOut { join, parts } => {
            let mut sends = Vec::with_capacity(parts.len());
            for part in &parts {
                let Some(Ok(parsed)) = parse(name, &part.request[1..]) else {
                    return Attempt::Done(Reply::error("ERR internal error: a part did not parse"));
                };
                sends.push(run_in(part.range, parsed, node, session));
            }
            let mut replies = Vec::with_capacity(parts.len());
            for outcome in join_in_order(sends).await {
                match outcome {
                    Attempt::Done(reply) => replies.push(reply),
                    moved => return moved,
                }
            }
            Attempt::Done(join_replies(join, &parts, replies))
        }
        Route::EveryRange(ranges) => match parsed {
            Parsed::Read(Query::Scan { .. }, _) => scan(parsed, table, node).await,
            _ => every_range(name, parsed, (table, &ranges), node, session).await,
        },
    }
}

fn unknown_key(key: &[u8]) -> String {
    format!("no range known here owns key {}", show_key(key))
}

/// Runs `parsed` in the group of `range`.
pub(crate) async fn run_in(
    range: RangeId,
    parsed: Parsed,
    node: &NodeHandle,
    session: (u64, u64),
) -> Attempt {
    run_in_at(range, None, parsed, node, session).await
}

/// As [`run_in`]; a read over the whole range is answered only while the range is at `epoch`
/// (the table's), so that a range that split since is not taken for its old bounds
/// ([`ReadOp::WholeRange`]).
async fn run_in_at(
    range: RangeId,
    epoch: Option<u64>,
    parsed: Parsed,
    node: &NodeHandle,
    (client_id, seq): (u64, u64),
) -> Attempt {
    let (result, shape) = match parsed {
        Parsed::Read(query, shape) => {
            let op = match epoch {
                Some(epoch) => ReadOp::WholeRange { query, epoch },
                None => ReadOp::Query(query),
            };
            match node.read_in(range, op).await {
                Ok(ReadResult::Answer(result)) => (Ok(result), shape),
                Ok(_) => {
                    return Attempt::Done(Reply::error(
                        "ERR internal error: unexpected read result",
                    ))
                }
                Err(e) => (Err(e), shape),
            }
        }
        Parsed::Write(op, shape) => {
            if let Some(too_large) = op.size_error() {
                return Attempt::Done(Reply::error(too_large));
            }
            let command = Command::new(client_id, seq, op);
            (node.write_in(range, command).await, shape)
        }
    };
    match result {
        Ok(CommandResult::NotOwned { range, epoch }) => {
            // The range is at `epoch` where it was asked (its leader, for a write): this node
            // applies the split that moved the key soon, and routes by it then.
            node.ranges_at_epoch(range, epoch, retry::CATCH_UP_PATIENCE)
                .await;
            Attempt::Moved(retry::moved_out(range, epoch))
        }
        Ok(result) => Attempt::Done(shaped(result, shape)),
        Err(e) => match retry::not_hosted(&e) {
            Some(why) => Attempt::Moved(why.to_string()),
            None => Attempt::Done(request_error(e)),
        },
    }
}

/// KEYS, DBSIZE, FLUSHALL, FLUSHDB: every range, concurrently, joined in key order.
async fn every_range(
    name: &str,
    parsed: &Parsed,
    (table, ranges): (&RangeTable, &[RangeId]),
    node: &NodeHandle,
    session: (u64, u64),
) -> Attempt {
    let Some(join) = every_range_join(name) else {
        return Attempt::Done(Reply::error(format!(
            "ERR internal error: no join for {name} over ranges"
        )));
    };
    let sends = ranges
        .iter()
        .map(|&range| {
            let epoch = table.get(range).map(|d| d.epoch);
            run_in_at(range, epoch, parsed.clone(), node, session)
        })
        .collect();
    let mut replies = Vec::with_capacity(ranges.len());
    for outcome in join_in_order(sends).await {
        match outcome {
            Attempt::Done(reply) => replies.push(reply),
            moved => return moved,
        }
    }
    Attempt::Done(join_every_range(join, replies))
}

/// One SCAN call: a page of the range the client's cursor names, with the cursor that goes on
/// from it (into the next range once this one is done).
async fn scan(parsed: &Parsed, table: &RangeTable, node: &NodeHandle) -> Attempt {
    let Parsed::Read(
        Query::Scan {
            cursor: client_cursor,
            pattern,
            count,
        },
        shape,
    ) = parsed
    else {
        return Attempt::Done(Reply::error("ERR internal error: not a SCAN"));
    };
    let Some(at) = cursor::start(*client_cursor, table) else {
        return Attempt::Moved("this node knows no range yet".into());
    };
    let mut keys = Vec::new();
    let mut inner = at.inner;
    for _ in 0..SAME_BUCKET_PAGES {
        let page = Parsed::Read(
            Query::Scan {
                cursor: inner,
                pattern: pattern.clone(),
                count: *count,
            },
            *shape,
        );
        let epoch = table.get(at.range).map(|d| d.epoch);
        let session = (kv::SESSIONLESS_CLIENT, 0);
        let reply = match run_in_at(at.range, epoch, page, node, session).await {
            Attempt::Done(reply) => reply,
            moved => return moved,
        };
        let (inner_next, mut found) = match scan_page(reply) {
            Ok(page) => page,
            Err(reply) => return Attempt::Done(reply),
        };
        keys.append(&mut found);
        match cursor::next(at, inner_next, table) {
            NextCursor::SameBucket => inner = inner_next,
            next => return scan_reply(next, keys),
        }
    }
    scan_reply(cursor::past_bucket(at.range, inner, table), keys)
}

/// A range's SCAN reply: its next cursor and its keys, or the reply to pass on (an error).
fn scan_page(reply: Reply) -> Result<(u64, Vec<Reply>), Reply> {
    let Reply::Array(mut items) = reply else {
        return Err(reply);
    };
    let keys = match items.pop() {
        Some(Reply::Array(keys)) => keys,
        _ => return Err(Reply::error("ERR internal error: a SCAN page without keys")),
    };
    let next = match items.pop() {
        Some(Reply::Bulk(cursor)) => std::str::from_utf8(&cursor)
            .ok()
            .and_then(|c| c.parse::<u64>().ok()),
        _ => None,
    };
    match next {
        Some(next) if items.is_empty() => Ok((next, keys)),
        _ => Err(Reply::error(
            "ERR internal error: a SCAN page without a cursor",
        )),
    }
}

fn scan_reply(next: NextCursor, keys: Vec<Reply>) -> Attempt {
    match next {
        NextCursor::Client(cursor) => Attempt::Done(Reply::Array(vec![
            Reply::Bulk(Bytes::from(cursor.to_string())),
            Reply::Array(keys),
        ])),
        NextCursor::Gap => Attempt::Moved("the range after this one is not known here yet".into()),
        NextCursor::RangeIdTooLarge(range) => Attempt::Done(Reply::error(format!(
            "ERR range {range} cannot be named in a SCAN cursor (ids stop at 2^{})",
            cursor::RANGE_BITS
        ))),
        NextCursor::SameBucket => Attempt::Done(Reply::error("ERR internal error: SCAN stalled")),
    }
}

/// The range whose log is to give WATCH's versions: the one owning every watched key, since
/// EXEC compares them in one range's log. Keys of several ranges are refused with `CROSSSLOT`,
/// as Redis Cluster refuses them.
pub(crate) async fn range_of_watch(keys: &[Bytes], node: &NodeHandle) -> Result<RangeId, Reply> {
    if node.hosts_one_range() {
        return Ok(FIRST_RANGE);
    }
    let mut table = node.ranges();
    let mut attempt = 0;
    loop {
        let outcome = match table.single_owner(keys.iter().map(|k| k.as_ref())) {
            Ok(owner) => return Ok(owner.map_or(FIRST_RANGE, |r| r.id)),
            Err(kv::ranges::Placement::Crossing { .. }) => {
                return Err(Reply::error(routing::CROSS_RANGE))
            }
            Err(kv::ranges::Placement::Unknown { key }) => Attempt::Moved(unknown_key(&key)),
        };
        match retry::after(attempt, outcome) {
            Step::Answer(reply) => return Err(reply),
            Step::RouteAgain => {
                attempt += 1;
                table = node.ranges_after(&table, retry::TABLE_PATIENCE).await;
            }
        }
    }
}

/// EXEC's log entry `command`, in the one range owning every key its `queued` requests and its
/// `watched` keys name ([`routing::route_transaction`]); the error reply if there is none.
pub(crate) async fn exec(
    queued: &[Vec<Bytes>],
    watched: &[Bytes],
    command: Command,
    node: &NodeHandle,
) -> Result<CommandResult, Reply> {
    let mut table = node.ranges();
    let mut attempt = 0;
    loop {
        let range = match routing::route_transaction(queued, watched, &table) {
            Route::NoKeys => Ok(FIRST_RANGE),
            Route::One(range) => Ok(range),
            Route::Unknown { key } => Err(Attempt::Moved(unknown_key(&key))),
            _ => Err(Attempt::Done(Reply::error(routing::CROSS_RANGE))),
        };
        let outcome = match range {
            Err(outcome) => outcome,
            Ok(range) => match node.write_in(range, command.clone()).await {
                Ok(CommandResult::NotOwned { range, epoch }) => {
                    Attempt::Moved(retry::moved_out(range, epoch))
                }
                Ok(result) => return Ok(result),
                Err(e) => match retry::not_hosted(&e) {
                    Some(why) => Attempt::Moved(why.to_string()),
                    None => return Err(request_error(e)),
                },
            },
        };
        match retry::after(attempt, outcome) {
            Step::Answer(reply) => return Err(reply),
            Step::RouteAgain => {
                attempt += 1;
                table = node.ranges_after(&table, retry::TABLE_PATIENCE).await;
            }
        }
    }
}

/// `info` (the first range's replica, as `NodeHandle::info` answers) with the key counts of every hosted range summed, so
/// that INFO's keyspace line counts the whole keyspace as DBSIZE does. A range that does not
/// answer counts nothing.
pub(crate) async fn with_every_ranges_keys(mut info: NodeInfo, node: &NodeHandle) -> NodeInfo {
    let table = node.ranges();
    let others: Vec<RangeId> = table
        .ranges()
        .map(|r| r.id)
        .filter(|&id| id != FIRST_RANGE)
        .collect();
    for range in others {
        if let Ok(other) = node.info_of(range).await {
            info.keys = info.keys.saturating_add(other.keys);
            info.expires = info.expires.saturating_add(other.expires);
        }
    }
    info
}

#[cfg(test)]
mod tests;
