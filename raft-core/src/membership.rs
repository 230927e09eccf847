//! Cluster membership: who votes, who only replicates, and (during a change of the voters) the
//! outgoing voters of joint consensus (Raft thesis §4.3). A configuration travels in the log as
//! the payload of [`EntryKind::ConfChange`](crate::EntryKind::ConfChange) entries
//! ([`ConfChangeEntry`]), always complete rather than as a delta, and in snapshot metadata.
//!
//! The byte format (`encode`/`decode`) is stable and shared by the wire codec and by drivers
//! that store a configuration: a format byte (`MEMBERSHIP_FORMAT`), then `voters`, `outgoing`
//! and `learners`, each as a u32 count and that many u64 ids in strictly ascending order (so
//! that every configuration has exactly one encoding). Decoding checks every count against the
//! bytes left before allocating and refuses a configuration that breaks its invariants.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, Reader};
use crate::types::NodeId;

/// The format byte that starts an encoded [`Membership`].
pub const MEMBERSHIP_FORMAT: u8 = 1;

/// A cluster configuration.
///
/// Invariants (checked by [`validate`](Self::validate), and by `decode`): no id is 0; learners
/// are disjoint from `voters ∪ outgoing`; `voters` is empty only in the empty configuration of
/// a node waiting to be added (then `outgoing` and `learners` are empty too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// The voters of the configuration (the incoming ones while joint).
    pub voters: BTreeSet<NodeId>,
    /// While joint, the voters of the previous configuration: every decision then needs a
    /// majority of `voters` and a majority of `outgoing`. Empty when not joint.
    pub outgoing: BTreeSet<NodeId>,
    /// Members that receive the log but never vote and never count toward a majority.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A configuration of these voters, no learners, not joint.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            voters: voters.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Whether this is a joint configuration (a change of voters in progress).
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `id` votes: it is in `voters` or in `outgoing`.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Whether `id` is a member at all (voter, outgoing voter or learner).
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters, outgoing voters and learners, in ascending order, once each.
    pub fn members(&self) -> Vec<NodeId> {
        let all: BTreeSet<NodeId> = self
            .voters
            .iter()
            .chain(&self.outgoing)
            .chain(&self.learners)
            .copied()
            .collect();
        all.into_iter().collect()
    }

    /// Whether this is the empty configuration (of a node waiting to be added).
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty() && self.outgoing.is_empty() && self.learners.is_empty()
    }

    /// Checks the invariants listed on the type; the error says which one fails.
    pub fn validate(&self) -> Result<(), &'static str> {
        let all = self
            .voters
            .iter()
            .chain(&self.outgoing)
            .chain(&self.learners);
        if all.clone().any(|&id| id == 0) {
            return Err("node id 0 is reserved");
        }
        if self.learners.iter().any(|&id| self.is_voter(id)) {
            return Err("a learner is also a voter");
        }
        if self.voters.is_empty() && !self.is_empty() {
            return Err("a configuration with members has no voter");
        }
        Ok(())
    }

    /// The configuration's bytes (see the module documentation for the format).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.write_to(&mut buf);
        buf.freeze()
    }

    /// Reads a configuration written by [`encode`](Self::encode). Hostile input gives an
    /// error, never a panic.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(input));
        let membership = Self::read_from(&mut r)?;
        r.finish()?;
        Ok(membership)
    }

    /// The exact length of [`encode`](Self::encode)'s output.
    pub(crate) fn encoded_len(&self) -> usize {
        1 + 3 * 4 + 8 * (self.voters.len() + self.outgoing.len() + self.learners.len())
    }

    pub(crate) fn write_to(&self, buf: &mut BytesMut) {
        buf.put_u8(MEMBERSHIP_FORMAT);
        for set in [&self.voters, &self.outgoing, &self.learners] {
            crate::codec::put_len(buf, set.len());
            for &id in set {
                buf.put_u64(id);
            }
        }
    }

    pub(crate) fn read_from(r: &mut Reader) -> Result<Self, DecodeError> {
        let format = r.u8()?;
        if format != MEMBERSHIP_FORMAT {
            return Err(DecodeError::UnknownMembershipFormat(format));
        }
        let voters = read_ids(r, "voter count")?;
        let outgoing = read_ids(r, "outgoing voter count")?;
        let learners = read_ids(r, "learner count")?;
        let membership = Self {
            voters,
            outgoing,
            learners,
        };
        membership
            .validate()
            .map_err(DecodeError::InvalidMembership)?;
        Ok(membership)
    }
}

/// A count, then that many ids in strictly ascending order.
fn read_ids(r: &mut Reader, what: &'static str) -> Result<BTreeSet<NodeId>, DecodeError> {
    let count = r.count(what, 8)?;
    let mut ids = BTreeSet::new();
    let mut previous = None;
    for _ in 0..count {
        let id = r.u64()?;
        if previous.is_some_and(|p| p >= id) {
            return Err(DecodeError::InvalidMembership(
                "member ids must be strictly ascending",
            ));
        }
        previous = Some(id);
        ids.insert(id);
    }
    Ok(ids)
}

/// One change asked of [`RawNode::propose_conf_change`](crate::RawNode::propose_conf_change).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberChange {
    /// Makes the node a voter: a new member, or a learner promoted.
    AddVoter(NodeId),
    /// Adds the node as a learner (a voter cannot be demoted this way: remove it first).
    AddLearner(NodeId),
    /// Removes the node, voter or learner.
    Remove(NodeId),
}

