//! The detected SIMD backend against favor-core's scalar reference, in one run: bidirectional
//! and causal FAVOR+ (4 heads, L = 1024, d = 64, m = 256, f32), heads serial, median of 7
//! calls each after 2 untimed ones, the two backends alternating. Built for wasm32-wasip1
//! with `+simd128` (ci/wasm.sh runs it under Node's WASI) it measures the simd128 backend
//! against the scalar code of the same module; natively, AVX2, AVX-512 or NEON.
//!
//! ```text
//! cargo bench -p favor-tensor --bench backend_speed
//! cargo bench --target wasm32-wasip1 -p favor-tensor --no-default-features --bench backend_speed
//! ```

use std::time::Instant;

use favor_tensor::{Backend, Performer, TensorView};

fn main() {
    let (h, l, d, m) = (4, 1024, 64, 256);
    let x: Vec<f32> = (0..h * l * d)
        .map(|i| 0.5 * ((i as f32) * 0.618_034).sin())
        .collect();
    let t = TensorView::new([1, h, l, d], &x).expect("shape");
    for causal in [false, true] {
        let layer = |backend| {
            Performer::builder(d)
                .heads(h)
                .features(m)
                .causal(causal)
                .backend(backend)
                .parallel(false)
                .build()
                .expect("layer")
        };
        let layers = [layer(Backend::Detected), layer(Backend::Scalar)];
        let time = |attn: &Performer| {
            let start = Instant::now();
            std::hint::black_box(attn.forward(t, t, t).expect("forward"));
            start.elapsed().as_secs_f64() * 1e3
        };
        // Warm-up: a JIT (wasm engines) compiles hot code in tiers; time none of that.
        for attn in &layers {
            for _ in 0..2 {
                time(attn);
            }
        }
        // Alternate the two, so a slow phase of the machine falls on both.
        let mut runs = [Vec::new(), Vec::new()];
        for _ in 0..7 {
            for (r, attn) in runs.iter_mut().zip(&layers) {
                r.push(time(attn));
            }
        }
        let [fast, scalar] = runs.map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        });
        println!(
            "{:>13}: {} {fast:.1} ms, scalar {scalar:.1} ms: {:.2}x",
            if causal { "causal" } else { "bidirectional" },
            layers[0].backend_name(),
            scalar / fast
        );
    }
}
