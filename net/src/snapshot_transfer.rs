//! Moving a snapshot image from one node to another, out of band from the Raft messages.
//!
//! The core only tells a follower *which* snapshot to fetch and from whom
//! (`Ready::snapshot_to_fetch`); the data travels here, on a connection of its own to the
//! sender's peer port, so that a transfer of many megabytes never delays heartbeats and appends
//! queued on the message connection.
//!
//! **Wire.** The follower opens a connection and sends one request frame,
//! `u32 length | peer header (magic "KVSN", cluster id, follower id and incarnation) | follower id (u64) | range id (u64) | index (u64) | term (u64)`:
//! "your snapshot image of this range, at or after index/term" (a node that does not host the
//! range refuses). The sender answers with reply frames
//! `u32 length | kind (u8) | payload`: `CHUNK` (one chunk of the image, as `kv::snapshot` cuts
//! and checksums it), then `END`; or `REFUSED` with a reason (no image that recent, a damaged
//! image file). Every length is checked against its limit before anything is allocated.
//!
//! **Flow control.** Each side holds at most a few chunks: the sender reads the image through
//! a bounded queue that TCP back-pressure fills only as fast as the follower takes chunks, and
//! the follower acquires one of [`RECEIVE_WINDOW`] permits per chunk, released when its state
//! machine thread has verified and stored it. Memory per transfer is bounded by a few chunks,
//! whatever the snapshot's size.
//!
//! **Failure.** A broken or stalled connection (every read and write has a timeout) ends the
//! transfer on both sides: the sender tells its core (`report_snapshot(to, false)`, which offers
//! again later), the follower drops what it received and fetches again from scratch when its
//! core repeats the request. A transfer superseded by a new leader's offer is cancelled.
//! Restarting is simpler than resuming and costs at most one more transfer; the image is read
//! from a file, so serving it again is cheap for the sender.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kv::ranges::RangeId;
use raft_core::{NodeId, SnapshotMeta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::error::{ServeError, TransferError};
use crate::node::snapshot_install::SnapshotEvent;
pub use crate::peer_header::SNAPSHOT_MAGIC;
use crate::peer_header::{self, Sender, HEADER_LEN};
use crate::storage::ApplyRequest;
use crate::transport::{Net, Stream, TransportTimeouts};

/// The request frame's body: the peer header, then follower id, range id, index, term.
pub const REQUEST_LEN: usize = HEADER_LEN + 8 + 8 + 8 + 8;
/// Chunks a follower may have in flight to its state machine thread.
pub const RECEIVE_WINDOW: usize = 4;
/// Chunks the sender reads ahead of the connection.
pub const SEND_WINDOW: usize = 4;
/// The largest reply frame body: a kind byte and the largest chunk `kv` produces.
pub const MAX_REPLY_LEN: usize = 1 + kv::snapshot::MAX_CHUNK_LEN;

const KIND_CHUNK: u8 = 1;
const KIND_END: u8 = 2;
const KIND_REFUSED: u8 = 3;
/// Refusal reasons are cut to this many bytes.
const MAX_REASON: usize = 512;

/// A follower's request for a snapshot image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// The follower asking (the sender reports the transfer's outcome for it to its core).
    pub from: NodeId,
    /// The range (Raft group) whose image it asks for.
    pub range: RangeId,
    /// The snapshot its core asked for; the sender may serve a later one.
    pub at_least: SnapshotMeta,
}

/// One reply frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Chunk(Bytes),
    End,
    Refused(String),
}

/// Appends the whole request frame, length prefix included; `incarnation` is the follower's.
pub fn encode_request(cluster_id: u64, incarnation: u64, req: &FetchRequest, out: &mut BytesMut) {
    out.put_u32(REQUEST_LEN as u32);
    let sender = Sender {
        node_id: req.from,
        incarnation,
    };
    peer_header::put_header(SNAPSHOT_MAGIC, cluster_id, sender, out);
    out.put_u64(req.from);
    out.put_u64(req.range);
    out.put_u64(req.at_least.index);
    out.put_u64(req.at_least.term);
}

