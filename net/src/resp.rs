//! The Redis protocol, version 2 (RESP2): requests from clients and replies to them.
//!
//! Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or inline commands
//! (a line of words, as telnet sends; quotes as in redis-cli). Parsing is incremental: a request
//! split over many reads parses once its last byte arrives, and nothing is consumed before that.
//!
//! Every length is checked against [`Limits`] before anything is allocated or awaited, so a
//! client that claims a 1 TiB bulk string is refused at once instead of being buffered for.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

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
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// Parses one complete request from the front of `buf`, removing its bytes. `Ok(None)`: more
    /// bytes are needed and nothing was consumed. `Err`: a protocol violation; close the
    /// connection after replying.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ParseError> {
        loop {
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
                Parsed::Inline(n, words) => {
                    buf.advance(n);
                    return Ok(Some(Request {
                        args: words.into_iter().map(Bytes::from).collect(),
                    }));
                }
            }
        }
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
            if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                return Err(ParseError::BulkTooLarge {
                    len,
                    max: self.limits.max_bulk_len,
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

/// A reply to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// `$-1`: no value.
    Nil,
    Array(Vec<Reply>),
    /// `*-1`.
    NilArray,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Reply::Simple(s) => put_line(out, b'+', s),
            Reply::Error(s) => put_line(out, b'-', s),
            Reply::Integer(n) => {
                out.put_u8(b':');
                out.put_slice(n.to_string().as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Bulk(b) => {
                out.put_u8(b'$');
                out.put_slice(b.len().to_string().as_bytes());
                out.put_slice(b"\r\n");
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Reply::Nil => out.put_slice(b"$-1\r\n"),
            Reply::NilArray => out.put_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                out.put_u8(b'*');
                out.put_slice(items.len().to_string().as_bytes());
                out.put_slice(b"\r\n");
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

/// A status or error line may not contain CR or LF: they would end it early.
fn put_line(out: &mut BytesMut, tag: u8, text: &str) {
    out.put_u8(tag);
    for b in text.bytes() {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
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

/// Parses replies, for clients.
pub struct ReplyParser {
    limits: Limits,
}

const MAX_REPLY_DEPTH: usize = 32;

impl ReplyParser {
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ParseError> {
        match self.parse_at(buf, 0, 0)? {
            Some((reply, used)) => {
                buf.advance(used);
                Ok(Some(reply))
            }
            None => Ok(None),
        }
    }

    fn parse_at(
        &self,
        buf: &[u8],
        pos: usize,
        depth: usize,
    ) -> Result<Option<(Reply, usize)>, ParseError> {
        if depth > MAX_REPLY_DEPTH {
            return Err(ParseError::TooDeep);
        }
        let Some(&tag) = buf.get(pos) else {
            return Ok(None);
        };
        let Some(end) = find_crlf(buf, pos + 1) else {
            return if buf.len() - pos > self.limits.max_inline_len {
                Err(ParseError::InlineTooLong {
                    max: self.limits.max_inline_len,
                })
            } else {
                Ok(None)
            };
        };
        let line = &buf[pos + 1..end];
        let next = end + 2;
        let text = || String::from_utf8_lossy(line).into_owned();
        match tag {
            b'+' => Ok(Some((Reply::Simple(text()), next))),
            b'-' => Ok(Some((Reply::Error(text()), next))),
            b':' => Ok(Some((Reply::Integer(parse_int(line)?), next))),
            b'$' => {
                let len = parse_int(line)?;
                if len == -1 {
                    return Ok(Some((Reply::Nil, next)));
                }
                if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                    return Err(ParseError::BulkTooLarge {
                        len,
                        max: self.limits.max_bulk_len,
                    });
                }
                let stop = next + len as usize;
                if buf.len() < stop + 2 {
                    return Ok(None);
                }
                if &buf[stop..stop + 2] != b"\r\n" {
                    return Err(ParseError::ExpectedCrlf);
                }
                Ok(Some((
                    Reply::Bulk(Bytes::copy_from_slice(&buf[next..stop])),
                    stop + 2,
                )))
            }
            b'*' => {
                let len = parse_int(line)?;
                if len == -1 {
                    return Ok(Some((Reply::NilArray, next)));
                }
                if len < 0 || len as u64 > self.limits.max_array_len as u64 {
                    return Err(ParseError::ArrayTooLarge {
                        len,
                        max: self.limits.max_array_len,
                    });
                }
                let mut items = Vec::with_capacity((len as usize).min(64));
                let mut at = next;
                for _ in 0..len {
                    match self.parse_at(buf, at, depth + 1)? {
                        Some((item, used)) => {
                            items.push(item);
                            at = used;
                        }
                        None => return Ok(None),
                    }
                }
                Ok(Some((Reply::Array(items), at)))
            }
            other => Err(ParseError::UnexpectedByte(other)),
        }
    }
}
