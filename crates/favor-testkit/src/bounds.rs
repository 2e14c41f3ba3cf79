//! Rounding-error vocabulary shared by the oracles (Higham, *Accuracy and Stability of
//! Numerical Algorithms*, ch. 2–3): unit roundoff u, γₙ = nu/(1 − nu), ulp distances, and a
//! comparison that treats overflow at the edge of the range consistently.

use favor_core::Float;

use crate::backends::VisitT;

/// A float type the oracles compute in (`f32` or `f64`), with its bit-level helpers.
pub trait Real: Float + core::fmt::LowerExp {
    /// The type's name, for messages.
    const NAME: &'static str;
    /// The value in f64 (exact).
    fn to64(self) -> f64;
    /// Runs `v` on every SIMD backend (see [`crate::backends::each_simd`]) in this type.
    fn each_simd<V: VisitT<Self>>(v: &mut V);
    /// A monotone integer key: consecutive representable values have consecutive keys, so
    /// the difference of two keys counts the representable steps between them (±0 share 0).
    fn key(self) -> i64;
    /// The value `n` representable steps above `self` (below for negative `n`).
    fn step(self, n: i64) -> Self;
    /// Bits of the value (for bit-identity checks).
    fn bits(self) -> u64;
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    fn to64(self) -> f64 {
        f64::from(self)
    }
    fn each_simd<V: VisitT<Self>>(v: &mut V) {
        crate::backends::each_simd(&mut crate::backends::Typed::<Self, V>(
            v,
            core::marker::PhantomData,
        ));
    }
    fn key(self) -> i64 {
        let i = self.to_bits() as i32;
        i64::from(if i < 0 { i32::MIN - i } else { i })
    }
    fn step(self, n: i64) -> Self {
        let k = (self.key() + n).clamp(i64::from(i32::MIN + 1), i64::from(i32::MAX)) as i32;
        f32::from_bits(if k < 0 {
            (i32::MIN - k) as u32
        } else {
            k as u32
        })
    }
    fn bits(self) -> u64 {
        u64::from(self.to_bits())
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    fn to64(self) -> f64 {
        self
    }
    fn each_simd<V: VisitT<Self>>(v: &mut V) {
        crate::backends::each_simd(&mut crate::backends::Typed::<Self, V>(
            v,
            core::marker::PhantomData,
        ));
    }
    fn key(self) -> i64 {
        let i = self.to_bits() as i64;
        if i < 0 { i64::MIN - i } else { i }
    }
    fn step(self, n: i64) -> Self {
        let k = self.key().saturating_add(n).max(i64::MIN + 1);
        f64::from_bits(if k < 0 {
            (i64::MIN - k) as u64
        } else {
            k as u64
        })
    }
    fn bits(self) -> u64 {
        self.to_bits()
    }
}

/// Unit roundoff u of `T` (half its machine epsilon).
pub fn unit<T: Float>() -> f64 {
    <T as Float>::to_f64(T::epsilon()) / 2.0
}

/// γₙ = nu/(1 − nu): the relative error bound of an n-term sum or dot product in any order.
pub fn gamma(n: usize, u: f64) -> f64 {
    let nu = n as f64 * u;
    assert!(nu < 0.5, "rounding model out of range (n = {n})");
    nu / (1.0 - nu)
}

/// Representable steps between `a` and `b` in `T`.
pub fn ulps<T: Real>(a: T, b: T) -> u64 {
    a.key().abs_diff(b.key())
}

/// The largest distance from `x` to a value within `n` representable steps of it: the
/// absolute error allowed to a result that may be `n` ulps away from `x` (subnormal and
/// binade-crossing steps included).
pub fn step_span<T: Real>(x: T, n: i64) -> f64 {
    let up = (x.step(n).to64() - x.to64()).abs();
    let down = (x.to64() - x.step(-n).to64()).abs();
    up.max(down)
}

/// Whether `got` may stand for `want` within absolute tolerance `tol`, overflow included:
/// equal values (infinities of one sign too) pass; NaN matches only NaN; a finite value
/// matches an infinity only if it is within `tol` of the overflow threshold, i.e. the exact
/// result sits at the edge where one evaluation rounds to the largest finite value and the
/// other to infinity.
pub fn close<T: Real>(got: T, want: T, tol: f64) -> bool {
    let (g, w) = (got.to64(), want.to64());
    if g == w {
        return true;
    }
    if g.is_nan() || w.is_nan() {
        return g.is_nan() && w.is_nan();
    }
    let max = T::max_value().to64();
    match (g.is_infinite(), w.is_infinite()) {
        (false, false) => (g - w).abs() <= tol,
        (true, false) => g.signum() == w.signum() && w.abs() + tol >= max,
        (false, true) => g.signum() == w.signum() && g.abs() + tol >= max,
        (true, true) => false,
    }
}

/// Largest |x| over a slice, in f64.
pub fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |a, &b| a.max(b.abs()))
}
