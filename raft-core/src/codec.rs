//! The wire format of [`Message`]s: hand-written, versioned, bounded.
//!
//! Every integer is fixed-width big-endian (simple to audit; a varint would save little next
//! to payloads). A message is:
//!
//! | field | bytes |
//! | --- | --- |
//! | version (`WIRE_VERSION`) | 1 |
//! | message type | 1 |
//! | from, to, term | 8 each |
//! | body (by type) | rest |
//!
//! Bodies: vote requests carry `last_log_index, last_log_term` and a `transfer` byte (0 or 1);
//! responses a `granted` byte; `AppendRequest` carries `prev_log_index, prev_log_term, commit`,
//! an entry count (u32) and entries (`term, index, kind byte, payload length u32, payload`);
//! `AppendResponse` carries `success, index, hint_index, hint_term`; heartbeats
//! `commit, read_round` and `read_round`; `InstallSnapshot` the snapshot's `index, term` and its
//! configuration (as [`Membership::encode`] writes it); `TimeoutNow` nothing; `Propose` a count
//! and length-prefixed payloads; read-index messages a length-prefixed context (and the index,
//! for the response).
//!
//! New message types get new tags under the same version: an older node refuses an unknown tag
//! as `UnknownMessageType` (`InstallSnapshot`, tag 12, was added so), while a changed layout of
//! an existing type needs a new version (version 2 added `transfer` to vote requests and the
//! configuration to `InstallSnapshot`).
//!
//! Decoding never trusts a length: every count and length is checked against the bytes actually
//! left before anything is allocated, so a hostile frame costs at most its own size. Payloads
//! are zero-copy slices of the input. The framing around a message (length prefix, magic,
//! cluster id) belongs to the transport.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::types::{Entry, EntryKind, SnapshotMeta};

/// The layout version written as every message's first byte.
pub const WIRE_VERSION: u8 = 2;

const HEADER_LEN: usize = 1 + 1 + 8 * 3;
/// The smallest encoded entry: term, index, kind, payload length, empty payload.
const MIN_ENTRY_LEN: usize = 8 + 8 + 1 + 4;

mod tag {
    pub const PRE_VOTE_REQUEST: u8 = 1;
    pub const PRE_VOTE_RESPONSE: u8 = 2;
    pub const VOTE_REQUEST: u8 = 3;
    pub const VOTE_RESPONSE: u8 = 4;
    pub const APPEND_REQUEST: u8 = 5;
    pub const APPEND_RESPONSE: u8 = 6;
    pub const HEARTBEAT: u8 = 7;
    pub const HEARTBEAT_RESPONSE: u8 = 8;
    pub const PROPOSE: u8 = 9;
    pub const READ_INDEX_REQUEST: u8 = 10;
    pub const READ_INDEX_RESPONSE: u8 = 11;
    pub const INSTALL_SNAPSHOT: u8 = 12;
    pub const TIMEOUT_NOW: u8 = 13;
}

