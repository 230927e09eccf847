//! `KvClient`: the Rust client. It speaks the Redis protocol to any node, rotates to the next
//! server when one fails (`rotateServer` of the original notes), and runs every write inside an
//! exactly-once session: a client id and a sequence number that a retry repeats, so a write
//! whose reply was lost is applied at most once however often it is retried.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use raft_core::NodeId;

use crate::node::admin::MemberList;
use crate::resp::{encode_request, Limits, Reply, ReplyParser};
use crate::server_admin::parse_member_list;
use crate::server_ranges::{parse_range_list, RangeStatus};
use crate::transport::{Net, TokioNet};

/// How many servers a client keeps at most (leader addresses it learns are added).
const MAX_SERVERS: usize = 64;

/// How an attempt's error ends when it ran out of time.
const TIMED_OUT: &str = "timed out";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// No server gave an answer within the attempts allowed. For a write, the outcome is
    /// unknown if any attempt reached a server (`maybe_applied`).
    Unavailable {
        attempts: u32,
        last_error: String,
        maybe_applied: bool,
    },
    /// The server refused the request (wrong type of value, bad arguments, ...).
    Server(String),
    /// The reply was not what the command returns.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unavailable {
                attempts,
                last_error,
                maybe_applied,
            } => write!(
                f,
                "no server answered after {attempts} {} (last error: {last_error}){}",
                if *attempts == 1 {
                    "attempt"
                } else {
                    "attempts"
                },
                if *maybe_applied {
                    "; the write may have been applied"
                } else {
                    ""
                }
            ),
            ClientError::Server(e) => write!(f, "server error: {e}"),
            ClientError::Protocol(e) => write!(f, "unexpected reply: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// An error a node answers without running the request (not the leader's any more, removed,
/// still starting): another server may take it.
fn refused_without_running(error: &str) -> bool {
    ["TRYAGAIN", "REMOVED", "LOADING"]
        .iter()
        .any(|code| error.starts_with(code))
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    /// How long to wait for one reply; a node answers TIMEOUT itself well before this.
    pub request_timeout: Duration,
    /// Attempts per request across all servers.
    pub max_attempts: u32,
    pub backoff: Duration,
    /// On each new connection, ask the node where the leader takes requests (`LEADER`) and go
    /// there: one hop less per request. Off, requests stay on the node the client picked
    /// (followers forward), which spreads the client-protocol work over every node.
    pub follow_leader: bool,
    /// Log in on every new connection (`AUTH`) when the servers require it.
    pub credentials: Option<Credentials>,
}

/// A user name (None: the default user) and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: configurations end up in logs.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Whether an error is a refused login: retrying, here or on another server, cannot help.
fn is_login_refusal(error: &str) -> bool {
    ["WRONGPASS", "NOAUTH", "NOPERM"]
        .iter()
        .any(|code| error.starts_with(code))
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(8),
            max_attempts: 20,
            backoff: Duration::from_millis(100),
            follow_leader: true,
            credentials: None,
        }
    }
}

struct Conn<S> {
    stream: S,
    buf: BytesMut,
    parser: ReplyParser,
}

/// The client, over real TCP by default or over any [`Net`] (the simulator's).
pub struct KvClient<N: Net = TokioNet> {
    net: N,
    servers: Vec<String>,
    current: usize,
    conn: Option<Conn<N::Stream>>,
    client_id: u64,
    next_seq: u64,
    cfg: ClientConfig,
    /// Attempts that timed out (a TIMEOUT reply, or none in time), retried or not.
    timed_out_attempts: u64,
}

impl KvClient {
    /// A client for `servers` (client-port addresses), starting with the first.
    pub fn new(servers: Vec<String>) -> Self {
        Self::with_config(servers, ClientConfig::default())
    }

