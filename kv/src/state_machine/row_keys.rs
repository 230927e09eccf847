//! Every key the state machine writes, built in one place.
//!
//! The first range ([`FIRST_RANGE`]) has the rows a data directory had before the keyspace was
//! split into ranges, byte for byte, so that an existing directory is the first range as it is:
//! * `0x00 tag ...` metadata: `'a'` the applied record, `'m'` the members' addresses, `'s' |
//!   client id: u64 BE` one session, `'L'` the user-row layout, `'c'` the key counts, `'t'` the
//!   log time, `'w' | bucket: u16 BE` and `'f'` the WATCH rows (`watch.rs`), `'r'` the range's
//!   descriptor (absent while it is the initial one, [`RangeDescriptor::whole`]);
//! * `0x01 | key` a user row;
//! * `0x02 | deadline: u64 BE | key` the expiry index, `0x03 | scan hash: u64 BE | key` the scan
//!   index.
//!
//! Another range's rows, other than user rows, are the same rows behind `0x04 | range id: u64
//! BE`. User rows are shared by every range and keyed by the user key alone: a range owns the
//! slice of them inside its bounds, so that a split moves no user data. The prefix byte `0x04`
//! is above every first-range tag, so no row of another range can equal or sit among the first
//! range's rows, nor among the user rows; and a range's own rows form one contiguous slice, which
//! a per-range snapshot reads and an install deletes in one walk.

use crate::ranges::{RangeId, FIRST_RANGE};

const META: u8 = 0x00;
pub(crate) const USER: u8 = 0x01;
pub(crate) const EXPIRY: u8 = 0x02;
pub(crate) const HASHED: u8 = 0x03;
/// The first byte of every non-user row of a range other than the first.
pub(crate) const RANGE: u8 = 0x04;
/// The first byte of a range's snapshot install in progress: `0x05 | range id: u64 BE`, then
/// `0x00` the install marker or `0x01 | row` a staged row of the image (`range_image.rs`).
pub(crate) const STAGING: u8 = 0x05;

pub(crate) const KEY_APPLIED: &[u8] = &[META, b'a'];
pub(crate) const KEY_MEMBERS: &[u8] = &[META, b'm'];
pub(crate) const SESSION_PREFIX: &[u8] = &[META, b's'];
/// The user-row layout version (`keyspace.rs`); absent in a data directory of the first layout
/// (raw values), which opening converts.
pub(crate) const KEY_LAYOUT: &[u8] = &[META, b'L'];
pub(crate) const KEY_COUNTS: &[u8] = &[META, b'c'];
pub(crate) const KEY_CLOCK: &[u8] = &[META, b't'];
pub(crate) const WATCH_PREFIX: &[u8] = &[META, b'w'];
pub(crate) const KEY_FLUSHED: &[u8] = &[META, b'f'];
pub(crate) const KEY_DESCRIPTOR: &[u8] = &[META, b'r'];
/// The next range id to hand out (`split.rs`); the first range's alone.
pub(crate) const KEY_NEXT_RANGE_ID: &[u8] = &[META, b'n'];

/// A session row's key after its prefix: the client id.
const CLIENT_LEN: usize = 8;
/// An index row's key after its prefix and tag: the deadline or the hash, then the user key.
pub(crate) const INDEX_ORDER_LEN: usize = 8;

/// The user row of `key`, shared by every range.
pub(crate) fn user_row(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(USER);
    k.extend_from_slice(key);
    k
}

/// The keys of one range's rows (all but user rows) in the shared state database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StateKeys {
    /// Empty for the first range.
    prefix: Vec<u8>,
}

impl StateKeys {
    pub(crate) fn of(range: RangeId) -> Self {
        let prefix = if range == FIRST_RANGE {
            Vec::new()
        } else {
            let mut p = vec![RANGE];
            p.extend_from_slice(&range.to_be_bytes());
            p
        };
        Self { prefix }
    }

    /// The key intervals `[from, to)` that hold this range's own rows (every row but the
    /// user rows), in key order.
    pub(crate) fn own_slices(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        if self.is_first() {
            return vec![(vec![META], vec![USER]), (vec![EXPIRY], vec![RANGE])];
        }
        vec![(self.prefix.clone(), next_id_prefix(RANGE, &self.prefix))]
    }

    fn staging_prefix(&self) -> Vec<u8> {
        let mut p = vec![STAGING];
        p.extend_from_slice(&self.id_bytes());
        p
    }

