//! Profiling driver: `prof [bidir|causal|decode]`, each repeated long enough for `perf`.
use favor_benches::*;
use favor_core::*;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "bidir".into());
    let det = favor_simd::Detected::new();
    let len = 4096;
    let hs = heads(len);
    let mut out = vec![0f32; len * DIM];
    let mut scratch = vec![0f32; scratch_len()];
    match which.as_str() {
        "decode" => {
            let phis: Vec<_> = hs.iter().map(Head::phi).collect();
            let blen = Stream::<f32, PositiveSoftmax<f32>, favor_simd::Detected>::buffer_len(
                &phis[0], DIM,
            )
            .unwrap();
            let mut bufs = vec![vec![0f32; blen]; HEADS];
            let mut streams: Vec<_> = phis
                .iter()
                .zip(bufs.iter_mut())
                .map(|(p, b)| Stream::new(det, p, DIM, b).unwrap())
                .collect();
            for _ in 0..10 {
                for t in 0..len {
                    let r = t * DIM..(t + 1) * DIM;
                    for (s, h) in streams.iter_mut().zip(&hs) {
                        let (q, k, v) = (&h.q[r.clone()], &h.k[r.clone()], &h.v[r.clone()]);
                        s.step(q, k, v, &mut out[..DIM]).unwrap();
                    }
                }
            }
        }
        "causal" => (0..20).for_each(|_| causal_all(&det, &hs, len, &mut out, &mut scratch)),
        _ => (0..20).for_each(|_| bidirectional_all(&det, &hs, len, &mut out, &mut scratch)),
    }
}
