//! The node loop: one task owns the Raft core and executes what it asks.
//!
//! It selects over the tick timer, storage completions, peer messages, client requests and
//! transport failures, feeds each to the core (draining whatever else is already queued, so that
//! one `Ready` covers many inputs), and then acts on the core's `Ready`: writes go to the log
//! thread, messages to the peers' outbound queues, committed entries and reads to the apply
//! thread. Nothing here decides anything about Raft.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kv::{CommandResult, Identity};
use raft_core::{
    Config, Entry, Index, Message, NodeId, ProposeError, RawNode, Role, SnapshotMeta,
    SnapshotToFetch, SnapshotWrite, Term,
};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::request::{ClientRequest, NodeHandle, NodeInfo, ReadOp, ReadResult, RequestError};
use crate::snapshot_transfer::{self, FetchJob, FetchRequest, ServeRequest};
pub use crate::storage::SnapshotPolicy;
use crate::storage::{self, ApplyRequest, LogRequest, StorageEvent, StorageMode};
use crate::transport::{self, Listener, Net, TransportTimeouts};

/// Everything one node needs to run.
#[derive(Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub cluster_id: u64,
    /// Peer-port address of every member, this node included.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    /// One Raft tick.
    pub tick: Duration,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// A client request with no outcome after this long is answered TIMEOUT (or TRYAGAIN).
    pub request_timeout: Duration,
    pub transport: TransportTimeouts,
    /// Seeds the core's election timer.
    pub seed: u64,
    /// Client-port address of every member, where known: a node tells clients where the
    /// leader takes requests (`LEADER`, INFO's `leader_client_addr`).
    pub client_addrs: BTreeMap<NodeId, String>,
    /// The real disk, or the simulator's.
    pub storage: StorageMode,
    /// When to take snapshots and compact the log.
    pub snapshots: SnapshotPolicy,
    /// Told of role changes and committed entries (the simulator's checks and trace).
    pub observer: Option<Arc<dyn NodeObserver>>,
    /// Deliberately broken behaviour, for the simulator to show that it catches each.
    #[cfg(feature = "test-switches")]
    pub unsafe_switches: UnsafeSwitches,
    #[cfg(feature = "test-switches")]
    pub pause: PauseSwitch,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("id", &self.id)
            .field("cluster_id", &self.cluster_id)
            .field("peers", &self.peers)
            .field("data_dir", &self.data_dir)
            .field("tick", &self.tick)
            .field("election_ticks", &self.election_ticks)
            .field("heartbeat_ticks", &self.heartbeat_ticks)
            .field("request_timeout", &self.request_timeout)
            .field("seed", &self.seed)
            .field("snapshots", &self.snapshots)
            .field(
                "storage",
                &match self.storage {
                    StorageMode::Disk => "disk",
                    StorageMode::Simulated(_) => "simulated",
                },
            )
            .finish_non_exhaustive()
    }
}

/// Hooks for whoever watches a node from outside: the simulator's invariant checks and trace.
pub trait NodeObserver: Send + Sync {
    /// The node's role, term or leader changed.
    fn role_changed(&self, node: NodeId, term: Term, role: Role, leader: Option<NodeId>);
    /// These committed entries go to the state machine now, in log order.
    fn committed(&self, node: NodeId, entries: &[Entry]);
    /// The state machine is being replaced by a snapshot received from another node.
    fn snapshot_installed(&self, _node: NodeId, _snapshot: SnapshotMeta) {}
    /// The state machine took a snapshot image of everything applied up to `snapshot.index`.
    fn snapshot_taken(&self, _node: NodeId, _snapshot: SnapshotMeta) {}
}

/// Known-unsafe behaviour, switched on only by tests (feature `test-switches`).
#[cfg(feature = "test-switches")]
#[derive(Clone, Copy, Debug, Default)]
pub struct UnsafeSwitches {
    /// Serve reads from the local state machine, without ReadIndex.
    pub local_reads: bool,
    /// Report a log write durable before it is written.
    pub ack_before_fsync: bool,
    /// Report a snapshot install done while keeping the old state machine.
    pub install_without_data: bool,
    /// Broken Raft rules inside the core.
    pub raft: raft_core::bugs::Bugs,
}