    fn id_bytes(&self) -> [u8; 8] {
        match self.prefix.get(1..) {
            Some(id) if !id.is_empty() => id.try_into().unwrap_or_default(),
            _ => FIRST_RANGE.to_be_bytes(),
        }
    }

    /// The row marking a committed install of this range's image (`range_image.rs`).
    pub(crate) fn install_marker(&self) -> Vec<u8> {
        let mut k = self.staging_prefix();
        k.push(0x00);
        k
    }

    /// Where the image row `row` waits while the install is staged.
    pub(crate) fn staged(&self, row: &[u8]) -> Vec<u8> {
        let mut k = self.staging_prefix();
        k.push(0x01);
        k.extend_from_slice(row);
        k
    }

    /// The interval of staged rows.
    pub(crate) fn staged_slice(&self) -> (Vec<u8>, Vec<u8>) {
        let mut from = self.staging_prefix();
        from.push(0x01);
        let mut to = self.staging_prefix();
        to.push(0x02);
        (from, to)
    }

    /// The image row a staged row stands for.
    pub(crate) fn unstaged<'a>(&self, staged: &'a [u8]) -> Option<&'a [u8]> {
        staged
            .strip_prefix(self.staging_prefix().as_slice())?
            .strip_prefix(&[0x01])
    }

    pub(crate) fn is_first(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The key of a row as the first range has it, behind this range's prefix.
    fn with(&self, parts: &[&[u8]]) -> Vec<u8> {
        let len = self.prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut k = Vec::with_capacity(len);
        k.extend_from_slice(&self.prefix);
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }

    /// The row as the first range has it, if `row` is one of this range's rows.
    pub(crate) fn local<'a>(&self, row: &'a [u8]) -> Option<&'a [u8]> {
        row.strip_prefix(self.prefix.as_slice())
    }

    pub(crate) fn applied(&self) -> Vec<u8> {
        self.with(&[KEY_APPLIED])
    }

    pub(crate) fn members(&self) -> Vec<u8> {
        self.with(&[KEY_MEMBERS])
    }

    pub(crate) fn layout(&self) -> Vec<u8> {
        self.with(&[KEY_LAYOUT])
    }

    pub(crate) fn counts(&self) -> Vec<u8> {
        self.with(&[KEY_COUNTS])
    }

    pub(crate) fn clock(&self) -> Vec<u8> {
        self.with(&[KEY_CLOCK])
    }

    pub(crate) fn descriptor(&self) -> Vec<u8> {
        self.with(&[KEY_DESCRIPTOR])
    }

    pub(crate) fn next_range_id(&self) -> Vec<u8> {
        self.with(&[KEY_NEXT_RANGE_ID])
    }

    /// The row of this range that stands where `row` stands among `other`'s rows (`None` if
    /// `row` is not one of `other`'s): a split copies and moves rows to the new range so.
    pub(crate) fn rebased(&self, other: &StateKeys, row: &[u8]) -> Option<Vec<u8>> {
        Some(self.with(&[other.local(row)?]))
    }

    /// The range whose rows behind `tag | range id` ([`RANGE`]: its own rows, [`STAGING`]:
    /// its install) `row` is one of; `None` for any other row.
    pub(crate) fn range_of_row(tag: u8, row: &[u8]) -> Option<RangeId> {
        let id = row.strip_prefix(&[tag])?.get(..8)?;
        Some(u64::from_be_bytes(id.try_into().ok()?))
    }

    pub(crate) fn flushed(&self) -> Vec<u8> {
        self.with(&[KEY_FLUSHED])
    }

    pub(crate) fn session_prefix(&self) -> Vec<u8> {
        self.with(&[SESSION_PREFIX])
    }

    pub(crate) fn session(&self, client: u64) -> Vec<u8> {
        self.with(&[SESSION_PREFIX, &client.to_be_bytes()])
    }

    /// The client of a session row; `None` if `row` is not a well-formed one of this range.
    pub(crate) fn client_of_session(&self, row: &[u8]) -> Option<u64> {
        let id = self.local(row)?.strip_prefix(SESSION_PREFIX)?;
        let id: [u8; CLIENT_LEN] = id.try_into().ok()?;
        Some(u64::from_be_bytes(id))
    }

    pub(crate) fn watch_prefix(&self) -> Vec<u8> {
        self.with(&[WATCH_PREFIX])
    }

    pub(crate) fn watch_bucket(&self, bucket: u16) -> Vec<u8> {
        self.with(&[WATCH_PREFIX, &bucket.to_be_bytes()])
    }

    /// The bucket of a WATCH row of this range; `None` for any other row.
    pub(crate) fn bucket_of_watch_row(&self, row: &[u8]) -> Option<u16> {
        match self.local(row)?.strip_prefix(WATCH_PREFIX)? {
            [hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }

    pub(crate) fn expiry_prefix(&self) -> Vec<u8> {
        self.with(&[&[EXPIRY]])
    }

    pub(crate) fn expiry(&self, deadline: u64, key: &[u8]) -> Vec<u8> {
        self.with(&[&[EXPIRY], &deadline.to_be_bytes(), key])
    }

    pub(crate) fn hashed_prefix(&self) -> Vec<u8> {
        self.with(&[&[HASHED]])
    }

    pub(crate) fn hashed(&self, hash: u64, key: &[u8]) -> Vec<u8> {
        self.with(&[&[HASHED], &hash.to_be_bytes(), key])
    }

    /// The deadline or hash and the user key of an index row of this range with tag `tag`.
    pub(crate) fn index_entry<'a>(&self, tag: u8, row: &'a [u8]) -> Option<(u64, &'a [u8])> {
        let rest = self.local(row)?.strip_prefix(&[tag])?;
        if rest.len() < INDEX_ORDER_LEN {
            return None;
        }
        let (order, key) = rest.split_at(INDEX_ORDER_LEN);
        let order: [u8; INDEX_ORDER_LEN] = order.try_into().ok()?;
        Some((u64::from_be_bytes(order), key))
    }
}

