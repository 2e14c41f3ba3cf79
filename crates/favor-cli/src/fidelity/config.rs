//! What the study measures: the kernels, the projections, the [`Config`](super::Config) and the seeds.

use favor_core::{ProjectionKind, RowNorms};

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

    pub(super) fn tag(self) -> u64 {
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

    pub(super) fn tag(self) -> u64 {
        match self {
            Projection::Iid => 1,
            Projection::Orthogonal => 2,
        }
    }
}

/// What to measure. [`Config::default`] is the setting (paper Fig. 4 plus norms).
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
