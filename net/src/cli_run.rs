//! Running nodes from the command line: one node (`kvstore serve`) or a local cluster in this
//! process (`kvstore cluster`). A node is started in two steps: [`start_node`] binds its client
//! and peer ports and opens its storage; [`StartedNode::run`] runs it until the stop signal. A
//! cluster says it is up only once every node has started, and if one cannot start (a port
//! taken, a data directory of another cluster, a locked directory) it stops the others and
//! fails with that node's reason, rather than running on without a quorum.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::admin_http;
use crate::cli::ClusterArgs;
use crate::cli_read_mode::read_mode;
use crate::cli_tls::{ClientPortTls, ClientPorts};
use crate::error::{CliError, ConfigError, NodeError};
use crate::node::admin::{AdminReply, AdminRequest};
use crate::node::{self, NodeConfig};
use crate::request::NodeHandle;
use crate::tls::{check_names_member, PeerTlsNet, Reloadable, ServerTlsFiles, TlsError};
use crate::transport::TokioNet;

/// What runs a started node until it stops.
type NodeRun = Pin<Box<dyn Future<Output = Result<(), NodeError>> + Send>>;

/// A node whose ports are bound and whose storage is open, not yet running.
pub(crate) struct StartedNode {
    id: u64,
    run: NodeRun,
    stopping: Stopping,
}

/// What a graceful stop acts on.
struct Stopping {
    id: u64,
    node: NodeHandle,
    /// Closes the client port, and its connections once each has answered what it read.
    stop_clients: watch::Sender<bool>,
    /// Ends once every client connection has closed.
    client_port: tokio::task::JoinHandle<()>,
    /// Stops the node.
    stop: watch::Sender<bool>,
}

/// How long a stopping node waits at most for its client connections to answer what they read.
const DRAIN_BOUND: Duration = Duration::from_secs(3);

/// How long a node that started, but whose cluster could not, may take to close its storage.
const ABANDON_BOUND: Duration = Duration::from_secs(5);

/// Every line a node logs, from any of its tasks and threads, carries this span: its id.
fn node_span(id: u64) -> tracing::Span {
    tracing::info_span!("node", id)
}

/// Binds the node's client port (which answers `-LOADING` until the node has started) and its
/// admin port if it has one, then binds its peer port and opens its storage. Errors are for
/// the user.
pub(crate) async fn start_node(
    cfg: NodeConfig,
    ports: ClientPorts,
) -> Result<StartedNode, CliError> {
    let span = node_span(cfg.id);
    start_node_in_span(cfg, ports).instrument(span).await
}

