//! The search's memo: sets of linearized operations as compact bitsets, the positions already
//! explored, the ones known to fail (with the unknown operations they failed with), and the
//! small fast hasher they are kept with.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::search::State;

/// A set of search ids as a bitset that knows its leading full words and (roughly) its last
/// non-zero word, so that its compact form costs the width of its "ragged" middle only.
pub(super) struct Bits {
    words: Vec<u64>,
    /// `words[..full]` are all ones.
    full: usize,
    /// `words[hi..]` are all zero; `hi >= full`.
    hi: usize,
}

impl Bits {
    pub(super) fn new(n: usize) -> Self {
        Self {
            words: vec![0; n.div_ceil(64)],
            full: 0,
            hi: 0,
        }
    }

    #[inline]
    pub(super) fn set(&mut self, i: usize) {
        let w = i / 64;
        self.words[w] |= 1 << (i % 64);
        self.hi = self.hi.max(w + 1);
        while self.full < self.words.len() && self.words[self.full] == u64::MAX {
            self.full += 1;
        }
    }

    #[inline]
    pub(super) fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    #[inline]
    pub(super) fn clear(&mut self, i: usize) {
        let w = i / 64;
        self.words[w] &= !(1 << (i % 64));
        self.full = self.full.min(w);
    }

    /// The words up to the trailing zero ones.
    #[inline]
    pub(super) fn prefix(&mut self) -> &[u64] {
        self.middle();
        &self.words[..self.hi]
    }

    /// The words between the full ones and the trailing zero ones.
    #[inline]
    pub(super) fn middle(&mut self) -> &[u64] {
        while self.hi > self.full && self.words[self.hi - 1] == 0 {
            self.hi -= 1;
        }
        &self.words[self.full..self.hi]
    }
}

/// Where the search stands, but for which unknown operations are linearized.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct Position<const N: usize> {
    state: State<N>,
    /// Whether the last operation linearized is an unknown one (which restricts the next moves).
    in_run: bool,
    ok_full: u32,
    /// The completed operations linearized, past the `ok_full` full words.
    ok: Box<[u64]>,
}

/// A memoised search node: the position and the unknown operations linearized.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct MemoKey<const N: usize> {
    pos: Position<N>,
    /// Trailing zero words trimmed.
    unknown: Box<[u64]>,
}

impl<const N: usize> MemoKey<N> {
    pub(super) fn new(state: State<N>, in_run: bool, ok: &mut Bits, unknown: &mut Bits) -> Self {
        let ok_full = ok.full as u32;
        Self {
            pos: Position {
                state,
                in_run,
                ok_full,
                ok: ok.middle().into(),
            },
            unknown: unknown.prefix().into(),
        }
    }
}

/// Positions known to fail, each with the sets of unknown operations it failed with. A node whose
/// unknown set contains one of those fails too: it has the same moves but fewer unknown ones
/// (which a linearization may always leave out), so the search skips it.
#[derive(Default)]
pub(super) struct Failed<const N: usize>(
    HashMap<Position<N>, Vec<Box<[u64]>>, BuildHasherDefault<FxHasher>>,
);

impl<const N: usize> Failed<N> {
    pub(super) fn subsumes(&self, key: &MemoKey<N>) -> bool {
        self.0.get(&key.pos).is_some_and(|sets| {
            sets.iter().any(|failed| {
                failed.len() <= key.unknown.len()
                    && failed
                        .iter()
                        .zip(&key.unknown[..])
                        .all(|(f, u)| f & !u == 0)
            })
        })
    }

    pub(super) fn insert(&mut self, key: MemoKey<N>) {
        self.0.entry(key.pos).or_default().push(key.unknown);
    }
}

/// A small fast hasher (FxHash's mixing with a final avalanche); the cache is only ever asked
/// about membership, so its quality affects speed, never the answer.
#[derive(Default)]
pub(super) struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}
