//! Running a kernel's feature map: FAVOR+ outputs, kernel estimates, paper Lemma 2's MSE,
//! and the kernel-level (q, k) pairs.

use favor_core::{
    Activation, FeatureMap, Generalized, HyperbolicSoftmax, Kernels, Normals, Options, Plan,
    PlanKind, PositiveSoftmax, Shape, TrigonometricSoftmax, transpose_projection,
};
use favor_simd::Detected;

use super::config::{Kernel, PAIR_SEED};
use super::inputs::{Inputs, core_err, rows_of_norm};
use crate::args::{CliError, CliResult, elements, try_collect, try_zeros};

/// Something to do with a feature map, whatever its concrete type.
pub(super) trait WithMap {
    type Out;
    fn call<F: FeatureMap<f64>>(self, fm: &F) -> CliResult<Self::Out>;
}

/// Builds `kernel`'s feature map over W (m×d, with Wᵀ for the SIMD projection) and runs `job`.
pub(super) fn with_map<J: WithMap>(
    kernel: Kernel,
    w: &[f64],
    m: usize,
    d: usize,
    job: J,
) -> CliResult<J::Out> {
    let mut wt = try_zeros("projection", w.len())?;
    transpose_projection(w, m, d, &mut wt).map_err(core_err)?;
    match kernel {
        Kernel::Positive => job.call(
            &PositiveSoftmax::new(w, m, d)
                .and_then(|p| p.with_transposed_projection(&wt))
                .map_err(core_err)?,
        ),
        Kernel::Hyperbolic => job.call(
            &HyperbolicSoftmax::new(w, m, d)
                .and_then(|p| p.with_transposed_projection(&wt))
                .map_err(core_err)?,
        ),
        Kernel::Trigonometric => job.call(
            &TrigonometricSoftmax::new(w, m, d)
                .and_then(|p| p.with_transposed_projection(&wt))
                .map_err(core_err)?,
        ),
        Kernel::Relu => job.call(
            &Generalized::new(w, m, d, Activation::Relu)
                .and_then(|p| p.with_transposed_projection(&wt))
                .map_err(core_err)?,
        ),
    }
}

pub(super) struct Attend<'a> {
    pub(super) backend: &'a Detected,
    pub(super) inp: &'a Inputs,
}

impl WithMap for Attend<'_> {
    type Out = Vec<f64>;
    fn call<F: FeatureMap<f64>>(self, fm: &F) -> CliResult<Vec<f64>> {
        let (l, d) = (self.inp.len, self.inp.dim);
        let shape = Shape::new(l, d, d);
        let plan = Plan::new(
            PlanKind::Bidirectional,
            *self.backend,
            fm,
            shape,
            Options::default(),
        )
        .map_err(core_err)?;
        let mut scratch = try_zeros("attention scratch", plan.scratch_len())?;
        let mut out = try_zeros("attention output", self.inp.exact.len())?;
        let (q, k, v) = (&self.inp.q, &self.inp.k, &self.inp.v);
        plan.run(q, k, v, &mut out, &mut scratch)
            .map_err(core_err)?;
        Ok(out)
    }
}

/// Bidirectional FAVOR+ output (f64, L×d) of `kernel` over the projection `w` (m×d).
pub fn favor_output(
    backend: &Detected,
    kernel: Kernel,
    w: &[f64],
    m: usize,
    inp: &Inputs,
) -> CliResult<Vec<f64>> {
    with_map(kernel, w, m, inp.dim, Attend { backend, inp })
}

/// Output MSE: mean over entries of `(out − exact)²` (non-finite outputs propagate).
pub fn output_mse(out: &[f64], exact: &[f64]) -> f64 {
    let s: f64 = out.iter().zip(exact).map(|(a, b)| (a - b) * (a - b)).sum();
    s / exact.len() as f64
}

pub(super) struct Estimate<'a> {
    pub(super) backend: &'a Detected,
    pub(super) xs: &'a [f64],
    pub(super) ys: &'a [f64],
    pub(super) pairs: usize,
}

impl WithMap for Estimate<'_> {
    type Out = Vec<f64>;
    fn call<F: FeatureMap<f64>>(self, fm: &F) -> CliResult<Vec<f64>> {
        let (n, width) = (self.pairs, fm.feature_dim());
        let what = "pair features";
        let all = elements(what, &[n, width])?;
        let (mut fx, mut fy) = (try_zeros(what, all)?, try_zeros(what, all)?);
        let (mut lx, mut ly) = (try_zeros(what, n)?, try_zeros(what, n)?);
        fm.map_rows(self.backend, self.xs, n, &mut fx, &mut lx)
            .map_err(core_err)?;
        fm.map_rows(self.backend, self.ys, n, &mut fy, &mut ly)
            .map_err(core_err)?;
        try_collect(
            "kernel estimates",
            (0..n).map(|p| {
                let a = &fx[p * width..(p + 1) * width];
                let b = &fy[p * width..(p + 1) * width];
                self.backend.dot(a, b) * (lx[p] + ly[p]).exp()
            }),
        )
    }
}

