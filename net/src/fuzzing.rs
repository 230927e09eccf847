//! Fuzz entry points for the decoders that read bytes from the network, shared by the cargo-fuzz
//! targets in `fuzz/` and the corpus test that `cargo test` runs (`net/tests/fuzz_corpus.rs`).
//!
//! * [`peer_frame`]: peer frames ([`transport::decode_frame`]) and the Raft message codec inside
//!   them ([`raft_core::codec::decode`]);
//! * [`resp_request`]: the Redis-protocol request parser ([`resp::RequestParser`]);
//! * the command decoder ([`kv::Command::decode`]) has its entry point in `kv`, where its frame
//!   helpers live: [`kv::fuzzing::command`], re-exported here as [`kv_command`].
//!
//! Each function takes any bytes and panics only if a property of the decoder is violated: it is
//! not enough that decoding returns; what it returns must be consistent with the input.
//!
//! [`transport::decode_frame`]: crate::transport::decode_frame
//! [`resp::RequestParser`]: crate::resp::RequestParser

use bytes::{Bytes, BytesMut};
use raft_core::codec;

use crate::peer_header;
use crate::resp::{encode_request, Limits, ParseError, Request, RequestParser};
use crate::transport::{
    check_frame_len, decode_frame, encode_frame, FrameError, RangeMessage, FRAME_MAGIC,
    FRAME_VERSION, MAX_FRAME_LEN,
};
use kv::ranges::FIRST_RANGE;

pub use kv::fuzzing::command as kv_command;

/// The cluster id [`peer_frame`] decodes frames for; seed frames of the corpus carry it.
pub const CLUSTER_ID: u64 = 0x6b76_7374_6f72_6531;

/// Bytes of a frame body's header: magic, version, cluster id, sender id and incarnation (the
/// range id varint and the Raft message follow).
const HEADER_LEN: usize = crate::peer_header::HEADER_LEN;
/// The smallest encoded item a count in the codec can announce (an entry with no payload).
const MAX_MIN_ITEM_LEN: u64 = 8 + 8 + 1 + 4;

/// Peer frames, read from `data` as the inbound side of the transport reads a connection: a
/// length prefix, checked before anything is read for it, then the body; the first bad frame
/// ends the connection. Then `data` as one bare Raft message.
///
/// Properties:
/// * nothing panics;
/// * a length prefix above [`MAX_FRAME_LEN`] (say 4 GiB) is refused as too large before a body
///   is read or allocated, one shorter than the header as too short, and nothing else is refused;
/// * a decoded frame re-encodes to exactly its input bytes (the encoding is canonical);
/// * every refusal names what is wrong with the input: the magic, version or cluster id it
///   carries, the range id's own error for a malformed one behind a good header (read from at
///   most ten bytes), the codec's own error for the message behind a good range id, or a
///   message from another node than the header's sender;
/// * a frame refused only for its cluster id decodes for that cluster;
/// * a bare message decodes only if it re-encodes to exactly the input, whose length
///   [`codec::encoded_len`] predicts; every codec error is consistent with the input.
pub fn peer_frame(data: &[u8]) {
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        match check_frame_len(len) {
            Ok(()) => assert!((HEADER_LEN..=MAX_FRAME_LEN).contains(&len)),
            Err(FrameError::TooLarge { len: l, max }) => {
                assert_eq!((l, max), (len, MAX_FRAME_LEN));
                assert!(len > MAX_FRAME_LEN);
                break;
            }
            Err(FrameError::TooShort(l)) => {
                assert_eq!(l, len);
                assert!(len < HEADER_LEN);
                break;
            }
            Err(e) => panic!("length check failed with {e:?}"),
        }
        if rest.len() - 4 < len {
            break; // the connection would wait for the rest of the body
        }
        let (frame, tail) = rest.split_at(4 + len);
        rest = tail;
        if check_frame(CLUSTER_ID, frame).is_err() {
            break; // the connection would be closed
        }
    }
    check_message(data);
}