/// Decodes a request frame body (after the length prefix) and says who sent it; the error
/// names what is wrong.
pub fn decode_request(
    cluster_id: u64,
    mut body: Bytes,
) -> Result<(Sender, FetchRequest), TransferError> {
    if body.len() != REQUEST_LEN {
        return Err(TransferError::BadFrame(format!(
            "snapshot request of {} bytes, expected {REQUEST_LEN}",
            body.len()
        )));
    }
    let sender = peer_header::take_header(SNAPSHOT_MAGIC, cluster_id, &mut body)
        .map_err(|e| TransferError::BadFrame(format!("snapshot request: {e}")))?;
    let from = body.get_u64();
    if from != sender.node_id {
        return Err(TransferError::BadFrame(format!(
            "snapshot request for node {from} sent by node {}",
            sender.node_id
        )));
    }
    let range = body.get_u64();
    if range == 0 {
        return Err(TransferError::BadFrame(
            "snapshot request for range 0, which names no range".into(),
        ));
    }
    let (index, term) = (body.get_u64(), body.get_u64());
    let request = FetchRequest {
        from,
        range,
        at_least: SnapshotMeta::new(index, term, Default::default()),
    };
    Ok((sender, request))
}

/// Appends one reply frame, length prefix included.
pub fn encode_reply(reply: &Reply, out: &mut BytesMut) {
    let (kind, payload): (u8, &[u8]) = match reply {
        Reply::Chunk(c) => (KIND_CHUNK, c),
        Reply::End => (KIND_END, &[]),
        Reply::Refused(why) => {
            let mut end = why.len().min(MAX_REASON);
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            (KIND_REFUSED, &why.as_bytes()[..end])
        }
    };
    out.put_u32((1 + payload.len()) as u32);
    out.put_u8(kind);
    out.put_slice(payload);
}

/// Decodes a reply frame body (after the length prefix).
pub fn decode_reply(mut body: Bytes) -> Result<Reply, TransferError> {
    if body.is_empty() {
        return Err(TransferError::BadFrame("empty snapshot reply frame".into()));
    }
    match body.get_u8() {
        KIND_CHUNK => Ok(Reply::Chunk(body)),
        KIND_END if body.is_empty() => Ok(Reply::End),
        KIND_REFUSED => Ok(Reply::Refused(String::from_utf8_lossy(&body).into_owned())),
        kind => Err(TransferError::BadFrame(format!(
            "unknown snapshot reply kind {kind} ({} bytes)",
            body.len()
        ))),
    }
}

/// Checks a reply frame's length prefix before its body is read.
pub fn check_reply_len(len: usize) -> Result<(), TransferError> {
    if len == 0 || len > MAX_REPLY_LEN {
        return Err(TransferError::BadFrame(format!(
            "snapshot reply frame of {len} bytes (limit {MAX_REPLY_LEN})"
        )));
    }
    Ok(())
}

/// Asks the node loop to open the image for one transfer: it starts a reader on the storage
/// side that sends the chunks (or why it cannot) into `chunks`.
pub struct ServeRequest {
    pub request: FetchRequest,
    pub chunks: mpsc::Sender<Result<Bytes, ServeError>>,
}

/// The sender's side of one transfer, on the connection the request came on. Reports the
/// outcome for the follower to the node loop (`SnapshotEvent::Sent`).
pub async fn serve<S: Stream>(
    mut stream: S,
    request: FetchRequest,
    serve: mpsc::Sender<ServeRequest>,
    events: mpsc::UnboundedSender<SnapshotEvent>,
    write_timeout: Duration,
) {
    let (tx, mut chunks) = mpsc::channel(SEND_WINDOW);
    let (follower, range) = (request.from, request.range);
    let (started, mut bytes) = (std::time::Instant::now(), 0u64);
    let ok = if serve
        .send(ServeRequest {
            request,
            chunks: tx,
        })
        .await
        .is_err()
    {
        false
    } else {
        let mut buf = BytesMut::new();
        let mut sent = 0u64;
        loop {
            buf.clear();
            let (reply, last) = match chunks.recv().await {
                Some(Ok(chunk)) => {
                    bytes += chunk.len() as u64;
                    (Reply::Chunk(chunk), false)
                }
                Some(Err(why)) => (Reply::Refused(why.to_string()), true),
                None => (Reply::End, true),
            };
            let refused = matches!(reply, Reply::Refused(_));
            if let Reply::Refused(why) = &reply {
                tracing::warn!(to = follower, %why, "cannot serve a snapshot");
            }
            encode_reply(&reply, &mut buf);
            let write = async {
                stream.write_all(&buf).await?;
                stream.flush().await
            };
            match tokio::time::timeout(write_timeout, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::info!(to = follower, error = %e, sent, "snapshot transfer broken");
                    break false;
                }
                Err(_) => {
                    tracing::info!(to = follower, sent, "snapshot transfer stalled");
                    break false;
                }
            }
            sent += 1;
            if last {
                if !refused {
                    tracing::info!(to = follower, chunks = sent - 1, "snapshot sent");
                }
                break !refused;
            }
        }
    };
    let _ = events.send(SnapshotEvent::Sent {
        range,
        to: follower,
        ok,
        bytes,
        took: started.elapsed(),
    });
}

