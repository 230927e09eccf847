//! A pure, IO-free Raft state machine.

#[cfg(any(test, feature = "test-support"))]
pub mod bugs;
mod config;
mod error;
mod message;
mod ready;
mod types;

pub use config::Config;
pub use error::{ConfigError, ProposeError};
pub use message::{Message, MessageBody};
pub use ready::{Persist, ReadState, Ready, SoftState, WriteId};
pub use types::{
    Entry, EntryKind, HardState, Index, NodeId, RestartState, Role, SnapshotMeta, Term,
    ENTRY_OVERHEAD_BYTES,
};
