//! The client port: the Redis protocol (RESP2, or RESP3 after `HELLO 3`) mapped onto node
//! requests, so that redis-cli, redis-benchmark and Redis client libraries work unchanged.
//!
//! Commands: the data commands ([`crate::server_data`]), PING, ECHO, LEADER (the leader's
//! client address, or nil if unknown), the operator's `RAFT.MEMBER ...` and
//! `RAFT.TRANSFER-LEADER` ([`crate::server_admin`]), `RAFT.RANGES` and `RAFT.SPLIT`
//! ([`crate::server_ranges`]); the connection commands HELLO, AUTH,
//! CLIENT, SELECT, RESET, QUIT ([`crate::server_conn`]), INFO and CONFIG
//! ([`crate::server_info`]) and COMMAND ([`crate::command_table`], which lists them all).
//! `CAS key expected new` sets `key` to `new` only if it holds `expected`; `CAS key new` only
//! if it is absent; the reply is 1 if it swapped, 0 if not. `SEQ client-id seq <command...>`
//! runs a write inside an exactly-once session (used by `KvClient`, whose retries reuse the
//! pair).
//!
//! Errors: `-TRYAGAIN ...` means certainly not applied; `-TIMEOUT ...` means the outcome is
//! unknown. `-LOADING` means the node has not started yet. Any other error leaves the connection
//! usable, except a protocol error, after which the stream cannot be resynchronised and the
//! connection is closed (a bulk string over the limit is not one: it is skipped).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kv::SESSIONLESS_CLIENT;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::Instrument;

use crate::command_table;
use crate::metrics::{NodeMetrics, Outcome};
use crate::request::{NodeHandle, RequestError};
use crate::resp::{Limits, ParseError, Reply, Request, RequestParser};
use crate::server_admin;
use crate::server_backup;
use crate::server_conn::{self, ClientPort, Connection};
use crate::server_data;
use crate::server_info::{self, InfoSource, MAX_CLIENTS};
use crate::server_multi;
use crate::server_ranges;
use crate::transport::{Listener, Stream};

/// Requests parsed from one read are executed concurrently and answered in order.
const MAX_PIPELINE: usize = 1024;

/// Redis's answer to a command that needs the data while the node is not ready to serve.
pub const LOADING: &str = "LOADING Redis is loading the dataset in memory";

/// Accepts client connections until `shutdown` turns true, for a node already started; see
/// [`serve_clients`].
pub async fn run_client_server<L: Listener>(
    listener: L,
    node: NodeHandle,
    shutdown: watch::Receiver<bool>,
    seed: u64,
) {
    let metrics = node.metrics.clone();
    let (_started, node) = watch::channel(Some(node));
    serve_clients(listener, node, shutdown, seed, 0, metrics, None).await
}

/// Accepts client connections until `shutdown` turns true, then returns once every connection
/// has answered the requests it had read and closed: a node stopping gracefully stops its
/// client port first, and waits for this before it stops answering.
///
/// `node` is None until the node has started: meanwhile the connection commands (HELLO, CLIENT,
/// INFO, ...) are answered, and every other `-LOADING`, as Redis answers while it loads.
/// `tcp_port` is what INFO and CONFIG report; `metrics` counts the open connections; with
/// `authority`, clients must log in ([`crate::auth`]).
pub async fn serve_clients<L: Listener>(
    mut listener: L,
    node: watch::Receiver<Option<NodeHandle>>,
    mut shutdown: watch::Receiver<bool>,
    seed: u64,
    tcp_port: u16,
    metrics: Arc<NodeMetrics>,
    authority: Option<Arc<crate::auth::Authority>>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let port = ClientPort::with_authority(tcp_port, authority);
    // Each connection holds a sender; the channel closes when the last one ends.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((mut stream, remote)) => {
                    if port.connected_clients() >= MAX_CLIENTS {
                        port.rejected_connections.fetch_add(1, Ordering::Relaxed);
                        L::spawn(async move {
                            let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
                        });
                        continue;
                    }
                    tracing::debug!(%remote, "client connected");
                    let conn = port.connect(remote);
                    let serving =
                        serve_connection(stream, conn, node.clone(), rng.gen(), shutdown.clone());
                    let open = open.clone();
                    let metrics = metrics.clone();
                    metrics.client_connections.add(1);
                    let serving = async move {
                        serving.await;
                        metrics.client_connections.add(-1);
                        drop(open);
                    };
                    L::spawn(serving.in_current_span());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop((listener, open));
    let _ = all_closed.recv().await;
}

