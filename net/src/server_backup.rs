//! `KVSTORE.BACKUP` on the client port: streams a snapshot image of the whole state machine,
//! at or after a linearizable read point, for `kvstore backup` (and any client that can read
//! bulk strings).
//!
//! **Consistency.** The request is a read like GET: the leader confirms its leadership
//! (ReadIndex) when the request arrives, and the image served is at or after the index
//! committed then, so every write acknowledged before the backup began is in it. The newest
//! image is served if it is recent enough; otherwise the apply thread starts one at once
//! (images are written in steps between applies, so nobody stops for it).
//!
//! **Wire.** Like Redis's `SYNC`, the command takes the connection over: it must come alone
//! (not pipelined, not inside MULTI). The answer is one bulk string per image chunk, in order,
//! the last one the image's trailer, after which the server closes the connection; or an
//! error reply (`-TRYAGAIN` from a node that cannot serve reads, `-ERR` for a failure), also
//! in the middle of the stream. The image is read from its file by the node's snapshot reader
//! (`storage/snapshot_reader.rs`) a few chunks ahead of the socket, so the transfer runs at the
//! client's pace and holds a few chunks of memory on each side, whatever the image's size.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::request::{NodeHandle, ReadOp, ReadResult};
use crate::resp::{Protocol, Reply, Request};
use crate::server::{request_error, upper};
use crate::transport::Stream;

/// The command's name.
pub const BACKUP_COMMAND: &str = "KVSTORE.BACKUP";
/// How long one chunk may wait for the client to take it before the stream is abandoned.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// The answer when the command does not come alone.
pub const NOT_ALONE: &str =
    "ERR KVSTORE.BACKUP takes the connection over: send it alone, not pipelined or in MULTI";

/// Whether `req` asks for a backup.
pub fn is_backup(req: &Request) -> bool {
    req.args
        .first()
        .is_some_and(|name| upper(name) == BACKUP_COMMAND)
}

/// Answers `KVSTORE.BACKUP` on `stream`; the caller closes the connection afterwards.
pub async fn serve<S: Stream>(
    stream: &mut S,
    node: Option<&NodeHandle>,
    protocol: Protocol,
    args: &[bytes::Bytes],
) {
    let mut out = BytesMut::new();
    let Some(node) = node else {
        Reply::error(crate::server::LOADING).encode_for(protocol, &mut out);
        let _ = stream.write_all(&out).await;
        return;
    };
    if !args.is_empty() {
        Reply::error("ERR wrong number of arguments for 'kvstore.backup' command")
            .encode_for(protocol, &mut out);
        let _ = stream.write_all(&out).await;
        return;
    }
    let image = match node.read(ReadOp::Image).await {
        Ok(ReadResult::Image(meta)) => meta,
        Ok(other) => {
            tracing::error!(?other, "a backup's image request got another answer");
            Reply::error("ERR the node could not take an image").encode_for(protocol, &mut out);
            let _ = stream.write_all(&out).await;
            return;
        }
        Err(e) => {
            request_error(e).encode_for(protocol, &mut out);
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    let mut chunks = match node.image_chunks(image.clone()).await {
        Ok(chunks) => chunks,
        Err(e) => {
            request_error(e).encode_for(protocol, &mut out);
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    tracing::info!(index = image.index, term = image.term, "serving a backup");
    let (mut sent, mut bytes) = (0u64, 0u64);
    while let Some(next) = chunks.recv().await {
        out.clear();
        let failed = match next {
            Ok(chunk) => {
                bytes += chunk.len() as u64;
                Reply::Bulk(chunk).encode_for(protocol, &mut out);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, sent, "cannot serve a backup");
                Reply::error(format!("ERR cannot serve the image: {e}"))
                    .encode_for(protocol, &mut out);
                true
            }
        };
        let write = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) if !failed => sent += 1,
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::info!(error = %e, sent, "backup stream broken");
                return;
            }
            Err(_) => {
                tracing::info!(sent, "backup stream stalled");
                return;
            }
        }
    }
    tracing::info!(index = image.index, chunks = sent, bytes, "backup served");
}
