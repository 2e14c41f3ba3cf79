//! `favor demo`: the README's main job on built-in synthetic data.
//!
//! Three parts, well under a minute in release mode: (1) how FAVOR+'s error against exact
//! softmax attention falls with the number of random features m, in two norm regimes;
//! (2) time and working memory of FAVOR+ against exact attention as the sequence grows;
//! (3) a streamed token-by-token decode.

use std::time::Instant;

use favor_core::{
    ExactOptions, Normals, Options, Plan, PlanKind, PositiveSoftmax, Scalar, Shape,
    softmax_attention_tiled, softmax_attention_tiled_scratch_len,
};
use favor_tensor::{Kernel, Performer, Projection, RowNorms, TensorView};

use crate::args::{CliError, CliResult};

const D: usize = 64;

/// Gaussian data, N(0, scale²) entries. Seeds far from the projection seeds: the same seed
/// would make the data a copy of the projection's Gaussian rows.
fn gaussian(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut g = Normals::new(0xDA7A_0000 + seed);
    (0..n).map(|_| g.sample::<f32>() * scale).collect()
}

/// ‖a − b‖ / ‖b‖.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::failure(e.to_string())
}

/// Exact softmax attention, head by head, with the detected SIMD backend and the tiled
/// (GEMM, online-softmax) schedule: the fair baseline, not a naive O(L²)-memory version.
fn exact(
    heads: usize,
    len: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    causal: bool,
) -> CliResult<Vec<f32>> {
    let kernels = favor_simd::detected();
    let opts = ExactOptions {
        causal,
        ..Default::default()
    };
    let tile = favor_workload::EXACT_TILE;
    let mut scratch = vec![0f32; softmax_attention_tiled_scratch_len(tile).map_err(fail)?];
    let n = len * D;
    let mut out = vec![0f32; heads * n];
    for h in 0..heads {
        let r = h * n..(h + 1) * n;
        softmax_attention_tiled(
            &kernels,
            &q[r.clone()],
            &k[r.clone()],
            &v[r.clone()],
            Shape::new(len, D, D),
            &opts,
            tile,
            &mut out[r],
            &mut scratch,
        )
        .map_err(fail)?;
    }
    Ok(out)
}

/// FAVOR+ attention over `heads` heads of one sequence.
fn favor(attn: &mut Performer, len: usize, q: &[f32], k: &[f32], v: &[f32]) -> CliResult<Vec<f32>> {
    let shape = [1, attn.heads(), len, D];
    let view = |x| TensorView::new(shape, x).map_err(fail);
    Ok(attn
        .forward(view(q)?, view(k)?, view(v)?)
        .map_err(fail)?
        .into_vec())
}

/// Scratch elements of the causal plan `attn` runs for one head of `len` tokens, in chunks of
/// favor-tensor's default: the plan sizes it (the backend does not enter it).
fn favor_scratch_len(attn: &Performer, len: usize) -> CliResult<usize> {
    let w = attn.projection_f32();
    let phi = PositiveSoftmax::new(&w, attn.features(), D).map_err(fail)?;
    let opts = Options {
        block: favor_tensor::DEFAULT_CHUNK,
        ..Default::default()
    };
    let shape = Shape::new(len, D, D);
    let plan = Plan::new(PlanKind::CausalChunked, Scalar, &phi, shape, opts).map_err(fail)?;
    Ok(plan.scratch_len())
}

/// Runs `favor demo`.
pub fn main() -> CliResult<()> {
    let backend = favor_core::Kernels::<f32>::name(&favor_simd::detected());
    println!(
        "favor demo: FAVOR+ against exact softmax attention (d = {D}, f32, {backend} backend)\n"
    );
    accuracy()?;
    scaling(backend)?;
    decode()
}

/// Part 1: relative error against exact attention as m grows.
fn accuracy() -> CliResult<()> {
    let (heads, len) = (4, 1024);
    // Entries N(0, σ²) give rows of norm ≈ 8σ; after the d^(-1/4) normaliser, |x'| ≈ 2.8σ.
    // Small norms: softmax is near uniform, where trigonometric features do well. Larger
    // norms: softmax is peaked, most attention weights are small, and positive features win
    // (the paper's Lemma 2). Neither regime is flattering on its own, so both are shown.
    for (part, sigma) in [("a", 0.35f32), ("b", 0.7)] {
        let n = heads * len * D;
        let (q, k, v) = (
            gaussian(1, n, sigma),
            gaussian(2, n, sigma),
            gaussian(3, n, 1.0),
        );
        let reference = exact(heads, len, &q, &k, &v, false)?;
        println!(
            "1{part}. relative L2 error, bidirectional, L = {len}, {heads} heads, |q'| ≈ |k'| ≈ {:.1}",
            2.83 * sigma
        );
        println!(
            "{:>6} {:>14} {:>14} {:>14}",
            "m", "positive ORF", "positive iid", "trig ORF"
        );
        for m in [16, 64, 256, 1024] {
            let configs = [
                (Kernel::Softmax, Projection::Orthogonal(RowNorms::Chi)),
                (Kernel::Softmax, Projection::Iid),
                (Kernel::Trigonometric, Projection::Orthogonal(RowNorms::Chi)),
            ];
            let mut row = format!("{m:>6}");
            for (kernel, projection) in configs {
                let mut attn = Performer::builder(D)
                    .heads(heads)
                    .features(m)
                    .kernel(kernel)
                    .projection(projection)
                    .seed(7)
                    .build()
                    .map_err(fail)?;
                let out = favor(&mut attn, len, &q, &k, &v)?;
                row += &format!(" {:>14.4}", rel_err(&out, &reference));
            }
            println!("{row}");
        }
        println!();
    }
    Ok(())
}