/// A fetch the node loop started: what to fetch, from where, and as which receive job.
#[derive(Clone, Debug)]
pub struct FetchJob {
    pub job: u64,
    pub from: NodeId,
    pub addr: String,
    pub request: FetchRequest,
}

/// The follower's side of one transfer: fetches the image and feeds it, chunk by chunk, to the
/// state machine thread's receive job `job.job`, then ends that job with the outcome. The
/// state machine thread reports the result (`SnapshotEvent::Staged` or `FetchFailed`).
pub async fn fetch<N: Net>(
    net: N,
    job: FetchJob,
    cluster_id: u64,
    incarnation: u64,
    timeouts: TransportTimeouts,
    apply: crate::storage::RangeQueue<ApplyRequest>,
    window: Arc<Semaphore>,
) {
    let id = job.job;
    let stamp = (cluster_id, incarnation);
    let outcome = fetch_into(&net, &job, stamp, timeouts, &apply, window).await;
    if let Err(error) = &outcome {
        tracing::info!(from = job.from, %error, "snapshot fetch failed");
    }
    let _ = apply.send(ApplyRequest::EndReceive {
        job: id,
        outcome: outcome.map(|_| ()),
    });
}

async fn fetch_into<N: Net>(
    net: &N,
    job: &FetchJob,
    (cluster_id, incarnation): (u64, u64),
    timeouts: TransportTimeouts,
    apply: &crate::storage::RangeQueue<ApplyRequest>,
    window: Arc<Semaphore>,
) -> Result<u64, TransferError> {
    let mut stream = match tokio::time::timeout(
        timeouts.connect,
        net.connect_member(job.addr.clone(), job.from),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            return Err(TransferError::Connect {
                addr: job.addr.clone(),
                source,
            })
        }
        Err(_) => return Err(TransferError::TimedOut("connecting to the sender")),
    };
    let mut buf = BytesMut::new();
    encode_request(cluster_id, incarnation, &job.request, &mut buf);
    let write = async {
        stream.write_all(&buf).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeouts.write, write).await {
        Ok(Ok(())) => {}
        Ok(Err(source)) => {
            return Err(TransferError::Io {
                doing: "sending the request",
                source,
            })
        }
        Err(_) => return Err(TransferError::TimedOut("sending the request")),
    }
    let mut chunks = 0u64;
    loop {
        let body = read_reply_frame(&mut stream, timeouts.idle_read).await?;
        match decode_reply(body)? {
            Reply::Chunk(chunk) => {
                let permit = window
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| TransferError::ShuttingDown)?;
                apply
                    .send(ApplyRequest::ReceiveChunk {
                        job: job.job,
                        chunk,
                        _permit: permit,
                    })
                    .map_err(|_| TransferError::ShuttingDown)?;
                chunks += 1;
            }
            Reply::End => return Ok(chunks),
            Reply::Refused(reason) => {
                return Err(TransferError::Refused {
                    by: job.from,
                    reason,
                })
            }
        }
    }
}

async fn read_reply_frame<S: Stream>(
    stream: &mut S,
    idle: Duration,
) -> Result<Bytes, TransferError> {
    let mut len_buf = [0u8; 4];
    read_exact_within(stream, &mut len_buf, idle).await?;
    let len = u32::from_be_bytes(len_buf) as usize;
    check_reply_len(len)?;
    let mut body = vec![0u8; len];
    read_exact_within(stream, &mut body, idle).await?;
    Ok(Bytes::from(body))
}

