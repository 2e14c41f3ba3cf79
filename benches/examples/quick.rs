//! A quick, criterion-free measurement of the favor-simd workloads against the FMA roof
//! measured in the same run (the criterion benches are the reference; this prints one table
//! in a few seconds).
//!
//! `cargo run --release -p favor-benches --features examples --example quick [-- avx2]`
//! (`avx2` forces the AVX2 backend and compares it with the 8-lane roof).

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
    #[cfg(target_arch = "x86_64")]
    if std::env::args().any(|a| a == "avx2") {
        if let (Some(k), Some((_, flops))) = (favor_simd::Avx2::new(), fma_roof_avx2(1)) {
            let t = best_of(5, || {
                std::hint::black_box(fma_roof_avx2(iters));
            });
            return run(k, flops as f64 * iters as f64 / t / 1e9);
        }
        println!("AVX2+FMA not available on this CPU");
        return;
    }
    let t = best_of(5, || {
        std::hint::black_box(fma_roof(iters));
    });
    run(
        favor_simd::Detected::new(),
        fma_roof(1).1 as f64 * iters as f64 / t / 1e9,
    );
}

fn run<K: Kernels<f32>>(k: K, roof: f64) {
    println!(
        "backend {}, FMA roof {roof:.1} GFLOP/s (one core)",
        k.name()
    );
    let len = 4096;
    let hs = heads(len);
    let mut out = vec![0f32; len * DIM];
    let mut scratch = vec![0f32; scratch_len()];
    let f = favor_flops(len) as f64;
    let line = |name: &str, ms: f64, g: f64| {
        println!(
            "{name:<26} {ms:>9.3} ms {g:>7.1} GFLOP/s {:>5.1}% of roof",
            100.0 * g / roof
        );
    };
    let secs = best_of(3, || {
        bidirectional_all(&k, &hs, len, &mut out, &mut scratch)
    });
    line("bidirectional L=4096", secs * 1e3, f / secs / 1e9);
    let secs = best_of(3, || causal_all(&k, &hs, len, &mut out, &mut scratch));
    line("causal chunked L=4096", secs * 1e3, f / secs / 1e9);

    let tokens = 512;
    let secs = with_streams(k, &hs, |streams| {
        best_of(3, || {
            for t in 0..tokens {
                decode_step(streams, &hs, t, &mut out);
            }
        })
    }) / tokens as f64;
    line(
        "decode step, 8 heads",
        secs * 1e3,
        favor_flops(1) as f64 / secs / 1e9,
    );
    // The same step with one projection shared by the heads (favor-tensor's configuration):
    // every head's stream over head 0's map, all heads mapped in one GEMM.
    let secs = with_shared_streams(k, &hs, |shared, streams| {
        best_of(3, || {
            for t in 0..tokens {
                decode_step_shared(shared, streams, &hs, t, &mut out);
            }
        })
    }) / tokens as f64;
    line(
        "decode step, 8 heads, one W",
        secs * 1e3,
        favor_flops(1) as f64 / secs / 1e9,
    );

    let secs = best_of(1, || {
        bidirectional_all(&Scalar, &hs, len, &mut out, &mut scratch)
    });
    line("bidirectional, scalar", secs * 1e3, f / secs / 1e9);
    let secs = best_of(1, || causal_all(&Scalar, &hs, len, &mut out, &mut scratch));
    line("causal chunked, scalar", secs * 1e3, f / secs / 1e9);
}
