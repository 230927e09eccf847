//! Key ranges: which Raft group owns which keys once the keyspace is split among groups.
//!
//! A range owns the keys `[start, end)` (`end: None` is "every key after start"); a new cluster
//! has one range, [`FIRST_RANGE`], owning every key. Ranges only split (there are no merges): at
//! a split key strictly inside its bounds, the left half keeps the parent's id and start, the
//! right half gets a new id and starts at the split key. Both halves take an epoch one above the
//! parent's.
//!
//! **Why epochs order everything.** For any one key, the ranges that owned it over time form a
//! chain of splits, each raising the epoch, so their epochs strictly grow. Two descriptors that
//! share a key therefore never have the same epoch unless they are the same descriptor, and the
//! one with the higher epoch is the newer truth. That single rule lets any node merge what it
//! hears, in any order and from any time, into a table with no overlap ([`RangeTable::learn`]),
//! and lets a split proposed against a range that has split since be refused at apply
//! ([`Split::apply_to`]): every replica decides alike from the same log.
//!
//! **What a command may touch.** A command is applied by a range only if every key it names
//! lies inside the range's bounds at the moment it is applied ([`RangeDescriptor::check_owns`]);
//! otherwise it is refused, never applied, and the client retries against the range that owns
//! the key now. A write naming keys of two ranges is refused before it is proposed
//! ([`RangeTable::single_owner`]).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use bytes::Bytes;

use crate::codec::{put_bytes, put_opt_bytes, put_u64, seal, unseal, Reader};
use crate::command::MAX_KEY_LEN;
use crate::error::DecodeError;

#[cfg(test)]
mod tests;

/// Names a range (and its Raft group) for its whole life; never reused.
pub type RangeId = u64;

/// The range every cluster starts with. It keeps its id through every split, as the left half.
pub const FIRST_RANGE: RangeId = 1;

const DESCRIPTOR_VERSION: u8 = 1;
const TABLE_VERSION: u8 = 1;
const SPLIT_VERSION: u8 = 1;
/// More ranges than this in one encoded table is taken for damage, not for a large cluster.
pub const MAX_RANGES: usize = 1 << 20;

/// One range's bounds and epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeDescriptor {
    pub id: RangeId,
    /// The first key the range owns (empty: from the very first key).
    pub start: Bytes,
    /// The first key after the range (`None`: no end).
    pub end: Option<Bytes>,
    /// Raised by one on both halves of every split.
    pub epoch: u64,
}

/// Why a split cannot be applied. Every replica reaches the same verdict from the same log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitError {
    /// The split names another range than the one applying it.
    WrongRange { split: RangeId, range: RangeId },
    /// The range split (or changed) since the split was proposed.
    StaleEpoch { proposed: u64, current: u64 },
    /// The split key is not strictly inside the range: a half would be empty.
    KeyNotInside { key: Bytes },
    /// The new range's id is taken.
    IdInUse(RangeId),
    /// No range of that id is known here.
    UnknownRange(RangeId),
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitError::WrongRange { split, range } => {
                write!(f, "the split is for range {split}, not range {range}")
            }
            SplitError::StaleEpoch { proposed, current } => write!(
                f,
                "the split was proposed at epoch {proposed} but the range is at epoch {current}"
            ),
            SplitError::KeyNotInside { key } => {
                write!(
                    f,
                    "split key {} is not strictly inside the range",
                    show_key(key)
                )
            }
            SplitError::IdInUse(id) => write!(f, "range id {id} is already in use"),
            SplitError::UnknownRange(id) => write!(f, "no range {id} is known"),
        }
    }
}

impl std::error::Error for SplitError {}

/// A key a range was asked to touch but does not own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotOwned {
    pub range: RangeId,
    pub epoch: u64,
    pub key: Bytes,
}

impl fmt::Display for NotOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "range {} (epoch {}) does not own key {}",
            self.range,
            self.epoch,
            show_key(&self.key)
        )
    }
}

/// Where the keys of one request live, when not in a single known range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The keys belong to two different ranges (Redis Cluster says `CROSSSLOT`).
    Crossing { first: RangeId, other: RangeId },
    /// This table knows no range owning the key (it has not heard of it yet).
    Unknown { key: Bytes },
}