/// A parsed request, or the error that answers a request the parser refused and skipped.
type Incoming = Result<Request, ParseError>;

/// One client connection's task: it reads requests, answers each pipeline in order, and ends
/// when the client closes, asks to QUIT, breaks the protocol, or the port shuts down.
struct ConnectionTask<S> {
    stream: S,
    conn: Connection,
    node: watch::Receiver<Option<NodeHandle>>,
    shutdown: watch::Receiver<bool>,
    parser: RequestParser,
    inbuf: BytesMut,
    outbuf: BytesMut,
    /// Sessionless writes need request ids unique cluster-wide, across restarts too.
    ids: rand::rngs::StdRng,
}

/// What the requests read so far say to do.
struct Pipeline {
    requests: Vec<Incoming>,
    /// The stream cannot be resynchronised after this: answer it, then close.
    protocol_error: Option<ParseError>,
}

async fn serve_connection<S: Stream>(
    stream: S,
    conn: Connection,
    node: watch::Receiver<Option<NodeHandle>>,
    conn_seed: u64,
    shutdown: watch::Receiver<bool>,
) {
    let mut task = ConnectionTask {
        stream,
        conn,
        node,
        shutdown,
        parser: RequestParser::new(Limits::default()),
        inbuf: BytesMut::with_capacity(16 * 1024),
        outbuf: BytesMut::with_capacity(16 * 1024),
        ids: rand::rngs::StdRng::seed_from_u64(conn_seed),
    };
    task.run().await
}

impl<S: Stream> ConnectionTask<S> {
    async fn run(&mut self) {
        loop {
            let pipeline = self.parse_buffered();
            if let Some(args) = self.sole_backup_request(&pipeline) {
                let node = self.node.borrow().clone();
                server_backup::serve(&mut self.stream, node.as_ref(), self.conn.protocol, &args)
                    .await;
                let _ = self.stream.flush().await;
                return;
            }
            if pipeline.requests.is_empty() && pipeline.protocol_error.is_none() {
                if self.read_more().await {
                    continue;
                }
                return;
            }
            let quit = self.answer(pipeline.requests).await;
            if let Some(e) = &pipeline.protocol_error {
                tracing::debug!(error = %e, "closing a client connection after a protocol error");
                Reply::error(e.reply_text()).encode_for(self.conn.protocol, &mut self.outbuf);
            }
            if !self.send_replies().await {
                return;
            }
            if quit || pipeline.protocol_error.is_some() {
                let _ = self.stream.flush().await;
                return;
            }
        }
    }

    /// The arguments of `KVSTORE.BACKUP` if it came alone: it takes the connection over
    /// ([`server_backup`]). Elsewhere it is refused.
    fn sole_backup_request(&mut self, pipeline: &Pipeline) -> Option<Vec<Bytes>> {
        match &pipeline.requests[..] {
            [Ok(req)]
                if pipeline.protocol_error.is_none()
                    && !self.conn.tx.is_open()
                    && server_backup::is_backup(req)
                    && self.conn.auth.refusal(&req.args).is_none() =>
            {
                self.conn.port().count_commands(1);
                self.conn.note_command(&req.args);
                Some(req.args[1..].to_vec())
            }
            _ => None,
        }
    }

    /// The requests complete in the input buffer, at most [`MAX_PIPELINE`].
    fn parse_buffered(&mut self) -> Pipeline {
        let mut pipeline = Pipeline {
            requests: Vec::new(),
            protocol_error: None,
        };
        while pipeline.requests.len() < MAX_PIPELINE {
            match self.parser.parse(&mut self.inbuf) {
                Ok(Some(req)) => pipeline.requests.push(Ok(req)),
                Ok(None) => break,
                Err(e) if !e.is_fatal() => pipeline.requests.push(Err(e)),
                Err(e) => {
                    pipeline.protocol_error = Some(e);
                    break;
                }
            }
        }
        pipeline
    }

