//! The state of the client port and of each connection, and the commands that read or change
//! it: HELLO, AUTH, CLIENT, SELECT, RESET.
//!
//! [`ClientPort`] is shared by every connection of a node: the client ids (a node-wide counter,
//! as Redis numbers them), the connections open now (for CLIENT LIST and INFO), and the
//! counters INFO reports. [`Connection`] is one connection's own state: its protocol version
//! (RESP2 until `HELLO 3`), its id, name and library, which only it changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::time::{Duration, Instant};

use crate::auth::{Authority, ConnectionAuth};
use crate::resp::{Protocol, Reply};
use crate::server::upper;

/// The Redis version whose replies the client port follows (HELLO, INFO `redis_version`):
/// clients pick features by it, and the commands served answer as Redis 7.2 answers them.
pub const REDIS_VERSION: &str = "7.2.0";

/// What every connection of one client port shares.
pub struct ClientPort {
    next_id: AtomicU64,
    pub started: Instant,
    /// The port clients connect to (INFO `tcp_port`); 0 if unknown.
    pub tcp_port: u16,
    pub connections_received: AtomicU64,
    pub commands_processed: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Mutex<ClientInfo>>>>,
    ops: Mutex<OpsSamples>,
    /// The users, when authentication is on.
    authority: Option<Arc<Authority>>,
}

/// What CLIENT LIST shows of a connection.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub name: Bytes,
    pub lib_name: Bytes,
    pub lib_ver: Bytes,
    pub protocol: Protocol,
    pub connected: Instant,
    pub last_active: Instant,
    /// The last command, lower case (`client|list` for a subcommand).
    pub last_command: String,
    pub no_evict: bool,
    pub no_touch: bool,
    /// The user logged in.
    pub user: String,
}

/// Samples of the command counter, one per 100 ms at most, for `instantaneous_ops_per_sec`.
#[derive(Default)]
struct OpsSamples {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

const OPS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
const OPS_SAMPLES: usize = 16;

impl ClientPort {
    pub fn new(tcp_port: u16) -> Arc<Self> {
        Self::with_authority(tcp_port, None)
    }

    /// A port whose clients must log in when `authority` is given.
    pub fn with_authority(tcp_port: u16, authority: Option<Arc<Authority>>) -> Arc<Self> {
        Arc::new(Self {
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            tcp_port,
            connections_received: AtomicU64::new(0),
            commands_processed: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
            ops: Mutex::new(OpsSamples::default()),
            authority,
        })
    }

    /// Registers a new connection from `addr`.
    pub fn connect(self: &Arc<Self>, addr: String) -> Connection {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections_received.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let auth = ConnectionAuth::new(self.authority.clone(), addr.clone());
        let info = Arc::new(Mutex::new(ClientInfo {
            id,
            addr,
            name: Bytes::new(),
            lib_name: Bytes::new(),
            lib_ver: Bytes::new(),
            protocol: Protocol::Resp2,
            connected: now,
            last_active: now,
            last_command: "NULL".into(),
            no_evict: false,
            no_touch: false,
            user: auth.user_name().to_string(),
        }));
        lock(&self.open).insert(id, info.clone());
        Connection {
            id,
            protocol: Protocol::Resp2,
            info,
            port: self.clone(),
            tx: Default::default(),
            auth,
        }
    }

    pub fn connected_clients(&self) -> usize {
        lock(&self.open).len()
    }

    /// Every open connection, by id.
    pub fn list(&self) -> Vec<ClientInfo> {
        let open: Vec<_> = lock(&self.open).values().cloned().collect();
        open.iter().map(|c| lock(c).clone()).collect()
    }

    /// Counts `n` commands processed now.
    pub fn count_commands(&self, n: u64) {
        let total = self.commands_processed.fetch_add(n, Ordering::Relaxed) + n;
        let now = Instant::now();
        let mut ops = lock(&self.ops);
        if ops
            .samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= OPS_SAMPLE_EVERY)
        {
            if ops.samples.len() == OPS_SAMPLES {
                ops.samples.pop_front();
            }
            ops.samples.push_back((now, total));
        }
    }

