//! The command line's side of client authentication: the node's `--requirepass` and
//! `--users-file` (with the environment variable that keeps a password out of argv), the
//! client commands' `--user` and `--password`, and `kvstore hash-password`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use clap::Args;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::{password, Authority, REQUIREPASS_ENV};
use crate::client::Credentials;
use crate::error::{CliError, ConfigError};
use crate::resp::{encode_request, Limits, Reply, ReplyParser};

/// The environment variable the client commands read the password from when `--password` is
/// not given.
pub const PASSWORD_ENV: &str = "KVSTORE_PASSWORD";

/// How a node's clients log in: a password for the default user, or a users file. A node
/// without either serves everyone.
pub fn client_authority(
    requirepass: Option<String>,
    users_file: Option<PathBuf>,
) -> Result<Option<Arc<Authority>>, ConfigError> {
    let requirepass = requirepass.or_else(|| std::env::var(REQUIREPASS_ENV).ok());
    match (requirepass, users_file) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(format!(
            "--requirepass (or {REQUIREPASS_ENV}) and --users-file both set the default \
             user's password: give it in the users file instead"
        ))),
        (Some(pass), None) if pass.is_empty() => Err(ConfigError::Invalid(format!(
            "--requirepass (or {REQUIREPASS_ENV}) is empty"
        ))),
        (Some(pass), None) => Ok(Some(Arc::new(Authority::requirepass(pass.as_bytes())))),
        (None, Some(path)) => Ok(Some(Arc::new(Authority::from_users_file(&path)?))),
        (None, None) => Ok(None),
    }
}

/// How a client command logs in.
#[derive(Args, Debug, Clone, Default)]
pub struct LoginArgs {
    /// The user to log in as (default: the default user).
    #[arg(long)]
    pub user: Option<String>,
    /// The password to log in with. It is visible to other users of this machine in the
    /// process list: prefer the KVSTORE_PASSWORD environment variable.
    #[arg(long)]
    pub password: Option<String>,
}

impl LoginArgs {
    /// The credentials given, from the flags or KVSTORE_PASSWORD; None to not log in.
    pub fn credentials(&self) -> Option<Credentials> {
        let password = self
            .password
            .clone()
            .or_else(|| std::env::var(PASSWORD_ENV).ok())?;
        Some(Credentials {
            user: self.user.clone(),
            password,
        })
    }
}

/// Sends `AUTH` on a raw client connection (one that is not a [`crate::client::KvClient`]'s)
/// and reads its answer; the error is the server's refusal, or why no answer came.
pub async fn log_in<S>(stream: &mut S, login: &Credentials, within: Duration) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut args: Vec<&[u8]> = vec![b"AUTH"];
    if let Some(user) = &login.user {
        args.push(user.as_bytes());
    }
    args.push(login.password.as_bytes());
    let mut request = BytesMut::new();
    encode_request(&args, &mut request);
    let exchange = async {
        stream
            .write_all(&request)
            .await
            .map_err(|e| e.to_string())?;
        let mut parser = ReplyParser::new(Limits::default());
        let mut buf = BytesMut::new();
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(Reply::Simple(_))) => return Ok(()),
                Ok(Some(Reply::Error(e))) => return Err(e),
                Ok(Some(other)) => return Err(format!("AUTH answered {other:?}")),
                Ok(None) => {}
                Err(e) => return Err(format!("unreadable reply: {e}")),
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| Err("no answer to AUTH".into()))
}

/// `kvstore hash-password`: reads a password (from the terminal without echo, asked twice; or
/// one line of standard input) and prints its argon2id hash, as a users file's `#HASH` takes
/// it.
pub fn hash_password() -> Result<(), CliError> {
    let password = if std::io::stdin().is_terminal() {
        let first = prompt("Password: ")?;
        let again = prompt("Again: ")?;
        if first != again {
            return Err(invalid("the two passwords differ"));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| invalid(&format!("cannot read the password: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        return Err(invalid("the password is empty"));
    }
    let hash = password::hash(password.as_bytes()).map_err(|e| invalid(&e))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "#{hash}").map_err(CliError::Output)
}

fn prompt(text: &str) -> Result<String, CliError> {
    rpassword::prompt_password(text).map_err(|e| invalid(&format!("cannot read the password: {e}")))
}

fn invalid(why: &str) -> CliError {
    CliError::Config(ConfigError::Invalid(why.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirepass_and_a_users_file_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        std::fs::write(&file, "user a on nopass\n").unwrap();
        let both = client_authority(Some("pw".into()), Some(file.clone()));
        assert!(both.unwrap_err().to_string().contains("both"));
        assert!(client_authority(Some(String::new()), None)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(client_authority(Some("pw".into()), None).unwrap().is_some());
        assert!(client_authority(None, Some(file.clone()))
            .unwrap()
            .is_some());
        std::fs::write(&file, "user a on nopass\nuser b on >pw\n").unwrap();
        assert_eq!(
            client_authority(None, Some(file.clone()))
                .unwrap_err()
                .to_string(),
            format!(
                "{}:2: user `b`: plain-text passwords are not accepted in a users file; make a \
                 hash with `kvstore hash-password` and write it as #HASH",
                file.display()
            )
        );
        std::fs::write(&file, "user a off\n").unwrap();
        assert!(client_authority(None, Some(file))
            .unwrap_err()
            .to_string()
            .contains("no user is on"));
    }
}
