//! The entry points: one pulp [`WithSimd`] struct per kernel, generic over the element type.
//!
//! `Simd::vectorize` runs `with_simd` inside the token's target-feature region, and every
//! kernel below it is `#[inline(always)]`, so the whole kernel is compiled with the ISA's
//! instructions. Structs rather than closures: pulp accepts closures too, but a closure that
//! only borrows its captures is called through a `FnOnce::call_once` shim that is not inlined,
//! and the kernel then runs outside the region (measured: 30× slower, see commit message).

use crate::gemm::{gemm_rows, gemm_views};
use crate::ops;
use crate::real::Real;
use favor_core::{Accum, MatMut, MatRef, ProjectionRef, Ring, gemm_dims};
use pulp::{Simd, WithSimd};

/// `C (+)= alpha·A·B`.
pub(crate) struct Gemm<'a, T> {
    pub c: MatMut<'a, T>,
    pub accum: Accum,
    pub a: MatRef<'a, T>,
    pub b: MatRef<'a, T>,
}

impl<T: Real> WithSimd for Gemm<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        gemm_views(s, self.c, self.accum, self.a, self.b, T::one())
    }
}

/// All rows of the causal tile in one region. Rows go four at a time: the group shares the
/// keys up to its first row's diagonal (one GEMM whose rows share every B vector, sixteen
/// independent FMA chains where one row had four and waited on their latency), then each
/// further row adds its few keys up to its own diagonal. Elements above A's diagonal are
/// never read.
pub(crate) struct Tril<'a, T> {
    pub c: MatMut<'a, T>,
    pub accum: Accum,
    pub a: MatRef<'a, T>,
    pub b: MatRef<'a, T>,
}

/// Rows per group of [`Tril`].
const TRIL_ROWS: usize = 4;
const _: () = assert!(TRIL_ROWS <= crate::gemm::ROWS_MAX);

impl<T: Real> WithSimd for Tril<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self { mut c, accum, a, b } = self;
        let (m, n, _) = gemm_dims(&c, &a, &b);
        if c.col_stride() != 1 || b.col_stride() != 1 {
            // Other layouts (favor-core passes none): one row at a time.
            for i in 0..m {
                let ci = c.rb_mut().block(i, 0, 1, n);
                let (ai, bi) = (a.block(i, 0, 1, i + 1), b.block(0, 0, i + 1, n));
                gemm_views(s, ci, accum, ai, bi, T::one());
            }
            return;
        }
        for i in (0..m).step_by(TRIL_ROWS) {
            let g = TRIL_ROWS.min(m - i);
            let (cg, ag, bg) = (
                c.rb_mut().block(i, 0, g, n),
                a.block(i, 0, g, i + 1),
                b.block(0, 0, i + 1, n),
            );
            gemm_rows(s, cg, accum, ag, bg);
            for r in 1..g {
                let (cr, ar, br) = (
                    c.rb_mut().block(i + r, 0, 1, n),
                    a.block(i + r, i + 1, 1, r),
                    b.block(i + 1, 0, r, n),
                );
                gemm_rows(s, cr, Accum::Add, ar, br);
            }
        }
    }
}

/// The feature map's projection: the data scale rides on the GEMM's store and the row maxima
/// are taken while the rows are still in cache, all in one region.
pub(crate) struct Project<'a, T> {
    pub x: MatRef<'a, T>,
    pub p: ProjectionRef<'a, T>,
    pub scale: T,
    pub out: MatMut<'a, T>,
    pub row_max: &'a mut [T],
}

impl<T: Real> WithSimd for Project<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            x,
            p,
            scale,
            mut out,
            row_max,
        } = self;
        let (m, d) = (p.features, p.dim);
        let w = match p.wt {
            Some(wt) => MatRef::row_major(wt, d, m),
            None => MatRef::row_major(p.w, m, d).t(),
        };
        gemm_views(s, out.rb_mut(), Accum::Overwrite, x, w, scale);
        for (r, mx) in row_max[..x.rows()].iter_mut().enumerate() {
            let row = out
                .rb()
                .row(r)
                .expect("project: out needs adjacent columns");
            *mx = ops::max(s, row);
        }
    }
}

