//! A small seeded pseudo-random generator whose every output is specified, so that a seed replays
//! the same run on every platform and with every version of this crate's dependencies.
//!
//! The core draws its randomized election timeouts from it (seeded with [`Config::seed`]); the
//! test harness and the simulator draw their schedules from it, so a printed seed replays exactly.
//!
//! # The specification
//!
//! - The generator is **xoshiro256\*\*** (Blackman and Vigna, "Scrambled linear pseudorandom
//!   number generators", 2018): 256 bits of state `s[0..4]`; each output is
//!   `rotl(s[1] * 5, 7) * 9`, then the state advances by `t = s[1] << 17; s[2] ^= s[0];
//!   s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45)` (all arithmetic
//!   wrapping modulo 2^64).
//! - [`SeededRng::new`] fills the state with the first four outputs of **SplitMix64** started at
//!   the seed: `x += 0x9e3779b97f4a7c15; z = x; z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
//!   z = (z ^ (z >> 27)) * 0x94d049bb133111eb; output z ^ (z >> 31)`.
//! - A uniform integer in a span of `n` values ([`SeededRng::below`], [`SeededRng::gen_range`])
//!   takes outputs `x` until the low 64 bits of the 128-bit product `x * n` are at least
//!   `2^64 mod n` (so that every value is equally likely), and returns the product's high 64 bits
//!   added to the range's start. A span covering all of `u64` returns `x` itself.
//! - [`SeededRng::gen_bool`]`(p)` takes one output `x` and returns `(x >> 11) * 2^-53 < p`.
//!
//! [`Config::seed`]: crate::Config::seed

use std::ops::{Range, RangeInclusive};

/// A seeded xoshiro256\*\* generator; see the [module documentation](self) for its exact output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededRng {
    state: [u64; 4],
}

impl SeededRng {
    /// A generator whose state is the first four SplitMix64 outputs from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut splitmix = seed;
        let mut next = || {
            splitmix = splitmix.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = splitmix;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            state: [next(), next(), next(), next()],
        }
    }

    /// A generator with exactly this state, as the reference implementation would start from.
    /// An all-zero state is a fixed point (it outputs zeros forever); [`SeededRng::new`] never
    /// produces it.
    pub fn from_state(state: [u64; 4]) -> Self {
        Self { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform value in `0..bound`.
    ///
    /// # Panics
    ///
    /// If `bound` is zero.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SeededRng::below(0): empty range");
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if product as u64 >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A uniform value in `range` (`a..b` or `a..=b` over `u32`, `u64` or `usize`).
    ///
    /// # Panics
    ///
    /// If the range is empty.
    pub fn gen_range<R: UniformRange>(&mut self, range: R) -> R::Output {
        range.sample(self)
    }

    /// `true` with probability `p` (`p <= 0` never, `p >= 1` always).
    pub fn gen_bool(&mut self, p: f64) -> bool {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        ((self.next_u64() >> 11) as f64) * SCALE < p
    }
}

/// A range of integers [`SeededRng::gen_range`] can draw from.
pub trait UniformRange {
    /// The integer type drawn.
    type Output;
    /// A uniform value of the range, drawn from `rng`.
    fn sample(self, rng: &mut SeededRng) -> Self::Output;
}

/// A uniform value in `start..=end`, as `u64`s.
fn inclusive(rng: &mut SeededRng, start: u64, end: u64) -> u64 {
    assert!(start <= end, "SeededRng::gen_range: empty range");
    match (end - start).checked_add(1) {
        Some(span) => start + rng.below(span),
        None => rng.next_u64(),
    }
}

macro_rules! uniform_ranges {
    ($($t:ty),*) => {$(
        impl UniformRange for Range<$t> {
            type Output = $t;
            fn sample(self, rng: &mut SeededRng) -> $t {
                assert!(self.start < self.end, "SeededRng::gen_range: empty range");
                inclusive(rng, self.start as u64, self.end as u64 - 1) as $t
            }
        }
        impl UniformRange for RangeInclusive<$t> {
            type Output = $t;
            fn sample(self, rng: &mut SeededRng) -> $t {
                inclusive(rng, *self.start() as u64, *self.end() as u64) as $t
            }
        }
    )*};
}

uniform_ranges!(u32, u64, usize);

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference xoshiro256** output from the state {1, 2, 3, 4}.
    #[test]
    fn xoshiro256starstar_matches_the_reference_outputs() {
        let mut rng = SeededRng::from_state([1, 2, 3, 4]);
        let outputs: Vec<u64> = (0..10).map(|_| rng.next_u64()).collect();
        assert_eq!(
            outputs,
            [
                11520,
                0,
                1509978240,
                1215971899390074240,
                1216172134540287360,
                607988272756665600,
                16172922978634559625,
                8476171486693032832,
                10595114339597558777,
                2904607092377533576,
            ]
        );
    }

    /// SplitMix64 from seed 0 starts with 0xe220a8397b1dcdaf, its published first output; the
    /// seeded stream is pinned too, so that a change to seeding cannot pass unnoticed.
    #[test]
    fn seeding_is_splitmix64() {
        let rng = SeededRng::new(0);
        assert_eq!(
            rng.state,
            [
                0xe220_a839_7b1d_cdaf,
                7960286522194355700,
                487617019471545679,
                17909611376780542444
            ]
        );
        let mut rng = SeededRng::new(42);
        let outputs: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            outputs,
            [
                1546998764402558742,
                6990951692964543102,
                12544586762248559009,
                17057574109182124193,
                18295552978065317476
            ]
        );
    }

    #[test]
    fn ranges_stay_in_bounds_and_reach_both_ends() {
        let mut rng = SeededRng::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = rng.gen_range(10u32..15);
            assert!((10..15).contains(&v));
            seen[(v - 10) as usize] = true;
            let w = rng.gen_range(3usize..=3);
            assert_eq!(w, 3);
        }
        assert!(seen.iter().all(|&s| s));
        assert!(rng.gen_range(0..=u64::MAX) > 0 || rng.gen_range(0..=u64::MAX) > 0);
        assert!(!rng.gen_bool(0.0));
        assert!(rng.gen_bool(1.0));
    }

    /// `below` is Lemire's multiply-shift: with a bound of 3 the rejection threshold is
    /// 2^64 mod 3 = 1, so of the reference outputs 11520 is taken (giving 0), 0 is rejected and
    /// 1509978240 is taken; the next raw output is then the reference's fourth.
    #[test]
    fn below_rejects_the_biased_low_products() {
        let mut rng = SeededRng::from_state([1, 2, 3, 4]);
        assert_eq!(rng.below(3), 0);
        assert_eq!(rng.below(3), 0);
        assert_eq!(rng.next_u64(), 1215971899390074240);
        let mut rng = SeededRng::from_state([1, 2, 3, 4]);
        rng.next_u64();
        rng.next_u64();
        // With a bound of 2^64 - 1 the result is the high half of the product, here x - 1.
        assert_eq!(
            rng.below(u64::MAX),
            ((1509978240u128 * u128::from(u64::MAX)) >> 64) as u64
        );
    }
}
