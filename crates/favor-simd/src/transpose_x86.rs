//! x86 in-register transposes for packing: pulp's portable vectors have no lane shuffles, so
//! the generic packing of a B with contiguous columns (K'ᵀ in the causal score tile) moves one
//! element per load and store. With AVX-512's shuffles a 16×16 block of f32 takes 16 loads,
//! 64 shuffles and 16 stores. An 8×8 AVX2 transpose (24 shuffles) was built and measured no
//! faster than the generic packing (`ab causal` with `BACKEND=avx2`, seven alternating
//! rounds' minima: 77.5–78.6 ms before, 77.4–79.2 with it), so AVX2 packs generically.

use crate::gemm::BBlock;
use crate::real::Real;
use core::any::{Any, TypeId};
use pulp::bytemuck::{self, Zeroable};
use pulp::x86::V4;

/// Lanes of an AVX-512 f32 vector: the transposed blocks are N×N.
const N: usize = 16;

type V = core::arch::x86_64::__m512;

/// Transposes 16 rows of 16 f32: `out[p]` lane `t` = `r[t]` lane `p`. Loops over arrays, not
/// closures (`array::from_fn`): a closure is a function of its own, without the caller's
/// target features, and one left out of line calls each intrinsic out of line (measured 35 %
/// slower causal attention, not faster).
#[inline(always)]
fn transpose16(v4: V4, r: &[V; 16]) -> [V; 16] {
    let f = v4.avx512f;
    // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved, elements 0–1 and 2–3 of each 128-bit
    // lane.
    let mut t = *r;
    for i in 0..8 {
        let (a, b) = (r[2 * i], r[2 * i + 1]);
        t[2 * i] = f._mm512_unpacklo_ps(a, b);
        t[2 * i + 1] = f._mm512_unpackhi_ps(a, b);
    }
    // u[4q + e]: rows 4q..4q+4 at element e of each 128-bit lane.
    let mut u = t;
    for q in 0..4 {
        for h in 0..2 {
            let a = f._mm512_castps_pd(t[4 * q + h]);
            let b = f._mm512_castps_pd(t[4 * q + 2 + h]);
            u[4 * q + 2 * h] = f._mm512_castpd_ps(f._mm512_unpacklo_pd(a, b));
            u[4 * q + 2 * h + 1] = f._mm512_castpd_ps(f._mm512_unpackhi_pd(a, b));
        }
    }
    // v[8h + e]: lanes 0 and 2 of quads 2h, 2h + 1; v[8h + 4 + e]: their lanes 1 and 3.
    let mut v = u;
    for h in 0..2 {
        for e in 0..4 {
            let (a, b) = (u[8 * h + e], u[8 * h + 4 + e]);
            v[8 * h + e] = f._mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
            v[8 * h + 4 + e] = f._mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
        }
    }
    // Row p = 4·lane + e: lanes 0 and 2 from v[e], v[8 + e]; lanes 1 and 3 from v[4 + e],
    // v[12 + e].
    let mut out = v;
    for e in 0..4 {
        for s in 0..2 {
            let (a, b) = (v[4 * s + e], v[8 + 4 * s + e]);
            out[4 * s + e] = f._mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
            out[8 + 4 * s + e] = f._mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
        }
    }
    out
}

/// Packs the whole 16×16 blocks of one micro-panel (see [`pack_transposed`]); returns the
/// columns packed.
#[inline(always)]
fn pack_blocks(v4: V4, data: &[f32], cs: usize, block: BBlock, panel: &mut [f32]) -> usize {
    let (pc, kc, j0, nr) = (block.pc, block.kc, block.j0, block.nr);
    if kc < N || block.cols < N {
        return 0;
    }
    let whole = block.cols / N * N;
    for c0 in (0..whole).step_by(N) {
        let base = (j0 + c0) * cs + pc;
        let mut p0 = 0;
        while p0 + N <= kc {
            let mut rows = [V::zeroed(); N];
            for (t, row) in rows.iter_mut().enumerate() {
                let src = &data[base + t * cs + p0..][..N];
                *row = bytemuck::pod_read_unaligned(bytemuck::cast_slice(src));
            }
            for (p, col) in transpose16(v4, &rows).iter().enumerate() {
                let o = (p0 + p) * nr + c0;
                panel[o..o + N].copy_from_slice(bytemuck::cast_slice(core::slice::from_ref(col)));
            }
            p0 += N;
        }
        for p in p0..kc {
            for t in 0..N {
                panel[p * nr + c0 + t] = data[base + t * cs + p];
            }
        }
    }
    whole
}

/// Packs the whole 16×16 blocks of one micro-panel as `gemm::pack_transposed` defines it
/// (`panel[p·nr + c] = data[(j0 + c)·cs + pc + p]`) when `s` is AVX-512 and `T` is f32, and
/// returns how many leading columns it packed completely (every p < kc); 0 otherwise, the
/// caller then packing everything. The caller has checked that every source index is in
/// bounds and `panel` holds kc·nr.
#[inline(always)]
pub(crate) fn pack_transposed<T: Real, S: pulp::Simd>(
    s: S,
    data: &[T],
    cs: usize,
    block: BBlock,
    panel: &mut [T],
) -> usize {
    if TypeId::of::<T>() != TypeId::of::<f32>() {
        return 0;
    }
    let (data, panel): (&[f32], &mut [f32]) =
        (bytemuck::cast_slice(data), bytemuck::cast_slice_mut(panel));
    match (&s as &dyn Any).downcast_ref::<V4>() {
        Some(&v4) => pack_blocks(v4, data, cs, block, panel),
        None => 0,
    }
}
