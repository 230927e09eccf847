//! The data commands' syntax: each command line becomes a read ([`kv::Query`]) or a write
//! ([`kv::Op`]), with Redis's error text for what it refuses. Parsing is separate from running
//! so that `MULTI` can check a command when it is queued, as Redis does.

use bytes::Bytes;
use kv::{Deadline, ExpireCondition, Op, Query, SetCondition, TtlForm};

/// A parsed data command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Read(Query, Shape),
    Write(Op, Shape),
}

/// How a result is shown to the client when the command's reply differs from the op's result
/// (`SETNX` answers 1/0 where `SET NX` answers OK/nil).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    AsIs,
    /// OK is 1, nil is 0.
    OkAsOne,
    /// `SCAN ... TYPE t` for a type no key has: no keys.
    NoKeys,
}

const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

/// Whether `name` (any case) only reads.
pub fn is_read(name: &[u8]) -> bool {
    const READS: [&str; 12] = [
        "GET",
        "EXISTS",
        "MGET",
        "TTL",
        "PTTL",
        "EXPIRETIME",
        "PEXPIRETIME",
        "STRLEN",
        "TYPE",
        "DBSIZE",
        "SCAN",
        "KEYS",
    ];
    READS
        .iter()
        .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
}

/// Every data command this parser knows, upper case.
pub const DATA_COMMANDS: [&str; 37] = [
    "GET",
    "SET",
    "SETNX",
    "SETEX",
    "PSETEX",
    "GETSET",
    "GETDEL",
    "MGET",
    "MSET",
    "MSETNX",
    "DEL",
    "UNLINK",
    "EXISTS",
    "INCR",
    "DECR",
    "INCRBY",
    "DECRBY",
    "CAS",
    "APPEND",
    "STRLEN",
    "TYPE",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "TTL",
    "PTTL",
    "EXPIRETIME",
    "PEXPIRETIME",
    "PERSIST",
    "KEYS",
    "SCAN",
    "DBSIZE",
    "RENAME",
    "RENAMENX",
    "FLUSHDB",
    "FLUSHALL",
];

fn int(b: &[u8]) -> Result<i64, String> {
    kv::redis_int::parse_i64(b).ok_or_else(|| NOT_INTEGER.to_string())
}

/// Redis's text for a command it does not know: the name as it was sent, and the first
/// arguments.
pub fn unknown_command(sent_name: &[u8], args: &[Bytes]) -> String {
    let first: String = args
        .iter()
        .take(3)
        .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
        .collect();
    format!(
        "ERR unknown command '{}', with args beginning with: {first}",
        String::from_utf8_lossy(sent_name)
    )
}

