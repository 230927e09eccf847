//! Read-only questions to the state machine: served at a read index by the node that is asked
//! (`GET`, `MGET`, `SCAN`, ...), or carried in the log inside a transaction (`MULTI`), where
//! they see the writes queued before them. Time is the log's ([`crate::state_machine`]), so a
//! key past its deadline is absent on every replica alike.

use bytes::Bytes;

use crate::codec::{self, Reader};
use crate::command::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::error::DecodeError;

/// Most keys one query may name (`MGET`, `EXISTS`, `WATCH`).
pub const MAX_QUERY_KEYS: usize = 1 << 20;
/// Most keys `SCAN` looks at per call, whatever its COUNT.
pub const MAX_SCAN_COUNT: u64 = 100_000;
/// Most keys `KEYS` returns; beyond, it answers an error that points to `SCAN`.
pub const MAX_KEYS_REPLY: usize = 1_000_000;

/// The unit and form of a `TTL`-like answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlForm {
    /// Seconds left (`TTL`).
    Seconds,
    /// Milliseconds left (`PTTL`).
    Millis,
    /// The deadline in Unix seconds (`EXPIRETIME`).
    AtSeconds,
    /// The deadline in Unix milliseconds (`PEXPIRETIME`).
    AtMillis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    Get {
        key: Bytes,
    },
    MGet {
        keys: Vec<Bytes>,
    },
    /// How many of the keys exist (a key named twice counts twice, as in Redis).
    Exists {
        keys: Vec<Bytes>,
    },
    Ttl {
        key: Bytes,
        form: TtlForm,
    },
    StrLen {
        key: Bytes,
    },
    Type {
        key: Bytes,
    },
    DbSize,
    /// Up to `count` keys in hash order from `cursor` (0: the start), those matching the glob
    /// `pattern` kept; the reply names the next cursor (0: done).
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: u64,
    },
    Keys {
        pattern: Bytes,
    },
    /// Each key's watch token, for `WATCH`: its version, or [`crate::state_machine::WATCHED_ABSENT`]
    /// with the index read at if it is absent (`state_machine/watch.rs`).
    Versions {
        keys: Vec<Bytes>,
    },
}

const Q_GET: u8 = 1;
const Q_MGET: u8 = 2;
const Q_EXISTS: u8 = 3;
const Q_TTL: u8 = 4;
const Q_STRLEN: u8 = 5;
const Q_TYPE: u8 = 6;
const Q_DBSIZE: u8 = 7;
const Q_SCAN: u8 = 8;
const Q_KEYS: u8 = 9;
const Q_VERSIONS: u8 = 10;

impl Query {
    pub(crate) fn write_to(&self, b: &mut Vec<u8>) {
        match self {
            Query::Get { key } => key_op(b, Q_GET, key),
            Query::MGet { keys } => keys_op(b, Q_MGET, keys),
            Query::Exists { keys } => keys_op(b, Q_EXISTS, keys),
            Query::Ttl { key, form } => {
                key_op(b, Q_TTL, key);
                b.push(*form as u8);
            }
            Query::StrLen { key } => key_op(b, Q_STRLEN, key),
            Query::Type { key } => key_op(b, Q_TYPE, key),
            Query::DbSize => b.push(Q_DBSIZE),
            Query::Scan {
                cursor,
                pattern,
                count,
            } => {
                b.push(Q_SCAN);
                codec::put_u64(b, *cursor);
                codec::put_opt_bytes(b, pattern.as_deref());
                codec::put_u64(b, *count);
            }
            Query::Keys { pattern } => key_op(b, Q_KEYS, pattern),
            Query::Versions { keys } => keys_op(b, Q_VERSIONS, keys),
        }
    }

    pub(crate) fn read_from(r: &mut Reader) -> Result<Query, DecodeError> {
        let key = |r: &mut Reader| r.bytes("key", MAX_KEY_LEN);
        Ok(match r.u8()? {
            Q_GET => Query::Get { key: key(r)? },
            Q_MGET => Query::MGet { keys: keys(r)? },
            Q_EXISTS => Query::Exists { keys: keys(r)? },
            Q_TTL => Query::Ttl {
                key: key(r)?,
                form: match r.u8()? {
                    0 => TtlForm::Seconds,
                    1 => TtlForm::Millis,
                    2 => TtlForm::AtSeconds,
                    3 => TtlForm::AtMillis,
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "ttl form",
                            tag,
                        })
                    }
                },
            },
            Q_STRLEN => Query::StrLen { key: key(r)? },
            Q_TYPE => Query::Type { key: key(r)? },
            Q_DBSIZE => Query::DbSize,
            Q_SCAN => Query::Scan {
                cursor: r.u64()?,
                pattern: r.opt_bytes("pattern", MAX_VALUE_LEN)?,
                count: r.u64()?,
            },
            Q_KEYS => Query::Keys {
                pattern: r.bytes("pattern", MAX_VALUE_LEN)?,
            },
            Q_VERSIONS => Query::Versions { keys: keys(r)? },
            tag => return Err(DecodeError::UnknownTag { what: "query", tag }),
        })
    }
}

fn key_op(b: &mut Vec<u8>, tag: u8, key: &[u8]) {
    b.push(tag);
    codec::put_bytes(b, key);
}

fn keys_op(b: &mut Vec<u8>, tag: u8, keys: &[Bytes]) {
    b.push(tag);
    put_keys(b, keys);
}

pub(crate) fn put_keys(b: &mut Vec<u8>, keys: &[Bytes]) {
    b.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for k in keys {
        codec::put_bytes(b, k);
    }
}

/// A list of keys; its count is checked against what the input can hold before anything is
/// allocated (each key takes at least its 4-byte length).
pub(crate) fn keys(r: &mut Reader) -> Result<Vec<Bytes>, DecodeError> {
    let n = r.u32()? as usize;
    if n > MAX_QUERY_KEYS || n > r.remaining() / 4 {
        return Err(DecodeError::TooLong {
            what: "key list",
            len: n as u64,
            max: (r.remaining() / 4).min(MAX_QUERY_KEYS) as u64,
        });
    }
    (0..n).map(|_| r.bytes("key", MAX_KEY_LEN)).collect()
}
