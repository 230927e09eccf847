//! How the state machine encodes its metadata values (the keys are in `row_keys.rs`): the
//! applied record (applied index and term, and the configuration in force at the applied
//! index), the members' addresses (a [`crate::members::MemberContext`] encoding of every
//! member's addresses, which with the applied configuration make the
//! [`crate::members::MemberTable`]) and one session per client.

use bytes::Bytes;
use std::collections::BTreeMap;

use raft_core::{Index, Membership, NodeId, Term};

use crate::codec::{self, Reader};
use crate::command::{CommandResult, MAX_COMMAND_LEN};
use crate::error::DecodeError;
use crate::members::{MemberAddrs, MemberContext};

/// Value records with version and deadline, and the expiry and scan index rows.
pub(crate) const LAYOUT_RECORDS: u8 = 2;
const FORMAT_VERSION: u8 = 1;
/// The applied record's format since it carries the configuration; version 1 records (index
/// and term only) are still read, with no configuration.
const APPLIED_VERSION: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub(super) last_seq: u64,
    /// Log index of the client's last applied command; the eviction order.
    pub(super) last_index: Index,
    pub(super) result: CommandResult,
}

pub(super) fn encode_session(s: &Session) -> Vec<u8> {
    let mut b = vec![FORMAT_VERSION];
    codec::put_u64(&mut b, s.last_seq);
    codec::put_u64(&mut b, s.last_index);
    codec::put_bytes(&mut b, &s.result.encode());
    codec::seal(&mut b);
    b
}

pub(crate) fn decode_session(v: Bytes) -> Result<Session, DecodeError> {
    codec::unseal(&v)?;
    let mut r = Reader::new(v.slice(..v.len() - 4));
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let last_seq = r.u64()?;
    let last_index = r.u64()?;
    let result = CommandResult::decode(&r.bytes("cached result", MAX_COMMAND_LEN)?)?;
    r.finish()?;
    Ok(Session {
        last_seq,
        last_index,
        result,
    })
}

/// The value of the applied record.
pub(crate) fn encode_applied(
    applied_index: Index,
    applied_term: Term,
    membership: &Membership,
) -> Vec<u8> {
    let mut b = vec![APPLIED_VERSION];
    codec::put_u64(&mut b, applied_index);
    codec::put_u64(&mut b, applied_term);
    codec::put_membership(&mut b, membership);
    codec::seal(&mut b);
    b
}

/// Decodes the applied record: `(applied_index, applied_term, configuration)`.
pub(crate) fn decode_applied(v: &[u8]) -> Result<(Index, Term, Membership), DecodeError> {
    let body = codec::unseal(v)?;
    let mut r = Reader::new(Bytes::copy_from_slice(body));
    let version = r.u8()?;
    let (index, term) = (r.u64()?, r.u64()?);
    let membership = match version {
        FORMAT_VERSION => Membership::default(),
        APPLIED_VERSION => r.membership("applied configuration")?,
        other => return Err(DecodeError::UnknownVersion(other)),
    };
    r.finish()?;
    Ok((index, term, membership))
}

/// The value of the members' addresses row: every member's, in a conf change's context
/// encoding.
pub(crate) fn encode_member_addrs(addrs: &BTreeMap<NodeId, MemberAddrs>) -> Vec<u8> {
    MemberContext {
        addrs: addrs.clone(),
    }
    .encode()
    .to_vec()
}

pub(crate) fn decode_member_addrs(v: &[u8]) -> Result<BTreeMap<NodeId, MemberAddrs>, DecodeError> {
    MemberContext::decode(v).map(|c| c.addrs)
}
