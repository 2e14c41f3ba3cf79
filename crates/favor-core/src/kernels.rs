//! The hot primitives, as a trait with one scalar reference implementation.
//!
//! Every algorithm in favor-core is written once against [`Kernels`]; `favor-simd` supplies
//! vectorised implementations and is judged against [`Scalar`]. Matrix products take
//! strided views ([`MatRef`], [`MatMut`]): `Q'K'ᵀ`, `Q'S` and `K'ᵀV` are all [`gemm`]
//! (`Kernels::gemm`) on differently viewed operands, which an implementation packs and
//! register-blocks as it likes.
//!
//! [`gemm`]: Kernels::gemm
//!
//! Contract for every method: shapes have been checked by the caller (the algorithms check
//! them once, up front), so slices are at least as long as the dimensions and strides imply.
//! Implementations may panic on violated preconditions but must not read or write outside
//! the described elements. `m`, `n` or `k` may be zero.

use crate::Float;
use crate::mat::{Accum, MatMut, MatRef};

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

/// The last `len` keys (`len × features`) and values (`len × value_dim`) a prefix state holds
/// outside its compensated total, row-major and contiguous.
#[derive(Debug, Clone, Copy)]
pub struct Ring<'a, T> {
    keys: &'a [T],
    values: &'a [T],
    len: usize,
    features: usize,
    value_dim: usize,
}

impl<'a, T> Ring<'a, T> {
    /// The first `len` rows of `keys` (rows of `features`) and `values` (rows of `value_dim`).
    ///
    /// # Panics
    /// If a slice is shorter than its `len` rows.
    #[track_caller]
    pub fn new(
        keys: &'a [T],
        values: &'a [T],
        len: usize,
        features: usize,
        value_dim: usize,
    ) -> Self {
        let (nk, nv) = (len.checked_mul(features), len.checked_mul(value_dim));
        assert!(
            nk.is_some_and(|n| n <= keys.len()) && nv.is_some_and(|n| n <= values.len()),
            "ring of {len} rows longer than its buffers"
        );
        Self {
            keys: &keys[..len * features],
            values: &values[..len * value_dim],
            len,
            features,
            value_dim,
        }
    }
    /// The keys, `len × features`.
    pub fn keys(&self) -> &'a [T] {
        self.keys
    }
    /// The values, `len × value_dim`.
    pub fn values(&self) -> &'a [T] {
        self.values
    }
    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Features per key (m).
    pub fn features(&self) -> usize {
        self.features
    }
    /// Elements per value (dv).
    pub fn value_dim(&self) -> usize {
        self.value_dim
    }
}

/// The dimensions `(m, n, k)` of `C (m×n) = A (m×k) · B (k×n)`.
///
/// # Panics
/// If the views' dimensions do not agree.
#[track_caller]
pub fn gemm_dims<T: Copy>(
    c: &MatMut<'_, T>,
    a: &MatRef<'_, T>,
    b: &MatRef<'_, T>,
) -> (usize, usize, usize) {
    assert!(
        a.rows() == c.rows() && b.cols() == c.cols() && a.cols() == b.rows(),
        "gemm: C {}×{} = A {}×{} · B {}×{}",
        c.rows(),
        c.cols(),
        a.rows(),
        a.cols(),
        b.rows(),
        b.cols()
    );
    (c.rows(), c.cols(), a.cols())
}

/// The primitives FAVOR+ spends its time in.
///
/// Matrices are strided views; vectors are slices.
pub trait Kernels<T: Float>: Copy + Send + Sync {
    /// Short name of the backend (`"scalar"`, `"avx2"`, ...), for reports.
    fn name(&self) -> &'static str;

    /// `C (m×n) = A (m×k) · B (k×n)` ([`Accum::Overwrite`]) or `C += A·B` ([`Accum::Add`]),
    /// any strides (see [`gemm_dims`]): `X·Wᵀ` and `Q'K'ᵀ` pass `B` as a transposed view,
    /// the state update `K'ᵀV` passes `A` as one.
    fn gemm(&self, c: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>);

