//! favor-simd's GEMM against the `gemm` crate (faer's, single-threaded) on FAVOR+'s shapes, in
//! one run so the ratio is fair on a noisy machine: the two alternate rep by rep and each
//! reports its median and range.
//!
//! `cargo run --release -p favor-benches --features examples --example gemm_reference [-- REPS]`
//!
//! Shapes (f32, d = dv = 64, m = 256), each at L = 256 (one bidirectional block, what the
//! attention paths run) and L = 4096 (the whole sequence in one product):
//! - `X·Wᵀ`   L×64 · 64×256 (the projection, Wᵀ stored row-major);
//! - `K'ᵀV`   256×L · L×64 (the state update, A a transposed view, accumulated);
//! - `Q'S`    L×256 · 256×64.
//!
//! Then the projection without W: `sorf_project` (this backend, one row per lane) and
//! `sorf_apply` (favor-core's scalar fast Walsh–Hadamard
//! transform, 768 signs) against the dense `project` (this backend's GEMM over Wᵀ, 64 KiB) on
//! 16 rows (one decode step's query and key for 8 heads) and 256 rows (a block).

use favor_benches::reference::gemm_crate;
use favor_benches::{normal_data as data, *};
use favor_core::*;
use std::hint::black_box;
use std::time::Instant;

