//! What clients ask a node, and what it answers. The client server and `KvClient` translate
//! these to and from the Redis protocol.

use std::fmt;

use bytes::Bytes;
use kv::ranges::{RangeId, RangeTable, FIRST_RANGE};
use kv::{Command, CommandResult};
use raft_core::{Index, Membership, NodeId, Role, SnapshotMeta, Term};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::ServeError;
use crate::node::admin::{AdminReply, AdminRequest};
use crate::snapshot_transfer::{FetchRequest, ServeRequest, SEND_WINDOW};

/// Who an image is served to when it is for a backup, not a follower (0 is no node's id).
pub const BACKUP_READER: NodeId = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOp {
    Get(Bytes),
    Exists(Vec<Bytes>),
    /// Any other read ([`kv::Query`]).
    Query(kv::Query),
    /// A query over the whole range (SCAN, KEYS, DBSIZE), asked by a client port whose range
    /// table has the range at `epoch`. A range that split since would answer for its left half
    /// only, which the client port would take for the whole of it, missing the keys that
    /// moved: it answers `NotOwned` instead ([`ReadOp::for_range_at`]), and the port routes
    /// again once its table has the split. Checked when the read is served, against the state
    /// the read sees, since the table is published after the split applies.
    WholeRange {
        query: kv::Query,
        epoch: u64,
    },
    /// Where the range would split by size: its middle key, answered as a
    /// [`ReadResult::Value`] (none below two keys). For the automatic splits (`auto_split.rs`).
    SplitPoint,
    /// A snapshot image at or after the read point, for a backup: the newest image if it is
    /// recent enough, else a new one (`storage::apply_worker`).
    Image,
}

impl ReadOp {
    /// The read a range with descriptor `range` serves for this one, or `None` for a
    /// [`ReadOp::WholeRange`] asked at another epoch, which is answered [`not_owned`].
    pub fn for_range_at(self, range: &kv::ranges::RangeDescriptor) -> Option<ReadOp> {
        match self {
            ReadOp::WholeRange { epoch, .. } if epoch != range.epoch => None,
            ReadOp::WholeRange { query, .. } => Some(ReadOp::Query(query)),
            other => Some(other),
        }
    }
}