    /// CONFIG RESETSTAT: the counters INFO's stats report start again from zero.
    pub fn reset_stats(&self) {
        for counter in [
            &self.connections_received,
            &self.commands_processed,
            &self.rejected_connections,
            &self.net_input_bytes,
            &self.net_output_bytes,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        lock(&self.ops).samples.clear();
    }

    /// Commands per second over the last samples (about 1.6 s while busy).
    pub fn ops_per_sec(&self) -> u64 {
        let total = self.commands_processed.load(Ordering::Relaxed);
        let ops = lock(&self.ops);
        let Some((at, count)) = ops.samples.front() else {
            return 0;
        };
        let elapsed = Instant::now().duration_since(*at).as_secs_f64();
        if elapsed < 0.001 {
            return 0;
        }
        (total.saturating_sub(*count) as f64 / elapsed) as u64
    }
}

/// A poisoned lock only means another connection's task panicked while holding it; the data
/// (names, counters) is still sound.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One connection's state. Only its own task reads or changes it, so commands that change it
/// run one at a time, in pipeline order ([`is_connection_command`]).
pub struct Connection {
    pub id: u64,
    /// How this connection's replies are encoded.
    pub protocol: Protocol,
    /// What CLIENT LIST shows of it (shared with the port).
    info: Arc<Mutex<ClientInfo>>,
    port: Arc<ClientPort>,
    /// MULTI's queue and the WATCHed keys.
    pub tx: crate::server_multi::Transaction,
    /// Who it is logged in as, and what that user may run.
    pub auth: ConnectionAuth,
}

impl Drop for Connection {
    fn drop(&mut self) {
        lock(&self.port.open).remove(&self.id);
    }
}

impl Connection {
    pub fn port(&self) -> &Arc<ClientPort> {
        &self.port
    }

    /// Notes the command a request runs, for CLIENT LIST's `cmd` and `idle`.
    pub fn note_command(&self, args: &[Bytes]) {
        let mut name = args
            .first()
            .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
            .unwrap_or_default();
        if let Some(sub) = args.get(1).filter(|_| has_subcommands(&name)) {
            name = format!(
                "{name}|{}",
                String::from_utf8_lossy(sub).to_ascii_lowercase()
            );
        }
        let mut info = lock(&self.info);
        info.last_command = name;
        info.last_active = Instant::now();
    }

    fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
        lock(&self.info).protocol = protocol;
    }

    fn info(&self) -> ClientInfo {
        lock(&self.info).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ClientInfo)) {
        f(&mut lock(&self.info));
    }
}

fn has_subcommands(name: &str) -> bool {
    matches!(name, "client" | "config" | "command")
}

/// Commands that read or change the connection's state, or answer without the node. They run
/// one at a time in pipeline order (a reply after `HELLO 3` is encoded as RESP3), and they are
/// answered while the node is still loading, when every other command (PING included, as in
/// Redis) is answered `-LOADING`.
pub fn is_connection_command(name: &[u8]) -> bool {
    const NAMES: [&str; 15] = [
        "HELLO", "AUTH", "CLIENT", "SELECT", "RESET", "QUIT", "INFO", "CONFIG", "COMMAND", "ECHO",
        "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH",
    ];
    NAMES
        .iter()
        .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Redis's text for an error in a subcommand's arguments.
pub fn sub_arity_error(command: &str, sub: &[u8]) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{}|{}' command",
        command.to_ascii_lowercase(),
        String::from_utf8_lossy(sub).to_ascii_lowercase()
    ))
}

fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