    /// `C (m×n) (+)= tril(A) · B` with `A` m×m: row i of C uses only `A[i][0..=i]` and rows
    /// `0..=i` of B. Elements above A's diagonal are never read, so they may hold anything
    /// (that is what makes the chunked causal path leak-free bit for bit). Used for the
    /// chunk-local (Q'K'ᵀ∘tril)V.
    fn gemm_tril(&self, mut c: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>) {
        let (m, n, _) = gemm_dims(&c, &a, &b);
        for i in 0..m {
            let ci = c.rb_mut().block(i, 0, 1, n);
            self.gemm(ci, accum, a.block(i, 0, 1, i + 1), b.block(0, 0, i + 1, n));
        }
    }

    /// The projection step of every feature map, fused so a backend can apply the data
    /// scale and take the row maximum in the GEMM's epilogue: for each row r of `x`
    /// (`rows × d`), `out[r][0..m] = scale · (x_r · Wᵀ)` and `row_max[r] = max_i out[r][i]`.
    /// `out` (`rows × m`) has adjacent columns. When the projection carries Wᵀ, the product
    /// is a plain row-major GEMM that needs no transposition.
    fn project(
        &self,
        x: MatRef<'_, T>,
        p: ProjectionRef<'_, T>,
        scale: T,
        mut out: MatMut<'_, T>,
        row_max: &mut [T],
    ) {
        let (m, d) = (p.features, p.dim);
        let w = match p.wt {
            Some(wt) => MatRef::row_major(wt, d, m),
            None => MatRef::row_major(p.w, m, d).t(),
        };
        self.gemm(out.rb_mut(), Accum::Overwrite, x, w);
        for (r, mx) in row_max[..x.rows()].iter_mut().enumerate() {
            let row = out.row_mut(r).expect("project: out needs adjacent columns");
            if scale != T::one() {
                self.scale(scale, row);
            }
            *mx = self.max(row);
        }
    }

    /// [`project`](Self::project) for a structured (SORF) projection given by its signs
    /// instead of W (see [`sorf_signs`](crate::sorf_signs), m = `out.cols()`, d = `x.cols()`):
    /// `out[r] = scale · (W x_r)` and `row_max[r] = max_i out[r][i]`, with W never formed.
    /// `out` has adjacent columns; d' (the power of two at or above d) is at most 512.
    ///
    /// Every backend does the same operations per element in the same order (sign flips,
    /// the butterflies of three fast Walsh–Hadamard transforms, the exact scale 1/d', then
    /// `scale`), so all agree with [`Scalar`] bit for bit; a SIMD backend runs one row per
    /// lane.
    fn sorf_project(
        &self,
        x: MatRef<'_, T>,
        signs: &[T],
        scale: T,
        mut out: MatMut<'_, T>,
        row_max: &mut [T],
    ) {
        const MAX: usize = crate::structured::SORF_DENSE_MAX_PADDED;
        let (d, m) = (x.cols(), out.cols());
        let padded = d.next_power_of_two();
        assert!(padded <= MAX, "sorf_project: d' = {padded} above {MAX}");
        let (mut row, mut scratch) = ([T::zero(); MAX], [T::zero(); MAX]);
        for (r, mx) in row_max[..x.rows()].iter_mut().enumerate() {
            for (j, v) in row[..d].iter_mut().enumerate() {
                *v = x.get(r, j);
            }
            let o = out
                .row_mut(r)
                .expect("sorf_project: out needs adjacent columns");
            crate::sorf_apply(signs, m, d, &row[..d], o, &mut scratch[..padded])
                .expect("sorf_project: signs sized for m and d");
            if scale != T::one() {
                self.scale(scale, o);
            }
            *mx = self.max(o);
        }
    }

