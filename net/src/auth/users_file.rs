//! The users file (`--users-file`): a small subset of Redis's ACL file syntax, one user a line.
//!
//! ```text
//! # NAME     state  password hash (kvstore hash-password)   keys       categories
//! user admin on     #$argon2id$v=19$m=19456,t=2,p=1$...      ~*         +@all
//! user app   on     #$argon2id$v=19$m=19456,t=2,p=1$...      ~app:*     +@read +@write
//! user ro    on     #$argon2id$v=19$m=19456,t=2,p=1$...      allkeys    +@read
//! user default off
//! ```
//!
//! Rules, applied left to right to a user that starts disabled, without passwords, keys or
//! commands (as in Redis): `on`, `off`, `#HASH` (an argon2id PHC string; more than one may be
//! given), `nopass` (any password, or none, logs in), `~PATTERN`, `allkeys`, `resetkeys`,
//! `+@CATEGORY` and `-@CATEGORY` for `read`, `write`, `admin` and `all`, `allcommands`,
//! `nocommands`. A plain-text password (`>...`) and a SHA-256 hash (`#` and 64 hex digits,
//! Redis's form) are refused: see [`super::password`] for why. Without a `default` line the
//! default user is off, so every connection must log in.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::password::Secret;
use super::permissions::{Categories, Rights};

/// A user of the client port.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    /// Any password logs in.
    pub nopass: bool,
    pub passwords: Vec<Secret>,
    pub rights: Rights,
}

impl User {
    fn new(name: &str) -> Self {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            rights: Rights::default(),
        }
    }
}

/// Every user, by name.
pub type Users = BTreeMap<String, Arc<User>>;

/// What is wrong with a users file, and on which line (from 1).
#[derive(Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub problem: String,
}

/// Longest line read (a hash is about 100 characters).
const MAX_LINE: usize = 4096;
/// Most users one file may define.
const MAX_USERS: usize = 10_000;

/// Reads a users file's text.
pub fn parse(text: &str) -> Result<Users, LineError> {
    let mut users = Users::new();
    for (n, line) in text.lines().enumerate() {
        let at = |problem: String| LineError {
            line: n + 1,
            problem,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() > MAX_LINE {
            return Err(at(format!("the line is longer than {MAX_LINE} bytes")));
        }
        let mut words = line.split_whitespace();
        if words.next() != Some("user") {
            return Err(at(
                "expected `user NAME RULES...` (or a comment starting with #)".into(),
            ));
        }
        let Some(name) = words.next() else {
            return Err(at("`user` needs a name".into()));
        };
        if users.contains_key(name) {
            return Err(at(format!("user `{name}` is defined twice")));
        }
        if users.len() == MAX_USERS {
            return Err(at(format!("more than {MAX_USERS} users")));
        }
        let mut user = User::new(name);
        for rule in words {
            apply(&mut user, rule).map_err(|problem| at(format!("user `{name}`: {problem}")))?;
        }
        users.insert(name.to_string(), Arc::new(user));
    }
    Ok(users)
}

fn apply(user: &mut User, rule: &str) -> Result<(), String> {
    match rule {
        "on" => user.enabled = true,
        "off" => user.enabled = false,
        "nopass" => {
            user.nopass = true;
            user.passwords.clear();
        }
        "allkeys" => user.rights.key_patterns = vec![Bytes::from_static(b"*")],
        "resetkeys" => user.rights.key_patterns.clear(),
        "allcommands" => user.rights.categories = Rights::all().categories,
        "nocommands" => user.rights.categories = Categories::default(),
        _ => apply_prefixed(user, rule)?,
    }
    Ok(())
}

fn apply_prefixed(user: &mut User, rule: &str) -> Result<(), String> {
    if let Some(hash) = rule.strip_prefix('#') {
        if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                "SHA-256 password hashes are not accepted; make an argon2id hash with \
                 `kvstore hash-password`"
                    .into(),
            );
        }
        user.passwords.push(Secret::from_phc(hash)?);
        user.nopass = false;
        return Ok(());
    }
    if rule.starts_with('>') {
        return Err(
            "plain-text passwords are not accepted in a users file; make a hash with \
             `kvstore hash-password` and write it as #HASH"
                .into(),
        );
    }
    if let Some(pattern) = rule.strip_prefix('~') {
        if pattern.is_empty() {
            return Err("`~` needs a key pattern, such as ~app:*".into());
        }
        user.rights
            .key_patterns
            .push(Bytes::copy_from_slice(pattern.as_bytes()));
        return Ok(());
    }
    let (allow, category) = match (rule.strip_prefix("+@"), rule.strip_prefix("-@")) {
        (Some(c), _) => (true, c),
        (_, Some(c)) => (false, c),
        _ => return Err(unsupported(rule)),
    };
    let c = &mut user.rights.categories;
    match category {
        "read" => c.read = allow,
        "write" => c.write = allow,
        "admin" => c.admin = allow,
        "all" => {
            *c = Categories {
                read: allow,
                write: allow,
                admin: allow,
            }
        }
        other => {
            return Err(format!(
                "unknown category `@{other}` (known: @read, @write, @admin, @all)"
            ))
        }
    }
    Ok(())
}

