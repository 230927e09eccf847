//! Passwords and users on the client port: who a connection is logged in as, and what that
//! user may run.
//!
//! Off unless the node is given `--requirepass` (the `default` user's password; the default
//! user may then run everything) or `--users-file` ([`users_file`]). When on, a connection
//! starts logged in as `default` only if that user is on with `nopass`; otherwise every
//! command but AUTH, HELLO, PING, QUIT and RESET is answered `-NOAUTH` until `AUTH` (or
//! `HELLO ... AUTH`) succeeds, and after that each request is checked against the user's
//! rights ([`permissions`]) before it runs: refused with `-NOPERM`, as Redis words it. Failed
//! logins are logged with the user name and the peer's address (never the password) and
//! rate-limited per connection ([`limiter`]).

pub mod limiter;
pub mod password;
pub mod permissions;
pub mod users_file;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::ConfigError;
use crate::resp::Reply;
use crate::server::upper;
use limiter::FailureLimiter;
use password::Secret;
use permissions::Rights;
use users_file::{User, Users};

/// The environment variable `kvstore serve` and `kvstore cluster` read the default user's
/// password from when `--requirepass` is not given (so that it need not sit in argv).
pub const REQUIREPASS_ENV: &str = "KVSTORE_REQUIREPASS";

pub const NOAUTH: &str = "NOAUTH Authentication required.";
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, \
     otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and \
     select the RESP protocol version at the same time";
const NO_PASSWORD_CONFIGURED: &str = "ERR AUTH <password> called without any password \
     configured for the default user. Are you sure your configuration is correct?";

/// The users a node's client port knows: present only when authentication is on.
#[derive(Debug)]
pub struct Authority {
    users: Users,
    /// A slow hash of the users file, checked (and its verdict ignored) when a login names a
    /// user that does not exist or is off: such a login then takes as long as a wrong
    /// password, so the time of an answer does not tell which user names exist.
    decoy: Option<Secret>,
}

impl Authority {
    /// `--requirepass`: the default user, with this password and every right.
    pub fn requirepass(password: &[u8]) -> Self {
        let default = User {
            name: "default".into(),
            enabled: true,
            nopass: false,
            passwords: vec![Secret::from_plain(password)],
            rights: Rights::all(),
        };
        Authority::new(Users::from([("default".to_string(), Arc::new(default))]))
    }

    /// The users given, with a decoy hash taken from them.
    pub(crate) fn new(users: Users) -> Self {
        let decoy = users
            .values()
            .flat_map(|u| u.passwords.iter())
            .find(|s| s.is_slow())
            .cloned();
        Authority { users, decoy }
    }

    /// `--users-file PATH`, read and checked now: an error names the line and what is wrong.
    pub fn from_users_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(text).map_err(|e| ConfigError::FileLine {
            path: path.to_path_buf(),
            line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            problem: "the line is not UTF-8 text".into(),
        })?;
        let users = users_file::parse(&text).map_err(|e| ConfigError::FileLine {
            path: path.to_path_buf(),
            line: e.line,
            problem: e.problem,
        })?;
        if !users.values().any(|u| u.enabled) {
            return Err(ConfigError::Invalid(format!(
                "{}: no user is on, so nobody could log in",
                path.display()
            )));
        }
        Ok(Authority::new(users))
    }

    /// The user a new connection is logged in as: `default`, if it is on and needs no
    /// password.
    fn initial_user(&self) -> Option<Arc<User>> {
        self.users
            .get("default")
            .filter(|u| u.enabled && u.nopass)
            .cloned()
    }
}

/// One connection's login.
#[derive(Debug)]
pub struct ConnectionAuth {
    /// None: authentication is off, everything is allowed.
    authority: Option<Arc<Authority>>,
    user: Option<Arc<User>>,
    failures: FailureLimiter,
    close: bool,
    /// The client's address, for the log.
    peer: String,
}