/// Decodes one whole frame (length prefix included) for `cluster` and checks the outcome.
fn check_frame(cluster: u64, frame: &[u8]) -> Result<(), FrameError> {
    let body = Bytes::copy_from_slice(&frame[4..]);
    let result = decode_frame(cluster, body.clone());
    match &result {
        Ok((sender, RangeMessage { range, msg })) => {
            assert_eq!(sender.node_id, msg.from);
            assert_ne!(*range, 0);
            let mut out = BytesMut::new();
            encode_frame(cluster, sender.incarnation, *range, msg, &mut out);
            assert_eq!(&out[..], frame, "frame of {msg:?} re-encodes differently");
            let range_len = peer_header::range_id_len(*range);
            assert!(range_len <= peer_header::MAX_RANGE_ID_LEN);
            assert_eq!(HEADER_LEN + range_len + codec::encoded_len(msg), body.len());
        }
        Err(FrameError::RangeId(e)) => {
            assert_eq!(&body[..5], &frame_prefix()[..]);
            assert_eq!(&body[5..13], &cluster.to_be_bytes());
            let mut rest = &body[HEADER_LEN..];
            assert_eq!(peer_header::take_range_id(&mut rest).as_ref(), Err(e));
            assert!(body.len() - HEADER_LEN - rest.len() <= peer_header::MAX_RANGE_ID_LEN);
        }
        Err(FrameError::Hello(why)) => panic!("a message frame read as a hello: {why}"),
        Err(FrameError::BadMagic(m)) => {
            assert_ne!(*m, FRAME_MAGIC);
            assert_eq!(*m, u32::from_be_bytes([body[0], body[1], body[2], body[3]]));
        }
        Err(FrameError::UnknownVersion(v)) => {
            assert_eq!(&body[..4], &FRAME_MAGIC.to_be_bytes());
            assert_ne!(*v, FRAME_VERSION);
            assert_eq!(*v, body[4]);
        }
        Err(FrameError::WrongCluster { ours, theirs }) => {
            assert_eq!(&body[..5], &frame_prefix()[..]);
            assert_eq!(*ours, cluster);
            assert_ne!(theirs, ours);
            assert_eq!(theirs.to_be_bytes(), body[5..13]);
            // For the cluster it names, the same frame gets past the header.
            let again = check_frame(*theirs, frame);
            assert!(
                !matches!(again, Err(FrameError::WrongCluster { .. })),
                "frame refused for its own cluster: {again:?}"
            );
        }
        Err(FrameError::Message(e)) => {
            assert_eq!(&body[..5], &frame_prefix()[..]);
            assert_eq!(&body[5..13], &cluster.to_be_bytes());
            assert_eq!(codec::decode(after_range_id(&body)).as_ref(), Err(e));
        }
        Err(FrameError::NotFromSender { header, message }) => {
            assert_eq!(&body[..5], &frame_prefix()[..]);
            assert_eq!(&body[5..13], &cluster.to_be_bytes());
            assert_eq!(&body[13..21], &header.to_be_bytes());
            assert_ne!(header, message);
            let inner = codec::decode(after_range_id(&body));
            assert_eq!(inner.map(|m| m.from).ok(), Some(*message));
        }
        Err(e @ (FrameError::TooLarge { .. } | FrameError::TooShort(_))) => {
            panic!("a frame whose length was accepted was refused for its length: {e:?}")
        }
    }
    result.map(drop)
}

/// The Raft message of a frame body whose header and range id are good.
fn after_range_id(body: &Bytes) -> Bytes {
    let mut rest = body.slice(HEADER_LEN..);
    let range = peer_header::take_range_id(&mut rest);
    assert!(
        range.is_ok(),
        "a frame refused past its range id has a good one: {range:?}"
    );
    rest
}

fn frame_prefix() -> [u8; 5] {
    let m = FRAME_MAGIC.to_be_bytes();
    [m[0], m[1], m[2], m[3], FRAME_VERSION]
}

