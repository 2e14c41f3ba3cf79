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
//! - Inputs for each (r, seed): L query rows and L key rows of dimension d, each a standard
//!   Gaussian vector rescaled to norm exactly **r** (r is the norm of the *raw* q and k rows,
//!   before any scaling); V is L×d with N(0, 1) entries (value dimension = d). The logits
//!   `q·k/√d = r²·cos θ/√d` then have a standard deviation of about `r²/d`.
//! - What the random features estimate: `exp(q·k/√d) = exp(q'·k')` with `q' = q/d^{1/4}`,
//!   `k' = k/d^{1/4}` (|q'| = r/d^{1/4}). Lemma 2 is evaluated for x = q', y = k'.
//! - Exact attention: `favor_core::softmax_attention` in f64; FAVOR+: `favor_core::bidirectional`
//!   in f64 with the same backend (`favor_simd::detected()`, whose f64 kernels are SIMD), so
//!   the errors reported are the estimator's, not f32 rounding.
//! - Kernels: SM+ (positive), SMhyp+ (hyperbolic), trigonometric — all three estimate softmax —
//!   and Performer-ReLU (`Generalized` with ReLU, ε = 10⁻³, no data normaliser: the paper's
//!   defaults), which is a *different* kernel: its error against softmax measures how far that
//!   kernel is from softmax and does not vanish as m grows.
//! - Projections: iid N(0, I) rows, or orthogonal random features with χ(d) row norms.
//! - m is the number of projection rows. The hyperbolic and trigonometric maps output 2m
//!   features from m rows (twice the attention cost of SM+ at the same m).
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
//! - Attention inputs of seed s: stream [`input_seed`]`(s)`, consumed as L·d values for the
//!   q directions, L·d for the k directions, then L·d for V. The directions do not depend on r
//!   (only the rescaling does), and every kernel and projection sees the same inputs.
//! - Kernel-level pairs: stream [`PAIR_SEED`]: `pairs`·d values for the q side, then
//!   `pairs`·d for the k side; the same pairs for every seed, kernel, projection and m.
//! - Projection for (seed s, kernel, projection, m): [`projection_seed`], distinct for every
//!   (s, kernel, projection, m) and reused across r.

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

pub use config::{Config, Kernel, PAIR_SEED, Projection, input_seed, projection_seed};
pub use estimate::{Pairs, favor_output, kernel_estimates, lemma2_mse, output_mse};
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
