//! Starting a node: first the process-level parts (identity; for a node joining with an empty
//! data directory, asking the cluster who it is; the peer listener, the bootstrap probe of an
//! empty directory, storage threads, finishing an
//! interrupted snapshot install, the member table, the outbound queues, the
//! snapshot fetcher), then the group that runs on them, and the loop that feeds it.
//!
//! Where the configuration comes from: a new cluster's founding members (`--peers`) seed the
//! state machine's member table and are the core's initial voters; a joining node (`--join`)
//! seeds the table with what a member told it and starts its core with no configuration, to
//! learn it from the leader's snapshot or log; a restart takes it from the data directory alone
//! (the log start's configuration and the log, else the applied table).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kv::ranges::FIRST_RANGE;
use kv::MemberTable;
use raft_core::{Config, EntryKind, Index, NodeId, RawNode, RestartState, SnapshotMeta};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::Instrument;

use super::config::NodeConfig;
use super::group::{Fetcher, Group, StorageQueues};
use super::identity::{self, PeerGate, BOOTSTRAP_PROBE_WAIT};
use super::membership::{self, Members, PeerSpawner};
use super::run::{run, Inputs};
use super::snapshot_install::SnapshotEvent;
use super::store::Store;
use crate::error::{NodeError, StorageError};
use crate::peer_header::Sender;
use crate::request::NodeHandle;
use crate::snapshot_transfer;
use crate::storage::{
    self, ApplyReports, ApplyRequest, ApplyWorker, LogRequest, LogWorker, StorageEvent,
};
use crate::transport::{self, Listener, Net, RangeMessage, SnapshotService};

/// Opens storage, binds the peer port and connects the peers. Returns the handle clients use
/// and the future that runs the node until `shutdown` turns true (or storage fails).
///
/// The peer port listens before storage opens: an empty node told to bootstrap probes its peers
/// first, and nodes of a new cluster started together must answer each other's probes.
pub async fn start<N: Net>(
    mut cfg: NodeConfig,
    net: N,
    shutdown: watch::Receiver<bool>,
) -> Result<(NodeHandle, impl Future<Output = Result<(), NodeError>>), NodeError> {
    let Some(peer_addr) = cfg.peers.get(&cfg.id).cloned() else {
        return Err(NodeError::NotAMember(cfg.id));
    };
    let (opened, joined) = identify(&net, &mut cfg).await?;
    let me = Sender {
        node_id: cfg.id,
        incarnation: cfg.incarnation,
    };
    let gate = Arc::new(PeerGate::new(
        cfg.cluster_id,
        me,
        identity::open_pins(&cfg)?,
    ));

    let listener = net
        .bind(peer_addr.clone())
        .await
        .map_err(|source| NodeError::Bind {
            addr: peer_addr,
            source,
        })?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let (unreachable_tx, unreachable) = mpsc::unbounded_channel();
    // Join requests are answered from the first moment; until the group runs, with nothing.
    let (members_tx, members_rx) = watch::channel(MemberTable::default());
    let (snapshot_events_tx, snapshot_events) = mpsc::unbounded_channel();
    let (inbox_tx, inbox) = mpsc::channel::<RangeMessage>(8192);
    let (serve_tx, serve) = mpsc::channel(64);
    let listening = spawn_peer_listener(
        listener,
        &cfg,
        gate.clone(),
        inbox_tx,
        SnapshotService {
            serve: serve_tx.clone(),
            events: snapshot_events_tx.clone(),
            write_timeout: cfg.transport.write,
            members: members_rx,
        },
        shutdown.clone(),
    );
    let book = GroupMembers {
        joined,
        spawn: peer_spawner(&net, &cfg, unreachable_tx),
        published: members_tx,
    };
    let opening = open_node(
        &cfg,
        &net,
        &opened,
        &gate,
        book,
        events_tx,
        snapshot_events_tx,
    );
    let (storage, core, members) = match opening.await {
        Ok(opened) => opened,
        Err(e) => {
            listening.abort();
            return Err(e);
        }
    };

    let fetcher = fetcher(&net, &cfg, storage.apply.requests.clone());

    let workers = vec![storage.log.worker, storage.apply.worker];
    let serving = Arc::new(Semaphore::new(cfg.peers.len().max(2)));
    let store_cfg = cfg.clone();
    let queues = StorageQueues {
        log: storage.log.writes,
        apply: storage.apply.requests,
    };
    let split_transactions = cfg.split_transactions();
    let metrics_handle = cfg.metrics.clone();
    let mut group = Group::new(
        FIRST_RANGE,
        cfg,
        core,
        queues,
        members,
        fetcher,
        (storage.applied_index, storage.image),
    );
    group.peer_gate = Some(gate);
    let (ranges_tx, ranges) =
        tokio::sync::watch::channel(std::sync::Arc::new(kv::ranges::RangeTable::first()));
    let store = Store::new(&store_cfg, workers, serving, group, ranges_tx);
    let (requests_tx, requests) = mpsc::channel(65536);
    let inputs = Inputs {
        events,
        snapshot_events,
        inbox,
        requests,
        unreachable,
        serve,
        shutdown,
    };
    Ok((
        NodeHandle {
            requests: requests_tx,
            ranges,
            images: serve_tx,
            split_transactions,
            metrics: metrics_handle,
        },
        run(store, inputs),
    ))
}

