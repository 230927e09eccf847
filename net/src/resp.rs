//! The Redis protocol (RESP2 and RESP3): requests from clients and replies to them.
//!
//! Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or inline commands
//! (a line of words, as telnet sends; quotes as in redis-cli). Parsing is incremental: a request
//! split over many reads parses once its last byte arrives, and nothing is consumed before that.
//!
//! Every length is checked against [`Limits`] before anything is allocated or awaited, so a
//! client that claims a 1 TiB bulk string is refused at once instead of being buffered for; the
//! bytes of such a request are then skipped as they arrive, and the connection stays usable.
//! Replies ([`Reply`]) are encoded for the connection's protocol, RESP2 or RESP3 ([`reply`]).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub mod reply;
pub use reply::{Protocol, Reply, ReplyParser};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bulk_len: usize,
    pub max_array_len: usize,
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk_len: 64 << 20,
            max_array_len: 1 << 20,
            max_inline_len: 64 << 10,
        }
    }
}

/// One client request: `args[0]` is the command name as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub args: Vec<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    InvalidLength(String),
    BulkTooLarge { len: i64, max: usize },
    ArrayTooLarge { len: i64, max: usize },
    InlineTooLong { max: usize },
    UnbalancedQuotes,
    ExpectedCrlf,
    UnexpectedByte(u8),
    TooDeep,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::InvalidLength(s) => write!(f, "invalid length '{s}'"),
            ParseError::BulkTooLarge { len, max } => {
                write!(f, "invalid bulk length {len} (limit {max})")
            }
            ParseError::ArrayTooLarge { len, max } => {
                write!(f, "invalid multibulk length {len} (limit {max})")
            }
            ParseError::InlineTooLong { max } => {
                write!(f, "too big inline request (limit {max} bytes)")
            }
            ParseError::UnbalancedQuotes => write!(f, "unbalanced quotes in request"),
            ParseError::ExpectedCrlf => write!(f, "expected CRLF after a bulk string"),
            ParseError::UnexpectedByte(b) => {
                write!(f, "expected '$', got '{}'", char::from(*b).escape_default())
            }
            ParseError::TooDeep => write!(f, "reply nested too deeply"),
        }
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    /// Whether the stream cannot be resynchronised after this error. Only a bulk string over the
    /// limit can be skipped: its length is known, so the parser drops its bytes as they arrive.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, ParseError::BulkTooLarge { len, .. } if *len >= 0)
    }

    /// The reply to a refused request.
    pub fn reply_text(&self) -> String {
        match self {
            ParseError::BulkTooLarge { len, max } if *len >= 0 => format!(
                "ERR string exceeds maximum allowed size (proto-max-bulk-len: arguments up to \
                 {max} bytes, got {len}); the request was skipped"
            ),
            fatal => format!("ERR Protocol error: {fatal}"),
        }
    }
}

/// Where a CRLF-terminated line ends in `buf[from..]`: the index of its `\r`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

/// Parses the decimal integer of a header line.
fn parse_int(line: &[u8]) -> Result<i64, ParseError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            ParseError::InvalidLength(String::from_utf8_lossy(line).chars().take(32).collect())
        })
}

/// The longest length a request header can spell, `-9223372036854775808`.
const MAX_LEN_DIGITS: usize = 20;

/// Parses the length of an array or bulk header. A longer line is refused whatever it spells
/// (`*000…001`): otherwise whether it is accepted would depend on how the bytes were split
/// across reads, since an unterminated header is refused once it passes 32 bytes.
fn parse_len(line: &[u8]) -> Result<i64, ParseError> {
    if line.len() > MAX_LEN_DIGITS {
        return Err(ParseError::InvalidLength("too long".into()));
    }
    parse_int(line)
}

pub struct RequestParser {
    limits: Limits,
    /// The rest of a request refused for a bulk string over the limit, still to be skipped.
    discard: Option<Discard>,
}