/// The prefix after `tag | id` (`tag | id + 1`, or `tag + 1` after the last id).
fn next_id_prefix(tag: u8, prefix: &[u8]) -> Vec<u8> {
    let id = prefix
        .get(1..)
        .and_then(|id| <[u8; 8]>::try_from(id).ok())
        .map(u64::from_be_bytes);
    match id.and_then(|id| id.checked_add(1)) {
        Some(next) => {
            let mut p = vec![tag];
            p.extend_from_slice(&next.to_be_bytes());
            p
        }
        None => vec![tag + 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_range_keeps_the_unprefixed_rows() {
        let k = StateKeys::of(FIRST_RANGE);
        assert_eq!(k.applied(), b"\x00a");
        assert_eq!(k.session(0x0102), b"\x00s\0\0\0\0\0\0\x01\x02");
        assert_eq!(k.expiry(7, b"k"), b"\x02\0\0\0\0\0\0\0\x07k");
        assert_eq!(k.hashed(9, b"k"), b"\x03\0\0\0\0\0\0\0\x09k");
        assert_eq!(k.watch_bucket(0x0a0b), b"\x00w\x0a\x0b");
    }

    #[test]
    fn another_range_s_rows_sit_apart_from_the_first_range_s_and_the_user_rows() {
        let first = StateKeys::of(FIRST_RANGE);
        let second = StateKeys::of(2);
        let rows = |k: &StateKeys| {
            vec![
                k.applied(),
                k.members(),
                k.layout(),
                k.counts(),
                k.clock(),
                k.descriptor(),
                k.flushed(),
                k.session(u64::MAX),
                k.watch_bucket(u16::MAX),
                k.expiry(u64::MAX, &[0xff; 4]),
                k.hashed(u64::MAX, &[0xff; 4]),
            ]
        };
        // Every first-range row and every user row sorts before every row of range 2.
        let above_first = rows(&first)
            .into_iter()
            .chain([user_row(&[0xff; 64])])
            .max()
            .unwrap();
        for row in rows(&second) {
            assert!(row > above_first, "{row:02x?}");
            assert_eq!(second.local(&row).map(|_| ()), Some(()));
            assert_eq!(StateKeys::of(3).local(&row), None, "{row:02x?}");
        }
        assert_eq!(second.client_of_session(&second.session(42)), Some(42));
        assert_eq!(first.client_of_session(&second.session(42)), None);
        assert_eq!(
            second.index_entry(EXPIRY, &second.expiry(5, b"key")),
            Some((5, &b"key"[..]))
        );
        assert_eq!(second.index_entry(HASHED, &second.expiry(5, b"key")), None);
    }
}