/// `data` as one bare Raft message.
fn check_message(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    match codec::decode(input.clone()) {
        Ok(msg) => {
            assert_eq!(codec::encoded_len(&msg), data.len());
            assert_eq!(
                codec::encode_to_bytes(&msg),
                input,
                "{msg:?} re-encodes differently"
            );
            // And it travels in a frame, of the first range or of any other.
            for range in [FIRST_RANGE, 1 << 20, u64::MAX] {
                let mut frame = BytesMut::new();
                encode_frame(CLUSTER_ID, 1, range, &msg, &mut frame);
                assert!(check_frame(CLUSTER_ID, &frame).is_ok());
            }
        }
        Err(e) => match e {
            codec::DecodeError::Truncated { needed, remaining } => {
                assert!(needed > remaining && remaining < data.len().max(1))
            }
            codec::DecodeError::UnknownVersion(v) => {
                assert_ne!(v, codec::WIRE_VERSION);
                assert_eq!(data.first(), Some(&v));
            }
            codec::DecodeError::LengthTooLarge { len, remaining, .. } => {
                // A count may be refused below `remaining` (its items cannot fit), a byte
                // length only above it.
                assert!(len.saturating_mul(MAX_MIN_ITEM_LEN) > remaining as u64);
                assert!(remaining < data.len());
            }
            codec::DecodeError::TrailingBytes(n) => assert!(n > 0 && n < data.len()),
            codec::DecodeError::UnknownMessageType(_)
            | codec::DecodeError::UnknownEntryKind(_)
            | codec::DecodeError::BadBool(_) => {}
            other => panic!("a decode error this check does not know: {other:?}"),
        },
    }
}

/// Limits small enough that fuzzed inputs reach them.
pub const SMALL_LIMITS: Limits = Limits {
    max_bulk_len: 256,
    max_array_len: 16,
    max_inline_len: 256,
};

/// The RESP request parser on `data`, as a connection reads it: parse requests off the front of
/// the buffer until the parser asks for more bytes or refuses the input.
///
/// Properties:
/// * nothing panics;
/// * each call either returns a complete request, asks for more bytes, or refuses the input;
///   it removes bytes only from the front, never more than it has; a request takes at least one
///   byte; when it asks for more, whatever it removed was only blank lines or empty arrays;
/// * every request has at least one argument and respects the limits (argument count and bulk
///   length for arrays, line length for inline commands); an error names a length that really
///   is over its limit;
/// * each request's arguments, re-encoded as an array of bulk strings, parse back to the same
///   request and nothing else;
/// * incremental parsing: the same bytes fed in pieces (one byte at a time for short inputs)
///   give the same requests, the same leftover and the same verdict as fed at once;
/// * with the production limits the same properties hold (bar the piecewise comparison).
pub fn resp_request(data: &[u8]) {
    let whole = parse_stream(SMALL_LIMITS, std::iter::once(data));
    let chunked = if data.len() <= 256 {
        parse_stream(SMALL_LIMITS, data.chunks(1))
    } else {
        let a = split_point(data, 0);
        let b = a.max(split_point(data, data.len() - 1));
        parse_stream(
            SMALL_LIMITS,
            [&data[..a], &data[a..b], &data[b..]].into_iter(),
        )
    };
    assert_eq!(
        whole, chunked,
        "parsing in pieces differs from parsing at once"
    );
    parse_stream(Limits::default(), std::iter::once(data));
}

fn split_point(data: &[u8], at: usize) -> usize {
    usize::from(data[at]) * data.len() / 256
}

/// How a stream of requests ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The parser waits for more bytes; these are buffered.
    NeedMore(Bytes),
    Refused,
}

/// Feeds `chunks` one after the other into a buffer, parsing after each, and checks each call.
fn parse_stream<'a>(
    limits: Limits,
    chunks: impl Iterator<Item = &'a [u8]>,
) -> (Vec<Result<Request, ParseError>>, End) {
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = Bytes::copy_from_slice(&buf);
            let was_discarding = parser.discarding();
            let result = parser.parse(&mut buf);
            // Skipping a refused request's rest drops bytes that are not blank.
            let skipping = was_discarding || parser.discarding();
            assert!(buf.len() <= before.len(), "the parser grew its buffer");
            let consumed = before.len() - buf.len();
            assert_eq!(
                &buf[..],
                &before[consumed..],
                "the parser changed its buffer"
            );
            match result {
                Ok(Some(req)) => {
                    assert!(consumed > 0, "a request took no bytes");
                    if !skipping {
                        check_request(limits, &req, &before[..consumed]);
                    }
                    requests.push(Ok(req));
                }
                Ok(None) => {
                    if !skipping {
                        check_skipped(limits, &before[..consumed]);
                    }
                    break;
                }
                Err(e) if !e.is_fatal() => {
                    assert!(parser.discarding(), "a recoverable error skips nothing");
                    check_parse_error(limits, &e);
                    requests.push(Err(e));
                }
                Err(e) => {
                    if !skipping {
                        check_skipped(limits, &before[..consumed]);
                    }
                    check_parse_error(limits, &e);
                    return (requests, End::Refused);
                }
            }
        }
    }
    (requests, End::NeedMore(buf.freeze()))
}

