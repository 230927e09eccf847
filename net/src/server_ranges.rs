//! The operator's range commands on the client port:
//!
//! | command | does |
//! | --- | --- |
//! | `RAFT.RANGES` | the ranges this node hosts, in key order: id, start, end, epoch, leader, keys |
//! | `RAFT.RANGES HELP` | this list |
//! | `RAFT.SPLIT key` | splits the range owning `key` there: `key` starts the new right half |
//!
//! Each range is a flat field/value list (`id`, `start`, `end`, `epoch`, `leader`, `keys`):
//! `end` nil for the last range, `leader` nil while this node knows none, `keys` as this node's
//! replica counts them. RAFT.SPLIT answers the two halves (`id`, `start`, `end`, `epoch`); a
//! split at a key that already starts a range answers the two ranges meeting there, so that a
//! retry is harmless.

use bytes::Bytes;
use kv::ranges::{show_key, RangeDescriptor, RangeId, RangeTable, Split, FIRST_RANGE};
use kv::{Command, CommandResult, Op, SESSIONLESS_CLIENT};
use raft_core::NodeId;

use crate::request::NodeHandle;
use crate::resp::Reply;
use crate::server::{arity_error, request_error};
use crate::server_admin::{bulk, number, pairs};
use crate::server_data::command_reply;

const RANGES_HELP: &[&str] = &[
    "RAFT.RANGES [HELP]",
    "    The ranges this node hosts, in key order: id, start, end, epoch, leader, keys.",
    "RAFT.SPLIT <key>",
    "    Split the range owning <key> at it: <key> starts a new range. Answers both halves.",
];

/// One range as `RAFT.RANGES` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeStatus {
    pub id: RangeId,
    pub start: Bytes,
    /// None: to the end of the keyspace.
    pub end: Option<Bytes>,
    pub epoch: u64,
    /// None while this node knows no leader of the range (or for a split's halves).
    pub leader: Option<NodeId>,
    /// None where not asked (a split's halves) or the group did not answer.
    pub keys: Option<u64>,
}

impl RangeStatus {
    pub fn of(descriptor: &RangeDescriptor) -> Self {
        Self {
            id: descriptor.id,
            start: descriptor.start.clone(),
            end: descriptor.end.clone(),
            epoch: descriptor.epoch,
            leader: None,
            keys: None,
        }
    }
}

/// `RAFT.RANGES [HELP]`.
pub async fn ranges_command(args: &[Bytes], node: &NodeHandle) -> Reply {
    match args {
        [] => {}
        [help] if help.eq_ignore_ascii_case(b"HELP") => {
            return Reply::Array(
                RANGES_HELP
                    .iter()
                    .map(|l| Reply::Simple((*l).to_string()))
                    .collect(),
            )
        }
        [other, ..] => {
            return Reply::error(format!(
                "ERR unknown subcommand '{}'. Try RAFT.RANGES HELP.",
                String::from_utf8_lossy(other)
            ))
        }
    }
    let table = node.ranges();
    let mut entries = Vec::with_capacity(table.len());
    for descriptor in table.ranges() {
        let mut status = RangeStatus::of(descriptor);
        if let Ok(info) = node.info_of(descriptor.id).await {
            status.leader = info.leader;
            status.keys = Some(info.keys);
        }
        entries.push(range_reply(&status));
    }
    Reply::Array(entries)
}

/// `RAFT.SPLIT key`.
pub async fn split_command(args: &[Bytes], node: &NodeHandle, request_id: u64) -> Reply {
    match args {
        [key] if !key.is_empty() => split_until_current(key.clone(), node, request_id).await,
        [_] => Reply::error("ERR the empty key starts the keyspace: no range splits there"),
        _ => arity_error("raft.split"),
    }
}

/// How many times a split refused at apply is proposed again once this node's table changed.
const SPLIT_ATTEMPTS: usize = 3;

/// [`split`], again while it is refused at apply and this node's range table changes meanwhile:
/// a node that had not yet applied an earlier split (a client splitting twice in a row through
/// two nodes) proposes at an epoch the range has left, and is refused; once it has applied the
/// earlier split its table is current and the split goes through. Refusals that a newer table
/// does not explain (the key is not inside the range) are answered at once.
async fn split_until_current(key: Bytes, node: &NodeHandle, request_id: u64) -> Reply {
    let mut attempt = 1;
    loop {
        let table = node.ranges();
        let reply = split(key.clone(), &table, node, request_id).await;
        if attempt == SPLIT_ATTEMPTS || !matches!(reply, Reply::Error(_)) {
            return reply;
        }
        let newer = node
            .ranges_after(&table, crate::routing::retry::TABLE_PATIENCE)
            .await;
        if *newer == *table {
            return reply;
        }
        attempt += 1;
    }
}

