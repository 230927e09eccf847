//! Client commands, as carried in the payload of Raft entries, and their results.
//!
//! The original notes used a text format (`type|key|value|...`), which breaks as soon as a key
//! contains `|`. This format is binary and length-prefixed, so any bytes round-trip, and it is
//! versioned and checksummed, because a payload read back from disk or received from a peer may
//! be damaged and must be rejected rather than applied as something else.
//!
//! Frame: `version: u8 | body_len: u32 LE | body | crc32(version, body_len, body): u32 LE`.
//! Body: `client_id: u64 | seq: u64 | op tag: u8 | op fields`, byte strings as `len: u32 | bytes`,
//! optional byte strings as `0` or `1 | len | bytes`.

use bytes::Bytes;

use crate::codec::{self, Reader};
use crate::error::DecodeError;
use crate::query::Query;

/// The only command encoding version so far.
pub const COMMAND_VERSION: u8 = 1;
/// Largest key accepted by the decoder. Keys are not small in every workload, but a bound keeps a
/// hostile length field from asking for gigabytes.
pub const MAX_KEY_LEN: usize = 4 << 20;
/// Largest value accepted by the decoder.
pub const MAX_VALUE_LEN: usize = 32 << 20;
/// Largest encoded command (or result) accepted by the decoder.
pub const MAX_COMMAND_LEN: usize = 2 * MAX_VALUE_LEN + MAX_KEY_LEN + 64;

/// One client request. `(client_id, seq)` names it uniquely: a retry carries the same pair, and
/// the state machine applies each pair at most once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub client_id: u64,
    pub seq: u64,
    pub op: Op,
}

/// What a command does to the key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Set {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// Compare-and-set: if the current value equals `expected` (`None`: the key must be absent),
    /// store `new` (`None`: delete the key).
    Cas {
        key: Bytes,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    },
    /// Adds `by` to the value, read as a decimal `i64` (absent counts as 0), as Redis INCRBY does.
    Incr {
        key: Bytes,
        by: i64,
    },
    /// Does nothing but take a slot in the client's session (used to open or probe a session).
    Noop,
    /// `SET` with its options (and `SETNX`, `SETEX`, `PSETEX`, `GETSET`).
    SetWith {
        key: Bytes,
        value: Bytes,
        condition: SetCondition,
        deadline: Deadline,
        /// Answer the previous value (`GET`) instead of OK.
        get: bool,
    },
    GetDel {
        key: Bytes,
    },
    /// `DEL`/`UNLINK` of any number of keys: the reply counts those that existed.
    DeleteMany {
        keys: Vec<Bytes>,
    },
    /// `MSET`, or with `if_none_exist` `MSETNX` (all or nothing).
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
        if_none_exist: bool,
    },
    Append {
        key: Bytes,
        value: Bytes,
    },
    /// `EXPIRE` and its kin; `Deadline::None` is `PERSIST`.
    Expire {
        key: Bytes,
        deadline: Deadline,
        condition: ExpireCondition,
    },
    Rename {
        from: Bytes,
        to: Bytes,
        if_absent: bool,
    },
    /// `FLUSHALL`/`FLUSHDB`.
    FlushAll,
    /// `MULTI ... EXEC`: applied as one, after checking that no watched key was touched since
    /// `Query::Versions` gave its token (else nothing is applied: [`CommandResult::Aborted`]).
    Multi {
        watches: Vec<(Bytes, u64)>,
        ops: Vec<Op>,
    },
    /// A read inside a transaction.
    Query(Query),
    /// Takes the next unused range id from the first range's counter (answered as
    /// [`CommandResult::Value`]); any other range refuses it.
    AllocateRangeId,
    /// Splits the range it names ([`crate::ranges::Split`]), answered with
    /// [`CommandResult::Split`] or refused with [`CommandResult::Error`].
    Split(crate::ranges::Split),
}

/// When a `SET` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetCondition {
    Always,
    /// `NX`
    IfAbsent,
    /// `XX`
    IfPresent,
}

/// The deadline a write gives its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// No deadline (a plain `SET` clears one; `PERSIST`).
    None,
    /// Keep the key's deadline (`KEEPTTL`).
    Keep,
    /// Milliseconds after the log time at which the entry applies (`EX`, `PX`).
    In(u64),
    /// At this Unix time in milliseconds (`EXAT`, `PXAT`).
    At(u64),
}