/// Bytes the parser dropped without returning a request may only be requests that are nothing
/// (blank lines, empty arrays): alone, they parse to nothing and leave nothing.
fn check_skipped(limits: Limits, skipped: &[u8]) {
    if skipped.is_empty() {
        return;
    }
    let mut buf = BytesMut::from(skipped);
    let again = RequestParser::new(limits).parse(&mut buf);
    assert_eq!(again, Ok(None));
    assert!(buf.is_empty(), "dropped bytes that were not blank");
}

fn check_request(limits: Limits, req: &Request, consumed: &[u8]) {
    assert!(!req.args.is_empty(), "a request without arguments");
    assert!(
        req.args.iter().map(|a| a.len()).sum::<usize>() <= consumed.len(),
        "a request holds more bytes than it consumed"
    );
    // An array request is bounded by the array and bulk limits, an inline one by its line
    // length (which bounds its words too); `consumed` may start with skipped blank lines or
    // empty arrays, so which kind it was is not checked here.
    let max_args = limits.max_array_len.max(limits.max_inline_len);
    let max_arg = limits.max_bulk_len.max(limits.max_inline_len);
    assert!(req.args.len() <= max_args, "{} arguments", req.args.len());
    for a in &req.args {
        assert!(a.len() <= max_arg, "an argument of {} bytes", a.len());
    }
    let args: Vec<&[u8]> = req.args.iter().map(|a| &a[..]).collect();
    let mut out = BytesMut::new();
    encode_request(&args, &mut out);
    let mut parser = RequestParser::new(Limits {
        max_bulk_len: usize::MAX,
        max_array_len: usize::MAX,
        max_inline_len: usize::MAX,
    });
    assert_eq!(parser.parse(&mut out), Ok(Some(req.clone())));
    assert!(out.is_empty(), "an encoded request parsed with bytes left");
}

fn check_parse_error(limits: Limits, e: &ParseError) {
    match e {
        ParseError::BulkTooLarge { len, max } => {
            assert_eq!(*max, limits.max_bulk_len);
            assert!(*len < 0 || *len as u64 > *max as u64);
        }
        ParseError::ArrayTooLarge { len, max } => {
            assert_eq!(*max, limits.max_array_len);
            assert!(*len as u64 > *max as u64);
        }
        ParseError::InlineTooLong { max } => assert_eq!(*max, limits.max_inline_len),
        ParseError::TooDeep => panic!("the request parser does not nest"),
        ParseError::InvalidLength(_)
        | ParseError::UnbalancedQuotes
        | ParseError::ExpectedCrlf
        | ParseError::UnexpectedByte(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_hostile_inputs_pass() {
        let mut frame = BytesMut::new();
        let msg = raft_core::Message {
            from: 1,
            to: 2,
            term: 3,
            body: raft_core::MessageBody::Heartbeat {
                commit: 4,
                read_round: 5,
            },
        };
        encode_frame(CLUSTER_ID, 7, FIRST_RANGE, &msg, &mut frame);
        encode_frame(CLUSTER_ID, 7, 300, &msg, &mut frame);
        peer_frame(&frame);
        peer_frame(&frame[4..]);
        peer_frame(&[0xff; 8]);
        peer_frame(&codec::encode_to_bytes(&msg));
        resp_request(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nSET a 'b c'\r\n*1\r\n$4\r\nPI");
        resp_request(b"*1\r\n$-5\r\n");
        resp_request(b"*1\r\n$1099511627776\r\n");
        resp_request(b"*3\r\n$3\r\nSET\r\n$300\r\n");
        let mut oversized = b"*3\r\n$3\r\nSET\r\n$300\r\n".to_vec();
        oversized.extend_from_slice(&[b'x'; 300]);
        oversized.extend_from_slice(b"\r\n$2\r\nab\r\n*1\r\n$4\r\nPING\r\n");
        resp_request(&oversized);
        kv_command(b"");
    }
}