async fn read_exact_within<S: Stream>(
    stream: &mut S,
    buf: &mut [u8],
    idle: Duration,
) -> Result<(), TransferError> {
    match tokio::time::timeout(idle, stream.read_exact(buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(TransferError::Closed),
        Ok(Err(source)) => Err(TransferError::Io {
            doing: "reading from the sender",
            source,
        }),
        Err(_) => Err(TransferError::TimedOut("waiting for the sender")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let req = FetchRequest {
            from: 3,
            range: 5,
            at_least: SnapshotMeta::new(900, 4, Default::default()),
        };
        let mut buf = BytesMut::new();
        encode_request(77, 5, &req, &mut buf);
        let len = buf.get_u32() as usize;
        assert_eq!(len, buf.len());
        let body = buf.freeze();
        let sender = Sender {
            node_id: 3,
            incarnation: 5,
        };
        assert_eq!(decode_request(77, body.clone()).unwrap(), (sender, req));
        let mut forged = body.to_vec();
        forged[HEADER_LEN + 7] ^= 1;
        assert!(decode_request(77, Bytes::from(forged))
            .unwrap_err()
            .to_string()
            .contains("sent by node 3"));
        let mut range_zero = body.to_vec();
        range_zero[HEADER_LEN + 15] = 0;
        assert!(decode_request(77, Bytes::from(range_zero))
            .unwrap_err()
            .to_string()
            .contains("range 0"));
        assert!(decode_request(78, body.clone())
            .unwrap_err()
            .to_string()
            .contains("cluster"));
        assert!(decode_request(77, body.slice(1..))
            .unwrap_err()
            .to_string()
            .contains("expected"));
        for reply in [
            Reply::Chunk(Bytes::from_static(b"chunk bytes")),
            Reply::End,
            Reply::Refused("no image at or after 900".into()),
        ] {
            let mut buf = BytesMut::new();
            encode_reply(&reply, &mut buf);
            let len = buf.get_u32() as usize;
            check_reply_len(len).unwrap();
            assert_eq!(decode_reply(buf.freeze()).unwrap(), reply);
        }
    }

    #[test]
    fn hostile_replies_are_refused_before_allocating() {
        assert!(check_reply_len(u32::MAX as usize).is_err());
        assert!(check_reply_len(0).is_err());
        assert!(decode_reply(Bytes::from_static(&[9, 1, 2])).is_err());
        assert!(decode_reply(Bytes::from_static(&[KIND_END, 1])).is_err());
        let long = "é".repeat(1000);
        let mut buf = BytesMut::new();
        encode_reply(&Reply::Refused(long), &mut buf);
        assert!(buf.len() <= 4 + 1 + MAX_REASON);
    }

    proptest::proptest! {
        /// Any bytes from the network: decoding never panics, and what decodes re-encodes to
        /// the same bytes (nothing is silently dropped or invented).
        #[test]
        fn arbitrary_frames_decode_faithfully_or_not_at_all(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            magic_prefix in proptest::prelude::any::<bool>(),
        ) {
            let mut body = body;
            if magic_prefix && body.len() >= 5 {
                body[..4].copy_from_slice(&SNAPSHOT_MAGIC.to_be_bytes());
                body[4] = peer_header::VERSION;
            }
            if let Ok((sender, req)) = decode_request(9, Bytes::from(body.clone())) {
                let mut buf = BytesMut::new();
                encode_request(9, sender.incarnation, &req, &mut buf);
                proptest::prop_assert_eq!(&buf[4..], &body[..]);
            }
            if let Ok(reply) = decode_reply(Bytes::from(body.clone())) {
                let mut buf = BytesMut::new();
                encode_reply(&reply, &mut buf);
                let lossless = !matches!(reply, Reply::Refused(_))
                    || std::str::from_utf8(&body[1..]).is_ok_and(|t| t.len() <= MAX_REASON);
                if lossless {
                    proptest::prop_assert_eq!(&buf[4..], &body[..]);
                }
            }
        }
    }
}