/// The node's identity (recorded, or new), and for an empty directory started with `--join`,
/// the member table the cluster told it. A node added to a running cluster learns its cluster
/// before anything is recorded: refused, it leaves its directory empty.
async fn identify<N: Net>(
    net: &N,
    cfg: &mut NodeConfig,
) -> Result<(identity::Opened, Option<MemberTable>), NodeError> {
    let mut opened = identity::open(cfg)?;
    let mut joined = None;
    // A simulated disk keeps no identity file, so `open` never finds it new: there a joining
    // node asks for as long as its disk holds nothing.
    let empty = opened.is_new || cfg.storage.is_blank_simulated_disk();
    if empty && !cfg.join.is_empty() {
        let answer = membership::ask_to_join(net, cfg).await?;
        tracing::info!(
            id = cfg.id,
            cluster = %kv::ClusterIdText(answer.cluster_id),
            "joining the cluster"
        );
        opened.identity.cluster_id = answer.cluster_id;
        joined = Some(answer.members);
    }
    cfg.cluster_id = opened.identity.cluster_id;
    cfg.incarnation = opened.identity.incarnation;
    Ok((opened, joined))
}

/// What the address book is made of besides what storage finds.
struct GroupMembers {
    /// What the cluster told a joining node.
    joined: Option<MemberTable>,
    spawn: PeerSpawner,
    /// Where the configuration in force is published for join requests.
    published: watch::Sender<MemberTable>,
}

/// Everything between the listener and the group: an empty directory's bootstrap probe and
/// identity, then storage, the member table, the core and the address book (its outbound peers
/// following the core's configuration).
async fn open_node<N: Net>(
    cfg: &NodeConfig,
    net: &N,
    opened: &identity::Opened,
    gate: &PeerGate,
    book: GroupMembers,
    events: mpsc::UnboundedSender<StorageEvent>,
    snapshot_events: mpsc::UnboundedSender<SnapshotEvent>,
) -> Result<(OpenedStorage, RawNode, Members), NodeError> {
    if opened.is_new {
        if cfg.peers.len() > 1 {
            identity::check_bootstrap(net, cfg, BOOTSTRAP_PROBE_WAIT).await?;
        }
        identity::record(cfg, &opened.identity)?;
    }
    let (mut storage, restart) = open_storage(cfg, events, snapshot_events).await?;
    let origin = seed_members(cfg, &mut storage, &restart, book.joined).await?;
    let mut members = Members::new(
        cfg.id,
        storage.members.clone(),
        storage.applied_index,
        membership::command_line_book(cfg),
        book.spawn,
        book.published,
    );
    members.note_appended(&restart.entries);
    let core = restart_core(cfg, restart, origin, &storage.members)?;
    members.maybe_follow(core.membership());
    gate.set_has_data(core.term() > 0 || core.last_index() > 0 || storage.applied_index > 0);
    tracing::info!(
        version = crate::cli::VERSION,
        id = cfg.id,
        cluster = %kv::ClusterIdText(cfg.cluster_id),
        incarnation = format_args!("{:#x}", cfg.incarnation),
        peer_addr = cfg.peers.get(&cfg.id).map_or("?", String::as_str),
        client_addr = cfg.client_addrs.get(&cfg.id).map_or("?", String::as_str),
        admin_addr = cfg.admin_addr.as_deref().unwrap_or("none"),
        data_dir = %cfg.data_dir.display(),
        peers = ?cfg.peers,
        tick_ms = cfg.tick.as_millis() as u64,
        election_ticks = cfg.election_ticks,
        heartbeat_ticks = cfg.heartbeat_ticks,
        read_mode = ?cfg.read_mode,
        request_timeout_ms = cfg.request_timeout.as_millis() as u64,
        term = core.term(),
        last_index = core.last_index(),
        applied_index = storage.applied_index,
        "node starting"
    );
    Ok((storage, core, members))
}

