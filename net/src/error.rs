//! The node's errors: why it could not start or had to stop ([`NodeError`]), why its storage
//! failed ([`StorageError`], wrapping `kv::Error`), why a snapshot transfer ended early
//! ([`TransferError`]), and why the command line gave up ([`CliError`], with [`ConfigError`]).
//! Each says what failed in words a user can act on, and keeps its cause as `source()`.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

use raft_core::{NodeId, SnapshotMeta};

use crate::client::ClientError;

/// Why a storage worker failed: the node cannot go on safely and stops.
#[derive(Debug)]
pub enum StorageError {
    /// `kv` failed while the worker was `doing` something ("writing the raft log", ...).
    Kv { doing: String, source: kv::Error },
    /// A storage thread could not be started.
    Spawn(io::Error),
    /// A storage thread stopped while the node waited for it.
    WorkerStopped,
    /// The apply worker was asked to install a snapshot it has not staged (a driver bug).
    NotStaged { index: u64, term: u64 },
    /// The other half of a snapshot install failed (it reported why).
    InstallAbandoned { index: u64, term: u64 },
}

impl StorageError {
    /// A `kv` failure while doing `doing`.
    pub fn kv(doing: impl Into<String>) -> impl FnOnce(kv::Error) -> StorageError {
        let doing = doing.into();
        move |source| StorageError::Kv { doing, source }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Kv { doing, source } => write!(f, "{doing} failed: {source}"),
            StorageError::Spawn(e) => write!(f, "cannot start a storage thread: {e}"),
            StorageError::WorkerStopped => write!(f, "a storage thread stopped"),
            StorageError::NotStaged { index, term } => write!(
                f,
                "asked to install snapshot {index}/{term}, which is not the one staged"
            ),
            StorageError::InstallAbandoned { index, term } => write!(
                f,
                "installing snapshot {index}/{term}: the other half of the install failed"
            ),
        }
    }
}

impl Error for StorageError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StorageError::Kv { source, .. } => Some(source),
            StorageError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a node could not start, or stopped.
#[derive(Debug)]
pub enum NodeError {
    /// The node's id is not in its peer list.
    NotAMember(NodeId),
    /// The core refused its configuration or the state found on disk.
    Core(raft_core::ConfigError),
    Storage(StorageError),
    Bind {
        addr: String,
        source: io::Error,
    },
    /// An empty data directory was told to bootstrap, but a peer knows an earlier incarnation
    /// of this node: its directory was lost or replaced.
    AlreadyBootstrapped {
        id: NodeId,
        cluster: u64,
        told_by: NodeId,
        pinned: u64,
    },
    /// A peer answered the bootstrap probe for another cluster than the one this node would
    /// bootstrap.
    ForeignCluster {
        peer: NodeId,
        addr: String,
        theirs: u64,
        ours: u64,
    },
    /// A node started with `--join` may not join (not listed, listed as a voter, no member
    /// answered): the message says why and what to do.
    Join(String),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::NotAMember(id) => {
                write!(
                    f,
                    "invalid configuration: node {id} is not in the peer list"
                )
            }
            NodeError::Core(e) => write!(f, "invalid configuration: {e}"),
            NodeError::Storage(e) => write!(f, "storage: {e}"),
            NodeError::Bind { addr, source } => {
                write!(f, "cannot listen for peers on {addr}: {source}")
            }
            NodeError::AlreadyBootstrapped {
                id,
                cluster,
                told_by,
                pinned,
            } => write!(
                f,
                "member {id} has already been bootstrapped in cluster {} (node {told_by} \
                 knows its incarnation {pinned:#x}, this empty data directory is a new one): its \
                 data directory was lost or replaced; remove it (kvstore member remove {id}) and \
                 add it back as a new member (kvstore member add, then kvstore serve --join)",
                kv::ClusterIdText(*cluster)
            ),
            NodeError::ForeignCluster {
                peer,
                addr,
                theirs,
                ours,
            } => write!(
                f,
                "peer {peer} at {addr} belongs to cluster {}, but --peers and \
                 --cluster-token give cluster {}: check both (a node added to a running \
                 cluster starts with --join)",
                kv::ClusterIdText(*theirs),
                kv::ClusterIdText(*ours)
            ),
            NodeError::Join(why) => write!(f, "cannot join the cluster: {why}"),
        }
    }
}

