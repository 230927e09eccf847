//! A reader of this node's newest snapshot image, for one transfer to a peer.

use std::path::PathBuf;

use bytes::Bytes;
use kv::SnapshotReader;
use raft_core::SnapshotMeta;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{spawn_worker, StorageMode, Worker};
use crate::error::ServeError;

/// Starts a reader of this node's newest snapshot image for one transfer: it sends the
/// image's chunks into `chunks` (waiting while the queue is full: the connection's pace), or
/// why it cannot serve one at or after `at_least`. Runs on a thread of its own (a local task
/// in the simulator), like the other storage workers, and ends when the transfer does.
pub fn spawn_snapshot_reader(
    mode: &StorageMode,
    data_dir: PathBuf,
    at_least: SnapshotMeta,
    chunks: mpsc::Sender<Result<Bytes, ServeError>>,
    permit: OwnedSemaphorePermit,
) -> std::io::Result<Worker> {
    let env = mode.env();
    spawn_worker(mode, "snapshot-send", move || async move {
        // Held for the transfer: the node serves a bounded number at once.
        let _permit = permit;
        let mut reader = match SnapshotReader::open(&data_dir, &env) {
            Ok(r) => r,
            Err(e) => {
                let _ = chunks.send(Err(ServeError::NoImage(e))).await;
                return;
            }
        };
        let meta = reader.meta();
        if meta.index < at_least.index
            || (meta.index == at_least.index && meta.term != at_least.term)
        {
            let _ = chunks
                .send(Err(ServeError::TooOld {
                    have: meta,
                    asked: at_least,
                }))
                .await;
            return;
        }
        loop {
            let next = match reader.next_chunk() {
                Ok(Some(c)) => Ok(c),
                Ok(None) => return,
                Err(e) => Err(ServeError::Read(e)),
            };
            let stop = next.is_err();
            if chunks.send(next).await.is_err() || stop {
                return;
            }
        }
    })
}
