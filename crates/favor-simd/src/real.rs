//! One vocabulary over pulp's per-type method names, so each kernel is written once for f32
//! and f64.

use crate::entry::{Act, ExpShift, MulExp, SinCos};
use favor_core::{Activation, Kernels};
use pulp::Simd;

/// A float type with pulp vector operations. Every method is a thin `#[inline(always)]`
/// forward to the matching `_f32s` / `_f64s` method, so nothing is lost to the abstraction.
pub trait Real: favor_core::Float {
    type V<S: Simd>: Copy;
    fn lanes<S: Simd>() -> usize;
    fn vsplat<S: Simd>(s: S, x: Self) -> Self::V<S>;
    /// `a·b + c`, fused where the ISA has FMA.
    fn vfma<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>, c: Self::V<S>) -> Self::V<S>;
    fn vadd<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    fn vsub<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    fn vmul<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    fn vmax<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S>;
    fn reduce_sum<S: Simd>(s: S, a: Self::V<S>) -> Self;
    fn reduce_max<S: Simd>(s: S, a: Self::V<S>) -> Self;
    fn as_simd<S: Simd>(x: &[Self]) -> (&[Self::V<S>], &[Self]);
    fn as_mut_simd<S: Simd>(x: &mut [Self]) -> (&mut [Self::V<S>], &mut [Self]);
    fn load_partial<S: Simd>(s: S, x: &[Self]) -> Self::V<S>;
    fn store_partial<S: Simd>(s: S, x: &mut [Self], v: Self::V<S>);
}

macro_rules! impl_real {
    ($t:ty, $v:ident, $lanes:ident, $splat:ident, $fma:ident, $add:ident, $sub:ident, $mul:ident,
     $max:ident, $rsum:ident, $rmax:ident, $as:ident, $as_mut:ident, $pl:ident, $ps:ident) => {
        impl Real for $t {
            type V<S: Simd> = S::$v;
            #[inline(always)]
            fn lanes<S: Simd>() -> usize {
                S::$lanes
            }
            #[inline(always)]
            fn vsplat<S: Simd>(s: S, x: Self) -> Self::V<S> {
                s.$splat(x)
            }
            #[inline(always)]
            fn vfma<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>, c: Self::V<S>) -> Self::V<S> {
                s.$fma(a, b, c)
            }
            #[inline(always)]
            fn vadd<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S> {
                s.$add(a, b)
            }
            #[inline(always)]
            fn vsub<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S> {
                s.$sub(a, b)
            }
            #[inline(always)]
            fn vmul<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S> {
                s.$mul(a, b)
            }
            #[inline(always)]
            fn vmax<S: Simd>(s: S, a: Self::V<S>, b: Self::V<S>) -> Self::V<S> {
                s.$max(a, b)
            }
            #[inline(always)]
            fn reduce_sum<S: Simd>(s: S, a: Self::V<S>) -> Self {
                s.$rsum(a)
            }
            #[inline(always)]
            fn reduce_max<S: Simd>(s: S, a: Self::V<S>) -> Self {
                s.$rmax(a)
            }
            #[inline(always)]
            fn as_simd<S: Simd>(x: &[Self]) -> (&[Self::V<S>], &[Self]) {
                S::$as(x)
            }
            #[inline(always)]
            fn as_mut_simd<S: Simd>(x: &mut [Self]) -> (&mut [Self::V<S>], &mut [Self]) {
                S::$as_mut(x)
            }
            #[inline(always)]
            fn load_partial<S: Simd>(s: S, x: &[Self]) -> Self::V<S> {
                s.$pl(x)
            }
            #[inline(always)]
            fn store_partial<S: Simd>(s: S, x: &mut [Self], v: Self::V<S>) {
                s.$ps(x, v)
            }
        }
    };
}

impl_real!(
    f32,
    f32s,
    F32_LANES,
    splat_f32s,
    mul_add_e_f32s,
    add_f32s,
    sub_f32s,
    mul_f32s,
    max_f32s,
    reduce_sum_f32s,
    reduce_max_f32s,
    as_simd_f32s,
    as_mut_simd_f32s,
    partial_load_f32s,
    partial_store_f32s
);
impl_real!(
    f64,
    f64s,
    F64_LANES,
    splat_f64s,
    mul_add_e_f64s,
    add_f64s,
    sub_f64s,
    mul_f64s,
    max_f64s,
    reduce_sum_f64s,
    reduce_max_f64s,
    as_simd_f64s,
    as_mut_simd_f64s,
    partial_load_f64s,
    partial_store_f64s
);

/// The kernels favor-simd vectorises for one element type beyond the shared [`Real`]
/// vocabulary: the transcendental maps. f32 runs them on the token; f64, favor's reference
/// type, runs favor-core's scalar (libm) ones.
///
/// Sealed: only f32 and f64 implement it (see [`SimdFloat`](crate::SimdFloat)): a `pub` trait in a private module.
pub trait Elementwise: Real {
    /// [`Kernels::exp_shift`] on `s`.
    fn exp_shift<S: Simd>(s: S, x: &mut [Self], shift: Self);
    /// [`Kernels::mul_exp`] on `s`.
    fn mul_exp<S: Simd>(s: S, x: &mut [Self], logs: &[Self], shift: Self);
    /// [`Kernels::sin_cos`] on `s`.
    fn sin_cos<S: Simd>(s: S, out: &mut [Self], m: usize);
    /// [`Kernels::activation`] on `s`.
    fn activation<S: Simd>(s: S, x: &mut [Self], f: Activation<Self>, eps: Self);
}

impl Elementwise for f32 {
    fn exp_shift<S: Simd>(s: S, x: &mut [f32], shift: f32) {
        s.vectorize(ExpShift { x, shift })
    }
    fn mul_exp<S: Simd>(s: S, x: &mut [f32], logs: &[f32], shift: f32) {
        s.vectorize(MulExp { x, logs, shift })
    }
    fn sin_cos<S: Simd>(s: S, out: &mut [f32], m: usize) {
        s.vectorize(SinCos { out, m })
    }
    fn activation<S: Simd>(s: S, x: &mut [f32], f: Activation<f32>, eps: f32) {
        s.vectorize(Act { x, f, eps })
    }
}

impl Elementwise for f64 {
    fn exp_shift<S: Simd>(_: S, x: &mut [f64], shift: f64) {
        favor_core::Scalar.exp_shift(x, shift)
    }
    fn mul_exp<S: Simd>(_: S, x: &mut [f64], logs: &[f64], shift: f64) {
        favor_core::Scalar.mul_exp(x, logs, shift)
    }
    fn sin_cos<S: Simd>(_: S, out: &mut [f64], m: usize) {
        Kernels::<f64>::sin_cos(&favor_core::Scalar, out, m)
    }
    fn activation<S: Simd>(_: S, x: &mut [f64], f: Activation<f64>, eps: f64) {
        favor_core::Scalar.activation(x, f, eps)
    }
}
