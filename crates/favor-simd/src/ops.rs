//! Elementwise and reduction kernels over `S: Simd`.

use crate::math::{exp_f32s, sin_cos_f32s};
use crate::real::Real;
use favor_core::{Activation, Ring};
use pulp::Simd;

/// `Σ xᵢyᵢ` with four independent accumulators (hides FMA latency).
#[inline(always)]
pub(crate) fn dot<T: Real, S: Simd>(s: S, x: &[T], y: &[T]) -> T {
    let n = x.len().min(y.len());
    let (xv, xt) = T::as_simd::<S>(&x[..n]);
    let (yv, yt) = T::as_simd::<S>(&y[..n]);
    let zero = T::vsplat(s, T::zero());
    let mut acc = [zero; 4];
    let (x4, xr) = xv.split_at(xv.len() / 4 * 4);
    let (y4, yr) = yv.split_at(x4.len());
    for (xc, yc) in x4.chunks_exact(4).zip(y4.chunks_exact(4)) {
        for t in 0..4 {
            acc[t] = T::vfma(s, xc[t], yc[t], acc[t]);
        }
    }
    for (&a, &b) in xr.iter().zip(yr) {
        acc[0] = T::vfma(s, a, b, acc[0]);
    }
    let v = T::vadd(s, T::vadd(s, acc[0], acc[1]), T::vadd(s, acc[2], acc[3]));
    let mut sum = T::reduce_sum(s, v);
    for (&a, &b) in xt.iter().zip(yt) {
        sum = sum + a * b;
    }
    sum
}

/// `y += alpha·x`.
#[inline(always)]
pub(crate) fn axpy<T: Real, S: Simd>(s: S, alpha: T, x: &[T], y: &mut [T]) {
    let n = x.len().min(y.len());
    let (yv, yt) = T::as_mut_simd::<S>(&mut y[..n]);
    let (xv, xt) = T::as_simd::<S>(&x[..n]);
    let av = T::vsplat(s, alpha);
    for (yi, &xi) in yv.iter_mut().zip(xv) {
        *yi = T::vfma(s, av, xi, *yi);
    }
    for (yi, &xi) in yt.iter_mut().zip(xt) {
        *yi = *yi + alpha * xi;
    }
}

/// `x *= alpha`.
#[inline(always)]
pub(crate) fn scale<T: Real, S: Simd>(s: S, alpha: T, x: &mut [T]) {
    let (xv, xt) = T::as_mut_simd::<S>(x);
    let av = T::vsplat(s, alpha);
    for xi in xv {
        *xi = T::vmul(s, av, *xi);
    }
    for xi in xt {
        *xi = *xi * alpha;
    }
}

/// `Σ xᵢ`, 0 when empty: four vector accumulators (as [`dot`]), so a long row is not one
/// chain of dependent adds.
#[inline(always)]
pub(crate) fn sum<T: Real, S: Simd>(s: S, x: &[T]) -> T {
    let (xv, xt) = T::as_simd::<S>(x);
    let zero = T::vsplat(s, T::zero());
    let mut acc = [zero; 4];
    let (x4, xr) = xv.split_at(xv.len() / 4 * 4);
    for xc in x4.chunks_exact(4) {
        for t in 0..4 {
            acc[t] = T::vadd(s, acc[t], xc[t]);
        }
    }
    for &a in xr {
        acc[0] = T::vadd(s, acc[0], a);
    }
    let v = T::vadd(s, T::vadd(s, acc[0], acc[1]), T::vadd(s, acc[2], acc[3]));
    let mut total = T::reduce_sum(s, v);
    for &a in xt {
        total = total + a;
    }
    total
}

/// Largest element, `-∞` when empty.
#[inline(always)]
pub(crate) fn max<T: Real, S: Simd>(s: S, x: &[T]) -> T {
    let (xv, xt) = T::as_simd::<S>(x);
    let mut acc = T::vsplat(s, T::neg_infinity());
    for &v in xv {
        acc = T::vmax(s, acc, v);
    }
    let mut m = T::reduce_max(s, acc);
    for &v in xt {
        if v > m {
            m = v;
        }
    }
    m
}

