//! Target `kernels`: every `Kernels` method of every SIMD backend against favor-core's
//! `Scalar` reference, in f32 and f64, on arbitrary shapes, strides and finite values.
//!
//! Bounds (the reasoning of `crates/favor-simd/tests/backends.rs`, made rigorous where that
//! file's inputs let it be loose; u = unit roundoff of T, γₙ = nu/(1 − nu)):
//! - a sum of n products in two different orders (with or without FMA): each evaluation is
//!   within γₙ·Σ|terms| of the exact sum (Higham Thm 3.1), so they differ by at most
//!   `2γₙ·Σ|aᵢbᵢ|`; accumulating into C adds |c| as one more term: `2γₙ₊₁(Σ|aᵢbᵢ| + |c|)`;
//!   an extra scaling (the projection's data scale) is one more factor: `2γ_{d+1}|s|Σ|xⱼwᵢⱼ|`.
//! - inputs are 0 or at least 2⁻²¹ in magnitude, so every product and partial sum is a
//!   multiple of 2⁻⁸⁸ (no underflow in f32); `n·MIN_POSITIVE` is added anyway.
//! - `axpy`: one FMA or a rounded product plus a rounded sum: `3u(|αx| + |y|)`.
//! - `scale`: one correctly rounded product in both: bit-identical. `max`: exact (±0 aside).
//! - `fold` (TwoSum of a compensation into its total): bit-identical, and exactly
//!   error-free.
//! - f32 `exp_shift`: both subtract identically, then `exp` within `EXP_MAX_ULP` ulps of
//!   libm over every f32 (favor_simd::math); `mul_exp` and the exp-based activations: the
//!   factor may be that many ulps away (`step_span`), then each side rounds once more
//!   (`2u·max(|g|, |w|)`); `x² + ε` fused or not: `3u·max(|g|,|w|)`; ReLU, |·| and custom
//!   functions: exact. `sin_cos`: within `SIN_COS_MAX_ABS_ERR` of libm for
//!   |x| ≤ `SIN_COS_RANGE`, finite and in [−1, 1] for every finite x beyond.
//! - f64 transcendental kernels are favor-core's scalar (libm) ones (documented in
//!   favor-simd's backend): bit-identical.
//! - nothing outside the described elements may change: C's padding holds a sentinel that
//!   must survive, A's and B's padding (and Tril's upper triangle) hold NaN, which would
//!   poison any result that read it.

use arbitrary::{Arbitrary, Result, Unstructured};
use favor_core::{Accum, Activation, Kernels, MatMut, MatRef, ProjectionRef, Scalar};
use favor_simd::math::{EXP_MAX_ULP, SIN_COS_MAX_ABS_ERR, SIN_COS_RANGE};

use crate::backends::{Visit, each_simd};
use crate::bounds::{Real, close, gamma, step_span, ulps, unit};
use crate::input::{size, vector, wide};

/// Which kernel a case exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum KernelOp {
    /// `gemm` with B viewed transposed (stored n×k): `X·Wᵀ`, `Q'K'ᵀ`.
    GemmNt,
    /// `gemm` on plain row-major views: `Q'S`.
    GemmNn,
    /// `gemm` with A viewed transposed (stored k×m): `K'ᵀV`.
    GemmTn,
    /// `gemm_tril`.
    Tril,
    /// `project` (with or without Wᵀ).
    Project,
    /// `fold` (TwoSum of a compensation into its total).
    Fold,
    /// `dot`.
    Dot,
    /// `axpy`.
    Axpy,
    /// `scale`.
    Scale,
    /// `max`.
    Max,
    /// `exp_shift`.
    ExpShift,
    /// `mul_exp`.
    MulExp,
    /// `sin_cos`.
    SinCos,
    /// `activation`.
    Activation,
    /// `gemm` into C viewed transposed (stored n×m; adjacent rows, strided columns).
    GemmCt,
}

/// The activations, `Custom` standing for `v ↦ v/2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Act {
    /// ReLU.
    Relu,
    /// ELU + 1.
    EluPlusOne,
    /// exp.
    Exp,
    /// |·|.
    Abs,
    /// x².
    Square,
    /// `Activation::Custom(v ↦ v/2)`.
    Custom,
}

