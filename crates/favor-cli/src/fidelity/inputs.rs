//! One (r, seed)'s attention inputs with their exact output, and the projections.

use favor_core::{ExactOptions, Normals, Shape, projection, projection_len, softmax_attention};
use favor_simd::Detected;

use super::config::{Local, Projection, Setting, input_seed};
use crate::args::{CliError, CliResult, elements, try_zeros};

/// Rescales `row` to norm `r` (a zero row, of probability zero, stays zero).
fn set_norm(row: &mut [f64], r: f64) {
    let n = row.iter().map(|a| a * a).sum::<f64>().sqrt();
    let s = if n > 0.0 { r / n } else { 0.0 };
    row.iter_mut().for_each(|a| *a *= s);
}

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
    x.chunks_exact_mut(d).for_each(|row| set_norm(row, r));
    Ok(x)
}

/// The local setting's q and k (module docs, "Settings"): the sink direction c, the AR(1)
/// latent rows, their directions at norm r, then the sink.
fn local_qk(
    p: Local,
    normals: &mut Normals,
    len: usize,
    d: usize,
    r: f64,
) -> CliResult<(Vec<f64>, Vec<f64>)> {
    let what = "fidelity inputs";
    let mut c = try_zeros(what, d)?;
    normals.fill(&mut c);
    set_norm(&mut c, 1.0);
    let mut k = try_zeros(what, elements(what, &[len, d])?)?;
    normals.fill(&mut k);
    // h_i = a·h_{i−1} + √(1 − a²)·g_i keeps every h_i ~ N(0, I): the sequence is stationary.
    let b = (1.0 - p.corr * p.corr).sqrt();
    for i in 1..len {
        let (prev, rest) = k.split_at_mut(i * d);
        let prev = &prev[(i - 1) * d..];
        for (x, &h) in rest[..d].iter_mut().zip(prev) {
            *x = p.corr * h + b * *x;
        }
    }
    let Some(logit) = p.sink_logit else {
        k.chunks_exact_mut(d).for_each(|row| set_norm(row, r));
        return Ok((k.clone(), k));
    };
    // With a sink, every direction lives in c's complement, so c reaches key 0 alone: the
    // sink's logit is the same for every query and the other logits carry no shared term.
    for row in k.chunks_exact_mut(d) {
        let t: f64 = row.iter().zip(&c).map(|(x, cj)| x * cj).sum();
        row.iter_mut().zip(&c).for_each(|(x, &cj)| *x -= t * cj);
        set_norm(row, r);
    }
    let mut q = k.clone();
    let half = std::f64::consts::FRAC_1_SQRT_2;
    for row in q.chunks_exact_mut(d) {
        row.iter_mut()
            .zip(&c)
            .for_each(|(x, &cj)| *x = half * (*x + r * cj));
    }
    // q_i·k_0/√d = (r/√2)·κ/√d = S.
    let kappa = logit * (2.0 * d as f64).sqrt() / r;
    k[..d]
        .iter_mut()
        .zip(&c)
        .for_each(|(x, &cj)| *x = kappa * cj);
    Ok((q, k))
}

/// One draw of `setting` from the stream `seed`: q and k (L×d), then v (L×d, N(0, 1)).
pub(super) fn draw_qkv(
    setting: Setting,
    seed: u64,
    len: usize,
    d: usize,
    r: f64,
) -> CliResult<[Vec<f64>; 3]> {
    let mut normals = Normals::new(seed);
    let (q, k) = match setting {
        Setting::Iid => {
            let q = rows_of_norm("fidelity inputs", &mut normals, len, d, r)?;
            (q, rows_of_norm("fidelity inputs", &mut normals, len, d, r)?)
        }
        Setting::Local(p) => local_qk(p, &mut normals, len, d, r)?,
    };
    let mut v = try_zeros("fidelity inputs", elements("fidelity inputs", &[len, d])?)?;
    normals.fill(&mut v);
    Ok([q, k, v])
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
    /// Keys, L×d, every row of norm r (the local setting's sink key excepted).
    pub k: Vec<f64>,
    /// Values, L×d, N(0, 1) entries.
    pub v: Vec<f64>,
    /// Exact `softmax(q·kᵀ/√d)·V` (f64), L×d.
    pub exact: Vec<f64>,
}

impl Inputs {
    /// Draws the iid setting's inputs of seed `s` at norm `r` (see the module docs for the
    /// stream) and computes the exact attention with `backend`.
    pub fn new(backend: &Detected, len: usize, dim: usize, r: f64, s: usize) -> CliResult<Self> {
        Self::draw(backend, Setting::Iid, len, dim, r, input_seed(s))
    }

    /// Draws `setting`'s inputs at norm `r` from the stream `seed` (seed s's inputs:
    /// [`input_seed`]`(s)`) and computes the exact attention with `backend`.
    pub fn draw(
        backend: &Detected,
        setting: Setting,
        len: usize,
        dim: usize,
        r: f64,
        seed: u64,
    ) -> CliResult<Self> {
        let [q, k, v] = draw_qkv(setting, seed, len, dim, r)?;
        let mut exact = try_zeros("exact attention", v.len())?;
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
