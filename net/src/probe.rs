//! The bootstrap probe: before a node with an empty data directory bootstraps a cluster
//! (`--peers`), it asks each peer who it is and whether it has already heard from a node with
//! this id. A peer that has pinned an incarnation for it means this id was a member whose data
//! directory was lost or replaced; bootstrapping again would bring back a voter that forgot its
//! vote and its log, so the node refuses to start (`node::identity`).
//!
//! **Wire.** On the peer port, one request frame, `u32 length | peer header (magic "KVPB",
//! the cluster id the asker would bootstrap, the asker's id and new incarnation)`, answered by
//! one frame, `u32 length | peer header (magic "KVPB", the answering node's cluster id, id and
//! incarnation) | has data (u8: 0 or 1) | incarnation pinned for the asker's id (u64, 0: none)`,
//! after which the answering node closes the connection. The answer is sent whatever cluster
//! the asker names: a wrong `--peers` or `--cluster-token` is then reported by the asker in
//! words. Both sides bound every length and time out every connect, read and write.

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft_core::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::peer_header::{self, HeaderError, Sender, HEADER_LEN, PROBE_MAGIC};
use crate::transport::{Net, Stream};

/// The request frame's body: the header alone.
pub const REQUEST_LEN: usize = HEADER_LEN;
/// The answer frame's body: the header, has-data, the pinned incarnation.
pub const ANSWER_LEN: usize = HEADER_LEN + 1 + 8;

/// What a peer says about itself and about the asker's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The answering node's cluster.
    pub cluster_id: u64,
    /// The answering node, in its current incarnation.
    pub node: Sender,
    /// Whether it holds Raft state (a term, log entries or applied entries) at its start.
    pub has_data: bool,
    /// The incarnation it pinned for the asker's id, if it ever heard from that id.
    pub pinned_for_asker: Option<u64>,
}

/// Why a probe got no answer, or an answer that makes no sense.
#[derive(Debug)]
pub enum ProbeError {
    Connect(io::Error),
    TimedOut(&'static str),
    Io(io::Error),
    BadAnswer(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Connect(e) => write!(f, "cannot connect: {e}"),
            ProbeError::TimedOut(what) => write!(f, "timed out {what}"),
            ProbeError::Io(e) => write!(f, "connection failed: {e}"),
            ProbeError::BadAnswer(why) => write!(f, "not a probe answer: {why}"),
        }
    }
}

impl std::error::Error for ProbeError {}

/// Appends the whole request frame, length prefix included.
pub fn encode_request(cluster_id: u64, asker: Sender, out: &mut BytesMut) {
    out.put_u32(REQUEST_LEN as u32);
    peer_header::put_header(PROBE_MAGIC, cluster_id, asker, out);
}

/// Decodes a request body (after the length prefix): the cluster the asker means, and who asks.
pub fn decode_request(mut body: Bytes) -> Result<(u64, Sender), HeaderError> {
    if body.len() != REQUEST_LEN {
        return Err(HeaderError::TooShort(body.len()));
    }
    peer_header::take_header_of_any_cluster(PROBE_MAGIC, &mut body)
}

/// Appends the whole answer frame, length prefix included.
pub fn encode_answer(answer: &ProbeAnswer, out: &mut BytesMut) {
    out.put_u32(ANSWER_LEN as u32);
    peer_header::put_header(PROBE_MAGIC, answer.cluster_id, answer.node, out);
    out.put_u8(u8::from(answer.has_data));
    out.put_u64(answer.pinned_for_asker.unwrap_or(0));
}

/// Decodes an answer body (after the length prefix).
pub fn decode_answer(mut body: Bytes) -> Result<ProbeAnswer, ProbeError> {
    if body.len() != ANSWER_LEN {
        return Err(ProbeError::BadAnswer(format!(
            "{} bytes, expected {ANSWER_LEN}",
            body.len()
        )));
    }
    let (cluster_id, node) = peer_header::take_header_of_any_cluster(PROBE_MAGIC, &mut body)
        .map_err(|e| ProbeError::BadAnswer(e.to_string()))?;
    let has_data = match body.get_u8() {
        0 => false,
        1 => true,
        b => return Err(ProbeError::BadAnswer(format!("has-data byte {b}"))),
    };
    let pinned = body.get_u64();
    Ok(ProbeAnswer {
        cluster_id,
        node,
        has_data,
        pinned_for_asker: (pinned != 0).then_some(pinned),
    })
}

