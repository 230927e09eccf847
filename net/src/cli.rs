//! The `kvstore` command line: run a node or a local cluster, talk to a cluster, benchmark it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rand::Rng;

use crate::cli_admin::MemberCmd;
use crate::cli_data::{DataCmd, Outcome};
use crate::cli_read_mode::{read_mode, ReadModeArgs};
use crate::cli_tls::ClientPorts;
use crate::client::{ClientConfig, KvClient};
use crate::error::{CliError, ConfigError};
use crate::node::{self, NodeConfig};

/// Printed after the version by a build that has the unsafe test switches compiled in.
macro_rules! test_switches_marker {
    () => {
        "[TEST SWITCHES COMPILED IN: not for production]"
    };
}
pub const TEST_SWITCHES_MARKER: &str = test_switches_marker!();

/// What `kvstore --version` prints. A build with the simulator's unsafe switches compiled in
/// says so, so that `scripts/check-release-build` can refuse it.
#[cfg(not(feature = "test-switches"))]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(feature = "test-switches")]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " ", test_switches_marker!());

#[derive(Parser, Debug)]
#[command(
    name = "kvstore",
    version = VERSION,
    about = "A Raft-replicated key-value store that speaks the Redis protocol."
)]
#[command(after_help = concat!(
    "Start a local 3-node cluster:   kvstore cluster\n",
    "Then talk to it with any Redis client:  redis-cli -p 7001 set greeting hello\n",
    "or with this one:  kvstore set greeting hello; kvstore get greeting\n\n",
    "get/set/del/incr/cas print values byte for byte (--pretty: as redis-cli does).\n",
    "Exit status of get/set/del/incr/cas: 0 done; 1 the answer is no (a missing key, nothing\n",
    "deleted, not swapped); 2 refused or wrong; 3 no server answered (see kvstore get --help).",
))]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
    /// How log lines are written to standard error (their filter: KVSTORE_LOG, else RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run one node of a cluster.
    Serve(Box<ServeArgs>),
    /// Run a local cluster in this process (client ports 7001.., peer ports 7101.., admin
    /// ports 7201.. for metrics and health).
    Cluster(ClusterArgs),
    #[command(flatten)]
    Data(DataCmd),
    /// Show every node's role, term, commit and applied index, and the configuration.
    Status {
        #[command(flatten)]
        servers: ServersArg,
    },
    /// Drive a cluster with a closed-loop load and report throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// List or change the cluster's members (add a learner, promote, remove, move).
    #[command(subcommand)]
    Member(MemberCmd),
    /// Make voter ID the leader (it is brought up to date first); returns once it leads.
    TransferLeader {
        id: u64,
        #[command(flatten)]
        servers: ServersArg,
    },
    /// List the key ranges a node hosts, one line per range: id, bounds (start included, end
    /// excluded), epoch, leader, keys.
    Ranges {
        #[command(flatten)]
        servers: ServersArg,
    },
    /// Split the key range owning KEY at KEY: KEY starts a new range (its own Raft group).
    /// Prints both halves. Writes over keys of both halves are then refused (CROSSSLOT).
    Split(crate::cli_ranges::SplitArgs),
    /// Save a consistent image of a running cluster to a file (every write acknowledged before
    /// it began is in it), or check one (--verify).
    Backup(crate::cli_backup::BackupArgs),
    /// Seed one node's data directory of a new cluster from a backup (run once per node, with
    /// the same --peers), then start each with `kvstore serve --data-dir DIR`.
    Restore(crate::cli_backup::RestoreArgs),
    /// Print the argon2id hash of a password, for a users file (`user NAME on #HASH ...`). The
    /// password is read from the terminal without echo, or as one line of standard input.
    HashPassword,
    /// Make a CA and a certificate for each node (TLS on the client and peer ports).
    Certs(crate::cli_tls::CertsArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServersArg {
    /// Client addresses of the cluster's nodes, comma-separated.
    #[arg(
        long,
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
        value_delimiter = ',',
        value_parser = parse_server_addr
    )]
    pub servers: Vec<String>,
    #[command(flatten)]
    pub login: crate::cli_auth::LoginArgs,
    #[command(flatten)]
    pub tls: crate::cli_tls::ClientTlsArgs,
}