    /// Waits for more input; false when the connection is over (closed, failed, shut down).
    async fn read_more(&mut self) -> bool {
        tokio::select! {
            biased;
            _ = self.shutdown.changed() => false,
            read = self.stream.read_buf(&mut self.inbuf) => match read {
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    self.conn.port().net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    true
                }
            },
        }
    }

    /// Answers a pipeline into the output buffer, in order; true if the client asked to quit
    /// (the requests after that are not answered).
    async fn answer(&mut self, requests: Vec<Incoming>) -> bool {
        self.conn.port().count_commands(requests.len() as u64);
        let node = self.node.borrow().clone();
        for run in runs_in_pipeline_order(requests, self.conn.tx.is_open()) {
            let quit = match run {
                Run::Refused(e) => {
                    Reply::error(e.reply_text()).encode_for(self.conn.protocol, &mut self.outbuf);
                    false
                }
                Run::Connection(req) => self.answer_connection_command(req, node.as_ref()).await,
                Run::Node(run) => self.answer_node_run(run, node.as_ref()).await,
            };
            if quit || self.conn.auth.must_close() {
                return true;
            }
        }
        false
    }

    async fn answer_connection_command(&mut self, req: Request, node: Option<&NodeHandle>) -> bool {
        self.conn.note_command(&req.args);
        if let Some(refused) = self.conn.auth.refusal(&req.args) {
            // Refused while MULTI queues: EXEC then discards the transaction, as in Redis.
            self.conn.tx.refuse();
            refused.encode_for(self.conn.protocol, &mut self.outbuf);
            return false;
        }
        let request_id = self.ids.gen::<u64>() | 1;
        let (reply, close) = connection_command(&mut self.conn, &req, node, request_id).await;
        reply.encode_for(self.conn.protocol, &mut self.outbuf);
        close
    }

    /// Runs requests that only read or write data concurrently (the connection's state is
    /// settled for the whole run), and answers them in order.
    async fn answer_node_run(&mut self, run: Vec<Request>, node: Option<&NodeHandle>) -> bool {
        if let Some(last) = run.last() {
            self.conn.note_command(&last.args);
        }
        let Some(node) = node else {
            for _ in &run {
                Reply::error(LOADING).encode_for(self.conn.protocol, &mut self.outbuf);
            }
            return false;
        };
        let ids = &mut self.ids;
        let auth = &self.conn.auth;
        let replies = join_in_order(
            run.into_iter()
                .map(|req| {
                    let refused = auth.refusal(&req.args);
                    let request_id = ids.gen::<u64>() | 1;
                    async move {
                        match refused {
                            Some(refused) => (refused, false),
                            None => execute(req, node, request_id).await,
                        }
                    }
                })
                .collect(),
        )
        .await;
        let mut quit = false;
        for (reply, close) in replies {
            reply.encode_for(self.conn.protocol, &mut self.outbuf);
            quit |= close;
        }
        quit
    }

    /// Writes the output buffer out; false if the connection failed.
    async fn send_replies(&mut self) -> bool {
        self.conn
            .port()
            .net_output_bytes
            .fetch_add(self.outbuf.len() as u64, Ordering::Relaxed);
        if self.stream.write_all(&self.outbuf).await.is_err() {
            return false;
        }
        self.outbuf.clear();
        true
    }
}

/// A connection command ([`server_conn::is_connection_command`]): it may read or change the
/// connection's state, and is answered whether or not the node has started. The flag says to
/// close the connection after replying (QUIT).
async fn connection_command(
    conn: &mut Connection,
    req: &Request,
    node: Option<&NodeHandle>,
    request_id: u64,
) -> (Reply, bool) {
    let name = upper(&req.args[0]);
    let args = &req.args[1..];
    let immediate = matches!(
        name.as_str(),
        "EXEC" | "DISCARD" | "MULTI" | "WATCH" | "QUIT" | "RESET"
    );
    if conn.tx.is_open() && !immediate {
        return (conn.tx.queue(&name, &req.args[0], args), false);
    }
    match name.as_str() {
        "QUIT" => return (Reply::ok(), true),
        "HELLO" => return (hello(conn, args, node).await, false),
        "RESET" => return (server_conn::reset(conn), false),
        _ => {}
    }
    let transaction = server_multi::is_transaction_command(&name);
    if !transaction && server_conn::is_connection_command(&req.args[0]) {
        return (local_command(conn, &req.args, node).await, false);
    }
    let Some(node) = node else {
        return (Reply::error(LOADING), false);
    };
    if transaction {
        let session = (kv::SESSIONLESS_CLIENT, request_id);
        return (
            server_multi::command(conn, &name, args, node, session).await,
            false,
        );
    }
    // A command the pipeline split expected MULTI to queue, after a MULTI that failed.
    execute(req.clone(), node, request_id).await
}

