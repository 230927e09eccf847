//! How the state machine lays out its keys and encodes its metadata values.
//!
//! Keys: `0x00 ...` metadata, `0x01 | user key` user data. Every user key gets the `0x01`
//! prefix, whatever its bytes, so no user key can overwrite metadata. The metadata are the
//! applied record (`0x00 'a'`: applied index and term, and the configuration in force at the
//! applied index), the members' addresses (`0x00 'm'`: a [`crate::members::MemberContext`]
//! encoding of every member's addresses, which with the applied configuration make the
//! [`crate::members::MemberTable`]) and one session row per client (`0x00 's' | client id,
//! big-endian`).

use bytes::Bytes;
use std::collections::BTreeMap;

use raft_core::{Index, Membership, NodeId, Term};

use crate::codec::{self, Reader};
use crate::command::{CommandResult, MAX_COMMAND_LEN};
use crate::error::DecodeError;
use crate::members::{MemberAddrs, MemberContext};

const META: u8 = 0x00;
pub(crate) const USER: u8 = 0x01;
pub(crate) const KEY_APPLIED: &[u8] = &[META, b'a'];
pub(crate) const KEY_MEMBERS: &[u8] = &[META, b'm'];
pub(crate) const SESSION_PREFIX: &[u8] = &[META, b's'];
/// The user-row layout version (`keyspace.rs`); absent in a data directory of the first layout
/// (raw values), which opening converts.
pub(crate) const KEY_LAYOUT: &[u8] = &[META, b'L'];
pub(crate) const KEY_COUNTS: &[u8] = &[META, b'c'];
pub(crate) const KEY_CLOCK: &[u8] = &[META, b't'];
/// Value records with version and deadline, and the expiry and scan index rows.
pub(crate) const LAYOUT_RECORDS: u8 = 2;
const FORMAT_VERSION: u8 = 1;
/// The applied record's format since it carries the configuration; version 1 records (index
/// and term only) are still read, with no configuration.
const APPLIED_VERSION: u8 = 2;

pub(super) fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(USER);
    k.extend_from_slice(key);
    k
}

pub(super) fn session_key(client: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(SESSION_PREFIX);
    k[2..].copy_from_slice(&client.to_be_bytes());
    k
}

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
