//! The header every frame a node sends to a peer starts with (after the `u32` length prefix):
//! `magic (u32) | version (u8) | cluster id (u64) | sender node id (u64) | sender incarnation
//! (u64)`. The magic says what the connection carries: Raft messages ([`MESSAGE_MAGIC`],
//! `transport`, opened by a [`HELLO_MAGIC`] frame), a snapshot request ([`SNAPSHOT_MAGIC`], `snapshot_transfer`) or a bootstrap
//! probe ([`PROBE_MAGIC`], `probe`). All are coded here, once.
//!
//! The sender's incarnation lets a receiver tell a node from a namesake whose disk was wiped
//! (`kv::PeerPins`); the receiver checks it, this module only carries it.

use std::fmt;

use bytes::{Buf, BufMut};
use raft_core::NodeId;

/// "KVRF": a frame carrying one Raft message.
pub const MESSAGE_MAGIC: u32 = 0x4B56_5246;
/// "KVSN": the request frame that opens a snapshot connection.
pub const SNAPSHOT_MAGIC: u32 = 0x4B56_534E;
/// "KVPB": a bootstrap probe, and its answer.
pub const PROBE_MAGIC: u32 = 0x4B56_5042;
/// "KVHI": the frame that opens a Raft message connection: the header, then the address the
/// sender listens on for peers (`u16` length, UTF-8). It introduces the sender even if it has
/// nothing to say yet, so that every member pins every other member's incarnation, not only
/// the ones that happened to send it a message, and can answer a sender its address book
/// does not know (a leader added by an entry it has not received yet).
pub const HELLO_MAGIC: u32 = 0x4B56_4849;
/// The longest peer address a hello frame carries.
pub const MAX_HELLO_ADDR: usize = 255;
/// The version of every frame kind. 2: the sender's id and incarnation.
pub const VERSION: u8 = 2;
/// Bytes of the header: magic, version, cluster id, sender id, sender incarnation.
pub const HEADER_LEN: usize = 4 + 1 + 8 + 8 + 8;

/// Which node, in which of its lives, sent a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sender {
    pub node_id: NodeId,
    pub incarnation: u64,
}

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
                "peer belongs to cluster {}, this node to cluster {}",
                kv::ClusterIdText(*theirs),
                kv::ClusterIdText(*ours)
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Appends the header of a frame of kind `magic` sent by `sender`.
pub fn put_header(magic: u32, cluster_id: u64, sender: Sender, out: &mut impl BufMut) {
    out.put_u32(magic);
    out.put_u8(VERSION);
    out.put_u64(cluster_id);
    out.put_u64(sender.node_id);
    out.put_u64(sender.incarnation);
}

/// Reads the header off the front of `body`: it must be of kind `magic`, this version and
/// cluster `cluster_id`. Returns who sent it.
pub fn take_header(
    magic: u32,
    cluster_id: u64,
    body: &mut impl Buf,
) -> Result<Sender, HeaderError> {
    let (theirs, sender) = take_header_of_any_cluster(magic, body)?;
    if theirs != cluster_id {
        return Err(HeaderError::WrongCluster {
            ours: cluster_id,
            theirs,
        });
    }
    Ok(sender)
}

/// [`take_header`] for a frame that may come from any cluster (a probe is answered whatever
/// cluster its sender means to bootstrap): returns that cluster id and the sender.
pub fn take_header_of_any_cluster(
    magic: u32,
    body: &mut impl Buf,
) -> Result<(u64, Sender), HeaderError> {
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
    let cluster_id = body.get_u64();
    let sender = Sender {
        node_id: body.get_u64(),
        incarnation: body.get_u64(),
    };
    Ok((cluster_id, sender))
}

/// Whether `body` starts with the magic `magic` (to route a connection by its first frame).
pub fn has_magic(magic: u32, body: &[u8]) -> bool {
    body.len() >= 4 && body[..4] == magic.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_3: Sender = Sender {
        node_id: 3,
        incarnation: 0xdead_beef_0000_0003,
    };

    #[test]
    fn a_header_round_trips_and_each_field_is_checked() {
        let mut buf = Vec::new();
        put_header(SNAPSHOT_MAGIC, 7, NODE_3, &mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        assert!(has_magic(SNAPSHOT_MAGIC, &buf));
        assert_eq!(take_header(SNAPSHOT_MAGIC, 7, &mut &buf[..]), Ok(NODE_3));
        assert_eq!(
            take_header_of_any_cluster(SNAPSHOT_MAGIC, &mut &buf[..]),
            Ok((7, NODE_3))
        );
        assert_eq!(
            take_header(MESSAGE_MAGIC, 7, &mut &buf[..]),
            Err(HeaderError::BadMagic(SNAPSHOT_MAGIC))
        );
        assert_eq!(
            take_header(SNAPSHOT_MAGIC, 8, &mut &buf[..]),
            Err(HeaderError::WrongCluster { ours: 8, theirs: 7 })
        );
        assert_eq!(
            take_header(SNAPSHOT_MAGIC, 7, &mut &buf[..HEADER_LEN - 1]),
            Err(HeaderError::TooShort(HEADER_LEN - 1))
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

    #[test]
    fn another_incarnation_of_the_same_node_reads_as_another_sender() {
        let wiped = Sender {
            incarnation: NODE_3.incarnation + 1,
            ..NODE_3
        };
        let mut buf = Vec::new();
        put_header(MESSAGE_MAGIC, 7, wiped, &mut buf);
        let got = take_header(MESSAGE_MAGIC, 7, &mut &buf[..]).unwrap();
        assert_eq!(got.node_id, NODE_3.node_id);
        assert_ne!(got, NODE_3, "the receiver must be able to tell them apart");
        // The fields sit where the documentation says, big-endian after the cluster id.
        assert_eq!(buf[13..21], 3u64.to_be_bytes());
        assert_eq!(buf[21..29], wiped.incarnation.to_be_bytes());
    }
}
