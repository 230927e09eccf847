//! The chunk frame: `version | kind | seq | body_len | body | crc32`, and the decoder every
//! received or read chunk goes through before anything else looks at it.

use bytes::Bytes;
use raft_core::{Index, Membership, SnapshotMeta, Term};

use super::{
    FRAME_HEAD, FRAME_OVERHEAD, HEADER_LEN, KIND_HEADER, KIND_RECORDS, KIND_TRAILER, MAX_CHUNK_LEN,
    MAX_RECORD_KEY, MAX_RECORD_VALUE, MIN_RECORD, SNAPSHOT_VERSION, TRAILER_LEN,
};
use crate::codec::{self, Reader};
use crate::error::DecodeError;

/// What chunk 0 says about the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub applied_index: Index,
    pub applied_term: Term,
    /// The cluster the image comes from; 0 when not given.
    pub cluster_id: u64,
    /// The configuration in force at `applied_index` (empty in images written before
    /// configurations were recorded).
    pub membership: Membership,
}

impl SnapshotHeader {
    pub fn meta(&self) -> SnapshotMeta {
        SnapshotMeta::new(
            self.applied_index,
            self.applied_term,
            self.membership.clone(),
        )
    }

    /// The header chunk's body: the fixed fields, then the configuration (length-prefixed).
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut hb = Vec::with_capacity(HEADER_LEN + 64);
        codec::put_u64(&mut hb, self.applied_index);
        codec::put_u64(&mut hb, self.applied_term);
        codec::put_u64(&mut hb, self.cluster_id);
        codec::put_membership(&mut hb, &self.membership);
        hb
    }
}

/// One decoded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkBody {
    Header(SnapshotHeader),
    Records(Vec<(Bytes, Bytes)>),
    Trailer { chunks: u64, records: u64, crc: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedChunk {
    pub seq: u64,
    pub body: ChunkBody,
}

pub(crate) fn frame(kind: u8, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + FRAME_OVERHEAD);
    f.push(SNAPSHOT_VERSION);
    f.push(kind);
    codec::put_u64(&mut f, seq);
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    codec::seal(&mut f);
    f
}

/// The part of a chunk the whole-stream checksum covers: all but the chunk's own CRC. Covering
/// the chunk CRCs too would make the stream checksum blind to a chunk altered and resealed
/// (CRC is linear: `crc(M || crc(M))` does not depend on `M`, whatever came before).
pub(crate) fn stream_covered(chunk: &[u8]) -> &[u8] {
    &chunk[..chunk.len().saturating_sub(4)]
}

pub(crate) fn frame_len(head: &[u8]) -> Result<usize, DecodeError> {
    if head.len() < FRAME_HEAD {
        return Err(DecodeError::Truncated {
            needed: FRAME_HEAD,
            have: head.len(),
        });
    }
    let body = u32::from_le_bytes([head[10], head[11], head[12], head[13]]) as usize;
    let total = body + FRAME_OVERHEAD;
    if total > MAX_CHUNK_LEN {
        return Err(DecodeError::TooLong {
            what: "snapshot chunk",
            len: total as u64,
            max: MAX_CHUNK_LEN as u64,
        });
    }
    Ok(total)
}

