//! Profiling driver: `prof [bidir|causal|decode|decode1w]`, each repeated long enough for
//! `perf` (`decode1w`: the heads share one W, mapped in one GEMM, as in favor-tensor).
use favor_benches::*;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "bidir".into());
    let det = favor_simd::Detected::new();
    let len = 4096;
    let hs = heads(len);
    let mut out = vec![0f32; len * DIM];
    let mut scratch = vec![0f32; scratch_len()];
    match which.as_str() {
        "decode" => {
            with_streams(det, &hs, |streams| {
                for t in 0..10 * len {
                    decode_step(streams, &hs, t, &mut out);
                }
            });
        }
        "decode1w" => with_shared_streams(det, &hs, |shared, streams| {
            for t in 0..20 * len {
                decode_step_shared(shared, streams, &hs, t, &mut out);
            }
        }),
        "causal" => (0..20).for_each(|_| causal_all(&det, &hs, len, &mut out, &mut scratch)),
        _ => (0..20).for_each(|_| bidirectional_all(&det, &hs, len, &mut out, &mut scratch)),
    }
}