fn halve<T: Real>(v: T) -> T {
    v * T::from_f64(0.5)
}

impl Act {
    fn to<T: Real>(self) -> Activation<T> {
        match self {
            Act::Relu => Activation::Relu,
            Act::EluPlusOne => Activation::EluPlusOne,
            Act::Exp => Activation::Exp,
            Act::Abs => Activation::Abs,
            Act::Square => Activation::Square,
            Act::Custom => Activation::Custom(halve::<T>),
        }
    }
}

/// One kernel call's inputs (all values finite, exact in f32 and f64).
#[derive(Debug, Clone)]
pub struct KernelCase {
    /// The kernel.
    pub op: KernelOp,
    /// Run in f64 (else f32).
    pub f64: bool,
    /// First dimension (GEMM m, rows, vector length).
    pub m: usize,
    /// Second dimension (GEMM n, features, value dim, second length).
    pub n: usize,
    /// Third dimension (GEMM k, projection dim).
    pub k: usize,
    /// Extra elements per row of A, B and C (leading dimension minus width).
    pub pads: [usize; 3],
    /// Slices end right after their last described element (else a full last row).
    pub minimal: bool,
    /// GEMM `accumulate`; `project`: pass Wᵀ as well.
    pub flag: bool,
    /// The activation of an `Activation` case.
    pub act: Act,
    /// Operand data, as many values as the op needs.
    pub data: [Vec<f64>; 4],
    /// Scalar parameters (alpha, scale, shift, ε, f), per op.
    pub scalar: f64,
}

impl<'a> Arbitrary<'a> for KernelCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let op = KernelOp::arbitrary(u)?;
        let f64 = u.arbitrary()?;
        let flag = u.arbitrary()?;
        let minimal = u.arbitrary()?;
        let act = Act::arbitrary(u)?;
        let pads = [size(u, 0, 9)?, size(u, 0, 9)?, size(u, 0, 9)?];
        let (lo, hi) = (-21, 20);
        let mut c = KernelCase {
            op,
            f64,
            m: 0,
            n: 0,
            k: 0,
            pads,
            minimal,
            flag,
            act,
            data: Default::default(),
            scalar: 0.0,
        };
        match op {
            KernelOp::GemmNt | KernelOp::GemmNn | KernelOp::GemmTn | KernelOp::GemmCt => {
                (c.m, c.n, c.k) = (size(u, 0, 70)?, size(u, 0, 70)?, size(u, 0, 70)?);
                c.data[0] = vector(u, c.m * c.k, lo, hi)?;
                c.data[1] = vector(u, c.k * c.n, lo, hi)?;
                c.data[2] = vector(u, c.m * c.n, lo, hi)?;
            }
            KernelOp::Tril => {
                (c.m, c.n) = (size(u, 0, 70)?, size(u, 0, 70)?);
                c.data[0] = vector(u, c.m * c.m, lo, hi)?;
                c.data[1] = vector(u, c.m * c.n, lo, hi)?;
                c.data[2] = vector(u, c.m * c.n, lo, hi)?;
            }
            KernelOp::Project => {
                (c.m, c.n, c.k) = (size(u, 0, 70)?, size(u, 0, 256)?, size(u, 0, 70)?);
                c.data[0] = vector(u, c.m * c.k, lo, hi)?;
                c.data[1] = vector(u, c.n * c.k, lo, hi)?;
                c.scalar = wide(u, -4, 4)?;
            }
            KernelOp::Fold => {
                c.m = size(u, 0, 300)?;
                c.data[0] = vector(u, c.m, lo, hi)?;
                c.data[1] = vector(u, c.m, lo, hi)?;
            }

            KernelOp::Dot | KernelOp::Axpy => {
                (c.m, c.n) = (size(u, 0, 300)?, size(u, 0, 300)?);
                c.data[0] = vector(u, c.m, lo, hi)?;
                c.data[1] = vector(u, c.n, lo, hi)?;
                c.scalar = wide(u, lo, hi)?;
            }
            KernelOp::Scale | KernelOp::Max => {
                c.m = size(u, 0, 300)?;
                c.data[0] = vector(u, c.m, lo, hi)?;
                c.scalar = wide(u, lo, hi)?;
            }
            KernelOp::ExpShift => {
                // Every finite f32, huge magnitudes included: x − shift may overflow to ±∞.
                c.m = size(u, 0, 300)?;
                c.data[0] = vector(u, c.m, -126, 127)?;
                c.scalar = wide(u, -126, 127)?;
            }
            KernelOp::MulExp => {
                c.m = size(u, 0, 300)?;
                c.data[0] = vector(u, c.m, -40, 60)?;
                c.data[1] = vector(u, c.m, -20, 127)?;
                c.scalar = wide(u, -20, 127)?;
            }
            KernelOp::SinCos => {
                c.m = size(u, 0, 300)?;
                let emax = if u.arbitrary()? { 17 } else { 127 };
                c.data[0] = vector(u, c.m, lo, emax)?;
            }
            KernelOp::Activation => {
                c.m = size(u, 0, 300)?;
                c.data[0] = vector(u, c.m, lo, 40)?;
                c.scalar = if u.arbitrary()? {
                    0.0
                } else {
                    wide(u, -30, 20)?.abs()
                };
            }
        }
        Ok(c)
    }
}

