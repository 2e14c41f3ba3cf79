//! Times one kernel shape in a loop (for perf):
//! `kern project|tn|nn|exp|fold_rank|ring_query|tile|tile_rows|tile_cols`.
//! `fold_rank` runs the decode state's rank-RING fold over `HEADS` (default 8) heads'
//! totals, m = 256, dv = 64; `ring_query` one decoding query against each of them (with a
//! ring of `RING / 2` keys, the average a decoding query sees). `tile*`: a causal chunk's
//! score tile Q'K'ᵀ (C = 64, m = 256): whole, as top-left + bottom rows, as left columns +
//! bottom-right quadrant (the last two compute the lower triangle's 3/4 of it).
use favor_core::*;
use std::time::Instant;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "project".into());
    let k = favor_simd::Detected::new();
    let rows: usize = std::env::var("ROWS").map_or(256, |r| r.parse().unwrap());
    let (m, d) = (256, 64);
    let x: Vec<f32> = (0..rows.max(128) * 256)
        .map(|i| ((i % 13) as f32 - 6.0) * 0.05)
        .collect();
    let w: Vec<f32> = (0..m * d).map(|i| ((i % 7) as f32 - 3.0) * 0.3).collect();
    let mut wt = vec![0f32; m * d];
    transpose_projection(&w, m, d, &mut wt).unwrap();
    let mut out = vec![0f32; rows * m];
    let mut mx = vec![0f32; rows];
    let mut s = vec![0f32; m * d];
    // Eight heads' compensated totals and rings (m = 256, dv = 64), for `fold_rank`.
    let heads: usize = std::env::var("HEADS").map_or(8, |h| h.parse().unwrap());
    let mut his = vec![vec![0.5f32; m * d + m]; heads];
    let mut los = vec![vec![0f32; m * d + m]; heads];
    let keys: Vec<f32> = (0..RING * m).map(|i| ((i % 11) as f32) * 0.01).collect();
    let vals: Vec<f32> = (0..RING * d)
        .map(|i| ((i % 5) as f32 - 2.0) * 0.1)
        .collect();
    let n = 200;
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..n {
            match which.as_str() {
                "project" => k.project(
                    MatRef::row_major(&x[..rows * d], rows, d),
                    ProjectionRef {
                        w: &w,
                        wt: Some(&wt),
                        features: m,
                        dim: d,
                    },
                    0.35,
                    MatMut::row_major(&mut out, rows, m),
                    &mut mx,
                ),
                "projectw" => k.project(
                    MatRef::row_major(&x[..rows * d], rows, d),
                    ProjectionRef {
                        w: &w,
                        wt: None,
                        features: m,
                        dim: d,
                    },
                    0.35,
                    MatMut::row_major(&mut out, rows, m),
                    &mut mx,
                ),
                "fold_rank" => {
                    for (hi, lo) in his.iter_mut().zip(los.iter_mut()) {
                        k.fold_rank(hi, lo, Ring::new(&keys, &vals, RING, m, d));
                    }
                }
                "ring_query" => {
                    for (i, hi) in his.iter().enumerate() {
                        let ring = Ring::new(&keys, &vals, RING / 2, m, d);
                        let q = &keys[(i % RING) * m..(i % RING + 1) * m];
                        std::hint::black_box(k.ring_query(hi, ring, q, &mut s[..d]));
                    }
                }
                "tile" | "tile_rows" | "tile_cols" => {
                    let c = 64;
                    let h = c / 2;
                    let (qm, km) = (
                        MatRef::row_major(&x[..c * m], c, m),
                        MatRef::row_major(&x[c * m..2 * c * m], c, m).t(),
                    );
                    let mut t = MatMut::row_major(&mut out[..c * c], c, c);
                    if which == "tile" {
                        k.gemm(t, Accum::Overwrite, qm, km);
                    } else if which == "tile_rows" {
                        let (top, topk) = (qm.block(0, 0, h, m), km.block(0, 0, m, h));
                        k.gemm(t.rb_mut().block(0, 0, h, h), Accum::Overwrite, top, topk);
                        let bottom = qm.block(h, 0, c - h, m);
                        k.gemm(t.block(h, 0, c - h, c), Accum::Overwrite, bottom, km);
                    } else {
                        let left = km.block(0, 0, m, h);
                        k.gemm(t.rb_mut().block(0, 0, c, h), Accum::Overwrite, qm, left);
                        let (bottom, right) = (qm.block(h, 0, c - h, m), km.block(0, h, m, c - h));
                        k.gemm(t.block(h, h, c - h, c - h), Accum::Overwrite, bottom, right);
                    }
                }
                "tn" => k.gemm(
                    MatMut::row_major(&mut s, m, d),
                    Accum::Add,
                    MatRef::new(&x, rows, m, 256).t(),
                    MatRef::row_major(&wt, rows, d),
                ),
                "nn" => k.gemm(
                    MatMut::row_major(&mut out, rows, d),
                    Accum::Overwrite,
                    MatRef::new(&x, rows, m, 256),
                    MatRef::row_major(&s, m, d),
                ),
                _ => {
                    for r in 0..rows {
                        k.exp_shift(&mut out[r * m..(r + 1) * m], 1.0);
                    }
                }
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    let secs = best;
    let flops = if which == "fold_rank" {
        2.0 * (heads * RING * m * d) as f64
    } else if which == "ring_query" {
        2.0 * (heads * (m * d + m + RING / 2 * (m + d))) as f64
    } else if which.starts_with("tile") {
        2.0 * (64 * 64 * m) as f64
    } else {
        2.0 * (rows * m * d) as f64
    };
    println!(
        "{which}: {:.1} us, {:.1} GFLOP/s",
        secs * 1e6,
        flops / secs / 1e9
    );
}
