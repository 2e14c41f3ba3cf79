//! The detected SIMD backend against favor-core's scalar reference, in one run: bidirectional
//! and causal FAVOR+ (4 heads, L = 1024, d = 64, m = 256, f32), median of 5 calls each, heads
//! serial. Built for wasm32-wasip1 with `+simd128` (ci/wasm.sh runs it under Node's WASI) it
//! measures the simd128 backend against the scalar wasm code; natively, AVX2/AVX-512/NEON.
//!
//! ```text
//! cargo run --release -p favor-tensor --example backend_speed
//! ```

use std::time::Instant;

use favor_tensor::{Backend, Performer, TensorView};

fn main() {
    let (h, l, d, m) = (4, 1024, 64, 256);
    let x: Vec<f32> = (0..h * l * d)
        .map(|i| 0.5 * ((i as f32) * 0.618_034).sin())
        .collect();
    let t = TensorView::new([1, h, l, d], &x).expect("shape");
    let mut seen = Vec::new();
    for causal in [false, true] {
        let mut times = [0f64; 2];
        for (slot, backend) in [Backend::Detected, Backend::Scalar].into_iter().enumerate() {
            let attn = Performer::builder(d)
                .heads(h)
                .features(m)
                .causal(causal)
                .backend(backend)
                .parallel(false)
                .build()
                .expect("layer");
            let mut runs: Vec<f64> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    let out = attn.forward(t, t, t).expect("forward");
                    std::hint::black_box(out);
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            runs.sort_by(f64::total_cmp);
            times[slot] = runs[2];
            seen.push(attn.backend_name());
        }
        println!(
            "{:>13}: {} {:.1} ms, scalar {:.1} ms: {:.2}x",
            if causal { "causal" } else { "bidirectional" },
            seen[seen.len() - 2],
            times[0],
            times[1],
            times[1] / times[0]
        );
    }
}