/// Applies an expression of the vector `$v` to every vector of `$x` (the tail through a
/// partial load/store). A macro, not a closure: closures do not reliably inline into the
/// target-feature region, and an out-of-line intrinsic costs 10× its work.
macro_rules! map_f32 {
    ($s:ident, $x:expr, |$v:ident| $body:expr) => {{
        let (xv, xt) = S::as_mut_simd_f32s($x);
        for slot in xv {
            let $v = *slot;
            *slot = $body;
        }
        if !xt.is_empty() {
            let $v = $s.partial_load_f32s(xt);
            $s.partial_store_f32s(xt, $body);
        }
    }};
}

/// `x ← exp(x − shift)`.
#[inline(always)]
pub(crate) fn exp_shift_f32<S: Simd>(s: S, x: &mut [f32], shift: f32) {
    let sh = s.splat_f32s(shift);
    map_f32!(s, x, |v| exp_f32s(s, s.sub_f32s(v, sh)));
}

/// `x ← x · exp(logs − shift)`.
#[inline(always)]
pub(crate) fn mul_exp_f32<S: Simd>(s: S, x: &mut [f32], logs: &[f32], shift: f32) {
    let n = x.len().min(logs.len());
    let sh = s.splat_f32s(shift);
    let (xv, xt) = S::as_mut_simd_f32s(&mut x[..n]);
    let (lv, lt) = S::as_simd_f32s(&logs[..n]);
    for (xi, &li) in xv.iter_mut().zip(lv) {
        *xi = s.mul_f32s(*xi, exp_f32s(s, s.sub_f32s(li, sh)));
    }
    if !xt.is_empty() {
        let e = exp_f32s(s, s.sub_f32s(s.partial_load_f32s(lt), sh));
        let v = s.mul_f32s(s.partial_load_f32s(xt), e);
        s.partial_store_f32s(xt, v);
    }
}

/// `[u] → [sin u, cos u]` in place (u in the first m entries).
#[inline(always)]
pub(crate) fn sin_cos_f32<S: Simd>(s: S, out: &mut [f32], m: usize) {
    let (sv, cv) = out[..2 * m].split_at_mut(m);
    let (sin_v, sin_t) = S::as_mut_simd_f32s(sv);
    let (cos_v, cos_t) = S::as_mut_simd_f32s(cv);
    for (si, ci) in sin_v.iter_mut().zip(cos_v) {
        let (a, b) = sin_cos_f32s(s, *si);
        *si = a;
        *ci = b;
    }
    if !sin_t.is_empty() {
        let (a, b) = sin_cos_f32s(s, s.partial_load_f32s(sin_t));
        s.partial_store_f32s(sin_t, a);
        s.partial_store_f32s(cos_t, b);
    }
}

/// `x ← f(x) + eps`.
#[inline(always)]
pub(crate) fn activation_f32<S: Simd>(s: S, x: &mut [f32], f: Activation<f32>, eps: f32) {
    let e = s.splat_f32s(eps);
    let zero = s.splat_f32s(0.0);
    let one = s.splat_f32s(1.0);
    match f {
        Activation::Relu => map_f32!(s, x, |v| s.add_f32s(s.max_f32s(v, zero), e)),
        Activation::Abs => map_f32!(s, x, |v| s.add_f32s(s.abs_f32s(v), e)),
        Activation::Square => map_f32!(s, x, |v| s.mul_add_e_f32s(v, v, e)),
        Activation::Exp => map_f32!(s, x, |v| s.add_f32s(exp_f32s(s, v), e)),
        // elu(v) + 1 = v + 1 for v > 0, eᵛ otherwise; eᵛ of the clamped value avoids overflow
        // in the lanes that take the other branch.
        Activation::EluPlusOne => map_f32!(s, x, |v| s.add_f32s(
            s.select_f32s(
                s.greater_than_f32s(v, zero),
                s.add_f32s(v, one),
                exp_f32s(s, s.min_f32s(v, zero))
            ),
            e
        )),
        Activation::Custom(g) => {
            for xi in x {
                *xi = g(*xi) + eps;
            }
        }
    }
}

