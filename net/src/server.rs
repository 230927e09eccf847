//! The client port: the Redis protocol (RESP2) mapped onto node requests, so that redis-cli,
//! redis-benchmark and Redis client libraries work unchanged.
//!
//! Commands: the data commands ([`crate::server_data`]), PING, ECHO, QUIT, INFO,
//! LEADER (the leader's client address, or nil if unknown), the operator's `RAFT.MEMBER ...` and
//! `RAFT.TRANSFER-LEADER` ([`crate::server_admin`]),
//! plus enough of CONFIG, COMMAND, CLIENT and SELECT for tools to start. `CAS key expected new`
//! sets `key` to `new` only if it holds `expected`; `CAS key new` only if it is absent; the reply
//! is 1 if it swapped, 0 if not. `SEQ client-id seq <command...>` runs a write inside an
//! exactly-once session (used by `KvClient`, whose retries reuse the pair).
//!
//! Errors: `-TRYAGAIN ...` means certainly not applied; `-TIMEOUT ...` means the outcome is
//! unknown. Any other error leaves the connection usable, except a protocol error, after which
//! the stream cannot be resynchronised and the connection is closed.

use bytes::{Bytes, BytesMut};
use kv::SESSIONLESS_CLIENT;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::node::admin::MemberRole;
use crate::request::{NodeHandle, NodeInfo, RequestError};
use crate::resp::{Limits, Reply, Request, RequestParser};
use crate::server_admin;
use crate::server_data;
use crate::transport::{Listener, Stream};

/// Requests parsed from one read are executed concurrently and answered in order.
const MAX_PIPELINE: usize = 1024;