/// When an `EXPIRE` applies (Redis 7's options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpireCondition {
    Always,
    /// `NX`: only if the key has no deadline.
    IfNone,
    /// `XX`: only if it has one.
    IfSome,
    /// `GT`: only if the new deadline is later (no deadline counts as infinitely late).
    IfLater,
    /// `LT`: only if the new deadline is earlier.
    IfEarlier,
    /// `XX LT`: only if the key has a deadline and the new one is earlier (`LT` alone also
    /// passes for a key without one).
    IfSomeAndEarlier,
}

impl Op {
    /// Why the state machine could not apply this operation (a key over [`MAX_KEY_LEN`] or a
    /// value over [`MAX_VALUE_LEN`]), in Redis's words; `None` if it can. Checked at the door,
    /// before anything is proposed: an entry that does not decode is skipped by every replica,
    /// and its client would only learn so from a timeout.
    pub fn size_error(&self) -> Option<String> {
        let mut keys: Vec<&Bytes> = Vec::new();
        let mut values: Vec<&Bytes> = Vec::new();
        self.visit_strings(&mut keys, &mut values);
        if let Some(key) = keys.iter().find(|k| k.len() > MAX_KEY_LEN) {
            return Some(key_too_large(key.len()));
        }
        if values.iter().any(|v| v.len() > MAX_VALUE_LEN) {
            return Some(format!("ERR string exceeds maximum allowed size (proto-max-bulk-len: values up to {MAX_VALUE_LEN} bytes)"));
        }
        let total: usize = keys.iter().chain(values.iter()).map(|b| b.len() + 8).sum();
        (total > MAX_COMMAND_LEN - 64).then(|| {
            format!("ERR request too large: {total} bytes of keys and values in one command (up to {} bytes)", MAX_COMMAND_LEN - 64)
        })
    }

    pub(crate) fn visit_strings<'a>(
        &'a self,
        keys: &mut Vec<&'a Bytes>,
        values: &mut Vec<&'a Bytes>,
    ) {
        match self {
            Op::Set { key, value } | Op::SetWith { key, value, .. } | Op::Append { key, value } => {
                keys.push(key);
                values.push(value);
            }
            Op::Delete { key }
            | Op::Incr { key, .. }
            | Op::GetDel { key }
            | Op::Expire { key, .. } => keys.push(key),
            Op::Cas { key, expected, new } => {
                keys.push(key);
                values.extend(expected.iter().chain(new.iter()));
            }
            Op::DeleteMany { keys: ks } => keys.extend(ks),
            Op::MSet { pairs, .. } => {
                for (k, v) in pairs {
                    keys.push(k);
                    values.push(v);
                }
            }
            Op::Rename { from, to, .. } => keys.extend([from, to]),
            Op::Multi { watches, ops } => {
                keys.extend(watches.iter().map(|(k, _)| k));
                for op in ops {
                    op.visit_strings(keys, values);
                }
            }
            Op::Query(q) => q.visit_keys(keys),
            // The split key names no row to read or write: it is a bound.
            Op::Noop | Op::FlushAll | Op::AllocateRangeId | Op::Split(_) => {}
        }
    }
}

/// The error for a key of `len` bytes, over [`MAX_KEY_LEN`].
pub fn key_too_large(len: usize) -> String {
    format!("ERR key exceeds maximum allowed size ({len} bytes; keys up to {MAX_KEY_LEN} bytes)")
}

const OP_SET: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CAS: u8 = 3;
const OP_INCR: u8 = 4;
const OP_NOOP: u8 = 5;
pub(crate) const OP_SET_WITH: u8 = 6;
pub(crate) const OP_GETDEL: u8 = 7;
pub(crate) const OP_DELETE_MANY: u8 = 8;
pub(crate) const OP_MSET: u8 = 9;
pub(crate) const OP_APPEND: u8 = 10;
pub(crate) const OP_EXPIRE: u8 = 11;
pub(crate) const OP_RENAME: u8 = 12;
pub(crate) const OP_FLUSHALL: u8 = 13;
pub(crate) const OP_MULTI: u8 = 14;
pub(crate) const OP_QUERY: u8 = 15;
pub(crate) const OP_ALLOCATE_RANGE_ID: u8 = 16;
pub(crate) const OP_SPLIT: u8 = 17;

