//! What a user may run: a small subset of Redis ACLs. A user has command categories (`@read`,
//! `@write`, `@admin`; `@all` is all three) and key patterns (`~app:*`; `allkeys` is `~*`).
//!
//! Every command falls in one class ([`class_of`]): the connection and transaction commands
//! (PING, ECHO, CLIENT ID/SETNAME/..., SELECT, COMMAND, LEADER, MULTI, EXEC, ...) any logged-in
//! user may run; a data command needs `@read` or `@write` (its row in the command table says
//! which) and access to every key it names (`SEQ`-wrapped: the inner command's); the operator
//! commands (membership, leader transfer, backup, INFO, CONFIG, CLIENT LIST) need `@admin`.
//! A command that acts on every key (KEYS, SCAN, DBSIZE, FLUSHALL, FLUSHDB) also needs access
//! to every key (`~*`), so a user limited to a prefix can neither list nor erase the others.

use bytes::Bytes;

use crate::command_table::{self, CommandSpec};
use crate::server::upper;

/// The command categories a user may run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Categories {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

/// One user's rights.
#[derive(Clone, Debug, Default)]
pub struct Rights {
    pub categories: Categories,
    /// Glob patterns of the keys the user may touch (Redis's `~pattern`).
    pub key_patterns: Vec<Bytes>,
}

/// What a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Any logged-in user.
    Connection,
    Read,
    Write,
    Admin,
}

/// Why a command is refused: Redis's texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The command's name as Redis reports it (`set`, `client|list`).
    Command(String),
    Key,
}

impl Refusal {
    pub fn reply_text(&self) -> String {
        match self {
            Refusal::Command(name) => {
                format!("NOPERM this user has no permissions to run the '{name}' command")
            }
            Refusal::Key => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .into()
            }
        }
    }
}

/// The commands that read or write every key (a user limited to some keys may not run them).
pub(crate) const WHOLE_KEYSPACE: [&str; 5] = ["KEYS", "SCAN", "DBSIZE", "FLUSHALL", "FLUSHDB"];

/// The class of a request (`args[0]` is its name), and the command that decides it (the inner
/// one of `SEQ client seq command ...`) with its arguments.
pub fn class_of(args: &[Bytes]) -> (Class, &[Bytes]) {
    let Some(name) = args.first() else {
        return (Class::Connection, args);
    };
    let name = upper(name);
    match name.as_str() {
        "SEQ" => match args.get(3..) {
            Some(inner) if !inner.is_empty() => {
                let (class, decided) = class_of(inner);
                // A SEQ wrapping a connection command is still a write's envelope.
                (class.max_with(Class::Write), decided)
            }
            _ => (Class::Write, args),
        },
        "INFO" | "CONFIG" => (Class::Admin, args),
        "CLIENT" => match args.get(1).map(|s| upper(s)).as_deref() {
            Some("LIST") | Some("KILL") => (Class::Admin, args),
            _ => (Class::Connection, args),
        },
        _ => match command_table::lookup(name.as_bytes()) {
            Some(spec) => (class_of_spec(spec), args),
            // Unknown: let the command's own error answer it, after the login check.
            None => (Class::Connection, args),
        },
    }
}

fn class_of_spec(spec: &CommandSpec) -> Class {
    let has = |c: &str| spec.acl_categories.contains(&c);
    if has("@admin") {
        Class::Admin
    } else if has("@write") {
        Class::Write
    } else if has("@read") {
        Class::Read
    } else {
        Class::Connection
    }
}

impl Class {
    fn max_with(self, other: Class) -> Class {
        if self == Class::Connection {
            other
        } else {
            self
        }
    }
}

impl Rights {
    /// Everything: `--requirepass`'s default user, or `+@all ~*`.
    pub fn all() -> Self {
        Rights {
            categories: Categories {
                read: true,
                write: true,
                admin: true,
            },
            key_patterns: vec![Bytes::from_static(b"*")],
        }
    }

    fn all_keys(&self) -> bool {
        self.key_patterns.iter().any(|p| p.as_ref() == b"*")
    }

    fn may_touch(&self, key: &[u8]) -> bool {
        // Key names are case-sensitive, so patterns are matched as given (not by the
        // case-folding glob of KEYS-like server commands).
        self.key_patterns
            .iter()
            .any(|p| p.as_ref() == b"*" || kv::glob::matches(p, key))
    }

    /// Whether this user may run the request `args` (its name first).
    pub fn check(&self, args: &[Bytes]) -> Result<(), Refusal> {
        let (class, command) = class_of(args);
        let allowed = match class {
            Class::Connection => true,
            Class::Read => self.categories.read,
            Class::Write => self.categories.write,
            Class::Admin => self.categories.admin,
        };
        if !allowed {
            return Err(Refusal::Command(reported_name(command)));
        }
        if class == Class::Admin || class == Class::Connection && !is_watch(command) {
            return Ok(());
        }
        let Some(name) = command.first() else {
            return Ok(());
        };
        if WHOLE_KEYSPACE.contains(&upper(name).as_str()) && !self.all_keys() {
            return Err(Refusal::Key);
        }
        let Some(spec) = command_table::lookup(name) else {
            return Ok(());
        };
        if spec.keys(command).all(|k| self.may_touch(k)) {
            Ok(())
        } else {
            Err(Refusal::Key)
        }
    }
}

