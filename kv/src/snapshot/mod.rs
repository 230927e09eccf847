//! State-machine snapshots: building an image of `kv_data`, streaming it as bounded chunks,
//! receiving it beside the live database, and installing it atomically (DESIGN.md §4, the
//! snapshot contract in ARCHITECTURE.md).
//!
//! **Building: in steps between applies, into a file.** rusty-leveldb's garbage-collection
//! workaround (`ldb`) is sound only if no iterator or snapshot outlives a call into `Ldb`, so a
//! LevelDB snapshot cannot be kept pinned while an image is written (or streamed over the
//! network for seconds or minutes). Instead, [`KvStateMachine::start_snapshot`] fixes the
//! image's index (the applied index, made durable) and [`KvStateMachine::snapshot_step`] scans
//! the key space a few thousand keys at a time, each step with a fresh iterator from where the
//! last one stopped. Between steps the owner goes on applying; `apply` keeps the value, at the
//! image's index, of every key the scan has not reached yet, the first time it overwrites or
//! deletes it (one point read per such key), and the steps write those kept values instead of
//! the stored ones. The image is therefore exactly the state at its index, while applies and
//! reads wait for one step at most, never for a whole scan (a fuzzy checkpoint with
//! before-images). [`KvStateMachine::build_snapshot`] does all steps in one call. The image
//! goes to `<data-dir>/kv_snapshot` (written as `kv_snapshot.tmp`, synced, renamed); streaming
//! then reads the file with no hold on the database, and any number of readers may stream it
//! at once.
//!
//! The log may be compacted up to the [`SnapshotMeta`] a finished image returns (never further:
//! a follower that needs the compacted entries is served the newest image, which must cover
//! them). The image is durable (a restarted leader serves it again) and stays until the next
//! build or install replaces it.
//!
//! **Format.** The image is a sequence of chunks; each chunk is one frame
//! `version: u8 | kind: u8 | seq: u64 | body_len: u32 | body | crc32(everything before): u32`
//! (little-endian), numbered from 0:
//! * chunk 0, header: `applied_index: u64 | applied_term: u64 | cluster_id: u64` (0: not given);
//! * records: `count: u32 | count × (key: len u32 + bytes | value: len u32 + bytes)`, the raw
//!   `kv_data` key space in key order: user data, the client-session table and the applied
//!   index/term, so exactly-once survives the transfer;
//! * the last chunk, trailer: `chunks before it: u64 | records: u64 | crc32 over every chunk
//!   before it, each without its own CRC: u32` (with them, CRC's linearity would let a chunk
//!   altered and resealed go unnoticed; a test shows it).
//!
//! A records chunk holds whole records and at most `chunk_bytes` bytes, unless one record alone
//! is larger (keys and values are bounded by the command limits, so never more than
//! [`MAX_CHUNK_LEN`]).
//!
//! **Receiving.** [`SnapshotReceiver`] takes the chunks in order and checks each one before
//! using it: its own checksum and declared length (against [`MAX_CHUNK_LEN`] before
//! allocating), its number, the header against the snapshot the core asked for, key order,
//! that every key is user data or well-formed metadata (sessions must decode, the applied
//! record must match the header), and at the end the trailer's counts and whole-stream
//! checksum. It writes the records into a new LevelDB `<data-dir>/kv_data.incoming` (and the
//! raw chunks into `<data-dir>/kv_snapshot.incoming`, so that this node can serve the same
//! image later), one chunk in memory at a time. Any error poisons the receiver; the live
//! `kv_data` is never touched, and the leftovers are removed by the next receiver or open.
//!
//! **Installing, crash-safe.** [`SnapshotReceiver::finish`] syncs the new database and returns a
//! [`StagedSnapshot`]. [`KvStateMachine::install`] then:
//! 1. writes the marker `<data-dir>/KV_INSTALL` naming the snapshot (temporary file, synced,
//!    renamed, directory synced): **the commit point**;
//! 2. renames `kv_data` to `kv_data.old` and `kv_data.incoming` to `kv_data`, and the incoming
//!    image over `kv_snapshot` (each rename fsyncs the data directory);
//! 3. reopens `kv_data`. The state machine is now the snapshot, with
//!    [`KvStateMachine::pending_install`] set: the caller must install the log part
//!    (`RaftStorage::install_snapshot`) and then call [`KvStateMachine::finish_install`], which
//!    removes the marker and `kv_data.old`. `NodeStorage::install_snapshot` does all of it.
//!
//! On open ([`recover`]): with no marker, an unfinished receive or a finished install's
//! leftovers are removed (the old state stays); with a marker, step 2 is completed (every step
//! is checked by what exists, so repeating it is harmless) and the install stays pending, so//!
//! **Where each part lives.** [`format`]: the chunk frame and its decoder. `build`: writing an
//! image in steps ([`KvStateMachine::start_snapshot`]). `read`: streaming it ([`SnapshotReader`]).
//! `receive`: taking one in ([`SnapshotReceiver`], [`StagedSnapshot`]). `install`: the crash-safe
//! swap and its recovery on open.

use std::path::Path;

use crate::command::{MAX_COMMAND_LEN, MAX_KEY_LEN};
use crate::error::Error;
#[cfg(doc)]
use crate::state_machine::KvStateMachine;

mod build;
pub mod format;
mod install;
mod read;
mod receive;

pub(crate) use build::ImageInProgress;
pub use build::DEFAULT_SNAPSHOT_STEP;
pub use format::{decode_chunk, ChunkBody, DecodedChunk, SnapshotHeader};
pub use install::InstallStep;
pub(crate) use install::{finish, recover};
pub use read::SnapshotReader;
pub use receive::{SnapshotReceiver, StagedSnapshot};

/// The chunk format version.
pub const SNAPSHOT_VERSION: u8 = 1;
/// Default target size of a chunk.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;
/// Largest stored key: a user key plus its prefix byte (metadata keys are shorter).
pub const MAX_RECORD_KEY: usize = MAX_KEY_LEN + 1;
/// Largest stored value: a session row with the largest cached result, and some framing.
pub const MAX_RECORD_VALUE: usize = MAX_COMMAND_LEN + 64;
/// Hard bound on one chunk, checked before anything is allocated for it.
pub const MAX_CHUNK_LEN: usize = FRAME_OVERHEAD + 4 + 8 + MAX_RECORD_KEY + MAX_RECORD_VALUE;

/// The image this node serves to followers.
pub const IMAGE_FILE: &str = "kv_snapshot";
const IMAGE_TMP: &str = "kv_snapshot.tmp";
/// Where a snapshot being received is written.
pub const INCOMING_DIR: &str = "kv_data.incoming";
const INCOMING_IMAGE: &str = "kv_snapshot.incoming";
const OLD_DIR: &str = "kv_data.old";
/// Present from the commit point of an install until its log part is done.
pub const INSTALL_MARKER: &str = "KV_INSTALL";
const MARKER_TMP: &str = "KV_INSTALL.tmp";

pub(crate) const FRAME_HEAD: usize = 1 + 1 + 8 + 4;
const FRAME_OVERHEAD: usize = FRAME_HEAD + 4;
pub(crate) const KIND_HEADER: u8 = 1;
pub(crate) const KIND_RECORDS: u8 = 2;
pub(crate) const KIND_TRAILER: u8 = 3;
const HEADER_LEN: usize = 24;
const TRAILER_LEN: usize = 20;
/// Smallest encoded record: two empty length-prefixed strings.
const MIN_RECORD: usize = 8;

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}
