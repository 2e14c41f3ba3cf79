//! Backends: one generic implementation of [`Kernels`] over a pulp token, and the per-ISA
//! constructors that prove the CPU supports it.

use crate::gemm::gemm_views;
use crate::ops;
use favor_core::{Accum, Activation, Kernels, MatMut, MatRef, ProjectionRef, Ring, gemm_dims};
use pulp::{Simd, WithSimd};

/// favor-core's [`Kernels`] implemented with pulp's SIMD token `S`.
///
/// Obtain one through a per-ISA constructor (`Avx2::new()`, `Avx512::new()`, `Neon::new()`
/// return `None` when the CPU lacks the instructions; each exists only on its architecture),
/// [`Portable::new`] (pulp's one-lane scalar token: the same generic code, no SIMD), or use
/// [`Detected`](crate::Detected).
#[derive(Debug, Clone, Copy)]
pub struct Backend<S> {
    simd: S,
    name: &'static str,
}

/// AVX2 + FMA (x86-64-v3), 8 f32 lanes.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub type Avx2 = Backend<pulp::x86::V3>;

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
impl Backend<pulp::x86::V3> {
    /// The AVX2+FMA backend, if this CPU has AVX2 and FMA.
    pub fn new() -> Option<Self> {
        pulp::x86::V3::try_new().map(|simd| Self { simd, name: "avx2" })
    }
}

/// AVX-512 (x86-64-v4), 16 f32 lanes.
#[cfg(all(feature = "x86-v4", any(target_arch = "x86", target_arch = "x86_64")))]
pub type Avx512 = Backend<pulp::x86::V4>;

#[cfg(all(feature = "x86-v4", any(target_arch = "x86", target_arch = "x86_64")))]
impl Backend<pulp::x86::V4> {
    /// The AVX-512 backend, if this CPU has AVX-512 F/BW/CD/DQ/VL.
    pub fn new() -> Option<Self> {
        pulp::x86::V4::try_new().map(|simd| Self {
            simd,
            name: "avx512",
        })
    }
}

/// NEON (AArch64 Advanced SIMD), 4 f32 lanes.
#[cfg(target_arch = "aarch64")]
pub type Neon = Backend<pulp::aarch64::Neon>;

#[cfg(target_arch = "aarch64")]
impl Backend<pulp::aarch64::Neon> {
    /// The NEON backend, if this CPU has NEON (every AArch64 CPU that runs Rust's std does).
    pub fn new() -> Option<Self> {
        pulp::aarch64::Neon::try_new().map(|simd| Self { simd, name: "neon" })
    }
}

/// The generic kernels on pulp's one-lane scalar token: exercises the SIMD code paths'
/// logic on any CPU (tests), not meant for speed — use [`favor_core::Scalar`] for that.
pub type Portable = Backend<pulp::Scalar>;

impl Backend<pulp::Scalar> {
    /// Always available.
    pub fn new() -> Self {
        Self {
            simd: pulp::Scalar::new(),
            name: "portable",
        }
    }
}

impl Default for Backend<pulp::Scalar> {
    fn default() -> Self {
        Self::new()
    }
}

/// Declares a `WithSimd` op struct whose body runs inside the token's target-feature region.
macro_rules! op {
    ($name:ident <$($lt:lifetime),*> { $($field:ident : $ty:ty),* $(,)? } -> $out:ty,
     |$s:ident| $body:block) => {
        struct $name<$($lt),*> { $($field: $ty),* }
        impl<$($lt),*> WithSimd for $name<$($lt),*> {
            type Output = $out;
            #[inline(always)]
            fn with_simd<S: Simd>(self, $s: S) -> $out {
                let Self { $($field),* } = self;
                $body
            }
        }
    };
}