/// Decodes a [`KernelCase`] and checks it on every SIMD backend against `Scalar`.
pub fn check_kernels(data: &[u8]) {
    let Ok(case) = KernelCase::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    run_case(&case);
}

/// Checks one case on every SIMD backend.
pub fn run_case(case: &KernelCase) {
    struct V<'a>(&'a KernelCase);
    impl Visit for V<'_> {
        fn visit<K: Kernels<f32> + Kernels<f64>>(&mut self, k: K) {
            if self.0.f64 {
                check_op::<f64, K>(&k, self.0);
            } else {
                check_op::<f32, K>(&k, self.0);
            }
        }
    }
    each_simd(&mut V(case));
}

fn cast<T: Real>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

fn abs<T: Real>(x: T) -> f64 {
    x.to64().abs()
}

/// A row-major `rows × cols` matrix stored with leading dimension `cols + pad`, NaN (or the
/// given filler) in the padding; `minimal` ends the slice after the last described element.
fn strided<T: Real>(
    vals: &[f64],
    rows: usize,
    cols: usize,
    pad: usize,
    minimal: bool,
    fill: T,
) -> (Vec<T>, usize) {
    let ld = cols + pad;
    let len = match (rows, minimal) {
        (0, _) => 0,
        (r, true) => (r - 1) * ld + cols,
        (r, false) => r * ld,
    };
    let mut out = vec![fill; len];
    for i in 0..rows {
        for j in 0..cols {
            out[i * ld + j] = T::from_f64(vals[i * cols + j]);
        }
    }
    (out, ld)
}

fn sentinel<T: Real>() -> T {
    T::from_f64(-1234.5)
}

fn check_op<T: Real, K: Kernels<T>>(kern: &K, c: &KernelCase) {
    let name = kern.name();
    let what = format!(
        "{name} {} {:?} m={} n={} k={}",
        T::NAME,
        c.op,
        c.m,
        c.n,
        c.k
    );
    match c.op {
        KernelOp::GemmNt | KernelOp::GemmNn | KernelOp::GemmTn | KernelOp::GemmCt => {
            gemm::<T, K>(kern, c, &what)
        }
        KernelOp::Tril => tril::<T, K>(kern, c, &what),
        KernelOp::Project => project::<T, K>(kern, c, &what),

        KernelOp::Fold => fold::<T, K>(kern, c, &what),
        KernelOp::Dot | KernelOp::Axpy | KernelOp::Scale | KernelOp::Max => {
            blas1::<T, K>(kern, c, &what)
        }
        KernelOp::ExpShift | KernelOp::MulExp | KernelOp::SinCos | KernelOp::Activation => {
            elementwise::<T, K>(kern, c, &what)
        }
    }
}

