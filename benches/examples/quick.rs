//! A quick, criterion-free measurement of the favor-simd workloads against the FMA roof
//! (the criterion benches are the reference; this prints one table in a few seconds).
//! `cargo run --release -p favor-benches --example quick`

use favor_benches::*;
use favor_core::*;
use std::time::Instant;

fn best_of<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let iters = 2_000_000;
    let t = best_of(5, || {
        std::hint::black_box(fma_roof(iters));
    });
    let roof = fma_roof(1).1 as f64 * iters as f64 / t / 1e9;
    let det = favor_simd::Detected::new();
    println!(
        "backend {}, FMA roof {roof:.1} GFLOP/s",
        Kernels::<f32>::name(&det)
    );
    let len = 4096;
    let hs = heads(len);
    let mut out = vec![0f32; len * DIM];
    let mut scratch = vec![0f32; scratch_len()];
    let f = favor_flops(len) as f64;
    let report = |name: &str, secs: f64| {
        let g = f / secs / 1e9;
        println!(
            "{name:<28} {:>8.2} ms {g:>7.1} GFLOP/s {:>5.1}% of roof",
            secs * 1e3,
            100.0 * g / roof
        );
    };
    report(
        "bidirectional L=4096",
        best_of(3, || {
            bidirectional_all(&det, &hs, len, &mut out, &mut scratch)
        }),
    );
    report(
        "causal_chunked L=4096",
        best_of(3, || causal_all(&det, &hs, len, &mut out, &mut scratch)),
    );
    let phis: Vec<_> = hs.iter().map(Head::phi).collect();
    let blen = Stream::<f32, PositiveSoftmax<f32>, favor_simd::Detected>::buffer_len(&phis[0], DIM)
        .unwrap();
    let mut bufs = vec![vec![0f32; blen]; HEADS];
    let mut streams: Vec<_> = phis
        .iter()
        .zip(bufs.iter_mut())
        .map(|(p, b)| Stream::new(det, p, DIM, b).unwrap())
        .collect();
    let tokens = 512;
    let secs = best_of(3, || {
        for t in 0..tokens {
            let r = t * DIM..(t + 1) * DIM;
            for (s, h) in streams.iter_mut().zip(&hs) {
                let (q, k, v) = (&h.q[r.clone()], &h.k[r.clone()], &h.v[r.clone()]);
                s.step(q, k, v, &mut out[..DIM]).unwrap();
            }
        }
    });
    let g = favor_flops(1) as f64 * tokens as f64 / secs / 1e9;
    println!(
        "{:<28} {:>8.2} us {g:>7.1} GFLOP/s {:>5.1}% of roof",
        "decode step, 8 heads",
        secs / tokens as f64 * 1e6,
        100.0 * g / roof
    );
    report(
        "bidirectional scalar",
        best_of(1, || {
            bidirectional_all(&Scalar, &hs, len, &mut out, &mut scratch)
        }),
    );
}
