//! The data commands of the client port ([`crate::server_parse`] says which and their syntax),
//! run against the node: a read at a read index, a write through the log inside the caller's
//! session (the connection's sessionless one, or that of `SEQ client-id seq ...`). On a node
//! hosting several ranges, each goes where its keys live ([`crate::server_routed`]).

use bytes::Bytes;
use kv::ranges::FIRST_RANGE;
use kv::{Command, CommandResult, Query};

use crate::request::{NodeHandle, ReadOp, ReadResult};
use crate::resp::Reply;
use crate::server::request_error;
use crate::server_parse::{parse, unknown_command, Parsed, Shape};

pub use crate::server_parse::is_read;

/// Runs the data command `name` (upper case; `sent_name` as the client wrote it) inside
/// `session`.
pub async fn execute(
    name: &str,
    sent_name: &[u8],
    args: &[Bytes],
    node: &NodeHandle,
    session: (u64, u64),
) -> Reply {
    let routed = |parsed| async move {
        let mut request = Vec::with_capacity(1 + args.len());
        request.push(Bytes::copy_from_slice(sent_name));
        request.extend_from_slice(args);
        crate::server_routed::execute(name, &request, parsed, node, session).await
    };
    match parse(name, args) {
        None => Reply::error(unknown_command(sent_name, args)),
        Some(Err(e)) => Reply::error(e),
        // One range: nothing to route (and no request to copy), unless the range split since
        // the table was published: the command is then routed over the ranges, parsed again
        // (a refused command applied nothing).
        Some(Ok(parsed)) if node.hosts_one_range() => {
            match run_in_one_range(parsed, node, session).await {
                Some(reply) => reply,
                None => match parse(name, args) {
                    Some(Ok(parsed)) => routed(parsed).await,
                    _ => Reply::error("ERR internal error: a command did not parse twice"),
                },
            }
        }
        Some(Ok(parsed)) => routed(parsed).await,
    }
}

/// Runs a parsed command on a node whose table has one range owning every key; `None` if the
/// range refused it because it split since (a key that moved out, or a read over the whole
/// range asked at the epoch before the split: its left half alone would answer, so SCAN, KEYS
/// and DBSIZE carry the epoch, `ReadOp::WholeRange`).
async fn run_in_one_range(
    parsed: Parsed,
    node: &NodeHandle,
    (client_id, seq): (u64, u64),
) -> Option<Reply> {
    let (result, shape) = match parsed {
        Parsed::Read(query, shape) => {
            let op = match query {
                Query::Scan { .. } | Query::Keys { .. } | Query::DbSize => {
                    let epoch = node.ranges().get(FIRST_RANGE).map_or(0, |d| d.epoch);
                    ReadOp::WholeRange { query, epoch }
                }
                query => ReadOp::Query(query),
            };
            match node.read(op).await {
                Ok(ReadResult::Answer(r)) => (Ok(r), shape),
                Ok(_) => return Some(Reply::error("ERR internal error: unexpected read result")),
                Err(e) => (Err(e), shape),
            }
        }
        Parsed::Write(op, shape) => {
            if let Some(too_large) = op.size_error() {
                return Some(Reply::error(too_large));
            }
            let result = node.write(Command::new(client_id, seq, op)).await;
            (result, shape)
        }
    };
    match result {
        Ok(CommandResult::NotOwned { range, epoch }) => {
            node.ranges_at_epoch(range, epoch, crate::routing::retry::CATCH_UP_PATIENCE)
                .await;
            None
        }
        Ok(result) => Some(shaped(result, shape)),
        Err(e) => Some(request_error(e)),
    }
}

/// Runs a parsed command.
pub async fn run(parsed: Parsed, node: &NodeHandle, (client_id, seq): (u64, u64)) -> Reply {
    match parsed {
        Parsed::Read(q, shape) => match node.read(ReadOp::Query(q)).await {
            Ok(ReadResult::Answer(r)) => shaped(r, shape),
            Ok(_) => Reply::error("ERR internal error: unexpected read result"),
            Err(e) => request_error(e),
        },
        Parsed::Write(op, shape) => {
            if let Some(too_large) = op.size_error() {
                return Reply::error(too_large);
            }
            match node.write(Command::new(client_id, seq, op)).await {
                Ok(result) => shaped(result, shape),
                Err(e) => request_error(e),
            }
        }
    }
}

pub fn shaped(result: CommandResult, shape: Shape) -> Reply {
    match (shape, result) {
        (Shape::OkAsOne, CommandResult::Ok) => Reply::Integer(1),
        (Shape::OkAsOne, CommandResult::Nil) => Reply::Integer(0),
        (Shape::NoKeys, CommandResult::Array(mut page)) if page.len() == 2 => {
            page[1] = CommandResult::Array(Vec::new());
            command_reply(CommandResult::Array(page))
        }
        (_, result) => command_reply(result),
    }
}

/// A result as Redis would reply it.
pub fn command_reply(result: CommandResult) -> Reply {
    match result {
        CommandResult::Ok => Reply::ok(),
        CommandResult::Deleted { existed } => Reply::Integer(i64::from(existed)),
        CommandResult::CasOk => Reply::Integer(1),
        CommandResult::CasFailed { .. } => Reply::Integer(0),
        CommandResult::Value(v) => Reply::Integer(v),
        CommandResult::Error(e) => Reply::error(format!("ERR {e}")),
        CommandResult::Stale { last_seq } => Reply::error(format!(
            "ERR stale request: this session already applied sequence number {last_seq}"
        )),
        CommandResult::Nil => Reply::Nil,
        CommandResult::Bulk(b) => Reply::Bulk(b),
        CommandResult::Array(items) => Reply::Array(items.into_iter().map(command_reply).collect()),
        CommandResult::Status(s) => Reply::Simple(s),
        CommandResult::Aborted => Reply::NilArray,
        CommandResult::NotOwned { range, epoch } => Reply::error(format!(
            "TRYAGAIN {}",
            crate::routing::retry::moved_out(range, epoch)
        )),
        CommandResult::Split { left, right } => crate::server_ranges::halves_reply(&left, &right),
    }
}