/// Knuth's TwoSum, elementwise: `hi + lo ← (s, error)` with `s = fl(hi + lo)`. Plain adds and
/// subtracts only (no FMA, no reassociation): the error-free property depends on each
/// operation rounding exactly once.
#[inline(always)]
pub(crate) fn fold<T: Real, S: Simd>(s: S, hi: &mut [T], lo: &mut [T]) {
    let n = hi.len().min(lo.len());
    let (hv, ht) = T::as_mut_simd::<S>(&mut hi[..n]);
    let (lv, lt) = T::as_mut_simd::<S>(&mut lo[..n]);
    for (h, l) in hv.iter_mut().zip(lv.iter_mut()) {
        two_sum::<T, S>(s, h, l);
    }
    if !ht.is_empty() {
        let (mut h, mut l) = (T::load_partial(s, ht), T::load_partial(s, lt));
        two_sum::<T, S>(s, &mut h, &mut l);
        T::store_partial(s, ht, h);
        T::store_partial(s, lt, l);
    }
}

/// `(h, y) ← (fl(h + y), its exact error)`: Knuth's TwoSum.
#[inline(always)]
fn two_sum<T: Real, S: Simd>(s: S, h: &mut T::V<S>, y: &mut T::V<S>) {
    let sum = T::vadd(s, *h, *y);
    let b = T::vsub(s, sum, *h);
    *y = T::vadd(s, T::vsub(s, *h, T::vsub(s, sum, b)), T::vsub(s, *y, b));
    *h = sum;
}

/// A sum `p` added to a compensated pair: `l ← fl(p + l)` (one rounding, as a GEMM
/// accumulating into `l` has), then [`two_sum`].
#[inline(always)]
fn add_two_sum<T: Real, S: Simd>(s: S, h: &mut T::V<S>, l: &mut T::V<S>, p: T::V<S>) {
    *l = T::vadd(s, p, *l);
    two_sum::<T, S>(s, h, l);
}

/// One decoding query in one pass over S: the ring's scores `q·k_b` first (r dot products),
/// then, columns in blocks of four vectors, `Σᵢ qᵢ·Sᵢ + Σ_b score_b·v_b` with the four
/// accumulators in registers while the rows of S stream through once.
#[inline(always)]
pub(crate) fn ring_query<T: Real, S: Simd>(
    s: S,
    hi: &[T],
    ring: Ring<'_, T>,
    q: &[T],
    out: &mut [T],
) -> T {
    let (m, dv, r) = (ring.features(), ring.value_dim(), ring.len());
    let (keys, values) = (ring.keys(), ring.values());
    let (sh, zh) = hi[..m * dv + m].split_at(m * dv);
    let (q, out) = (&q[..m], &mut out[..dv]);
    // The trait's precondition (a longer ring is never built); the scores live on the stack.
    assert!(
        r <= favor_core::RING,
        "ring_query: {r} keys, RING is {}",
        favor_core::RING
    );
    let mut scores = [T::zero(); favor_core::RING];
    for (b, sc) in scores.iter_mut().enumerate().take(r) {
        *sc = dot(s, q, &keys[b * m..(b + 1) * m]);
    }
    let values = &values[..r * dv];
    let lanes = T::lanes::<S>();
    let w = 4 * lanes;
    let zero = T::vsplat(s, T::zero());
    let mut j = 0;
    while j + w <= dv {
        let mut acc = [zero; 4];
        // S's rows, then the ring's, in that order (the sums' order is the result's rounding);
        // two plain loops: one chained iterator cost a branch and bounds checks per row. (A
        // macro, not a closure: a closure is compiled out of line without the caller's
        // target features.)
        macro_rules! add {
            ($rows:expr, $coefs:expr) => {
                for (row, &c) in $rows.chunks_exact(dv).zip($coefs) {
                    let (rv, _) = T::as_simd::<S>(&row[j..j + w]);
                    let cv = T::vsplat(s, c);
                    for t in 0..4 {
                        acc[t] = T::vfma(s, cv, rv[t], acc[t]);
                    }
                }
            };
        }
        add!(sh, q);
        add!(values, &scores[..r]);
        let (ov, _) = T::as_mut_simd::<S>(&mut out[j..j + w]);
        ov[..4].copy_from_slice(&acc);
        j += w;
    }
    while j < dv {
        let len = lanes.min(dv - j);
        let mut acc = zero;
        let rows = sh
            .chunks_exact(dv)
            .zip(q)
            .chain(values.chunks_exact(dv).zip(&scores));
        for (row, &c) in rows {
            acc = T::vfma(
                s,
                T::vsplat(s, c),
                T::load_partial(s, &row[j..j + len]),
                acc,
            );
        }
        T::store_partial(s, &mut out[j..j + len], acc);
        j += len;
    }
    scores[..r].iter().fold(dot(s, q, zh), |a, &x| a + x)
}

