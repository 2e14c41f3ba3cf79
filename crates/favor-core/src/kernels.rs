//! The hot primitives, as a trait with one scalar reference implementation.
//!
//! Every algorithm in favor-core is written once against [`Kernels`]; `favor-simd` supplies
//! vectorised implementations and is judged against [`Scalar`]. The operations are
//! GEMM-shaped on row-major panels with explicit leading dimensions (`lda` = distance in
//! elements between consecutive rows), so an implementation can pack and register-block.
//!
//! Contract for every method: shapes have been checked by the caller (the algorithms check
//! them once, up front), so slices are at least as long as the dimensions and strides imply.
//! Implementations may panic on violated preconditions but must not read or write outside
//! the described elements. `m`, `n` or `k` may be zero.

use crate::Float;

/// A nonlinearity for generalized (non-softmax) feature maps, `φ(x) = f(Wx) + ε`.
#[derive(Debug, Clone, Copy)]
pub enum Activation<T> {
    /// `max(x, 0)` — the Performer-ReLU kernel.
    Relu,
    /// `elu(x) + 1` (`x + 1` for `x > 0`, `eˣ` otherwise): always positive.
    EluPlusOne,
    /// `eˣ` (stabilised through the row log-scale).
    Exp,
    /// `|x|`.
    Abs,
    /// `x²`.
    Square,
    /// A caller-supplied function.
    Custom(fn(T) -> T),
}

/// A projection W (`features × dim`, row-major) as the kernels see it, optionally with its
/// transpose Wᵀ (`dim × features`) so backends can skip transposing W on every call.
#[derive(Debug, Clone, Copy)]
pub struct ProjectionRef<'a, T> {
    /// W, row-major `features × dim`.
    pub w: &'a [T],
    /// Wᵀ, row-major `dim × features`, if the caller keeps one.
    pub wt: Option<&'a [T]>,
    /// Rows of W (m).
    pub features: usize,
    /// Columns of W (d).
    pub dim: usize,
}

/// The primitives FAVOR+ spends its time in.
///
/// Layout: all matrices row-major; element (i, j) of `a` with leading dimension `lda` is
/// `a[i * lda + j]`. With `accumulate == false` the output is overwritten, otherwise added to.
pub trait Kernels<T: Float>: Copy + Send + Sync {
    /// Short name of the backend (`"scalar"`, `"avx2"`, ...), for reports.
    fn name(&self) -> &'static str;

    /// `C (m×n) = A (m×k) · Bᵀ` with `B` stored n×k. Used for X·Wᵀ and Q'K'ᵀ.
    #[allow(clippy::too_many_arguments)]
    fn gemm_nt(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        lda: usize,
        b: &[T],
        ldb: usize,
        c: &mut [T],
        ldc: usize,
        accumulate: bool,
    );

    /// `C (m×n) = A (m×k) · B (k×n)`. Used for Q'S.
    #[allow(clippy::too_many_arguments)]
    fn gemm_nn(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        lda: usize,
        b: &[T],
        ldb: usize,
        c: &mut [T],
        ldc: usize,
        accumulate: bool,
    );

    /// `C (m×n) = Aᵀ · B` with `A` stored k×m and `B` k×n. Used for the state update K'ᵀV.
    #[allow(clippy::too_many_arguments)]
    fn gemm_tn(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        lda: usize,
        b: &[T],
        ldb: usize,
        c: &mut [T],
        ldc: usize,
        accumulate: bool,
    );

    /// `C (m×n) = tril(A) · B` with `A` m×m: row i of C uses only `A[i][0..=i]` and rows
    /// `0..=i` of B. Elements above A's diagonal are never read, so they may hold anything
    /// (that is what makes the chunked causal path leak-free bit for bit). Used for the
    /// chunk-local (Q'K'ᵀ∘tril)V.
    #[allow(clippy::too_many_arguments)]
    fn gemm_tril_nn(
        &self,
        m: usize,
        n: usize,
        a: &[T],
        lda: usize,
        b: &[T],
        ldb: usize,
        c: &mut [T],
        ldc: usize,
        accumulate: bool,
    ) {
        for i in 0..m {
            self.gemm_nn(
                1,
                n,
                i + 1,
                &a[i * lda..],
                lda,
                b,
                ldb,
                &mut c[i * ldc..],
                ldc,
                accumulate,
            );
        }
    }

