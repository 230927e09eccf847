//! A node's configuration, the observer hooks the simulator watches it through, and the test
//! switches (compiled in only with the feature `test-switches`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use raft_core::{Entry, Index, NodeId, Role, SnapshotMeta, Term};

use kv::identity::DEFAULT_CLUSTER_TOKEN;
use kv::ranges::RangeId;

use crate::storage::{SnapshotPolicy, StorageMode};
use crate::transport::TransportTimeouts;

/// Everything one node needs to run.
#[derive(Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The cluster a new data directory is bootstrapped into (derived from the cluster token
    /// and the ids of `peers`). A directory that records one uses that instead, whatever the
    /// command line says now.
    pub cluster_id: u64,
    /// The cluster token given by the operator (`--cluster-token`), if any: it names the
    /// cluster at bootstrap, and a recorded directory refuses another one.
    pub cluster_token: Option<String>,
    /// The incarnation a new data directory records (and a version-1 one, on upgrade). The
    /// command line draws it from OS randomness; the simulator's disks keep no identity, so
    /// there it is the node's incarnation for good.
    pub incarnation: u64,
    /// Peer-port addresses from the command line: every founding member's when bootstrapping a
    /// cluster (`--peers`); at least this node's own, which it listens on. Once the data
    /// directory has a member table, addresses come from there (this fills only gaps).
    pub peers: BTreeMap<NodeId, String>,
    /// Peer addresses of existing members to ask for the cluster id and member table when the
    /// data directory is empty (`--join`): the node was added by a conf change and must not
    /// bootstrap. Ignored once the directory holds data.
    pub join: Vec<String>,
    pub data_dir: PathBuf,
    /// One Raft tick.
    pub tick: Duration,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// ReadIndex (the default) or lease reads (`kvstore serve --read-mode`).
    pub read_mode: raft_core::ReadMode,
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
    /// A range whose leader is this node splits in two once it holds more keys than this
    /// (`--range-max-keys`; 0: ranges split only when asked, `kvstore split`).
    pub range_max_keys: u64,
    /// Told of role changes and committed entries (the simulator's checks and trace).
    pub observer: Option<Arc<dyn NodeObserver>>,
    /// The time a leader stamps into the log (key expiry): Unix milliseconds.
    pub wall_clock: WallClock,
    /// Where the HTTP admin listener (metrics, health) listens; none without one.
    pub admin_addr: Option<String>,
    /// The client port's users when clients must log in (`--requirepass`, `--users-file`).
    pub client_auth: Option<Arc<crate::auth::Authority>>,
    /// Mutual TLS between peers (`--peer-tls-*`); none: plain TCP.
    pub peer_tls: Option<crate::tls::PeerTlsFiles>,
    /// Serve the admin endpoints over HTTPS with the peer certificate.
    pub admin_tls: bool,
    /// The bearer token `/metrics` needs, if any.
    pub admin_token: Option<crate::admin_http::AdminToken>,
    /// This node's metrics (one set per node, also in a process running several).
    pub metrics: Arc<crate::metrics::NodeMetrics>,
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
            .field(
                "cluster_id",
                &format_args!("{}", kv::ClusterIdText(self.cluster_id)),
            )
            .field("cluster_token", &self.cluster_token)
            .field("incarnation", &self.incarnation)
            .field("peers", &self.peers)
            .field("join", &self.join)
            .field("data_dir", &self.data_dir)
            .field("tick", &self.tick)
            .field("election_ticks", &self.election_ticks)
            .field("heartbeat_ticks", &self.heartbeat_ticks)
            .field("read_mode", &self.read_mode)
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
/// Each event names the range whose group it comes from: every group is a Raft log of its own.
pub trait NodeObserver: Send + Sync {
    /// The role, term or leader of the node's group of `range` changed.
    fn role_changed(
        &self,
        node: NodeId,
        range: RangeId,
        term: Term,
        role: Role,
        leader: Option<NodeId>,
    );
    /// These committed entries of `range` go to its state machine now, in log order.
    fn committed(&self, node: NodeId, range: RangeId, entries: &[Entry]);
    /// The range's state machine is being replaced by a snapshot received from another node.
    fn snapshot_installed(&self, _node: NodeId, _range: RangeId, _snapshot: SnapshotMeta) {}
    /// The range's state machine took a snapshot image of everything applied up to
    /// `snapshot.index`.
    fn snapshot_taken(&self, _node: NodeId, _range: RangeId, _snapshot: SnapshotMeta) {}
    /// The range's state machine applied these entries to these results (a digest of each
    /// command's encoded result, by entry index; entries without a command are left out):
    /// every replica must get the same result at the same index.
    fn applied(&self, _node: NodeId, _range: RangeId, _outcomes: &[(Index, u64)]) {}
    /// Whether [`NodeObserver::applied`] is wanted: digests cost a hash per entry.
    fn wants_outcomes(&self) -> bool {
        false
    }
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
    /// Judge expiry on reads by the node's own wall clock instead of the log's time.
    pub expiry_by_local_clock: bool,
    /// Run a transaction's commands as separate log entries instead of one.
    pub split_transactions: bool,
    /// Leaders stamp no time into the log: the log's time stands still and no key expires.
    pub no_clock_stamps: bool,
    /// Ranges apply commands for keys outside their bounds (a range that split away a key
    /// still applies what a stale table routed to it).
    pub ignore_range_ownership: bool,
    /// This node (only) applies a split ahead of the entries its apply batch holds before it:
    /// a replica applying a split out of the log's order.
    pub split_out_of_order_on: Option<NodeId>,
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
    pub(super) fn is_paused(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Where a node reads the time it stamps into the log as leader (`raft_core::clock`): the
/// system clock, or the simulator's (skewed per node).
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl WallClock {
    /// Unix milliseconds from the system clock.
    pub fn system() -> Self {
        WallClock(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        }))
    }

    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        WallClock(Arc::new(f))
    }

    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl NodeConfig {
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: PathBuf) -> Self {
        let cluster_id = kv::bootstrap_cluster_id(DEFAULT_CLUSTER_TOKEN, peers.keys().copied());
        let metrics = Arc::new(crate::metrics::NodeMetrics::new(data_dir.clone()));
        Self {
            id,
            cluster_id,
            cluster_token: None,
            // Fixed per id, so that a simulated run replays; never 0 ("unknown").
            incarnation: id.wrapping_mul(0xD6E8_FEB8_6659_FD93) | 1,
            peers,
            join: Vec::new(),
            data_dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            read_mode: raft_core::ReadMode::ReadIndex,
            request_timeout: Duration::from_secs(5),
            transport: TransportTimeouts::default(),
            seed: id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            client_addrs: BTreeMap::new(),
            storage: StorageMode::Disk,
            snapshots: SnapshotPolicy::default(),
            range_max_keys: 0,
            observer: None,
            wall_clock: WallClock::system(),
            admin_addr: None,
            client_auth: None,
            peer_tls: None,
            admin_tls: false,
            admin_token: None,
            metrics,
            #[cfg(feature = "test-switches")]
            unsafe_switches: UnsafeSwitches::default(),
            #[cfg(feature = "test-switches")]
            pause: PauseSwitch::default(),
        }
    }

    pub(super) fn serve_reads_locally(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.unsafe_switches.local_reads;
        #[cfg(not(feature = "test-switches"))]
        false
    }

    pub(super) fn acknowledge_before_fsync(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.unsafe_switches.ack_before_fsync;
        #[cfg(not(feature = "test-switches"))]
        false
    }

    pub(super) fn install_without_data(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.unsafe_switches.install_without_data;
        #[cfg(not(feature = "test-switches"))]
        false
    }

    pub(super) fn apply_splits_first(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.unsafe_switches.split_out_of_order_on == Some(self.id);
        #[cfg(not(feature = "test-switches"))]
        false
    }

    pub(super) fn ignore_range_ownership(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.unsafe_switches.ignore_range_ownership;
        #[cfg(not(feature = "test-switches"))]
        false
    }

    /// The clock reads judge expiry by, if not the log's (a deliberate bug).
    pub(super) fn local_expiry_clock(&self) -> Option<WallClock> {
        #[cfg(feature = "test-switches")]
        return self
            .unsafe_switches
            .expiry_by_local_clock
            .then(|| self.wall_clock.clone());
        #[cfg(not(feature = "test-switches"))]
        None
    }

    pub(super) fn split_transactions(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.unsafe_switches.split_transactions;
        #[cfg(not(feature = "test-switches"))]
        false
    }
}