impl ServersArg {
    /// `base` with this command's login.
    pub fn client_config(&self, base: ClientConfig) -> ClientConfig {
        ClientConfig {
            credentials: self.login.credentials(),
            ..base
        }
    }

    /// A client of these servers, over TLS if the flags ask for it, logging in as they say.
    pub fn client(&self, cfg: ClientConfig) -> Result<KvClient<crate::tls::MaybeTlsNet>, CliError> {
        self.client_for(self.servers.clone(), cfg)
    }

    /// A client of `servers` with these flags' TLS settings and login.
    pub fn client_for(
        &self,
        servers: Vec<String>,
        cfg: ClientConfig,
    ) -> Result<KvClient<crate::tls::MaybeTlsNet>, CliError> {
        let client_id = rand::thread_rng().gen::<u64>() | 1;
        Ok(KvClient::over(
            self.tls.net()?,
            servers,
            self.client_config(cfg),
            client_id,
        ))
    }
}

/// A server's client address, HOST:PORT, checked before anything is sent (a bare port was
/// once retried twenty times as an unreachable server).
fn parse_server_addr(text: &str) -> Result<String, String> {
    let hint = "expected HOST:PORT, for example 127.0.0.1:7001";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` is not a server address: {hint}"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("`{text}` has no host: {hint}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(text.to_string()),
        _ => Err(format!(
            "`{port}` in `{text}` is not a port (1-65535): {hint}"
        )),
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// This node's id (a member of --peers).
    #[arg(long)]
    pub id: Option<u64>,
    /// Every founding member's peer address, to bootstrap a new cluster: 1=HOST:PORT,2=HOST:PORT,...
    #[arg(long)]
    pub peers: Option<String>,
    /// This node's peer address (where it listens for peers); defaults to its entry in --peers.
    #[arg(long)]
    pub peer_addr: Option<String>,
    /// Peer addresses of existing members, HOST:PORT,...: start a node that was added to a
    /// running cluster (`kvstore member add`) on an empty data directory.
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// Where clients connect (Redis protocol).
    #[arg(long)]
    pub client_addr: Option<String>,
    /// Where to serve the HTTP admin endpoints: /metrics (Prometheus), /health, /ready
    /// (HOST:PORT; none when not given).
    #[arg(long)]
    pub admin_addr: Option<String>,
    /// Every member's client address, 1=HOST:PORT,...: lets clients find the leader (optional).
    #[arg(long)]
    pub client_addrs: Option<String>,
    /// Where this node keeps its data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A file of `key = value` lines with the same settings (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Names a new cluster, with its members' ids, so that two clusters of the same ids stay
    /// apart; a data directory refuses a token other than the one it was bootstrapped with
    /// [default: kvstore]
    #[arg(long)]
    pub cluster_token: Option<String>,
    /// Milliseconds per Raft tick.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Ticks without a leader before an election (randomized up to twice this).
    #[arg(long)]
    pub election_ticks: Option<u32>,
    /// Milliseconds before a client request without an outcome is answered TIMEOUT.
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Clients must log in (AUTH) with this password, as the `default` user, who may then run
    /// everything. Also `requirepass` in --config, or the KVSTORE_REQUIREPASS environment
    /// variable; prefer those (argv is visible to every user of the machine).
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Clients must log in as one of the users this file defines, each with its rights (`user
    /// NAME on #HASH ~PATTERN +@read +@write +@admin`; see `kvstore hash-password`).
    #[arg(long)]
    pub users_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: crate::cli_tls::ServeTlsArgs,
    #[command(flatten)]
    pub snapshots: SnapshotArgs,
    #[command(flatten)]
    pub reads: ReadModeArgs,
    #[command(flatten)]
    pub ranges: crate::cli_ranges::RangeArgs,
    #[command(flatten)]
    pub peer_tls: crate::cli_peer_tls::PeerTlsArgs,
}

