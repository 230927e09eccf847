//! A pure, IO-free Raft state machine.

#[cfg(any(test, feature = "test-support"))]
pub mod bugs;
#[cfg(not(any(test, feature = "test-support")))]
mod bugs;
mod config;
mod election;
mod error;
#[cfg(any(test, feature = "test-support"))]
pub mod harness;
mod log;
mod message;
mod node;
mod progress;
mod quorum;
mod read_index;
mod ready;
mod replication;
mod types;

pub use config::Config;
pub use error::{ConfigError, ProposeError};
pub use message::{Message, MessageBody};
pub use node::{Proposed, RawNode};
pub use ready::{Persist, ReadState, Ready, SoftState, WriteId};
pub use types::{
    Entry, EntryKind, HardState, Index, NodeId, RestartState, Role, SnapshotMeta, Term,
    ENTRY_OVERHEAD_BYTES,
};
