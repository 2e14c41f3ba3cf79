//! One (r, seed)'s attention inputs with their exact output, and the projections.

use favor_core::{ExactOptions, Normals, Shape, projection, projection_len, softmax_attention};
use favor_simd::Detected;

use super::config::{Projection, input_seed};
use crate::args::{CliError, CliResult, elements, try_zeros};

/// `rows` rows of dimension d: Gaussian directions from `normals`, each rescaled to norm r.
/// `what` names them if they do not fit in memory.
pub(super) fn rows_of_norm(
    what: &'static str,
    normals: &mut Normals,
    rows: usize,
    d: usize,
    r: f64,
) -> CliResult<Vec<f64>> {
    let mut x = try_zeros(what, elements(what, &[rows, d])?)?;
    normals.fill(&mut x);
    for row in x.chunks_exact_mut(d) {
        let n = row.iter().map(|a| a * a).sum::<f64>().sqrt();
        // A zero Gaussian vector has probability zero; keep the row finite anyway.
        let s = if n > 0.0 { r / n } else { 0.0 };
        row.iter_mut().for_each(|a| *a *= s);
    }
    Ok(x)
}

/// One (r, seed)'s attention inputs and the exact output.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Sequence length L.
    pub len: usize,
    /// Dimension d (queries, keys and values).
    pub dim: usize,
    /// Row norm of q and k.
    pub r: f64,
    /// Queries, L×d row-major, every row of norm r.
    pub q: Vec<f64>,
    /// Keys, L×d, every row of norm r.
    pub k: Vec<f64>,
    /// Values, L×d, N(0, 1) entries.
    pub v: Vec<f64>,
    /// Exact `softmax(q·kᵀ/√d)·V` (f64), L×d.
    pub exact: Vec<f64>,
}

impl Inputs {
    /// Draws the inputs of seed `s` at norm `r` (see the module docs for the stream) and
    /// computes the exact attention with `backend`.
    pub fn new(backend: &Detected, len: usize, dim: usize, r: f64, s: usize) -> CliResult<Self> {
        let mut normals = Normals::new(input_seed(s));
        let q = rows_of_norm("fidelity inputs", &mut normals, len, dim, r)?;
        let k = rows_of_norm("fidelity inputs", &mut normals, len, dim, r)?;
        let n = elements("fidelity inputs", &[len, dim])?;
        let mut v = try_zeros("fidelity inputs", n)?;
        normals.fill(&mut v);
        let mut exact = try_zeros("exact attention", n)?;
        softmax_attention(
            backend,
            &q,
            &k,
            &v,
            Shape::new(len, dim, dim),
            &ExactOptions::default(),
            &mut exact,
        )
        .map_err(core_err)?;
        Ok(Self {
            len,
            dim,
            r,
            q,
            k,
            v,
            exact,
        })
    }

    /// Mean square of the exact output (the denominator of the relative MSE).
    pub fn exact_mean_square(&self) -> f64 {
        mean_square(&self.exact)
    }
}

pub(super) fn core_err(e: favor_core::Error) -> CliError {
    CliError::failure(format!("fidelity: {e}"))
}

pub(super) fn mean_square(x: &[f64]) -> f64 {
    x.iter().map(|a| a * a).sum::<f64>() / x.len() as f64
}

/// Draws the m×d projection of `proj` for `seed`.
pub fn draw_projection(proj: Projection, seed: u64, m: usize, d: usize) -> CliResult<Vec<f64>> {
    let mut w = try_zeros("projection", projection_len(m, d).map_err(core_err)?)?;
    projection(proj.kind(), seed, m, d, &mut w).map_err(core_err)?;
    Ok(w)
}
