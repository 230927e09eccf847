//! A node's metrics: counters, gauges and histograms kept in atomics, one set per node (a
//! `kvstore cluster` process runs several nodes, the simulator many), and written out in the
//! Prometheus text format by `prometheus-client` when scraped ([`encode`]).
//!
//! The hot paths (every client command, log write, message) touch only atomics through fields
//! resolved when the node starts: no lock, no allocation, no label built per event. What the
//! node loop knows (role, indexes, health) it publishes into [`NodeStatus`] once per loop turn;
//! what is cheap to read when scraped (sizes on disk) is read then.

mod encode;
pub mod health;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use raft_core::{Message, MessageBody, NodeId, Role};

pub use encode::encode;
pub use health::{Health, HealthView};

use crate::command_table::COMMANDS;

/// A counter that only goes up.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn inc(&self) {
        self.inc_by(1);
    }
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that is set.
#[derive(Debug, Default)]
pub struct Level(AtomicI64);

impl Level {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in seconds: 50 µs to about 13 s, doubling.
pub const LATENCY_BUCKETS: [f64; 19] = {
    let mut b = [0.0; 19];
    let mut i = 0;
    let mut bound = 0.000_05;
    while i < b.len() {
        b[i] = bound;
        bound *= 2.0;
        i += 1;
    }
    b
};

/// Upper bounds of the batch-size buckets (entries per write): 1 to 4096, doubling.
pub const BATCH_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// A histogram in atomics: a count per bucket (the last one unbounded) and a sum in the
/// recorded unit (nanoseconds for durations, which the text shows as seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// What one unit of `sum` is in the exported unit.
    sum_scale: f64,
}

impl Histogram {
    pub fn latency() -> Self {
        Self::new(&LATENCY_BUCKETS, 1e-9)
    }

    pub fn batch_size() -> Self {
        Self::new(&BATCH_BUCKETS, 1.0)
    }

    fn new(bounds: &'static [f64], sum_scale: f64) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            sum_scale,
        }
    }

    pub fn observe_duration(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.record(d.as_secs_f64(), nanos);
    }

    pub fn observe_count(&self, n: u64) {
        self.record(n as f64, n);
    }

    fn record(&self, value: f64, sum_units: u64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&upper| value <= upper)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(sum_units, Ordering::Relaxed);
    }

    /// Sum, count and the count per bucket (not cumulative; the last bound is `f64::MAX`).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum.load(Ordering::Relaxed) as f64 * self.sum_scale;
        (sum, count, buckets)
    }
}

/// How a client command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The command was refused or failed (a wrong type, a syntax error, ...).
    Error,
    /// No outcome within the request timeout.
    Timeout,
    /// Not served now: no leader, loading, try again.
    Unavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
        }
    }

    /// The outcome an error reply's text says.
    pub fn of_error(text: &str) -> Outcome {
        let code = text.split(' ').next().unwrap_or("");
        match code {
            "TIMEOUT" => Outcome::Timeout,
            "TRYAGAIN" | "LOADING" | "CLUSTERDOWN" | "MOVED" | "NOQUORUM" => Outcome::Unavailable,
            _ => Outcome::Error,
        }
    }
}

/// Client commands of one name: a count per outcome and a latency histogram.
#[derive(Debug)]
pub struct CommandMetrics {
    pub outcomes: [Count; 4],
    pub latency: Histogram,
}

/// The kinds of peer message, for the per-kind counts.
pub const MESSAGE_KINDS: [&str; 14] = [
    "pre_vote_request",
    "pre_vote_response",
    "vote_request",
    "vote_response",
    "append_request",
    "append_response",
    "heartbeat",
    "heartbeat_response",
    "install_snapshot",
    "timeout_now",
    "propose",
    "read_index_request",
    "read_index_response",
    "other",
];

