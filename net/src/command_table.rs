//! The command table: every command the client port serves, described as Redis describes its
//! own (arity, flags, key positions, ACL categories, docs), and COMMAND answered from it.
//!
//! A new command is one row in [`COMMANDS`]. A unit test checks that the table and the commands
//! dispatched (the server's own, and [`crate::server_parse::DATA_COMMANDS`]) are the same set.

use bytes::Bytes;

use crate::resp::Reply;
use crate::server::upper;
use crate::server_conn::sub_arity_error;

/// One command. `arity` counts the command name: positive means exactly that many arguments,
/// negative at least that many. Keys are at `first_key..=last_key` by `step` (a negative
/// `last_key` counts from the end: -1 is the last argument); 0 when the command takes none.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// Lower case, as Redis reports it.
    pub name: &'static str,
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    /// How the command uses its keys, as Redis's key specs say it (`RO`, `access`, ...).
    pub key_flags: &'static [&'static str],
    pub acl_categories: &'static [&'static str],
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
}

/// One argument per column, so that a row of the table reads as one line.
#[allow(clippy::too_many_arguments)]
const fn row(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    (first_key, last_key, step): (i64, i64, i64),
    key_flags: &'static [&'static str],
    acl_categories: &'static [&'static str],
    group: &'static str,
    summary: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key,
        last_key,
        step,
        key_flags,
        acl_categories,
        group,
        since: "1.0.0",
        summary,
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const READ: &[&str] = &["RO", "access"];
const UPDATE: &[&str] = &["RW", "access", "update"];
const OVERWRITE: &[&str] = &["OW", "update"];
const REMOVE: &[&str] = &["RM", "delete"];
const STARTUP: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];