fn arity(name: &str) -> String {
    format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

/// Parses data command `name` (upper case); `None` if it is not one.
pub fn parse(name: &str, args: &[Bytes]) -> Option<Result<Parsed, String>> {
    DATA_COMMANDS
        .contains(&name)
        .then(|| parse_known(name, args))
}

fn parse_known(name: &str, args: &[Bytes]) -> Result<Parsed, String> {
    use Parsed::{Read, Write};
    use Shape::AsIs;
    let key = |i: usize| args[i].clone();
    let keys = |from: usize| args[from..].to_vec();
    match (name, args.len()) {
        ("GET", 1) => Ok(Read(Query::Get { key: key(0) }, AsIs)),
        ("MGET" | "EXISTS", n) if n >= 1 => Ok(Read(
            if name == "MGET" {
                Query::MGet { keys: keys(0) }
            } else {
                Query::Exists { keys: keys(0) }
            },
            AsIs,
        )),
        ("STRLEN", 1) => Ok(Read(Query::StrLen { key: key(0) }, AsIs)),
        ("TYPE", 1) => Ok(Read(Query::Type { key: key(0) }, AsIs)),
        ("TTL" | "PTTL" | "EXPIRETIME" | "PEXPIRETIME", 1) => {
            let form = match name {
                "TTL" => TtlForm::Seconds,
                "PTTL" => TtlForm::Millis,
                "EXPIRETIME" => TtlForm::AtSeconds,
                _ => TtlForm::AtMillis,
            };
            Ok(Read(Query::Ttl { key: key(0), form }, AsIs))
        }
        ("DBSIZE", 0) => Ok(Read(Query::DbSize, AsIs)),
        ("KEYS", 1) => Ok(Read(Query::Keys { pattern: key(0) }, AsIs)),
        ("SCAN", n) if n >= 1 => scan(args),
        ("SET", n) if n >= 2 => set(args),
        ("SETNX", 2) => Ok(Write(
            set_op(
                key(0),
                key(1),
                SetCondition::IfAbsent,
                Deadline::None,
                false,
            ),
            Shape::OkAsOne,
        )),
        ("SETEX" | "PSETEX", 3) => {
            let unit = if name == "SETEX" { 1000 } else { 1 };
            let ms = int(&args[1]).and_then(|n| positive_ms(n, unit, name))?;
            Ok(Write(
                set_op(
                    key(0),
                    key(2),
                    SetCondition::Always,
                    Deadline::In(ms),
                    false,
                ),
                AsIs,
            ))
        }
        ("GETSET", 2) => Ok(Write(
            set_op(key(0), key(1), SetCondition::Always, Deadline::None, true),
            AsIs,
        )),
        ("GETDEL", 1) => Ok(Write(Op::GetDel { key: key(0) }, AsIs)),
        ("MSET" | "MSETNX", n) if n >= 2 && n % 2 == 0 => Ok(Write(
            Op::MSet {
                pairs: args
                    .chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
                if_none_exist: name == "MSETNX",
            },
            AsIs,
        )),
        ("DEL" | "UNLINK", n) if n >= 1 => Ok(Write(Op::DeleteMany { keys: keys(0) }, AsIs)),
        ("INCR" | "DECR", 1) => Ok(Write(
            Op::Incr {
                key: key(0),
                by: if name == "INCR" { 1 } else { -1 },
            },
            AsIs,
        )),
        ("INCRBY" | "DECRBY", 2) => {
            let by = int(&args[1])?;
            let by = if name == "DECRBY" {
                by.checked_neg()
                    .ok_or_else(|| "ERR decrement would overflow".to_string())?
            } else {
                by
            };
            Ok(Write(Op::Incr { key: key(0), by }, AsIs))
        }
        ("CAS", 2) => Ok(Write(
            Op::Cas {
                key: key(0),
                expected: None,
                new: Some(key(1)),
            },
            AsIs,
        )),
        ("CAS", 3) => Ok(Write(
            Op::Cas {
                key: key(0),
                expected: Some(key(1)),
                new: Some(key(2)),
            },
            AsIs,
        )),
        ("APPEND", 2) => Ok(Write(
            Op::Append {
                key: key(0),
                value: key(1),
            },
            AsIs,
        )),
        ("EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT", n) if n >= 2 => expire(name, args),
        ("PERSIST", 1) => Ok(Write(
            Op::Expire {
                key: key(0),
                deadline: Deadline::None,
                condition: ExpireCondition::Always,
            },
            AsIs,
        )),
        ("RENAME" | "RENAMENX", 2) => Ok(Write(
            Op::Rename {
                from: key(0),
                to: key(1),
                if_absent: name == "RENAMENX",
            },
            AsIs,
        )),
        ("FLUSHDB" | "FLUSHALL", 0) => Ok(Write(Op::FlushAll, AsIs)),
        ("FLUSHDB" | "FLUSHALL", 1) if matches!(upper(&args[0]).as_str(), "ASYNC" | "SYNC") => {
            Ok(Write(Op::FlushAll, AsIs))
        }
        ("FLUSHDB" | "FLUSHALL", 1) => Err(SYNTAX.to_string()),
        _ => Err(arity(name)),
    }
}

fn set_op(key: Bytes, value: Bytes, condition: SetCondition, deadline: Deadline, get: bool) -> Op {
    Op::SetWith {
        key,
        value,
        condition,
        deadline,
        get,
    }
}

/// A relative time of `n` units of `unit` ms, which Redis requires to be positive.
fn positive_ms(n: i64, unit: i64, name: &str) -> Result<u64, String> {
    match n.checked_mul(unit) {
        Some(ms) if n > 0 => Ok(ms as u64),
        _ => Err(format!(
            "ERR invalid expire time in '{}' command",
            name.to_ascii_lowercase()
        )),
    }
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`
fn set(args: &[Bytes]) -> Result<Parsed, String> {
    let mut condition = SetCondition::Always;
    let mut deadline = Deadline::None;
    let (mut get, mut timed) = (false, false);
    let mut i = 2;
    while i < args.len() {
        let opt = upper(&args[i]);
        match opt.as_str() {
            "NX" | "XX" if condition == SetCondition::Always => {
                condition = if opt == "NX" {
                    SetCondition::IfAbsent
                } else {
                    SetCondition::IfPresent
                }
            }
            "GET" if !get => get = true,
            "KEEPTTL" if !timed => {
                timed = true;
                deadline = Deadline::Keep;
            }
            "EX" | "PX" | "EXAT" | "PXAT" if !timed && i + 1 < args.len() => {
                timed = true;
                i += 1;
                let n = int(&args[i])?;
                let unit = if opt.starts_with('E') { 1000 } else { 1 };
                let ms = positive_ms(n, unit, "set")?;
                deadline = if opt.ends_with("AT") {
                    Deadline::At(ms)
                } else {
                    Deadline::In(ms)
                };
            }
            _ => return Err(SYNTAX.to_string()),
        }
        i += 1;
    }
    Ok(Parsed::Write(
        set_op(args[0].clone(), args[1].clone(), condition, deadline, get),
        Shape::AsIs,
    ))
}

/// `EXPIRE key n [NX|XX|GT|LT]` and its kin. A time already past deletes the key.
fn expire(name: &str, args: &[Bytes]) -> Result<Parsed, String> {
    let n = int(&args[1])?;
    let unit = if name.starts_with('P') { 1 } else { 1000 };
    let invalid = || {
        format!(
            "ERR invalid expire time in '{}' command",
            name.to_ascii_lowercase()
        )
    };
    let ms = n.checked_mul(unit).ok_or_else(invalid)?;
    let deadline = match (name.ends_with("AT"), ms) {
        (_, ms) if ms <= 0 => Deadline::At(1),
        (true, ms) => Deadline::At(ms as u64),
        (false, ms) => Deadline::In(ms as u64),
    };
    let mut condition = ExpireCondition::Always;
    for opt in &args[2..] {
        let next = match upper(opt).as_str() {
            "NX" => ExpireCondition::IfNone,
            "XX" => ExpireCondition::IfSome,
            "GT" => ExpireCondition::IfLater,
            "LT" => ExpireCondition::IfEarlier,
            other => return Err(format!("ERR Unsupported option {other}")),
        };
        use ExpireCondition::*;
        condition = match (condition, next) {
            (Always, c) => c,
            (a, b) if a == b => a,
            (IfNone, _) | (_, IfNone) => {
                return Err(
                    "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
                )
            }
            (IfLater, IfEarlier) | (IfEarlier, IfLater) => {
                return Err("ERR GT and LT options at the same time are not compatible".into())
            }
            // No deadline counts as infinitely late: GT already fails without one, LT passes.
            (IfSome, IfLater) | (IfLater, IfSome) => IfLater,
            (IfSome, IfEarlier) | (IfEarlier, IfSome) => IfSomeAndEarlier,
            (a, _) => a,
        };
    }
    Ok(Parsed::Write(
        Op::Expire {
            key: args[0].clone(),
            deadline,
            condition,
        },
        Shape::AsIs,
    ))
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`
fn scan(args: &[Bytes]) -> Result<Parsed, String> {
    let cursor = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| "ERR invalid cursor".to_string())?;
    let (mut pattern, mut count, mut shape) = (None, 10, Shape::AsIs);
    let mut rest = args[1..].chunks(2);
    for pair in rest.by_ref() {
        let [opt, value] = pair else {
            return Err(SYNTAX.to_string());
        };
        match upper(opt).as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => {
                count = int(value)?;
                if count < 1 {
                    return Err(SYNTAX.to_string());
                }
            }
            "TYPE" if !value.eq_ignore_ascii_case(b"string") => shape = Shape::NoKeys,
            "TYPE" => {}
            _ => return Err(SYNTAX.to_string()),
        }
    }
    Ok(Parsed::Read(
        Query::Scan {
            cursor,
            pattern,
            count: count as u64,
        },
        shape,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|a| Bytes::from(a.to_string())).collect()
    }

    fn parsed(line: &str) -> Result<Parsed, String> {
        let a = args(line);
        parse(
            &a[0]
                .to_ascii_uppercase()
                .iter()
                .map(|&c| c as char)
                .collect::<String>(),
            &a[1..],
        )
        .expect("a data command")
    }

    #[test]
    fn set_options_and_their_errors() {
        assert!(matches!(
            parsed("SET k v NX PX 100"),
            Ok(Parsed::Write(
                Op::SetWith {
                    condition: SetCondition::IfAbsent,
                    deadline: Deadline::In(100),
                    ..
                },
                _
            ))
        ));
        assert!(matches!(
            parsed("SET k v XX GET KEEPTTL"),
            Ok(Parsed::Write(
                Op::SetWith {
                    get: true,
                    deadline: Deadline::Keep,
                    ..
                },
                _
            ))
        ));
        assert_eq!(parsed("SET k v NX XX"), Err(SYNTAX.into()));
        assert_eq!(parsed("SET k v EX 1 PX 1"), Err(SYNTAX.into()));
        assert_eq!(parsed("SET k v EX"), Err(SYNTAX.into()));
        assert_eq!(
            parsed("SET k v EX 0"),
            Err("ERR invalid expire time in 'set' command".into())
        );
        assert_eq!(parsed("SET k v EX x"), Err(NOT_INTEGER.into()));
        assert_eq!(
            parsed("SETEX k -1 v"),
            Err("ERR invalid expire time in 'setex' command".into())
        );
        assert_eq!(parsed("MSET a 1 b"), Err(arity("MSET")));
        assert_eq!(parsed("INCRBY k +5"), Err(NOT_INTEGER.into()));
    }

    #[test]
    fn expire_options_combine_as_in_redis() {
        assert_eq!(
            parsed("EXPIRE k 10 NX XX"),
            Err("ERR NX and XX, GT or LT options at the same time are not compatible".into())
        );
        assert_eq!(
            parsed("EXPIRE k 10 GT LT"),
            Err("ERR GT and LT options at the same time are not compatible".into())
        );
        assert!(matches!(
            parsed("EXPIRE k -5"),
            Ok(Parsed::Write(
                Op::Expire {
                    deadline: Deadline::At(1),
                    ..
                },
                _
            ))
        ));
        assert!(matches!(
            parsed("PEXPIREAT k 5000"),
            Ok(Parsed::Write(
                Op::Expire {
                    deadline: Deadline::At(5000),
                    ..
                },
                _
            ))
        ));
    }

    #[test]
    fn scan_arguments() {
        assert_eq!(parsed("SCAN x"), Err("ERR invalid cursor".into()));
        assert_eq!(parsed("SCAN 0 COUNT 0"), Err(SYNTAX.into()));
        assert_eq!(parsed("SCAN 0 MATCH"), Err(SYNTAX.into()));
        assert!(matches!(
            parsed("SCAN 0 TYPE list"),
            Ok(Parsed::Read(Query::Scan { .. }, Shape::NoKeys))
        ));
        assert!(parse("HELLO", &[]).is_none());
    }
}
