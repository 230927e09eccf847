//! The log database's key layout and value encodings (see the parent module's docs): every
//! value carries a format version and a CRC, and an entry also its own index.

use bytes::Bytes;
use raft_core::{Entry, EntryKind, HardState, Index, Membership, SnapshotMeta};

use crate::codec::{self, Reader};
use crate::error::DecodeError;
use crate::ranges::{RangeId, FIRST_RANGE};

const META: u8 = 0x00;
const ENTRY: u8 = 0x01;
pub(super) const KEY_HARD_STATE: &[u8] = &[META, b'h'];
pub(super) const KEY_LOG_START: &[u8] = &[META, b's'];
pub(super) const KEY_LAST_INDEX: &[u8] = &[META, b'l'];
/// Present while a compaction's deletions are unfinished: the first index still to delete.
pub(super) const KEY_PURGE_FROM: &[u8] = &[META, b'p'];
const FORMAT_VERSION: u8 = 1;
/// The log start record's format since it carries the configuration at the log start; version
/// 1 records (a bare index/term pair) are still read, with no configuration.
const LOG_START_VERSION: u8 = 2;
/// Deletions per batch when compacting, so that compaction never builds one huge batch.
pub const COMPACT_CHUNK: u64 = 1024;
/// Bound on a stored payload; larger lengths can only come from damage.
const MAX_PAYLOAD: usize = 256 << 20;

/// The first byte of every row of a range other than the first: `0x02 | range id: u64 BE`, then
/// the row's key as the first range has it. The first range's rows have no prefix, so a data
/// directory written before ranges existed is the first range's log as it is.
const GROUP: u8 = 0x02;

pub(super) fn entry_key(index: Index) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The longest entry key: a range prefix (`GROUP | range id`) and `ENTRY | index`.
const ENTRY_KEY_MAX: usize = 9 + 9;

/// One entry's key, built without allocating.
pub(super) struct EntryKey {
    bytes: [u8; ENTRY_KEY_MAX],
    len: usize,
}

impl std::ops::Deref for EntryKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The keys of one range's rows in the shared log database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LogKeys {
    prefix: Vec<u8>,
}

impl LogKeys {
    pub(super) fn of(range: RangeId) -> Self {
        let prefix = if range == FIRST_RANGE {
            Vec::new()
        } else {
            let mut p = vec![GROUP];
            p.extend_from_slice(&range.to_be_bytes());
            p
        };
        Self { prefix }
    }

    fn with(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// On the stack: one is built per entry written, read or deleted.
    pub(super) fn entry(&self, index: Index) -> EntryKey {
        let mut key = EntryKey {
            bytes: [0; ENTRY_KEY_MAX],
            len: self.prefix.len() + 9,
        };
        key.bytes[..self.prefix.len()].copy_from_slice(&self.prefix);
        key.bytes[self.prefix.len()..key.len].copy_from_slice(&entry_key(index));
        key
    }

    pub(super) fn hard_state(&self) -> Vec<u8> {
        self.with(KEY_HARD_STATE)
    }

    pub(super) fn log_start(&self) -> Vec<u8> {
        self.with(KEY_LOG_START)
    }

    pub(super) fn last_index(&self) -> Vec<u8> {
        self.with(KEY_LAST_INDEX)
    }

    pub(super) fn purge_from(&self) -> Vec<u8> {
        self.with(KEY_PURGE_FROM)
    }
}

pub(super) fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut b = Vec::with_capacity(e.payload.len() + 30);
    b.push(FORMAT_VERSION);
    b.push(e.kind.code());
    codec::put_u64(&mut b, e.term);
    codec::put_u64(&mut b, e.index);
    codec::put_bytes(&mut b, &e.payload);
    codec::seal(&mut b);
    b
}

pub(super) fn decode_entry(v: Bytes) -> Result<Entry, DecodeError> {
    codec::unseal(&v)?;
    let body = v.slice(..v.len() - 4);
    let mut r = Reader::new(body);
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let tag = r.u8()?;
    let kind = EntryKind::from_code(tag).ok_or(DecodeError::UnknownTag {
        what: "entry kind",
        tag,
    })?;
    let term = r.u64()?;
    let index = r.u64()?;
    let payload = r.bytes("payload", MAX_PAYLOAD)?;
    r.finish()?;
    Ok(Entry::new(term, index, kind, payload))
}

pub(super) fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut b = vec![FORMAT_VERSION];
    codec::put_u64(&mut b, hs.term);
    // Node id 0 is reserved for "nobody", so it can stand for "no vote".
    codec::put_u64(&mut b, hs.vote.unwrap_or(0));
    codec::put_u64(&mut b, hs.commit);
    codec::seal(&mut b);
    b
}

pub(super) fn decode_hard_state(v: Bytes) -> Result<HardState, DecodeError> {
    let mut r = versioned(v)?;
    let term = r.u64()?;
    let vote = r.u64()?;
    let commit = r.u64()?;
    r.finish()?;
    Ok(HardState {
        term,
        vote: (vote != 0).then_some(vote),
        commit,
    })
}

pub(super) fn encode_pair(a: u64, b: u64) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    codec::put_u64(&mut out, a);
    codec::put_u64(&mut out, b);
    codec::seal(&mut out);
    out
}

pub(super) fn decode_pair(v: Bytes) -> Result<(u64, u64), DecodeError> {
    let mut r = versioned(v)?;
    let a = r.u64()?;
    let b = r.u64()?;
    r.finish()?;
    Ok((a, b))
}

/// The log start: the snapshot's index, term and configuration.
pub(super) fn encode_log_start(meta: &SnapshotMeta) -> Vec<u8> {
    let mut out = vec![LOG_START_VERSION];
    codec::put_u64(&mut out, meta.index);
    codec::put_u64(&mut out, meta.term);
    codec::put_membership(&mut out, &meta.membership);
    codec::seal(&mut out);
    out
}

pub(super) fn decode_log_start(v: Bytes) -> Result<SnapshotMeta, DecodeError> {
    codec::unseal(&v)?;
    let mut r = Reader::new(v.slice(..v.len() - 4));
    let version = r.u8()?;
    let (index, term) = (r.u64()?, r.u64()?);
    let membership = match version {
        FORMAT_VERSION => Membership::default(),
        LOG_START_VERSION => r.membership("log start configuration")?,
        other => return Err(DecodeError::UnknownVersion(other)),
    };
    r.finish()?;
    Ok(SnapshotMeta::new(index, term, membership))
}

fn versioned(v: Bytes) -> Result<Reader, DecodeError> {
    codec::unseal(&v)?;
    let mut r = Reader::new(v.slice(..v.len() - 4));
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    Ok(r)
}
