//! How the command line's data commands reach a cluster: a bound on how long a command keeps
//! trying (`--timeout`), and, when no server could take the request, a look at every server to
//! say why: a cluster without a quorum is reported as such, naming who is down and who is up
//! without a leader, rather than with the last connection error of many retries.

use std::future::Future;
use std::time::Duration;

use clap::Args;

use crate::cli::ServersArg;
use crate::client::{ClientConfig, ClientError, Credentials, KvClient};
use crate::error::CliError;
use crate::server::parse_info;

#[derive(Args, Debug, Clone, Copy)]
pub struct TimeoutArg {
    /// Give up after this many seconds of trying (every server, with retries).
    #[arg(long = "timeout", value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub seconds: Duration,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "`{text}` is not a number of seconds between 0 and 86400"
        )),
    }
}

/// Runs `request` for at most the timeout. If no server could take it, the servers are asked
/// where their leader is, and a cluster that has none is reported as without a quorum.
pub(crate) async fn within<T>(
    servers: &ServersArg,
    timeout: TimeoutArg,
    write: bool,
    request: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, CliError> {
    let unavailable = match tokio::time::timeout(timeout.seconds, request).await {
        Ok(Ok(done)) => return Ok(done),
        Ok(Err(e @ ClientError::Unavailable { .. })) => e,
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => ClientError::Unavailable {
            attempts: 0,
            last_error: format!("still no answer after {}", seconds_text(timeout.seconds)),
            maybe_applied: write,
        },
    };
    let maybe_applied = matches!(
        unavailable,
        ClientError::Unavailable {
            maybe_applied: true,
            ..
        }
    );
    match no_quorum(&servers.servers, servers.login.credentials()).await {
        Some(why) => Err(CliError::NoQuorum { why, maybe_applied }),
        None => Err(unavailable.into()),
    }
}

fn seconds_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s == 1.0 {
        "1 second".into()
    } else {
        format!("{s} seconds")
    }
}

/// What one server says of its leader.
enum Seen {
    Unreachable(String),
    NoLeader,
    Leader,
}

/// Why no server could take the request, if no server that answers knows a leader: none
/// answered at all, or those that did know no leader (no quorum).
async fn no_quorum(servers: &[String], login: Option<Credentials>) -> Option<String> {
    let looks: Vec<_> = servers
        .iter()
        .map(|s| tokio::spawn(look_at(s.clone(), login.clone())))
        .collect();
    let mut seen: Vec<(String, Seen)> = Vec::with_capacity(looks.len());
    for look in looks {
        if let Ok(s) = look.await {
            seen.push(s);
        }
    }
    if seen.iter().any(|(_, s)| matches!(s, Seen::Leader)) {
        return None;
    }
    let down: Vec<String> = seen
        .iter()
        .filter_map(|(addr, s)| match s {
            Seen::Unreachable(why) => Some(format!("{addr}: {why}")),
            _ => None,
        })
        .collect();
    let leaderless: Vec<&str> = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::NoLeader))
        .map(|(addr, _)| addr.as_str())
        .collect();
    // Nobody answered at all: whether a quorum is up elsewhere, these servers cannot say.
    let verdict = if leaderless.is_empty() {
        "no server answered"
    } else {
        "no quorum"
    };
    let mut why = format!(
        "{verdict}: {} of {} {} unreachable",
        down.len(),
        servers.len(),
        if servers.len() == 1 {
            "server"
        } else {
            "servers"
        },
    );
    if !down.is_empty() {
        why.push_str(&format!(" ({})", down.join("; ")));
    }
    if !leaderless.is_empty() {
        let verb = if leaderless.len() == 1 {
            "knows"
        } else {
            "know"
        };
        why.push_str(&format!(", and {} {verb} no leader", leaderless.join(", ")));
        why.push_str(": a cluster serves once a majority of its voters are up and connected");
    }
    Some(why)
}

/// Asks one server (once, briefly) for its INFO and reads whether it knows a leader.
async fn look_at(addr: String, credentials: Option<Credentials>) -> (String, Seen) {
    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(2),
        max_attempts: 1,
        follow_leader: false,
        credentials,
        ..Default::default()
    };
    let seen = match KvClient::with_config(vec![addr.clone()], cfg).info().await {
        Ok(info) => {
            let leader = parse_info(&info)
                .get("leader_id")
                .and_then(|v| v.trim().parse::<u64>().ok());
            match leader {
                Some(id) if id != 0 => Seen::Leader,
                _ => Seen::NoLeader,
            }
        }
        Err(ClientError::Unavailable { last_error, .. }) => {
            Seen::Unreachable(strip_addr(&addr, &last_error))
        }
        Err(e) => Seen::Unreachable(e.to_string()),
    };
    (addr, seen)
}

/// The client's errors begin with the address; the diagnosis names it already.
fn strip_addr(addr: &str, error: &str) -> String {
    error
        .strip_prefix(addr)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(error)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_and_nonsense_is_refused() {
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        for bad in ["0", "-1", "NaN", "inf", "soon", "100000"] {
            assert!(parse_seconds(bad).is_err(), "{bad} must be refused");
        }
    }

    #[tokio::test]
    async fn servers_that_refuse_connections_are_named() {
        // Ports that nobody listens on: bind, note the port, close.
        let addrs: Vec<String> = (0..3)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").to_string()
            })
            .collect();
        let why = no_quorum(&addrs, None)
            .await
            .expect("no server knows a leader");
        assert!(
            why.starts_with("no server answered: 3 of 3 servers unreachable ("),
            "{why}"
        );
        for a in &addrs {
            assert!(why.contains(a.as_str()), "{why} names {a}");
        }
    }
}