impl ConnectionAuth {
    pub fn new(authority: Option<Arc<Authority>>, peer: String) -> Self {
        let user = authority.as_ref().and_then(|a| a.initial_user());
        ConnectionAuth {
            authority,
            user,
            failures: FailureLimiter::default(),
            close: false,
            peer,
        }
    }

    /// The user name CLIENT LIST shows.
    pub fn user_name(&self) -> &str {
        self.user.as_ref().map_or("default", |u| u.name.as_str())
    }

    fn logged_in(&self) -> bool {
        self.authority.is_none() || self.user.is_some()
    }

    /// The refusal of request `args` (its name first), or None if it may run.
    pub fn refusal(&self, args: &[Bytes]) -> Option<Reply> {
        self.authority.as_ref()?;
        let Some(user) = &self.user else {
            let name = args.first().map(|n| upper(n)).unwrap_or_default();
            return match name.as_str() {
                "AUTH" | "HELLO" | "PING" | "QUIT" | "RESET" => None,
                _ => Some(Reply::error(NOAUTH)),
            };
        };
        user.rights
            .check(args)
            .err()
            .map(|refusal| Reply::error(refusal.reply_text()))
    }

    /// After too many failed logins: close the connection once the replies are sent.
    pub fn must_close(&self) -> bool {
        self.close
    }

    /// RESET: back to the login a new connection has.
    pub fn reset(&mut self) {
        self.user = self.authority.as_ref().and_then(|a| a.initial_user());
    }

    /// HELLO without AUTH: refused before a login, as Redis refuses it.
    pub fn hello_refusal(&self) -> Option<Reply> {
        (!self.logged_in()).then(|| Reply::error(HELLO_NOAUTH))
    }

    /// `AUTH password` (user None: the default user) or `AUTH user password`.
    pub async fn login(&mut self, user: Option<&[u8]>, password: &[u8]) -> Result<(), Reply> {
        let Some(authority) = &self.authority else {
            // Off, as Redis without requirepass: the default user takes any password, and no
            // other user exists.
            return match user {
                None => Err(Reply::error(NO_PASSWORD_CONFIGURED)),
                Some(b"default") => Ok(()),
                Some(_) => Err(Reply::error(WRONGPASS)),
            };
        };
        let name = String::from_utf8_lossy(user.unwrap_or(b"default")).into_owned();
        let found = authority.users.get(&name).filter(|u| u.enabled).cloned();
        let accepted = match &found {
            Some(u) => password_matches(u, password).await,
            None => {
                spend_a_check(authority.decoy.clone(), password).await;
                false
            }
        };
        if accepted {
            self.user = found;
            return Ok(());
        }
        let penalty = self.failures.fail();
        let shown: String = name.chars().take(64).collect();
        tracing::warn!(
            user = ?shown,
            peer = %self.peer,
            failures = self.failures.failures(),
            closing = penalty.close,
            "client login failed"
        );
        tokio::time::sleep(penalty.delay).await;
        self.close |= penalty.close;
        Err(Reply::error(WRONGPASS))
    }
}

/// Whether `password` is one of the user's; an argon2id check runs on a blocking thread.
async fn password_matches(user: &User, password: &[u8]) -> bool {
    if user.nopass {
        return true;
    }
    if !user.passwords.iter().any(Secret::is_slow) {
        return user.passwords.iter().any(|s| s.matches(password));
    }
    let secrets = user.passwords.clone();
    let password = password.to_vec();
    tokio::task::spawn_blocking(move || secrets.iter().any(|s| s.matches(&password)))
        .await
        .unwrap_or(false)
}

/// Checks `password` against `decoy` and forgets the verdict: the time a real check takes.
async fn spend_a_check(decoy: Option<Secret>, password: &[u8]) {
    let Some(decoy) = decoy else {
        return;
    };
    let password = password.to_vec();
    let _ = tokio::task::spawn_blocking(move || decoy.matches(&password)).await;
}

#[cfg(test)]
mod tests;