/// When nodes take snapshots and compact their logs.
#[derive(Args, Debug, Clone, Default)]
pub struct SnapshotArgs {
    /// Take a snapshot after this many entries since the last one, then compact the log
    /// (0: never; the log then grows without bound) [default: 100000]
    #[arg(long)]
    pub snapshot_threshold: Option<u64>,
    /// Entries the log keeps before the applied index when compacting, for followers a little
    /// behind [default: 5000]
    #[arg(long)]
    pub snapshot_tail: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Each node keeps its data in DIR/nodeN.
    #[arg(long, default_value = "./kvstore-data")]
    pub data_dir: PathBuf,
    /// Client port of node 1; node N listens on PORT+N-1 for clients, PORT+100+N-1 for peers
    /// and PORT+200+N-1 for its admin endpoints (/metrics, /health, /ready).
    #[arg(long, default_value_t = 7001)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Names the cluster (see `kvstore serve --help`) [default: kvstore]
    #[arg(long)]
    pub cluster_token: Option<String>,
    /// Every node's clients must log in with this password (AUTH PASSWORD; redis-cli -a).
    /// Also the KVSTORE_REQUIREPASS environment variable, which keeps it out of argv.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// TLS on every client port and mutual TLS between the nodes, with a CA and node
    /// certificates made in DATA_DIR/tls on the first start (ca.pem, nodeN.pem, nodeN-key.pem)
    /// and reused after.
    #[arg(long)]
    pub tls: bool,
    #[command(flatten)]
    pub snapshots: SnapshotArgs,
    #[command(flatten)]
    pub reads: ReadModeArgs,
    #[command(flatten)]
    pub ranges: crate::cli_ranges::RangeArgs,
}

/// Settings of one node, from a file and flags.
#[derive(Debug, Default, Clone)]
struct ServeSettings {
    id: Option<u64>,
    peers: Option<String>,
    peer_addr: Option<String>,
    join: Option<String>,
    client_addr: Option<String>,
    admin_addr: Option<String>,
    client_addrs: Option<String>,
    data_dir: Option<PathBuf>,
    cluster_token: Option<String>,
    tick_ms: Option<u64>,
    election_ticks: Option<u32>,
    request_timeout_ms: Option<u64>,
    snapshot_threshold: Option<u64>,
    snapshot_tail: Option<u64>,
    range_max_keys: Option<u64>,
    read_mode: Option<String>,
    max_clock_drift: Option<f64>,
    requirepass: Option<String>,
    users_file: Option<PathBuf>,
    peer_tls: crate::cli_peer_tls::PeerTlsSettings,
    tls: crate::cli_tls::ServeTlsArgs,
}

fn read_config_file(path: &Path) -> Result<ServeSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut s = ServeSettings::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at_line = |problem: String| ConfigError::FileLine {
            path: path.to_path_buf(),
            line: n + 1,
            problem,
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| at_line("expected `key = value`".into()))?;
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| at_line(format!("`{key}` needs a number, got `{v}`")))
        };
        match key {
            "id" => s.id = Some(num(value)?),
            "peers" => s.peers = Some(value.to_string()),
            "peer-addr" | "peer_addr" => s.peer_addr = Some(value.to_string()),
            "join" => s.join = Some(value.to_string()),
            "client-addr" | "client_addr" => s.client_addr = Some(value.to_string()),
            "client-addrs" | "client_addrs" => s.client_addrs = Some(value.to_string()),
            "admin-addr" | "admin_addr" => s.admin_addr = Some(value.to_string()),
            "data-dir" | "data_dir" => s.data_dir = Some(PathBuf::from(value)),
            "cluster-token" | "cluster_token" => s.cluster_token = Some(value.to_string()),
            "tick-ms" | "tick_ms" => s.tick_ms = Some(num(value)?),
            "election-ticks" | "election_ticks" => {
                s.election_ticks = Some(
                    u32::try_from(num(value)?)
                        .map_err(|_| at_line("election-ticks too large".into()))?,
                )
            }
            "request-timeout-ms" | "request_timeout_ms" => s.request_timeout_ms = Some(num(value)?),
            "snapshot-threshold" | "snapshot_threshold" => s.snapshot_threshold = Some(num(value)?),
            "range-max-keys" | "range_max_keys" => s.range_max_keys = Some(num(value)?),
            "snapshot-tail" | "snapshot_tail" => s.snapshot_tail = Some(num(value)?),
            "read-mode" | "read_mode" => s.read_mode = Some(value.to_string()),
            "requirepass" => s.requirepass = Some(value.to_string()),
            "users-file" | "users_file" => s.users_file = Some(PathBuf::from(value)),
            "max-clock-drift" | "max_clock_drift" => {
                s.max_clock_drift = Some(
                    value
                        .parse()
                        .map_err(|_| at_line(format!("`{key}` needs a ratio, got `{value}`")))?,
                )
            }
            other if s.tls.set_from_file(other, value) => {}
            other => {
                if !s.peer_tls.set(other, value).map_err(at_line)? {
                    return Err(at_line(format!("unknown setting `{other}`")));
                }
            }
        }
    }
    Ok(s)
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let invalid = ConfigError::Invalid;
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("peer `{part}` is not ID=HOST:PORT")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| invalid(format!("peer id `{id}` is not a number")))?;
        if id == 0 {
            return Err(invalid("peer id 0 is reserved".into()));
        }
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(invalid(format!("peer address `{addr}` is not HOST:PORT")));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(invalid(format!("peer id {id} appears twice")));
        }
    }
    if peers.is_empty() {
        return Err(invalid("--peers is empty".into()));
    }
    Ok(peers)
}

