//! The header every frame a node sends to a peer starts with (after the `u32` length prefix):
//! `magic (u32) | version (u8) | cluster id (u64) | sender node id (u64) | sender incarnation
//! (u64)`. The magic says what the connection carries: Raft messages ([`MESSAGE_MAGIC`],
//! `transport`, opened by a [`HELLO_MAGIC`] frame), a snapshot request ([`SNAPSHOT_MAGIC`], `snapshot_transfer`) or a bootstrap
//! probe ([`PROBE_MAGIC`], `probe`). All are coded here, once.
//!
//! The sender's incarnation lets a receiver tell a node from a namesake whose disk was wiped
//! (`kv::PeerPins`); the receiver checks it, this module only carries it.
//!
//! A Raft message frame names the range (Raft group) its message belongs to, right after the
//! header: the range id as an unsigned LEB128 varint ([`put_range_id`]), so the first range
//! costs one byte and no id more than ten. Only the shortest encoding of an id is accepted:
//! every frame has exactly one encoding, and a decoded frame re-encodes to its bytes.

use std::fmt;

use bytes::{Buf, BufMut};
use kv::ranges::RangeId;
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
/// The version of every frame kind. 2: the sender's id and incarnation. 3: message frames
/// and snapshot requests name their range.
pub const VERSION: u8 = 3;
/// The longest range id varint: 64 bits, 7 per byte.
pub const MAX_RANGE_ID_LEN: usize = 10;
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
            HeaderError::UnknownVersion(v) if *v < VERSION => write!(
                f,
                "peer speaks the older peer protocol version {v}, this node version {VERSION} \
                 (since version 3 every Raft message names its range): upgrade the peer"
            ),
            HeaderError::UnknownVersion(v) => write!(
                f,
                "peer speaks peer protocol version {v}, newer than this node's {VERSION}: \
                 upgrade this node"
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

/// Why the range id after a message frame's header is not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeIdError {
    /// The frame ends inside the varint (or right after the header).
    Truncated,
    /// More than 64 bits, or more than [`MAX_RANGE_ID_LEN`] bytes.
    TooLong,
    /// A longer encoding than the id needs (a zero last byte).
    NotShortest,
    /// No range has id 0.
    Zero,
}

impl fmt::Display for RangeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeIdError::Truncated => "the range id is cut short",
            RangeIdError::TooLong => "the range id does not fit in 64 bits",
            RangeIdError::NotShortest => "the range id is not in its shortest encoding",
            RangeIdError::Zero => "range id 0 names no range",
        })
    }
}

/// Appends `range` as an unsigned LEB128 varint: seven bits a byte, low bits first, the high
/// bit set on every byte but the last.
pub fn put_range_id(range: RangeId, out: &mut impl BufMut) {
    let mut rest = range;
    while rest >= 0x80 {
        out.put_u8((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

/// How many bytes [`put_range_id`] writes for `range`.
pub fn range_id_len(range: RangeId) -> usize {
    let bits = 64 - range.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Reads a range id off the front of `body`; reads at most [`MAX_RANGE_ID_LEN`] bytes.
pub fn take_range_id(body: &mut impl Buf) -> Result<RangeId, RangeIdError> {
    let mut range = 0u64;
    for i in 0..MAX_RANGE_ID_LEN {
        if !body.has_remaining() {
            return Err(RangeIdError::Truncated);
        }
        let byte = body.get_u8();
        let bits = u64::from(byte & 0x7f);
        // The tenth byte holds the 64th bit alone.
        if i == MAX_RANGE_ID_LEN - 1 && byte > 1 {
            return Err(RangeIdError::TooLong);
        }
        range |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(RangeIdError::NotShortest);
            }
            if range == 0 {
                return Err(RangeIdError::Zero);
            }
            return Ok(range);
        }
    }
    Err(RangeIdError::TooLong)
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

    #[test]
    fn range_ids_round_trip_in_their_shortest_encoding() {
        for (range, len) in [
            (1u64, 1usize),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::from(u32::MAX), 5),
            (u64::MAX >> 1, 9),
            (u64::MAX, 10),
        ] {
            let mut buf = Vec::new();
            put_range_id(range, &mut buf);
            assert_eq!((buf.len(), range_id_len(range)), (len, len), "{range}");
            let mut rest = &buf[..];
            assert_eq!(take_range_id(&mut rest), Ok(range));
            assert!(rest.is_empty());
            for cut in 0..buf.len() {
                assert_eq!(
                    take_range_id(&mut &buf[..cut]),
                    Err(RangeIdError::Truncated),
                    "{range} cut at {cut}"
                );
            }
        }
        // The first range costs one byte.
        let mut buf = Vec::new();
        put_range_id(kv::ranges::FIRST_RANGE, &mut buf);
        assert_eq!(buf, [1]);
    }

    #[test]
    fn hostile_range_ids_are_refused_after_at_most_ten_bytes() {
        let refused = |bytes: &[u8]| take_range_id(&mut &bytes[..]);
        assert_eq!(refused(&[0]), Err(RangeIdError::Zero));
        assert_eq!(refused(&[0x81, 0]), Err(RangeIdError::NotShortest));
        assert_eq!(refused(&[0x80, 0x80, 0]), Err(RangeIdError::NotShortest));
        // Bit 65 and beyond.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(refused(&over), Err(RangeIdError::TooLong));
        let endless = [0xff; 64];
        let mut rest = &endless[..];
        assert_eq!(take_range_id(&mut rest), Err(RangeIdError::TooLong));
        assert!(rest.len() >= endless.len() - MAX_RANGE_ID_LEN);
    }

    #[test]
    fn an_older_or_newer_peer_is_told_which_side_to_upgrade() {
        let mut buf = Vec::new();
        put_header(MESSAGE_MAGIC, 7, NODE_3, &mut buf);
        buf[4] = 2;
        let old = take_header(MESSAGE_MAGIC, 7, &mut &buf[..]).unwrap_err();
        assert_eq!(old, HeaderError::UnknownVersion(2));
        assert!(old.to_string().contains("upgrade the peer"), "{old}");
        buf[4] = VERSION + 1;
        let new = take_header(MESSAGE_MAGIC, 7, &mut &buf[..]).unwrap_err();
        assert!(new.to_string().contains("upgrade this node"), "{new}");
    }
}
