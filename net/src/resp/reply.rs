//! Replies: built once as [`Reply`] values, encoded for the protocol version the connection
//! chose with HELLO. RESP3 has types RESP2 lacks (maps, sets, nulls, doubles, booleans,
//! verbatim strings); for a RESP2 connection each is sent as Redis sends it: a map as a flat
//! array of key, value, ..., a set as an array, a double as a bulk string, a boolean as 1 or 0,
//! a verbatim string as a bulk string of its text, and a null as `$-1` or `*-1` depending on
//! whether a string or an array was expected ([`Reply::Nil`], [`Reply::NilArray`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{find_crlf, parse_int, Limits, ParseError};

/// The protocol version of a connection: 2 until the client asks for 3 with `HELLO 3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

impl Protocol {
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// A reply to a client.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// No value where a string was expected: `$-1` (RESP2), `_` (RESP3).
    Nil,
    Array(Vec<Reply>),
    /// No value where an array was expected: `*-1` (RESP2), `_` (RESP3).
    NilArray,
    /// Key-value pairs in order: `%` (RESP3), a flat array of key, value, ... (RESP2).
    Map(Vec<(Reply, Reply)>),
    /// `~` (RESP3), an array (RESP2).
    Set(Vec<Reply>),
    /// `,` (RESP3), a bulk string (RESP2).
    Double(f64),
    /// `#t`/`#f` (RESP3), the integer 1 or 0 (RESP2).
    Boolean(bool),
    /// Text meant for people (INFO, CLIENT LIST): `=` with format `txt` (RESP3), a bulk
    /// string (RESP2).
    Verbatim(Bytes),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    pub fn bulk(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    /// A map whose keys are bulk strings.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Reply)>) -> Reply {
        Reply::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Reply::bulk(k), v))
                .collect(),
        )
    }

    /// Encodes as RESP2.
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_for(Protocol::Resp2, out)
    }

    pub fn encode_for(&self, proto: Protocol, out: &mut BytesMut) {
        let resp3 = proto == Protocol::Resp3;
        match self {
            Reply::Simple(s) => put_line(out, b'+', s),
            Reply::Error(s) => put_line(out, b'-', s),
            Reply::Integer(n) => put_header(out, b':', *n),
            Reply::Bulk(b) => put_blob(out, b'$', b),
            Reply::Nil if resp3 => out.put_slice(b"_\r\n"),
            Reply::NilArray if resp3 => out.put_slice(b"_\r\n"),
            Reply::Nil => out.put_slice(b"$-1\r\n"),
            Reply::NilArray => out.put_slice(b"*-1\r\n"),
            Reply::Array(items) => put_items(out, b'*', items, proto),
            Reply::Set(items) => put_items(out, if resp3 { b'~' } else { b'*' }, items, proto),
            Reply::Map(pairs) => {
                if resp3 {
                    put_header(out, b'%', pairs.len() as i64);
                } else {
                    put_header(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode_for(proto, out);
                    v.encode_for(proto, out);
                }
            }
            Reply::Double(d) if resp3 => put_line(out, b',', &format_double(*d)),
            Reply::Double(d) => put_blob(out, b'$', format_double(*d).as_bytes()),
            Reply::Boolean(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Reply::Boolean(b) => put_header(out, b':', i64::from(*b)),
            Reply::Verbatim(text) if resp3 => {
                put_header(out, b'=', text.len() as i64 + 4);
                out.put_slice(b"txt:");
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Reply::Verbatim(text) => put_blob(out, b'$', text),
        }
    }
}

/// As Redis prints doubles: `inf`, `-inf`, `nan`, else the shortest text that reads back.
fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        d.to_string()
    }
}

fn put_header(out: &mut BytesMut, tag: u8, n: i64) {
    out.put_u8(tag);
    out.put_slice(n.to_string().as_bytes());
    out.put_slice(b"\r\n");
}

