//! A/B timing driver: `ab [bidir|causal] [reps]` prints the minimum and the median of `reps`
//! (default 15) runs of the 8-head L = 4096 workload, in ms, on the detected backend
//! (`BACKEND=avx2` pins AVX2+FMA on x86-64). For comparing two builds run alternately: the
//! minimum is the statistic that resists this noisy machine best.
use favor_benches::*;
use favor_core::Kernels;
use std::time::Instant;

fn time<K: Kernels<f32>>(k: &K, which: &str, reps: usize) {
    let len = 4096;
    let hs = heads(len);
    let mut out = vec![0f32; len * DIM];
    let mut scratch = vec![0f32; scratch_len()];
    let mut run = || match which {
        "causal" => causal_all(k, &hs, len, &mut out, &mut scratch),
        _ => bidirectional_all(k, &hs, len, &mut out, &mut scratch),
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
    println!(
        "{which} {} min {:.2} median {:.2}",
        k.name(),
        t[0],
        t[reps / 2]
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "causal".into());
    let reps: usize = args.next().map_or(15, |r| r.parse().expect("reps"));
    #[cfg(target_arch = "x86_64")]
    if std::env::var("BACKEND").as_deref() == Ok("avx2") {
        let k = favor_simd::Avx2::new().expect("this CPU has no AVX2+FMA");
        return time(&k, &which, reps);
    }
    time(&favor_simd::Detected::new(), &which, reps);
}
