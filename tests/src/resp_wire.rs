//! A blocking RESP2/RESP3 connection for tests, with a reply parser of its own: the oracle
//! tests compare what a real redis-server and a cluster put on the wire, so they must not read
//! the cluster's replies with the cluster's own parser.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One reply as it came off the wire, RESP2 and RESP3 types kept apart.
#[derive(Debug, Clone, PartialEq)]
pub enum RespValue {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `$`: `None` is RESP2's null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*`: `None` is RESP2's null array (`*-1`).
    Array(Option<Vec<RespValue>>),
    /// RESP3 `_`.
    Null,
    /// RESP3 `,`, kept as its text (`inf`, `1.5`, ...).
    Double(String),
    Boolean(bool),
    /// RESP3 `=`: the three-letter format and the text.
    Verbatim(String, Vec<u8>),
    BigNumber(String),
    /// RESP3 `!`.
    BlobError(Vec<u8>),
    Map(Vec<(RespValue, RespValue)>),
    Set(Vec<RespValue>),
    Push(Vec<RespValue>),
}

impl RespValue {
    /// The reply's type, for comparisons where only the shape must agree.
    pub fn kind(&self) -> &'static str {
        match self {
            RespValue::Simple(_) => "simple string",
            RespValue::Error(_) | RespValue::BlobError(_) => "error",
            RespValue::Integer(_) => "integer",
            RespValue::Bulk(Some(_)) => "bulk string",
            RespValue::Bulk(None) | RespValue::Array(None) | RespValue::Null => "null",
            RespValue::Array(Some(_)) => "array",
            RespValue::Double(_) => "double",
            RespValue::Boolean(_) => "boolean",
            RespValue::Verbatim(..) => "verbatim string",
            RespValue::BigNumber(_) => "big number",
            RespValue::Map(_) => "map",
            RespValue::Set(_) => "set",
            RespValue::Push(_) => "push",
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, RespValue::Error(_) | RespValue::BlobError(_))
    }
}

/// Bytes shown as redis-cli quotes them, for failure messages.
fn show_bytes(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        match c {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(char::from(c));
            }
            b' '..=b'~' => s.push(char::from(c)),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

impl fmt::Display for RespValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, open: &str, items: &[RespValue], close: &str| {
            write!(f, "{open}")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{item}")?;
            }
            write!(f, "{close}")
        };
        match self {
            RespValue::Simple(s) => write!(f, "+{s}"),
            RespValue::Error(e) => write!(f, "-{e}"),
            RespValue::Integer(n) => write!(f, "(integer) {n}"),
            RespValue::Bulk(Some(b)) => write!(f, "{}", show_bytes(b)),
            RespValue::Bulk(None) => write!(f, "(nil bulk)"),
            RespValue::Array(None) => write!(f, "(nil array)"),
            RespValue::Null => write!(f, "(null)"),
            RespValue::Double(d) => write!(f, "(double) {d}"),
            RespValue::Boolean(b) => write!(f, "(boolean) {b}"),
            RespValue::Verbatim(format, b) => write!(f, "(verbatim {format}) {}", show_bytes(b)),
            RespValue::BigNumber(n) => write!(f, "(big number) {n}"),
            RespValue::BlobError(b) => write!(f, "(blob error) {}", show_bytes(b)),
            RespValue::Array(Some(items)) => list(f, "[", items, "]"),
            RespValue::Set(items) => list(f, "(set) {", items, "}"),
            RespValue::Push(items) => list(f, "(push) [", items, "]"),
            RespValue::Map(pairs) => {
                write!(f, "{{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

/// A connection that sends one command and reads its reply, both blocking.
pub struct RespConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// How long a test waits for one reply before it fails (a node answers TIMEOUT itself sooner).
const REPLY_BOUND: Duration = Duration::from_secs(20);

impl RespConn {
    pub fn connect(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(REPLY_BOUND))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends `args` as one RESP array of bulk strings and reads the reply.
    pub fn call(&mut self, args: &[Vec<u8>]) -> std::io::Result<RespValue> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)?;
        read_value(&mut self.reader)
    }

    /// [`Self::call`] with text arguments.
    pub fn call_str(&mut self, args: &[&str]) -> std::io::Result<RespValue> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        self.call(&args)
    }
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(invalid(format!(
            "reply line not ended by CRLF: {}",
            show_bytes(&line)
        )));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|e| invalid(format!("reply line not UTF-8: {e}")))
}

fn read_blob(r: &mut impl BufRead, len: &str) -> std::io::Result<Vec<u8>> {
    let len: usize = len
        .parse()
        .map_err(|_| invalid(format!("bad length {len:?}")))?;
    let mut blob = vec![0; len + 2];
    r.read_exact(&mut blob)?;
    if !blob.ends_with(b"\r\n") {
        return Err(invalid("blob not ended by CRLF".into()));
    }
    blob.truncate(len);
    Ok(blob)
}

fn read_items(r: &mut impl BufRead, count: &str) -> std::io::Result<Vec<RespValue>> {
    let count: usize = count
        .parse()
        .map_err(|_| invalid(format!("bad count {count:?}")))?;
    (0..count).map(|_| read_value(r)).collect()
}