/// The ring's rank-r sums added to the compensated total in one pass over it: rows of S in
/// register blocks of `R` rows × four vectors of columns, `p = Σ_b k_b[i]·v_b` in `4R`
/// accumulators (each value vector loaded once serves R rows, each key broadcast four
/// vectors), then `y = p + lo` and TwoSum into `(hi, lo)` as `fold` does; z from the keys'
/// column sums.
#[inline(always)]
pub(crate) fn fold_rank<T: Real, S: Simd>(s: S, hi: &mut [T], lo: &mut [T], ring: Ring<'_, T>) {
    if crate::gemm::wide_register_file::<S>() {
        fold_rank_rows::<T, S, 4>(s, hi, lo, ring)
    } else {
        fold_rank_rows::<T, S, 2>(s, hi, lo, ring)
    }
}

#[inline(always)]
fn fold_rank_rows<T: Real, S: Simd, const R: usize>(
    s: S,
    hi: &mut [T],
    lo: &mut [T],
    ring: Ring<'_, T>,
) {
    let (m, dv) = (ring.features(), ring.value_dim());
    let (keys, values) = (ring.keys(), ring.values());
    let (hs, hz) = hi[..m * dv + m].split_at_mut(m * dv);
    let (ls, lz) = lo[..m * dv + m].split_at_mut(m * dv);
    let lanes = T::lanes::<S>();
    let w = 4 * lanes;
    let zero = T::vsplat(s, T::zero());
    for i0 in (0..m).step_by(R) {
        let rows = R.min(m - i0);
        let mut j = 0;
        while j + w <= dv {
            let mut acc = [[zero; 4]; R];
            for (krow, vrow) in keys.chunks_exact(m).zip(values.chunks_exact(dv)) {
                let (vv, _) = T::as_simd::<S>(&vrow[j..j + w]);
                let vb = [vv[0], vv[1], vv[2], vv[3]];
                // A constant trip count, so the accumulators stay in registers; a last block
                // of fewer rows multiplies by zero keys and is not stored.
                for (x, a) in acc.iter_mut().enumerate() {
                    let k = if x < rows { krow[i0 + x] } else { T::zero() };
                    let kv = T::vsplat(s, k);
                    for t in 0..4 {
                        a[t] = T::vfma(s, kv, vb[t], a[t]);
                    }
                }
            }
            for (x, a) in acc.iter().enumerate().take(rows) {
                let at = (i0 + x) * dv + j;
                let (hv, _) = T::as_mut_simd::<S>(&mut hs[at..at + w]);
                let (lv, _) = T::as_mut_simd::<S>(&mut ls[at..at + w]);
                for t in 0..4 {
                    add_two_sum::<T, S>(s, &mut hv[t], &mut lv[t], a[t]);
                }
            }
            j += w;
        }
        while j < dv {
            let len = lanes.min(dv - j);
            for i in i0..i0 + rows {
                let mut acc = zero;
                for (krow, vrow) in keys.chunks_exact(m).zip(values.chunks_exact(dv)) {
                    let vb = T::load_partial(s, &vrow[j..j + len]);
                    acc = T::vfma(s, T::vsplat(s, krow[i]), vb, acc);
                }
                let at = i * dv + j;
                let mut h = T::load_partial(s, &hs[at..at + len]);
                let mut l = T::load_partial(s, &ls[at..at + len]);
                add_two_sum::<T, S>(s, &mut h, &mut l, acc);
                T::store_partial(s, &mut hs[at..at + len], h);
                T::store_partial(s, &mut ls[at..at + len], l);
            }
            j += len;
        }
    }
    // z: the keys' column sums, a vector of features at a time.
    let mut i = 0;
    while i < m {
        let len = lanes.min(m - i);
        let mut acc = zero;
        for krow in keys.chunks_exact(m) {
            acc = T::vadd(s, acc, T::load_partial(s, &krow[i..i + len]));
        }
        let mut h = T::load_partial(s, &hz[i..i + len]);
        let mut l = T::load_partial(s, &lz[i..i + len]);
        add_two_sum::<T, S>(s, &mut h, &mut l, acc);
        T::store_partial(s, &mut hz[i..i + len], h);
        T::store_partial(s, &mut lz[i..i + len], l);
        i += len;
    }
}
