//! The scalar types favor computes in.

use core::fmt::{Debug, Display};

/// A floating-point type favor can compute in: `f32` (the fast path) or `f64` (the reference).
///
/// Everything transcendental goes through [`num_traits::Float`], which in this `no_std`
/// crate is backed by the pure-Rust `libm`, so results do not depend on the platform's C
/// library.
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
    /// Converts a count to this type (rounding to nearest for huge counts).
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

impl Float for f32 {
    const DTYPE_TAG: u32 = 4;
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
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}