/// Why bytes did not decode to a [`Message`]. The input came from outside the process, so the
/// caller drops it (and perhaps the connection); nothing panics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// The first byte names a layout version this build does not speak.
    UnknownVersion(u8),
    /// The message type tag is not one this build knows.
    UnknownMessageType(u8),
    /// An entry's kind byte is not one this build knows.
    UnknownEntryKind(u8),
    /// A boolean byte other than 0 or 1.
    BadBool(u8),
    /// A count or length that cannot fit in the bytes left.
    LengthTooLarge {
        /// Which count or length.
        what: &'static str,
        /// Its value.
        len: u64,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes left over after a complete message (their count).
    TrailingBytes(usize),
    /// An encoded [`Membership`] starts with a format byte this build does not know.
    UnknownMembershipFormat(u8),
    /// A configuration that breaks the invariants of [`Membership`] (the reason).
    InvalidMembership(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed, remaining } => {
                write!(
                    f,
                    "truncated message: needed {needed} more bytes, {remaining} left"
                )
            }
            DecodeError::UnknownVersion(v) => {
                write!(
                    f,
                    "unknown wire version {v} (this node speaks {WIRE_VERSION})"
                )
            }
            DecodeError::UnknownMessageType(t) => write!(f, "unknown message type {t}"),
            DecodeError::UnknownEntryKind(k) => write!(f, "unknown entry kind {k}"),
            DecodeError::BadBool(b) => write!(f, "invalid boolean byte {b}"),
            DecodeError::LengthTooLarge {
                what,
                len,
                remaining,
            } => {
                write!(
                    f,
                    "{what} of {len} does not fit in the {remaining} bytes left"
                )
            }
            DecodeError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the message"),
            DecodeError::UnknownMembershipFormat(v) => {
                write!(f, "unknown membership format {v}")
            }
            DecodeError::InvalidMembership(why) => write!(f, "invalid membership: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The exact encoded size of `msg`.
pub fn encoded_len(msg: &Message) -> usize {
    HEADER_LEN
        + match &msg.body {
            MessageBody::PreVoteRequest { .. } | MessageBody::VoteRequest { .. } => 16 + 1,
            MessageBody::PreVoteResponse { .. } | MessageBody::VoteResponse { .. } => 1,
            MessageBody::AppendRequest { entries, .. } => {
                24 + 4
                    + entries
                        .iter()
                        .map(|e| MIN_ENTRY_LEN + e.payload.len())
                        .sum::<usize>()
            }
            MessageBody::AppendResponse { .. } => 1 + 24,
            MessageBody::Heartbeat { .. } => 16,
            MessageBody::HeartbeatResponse { .. } => 8,
            MessageBody::InstallSnapshot { snapshot } => 16 + snapshot.membership.encoded_len(),
            MessageBody::TimeoutNow => 0,
            MessageBody::Propose { payloads } => {
                4 + payloads.iter().map(|p| 4 + p.len()).sum::<usize>()
            }
            MessageBody::ReadIndexRequest { ctx } => 4 + ctx.len(),
            MessageBody::ReadIndexResponse { ctx, .. } => 8 + 4 + ctx.len(),
        }
}

/// Appends the encoding of `msg` to `buf`.
pub fn encode(msg: &Message, buf: &mut BytesMut) {
    buf.reserve(encoded_len(msg));
    buf.put_u8(WIRE_VERSION);
    let tag = match &msg.body {
        MessageBody::PreVoteRequest { .. } => tag::PRE_VOTE_REQUEST,
        MessageBody::PreVoteResponse { .. } => tag::PRE_VOTE_RESPONSE,
        MessageBody::VoteRequest { .. } => tag::VOTE_REQUEST,
        MessageBody::VoteResponse { .. } => tag::VOTE_RESPONSE,
        MessageBody::AppendRequest { .. } => tag::APPEND_REQUEST,
        MessageBody::AppendResponse { .. } => tag::APPEND_RESPONSE,
        MessageBody::Heartbeat { .. } => tag::HEARTBEAT,
        MessageBody::HeartbeatResponse { .. } => tag::HEARTBEAT_RESPONSE,
        MessageBody::InstallSnapshot { .. } => tag::INSTALL_SNAPSHOT,
        MessageBody::TimeoutNow => tag::TIMEOUT_NOW,
        MessageBody::Propose { .. } => tag::PROPOSE,
        MessageBody::ReadIndexRequest { .. } => tag::READ_INDEX_REQUEST,
        MessageBody::ReadIndexResponse { .. } => tag::READ_INDEX_RESPONSE,
    };
    buf.put_u8(tag);
    buf.put_u64(msg.from);
    buf.put_u64(msg.to);
    buf.put_u64(msg.term);
    match &msg.body {
        MessageBody::PreVoteRequest {
            last_log_index,
            last_log_term,
            transfer,
        }
        | MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            transfer,
        } => {
            buf.put_u64(*last_log_index);
            buf.put_u64(*last_log_term);
            buf.put_u8(u8::from(*transfer));
        }
        MessageBody::PreVoteResponse { granted } | MessageBody::VoteResponse { granted } => {
            buf.put_u8(u8::from(*granted))
        }
        MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            commit,
        } => {
            buf.put_u64(*prev_log_index);
            buf.put_u64(*prev_log_term);
            buf.put_u64(*commit);
            put_len(buf, entries.len());
            for e in entries {
                buf.put_u64(e.term);
                buf.put_u64(e.index);
                buf.put_u8(e.kind.code());
                put_bytes(buf, &e.payload);
            }
        }
        MessageBody::AppendResponse {
            success,
            index,
            hint_index,
            hint_term,
        } => {
            buf.put_u8(u8::from(*success));
            buf.put_u64(*index);
            buf.put_u64(*hint_index);
            buf.put_u64(*hint_term);
        }
        MessageBody::Heartbeat { commit, read_round } => {
            buf.put_u64(*commit);
            buf.put_u64(*read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => buf.put_u64(*read_round),
        MessageBody::InstallSnapshot { snapshot } => {
            buf.put_u64(snapshot.index);
            buf.put_u64(snapshot.term);
            snapshot.membership.write_to(buf);
        }
        MessageBody::TimeoutNow => {}
        MessageBody::Propose { payloads } => {
            put_len(buf, payloads.len());
            for p in payloads {
                put_bytes(buf, p);
            }
        }
        MessageBody::ReadIndexRequest { ctx } => put_bytes(buf, ctx),
        MessageBody::ReadIndexResponse { ctx, index } => {
            buf.put_u64(*index);
            put_bytes(buf, ctx);
        }
    }
}

/// Encodes `msg` into a new buffer of exactly [`encoded_len`] bytes.
pub fn encode_to_bytes(msg: &Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(encoded_len(msg));
    encode(msg, &mut buf);
    buf.freeze()
}

pub(crate) fn put_len(buf: &mut BytesMut, len: usize) {
    // Lengths above u32 cannot come from a message the core builds (messages are bounded by
    // `max_msg_bytes`, far below 4 GiB); saturating keeps encode total rather than panicking.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

pub(crate) fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    put_len(buf, bytes.len());
    buf.put_slice(bytes);
}

/// Decodes one whole message; the input must hold nothing else.
pub fn decode(input: Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader::new(input);
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let tag = r.u8()?;
    let from = r.u64()?;
    let to = r.u64()?;
    let term = r.u64()?;
    let body = match tag {
        tag::PRE_VOTE_REQUEST => MessageBody::PreVoteRequest {
            last_log_index: r.u64()?,
            last_log_term: r.u64()?,
            transfer: r.bool()?,
        },
        tag::VOTE_REQUEST => MessageBody::VoteRequest {
            last_log_index: r.u64()?,
            last_log_term: r.u64()?,
            transfer: r.bool()?,
        },
        tag::PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse { granted: r.bool()? },
        tag::VOTE_RESPONSE => MessageBody::VoteResponse { granted: r.bool()? },
        tag::APPEND_REQUEST => {
            let prev_log_index = r.u64()?;
            let prev_log_term = r.u64()?;
            let commit = r.u64()?;
            let count = r.count("entry count", MIN_ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let term = r.u64()?;
                let index = r.u64()?;
                let code = r.u8()?;
                let kind = EntryKind::from_code(code).ok_or(DecodeError::UnknownEntryKind(code))?;
                let payload = r.bytes("entry payload")?;
                entries.push(Entry {
                    term,
                    index,
                    kind,
                    payload,
                });
            }
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            }
        }
        tag::APPEND_RESPONSE => MessageBody::AppendResponse {
            success: r.bool()?,
            index: r.u64()?,
            hint_index: r.u64()?,
            hint_term: r.u64()?,
        },
        tag::HEARTBEAT => MessageBody::Heartbeat {
            commit: r.u64()?,
            read_round: r.u64()?,
        },
        tag::HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse {
            read_round: r.u64()?,
        },
        tag::INSTALL_SNAPSHOT => MessageBody::InstallSnapshot {
            snapshot: Box::new(SnapshotMeta {
                index: r.u64()?,
                term: r.u64()?,
                membership: Membership::read_from(&mut r)?,
            }),
        },
        tag::TIMEOUT_NOW => MessageBody::TimeoutNow,
        tag::PROPOSE => {
            let count = r.count("proposal count", 4)?;
            let mut payloads = Vec::with_capacity(count);
            for _ in 0..count {
                payloads.push(r.bytes("proposal")?);
            }
            MessageBody::Propose { payloads }
        }
        tag::READ_INDEX_REQUEST => MessageBody::ReadIndexRequest {
            ctx: r.bytes("read context")?,
        },
        tag::READ_INDEX_RESPONSE => {
            let index = r.u64()?;
            MessageBody::ReadIndexResponse {
                ctx: r.bytes("read context")?,
                index,
            }
        }
        other => return Err(DecodeError::UnknownMessageType(other)),
    };
    r.finish()?;
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

/// Reads fields off the front of some bytes, checking each against what is left.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// Succeeds only if every byte was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            left => Err(DecodeError::TrailingBytes(left)),
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                needed: n,
                remaining: self.remaining(),
            });
        }
        let slice = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::BadBool(other)),
        }
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A count of items each at least `min_item_len` bytes long, checked against what is left.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        min_item_len: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len) > self.remaining() {
            return Err(DecodeError::LengthTooLarge {
                what,
                len: n as u64,
                remaining: self.remaining(),
            });
        }
        Ok(n)
    }

    /// A length-prefixed byte string, as a zero-copy slice of the input.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        if len > self.remaining() {
            return Err(DecodeError::LengthTooLarge {
                what,
                len: len as u64,
                remaining: self.remaining(),
            });
        }
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payload() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
    }

    fn entry() -> impl Strategy<Value = Entry> {
        (any::<u64>(), any::<u64>(), 0u8..4, payload()).prop_map(|(term, index, code, payload)| {
            Entry {
                term,
                index,
                kind: EntryKind::from_code(code).expect("codes 0 to 3 are kinds"),
                payload,
            }
        })
    }

    fn body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
                |(last_log_index, last_log_term, transfer)| MessageBody::PreVoteRequest {
                    last_log_index,
                    last_log_term,
                    transfer,
                }
            ),
            any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
                |(last_log_index, last_log_term, transfer)| MessageBody::VoteRequest {
                    last_log_index,
                    last_log_term,
                    transfer,
                }
            ),
            any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(entry(), 0..8),
                any::<u64>()
            )
                .prop_map(|(prev_log_index, prev_log_term, entries, commit)| {
                    MessageBody::AppendRequest {
                        prev_log_index,
                        prev_log_term,
                        entries,
                        commit,
                    }
                }),
            (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(success, index, hint_index, hint_term)| {
                    MessageBody::AppendResponse {
                        success,
                        index,
                        hint_index,
                        hint_term,
                    }
                }
            ),
            (any::<u64>(), any::<u64>())
                .prop_map(|(commit, read_round)| MessageBody::Heartbeat { commit, read_round }),
            any::<u64>().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
            (
                any::<u64>(),
                any::<u64>(),
                crate::membership::tests::membership()
            )
                .prop_map(|(index, term, membership)| MessageBody::InstallSnapshot {
                    snapshot: Box::new(SnapshotMeta {
                        index,
                        term,
                        membership
                    })
                }),
            Just(MessageBody::TimeoutNow),
            proptest::collection::vec(payload(), 0..8)
                .prop_map(|payloads| MessageBody::Propose { payloads }),
            payload().prop_map(|ctx| MessageBody::ReadIndexRequest { ctx }),
            (payload(), any::<u64>())
                .prop_map(|(ctx, index)| MessageBody::ReadIndexResponse { ctx, index }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (any::<u64>(), any::<u64>(), any::<u64>(), body()).prop_map(|(from, to, term, body)| {
            Message {
                from,
                to,
                term,
                body,
            }
        })
    }

    proptest! {
        #[test]
        fn every_message_round_trips(msg in message()) {
            let bytes = encode_to_bytes(&msg);
            prop_assert_eq!(bytes.len(), encoded_len(&msg));
            prop_assert_eq!(decode(bytes), Ok(msg));
        }

        #[test]
        fn arbitrary_bytes_decode_to_an_error_or_a_faithful_message(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let input = Bytes::from(input);
            if let Ok(msg) = decode(input.clone()) {
                prop_assert_eq!(encode_to_bytes(&msg), input);
            }
        }

        #[test]
        fn every_strict_prefix_is_an_error(msg in message()) {
            let bytes = encode_to_bytes(&msg);
            for cut in 0..bytes.len() {
                prop_assert!(decode(bytes.slice(..cut)).is_err(), "prefix of {} bytes decoded", cut);
            }
        }
    }

    fn header(tag: u8) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(WIRE_VERSION);
        b.put_u8(tag);
        b.put_u64(1);
        b.put_u64(2);
        b.put_u64(3);
        b
    }

    #[test]
    fn unknown_version_and_type_are_named() {
        let mut b = header(tag::HEARTBEAT_RESPONSE);
        b.put_u64(0);
        let mut wrong_version = b.clone();
        wrong_version[0] = 9;
        assert_eq!(
            decode(wrong_version.freeze()),
            Err(DecodeError::UnknownVersion(9))
        );
        let mut wrong_type = b.clone();
        wrong_type[1] = 200;
        assert_eq!(
            decode(wrong_type.freeze()),
            Err(DecodeError::UnknownMessageType(200))
        );
        assert!(decode(b.freeze()).is_ok());
    }

    #[test]
    fn a_huge_claimed_count_is_refused_before_allocating() {
        let mut b = header(tag::APPEND_REQUEST);
        b.put_u64(0);
        b.put_u64(0);
        b.put_u64(0);
        b.put_u32(u32::MAX);
        b.put_slice(&[0u8; 64]);
        assert!(matches!(
            decode(b.freeze()),
            Err(DecodeError::LengthTooLarge {
                what: "entry count",
                ..
            })
        ));
        let mut b = header(tag::READ_INDEX_REQUEST);
        b.put_u32(u32::MAX);
        assert!(matches!(
            decode(b.freeze()),
            Err(DecodeError::LengthTooLarge {
                what: "read context",
                ..
            })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut b = header(tag::HEARTBEAT_RESPONSE);
        b.put_u64(7);
        b.put_u8(0);
        assert_eq!(decode(b.freeze()), Err(DecodeError::TrailingBytes(1)));
    }
}