/// Every command served, in name order.
#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    row("append", 3, &["write", "denyoom", "fast"], ONE_KEY, UPDATE, &["@write", "@string", "@fast"], "string", "Appends a string to the value of a key"),
    row("auth", -2, STARTUP, NO_KEYS, &[], &["@fast", "@connection"], "connection", "Authenticates the connection"),
    row("cas", -3, &["write", "denyoom"], ONE_KEY, UPDATE, &["@write", "@string", "@slow"], "string", "Sets a key to a new value only if it holds the expected one (or is absent)"),
    row("client", -2, &[], NO_KEYS, &[], &["@slow"], "connection", "The connection's id, name and library; the open connections"),
    row("command", -1, &["loading", "stale"], NO_KEYS, &[], &["@slow", "@connection"], "server", "Describes the commands served"),
    row("config", -2, &[], NO_KEYS, &[], &["@slow"], "server", "Reads the server's settings"),
    row("dbsize", 1, &["readonly", "fast"], NO_KEYS, &[], &["@keyspace", "@read", "@fast"], "server", "The number of keys"),
    row("decr", 2, &["write", "denyoom", "fast"], ONE_KEY, UPDATE, &["@write", "@string", "@fast"], "string", "Decrements the integer value of a key by one"),
    row("decrby", 3, &["write", "denyoom", "fast"], ONE_KEY, UPDATE, &["@write", "@string", "@fast"], "string", "Decrements the integer value of a key by a number"),
    row("del", -2, &["write"], (1, -1, 1), REMOVE, &["@keyspace", "@write", "@slow"], "generic", "Deletes keys"),
    row("discard", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], NO_KEYS, &[], &["@fast", "@transaction"], "transactions", "Discards a transaction"),
    row("echo", 2, &["loading", "stale", "fast"], NO_KEYS, &[], &["@fast", "@connection"], "connection", "Returns the given string"),
    row("exec", 1, &["noscript", "loading", "stale", "skip_slowlog"], NO_KEYS, &[], &["@slow", "@transaction"], "transactions", "Applies the queued commands as one log entry, unless a watched key changed"),
    row("exists", -2, &["readonly", "fast"], (1, -1, 1), READ, &["@keyspace", "@read", "@fast"], "generic", "Counts how many of the given keys exist"),
    row("expire", -3, &["write", "fast"], ONE_KEY, UPDATE, &["@keyspace", "@write", "@fast"], "generic", "Sets a key's time to live in seconds"),
    row("expireat", -3, &["write", "fast"], ONE_KEY, UPDATE, &["@keyspace", "@write", "@fast"], "generic", "Sets a key's expiry as a Unix time in seconds"),
    row("expiretime", 2, &["readonly", "fast"], ONE_KEY, READ, &["@keyspace", "@read", "@fast"], "generic", "A key's expiry as a Unix time in seconds"),
    row("flushall", -1, &["write"], NO_KEYS, &[], &["@keyspace", "@write", "@slow", "@dangerous"], "server", "Removes every key"),
    row("flushdb", -1, &["write"], NO_KEYS, &[], &["@keyspace", "@write", "@slow", "@dangerous"], "server", "Removes every key of the database"),
    row("get", 2, &["readonly", "fast"], ONE_KEY, READ, &["@read", "@string", "@fast"], "string", "Returns the value of a key"),
    row("getdel", 2, &["write", "fast"], ONE_KEY, REMOVE, &["@write", "@string", "@fast"], "string", "Returns a key's value and deletes the key"),
    row("getset", 3, &["write", "denyoom", "fast"], ONE_KEY, UPDATE, &["@write", "@string", "@fast"], "string", "Sets a key and returns its previous value"),
    row("hello", -1, STARTUP, NO_KEYS, &[], &["@fast", "@connection"], "connection", "Chooses the protocol version (2 or 3) and describes the server"),
    row("incr", 2, &["write", "denyoom", "fast"], ONE_KEY, UPDATE, &["@write", "@string", "@fast"], "string", "Increments the integer value of a key by one"),
    row("incrby", 3, &["write", "denyoom", "fast"], ONE_KEY, UPDATE, &["@write", "@string", "@fast"], "string", "Increments the integer value of a key by a number"),
    row("info", -1, &["loading", "stale"], NO_KEYS, &[], &["@slow", "@dangerous"], "server", "The server's information and statistics"),
    row("keys", 2, &["readonly"], NO_KEYS, &[], &["@keyspace", "@read", "@slow", "@dangerous"], "generic", "The keys that match a pattern"),
    row("kvstore.backup", 1, &["admin", "noscript"], NO_KEYS, &[], &["@admin", "@slow", "@dangerous"], "server", "Streams a consistent image of the whole data set (kvstore backup); takes the connection over"),
    row("leader", 1, &["loading", "stale", "fast"], NO_KEYS, &[], &["@fast"], "server", "The Raft leader's client address, or nil while unknown"),
    row("mget", -2, &["readonly", "fast"], (1, -1, 1), READ, &["@read", "@string", "@fast"], "string", "The values of several keys"),
    row("mset", -3, &["write", "denyoom"], (1, -1, 2), OVERWRITE, &["@write", "@string", "@slow"], "string", "Sets several keys at once"),
    row("msetnx", -3, &["write", "denyoom"], (1, -1, 2), OVERWRITE, &["@write", "@string", "@slow"], "string", "Sets several keys at once, only if none exists"),
    row("multi", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], NO_KEYS, &[], &["@fast", "@transaction"], "transactions", "Starts a transaction"),
    row("persist", 2, &["write", "fast"], ONE_KEY, UPDATE, &["@keyspace", "@write", "@fast"], "generic", "Removes a key's expiry"),
    row("pexpire", -3, &["write", "fast"], ONE_KEY, UPDATE, &["@keyspace", "@write", "@fast"], "generic", "Sets a key's time to live in milliseconds"),
    row("pexpireat", -3, &["write", "fast"], ONE_KEY, UPDATE, &["@keyspace", "@write", "@fast"], "generic", "Sets a key's expiry as a Unix time in milliseconds"),
    row("pexpiretime", 2, &["readonly", "fast"], ONE_KEY, READ, &["@keyspace", "@read", "@fast"], "generic", "A key's expiry as a Unix time in milliseconds"),
    row("ping", -1, &["fast"], NO_KEYS, &[], &["@fast", "@connection"], "connection", "Returns PONG, or the given message"),
    row("psetex", 4, &["write", "denyoom"], ONE_KEY, OVERWRITE, &["@write", "@string", "@slow"], "string", "Sets a key with a time to live in milliseconds"),
    row("pttl", 2, &["readonly", "fast"], ONE_KEY, READ, &["@keyspace", "@read", "@fast"], "generic", "A key's time to live in milliseconds"),
    row("quit", -1, STARTUP, NO_KEYS, &[], &["@fast", "@connection"], "connection", "Closes the connection"),
    row("raft.member", -2, &["admin"], NO_KEYS, &[], &["@admin", "@slow", "@dangerous"], "server", "Lists, adds, promotes or removes the cluster's members"),
    row("raft.ranges", -1, &["admin"], NO_KEYS, &[], &["@admin", "@slow"], "server", "Lists the key ranges this node hosts"),
    row("raft.split", 2, &["admin"], NO_KEYS, &[], &["@admin", "@slow", "@dangerous"], "server", "Splits the key range owning a key at that key"),
    row("raft.transfer-leader", -1, &["admin"], NO_KEYS, &[], &["@admin", "@slow", "@dangerous"], "server", "Moves the Raft leadership to another voter"),
    row("rename", 3, &["write"], (1, 2, 1), UPDATE, &["@keyspace", "@write", "@slow"], "generic", "Renames a key, overwriting the destination"),
    row("renamenx", 3, &["write", "fast"], (1, 2, 1), UPDATE, &["@keyspace", "@write", "@fast"], "generic", "Renames a key only if the new name does not exist"),
    row("reset", 1, STARTUP, NO_KEYS, &[], &["@fast", "@connection"], "connection", "Resets the connection to its initial state"),
    row("scan", -2, &["readonly"], NO_KEYS, &[], &["@keyspace", "@read", "@slow"], "generic", "Iterates over the keys with a cursor"),
    row("select", 2, &["loading", "stale", "fast"], NO_KEYS, &[], &["@fast", "@connection"], "connection", "Selects the database (only 0 exists)"),
    row("seq", -4, &["write", "denyoom", "movablekeys"], NO_KEYS, &[], &["@write", "@slow"], "server", "Runs a write inside an exactly-once session: SEQ client-id seq command ..."),
    row("set", -3, &["write", "denyoom"], ONE_KEY, OVERWRITE, &["@write", "@string", "@slow"], "string", "Sets the string value of a key"),
    row("setex", 4, &["write", "denyoom"], ONE_KEY, OVERWRITE, &["@write", "@string", "@slow"], "string", "Sets a key with a time to live in seconds"),
    row("setnx", 3, &["write", "denyoom", "fast"], ONE_KEY, OVERWRITE, &["@write", "@string", "@fast"], "string", "Sets a key only if it does not exist"),
    row("strlen", 2, &["readonly", "fast"], ONE_KEY, READ, &["@read", "@string", "@fast"], "string", "The length of a key's value"),
    row("ttl", 2, &["readonly", "fast"], ONE_KEY, READ, &["@keyspace", "@read", "@fast"], "generic", "A key's time to live in seconds"),
    row("type", 2, &["readonly", "fast"], ONE_KEY, READ, &["@keyspace", "@read", "@fast"], "generic", "The type of a key's value"),
    row("unlink", -2, &["write", "fast"], (1, -1, 1), REMOVE, &["@keyspace", "@write", "@fast"], "generic", "Deletes keys (as DEL)"),
    row("unwatch", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], NO_KEYS, &[], &["@fast", "@transaction"], "transactions", "Forgets the watched keys"),
    row("watch", -2, &["noscript", "loading", "stale", "fast", "allow_busy"], (1, -1, 1), READ, &["@fast", "@transaction"], "transactions", "Makes EXEC apply nothing if one of these keys changes first"),
];