/// The kernel estimates `φ(x_p)·φ(y_p)` for the pairs (rows of `xs`, `ys`, each `pairs × d`)
/// with `kernel` over W (m×d), rebuilt from stored features and log-scales. For the softmax
/// maps (data normaliser on) this estimates `exp(x·y/√d)`; for ReLU it is ReLU's kernel.
pub fn kernel_estimates(
    backend: &Detected,
    kernel: Kernel,
    w: &[f64],
    m: usize,
    d: usize,
    xs: &[f64],
    ys: &[f64],
) -> CliResult<Vec<f64>> {
    let pairs = xs.len() / d;
    if xs.len() != pairs * d || ys.len() != xs.len() {
        return Err(CliError::input("pairs: xs and ys must both be pairs × d"));
    }
    let job = Estimate {
        backend,
        xs,
        ys,
        pairs,
    };
    with_map(kernel, w, m, d, job)
}

/// Lemma 2 (paper; DESIGN.md) MSE of `kernel`'s estimate of `exp(x·y)` with m **iid** rows,
/// for already-normalised x and y (for attention inputs pass `q/d^{1/4}`, `k/d^{1/4}`). With
/// z = x + y, Δ = x − y, SM = exp(x·y):
/// SM+: `e^{|z|²} SM² (1 − e^{−|z|²})/m`; SMhyp+: `½(1 − e^{−|z|²})` times that;
/// trig: `e^{|z|²} SM⁻² (1 − e^{−|Δ|²})²/(2m)`. `None` for ReLU.
pub fn lemma2_mse(kernel: Kernel, x: &[f64], y: &[f64], m: usize) -> Option<f64> {
    let (mut z2, mut d2, mut xy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        z2 += (a + b) * (a + b);
        d2 += (a - b) * (a - b);
        xy += a * b;
    }
    let sm = f64::exp(xy);
    let m = m as f64;
    let pos = z2.exp() * sm * sm * (-(-z2).exp_m1()) / m;
    match kernel {
        Kernel::Positive => Some(pos),
        Kernel::Hyperbolic => Some(0.5 * (-(-z2).exp_m1()) * pos),
        Kernel::Trigonometric => Some(z2.exp() / (sm * sm) * (-d2).exp_m1().powi(2) / (2.0 * m)),
        Kernel::Relu => None,
    }
}

/// The kernel-level (q, k) pairs at norm r: `pairs` rows each, drawn from [`PAIR_SEED`].
#[derive(Debug, Clone)]
pub struct Pairs {
    /// Query side, `pairs × d`, rows of norm r.
    pub xs: Vec<f64>,
    /// Key side, `pairs × d`, rows of norm r.
    pub ys: Vec<f64>,
    /// `exp(x·y/√d)` per pair.
    pub exact: Vec<f64>,
}

impl Pairs {
    /// Draws `n` pairs of dimension d at norm r.
    pub fn new(n: usize, d: usize, r: f64) -> CliResult<Self> {
        let mut normals = Normals::new(PAIR_SEED);
        let xs = rows_of_norm("pairs", &mut normals, n, d, r)?;
        let ys = rows_of_norm("pairs", &mut normals, n, d, r)?;
        let tau = 1.0 / (d as f64).sqrt();
        let exact = try_collect(
            "pairs",
            (0..n).map(|p| {
                let dot: f64 = xs[p * d..(p + 1) * d]
                    .iter()
                    .zip(&ys[p * d..(p + 1) * d])
                    .map(|(a, b)| a * b)
                    .sum();
                (tau * dot).exp()
            }),
        )?;
        Ok(Self { xs, ys, exact })
    }

    /// Lemma 2 MSE of each pair's estimate for `kernel` with m iid rows (x' = x/d^{1/4}).
    pub fn lemma2(&self, kernel: Kernel, d: usize, m: usize) -> Option<Vec<f64>> {
        let s = (d as f64).powf(-0.25);
        (0..self.exact.len())
            .map(|p| {
                let x: Vec<f64> = self.xs[p * d..(p + 1) * d].iter().map(|a| a * s).collect();
                let y: Vec<f64> = self.ys[p * d..(p + 1) * d].iter().map(|a| a * s).collect();
                lemma2_mse(kernel, &x, &y, m)
            })
            .collect()
    }
}
