//! The long-stream error curve: an f32 favor-core `Stream` (the detected SIMD backend) against
//! an f64 stream over the same W and the same f32 tokens, for up to 10⁷ tokens. Prints, per
//! decade of tokens, the largest and mean relative L2 error of an output row.
//!
//! ```sh
//! alias ls_run='cargo run --release -p favor-benches --features examples --example long_stream --'
//! ls_run                              # 10^7 tokens, m = 128
//! ls_run --tokens 1e6 --features 64
//! ls_run --drift                      # key norm 0.5 → 2.5
//! ls_run --tensor                     # favor-tensor's stream
//! ```
//!
//! With `--tensor` the f32 side is a favor-tensor `Stream` (one batch, one head, the same W
//! given as its projection matrix, f32 precision) stepped one `[1, 1, 1, d]` token at a time.
//!
//! Setting (issue "Reliability round 2"): d = dv = 64, queries and keys are Gaussian
//! directions with `|q'| = |k'| = 1` after the `d^(-1/4)` normaliser (with `--drift` the key
//! norm grows linearly from 0.5 to 2.5 over the run), values N(0, 1). Tokens are drawn from a
//! pool of 4096 precomputed rows each (sampling 10⁷ fresh Gaussian rows would take longer than
//! the streams). 10⁷ tokens take about two minutes on one core (most of it the f64 reference).
//! A measurement, not a test: the tests pin the growth rate at 10⁵–10⁶ tokens.

use favor_core::*;
use favor_simd::Detected;
use std::time::Instant;

const D: usize = 64;
const POOL: usize = 4096;

struct Args {
    tokens: u64,
    features: usize,
    drift: bool,
    tensor: bool,
    seed: u64,
}

fn args() -> Args {
    let mut a = Args {
        tokens: 10_000_000,
        features: 128,
        drift: false,
        tensor: false,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> f64 {
            let v = it.next().unwrap_or_default();
            v.parse()
                .unwrap_or_else(|_| panic!("{flag} needs a number, got {v:?}"))
        };
        match flag.as_str() {
            "--tokens" => a.tokens = num() as u64,
            "--features" => a.features = num() as usize,
            "--seed" => a.seed = num() as u64,
            "--drift" => a.drift = true,
            "--tensor" => a.tensor = true,
            other => panic!(
                "unknown option {other} (--tokens N, --features M, --seed S, --drift, --tensor)"
            ),
        }
    }
    a
}

/// `n` rows of d Gaussian directions with unit norm (scaled per token later).
fn directions(g: &mut Normals, n: usize) -> Vec<f32> {
    let mut x = vec![0f64; n * D];
    g.fill(&mut x);
    for r in x.chunks_exact_mut(D) {
        let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
        r.iter_mut().for_each(|v| *v /= norm);
    }
    x.iter().map(|&v| v as f32).collect()
}

/// A cheap deterministic index stream (xorshift64*).
struct Pick(u64);
impl Pick {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as usize % POOL
    }
}