/// Checks C's m×n window against `tol(i, j)` and that its padding still holds the sentinel.
fn check_c<T: Real>(
    got: &[T],
    want: &[T],
    (m, n, ldc): (usize, usize, usize),
    tol: impl Fn(usize, usize) -> f64,
    what: &str,
) {
    assert_eq!(got.len(), want.len());
    for (idx, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (i, j) = (idx / ldc, idx % ldc);
        if i < m && j < n {
            let t = tol(i, j);
            assert!(
                close(g, w, t),
                "{what}: C({i},{j}) = {g:e}, scalar {w:e}, |diff| {:e} > {t:e}",
                (g.to64() - w.to64()).abs()
            );
        } else {
            assert_eq!(
                g.bits(),
                sentinel::<T>().bits(),
                "{what}: wrote outside C at {idx}"
            );
        }
    }
}

/// C as a GEMM sees it: the stored `rows × cols` buffer with leading dimension `ld`, or (`t`)
/// its transpose (adjacent rows, strided columns).
pub fn c_view<T: Copy>(
    buf: &mut [T],
    (rows, cols, ld): (usize, usize, usize),
    t: bool,
) -> MatMut<'_, T> {
    let v = MatMut::new(buf, rows, cols, ld);
    if t { v.t() } else { v }
}

fn gemm<T: Real, K: Kernels<T>>(kern: &K, c: &KernelCase, what: &str) {
    let (m, n, k) = (c.m, c.n, c.k);
    // Stored shapes: nt: A m×k, B n×k; nn and ct: A m×k, B k×n; tn: A k×m, B k×n; ct: C n×m.
    let (ar, ac, br, bc) = match c.op {
        KernelOp::GemmNt => (m, k, n, k),
        KernelOp::GemmTn => (k, m, k, n),
        _ => (m, k, k, n),
    };
    let (cr, cc) = match c.op {
        KernelOp::GemmCt => (n, m),
        _ => (m, n),
    };
    let nan = T::nan();
    let (a, lda) = strided::<T>(&c.data[0], ar, ac, c.pads[0], c.minimal, nan);
    let (b, ldb) = strided::<T>(&c.data[1], br, bc, c.pads[1], c.minimal, nan);
    let (c0, ldc) = strided::<T>(&c.data[2], cr, cc, c.pads[2], c.minimal, sentinel());
    let a_at = |i: usize, p: usize| match c.op {
        KernelOp::GemmTn => a[p * lda + i],
        _ => a[i * lda + p],
    };
    let b_at = |p: usize, j: usize| match c.op {
        KernelOp::GemmNt => b[j * ldb + p],
        _ => b[p * ldb + j],
    };
    // C(i, j) sits at c_at(i, j) in the buffer.
    let c_at = |i: usize, j: usize| match c.op {
        KernelOp::GemmCt => j * ldc + i,
        _ => i * ldc + j,
    };
    let am = MatRef::new(&a, ar, ac, lda);
    let am = if c.op == KernelOp::GemmTn { am.t() } else { am };
    let bm = MatRef::new(&b, br, bc, ldb);
    let bm = if c.op == KernelOp::GemmNt { bm.t() } else { bm };
    let (dims, t) = ((cr, cc, ldc), c.op == KernelOp::GemmCt);
    let accum = if c.flag { Accum::Add } else { Accum::Overwrite };
    let (mut got, mut want) = (c0.clone(), c0.clone());
    kern.gemm(c_view(&mut got, dims, t), accum, am, bm);
    Scalar.gemm(c_view(&mut want, dims, t), accum, am, bm);
    let u = unit::<T>();
    let tiny = T::min_positive_value().to64();
    let tol = |i: usize, j: usize| {
        let mag: f64 = (0..k).map(|p| abs(a_at(i, p) * b_at(p, j))).sum();
        if c.flag {
            2.0 * gamma(k + 1, u) * (mag + abs(c0[c_at(i, j)])) + (k + 1) as f64 * tiny
        } else {
            2.0 * gamma(k, u) * mag + k as f64 * tiny
        }
    };
    // check_c walks the stored buffer: for a transposed C, stored (j, i) is C(i, j).
    match c.op {
        KernelOp::GemmCt => check_c(&got, &want, (cr, cc, ldc), |j, i| tol(i, j), what),
        _ => check_c(&got, &want, (m, n, ldc), tol, what),
    }
}