/// Commands the server itself runs (the others are [`crate::server_data`]'s).
pub const SERVER_COMMANDS: &[&str] = &[
    "AUTH",
    "CLIENT",
    "COMMAND",
    "CONFIG",
    "DISCARD",
    "ECHO",
    "EXEC",
    "HELLO",
    "INFO",
    "KVSTORE.BACKUP",
    "LEADER",
    "MULTI",
    "PING",
    "QUIT",
    "RAFT.MEMBER",
    "RAFT.RANGES",
    "RAFT.SPLIT",
    "RAFT.TRANSFER-LEADER",
    "RESET",
    "SELECT",
    "SEQ",
    "UNWATCH",
    "WATCH",
];

impl CommandSpec {
    /// The keys of the request `args` (the command's name first), where this table says they
    /// are.
    pub fn keys<'a>(&self, args: &'a [Bytes]) -> impl Iterator<Item = &'a Bytes> {
        let len = args.len() as i64;
        let (first, step) = (self.first_key, self.step.max(1));
        let last = if self.last_key < 0 {
            len + self.last_key
        } else {
            self.last_key.min(len - 1)
        };
        // A command without keys has first 0: no positions.
        let positions = (first.max(1)..=last).filter(move |_| first > 0);
        positions
            .step_by(step as usize)
            .filter_map(move |i| args.get(i as usize))
    }
}

pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

fn status_set(items: &[&str]) -> Reply {
    Reply::Set(items.iter().map(|s| Reply::Simple(s.to_string())).collect())
}

/// COMMAND INFO's entry: name, arity, flags, first key, last key, step, ACL categories, tips,
/// key specs, subcommands.
fn info_entry(c: &CommandSpec) -> Reply {
    let key_specs = if c.first_key == 0 {
        Vec::new()
    } else {
        let last = if c.last_key < 0 {
            c.last_key
        } else {
            c.last_key - c.first_key
        };
        vec![Reply::map([
            ("flags", status_set(c.key_flags)),
            (
                "begin_search",
                Reply::map([
                    ("type", Reply::bulk("index")),
                    ("spec", Reply::map([("index", Reply::Integer(c.first_key))])),
                ]),
            ),
            (
                "find_keys",
                Reply::map([
                    ("type", Reply::bulk("range")),
                    (
                        "spec",
                        Reply::map([
                            ("lastkey", Reply::Integer(last)),
                            ("keystep", Reply::Integer(c.step)),
                            ("limit", Reply::Integer(0)),
                        ]),
                    ),
                ]),
            ),
        ])]
    };
    Reply::Array(vec![
        Reply::bulk(c.name),
        Reply::Integer(c.arity),
        status_set(c.flags),
        Reply::Integer(c.first_key),
        Reply::Integer(c.last_key),
        Reply::Integer(c.step),
        status_set(c.acl_categories),
        Reply::Set(Vec::new()),
        Reply::Set(key_specs),
        Reply::Set(Vec::new()),
    ])
}

fn docs_entry(c: &CommandSpec) -> Reply {
    Reply::map([
        ("summary", Reply::bulk(c.summary)),
        ("since", Reply::bulk(c.since)),
        ("group", Reply::bulk(c.group)),
    ])
}