/// What remains of a refused request: bytes of the current bulk string (with its CRLF), then
/// whole bulk strings (header, data, CRLF).
#[derive(Clone, Copy, Debug)]
struct Discard {
    bytes_left: u64,
    args_left: u64,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            discard: None,
        }
    }

    /// Whether the parser is skipping the rest of a refused request: bytes it consumes now are
    /// dropped, not parsed.
    pub fn discarding(&self) -> bool {
        self.discard.is_some()
    }

    /// Parses one complete request from the front of `buf`, removing its bytes. `Ok(None)`: more
    /// bytes are needed, and nothing was consumed but blank input or the skipped rest of a
    /// refused request. `Err`: refused; if [`ParseError::is_fatal`], the stream cannot be
    /// resynchronised, so close the connection after replying; otherwise (a bulk string over
    /// the limit) the request's remaining bytes are skipped as they arrive, never buffered, and
    /// parsing goes on after them.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ParseError> {
        loop {
            if !self.skip_discarded(buf)? {
                return Ok(None);
            }
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let parsed = if first == b'*' {
                self.parse_multibulk(buf)?
            } else {
                self.parse_inline(buf)?
            };
            match parsed {
                Parsed::Incomplete => return Ok(None),
                Parsed::Skip(n) => buf.advance(n),
                Parsed::Done(n, args) => {
                    let frozen = buf.split_to(n).freeze();
                    let args = args.into_iter().map(|(a, b)| frozen.slice(a..b)).collect();
                    return Ok(Some(Request { args }));
                }
                Parsed::Oversized {
                    consumed,
                    len,
                    discard,
                } => {
                    buf.advance(consumed);
                    self.discard = Some(discard);
                    return Err(ParseError::BulkTooLarge {
                        len,
                        max: self.limits.max_bulk_len,
                    });
                }
                Parsed::Inline(n, words) => {
                    buf.advance(n);
                    return Ok(Some(Request {
                        args: words.into_iter().map(Bytes::from).collect(),
                    }));
                }
            }
        }
    }

    /// Skips what `buf` holds of a refused request; true once nothing of it is left.
    fn skip_discarded(&mut self, buf: &mut BytesMut) -> Result<bool, ParseError> {
        while let Some(d) = &mut self.discard {
            if d.bytes_left > 0 {
                let n = d.bytes_left.min(buf.len() as u64);
                buf.advance(n as usize);
                d.bytes_left -= n;
                if d.bytes_left > 0 {
                    return Ok(false);
                }
            } else if d.args_left == 0 {
                self.discard = None;
            } else {
                // The next argument's header: any length is skipped, but it must be a header.
                let Some(&tag) = buf.first() else {
                    return Ok(false);
                };
                if tag != b'$' {
                    self.discard = None;
                    return Err(ParseError::UnexpectedByte(tag));
                }
                let Some(end) = find_crlf(buf, 1) else {
                    if buf.len() > 32 {
                        self.discard = None;
                        return Err(ParseError::InvalidLength("too long".into()));
                    }
                    return Ok(false);
                };
                let len = match parse_len(&buf[1..end]) {
                    Ok(len) if len >= 0 => len,
                    Ok(len) => {
                        self.discard = None;
                        return Err(ParseError::BulkTooLarge {
                            len,
                            max: self.limits.max_bulk_len,
                        });
                    }
                    Err(e) => {
                        self.discard = None;
                        return Err(e);
                    }
                };
                buf.advance(end + 2);
                d.bytes_left = len as u64 + 2;
                d.args_left -= 1;
            }
        }
        Ok(true)
    }

    fn parse_multibulk(&self, buf: &[u8]) -> Result<Parsed, ParseError> {
        let Some(end) = find_crlf(buf, 1) else {
            return if buf.len() > 32 {
                Err(ParseError::InvalidLength("too long".into()))
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        let count = parse_len(&buf[1..end])?;
        if count <= 0 {
            return Ok(Parsed::Skip(end + 2));
        }
        if count as u64 > self.limits.max_array_len as u64 {
            return Err(ParseError::ArrayTooLarge {
                len: count,
                max: self.limits.max_array_len,
            });
        }
        let mut pos = end + 2;
        let mut args = Vec::with_capacity((count as usize).min(64));
        for _ in 0..count {
            let Some(&tag) = buf.get(pos) else {
                return Ok(Parsed::Incomplete);
            };
            if tag != b'$' {
                return Err(ParseError::UnexpectedByte(tag));
            }
            let Some(end) = find_crlf(buf, pos + 1) else {
                return if buf.len() - pos > 32 {
                    Err(ParseError::InvalidLength("too long".into()))
                } else {
                    Ok(Parsed::Incomplete)
                };
            };
            let len = parse_len(&buf[pos + 1..end])?;
            if len < 0 {
                return Err(ParseError::BulkTooLarge {
                    len,
                    max: self.limits.max_bulk_len,
                });
            }
            if len as u64 > self.limits.max_bulk_len as u64 {
                return Ok(Parsed::Oversized {
                    consumed: end + 2,
                    len,
                    discard: Discard {
                        bytes_left: len as u64 + 2,
                        args_left: (count - 1 - args.len() as i64) as u64,
                    },
                });
            }
            let start = end + 2;
            let stop = start + len as usize;
            if buf.len() < stop + 2 {
                return Ok(Parsed::Incomplete);
            }
            if &buf[stop..stop + 2] != b"\r\n" {
                return Err(ParseError::ExpectedCrlf);
            }
            args.push((start, stop));
            pos = stop + 2;
        }
        Ok(Parsed::Done(pos, args))
    }

    fn parse_inline(&self, buf: &[u8]) -> Result<Parsed, ParseError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            return if buf.len() > self.limits.max_inline_len {
                Err(ParseError::InlineTooLong {
                    max: self.limits.max_inline_len,
                })
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        if nl > self.limits.max_inline_len {
            return Err(ParseError::InlineTooLong {
                max: self.limits.max_inline_len,
            });
        }
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let words = split_inline(line)?;
        if words.is_empty() {
            return Ok(Parsed::Skip(nl + 1));
        }
        Ok(Parsed::Inline(nl + 1, words))
    }
}

enum Parsed {
    Incomplete,
    Skip(usize),
    /// Bytes consumed, and each argument's range in them.
    Done(usize, Vec<(usize, usize)>),
    /// Bytes consumed, and the unescaped words of an inline request.
    Inline(usize, Vec<Vec<u8>>),
    /// A bulk string over the limit: the bytes up to its data, its length, and what is left of
    /// the request to skip.
    Oversized {
        consumed: usize,
        len: i64,
        discard: Discard,
    },
}

/// Splits an inline line into words, honouring quotes as redis-cli does.
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ParseError::UnbalancedQuotes);
                    };
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let Some(&e) = line.get(i) else {
                                return Err(ParseError::UnbalancedQuotes);
                            };
                            i += 1;
                            match e {
                                b'n' => word.push(b'\n'),
                                b'r' => word.push(b'\r'),
                                b't' => word.push(b'\t'),
                                b'x' => {
                                    let hex = line
                                        .get(i..i + 2)
                                        .and_then(|h| std::str::from_utf8(h).ok())
                                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                                    match hex {
                                        Some(b) => {
                                            word.push(b);
                                            i += 2;
                                        }
                                        None => word.push(b'x'),
                                    }
                                }
                                other => word.push(other),
                            }
                        }
                        other => word.push(other),
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ParseError::UnbalancedQuotes);
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ParseError::UnbalancedQuotes);
                    };
                    i += 1;
                    match c {
                        b'\'' => break,
                        b'\\' if line.get(i) == Some(&b'\'') => {
                            word.push(b'\'');
                            i += 1;
                        }
                        other => word.push(other),
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ParseError::UnbalancedQuotes);
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
    Ok(words)
}