impl NodeConfig {
    /// Bootstraps with cluster token `token` (the cluster id follows).
    pub fn with_cluster_token(mut self, token: Option<String>) -> Self {
        let named = token.as_deref().unwrap_or(DEFAULT_CLUSTER_TOKEN);
        self.cluster_id = kv::bootstrap_cluster_id(named, self.peers.keys().copied());
        self.cluster_token = token;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_id_follows_token_and_member_ids_not_addresses() {
        let a: BTreeMap<u64, String> = [(1, "h:1".into()), (2, "h:2".into())].into();
        let moved: BTreeMap<u64, String> =
            [(1, "localhost:1".into()), (2, "other:9".into())].into();
        let mut b = a.clone();
        b.insert(3, "h:3".into());
        let id = |peers: &BTreeMap<u64, String>| {
            NodeConfig::new(1, peers.clone(), "d".into()).cluster_id
        };
        assert_eq!(id(&a), id(&moved));
        assert_ne!(id(&a), id(&b));
        let named = NodeConfig::new(1, a.clone(), "d".into()).with_cluster_token(Some("t".into()));
        assert_ne!(named.cluster_id, id(&a));
        let default = NodeConfig::new(1, a, "d".into()).with_cluster_token(Some("kvstore".into()));
        assert_eq!(default.cluster_id, id(&moved));
    }
}