fn unsupported(rule: &str) -> String {
    let shown: String = rule.chars().take(40).collect();
    format!(
        "unsupported rule `{shown}` (supported: on, off, #HASH, nopass, ~PATTERN, allkeys, \
         resetkeys, +@CATEGORY, -@CATEGORY, allcommands, nocommands)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An argon2id hash of "pw", as `kvstore hash-password` prints it.
    const PW_HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$fybv0WjAjrToj7WR9Ejxtg$XDvPIikQVb6r4HFXHdq/M3uxf5Cc3s45LS2h1+g5gbA";

    #[test]
    fn a_file_of_users_reads_as_written() {
        let text = format!(
            "# users\n\nuser admin on #{PW_HASH} ~* +@all\nuser app on #{PW_HASH} ~app:* ~shared:* +@read +@write\nuser ro on #{PW_HASH} allkeys +@all -@write -@admin\nuser default off\nuser open on nopass allkeys +@read\n"
        );
        let users = parse(&text).unwrap();
        assert_eq!(users.len(), 5);
        let app = &users["app"];
        assert!(app.enabled && !app.nopass && app.passwords.len() == 1);
        assert_eq!(
            app.rights.key_patterns,
            vec![Bytes::from("app:*"), Bytes::from("shared:*")]
        );
        assert_eq!(
            app.rights.categories,
            Categories {
                read: true,
                write: true,
                admin: false
            }
        );
        assert_eq!(
            users["ro"].rights.categories,
            Categories {
                read: true,
                write: false,
                admin: false
            }
        );
        assert!(!users["default"].enabled);
        assert!(users["open"].nopass);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let error = |text: &str| parse(text).unwrap_err();
        let e = error("user a on\nuser b on >secret\n");
        assert_eq!(e.line, 2);
        assert!(e.problem.contains("plain-text"), "{}", e.problem);
        let sha = "#5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        assert!(error(&format!("user a {sha}")).problem.contains("SHA-256"));
        assert!(error("user a #nonsense")
            .problem
            .contains("not an argon2id hash"));
        assert!(error("user a +@fun")
            .problem
            .contains("unknown category `@fun`"));
        assert!(error("user a +get")
            .problem
            .contains("unsupported rule `+get`"));
        assert!(error("usr a").problem.contains("expected `user NAME"));
        assert!(error("user").problem.contains("needs a name"));
        assert!(error("user a\nuser a").problem.contains("defined twice"));
        assert!(error("user a ~").problem.contains("needs a key pattern"));
        assert_eq!(error("\n\n# c\nuser a bogus").line, 4);
    }

    #[test]
    fn an_argon2_hash_in_the_file_logs_in() {
        let users = parse(&format!("user a on #{PW_HASH}")).unwrap();
        assert!(users["a"].passwords[0].matches(b"pw"));
        assert!(!users["a"].passwords[0].matches(b"pW"));
    }

    proptest! {
        #[test]
        fn hostile_files_never_panic(text in "(user|#|~|\\+@|-@|\\$|on|off| |\\n|[a-z:*]{0,6}|[^\\n]{0,12}){0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