/// The index of a message's kind in [`MESSAGE_KINDS`].
pub fn message_kind(msg: &Message) -> usize {
    match msg.body {
        MessageBody::PreVoteRequest { .. } => 0,
        MessageBody::PreVoteResponse { .. } => 1,
        MessageBody::VoteRequest { .. } => 2,
        MessageBody::VoteResponse { .. } => 3,
        MessageBody::AppendRequest { .. } => 4,
        MessageBody::AppendResponse { .. } => 5,
        MessageBody::Heartbeat { .. } => 6,
        MessageBody::HeartbeatResponse { .. } => 7,
        MessageBody::InstallSnapshot { .. } => 8,
        MessageBody::TimeoutNow => 9,
        MessageBody::Propose { .. } => 10,
        MessageBody::ReadIndexRequest { .. } => 11,
        MessageBody::ReadIndexResponse { .. } => 12,
        _ => 13,
    }
}

/// Peer messages by kind.
#[derive(Debug, Default)]
pub struct MessageCounts {
    pub sent: [Count; MESSAGE_KINDS.len()],
    pub received: [Count; MESSAGE_KINDS.len()],
    /// Not sent: the peer's queue was full, or no address is known for it.
    pub dropped: [Count; MESSAGE_KINDS.len()],
}

/// What the node loop publishes once per turn: the node's Raft state, read when scraped.
#[derive(Debug, Default)]
pub struct NodeStatus {
    /// 0 follower, 1 pre-candidate, 2 candidate, 3 leader.
    pub role: Level,
    pub term: Level,
    /// 0: none known.
    pub leader: Level,
    pub commit_index: Level,
    pub applied_index: Level,
    pub last_index: Level,
    pub persisted_index: Level,
    pub log_start_index: Level,
    /// The node serves clients (its storage is loaded and its loop runs).
    pub ready: Level,
    /// Per peer, on the leader: match index, lag behind the leader's last index, and whether
    /// heard from lately (every node). Rewritten each tick; small (one row per member).
    pub peers: Mutex<Vec<PeerStatus>>,
    /// The health decision as of the last tick.
    pub health: Mutex<Health>,
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    /// Heard from within an election timeout; `None` for a peer this node does not expect to
    /// hear from (a follower hears only from its leader).
    pub reachable: Option<bool>,
    /// The leader's view of the member's log (`None` unless this node leads).
    pub match_index: Option<u64>,
}

pub fn role_code(role: Role) -> i64 {
    match role {
        Role::Follower => 0,
        Role::PreCandidate => 1,
        Role::Candidate => 2,
        Role::Leader => 3,
        _ => -1,
    }
}

/// Proposal outcomes at the core.
pub const PROPOSAL_OUTCOMES: [&str; 3] = ["accepted", "parked", "refused"];

/// Why an inbound peer connection was refused: its TLS handshake failed, or its certificate
/// does not name the member it claims to be (`transport::Refusal`).
pub const PEER_REFUSALS: [&str; 2] = ["tls_handshake", "certificate_identity"];

/// Every metric of one node.
#[derive(Debug)]
pub struct NodeMetrics {
    pub status: NodeStatus,
    /// By the index of the command in [`COMMANDS`], then one row for names not in it.
    pub commands: Box<[CommandMetrics]>,
    /// By [`PROPOSAL_OUTCOMES`].
    pub proposals: [Count; 3],
    pub fsync_latency: Histogram,
    pub fsync_batch_entries: Histogram,
    pub apply_latency: Histogram,
    pub apply_batch_entries: Histogram,
    pub messages: MessageCounts,
    pub leader_changes: Count,
    pub elections_started: Count,
    pub read_index_rounds: Count,
    pub read_index_latency: Histogram,
    pub snapshots_taken: Count,
    pub snapshot_take_duration: Histogram,
    pub snapshots_installed: Count,
    pub snapshot_install_bytes: Count,
    pub snapshot_install_duration: Histogram,
    pub snapshots_sent: Count,
    pub snapshot_sent_bytes: Count,
    pub snapshot_send_duration: Histogram,
    pub client_connections: Level,
    /// Inbound peer connections refused, by [`PEER_REFUSALS`] (mutual TLS between peers).
    pub peer_connections_refused: [Count; 2],
    /// Raft messages from peers for a range this node does not host, dropped (a node that
    /// missed a split sees the new range's messages before it hosts it).
    pub peer_messages_unhosted_range: Count,
    /// The ranges (Raft groups) this node hosts, and those of them it leads.
    pub ranges_hosted: Level,
    pub ranges_led: Level,
    /// Where the node's databases are, for their sizes on disk.
    pub data_dir: PathBuf,
}