async fn hello(conn: &mut Connection, args: &[Bytes], node: Option<&NodeHandle>) -> Reply {
    let role = match node {
        Some(node) => match node.info().await {
            Ok(info) if info.role == raft_core::Role::Leader => "master",
            _ => "replica",
        },
        None => "replica",
    };
    server_conn::hello(conn, args, role).await
}

/// A command that needs neither the log nor a read index: it reads or changes only the
/// connection, or describes the node. It runs at once, or at EXEC for one that MULTI queued
/// ([`server_multi::is_queued_locally`]). `req` is the whole request, its name first.
pub(crate) async fn local_command(
    conn: &mut Connection,
    req: &[Bytes],
    node: Option<&NodeHandle>,
) -> Reply {
    let name = upper(&req[0]);
    let args = &req[1..];
    match name.as_str() {
        "PING" => ping(args),
        "ECHO" => match args {
            [msg] => Reply::Bulk(msg.clone()),
            _ => arity_error(&name),
        },
        "LEADER" => match node {
            Some(node) => leader(args, node).await,
            None => Reply::error(LOADING),
        },
        "AUTH" => server_conn::auth(conn, args).await,
        "CLIENT" => server_conn::client(conn, args),
        "SELECT" => server_conn::select(args),
        "COMMAND" => command_table::command(args),
        "CONFIG" => server_info::config(conn.port(), args),
        "INFO" => info(conn, args, node).await,
        "UNWATCH" if args.is_empty() => {
            conn.tx.unwatch();
            Reply::ok()
        }
        _ => Reply::error(format!(
            "ERR unknown command '{}'",
            name.to_ascii_lowercase()
        )),
    }
}

fn ping(args: &[Bytes]) -> Reply {
    match args {
        [] => Reply::Simple("PONG".into()),
        [msg] => Reply::Bulk(msg.clone()),
        _ => arity_error("PING"),
    }
}

/// The leader's client address, or nil while it is unknown.
async fn leader(args: &[Bytes], node: &NodeHandle) -> Reply {
    if !args.is_empty() {
        return arity_error("LEADER");
    }
    match node.info().await {
        Ok(info) => info
            .leader_client_addr
            .map_or(Reply::Nil, |a| Reply::Bulk(Bytes::from(a))),
        Err(e) => request_error(e),
    }
}

async fn info(conn: &Connection, args: &[Bytes], node: Option<&NodeHandle>) -> Reply {
    let info = match node {
        Some(node) => match node.info().await {
            Ok(info) if node.hosts_one_range() => Some(info),
            Ok(info) => Some(crate::server_routed::with_every_ranges_keys(info, node).await),
            Err(e) => return request_error(e),
        },
        None => None,
    };
    let source = InfoSource {
        port: conn.port(),
        node: info.as_ref(),
    };
    Reply::Verbatim(Bytes::from(server_info::info_text(&source, args)))
}

/// What runs together in a pipeline.
enum Run {
    /// Requests for the node, executed concurrently.
    Node(Vec<Request>),
    /// A request that reads or changes the connection's state: alone, in order.
    Connection(Request),
    /// A request the parser refused.
    Refused(ParseError),
}

