//! What a run measured: output rows, kernel rows, the report.

use favor_core::HybridShape;

use super::config::{Config, Kernel, Projection};

/// One (r, kernel, projection, attention, m) row of the attention-output table.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRow {
    /// Row norm of q and k.
    pub r: f64,
    /// Feature map.
    pub kernel: Kernel,
    /// Projection.
    pub projection: Projection,
    /// `None`: FAVOR+; `Some`: hybrid attention with this window and sinks.
    pub hybrid: Option<HybridShape>,
    /// Projection rows.
    pub m: usize,
    /// Output MSE of each seed, in seed order (may be non-finite for trig).
    pub mse_per_seed: Vec<f64>,
    /// Mean of `mse_per_seed`.
    pub mse_mean: f64,
    /// Sample standard deviation of `mse_per_seed` (`None` with one seed).
    pub mse_std: Option<f64>,
    /// Mean over seeds of MSE / mean square of the exact output.
    pub rel_mse: f64,
    /// Seeds whose output had a non-finite entry.
    pub nonfinite_seeds: usize,
}

/// One (r, kernel, projection, m) row of the kernel-level table (softmax kernels only).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRow {
    /// Row norm of q and k.
    pub r: f64,
    /// Feature map.
    pub kernel: Kernel,
    /// Projection.
    pub projection: Projection,
    /// Projection rows.
    pub m: usize,
    /// Lemma 2 (iid) MSE, mean over pairs.
    pub lemma2_mse: f64,
    /// Empirical MSE over seeds, mean over pairs.
    pub empirical_mse: f64,
    /// Lemma 2 relative MSE `MSE_p / exp(x_p·y_p/√d)²`, mean over pairs.
    pub lemma2_rel_mse: f64,
    /// Empirical relative MSE, mean over pairs.
    pub empirical_rel_mse: f64,
    /// `empirical_rel_mse / lemma2_rel_mse`.
    pub ratio: f64,
    /// Per seed: mean over pairs of `e_p² / exp(x_p·y_p/√d)²` (the per-seed relative MSE).
    pub rel_per_seed: Vec<f64>,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was run.
    pub config: Config,
    /// The backend that ran both exact and FAVOR+ attention (f64).
    pub backend: &'static str,
    /// Wall time of the measurement, seconds.
    pub seconds: f64,
    /// Attention-output rows, ordered by r, kernel, projection, attention (FAVOR+, then the
    /// hybrid shapes of [`Config::hybrids`]), m.
    pub output: Vec<OutputRow>,
    /// Kernel-level rows (softmax kernels), same order.
    pub kernel: Vec<KernelRow>,
}
