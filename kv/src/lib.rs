//! Durable storage for the replicated key-value store.
//!
//! * [`command`]: the client commands carried in Raft entries, and their results.
//! * [`KvStateMachine`] (`<data-dir>/kv_data`): applies committed entries, exactly once per
//!   client request.
//! * [`RaftStorage`] (`<data-dir>/raft_logs`): hard state, log start and the log itself.
//! * [`members`]: the configuration the state machine applied, with every member's addresses.
//! * [`identity`]: which node (and incarnation) of which cluster a data directory belongs to,
//!   and the incarnation of each peer it has heard from ([`PeerPins`]).
//! * [`snapshot`]: images of the state machine, streamed in chunks and installed atomically.
//! * [`NodeStorage`]: all of the above for one data directory, with the checks that relate them.
//! * [`env`](mod@env): LevelDB environments that make a synced write durable ([`SyncDiskEnv`]) or simulate
//!   losing unsynced bytes on a power cut ([`PowerCutEnv`]).
//!
//! Both databases are rusty-leveldb 4.0.2; `ldb` holds the workarounds for its pitfalls. A
//! rusty-leveldb handle holds `Rc`s, so [`RaftStorage`] and [`KvStateMachine`] are neither `Send`
//! nor `Sync`: create each on the thread that owns it (in production a storage thread fed by a
//! channel, in the simulator inline).

pub mod backup;
mod codec;
pub mod command;
mod command_ops;
mod deferred_delete;
pub mod env;
mod error;
pub mod fuzzing;
pub mod glob;
pub mod identity;
mod ldb;
pub mod members;
pub mod node;
pub mod query;
pub mod raft_storage;
pub mod ranges;
pub mod redis_int;
pub mod snapshot;
pub mod state_machine;
mod table_check;

pub use command::{Command, CommandResult, Deadline, ExpireCondition, Op, SetCondition};
pub use env::{PowerCutEnv, SyncDiskEnv, SyncStats};
pub use error::{DecodeError, Error, Result};
pub use identity::{bootstrap_cluster_id, ClusterIdText, Identity, PeerPins, PinCheck};
pub use ldb::{StorageEnv, MAX_CATCH_UP_PER_WRITE};
pub use members::{MemberAddrs, MemberContext, MemberTable};
pub use node::{restart_state_from, NodeStorage};
pub use query::{Query, TtlForm};
pub use raft_storage::RaftStorage;
pub use snapshot::{SnapshotReader, SnapshotReceiver, StagedSnapshot};
pub use state_machine::{
    KvStateMachine, RangeImage, DEFAULT_MAX_SESSIONS, RANGE_INITIAL_INDEX, RANGE_INITIAL_TERM,
    RANGE_INSTALL_BATCH_ROWS, SESSIONLESS_CLIENT,
};
