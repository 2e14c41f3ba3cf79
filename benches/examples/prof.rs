//! Profiling driver: bidirectional attention (or causal with `causal`) repeated.
use favor_benches::*;
fn main() {
    let causal = std::env::args().any(|a| a == "causal");
    let len = 4096;
    let hs = heads(len);
    let mut out = vec![0f32; len * DIM];
    let mut scratch = vec![0f32; scratch_len()];
    let det = favor_simd::Detected::new();
    for _ in 0..20 {
        if causal {
            causal_all(&det, &hs, len, &mut out, &mut scratch);
        } else {
            bidirectional_all(&det, &hs, len, &mut out, &mut scratch);
        }
    }
}