fn serve_config(args: &ServeArgs) -> Result<(NodeConfig, ClientPorts), ConfigError> {
    let file = match &args.config {
        Some(p) => read_config_file(p)?,
        None => ServeSettings::default(),
    };
    let id = args.id.or(file.id).ok_or(ConfigError::Missing("--id"))?;
    let client_addr = args
        .client_addr
        .clone()
        .or(file.client_addr)
        .ok_or(ConfigError::Missing("--client-addr"))?;
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .ok_or(ConfigError::Missing("--data-dir"))?;
    let join = match (&args.join[..], file.join.as_deref()) {
        ([], Some(text)) => text.split(',').map(|a| a.trim().to_string()).collect(),
        (given, _) => given.to_vec(),
    };
    let join: Vec<String> = join.into_iter().filter(|a| !a.is_empty()).collect();
    let peers = member_peers(
        id,
        args.peers.as_deref().or(file.peers.as_deref()),
        args.peer_addr.as_deref().or(file.peer_addr.as_deref()),
        &join,
        &data_dir,
    )?;
    let token = args.cluster_token.clone().or(file.cluster_token);
    let mut cfg = NodeConfig::new(id, peers, data_dir).with_cluster_token(token);
    cfg.incarnation = new_incarnation();
    cfg.join = join;
    cfg.admin_addr = args.admin_addr.clone().or(file.admin_addr);
    if let Some(text) = args
        .client_addrs
        .as_deref()
        .or(file.client_addrs.as_deref())
    {
        cfg.client_addrs =
            parse_peers(text).map_err(|e| ConfigError::Invalid(format!("--client-addrs: {e}")))?;
    }
    cfg.client_addrs
        .entry(id)
        .or_insert_with(|| client_addr.clone());
    if let Some(ms) = args.tick_ms.or(file.tick_ms) {
        if ms == 0 {
            return Err(ConfigError::Invalid("--tick-ms must be positive".into()));
        }
        cfg.tick = Duration::from_millis(ms);
    }
    if let Some(t) = args.election_ticks.or(file.election_ticks) {
        if t < 2 {
            return Err(ConfigError::Invalid(
                "--election-ticks must be at least 2".into(),
            ));
        }
        cfg.election_ticks = t;
    }
    if let Some(ms) = args.request_timeout_ms.or(file.request_timeout_ms) {
        cfg.request_timeout = Duration::from_millis(ms);
    }
    let snapshots = SnapshotArgs {
        snapshot_threshold: args
            .snapshots
            .snapshot_threshold
            .or(file.snapshot_threshold),
        snapshot_tail: args.snapshots.snapshot_tail.or(file.snapshot_tail),
    };
    cfg.snapshots = snapshot_policy(&snapshots);
    cfg.range_max_keys = args
        .ranges
        .range_max_keys
        .or(file.range_max_keys)
        .unwrap_or(0);
    cfg.read_mode = read_mode(
        args.reads
            .read_mode
            .as_deref()
            .or(file.read_mode.as_deref()),
        args.reads.max_clock_drift.or(file.max_clock_drift),
        &cfg,
    )?;
    cfg.client_auth = crate::cli_auth::client_authority(
        args.requirepass.clone().or(file.requirepass),
        args.users_file.clone().or(file.users_file),
    )?;
    cfg.seed = rand::thread_rng().gen();
    crate::cli_peer_tls::apply(&args.peer_tls, file.peer_tls, &mut cfg)?;
    let ports = args.tls.clone().or(file.tls).client_ports(client_addr)?;
    Ok((cfg, ports))
}