    pub fn with_config(servers: Vec<String>, cfg: ClientConfig) -> Self {
        // Client ids must be unique across the cluster's life; 64 random bits are.
        let client_id = rand::thread_rng().gen::<u64>() | 1;
        KvClient::over(TokioNet, servers, cfg, client_id)
    }
}

impl<N: Net> KvClient<N> {
    /// A client on `net` with a given session id, which must be unique across the cluster's
    /// life and non-zero (the simulator derives it from its seed).
    pub fn over(net: N, servers: Vec<String>, cfg: ClientConfig, client_id: u64) -> Self {
        Self {
            net,
            servers,
            current: 0,
            conn: None,
            client_id,
            next_seq: 1,
            cfg,
            timed_out_attempts: 0,
        }
    }

    /// Starts with server `index` (modulo the list), to spread clients over nodes.
    pub fn starting_at(mut self, index: usize) -> Self {
        if !self.servers.is_empty() {
            self.current = index % self.servers.len();
        }
        self
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// How many attempts so far timed out: a TIMEOUT reply, or no reply or connection in time.
    /// A request that succeeded on a retry hides them from its result; this does not.
    pub fn timed_out_attempts(&self) -> u64 {
        self.timed_out_attempts
    }

    pub fn current_server(&self) -> Option<&str> {
        self.servers.get(self.current).map(String::as_str)
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, ClientError> {
        match self.call(&[b"GET", key], false).await? {
            Reply::Bulk(v) => Ok(Some(v)),
            Reply::Nil => Ok(None),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    pub async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        match self.call(&[b"SET", key, value], true).await? {
            Reply::Simple(_) => Ok(()),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Deletes `key`; true if it existed.
    pub async fn del(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        Ok(self.integer(&[b"DEL", key], true).await? == 1)
    }

    /// Adds `by` to the integer at `key` (absent counts as 0); returns the new value.
    pub async fn incr_by(&mut self, key: &[u8], by: i64) -> Result<i64, ClientError> {
        let by = by.to_string();
        self.integer(&[b"INCRBY", key, by.as_bytes()], true).await
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: if it is absent); true if it did.
    pub async fn cas(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, ClientError> {
        let n = match expected {
            Some(e) => self.integer(&[b"CAS", key, e, new], true).await?,
            None => self.integer(&[b"CAS", key, new], true).await?,
        };
        Ok(n == 1)
    }

    /// The INFO text of the server currently talked to.
    pub async fn info(&mut self) -> Result<String, ClientError> {
        match self.call(&[b"INFO"], false).await? {
            Reply::Bulk(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// The cluster's members, as the leader (or, without one, the node asked) knows them.
    pub async fn member_list(&mut self) -> Result<MemberList, ClientError> {
        let reply = self.call(&[b"RAFT.MEMBER", b"LIST"], false).await?;
        parse_member_list(&reply).map_err(ClientError::Protocol)
    }

    /// Adds node `id` as a learner; returns once the change is applied.
    pub async fn member_add(
        &mut self,
        id: NodeId,
        peer_addr: &str,
        client_addr: &str,
    ) -> Result<(), ClientError> {
        self.member_with_addrs(b"ADD", id, peer_addr, client_addr)
            .await
    }

    /// Makes learner `id` a voter; refused ("learner not ready") while it lags behind.
    pub async fn member_promote(&mut self, id: NodeId) -> Result<(), ClientError> {
        let id = id.to_string();
        self.admin(&[b"RAFT.MEMBER", b"PROMOTE", id.as_bytes()])
            .await
    }

    /// Removes member `id`; returns once the change is applied.
    pub async fn member_remove(&mut self, id: NodeId) -> Result<(), ClientError> {
        let id = id.to_string();
        self.admin(&[b"RAFT.MEMBER", b"REMOVE", id.as_bytes()])
            .await
    }

    /// Records member `id`'s new addresses.
    pub async fn member_update(
        &mut self,
        id: NodeId,
        peer_addr: &str,
        client_addr: &str,
    ) -> Result<(), ClientError> {
        self.member_with_addrs(b"UPDATE", id, peer_addr, client_addr)
            .await
    }

    /// `RAFT.MEMBER verb id peer_addr client_addr`, the shape of ADD and UPDATE.
    async fn member_with_addrs(
        &mut self,
        verb: &[u8],
        id: NodeId,
        peer_addr: &str,
        client_addr: &str,
    ) -> Result<(), ClientError> {
        let id = id.to_string();
        let args: [&[u8]; 5] = [
            b"RAFT.MEMBER",
            verb,
            id.as_bytes(),
            peer_addr.as_bytes(),
            client_addr.as_bytes(),
        ];
        self.admin(&args).await
    }

    /// The ranges the answering node hosts, in key order.
    pub async fn ranges(&mut self) -> Result<Vec<RangeStatus>, ClientError> {
        let reply = self.call(&[b"RAFT.RANGES"], false).await?;
        parse_range_list(&reply).map_err(ClientError::Protocol)
    }

    /// Splits the range owning `key` at it, and returns the two halves. A retry after an
    /// unknown outcome is harmless: a split at a key that already starts a range answers the
    /// ranges meeting there.
    pub async fn split(&mut self, key: &[u8]) -> Result<[RangeStatus; 2], ClientError> {
        let reply = self.call(&[b"RAFT.SPLIT", key], false).await?;
        let halves = parse_range_list(&reply).map_err(ClientError::Protocol)?;
        <[RangeStatus; 2]>::try_from(halves)
            .map_err(|h| ClientError::Protocol(format!("a split answered {} ranges", h.len())))
    }

    /// Makes voter `to` the leader; returns once it leads.
    pub async fn transfer_leader(&mut self, to: NodeId) -> Result<(), ClientError> {
        let to = to.to_string();
        self.admin(&[b"RAFT.TRANSFER-LEADER", to.as_bytes()]).await
    }

    /// An operator command answered `+OK`. Retrying one is harmless (asking for what is
    /// already so answers OK), so TRYAGAIN and TIMEOUT are retried like reads.
    async fn admin(&mut self, args: &[&[u8]]) -> Result<(), ClientError> {
        match self.call(args, false).await? {
            Reply::Simple(_) => Ok(()),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    async fn integer(&mut self, args: &[&[u8]], write: bool) -> Result<i64, ClientError> {
        match self.call(args, write).await? {
            Reply::Integer(n) => Ok(n),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Sends a request, retrying on other servers until one answers. A write carries this
    /// client's session and a sequence number fixed before the first attempt.
    pub async fn call(&mut self, args: &[&[u8]], write: bool) -> Result<Reply, ClientError> {
        let seq = self.next_seq;
        if write {
            self.next_seq += 1;
        }
        let (client, seq_text) = (self.client_id.to_string(), seq.to_string());
        let mut full: Vec<&[u8]> = Vec::with_capacity(args.len() + 3);
        if write {
            full.extend([b"SEQ".as_slice(), client.as_bytes(), seq_text.as_bytes()]);
        }
        full.extend_from_slice(args);

        let mut last_error = String::from("no servers configured");
        let mut maybe_applied = false;
        for attempt in 0..self.cfg.max_attempts {
            if self.servers.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(self.cfg.backoff.min(Duration::from_millis(20) * attempt)).await;
            }
            match self.attempt(&full).await {
                // Certainly not applied here; another server may take it (LOADING: this one
                // has not started yet).
                Ok(Reply::Error(e)) if refused_without_running(&e) => {
                    last_error = e;
                    self.rotate();
                }
                Ok(Reply::Error(e)) if e.starts_with("TIMEOUT") => {
                    self.timed_out_attempts += 1;
                    maybe_applied = true;
                    last_error = e;
                    self.rotate();
                }
                Ok(Reply::Error(e)) => return Err(ClientError::Server(e)),
                Ok(reply) => return Ok(reply),
                Err((e, _)) if is_login_refusal(&e) => return Err(ClientError::Server(e)),
                Err((e, sent)) => {
                    if e.ends_with(TIMED_OUT) {
                        self.timed_out_attempts += 1;
                    }
                    maybe_applied |= sent && write;
                    last_error = e;
                    self.conn = None;
                    self.rotate();
                }
            }
        }
        Err(ClientError::Unavailable {
            attempts: self.cfg.max_attempts,
            last_error,
            maybe_applied,
        })
    }

    /// Runs `commands` as one transaction (`MULTI`, the commands, `EXEC`, sent together on one
    /// connection) and returns EXEC's replies, one per command. A transaction has no session,
    /// so it is retried on another server only where it certainly did not run (the request
    /// never left, or a node refused it without running it); otherwise the outcome is unknown
    /// (`Unavailable` with `maybe_applied`). A transaction a WATCH aborted (none is set here)
    /// or that EXEC refused answers `Server`.
    pub async fn transaction(
        &mut self,
        commands: &[Vec<&[u8]>],
    ) -> Result<Vec<Reply>, ClientError> {
        let mut batch: Vec<&[&[u8]]> = Vec::with_capacity(commands.len() + 2);
        batch.push(&[b"MULTI"]);
        batch.extend(commands.iter().map(Vec::as_slice));
        batch.push(&[b"EXEC"]);
        let mut last_error = String::from("no servers configured");
        for attempt in 0..self.cfg.max_attempts {
            if self.servers.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(self.cfg.backoff.min(Duration::from_millis(20) * attempt)).await;
            }
            let sent = match self.connect_for_attempt().await {
                Ok(()) => self.exchange_many(&batch).await,
                Err(e) => Err(e),
            };
            let replies = match sent {
                Ok(replies) => replies,
                Err((e, _)) if is_login_refusal(&e) => return Err(ClientError::Server(e)),
                Err((e, sent)) => {
                    if e.ends_with(TIMED_OUT) {
                        self.timed_out_attempts += 1;
                    }
                    self.conn = None;
                    if sent {
                        return Err(ClientError::Unavailable {
                            attempts: attempt + 1,
                            last_error: e,
                            maybe_applied: true,
                        });
                    }
                    last_error = e;
                    self.rotate();
                    continue;
                }
            };
            match replies.into_iter().last() {
                Some(Reply::Array(results)) if results.len() == commands.len() => {
                    return Ok(results)
                }
                Some(Reply::Error(e)) if e.starts_with("TIMEOUT") => {
                    self.timed_out_attempts += 1;
                    return Err(ClientError::Unavailable {
                        attempts: attempt + 1,
                        last_error: e,
                        maybe_applied: true,
                    });
                }
                Some(Reply::Error(e)) if refused_without_running(&e) => {
                    last_error = e;
                    self.rotate();
                }
                Some(Reply::Error(e)) => return Err(ClientError::Server(e)),
                Some(Reply::NilArray) => {
                    return Err(ClientError::Server("EXEC aborted by a WATCH".into()))
                }
                other => return Err(ClientError::Protocol(format!("EXEC answered {other:?}"))),
            }
        }
        Err(ClientError::Unavailable {
            attempts: self.cfg.max_attempts,
            last_error,
            maybe_applied: false,
        })
    }

    /// Asks the connected node for the leader's client address and, if it is another server,
    /// makes it the current one (added to the list if new). True if the client moved.
    async fn move_to_leader(&mut self) -> bool {
        let Ok(Reply::Bulk(addr)) = self.exchange(&[b"LEADER"]).await else {
            return false;
        };
        let Ok(addr) = String::from_utf8(addr.to_vec()) else {
            return false;
        };
        if self.servers.get(self.current) == Some(&addr) {
            return false;
        }
        self.current = match self.servers.iter().position(|s| *s == addr) {
            Some(i) => i,
            // A bounded list, whatever a server answers.
            None if self.servers.len() < MAX_SERVERS => {
                self.servers.push(addr);
                self.servers.len() - 1
            }
            None => return false,
        };
        true
    }

    /// Moves to the next server, as the original notes' `rotateServer`.
    fn rotate(&mut self) {
        self.conn = None;
        if !self.servers.is_empty() {
            self.current = (self.current + 1) % self.servers.len();
        }
    }

    /// One try on the current server. The error says whether the request may have been sent.
    async fn attempt(&mut self, args: &[&[u8]]) -> Result<Reply, (String, bool)> {
        self.connect_for_attempt().await?;
        self.exchange(args).await
    }

    /// Connects to the current server if not connected, and moves to the leader if asked to.
    async fn connect_for_attempt(&mut self) -> Result<(), (String, bool)> {
        if self.conn.is_none() {
            self.connect_current().await.map_err(|e| (e, false))?;
            if self.cfg.follow_leader {
                let origin = self.current;
                if self.move_to_leader().await && self.connect_current().await.is_err() {
                    // The leader it named is out of reach from here: stay where we were (it
                    // forwards).
                    self.current = origin;
                    self.connect_current().await.map_err(|e| (e, false))?;
                }
            }
        }
        Ok(())
    }

    async fn connect_current(&mut self) -> Result<(), String> {
        self.conn = None;
        let addr = self.servers[self.current].clone();
        let stream =
            match tokio::time::timeout(self.cfg.connect_timeout, self.net.connect(addr.clone()))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(format!("{addr}: {e}")),
                Err(_) => return Err(format!("{addr}: connect {TIMED_OUT}")),
            };
        self.conn = Some(Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
            parser: ReplyParser::new(Limits::default()),
        });
        self.log_in().await
    }

    /// Sends `AUTH` on the new connection if the client has credentials. A refusal is
    /// returned as the server's error text, which [`is_login_refusal`] recognises.
    async fn log_in(&mut self) -> Result<(), String> {
        let Some(credentials) = self.cfg.credentials.clone() else {
            return Ok(());
        };
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &credentials.user {
            args.push(user.as_bytes());
        }
        args.push(credentials.password.as_bytes());
        let refused = match self.exchange(&args).await {
            Ok(Reply::Simple(_)) => return Ok(()),
            Ok(Reply::Error(e)) => e,
            Ok(other) => format!("AUTH answered {other:?}"),
            Err((e, _)) => e,
        };
        self.conn = None;
        Err(refused)
    }

    /// Sends one request on the open connection and reads its reply.
    async fn exchange(&mut self, args: &[&[u8]]) -> Result<Reply, (String, bool)> {
        let mut replies = self.exchange_many(&[args]).await?;
        replies.pop().ok_or_else(|| ("no reply".to_string(), true))
    }

    /// Sends requests together on the open connection and reads their replies.
    async fn exchange_many(&mut self, requests: &[&[&[u8]]]) -> Result<Vec<Reply>, (String, bool)> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(("not connected".into(), false));
        };
        let mut out = BytesMut::new();
        for args in requests {
            encode_request(args, &mut out);
        }
        if let Err(e) = conn.stream.write_all(&out).await {
            return Err((e.to_string(), true));
        }
        let timeout = self.cfg.request_timeout;
        let read = async {
            let mut replies = Vec::with_capacity(requests.len());
            while replies.len() < requests.len() {
                match conn.parser.parse(&mut conn.buf) {
                    Ok(Some(reply)) => {
                        replies.push(reply);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(format!("bad reply: {e}")),
                }
                match conn.stream.read_buf(&mut conn.buf).await {
                    Ok(0) => return Err("connection closed".to_string()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(replies)
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(replies)) => Ok(replies),
            Ok(Err(e)) => Err((e, true)),
            Err(_) => Err((format!("no reply: {TIMED_OUT}"), true)),
        }
    }
}

#[cfg(test)]
mod tests;