macro_rules! impl_common {
    ($t:ty, $mod:ident) => {
        mod $mod {
            use super::*;
            type T = $t;

            op!(Gemm<'a> {
                c: MatMut<'a, T>, accum: Accum, a: MatRef<'a, T>, b: MatRef<'a, T>,
            } -> (), |s| { gemm_views(s, c, accum, a, b, 1.0) });
            // The feature map's projection: the data scale rides on the GEMM's store and the
            // row maxima are taken while the rows are still in cache, all in one dispatch.
            op!(Project<'a> {
                x: MatRef<'a, T>, p: ProjectionRef<'a, T>, scale: T, out: MatMut<'a, T>,
                row_max: &'a mut [T],
            } -> (), |s| {
                let (m, d) = (p.features, p.dim);
                let w = match p.wt {
                    Some(wt) => MatRef::row_major(wt, d, m),
                    None => MatRef::row_major(p.w, m, d).t(),
                };
                let mut out = out;
                gemm_views(s, out.rb_mut(), Accum::Overwrite, x, w, scale);
                for (r, mx) in row_max[..x.rows()].iter_mut().enumerate() {
                    let row = out.rb().row(r).expect("project: out needs adjacent columns");
                    *mx = ops::max(s, row);
                }
            });
            // All rows of the causal tile in one dispatch: row i is a GEMV over i + 1 keys.
            op!(Tril<'a> {
                c: MatMut<'a, T>, accum: Accum, a: MatRef<'a, T>, b: MatRef<'a, T>,
            } -> (), |s| {
                let (m, n, _) = gemm_dims(&c, &a, &b);
                let mut c = c;
                for i in 0..m {
                    let ci = c.rb_mut().block(i, 0, 1, n);
                    let (ai, bi) = (a.block(i, 0, 1, i + 1), b.block(0, 0, i + 1, n));
                    gemm_views(s, ci, accum, ai, bi, 1.0);
                }
            });
            op!(Fold<'a> { hi: &'a mut [T], lo: &'a mut [T] } -> (),
                |s| { ops::fold(s, hi, lo) });
            op!(RingQuery<'a> {
                hi: &'a [T], ring: Ring<'a, T>, q: &'a [T], out: &'a mut [T],
            } -> T, |s| { ops::ring_query(s, hi, ring, q, out) });
            op!(FoldRank<'a> {
                hi: &'a mut [T], lo: &'a mut [T], ring: Ring<'a, T>,
            } -> (), |s| { ops::fold_rank(s, hi, lo, ring) });
            op!(Dot<'a> { x: &'a [T], y: &'a [T] } -> T, |s| { ops::dot(s, x, y) });
            op!(Axpy<'a> { alpha: T, x: &'a [T], y: &'a mut [T] } -> (),
                |s| { ops::axpy(s, alpha, x, y) });
            op!(Scale<'a> { alpha: T, x: &'a mut [T] } -> (), |s| { ops::scale(s, alpha, x) });
            op!(Max<'a> { x: &'a [T] } -> T, |s| { ops::max(s, x) });

            pub(super) fn gemm_op<S: Simd>(
                simd: S, c: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>,
            ) {
                simd.vectorize(Gemm { c, accum, a, b })
            }
            pub(super) fn project_op<S: Simd>(
                simd: S, x: MatRef<'_, T>, p: ProjectionRef<'_, T>, scale: T,
                out: MatMut<'_, T>, row_max: &mut [T],
            ) {
                simd.vectorize(Project { x, p, scale, out, row_max })
            }
            pub(super) fn tril_op<S: Simd>(
                simd: S, c: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>,
            ) {
                simd.vectorize(Tril { c, accum, a, b })
            }
            pub(super) fn fold_op<S: Simd>(simd: S, hi: &mut [T], lo: &mut [T]) {
                simd.vectorize(Fold { hi, lo })
            }
            pub(super) fn ring_query_op<S: Simd>(
                simd: S, hi: &[T], ring: Ring<'_, T>, q: &[T], out: &mut [T],
            ) -> T {
                simd.vectorize(RingQuery { hi, ring, q, out })
            }
            pub(super) fn fold_rank_op<S: Simd>(
                simd: S, hi: &mut [T], lo: &mut [T], ring: Ring<'_, T>,
            ) {
                simd.vectorize(FoldRank { hi, lo, ring })
            }
            pub(super) fn dot_op<S: Simd>(simd: S, x: &[T], y: &[T]) -> T {
                simd.vectorize(Dot { x, y })
            }
            pub(super) fn axpy_op<S: Simd>(simd: S, alpha: T, x: &[T], y: &mut [T]) {
                simd.vectorize(Axpy { alpha, x, y })
            }
            pub(super) fn scale_op<S: Simd>(simd: S, alpha: T, x: &mut [T]) {
                simd.vectorize(Scale { alpha, x })
            }
            pub(super) fn max_op<S: Simd>(simd: S, x: &[T]) -> T {
                simd.vectorize(Max { x })
            }
        }
    };
}
impl_common!(f32, common_f32);
impl_common!(f64, common_f64);

