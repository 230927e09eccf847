//! The join request: a node added to a cluster (`kvstore member add`) and started on an empty
//! data directory with `--join` asks an existing member which cluster it joins and who its
//! members are, before it has any log.
//!
//! **Wire.** On the peer port, one request frame `u32 length | magic "KVJN" (u32) | version (u8)
//! | asking node id (u64)`, answered by one frame `u32 length | magic | version | cluster id (u64)
//! | member table (kv's `MemberTable` encoding, the rest of the frame)`, after which the answering
//! node closes the connection. The table is the answering node's configuration in force (the
//! last appended, so a member added by an entry not yet applied is listed) with the addresses
//! it knows. Both sides bound every length and time out every connect, read and write; hostile
//! bytes give an error, never a panic.

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kv::MemberTable;
use raft_core::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::transport::{Net, Stream};

/// "KVJN": the frame that asks for the cluster id and the member table.
pub const JOIN_MAGIC: u32 = 0x4B56_4A4E;
pub const JOIN_VERSION: u8 = 1;
/// The request frame's body: magic, version, asking node id.
pub const REQUEST_LEN: usize = 4 + 1 + 8;
/// Largest answer body accepted.
pub const MAX_ANSWER_LEN: usize = 1 << 20;

/// What a member says about its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinAnswer {
    pub cluster_id: u64,
    pub members: MemberTable,
}

#[derive(Debug)]
pub enum JoinError {
    Io(io::Error),
    TimedOut(&'static str),
    BadAnswer(String),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Io(e) => write!(f, "{e}"),
            JoinError::TimedOut(what) => write!(f, "timed out {what}"),
            JoinError::BadAnswer(why) => write!(f, "not a join answer: {why}"),
        }
    }
}

impl std::error::Error for JoinError {}

/// The whole request frame, length prefix included.
pub fn encode_request(asker: NodeId) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + REQUEST_LEN);
    b.put_u32(REQUEST_LEN as u32);
    b.put_u32(JOIN_MAGIC);
    b.put_u8(JOIN_VERSION);
    b.put_u64(asker);
    b.freeze()
}

/// Whether a first frame's body (after the length prefix) is a join request.
pub fn is_request(body: &[u8]) -> bool {
    body.len() == REQUEST_LEN && body[..4] == JOIN_MAGIC.to_be_bytes()
}

/// The asking node's id, from a request body.
pub fn decode_request(mut body: &[u8]) -> Result<NodeId, String> {
    if body.len() != REQUEST_LEN || body.get_u32() != JOIN_MAGIC {
        return Err("not a join request".into());
    }
    match body.get_u8() {
        JOIN_VERSION => Ok(body.get_u64()),
        v => Err(format!("unknown join request version {v}")),
    }
}

/// The whole answer frame, length prefix included.
pub fn encode_answer(answer: &JoinAnswer) -> Bytes {
    let table = answer.members.encode();
    let len = 4 + 1 + 8 + table.len();
    let mut b = BytesMut::with_capacity(4 + len);
    b.put_u32(len as u32);
    b.put_u32(JOIN_MAGIC);
    b.put_u8(JOIN_VERSION);
    b.put_u64(answer.cluster_id);
    b.put_slice(&table);
    b.freeze()
}

/// Decodes an answer body (after the length prefix).
pub fn decode_answer(mut body: &[u8]) -> Result<JoinAnswer, JoinError> {
    let bad = |why: String| JoinError::BadAnswer(why);
    if body.len() < 4 + 1 + 8 {
        return Err(bad(format!("{} bytes", body.len())));
    }
    let magic = body.get_u32();
    if magic != JOIN_MAGIC {
        return Err(bad(format!("magic {magic:#010x}")));
    }
    let version = body.get_u8();
    if version != JOIN_VERSION {
        return Err(bad(format!("unknown version {version}")));
    }
    let cluster_id = body.get_u64();
    let members = MemberTable::decode(body).map_err(|e| bad(format!("member table: {e}")))?;
    Ok(JoinAnswer {
        cluster_id,
        members,
    })
}

/// Answers one join request on `stream` and closes it.
pub async fn serve<S: Stream>(mut stream: S, answer: JoinAnswer, write_timeout: Duration) {
    let frame = encode_answer(&answer);
    let write = async {
        stream.write_all(&frame).await?;
        stream.shutdown().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(write_timeout, write).await {
        tracing::debug!(error = %e, "answering a join request failed");
    }
}

/// Asks the member at `addr` for its cluster id and member table.
pub async fn ask<N: Net>(
    net: &N,
    addr: &str,
    asker: NodeId,
    timeout: Duration,
) -> Result<JoinAnswer, JoinError> {
    let mut stream = tokio::time::timeout(timeout, net.connect(addr.to_string()))
        .await
        .map_err(|_| JoinError::TimedOut("connecting"))?
        .map_err(JoinError::Io)?;
    let exchange = async {
        stream.write_all(&encode_request(asker)).await?;
        stream.flush().await?;
        let len = stream.read_u32().await? as usize;
        if len > MAX_ANSWER_LEN {
            return Ok(Err(JoinError::BadAnswer(format!(
                "an answer of {len} bytes"
            ))));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok(decode_answer(&body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(JoinError::TimedOut("waiting for the answer")),
        Ok(Err(e)) => Err(JoinError::Io(e)),
        Ok(Ok(answer)) => answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::MemberAddrs;

    #[test]
    fn requests_and_answers_round_trip_and_garbage_is_refused() {
        let req = encode_request(4);
        assert!(is_request(&req[4..]));
        assert_eq!(decode_request(&req[4..]), Ok(4));
        let mut other_version = req[4..].to_vec();
        other_version[4] = 9;
        assert!(decode_request(&other_version).is_err());
        assert!(!is_request(&req[4..12]));

        let answer = JoinAnswer {
            cluster_id: 77,
            members: MemberTable::founding(
                [(1, MemberAddrs::new("h:1", "h:2"))].into_iter().collect(),
            ),
        };
        let frame = encode_answer(&answer);
        assert_eq!(
            frame.len(),
            4 + u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize
        );
        assert_eq!(decode_answer(&frame[4..]).unwrap(), answer);
        for cut in 0..frame.len() - 4 {
            assert!(decode_answer(&frame[4..4 + cut]).is_err(), "prefix {cut}");
        }
        let mut flipped = frame[4..].to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode_answer(&flipped).is_err());
    }
}
