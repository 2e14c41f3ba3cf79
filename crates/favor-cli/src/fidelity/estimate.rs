//! Running a kernel's feature map: FAVOR+ outputs, kernel estimates, paper Lemma 2's MSE,
//! and the kernel-level (q, k) pairs.

use favor_core::{
    Activation, Calibration, DataAwareParts, DataAwareSoftmax, FeatureMap, Generalized,
    GerfSoftmax, HybridShape, HyperbolicSoftmax, Kernels, Normals, Options, Plan, PlanKind,
    PositiveSoftmax, Shape, TrigonometricSoftmax, calibrate, calibrate_scratch_len, gerf_optimal_a,
    gerf_rho, transpose_projection,
};
use favor_simd::Detected;

use super::config::{Kernel, PAIR_SEED, Projection};
use super::inputs::{Inputs, core_err, draw_projection, rows_of_norm};
use crate::args::{CliError, CliResult, elements, try_collect, try_zeros};

/// Something to do with a feature map, whatever its concrete type.
pub(super) trait WithMap {
    type Out;
    fn call<F: FeatureMap<f64>>(self, fm: &F) -> CliResult<Self::Out>;
}

/// One cell's drawn feature map: everything favor-core needs to build it.
#[derive(Debug, Clone)]
pub struct DrawnMap {
    /// The kernel.
    pub kernel: Kernel,
    /// Projection rows (features for every map but SMhyp+ and trig).
    pub m: usize,
    /// Input dimension d.
    pub dim: usize,
    /// W (m×d); for the data-aware map its ω.
    pub w: Vec<f64>,
    /// GERF's A (0 for the other maps).
    pub a: f64,
    /// The data-aware map's offsets cᵣ (m) and key shift μ (d); empty for the other maps.
    pub offsets: Vec<f64>,
    /// See [`offsets`](Self::offsets).
    pub mu: Vec<f64>,
}

impl DrawnMap {
    /// `kernel` over the projection `w` (m×d). GERF gets A = 0 (SM+); set
    /// [`a`](Self::a) after. Errors for the data-aware map, which is
    /// [`calibrated`](Self::calibrated).
    pub fn projected(kernel: Kernel, w: Vec<f64>, m: usize, dim: usize) -> CliResult<Self> {
        if kernel == Kernel::DataAware {
            return Err(CliError::failure(
                "fidelity: the data-aware map is calibrated",
            ));
        }
        Ok(Self {
            kernel,
            m,
            dim,
            w,
            a: 0.0,
            offsets: Vec::new(),
            mu: Vec::new(),
        })
    }

    /// GERF over `w` with A fitted to `inp`: `gerf_optimal_a(gerf_rho(q, k))` (all pairs,
    /// data normaliser on), as favor-tensor chooses it per (batch, head).
    pub fn gerf(w: Vec<f64>, m: usize, inp: &Inputs) -> CliResult<Self> {
        let rho = gerf_rho(&inp.q, &inp.k, inp.dim, true).map_err(core_err)?;
        Ok(Self {
            a: gerf_optimal_a(rho),
            ..Self::projected(Kernel::Gerf, w, m, inp.dim)?
        })
    }

    /// The data-aware map with m features, calibrated by `favor_core::calibrate` on the
    /// calibration chunk (`q`, `k`: rows of d) over the pairs `hybrid` leaves to the
    /// features (all pairs without it), g drawn as `proj` from `seed`.
    pub fn calibrated(
        proj: Projection,
        seed: u64,
        m: usize,
        dim: usize,
        (q, k): (&[f64], &[f64]),
        hybrid: Option<HybridShape>,
    ) -> CliResult<Self> {
        let cal = Calibration {
            projection: proj.kind(),
            shape: hybrid,
            ..Calibration::new(m, seed)
        };
        let rows = q.len() / dim;
        let mut scratch = try_zeros(
            "calibration",
            calibrate_scratch_len(rows, dim, m).map_err(core_err)?,
        )?;
        let mut w = try_zeros("calibration", elements("calibration", &[m, dim])?)?;
        let (mut offsets, mut mu) = (try_zeros("calibration", m)?, try_zeros("calibration", dim)?);
        let parts = DataAwareParts {
            omega: &mut w,
            offsets: &mut offsets,
            mu: &mut mu,
        };
        calibrate(q, k, dim, &cal, &mut scratch, parts).map_err(core_err)?;
        Ok(Self {
            kernel: Kernel::DataAware,
            m,
            dim,
            w,
            a: 0.0,
            offsets,
            mu,
        })
    }

    /// Draws `kernel`'s map for one cell: the projection `proj` from `seed` (GERF with A
    /// fitted to `inp`), or, data-aware, calibrated on `calib`.
    pub fn draw(
        kernel: Kernel,
        proj: Projection,
        seed: u64,
        m: usize,
        inp: &Inputs,
        calib: (&[f64], &[f64]),
        hybrid: Option<HybridShape>,
    ) -> CliResult<Self> {
        match kernel {
            Kernel::DataAware => Self::calibrated(proj, seed, m, inp.dim, calib, hybrid),
            Kernel::Gerf => Self::gerf(draw_projection(proj, seed, m, inp.dim)?, m, inp),
            _ => Self::projected(kernel, draw_projection(proj, seed, m, inp.dim)?, m, inp.dim),
        }
    }

