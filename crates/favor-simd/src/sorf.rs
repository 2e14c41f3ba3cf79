//! The structured (SORF) projection with one row per lane.
//!
//! A fast Walsh–Hadamard transform within one row needs lane shuffles at its short strides;
//! across rows it needs none: with row l of a group of `lanes` rows in lane l, coordinate j
//! of every row is one vector, and each butterfly `(a, b) → (a + b, a − b)` is one vector add
//! and one subtract. The price is a transpose in (d values per row) and out (m per row), done
//! element by element. Each lane runs exactly the scalar reference's operations in its order,
//! so the result is the same bit for bit ([`favor_core::Kernels::sorf_project`]).

use crate::real::Real;
use favor_core::{Kernels, MatMut, MatRef, Scalar};
use pulp::Simd;

/// Largest d' transformed here (two arrays of d' vectors on the stack, 8 KiB each with
/// 64-byte vectors); larger ones (never an attention head's) take the scalar reference.
const MAX_PADDED: usize = 128;
/// Most lanes of any backend (f32 on AVX-512).
const MAX_LANES: usize = 16;

/// `out[r] = scale · (W x_r)`, `row_max[r] = max out[r]` for the SORF W of `signs`.
#[inline(always)]
pub(crate) fn sorf_project<T: Real, S: Simd>(
    s: S,
    x: MatRef<'_, T>,
    signs: &[T],
    scale: T,
    mut out: MatMut<'_, T>,
    row_max: &mut [T],
) {
    let lanes = T::lanes::<S>();
    let (rows, d, m) = (x.rows(), x.cols(), out.cols());
    let padded = d.next_power_of_two();
    if padded > MAX_PADDED || lanes > MAX_LANES {
        return Scalar.sorf_project(x, signs, scale, out, row_max);
    }
    let inv = T::vsplat(s, T::one() / T::from_usize(padded));
    let scale_v = (scale != T::one()).then(|| T::vsplat(s, scale));
    let zero = T::vsplat(s, T::zero());
    let (mut input, mut w) = ([zero; MAX_PADDED], [zero; MAX_PADDED]);
    // Lane-major staging for the transposes: element (i, l) at i·lanes + l.
    let mut stage = [T::zero(); MAX_PADDED * MAX_LANES];
    for r0 in (0..rows).step_by(lanes) {
        let n = lanes.min(rows - r0);
        // Transpose in: input[j] holds coordinate j of rows r0..r0 + n, one per lane; the
        // lanes past n hold zero rows, whose outputs are never stored.
        let stage_in = &mut stage[..d * lanes];
        if n < lanes {
            stage_in.fill(T::zero());
        }
        for l in 0..n {
            match x.row(r0 + l) {
                Some(row) => {
                    for (e, &v) in stage_in.iter_mut().skip(l).step_by(lanes).zip(row) {
                        *e = v;
                    }
                }
                None => {
                    for (j, e) in stage_in.iter_mut().skip(l).step_by(lanes).enumerate() {
                        *e = x.get(r0 + l, j);
                    }
                }
            }
        }
        for (v, chunk) in input[..d].iter_mut().zip(stage_in.chunks_exact(lanes)) {
            *v = T::load_partial(s, chunk);
        }
        let mut mx = T::vsplat(s, T::neg_infinity());
        let blocks = signs.chunks_exact(3 * padded);
        for (first, block) in (0..m).step_by(padded).zip(blocks) {
            let (d1, rest) = block.split_at(padded);
            let (d2, d3) = rest.split_at(padded);
            let w = &mut w[..padded];
            for ((v, &xj), &sg) in w.iter_mut().zip(&input[..d]).zip(d3) {
                *v = T::vmul(s, xj, T::vsplat(s, sg));
            }
            w[d..].fill(zero);
            walsh_hadamard::<T, S>(s, w);
            flip(s, w, d2);
            walsh_hadamard::<T, S>(s, w);
            flip(s, w, d1);
            walsh_hadamard::<T, S>(s, w);
            let take = padded.min(m - first);
            let stage_out = &mut stage[..take * lanes];
            for (v, chunk) in w[..take].iter().zip(stage_out.chunks_exact_mut(lanes)) {
                let mut y = T::vmul(s, *v, inv);
                if let Some(sv) = scale_v {
                    y = T::vmul(s, y, sv);
                }
                mx = T::vmax(s, mx, y);
                T::store_partial(s, chunk, y);
            }
            // Transpose out: row r0 + l takes lane l of each staged vector.
            for l in 0..n {
                let row = out
                    .row_mut(r0 + l)
                    .expect("sorf_project: out needs adjacent columns");
                let row = &mut row[first..first + take];
                for (o, &e) in row.iter_mut().zip(stage_out.iter().skip(l).step_by(lanes)) {
                    *o = e;
                }
            }
        }
        let maxima = &mut stage[..lanes];
        T::store_partial(s, maxima, mx);
        row_max[r0..r0 + n].copy_from_slice(&maxima[..n]);
    }
}

