//! Turning fuzzer bytes into bounded, finite inputs.
//!
//! Sizes come from [`Unstructured::int_in_range`], so every case is small by construction.
//! Floating-point values are never raw bit patterns: they are built from small integers (a
//! 16-bit grid, or a sign, a binary exponent in a stated range and a 23-bit mantissa), so
//! they are finite, exactly representable in `f32` *and* `f64` (the same case runs in both
//! types with identical inputs), and stay inside the range each oracle documents.
//!
//! Long vectors would need more bytes than a fuzz input holds, so bulk data comes from a
//! SplitMix64 stream whose seed, scale and shape of distribution the input chooses, followed
//! by a few element *patches* the input sets directly (the adversarial values).

use arbitrary::{Result, Unstructured};

/// SplitMix64: the bulk-data generator (independent of favor-core's own RNG).
#[derive(Debug, Clone)]
pub struct Mix(u64);

impl Mix {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Mix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A point of the grid `{k / 2¹⁵ : −2¹⁵ ≤ k < 2¹⁵}` ⊂ [−1, 1).
    pub fn grid(&mut self) -> f64 {
        grid16((self.next_u64() >> 48) as u16)
    }

    /// `±(1 + f/2²³)·2ᵉ` with e uniform in `emin..=emax` (0 with probability 1/64).
    pub fn wide(&mut self, emin: i32, emax: i32) -> f64 {
        wide_from(self.next_u64(), emin, emax)
    }
}

/// `k / 2¹⁵` for the 16-bit two's-complement integer `k`.
fn grid16(bits: u16) -> f64 {
    f64::from(bits as i16) / 32768.0
}

/// A value `±(1 + f/2²³)·2ᵉ`, `e ∈ emin..=emax`, from 64 random bits; zero 1 time in 64.
fn wide_from(bits: u64, emin: i32, emax: i32) -> f64 {
    if bits & 63 == 0 {
        return 0.0;
    }
    let span = (emax - emin + 1) as u64;
    let e = emin + ((bits >> 6) % span) as i32;
    let mantissa = 1.0 + ((bits >> 24) & 0x7F_FFFF) as f64 / 8_388_608.0;
    let sign = if bits >> 63 == 1 { -1.0 } else { 1.0 };
    sign * mantissa * 2f64.powi(e)
}

/// An integer in `lo..=hi` (the low end when the input is exhausted).
pub fn size(u: &mut Unstructured<'_>, lo: usize, hi: usize) -> Result<usize> {
    u.int_in_range(lo..=hi)
}

/// A point of the 16-bit grid on [−1, 1).
pub fn unit_grid(u: &mut Unstructured<'_>) -> Result<f64> {
    Ok(grid16(u.arbitrary::<u16>()?))
}

/// A finite value `±(1 + f/2²³)·2ᵉ` with `e ∈ emin..=emax`, or 0; exact in f32 when the
/// exponents lie in f32's normal range.
pub fn wide(u: &mut Unstructured<'_>, emin: i32, emax: i32) -> Result<f64> {
    Ok(wide_from(u.arbitrary::<u64>()?, emin, emax))
}

/// How a vector's bulk values are drawn.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `2ᵉ·g`, g on the 16-bit grid, one exponent e for the whole vector.
    Grid(i32),
    /// Each element `±(1+f)·2ᵉ` with its own e in the vector's exponent range.
    Wide,
    /// One value repeated (ties, equal maxima, exact cancellation).
    Constant,
}

/// A vector of `n` finite values whose magnitudes lie in `[2^emin, 2^(emax+1))` or are 0:
/// SplitMix64 bulk data (seed and distribution chosen by the input) plus up to four
/// patched elements set by the input.
pub fn vector(u: &mut Unstructured<'_>, n: usize, emin: i32, emax: i32) -> Result<Vec<f64>> {
    let seed = u.arbitrary::<u64>()?;
    let shape = match u.int_in_range(0u8..=7)? {
        0..=3 => Shape::Grid(u.int_in_range(emin..=emax)?),
        4..=6 => Shape::Wide,
        _ => Shape::Constant,
    };
    let mut mix = Mix::new(seed);
    let constant = mix.wide(emin, emax);
    let mut out: Vec<f64> = (0..n)
        .map(|_| match shape {
            // The grid's smallest step is 2^(e−15): keep it inside [2^emin, …).
            Shape::Grid(e) => clamp_small(mix.grid() * 2f64.powi(e), emin),
            Shape::Wide => mix.wide(emin, emax),
            Shape::Constant => constant,
        })
        .collect();
    let patches = u.int_in_range(0u8..=4)?;
    for _ in 0..patches {
        let i = u.arbitrary::<u16>()? as usize;
        let v = match u.int_in_range(0u8..=3)? {
            0 => 0.0,
            1 => 2f64.powi(emax) * if u.arbitrary::<bool>()? { 1.0 } else { -1.0 },
            _ => wide(u, emin, emax)?,
        };
        if n > 0 {
            out[i % n] = v;
        }
    }
    Ok(out)
}

/// Rounds values below `2^emin` in magnitude to 0 or ±2^emin (keeps the documented range).
fn clamp_small(x: f64, emin: i32) -> f64 {
    let floor = 2f64.powi(emin);
    if x == 0.0 || x.abs() >= floor {
        x
    } else if x.abs() >= floor / 2.0 {
        floor.copysign(x)
    } else {
        0.0
    }
}