/// Decodes one chunk. Never panics; allocates at most in proportion to `data`.
pub fn decode_chunk(data: &[u8]) -> Result<DecodedChunk, DecodeError> {
    let total = frame_len(data)?;
    if data.len() != total {
        return Err(if data.len() < total {
            DecodeError::Truncated {
                needed: total,
                have: data.len(),
            }
        } else {
            DecodeError::TrailingBytes(data.len() - total)
        });
    }
    let body = codec::unseal(data)?;
    if body[0] != SNAPSHOT_VERSION {
        return Err(DecodeError::UnknownVersion(body[0]));
    }
    let kind = body[1];
    let mut r = Reader::new(Bytes::copy_from_slice(&body[2..]));
    let seq = r.u64()?;
    let len = r.u32()? as usize;
    let body = match kind {
        KIND_HEADER => {
            if len < HEADER_LEN {
                return Err(DecodeError::Invalid("snapshot header has the wrong length"));
            }
            let (applied_index, applied_term, cluster_id) = (r.u64()?, r.u64()?, r.u64()?);
            // Images written before configurations were recorded end here.
            let membership = if len == HEADER_LEN {
                Membership::default()
            } else {
                r.membership("snapshot header configuration")?
            };
            ChunkBody::Header(SnapshotHeader {
                applied_index,
                applied_term,
                cluster_id,
                membership,
            })
        }
        KIND_TRAILER => {
            if len != TRAILER_LEN {
                return Err(DecodeError::Invalid(
                    "snapshot trailer has the wrong length",
                ));
            }
            ChunkBody::Trailer {
                chunks: r.u64()?,
                records: r.u64()?,
                crc: r.u32()?,
            }
        }
        KIND_RECORDS => {
            let count = r.u32()? as usize;
            if count == 0 {
                return Err(DecodeError::Invalid("snapshot records chunk is empty"));
            }
            if count > r.remaining() / MIN_RECORD {
                return Err(DecodeError::Invalid(
                    "snapshot chunk declares more records than it can hold",
                ));
            }
            let mut recs = Vec::with_capacity(count);
            for _ in 0..count {
                let k = r.bytes("snapshot key", MAX_RECORD_KEY)?;
                let v = r.bytes("snapshot value", MAX_RECORD_VALUE)?;
                recs.push((k, v));
            }
            ChunkBody::Records(recs)
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "snapshot chunk kind",
                tag,
            })
        }
    };
    r.finish()?;
    Ok(DecodedChunk { seq, body })
}
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_and_damage_is_refused() {
        let mut body = Vec::new();
        body.extend_from_slice(&2u32.to_le_bytes());
        for (k, v) in [(&b"\x01a"[..], &b"1"[..]), (b"\x01b", b"")] {
            codec::put_bytes(&mut body, k);
            codec::put_bytes(&mut body, v);
        }
        let f = frame(KIND_RECORDS, 3, &body);
        let c = decode_chunk(&f).unwrap();
        assert_eq!(c.seq, 3);
        assert_eq!(
            c.body,
            ChunkBody::Records(vec![
                (Bytes::from_static(b"\x01a"), Bytes::from_static(b"1")),
                (Bytes::from_static(b"\x01b"), Bytes::new()),
            ])
        );
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(decode_chunk(&g).is_err(), "flipped byte {i} accepted");
        }
        assert!(decode_chunk(&f[..f.len() - 1]).is_err());
        let mut long = f.clone();
        long.push(0);
        assert!(decode_chunk(&long).is_err());
    }

    #[test]
    fn declared_lengths_are_checked_before_allocating() {
        // A frame head declaring a 4 GiB body is refused from its 14 bytes.
        let mut head = vec![SNAPSHOT_VERSION, KIND_RECORDS];
        head.extend_from_slice(&0u64.to_le_bytes());
        head.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_chunk(&head),
            Err(DecodeError::TooLong { .. })
        ));
        // A records chunk declaring a billion records in a few bytes.
        let mut body = Vec::new();
        body.extend_from_slice(&1_000_000_000u32.to_le_bytes());
        body.extend_from_slice(&[0; 16]);
        let f = frame(KIND_RECORDS, 1, &body);
        assert!(matches!(decode_chunk(&f), Err(DecodeError::Invalid(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_chunk_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_chunk(&data);
        }

        /// Arbitrary bodies inside a valid frame reach the body parser.
        #[test]
        fn arbitrary_bodies_never_panic(kind in 0u8..5, seq in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let f = frame(kind, seq, &body);
            if let Ok(c) = decode_chunk(&f) {
                prop_assert_eq!(c.seq, seq);
            }
        }
    }
}