    /// One decoding query against a prefix state held as a total `hi` (S, `m × dv` row-major,
    /// then z, length m) and a [`Ring`] of recent keys and values (at most
    /// [`RING`](crate::RING)): `out = qᵀS + Σ_b (q·k_b) v_b`; returns `q·z + Σ_b q·k_b`. A
    /// backend can do it in one pass over S (decoding is memory-bound).
    fn ring_query(&self, hi: &[T], ring: Ring<'_, T>, q: &[T], out: &mut [T]) -> T {
        let (m, dv) = (ring.features(), ring.value_dim());
        let (s, z) = hi[..m * dv + m].split_at(m * dv);
        let out = &mut out[..dv];
        let q = &q[..m];
        self.gemm(
            MatMut::row_major(out, 1, dv),
            Accum::Overwrite,
            MatRef::row_major(q, 1, m),
            MatRef::row_major(s, m, dv),
        );
        let mut den = self.dot(q, z);
        for b in 0..ring.len() {
            let score = self.dot(q, &ring.keys()[b * m..(b + 1) * m]);
            self.axpy(score, &ring.values()[b * dv..(b + 1) * dv], out);
            den = den + score;
        }
        den
    }

    /// Adds the rank-r sums of a [`Ring`]'s keys and values to a compensated total
    /// `(hi, lo)` (each S, `m × dv`, then z, m): per element, `p = Σ_b keys[b][i]·values[b][j]`
    /// (z: `Σ_b keys[b][i]`) in any order, `lo ← lo + p` rounded once, then
    /// [`fold`](Self::fold)'s TwoSum. A backend can do it in one pass over the total.
    fn fold_rank(&self, hi: &mut [T], lo: &mut [T], ring: Ring<'_, T>) {
        let (m, dv) = (ring.features(), ring.value_dim());
        crate::state::add_block(self, lo, ring);
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

    /// Largest element; `-∞` for an empty slice. NaN-free input assumed; `-∞` entries are
    /// allowed (hybrid attention marks keys off a row's exact set with them).
    fn max(&self, x: &[T]) -> T;

    /// `Σ xᵢ`, 0 for an empty slice, in any order (the backends sum in vector lanes): the
    /// error is within `γ_{n−1}·Σ|xᵢ|` whatever the order (`γ_k = k·u / (1 − k·u)`).
    fn sum(&self, x: &[T]) -> T {
        x.iter().fold(T::zero(), |s, &v| s + v)
    }

    /// `x ← exp(x − shift)`. Accuracy budget for implementations: 2 ulp of the
    /// correctly rounded result over the finite range, exact 0 below underflow and for a
    /// `-∞` entry (finite `shift`): hybrid attention relies on `-∞` weighing exactly 0.
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

    fn gemm(&self, mut c: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>) {
        let (m, n, k) = gemm_dims(&c, &a, &b);
        if b.col_stride() != 1 {
            // B's columns are the contiguous direction (B = Wᵀ, K'ᵀ): one dot per element.
            for i in 0..m {
                for j in 0..n {
                    let s = match (a.row(i), b.t().row(j)) {
                        (Some(ar), Some(bc)) => Kernels::<T>::dot(self, ar, bc),
                        _ => (0..k).fold(T::zero(), |s, p| s + a.get(i, p) * b.get(p, j)),
                    };
                    let cij = c.get_mut(i, j);
                    *cij = match accum {
                        Accum::Overwrite => s,
                        Accum::Add => *cij + s,
                    };
                }
            }
            return;
        }
        // B's rows are contiguous: row i of C gains a[i][p]·B[p] for p in order.
        for i in 0..m {
            if accum == Accum::Overwrite {
                (0..n).for_each(|j| *c.get_mut(i, j) = T::zero());
            }
            for p in 0..k {
                let (alpha, br) = (a.get(i, p), b.row(p).expect("unit column stride"));
                match c.row_mut(i) {
                    Some(cr) => Kernels::<T>::axpy(self, alpha, br, cr),
                    None => {
                        for (j, &x) in br.iter().enumerate() {
                            let cij = c.get_mut(i, j);
                            *cij = *cij + alpha * x;
                        }
                    }
                }
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
