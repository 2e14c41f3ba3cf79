//! `favor fidelity`: how well FAVOR+ estimates softmax attention, measured on this code.
//!
//! The paper's claim (Performer, Lemma 2, Thm 2, Fig. 4) is that positive orthogonal random
//! features estimate softmax attention without bias and with low variance — far lower than
//! trigonometric features where softmax values are small, and lower with orthogonal than with
//! iid projections. The estimator's variance grows like `exp(|x + y|²)`, so the answer depends
//! strongly on the norms of queries and keys; this module measures it at several norms rather
//! than one flattering point.
//!
//! # Setting
//! - Attention approximated: bidirectional `softmax(q·kᵀ/√d)·V` (the usual `1/√d` logit scale;
//!   the feature maps reach it through the d^(-1/4) data normaliser, see below).
//! - Inputs for each (r, seed), **iid setting** (the default, `--setting iid`): L query rows
//!   and L key rows of dimension d, each a standard Gaussian vector rescaled to norm exactly
//!   **r** (r is the norm of the *raw* q and k rows, before any scaling); V is L×d with
//!   N(0, 1) entries (value dimension = d). The logits `q·k/√d = r²·cos θ/√d` then have a
//!   standard deviation of about `r²/d`. No position is special, so an exact window buys
//!   nothing here.
//! - **Local setting** (`--setting local`, parameters a = `--corr` and S = `--sink-logit`):
//!   a self-attention whose logits have a banded structure, with an optional attention sink.
//!   1. c: d normals, rescaled to a unit vector (drawn with or without a sink, so the sink
//!      changes no other draw).
//!   2. The latent sequence: L·d normals g_0 … g_{L−1} (rows of d), h_0 = g_0,
//!      `h_i = a·h_{i−1} + √(1 − a²)·g_i`. Every h_i is N(0, I_d) and the coordinates of h_i
//!      and h_j have correlation `a^{|i−j|}` (stationary AR(1)), so the expected cosine of
//!      k_i and k_j is a known, decreasing function of |i − j| (≈ a^{|i−j|}; the test
//!      derives it exactly).
//!   3. Without a sink: `q_i = k_i = r·h_i/|h_i|`. A query's largest logit is its own
//!      position's, `r²/√d`, and logits decay with distance.
//!   4. With a sink of logit S: every h_i is first projected onto c's complement
//!      (`h_i − (h_i·c)c`), then `k_i = r·ĥ_i`, `q_i = (r·ĥ_i + r·c)/√2` (norm r), and key 0
//!      is replaced by `κ·c`, `κ = S·√(2d)/r`: every query's logit with position 0 is exactly
//!      S, and c carries no other logit. The local logits are `r²·cos(ĥ_i, ĥ_j)/(√2·√d)`.
//!   5. V: L·d normals, as in the iid setting.
//! - Hybrid rows (`--windows`, `--sinks`): the same (kernel, projection, m) — the same
//!   projection — as hybrid attention (`Plan::with_hybrid`): exact softmax weights for
//!   `|i − j| ≤ w` and the first `sinks` keys, the features for every other key.
//! - GERF (`gerf`): A = `gerf_optimal_a(gerf_rho(q, k))` from the evaluated inputs (all
//!   pairs, data normaliser on), as favor-tensor fits it per (batch, head). The data-aware
//!   map (`data-aware`): `favor_core::calibrate` with m features, g drawn as the row's
//!   projection from the row's projection seed, over the pairs the row's hybrid shape leaves
//!   to the features (all pairs for FAVOR+), on a **separate draw** of the same setting and
//!   r (stream [`calibration_seed`]); the evaluated keys (window included) are shifted by its
//!   μ, the queries are not.
//! - What the random features estimate: `exp(q·k/√d) = exp(q'·k')` with `q' = q/d^{1/4}`,
//!   `k' = k/d^{1/4}` (|q'| = r/d^{1/4}). Lemma 2 is evaluated for x = q', y = k'.
//! - Exact attention: `favor_core::softmax_attention` in f64; FAVOR+: `favor_core::bidirectional`
//!   in f64 with the same backend (`favor_simd::detected()`, whose f64 kernels are SIMD), so
//!   the errors reported are the estimator's, not f32 rounding.
//! - Kernels: SM+ (positive), SMhyp+ (hyperbolic), trigonometric — all three estimate softmax —
//!   and Performer-ReLU (`Generalized` with ReLU, ε = 10⁻³, no data normaliser: the paper's
//!   defaults), which is a *different* kernel: its error against softmax measures how far that
//!   kernel is from softmax and does not vanish as m grows.
//! - Projections: iid N(0, I) rows, or orthogonal random features with χ(d) row norms, or
//!   simplex random features (χ(d) norms; m a multiple of d), SORF (structured Hadamard
//!   blocks, rows of norm √d'; not with the data-aware map, whose proposal needs Gaussian
//!   rows).
//! - m is the number of projection rows. The hyperbolic and trigonometric maps output 2m
//!   features from m rows (twice the attention cost of SM+ at the same m); every other map m.
//!   A hybrid row adds, per query, its exact keys (`exact/q` in the tables: 2w + 1 + sinks
//!   away from the ends) at O(d) each.
//!
//! # Metrics
//! - **Output MSE** of one run: mean over the L·d output entries of `(favor − exact)²`;
//!   reported as mean and (sample) standard deviation over seeds. **Relative MSE**: the mean
//!   over seeds of that run's MSE divided by the mean square of the exact output.
//! - **Kernel level**: estimates `φ(q)·φ(k)` of `exp(q·k/√d)` on `pairs` (q, k) pairs drawn
//!   like the attention inputs (norm r), with the same projections as the attention runs.
//!   Relative MSE `E[(est − exp)²]/exp²`, averaged over pairs, beside the same average of
//!   Lemma 2's iid value; their ratio is 1 in expectation for iid rows and < 1 for orthogonal
//!   rows (Thm 2). Both are ∝ 1/m (exactly so for orthogonal rows when d divides m), so the
//!   text table pools all m as `m × relative MSE`.
//!
//! # Seeds (all streams are `favor_core::Normals`)
//! - Attention inputs of seed s: stream [`input_seed`]`(s)`. iid setting: consumed as L·d
//!   values for the q directions, L·d for the k directions, then L·d for V. Local setting: d
//!   values for c, L·d for the latent g, then L·d for V. The directions do not depend on r
//!   (only the rescaling does), and every kernel, projection and hybrid shape sees the same
//!   inputs.
//! - Calibration draw of seed s (data-aware map only): stream [`calibration_seed`]`(s)`,
//!   consumed exactly as the inputs are (same setting and r).
//! - Kernel-level pairs: stream [`PAIR_SEED`]: `pairs`·d values for the q side, then
//!   `pairs`·d for the k side; the same pairs for every seed, kernel, projection and m.
//! - Projection for (seed s, kernel, projection, m): [`projection_seed`], distinct for every
//!   (s, kernel, projection, m) and reused across r and across hybrid shapes (so a hybrid row
//!   and its FAVOR+ row are paired). For the data-aware map it seeds g.

