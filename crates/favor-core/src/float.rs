//! The scalar types favor computes in.

use core::fmt::{Debug, Display};

/// A floating-point type favor can compute in: `f32` (the fast path) or `f64` (the reference).
///
/// Everything transcendental goes through the `libm_*` methods, which call the pure-Rust
/// `libm` crate directly. Not [`num_traits::Float::exp`] and friends: those switch to the
/// platform's C library whenever any crate in the build enables num-traits' `std` feature,
/// and then results (and the golden values) would depend on the platform.
pub trait Float:
    num_traits::Float
    + num_traits::FloatConst
    + bytemuck::Pod
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// Size tag written into snapshots (`4` for `f32`, `8` for `f64`).
    const DTYPE_TAG: u32;
    /// Converts from `f64`, rounding to nearest.
    fn from_f64(x: f64) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
    /// `eˣ` from `libm` (< 1 ulp, identical on every platform).
    fn libm_exp(self) -> Self;
    /// `ln x` from `libm`.
    fn libm_ln(self) -> Self;
    /// `√x` from `libm` (correctly rounded).
    fn libm_sqrt(self) -> Self;
    /// `(sin x, cos x)` from `libm`.
    fn libm_sin_cos(self) -> (Self, Self);
    /// Converts a count to this type (rounding to nearest for huge counts).
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

impl Float for f32 {
    const DTYPE_TAG: u32 = 4;
    #[inline(always)]
    fn libm_exp(self) -> Self {
        libm::expf(self)
    }
    #[inline(always)]
    fn libm_ln(self) -> Self {
        libm::logf(self)
    }
    #[inline(always)]
    fn libm_sqrt(self) -> Self {
        libm::sqrtf(self)
    }
    #[inline(always)]
    fn libm_sin_cos(self) -> (Self, Self) {
        libm::sincosf(self)
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Float for f64 {
    const DTYPE_TAG: u32 = 8;
    #[inline(always)]
    fn libm_exp(self) -> Self {
        libm::exp(self)
    }
    #[inline(always)]
    fn libm_ln(self) -> Self {
        libm::log(self)
    }
    #[inline(always)]
    fn libm_sqrt(self) -> Self {
        libm::sqrt(self)
    }
    #[inline(always)]
    fn libm_sin_cos(self) -> (Self, Self) {
        libm::sincos(self)
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}
