//! The cluster's members as the state machine knows them: the configuration it applied and every
//! member's addresses.
//!
//! The core decides who votes; it knows nothing of addresses. The node reaches a member at its
//! peer address and tells clients its client address, so those travel with the configuration:
//! a conf-change entry's `context` is a [`MemberContext`] (the addresses of the members it adds
//! or moves), and applying the entry folds it into the [`MemberTable`], which the state machine
//! keeps in its metadata (written in the same batch as the applied index) and in its snapshot
//! images. A node that joins, or restarts, therefore learns every address from the log and the
//! image, never from its command line.
//!
//! Encodings (both versioned and sealed with a CRC32, little-endian like kv's other records):
//! * context: `version: u8 | addresses | crc32`;
//! * table: `version: u8 | membership: len u32 + raft_core::Membership::encode() | addresses | crc32`;
//! * addresses: `count: u32 | count × (id: u64 | peer_addr: len u32 + utf-8 | client_addr: len u32 + utf-8)`,
//!   ids nonzero and strictly ascending, so that every value has exactly one encoding.
//!
//! Decoding hostile bytes returns an error and never panics or allocates beyond the input.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::{Membership, NodeId};

use crate::codec::{self, Reader};
use crate::error::DecodeError;

const CONTEXT_VERSION: u8 = 1;
const TABLE_VERSION: u8 = 1;
/// Longest address accepted (a host name is at most 253 bytes, plus a port).
pub const MAX_ADDR_LEN: usize = 512;
/// Most members a table or context may name.
pub const MAX_MEMBERS: usize = 4096;
/// Longest encoded membership accepted inside a table.
const MAX_MEMBERSHIP_LEN: usize = 1 + 3 * 4 + 3 * 8 * MAX_MEMBERS;

/// Where a member listens. An empty string means "not known".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberAddrs {
    /// Where peers send Raft messages and fetch snapshots.
    pub peer_addr: String,
    /// Where clients connect (Redis protocol).
    pub client_addr: String,
}

impl MemberAddrs {
    pub fn new(peer_addr: impl Into<String>, client_addr: impl Into<String>) -> Self {
        Self {
            peer_addr: peer_addr.into(),
            client_addr: client_addr.into(),
        }
    }

    /// `self` with the fields `newer` knows (non-empty) replaced by its values.
    fn updated_by(&self, newer: &MemberAddrs) -> MemberAddrs {
        let pick = |new: &String, old: &String| {
            if new.is_empty() {
                old.clone()
            } else {
                new.clone()
            }
        };
        MemberAddrs {
            peer_addr: pick(&newer.peer_addr, &self.peer_addr),
            client_addr: pick(&newer.client_addr, &self.client_addr),
        }
    }
}

/// The `context` of a conf-change entry that the node proposes: the addresses of the members it
/// adds or moves. An empty context (the core's own entry leaving a joint configuration) changes
/// no address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberContext {
    pub addrs: BTreeMap<NodeId, MemberAddrs>,
}

impl MemberContext {
    pub fn encode(&self) -> Bytes {
        let mut b = vec![CONTEXT_VERSION];
        put_addrs(&mut b, &self.addrs);
        codec::seal(&mut b);
        Bytes::from(b)
    }

    pub fn decode(bytes: &[u8]) -> Result<MemberContext, DecodeError> {
        let body = codec::unseal(bytes)?;
        let mut r = Reader::new(Bytes::copy_from_slice(body));
        let version = r.u8()?;
        if version != CONTEXT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let addrs = read_addrs(&mut r)?;
        r.finish()?;
        Ok(MemberContext { addrs })
    }
}

/// The configuration as the state machine applied it, with the members' addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTable {
    pub membership: Membership,
    /// Addresses of members of `membership` (only of them).
    pub addrs: BTreeMap<NodeId, MemberAddrs>,
}

/// What applying a conf-change entry did to the addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextOutcome {
    /// The context was empty or named addresses; they are merged.
    Applied,
    /// The context did not decode: the configuration was applied, the addresses left as they
    /// were. Every replica decides the same, since they apply the same bytes.
    Undecodable(DecodeError),
}