/// Reads one reply. A RESP3 attribute (`|`) is read and dropped: it annotates the reply
/// after it.
pub fn read_value(r: &mut impl BufRead) -> std::io::Result<RespValue> {
    let line = read_line(r)?;
    let Some(kind) = line.chars().next() else {
        return Err(invalid("empty reply line".into()));
    };
    let rest = &line[kind.len_utf8()..];
    Ok(match kind {
        '+' => RespValue::Simple(rest.to_string()),
        '-' => RespValue::Error(rest.to_string()),
        ':' => RespValue::Integer(
            rest.parse()
                .map_err(|_| invalid(format!("bad integer {rest:?}")))?,
        ),
        '$' if rest == "-1" => RespValue::Bulk(None),
        '$' => RespValue::Bulk(Some(read_blob(r, rest)?)),
        '*' if rest == "-1" => RespValue::Array(None),
        '*' => RespValue::Array(Some(read_items(r, rest)?)),
        '_' => RespValue::Null,
        ',' => RespValue::Double(rest.to_string()),
        '#' => RespValue::Boolean(rest == "t"),
        '(' => RespValue::BigNumber(rest.to_string()),
        '!' => RespValue::BlobError(read_blob(r, rest)?),
        '=' => {
            let blob = read_blob(r, rest)?;
            let format = String::from_utf8_lossy(blob.get(..3).unwrap_or_default()).into_owned();
            RespValue::Verbatim(format, blob.get(4..).unwrap_or_default().to_vec())
        }
        '~' => RespValue::Set(read_items(r, rest)?),
        '>' => RespValue::Push(read_items(r, rest)?),
        '%' => {
            let items = read_items(r, &double_count(rest)?)?;
            let mut pairs = Vec::new();
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            RespValue::Map(pairs)
        }
        '|' => {
            read_items(r, &double_count(rest)?)?;
            return read_value(r);
        }
        _ => return Err(invalid(format!("unknown reply type in {line:?}"))),
    })
}

fn double_count(count: &str) -> std::io::Result<String> {
    let n: usize = count
        .parse()
        .map_err(|_| invalid(format!("bad map size {count:?}")))?;
    Ok((2 * n).to_string())
}

/// Splits a command line into arguments as redis-cli does: blanks separate them; a "double
/// quoted" argument takes the escapes \n \r \t \b \a \\ \" and \xHH; a 'single quoted' one
/// takes \' only. None if a quote is left open.
pub fn split_args(line: &str) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut chars = line.as_bytes().iter().copied().peekable();
    loop {
        while chars.next_if(u8::is_ascii_whitespace).is_some() {}
        let Some(&first) = chars.peek() else {
            return Some(args);
        };
        let mut arg = Vec::new();
        match first {
            b'"' => {
                chars.next();
                loop {
                    match chars.next()? {
                        b'"' => break,
                        b'\\' => match chars.next()? {
                            b'n' => arg.push(b'\n'),
                            b'r' => arg.push(b'\r'),
                            b't' => arg.push(b'\t'),
                            b'b' => arg.push(0x08),
                            b'a' => arg.push(0x07),
                            b'x' => {
                                let hex = [chars.next()?, chars.next()?];
                                let hex = std::str::from_utf8(&hex).ok()?;
                                arg.push(u8::from_str_radix(hex, 16).ok()?);
                            }
                            other => arg.push(other),
                        },
                        c => arg.push(c),
                    }
                }
            }
            b'\'' => {
                chars.next();
                loop {
                    match chars.next()? {
                        b'\'' => break,
                        b'\\' if chars.peek() == Some(&b'\'') => {
                            chars.next();
                            arg.push(b'\'');
                        }
                        c => arg.push(c),
                    }
                }
            }
            _ => {
                while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
                    arg.push(c);
                }
            }
        }
        args.push(arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_as_redis_cli_splits_them() {
        let args = split_args(r#"SET "a b\x00\n" 'it\'s' plain  "" "#).unwrap();
        let want: Vec<Vec<u8>> = vec![
            b"SET".to_vec(),
            b"a b\x00\n".to_vec(),
            b"it's".to_vec(),
            b"plain".to_vec(),
            Vec::new(),
        ];
        assert_eq!(args, want);
        assert_eq!(split_args("GET \"open"), None);
    }

    #[test]
    fn replies_of_every_type_parse() {
        let wire =
            b"*3\r\n:1\r\n$-1\r\n%1\r\n+k\r\n,1.5\r\n|1\r\n+a\r\n+b\r\n#t\r\n=7\r\ntxt:abc\r\n";
        let mut r = &wire[..];
        let got = read_value(&mut r).unwrap();
        assert_eq!(
            got,
            RespValue::Array(Some(vec![
                RespValue::Integer(1),
                RespValue::Bulk(None),
                RespValue::Map(vec![(
                    RespValue::Simple("k".into()),
                    RespValue::Double("1.5".into())
                )]),
            ]))
        );
        assert_eq!(read_value(&mut r).unwrap(), RespValue::Boolean(true));
        assert_eq!(
            read_value(&mut r).unwrap(),
            RespValue::Verbatim("txt".into(), b"abc".to_vec())
        );
        assert!(read_value(&mut &b"$3\r\nab\r\n"[..]).is_err());
    }
}