fn tril<T: Real, K: Kernels<T>>(kern: &K, c: &KernelCase, what: &str) {
    let (m, n) = (c.m, c.n);
    let nan = T::nan();
    let (mut a, lda) = strided::<T>(&c.data[0], m, m, c.pads[0], c.minimal, nan);
    // Above the diagonal: garbage a correct kernel never reads.
    for i in 0..m {
        for j in i + 1..m {
            a[i * lda + j] = nan;
        }
    }
    let (b, ldb) = strided::<T>(&c.data[1], m, n, c.pads[1], c.minimal, nan);
    let (c0, ldc) = strided::<T>(&c.data[2], m, n, c.pads[2], c.minimal, sentinel());
    let acc = c.flag;
    let (mut got, mut want) = (c0.clone(), c0.clone());
    let (am, bm) = (MatRef::new(&a, m, m, lda), MatRef::new(&b, m, n, ldb));
    let accum = if acc { Accum::Add } else { Accum::Overwrite };
    kern.gemm_tril(MatMut::new(&mut got, m, n, ldc), accum, am, bm);
    Scalar.gemm_tril(MatMut::new(&mut want, m, n, ldc), accum, am, bm);
    let u = unit::<T>();
    let tiny = T::min_positive_value().to64();
    let tol = |i: usize, j: usize| {
        let mag: f64 = (0..=i).map(|p| abs(a[i * lda + p] * b[p * ldb + j])).sum();
        if acc {
            2.0 * gamma(i + 2, u) * (mag + abs(c0[i * ldc + j])) + (i + 2) as f64 * tiny
        } else {
            2.0 * gamma(i + 1, u) * mag + (i + 1) as f64 * tiny
        }
    };
    check_c(&got, &want, (m, n, ldc), tol, what);
}

fn project<T: Real, K: Kernels<T>>(kern: &K, c: &KernelCase, what: &str) {
    let (rows, m, d) = (c.m, c.n, c.k);
    let x: Vec<T> = cast(&c.data[0]);
    let w: Vec<T> = cast(&c.data[1]);
    let mut wt = vec![T::zero(); m * d];
    for i in 0..m {
        for j in 0..d {
            wt[j * m + i] = w[i * d + j];
        }
    }
    let scale = T::from_f64(c.scalar);
    let ldo = m + c.pads[2];
    let p = ProjectionRef {
        w: &w,
        wt: c.flag.then_some(&wt[..]),
        features: m,
        dim: d,
    };
    let s = sentinel::<T>();
    // Two spare row maxima after `rows`: they must not be written either.
    let (mut got, mut gmax) = (vec![s; rows * ldo], vec![s; rows + 2]);
    let (mut want, mut wmax) = (vec![s; rows * ldo], vec![s; rows + 2]);
    let xm = MatRef::row_major(&x, rows, d);
    kern.project(xm, p, scale, MatMut::new(&mut got, rows, m, ldo), &mut gmax);
    let reference = ProjectionRef { wt: None, ..p };
    Scalar.project(
        xm,
        reference,
        scale,
        MatMut::new(&mut want, rows, m, ldo),
        &mut wmax,
    );
    let u = unit::<T>();
    let tiny = T::min_positive_value().to64();
    let tol = |r: usize, i: usize| {
        let mag: f64 = (0..d).map(|j| abs(x[r * d + j] * w[i * d + j])).sum();
        2.0 * gamma(d + 1, u) * abs(scale) * mag + (d + 1) as f64 * tiny
    };
    check_c(&got, &want, (rows, m, ldo), tol, what);
    for r in 0..rows {
        // max is 1-Lipschitz in the sup norm: it moves by at most the row's largest tolerance.
        let t = (0..m).map(|i| tol(r, i)).fold(0.0, f64::max);
        assert!(
            close(gmax[r], wmax[r], t),
            "{what}: row max {r}: {:e} vs {:e}",
            gmax[r].to64(),
            wmax[r].to64()
        );
    }
    for spare in &gmax[rows..] {
        assert_eq!(spare.bits(), s.bits(), "{what}: wrote past row_max[rows]");
    }
}