impl Command {
    pub fn new(client_id: u64, seq: u64, op: Op) -> Self {
        Self { client_id, seq, op }
    }

    /// The first key this command touches, if any.
    pub fn key(&self) -> Option<&Bytes> {
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        self.op.visit_strings(&mut keys, &mut values);
        keys.first().copied()
    }

    pub fn encode(&self) -> Bytes {
        let mut body = Vec::with_capacity(32 + self.payload_hint());
        codec::put_u64(&mut body, self.client_id);
        codec::put_u64(&mut body, self.seq);
        self.op.write_to(&mut body);
        frame(&body)
    }

    fn payload_hint(&self) -> usize {
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        self.op.visit_strings(&mut keys, &mut values);
        keys.iter().chain(values.iter()).map(|b| b.len() + 8).sum()
    }

    /// Decodes a command. Any input, however hostile, yields either a command or an error; the
    /// key and value share `buf`'s memory.
    pub fn decode(buf: &Bytes) -> Result<Command, DecodeError> {
        let mut r = Reader::new(unframe(buf)?);
        let client_id = r.u64()?;
        let seq = r.u64()?;
        let op = Op::read_from(&mut r, true)?;
        r.finish()?;
        Ok(Command { client_id, seq, op })
    }
}

impl Op {
    pub(crate) fn write_to(&self, body: &mut Vec<u8>) {
        match self {
            Op::Set { key, value } => {
                body.push(OP_SET);
                codec::put_bytes(body, key);
                codec::put_bytes(body, value);
            }
            Op::Delete { key } => {
                body.push(OP_DELETE);
                codec::put_bytes(body, key);
            }
            Op::Cas { key, expected, new } => {
                body.push(OP_CAS);
                codec::put_bytes(body, key);
                codec::put_opt_bytes(body, expected.as_deref());
                codec::put_opt_bytes(body, new.as_deref());
            }
            Op::Incr { key, by } => {
                body.push(OP_INCR);
                codec::put_bytes(body, key);
                body.extend_from_slice(&by.to_le_bytes());
            }
            Op::Noop => body.push(OP_NOOP),
            other => crate::command_ops::write_op(other, body),
        }
    }

    /// Reads an op; a transaction's ops (`nested_ok` false) may not be transactions.
    pub(crate) fn read_from(r: &mut Reader, nested_ok: bool) -> Result<Op, DecodeError> {
        Ok(match r.u8()? {
            OP_SET => Op::Set {
                key: r.bytes("key", MAX_KEY_LEN)?,
                value: r.bytes("value", MAX_VALUE_LEN)?,
            },
            OP_DELETE => Op::Delete {
                key: r.bytes("key", MAX_KEY_LEN)?,
            },
            OP_CAS => Op::Cas {
                key: r.bytes("key", MAX_KEY_LEN)?,
                expected: r.opt_bytes("expected value", MAX_VALUE_LEN)?,
                new: r.opt_bytes("new value", MAX_VALUE_LEN)?,
            },
            OP_INCR => Op::Incr {
                key: r.bytes("key", MAX_KEY_LEN)?,
                by: r.u64()? as i64,
            },
            OP_NOOP => Op::Noop,
            tag => return crate::command_ops::read_op(tag, r, nested_ok),
        })
    }
}

/// Wraps a body in the versioned, length-prefixed, checksummed frame.
fn frame(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + 9);
    out.push(COMMAND_VERSION);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    codec::seal(&mut out);
    Bytes::from(out)
}

/// Checks a frame and returns its body, sharing `buf`'s memory.
fn unframe(buf: &Bytes) -> Result<Bytes, DecodeError> {
    if buf.len() < 9 {
        return Err(DecodeError::Truncated {
            needed: 9,
            have: buf.len(),
        });
    }
    if buf.len() > MAX_COMMAND_LEN + 9 {
        return Err(DecodeError::TooLong {
            what: "command",
            len: buf.len() as u64,
            max: (MAX_COMMAND_LEN + 9) as u64,
        });
    }
    // The checksum covers the version byte too, so check it first: a damaged version byte is
    // reported as damage, not as a frame from the future.
    codec::unseal(buf)?;
    if buf[0] != COMMAND_VERSION {
        return Err(DecodeError::UnknownVersion(buf[0]));
    }
    let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len != buf.len() - 9 {
        return Err(DecodeError::Invalid(
            "length prefix does not match frame size",
        ));
    }
    Ok(buf.slice(5..5 + len))
}