/// Names and library attributes: printable ASCII without spaces, as Redis requires.
fn valid_attribute(value: &[u8]) -> bool {
    value.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

const BAD_NAME: &str = "ERR Client names cannot contain spaces, newlines or special characters.";

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`. `role` is HELLO's
/// `role` field: `master` on the leader.
pub async fn hello(conn: &mut Connection, args: &[Bytes], role: &str) -> Reply {
    let mut protocol = conn.protocol;
    let mut name = None;
    if let Some(version) = args.first() {
        protocol = match std::str::from_utf8(version)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Reply::error("NOPROTO unsupported protocol version"),
            None => return Reply::error("ERR Protocol version is not an integer or out of range"),
        };
        let mut rest = &args[1..];
        while let Some(option) = rest.first() {
            let option_error = || {
                Reply::error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                ))
            };
            match (upper(option).as_str(), &rest[1..]) {
                ("AUTH", [user, password, ..]) => {
                    if let Err(refused) = login(conn, Some(user), password).await {
                        return refused;
                    }
                    rest = &rest[3..];
                }
                ("SETNAME", [client_name, ..]) => {
                    if !valid_attribute(client_name) {
                        return Reply::error(BAD_NAME);
                    }
                    name = Some(client_name.clone());
                    rest = &rest[2..];
                }
                _ => return option_error(),
            }
        }
    }
    if let Some(refused) = conn.auth.hello_refusal() {
        return refused;
    }
    if let Some(name) = name {
        conn.update(|i| i.name = name);
    }
    conn.set_protocol(protocol);
    Reply::map([
        ("server", Reply::bulk("redis")),
        ("version", Reply::bulk(REDIS_VERSION)),
        ("proto", Reply::Integer(protocol.version())),
        ("id", Reply::Integer(conn.id as i64)),
        ("mode", Reply::bulk("standalone")),
        ("role", Reply::bulk(role)),
        ("modules", Reply::Array(Vec::new())),
    ])
}

/// Logs the connection in ([`ConnectionAuth::login`]; user None: `default`).
async fn login(conn: &mut Connection, user: Option<&[u8]>, password: &[u8]) -> Result<(), Reply> {
    conn.auth.login(user, password).await?;
    let user = conn.auth.user_name().to_string();
    conn.update(|i| i.user = user);
    Ok(())
}

/// `AUTH [username] password`.
pub async fn auth(conn: &mut Connection, args: &[Bytes]) -> Reply {
    let logged_in = match args {
        [password] => login(conn, None, password).await,
        [user, password] => login(conn, Some(user), password).await,
        [] => return crate::server::arity_error("AUTH"),
        _ => return syntax_error(),
    };
    logged_in.map_or_else(|refused| refused, |()| Reply::ok())
}

/// `SELECT index`: only database 0 exists.
pub fn select(args: &[Bytes]) -> Reply {
    match args {
        [db] => match std::str::from_utf8(db)
            .ok()
            .and_then(|d| d.parse::<i64>().ok())
        {
            Some(0) => Reply::ok(),
            Some(_) => Reply::error("ERR DB index is out of range"),
            None => Reply::error("ERR value is not an integer or out of range"),
        },
        _ => crate::server::arity_error("SELECT"),
    }
}

/// `RESET`: back to a fresh connection's state (RESP2, no name), keeping the id.
pub fn reset(conn: &mut Connection) -> Reply {
    conn.set_protocol(Protocol::Resp2);
    conn.tx.reset();
    conn.auth.reset();
    let user = conn.auth.user_name().to_string();
    conn.update(|i| {
        i.name = Bytes::new();
        i.no_evict = false;
        i.no_touch = false;
        i.user = user;
    });
    Reply::Simple("RESET".into())
}

/// `CLIENT subcommand ...`.
pub fn client(conn: &mut Connection, args: &[Bytes]) -> Reply {
    let Some(sub) = args.first() else {
        return crate::server::arity_error("CLIENT");
    };
    let rest = &args[1..];
    match (upper(sub).as_str(), rest) {
        ("ID", []) => Reply::Integer(conn.id as i64),
        ("GETNAME", []) => {
            let name = conn.info().name;
            if name.is_empty() {
                Reply::Nil
            } else {
                Reply::Bulk(name)
            }
        }
        ("SETNAME", [name]) => {
            if !valid_attribute(name) {
                return Reply::error(BAD_NAME);
            }
            conn.update(|i| i.name = name.clone());
            Reply::ok()
        }
        ("SETINFO", [attribute, value]) => set_info(conn, attribute, value),
        ("INFO", []) => Reply::Verbatim(Bytes::from(client_line(&conn.info(), Instant::now()))),
        ("LIST", filter) => client_list(conn.port(), filter),
        ("NO-EVICT" | "NO-TOUCH", [flag]) => {
            let on = match upper(flag).as_str() {
                "ON" => true,
                "OFF" => false,
                _ => return syntax_error(),
            };
            let evict = upper(sub) == "NO-EVICT";
            conn.update(|i| {
                if evict {
                    i.no_evict = on
                } else {
                    i.no_touch = on
                }
            });
            Reply::ok()
        }
        ("HELP", []) => Reply::Array(
            [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME, SETNAME <name>, ID, INFO, LIST [TYPE normal] [ID <id> ...],",
                "SETINFO <LIB-NAME|LIB-VER> <value>, NO-EVICT <ON|OFF>, NO-TOUCH <ON|OFF>, HELP",
            ]
            .iter()
            .map(|l| Reply::Simple(l.to_string()))
            .collect(),
        ),
        (
            "ID" | "GETNAME" | "SETNAME" | "SETINFO" | "INFO" | "HELP" | "NO-EVICT" | "NO-TOUCH",
            _,
        ) => sub_arity_error("CLIENT", sub),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

fn set_info(conn: &Connection, attribute: &Bytes, value: &Bytes) -> Reply {
    let lib_name = match upper(attribute).as_str() {
        "LIB-NAME" => true,
        "LIB-VER" => false,
        _ => {
            return Reply::error(format!(
                "ERR Unrecognized option '{}'",
                String::from_utf8_lossy(attribute)
            ))
        }
    };
    if !valid_attribute(value) {
        return Reply::error(format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            String::from_utf8_lossy(attribute)
        ));
    }
    conn.update(|i| {
        if lib_name {
            i.lib_name = value.clone();
        } else {
            i.lib_ver = value.clone();
        }
    });
    Reply::ok()
}

/// `CLIENT LIST [TYPE normal] [ID id ...]`.
fn client_list(port: &ClientPort, filter: &[Bytes]) -> Reply {
    let mut ids: Option<Vec<u64>> = None;
    let mut only_other_type = false;
    let mut rest = filter;
    while let Some(option) = rest.first() {
        match (upper(option).as_str(), &rest[1..]) {
            ("TYPE", [kind, ..]) => {
                match upper(kind).as_str() {
                    "NORMAL" => {}
                    "MASTER" | "REPLICA" | "SLAVE" | "PUBSUB" => only_other_type = true,
                    _ => {
                        return Reply::error(format!(
                            "ERR Unknown client type '{}'",
                            String::from_utf8_lossy(kind)
                        ))
                    }
                }
                rest = &rest[2..];
            }
            ("ID", [_, ..]) => {
                let mut wanted = Vec::new();
                rest = &rest[1..];
                while let Some(id) = rest.first() {
                    match std::str::from_utf8(id)
                        .ok()
                        .and_then(|i| i.parse::<u64>().ok())
                    {
                        Some(id) if id > 0 => wanted.push(id),
                        _ => return Reply::error("ERR Invalid client ID"),
                    }
                    rest = &rest[1..];
                }
                ids = Some(wanted);
            }
            _ => return syntax_error(),
        }
    }
    let now = Instant::now();
    let text: String = port
        .list()
        .iter()
        .filter(|c| !only_other_type && ids.as_ref().is_none_or(|ids| ids.contains(&c.id)))
        .map(|c| client_line(c, now))
        .collect();
    Reply::Verbatim(Bytes::from(text))
}

/// One line of CLIENT LIST, with Redis's fields (those without a meaning here at their idle
/// values), so that tools parsing it find what they look for.
fn client_line(c: &ClientInfo, now: Instant) -> String {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let flags = match (c.no_evict, c.no_touch) {
        (false, false) => "N",
        (true, false) => "e",
        (false, true) => "T",
        (true, true) => "eT",
    };
    format!(
        "id={} addr={} laddr= fd=-1 name={} age={} idle={} flags={flags} db=0 sub=0 psub=0 \
         ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 \
         omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
        c.id,
        c.addr,
        text(&c.name),
        now.duration_since(c.connected).as_secs(),
        now.duration_since(c.last_active).as_secs(),
        c.last_command,
        c.user,
        c.protocol.version(),
        text(&c.lib_name),
        text(&c.lib_ver),
    )
}

#[cfg(test)]
mod tests;
