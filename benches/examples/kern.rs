//! Times one kernel shape in a loop (for perf): `kern project|tn|nn|exp|fold_rank|ring_query`.
//! `fold_rank` runs the decode state's rank-RING fold over `HEADS` (default 8) heads'
//! totals, m = 256, dv = 64; `ring_query` one decoding query against each of them (with a
//! ring of `RING / 2` keys, the average a decoding query sees).
use favor_core::*;
use std::time::Instant;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "project".into());
    let k = favor_simd::Detected::new();
    let (rows, m, d) = (256, 256, 64);
    let x: Vec<f32> = (0..rows * 256)
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
    } else {
        2.0 * (rows * m * d) as f64
    };
    println!(
        "{which}: {:.1} us, {:.1} GFLOP/s",
        secs * 1e6,
        flops / secs / 1e9
    );
}