    /// The keys as this map must see them: shifted by μ (data-aware, through
    /// `DataAwareSoftmax::shift_keys`), else as they are.
    pub fn keys<'a>(&self, k: &'a [f64]) -> CliResult<std::borrow::Cow<'a, [f64]>> {
        if self.kernel != Kernel::DataAware {
            return Ok(std::borrow::Cow::Borrowed(k));
        }
        let (m, d) = (self.m, self.dim);
        let phi =
            DataAwareSoftmax::new(&self.w, &self.offsets, &self.mu, m, d).map_err(core_err)?;
        let mut shifted = try_zeros("shifted keys", k.len())?;
        shifted.copy_from_slice(k);
        phi.shift_keys(&mut shifted).map_err(core_err)?;
        Ok(std::borrow::Cow::Owned(shifted))
    }

    /// Builds the favor-core map (with Wᵀ for the SIMD projection) and runs `job`.
    pub(super) fn with<J: WithMap>(&self, job: J) -> CliResult<J::Out> {
        let (w, m, d) = (&self.w[..], self.m, self.dim);
        let mut wt = try_zeros("projection", w.len())?;
        transpose_projection(w, m, d, &mut wt).map_err(core_err)?;
        match self.kernel {
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
            Kernel::Gerf => {
                let mut norms = try_zeros("projection", m)?;
                job.call(
                    &GerfSoftmax::new(w, m, d, self.a, &mut norms)
                        .and_then(|p| p.with_transposed_projection(&wt))
                        .map_err(core_err)?,
                )
            }
            Kernel::DataAware => job.call(
                &DataAwareSoftmax::new(w, &self.offsets, &self.mu, m, d)
                    .and_then(|p| p.with_transposed_projection(&wt))
                    .map_err(core_err)?,
            ),
        }
    }
}

pub(super) struct Attend<'a> {
    pub(super) backend: &'a Detected,
    pub(super) inp: &'a Inputs,
    /// The keys the map sees (shifted by μ for the data-aware map).
    pub(super) keys: &'a [f64],
    pub(super) hybrid: Option<HybridShape>,
}

impl WithMap for Attend<'_> {
    type Out = Vec<f64>;
    fn call<F: FeatureMap<f64>>(self, fm: &F) -> CliResult<Vec<f64>> {
        let (l, d) = (self.inp.len, self.inp.dim);
        let shape = Shape::new(l, d, d);
        let mut plan = Plan::new(
            PlanKind::Bidirectional,
            *self.backend,
            fm,
            shape,
            Options::default(),
        )
        .map_err(core_err)?;
        if let Some(h) = self.hybrid {
            plan = plan.with_hybrid(h).map_err(core_err)?;
        }
        let mut scratch = try_zeros("attention scratch", plan.scratch_len())?;
        let mut out = try_zeros("attention output", self.inp.exact.len())?;
        let (q, k, v) = (&self.inp.q, self.keys, &self.inp.v);
        plan.run(q, k, v, &mut out, &mut scratch)
            .map_err(core_err)?;
        Ok(out)
    }
}

/// Bidirectional attention output (f64, L×d) with `map`: FAVOR+, or hybrid attention
/// (exact over `hybrid`'s window and sinks, `map`'s features elsewhere).
pub fn attend(
    backend: &Detected,
    map: &DrawnMap,
    hybrid: Option<HybridShape>,
    inp: &Inputs,
) -> CliResult<Vec<f64>> {
    let keys = map.keys(&inp.k)?;
    map.with(Attend {
        backend,
        inp,
        keys: &keys,
        hybrid,
    })
}

/// Bidirectional FAVOR+ output (f64, L×d) of `kernel` over the projection `w` (m×d); GERF
/// with A fitted to `inp` ([`DrawnMap::gerf`]). Errors for the data-aware map (see
/// [`DrawnMap::calibrated`]).
pub fn favor_output(
    backend: &Detected,
    kernel: Kernel,
    w: &[f64],
    m: usize,
    inp: &Inputs,
) -> CliResult<Vec<f64>> {
    let map = match kernel {
        Kernel::Gerf => DrawnMap::gerf(w.to_vec(), m, inp)?,
        _ => DrawnMap::projected(kernel, w.to_vec(), m, inp.dim)?,
    };
    attend(backend, &map, None, inp)
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
    DrawnMap::projected(kernel, w.to_vec(), m, d)?.with(job)
}

/// Lemma 2 (paper; DESIGN.md) MSE of `kernel`'s estimate of `exp(x·y)` with m **iid** rows,
/// for already-normalised x and y (for attention inputs pass `q/d^{1/4}`, `k/d^{1/4}`). With
/// z = x + y, Δ = x − y, SM = exp(x·y):
/// SM+: `e^{|z|²} SM² (1 − e^{−|z|²})/m`; SMhyp+: `½(1 − e^{−|z|²})` times that;
/// trig: `e^{|z|²} SM⁻² (1 − e^{−|Δ|²})²/(2m)`. `None` for the other kernels.
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
        Kernel::Relu | Kernel::Gerf | Kernel::DataAware => None,
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
