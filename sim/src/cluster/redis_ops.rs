//! The workload's Redis commands beyond one key's GET/SET/DEL/INCR/CAS: operations on several
//! keys at once (MGET, MSET, MULTI/EXEC transactions, SCAN) on the group keys `t0..t3`, and
//! writes with a time to live (SET PX, a `SET NX PX` lock, SET XX) on the volatile keys `e0..e2`.
//! Each becomes one history operation the checker models (`Op::Atomic`, `Op::SetWith`).

use net::client::{ClientError, KvClient};
use net::resp::Reply;
use rand::Rng;

use crate::history::{Key, Observed, Op, Outcome, SetCond};
use crate::net::TurmoilNet;
use crate::rng::{self, SimRng};

/// Keys that atomic operations tie together: the checker sees them as one object.
const GROUP_KEYS: usize = 4;
/// Keys written with a time to live.
const VOLATILE_KEYS: usize = 3;
/// The pattern that lists the group keys, and the name their SCAN has in the history.
const GROUP_PATTERN: &[u8] = b"t*";

pub(super) fn group_keys() -> Vec<Key> {
    (0..GROUP_KEYS)
        .map(|k| format!("t{k}").into_bytes())
        .collect()
}

pub(super) fn volatile_keys() -> Vec<Key> {
    (0..VOLATILE_KEYS)
        .map(|k| format!("e{k}").into_bytes())
        .collect()
}

/// Which Redis command carries an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Via {
    /// The single-key command of the operation.
    Command,
    MGet,
    MSet,
    /// MULTI, the parts' commands, EXEC.
    Multi,
    /// One SCAN call over the group keys, asked for all of them at once.
    Scan,
}

/// A random operation on the group keys; `unique` draws a value never written before.
pub(super) fn pick_group(rng: &mut SimRng, unique: &mut impl FnMut() -> Vec<u8>) -> (Key, Op, Via) {
    let keys = group_keys();
    let some_keys = |rng: &mut SimRng, at_least: usize| {
        let mut ks = keys.clone();
        rng::shuffle(rng, &mut ks);
        ks.truncate(rng.gen_range(at_least..=GROUP_KEYS));
        ks
    };
    match rng.gen_range(0..100) {
        0..=24 => {
            let parts = some_keys(rng, 2)
                .into_iter()
                .map(|k| (k, Op::Get))
                .collect();
            (GROUP_PATTERN.to_vec(), Op::Atomic(parts), Via::MGet)
        }
        25..=44 => {
            let parts = some_keys(rng, 2)
                .into_iter()
                .take(3)
                .map(|k| (k, Op::Set(unique())))
                .collect();
            (GROUP_PATTERN.to_vec(), Op::Atomic(parts), Via::MSet)
        }
        45..=79 => {
            let n = rng.gen_range(2..=3);
            let parts = (0..n)
                .map(|_| {
                    let key = keys[rng::index(rng, GROUP_KEYS)].clone();
                    (key, transaction_part(rng, unique))
                })
                .collect();
            (GROUP_PATTERN.to_vec(), Op::Atomic(parts), Via::Multi)
        }
        80..=89 => {
            let parts = keys.into_iter().map(|k| (k, Op::Exists)).collect();
            (GROUP_PATTERN.to_vec(), Op::Atomic(parts), Via::Scan)
        }
        _ => {
            let key = keys[rng::index(rng, GROUP_KEYS)].clone();
            let op = match rng.gen_range(0..3) {
                0 => Op::Get,
                1 => Op::Set(unique()),
                _ => Op::Incr(rng.gen_range(1..=5)),
            };
            (key, op, Via::Command)
        }
    }
}

fn transaction_part(rng: &mut SimRng, unique: &mut impl FnMut() -> Vec<u8>) -> Op {
    match rng.gen_range(0..100) {
        0..=29 => Op::Get,
        30..=54 => Op::Set(unique()),
        55..=74 => Op::Incr(rng.gen_range(1..=5)),
        75..=87 => Op::Delete,
        _ => Op::SetWith {
            value: unique(),
            cond: Some(SetCond::IfAbsent),
            ttl_ms: None,
        },
    }
}