    /// The projection step of every feature map, fused so a backend can apply the data
    /// scale and take the row maximum in the GEMM's epilogue: for each of `rows` rows of `x`
    /// (stride d), `out[r][0..m] = scale · (x_r · Wᵀ)` (stride `ldo`) and
    /// `row_max[r] = max_i out[r][i]`. When the projection carries Wᵀ, the product is a
    /// plain row-major GEMM that needs no transposition.
    #[allow(clippy::too_many_arguments)]
    fn project(
        &self,
        rows: usize,
        x: &[T],
        p: ProjectionRef<'_, T>,
        scale: T,
        out: &mut [T],
        ldo: usize,
        row_max: &mut [T],
    ) {
        let (m, d) = (p.features, p.dim);
        match p.wt {
            Some(wt) => self.gemm_nn(rows, m, d, x, d, wt, m, out, ldo, false),
            None => self.gemm_nt(rows, m, d, x, d, p.w, d, out, ldo, false),
        }
        for (r, mx) in row_max[..rows].iter_mut().enumerate() {
            let row = &mut out[r * ldo..r * ldo + m];
            if scale != T::one() {
                self.scale(scale, row);
            }
            *mx = self.max(row);
        }
    }

    /// One decoding query against a prefix state held as a total `hi` (S, `m × dv` row-major,
    /// then z, length m) and a ring of `r ≤` [`RING`](crate::RING) recent keys (`keys`, r×m)
    /// and values (`values`, r×dv): `out = qᵀS + Σ_b (q·k_b) v_b`; returns
    /// `q·z + Σ_b q·k_b`. A backend can do it in one pass over S (decoding is memory-bound).
    #[allow(clippy::too_many_arguments)]
    fn ring_query(
        &self,
        m: usize,
        dv: usize,
        hi: &[T],
        keys: &[T],
        values: &[T],
        r: usize,
        q: &[T],
        out: &mut [T],
    ) -> T {
        let (s, z) = hi[..m * dv + m].split_at(m * dv);
        self.gemm_nn(1, dv, m, q, m, s, dv, out, dv, false);
        let mut den = self.dot(&q[..m], z);
        for b in 0..r {
            let score = self.dot(&q[..m], &keys[b * m..(b + 1) * m]);
            self.axpy(score, &values[b * dv..(b + 1) * dv], &mut out[..dv]);
            den = den + score;
        }
        den
    }

    /// Adds the rank-r sums of `r` key rows `keys` (r×m) and value rows `values` (r×dv) to a
    /// compensated total `(hi, lo)` (each S, `m × dv`, then z, m): per element,
    /// `p = Σ_b keys[b][i]·values[b][j]` (z: `Σ_b keys[b][i]`) in any order, `lo ← lo + p`
    /// rounded once, then [`fold`](Self::fold)'s TwoSum. A backend can do it in one pass over
    /// the total.
    #[allow(clippy::too_many_arguments)]
    fn fold_rank(
        &self,
        m: usize,
        dv: usize,
        hi: &mut [T],
        lo: &mut [T],
        keys: &[T],
        values: &[T],
        r: usize,
    ) {
        crate::state::add_block(self, lo, keys, values, r, m, dv);
        self.fold(&mut hi[..m * dv + m], &mut lo[..m * dv + m]);
    }

    /// Folds a compensation into its total, elementwise over the common length, with Knuth's
    /// error-free TwoSum: `s = hi + lo`, `lo ← (hi − (s − b)) + (lo − b)` with `b = s − hi`,
    /// `hi ← s`, so that `hi + lo` is unchanged exactly and `|lo| ≤ ulp(hi)/2` afterwards.
    /// Sums added to `lo` (by GEMMs with `accumulate`) are thereby moved into `hi` without
    /// losing their low bits. Implementations must compute exactly these IEEE operations in
    /// this order (no reassociation, no fused operations): the error-free property depends
    /// on it.
    fn fold(&self, hi: &mut [T], lo: &mut [T]) {
        for (h, l) in hi.iter_mut().zip(lo.iter_mut()) {
            let s = *h + *l;
            let b = s - *h;
            *l = (*h - (s - b)) + (*l - b);
            *h = s;
        }
    }

    /// `Σ aᵢbᵢ` over the common length.
    fn dot(&self, a: &[T], b: &[T]) -> T;

