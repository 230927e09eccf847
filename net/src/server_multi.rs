//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH. A connection queues the commands
//! between MULTI and EXEC, each checked when queued as Redis checks it (an unknown command or a
//! syntax error answers its error at once and makes EXEC answer `EXECABORT`); EXEC sends them
//! as one log entry ([`kv::Op::Multi`]), which every replica applies atomically. WATCH reads
//! each key's version (the log index that last wrote it) at a read index; EXEC carries them,
//! and the entry applies nothing if one changed: EXEC answers a null array.
//!
//! The commands that touch no data and that Redis also queues (PING, ECHO, CLIENT, INFO, ...:
//! [`is_queued_locally`]) go to no log entry: each runs when EXEC's entry has applied, in its
//! place in the reply, and not at all if the entry aborted.

use bytes::Bytes;
use kv::{Command, CommandResult, Op, Query};

use crate::request::{NodeHandle, ReadOp, ReadResult};
use crate::resp::Reply;
use crate::server::{arity_error, local_command, request_error};
use crate::server_conn::Connection;
use crate::server_data::{command_reply, shaped};
use crate::server_parse::{parse, unknown_command, Parsed, Shape};

/// Most commands one transaction may queue.
pub const MAX_QUEUED: usize = 100_000;

/// Whether `name` (upper case) is a transaction command.
pub fn is_transaction_command(name: &str) -> bool {
    matches!(name, "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH")
}

/// Whether MULTI queues command `name` (upper case) to run without the log at EXEC: the
/// commands that only read or change the connection, or describe the node. Those Redis runs
/// inside a transaction too; HELLO (a protocol switch in the middle of EXEC's reply) and our
/// own operator and session commands are refused.
pub fn is_queued_locally(name: &str) -> bool {
    matches!(
        name,
        "PING"
            | "ECHO"
            | "LEADER"
            | "AUTH"
            | "CLIENT"
            | "SELECT"
            | "COMMAND"
            | "CONFIG"
            | "INFO"
            | "UNWATCH"
    )
}

/// A queued command: one for the log entry, one whose arguments Redis checks only when it runs
/// (its error is EXEC's answer for it; the others still run), or one that needs no log entry
/// (the whole request, name first; see [`is_queued_locally`]).
#[derive(Debug)]
enum Queued {
    Run(Op, Shape),
    Fails(String),
    Local(Vec<Bytes>),
}

/// Runs transaction command `name` (upper case).
pub async fn command(
    conn: &mut Connection,
    name: &str,
    args: &[Bytes],
    node: &NodeHandle,
    session: (u64, u64),
) -> Reply {
    if (name, args.len()) == ("EXEC", 0) {
        // EXEC ends the transaction whatever happens; the commands it runs without the log may
        // need the connection itself.
        let mut tx = std::mem::take(&mut conn.tx);
        return tx.exec(node, session, conn).await;
    }
    conn.tx.command(name, args, node).await
}

/// One connection's transaction state.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Between MULTI and EXEC: the commands queued.
    queued: Option<Vec<Queued>>,
    /// A command failed to queue: EXEC answers EXECABORT.
    failed: bool,
    /// Watched keys and the versions they had.
    watched: Vec<(Bytes, u64)>,
    /// The requests queued for the log entry, name first: where their keys live decides the
    /// range that runs the transaction on a node hosting several.
    requests: Vec<Vec<Bytes>>,
}

impl Transaction {
    /// Between MULTI and EXEC: every command but the transaction ones is queued.
    pub fn is_open(&self) -> bool {
        self.queued.is_some()
    }

    /// A command was refused while queuing (a permission): EXEC discards the transaction.
    pub fn refuse(&mut self) {
        if self.is_open() {
            self.failed = true;
        }
    }

    /// Forgets everything (RESET, a closed connection).
    pub fn reset(&mut self) {
        *self = Transaction::default();
    }