/// Part 2: time and working memory against exact attention, causal, one head.
fn scaling(backend: &str) -> CliResult<()> {
    let m = 256;
    let mut attn = Performer::builder(D)
        .features(m)
        .causal(true)
        .build()
        .map_err(fail)?;
    println!(
        "2. causal attention, one head, m = {m}, {backend}: time, and memory beyond q, k, v and the output"
    );
    println!(
        "{:>7} {:>11} {:>11} {:>8} {:>15} {:>18}",
        "L", "FAVOR+ ms", "exact ms", "speedup", "FAVOR+ scratch", "an L×L matrix"
    );
    let mut exact_ms = 0.0;
    for len in [1024, 4096, 16384, 65536] {
        let n = len * D;
        let (q, k, v) = (
            gaussian(11, n, 0.35),
            gaussian(12, n, 0.35),
            gaussian(13, n, 1.0),
        );
        let t = Instant::now();
        let fav = favor(&mut attn, len, &q, &k, &v)?;
        let favor_ms = t.elapsed().as_secs_f64() * 1e3;
        let scratch = favor_scratch_len(&attn, len)? * 4;
        // Exact attention is O(L²): past 16k tokens it would dominate the demo's minute.
        let (exact_col, speedup, err) = if len <= 16384 {
            let t = Instant::now();
            let ex = exact(1, len, &q, &k, &v, true)?;
            exact_ms = t.elapsed().as_secs_f64() * 1e3;
            (
                format!("{exact_ms:>11.1}"),
                format!("{:>7.1}×", exact_ms / favor_ms),
                format!("(rel. err {:.3})", rel_err(&fav, &ex)),
            )
        } else {
            let est = exact_ms * 16.0;
            (
                format!("{:>11}", format!("~{:.0}", est)),
                format!("{:>7.0}×", est / favor_ms),
                "(exact skipped; time extrapolated as L²)".into(),
            )
        };
        println!(
            "{len:>7} {favor_ms:>11.1} {exact_col} {speedup} {:>11} KiB {:>14} MiB   {err}",
            scratch / 1024,
            len * len * 4 / (1 << 20),
        );
    }
    println!();
    Ok(())
}

/// Part 3: a prompt prefilled in chunks, then token-by-token decoding.
fn decode() -> CliResult<()> {
    let (heads, m, prompt, tokens) = (8, 256, 512, 2000);
    let attn = Performer::builder(D)
        .heads(heads)
        .features(m)
        .causal(true)
        .build()
        .map_err(fail)?;
    let mut stream = attn.stream(1).map_err(fail)?;
    let n = heads * prompt * D;
    let (q, k, v) = (
        gaussian(21, n, 0.35),
        gaussian(22, n, 0.35),
        gaussian(23, n, 1.0),
    );
    let p = |x| TensorView::new([1, heads, prompt, D], x).map_err(fail);
    let t = Instant::now();
    stream.prefill(p(&q)?, p(&k)?, p(&v)?).map_err(fail)?;
    let prefill_ms = t.elapsed().as_secs_f64() * 1e3;
    let (sq, sk, sv) = (
        gaussian(24, tokens * heads * D, 0.35),
        gaussian(25, tokens * heads * D, 0.35),
        gaussian(26, tokens * heads * D, 1.0),
    );
    let mut out = vec![0f32; heads * D];
    let t = Instant::now();
    for i in 0..tokens {
        let r = i * heads * D..(i + 1) * heads * D;
        let shape = [1, heads, 1, D];
        let (tq, tk, tv) = (&sq[r.clone()], &sk[r.clone()], &sv[r]);
        let view = |x| TensorView::new(shape, x).map_err(fail);
        stream
            .step_into(view(tq)?, view(tk)?, view(tv)?, &mut out)
            .map_err(fail)?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("3. streamed decode, {heads} heads, m = {m}");
    println!("   prefill of {prompt} tokens: {prefill_ms:.1} ms");
    println!(
        "   then {tokens} tokens one at a time: {:.1} µs per token ({:.0} tokens/s), state {} KiB whatever the length (now {} tokens)",
        secs * 1e6 / tokens as f64,
        tokens as f64 / secs,
        stream.memory_bytes() / 1024,
        stream.tokens()
    );
    Ok(())
}