impl Error for NodeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            NodeError::NotAMember(_)
            | NodeError::Join(_)
            | NodeError::AlreadyBootstrapped { .. }
            | NodeError::ForeignCluster { .. } => None,
            NodeError::Core(e) => Some(e),
            NodeError::Storage(e) => Some(e),
            NodeError::Bind { source, .. } => Some(source),
        }
    }
}

impl From<StorageError> for NodeError {
    fn from(e: StorageError) -> Self {
        NodeError::Storage(e)
    }
}

/// Why a snapshot transfer ended before its last chunk (on either side).
#[derive(Debug)]
pub enum TransferError {
    Connect {
        addr: String,
        source: io::Error,
    },
    /// A connect, write or read did not finish in time (`what` names it).
    TimedOut(&'static str),
    /// The connection failed while `doing` something.
    Io {
        doing: &'static str,
        source: io::Error,
    },
    /// The peer closed the connection.
    Closed,
    /// The bytes are not a snapshot frame this node accepts.
    BadFrame(String),
    /// The sender cannot serve an image that recent, or its image is damaged.
    Refused {
        by: NodeId,
        reason: String,
    },
    /// The apply worker could not stage what was received (a bad chunk, a full disk).
    Stage(kv::Error),
    /// A new leader's offer replaced this fetch.
    Superseded,
    /// This node stops (or its apply worker did).
    ShuttingDown,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Connect { addr, source } => {
                write!(f, "cannot connect to {addr}: {source}")
            }
            TransferError::TimedOut(what) => write!(f, "{what} timed out"),
            TransferError::Io { doing, source } => write!(f, "{doing} failed: {source}"),
            TransferError::Closed => write!(f, "the sender closed the connection"),
            TransferError::BadFrame(why) => write!(f, "{why}"),
            TransferError::Refused { by, reason } => write!(f, "node {by} refused: {reason}"),
            TransferError::Stage(e) => write!(f, "staging the snapshot failed: {e}"),
            TransferError::Superseded => write!(f, "superseded by another fetch"),
            TransferError::ShuttingDown => write!(f, "the node is shutting down"),
        }
    }
}

impl Error for TransferError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            TransferError::Connect { source, .. } | TransferError::Io { source, .. } => {
                Some(source)
            }
            TransferError::Stage(e) => Some(e),
            _ => None,
        }
    }
}

/// Why this node does not serve a peer the snapshot it asked for (sent to it as the reason).
#[derive(Debug)]
pub enum ServeError {
    /// It serves as many transfers as it may at once; the peer asks again later.
    Busy,
    NoImage(kv::Error),
    /// Its newest image is older than the one asked for.
    TooOld {
        have: SnapshotMeta,
        asked: SnapshotMeta,
    },
    Read(kv::Error),
    Spawn(io::Error),
    /// The request names a range this node does not host.
    NotHosted(kv::ranges::RangeId),
    /// The node hosts several ranges: it serves no image until per-range images exist.
    ImagesPaused {
        range: kv::ranges::RangeId,
        hosted: usize,
    },
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Busy => write!(f, "serving too many snapshots at once; ask again later"),
            ServeError::NoImage(e) => write!(f, "no snapshot image: {e}"),
            ServeError::TooOld { have, asked } => write!(
                f,
                "the newest image is {}/{}, {}/{} or later was asked for",
                have.index, have.term, asked.index, asked.term
            ),
            ServeError::Read(e) => write!(f, "reading the image failed: {e}"),
            ServeError::Spawn(e) => write!(f, "cannot start a snapshot reader: {e}"),
            ServeError::NotHosted(range) => write!(f, "this node does not host range {range}"),
            ServeError::ImagesPaused { range, hosted } => write!(
                f,
                "no snapshot image of range {range}: this node hosts {hosted} ranges and serves \
                 no image until per-range images exist"
            ),
        }
    }
}