/// The incarnation a new data directory records: random, so that a wiped directory never comes
/// back as the one it replaces (0 means "unknown").
pub(crate) fn new_incarnation() -> u64 {
    rand::thread_rng().gen_range(1..=u64::MAX)
}

/// The peer addresses the command line gives: every founding member's (`--peers`), with this
/// node's own from `--peer-addr` if given. Without `--peers`, only this node's: it joins
/// (`--join`) or restarts on its data directory, which knows the others.
fn member_peers(
    id: u64,
    peers: Option<&str>,
    peer_addr: Option<&str>,
    join: &[String],
    data_dir: &Path,
) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut map = match peers {
        Some(text) => {
            if !join.is_empty() {
                return Err(ConfigError::Invalid(
                    "--peers bootstraps a new cluster and --join enters a running one: give one"
                        .into(),
                ));
            }
            parse_peers(text)?
        }
        None => {
            let has_data = data_dir.join(kv::identity::IDENTITY_FILE).exists();
            if join.is_empty() && !has_data {
                return Err(ConfigError::Invalid(format!(
                    "{} holds no data: give --peers to bootstrap a new cluster, or --join to \
                     start a node added to a running one",
                    data_dir.display()
                )));
            }
            BTreeMap::new()
        }
    };
    if let Some(addr) = peer_addr {
        let checked = parse_peers(&format!("{id}={addr}"))
            .map_err(|e| ConfigError::Invalid(format!("--peer-addr: {e}")))?;
        map.extend(checked);
    }
    if !map.contains_key(&id) {
        return Err(match peers {
            Some(_) => ConfigError::Invalid(format!(
                "--id {id} is not one of the --peers ({:?}) and no --peer-addr is given",
                map.keys().collect::<Vec<_>>()
            )),
            None => ConfigError::Missing("--peer-addr"),
        });
    }
    Ok(map)
}

pub(crate) fn snapshot_policy(args: &SnapshotArgs) -> node::SnapshotPolicy {
    let mut policy = node::SnapshotPolicy::default();
    if let Some(n) = args.snapshot_threshold {
        policy.threshold = n;
    }
    if let Some(n) = args.snapshot_tail {
        policy.tail = n;
    }
    policy
}