/// Encodes a request as an array of bulk strings.
pub fn encode_request(args: &[&[u8]], out: &mut BytesMut) {
    out.put_u8(b'*');
    out.put_slice(args.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    for a in args {
        out.put_u8(b'$');
        out.put_slice(a.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> RequestParser {
        RequestParser::new(Limits {
            max_bulk_len: 8,
            max_array_len: 8,
            max_inline_len: 64,
        })
    }

    #[test]
    fn an_oversized_bulk_string_is_refused_and_skipped_as_it_arrives() {
        let mut parser = small();
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$10\r\n0123"[..]);
        let err = parser.parse(&mut buf).unwrap_err();
        assert!(!err.is_fatal());
        assert!(err
            .reply_text()
            .starts_with("ERR string exceeds maximum allowed size"));
        assert_eq!(parser.parse(&mut buf), Ok(None));
        assert!(buf.is_empty(), "skipped bytes are dropped, not buffered");
        // The rest of the value, then the request's last argument (over the limit too).
        buf.extend_from_slice(b"456789\r\n$12\r\n0123456789ab\r\n*1\r\n$4\r\nPING\r\n");
        let ping = parser.parse(&mut buf).unwrap().unwrap();
        assert_eq!(ping.args, vec![Bytes::from_static(b"PING")]);
        assert!(!parser.discarding() && buf.is_empty());
    }

    #[test]
    fn garbage_where_a_skipped_argument_should_start_is_fatal() {
        let mut parser = small();
        let mut buf = BytesMut::from(&b"*2\r\n$9\r\n012345678\r\nxx\r\n"[..]);
        assert!(!parser.parse(&mut buf).unwrap_err().is_fatal());
        assert!(parser.parse(&mut buf).unwrap_err().is_fatal());
        let mut negative = BytesMut::from(&b"*1\r\n$-3\r\n"[..]);
        assert!(small().parse(&mut negative).unwrap_err().is_fatal());
    }
}