impl MemberTable {
    /// The table of a cluster's founding members (its first start), every one a voter.
    pub fn founding(addrs: BTreeMap<NodeId, MemberAddrs>) -> MemberTable {
        MemberTable {
            membership: Membership::with_voters(addrs.keys().copied()),
            addrs,
        }
    }

    /// Applies a conf-change entry: `membership` is the configuration from the entry on,
    /// `context` its [`MemberContext`]. Addresses of ids in no configuration are dropped;
    /// addresses the context names for ids outside the configuration are ignored.
    pub fn apply_conf_change(&mut self, membership: Membership, context: &[u8]) -> ContextOutcome {
        let outcome = if context.is_empty() {
            ContextOutcome::Applied
        } else {
            match MemberContext::decode(context) {
                Ok(ctx) => {
                    for (id, addrs) in ctx.addrs {
                        let merged = self.addrs.get(&id).cloned().unwrap_or_default();
                        self.addrs.insert(id, merged.updated_by(&addrs));
                    }
                    ContextOutcome::Applied
                }
                Err(e) => ContextOutcome::Undecodable(e),
            }
        };
        self.addrs.retain(|id, _| membership.contains(*id));
        self.membership = membership;
        outcome
    }

    /// The addresses of `id`, if it is a member whose addresses are known.
    pub fn addrs_of(&self, id: NodeId) -> Option<&MemberAddrs> {
        self.addrs.get(&id)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![TABLE_VERSION];
        codec::put_bytes(&mut b, &self.membership.encode());
        put_addrs(&mut b, &self.addrs);
        codec::seal(&mut b);
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<MemberTable, DecodeError> {
        let body = codec::unseal(bytes)?;
        let mut r = Reader::new(Bytes::copy_from_slice(body));
        let version = r.u8()?;
        if version != TABLE_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let membership = Membership::decode(&r.bytes("membership", MAX_MEMBERSHIP_LEN)?)
            .map_err(|_| DecodeError::Invalid("membership"))?;
        let addrs = read_addrs(&mut r)?;
        r.finish()?;
        if addrs.keys().any(|id| !membership.contains(*id)) {
            return Err(DecodeError::Invalid(
                "address of an id that is not a member",
            ));
        }
        Ok(MemberTable { membership, addrs })
    }
}

fn put_addrs(b: &mut Vec<u8>, addrs: &BTreeMap<NodeId, MemberAddrs>) {
    b.extend_from_slice(&(addrs.len() as u32).to_le_bytes());
    for (id, a) in addrs {
        codec::put_u64(b, *id);
        codec::put_bytes(b, a.peer_addr.as_bytes());
        codec::put_bytes(b, a.client_addr.as_bytes());
    }
}

fn read_addrs(r: &mut Reader) -> Result<BTreeMap<NodeId, MemberAddrs>, DecodeError> {
    let count = r.u32()? as usize;
    if count > MAX_MEMBERS {
        return Err(DecodeError::TooLong {
            what: "member count",
            len: count as u64,
            max: MAX_MEMBERS as u64,
        });
    }
    let mut addrs = BTreeMap::new();
    let mut previous: NodeId = 0;
    for _ in 0..count {
        let id = r.u64()?;
        if id <= previous {
            return Err(DecodeError::Invalid(
                "member ids must be nonzero and strictly ascending",
            ));
        }
        previous = id;
        let peer_addr = read_addr(r, "peer address")?;
        let client_addr = read_addr(r, "client address")?;
        addrs.insert(
            id,
            MemberAddrs {
                peer_addr,
                client_addr,
            },
        );
    }
    Ok(addrs)
}

fn read_addr(r: &mut Reader, what: &'static str) -> Result<String, DecodeError> {
    let b = r.bytes(what, MAX_ADDR_LEN)?;
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid("address is not UTF-8"))
}

#[cfg(test)]
mod tests;
