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

use kv::ranges::{RangeDescriptor, FIRST_RANGE};
use kv::MemberTable;
use raft_core::{Index, NodeId, RestartState, SnapshotMeta};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::Instrument;

use super::config::NodeConfig;
use super::group::{Fetcher, Group, StorageQueues};
use super::group_builder::{GroupBuilder, GroupStart, Origin};
use super::identity::{self, PeerGate, BOOTSTRAP_PROBE_WAIT};
use super::membership::{self, PeerSpawner};
use super::run::{run, Inputs};
use super::snapshot_install::SnapshotEvent;
use super::store::Store;
use crate::error::{NodeError, StorageError};
use crate::peer_header::Sender;
use crate::request::NodeHandle;
use crate::snapshot_transfer;
use crate::storage::{
    self, ApplyReports, ApplyRequest, ApplyWorker, EventSender, LogRequest, LogWorker, RangeOnDisk,
    RangeQueue,
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
    let opening = open_node(&cfg, &net, &opened, joined, events_tx, snapshot_events_tx);
    let built = match opening.await {
        Ok((storage, logged, origin)) => {
            let builder = GroupBuilder {
                cfg: cfg.clone(),
                gate: gate.clone(),
                spawn_peers: peer_spawners(&net, &cfg, unreachable_tx),
                fetcher: fetchers(&net, &cfg),
                queues: StorageQueues {
                    log: storage.log.writes.clone(),
                    apply: storage.apply.requests.clone(),
                },
                log_path: storage.log_path.clone(),
                state_path: storage.state_path.clone(),
            };
            let first = GroupStart {
                range: FIRST_RANGE,
                logged,
                origin,
                members: storage.members.clone(),
                applied_index: storage.applied_index,
                image: storage.image.clone(),
                published: members_tx,
            };
            build_groups(&cfg, &gate, &builder, first, &storage)
                .await
                .map(|groups| (storage, builder, groups))
        }
        Err(e) => Err(e),
    };
    let (storage, builder, groups) = match built {
        Ok(built) => built,
        Err(e) => {
            listening.abort();
            return Err(e);
        }
    };

    let workers = vec![storage.log.worker, storage.apply.worker];
    let serving = Arc::new(Semaphore::new(cfg.peers.len().max(2)));
    let split_transactions = cfg.split_transactions();
    let metrics_handle = cfg.metrics.clone();
    let (ranges_tx, ranges) =
        tokio::sync::watch::channel(std::sync::Arc::new(kv::ranges::RangeTable::first()));
    let store = Store::new(&cfg, workers, serving, groups, ranges_tx, builder);
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

/// Every group the data directory holds: the first range's, then each range a split created
/// here (in id order), each from its own log, which the log worker opens.
async fn build_groups(
    cfg: &NodeConfig,
    gate: &PeerGate,
    builder: &GroupBuilder,
    first: GroupStart,
    storage: &OpenedStorage,
) -> Result<Vec<(Group, RangeDescriptor)>, NodeError> {
    let first = builder.build(first)?;
    let applied_index = storage.applied_index;
    gate.set_has_data(first.core.term() > 0 || first.core.last_index() > 0 || applied_index > 0);
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
        term = first.core.term(),
        last_index = first.core.last_index(),
        applied_index,
        ranges = storage.other_ranges.len() + 1,
        "node starting"
    );
    let mut groups = vec![(first, storage.descriptor.clone())];
    for state in &storage.other_ranges {
        let range = state.descriptor.id;
        let (reply, opened) = oneshot::channel();
        let _ = builder
            .queues
            .log
            .for_range(range)
            .send(LogRequest::OpenRange {
                state: state.clone(),
                reply: Some(reply),
            });
        let logged = opened.await.map_err(|_| StorageError::WorkerStopped)??;
        let group = builder.build(GroupStart::split_range(state, logged))?;
        tracing::info!(
            id = cfg.id,
            range,
            term = group.core.term(),
            applied_index = state.applied_index,
            "range opened"
        );
        groups.push((group, state.descriptor.clone()));
    }
    Ok(groups)
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

/// An empty directory's bootstrap probe and identity, then storage and the member table: what
/// the first range's group is built from.
async fn open_node<N: Net>(
    cfg: &NodeConfig,
    net: &N,
    opened: &identity::Opened,
    joined: Option<MemberTable>,
    events: EventSender,
    snapshot_events: mpsc::UnboundedSender<SnapshotEvent>,
) -> Result<(OpenedStorage, RestartState, Origin), NodeError> {
    if opened.is_new {
        if cfg.peers.len() > 1 {
            identity::check_bootstrap(net, cfg, BOOTSTRAP_PROBE_WAIT).await?;
        }
        identity::record(cfg, &opened.identity)?;
    }
    let (mut storage, logged) = open_storage(cfg, events, snapshot_events).await?;
    let origin = seed_members(cfg, &mut storage, &logged, joined).await?;
    Ok((storage, logged, origin))
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

/// The storage threads, and what they found on disk (besides the first range's log).
struct OpenedStorage {
    log: LogWorker,
    apply: ApplyWorker,
    applied_index: Index,
    /// The newest snapshot image in the data directory (index 0: none).
    image: SnapshotMeta,
    /// The state machine's member table.
    members: MemberTable,
    /// The first range's descriptor, and every other range the database holds.
    descriptor: RangeDescriptor,
    other_ranges: Vec<RangeOnDisk>,
    log_path: std::path::PathBuf,
    state_path: std::path::PathBuf,
}

/// Starts the log and apply workers and waits for what they found. A crash that interrupted a
/// snapshot install after its commit point is finished here: the log half, then the state
/// machine's.
async fn open_storage(
    cfg: &NodeConfig,
    events: EventSender,
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
        outcomes: cfg.observer.as_ref().is_some_and(|o| o.wants_outcomes()),
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
            ignore_range_ownership: cfg.ignore_range_ownership(),
            splits_first: cfg.apply_splits_first(),
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
    let opened = OpenedStorage {
        log,
        apply,
        applied_index,
        image: state.image,
        members: state.members,
        descriptor: state.descriptor,
        other_ranges: state.other_ranges,
        log_path,
        state_path: state.path,
    };
    Ok((opened, logged))
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

/// Makes a group's peer spawner: each starts one outbound task with a bounded queue for a peer
/// at an address (each group its own); `unreachable` hears of peers that cannot be reached.
fn peer_spawners<N: Net>(
    net: &N,
    cfg: &NodeConfig,
    unreachable: mpsc::UnboundedSender<NodeId>,
) -> Box<dyn Fn() -> PeerSpawner + Send + Sync> {
    let (net, cfg) = (net.clone(), cfg.clone());
    Box::new(move || peer_spawner(&net, &cfg, unreachable.clone()))
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

/// Makes a group's fetcher, which starts fetch tasks: they need the network, which the group
/// does not know. The receive window is the node's, shared by its groups.
fn fetchers<N: Net>(
    net: &N,
    cfg: &NodeConfig,
) -> Box<dyn Fn(RangeQueue<ApplyRequest>) -> Fetcher + Send + Sync> {
    let (net, cluster_id, timeouts) = (net.clone(), cfg.cluster_id, cfg.transport);
    let incarnation = cfg.incarnation;
    let window = Arc::new(Semaphore::new(snapshot_transfer::RECEIVE_WINDOW));
    Box::new(move |apply| fetcher(&net, (cluster_id, incarnation), timeouts, apply, &window))
}

fn fetcher<N: Net>(
    net: &N,
    (cluster_id, incarnation): (u64, u64),
    timeouts: crate::transport::TransportTimeouts,
    apply: RangeQueue<ApplyRequest>,
    window: &Arc<Semaphore>,
) -> Fetcher {
    let (net, window) = (net.clone(), window.clone());
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