/// A random operation on a volatile key: writes with a time to live of 10 to 500 ms (a lock
/// taken with `SET NX PX` among them), reads and deletes.
pub(super) fn pick_volatile(
    rng: &mut SimRng,
    unique: &mut impl FnMut() -> Vec<u8>,
) -> (Key, Op, Via) {
    let key = volatile_keys()[rng::index(rng, VOLATILE_KEYS)].clone();
    let ttl_ms = Some(rng.gen_range(10..=500));
    let op = match rng.gen_range(0..100) {
        0..=29 => Op::SetWith {
            value: unique(),
            cond: None,
            ttl_ms,
        },
        30..=49 => Op::SetWith {
            value: unique(),
            cond: Some(SetCond::IfAbsent),
            ttl_ms,
        },
        50..=59 => Op::SetWith {
            value: unique(),
            cond: Some(SetCond::IfPresent),
            ttl_ms,
        },
        60..=89 => Op::Get,
        _ => Op::Delete,
    };
    (key, op, Via::Command)
}

/// Runs an operation carried by something else than its single-key command (`Via::Command`
/// is the caller's). `None` if `op` is not one of them.
pub(super) async fn execute_redis(
    client: &mut KvClient<TurmoilNet>,
    key: &[u8],
    op: &Op,
    via: Via,
) -> Option<Outcome> {
    let is_write = !op.is_read();
    let result = match (op, via) {
        (
            Op::SetWith {
                value,
                cond,
                ttl_ms,
            },
            Via::Command,
        ) => set_with(client, key, value, *cond, *ttl_ms).await,
        (Op::Atomic(parts), Via::MGet) => mget(client, parts).await,
        (Op::Atomic(parts), Via::MSet) => mset(client, parts).await,
        (Op::Atomic(parts), Via::Multi) => multi(client, parts).await,
        (Op::Atomic(parts), Via::Scan) => return Some(scan(client, parts).await),
        _ => return None,
    };
    Some(outcome_of(result, is_write))
}

/// Turns the client's answer into a history outcome.
pub(super) fn outcome_of(result: Result<Observed, ClientError>, is_write: bool) -> Outcome {
    match result {
        Ok(observed) => Outcome::Ok(observed),
        Err(ClientError::Unavailable { maybe_applied, .. }) if is_write && maybe_applied => {
            Outcome::Unknown
        }
        Err(ClientError::Unavailable { .. }) => Outcome::Failed,
        // The server refused the command (it took no effect) or answered oddly.
        Err(ClientError::Server(_)) => Outcome::Failed,
        Err(ClientError::Protocol(_)) if is_write => Outcome::Unknown,
        Err(ClientError::Protocol(_)) => Outcome::Failed,
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("{reply:?}"))
}

async fn set_with(
    client: &mut KvClient<TurmoilNet>,
    key: &[u8],
    value: &[u8],
    cond: Option<SetCond>,
    ttl_ms: Option<u64>,
) -> Result<Observed, ClientError> {
    let ttl = ttl_ms.map(|ms| ms.to_string());
    let mut args: Vec<&[u8]> = vec![b"SET", key, value];
    match cond {
        Some(SetCond::IfAbsent) => args.push(b"NX"),
        Some(SetCond::IfPresent) => args.push(b"XX"),
        None => {}
    }
    if let Some(ms) = &ttl {
        args.extend([b"PX".as_slice(), ms.as_bytes()]);
    }
    let reply = client.call(&args, true).await?;
    set_reply(&reply, cond.is_some())
}

/// SET's answer: OK when written; with a condition, a nil when not.
fn set_reply(reply: &Reply, conditional: bool) -> Result<Observed, ClientError> {
    match (reply, conditional) {
        (Reply::Simple(_), false) => Ok(Observed::Done),
        (Reply::Simple(_), true) => Ok(Observed::Swapped(true)),
        (Reply::Nil, true) => Ok(Observed::Swapped(false)),
        (other, _) => Err(unexpected(other)),
    }
}

fn value_reply(reply: &Reply) -> Result<Observed, ClientError> {
    match reply {
        Reply::Bulk(v) => Ok(Observed::Value(Some(v.to_vec()))),
        Reply::Nil => Ok(Observed::Value(None)),
        other => Err(unexpected(other)),
    }
}

