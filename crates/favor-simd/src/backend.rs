//! Backends: one generic implementation of [`Kernels`] over a pulp token, and the per-ISA
//! constructors that prove the CPU supports it.

use crate::gemm::{Mat, gemm};
use crate::ops;
use favor_core::{Activation, Kernels, ProjectionRef};
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
                m: usize, n: usize, k: usize, a: Mat<'a, T>, b: Mat<'a, T>,
                c: &'a mut [T], ldc: usize, acc: bool,
            } -> (), |s| { gemm(s, m, n, k, a, b, c, ldc, 1.0, acc) });
            // The feature map's projection: the data scale rides on the GEMM's store and the
            // row maxima are taken while the rows are still in cache, all in one dispatch.
            op!(Project<'a> {
                rows: usize, x: &'a [T], p: ProjectionRef<'a, T>, scale: T,
                out: &'a mut [T], ldo: usize, row_max: &'a mut [T],
            } -> (), |s| {
                let (m, d) = (p.features, p.dim);
                let a = Mat { data: x, rs: d, cs: 1 };
                let b = match p.wt {
                    Some(wt) => Mat { data: wt, rs: m, cs: 1 },
                    None => Mat { data: p.w, rs: 1, cs: d },
                };
                gemm(s, rows, m, d, a, b, out, ldo, scale, false);
                for (r, mx) in row_max[..rows].iter_mut().enumerate() {
                    *mx = ops::max(s, &out[r * ldo..r * ldo + m]);
                }
            });
            // All rows of the causal tile in one dispatch: row i is a GEMV over i + 1 keys.
            op!(Tril<'a> {
                m: usize, n: usize, a: &'a [T], lda: usize, b: &'a [T], ldb: usize,
                c: &'a mut [T], ldc: usize, acc: bool,
            } -> (), |s| {
                for i in 0..m {
                    let ai = Mat { data: &a[i * lda..], rs: lda, cs: 1 };
                    let bm = Mat { data: b, rs: ldb, cs: 1 };
                    gemm(s, 1, n, i + 1, ai, bm, &mut c[i * ldc..], ldc, 1.0, acc);
                }
            });
            op!(Fold<'a> { hi: &'a mut [T], lo: &'a mut [T] } -> (),
                |s| { ops::fold(s, hi, lo) });
            op!(RingQuery<'a> {
                m: usize, dv: usize, hi: &'a [T], keys: &'a [T], values: &'a [T], r: usize,
                q: &'a [T], out: &'a mut [T],
            } -> T, |s| { ops::ring_query(s, m, dv, hi, keys, values, r, q, out) });
            op!(FoldRank<'a> {
                m: usize, dv: usize, hi: &'a mut [T], lo: &'a mut [T], keys: &'a [T],
                values: &'a [T], r: usize,
            } -> (), |s| { ops::fold_rank(s, m, dv, hi, lo, keys, values, r) });
            op!(Dot<'a> { x: &'a [T], y: &'a [T] } -> T, |s| { ops::dot(s, x, y) });
            op!(Axpy<'a> { alpha: T, x: &'a [T], y: &'a mut [T] } -> (),
                |s| { ops::axpy(s, alpha, x, y) });
            op!(Scale<'a> { alpha: T, x: &'a mut [T] } -> (), |s| { ops::scale(s, alpha, x) });
            op!(Max<'a> { x: &'a [T] } -> T, |s| { ops::max(s, x) });

            #[allow(clippy::too_many_arguments)]
            pub(super) fn gemm_op<S: Simd>(
                simd: S, m: usize, n: usize, k: usize, a: Mat<'_, T>, b: Mat<'_, T>,
                c: &mut [T], ldc: usize, acc: bool,
            ) {
                simd.vectorize(Gemm { m, n, k, a, b, c, ldc, acc })
            }
            #[allow(clippy::too_many_arguments)]
            pub(super) fn project_op<S: Simd>(
                simd: S, rows: usize, x: &[T], p: ProjectionRef<'_, T>, scale: T,
                out: &mut [T], ldo: usize, row_max: &mut [T],
            ) {
                simd.vectorize(Project { rows, x, p, scale, out, ldo, row_max })
            }
            #[allow(clippy::too_many_arguments)]
            pub(super) fn tril_op<S: Simd>(
                simd: S, m: usize, n: usize, a: &[T], lda: usize, b: &[T], ldb: usize,
                c: &mut [T], ldc: usize, acc: bool,
            ) {
                simd.vectorize(Tril { m, n, a, lda, b, ldb, c, ldc, acc })
            }
            #[allow(clippy::too_many_arguments)]
            pub(super) fn fold_op<S: Simd>(simd: S, hi: &mut [T], lo: &mut [T]) {
                simd.vectorize(Fold { hi, lo })
            }
            #[allow(clippy::too_many_arguments)]
            pub(super) fn ring_query_op<S: Simd>(
                simd: S, m: usize, dv: usize, hi: &[T], keys: &[T], values: &[T], r: usize,
                q: &[T], out: &mut [T],
            ) -> T {
                simd.vectorize(RingQuery { m, dv, hi, keys, values, r, q, out })
            }
            #[allow(clippy::too_many_arguments)]
            pub(super) fn fold_rank_op<S: Simd>(
                simd: S, m: usize, dv: usize, hi: &mut [T], lo: &mut [T], keys: &[T],
                values: &[T], r: usize,
            ) {
                simd.vectorize(FoldRank { m, dv, hi, lo, keys, values, r })
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

/// The three GEMM layouts of the trait as strided views, plus the BLAS-1 kernels.
macro_rules! shared_methods {
    ($t:ty, $module:ident) => {
        fn name(&self) -> &'static str {
            self.name
        }
        fn gemm_nt(
            &self,
            m: usize,
            n: usize,
            k: usize,
            a: &[$t],
            lda: usize,
            b: &[$t],
            ldb: usize,
            c: &mut [$t],
            ldc: usize,
            accumulate: bool,
        ) {
            let a = Mat {
                data: a,
                rs: lda,
                cs: 1,
            };
            let b = Mat {
                data: b,
                rs: 1,
                cs: ldb,
            };
            $module::gemm_op(self.simd, m, n, k, a, b, c, ldc, accumulate)
        }
        fn gemm_nn(
            &self,
            m: usize,
            n: usize,
            k: usize,
            a: &[$t],
            lda: usize,
            b: &[$t],
            ldb: usize,
            c: &mut [$t],
            ldc: usize,
            accumulate: bool,
        ) {
            let a = Mat {
                data: a,
                rs: lda,
                cs: 1,
            };
            let b = Mat {
                data: b,
                rs: ldb,
                cs: 1,
            };
            $module::gemm_op(self.simd, m, n, k, a, b, c, ldc, accumulate)
        }
        fn gemm_tn(
            &self,
            m: usize,
            n: usize,
            k: usize,
            a: &[$t],
            lda: usize,
            b: &[$t],
            ldb: usize,
            c: &mut [$t],
            ldc: usize,
            accumulate: bool,
        ) {
            let a = Mat {
                data: a,
                rs: 1,
                cs: lda,
            };
            let b = Mat {
                data: b,
                rs: ldb,
                cs: 1,
            };
            $module::gemm_op(self.simd, m, n, k, a, b, c, ldc, accumulate)
        }
        fn fold(&self, hi: &mut [$t], lo: &mut [$t]) {
            $module::fold_op(self.simd, hi, lo)
        }
        fn ring_query(
            &self,
            m: usize,
            dv: usize,
            hi: &[$t],
            keys: &[$t],
            values: &[$t],
            r: usize,
            q: &[$t],
            out: &mut [$t],
        ) -> $t {
            $module::ring_query_op(self.simd, m, dv, hi, keys, values, r, q, out)
        }
        fn fold_rank(
            &self,
            m: usize,
            dv: usize,
            hi: &mut [$t],
            lo: &mut [$t],
            keys: &[$t],
            values: &[$t],
            r: usize,
        ) {
            $module::fold_rank_op(self.simd, m, dv, hi, lo, keys, values, r)
        }
        fn gemm_tril_nn(
            &self,
            m: usize,
            n: usize,
            a: &[$t],
            lda: usize,
            b: &[$t],
            ldb: usize,
            c: &mut [$t],
            ldc: usize,
            accumulate: bool,
        ) {
            $module::tril_op(self.simd, m, n, a, lda, b, ldb, c, ldc, accumulate)
        }
        fn project(
            &self,
            rows: usize,
            x: &[$t],
            p: ProjectionRef<'_, $t>,
            scale: $t,
            out: &mut [$t],
            ldo: usize,
            row_max: &mut [$t],
        ) {
            $module::project_op(self.simd, rows, x, p, scale, out, ldo, row_max)
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