fn is_watch(command: &[Bytes]) -> bool {
    command
        .first()
        .is_some_and(|n| n.eq_ignore_ascii_case(b"WATCH"))
}

/// The name Redis reports in a refusal: lower case, `command|subcommand` for CLIENT and CONFIG.
fn reported_name(args: &[Bytes]) -> String {
    let name = args
        .first()
        .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
        .unwrap_or_default();
    match args.get(1) {
        Some(sub) if matches!(name.as_str(), "client" | "config") => {
            format!(
                "{name}|{}",
                String::from_utf8_lossy(sub).to_ascii_lowercase()
            )
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Vec<Bytes> {
        text.split(' ')
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn rights(read: bool, write: bool, admin: bool, patterns: &[&str]) -> Rights {
        Rights {
            categories: Categories { read, write, admin },
            key_patterns: patterns
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        }
    }

    #[test]
    fn a_read_only_user_reads_and_cannot_write() {
        let ro = rights(true, false, false, &["*"]);
        assert_eq!(ro.check(&req("GET k")), Ok(()));
        assert_eq!(ro.check(&req("MGET a b c")), Ok(()));
        assert_eq!(ro.check(&req("PING")), Ok(()));
        assert_eq!(ro.check(&req("MULTI")), Ok(()));
        assert_eq!(
            ro.check(&req("SET k v")),
            Err(Refusal::Command("set".into()))
        );
        assert_eq!(
            ro.check(&req("SEQ 7 1 SET k v")).unwrap_err().reply_text(),
            "NOPERM this user has no permissions to run the 'set' command"
        );
        assert!(ro.check(&req("SEQ 7 1 PING")).is_err(), "a SEQ is a write");
        assert!(ro.check(&req("DEL k")).is_err());
        assert!(ro.check(&req("FLUSHALL")).is_err());
    }

    #[test]
    fn a_prefix_limited_user_touches_only_its_keys() {
        let app = rights(true, true, false, &["app:*"]);
        assert_eq!(app.check(&req("SET app:1 v")), Ok(()));
        assert_eq!(app.check(&req("SEQ 7 1 SET app:1 v")), Ok(()));
        assert_eq!(app.check(&req("SET other v")), Err(Refusal::Key));
        assert_eq!(
            app.check(&req("SET APP:1 v")),
            Err(Refusal::Key),
            "exact case"
        );
        assert_eq!(app.check(&req("SEQ 7 1 SET other v")), Err(Refusal::Key));
        assert_eq!(app.check(&req("MSET app:1 a app:2 b")), Ok(()));
        assert_eq!(app.check(&req("MSET app:1 a other b")), Err(Refusal::Key));
        assert_eq!(
            app.check(&req("MSET app:1 other")),
            Ok(()),
            "values are not keys"
        );
        assert_eq!(app.check(&req("DEL app:1 app:2 x")), Err(Refusal::Key));
        assert_eq!(app.check(&req("RENAME app:1 x")), Err(Refusal::Key));
        assert_eq!(app.check(&req("WATCH app:1 x")), Err(Refusal::Key));
        assert_eq!(app.check(&req("CAS app:1 old new")), Ok(()));
        for whole in ["KEYS *", "SCAN 0", "DBSIZE", "FLUSHALL", "FLUSHDB"] {
            assert_eq!(app.check(&req(whole)), Err(Refusal::Key), "{whole}");
        }
        assert_eq!(
            rights(true, true, false, &["*"]).check(&req("KEYS *")),
            Ok(())
        );
        assert_eq!(
            rights(true, true, false, &[]).check(&req("GET a")),
            Err(Refusal::Key)
        );
    }

    #[test]
    fn operator_commands_need_admin() {
        let rw = rights(true, true, false, &["*"]);
        for admin in [
            "RAFT.MEMBER LIST",
            "RAFT.TRANSFER-LEADER 2",
            "KVSTORE.BACKUP",
            "INFO",
            "CONFIG GET port",
            "CLIENT LIST",
        ] {
            assert!(rw.check(&req(admin)).is_err(), "{admin}");
            assert_eq!(Rights::all().check(&req(admin)), Ok(()), "{admin}");
        }
        assert_eq!(
            rw.check(&req("CLIENT LIST")),
            Err(Refusal::Command("client|list".into()))
        );
        assert_eq!(rw.check(&req("CLIENT ID")), Ok(()));
        assert_eq!(rw.check(&req("LEADER")), Ok(()), "clients find the leader");
    }

    #[test]
    fn hostile_requests_never_panic() {
        let app = rights(true, true, false, &["app:*"]);
        for r in [
            vec![],
            req("SEQ"),
            req("SEQ 1"),
            req("SEQ 1 2"),
            req("MSET"),
            req("GET"),
        ] {
            let _ = app.check(&r);
        }
        assert_eq!(
            app.check(&req("SEQ 1 2 SEQ 3 4 SET x v")),
            Err(Refusal::Key)
        );
    }
}
