//! AVX-512 in-register transposes for packing: pulp's portable vectors have no lane shuffles,
//! so the generic packing of a B with contiguous columns (K'ᵀ in the causal score tile) moves
//! one element per load and store. With AVX-512's two-source shuffles a 16×16 block of f32
//! takes 16 loads, 64 shuffles and 16 stores.

use crate::gemm::BBlock;
use crate::real::Real;
use core::any::{Any, TypeId};
use pulp::bytemuck;
use pulp::x86::V4;

type V = core::arch::x86_64::__m512;

/// Transposes 16 rows of 16 f32: `out[p][t] = rows[t][p]`. Loops, not closures: a closure
/// is a function of its own, without the caller's target features, and one left out of line
/// calls each intrinsic out of line.
#[inline(always)]
fn transpose16(v4: V4, r: &[V; 16]) -> [V; 16] {
    let f = v4.avx512f;
    // Pairs of rows interleaved by element: t[2i] holds rows 2i, 2i+1 at elements 0, 1 of each
    // 128-bit lane, t[2i+1] at elements 2, 3.
    let mut t = *r;
    for i in 0..8 {
        let (a, b) = (r[2 * i], r[2 * i + 1]);
        t[2 * i] = f._mm512_unpacklo_ps(a, b);
        t[2 * i + 1] = f._mm512_unpackhi_ps(a, b);
    }
    // Quads of rows: u[4q + e] holds rows 4q..4q+4 at element e of each 128-bit lane.
    let mut u = t;
    for q in 0..4 {
        for h in 0..2 {
            let a = f._mm512_castps_pd(t[4 * q + h]);
            let b = f._mm512_castps_pd(t[4 * q + 2 + h]);
            u[4 * q + 2 * h] = f._mm512_castpd_ps(f._mm512_unpacklo_pd(a, b));
            u[4 * q + 2 * h + 1] = f._mm512_castpd_ps(f._mm512_unpackhi_pd(a, b));
        }
    }
    // 128-bit lanes gathered across quads 2h and 2h + 1 (rows 8h..8h+8): v[8h + e] their
    // lanes 0 and 2, v[8h + 4 + e] their lanes 1 and 3.
    let mut v = u;
    for h in 0..2 {
        for e in 0..4 {
            let (a, b) = (u[8 * h + e], u[8 * h + 4 + e]);
            v[8 * h + e] = f._mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
            v[8 * h + 4 + e] = f._mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
        }
    }
    // Output row p = 4·lane + e: lanes 0 and 2 from v[e] and v[8 + e], lanes 1 and 3 from
    // v[4 + e] and v[12 + e].
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

/// Packs the whole 16×16 blocks of one micro-panel as `gemm::pack_transposed` defines it
/// (`panel[p·nr + c] = data[(j0 + c)·cs + pc + p]`) when `s` is AVX-512 and `T` is f32, and
/// returns how many leading columns it packed completely (every p < kc); 0 otherwise. The
/// caller has checked that every source index is in bounds and `panel` holds kc·nr.
#[inline(always)]
pub(crate) fn pack_transposed<T: Real, S: pulp::Simd>(
    s: S,
    data: &[T],
    cs: usize,
    block: BBlock,
    panel: &mut [T],
) -> usize {
    let (pc, kc, j0, nr) = (block.pc, block.kc, block.j0, block.nr);
    let cols = block.cols;
    let Some(&v4) = (&s as &dyn Any).downcast_ref::<V4>() else {
        return 0;
    };
    if TypeId::of::<T>() != TypeId::of::<f32>() || kc < 16 || cols < 16 {
        return 0;
    }
    let data: &[f32] = bytemuck::cast_slice(data);
    let panel: &mut [f32] = bytemuck::cast_slice_mut(panel);
    let whole = cols / 16 * 16;
    for c0 in (0..whole).step_by(16) {
        let base = (j0 + c0) * cs + pc;
        let mut p0 = 0;
        while p0 + 16 <= kc {
            let mut rows = [bytemuck::cast::<[f32; 16], V>([0.0; 16]); 16];
            for (t, row) in rows.iter_mut().enumerate() {
                let src: [f32; 16] = data[base + t * cs + p0..][..16].try_into().unwrap();
                *row = bytemuck::cast(src);
            }
            let cols = transpose16(v4, &rows);
            for (p, col) in cols.iter().enumerate() {
                let o = (p0 + p) * nr + c0;
                panel[o..o + 16].copy_from_slice(&bytemuck::cast::<V, [f32; 16]>(*col));
            }
            p0 += 16;
        }
        for p in p0..kc {
            for t in 0..16 {
                panel[p * nr + c0 + t] = data[base + t * cs + p];
            }
        }
    }
    whole
}