impl RangeDescriptor {
    /// The single range of a new cluster.
    pub fn whole(id: RangeId) -> Self {
        Self {
            id,
            start: Bytes::new(),
            end: None,
            epoch: 1,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_ref() && self.end.as_ref().is_none_or(|end| key < end.as_ref())
    }

    /// Whether some key lies in both ranges.
    pub fn overlaps(&self, other: &RangeDescriptor) -> bool {
        let starts_before_end = |start: &Bytes, end: &Option<Bytes>| {
            end.as_ref().is_none_or(|end| start.as_ref() < end.as_ref())
        };
        starts_before_end(&self.start, &other.end) && starts_before_end(&other.start, &self.end)
    }

    /// Checks, at apply, that every key of a command is this range's; the first one that is not
    /// is named.
    pub fn check_owns<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> Result<(), NotOwned> {
        match keys.into_iter().find(|key| !self.contains(key)) {
            None => Ok(()),
            Some(key) => Err(NotOwned {
                range: self.id,
                epoch: self.epoch,
                key: Bytes::copy_from_slice(key),
            }),
        }
    }

    /// The two halves of this range split at `at`: `[start, at)` keeps the id, `[at, end)` is
    /// `new_id`.
    pub fn split_at(
        &self,
        at: &[u8],
        new_id: RangeId,
    ) -> Result<(RangeDescriptor, RangeDescriptor), SplitError> {
        if new_id == self.id {
            return Err(SplitError::IdInUse(new_id));
        }
        if at <= self.start.as_ref() || !self.contains(at) {
            return Err(SplitError::KeyNotInside {
                key: Bytes::copy_from_slice(at),
            });
        }
        let at = Bytes::copy_from_slice(at);
        let epoch = self.epoch + 1;
        let left = RangeDescriptor {
            id: self.id,
            start: self.start.clone(),
            end: Some(at.clone()),
            epoch,
        };
        let right = RangeDescriptor {
            id: new_id,
            start: at,
            end: self.end.clone(),
            epoch,
        };
        debug_assert!(!left.overlaps(&right));
        debug_assert!(left.end.as_ref() == Some(&right.start));
        Ok((left, right))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![DESCRIPTOR_VERSION];
        self.encode_body(&mut buf);
        seal(&mut buf);
        buf
    }

    pub fn decode(bytes: &[u8]) -> Result<RangeDescriptor, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(unseal(bytes)?));
        match r.u8()? {
            DESCRIPTOR_VERSION => {}
            v => return Err(DecodeError::UnknownVersion(v)),
        }
        let d = Self::decode_body(&mut r)?;
        r.finish()?;
        Ok(d)
    }

    fn encode_body(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.id);
        put_u64(buf, self.epoch);
        put_bytes(buf, &self.start);
        put_opt_bytes(buf, self.end.as_deref());
    }

    fn decode_body(r: &mut Reader) -> Result<RangeDescriptor, DecodeError> {
        let d = RangeDescriptor {
            id: r.u64()?,
            epoch: r.u64()?,
            start: r.bytes("range start", MAX_KEY_LEN)?,
            end: r.opt_bytes("range end", MAX_KEY_LEN)?,
        };
        if d.end
            .as_ref()
            .is_some_and(|end| end.as_ref() <= d.start.as_ref())
        {
            return Err(DecodeError::Invalid(
                "a range that ends at or before its start",
            ));
        }
        Ok(d)
    }
}

/// The split command, as carried in the parent range's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The range to split.
    pub range: RangeId,
    /// Its epoch when the split was proposed: a range that changed since refuses it.
    pub epoch: u64,
    /// The first key of the new right half.
    pub at: Bytes,
    /// The right half's id, allocated before the split was proposed.
    pub new_range: RangeId,
}

impl Split {
    /// The halves `range` becomes when it applies this split, or why it does not.
    pub fn apply_to(
        &self,
        range: &RangeDescriptor,
    ) -> Result<(RangeDescriptor, RangeDescriptor), SplitError> {
        if self.range != range.id {
            return Err(SplitError::WrongRange {
                split: self.range,
                range: range.id,
            });
        }
        if self.epoch != range.epoch {
            return Err(SplitError::StaleEpoch {
                proposed: self.epoch,
                current: range.epoch,
            });
        }
        range.split_at(&self.at, self.new_range)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![SPLIT_VERSION];
        put_u64(&mut buf, self.range);
        put_u64(&mut buf, self.epoch);
        put_bytes(&mut buf, &self.at);
        put_u64(&mut buf, self.new_range);
        seal(&mut buf);
        buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Split, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(unseal(bytes)?));
        match r.u8()? {
            SPLIT_VERSION => {}
            v => return Err(DecodeError::UnknownVersion(v)),
        }
        let split = Split {
            range: r.u64()?,
            epoch: r.u64()?,
            at: r.bytes("split key", MAX_KEY_LEN)?,
            new_range: r.u64()?,
        };
        r.finish()?;
        Ok(split)
    }
}