/// Asks the node at `addr` once; every step is bounded by `timeout`.
pub async fn ask<N: Net>(
    net: &N,
    addr: &str,
    cluster_id: u64,
    asker: Sender,
    timeout: Duration,
) -> Result<ProbeAnswer, ProbeError> {
    let mut stream = match tokio::time::timeout(timeout, net.connect(addr.to_string())).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ProbeError::Connect(e)),
        Err(_) => return Err(ProbeError::TimedOut("connecting")),
    };
    let mut buf = BytesMut::new();
    encode_request(cluster_id, asker, &mut buf);
    let write = async {
        stream.write_all(&buf).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ProbeError::Io(e)),
        Err(_) => return Err(ProbeError::TimedOut("sending the probe")),
    }
    let mut len = [0u8; 4];
    read_exact_within(&mut stream, &mut len, timeout).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len != ANSWER_LEN {
        return Err(ProbeError::BadAnswer(format!(
            "frame of {len} bytes, expected {ANSWER_LEN}"
        )));
    }
    let mut body = vec![0u8; ANSWER_LEN];
    read_exact_within(&mut stream, &mut body, timeout).await?;
    decode_answer(Bytes::from(body))
}

async fn read_exact_within<S: Stream>(
    stream: &mut S,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, stream.read_exact(buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ProbeError::Io(e)),
        Err(_) => Err(ProbeError::TimedOut("waiting for the answer")),
    }
}

/// Sends `answer` on the connection the probe came on, then drops it.
pub async fn answer<S: Stream>(mut stream: S, answer: ProbeAnswer, timeout: Duration, to: NodeId) {
    let mut buf = BytesMut::new();
    encode_answer(&answer, &mut buf);
    let write = async {
        stream.write_all(&buf).await?;
        stream.flush().await
    };
    if !matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(()))) {
        tracing::debug!(to, "could not answer a bootstrap probe");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let asker = Sender {
            node_id: 3,
            incarnation: 99,
        };
        let mut buf = BytesMut::new();
        encode_request(7, asker, &mut buf);
        assert_eq!(buf.get_u32() as usize, REQUEST_LEN);
        assert_eq!(decode_request(buf.freeze()), Ok((7, asker)));
        for pinned in [None, Some(98)] {
            let answer = ProbeAnswer {
                cluster_id: 8,
                node: Sender {
                    node_id: 1,
                    incarnation: 11,
                },
                has_data: pinned.is_some(),
                pinned_for_asker: pinned,
            };
            let mut buf = BytesMut::new();
            encode_answer(&answer, &mut buf);
            assert_eq!(buf.get_u32() as usize, ANSWER_LEN);
            assert_eq!(decode_answer(buf.freeze()).unwrap(), answer);
        }
    }

    proptest::proptest! {
        /// Any bytes: decoding never panics, and what decodes re-encodes to the same bytes.
        #[test]
        fn arbitrary_probe_frames_decode_faithfully_or_not_at_all(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
            magic_prefix in proptest::prelude::any::<bool>(),
        ) {
            let mut body = body;
            if magic_prefix && body.len() >= 5 {
                body[..4].copy_from_slice(&PROBE_MAGIC.to_be_bytes());
                body[4] = peer_header::VERSION;
            }
            if let Ok((cluster, asker)) = decode_request(Bytes::from(body.clone())) {
                let mut buf = BytesMut::new();
                encode_request(cluster, asker, &mut buf);
                proptest::prop_assert_eq!(&buf[4..], &body[..]);
            }
            if let Ok(answer) = decode_answer(Bytes::from(body.clone())) {
                let mut buf = BytesMut::new();
                encode_answer(&answer, &mut buf);
                proptest::prop_assert_eq!(&buf[4..], &body[..]);
            }
        }
    }
}