/// The outcome of applying one command; cached in the client's session so that a retry gets the
/// very same answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandResult {
    /// Set or Noop done.
    Ok,
    /// Delete done; whether the key existed.
    Deleted { existed: bool },
    /// Compare-and-set matched and was applied.
    CasOk,
    /// Compare-and-set did not match; nothing changed. `current` is the value found.
    CasFailed { current: Option<Bytes> },
    /// Incr done; the new value.
    Value(i64),
    /// The command was valid but could not be applied (for example Incr on a non-integer); no
    /// change was made.
    Error(String),
    /// A sequence number lower than the client's last applied one: an old retry that arrived
    /// late. It was not applied, and its original result is no longer kept.
    Stale { last_seq: u64 },
    /// No value (Redis's null bulk string).
    Nil,
    /// A value.
    Bulk(Bytes),
    /// Several results (MGET, SCAN, EXEC).
    Array(Vec<CommandResult>),
    /// A status word (`TYPE`'s "string", "none").
    Status(String),
    /// A transaction that was not applied because a watched key changed (EXEC's null array).
    Aborted,
    /// Not applied: a key the command names is not inside the bounds of the range that applied
    /// it (`crate::ranges`). The range's id and epoch at that point let the client layer learn
    /// the newer descriptors and send the command to the key's owner.
    NotOwned {
        range: crate::ranges::RangeId,
        epoch: u64,
    },
    /// A split applied: the parent's new bounds (`left`, same id) and the new range's
    /// (`right`).
    Split {
        left: crate::ranges::RangeDescriptor,
        right: crate::ranges::RangeDescriptor,
    },
}

const RES_OK: u8 = 1;
const RES_DELETED: u8 = 2;
const RES_CAS_OK: u8 = 3;
const RES_CAS_FAILED: u8 = 4;
const RES_VALUE: u8 = 5;
const RES_ERROR: u8 = 6;
const RES_STALE: u8 = 7;
const RES_NIL: u8 = 8;
const RES_BULK: u8 = 9;
const RES_ARRAY: u8 = 10;
const RES_STATUS: u8 = 11;
const RES_ABORTED: u8 = 12;
/// Added with key ranges: a tag older versions never wrote, so every older encoding (a session's
/// cached result on disk) still decodes as it did.
const RES_NOT_OWNED: u8 = 13;
/// Added with the split command, likewise.
const RES_SPLIT: u8 = 14;
/// Arrays nest at most this deep (EXEC of SCAN: three levels).
const MAX_RESULT_DEPTH: usize = 4;

impl CommandResult {
    /// Same frame as commands: versioned, length-prefixed, checksummed.
    pub fn encode(&self) -> Bytes {
        let mut body = Vec::new();
        self.write_to(&mut body);
        frame(&body)
    }