// In dependency order: each module uses only those above it.
mod config;

mod inputs;

mod estimate;

mod report;

mod study;

mod text;

mod markdown;

mod json;

mod figure;

mod options;

pub use config::{
    Config, Kernel, Local, PAIR_SEED, Projection, Setting, calibration_seed, input_seed,
    projection_seed,
};
pub use estimate::{
    DrawnMap, Pairs, attend, favor_output, kernel_estimates, lemma2_mse, output_mse,
};
pub use figure::{panels, plot};
pub use inputs::{Inputs, draw_projection};
pub use json::render_json;
pub use markdown::render_markdown;
pub use options::{Flags, Output, from_flags, parse_args};
pub use report::{KernelRow, OutputRow, Report};
pub use study::{run, run_with_progress};
pub use text::{command_line, render_text};

use crate::args::{CliError, CliResult};

/// Runs `favor fidelity` with `flags`: prints the tables (or JSON) to stdout,
/// and writes the plot and Markdown files if asked.
pub fn main(flags: Flags) -> CliResult<()> {
    let (cfg, out) = from_flags(flags)?;
    for path in [&out.markdown, &out.plot].into_iter().flatten() {
        crate::attend::check_writable(path)?;
    }
    let bar = crate::progress::bar(cfg.norms.len().saturating_mul(cfg.seeds), out.json);
    let rep = run_with_progress(&cfg, &bar);
    bar.finish_and_clear();
    let rep = rep?;
    if out.json {
        print!("{}", render_json(&rep));
    } else {
        print!("{}", render_text(&rep));
    }
    if let Some(path) = &out.markdown {
        std::fs::write(path, render_markdown(&rep))
            .map_err(|e| CliError::input(format!("{}: cannot write: {e}", path.display())))?;
    }
    if let Some(path) = &out.plot {
        plot(&rep, path)?;
    }
    Ok(())
}
