//! One vocabulary over pulp's per-type method names, so each kernel is written once for f32
//! and f64.

use pulp::Simd;

/// A float type with pulp vector operations. Every method is a thin `#[inline(always)]`
/// forward to the matching `_f32s` / `_f64s` method, so nothing is lost to the abstraction.
pub(crate) trait Real: favor_core::Float {
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