/// Where the node's configuration comes from at this start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A new cluster: the founding members (`--peers`) are the initial voters.
    Bootstrap,
    /// A node added to a running cluster, on an empty data directory: no configuration until
    /// the leader's snapshot or log brings one.
    Joining,
    /// The data directory's: the log start's configuration and the log, else the applied table.
    DataDir,
}

/// Seeds the member table of a state machine that has applied nothing and has none: the
/// founding members, or what the cluster told a joining node.
async fn seed_members(
    cfg: &NodeConfig,
    storage: &mut OpenedStorage,
    restart: &RestartState,
    joined: Option<MemberTable>,
) -> Result<Origin, NodeError> {
    let fresh = storage.applied_index == 0
        && storage.members.membership.is_empty()
        && restart.entries.is_empty();
    if !fresh {
        return Ok(Origin::DataDir);
    }
    let (table, origin) = match joined {
        Some(table) => (table, Origin::Joining),
        None => (membership::founding_table(cfg), Origin::Bootstrap),
    };
    let (reply, done) = oneshot::channel();
    let _ = storage.apply.requests.send(ApplyRequest::SeedMembers {
        table: table.clone(),
        reply,
    });
    done.await.map_err(|_| StorageError::WorkerStopped)??;
    storage.members = table;
    Ok(origin)
}

/// The storage threads, and what they found on disk (besides the state to restart the core
/// from).
struct OpenedStorage {
    log: LogWorker,
    apply: ApplyWorker,
    applied_index: Index,
    /// The newest snapshot image in the data directory (index 0: none).
    image: SnapshotMeta,
    /// The state machine's member table.
    members: MemberTable,
}

/// Starts the log and apply workers and waits for what they found. A crash that interrupted a
/// snapshot install after its commit point is finished here: the log half, then the state
/// machine's.
async fn open_storage(
    cfg: &NodeConfig,
    events: mpsc::UnboundedSender<StorageEvent>,
    snapshot_events: mpsc::UnboundedSender<SnapshotEvent>,
) -> Result<(OpenedStorage, RestartState), StorageError> {
    let (log, loaded) = storage::spawn_log_worker(
        &cfg.storage,
        cfg.data_dir.clone(),
        events.clone(),
        cfg.acknowledge_before_fsync(),
        cfg.metrics.clone(),
    )
    .map_err(StorageError::Spawn)?;
    let reports = ApplyReports {
        events,
        snapshots: snapshot_events,
        metrics: cfg.metrics.clone(),
    };
    let (apply, opened) = storage::spawn_apply_worker(
        &cfg.storage,
        cfg.data_dir.clone(),
        cfg.cluster_id,
        cfg.snapshots,
        reports,
        storage::ApplyFaults {
            install_without_data: cfg.install_without_data(),
            local_expiry_clock: cfg.local_expiry_clock(),
        },
        // A joining node's configuration comes from the cluster, never from its command line.
        if cfg.join.is_empty() {
            raft_core::Membership::with_voters(cfg.peers.keys().copied())
        } else {
            raft_core::Membership::default()
        },
    )
    .map_err(StorageError::Spawn)?;
    let gone = |_| StorageError::WorkerStopped;
    let (mut logged, log_path) = loaded.await.map_err(gone)??;
    let state = opened.await.map_err(gone)??;
    let mut applied_index = state.applied_index;
    if let Some(snapshot) = state.pending_install {
        tracing::info!(
            id = cfg.id,
            index = snapshot.index,
            "finishing an interrupted snapshot install"
        );
        let (reply, done) = oneshot::channel();
        let _ = log
            .writes
            .send(LogRequest::FinishPendingInstall { snapshot, reply });
        logged = done.await.map_err(gone)??;
        let (reply, done) = oneshot::channel();
        let _ = apply.requests.send(ApplyRequest::FinishInstall { reply });
        applied_index = done.await.map_err(gone)??;
    }
    let restart = kv::restart_state_from(logged, &log_path, applied_index, &state.path)
        .map_err(StorageError::kv("reading the state to restart from"))?;
    let opened = OpenedStorage {
        log,
        apply,
        applied_index,
        image: state.image,
        members: state.members,
    };
    Ok((opened, restart))
}