async fn mget(
    client: &mut KvClient<TurmoilNet>,
    parts: &[(Key, Op)],
) -> Result<Observed, ClientError> {
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(parts.iter().map(|(k, _)| k.as_slice()));
    match client.call(&args, false).await? {
        Reply::Array(values) if values.len() == parts.len() => Ok(Observed::Results(
            values.iter().map(value_reply).collect::<Result<_, _>>()?,
        )),
        other => Err(unexpected(&other)),
    }
}

async fn mset(
    client: &mut KvClient<TurmoilNet>,
    parts: &[(Key, Op)],
) -> Result<Observed, ClientError> {
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for (k, op) in parts {
        let Op::Set(v) = op else {
            return Err(ClientError::Protocol(format!("MSET of {op:?}")));
        };
        args.extend([k.as_slice(), v.as_slice()]);
    }
    match client.call(&args, true).await? {
        Reply::Simple(_) => Ok(Observed::Results(vec![Observed::Done; parts.len()])),
        other => Err(unexpected(&other)),
    }
}

/// A part's command in a transaction, and how to read its answer in EXEC's array.
fn part_command(key: &[u8], op: &Op) -> Option<Vec<Vec<u8>>> {
    let k = key.to_vec();
    Some(match op {
        Op::Get => vec![b"GET".to_vec(), k],
        Op::Set(v) => vec![b"SET".to_vec(), k, v.clone()],
        Op::Incr(by) => vec![b"INCRBY".to_vec(), k, by.to_string().into_bytes()],
        Op::Delete => vec![b"DEL".to_vec(), k],
        Op::SetWith {
            value,
            cond: Some(SetCond::IfAbsent),
            ttl_ms: None,
        } => vec![b"SET".to_vec(), k, value.clone(), b"NX".to_vec()],
        _ => return None,
    })
}

fn part_reply(op: &Op, reply: &Reply) -> Result<Observed, ClientError> {
    match (op, reply) {
        (Op::Get, r) => value_reply(r),
        (Op::Set(_), Reply::Simple(_)) => Ok(Observed::Done),
        (Op::Incr(_), Reply::Integer(n)) => Ok(Observed::Int(*n)),
        (Op::Delete, Reply::Integer(n)) => Ok(Observed::Existed(*n == 1)),
        (Op::SetWith { cond, .. }, r) => set_reply(r, cond.is_some()),
        // A command that failed inside EXEC: the others ran, which the model cannot express;
        // the workload's commands never fail this way.
        (_, other) => Err(unexpected(other)),
    }
}

async fn multi(
    client: &mut KvClient<TurmoilNet>,
    parts: &[(Key, Op)],
) -> Result<Observed, ClientError> {
    let commands = parts
        .iter()
        .map(|(k, op)| part_command(k, op))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ClientError::Protocol("a part no transaction carries".into()))?;
    let commands: Vec<Vec<&[u8]>> = commands
        .iter()
        .map(|c| c.iter().map(Vec::as_slice).collect())
        .collect();
    let replies = client.transaction(&commands).await?;
    let results = parts
        .iter()
        .zip(&replies)
        .map(|((_, op), r)| part_reply(op, r))
        .collect::<Result<_, _>>()?;
    Ok(Observed::Results(results))
}

/// One SCAN call asked for every group key. Only a call that finishes the iteration (cursor 0)
/// saw the group at one moment; another answer constrains nothing and counts as failed.
async fn scan(client: &mut KvClient<TurmoilNet>, parts: &[(Key, Op)]) -> Outcome {
    let args: [&[u8]; 6] = [b"SCAN", b"0", b"MATCH", GROUP_PATTERN, b"COUNT", b"1000"];
    let reply = match client.call(&args, false).await {
        Ok(reply) => reply,
        Err(e) => return outcome_of(Err(e), false),
    };
    let Reply::Array(items) = reply else {
        return Outcome::Failed;
    };
    let (Some(Reply::Bulk(cursor)), Some(Reply::Array(listed))) = (items.first(), items.get(1))
    else {
        return Outcome::Failed;
    };
    if cursor.as_ref() != b"0" {
        return Outcome::Failed;
    }
    let listed: Vec<&[u8]> = listed
        .iter()
        .filter_map(|r| match r {
            Reply::Bulk(k) => Some(k.as_ref()),
            _ => None,
        })
        .collect();
    let results = parts
        .iter()
        .map(|(k, _)| Observed::Existed(listed.contains(&k.as_slice())))
        .collect();
    Outcome::Ok(Observed::Results(results))
}