/// `num / den` of two [median, min, max] timings: the ratio of medians and its extremes.
fn ratio(num: [f64; 3], den: [f64; 3]) -> String {
    format!(
        "{:.2} [{:.2}, {:.2}]",
        num[0] / den[0],
        num[1] / den[2],
        num[2] / den[1]
    )
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map_or(31, |r| r.parse().expect("REPS is a count"));
    let k = favor_simd::Detected::new();
    let (d, m) = (DIM, FEATURES);
    // The FMA roof of this core, measured in the same run (best of 5).
    let iters = 2_000_000;
    let (_, roof_flops) = fma_roof(iters);
    let roof = (0..5)
        .map(|_| {
            let t = Instant::now();
            black_box(fma_roof(iters));
            roof_flops as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max);
    println!(
        "backend {} vs gemm 0.19 (one thread); FMA roof {roof:.0} GFLOP/s; {reps} alternating \
         rounds; GFLOP/s median [min, max]",
        name(&k),
    );
    println!(
        "{:<8} {:>5} {:>22} {:>22} {:>14}",
        "shape", "L", "favor-simd", "gemm crate", "favor / gemm"
    );
    for len in [BIDIR_BLOCK, 4096] {
        let x = data(len * d, 1, 1.0);
        let wt = data(d * m, 2, 1.0);
        let feats: Vec<f32> = data(len * m, 3, 1.0).iter().map(|x| x.abs()).collect();
        let v = data(len * d, 4, 1.0);
        let s_in = data(m * d, 5, 1.0);
        let (mut out_a, mut out_b) = (vec![0f32; len * m], vec![0f32; len * m]);
        let (mut s_a, mut s_b) = (vec![0f32; m * d], vec![0f32; m * d]);
        type Gemm<'a> = &'a dyn Fn(MatMut<'_, f32>, Accum, MatRef<'_, f32>, MatRef<'_, f32>);
        let ours: Gemm = &|c, acc, a, b| k.gemm(c, acc, a, b);
        let theirs: Gemm = &gemm_crate;
        let flops = |rows: usize, cols: usize, inner: usize| 2.0 * (rows * cols * inner) as f64;
        let cases: [(&str, f64); 3] = [
            ("X·Wᵀ", flops(len, m, d)),
            ("K'ᵀV", flops(m, d, len)),
            ("Q'S", flops(len, d, m)),
        ];
        for (case, (label, fl)) in cases.iter().enumerate() {
            let run = |g: Gemm, out: &mut [f32], s: &mut [f32]| match case {
                0 => g(
                    MatMut::row_major(out, len, m),
                    Accum::Overwrite,
                    MatRef::row_major(black_box(&x), len, d),
                    MatRef::row_major(&wt, d, m),
                ),
                1 => g(
                    MatMut::row_major(s, m, d),
                    Accum::Add,
                    MatRef::row_major(black_box(&feats), len, m).t(),
                    MatRef::row_major(&v, len, d),
                ),
                _ => g(
                    MatMut::row_major(out, len, d),
                    Accum::Overwrite,
                    MatRef::row_major(black_box(&feats), len, m),
                    MatRef::row_major(&s_in, m, d),
                ),
            };
            // Both compute the same product: one call each on zeroed outputs, compared to
            // f32 rounding of the largest element (the orders of summation differ).
            for buf in [&mut out_a, &mut out_b, &mut s_a, &mut s_b] {
                buf.fill(0.0);
            }
            run(ours, &mut out_a, &mut s_a);
            run(theirs, &mut out_b, &mut s_b);
            let scale = out_b.iter().chain(&s_b).fold(0f32, |m, x| m.max(x.abs()));
            let worst = out_a
                .iter()
                .zip(&out_b)
                .chain(s_a.iter().zip(&s_b))
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-4 * scale,
                "{label} L={len}: results differ by {worst} (largest element {scale})"
            );
            let r = round_robin(
                reps,
                4,
                &mut [&mut || run(ours, &mut out_a, &mut s_a), &mut || {
                    run(theirs, &mut out_b, &mut s_b)
                }],
            );
            let (a, b) = (r[0], r[1]);
            let g = |t: [f64; 3]| {
                format!(
                    "{:6.1} [{:5.1}, {:5.1}]",
                    fl / t[0] / 1e9,
                    fl / t[2] / 1e9,
                    fl / t[1] / 1e9
                )
            };
            println!(
                "{label:<8} {len:>5} {:>22} {:>22} {:>14}",
                g(a),
                g(b),
                ratio(b, a)
            );
        }
    }

    println!();
    println!(
        "{:<24} {:>5} {:>22} {:>22} {:>14}",
        "projection, m=256, d=64", "rows", "time (µs)", "dense project (µs)", "/ dense"
    );
    let (m, d) = (FEATURES, DIM);
    let mut w = vec![0f32; m * d];
    projection(ProjectionKind::Sorf, 3, m, d, &mut w).expect("valid shape");
    let mut wt = vec![0f32; m * d];
    transpose_projection(&w, m, d, &mut wt).expect("valid shape");
    let mut signs = vec![0f32; sorf_signs_len(m, d).expect("valid shape")];
    sorf_signs(3, m, d, &mut signs).expect("valid shape");
    let mut scratch = vec![0f32; sorf_scratch_len(m, d).expect("valid shape")];
    let p = ProjectionRef {
        w: &w,
        wt: Some(&wt),
        features: m,
        dim: d,
    };
    let us = |t: [f64; 3]| {
        format!(
            "{:7.2} [{:6.2}, {:6.2}]",
            t[0] * 1e6,
            t[1] * 1e6,
            t[2] * 1e6
        )
    };
    for rows in [16, BIDIR_BLOCK] {
        let x = data(rows * d, 6, 1.0);
        let (mut dense, mut structured) = (vec![0f32; rows * m], vec![0f32; rows * m]);
        let (mut dense_max, mut sorf_max) = (vec![0f32; rows], vec![0f32; rows]);
        let mut run_dense = || {
            k.project(
                MatRef::row_major(black_box(&x), rows, d),
                p,
                1.0,
                MatMut::row_major(&mut dense, rows, m),
                &mut dense_max,
            )
        };
        // SORF on this backend (one row per lane) and favor-core's scalar transform per row.
        let mut simd = |out: &mut [f32]| {
            k.sorf_project(
                MatRef::row_major(black_box(&x), rows, d),
                &signs,
                1.0,
                MatMut::row_major(out, rows, m),
                &mut sorf_max,
            )
        };
        let r = round_robin(
            reps,
            4,
            &mut [&mut run_dense, &mut || simd(&mut structured)],
        );
        let (dense_t, simd_t) = (r[0], r[1]);
        let r = round_robin(
            reps,
            4,
            &mut [&mut run_dense, &mut || {
                for (xr, o) in black_box(&x)
                    .chunks_exact(d)
                    .zip(structured.chunks_exact_mut(m))
                {
                    sorf_apply(&signs, m, d, xr, o, &mut scratch).expect("valid shape");
                }
            }],
        );
        let (dense_t2, scalar_t) = (r[0], r[1]);
        let worst = dense
            .iter()
            .zip(&structured)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-3,
            "SORF (last: the scalar transform) differs from W·x by {worst}"
        );
        for (what, t, base) in [
            (format!("sorf_project ({})", name(&k)), simd_t, dense_t),
            ("sorf_apply (scalar)".to_string(), scalar_t, dense_t2),
        ] {
            println!(
                "{what:<24} {rows:>5} {:>22} {:>22} {:>14}",
                us(t),
                us(base),
                ratio(t, base)
            );
        }
    }
}
