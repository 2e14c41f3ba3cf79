//! What the study measures: the kernels, the projections, the [`Config`](super::Config) and the seeds.

use favor_core::{HybridShape, ProjectionKind, RowNorms};

use crate::args::{CliError, CliResult};

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
    /// GERF (FAVOR++): `D·exp(A|w|² + B w·x − |x|²/2)/√m`, A fitted per (r, seed) from the
    /// evaluated q and k with `gerf_optimal_a(gerf_rho(q, k))`.
    Gerf,
    /// The data-aware map (`DataAwareSoftmax`), calibrated by `favor_core::calibrate` on a
    /// separate draw of the same setting; keys shifted by its μ.
    DataAware,
}

impl Kernel {
    /// The paper's four kernels: the default, in report order.
    pub const ALL: [Kernel; 4] = [
        Kernel::Positive,
        Kernel::Hyperbolic,
        Kernel::Trigonometric,
        Kernel::Relu,
    ];

    /// The maps beyond the paper, in report order after [`ALL`](Self::ALL).
    pub const NEW: [Kernel; 2] = [Kernel::Gerf, Kernel::DataAware];

    /// Short display name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Positive => "SM+",
            Kernel::Hyperbolic => "SMhyp+",
            Kernel::Trigonometric => "trig",
            Kernel::Relu => "ReLU",
            Kernel::Gerf => "GERF",
            Kernel::DataAware => "data-aware",
        }
    }

    /// Identifier used in JSON and accepted by `--kernels`.
    pub fn id(self) -> &'static str {
        match self {
            Kernel::Positive => "positive",
            Kernel::Hyperbolic => "hyperbolic",
            Kernel::Trigonometric => "trigonometric",
            Kernel::Relu => "relu",
            Kernel::Gerf => "gerf",
            Kernel::DataAware => "data-aware",
        }
    }

    /// Whether the kernel's features are unbiased estimators of the softmax kernel (every
    /// kernel but ReLU; hybrid attention needs one).
    pub fn estimates_softmax(self) -> bool {
        !matches!(self, Kernel::Relu)
    }

    /// Whether paper Lemma 2 gives the MSE of the kernel's estimates (SM+, SMhyp+, trig):
    /// the kernels of the kernel-level table.
    pub fn has_lemma2(self) -> bool {
        matches!(
            self,
            Kernel::Positive | Kernel::Hyperbolic | Kernel::Trigonometric
        )
    }

    /// Features the map outputs from m projection rows (2m for SMhyp+ and trig): what an
    /// attention row costs.
    pub fn features(self, m: usize) -> usize {
        match self {
            Kernel::Hyperbolic | Kernel::Trigonometric => 2 * m,
            _ => m,
        }
    }

    /// Parses an [`id`](Self::id) or display name (case-insensitive; also `sm+`, `hyp`,
    /// `trig`, `favor++`, `calibrated`).
    pub fn parse(s: &str) -> Option<Kernel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "positive" | "sm+" | "pos" => Some(Kernel::Positive),
            "hyperbolic" | "smhyp+" | "hyp" => Some(Kernel::Hyperbolic),
            "trigonometric" | "trig" | "sm" => Some(Kernel::Trigonometric),
            "relu" => Some(Kernel::Relu),
            "gerf" | "favor++" => Some(Kernel::Gerf),
            "data-aware" | "data_aware" | "calibrated" => Some(Kernel::DataAware),
            _ => None,
        }
    }

    pub(super) fn tag(self) -> u64 {
        match self {
            Kernel::Positive => 1,
            Kernel::Hyperbolic => 2,
            Kernel::Trigonometric => 3,
            Kernel::Relu => 4,
            Kernel::Gerf => 5,
            Kernel::DataAware => 6,
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
    /// Simplex random features, χ(d) row norms (m must be a multiple of d).
    Simplex,
    /// Structured orthogonal random features (Hadamard blocks with random signs, rows of norm
    /// √d' for d' the power of two at or above d; d ≤ 512).
    Sorf,
}

impl Projection {
    /// The paper's two projections: the default, in report order.
    pub const ALL: [Projection; 2] = [Projection::Iid, Projection::Orthogonal];

    /// Every projection, in report order.
    pub const EVERY: [Projection; 4] = [
        Projection::Iid,
        Projection::Orthogonal,
        Projection::Simplex,
        Projection::Sorf,
    ];

    /// Short display name (`iid`, `orth`).
    pub fn name(self) -> &'static str {
        match self {
            Projection::Iid => "iid",
            Projection::Orthogonal => "orth",
            Projection::Simplex => "simplex",
            Projection::Sorf => "sorf",
        }
    }

    /// Identifier used in JSON (`iid`, `orthogonal`).
    pub fn id(self) -> &'static str {
        match self {
            Projection::Iid => "iid",
            Projection::Orthogonal => "orthogonal",
            Projection::Simplex => "simplex",
            Projection::Sorf => "sorf",
        }
    }

    /// The favor-core projection kind.
    pub fn kind(self) -> ProjectionKind {
        match self {
            Projection::Iid => ProjectionKind::Iid,
            Projection::Orthogonal => ProjectionKind::Orthogonal(RowNorms::Chi),
            Projection::Simplex => ProjectionKind::Simplex,
            Projection::Sorf => ProjectionKind::Sorf,
        }
    }

    pub(super) fn tag(self) -> u64 {
        match self {
            Projection::Iid => 1,
            Projection::Orthogonal => 2,
            Projection::Simplex => 3,
            Projection::Sorf => 4,
        }
    }
}