/// `COMMAND [COUNT | INFO name... | DOCS name... | LIST [FILTERBY ...] | HELP]`.
pub fn command(args: &[Bytes]) -> Reply {
    let Some(sub) = args.first() else {
        return Reply::Array(COMMANDS.iter().map(info_entry).collect());
    };
    let rest = &args[1..];
    match upper(sub).as_str() {
        "COUNT" if rest.is_empty() => Reply::Integer(COMMANDS.len() as i64),
        "INFO" if rest.is_empty() => Reply::Array(COMMANDS.iter().map(info_entry).collect()),
        "INFO" => Reply::Array(
            rest.iter()
                .map(|n| lookup(n).map_or(Reply::NilArray, info_entry))
                .collect(),
        ),
        "DOCS" => {
            let wanted: Vec<&CommandSpec> = if rest.is_empty() {
                COMMANDS.iter().collect()
            } else {
                rest.iter().filter_map(|n| lookup(n)).collect()
            };
            Reply::Map(
                wanted
                    .into_iter()
                    .map(|c| (Reply::bulk(c.name), docs_entry(c)))
                    .collect(),
            )
        }
        "LIST" => command_list(rest),
        "HELP" if rest.is_empty() => Reply::Array(
            [
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand), COUNT, INFO [<command-name> ...], DOCS [<command-name> ...],",
                "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)], HELP",
            ]
            .iter()
            .map(|l| Reply::Simple(l.to_string()))
            .collect(),
        ),
        "COUNT" | "HELP" => sub_arity_error("COMMAND", sub),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

fn command_list(filter: &[Bytes]) -> Reply {
    let names = |keep: &dyn Fn(&CommandSpec) -> bool| {
        Reply::Array(
            COMMANDS
                .iter()
                .filter(|c| keep(c))
                .map(|c| Reply::bulk(c.name))
                .collect(),
        )
    };
    match filter {
        [] => names(&|_| true),
        [by, kind, value] if upper(by) == "FILTERBY" => match upper(kind).as_str() {
            "MODULE" => Reply::Array(Vec::new()),
            "ACLCAT" => {
                let category = format!("@{}", String::from_utf8_lossy(value).to_lowercase());
                names(&|c| c.acl_categories.contains(&category.as_str()))
            }
            "PATTERN" => names(&|c| crate::server_info::glob_match(value, c.name.as_bytes())),
            _ => Reply::error("ERR syntax error"),
        },
        _ => Reply::error("ERR syntax error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_exactly_the_commands_dispatched() {
        let mut table: Vec<String> = COMMANDS.iter().map(|c| c.name.to_uppercase()).collect();
        let mut dispatched: Vec<String> = SERVER_COMMANDS
            .iter()
            .chain(&crate::server_parse::DATA_COMMANDS)
            .map(|n| n.to_string())
            .collect();
        table.sort();
        dispatched.sort();
        assert_eq!(table, dispatched);
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "rows in name order, one per command");
    }

    #[test]
    fn key_positions_agree_with_the_key_specs() {
        for c in COMMANDS {
            assert_eq!(c.first_key == 0, c.key_flags.is_empty(), "{}", c.name);
            assert!(c.first_key == 0 || c.step > 0, "{}", c.name);
            assert!(c.arity != 0, "{}", c.name);
        }
    }

    #[test]
    fn command_info_answers_as_redis_does() {
        let reply = command(&[Bytes::from("INFO"), Bytes::from("GET"), Bytes::from("nope")]);
        let Reply::Array(entries) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(entries[1], Reply::NilArray);
        let Reply::Array(get) = &entries[0] else {
            panic!()
        };
        assert_eq!(get[0], Reply::bulk("get"));
        assert_eq!(get[1], Reply::Integer(2));
        assert_eq!(
            get[2],
            Reply::Set(vec![
                Reply::Simple("readonly".into()),
                Reply::Simple("fast".into())
            ])
        );
        assert_eq!(
            &get[3..6],
            &[Reply::Integer(1), Reply::Integer(1), Reply::Integer(1)]
        );
        assert_eq!(
            command(&[Bytes::from("count")]),
            Reply::Integer(COMMANDS.len() as i64)
        );
        assert_eq!(
            command(&[
                Bytes::from("LIST"),
                Bytes::from("FILTERBY"),
                Bytes::from("PATTERN"),
                Bytes::from("raft.*")
            ]),
            Reply::Array(vec![
                Reply::bulk("raft.member"),
                Reply::bulk("raft.ranges"),
                Reply::bulk("raft.split"),
                Reply::bulk("raft.transfer-leader")
            ])
        );
        assert!(
            matches!(command(&[Bytes::from("nope")]), Reply::Error(e) if e.contains("Try COMMAND HELP"))
        );
    }
}