/// The core, from the configuration and what storage found. A restart's configuration is the
/// log start's and the log's; where neither holds one (nothing compacted, no conf change yet)
/// it is the applied table's, which is then the configuration at the log start too.
fn restart_core(
    cfg: &NodeConfig,
    mut restart: RestartState,
    origin: Origin,
    table: &MemberTable,
) -> Result<RawNode, NodeError> {
    let voters = match origin {
        Origin::Bootstrap => cfg.peers.keys().copied().collect(),
        Origin::Joining => Vec::new(),
        Origin::DataDir if table.membership.is_empty() => cfg.peers.keys().copied().collect(),
        Origin::DataDir => {
            let log_has_conf = restart
                .entries
                .iter()
                .any(|e| e.kind == EntryKind::ConfChange);
            if restart.snapshot.membership.is_empty() && !log_has_conf {
                restart.snapshot.membership = table.membership.clone();
            }
            Vec::new()
        }
    };
    let mut core_cfg = Config::new(cfg.id, voters);
    core_cfg.election_ticks = cfg.election_ticks;
    core_cfg.heartbeat_ticks = cfg.heartbeat_ticks;
    core_cfg.read_mode = cfg.read_mode;
    core_cfg.seed = cfg.seed;
    // Clients reach any node; their writes are recognised by (client id, seq) when they commit,
    // and time out and retry, so a forwarded proposal that is lost costs only a retry.
    core_cfg.forward_to_leader = true;
    // Key expiry decides from time carried in the log (kv's state machine).
    core_cfg.clock_stamps = true;
    #[cfg(feature = "test-switches")]
    {
        core_cfg.bugs = cfg.unsafe_switches.raft;
        core_cfg.clock_stamps = !cfg.unsafe_switches.no_clock_stamps;
    }
    RawNode::restart(core_cfg, restart).map_err(NodeError::Core)
}

/// Accepts peer connections until `shutdown`: each, once established (a TLS handshake, in its
/// own task), reads Raft messages into `inbox` (from the peers its certificate names and
/// `gate` admits), serves a snapshot, or answers a bootstrap probe, as its first frame
/// asks.
fn spawn_peer_listener<L: Listener>(
    mut listener: L,
    cfg: &NodeConfig,
    gate: Arc<PeerGate>,
    inbox: mpsc::Sender<RangeMessage>,
    snapshots: SnapshotService,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let idle = cfg.transport.idle_read;
    let listening = async move {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        let (gate, inbox, snapshots) =
                            (gate.clone(), inbox.clone(), snapshots.clone());
                        // A TLS handshake: awaited in this connection's task.
                        let establishing = listener.establish(stream, remote.clone());
                        let inbound = async move {
                            let Some((stream, identity)) = establishing.await else {
                                return;
                            };
                            transport::run_inbound(
                                stream, remote, identity, gate, idle, inbox, snapshots,
                            )
                            .await
                        };
                        L::spawn(inbound.in_current_span());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a peer connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    };
    L::spawn(listening.in_current_span())
}

/// Starts one outbound task with a bounded queue for a peer at an address; `unreachable` hears
/// of peers that cannot be reached.
fn peer_spawner<N: Net>(
    net: &N,
    cfg: &NodeConfig,
    unreachable: mpsc::UnboundedSender<NodeId>,
) -> PeerSpawner {
    let me = crate::peer_header::Sender {
        node_id: cfg.id,
        incarnation: cfg.incarnation,
    };
    let advertised = cfg.peers.get(&cfg.id).cloned().unwrap_or_default();
    let cfg_cluster_id = cfg.cluster_id;
    let (net, timeouts) = (net.clone(), cfg.transport);
    Box::new(move |peer, addr| {
        let (tx, rx) = mpsc::channel(4096);
        let outbound = transport::run_outbound(
            net.clone(),
            peer,
            addr,
            (cfg_cluster_id, me, advertised.clone()),
            timeouts,
            rx,
            unreachable.clone(),
        );
        N::Listener::spawn(outbound.in_current_span());
        tx
    })
}

/// Starts fetch tasks: they need the network, which the group does not know.
fn fetcher<N: Net>(
    net: &N,
    cfg: &NodeConfig,
    apply: mpsc::UnboundedSender<ApplyRequest>,
) -> Fetcher {
    let (net, cluster_id, timeouts) = (net.clone(), cfg.cluster_id, cfg.transport);
    let incarnation = cfg.incarnation;
    let window = Arc::new(Semaphore::new(snapshot_transfer::RECEIVE_WINDOW));
    Box::new(move |job| {
        let fetching = snapshot_transfer::fetch(
            net.clone(),
            job,
            cluster_id,
            incarnation,
            timeouts,
            apply.clone(),
            window.clone(),
        );
        N::Listener::spawn(fetching.in_current_span())
    })
}
