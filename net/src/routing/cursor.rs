//! SCAN's cursor once the keyspace is split into ranges: one decimal integer, as Redis clients
//! expect (several parse it as a u64), naming the range being walked and the place inside it.
//!
//! A range's own cursor is a 64-bit key hash (`kv::state_machine::scan_hash`: its scan index is
//! in hash order), so the range id and the inner cursor cannot both fit whole. The range id
//! takes the top [`RANGE_BITS`] bits and the inner cursor keeps its top bits: resuming rounds it
//! down to the start of its bucket, which can only repeat keys (SCAN allows that), never skip
//! one. A page whose next cursor would round back to where it started makes no progress: the
//! caller walks on inside the range ([`NextCursor::SameBucket`]).
//!
//! Ranges are walked in key order: a range is finished, then the range after it. A split keeps
//! the left half's id and start, so a cursor naming a range that split since finishes the left
//! half and goes on to the right one, which starts after it: every key present throughout the
//! scan is still returned.

use kv::ranges::{RangeId, RangeTable};

/// Bits of the cursor naming the range: ids up to 2^20 - 1 (`kv::ranges::MAX_RANGES`).
pub const RANGE_BITS: u32 = 20;
const INNER_BITS: u32 = 64 - RANGE_BITS;
const INNER_MASK: u64 = (1 << INNER_BITS) - 1;

/// Where a scan goes on: a range and the inner cursor to send it (0: from its start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanPlace {
    pub range: RangeId,
    pub inner: u64,
}

/// The client's cursor for `place`, or None if the range id does not fit.
pub fn encode(place: ScanPlace) -> Option<u64> {
    if place.range == 0 || place.range >> RANGE_BITS != 0 {
        return None;
    }
    Some(place.range << INNER_BITS | place.inner >> RANGE_BITS)
}

/// The place a client's cursor names, rounded down to its bucket; None for 0 (the start) and
/// for a cursor naming range 0, which no encoded cursor does.
pub fn decode(cursor: u64) -> Option<ScanPlace> {
    let range = cursor >> INNER_BITS;
    (range != 0).then_some(ScanPlace {
        range,
        inner: (cursor & INNER_MASK) << RANGE_BITS,
    })
}

/// Where the scan with client cursor `cursor` starts: the first range for 0, and for a cursor
/// naming a range this table does not hold (a cursor from before the first split, which is a
/// bare hash, or from another cluster) the first range too: a restart repeats keys, it never
/// skips one.
pub fn start(cursor: u64, table: &RangeTable) -> Option<ScanPlace> {
    let first = table.ranges().next()?;
    let from_start = ScanPlace {
        range: first.id,
        inner: 0,
    };
    match decode(cursor) {
        Some(place) if table.get(place.range).is_some() => Some(place),
        _ => Some(from_start),
    }
}

/// What follows a page read at `at` whose range answered inner cursor `inner_next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextCursor {
    /// The client's next cursor (0: the scan is over).
    Client(u64),
    /// The next cursor would round back to `at`: read on inside the range from `inner_next`.
    SameBucket,
    /// The range id cannot be put in a cursor.
    RangeIdTooLarge(RangeId),
    /// The table holds no range starting where this one ends (it has not heard of the right
    /// half of a split yet): route again once it has.
    Gap,
}

pub fn next(at: ScanPlace, inner_next: u64, table: &RangeTable) -> NextCursor {
    if inner_next == 0 {
        return after_range(at.range, table);
    }
    let place = ScanPlace {
        range: at.range,
        inner: inner_next,
    };
    match encode(place) {
        None => NextCursor::RangeIdTooLarge(at.range),
        Some(cursor) if decode(cursor).map(|p| p.inner) <= Some(at.inner) => NextCursor::SameBucket,
        Some(cursor) => NextCursor::Client(cursor),
    }
}

/// The cursor past the bucket of `inner`: where a scan stuck in one bucket goes on after
/// reading it for long (keys crafted to share the top bits of their hashes), giving up the
/// rest of that bucket so that the scan ends.
pub fn past_bucket(range: RangeId, inner: u64, table: &RangeTable) -> NextCursor {
    let bucket = inner >> RANGE_BITS;
    if bucket >= INNER_MASK {
        return after_range(range, table);
    }
    match encode(ScanPlace {
        range,
        inner: (bucket + 1) << RANGE_BITS,
    }) {
        Some(cursor) => NextCursor::Client(cursor),
        None => NextCursor::RangeIdTooLarge(range),
    }
}

/// The cursor of the range after `range` in key order, or 0 after the last one.
fn after_range(range: RangeId, table: &RangeTable) -> NextCursor {
    let Some(current) = table.get(range) else {
        return NextCursor::Client(0);
    };
    let Some(end) = current.end.as_ref() else {
        return NextCursor::Client(0);
    };
    match table.owner(end) {
        None => NextCursor::Gap,
        Some(following) => match encode(ScanPlace {
            range: following.id,
            inner: 0,
        }) {
            Some(cursor) => NextCursor::Client(cursor),
            None => NextCursor::RangeIdTooLarge(following.id),
        },
    }
}