impl Error for ServeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ServeError::NoImage(e) | ServeError::Read(e) => Some(e),
            ServeError::Spawn(e) => Some(e),
            ServeError::Busy
            | ServeError::TooOld { .. }
            | ServeError::NotHosted(_)
            | ServeError::ImagesPaused { .. } => None,
        }
    }
}

/// A setting of `kvstore serve` (flags or `--config` file) that cannot work.
#[derive(Debug)]
pub enum ConfigError {
    ReadFile {
        path: PathBuf,
        source: io::Error,
    },
    /// Line `line` of the config file is wrong.
    FileLine {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    /// A required setting is missing (`--id`, `--peers`, ...).
    Missing(&'static str),
    /// A setting's value cannot work; `problem` says why, naming the setting.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ReadFile { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::FileLine {
                path,
                line,
                problem,
            } => write!(f, "{}:{line}: {problem}", path.display()),
            ConfigError::Missing(flag) => write!(f, "missing {flag}"),
            ConfigError::Invalid(problem) => write!(f, "{problem}"),
        }
    }
}

impl Error for ConfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ConfigError::ReadFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a `kvstore` command failed; printed as `kvstore: <this>`.
#[derive(Debug)]
pub enum CliError {
    Config(ConfigError),
    /// Node `id` could not start, or stopped with an error.
    Node {
        id: NodeId,
        source: NodeError,
    },
    /// Node `id` cannot listen for clients on `addr`.
    ClientPort {
        id: NodeId,
        addr: String,
        source: io::Error,
    },
    /// Node `id`'s TLS files (peer port, admin port) cannot be used.
    Tls {
        id: NodeId,
        what: &'static str,
        source: crate::tls::TlsError,
    },
    /// Node `id` cannot listen for its admin endpoints (metrics, health) on `addr`.
    AdminPort {
        id: NodeId,
        addr: String,
        source: io::Error,
    },
    Client(ClientError),
    /// `kvstore status`: no server answered.
    NoServerAnswered,
    /// No server that answered knows a leader: a majority of the voters is down or cut off.
    NoQuorum {
        why: String,
        maybe_applied: bool,
    },
    /// `kvstore bench`: the arguments cannot work, or no request succeeded.
    Bench(&'static str),
    /// A node's task panicked or was cancelled.
    Task(tokio::task::JoinError),
    /// The command line's arguments cannot work together (clap checks the rest).
    Usage(&'static str),
    /// `kvstore set --value-file PATH`: PATH cannot be read.
    ValueFile {
        path: PathBuf,
        source: io::Error,
    },
    /// Standard output cannot be written (a closed pipe, a full disk).
    Output(io::Error),
    /// `kvstore backup` or `restore` failed; `no_server` when no server could serve a backup.
    Backup {
        why: String,
        no_server: bool,
    },
    /// TLS cannot be set up: `what` could not be done, `source` says which file is wrong.
    TlsSetup {
        what: String,
        source: crate::tls::TlsError,
    },
}

impl CliError {
    /// The process's exit status for this error: 3 when no server answered (the cluster is
    /// unreachable, or a write's outcome is unknown), 2 for every other error. 1 is never an
    /// error: it is a command's answer "no" (`kvstore get` of a missing key, ...).
    pub fn exit_status(&self) -> u8 {
        match self {
            CliError::Client(ClientError::Unavailable { .. })
            | CliError::NoServerAnswered
            | CliError::NoQuorum { .. }
            | CliError::Backup {
                no_server: true, ..
            } => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Config(e) => e.fmt(f),
            CliError::Node { id, source } => write!(f, "node {id}: {source}"),
            CliError::ClientPort { id, addr, source } => {
                write!(
                    f,
                    "node {id}: cannot listen for clients on {addr}: {source}"
                )
            }
            CliError::Tls { id, what, source } => write!(f, "node {id}: {what}: {source}"),
            CliError::AdminPort { id, addr, source } => write!(
                f,
                "node {id}: cannot listen for the admin endpoints (metrics, health) on {addr}: {source}"
            ),
            CliError::Client(e) => {
                e.fmt(f)?;
                match e {
                    ClientError::Server(reply) => match login_hint(reply) {
                        Some(hint) => write!(f, " ({hint})"),
                        None => Ok(()),
                    },
                    _ => Ok(()),
                }
            }
            CliError::NoServerAnswered => write!(f, "no server answered"),
            CliError::Backup { why, .. } => write!(f, "{why}"),
            CliError::TlsSetup { what, source } => write!(f, "{what}: {source}"),
            CliError::NoQuorum { why, maybe_applied } => write!(
                f,
                "{why}{}",
                if *maybe_applied {
                    "; the write may have been applied"
                } else {
                    ""
                }
            ),
            CliError::Bench(why) => write!(f, "{why}"),
            CliError::Task(e) => write!(f, "a node task failed: {e}"),
            CliError::Usage(why) => write!(f, "{why}"),
            CliError::ValueFile { path, source } => {
                write!(f, "cannot read the value from {}: {source}", path.display())
            }
            CliError::Output(e) => write!(f, "cannot write to standard output: {e}"),
        }
    }
}

/// What to do about a server's refusal to let this client in, if that is what `reply` is.
pub fn login_hint(reply: &str) -> Option<&'static str> {
    if reply.starts_with("NOAUTH") {
        Some(
            "the cluster requires a password: give --password (or set KVSTORE_PASSWORD), \
             and --user for a user other than default",
        )
    } else if reply.starts_with("WRONGPASS") {
        Some("the user and password given (--user, --password or KVSTORE_PASSWORD) were refused")
    } else {
        None
    }
}

impl Error for CliError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CliError::Config(e) => Some(e),
            CliError::Tls { source, .. } => Some(source),
            CliError::Node { source, .. } => Some(source),
            CliError::ClientPort { source, .. } | CliError::AdminPort { source, .. } => {
                Some(source)
            }
            CliError::Client(e) => Some(e),
            CliError::TlsSetup { source, .. } => Some(source),
            CliError::Task(e) => Some(e),
            CliError::ValueFile { source, .. } | CliError::Output(source) => Some(source),
            CliError::NoServerAnswered
            | CliError::NoQuorum { .. }
            | CliError::Bench(_)
            | CliError::Usage(_)
            | CliError::Backup { .. } => None,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Config(e)
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Client(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_says_how_to_log_in_and_other_refusals_stay_as_they_are() {
        let shown = |reply: &str| CliError::Client(ClientError::Server(reply.into())).to_string();
        let noauth = shown("NOAUTH Authentication required.");
        assert!(
            noauth.contains("NOAUTH") && noauth.contains("KVSTORE_PASSWORD"),
            "{noauth}"
        );
        let wrong = shown("WRONGPASS invalid username-password pair or user is disabled.");
        assert!(wrong.contains("were refused"), "{wrong}");
        let other = shown("WRONGTYPE Operation against a key holding the wrong kind of value");
        assert!(!other.contains("password"), "{other}");
    }

    #[test]
    fn errors_name_the_failure_and_keep_the_cause() {
        let e = NodeError::Storage(StorageError::Kv {
            doing: "writing the raft log".into(),
            source: kv::Error::Io {
                path: PathBuf::from("/d/raft_logs"),
                detail: "disk full".into(),
            },
        });
        assert_eq!(
            e.to_string(),
            "storage: writing the raft log failed: I/O error on /d/raft_logs: disk full"
        );
        let storage = e.source().expect("the storage error");
        assert!(storage.source().is_some_and(|kv| kv.is::<kv::Error>()));
        let cli = CliError::Node { id: 2, source: e };
        assert!(cli.to_string().starts_with("node 2: storage: "));
    }
}