/// The payload of an [`EntryKind::ConfChange`](crate::EntryKind::ConfChange) entry: the
/// complete configuration in force from this entry on, and the driver's context.
///
/// Bytes: an encoded [`Membership`], then the context as a u32 length and its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfChangeEntry {
    /// The configuration from this entry on.
    pub membership: Membership,
    /// Opaque to the core: the driver's (member addresses, for example). The entry the leader
    /// appends by itself to leave a joint configuration carries an empty context.
    pub context: Bytes,
}

impl ConfChangeEntry {
    /// The entry's payload bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf =
            BytesMut::with_capacity(self.membership.encoded_len() + 4 + self.context.len());
        self.membership.write_to(&mut buf);
        crate::codec::put_bytes(&mut buf, &self.context);
        buf.freeze()
    }

    /// Reads a payload written by [`encode`](Self::encode). Hostile input gives an error,
    /// never a panic.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(input));
        let membership = Membership::read_from(&mut r)?;
        let context = r.bytes("conf change context")?;
        r.finish()?;
        Ok(Self {
            membership,
            context,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids() -> impl Strategy<Value = BTreeSet<NodeId>> {
        proptest::collection::btree_set(1u64..20, 0..6)
    }

    /// Valid configurations: learners are drawn apart from the voters.
    pub(crate) fn membership() -> impl Strategy<Value = Membership> {
        (ids(), ids(), ids()).prop_map(|(voters, outgoing, learners)| {
            if voters.is_empty() {
                return Membership::default();
            }
            let learners = learners
                .into_iter()
                .filter(|l| !voters.contains(l) && !outgoing.contains(l))
                .collect();
            Membership {
                voters,
                outgoing,
                learners,
            }
        })
    }

    proptest! {
        #[test]
        fn every_membership_round_trips(m in membership()) {
            let bytes = m.encode();
            prop_assert_eq!(bytes.len(), m.encoded_len());
            prop_assert_eq!(Membership::decode(&bytes), Ok(m));
        }

        #[test]
        fn every_conf_change_entry_round_trips(
            m in membership(),
            context in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let entry = ConfChangeEntry { membership: m, context: Bytes::from(context) };
            prop_assert_eq!(ConfChangeEntry::decode(&entry.encode()), Ok(entry));
        }

        #[test]
        fn every_strict_prefix_is_an_error(m in membership(), context in proptest::collection::vec(any::<u8>(), 0..8)) {
            let entry = ConfChangeEntry { membership: m, context: Bytes::from(context) };
            let bytes = entry.encode();
            for cut in 0..bytes.len() {
                prop_assert!(ConfChangeEntry::decode(&bytes[..cut]).is_err());
            }
            let bytes = entry.membership.encode();
            for cut in 0..bytes.len() {
                prop_assert!(Membership::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_decode_to_an_error_or_a_faithful_value(input in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(m) = Membership::decode(&input) {
                prop_assert!(m.validate().is_ok());
                prop_assert_eq!(m.encode().to_vec(), input.clone());
            }
            if let Ok(e) = ConfChangeEntry::decode(&input) {
                prop_assert_eq!(e.encode().to_vec(), input.clone());
            }
        }
    }

    fn raw(voters: &[u64], outgoing: &[u64], learners: &[u64]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(MEMBERSHIP_FORMAT);
        for set in [voters, outgoing, learners] {
            b.put_u32(set.len() as u32);
            for &id in set {
                b.put_u64(id);
            }
        }
        b.to_vec()
    }

    #[test]
    fn configurations_breaking_the_invariants_are_refused() {
        let cases: [(&[u64], &[u64], &[u64]); 5] = [
            (&[1, 0], &[], &[]),
            (&[1, 2], &[], &[2]),
            (&[1], &[3], &[3]),
            (&[], &[1], &[]),
            (&[], &[], &[4]),
        ];
        for (voters, outgoing, learners) in cases {
            assert!(
                matches!(
                    Membership::decode(&raw(voters, outgoing, learners)),
                    Err(DecodeError::InvalidMembership(_))
                ),
                "{voters:?} {outgoing:?} {learners:?}"
            );
        }
        assert!(
            Membership::decode(&raw(&[2, 1], &[], &[])).is_err(),
            "unsorted"
        );
        assert!(
            Membership::decode(&raw(&[1, 1], &[], &[])).is_err(),
            "duplicate"
        );
        assert_eq!(
            Membership::decode(&raw(&[1, 2], &[1, 3], &[4])),
            Ok(Membership {
                voters: [1, 2].into(),
                outgoing: [1, 3].into(),
                learners: [4].into(),
            })
        );
    }

    #[test]
    fn garbage_is_refused_without_allocating() {
        let mut huge = vec![MEMBERSHIP_FORMAT];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0u8; 16]);
        assert!(matches!(
            Membership::decode(&huge),
            Err(DecodeError::LengthTooLarge {
                what: "voter count",
                ..
            })
        ));
        assert_eq!(
            Membership::decode(&[9]),
            Err(DecodeError::UnknownMembershipFormat(9))
        );
        assert!(Membership::decode(&[]).is_err());
        let mut trailing = raw(&[1], &[], &[]);
        trailing.push(0);
        assert_eq!(
            Membership::decode(&trailing),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn views_of_a_joint_configuration() {
        let m = Membership {
            voters: [1, 2, 4].into(),
            outgoing: [1, 2, 3].into(),
            learners: [5].into(),
        };
        assert!(m.is_joint());
        assert!(m.is_voter(3) && m.is_voter(4) && !m.is_voter(5));
        assert!(m.is_learner(5) && !m.is_learner(1));
        assert!(m.contains(5) && !m.contains(6));
        assert_eq!(m.members(), vec![1, 2, 3, 4, 5]);
        assert!(!Membership::with_voters([1, 2, 3]).is_joint());
        assert!(Membership::default().is_empty() && Membership::default().validate().is_ok());
    }
}