    /// Queues command `name` (upper case; `sent_name` as the client wrote it) after MULTI, or
    /// answers why it cannot.
    pub fn queue(&mut self, name: &str, sent_name: &[u8], args: &[Bytes]) -> Reply {
        let Some(queued) = self.queued.as_mut() else {
            return Reply::error("ERR internal error: no transaction open");
        };
        // Redis refuses at once only an unknown command or a wrong number of arguments; any
        // other error is the command's answer at EXEC.
        let parsed = parse(name, args);
        if let Some(Ok(_)) = parsed {
            let mut request = Vec::with_capacity(1 + args.len());
            request.push(Bytes::copy_from_slice(sent_name));
            request.extend_from_slice(args);
            self.requests.push(request);
        }
        let item = match parsed {
            Some(Ok(Parsed::Read(q, shape))) => Queued::Run(Op::Query(q), shape),
            Some(Ok(Parsed::Write(op, shape))) => Queued::Run(op, shape),
            Some(Err(e)) if e.starts_with("ERR wrong number of arguments") => {
                self.failed = true;
                return Reply::error(e);
            }
            Some(Err(e)) => Queued::Fails(e),
            None => match crate::command_table::lookup(name.as_bytes()) {
                None => {
                    self.failed = true;
                    return Reply::error(unknown_command(sent_name, args));
                }
                Some(spec) if !arity_allows(spec.arity, args.len()) => {
                    self.failed = true;
                    return arity_error(name);
                }
                Some(_) if is_queued_locally(name) => {
                    let mut request = Vec::with_capacity(1 + args.len());
                    request.push(Bytes::copy_from_slice(sent_name));
                    request.extend_from_slice(args);
                    Queued::Local(request)
                }
                Some(_) => {
                    self.failed = true;
                    return Reply::error(format!(
                        "ERR '{}' cannot be used in a transaction here",
                        name.to_ascii_lowercase()
                    ));
                }
            },
        };
        if queued.len() == MAX_QUEUED {
            self.failed = true;
            return Reply::error(format!(
                "ERR a transaction queues at most {MAX_QUEUED} commands"
            ));
        }
        queued.push(item);
        Reply::Simple("QUEUED".into())
    }

    /// Forgets the watched keys (UNWATCH).
    pub fn unwatch(&mut self) {
        self.watched.clear();
    }

    /// Runs transaction command `name` (upper case), EXEC apart.
    async fn command(&mut self, name: &str, args: &[Bytes], node: &NodeHandle) -> Reply {
        match (name, args.len()) {
            ("MULTI", 0) if self.is_open() => Reply::error("ERR MULTI calls can not be nested"),
            ("MULTI", 0) => {
                self.queued = Some(Vec::new());
                self.requests.clear();
                self.failed = false;
                Reply::ok()
            }
            ("DISCARD", 0) if !self.is_open() => Reply::error("ERR DISCARD without MULTI"),
            ("DISCARD", 0) => {
                self.reset();
                Reply::ok()
            }
            ("WATCH", n) if n > 0 && self.is_open() => {
                Reply::error("ERR WATCH inside MULTI is not allowed")
            }
            ("WATCH", n) if n > 0 => self.watch(args, node).await,
            ("UNWATCH", 0) => {
                self.unwatch();
                Reply::ok()
            }
            _ => Reply::error(format!(
                "ERR wrong number of arguments for '{}' command",
                name.to_ascii_lowercase()
            )),
        }
    }

    async fn watch(&mut self, keys: &[Bytes], node: &NodeHandle) -> Reply {
        let range = match crate::server_routed::range_of_watch(keys, node).await {
            Ok(range) => range,
            Err(refused) => return refused,
        };
        let versions = node
            .read_in(
                range,
                ReadOp::Query(Query::Versions {
                    keys: keys.to_vec(),
                }),
            )
            .await;
        match versions {
            Ok(ReadResult::Answer(CommandResult::Array(vs))) if vs.len() == keys.len() => {
                for (key, v) in keys.iter().zip(vs) {
                    let CommandResult::Value(v) = v else {
                        return Reply::error("ERR internal error: unexpected version");
                    };
                    self.watched.push((key.clone(), v as u64));
                }
                Reply::ok()
            }
            Ok(_) => Reply::error("ERR internal error: unexpected read result"),
            Err(e) => request_error(e),
        }
    }