/// The structured (SORF) projection, one row per lane (see [`crate::sorf`]).
pub(crate) struct SorfProject<'a, T> {
    pub x: MatRef<'a, T>,
    pub signs: &'a [T],
    pub scale: T,
    pub out: MatMut<'a, T>,
    pub row_max: &'a mut [T],
}

impl<T: Real> WithSimd for SorfProject<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        crate::sorf::sorf_project(s, self.x, self.signs, self.scale, self.out, self.row_max)
    }
}

/// The compensated fold of the prefix state (see [`ops::fold`]).
pub(crate) struct Fold<'a, T> {
    pub hi: &'a mut [T],
    pub lo: &'a mut [T],
}

impl<T: Real> WithSimd for Fold<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        ops::fold(s, self.hi, self.lo)
    }
}

/// A query against the folded state plus the ring (see [`ops::ring_query`]).
pub(crate) struct RingQuery<'a, T> {
    pub hi: &'a [T],
    pub ring: Ring<'a, T>,
    pub q: &'a [T],
    pub out: &'a mut [T],
}

impl<T: Real> WithSimd for RingQuery<'_, T> {
    type Output = T;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> T {
        ops::ring_query(s, self.hi, self.ring, self.q, self.out)
    }
}

/// The ring's rank-r update folded into the state (see [`ops::fold_rank`]).
pub(crate) struct FoldRank<'a, T> {
    pub hi: &'a mut [T],
    pub lo: &'a mut [T],
    pub ring: Ring<'a, T>,
}

impl<T: Real> WithSimd for FoldRank<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        ops::fold_rank(s, self.hi, self.lo, self.ring)
    }
}

/// `Σ xᵢyᵢ`.
pub(crate) struct Dot<'a, T> {
    pub x: &'a [T],
    pub y: &'a [T],
}

impl<T: Real> WithSimd for Dot<'_, T> {
    type Output = T;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> T {
        ops::dot(s, self.x, self.y)
    }
}

/// `y += alpha·x`.
pub(crate) struct Axpy<'a, T> {
    pub alpha: T,
    pub x: &'a [T],
    pub y: &'a mut [T],
}

impl<T: Real> WithSimd for Axpy<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        ops::axpy(s, self.alpha, self.x, self.y)
    }
}

/// `x *= alpha`.
pub(crate) struct Scale<'a, T> {
    pub alpha: T,
    pub x: &'a mut [T],
}

impl<T: Real> WithSimd for Scale<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        ops::scale(s, self.alpha, self.x)
    }
}

/// The largest element.
pub(crate) struct Max<'a, T> {
    pub x: &'a [T],
}

impl<T: Real> WithSimd for Max<'_, T> {
    type Output = T;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> T {
        ops::max(s, self.x)
    }
}

/// `Σ xᵢ`.
pub(crate) struct Sum<'a, T> {
    pub x: &'a [T],
}

impl<T: Real> WithSimd for Sum<'_, T> {
    type Output = T;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> T {
        ops::sum(s, self.x)
    }
}

/// `x ← exp(x − shift)` (f32).
pub(crate) struct ExpShift<'a> {
    pub x: &'a mut [f32],
    pub shift: f32,
}

impl WithSimd for ExpShift<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        ops::exp_shift_f32(s, self.x, self.shift)
    }
}

/// `x ← x·exp(logs − shift)` (f32).
pub(crate) struct MulExp<'a> {
    pub x: &'a mut [f32],
    pub logs: &'a [f32],
    pub shift: f32,
}

impl WithSimd for MulExp<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        ops::mul_exp_f32(s, self.x, self.logs, self.shift)
    }
}

/// `[u] → [sin u, cos u]` in place (f32).
pub(crate) struct SinCos<'a> {
    pub out: &'a mut [f32],
    pub m: usize,
}

impl WithSimd for SinCos<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        ops::sin_cos_f32(s, self.out, self.m)
    }
}

/// `x ← f(x) + eps` (f32).
pub(crate) struct Act<'a> {
    pub x: &'a mut [f32],
    pub f: favor_core::Activation<f32>,
    pub eps: f32,
}

impl WithSimd for Act<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        ops::activation_f32(s, self.x, self.f, self.eps)
    }
}
