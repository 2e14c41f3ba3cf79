//! Elementwise and reduction kernels over `S: Simd`.

use crate::math::{exp_f32s, sin_cos_f32s};
use crate::real::Real;
use favor_core::Activation;
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

/// One pass over the prefix state: `S ← f·S + k·vᵀ`, `z ← f·z + k`, `out = qᵀS` (new S),
/// returns `q·z` (new z). Columns of S go in blocks of four vectors: v and the four output
/// accumulators stay in registers while the rows stream through once.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn state_step<T: Real, S: Simd>(
    s: S,
    m: usize,
    dv: usize,
    st: &mut [T],
    z: &mut [T],
    f: T,
    k: &[T],
    v: &[T],
    q: &[T],
    out: &mut [T],
) -> T {
    let (st, k, q, v, out) = (
        &mut st[..m * dv],
        &k[..m],
        &q[..m],
        &v[..dv],
        &mut out[..dv],
    );
    let lanes = T::lanes::<S>();
    let w = 4 * lanes;
    let fv = T::vsplat(s, f);
    let mut j = 0;
    while j + w <= dv {
        let (vv, _) = T::as_simd::<S>(&v[j..j + w]);
        let vb = [vv[0], vv[1], vv[2], vv[3]];
        let mut acc = [T::vsplat(s, T::zero()); 4];
        // Most steps leave the stabiliser where it is (f = 1): without the rescale the loop
        // is two FMAs per element, and S·1 is S exactly, so both instances agree bit for bit.
        macro_rules! rows {
            ($rescale:expr) => {
                for i in 0..m {
                    let (row, _) = T::as_mut_simd::<S>(&mut st[i * dv + j..i * dv + j + w]);
                    let (ki, qi) = (T::vsplat(s, k[i]), T::vsplat(s, q[i]));
                    for t in 0..4 {
                        let old = if $rescale {
                            T::vmul(s, row[t], fv)
                        } else {
                            row[t]
                        };
                        let r = T::vfma(s, ki, vb[t], old);
                        row[t] = r;
                        acc[t] = T::vfma(s, qi, r, acc[t]);
                    }
                }
            };
        }
        if f == T::one() {
            rows!(false);
        } else {
            rows!(true);
        }
        let (ov, _) = T::as_mut_simd::<S>(&mut out[j..j + w]);
        ov[..4].copy_from_slice(&acc);
        j += w;
    }
    while j < dv {
        let len = lanes.min(dv - j);
        let vb = T::load_partial(s, &v[j..j + len]);
        let mut acc = T::vsplat(s, T::zero());
        for i in 0..m {
            let cell = &mut st[i * dv + j..i * dv + j + len];
            let r = T::vfma(
                s,
                T::vsplat(s, k[i]),
                vb,
                T::vmul(s, T::load_partial(s, cell), fv),
            );
            T::store_partial(s, cell, r);
            acc = T::vfma(s, T::vsplat(s, q[i]), r, acc);
        }
        T::store_partial(s, &mut out[j..j + len], acc);
        j += len;
    }
    // z is short (m): scale-and-add, then the dot product, both vectorised.
    let z = &mut z[..m];
    if f != T::one() {
        scale(s, f, z);
    }
    axpy(s, T::one(), k, z);
    dot(s, q, z)
}