    /// EXEC, for the transaction taken out of `conn` (whose local commands it runs).
    async fn exec(
        &mut self,
        node: &NodeHandle,
        (client_id, seq): (u64, u64),
        conn: &mut Connection,
    ) -> Reply {
        let Some(queued) = self.queued.take() else {
            return Reply::error("ERR EXEC without MULTI");
        };
        let failed = std::mem::take(&mut self.failed);
        let watches = std::mem::take(&mut self.watched);
        let requests = std::mem::take(&mut self.requests);
        if failed {
            return Reply::error("EXECABORT Transaction discarded because of previous errors.");
        }
        let mut ops = Vec::new();
        let mut shapes = Vec::new();
        for item in &queued {
            if let Queued::Run(op, shape) = item {
                ops.push(op.clone());
                shapes.push(*shape);
            }
        }
        let results = if ops.is_empty() && watches.is_empty() {
            // Nothing to apply and nothing to check: no log entry.
            Vec::new()
        } else {
            let op = Op::Multi { watches, ops };
            if let Some(too_large) = op.size_error() {
                return Reply::error(too_large);
            }
            let result = if node.split_transactions {
                run_one_by_one(node, (client_id, seq), op).await
            } else if node.hosts_one_range() {
                node.write(Command::new(client_id, seq, op)).await
            } else {
                let watched: Vec<Bytes> = match &op {
                    Op::Multi { watches, .. } => watches.iter().map(|(k, _)| k.clone()).collect(),
                    _ => Vec::new(),
                };
                let command = Command::new(client_id, seq, op);
                match crate::server_routed::exec(&requests, &watched, command, node).await {
                    Ok(result) => Ok(result),
                    Err(refused) => return refused,
                }
            };
            match result {
                Ok(CommandResult::Array(results)) if results.len() == shapes.len() => results,
                Ok(CommandResult::Aborted) => return Reply::NilArray,
                Ok(other) => return command_reply(other),
                Err(e) => return request_error(e),
            }
        };
        let mut ran = results.into_iter().zip(shapes);
        let mut replies = Vec::with_capacity(queued.len());
        for item in queued {
            replies.push(match item {
                Queued::Fails(e) => Reply::error(e),
                Queued::Run(..) => match ran.next() {
                    Some((r, shape)) => shaped(r, shape),
                    None => Reply::error("ERR internal error: a result is missing"),
                },
                Queued::Local(request) => local_command(conn, &request, Some(node)).await,
            });
        }
        Reply::Array(replies)
    }
}

/// Whether a command of `arity` (the command table's: negative means at least) takes `args`
/// arguments after its name.
fn arity_allows(arity: i64, args: usize) -> bool {
    let given = args as i64 + 1;
    if arity < 0 {
        given >= -arity
    } else {
        given == arity
    }
}

/// The deliberate bug `UnsafeSwitches::split_transactions`: a transaction's commands run as
/// separate requests, each its own log entry (or read), so that other clients' writes may come
/// between them.
async fn run_one_by_one(
    node: &NodeHandle,
    session: (u64, u64),
    op: Op,
) -> Result<CommandResult, crate::request::RequestError> {
    let Op::Multi { ops, .. } = op else {
        return node.write(Command::new(session.0, session.1, op)).await;
    };
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            Op::Query(q) => match node.read(ReadOp::Query(q)).await? {
                ReadResult::Answer(r) => r,
                _ => CommandResult::Error("ERR internal error: unexpected read result".into()),
            },
            op => node.write(Command::new(session.0, session.1, op)).await?,
        };
        results.push(result);
    }
    Ok(CommandResult::Array(results))
}