/// A switch the simulator flips to freeze a node's loop, as a paused process (SIGSTOP, a long
/// GC pause, a VM migration): no ticks, no messages handled, no requests taken, until released.
#[cfg(feature = "test-switches")]
#[derive(Clone, Debug, Default)]
pub struct PauseSwitch(pub Arc<std::sync::atomic::AtomicBool>);

#[cfg(feature = "test-switches")]
impl PauseSwitch {
    pub fn set(&self, paused: bool) {
        self.0.store(paused, std::sync::atomic::Ordering::Relaxed);
    }
    fn is_paused(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl NodeConfig {
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: PathBuf) -> Self {
        let cluster_id = cluster_id_of(&peers);
        Self {
            id,
            cluster_id,
            peers,
            data_dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            request_timeout: Duration::from_secs(5),
            transport: TransportTimeouts::default(),
            seed: id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            client_addrs: BTreeMap::new(),
            storage: StorageMode::Disk,
            snapshots: SnapshotPolicy::default(),
            observer: None,
            #[cfg(feature = "test-switches")]
            unsafe_switches: UnsafeSwitches::default(),
            #[cfg(feature = "test-switches")]
            pause: PauseSwitch::default(),
        }
    }

    fn serve_reads_locally(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.unsafe_switches.local_reads;
        #[cfg(not(feature = "test-switches"))]
        false
    }

    fn acknowledge_before_fsync(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.unsafe_switches.ack_before_fsync;
        #[cfg(not(feature = "test-switches"))]
        false
    }

    fn install_without_data(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.unsafe_switches.install_without_data;
        #[cfg(not(feature = "test-switches"))]
        false
    }
}

/// A cluster id derived from the member list, so that nodes started with the same `--peers`
/// agree without configuration, and a node given another list is refused by its peers.
pub fn cluster_id_of(peers: &BTreeMap<NodeId, String>) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, addr) in peers {
        for b in id.to_be_bytes().iter().chain(addr.as_bytes()).chain(b";") {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[derive(Debug)]
pub enum NodeError {
    Config(String),
    Storage(String),
    Bind { addr: String, error: std::io::Error },
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Config(m) => write!(f, "invalid configuration: {m}"),
            NodeError::Storage(m) => write!(f, "storage: {m}"),
            NodeError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for NodeError {}

struct WriteWaiter {
    reply: oneshot::Sender<Result<CommandResult, RequestError>>,
    deadline: Instant,
}

struct PendingRead {
    op: ReadOp,
    reply: oneshot::Sender<Result<ReadResult, RequestError>>,
    deadline: Instant,
}

/// A request that arrived while no leader was known, waiting for an election to end.
struct ParkedRequest {
    req: ClientRequest,
    deadline: Instant,
}

/// How many requests may wait for a leader at once; beyond that they are refused at once.
const MAX_PARKED: usize = 65_536;

/// Starts the task that fetches a snapshot (it needs the network, which the loop does not know).
type Fetcher = Box<dyn Fn(FetchJob) -> JoinHandle<()> + Send + Sync>;

/// A snapshot fetch in progress (or failed, until the core asks again).
struct Fetch {
    job: u64,
    asked: SnapshotToFetch,
    task: JoinHandle<()>,
    failed: bool,
}

/// The node's snapshots: the images its state machine took, compaction, transfers.
struct Snapshots {
    policy: SnapshotPolicy,
    /// Images taken and not yet compacted to, in index order. The log is compacted to one
    /// once `policy.tail` entries have been applied after it.
    uncompacted: Vec<Index>,
    /// The newest image in the data directory (taken here or installed).
    newest_image: Index,
    /// Since this process started.
    taken: u64,
    installed: u64,
    fetch: Option<Fetch>,
    /// A snapshot the apply worker has staged and the core was told of; if the core does not
    /// ask to install it in the next drain, it is discarded.
    staged: Option<SnapshotMeta>,
    next_job: u64,
    fetcher: Fetcher,
    /// Transfers this node may serve at once; a request beyond them is refused (the follower
    /// asks again later), so that no peer can make it open readers without bound.
    serving: Arc<Semaphore>,
}

/// Images kept as compaction points at most (a tail far longer than the threshold would
/// otherwise collect one per threshold entries); the oldest are forgotten first.
const MAX_UNCOMPACTED_IMAGES: usize = 64;

struct NodeLoop {
    cfg: NodeConfig,
    core: RawNode,
    outbound: BTreeMap<NodeId, mpsc::Sender<Message>>,
    log_writes: mpsc::UnboundedSender<LogRequest>,
    apply: mpsc::UnboundedSender<ApplyRequest>,
    workers: Vec<storage::Worker>,
    snapshots: Snapshots,
    writes: BTreeMap<(u64, u64), Vec<WriteWaiter>>,
    reads: BTreeMap<u64, PendingRead>,
    /// Confirmed reads waiting for the apply thread to be handed their index.
    reads_waiting_for_apply: BTreeMap<Index, Vec<PendingRead>>,
    /// Requests that came while no leader was known (a cluster starting, an election): they are
    /// submitted when one is, or refused with TRYAGAIN at their deadline.
    waiting_for_leader: Vec<ParkedRequest>,
    next_read_id: u64,
    handed_to_apply: Index,
    applied: Index,
    term_seen: u64,
}

/// Opens storage, binds the peer port and connects the peers. Returns the handle clients use
/// and the future that runs the node until `shutdown` turns true (or storage fails).
pub async fn start<N: Net>(
    cfg: NodeConfig,
    net: N,
    shutdown: watch::Receiver<bool>,
) -> Result<(NodeHandle, impl Future<Output = Result<(), NodeError>>), NodeError> {
    let Some(peer_addr) = cfg.peers.get(&cfg.id).cloned() else {
        return Err(NodeError::Config(format!(
            "node {} is not in the peer list",
            cfg.id
        )));
    };
    if let StorageMode::Disk = cfg.storage {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            NodeError::Storage(format!("cannot create {}: {e}", cfg.data_dir.display()))
        })?;
        Identity::new(cfg.id, cfg.cluster_id)
            .ensure(&cfg.data_dir)
            .map_err(|e| NodeError::Storage(e.to_string()))?;
    }

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let spawn_err =
        |e: std::io::Error| NodeError::Storage(format!("cannot start a storage thread: {e}"));
    let (log, loaded) = storage::spawn_log_worker(
        &cfg.storage,
        cfg.data_dir.clone(),
        events_tx.clone(),
        cfg.acknowledge_before_fsync(),
    )
    .map_err(spawn_err)?;
    let (apply, opened) = storage::spawn_apply_worker(
        &cfg.storage,
        cfg.data_dir.clone(),
        cfg.cluster_id,
        cfg.snapshots,
        events_tx.clone(),
        cfg.install_without_data(),
    )
    .map_err(spawn_err)?;
    let gone = || NodeError::Storage("a storage thread stopped while opening".into());
    let (mut logged, log_path) = loaded
        .await
        .map_err(|_| gone())?
        .map_err(NodeError::Storage)?;
    let state = opened
        .await
        .map_err(|_| gone())?
        .map_err(NodeError::Storage)?;
    let mut applied = state.applied;
    if let Some(snapshot) = state.pending_install {
        // A crash interrupted a snapshot install after its commit point: finish the log half,
        // then the state machine's.
        tracing::info!(
            id = cfg.id,
            index = snapshot.index,
            "finishing an interrupted snapshot install"
        );
        let (reply, done) = oneshot::channel();
        let _ = log
            .writes
            .send(LogRequest::FinishPendingInstall { snapshot, reply });
        logged = done
            .await
            .map_err(|_| gone())?
            .map_err(NodeError::Storage)?;
        let (reply, done) = oneshot::channel();
        let _ = apply.requests.send(ApplyRequest::FinishInstall { reply });
        applied = done
            .await
            .map_err(|_| gone())?
            .map_err(NodeError::Storage)?;
    }
    let restart = kv::restart_state_from(logged, &log_path, applied, &state.path)
        .map_err(|e| NodeError::Storage(e.to_string()))?;

    let mut core_cfg = Config::new(cfg.id, cfg.peers.keys().copied().collect());
    core_cfg.election_ticks = cfg.election_ticks;
    core_cfg.heartbeat_ticks = cfg.heartbeat_ticks;
    core_cfg.seed = cfg.seed;
    #[cfg(feature = "test-switches")]
    {
        core_cfg.bugs = cfg.unsafe_switches.raft;
    }
    let core = RawNode::restart(core_cfg, restart).map_err(|e| NodeError::Config(e.to_string()))?;
    tracing::info!(
        id = cfg.id,
        term = core.term(),
        last_index = core.last_index(),
        applied,
        "node starting"
    );

    let mut listener = net
        .bind(peer_addr.clone())
        .await
        .map_err(|error| NodeError::Bind {
            addr: peer_addr.clone(),
            error,
        })?;
    let (inbox_tx, inbox_rx) = mpsc::channel::<Message>(8192);
    let (unreachable_tx, unreachable_rx) = mpsc::unbounded_channel();
    let (serve_tx, serve_rx) = mpsc::channel::<ServeRequest>(64);
    let snapshot_service = transport::SnapshotService {
        serve: serve_tx,
        events: events_tx,
        write_timeout: cfg.transport.write,
    };
    let (cluster_id, idle) = (cfg.cluster_id, cfg.transport.idle_read);
    let mut accept_shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = accept_shutdown.changed() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        tokio::spawn(transport::run_inbound(stream, remote, cluster_id, idle, inbox_tx.clone(), snapshot_service.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a peer connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    });
    let mut outbound = BTreeMap::new();
    for (&peer, addr) in cfg.peers.iter().filter(|(&p, _)| p != cfg.id) {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(transport::run_outbound(
            net.clone(),
            peer,
            addr.clone(),
            cfg.cluster_id,
            cfg.transport,
            rx,
            unreachable_tx.clone(),
        ));
        outbound.insert(peer, tx);
    }

    let (requests_tx, requests_rx) = mpsc::channel(65536);
    let term_seen = core.term();
    let fetcher: Fetcher = {
        let (net, apply, cluster_id, timeouts) = (
            net.clone(),
            apply.requests.clone(),
            cfg.cluster_id,
            cfg.transport,
        );
        let window = Arc::new(Semaphore::new(snapshot_transfer::RECEIVE_WINDOW));
        Box::new(move |job| {
            tokio::spawn(snapshot_transfer::fetch(
                net.clone(),
                job,
                cluster_id,
                timeouts,
                apply.clone(),
                window.clone(),
            ))
        })
    };
    // An image newer than the log start (taken before a restart) is a compaction point too.
    let uncompacted = if state.image.index > core.snapshot().index {
        vec![state.image.index]
    } else {
        Vec::new()
    };
    let node = NodeLoop {
        snapshots: Snapshots {
            policy: cfg.snapshots,
            uncompacted,
            newest_image: state.image.index,
            taken: 0,
            installed: 0,
            fetch: None,
            staged: None,
            next_job: 1,
            fetcher,
            serving: Arc::new(Semaphore::new(cfg.peers.len().max(2))),
        },
        cfg,
        core,
        outbound,
        log_writes: log.writes,
        apply: apply.requests,
        workers: vec![log.worker, apply.worker],
        writes: BTreeMap::new(),
        reads: BTreeMap::new(),
        reads_waiting_for_apply: BTreeMap::new(),
        waiting_for_leader: Vec::new(),
        next_read_id: 1,
        handed_to_apply: applied,
        applied,
        term_seen,
    };
    let run = node.run(
        events_rx,
        inbox_rx,
        requests_rx,
        unreachable_rx,
        serve_rx,
        shutdown,
    );
    Ok((
        NodeHandle {
            requests: requests_tx,
        },
        run,
    ))
}

/// How many queued inputs of one kind are fed to the core before it is drained.
const MAX_BATCH: usize = 1024;

impl NodeLoop {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<StorageEvent>,
        mut inbox: mpsc::Receiver<Message>,
        mut requests: mpsc::Receiver<ClientRequest>,
        mut unreachable: mpsc::UnboundedReceiver<NodeId>,
        mut serve: mpsc::Receiver<ServeRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            #[cfg(feature = "test-switches")]
            while self.cfg.pause.is_paused() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Biased, rare inputs first: a flood of one kind must not starve ticks or storage.
            tokio::select! {
                biased;
                _ = shutdown.changed() => break Ok(()),
                _ = ticker.tick() => {
                    self.core.tick();
                    self.expire(Instant::now());
                }
                Some(ev) = events.recv() => {
                    if let Err(e) = self.on_storage(ev) {
                        break Err(e);
                    }
                    let mut failed = None;
                    for _ in 0..MAX_BATCH {
                        match events.try_recv() {
                            Ok(ev) => if let Err(e) = self.on_storage(ev) { failed = Some(e); break },
                            Err(_) => break,
                        }
                    }
                    if let Some(e) = failed {
                        break Err(e);
                    }
                }
                Some(peer) = unreachable.recv() => self.core.report_unreachable(peer),
                Some(req) = serve.recv() => self.serve_snapshot(req),
                Some(msg) = inbox.recv() => {
                    self.core.step(msg);
                    for _ in 0..MAX_BATCH {
                        match inbox.try_recv() {
                            Ok(m) => self.core.step(m),
                            Err(_) => break,
                        }
                    }
                }
                Some(req) = requests.recv() => {
                    self.on_request(req);
                    for _ in 0..MAX_BATCH {
                        match requests.try_recv() {
                            Ok(r) => self.on_request(r),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.drain_ready();
        };
        self.stop(result).await
    }

    fn on_storage(&mut self, ev: StorageEvent) -> Result<(), NodeError> {
        match ev {
            StorageEvent::Persisted(id) => self.core.on_persisted(id),
            StorageEvent::Applied {
                last_index,
                results,
            } => {
                self.core.on_applied(last_index);
                self.applied = self.applied.max(last_index);
                // Applying moves the compaction point into reach (images taken earlier).
                self.maybe_compact();
                for (key, result) in results {
                    for waiter in self.writes.remove(&key).unwrap_or_default() {
                        let _ = waiter.reply.send(Ok(result.clone()));
                    }
                }
            }
            StorageEvent::Failed(why) => {
                tracing::error!(id = self.cfg.id, %why, "storage failed; stopping the node");
                return Err(NodeError::Storage(why));
            }
            StorageEvent::SnapshotBuilt(meta) => {
                if let Some(observer) = &self.cfg.observer {
                    observer.snapshot_taken(self.cfg.id, meta);
                }
                self.snapshots.taken += 1;
                self.snapshots.newest_image = self.snapshots.newest_image.max(meta.index);
                self.snapshots.uncompacted.push(meta.index);
                if self.snapshots.uncompacted.len() > MAX_UNCOMPACTED_IMAGES {
                    self.snapshots.uncompacted.remove(0);
                }
                self.maybe_compact();
            }
            StorageEvent::SnapshotStaged { job, snapshot } => {
                if self.snapshots.fetch.as_ref().is_some_and(|f| f.job == job) {
                    self.snapshots.fetch = None;
                    self.snapshots.staged = Some(snapshot);
                    self.core.on_snapshot_fetched(snapshot);
                }
            }
            StorageEvent::SnapshotFetchFailed { job, why } => {
                if let Some(f) = self.snapshots.fetch.as_mut().filter(|f| f.job == job) {
                    tracing::warn!(id = self.cfg.id, from = f.asked.from, %why, "fetching a snapshot failed; fetching again when asked");
                    f.failed = true;
                }
            }
            StorageEvent::SnapshotInstalled(meta) => {
                self.snapshots.installed += 1;
                self.snapshots.newest_image = meta.index;
            }
            StorageEvent::SnapshotSent { to, ok } => self.core.report_snapshot(to, ok),
        }
        Ok(())
    }

    /// Compacts the log up to the newest image taken that the applied index has passed by
    /// the policy's tail. Only images are compaction points: a follower that needs the
    /// compacted entries gets the newest image, which is at or after the log start.
    fn maybe_compact(&mut self) {
        let applied = self.core.applied_index();
        let tail = self.snapshots.policy.tail;
        let Some(&up_to) = self
            .snapshots
            .uncompacted
            .iter()
            .rev()
            .find(|&&i| i.saturating_add(tail) <= applied)
        else {
            return;
        };
        self.snapshots.uncompacted.retain(|&i| i > up_to);
        match self.core.compact(up_to) {
            Ok(()) => {
                tracing::debug!(id = self.cfg.id, up_to, "compacting the log");
                let _ = self.log_writes.send(LogRequest::Compact(up_to));
            }
            // Already past it: a snapshot from the leader was installed meanwhile.
            Err(e) => tracing::debug!(id = self.cfg.id, error = %e, "not compacting"),
        }
    }

    /// A peer asks for our snapshot image: a reader streams it to the peer's connection.
    fn serve_snapshot(&mut self, req: ServeRequest) {
        let Ok(permit) = self.snapshots.serving.clone().try_acquire_owned() else {
            let _ = req.chunks.try_send(Err(
                "serving too many snapshots at once; ask again later".into()
            ));
            return;
        };
        tracing::info!(
            id = self.cfg.id,
            to = req.request.from,
            at_least = req.request.at_least.index,
            "serving a snapshot"
        );
        match storage::spawn_snapshot_reader(
            &self.cfg.storage,
            self.cfg.data_dir.clone(),
            req.request.at_least,
            req.chunks.clone(),
            permit,
        ) {
            // Detached: it ends with the transfer.
            Ok(_reader) => {}
            Err(e) => {
                let _ = req
                    .chunks
                    .try_send(Err(format!("cannot start a snapshot reader: {e}")));
            }
        }
    }

    /// The core asks for the data of a leader's snapshot. A fetch of the same snapshot from the
    /// same node carries on; a failed one, or one of another snapshot, is replaced.
    fn start_fetch(&mut self, asked: SnapshotToFetch) {
        if let Some(f) = &self.snapshots.fetch {
            if f.asked == asked && !f.failed {
                return;
            }
        }
        if let Some(old) = self.snapshots.fetch.take() {
            old.task.abort();
            let _ = self.apply.send(ApplyRequest::EndReceive {
                job: old.job,
                outcome: Err("superseded".into()),
            });
        }
        let Some(addr) = self.cfg.peers.get(&asked.from).cloned() else {
            return;
        };
        let job = self.snapshots.next_job;
        self.snapshots.next_job += 1;
        tracing::info!(
            id = self.cfg.id,
            from = asked.from,
            index = asked.snapshot.index,
            "fetching a snapshot"
        );
        let _ = self.apply.send(ApplyRequest::BeginReceive {
            job,
            at_least: asked.snapshot,
        });
        let task = (self.snapshots.fetcher)(FetchJob {
            job,
            from: asked.from,
            addr,
            request: FetchRequest {
                from: self.cfg.id,
                at_least: asked.snapshot,
            },
        });
        self.snapshots.fetch = Some(Fetch {
            job,
            asked,
            task,
            failed: false,
        });
    }

    /// The core asks to install the fetched snapshot, before this `Ready`'s write: the apply
    /// worker replaces the state machine, then the log worker the log (queued before the
    /// writes that follow), then the apply worker finishes the install.
    fn install_snapshot(&mut self, write: SnapshotWrite) {
        let snapshot = write.snapshot;
        self.snapshots.staged = None;
        if let Some(observer) = &self.cfg.observer {
            observer.snapshot_installed(self.cfg.id, snapshot);
        }
        let (state_tx, state_rx) = oneshot::channel();
        let (log_tx, log_rx) = oneshot::channel();
        let _ = self.apply.send(ApplyRequest::Install {
            snapshot,
            state_installed: state_tx,
            log_installed: log_rx,
        });
        let _ = self.log_writes.send(LogRequest::InstallSnapshot {
            id: write.id,
            snapshot,
            state_installed: state_rx,
            log_installed: log_tx,
        });
        self.snapshots.uncompacted.retain(|&i| i > snapshot.index);
        if snapshot.index > self.handed_to_apply {
            self.handed_to_apply = snapshot.index;
            self.release_reads_up_to(snapshot.index);
        }
    }

    /// Hands the confirmed reads waiting for entries up to `index` to the apply worker, which
    /// has been handed those entries.
    fn release_reads_up_to(&mut self, index: Index) {
        let still_waiting = self.reads_waiting_for_apply.split_off(&(index + 1));
        for (_, reads) in std::mem::replace(&mut self.reads_waiting_for_apply, still_waiting) {
            for read in reads {
                let _ = self.apply.send(ApplyRequest::Read {
                    op: read.op,
                    reply: read.reply,
                });
            }
        }
    }

    fn on_request(&mut self, req: ClientRequest) {
        let deadline = Instant::now() + self.cfg.request_timeout;
        self.submit(req, deadline);
    }

    /// Whether a request refused now may succeed once an election ends.
    fn worth_waiting_for_leader(&self, e: &ProposeError) -> bool {
        matches!(e, ProposeError::NotLeader { leader_hint: None })
            && self.waiting_for_leader.len() < MAX_PARKED
    }

    fn submit(&mut self, req: ClientRequest, deadline: Instant) {
        match req {
            ClientRequest::Write { cmd, reply } => {
                let key = (cmd.client_id, cmd.seq);
                match self.core.propose(cmd.encode()) {
                    Ok(_) => self
                        .writes
                        .entry(key)
                        .or_default()
                        .push(WriteWaiter { reply, deadline }),
                    Err(e) if self.worth_waiting_for_leader(&e) => {
                        self.waiting_for_leader.push(ParkedRequest {
                            req: ClientRequest::Write { cmd, reply },
                            deadline,
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::TryAgain(e.to_string())));
                    }
                }
            }
            ClientRequest::Read { op, reply } if self.cfg.serve_reads_locally() => {
                let _ = self.apply.send(ApplyRequest::Read { op, reply });
            }
            ClientRequest::Read { op, reply } => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                match self.core.read_index(storage::read_ctx(id)) {
                    Ok(()) => {
                        self.reads.insert(
                            id,
                            PendingRead {
                                op,
                                reply,
                                deadline,
                            },
                        );
                    }
                    Err(e) if self.worth_waiting_for_leader(&e) => {
                        self.waiting_for_leader.push(ParkedRequest {
                            req: ClientRequest::Read { op, reply },
                            deadline,
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::TryAgain(e.to_string())));
                    }
                }
            }
            ClientRequest::Info { reply } => {
                let _ = reply.send(self.info());
            }
        }
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.cfg.id,
            role: self.core.role(),
            term: self.core.term(),
            leader: self.core.leader(),
            commit_index: self.core.commit_index(),
            applied_index: self.applied,
            last_index: self.core.last_index(),
            last_snapshot_index: self.snapshots.newest_image,
            log_start_index: self.core.snapshot().index,
            snapshot_count: self.snapshots.taken,
            snapshots_installed: self.snapshots.installed,
            leader_client_addr: self
                .core
                .leader()
                .and_then(|l| self.cfg.client_addrs.get(&l).cloned()),
        }
    }

    fn drain_ready(&mut self) {
        while self.core.has_ready() {
            let ready = self.core.take_ready();
            if let Some(soft) = ready.soft_state {
                tracing::info!(id = self.cfg.id, term = soft.term, role = ?soft.role, leader = ?soft.leader, "role change");
                if let Some(observer) = &self.cfg.observer {
                    observer.role_changed(self.cfg.id, soft.term, soft.role, soft.leader);
                }
                if soft.term != self.term_seen {
                    // Reads in flight under the old term can no longer be confirmed; they are
                    // side-effect free, so the client may retry them at once.
                    self.term_seen = soft.term;
                    for (_, read) in std::mem::take(&mut self.reads) {
                        let _ = read
                            .reply
                            .send(Err(RequestError::TryAgain("leadership changed".into())));
                    }
                }
                if soft.leader.is_some() {
                    for parked in std::mem::take(&mut self.waiting_for_leader) {
                        self.submit(parked.req, parked.deadline);
                    }
                }
            }
            if let Some(asked) = ready.snapshot_to_fetch {
                self.start_fetch(asked);
            }
            if let Some(write) = ready.snapshot_write {
                self.install_snapshot(write);
            }
            if let Some(write) = ready.persist {
                let _ = self.log_writes.send(LogRequest::Persist(write));
            }
            for msg in ready.messages {
                if let Some(queue) = self.outbound.get(&msg.to) {
                    let to = msg.to;
                    if queue.try_send(msg).is_err() {
                        // A slow or dead peer never blocks the node: drop, and stop streaming to it.
                        self.core.report_unreachable(to);
                    }
                }
            }
            if let Some(last) = ready.committed.last().map(|e| e.index) {
                if let Some(observer) = &self.cfg.observer {
                    observer.committed(self.cfg.id, &ready.committed);
                }
                let _ = self.apply.send(ApplyRequest::Entries(ready.committed));
                self.handed_to_apply = last;
                self.release_reads_up_to(last);
            }
            for rs in ready.read_states {
                let Some(id) = read_id(&rs.ctx) else { continue };
                let Some(read) = self.reads.remove(&id) else {
                    continue;
                };
                if rs.index <= self.handed_to_apply {
                    let _ = self.apply.send(ApplyRequest::Read {
                        op: read.op,
                        reply: read.reply,
                    });
                } else {
                    self.reads_waiting_for_apply
                        .entry(rs.index)
                        .or_default()
                        .push(read);
                }
            }
        }
        if self.snapshots.staged.take().is_some() {
            // The core was told of it and did not ask to install it (caught up meanwhile).
            let _ = self.apply.send(ApplyRequest::DiscardStaged);
        }
    }

    fn expire(&mut self, now: Instant) {
        for parked in self
            .waiting_for_leader
            .extract_if(.., |p| p.deadline <= now)
        {
            parked
                .req
                .refuse("no leader was elected within the request timeout");
        }
        for waiters in self.writes.values_mut() {
            for w in waiters.extract_if(.., |w| w.deadline <= now) {
                let _ = w.reply.send(Err(RequestError::Timeout(
                    "no outcome within the request timeout".into(),
                )));
            }
        }
        self.writes.retain(|_, w| !w.is_empty());
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(r) = self.reads.remove(&id) {
                let _ = r.reply.send(Err(RequestError::TryAgain(
                    "the read could not be confirmed in time".into(),
                )));
            }
        }
    }

    async fn stop(self, result: Result<(), NodeError>) -> Result<(), NodeError> {
        for (_, waiters) in self.writes {
            for w in waiters {
                let _ = w.reply.send(Err(RequestError::Timeout(
                    "the node is shutting down".into(),
                )));
            }
        }
        for (_, r) in self.reads {
            let _ = r.reply.send(Err(RequestError::TryAgain(
                "the node is shutting down".into(),
            )));
        }
        for parked in self.waiting_for_leader {
            parked.req.refuse("the node is shutting down");
        }
        for r in self.reads_waiting_for_apply.into_values().flatten() {
            let _ = r.reply.send(Err(RequestError::TryAgain(
                "the node is shutting down".into(),
            )));
        }
        // The fetcher holds a sender of the apply queue: drop it, or the apply worker waits on.
        let Snapshots { fetch, fetcher, .. } = self.snapshots;
        if let Some(f) = fetch {
            f.task.abort();
        }
        drop(fetcher);
        // Closing the queues lets the storage threads finish what is queued, flush and exit.
        drop(self.log_writes);
        drop(self.apply);
        drop(self.outbound);
        for worker in self.workers {
            worker.join().await;
        }
        tracing::info!(id = self.cfg.id, "node stopped");
        result
    }
}

fn read_id(ctx: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(ctx.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_differ_with_the_member_list() {
        let a: BTreeMap<u64, String> = [(1, "h:1".into()), (2, "h:2".into())].into();
        let mut b = a.clone();
        b.insert(3, "h:3".into());
        assert_eq!(cluster_id_of(&a), cluster_id_of(&a.clone()));
        assert_ne!(cluster_id_of(&a), cluster_id_of(&b));
    }
}