/// Accepts client connections until `shutdown` turns true, then returns once every connection
/// has answered the requests it had read and closed: a node stopping gracefully stops its
/// client port first, and waits for this before it stops answering.
pub async fn run_client_server<L: Listener>(
    mut listener: L,
    node: NodeHandle,
    mut shutdown: watch::Receiver<bool>,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Each connection holds a sender; the channel closes when the last one ends.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    tracing::debug!(%remote, "client connected");
                    let conn = serve_connection(stream, node.clone(), rng.gen(), shutdown.clone());
                    let open = open.clone();
                    tokio::spawn(async move {
                        conn.await;
                        drop(open);
                    });
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

async fn serve_connection<S: Stream>(
    mut stream: S,
    node: NodeHandle,
    conn_seed: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut parser = RequestParser::new(Limits::default());
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut outbuf = BytesMut::with_capacity(16 * 1024);
    // Sessionless writes need request ids unique cluster-wide, across restarts too.
    let mut ids = rand::rngs::StdRng::seed_from_u64(conn_seed);
    loop {
        let mut batch = Vec::new();
        let mut protocol_error = None;
        while batch.len() < MAX_PIPELINE {
            match parser.parse(&mut inbuf) {
                Ok(Some(req)) => batch.push(req),
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        if batch.is_empty() && protocol_error.is_none() {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                read = stream.read_buf(&mut inbuf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
            }
        }
        let mut quit = false;
        for run in runs_in_pipeline_order(batch) {
            let replies = join_in_order(
                run.into_iter()
                    .map(|req| execute(req, &node, ids.gen::<u64>() | 1))
                    .collect(),
            )
            .await;
            for (reply, close) in replies {
                reply.encode(&mut outbuf);
                quit |= close;
            }
        }
        if let Some(e) = &protocol_error {
            tracing::debug!(error = %e, "closing a client connection after a protocol error");
            Reply::error(format!("ERR Protocol error: {e}")).encode(&mut outbuf);
        }
        if stream.write_all(&outbuf).await.is_err() {
            return;
        }
        outbuf.clear();
        if quit || protocol_error.is_some() {
            let _ = stream.flush().await;
            return;
        }
    }
}

/// Splits a pipeline into runs that may execute together: consecutive reads, or consecutive
/// other requests. A run starts only when the one before it has been answered, so a read sees
/// every write pipelined before it, as Redis clients expect.
fn runs_in_pipeline_order(batch: Vec<Request>) -> Vec<Vec<Request>> {
    let is_read = |r: &Request| r.args.first().is_some_and(|n| server_data::is_read(n));
    let mut runs: Vec<Vec<Request>> = Vec::new();
    for req in batch {
        match runs.last_mut() {
            Some(run) if run.first().map(is_read) == Some(is_read(&req)) => run.push(req),
            _ => runs.push(vec![req]),
        }
    }
    runs
}

/// Runs the futures concurrently, polling them in index order, so that each queues its request
/// at the node (its first await) in pipeline order; the node's queue is FIFO and fair, so writes
/// pipelined on one connection enter the log in the order they were sent.
async fn join_in_order<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
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

/// Runs one request; the flag says to close the connection after replying (QUIT).
pub async fn execute(req: Request, node: &NodeHandle, request_id: u64) -> (Reply, bool) {
    let Some(name) = req.args.first() else {
        return (Reply::error("ERR empty command"), false);
    };
    let name = upper(name);
    let args = &req.args[1..];
    let session = (SESSIONLESS_CLIENT, request_id);
    let reply = match name.as_str() {
        "PING" => match args {
            [] => Reply::Simple("PONG".into()),
            [msg] => Reply::Bulk(msg.clone()),
            _ => arity_error(&name),
        },
        "ECHO" => match args {
            [msg] => Reply::Bulk(msg.clone()),
            _ => arity_error(&name),
        },
        "QUIT" => return (Reply::ok(), true),
        "SEQ" => match args {
            [client, seq, rest @ ..] if !rest.is_empty() => {
                match (parse_u64(client), parse_u64(seq)) {
                    (Some(client), Some(seq)) if client != SESSIONLESS_CLIENT => {
                        let inner = Request {
                            args: rest.to_vec(),
                        };
                        server_data::execute(
                            &upper(&rest[0]),
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
        "LEADER" => match args {
            [] => match node.info().await {
                Ok(info) => info
                    .leader_client_addr
                    .map_or(Reply::Nil, |a| Reply::Bulk(Bytes::from(a))),
                Err(e) => request_error(e),
            },
            _ => arity_error(&name),
        },
        "RAFT.MEMBER" => {
            server_admin::execute(server_admin::parse_member_command(args), node).await
        }
        "RAFT.TRANSFER-LEADER" => {
            server_admin::execute(server_admin::parse_transfer_command(args), node).await
        }
        "INFO" => match node.info().await {
            Ok(info) => Reply::Bulk(Bytes::from(info_text(&info))),
            Err(e) => request_error(e),
        },
        "CONFIG" => config(args),
        "COMMAND" => match args.first().map(|a| upper(a)).as_deref() {
            Some("COUNT") => Reply::Integer(0),
            _ => Reply::Array(Vec::new()),
        },
        "CLIENT" => match args.first().map(|a| upper(a)).as_deref() {
            Some("SETNAME") | Some("SETINFO") => Reply::ok(),
            Some("GETNAME") => Reply::Nil,
            Some("ID") => Reply::Integer((request_id >> 1) as i64),
            _ => Reply::error("ERR unsupported CLIENT subcommand"),
        },
        "SELECT" => match args {
            [db] if db.as_ref() == b"0" => Reply::ok(),
            [_] => Reply::error("ERR DB index is out of range (only database 0 exists)"),
            _ => arity_error(&name),
        },
        _ => server_data::execute(&name, args, node, session).await,
    };
    (reply, false)
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// CONFIG GET answers what benchmark tools ask for; everything else is empty or refused.
fn config(args: &[Bytes]) -> Reply {
    match (
        args.first().map(|a| upper(a)).as_deref(),
        &args[1.min(args.len())..],
    ) {
        (Some("GET"), [param]) => {
            let value = match upper(param).as_str() {
                "SAVE" => Some(""),
                "APPENDONLY" => Some("no"),
                "DATABASES" => Some("1"),
                _ => None,
            };
            match value {
                Some(v) => Reply::Array(vec![
                    Reply::Bulk(param.clone()),
                    Reply::Bulk(Bytes::from(v.to_string())),
                ]),
                None => Reply::Array(Vec::new()),
            }
        }
        (Some("RESETSTAT"), []) => Reply::ok(),
        (Some("SET"), _) => {
            Reply::error("ERR CONFIG SET is not supported; restart the node with new flags")
        }
        _ => Reply::error("ERR unsupported CONFIG subcommand"),
    }
}

/// The INFO text, in Redis' `field:value` format.
pub fn info_text(info: &NodeInfo) -> String {
    let role = match info.role {
        raft_core::Role::Leader => "leader",
        raft_core::Role::Follower => "follower",
        raft_core::Role::Candidate => "candidate",
        raft_core::Role::PreCandidate => "precandidate",
        _ => "unknown",
    };
    let ids = |set: &std::collections::BTreeSet<raft_core::NodeId>| {
        set.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    };
    let m = &info.membership;
    let membership = format!(
        "# Membership\r\nvoters:{}\r\noutgoing_voters:{}\r\nlearners:{}\r\njoint:{}\r\nmember_role:{}\r\n",
        ids(&m.voters),
        ids(&m.outgoing),
        ids(&m.learners),
        if m.is_joint() { "yes" } else { "no" },
        MemberRole::of(m, info.id).as_str(),
    );
    format!(
        "# Server\r\nkvstore_version:{}\r\nnode_id:{}\r\ncluster_id:{}\r\nincarnation:{:#x}\r\nrefused_incarnation_frames:{}\r\n\r\n# Raft\r\nrole:{role}\r\nterm:{}\r\nleader_id:{}\r\ncommit_index:{}\r\napplied_index:{}\r\nlast_index:{}\r\nleader_client_addr:{}\r\n\r\n# Snapshots\r\nlast_snapshot_index:{}\r\nlog_start_index:{}\r\nsnapshot_count:{}\r\nsnapshots_installed:{}\r\n\r\n{membership}",
        env!("CARGO_PKG_VERSION"),
        info.id,
        info.cluster_id,
        info.incarnation,
        info.refused_incarnation_frames,
        info.term,
        info.leader.unwrap_or(0),
        info.commit_index,
        info.applied_index,
        info.last_index,
        info.leader_client_addr.as_deref().unwrap_or(""),
        info.last_snapshot_index,
        info.log_start_index,
        info.snapshot_count,
        info.snapshots_installed,
    )
}

/// Reads `field:value` lines of an INFO reply.
pub fn parse_info(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
