//! The data commands of the client port: reads (GET, EXISTS) and writes (SET, DEL, INCR and
//! its kin, CAS), mapped onto node requests. A write runs inside the caller's session: the
//! connection's sessionless one, or that of `SEQ client-id seq ...`.

use bytes::Bytes;
use kv::{Command, CommandResult, Op, SESSIONLESS_CLIENT};

use crate::request::{NodeHandle, ReadOp, ReadResult};
use crate::resp::Reply;
use crate::server::{arity_error, request_error};

/// Whether the command `name` only reads (reads pipelined together run together).
pub fn is_read(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"GET") || name.eq_ignore_ascii_case(b"EXISTS")
}

/// Runs the data command `name` (upper case) inside `session`.
pub async fn execute(name: &str, args: &[Bytes], node: &NodeHandle, session: (u64, u64)) -> Reply {
    match name {
        "GET" => match args {
            [key] => match node.read(ReadOp::Get(key.clone())).await {
                Ok(ReadResult::Value(Some(v))) => Reply::Bulk(v),
                Ok(ReadResult::Value(None)) => Reply::Nil,
                Ok(ReadResult::Count(_)) => {
                    Reply::error("ERR internal error: unexpected read result")
                }
                Err(e) => request_error(e),
            },
            _ => arity_error(name),
        },
        "EXISTS" => match args {
            [] => arity_error(name),
            keys => match node.read(ReadOp::Exists(keys.to_vec())).await {
                Ok(ReadResult::Count(n)) => Reply::Integer(n),
                Ok(ReadResult::Value(_)) => {
                    Reply::error("ERR internal error: unexpected read result")
                }
                Err(e) => request_error(e),
            },
        },
        _ => write_command(name, args, node, session).await,
    }
}

/// The write commands, inside the given session.
async fn write_command(
    name: &str,
    args: &[Bytes],
    node: &NodeHandle,
    (client_id, seq): (u64, u64),
) -> Reply {
    let op = match (name, args) {
        ("SET", [key, value]) => Op::Set {
            key: key.clone(),
            value: value.clone(),
        },
        ("SET", [_, _, ..]) => {
            return Reply::error("ERR SET options (EX, PX, NX, XX, ...) are not supported")
        }
        ("INCR", [key]) => Op::Incr {
            key: key.clone(),
            by: 1,
        },
        ("DECR", [key]) => Op::Incr {
            key: key.clone(),
            by: -1,
        },
        ("INCRBY", [key, by]) | ("DECRBY", [key, by]) => {
            let Some(by) = kv::redis_int::parse_i64(by) else {
                return Reply::error("ERR value is not an integer or out of range");
            };
            let by = if name == "DECRBY" {
                by.checked_neg()
            } else {
                Some(by)
            };
            let Some(by) = by else {
                return Reply::error("ERR decrement would overflow");
            };
            Op::Incr {
                key: key.clone(),
                by,
            }
        }
        ("CAS", [key, new]) => Op::Cas {
            key: key.clone(),
            expected: None,
            new: Some(new.clone()),
        },
        ("CAS", [key, expected, new]) => Op::Cas {
            key: key.clone(),
            expected: Some(expected.clone()),
            new: Some(new.clone()),
        },
        ("DEL", [key]) => Op::Delete { key: key.clone() },
        ("DEL", keys) if !keys.is_empty() && client_id == SESSIONLESS_CLIENT => {
            return delete_many(keys, node, seq).await
        }
        ("SET" | "INCR" | "DECR" | "INCRBY" | "DECRBY" | "CAS" | "DEL", _) => {
            return arity_error(name)
        }
        _ => {
            return Reply::error(format!(
                "ERR unknown command '{}'",
                name.to_ascii_lowercase()
            ))
        }
    };
    if let Some(too_large) = op.size_error() {
        return Reply::error(too_large);
    }
    match node.write(Command::new(client_id, seq, op)).await {
        Ok(result) => command_reply(result),
        Err(e) => request_error(e),
    }
}

/// DEL of several keys: one delete each, run together; the reply counts those that existed.
async fn delete_many(keys: &[Bytes], node: &NodeHandle, first_id: u64) -> Reply {
    if let Some(key) = keys.iter().find(|k| k.len() > kv::command::MAX_KEY_LEN) {
        return Reply::error(kv::command::key_too_large(key.len()));
    }
    let deletes: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let node = node.clone();
            let cmd = Command::new(
                SESSIONLESS_CLIENT,
                first_id.wrapping_add(2 * i as u64),
                Op::Delete { key: key.clone() },
            );
            tokio::spawn(async move { node.write(cmd).await })
        })
        .collect();
    let mut existed = 0;
    for d in deletes {
        match d.await {
            Ok(Ok(CommandResult::Deleted { existed: true })) => existed += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return request_error(e),
            Err(_) => return Reply::error("ERR internal error"),
        }
    }
    Reply::Integer(existed)
}

fn command_reply(result: CommandResult) -> Reply {
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
    }
}