/// The input model: how one (r, seed)'s queries, keys and values are drawn (module docs,
/// "Settings").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    /// Independent Gaussian directions at norm r (paper Fig. 4 plus norms): no locality.
    Iid,
    /// Directions from an AR(1) sequence, so nearby positions attend to each other, and an
    /// optional attention sink at position 0.
    Local(Local),
}

impl Setting {
    /// Identifier used in JSON and accepted by `--setting` (`iid`, `local`).
    pub fn id(self) -> &'static str {
        match self {
            Setting::Iid => "iid",
            Setting::Local(_) => "local",
        }
    }
}

/// The parameters of [`Setting::Local`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Local {
    /// a, the AR(1) coefficient of the latent directions: neighbours at distance δ have
    /// per-coordinate correlation a^δ. In [0, 1).
    pub corr: f64,
    /// `Some(S)`: position 0 is a sink whose logit `q_i·k_0/√d` is S for every query;
    /// `None`: no sink.
    pub sink_logit: Option<f64>,
}

impl Default for Local {
    /// a = 0.9, a sink of logit 8 (e⁸ ≈ 3000: at L = 4096 and r = 4 comparable, by a rough
    /// estimate, to all other keys together; at r = 8 the keys near the diagonal outweigh it).
    fn default() -> Self {
        Self {
            corr: 0.9,
            sink_logit: Some(8.0),
        }
    }
}