async fn start_node_in_span(cfg: NodeConfig, ports: ClientPorts) -> Result<StartedNode, CliError> {
    let net = TokioNet;
    let id = cfg.id;
    // Certificates first: a wrong file is the error, before any port is bound.
    let peer_tls = match &cfg.peer_tls {
        Some(files) => {
            let refused = |source: TlsError| CliError::Tls {
                id,
                what: "peer TLS (--peer-tls-cert, --peer-tls-key, --peer-tls-ca)",
                source,
            };
            check_names_member(files, id).map_err(refused)?;
            Some(PeerTlsNet::load(files, cfg.metrics.clone()).map_err(refused)?)
        }
        None => None,
    };
    let admin_access = admin_access(&cfg)?;
    let clients = ports.bind(id).await?;
    let admin = match &cfg.admin_addr {
        Some(addr) => Some(
            admin_http::bind(addr)
                .await
                .map_err(|source| CliError::AdminPort {
                    id,
                    addr: addr.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let metrics = cfg.metrics.clone();
    let (started, started_node) = watch::channel(None);
    let (stop_clients, clients_shutdown) = watch::channel(false);
    let serving = clients.serve(
        started_node,
        clients_shutdown,
        metrics.clone(),
        cfg.client_auth.clone(),
    );
    let client_port = tokio::spawn(serving.in_current_span());
    let (stop, shutdown) = watch::channel(false);
    let auto_split = crate::auto_split::AutoSplit::of(&cfg);
    let auto_split_shutdown = shutdown.clone();
    if let Some(listener) = admin {
        admin_http::spawn(listener, metrics.clone(), admin_access, shutdown.clone());
    }
    let opened = match peer_tls {
        None => node::start(cfg, net, shutdown)
            .await
            .map(|(handle, run)| (handle, Box::pin(run) as NodeRun)),
        Some(peer_net) => node::start(cfg, peer_net, shutdown)
            .await
            .map(|(handle, run)| (handle, Box::pin(run) as NodeRun)),
    };
    let (handle, run) = match opened {
        Ok(opened) => opened,
        Err(source) => {
            let _ = stop_clients.send(true);
            return Err(CliError::Node { id, source });
        }
    };
    let _ = started.send(Some(handle.clone()));
    if let Some(policy) = auto_split {
        let splitting = crate::auto_split::run(
            handle.clone(),
            policy,
            rand::thread_rng().gen(),
            auto_split_shutdown,
        );
        tokio::spawn(splitting.in_current_span());
    }
    metrics.status.ready.set(1);
    match ports.tls_addr() {
        Some(tls_addr) => tracing::info!(id, client_addr = %ports.addr, %tls_addr,
            "ready: the client port serves requests"),
        None => {
            tracing::info!(id, client_addr = %ports.addr, "ready: the client port serves requests")
        }
    }
    Ok(StartedNode {
        id,
        run,
        stopping: Stopping {
            id,
            node: handle,
            stop_clients,
            client_port,
            stop,
        },
    })
}

/// Who may read node's admin endpoints: HTTPS with its peer certificate if asked (reloaded on
/// SIGHUP), and the bearer token for /metrics.
fn admin_access(cfg: &NodeConfig) -> Result<admin_http::AdminAccess, CliError> {
    let tls = match (&cfg.peer_tls, cfg.admin_tls) {
        (Some(files), true) => {
            let server = ServerTlsFiles::new(files.cert.clone(), files.key.clone());
            let config = Reloadable::load("admin port certificate", move || server.load())
                .map_err(|source| CliError::Tls {
                    id: cfg.id,
                    what: "admin TLS (--admin-tls, with the peer certificate)",
                    source,
                })?;
            config.reload_on_sighup();
            Some(config)
        }
        _ => None,
    };
    Ok(admin_http::AdminAccess {
        tls,
        token: cfg.admin_token.clone(),
    })
}

impl StartedNode {
    /// Runs the node until `stop_signal` turns true, then stops it gracefully
    /// ([`stop_gracefully`]).
    pub(crate) async fn run(self, stop_signal: watch::Receiver<bool>) -> Result<(), CliError> {
        let id = self.id;
        tokio::spawn(stop_gracefully(self.stopping, stop_signal).instrument(node_span(id)));
        self.run
            .instrument(node_span(id))
            .await
            .map_err(|source| CliError::Node { id, source })
    }

    /// Stops a node that never served: another node of its cluster could not start.
    async fn abandon(self) {
        let _ = self.stopping.stop_clients.send(true);
        let _ = self.stopping.stop.send(true);
        if tokio::time::timeout(ABANDON_BOUND, self.run).await.is_err() {
            tracing::warn!(
                id = self.id,
                "the node did not stop in time; exiting anyway"
            );
        }
    }
}

/// Runs one node until `stop_signal` turns true, then stops it gracefully.
pub(crate) async fn run_node(
    cfg: NodeConfig,
    ports: ClientPorts,
    stop_signal: watch::Receiver<bool>,
) -> Result<(), CliError> {
    start_node(cfg, ports).await?.run(stop_signal).await
}

/// Waits for the stop signal; then, if the node leads, hands the leadership to the most
/// caught-up voter (waiting at most an election timeout), so that clients wait for a transfer
/// rather than for an election. Then it closes the client port and waits (at most
/// [`DRAIN_BOUND`]) until every request already read is answered, and only then stops the
/// node: a request still waiting when the node stops is answered TIMEOUT (its outcome unknown
/// to the client) where a moment later it would have been answered OK, and a client whose
/// connection closes goes on to another node.
async fn stop_gracefully(s: Stopping, mut stop_signal: watch::Receiver<bool>) {
    let id = s.id;
    if stop_signal.wait_for(|stopping| *stopping).await.is_err() {
        // Nobody can signal any more: run until the process ends. (Dropping `stop` would
        // stop the node at once.)
        std::future::pending::<()>().await;
    }
    match s.node.admin(AdminRequest::HandOffLeadership).await {
        Ok(AdminReply::LeaderIs(leader)) => {
            tracing::info!(id, leader, "handed the leadership over before stopping");
        }
        Ok(other) => tracing::debug!(id, ?other, "no leadership hand-off before stopping"),
        Err(e) => tracing::warn!(id, error = %e, "leadership hand-off failed; stopping anyway"),
    }
    let _ = s.stop_clients.send(true);
    if tokio::time::timeout(DRAIN_BOUND, s.client_port)
        .await
        .is_err()
    {
        tracing::info!(id, "stopping with client requests still unanswered");
    }
    let _ = s.stop.send(true);
}

/// A watch that turns true on Ctrl-C or SIGTERM (or when `also` is sent true).
pub(crate) fn shutdown_on_signals() -> (Arc<watch::Sender<bool>>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let signalled = tx.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch SIGTERM");
                        let _ = tokio::signal::ctrl_c().await;
                        signalled.send_replace(true);
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        signalled.send_replace(true);
    });
    (tx, rx)
}

/// The configuration of each node of a local cluster, with its client address.
fn cluster_configs(args: &ClusterArgs) -> Result<Vec<(NodeConfig, ClientPorts)>, CliError> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err(ConfigError::Invalid("--nodes must be between 1 and 9".into()).into());
    }
    let last_port = |base: u16| base.checked_add(args.nodes as u16 - 1);
    let peer_base = args
        .port
        .checked_add(100)
        .filter(|&p| last_port(p).is_some())
        .ok_or_else(|| ConfigError::Invalid("--port too high".into()))?;
    let peers: BTreeMap<u64, String> = (1..=args.nodes)
        .map(|i| (i, format!("{}:{}", args.host, peer_base + i as u16 - 1)))
        .collect();
    let admin_base = args
        .port
        .checked_add(200)
        .filter(|&p| last_port(p).is_some())
        .ok_or_else(|| ConfigError::Invalid("--port too high".into()))?;
    let client_addrs: BTreeMap<u64, String> = (1..=args.nodes)
        .map(|i| (i, format!("{}:{}", args.host, args.port + i as u16 - 1)))
        .collect();
    let client_auth = crate::cli_auth::client_authority(args.requirepass.clone(), None)?;
    let mut configs = Vec::new();
    for id in 1..=args.nodes {
        let mut cfg = NodeConfig::new(id, peers.clone(), args.data_dir.join(format!("node{id}")))
            .with_cluster_token(args.cluster_token.clone());
        cfg.seed = rand::thread_rng().gen();
        cfg.incarnation = crate::cli::new_incarnation();
        cfg.client_addrs = client_addrs.clone();
        cfg.admin_addr = Some(format!("{}:{}", args.host, admin_base + id as u16 - 1));
        cfg.client_auth = client_auth.clone();
        cfg.snapshots = crate::cli::snapshot_policy(&args.snapshots);
        cfg.range_max_keys = args.ranges.range_max_keys.unwrap_or(0);
        cfg.read_mode = read_mode(
            args.reads.read_mode.as_deref(),
            args.reads.max_clock_drift,
            &cfg,
        )?;
        let mut ports = ClientPorts::plain(client_addrs[&id].clone());
        if args.tls {
            let dir = cluster_tls_dir(args);
            ports.tls = Some(ClientPortTls {
                files: ServerTlsFiles::new(
                    dir.join(format!("node{id}.pem")),
                    dir.join(format!("node{id}-key.pem")),
                ),
                addr: None,
            });
            // The same files on the peer ports: each certificate names its member.
            cfg.peer_tls = Some(crate::tls::PeerTlsFiles {
                cert: dir.join(format!("node{id}.pem")),
                key: dir.join(format!("node{id}-key.pem")),
                ca: dir.join("ca.pem"),
            });
        }
        configs.push((cfg, ports));
    }
    Ok(configs)
}

