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

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use favor_core::{
    Activation, ExactOptions, FeatureMap, Generalized, HyperbolicSoftmax, Kernels, Normals,
    Options, PositiveSoftmax, ProjectionKind, RowNorms, Shape, TrigonometricSoftmax, bidirectional,
    bidirectional_scratch_len, projection, projection_len, softmax_attention, transpose_projection,
};
use favor_simd::Detected;

use crate::args::{Args, CliError, CliResult, elements, try_collect, try_with_capacity, try_zeros};
use crate::plot::{Panel, Series, render_png};

/// The random-feature kernels compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// SM+: `exp(w·x − |x|²/2)/√m` (positive softmax features).
    Positive,
    /// SMhyp+: `[exp(w·x − |x|²/2), exp(−w·x − |x|²/2)]/√(2m)` (2m features).
    Hyperbolic,
    /// Trigonometric: `exp(|x|²/2)[sin w·x, cos w·x]/√m` (2m features, not positive).
    Trigonometric,
    /// Performer-ReLU: `max(w·x, 0) + 10⁻³`, no data normaliser. Not a softmax estimator.
    Relu,
}

impl Kernel {
    /// Every kernel, in report order.
    pub const ALL: [Kernel; 4] = [
        Kernel::Positive,
        Kernel::Hyperbolic,
        Kernel::Trigonometric,
        Kernel::Relu,
    ];

    /// Short display name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Positive => "SM+",
            Kernel::Hyperbolic => "SMhyp+",
            Kernel::Trigonometric => "trig",
            Kernel::Relu => "ReLU",
        }
    }

    /// Identifier used in JSON and accepted by `--kernels`.
    pub fn id(self) -> &'static str {
        match self {
            Kernel::Positive => "positive",
            Kernel::Hyperbolic => "hyperbolic",
            Kernel::Trigonometric => "trigonometric",
            Kernel::Relu => "relu",
        }
    }

    /// Whether the kernel's features are unbiased estimators of the softmax kernel (and so
    /// have a Lemma 2 MSE).
    pub fn estimates_softmax(self) -> bool {
        !matches!(self, Kernel::Relu)
    }

    /// Parses an [`id`](Self::id) or display name (case-insensitive; also `sm+`, `hyp`,
    /// `trig`).
    pub fn parse(s: &str) -> Option<Kernel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "positive" | "sm+" | "pos" => Some(Kernel::Positive),
            "hyperbolic" | "smhyp+" | "hyp" => Some(Kernel::Hyperbolic),
            "trigonometric" | "trig" | "sm" => Some(Kernel::Trigonometric),
            "relu" => Some(Kernel::Relu),
            _ => None,
        }
    }

    fn tag(self) -> u64 {
        match self {
            Kernel::Positive => 1,
            Kernel::Hyperbolic => 2,
            Kernel::Trigonometric => 3,
            Kernel::Relu => 4,
        }
    }
}

/// The projection W the features are built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    /// Independent N(0, I_d) rows.
    Iid,
    /// Orthogonal random features, χ(d) row norms (the paper's default).
    Orthogonal,
}

impl Projection {
    /// Both projections, in report order.
    pub const ALL: [Projection; 2] = [Projection::Iid, Projection::Orthogonal];

    /// Short display name (`iid`, `orth`).
    pub fn name(self) -> &'static str {
        match self {
            Projection::Iid => "iid",
            Projection::Orthogonal => "orth",
        }
    }

    /// Identifier used in JSON (`iid`, `orthogonal`).
    pub fn id(self) -> &'static str {
        match self {
            Projection::Iid => "iid",
            Projection::Orthogonal => "orthogonal",
        }
    }

    /// The favor-core projection kind.
    pub fn kind(self) -> ProjectionKind {
        match self {
            Projection::Iid => ProjectionKind::Iid,
            Projection::Orthogonal => ProjectionKind::Orthogonal(RowNorms::Chi),
        }
    }

    fn tag(self) -> u64 {
        match self {
            Projection::Iid => 1,
            Projection::Orthogonal => 2,
        }
    }
}