/// What to measure. [`Config::default`] is the setting (paper Fig. 4 plus norms);
/// [`Config::local`] the local-structure study.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The input model.
    pub setting: Setting,
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
    /// Hybrid windows w: every (kernel, projection) runs as plain FAVOR+ and, for each w and
    /// each entry of [`sinks`](Self::sinks), as hybrid attention. Empty: plain FAVOR+ only.
    pub windows: Vec<usize>,
    /// Sink counts of the hybrid rows (ignored without windows).
    pub sinks: Vec<usize>,
    /// Worker threads (seeds run in parallel); at least 1.
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            setting: Setting::Iid,
            len: 4096,
            dim: 16,
            norms: vec![1.0, 2.0, 4.0],
            features: vec![16, 32, 64, 128, 256, 512],
            seeds: 15,
            pairs: 256,
            kernels: Kernel::ALL.to_vec(),
            projections: Projection::ALL.to_vec(),
            windows: Vec::new(),
            sinks: vec![0],
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl Config {
    /// The local-structure study's defaults (`favor fidelity --setting local`): the AR(1)
    /// setting with a sink ([`Local::default`]) at r ∈ {4, 8}, SM+, GERF and the data-aware
    /// map on orthogonal and simplex projections, m ∈ {16, 64, 256}, plain and hybrid with
    /// w ∈ {8, 32} and 0 or 1 sinks; no kernel-level table.
    pub fn local() -> Self {
        Self {
            setting: Setting::Local(Local::default()),
            norms: vec![4.0, 8.0],
            features: vec![16, 64, 256],
            pairs: 0,
            kernels: vec![Kernel::Positive, Kernel::Gerf, Kernel::DataAware],
            projections: vec![Projection::Orthogonal, Projection::Simplex],
            windows: vec![8, 32],
            sinks: vec![0, 1],
            ..Self::default()
        }
    }

    /// The defaults of `setting`'s study: [`Config::default`] or [`Config::local`] (with
    /// `setting`'s parameters).
    pub fn for_setting(setting: Setting) -> Self {
        match setting {
            Setting::Iid => Self::default(),
            Setting::Local(_) => Self {
                setting,
                ..Self::local()
            },
        }
    }

    /// The attention each (kernel, projection, m) runs, in report order: plain FAVOR+
    /// (`None`), then hybrid attention for every window and sink count.
    pub fn hybrids(&self) -> Vec<Option<HybridShape>> {
        let mut out = vec![None];
        for &window in &self.windows {
            for &sinks in &self.sinks {
                out.push(Some(HybridShape { window, sinks }));
            }
        }
        out
    }

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
        if self.projections.contains(&Projection::Simplex)
            && (self.dim < 2 || self.features.iter().any(|m| m % self.dim != 0))
        {
            return bad("--projections simplex needs --dim ≥ 2 and every m a multiple of d");
        }
        if self.projections.contains(&Projection::Sorf) {
            if self.dim > 512 {
                return bad("--projections sorf needs --dim ≤ 512");
            }
            if self.kernels.contains(&Kernel::DataAware) {
                return bad(
                    "--projections sorf cannot draw a data-aware map: its rows are not Gaussian",
                );
            }
        }
        if !self.windows.is_empty() {
            if self.kernels.contains(&Kernel::Relu) {
                return bad("--windows needs softmax kernels: ReLU cannot be hybrid");
            }
            if self.sinks.is_empty() {
                return bad("--sinks needs at least one value with --windows");
            }
        }
        if let Setting::Local(p) = self.setting {
            if !(0.0..1.0).contains(&p.corr) {
                return bad("--corr must be in [0, 1)");
            }
            if p.sink_logit.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
                return bad("--sink-logit must be a finite number ≥ 0");
            }
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

/// Stream seed of the calibration draw of seed `s` (`2⁶³ + 2⁶¹ + s`): the same setting as
/// the inputs, drawn independently, on which the data-aware map is fitted.
pub fn calibration_seed(s: usize) -> u64 {
    (1 << 63) | (1 << 61) | s as u64
}

/// Projection seed for seed `s`, a kernel, a projection and `m` rows:
/// `s·2³² + kernel·2²⁴ + projection·2¹⁶ + m` with kernel tags SM+ = 1, SMhyp+ = 2, trig = 3,
/// ReLU = 4, GERF = 5, data-aware = 6, projection tags iid = 1, orthogonal = 2, simplex = 3,
/// SORF = 4
/// (m < 2¹⁶, s < 2³²: injective, and disjoint from the input, pair and calibration streams,
/// whose top bit is set). Hybrid rows reuse the projection of the plain row.
pub fn projection_seed(s: usize, kernel: Kernel, proj: Projection, m: usize) -> u64 {
    ((s as u64) << 32) | (kernel.tag() << 24) | (proj.tag() << 16) | m as u64
}