/// The answer to a read a range refuses: the port routes again on it.
pub fn not_owned(range: &kv::ranges::RangeDescriptor) -> ReadResult {
    ReadResult::Answer(kv::CommandResult::NotOwned {
        range: range.id,
        epoch: range.epoch,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    Value(Option<Bytes>),
    Count(i64),
    /// The answer to a [`ReadOp::Query`].
    Answer(kv::CommandResult),
    /// The image that answers a [`ReadOp::Image`]; the node serves it, or a newer one.
    Image(SnapshotMeta),
}

/// Why a request got no result. The two retryable kinds differ in what the client may assume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Certainly not applied (it never entered the log): safe to retry anywhere.
    TryAgain(String),
    /// The outcome is unknown: it may have been applied, or may still be.
    Timeout(String),
    /// The node cannot serve (a storage failure, shutting down).
    Failed(String),
    /// Certainly not applied: this node was removed from the cluster, and another member can
    /// serve the request.
    Removed(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::TryAgain(m) => write!(f, "TRYAGAIN {m}"),
            RequestError::Timeout(m) => write!(f, "TIMEOUT {m}"),
            RequestError::Failed(m) => write!(f, "ERR {m}"),
            RequestError::Removed(m) => write!(f, "REMOVED {m}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// A node's view of itself, for INFO and `kvstore status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The cluster this node's data directory belongs to.
    pub cluster_id: u64,
    /// This node's incarnation (its data directory's life).
    pub incarnation: u64,
    /// Peer frames refused since start because they came from another incarnation of a peer
    /// than the one pinned (a node whose data directory was lost, started under its old id).
    pub refused_incarnation_frames: u64,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: Index,
    pub applied_index: Index,
    pub last_index: Index,
    /// The newest snapshot image this node holds (taken or installed); 0: none.
    pub last_snapshot_index: Index,
    /// The log starts after this index (it was compacted up to here).
    pub log_start_index: Index,
    /// Snapshots this node has taken since it started.
    pub snapshot_count: u64,
    /// Snapshots this node has installed from a leader since it started.
    pub snapshots_installed: u64,
    /// Keys in the state machine at the applied index, and how many have a deadline.
    pub keys: u64,
    pub expires: u64,
    /// Where the leader takes client requests, if a leader is known and its address configured.
    pub leader_client_addr: Option<String>,
    /// The configuration in force on this node (the last one its log holds).
    pub membership: Membership,
    pub read_mode: ReadModeInfo,
}

/// How the node's leader confirms reads, as INFO shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadModeInfo {
    /// `read-index` or `lease`.
    pub name: &'static str,
    /// The drift bound of a lease, as given; empty for ReadIndex.
    pub max_clock_drift: String,
}

impl ReadModeInfo {
    pub fn of(mode: raft_core::ReadMode) -> Self {
        match mode {
            raft_core::ReadMode::Lease { max_clock_drift } => Self {
                name: "lease",
                max_clock_drift: max_clock_drift.to_string(),
            },
            _ => Self {
                name: "read-index",
                max_clock_drift: String::new(),
            },
        }
    }
}

pub enum ClientRequest {
    Write {
        cmd: Command,
        reply: oneshot::Sender<Result<CommandResult, RequestError>>,
    },
    Read {
        op: ReadOp,
        reply: oneshot::Sender<Result<ReadResult, RequestError>>,
    },
    Info {
        reply: oneshot::Sender<NodeInfo>,
    },
    /// An operator's request: membership, leadership ([`crate::node::admin`]).
    Admin {
        req: AdminRequest,
        reply: oneshot::Sender<Result<AdminReply, RequestError>>,
    },
}

/// A client request and the range whose group is to serve it.
pub struct RoutedRequest {
    pub range: RangeId,
    pub req: ClientRequest,
}

impl ClientRequest {
    /// Answers TRYAGAIN: for a request that never reached the log.
    pub(crate) fn refuse(self, why: &str) {
        let refused = RequestError::TryAgain(why.into());
        match self {
            ClientRequest::Write { reply, .. } => {
                let _ = reply.send(Err(refused));
            }
            ClientRequest::Read { reply, .. } => {
                let _ = reply.send(Err(refused));
            }
            ClientRequest::Admin { reply, .. } => {
                let _ = reply.send(Err(refused));
            }
            ClientRequest::Info { .. } => {}
        }
    }

    /// Answers REMOVED: this node was removed from the cluster (INFO gets no answer here).
    pub(crate) fn refuse_as_removed(self, why: &str) {
        let failed = RequestError::Removed(why.into());
        match self {
            ClientRequest::Write { reply, .. } => {
                let _ = reply.send(Err(failed));
            }
            ClientRequest::Read { reply, .. } => {
                let _ = reply.send(Err(failed));
            }
            // The operator's client goes on to another member, which can answer.
            ClientRequest::Admin { reply, .. } => {
                let _ = reply.send(Err(RequestError::TryAgain(why.into())));
            }
            ClientRequest::Info { .. } => {}
        }
    }
}

/// A cheap, cloneable way to ask the node loop.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) requests: mpsc::Sender<RoutedRequest>,
    /// The ranges this node hosts, as its replicas last applied them (published by the store
    /// after every change): where the client port looks up a key's range.
    pub(crate) ranges: watch::Receiver<Arc<RangeTable>>,
    /// Where the node's snapshot images are asked for (as by a follower's fetch).
    pub(crate) images: mpsc::Sender<ServeRequest>,
    /// The deliberate bug `UnsafeSwitches::split_transactions` (always off in a product).
    pub(crate) split_transactions: bool,
    /// The node's metrics, which the client port counts its commands into.
    pub(crate) metrics: std::sync::Arc<crate::metrics::NodeMetrics>,
}

impl NodeHandle {
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, RequestError> {
        self.write_in(FIRST_RANGE, cmd).await
    }

    /// A write through the log of `range`'s group.
    pub async fn write_in(
        &self,
        range: RangeId,
        cmd: Command,
    ) -> Result<CommandResult, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.send_to(range, ClientRequest::Write { cmd, reply })
            .await?;
        rx.await.unwrap_or_else(|_| {
            Err(RequestError::Timeout(
                "the node stopped before answering".into(),
            ))
        })
    }

    pub async fn read(&self, op: ReadOp) -> Result<ReadResult, RequestError> {
        self.read_in(FIRST_RANGE, op).await
    }

    /// A read at a read index of `range`'s group.
    pub async fn read_in(&self, range: RangeId, op: ReadOp) -> Result<ReadResult, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.send_to(range, ClientRequest::Read { op, reply })
            .await?;
        rx.await.unwrap_or_else(|_| {
            Err(RequestError::TryAgain(
                "the node stopped before answering".into(),
            ))
        })
    }

    pub async fn info(&self) -> Result<NodeInfo, RequestError> {
        self.info_of(FIRST_RANGE).await
    }

    /// The view of this node's replica of `range` (its leader, term, keys, ...).
    pub async fn info_of(&self, range: RangeId) -> Result<NodeInfo, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.send_to(range, ClientRequest::Info { reply }).await?;
        rx.await
            .map_err(|_| RequestError::Failed("the node stopped".into()))
    }

    /// An operator's request; a change is answered once applied (see [`crate::node::admin`]).
    pub async fn admin(&self, req: AdminRequest) -> Result<AdminReply, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.send(ClientRequest::Admin { req, reply }).await?;
        rx.await.unwrap_or_else(|_| {
            Err(RequestError::Timeout(
                "the node stopped before answering".into(),
            ))
        })
    }

    /// Streams the node's newest image, at or after `at_least` (from [`ReadOp::Image`]), in
    /// chunks; at most a few chunks are read ahead of the receiver.
    pub async fn image_chunks(
        &self,
        at_least: SnapshotMeta,
    ) -> Result<mpsc::Receiver<Result<Bytes, ServeError>>, RequestError> {
        let (chunks, rx) = mpsc::channel(SEND_WINDOW);
        let request = ServeRequest {
            request: FetchRequest {
                from: BACKUP_READER,
                // A node's image is its first range's until the store holds many groups.
                range: kv::ranges::FIRST_RANGE,
                at_least,
            },
            chunks,
        };
        self.images
            .send(request)
            .await
            .map_err(|_| RequestError::TryAgain("the node is shutting down".into()))?;
        Ok(rx)
    }

    /// The ranges this node hosts, as last applied here.
    pub fn ranges(&self) -> Arc<RangeTable> {
        self.ranges.borrow().clone()
    }

    /// Whether this node hosts the first range alone, owning every key (a cluster that never
    /// split): the client port then routes nothing.
    pub fn hosts_one_range(&self) -> bool {
        let table = self.ranges.borrow();
        table.len() == 1
            && table
                .get(FIRST_RANGE)
                .is_some_and(|r| r.start.is_empty() && r.end.is_none())
    }

    /// Waits until the hosted ranges change after `seen` (or `patience` passes), and returns
    /// the table then: after a refusal for a range that moved, the split that moved it is
    /// usually about to apply here.
    pub async fn ranges_after(&self, seen: &RangeTable, patience: Duration) -> Arc<RangeTable> {
        let mut ranges = self.ranges.clone();
        let _ = tokio::time::timeout(patience, ranges.wait_for(|now| now.as_ref() != seen)).await;
        let now = ranges.borrow().clone();
        now
    }

    /// Waits until this node's table has `range` at `epoch` or later, or no longer has it (or
    /// `patience` passes): a range's leader refused a request at `epoch`, a split this node
    /// has committed but not applied yet.
    pub async fn ranges_at_epoch(&self, range: RangeId, epoch: u64, patience: Duration) {
        let mut ranges = self.ranges.clone();
        let caught_up = |t: &Arc<RangeTable>| t.get(range).is_none_or(|d| d.epoch >= epoch);
        let _ = tokio::time::timeout(patience, ranges.wait_for(caught_up)).await;
    }

    async fn send(&self, req: ClientRequest) -> Result<(), RequestError> {
        self.send_to(FIRST_RANGE, req).await
    }

    /// [`NodeHandle::send_to`] for tests that address a range directly (`net/tests/splits.rs`).
    #[doc(hidden)]
    pub async fn request_to(&self, range: RangeId, req: ClientRequest) -> Result<(), RequestError> {
        self.send_to(range, req).await
    }

    /// Queues `req` for the group of `range` (refused there if this node does not host it).
    pub(crate) async fn send_to(
        &self,
        range: RangeId,
        req: ClientRequest,
    ) -> Result<(), RequestError> {
        self.requests
            .send(RoutedRequest { range, req })
            .await
            .map_err(|_| RequestError::TryAgain("the node is shutting down".into()))
    }
}