/// What [`RangeTable::learn`] did with a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    /// It is new; the older descriptors it overlapped (if any) are gone.
    Added { replaced: Vec<RangeId> },
    /// The table already holds it.
    Known,
    /// A newer descriptor overlapping it is known: it was ignored.
    Stale,
}

/// Two descriptors that cannot both be true: they overlap with the same epoch, or one id names
/// two ranges. Only damage or a bug produces them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub known: RangeDescriptor,
    pub offered: RangeDescriptor,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "range descriptors in conflict: known {:?}, offered {:?}",
            self.known, self.offered
        )
    }
}

/// The ranges a node knows, by start key. No two overlap (kept by every method); gaps are
/// allowed (a range not heard of yet) except where [`RangeTable::check_tiling`] is asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeTable {
    by_start: BTreeMap<Bytes, RangeDescriptor>,
    start_of: BTreeMap<RangeId, Bytes>,
}

impl RangeTable {
    /// A new cluster's table: [`FIRST_RANGE`] owns every key.
    pub fn first() -> Self {
        let mut table = Self::default();
        table.insert(RangeDescriptor::whole(FIRST_RANGE));
        table
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// The ranges in key order.
    pub fn ranges(&self) -> impl Iterator<Item = &RangeDescriptor> {
        self.by_start.values()
    }

    pub fn get(&self, id: RangeId) -> Option<&RangeDescriptor> {
        self.start_of.get(&id).and_then(|s| self.by_start.get(s))
    }

    /// The range that owns `key`, if this table knows it.
    pub fn owner(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        let (_, candidate) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        candidate.contains(key).then_some(candidate)
    }

    /// The one range owning every key of a request.
    pub fn single_owner<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<&RangeDescriptor>, Placement> {
        let mut found: Option<&RangeDescriptor> = None;
        for key in keys {
            let owner = self.owner(key).ok_or_else(|| Placement::Unknown {
                key: Bytes::copy_from_slice(key),
            })?;
            match found {
                Some(first) if first.id != owner.id => {
                    return Err(Placement::Crossing {
                        first: first.id,
                        other: owner.id,
                    })
                }
                _ => found = Some(owner),
            }
        }
        Ok(found)
    }

    /// Applies a split of a range this table holds.
    pub fn apply_split(
        &mut self,
        split: &Split,
    ) -> Result<(RangeDescriptor, RangeDescriptor), SplitError> {
        let parent = self
            .get(split.range)
            .ok_or(SplitError::UnknownRange(split.range))?;
        if self.start_of.contains_key(&split.new_range) {
            return Err(SplitError::IdInUse(split.new_range));
        }
        let (left, right) = split.apply_to(parent)?;
        self.insert(left.clone());
        self.insert(right.clone());
        self.debug_check_disjoint();
        Ok((left, right))
    }

    /// Merges a descriptor heard from anywhere: the newer of any two overlapping ones wins.
    pub fn learn(&mut self, offered: RangeDescriptor) -> Result<Learned, Box<Conflict>> {
        let overlapping = self.overlapping(&offered);
        let same_id = self.get(offered.id).cloned();
        for known in overlapping.iter().chain(same_id.iter()) {
            if *known == offered {
                return Ok(Learned::Known);
            }
            if known.epoch == offered.epoch {
                return Err(Box::new(Conflict {
                    known: known.clone(),
                    offered,
                }));
            }
        }
        if let Some(known) = same_id.as_ref().filter(|k| !k.overlaps(&offered)) {
            // A range keeps its start for life, so two descriptors of one id always overlap.
            return Err(Box::new(Conflict {
                known: known.clone(),
                offered,
            }));
        }
        if overlapping.iter().any(|known| known.epoch > offered.epoch) {
            return Ok(Learned::Stale);
        }
        let replaced: Vec<RangeId> = overlapping.iter().map(|d| d.id).collect();
        for old in &overlapping {
            self.remove(old.id);
        }
        self.insert(offered);
        self.debug_check_disjoint();
        Ok(Learned::Added { replaced })
    }

    /// The known ranges sharing a key with `d`, in key order.
    fn overlapping(&self, d: &RangeDescriptor) -> Vec<RangeDescriptor> {
        // The one starting at or before d.start may reach into it; the rest start inside it.
        let before = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(d.start.as_ref())))
            .next_back()
            .map(|(_, r)| r);
        let inside = self
            .by_start
            .range::<[u8], _>((Bound::Excluded(d.start.as_ref()), Bound::Unbounded))
            .map(|(_, r)| r)
            .take_while(|r| {
                d.end
                    .as_ref()
                    .is_none_or(|end| r.start.as_ref() < end.as_ref())
            });
        before
            .into_iter()
            .chain(inside)
            .filter(|r| r.overlaps(d))
            .cloned()
            .collect()
    }

    fn insert(&mut self, d: RangeDescriptor) {
        if let Some(old_start) = self.start_of.insert(d.id, d.start.clone()) {
            if old_start != d.start {
                self.by_start.remove(&old_start);
            }
        }
        self.by_start.insert(d.start.clone(), d);
    }

    fn remove(&mut self, id: RangeId) {
        if let Some(start) = self.start_of.remove(&id) {
            self.by_start.remove(&start);
        }
    }

    /// No key is owned by two ranges.
    pub fn check_disjoint(&self) -> Result<(), String> {
        let mut previous: Option<&RangeDescriptor> = None;
        for d in self.ranges() {
            if let Some(p) = previous {
                let ends_before = p
                    .end
                    .as_ref()
                    .is_some_and(|end| end.as_ref() <= d.start.as_ref());
                if !ends_before {
                    return Err(format!("ranges {} and {} overlap: {p:?} {d:?}", p.id, d.id));
                }
            }
            previous = Some(d);
        }
        if self.start_of.len() != self.by_start.len() {
            return Err(format!(
                "{} ids for {} ranges",
                self.start_of.len(),
                self.by_start.len()
            ));
        }
        Ok(())
    }

    /// Every key is owned by exactly one range: no overlap and no gap.
    pub fn check_tiling(&self) -> Result<(), String> {
        self.check_disjoint()?;
        let mut expected_start: Option<Bytes> = Some(Bytes::new());
        for d in self.ranges() {
            match &expected_start {
                Some(start) if *start == d.start => expected_start = d.end.clone(),
                Some(start) => {
                    return Err(format!(
                        "no range owns the keys from {} up to range {}",
                        show_key(start),
                        d.id
                    ))
                }
                None => return Err(format!("range {} follows a range without end", d.id)),
            }
        }
        match expected_start {
            None => Ok(()),
            Some(start) => Err(format!("no range owns the keys from {}", show_key(&start))),
        }
    }

    fn debug_check_disjoint(&self) {
        debug_assert_eq!(self.check_disjoint(), Ok(()));
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![TABLE_VERSION];
        put_u64(&mut buf, self.len() as u64);
        for d in self.ranges() {
            d.encode_body(&mut buf);
        }
        seal(&mut buf);
        buf
    }

    /// A table as [`RangeTable::encode`] wrote it; overlapping or duplicate ranges are damage.
    pub fn decode(bytes: &[u8]) -> Result<RangeTable, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(unseal(bytes)?));
        match r.u8()? {
            TABLE_VERSION => {}
            v => return Err(DecodeError::UnknownVersion(v)),
        }
        let count = r.u64()?;
        if count > MAX_RANGES as u64 {
            return Err(DecodeError::TooLong {
                what: "range table",
                len: count,
                max: MAX_RANGES as u64,
            });
        }
        let mut table = RangeTable::default();
        for _ in 0..count {
            let d = RangeDescriptor::decode_body(&mut r)?;
            if table.start_of.contains_key(&d.id) || table.by_start.contains_key(&d.start) {
                return Err(DecodeError::Invalid("a range table naming a range twice"));
            }
            table.insert(d);
        }
        r.finish()?;
        table
            .check_disjoint()
            .map_err(|_| DecodeError::Invalid("a range table with overlapping ranges"))?;
        Ok(table)
    }
}

/// A key for messages: printable ASCII as is, anything else escaped, long keys cut.
pub fn show_key(key: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut s: String = key
        .iter()
        .take(SHOWN)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if key.len() > SHOWN {
        s.push_str(&format!("... ({} bytes)", key.len()));
    }
    format!("\"{s}\"")
}