/// `fold` is specified operation by operation (TwoSum), so every backend must agree with
/// Scalar bit for bit; and the result must be error-free: `hi + lo` unchanged exactly, and
/// `|lo| ≤ ulp(hi)/2` after. Inputs are 0 or at least 2⁻²¹ in magnitude, so every value
/// involved is an integer multiple of 2^−(21 + mantissa bits): the identity is checked exactly
/// in i128 fixed point.
fn fold<T: Real, K: Kernels<T>>(kern: &K, c: &KernelCase, what: &str) {
    let (h0, l0): (Vec<T>, Vec<T>) = (cast(&c.data[0]), cast(&c.data[1]));
    let (mut hg, mut lg) = (h0.clone(), l0.clone());
    let (mut hw, mut lw) = (h0.clone(), l0.clone());
    kern.fold(&mut hg, &mut lg);
    Scalar.fold(&mut hw, &mut lw);
    let bits = if T::NAME == "f32" { 23 } else { 52 };
    let fixed = |x: T| {
        let y = x.to64() * 2f64.powi(21 + bits);
        assert_eq!(
            y.fract(),
            0.0,
            "{what}: {:e} is not on the fixed-point grid",
            x.to64()
        );
        y as i128
    };
    for i in 0..c.m {
        assert!(
            hg[i].bits() == hw[i].bits() && lg[i].bits() == lw[i].bits(),
            "{what}: element {i}: ({:e}, {:e}) vs Scalar ({:e}, {:e})",
            hg[i].to64(),
            lg[i].to64(),
            hw[i].to64(),
            lw[i].to64()
        );
        assert_eq!(
            fixed(hw[i]) + fixed(lw[i]),
            fixed(h0[i]) + fixed(l0[i]),
            "{what}: element {i}: the fold is not error-free"
        );
        assert!(
            abs(lw[i]) <= abs(hw[i]) * unit::<T>(),
            "{what}: element {i}: lo {:e} not settled below half an ulp of {:e}",
            lw[i].to64(),
            hw[i].to64()
        );
    }
}

fn blas1<T: Real, K: Kernels<T>>(kern: &K, c: &KernelCase, what: &str) {
    let x: Vec<T> = cast(&c.data[0]);
    let y: Vec<T> = cast(&c.data[1]);
    let alpha = T::from_f64(c.scalar);
    let u = unit::<T>();
    let tiny = T::min_positive_value().to64();
    match c.op {
        KernelOp::Dot => {
            // Over the common length.
            let n = x.len().min(y.len());
            let mag: f64 = (0..n).map(|i| abs(x[i] * y[i])).sum();
            let (g, w) = (kern.dot(&x, &y), Scalar.dot(&x, &y));
            let tol = 2.0 * gamma(n, u) * mag + n as f64 * tiny;
            assert!(close(g, w, tol), "{what}: {:e} vs {:e}", g.to64(), w.to64());
        }
        KernelOp::Axpy => {
            let (mut g, mut w) = (y.clone(), y.clone());
            kern.axpy(alpha, &x, &mut g);
            Scalar.axpy(alpha, &x, &mut w);
            let n = x.len().min(y.len());
            for i in 0..y.len() {
                if i < n {
                    let tol = 3.0 * u * (abs(alpha * x[i]) + abs(y[i])) + 2.0 * tiny;
                    assert!(close(g[i], w[i], tol), "{what}: y[{i}]");
                } else {
                    assert_eq!(g[i].bits(), y[i].bits(), "{what}: y[{i}] past x's length");
                }
            }
        }
        KernelOp::Scale => {
            let (mut g, mut w) = (x.clone(), x.clone());
            kern.scale(alpha, &mut g);
            Scalar.scale(alpha, &mut w);
            for i in 0..x.len() {
                assert_eq!(g[i].bits(), w[i].bits(), "{what}: x[{i}]");
            }
        }
        _ => {
            let (g, w) = (Kernels::<T>::max(kern, &x), Kernels::<T>::max(&Scalar, &x));
            assert!(g == w, "{what}: max {g:e} vs {w:e}");
        }
    }
}