/// `w[j] *= signs[j]` (±1: exact).
#[inline(always)]
fn flip<T: Real, S: Simd>(s: S, w: &mut [T::V<S>], signs: &[T]) {
    for (v, &sg) in w.iter_mut().zip(signs) {
        *v = T::vmul(s, *v, T::vsplat(s, sg));
    }
}

/// Vectors one pass of butterflies keeps in registers.
const GROUP: usize = 16;

/// The unnormalised fast Walsh–Hadamard transform over the vectors of `w` (each lane its own
/// transform; `w.len()` a power of two). The reference's stages h = 1, 2, 4, … in its order,
/// so every element sees the same additions and subtractions: the stages below [`GROUP`] run
/// on groups of consecutive vectors held in registers (fixed sizes, so the compiler unrolls
/// them and keeps them there), the rest on the vectors `GROUP` apart, so each vector is
/// loaded and stored twice instead of once per stage.
#[inline(always)]
fn walsh_hadamard<T: Real, S: Simd>(s: S, w: &mut [T::V<S>]) {
    let n = w.len();
    match n {
        2 => return in_registers::<T, S, 2>(s, w, 0, 1),
        4 => return in_registers::<T, S, 4>(s, w, 0, 1),
        8 => return in_registers::<T, S, 8>(s, w, 0, 1),
        _ if n < GROUP => return, // d' = 1: the transform is the identity
        _ => {}
    }
    for chunk in w.chunks_exact_mut(GROUP) {
        in_registers::<T, S, GROUP>(s, chunk, 0, 1);
    }
    // Stages h = GROUP, 2·GROUP, …: among w[base], w[base + GROUP], ….
    for base in 0..GROUP {
        match n / GROUP {
            2 => in_registers::<T, S, 2>(s, w, base, GROUP),
            4 => in_registers::<T, S, 4>(s, w, base, GROUP),
            8 => in_registers::<T, S, 8>(s, w, base, GROUP),
            _ => {}
        }
    }
}

/// All stages of a transform of the `N` vectors `w[base + k·stride]`, k < N, loaded into a
/// fixed-size array first.
#[inline(always)]
fn in_registers<T: Real, S: Simd, const N: usize>(
    s: S,
    w: &mut [T::V<S>],
    base: usize,
    stride: usize,
) {
    // A loop, not `array::from_fn`: its closure was compiled out of line, without the
    // caller's target features, copying the vectors through the stack with SSE moves.
    let mut r = [w[base]; N];
    for (k, v) in r.iter_mut().enumerate().skip(1) {
        *v = w[base + k * stride];
    }
    let mut h = 1;
    while h < N {
        for i in 0..N {
            if i & h == 0 {
                let (p, q) = (r[i], r[i + h]);
                r[i] = T::vadd(s, p, q);
                r[i + h] = T::vsub(s, p, q);
            }
        }
        h *= 2;
    }
    for (k, v) in r.into_iter().enumerate() {
        w[base + k * stride] = v;
    }
}