/// Runs the command; `Outcome::No` is a command's answer "no" (exit status 1).
pub async fn main(cli: Cli) -> Result<Outcome, CliError> {
    let done = match cli.command {
        Cmd::Data(cmd) => return crate::cli_data::run(cmd).await,
        Cmd::Serve(args) => {
            let (cfg, ports) = serve_config(&args)?;
            let (_stop, shutdown) = crate::cli_run::shutdown_on_signals();
            crate::cli_run::run_node(cfg, ports, shutdown).await
        }
        Cmd::Cluster(args) => crate::cli_run::run_cluster(args).await,
        Cmd::Status { servers } => crate::cli_admin::status(servers).await,
        Cmd::Bench(args) => crate::bench::run(args).await,
        Cmd::Member(cmd) => crate::cli_admin::run_member(cmd).await,
        Cmd::TransferLeader { id, servers } => {
            crate::cli_admin::run_transfer_leader(id, servers).await
        }
        Cmd::Ranges { servers } => crate::cli_ranges::run_ranges(servers).await,
        Cmd::Split(args) => crate::cli_ranges::run_split(args).await,
        Cmd::Backup(args) => return crate::cli_backup::backup(args).await,
        Cmd::Restore(args) => return crate::cli_backup::restore(args),
        Cmd::HashPassword => crate::cli_auth::hash_password(),
        Cmd::Certs(args) => crate::cli_tls::run_certs(args),
    };
    done.map(|()| Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_host_and_port_or_refused_with_a_hint() {
        for good in [
            "127.0.0.1:7001",
            "localhost:1",
            "[::1]:7001",
            "db.example:65535",
        ] {
            assert_eq!(parse_server_addr(good).as_deref(), Ok(good));
        }
        for bad in [
            "7001",
            "127.0.0.1",
            ":7001",
            "host:0",
            "host:70000",
            "host:port",
            "a b:1",
        ] {
            let e = parse_server_addr(bad).expect_err(bad);
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
        let cli = Cli::try_parse_from(["kvstore", "get", "k", "--servers", "7001"]);
        let e = cli.expect_err("a bare port is refused").to_string();
        assert!(e.contains("`7001` is not a server address"), "{e}");
    }

    #[test]
    fn peers_parse_and_bad_ones_are_named() {
        let p = parse_peers("1=127.0.0.1:7101, 2=127.0.0.1:7102").unwrap();
        assert_eq!(p.get(&2).map(String::as_str), Some("127.0.0.1:7102"));
        let error = |text: &str| parse_peers(text).unwrap_err().to_string();
        assert!(error("1=a:1,1=b:2").contains("twice"));
        assert!(error("x=a:1").contains("not a number"));
        assert!(error("1=nohost").contains("HOST:PORT"));
        assert!(error("0=a:1").contains("reserved"));
    }

    #[test]
    fn a_node_bootstraps_with_peers_joins_with_join_or_restarts_on_its_data() {
        let empty = tempfile::tempdir().unwrap();
        let join = vec!["h:1".to_string()];
        let p = |peers, addr, join: &[String], dir: &Path| {
            member_peers(4, peers, addr, join, dir).map_err(|e| e.to_string())
        };
        assert_eq!(
            p(Some("4=h:4,5=h:5"), Some("h:9"), &[], empty.path()).unwrap()[&4],
            "h:9",
            "--peer-addr is this node's address"
        );
        assert_eq!(p(None, Some("h:4"), &join, empty.path()).unwrap().len(), 1);
        assert!(p(Some("4=h:4"), None, &join, empty.path())
            .unwrap_err()
            .contains("give one"));
        assert!(p(None, Some("h:4"), &[], empty.path())
            .unwrap_err()
            .contains("holds no data"));
        assert!(p(None, None, &join, empty.path())
            .unwrap_err()
            .contains("--peer-addr"));
        assert!(p(Some("5=h:5"), None, &[], empty.path())
            .unwrap_err()
            .contains("not one of the --peers"));
        kv::Identity::new(4, 1).ensure(empty.path()).unwrap();
        assert_eq!(
            p(None, Some("h:4"), &[], empty.path()).unwrap().len(),
            1,
            "a restart needs only its own address"
        );
    }

    #[test]
    fn a_config_file_fills_what_flags_leave_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.conf");
        std::fs::write(
            &path,
            "# node 2\nid = 2\npeers = \"1=h:1,2=h:2\"\nclient-addr = h:7002\nclient-addrs = 1=h:7001,2=h:7002\ndata-dir = /tmp/x\ncluster-token = prod\nadmin-addr = h:7202\ntls-cert = /c.pem\ntls-key = /k.pem\n",
        )
        .unwrap();
        let args = ServeArgs {
            id: None,
            peers: None,
            peer_addr: None,
            join: Vec::new(),
            client_addr: Some("h:9999".into()),
            admin_addr: None,
            client_addrs: None,
            data_dir: None,
            config: Some(path.clone()),
            cluster_token: None,
            tick_ms: None,
            election_ticks: None,
            request_timeout_ms: None,
            requirepass: None,
            users_file: None,
            tls: Default::default(),
            snapshots: SnapshotArgs::default(),
            reads: ReadModeArgs::default(),
            ranges: Default::default(),
            peer_tls: Default::default(),
        };
        let (cfg, client) = serve_config(&args).unwrap();
        assert_eq!((cfg.id, client.addr.as_str()), (2, "h:9999"));
        assert_eq!(client.tls_addr(), Some("h:9999"));
        let tls = client.tls.expect("the file's TLS settings");
        assert_eq!(tls.files.cert, PathBuf::from("/c.pem"));
        assert_eq!(cfg.client_addrs.get(&1).map(String::as_str), Some("h:7001"));
        assert_eq!(cfg.cluster_token.as_deref(), Some("prod"));
        assert_eq!(cfg.admin_addr.as_deref(), Some("h:7202"));
        assert_eq!(cfg.cluster_id, kv::bootstrap_cluster_id("prod", [1, 2]));
        assert_ne!(cfg.incarnation, 0);
        assert_eq!(cfg.client_addrs.get(&2).map(String::as_str), Some("h:7002"));
        std::fs::write(&path, "colour = blue\n").unwrap();
        assert_eq!(
            serve_config(&args).unwrap_err().to_string(),
            format!("{}:1: unknown setting `colour`", path.display())
        );
    }
}
