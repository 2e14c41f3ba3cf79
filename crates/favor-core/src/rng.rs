//! Deterministic randomness: a `u64` seed → xoshiro256++ → standard normals.
//!
//! The same seed yields bit-identical numbers on every platform: xoshiro256++ is integer
//! arithmetic, and the Gaussian transform uses only `libm` (pure Rust, no platform libm)
//! with operations that Rust never fuses or reorders.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A stream of standard normal `f64` values, reproducible from a `u64` seed.
///
/// Method (stable across versions; changing it is a breaking change pinned by golden tests):
/// the generator is `Xoshiro256PlusPlus::seed_from_u64(seed)` (SplitMix64 expansion). Each
/// pair of outputs takes two 64-bit words `a`, `b`, forms `u1 = ((a >> 11) + 1)·2⁻⁵³ ∈ (0, 1]`
/// and `u2 = (b >> 11)·2⁻⁵³ ∈ [0, 1)`, and applies Box–Muller:
/// `r = √(−2 ln u1)`, returning `r·cos(2πu2)` then `r·sin(2πu2)`.
///
/// ```
/// use favor_core::Normals;
/// let mut a = Normals::new(7);
/// let mut b = Normals::new(7);
/// assert_eq!(a.next_f64().to_bits(), b.next_f64().to_bits());
/// ```
#[derive(Clone, Debug)]
pub struct Normals {
    rng: Xoshiro256PlusPlus,
    spare: Option<f64>,
}

const TWO_POW_M53: f64 = 1.0 / 9_007_199_254_740_992.0;

impl Normals {
    /// Starts the stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            spare: None,
        }
    }

    /// The next standard normal sample.
    pub fn next_f64(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = ((self.rng.next_u64() >> 11) + 1) as f64 * TWO_POW_M53;
        let u2 = (self.rng.next_u64() >> 11) as f64 * TWO_POW_M53;
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let theta = 2.0 * core::f64::consts::PI * u2;
        self.spare = Some(r * libm::sin(theta));
        r * libm::cos(theta)
    }

    /// The next sample rounded to `T`.
    pub fn sample<T: crate::Float>(&mut self) -> T {
        T::from_f64(self.next_f64())
    }

    /// Fills `out` with samples.
    pub fn fill<T: crate::Float>(&mut self, out: &mut [T]) {
        for x in out {
            *x = self.sample();
        }
    }
}