    /// `y += alpha·x`.
    fn axpy(&self, alpha: T, x: &[T], y: &mut [T]);

    /// `x *= alpha`.
    fn scale(&self, alpha: T, x: &mut [T]);

    /// Largest element; `-∞` for an empty slice. NaN-free input assumed.
    fn max(&self, x: &[T]) -> T;

    /// `x ← exp(x − shift)`. Accuracy budget for implementations: 2 ulp of the
    /// correctly rounded result over the finite range, exact 0 below underflow.
    fn exp_shift(&self, x: &mut [T], shift: T);

    /// `x ← x · exp(logs − shift)`, elementwise (the stabiliser's rescale of feature rows).
    fn mul_exp(&self, x: &mut [T], logs: &[T], shift: T);

    /// Expands `u` (length m, at the start of `out`) into `[sin u, cos u]` (length 2m).
    fn sin_cos(&self, out: &mut [T], m: usize);

    /// `x ← f(x) + eps` for a generalized-kernel nonlinearity.
    fn activation(&self, x: &mut [T], f: Activation<T>, eps: T);
}

/// The portable scalar backend: plain loops, no unsafe, the reference every SIMD backend is
/// compared with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scalar;

impl<T: Float> Kernels<T> for Scalar {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn gemm_nt(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        lda: usize,
        b: &[T],
        ldb: usize,
        c: &mut [T],
        ldc: usize,
        accumulate: bool,
    ) {
        for i in 0..m {
            let ar = &a[i * lda..i * lda + k];
            for j in 0..n {
                let s = Kernels::<T>::dot(self, ar, &b[j * ldb..j * ldb + k]);
                let cij = &mut c[i * ldc + j];
                *cij = if accumulate { *cij + s } else { s };
            }
        }
    }

    fn gemm_nn(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        lda: usize,
        b: &[T],
        ldb: usize,
        c: &mut [T],
        ldc: usize,
        accumulate: bool,
    ) {
        for i in 0..m {
            let cr = &mut c[i * ldc..i * ldc + n];
            if !accumulate {
                cr.fill(T::zero());
            }
            for p in 0..k {
                Kernels::<T>::axpy(self, a[i * lda + p], &b[p * ldb..p * ldb + n], cr);
            }
        }
    }

    fn gemm_tn(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        lda: usize,
        b: &[T],
        ldb: usize,
        c: &mut [T],
        ldc: usize,
        accumulate: bool,
    ) {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::zero());
            }
        }
        for p in 0..k {
            let br = &b[p * ldb..p * ldb + n];
            for i in 0..m {
                Kernels::<T>::axpy(self, a[p * lda + i], br, &mut c[i * ldc..i * ldc + n]);
            }
        }
    }

    fn dot(&self, a: &[T], b: &[T]) -> T {
        a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
    }

    fn axpy(&self, alpha: T, x: &[T], y: &mut [T]) {
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = *yi + alpha * xi;
        }
    }

    fn scale(&self, alpha: T, x: &mut [T]) {
        for xi in x {
            *xi = *xi * alpha;
        }
    }

    fn max(&self, x: &[T]) -> T {
        x.iter()
            .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m })
    }

    fn exp_shift(&self, x: &mut [T], shift: T) {
        for xi in x {
            *xi = (*xi - shift).libm_exp();
        }
    }

    fn mul_exp(&self, x: &mut [T], logs: &[T], shift: T) {
        for (xi, &l) in x.iter_mut().zip(logs) {
            *xi = *xi * (l - shift).libm_exp();
        }
    }

    fn sin_cos(&self, out: &mut [T], m: usize) {
        let (s, c) = out[..2 * m].split_at_mut(m);
        for (si, ci) in s.iter_mut().zip(c) {
            let (sv, cv) = si.libm_sin_cos();
            *si = sv;
            *ci = cv;
        }
    }

    fn activation(&self, x: &mut [T], f: Activation<T>, eps: T) {
        let one = T::one();
        for xi in x {
            let v = *xi;
            let y = match f {
                Activation::Relu => v.max(T::zero()),
                Activation::EluPlusOne => {
                    if v > T::zero() {
                        v + one
                    } else {
                        v.libm_exp()
                    }
                }
                Activation::Exp => v.libm_exp(),
                Activation::Abs => v.abs(),
                Activation::Square => v * v,
                Activation::Custom(g) => g(v),
            };
            *xi = y + eps;
        }
    }
}