    /// The encoded size, without encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            CommandResult::CasFailed { current } => 6 + current.as_ref().map_or(0, |c| c.len()),
            CommandResult::Error(m) | CommandResult::Status(m) => 5 + m.len(),
            CommandResult::Bulk(b) => 5 + b.len(),
            CommandResult::Array(items) => 5 + items.iter().map(Self::encoded_len).sum::<usize>(),
            CommandResult::NotOwned { .. } => 17,
            CommandResult::Split { left, right } => {
                1 + crate::command_ops::descriptor_len(left)
                    + crate::command_ops::descriptor_len(right)
            }
            _ => 9,
        }
    }

    pub(crate) fn write_to(&self, body: &mut Vec<u8>) {
        match self {
            CommandResult::Ok => body.push(RES_OK),
            CommandResult::Deleted { existed } => {
                body.push(RES_DELETED);
                body.push(u8::from(*existed));
            }
            CommandResult::CasOk => body.push(RES_CAS_OK),
            CommandResult::CasFailed { current } => {
                body.push(RES_CAS_FAILED);
                codec::put_opt_bytes(body, current.as_deref());
            }
            CommandResult::Value(v) => {
                body.push(RES_VALUE);
                body.extend_from_slice(&v.to_le_bytes());
            }
            CommandResult::Error(msg) => {
                body.push(RES_ERROR);
                codec::put_bytes(body, msg.as_bytes());
            }
            CommandResult::Stale { last_seq } => {
                body.push(RES_STALE);
                codec::put_u64(body, *last_seq);
            }
            CommandResult::Nil => body.push(RES_NIL),
            CommandResult::Bulk(b) => {
                body.push(RES_BULK);
                codec::put_bytes(body, b);
            }
            CommandResult::Array(items) => {
                body.push(RES_ARRAY);
                body.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for item in items {
                    item.write_to(body);
                }
            }
            CommandResult::Status(m) => {
                body.push(RES_STATUS);
                codec::put_bytes(body, m.as_bytes());
            }
            CommandResult::Aborted => body.push(RES_ABORTED),
            CommandResult::NotOwned { range, epoch } => {
                body.push(RES_NOT_OWNED);
                codec::put_u64(body, *range);
                codec::put_u64(body, *epoch);
            }
            CommandResult::Split { left, right } => {
                body.push(RES_SPLIT);
                crate::command_ops::put_descriptor(body, left);
                crate::command_ops::put_descriptor(body, right);
            }
        }
    }

    pub fn decode(buf: &Bytes) -> Result<CommandResult, DecodeError> {
        let mut r = Reader::new(unframe(buf)?);
        let res = Self::read_from(&mut r, 0)?;
        r.finish()?;
        Ok(res)
    }

    fn read_from(r: &mut Reader, depth: usize) -> Result<CommandResult, DecodeError> {
        let text = |r: &mut Reader, what| {
            String::from_utf8(r.bytes(what, MAX_VALUE_LEN)?.to_vec())
                .map_err(|_| DecodeError::Invalid("text is not UTF-8"))
        };
        Ok(match r.u8()? {
            RES_OK => CommandResult::Ok,
            RES_DELETED => match r.u8()? {
                0 => CommandResult::Deleted { existed: false },
                1 => CommandResult::Deleted { existed: true },
                _ => return Err(DecodeError::Invalid("existed flag is not 0 or 1")),
            },
            RES_CAS_OK => CommandResult::CasOk,
            RES_CAS_FAILED => CommandResult::CasFailed {
                current: r.opt_bytes("current value", MAX_VALUE_LEN)?,
            },
            RES_VALUE => CommandResult::Value(r.u64()? as i64),
            RES_ERROR => CommandResult::Error(text(r, "error message")?),
            RES_STALE => CommandResult::Stale { last_seq: r.u64()? },
            RES_NIL => CommandResult::Nil,
            RES_BULK => CommandResult::Bulk(r.bytes("value", MAX_VALUE_LEN)?),
            RES_ARRAY if depth < MAX_RESULT_DEPTH => {
                let n = r.u32()? as usize;
                if n > r.remaining() {
                    return Err(DecodeError::TooLong {
                        what: "result array",
                        len: n as u64,
                        max: r.remaining() as u64,
                    });
                }
                CommandResult::Array(
                    (0..n)
                        .map(|_| Self::read_from(r, depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            }
            RES_ARRAY => return Err(DecodeError::Invalid("result arrays nested too deep")),
            RES_STATUS => CommandResult::Status(text(r, "status")?),
            RES_ABORTED => CommandResult::Aborted,
            RES_NOT_OWNED => CommandResult::NotOwned {
                range: r.u64()?,
                epoch: r.u64()?,
            },
            RES_SPLIT => CommandResult::Split {
                left: crate::command_ops::read_descriptor(r)?,
                right: crate::command_ops::read_descriptor(r)?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "result",
                    tag,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn oversized_keys_and_values_are_refused_before_they_are_proposed() {
        let at = |n: usize| Bytes::from(vec![b'k'; n]);
        let set = |k: usize, v: usize| Op::Set {
            key: at(k),
            value: at(v),
        };
        assert_eq!(set(MAX_KEY_LEN, MAX_VALUE_LEN).size_error(), None);
        assert!(set(MAX_KEY_LEN + 1, 1)
            .size_error()
            .unwrap()
            .contains("key exceeds"));
        assert!(set(1, MAX_VALUE_LEN + 1)
            .size_error()
            .unwrap()
            .starts_with("ERR string exceeds maximum allowed size"));
        let cas = Op::Cas {
            key: at(1),
            expected: Some(at(MAX_VALUE_LEN + 1)),
            new: None,
        };
        assert!(cas.size_error().is_some());
        // What passes the check decodes again: nothing proposed is left unapplied.
        let fits = Command::new(7, 1, set(MAX_KEY_LEN, MAX_VALUE_LEN));
        assert!(Command::decode(&fits.encode()).is_ok());
    }

    use super::*;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            Just(Bytes::new()),
            Just(Bytes::from_static(b"a|b|c")),
            Just(Bytes::from_static(b"|")),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (arb_bytes(), arb_bytes()).prop_map(|(key, value)| Op::Set { key, value }),
            arb_bytes().prop_map(|key| Op::Delete { key }),
            (
                arb_bytes(),
                proptest::option::of(arb_bytes()),
                proptest::option::of(arb_bytes())
            )
                .prop_map(|(key, expected, new)| Op::Cas { key, expected, new }),
            (arb_bytes(), any::<i64>()).prop_map(|(key, by)| Op::Incr { key, by }),
            Just(Op::Noop),
        ]
    }

    fn arb_result() -> impl Strategy<Value = CommandResult> {
        prop_oneof![
            Just(CommandResult::Ok),
            any::<bool>().prop_map(|existed| CommandResult::Deleted { existed }),
            Just(CommandResult::CasOk),
            proptest::option::of(arb_bytes())
                .prop_map(|current| CommandResult::CasFailed { current }),
            any::<i64>().prop_map(CommandResult::Value),
            ".*".prop_map(CommandResult::Error),
            any::<u64>().prop_map(|last_seq| CommandResult::Stale { last_seq }),
        ]
    }

    proptest! {
        #[test]
        fn command_round_trips(client_id in any::<u64>(), seq in any::<u64>(), op in arb_op()) {
            let c = Command::new(client_id, seq, op);
            prop_assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }

        #[test]
        fn result_round_trips(r in arb_result()) {
            prop_assert_eq!(CommandResult::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let b = Bytes::from(data);
            let _ = Command::decode(&b);
            let _ = CommandResult::decode(&b);
        }

        /// Mutating an encoded command anywhere is caught (by the CRC, or the framing).
        #[test]
        fn any_damage_is_rejected(op in arb_op(), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut enc = Command::new(7, 9, op).encode().to_vec();
            let i = pos.index(enc.len());
            enc[i] ^= flip;
            prop_assert!(Command::decode(&Bytes::from(enc)).is_err());
        }

        /// Arbitrary bytes behind a valid frame exercise the body parser, which the CRC would
        /// otherwise shield from random input.
        #[test]
        fn arbitrary_bodies_in_valid_frames_never_panic(body in proptest::collection::vec(any::<u8>(), 0..128)) {
            let f = frame(&body);
            let _ = Command::decode(&f);
            let _ = CommandResult::decode(&f);
        }

        #[test]
        fn truncation_is_rejected(op in arb_op(), cut in any::<prop::sample::Index>()) {
            let enc = Command::new(1, 2, op).encode();
            let n = cut.index(enc.len());
            prop_assert!(Command::decode(&enc.slice(..n)).is_err());
        }
    }

    #[test]
    fn big_and_odd_keys_round_trip() {
        let mib = Bytes::from(vec![b'|'; 1 << 20]);
        for key in [Bytes::new(), Bytes::from_static(b"|"), mib.clone()] {
            for value in [Bytes::new(), Bytes::from_static(b"x|y"), mib.clone()] {
                let c = Command::new(
                    1,
                    1,
                    Op::Set {
                        key: key.clone(),
                        value,
                    },
                );
                assert_eq!(Command::decode(&c.encode()).unwrap(), c);
            }
        }
    }

    #[test]
    fn hostile_length_does_not_allocate() {
        // A valid frame whose body claims a 4 GiB key: rejected by bounds, not by an allocation.
        let mut body = vec![0u8; 16];
        body.push(OP_SET);
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = Command::decode(&frame(&body)).unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
        let mut body = vec![0u8; 16];
        body.push(OP_SET);
        body.extend_from_slice(&1000u32.to_le_bytes());
        let err = Command::decode(&frame(&body)).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
    }

    #[test]
    fn unknown_version_is_reported() {
        let mut enc = Command::new(1, 1, Op::Noop).encode().to_vec();
        enc[0] = 9;
        let n = enc.len();
        enc.truncate(n - 4);
        codec::seal(&mut enc);
        assert_eq!(
            Command::decode(&Bytes::from(enc)),
            Err(DecodeError::UnknownVersion(9))
        );
    }
}