/// What to measure. [`Config::default`] is the issue's setting (paper Fig. 4 plus norms).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Sequence length L (queries = keys = L).
    pub len: usize,
    /// Query/key dimension d (also the value dimension).
    pub dim: usize,
    /// Row norms r of the raw queries and keys.
    pub norms: Vec<f64>,
    /// Numbers of projection rows m.
    pub features: Vec<usize>,
    /// Number of seeds (independent inputs and projections).
    pub seeds: usize,
    /// (q, k) pairs for the kernel-level table (0 skips it).
    pub pairs: usize,
    /// Kernels to compare.
    pub kernels: Vec<Kernel>,
    /// Projections to compare.
    pub projections: Vec<Projection>,
    /// Worker threads (seeds run in parallel); at least 1.
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            len: 4096,
            dim: 16,
            norms: vec![1.0, 2.0, 4.0],
            features: vec![16, 32, 64, 128, 256, 512],
            seeds: 15,
            pairs: 256,
            kernels: Kernel::ALL.to_vec(),
            projections: Projection::ALL.to_vec(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl Config {
    /// Checks the configuration; the message names the offending option.
    pub fn validate(&self) -> CliResult<()> {
        let bad = |m: &str| Err(CliError::input(m.to_string()));
        if self.len == 0 {
            return bad("--len must be at least 1");
        }
        if self.dim == 0 {
            return bad("--dim must be at least 1");
        }
        if self.seeds == 0 || self.seeds > u32::MAX as usize {
            return bad("--seeds must be between 1 and 2^32 − 1");
        }
        if self.norms.is_empty() || self.norms.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            return bad("--norms must be positive, finite numbers");
        }
        if self.features.is_empty() || self.features.iter().any(|&m| m == 0 || m > 0xFFFF) {
            return bad("--features must be between 1 and 65535");
        }
        if self.kernels.is_empty() || self.projections.is_empty() {
            return bad("need at least one kernel and one projection");
        }
        if self.threads == 0 {
            return bad("--threads must be at least 1");
        }
        let cells = self
            .len
            .checked_mul(self.dim)
            .and_then(|n| n.checked_mul(8));
        if cells.is_none() {
            return bad("--len × --dim is too large");
        }
        Ok(())
    }
}

/// Stream seed of the attention inputs of seed `s` (`2⁶³ + s`; see the module docs).
pub fn input_seed(s: usize) -> u64 {
    (1 << 63) | s as u64
}

/// Stream seed of the kernel-level (q, k) pairs.
pub const PAIR_SEED: u64 = (1 << 63) | (1 << 62);

/// Projection seed for seed `s`, a kernel, a projection and `m` rows:
/// `s·2³² + kernel·2²⁴ + projection·2¹⁶ + m` with kernel tags SM+ = 1, SMhyp+ = 2, trig = 3,
/// ReLU = 4, projection tags iid = 1, orthogonal = 2 (m < 2¹⁶, s < 2³²: injective, and
/// disjoint from the input and pair streams, whose top bit is set).
pub fn projection_seed(s: usize, kernel: Kernel, proj: Projection, m: usize) -> u64 {
    ((s as u64) << 32) | (kernel.tag() << 24) | (proj.tag() << 16) | m as u64
}