op!(ExpShift<'a> { x: &'a mut [f32], shift: f32 } -> (), |s| { ops::exp_shift_f32(s, x, shift) });
op!(MulExp<'a> { x: &'a mut [f32], logs: &'a [f32], shift: f32 } -> (),
    |s| { ops::mul_exp_f32(s, x, logs, shift) });
op!(SinCos<'a> { out: &'a mut [f32], m: usize } -> (), |s| { ops::sin_cos_f32(s, out, m) });
op!(Act<'a> { x: &'a mut [f32], f: Activation<f32>, eps: f32 } -> (),
    |s| { ops::activation_f32(s, x, f, eps) });

/// The GEMMs, the prefix-state kernels and the BLAS-1 kernels, for one element type.
macro_rules! shared_methods {
    ($t:ty, $module:ident) => {
        fn name(&self) -> &'static str {
            self.name
        }
        fn gemm(&self, c: MatMut<'_, $t>, accum: Accum, a: MatRef<'_, $t>, b: MatRef<'_, $t>) {
            $module::gemm_op(self.simd, c, accum, a, b)
        }
        fn gemm_tril(&self, c: MatMut<'_, $t>, accum: Accum, a: MatRef<'_, $t>, b: MatRef<'_, $t>) {
            $module::tril_op(self.simd, c, accum, a, b)
        }
        fn fold(&self, hi: &mut [$t], lo: &mut [$t]) {
            $module::fold_op(self.simd, hi, lo)
        }
        fn ring_query(&self, hi: &[$t], ring: Ring<'_, $t>, q: &[$t], out: &mut [$t]) -> $t {
            $module::ring_query_op(self.simd, hi, ring, q, out)
        }
        fn fold_rank(&self, hi: &mut [$t], lo: &mut [$t], ring: Ring<'_, $t>) {
            $module::fold_rank_op(self.simd, hi, lo, ring)
        }
        fn project(
            &self,
            x: MatRef<'_, $t>,
            p: ProjectionRef<'_, $t>,
            scale: $t,
            out: MatMut<'_, $t>,
            row_max: &mut [$t],
        ) {
            $module::project_op(self.simd, x, p, scale, out, row_max)
        }
        fn dot(&self, a: &[$t], b: &[$t]) -> $t {
            $module::dot_op(self.simd, a, b)
        }
        fn axpy(&self, alpha: $t, x: &[$t], y: &mut [$t]) {
            $module::axpy_op(self.simd, alpha, x, y)
        }
        fn scale(&self, alpha: $t, x: &mut [$t]) {
            $module::scale_op(self.simd, alpha, x)
        }
        fn max(&self, x: &[$t]) -> $t {
            $module::max_op(self.simd, x)
        }
    };
}

impl<S: Simd> Kernels<f32> for Backend<S> {
    shared_methods!(f32, common_f32);

    fn exp_shift(&self, x: &mut [f32], shift: f32) {
        self.simd.vectorize(ExpShift { x, shift })
    }
    fn mul_exp(&self, x: &mut [f32], logs: &[f32], shift: f32) {
        self.simd.vectorize(MulExp { x, logs, shift })
    }
    fn sin_cos(&self, out: &mut [f32], m: usize) {
        self.simd.vectorize(SinCos { out, m })
    }
    fn activation(&self, x: &mut [f32], f: Activation<f32>, eps: f32) {
        self.simd.vectorize(Act { x, f, eps })
    }
}

/// f64 is favor's reference type: its GEMMs and BLAS-1 kernels are vectorised, its
/// transcendental functions are favor-core's scalar (libm) ones.
impl<S: Simd> Kernels<f64> for Backend<S> {
    shared_methods!(f64, common_f64);

    fn exp_shift(&self, x: &mut [f64], shift: f64) {
        favor_core::Scalar.exp_shift(x, shift)
    }
    fn mul_exp(&self, x: &mut [f64], logs: &[f64], shift: f64) {
        favor_core::Scalar.mul_exp(x, logs, shift)
    }
    fn sin_cos(&self, out: &mut [f64], m: usize) {
        Kernels::<f64>::sin_cos(&favor_core::Scalar, out, m)
    }
    fn activation(&self, x: &mut [f64], f: Activation<f64>, eps: f64) {
        favor_core::Scalar.activation(x, f, eps)
    }
}