fn put_blob(out: &mut BytesMut, tag: u8, b: &[u8]) {
    put_header(out, tag, b.len() as i64);
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

fn put_items(out: &mut BytesMut, tag: u8, items: &[Reply], proto: Protocol) {
    put_header(out, tag, items.len() as i64);
    for item in items {
        item.encode_for(proto, out);
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

/// Parses replies, RESP2 or RESP3, for clients.
pub struct ReplyParser {
    limits: Limits,
}

const MAX_REPLY_DEPTH: usize = 32;

type Parsed = Option<(Reply, usize)>;

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

    fn parse_at(&self, buf: &[u8], pos: usize, depth: usize) -> Result<Parsed, ParseError> {
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
        let done = |reply| Ok(Some((reply, next)));
        match tag {
            b'+' | b'(' => done(Reply::Simple(text())),
            b'-' => done(Reply::Error(text())),
            b':' => done(Reply::Integer(parse_int(line)?)),
            b'_' => done(Reply::Nil),
            b'#' => match line {
                b"t" => done(Reply::Boolean(true)),
                b"f" => done(Reply::Boolean(false)),
                _ => Err(ParseError::InvalidLength(text())),
            },
            b',' => match text().parse::<f64>() {
                Ok(d) => done(Reply::Double(d)),
                Err(_) => Err(ParseError::InvalidLength(text())),
            },
            b'$' | b'=' => {
                let len = parse_int(line)?;
                if len == -1 && tag == b'$' {
                    return done(Reply::Nil);
                }
                let Some((blob, used)) = self.blob(buf, next, len)? else {
                    return Ok(None);
                };
                if tag == b'$' {
                    return Ok(Some((Reply::Bulk(blob), used)));
                }
                match blob.get(..4) {
                    Some(_) => Ok(Some((Reply::Verbatim(blob.slice(4..)), used))),
                    None => Err(ParseError::InvalidLength(text())),
                }
            }
            b'*' | b'~' | b'>' | b'%' => {
                let len = parse_int(line)?;
                if len == -1 && tag == b'*' {
                    return done(Reply::NilArray);
                }
                let per_entry = if tag == b'%' { 2 } else { 1 };
                if len < 0
                    || (len as u64).saturating_mul(per_entry) > self.limits.max_array_len as u64
                {
                    return Err(ParseError::ArrayTooLarge {
                        len,
                        max: self.limits.max_array_len,
                    });
                }
                let Some((mut items, at)) =
                    self.items(buf, next, len as usize * per_entry as usize, depth)?
                else {
                    return Ok(None);
                };
                let reply = match tag {
                    b'~' => Reply::Set(items),
                    b'%' => {
                        let mut pairs = Vec::with_capacity(items.len() / 2);
                        while let (Some(v), Some(k)) = (items.pop(), items.pop()) {
                            pairs.push((k, v));
                        }
                        pairs.reverse();
                        Reply::Map(pairs)
                    }
                    _ => Reply::Array(items),
                };
                Ok(Some((reply, at)))
            }
            other => Err(ParseError::UnexpectedByte(other)),
        }
    }

    /// A blob of `len` bytes at `at`, followed by CRLF.
    fn blob(&self, buf: &[u8], at: usize, len: i64) -> Result<Option<(Bytes, usize)>, ParseError> {
        if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
            return Err(ParseError::BulkTooLarge {
                len,
                max: self.limits.max_bulk_len,
            });
        }
        let stop = at + len as usize;
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(ParseError::ExpectedCrlf);
        }
        Ok(Some((Bytes::copy_from_slice(&buf[at..stop]), stop + 2)))
    }

    fn items(
        &self,
        buf: &[u8],
        mut at: usize,
        count: usize,
        depth: usize,
    ) -> Result<Option<(Vec<Reply>, usize)>, ParseError> {
        let mut items = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            match self.parse_at(buf, at, depth + 1)? {
                Some((item, used)) => {
                    items.push(item);
                    at = used;
                }
                None => return Ok(None),
            }
        }
        Ok(Some((items, at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply, proto: Protocol) -> String {
        let mut out = BytesMut::new();
        reply.encode_for(proto, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn sample() -> Reply {
        Reply::Array(vec![
            Reply::map([
                ("proto", Reply::Integer(3)),
                ("modules", Reply::Array(vec![])),
            ]),
            Reply::Set(vec![Reply::Simple("fast".into())]),
            Reply::Nil,
            Reply::NilArray,
            Reply::Double(1.5),
            Reply::Double(f64::INFINITY),
            Reply::Boolean(true),
            Reply::Boolean(false),
            Reply::Verbatim(Bytes::from_static(b"a:1\r\n")),
        ])
    }

    #[test]
    fn resp3_types_are_downgraded_for_resp2_as_redis_does() {
        assert_eq!(
            encoded(&sample(), Protocol::Resp2),
            "*9\r\n*4\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n*1\r\n+fast\r\n$-1\r\n*-1\r\n\
             $3\r\n1.5\r\n$3\r\ninf\r\n:1\r\n:0\r\n$5\r\na:1\r\n\r\n"
        );
    }

    #[test]
    fn resp3_encoding() {
        assert_eq!(
            encoded(&sample(), Protocol::Resp3),
            "*9\r\n%2\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n~1\r\n+fast\r\n_\r\n_\r\n\
             ,1.5\r\n,inf\r\n#t\r\n#f\r\n=9\r\ntxt:a:1\r\n\r\n"
        );
        assert_eq!(
            encoded(&Reply::Double(f64::NAN), Protocol::Resp3),
            ",nan\r\n"
        );
        assert_eq!(encoded(&Reply::Double(-3.0), Protocol::Resp3), ",-3\r\n");
    }

    #[test]
    fn the_reply_parser_reads_what_the_encoder_writes_in_both_protocols() {
        for proto in [Protocol::Resp2, Protocol::Resp3] {
            let mut buf = BytesMut::new();
            sample().encode_for(proto, &mut buf);
            let whole = buf.clone();
            let parsed = ReplyParser::new(Limits::default()).parse(&mut buf).unwrap();
            assert!(buf.is_empty());
            let parsed = parsed.unwrap();
            if proto == Protocol::Resp3 {
                let mut expected = sample();
                if let Reply::Array(items) = &mut expected {
                    items[3] = Reply::Nil;
                }
                assert_eq!(parsed, expected);
            }
            // Every strict prefix asks for more bytes.
            for cut in 0..whole.len() {
                let mut part = BytesMut::from(&whole[..cut]);
                assert_eq!(
                    ReplyParser::new(Limits::default()).parse(&mut part),
                    Ok(None)
                );
            }
        }
    }

    #[test]
    fn hostile_replies_are_refused() {
        for bad in [
            &b"%-2\r\n"[..],
            b"~99999999999\r\n",
            b"#x\r\n",
            b",abc\r\n",
            b"=2\r\nab\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                ReplyParser::new(Limits::default()).parse(&mut buf).is_err(),
                "{bad:?}"
            );
        }
    }
}