/// `rows` rows of dimension d: Gaussian directions from `normals`, each rescaled to norm r.
/// `what` names them if they do not fit in memory.
fn rows_of_norm(
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

fn core_err(e: favor_core::Error) -> CliError {
    CliError::failure(format!("fidelity: {e}"))
}

fn mean_square(x: &[f64]) -> f64 {
    x.iter().map(|a| a * a).sum::<f64>() / x.len() as f64
}

/// Draws the m×d projection of `proj` for `seed`.
pub fn draw_projection(proj: Projection, seed: u64, m: usize, d: usize) -> CliResult<Vec<f64>> {
    let mut w = try_zeros("projection", projection_len(m, d).map_err(core_err)?)?;
    projection(proj.kind(), seed, m, d, &mut w).map_err(core_err)?;
    Ok(w)
}

/// Something to do with a feature map, whatever its concrete type.
trait WithMap {
    type Out;
    fn call<F: FeatureMap<f64>>(self, fm: &F) -> CliResult<Self::Out>;
}

/// Builds `kernel`'s feature map over W (m×d, with Wᵀ for the SIMD projection) and runs `job`.
fn with_map<J: WithMap>(
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

struct Attend<'a> {
    backend: &'a Detected,
    inp: &'a Inputs,
}

impl WithMap for Attend<'_> {
    type Out = Vec<f64>;
    fn call<F: FeatureMap<f64>>(self, fm: &F) -> CliResult<Vec<f64>> {
        let (l, d) = (self.inp.len, self.inp.dim);
        let opts = Options::default();
        let n = bidirectional_scratch_len(fm.feature_dim(), d, opts.block).map_err(core_err)?;
        let mut scratch = try_zeros("attention scratch", n)?;
        let mut out = try_zeros("attention output", self.inp.exact.len())?;
        bidirectional(
            self.backend,
            fm,
            &self.inp.q,
            &self.inp.k,
            &self.inp.v,
            Shape::new(l, d, d),
            &opts,
            &mut out,
            &mut scratch,
        )
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

struct Estimate<'a> {
    backend: &'a Detected,
    xs: &'a [f64],
    ys: &'a [f64],
    pairs: usize,
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

/// One (r, kernel, projection, m) row of the attention-output table.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRow {
    /// Row norm of q and k.
    pub r: f64,
    /// Feature map.
    pub kernel: Kernel,
    /// Projection.
    pub projection: Projection,
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
    /// Attention-output rows, ordered by r, kernel, projection, m.
    pub output: Vec<OutputRow>,
    /// Kernel-level rows (softmax kernels), same order.
    pub kernel: Vec<KernelRow>,
}

/// A (kernel, projection, m) combination, in report order.
#[derive(Debug, Clone, Copy)]
struct Cell {
    kernel: Kernel,
    proj: Projection,
    m: usize,
}

fn cells(cfg: &Config) -> Vec<Cell> {
    let mut out = Vec::new();
    for &kernel in &cfg.kernels {
        for &proj in &cfg.projections {
            for &m in &cfg.features {
                out.push(Cell { kernel, proj, m });
            }
        }
    }
    out
}

/// What one (r, seed) produced for every cell.
struct Item {
    exact_ms: f64,
    mse: Vec<f64>,
    /// Per cell, per pair: squared kernel error (empty for ReLU or without pairs).
    kernel_sq: Vec<Vec<f64>>,
}

fn run_item(
    cfg: &Config,
    backend: &Detected,
    r: f64,
    seed: usize,
    pairs: &Pairs,
) -> CliResult<Item> {
    let inp = Inputs::new(backend, cfg.len, cfg.dim, r, seed)?;
    let cells = cells(cfg);
    let mut item = Item {
        exact_ms: inp.exact_mean_square(),
        mse: Vec::with_capacity(cells.len()),
        kernel_sq: Vec::with_capacity(cells.len()),
    };
    for c in cells {
        let w = draw_projection(
            c.proj,
            projection_seed(seed, c.kernel, c.proj, c.m),
            c.m,
            cfg.dim,
        )?;
        let out = favor_output(backend, c.kernel, &w, c.m, &inp)?;
        item.mse.push(output_mse(&out, &inp.exact));
        let sq = if c.kernel.estimates_softmax() && cfg.pairs > 0 {
            let mut est =
                kernel_estimates(backend, c.kernel, &w, c.m, cfg.dim, &pairs.xs, &pairs.ys)?;
            // In place: every seed keeps these for every cell until the report is built.
            for (e, x) in est.iter_mut().zip(&pairs.exact) {
                *e = (*e - x) * (*e - x);
            }
            est
        } else {
            Vec::new()
        };
        item.kernel_sq.push(sq);
    }
    Ok(item)
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn sample_std(x: &[f64]) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    let mu = mean(x);
    Some((x.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / (x.len() - 1) as f64).sqrt())
}

/// Runs the whole study (seeds in parallel on `cfg.threads` threads).
pub fn run(cfg: &Config) -> CliResult<Report> {
    cfg.validate()?;
    let start = Instant::now();
    let backend = favor_simd::detected();
    let pairs: Vec<Pairs> = cfg
        .norms
        .iter()
        .map(|&r| Pairs::new(cfg.pairs, cfg.dim, r))
        .collect::<CliResult<_>>()?;
    let n_jobs = elements("fidelity jobs", &[cfg.norms.len(), cfg.seeds])?;
    let jobs = try_collect(
        "fidelity jobs",
        (0..n_jobs).map(|j| (j / cfg.seeds, j % cfg.seeds)),
    )?;
    let results: Mutex<Vec<Option<CliResult<Item>>>> = Mutex::new(try_collect(
        "fidelity results",
        (0..jobs.len()).map(|_| None),
    )?);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..cfg.threads.min(jobs.len()) {
            scope.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(ri, s)) = jobs.get(j) else { break };
                    let item = run_item(cfg, &backend, cfg.norms[ri], s, &pairs[ri]);
                    let failed = item.is_err();
                    results.lock().unwrap_or_else(|e| e.into_inner())[j] = Some(item);
                    if failed {
                        // Stop handing out work; the error is reported below.
                        next.store(jobs.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut items: Vec<Item> = try_with_capacity("fidelity results", jobs.len())?;
    for res in results {
        match res {
            Some(Ok(item)) => items.push(item),
            Some(Err(e)) => return Err(e),
            None => return Err(CliError::failure("fidelity: a worker stopped early")),
        }
    }

    let cells = cells(cfg);
    let mut output = Vec::new();
    let mut kernel = Vec::new();
    for (ri, &r) in cfg.norms.iter().enumerate() {
        let its = &items[ri * cfg.seeds..(ri + 1) * cfg.seeds];
        let pr = &pairs[ri];
        for (ci, c) in cells.iter().enumerate() {
            let per_seed: Vec<f64> = its.iter().map(|it| it.mse[ci]).collect();
            let rel = mean(
                &its.iter()
                    .map(|it| it.mse[ci] / it.exact_ms)
                    .collect::<Vec<_>>(),
            );
            output.push(OutputRow {
                r,
                kernel: c.kernel,
                projection: c.proj,
                m: c.m,
                mse_mean: mean(&per_seed),
                mse_std: sample_std(&per_seed),
                rel_mse: rel,
                nonfinite_seeds: per_seed.iter().filter(|x| !x.is_finite()).count(),
                mse_per_seed: per_seed,
            });
            let Some(v) = pr.lemma2(c.kernel, cfg.dim, c.m) else {
                continue;
            };
            if cfg.pairs == 0 {
                continue;
            }
            let n = cfg.pairs;
            let sm2: Vec<f64> = pr.exact.iter().map(|e| e * e).collect();
            let emp_p: Vec<f64> = (0..n)
                .map(|p| mean(&its.iter().map(|it| it.kernel_sq[ci][p]).collect::<Vec<_>>()))
                .collect();
            let rel_per_seed: Vec<f64> = its
                .iter()
                .map(|it| {
                    mean(
                        &(0..n)
                            .map(|p| it.kernel_sq[ci][p] / sm2[p])
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            let lemma2_rel = mean(&(0..n).map(|p| v[p] / sm2[p]).collect::<Vec<_>>());
            let emp_rel = mean(&rel_per_seed);
            kernel.push(KernelRow {
                r,
                kernel: c.kernel,
                projection: c.proj,
                m: c.m,
                lemma2_mse: mean(&v),
                empirical_mse: mean(&emp_p),
                lemma2_rel_mse: lemma2_rel,
                empirical_rel_mse: emp_rel,
                ratio: emp_rel / lemma2_rel,
                rel_per_seed,
            });
        }
    }
    Ok(Report {
        config: cfg.clone(),
        backend: Kernels::<f64>::name(&backend),
        seconds: start.elapsed().as_secs_f64(),
        output,
        kernel,
    })
}

// ---------------------------------------------------------------------------------------------
// Presentation.

/// A number in short scientific notation (`1.23e-3`), or `inf` / `-inf` / `nan`.
fn sci(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{x:.2e}")
    }
}

fn fixed(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        sci(x)
    }
}

/// A norm for display (`1`, `2`, `0.5`).
fn norm_label(r: f64) -> String {
    format!("{r}")
}

fn mse_cell(row: &OutputRow) -> String {
    match row.mse_std {
        Some(s) if row.mse_mean.is_finite() => format!("{} ± {}", sci(row.mse_mean), sci(s)),
        _ => sci(row.mse_mean),
    }
}

/// Pooled kernel-level figures for one (r, kernel, projection): `m × relative MSE`
/// (Lemma 2, empirical mean over m and seeds), ratio, and the ratio's standard error over
/// the independent (seed, m) projections.
struct Pooled {
    lemma: f64,
    empirical: f64,
    ratio: f64,
    se: Option<f64>,
}

fn pooled(rows: &[&KernelRow]) -> Pooled {
    let lemma = mean(
        &rows
            .iter()
            .map(|k| k.m as f64 * k.lemma2_rel_mse)
            .collect::<Vec<_>>(),
    );
    let t: Vec<f64> = rows
        .iter()
        .flat_map(|k| {
            let scale = 1.0 / k.lemma2_rel_mse;
            k.rel_per_seed.iter().map(move |x| x * scale)
        })
        .collect();
    let ratio = mean(&t);
    Pooled {
        lemma,
        empirical: ratio * lemma,
        ratio,
        se: sample_std(&t).map(|s| s / (t.len() as f64).sqrt()),
    }
}

/// Table rows as cells; the first `left` columns are left-aligned in text.
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
    left: usize,
}

impl Table {
    fn text(&self) -> String {
        let cols = self.head.len();
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .chain(std::iter::once(&self.head))
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut s = String::new();
        for row in std::iter::once(&self.head).chain(&self.rows) {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = width[c] - cell.chars().count();
                if c > 0 {
                    line.push_str("  ");
                }
                if c < self.left {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                } else {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        s.push_str(&line(&self.head));
        let sep: Vec<String> = (0..self.head.len())
            .map(|c| {
                if c < self.left {
                    "---".into()
                } else {
                    "---:".into()
                }
            })
            .collect();
        s.push_str(&line(&sep));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

fn output_tables(rep: &Report, r: f64) -> (Table, Table) {
    let cfg = &rep.config;
    let mut head = vec!["kernel".to_string(), "proj".to_string()];
    head.extend(cfg.features.iter().map(|m| format!("m={m}")));
    let (mut abs, mut rel) = (Vec::new(), Vec::new());
    for &k in &cfg.kernels {
        for &p in &cfg.projections {
            let rows: Vec<&OutputRow> = rep
                .output
                .iter()
                .filter(|o| o.r == r && o.kernel == k && o.projection == p)
                .collect();
            let lead = [k.name().to_string(), p.name().to_string()];
            abs.push(
                lead.iter()
                    .cloned()
                    .chain(rows.iter().map(|o| mse_cell(o)))
                    .collect(),
            );
            rel.push(
                lead.iter()
                    .cloned()
                    .chain(rows.iter().map(|o| sci(o.rel_mse)))
                    .collect(),
            );
        }
    }
    (
        Table {
            head: head.clone(),
            rows: abs,
            left: 2,
        },
        Table {
            head,
            rows: rel,
            left: 2,
        },
    )
}

fn kernel_table(rep: &Report) -> Table {
    let cfg = &rep.config;
    let head = [
        "r",
        "kernel",
        "proj",
        "m·Lemma2",
        "m·empirical",
        "ratio",
        "± se",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for &r in &cfg.norms {
        for &k in cfg.kernels.iter().filter(|k| k.estimates_softmax()) {
            for &p in &cfg.projections {
                let ks: Vec<&KernelRow> = rep
                    .kernel
                    .iter()
                    .filter(|x| x.r == r && x.kernel == k && x.projection == p)
                    .collect();
                if ks.is_empty() {
                    continue;
                }
                let pl = pooled(&ks);
                rows.push(vec![
                    norm_label(r),
                    k.name().into(),
                    p.name().into(),
                    sci(pl.lemma),
                    sci(pl.empirical),
                    fixed(pl.ratio, 3),
                    pl.se.map_or("—".into(), |s| fixed(s, 3)),
                ]);
            }
        }
    }
    Table {
        head,
        rows,
        left: 3,
    }
}

fn scaled_norm(r: f64, d: usize) -> f64 {
    r * (d as f64).powf(-0.25)
}

fn r_heading(r: f64, d: usize) -> String {
    format!(
        "r = {} (|q'| = |k'| = {:.2}; logits q·k/√d have std ≈ r²/d = {:.3})",
        norm_label(r),
        scaled_norm(r, d),
        r * r / d as f64
    )
}

fn nonfinite_notes(rep: &Report) -> Vec<String> {
    rep.output
        .iter()
        .filter(|o| o.nonfinite_seeds > 0)
        .map(|o| {
            format!(
                "r = {}, {} {}, m = {}: {} of {} seeds gave non-finite outputs",
                norm_label(o.r),
                o.kernel.name(),
                o.projection.name(),
                o.m,
                o.nonfinite_seeds,
                o.mse_per_seed.len()
            )
        })
        .collect()
}

fn setting_line(rep: &Report) -> String {
    let c = &rep.config;
    format!(
        "L = {}, d = dv = {}, {} seeds, {} kernel-level pairs, f64 on backend {} ({} threads), {:.1} s",
        c.len, c.dim, c.seeds, c.pairs, rep.backend, c.threads, rep.seconds
    )
}

const NOTES: [&str; 5] = [
    "r is the norm of every raw query and key row; the attention is softmax(q·kᵀ/√d)·V, i.e. the \
     features estimate exp(q'·k') with q' = q/d^(1/4). v entries are N(0, 1).",
    "Exact attention and FAVOR+ both run in f64 on the same backend, so the errors are the \
     estimator's variance (and bias), not f32 rounding.",
    "m counts projection rows: SMhyp+ and trig output 2m features (twice SM+'s attention cost).",
    "ReLU (Performer-ReLU, ε = 1e-3, no data normaliser) is a different kernel, not an estimator \
     of softmax: its MSE is its distance from softmax attention and does not vanish as m grows.",
    "trig features are not positive: the estimated denominator can cross zero, giving huge \
     (possibly non-finite) outputs; they are reported as measured.",
];

const KERNEL_NOTE: &str = "Kernel level: estimates of exp(q·k/√d) on (q, k) pairs drawn like the \
     inputs, with the attention runs' projections. Relative MSE = E[(est − exp)²]/exp², mean \
     over pairs, times m (Lemma 2's iid value is ∝ 1/m); empirical: pooled over all m and \
     seeds. ratio = empirical/Lemma 2: 1 expected for iid rows, < 1 for orthogonal rows (Thm \
     2). ± se is the sample standard error over the (seed, m) projections; the errors are \
     right-skewed, so on few samples the ratio tends to fall below 1 and the se is too small \
     (SMhyp+ most, SM+ and SMhyp+ at large r by far: their Lemma 2 value is dominated by rare, \
     huge estimates that no feasible sample contains). The test suite checks Lemma 2 with \
     exact fourth moments over 3000 seeds at r = 1.";

/// The report as aligned plain-text tables.
pub fn render_text(rep: &Report) -> String {
    let mut s = String::new();
    let c = &rep.config;
    let _ = writeln!(
        s,
        "favor fidelity: FAVOR+ vs exact softmax attention\n{}\n",
        setting_line(rep)
    );
    for &r in &c.norms {
        let (abs, rel) = output_tables(rep, r);
        let _ = writeln!(s, "{}", r_heading(r, c.dim));
        let _ = writeln!(s, "output MSE, mean ± std over {} seeds", c.seeds);
        s.push_str(&abs.text());
        let _ = writeln!(s, "relative MSE (MSE / mean square of the exact output)");
        s.push_str(&rel.text());
        s.push('\n');
    }
    if !rep.kernel.is_empty() {
        let _ = writeln!(s, "{KERNEL_NOTE}");
        s.push_str(&kernel_table(rep).text());
        s.push('\n');
    }
    let nf = nonfinite_notes(rep);
    if !nf.is_empty() {
        let _ = writeln!(s, "Non-finite outputs:");
        for n in nf {
            let _ = writeln!(s, "  {n}");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "Notes:");
    for n in NOTES {
        let _ = writeln!(s, "  - {n}");
    }
    s
}

/// The `favor fidelity` command line that reproduces `cfg` (every option spelt out except
/// `--threads`, which does not change the results).
pub fn command_line(cfg: &Config) -> String {
    let join = |v: Vec<String>| v.join(",");
    let d = Config::default();
    let mut s = String::from("favor fidelity");
    if cfg.len != d.len {
        let _ = write!(s, " --len {}", cfg.len);
    }
    if cfg.dim != d.dim {
        let _ = write!(s, " --dim {}", cfg.dim);
    }
    if cfg.norms != d.norms {
        let _ = write!(
            s,
            " --norms {}",
            join(cfg.norms.iter().map(|r| r.to_string()).collect())
        );
    }
    if cfg.features != d.features {
        let _ = write!(
            s,
            " --features {}",
            join(cfg.features.iter().map(|m| m.to_string()).collect())
        );
    }
    if cfg.seeds != d.seeds {
        let _ = write!(s, " --seeds {}", cfg.seeds);
    }
    if cfg.pairs != d.pairs {
        let _ = write!(s, " --pairs {}", cfg.pairs);
    }
    if cfg.kernels != d.kernels {
        let _ = write!(
            s,
            " --kernels {}",
            join(cfg.kernels.iter().map(|k| k.id().into()).collect())
        );
    }
    if cfg.projections != d.projections {
        let _ = write!(
            s,
            " --projections {}",
            join(cfg.projections.iter().map(|p| p.id().into()).collect())
        );
    }
    s
}

/// The report as Markdown (tables per r, relative MSE, kernel level, notes).
pub fn render_markdown(rep: &Report) -> String {
    let mut s = String::new();
    let c = &rep.config;
    let _ = writeln!(s, "# FAVOR+ fidelity\n");
    let _ = writeln!(
        s,
        "Generated by `{}` (plus `--markdown`/`--plot`).\n",
        command_line(c)
    );
    let _ = writeln!(s, "{}\n", setting_line(rep));
    for &r in &c.norms {
        let (abs, _) = output_tables(rep, r);
        let _ = writeln!(
            s,
            "**{}** — output MSE, mean ± std over {} seeds\n",
            r_heading(r, c.dim),
            c.seeds
        );
        s.push_str(&abs.markdown());
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "**Relative MSE** (MSE / mean square of the exact output)\n"
    );
    let mut head = vec!["r".to_string(), "kernel".into(), "proj".into()];
    head.extend(c.features.iter().map(|m| format!("m={m}")));
    let mut rows = Vec::new();
    for &r in &c.norms {
        let (_, rel) = output_tables(rep, r);
        for row in rel.rows {
            rows.push(std::iter::once(norm_label(r)).chain(row).collect());
        }
    }
    s.push_str(
        &Table {
            head,
            rows,
            left: 3,
        }
        .markdown(),
    );
    s.push('\n');
    if !rep.kernel.is_empty() {
        let _ = writeln!(s, "{KERNEL_NOTE}\n");
        s.push_str(&kernel_table(rep).markdown());
        s.push('\n');
    }
    let nf = nonfinite_notes(rep);
    if !nf.is_empty() {
        let _ = writeln!(s, "Non-finite outputs:\n");
        for n in nf {
            let _ = writeln!(s, "- {n}");
        }
        s.push('\n');
    }
    for n in NOTES {
        let _ = writeln!(s, "- {n}");
    }
    s
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        "null".into()
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_nums(xs: &[f64]) -> String {
    format!(
        "[{}]",
        xs.iter()
            .map(|&x| json_num(x))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// The report as JSON: `config`, `backend`, `seconds`, `output` rows and `kernel` rows
/// (one object per line). Non-finite numbers are `null`.
pub fn render_json(rep: &Report) -> String {
    let c = &rep.config;
    let mut s = String::from("{\n");
    let _ = writeln!(
        s,
        "\"config\": {{\"len\": {}, \"dim\": {}, \"value_dim\": {}, \"norms\": {}, \"features\": [{}], \
         \"seeds\": {}, \"pairs\": {}, \"threads\": {}, \"kernels\": [{}], \"projections\": [{}], \
         \"attention\": \"softmax(q k^T / sqrt(d)) V, bidirectional; r = norm of raw q and k rows\"}},",
        c.len,
        c.dim,
        c.dim,
        json_nums(&c.norms),
        c.features
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(","),
        c.seeds,
        c.pairs,
        c.threads,
        c.kernels
            .iter()
            .map(|k| json_str(k.id()))
            .collect::<Vec<_>>()
            .join(","),
        c.projections
            .iter()
            .map(|p| json_str(p.id()))
            .collect::<Vec<_>>()
            .join(","),
    );
    let _ = writeln!(s, "\"backend\": {},", json_str(rep.backend));
    let _ = writeln!(s, "\"seconds\": {},", json_num(rep.seconds));
    s.push_str("\"output\": [\n");
    let out: Vec<String> = rep
        .output
        .iter()
        .map(|o| {
            format!(
                "{{\"r\": {}, \"kernel\": {}, \"projection\": {}, \"m\": {}, \"mse_mean\": {}, \
                 \"mse_std\": {}, \"rel_mse\": {}, \"nonfinite_seeds\": {}, \"mse_per_seed\": {}}}",
                json_num(o.r),
                json_str(o.kernel.id()),
                json_str(o.projection.id()),
                o.m,
                json_num(o.mse_mean),
                o.mse_std.map_or("null".into(), json_num),
                json_num(o.rel_mse),
                o.nonfinite_seeds,
                json_nums(&o.mse_per_seed)
            )
        })
        .collect();
    s.push_str(&out.join(",\n"));
    s.push_str("\n],\n\"kernel\": [\n");
    let ker: Vec<String> = rep
        .kernel
        .iter()
        .map(|k| {
            format!(
                "{{\"r\": {}, \"kernel\": {}, \"projection\": {}, \"m\": {}, \"lemma2_mse\": {}, \
                 \"empirical_mse\": {}, \"lemma2_rel_mse\": {}, \"empirical_rel_mse\": {}, \
                 \"ratio\": {}}}",
                json_num(k.r),
                json_str(k.kernel.id()),
                json_str(k.projection.id()),
                k.m,
                json_num(k.lemma2_mse),
                json_num(k.empirical_mse),
                json_num(k.lemma2_rel_mse),
                json_num(k.empirical_rel_mse),
                json_num(k.ratio)
            )
        })
        .collect();
    s.push_str(&ker.join(",\n"));
    s.push_str("\n]\n}\n");
    s
}

/// The figure's panels: one per r, log-log output MSE vs m, one line per (kernel,
/// projection), error bars = std over seeds; iid lines dashed.
pub fn panels(rep: &Report) -> Vec<Panel> {
    let c = &rep.config;
    c.norms
        .iter()
        .map(|&r| {
            let mut series = Vec::new();
            for &k in &c.kernels {
                for &p in &c.projections {
                    let rows: Vec<&OutputRow> = rep
                        .output
                        .iter()
                        .filter(|o| o.r == r && o.kernel == k && o.projection == p)
                        .collect();
                    series.push(Series {
                        label: format!("{} {}", k.name(), p.name()),
                        points: rows.iter().map(|o| (o.m as f64, o.mse_mean)).collect(),
                        y_err: Some(rows.iter().map(|o| o.mse_std.unwrap_or(0.0)).collect()),
                        dashed: p == Projection::Iid,
                    });
                }
            }
            Panel {
                title: format!(
                    "r = {} (|q'| = {:.2})",
                    norm_label(r),
                    scaled_norm(r, c.dim)
                ),
                x_label: "random features m".into(),
                y_label: "attention-output MSE".into(),
                log_x: true,
                log_y: true,
                series,
            }
        })
        .collect()
}

/// Writes the figure ([`panels`]) to `path`.
pub fn plot(rep: &Report, path: &Path) -> CliResult<()> {
    let c = &rep.config;
    let title = format!(
        "FAVOR+ vs exact softmax attention: L = {}, d = {}, {} seeds (dashed: iid, solid: orthogonal)",
        c.len, c.dim, c.seeds
    );
    render_png(path, &title, &panels(rep)).map_err(|e| crate::attend::plot_error(path, e))
}

/// Options of `favor fidelity` besides the [`Config`].
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Print JSON instead of text.
    pub json: bool,
    /// Write the figure here.
    pub plot: Option<PathBuf>,
    /// Write the Markdown tables here.
    pub markdown: Option<PathBuf>,
}

/// Reads `favor fidelity`'s options: `--len`, `--dim`, `--norms`, `--features`, `--seeds`,
/// `--pairs`, `--kernels`, `--projections`, `--threads`, `--json`, `--plot FILE.png`,
/// `--markdown FILE.md`.
pub fn parse_args(mut args: Args) -> CliResult<(Config, Output)> {
    let mut cfg = Config::default();
    if let Some(v) = args.parse("len")? {
        cfg.len = v;
    }
    if let Some(v) = args.parse("dim")? {
        cfg.dim = v;
    }
    if let Some(v) = args.list("norms")? {
        cfg.norms = v;
    }
    if let Some(v) = args.list("features")? {
        cfg.features = v;
    }
    if let Some(v) = args.parse("seeds")? {
        cfg.seeds = v;
    }
    if let Some(v) = args.parse("pairs")? {
        cfg.pairs = v;
    }
    if let Some(v) = args.parse("threads")? {
        cfg.threads = v;
    }
    if let Some(list) = args.list::<String>("kernels")? {
        cfg.kernels = list
            .iter()
            .map(|s| {
                Kernel::parse(s).ok_or_else(|| {
                    CliError::input(format!(
                        "--kernels item {s:?}: expected positive, hyperbolic, trig or relu"
                    ))
                })
            })
            .collect::<CliResult<_>>()?;
    }
    if let Some(list) = args.list::<String>("projections")? {
        cfg.projections = list
            .iter()
            .map(|s| match s.trim().to_ascii_lowercase().as_str() {
                "iid" => Ok(Projection::Iid),
                "orth" | "orthogonal" => Ok(Projection::Orthogonal),
                _ => Err(CliError::input(format!(
                    "--projections item {s:?}: expected iid or orthogonal"
                ))),
            })
            .collect::<CliResult<_>>()?;
    }
    let out = Output {
        json: args.flag("json"),
        plot: args.value("plot")?.map(PathBuf::from),
        markdown: args.value("markdown")?.map(PathBuf::from),
    };
    args.finish()?;
    cfg.validate()?;
    Ok((cfg, out))
}

/// Runs `favor fidelity` with the options in `args`: prints the tables (or JSON) to stdout,
/// and writes the plot and Markdown files if asked.
pub fn main(args: Args) -> CliResult<()> {
    let (cfg, out) = parse_args(args)?;
    for path in [&out.markdown, &out.plot].into_iter().flatten() {
        crate::attend::check_writable(path)?;
    }
    let rep = run(&cfg)?;
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