fn main() {
    let a = args();
    let m = a.features;
    let kern = Detected::new();
    let mut w64 = vec![0f64; projection_len(m, D).unwrap()];
    projection(ProjectionKind::default(), a.seed, m, D, &mut w64).unwrap();
    // The same W in both precisions: the f32 one, widened exactly.
    let w32: Vec<f32> = w64.iter().map(|&x| x as f32).collect();
    let w64: Vec<f64> = w32.iter().map(|&x| f64::from(x)).collect();
    let (mut wt32, mut wt64) = (vec![0f32; m * D], vec![0f64; m * D]);
    transpose_projection(&w32, m, D, &mut wt32).unwrap();
    transpose_projection(&w64, m, D, &mut wt64).unwrap();
    let phi32 = PositiveSoftmax::new(&w32, m, D)
        .unwrap()
        .with_transposed_projection(&wt32)
        .unwrap();
    let phi64 = PositiveSoftmax::new(&w64, m, D)
        .unwrap()
        .with_transposed_projection(&wt64)
        .unwrap();
    let mut b32 = vec![0f32; Stream::<f32, _, Detected>::buffer_len(&phi32, D).unwrap()];
    let mut b64 = vec![0f64; Stream::<f64, _, Detected>::buffer_len(&phi64, D).unwrap()];
    let mut s32 = Stream::new(kern, &phi32, D, &mut b32).unwrap();
    let performer = a.tensor.then(|| {
        favor_tensor::Performer::builder(D)
            .features(m)
            .causal(true)
            .projection_matrix(m, &w32)
            .build()
            .unwrap()
    });
    let mut tensor = performer.as_ref().map(|p| p.stream(1).unwrap());
    let mut s64 = Stream::new(kern, &phi64, D, &mut b64).unwrap();

    let mut g = Normals::new(a.seed + 100);
    let (qs, ks) = (directions(&mut g, POOL), directions(&mut g, POOL));
    let mut vs = vec![0f64; POOL * D];
    g.fill(&mut vs);
    let vs: Vec<f32> = vs.iter().map(|&v| v as f32).collect();
    let mut pick = Pick(a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // |x'| = r after the normaliser: |x| = r·d^{1/4}.
    let raw = (D as f64).powf(0.25);

    println!(
        "long stream: f32 {} {} vs f64 (same W, same f32 tokens), d = dv = {D}, m = {m}, {} tokens, {} keys, ring of {RING}",
        if a.tensor {
            "favor-tensor Stream"
        } else {
            "favor-core Stream"
        },
        Kernels::<f32>::name(&kern),
        a.tokens,
        if a.drift {
            "drifting (|k'| 0.5 → 2.5)"
        } else {
            "stationary (|k'| = 1)"
        },
    );
    println!(
        "{:>12} {:>12} {:>12} {:>9}",
        "tokens ≤", "max rel err", "mean rel err", "time s"
    );
    let (mut q, mut k, mut v) = ([0f32; D], [0f32; D], [0f32; D]);
    let (mut q64, mut k64, mut v64) = ([0f64; D], [0f64; D], [0f64; D]);
    let (mut o32, mut o64) = ([0f32; D], [0f64; D]);
    let (mut worst, mut sum, mut count) = (0f64, 0f64, 0u64);
    let mut next_report = 10u64;
    let start = Instant::now();
    for t in 1..=a.tokens {
        let rk = if a.drift {
            0.5 + 2.0 * (t - 1) as f64 / a.tokens.max(2) as f64
        } else {
            1.0
        };
        let (iq, ik, iv) = (pick.next(), pick.next(), pick.next());
        for j in 0..D {
            q[j] = (f64::from(qs[iq * D + j]) * raw) as f32;
            k[j] = (f64::from(ks[ik * D + j]) * raw * rk) as f32;
            v[j] = vs[iv * D + j];
            (q64[j], k64[j], v64[j]) = (q[j].into(), k[j].into(), v[j].into());
        }
        if let Some(t) = tensor.as_mut() {
            let view = |x| favor_tensor::TensorView::new([1, 1, 1, D], x).unwrap();
            t.step_into(view(&q), view(&k), view(&v), &mut o32).unwrap();
        } else {
            s32.step(&q, &k, &v, &mut o32).unwrap();
        }
        s64.step(&q64, &k64, &v64, &mut o64).unwrap();
        let (mut num, mut den) = (0f64, 0f64);
        for j in 0..D {
            num += (f64::from(o32[j]) - o64[j]).powi(2);
            den += o64[j] * o64[j];
        }
        let e = (num / den).sqrt();
        worst = worst.max(e);
        sum += e;
        count += 1;
        if t == next_report || t == a.tokens {
            println!(
                "{t:>12} {worst:>12.2e} {:>12.2e} {:>9.1}",
                sum / count as f64,
                start.elapsed().as_secs_f64()
            );
            (worst, sum, count) = (0.0, 0.0, 0);
            next_report = if next_report.to_string().starts_with('1') {
                next_report * 3
            } else {
                next_report / 3 * 10
            };
        }
    }
}