impl NodeMetrics {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            status: NodeStatus::default(),
            commands: (0..=COMMANDS.len())
                .map(|_| CommandMetrics {
                    outcomes: Default::default(),
                    latency: Histogram::latency(),
                })
                .collect(),
            proposals: Default::default(),
            fsync_latency: Histogram::latency(),
            fsync_batch_entries: Histogram::batch_size(),
            apply_latency: Histogram::latency(),
            apply_batch_entries: Histogram::batch_size(),
            messages: MessageCounts::default(),
            leader_changes: Count::default(),
            elections_started: Count::default(),
            read_index_rounds: Count::default(),
            read_index_latency: Histogram::latency(),
            snapshots_taken: Count::default(),
            snapshot_take_duration: Histogram::latency(),
            snapshots_installed: Count::default(),
            snapshot_install_bytes: Count::default(),
            snapshot_install_duration: Histogram::latency(),
            snapshots_sent: Count::default(),
            snapshot_sent_bytes: Count::default(),
            snapshot_send_duration: Histogram::latency(),
            client_connections: Level::default(),
            peer_connections_refused: Default::default(),
            peer_messages_unhosted_range: Count::default(),
            ranges_hosted: Level::default(),
            ranges_led: Level::default(),
            data_dir,
        }
    }

    /// A client command finished. `name` is the command's name in any case; the lookup is a
    /// binary search of the command table, without allocating.
    pub fn client_command(&self, name: &[u8], outcome: Outcome, took: Duration) {
        let row = command_index(name).unwrap_or(COMMANDS.len());
        let metrics = &self.commands[row];
        metrics.outcomes[outcome as usize].inc();
        metrics.latency.observe_duration(took);
    }

    pub fn proposal(&self, outcome: usize) {
        self.proposals[outcome].inc();
    }
}

/// The row of a command in [`COMMANDS`] (which is in name order), its name in any case.
pub fn command_index(name: &[u8]) -> Option<usize> {
    COMMANDS
        .binary_search_by(|spec| {
            spec.name
                .bytes()
                .cmp(name.iter().map(u8::to_ascii_lowercase))
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_in_any_case_and_unknown_ones_are_not() {
        let get = command_index(b"GET").expect("GET is a command");
        assert_eq!(COMMANDS[get].name, "get");
        assert_eq!(command_index(b"get"), Some(get));
        assert_eq!(command_index(b"nosuchcommand"), None);
    }

    #[test]
    fn histograms_bucket_by_upper_bound_and_sum_in_seconds() {
        let h = Histogram::latency();
        h.observe_duration(Duration::from_micros(50));
        h.observe_duration(Duration::from_micros(51));
        h.observe_duration(Duration::from_secs(100));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 100.000_101).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.000_05, 1));
        assert_eq!(buckets[1].1, 1);
        assert_eq!(buckets.last(), Some(&(f64::MAX, 1)));
    }

    #[test]
    fn error_replies_are_classified_by_their_code() {
        assert_eq!(Outcome::of_error("TIMEOUT no outcome"), Outcome::Timeout);
        assert_eq!(
            Outcome::of_error("TRYAGAIN no leader"),
            Outcome::Unavailable
        );
        assert_eq!(Outcome::of_error("ERR syntax error"), Outcome::Error);
    }
}
