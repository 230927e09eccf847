//! The header every frame a node sends to a peer starts with (after the `u32` length prefix):
//! `magic (u32) | version (u8) | cluster id (u64)`. The magic says what the connection carries:
//! Raft messages ([`MESSAGE_MAGIC`], `transport`) or a snapshot request
//! ([`SNAPSHOT_MAGIC`], `snapshot_transfer`). Both are coded here, once.

use std::fmt;

use bytes::{Buf, BufMut};

/// "KVRF": a frame carrying one Raft message.
pub const MESSAGE_MAGIC: u32 = 0x4B56_5246;
/// "KVSN": the request frame that opens a snapshot connection.
pub const SNAPSHOT_MAGIC: u32 = 0x4B56_534E;
/// The version of both frame kinds.
pub const VERSION: u8 = 1;
/// Bytes of the header: magic, version, cluster id.
pub const HEADER_LEN: usize = 4 + 1 + 8;

/// Why a header is not one this node accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    TooShort(usize),
    BadMagic(u32),
    UnknownVersion(u8),
    WrongCluster { ours: u64, theirs: u64 },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooShort(len) => {
                write!(f, "peer frame of {len} bytes is shorter than its header")
            }
            HeaderError::BadMagic(m) => write!(f, "not a kvstore peer frame (magic {m:#010x})"),
            HeaderError::UnknownVersion(v) => write!(
                f,
                "unknown peer frame version {v} (this node speaks {VERSION})"
            ),
            HeaderError::WrongCluster { ours, theirs } => write!(
                f,
                "peer belongs to cluster {theirs:#x}, this node to cluster {ours:#x}"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Appends the header of a frame of kind `magic`.
pub fn put_header(magic: u32, cluster_id: u64, out: &mut impl BufMut) {
    out.put_u32(magic);
    out.put_u8(VERSION);
    out.put_u64(cluster_id);
}

/// Reads the header off the front of `body`: it must be of kind `magic`, this version and
/// cluster `cluster_id`.
pub fn take_header(magic: u32, cluster_id: u64, body: &mut impl Buf) -> Result<(), HeaderError> {
    if body.remaining() < HEADER_LEN {
        return Err(HeaderError::TooShort(body.remaining()));
    }
    let found = body.get_u32();
    if found != magic {
        return Err(HeaderError::BadMagic(found));
    }
    let version = body.get_u8();
    if version != VERSION {
        return Err(HeaderError::UnknownVersion(version));
    }
    let theirs = body.get_u64();
    if theirs != cluster_id {
        return Err(HeaderError::WrongCluster {
            ours: cluster_id,
            theirs,
        });
    }
    Ok(())
}

/// Whether `body` starts with the magic `magic` (to route a connection by its first frame).
pub fn has_magic(magic: u32, body: &[u8]) -> bool {
    body.len() >= 4 && body[..4] == magic.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_each_field_is_checked() {
        let mut buf = Vec::new();
        put_header(SNAPSHOT_MAGIC, 7, &mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        assert!(has_magic(SNAPSHOT_MAGIC, &buf));
        assert_eq!(take_header(SNAPSHOT_MAGIC, 7, &mut &buf[..]), Ok(()));
        assert_eq!(
            take_header(MESSAGE_MAGIC, 7, &mut &buf[..]),
            Err(HeaderError::BadMagic(SNAPSHOT_MAGIC))
        );
        assert_eq!(
            take_header(SNAPSHOT_MAGIC, 8, &mut &buf[..]),
            Err(HeaderError::WrongCluster { ours: 8, theirs: 7 })
        );
        buf[4] = VERSION + 1;
        assert_eq!(
            take_header(SNAPSHOT_MAGIC, 7, &mut &buf[..]),
            Err(HeaderError::UnknownVersion(VERSION + 1))
        );
        assert_eq!(
            take_header(SNAPSHOT_MAGIC, 7, &mut &buf[..5]),
            Err(HeaderError::TooShort(5))
        );
    }
}