/// Starts every node of the cluster at once (an empty node told to bootstrap waits for its
/// peers to answer). The first failure stops the rest: the nodes still starting are dropped,
/// the started ones stopped.
async fn start_cluster(
    configs: Vec<(NodeConfig, ClientPorts)>,
) -> Result<Vec<StartedNode>, CliError> {
    let mut starting = JoinSet::new();
    for (cfg, ports) in configs {
        starting.spawn(start_node(cfg, ports));
    }
    let mut started = Vec::new();
    let mut failure = None;
    while let Some(joined) = starting.join_next().await {
        match joined {
            Ok(Ok(node)) => started.push(node),
            Ok(Err(e)) => {
                failure = Some(e);
                break;
            }
            Err(e) => {
                failure = Some(CliError::Task(e));
                break;
            }
        }
    }
    let Some(failure) = failure else {
        started.sort_by_key(|n| n.id);
        return Ok(started);
    };
    starting.shutdown().await;
    for node in started {
        node.abandon().await;
    }
    Err(failure)
}

/// Where `kvstore cluster --tls` keeps its CA and certificates.
fn cluster_tls_dir(args: &ClusterArgs) -> std::path::PathBuf {
    args.data_dir.join("tls")
}

/// What `kvstore cluster` prints once its nodes serve: where they are, and the commands that
/// reach them as started (with TLS and a password, the commands that work say so).
fn print_cluster_banner(args: &ClusterArgs, password_required: bool) {
    let plural = |one: &'static str, many: &'static str| if args.nodes == 1 { one } else { many };
    let client_ports: Vec<String> = (1..=args.nodes)
        .map(|i| (args.port + i as u16 - 1).to_string())
        .collect();
    let admin_ports: Vec<String> = (1..=args.nodes)
        .map(|i| (args.port + 200 + i as u16 - 1).to_string())
        .collect();
    let servers = client_ports
        .iter()
        .map(|p| format!("{}:{p}", args.host))
        .collect::<Vec<_>>()
        .join(",");
    let ca = args.tls.then(|| cluster_tls_dir(args).join("ca.pem"));
    let tls_flags = ca
        .as_ref()
        .map(|ca| format!(" --tls --cacert {}", ca.display()))
        .unwrap_or_default();
    let kvstore_tls = ca
        .as_ref()
        .map(|ca| format!(" --cacert {}", ca.display()))
        .unwrap_or_default();
    let ask = if password_required { " --askpass" } else { "" };
    let env = if password_required {
        "KVSTORE_PASSWORD=PASSWORD "
    } else {
        ""
    };
    println!(
        "kvstore: {} {} on {} (client {} {}), data in {}",
        args.nodes,
        plural("node", "nodes"),
        args.host,
        plural("port", "ports"),
        client_ports.join(", "),
        args.data_dir.display(),
    );
    println!("  connect: redis-cli -p {}{tls_flags}{ask}", args.port);
    println!("  status:  {env}kvstore status --servers {servers}{kvstore_tls}");
    println!(
        "  metrics: http://{}:{}/metrics (health: /health; admin {}: {})",
        args.host,
        admin_ports[0],
        plural("port", "ports"),
        admin_ports.join(", "),
    );
    if password_required {
        println!(
            "  login:   clients must log in (the password is not shown here): redis-cli \
             --askpass, or REDISCLI_AUTH=PASSWORD; kvstore commands read KVSTORE_PASSWORD"
        );
    }
    if args.tls {
        println!(
            "  TLS:     client and peer ports speak TLS only (peers: mutual TLS); the CA is {}",
            cluster_tls_dir(args).join("ca.pem").display()
        );
    }
    println!("  stop:    Ctrl-C");
}

pub(crate) async fn run_cluster(args: ClusterArgs) -> Result<(), CliError> {
    if args.tls {
        crate::cli_tls::cluster_certificates(&cluster_tls_dir(&args), args.nodes, &args.host)?;
    }
    let configs = cluster_configs(&args)?;
    let password_required = configs
        .first()
        .is_some_and(|(c, _)| c.client_auth.is_some());
    let nodes = start_cluster(configs).await?;
    print_cluster_banner(&args, password_required);
    let (stop_all, stop_signal) = shutdown_on_signals();
    let mut running = JoinSet::new();
    for node in nodes {
        running.spawn(node.run(stop_signal.clone()));
    }
    let mut first_error = None;
    while let Some(joined) = running.join_next().await {
        let error = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => CliError::Task(e),
        };
        if first_error.is_none() {
            // A local cluster with a node gone is not what was asked for: stop the others.
            eprintln!("kvstore: {error}; stopping the other nodes");
            stop_all.send_replace(true);
            first_error = Some(error);
        } else {
            eprintln!("kvstore: {error}");
        }
    }
    first_error.map_or(Ok(()), Err)
}