/// Splits a pipeline into runs that may execute together: consecutive reads, or consecutive
/// writes; a connection command runs alone. A run starts only when the one before it has been
/// answered, so a read sees every write pipelined before it, as Redis clients expect.
fn runs_in_pipeline_order(batch: Vec<Incoming>, mut queuing: bool) -> Vec<Run> {
    let is_read = |r: &Request| r.args.first().is_some_and(|n| server_data::is_read(n));
    let mut runs: Vec<Run> = Vec::new();
    for incoming in batch {
        let req = match incoming {
            Ok(req) => req,
            Err(e) => {
                runs.push(Run::Refused(e));
                continue;
            }
        };
        // Between MULTI and EXEC every command goes, in order, to the connection's queue.
        match upper(&req.args[0]).as_str() {
            "MULTI" => queuing = true,
            "EXEC" | "DISCARD" | "RESET" => queuing = false,
            _ => {}
        }
        if queuing || server_conn::is_connection_command(&req.args[0]) {
            runs.push(Run::Connection(req));
            continue;
        }
        match runs.last_mut() {
            Some(Run::Node(run)) if run.first().map(is_read) == Some(is_read(&req)) => {
                run.push(req)
            }
            _ => runs.push(Run::Node(vec![req])),
        }
    }
    runs
}

/// Runs the futures concurrently, polling them in index order, so that each queues its request
/// at the node (its first await) in pipeline order; the node's queue is FIFO and fair, so writes
/// pipelined on one connection enter the log in the order they were sent.
pub(crate) async fn join_in_order<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (slot, out) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

pub(crate) fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

pub(crate) fn arity_error(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

pub(crate) fn request_error(e: RequestError) -> Reply {
    Reply::error(e.to_string())
}

/// Runs one request for the node (see [`execute_unmeasured`]), counting it, its outcome and
/// its latency into the node's metrics by command name (a `SEQ`-wrapped command by its own).
pub async fn execute(req: Request, node: &NodeHandle, request_id: u64) -> (Reply, bool) {
    let started = std::time::Instant::now();
    let name = match &req.args[..] {
        [seq, _, _, inner, ..] if seq.eq_ignore_ascii_case(b"SEQ") => inner.clone(),
        [name, ..] => name.clone(),
        [] => Bytes::new(),
    };
    let (reply, close) = execute_unmeasured(req, node, request_id).await;
    let outcome = match &reply {
        Reply::Error(text) => Outcome::of_error(text),
        _ => Outcome::Ok,
    };
    node.metrics
        .client_command(&name, outcome, started.elapsed());
    (reply, close)
}

/// Runs one request for the node: the data commands (dispatched to [`server_data::execute`],
/// the hook for every data command), and the node's own. The flag says to close the
/// connection after replying.
async fn execute_unmeasured(req: Request, node: &NodeHandle, request_id: u64) -> (Reply, bool) {
    let Some(name) = req.args.first() else {
        return (Reply::error("ERR empty command"), false);
    };
    let name = upper(name);
    let args = &req.args[1..];
    let session = (SESSIONLESS_CLIENT, request_id);
    let reply = match name.as_str() {
        "PING" => ping(args),
        "SEQ" => match args {
            [client, seq, rest @ ..] if !rest.is_empty() => {
                match (parse_u64(client), parse_u64(seq)) {
                    (Some(client), Some(seq)) if client != SESSIONLESS_CLIENT => {
                        let inner = Request {
                            args: rest.to_vec(),
                        };
                        server_data::execute(
                            &upper(&rest[0]),
                            &rest[0],
                            &inner.args[1..],
                            node,
                            (client, seq),
                        )
                        .await
                    }
                    _ => Reply::error("ERR SEQ needs a non-zero client id and a sequence number"),
                }
            }
            _ => arity_error(&name),
        },
        "LEADER" => leader(args, node).await,
        "RAFT.MEMBER" => {
            server_admin::execute(server_admin::parse_member_command(args), node).await
        }
        "RAFT.TRANSFER-LEADER" => {
            server_admin::execute(server_admin::parse_transfer_command(args), node).await
        }
        "RAFT.RANGES" => server_ranges::ranges_command(args, node).await,
        "RAFT.SPLIT" => server_ranges::split_command(args, node, request_id).await,
        server_backup::BACKUP_COMMAND => Reply::error(server_backup::NOT_ALONE),
        _ => server_data::execute(&name, &req.args[0], args, node, session).await,
    };
    (reply, false)
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Reads `field:value` lines of an INFO reply. A field in two sections is read from the later
/// one: `role` is Raft's (`leader`, `follower`, ...), not Replication's (`master`, `slave`).
pub fn parse_info(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