/// Allocates the new range's id in the first range, then proposes the split to the range
/// owning `key` at the epoch `table` (this node's, as last applied) gives it; refused at apply
/// if the range changed since.
async fn split(key: Bytes, table: &RangeTable, node: &NodeHandle, request_id: u64) -> Reply {
    let Some(owner) = table.owner(&key).cloned() else {
        return Reply::error(format!(
            "TRYAGAIN no range known here owns key {}",
            show_key(&key)
        ));
    };
    if owner.start == key {
        // Already a boundary (a retried split): the ranges meeting there.
        return match table.ranges().find(|r| r.end.as_ref() == Some(&key)) {
            Some(left) => halves_reply(left, &owner),
            None => Reply::error(format!(
                "TRYAGAIN the range before key {} is not known here yet",
                show_key(&key)
            )),
        };
    }
    let allocate = Command::new(SESSIONLESS_CLIENT, request_id, Op::AllocateRangeId);
    let new_range = match node.write_in(FIRST_RANGE, allocate).await {
        Ok(CommandResult::Value(id)) if id > 0 => id as RangeId,
        Ok(other) => return command_reply(other),
        Err(e) => return request_error(e),
    };
    let split = Split {
        range: owner.id,
        epoch: owner.epoch,
        at: key,
        new_range,
    };
    // A second request id of this request: the pair names one write cluster-wide.
    let propose = Command::new(
        SESSIONLESS_CLIENT,
        request_id.wrapping_add(2),
        Op::Split(split),
    );
    match node.write_in(owner.id, propose).await {
        Ok(CommandResult::Split { left, right }) => halves_reply(&left, &right),
        Ok(other) => command_reply(other),
        Err(e) => request_error(e),
    }
}

/// The two halves a split answers.
pub fn halves_reply(left: &RangeDescriptor, right: &RangeDescriptor) -> Reply {
    Reply::Array(vec![
        range_reply(&RangeStatus::of(left)),
        range_reply(&RangeStatus::of(right)),
    ])
}

fn number_or_nil(n: Option<u64>) -> Reply {
    n.map_or(Reply::Nil, |n| Reply::Integer(n as i64))
}

pub fn range_reply(status: &RangeStatus) -> Reply {
    Reply::Array(vec![
        bulk("id"),
        Reply::Integer(status.id as i64),
        bulk("start"),
        Reply::Bulk(status.start.clone()),
        bulk("end"),
        status.end.clone().map_or(Reply::Nil, Reply::Bulk),
        bulk("epoch"),
        Reply::Integer(status.epoch as i64),
        bulk("leader"),
        number_or_nil(status.leader),
        bulk("keys"),
        number_or_nil(status.keys),
    ])
}

/// The inverse of [`range_reply`] over a list of ranges, for clients; unknown fields are
/// skipped.
pub fn parse_range_list(reply: &Reply) -> Result<Vec<RangeStatus>, String> {
    let Reply::Array(entries) = reply else {
        return Err(format!("expected a list of ranges, got {reply:?}"));
    };
    entries.iter().map(parse_range).collect()
}

fn parse_range(reply: &Reply) -> Result<RangeStatus, String> {
    let mut status = RangeStatus {
        id: 0,
        start: Bytes::new(),
        end: None,
        epoch: 0,
        leader: None,
        keys: None,
    };
    for (field, value) in pairs(reply)? {
        match field.as_str() {
            "id" => status.id = number(value)?.ok_or("a range without an id")?,
            "start" => status.start = key_or_nil(value)?.unwrap_or_default(),
            "end" => status.end = key_or_nil(value)?,
            "epoch" => status.epoch = number(value)?.unwrap_or(0),
            "leader" => status.leader = number(value)?,
            "keys" => status.keys = number(value)?,
            _ => {}
        }
    }
    Ok(status)
}

fn key_or_nil(value: &Reply) -> Result<Option<Bytes>, String> {
    match value {
        Reply::Bulk(key) => Ok(Some(key.clone())),
        Reply::Nil => Ok(None),
        other => Err(format!("expected a key, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_list_reads_back_as_it_was_written() {
        let ranges = vec![
            RangeStatus {
                id: 1,
                start: Bytes::new(),
                end: Some(Bytes::from_static(b"m\x00")),
                epoch: 3,
                leader: Some(2),
                keys: Some(10),
            },
            RangeStatus {
                id: 7,
                start: Bytes::from_static(b"m\x00"),
                end: None,
                epoch: 3,
                leader: None,
                keys: None,
            },
        ];
        let reply = Reply::Array(ranges.iter().map(range_reply).collect());
        assert_eq!(parse_range_list(&reply), Ok(ranges));
        assert!(parse_range_list(&Reply::Integer(1)).is_err());
        assert!(parse_range_list(&Reply::Array(vec![Reply::Array(vec![bulk("epoch")])])).is_err());
    }
}
