//! A/B timing driver: `ab [bidir|causal] [reps]` prints the minimum and the median of `reps`
//! (default 15) runs of the 8-head L = 4096 workload, in ms. For comparing two builds run
//! alternately: the minimum is the statistic that resists this noisy machine best.
use favor_benches::*;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "causal".into());
    let reps: usize = args.next().map_or(15, |r| r.parse().expect("reps"));
    let det = favor_simd::Detected::new();
    let len = 4096;
    let hs = heads(len);
    let mut out = vec![0f32; len * DIM];
    let mut scratch = vec![0f32; scratch_len()];
    let mut run = || match which.as_str() {
        "causal" => causal_all(&det, &hs, len, &mut out, &mut scratch),
        _ => bidirectional_all(&det, &hs, len, &mut out, &mut scratch),
    };
    run();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            run();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    println!("{which} min {:.2} median {:.2}", t[0], t[reps / 2]);
}