fn elementwise<T: Real, K: Kernels<T>>(kern: &K, c: &KernelCase, what: &str) {
    let x: Vec<T> = cast(&c.data[0]);
    let s = T::from_f64(c.scalar);
    let exact = T::NAME == "f64";
    let u = unit::<T>();
    let pair = |g: T, w: T| (abs(g)).max(abs(w));
    let exp_tol = |e: T, g: T, w: T| step_span(e, i64::from(EXP_MAX_ULP)) + 2.0 * u * pair(g, w);
    let same = |g: &[T], w: &[T], label: &str| {
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                a.bits() == b.bits() || (a.is_nan() && b.is_nan()),
                "{what}: {label}[{i}] {a:e} vs {b:e} (f64 kernels are libm's, bit for bit)"
            );
        }
    };
    match c.op {
        KernelOp::ExpShift => {
            let (mut g, mut w) = (x.clone(), x.clone());
            kern.exp_shift(&mut g, s);
            Scalar.exp_shift(&mut w, s);
            if exact {
                return same(&g, &w, "exp_shift");
            }
            for i in 0..x.len() {
                assert!(
                    ulps(g[i], w[i]) <= u64::from(EXP_MAX_ULP),
                    "{what}: exp({:e} - {:e}) = {:e}, libm {:e}",
                    x[i].to64(),
                    s.to64(),
                    g[i].to64(),
                    w[i].to64()
                );
            }
        }
        KernelOp::MulExp => {
            let logs: Vec<T> = cast(&c.data[1]);
            let (mut g, mut w) = (x.clone(), x.clone());
            kern.mul_exp(&mut g, &logs, s);
            Scalar.mul_exp(&mut w, &logs, s);
            if exact {
                return same(&g, &w, "mul_exp");
            }
            for i in 0..x.len() {
                let e = (logs[i] - s).libm_exp();
                let tol = abs(x[i]) * step_span(e, i64::from(EXP_MAX_ULP))
                    + 2.0 * u * pair(g[i], w[i])
                    + 2.0 * T::min_positive_value().to64() * u;
                assert!(
                    close(g[i], w[i], tol),
                    "{what}: {:e}·exp({:e} - {:e}) = {:e}, scalar {:e}",
                    x[i].to64(),
                    logs[i].to64(),
                    s.to64(),
                    g[i].to64(),
                    w[i].to64()
                );
            }
        }
        KernelOp::SinCos => {
            let m = x.len();
            let sent = sentinel::<T>();
            // [u, garbage, 3 spare]: the spare tail must survive.
            let mut g: Vec<T> = x.iter().copied().chain(vec![sent; m + 3]).collect();
            let mut w = g.clone();
            kern.sin_cos(&mut g, m);
            Kernels::<T>::sin_cos(&Scalar, &mut w, m);
            for spare in &g[2 * m..] {
                assert_eq!(spare.bits(), sent.bits(), "{what}: wrote past 2m");
            }
            if exact {
                return same(&g, &w, "sin_cos");
            }
            for i in 0..2 * m {
                let (a, b) = (g[i].to64(), w[i].to64());
                assert!(
                    a.is_finite() && a.abs() <= 1.0,
                    "{what}: sin/cos({:e}) = {a:e}",
                    x[i % m].to64()
                );
                if abs(x[i % m]) <= f64::from(SIN_COS_RANGE) {
                    assert!(
                        (a - b).abs() <= f64::from(SIN_COS_MAX_ABS_ERR),
                        "{what}: sin/cos({:e}) = {a:e}, libm {b:e}",
                        x[i % m].to64()
                    );
                }
            }
        }
        _ => {
            let f = c.act.to::<T>();
            let (mut g, mut w) = (x.clone(), x.clone());
            kern.activation(&mut g, f, s);
            Scalar.activation(&mut w, f, s);
            if exact {
                return same(&g, &w, "activation");
            }
            for i in 0..x.len() {
                let v = x[i];
                let tol = match c.act {
                    Act::Relu | Act::Abs | Act::Custom => 0.0,
                    Act::Square => 3.0 * u * pair(g[i], w[i]),
                    Act::Exp => exp_tol(v.libm_exp(), g[i], w[i]),
                    Act::EluPlusOne => exp_tol(v.min(T::zero()).libm_exp(), g[i], w[i]),
                };
                assert!(
                    close(g[i], w[i], tol),
                    "{what}: {:?}({:e}) + {:e} = {:e}, scalar {:e}",
                    c.act,
                    v.to64(),
                    s.to64(),
                    g[i].to64(),
                    w[i].to64()
                );
            }
        }
    }
}
