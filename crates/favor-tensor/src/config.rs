//! What a [`PerformerBuilder`](crate::PerformerBuilder) fixes: kernel, projection kind, redraw
//! policy, precision, backend, and the checked configuration they make up.

use std::str::FromStr;

use favor_core::{
    Activation, AnyFeatureMap, Compat, Generalized, HybridShape, HyperbolicSoftmax, PeerAttention,
    PositiveSoftmax, RowNorms, Scalar, TrigonometricSoftmax,
};

use crate::backend::{BackendOp, Real};
use crate::data_aware::SharedMap;
use crate::error::{Result, setup};
use crate::weights::Weights;

/// Default number of random features m (projection rows).
///
/// The paper's analysis asks for m = Θ(d·ln d) (266 at d = 64); 256 is close to that at the
/// usual head sizes, a multiple of every SIMD width, and the size our speed figures use.
pub const DEFAULT_FEATURES: usize = 256;
/// Default tokens per chunk of causal attention (see `favor_core::causal_chunked`).
pub const DEFAULT_CHUNK: usize = 64;

/// The attention kernel, i.e. which feature map φ is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Kernel {
    /// Positive random features (SM+), the Performer's softmax estimator. Default.
    #[default]
    Softmax,
    /// Hyperbolic positive features (SMhyp+): 2m features, lower variance for some inputs.
    Hyperbolic,
    /// Trigonometric features (SM): 2m features; unbiased but its denominator can cross
    /// zero, so outputs are not guaranteed finite. For comparison, not for production.
    Trigonometric,
    /// Generalized attention `relu(Wx) + ε` (Performer-ReLU). Not a softmax estimator.
    Relu,
    /// Generalized attention `elu(Wx) + 1 + ε`.
    EluPlusOne,
    /// Generalized attention `exp(Wx) + ε`, without the softmax map's norm correction.
    Exp,
    /// Generalized attention `|Wx| + ε`.
    Abs,
    /// Generalized attention `(Wx)² + ε`.
    Square,
    /// GERF / FAVOR++ (favor-core's `GerfSoftmax`): positive features with a parameter A,
    /// unbiased for softmax, lower variance than SM+. A is fitted on every forward call, per
    /// (batch, head), from that call's queries and the keys the head attends to (the visible
    /// ones under a key mask): `gerf_optimal_a(gerf_rho(q, k))`. Bidirectional only: a fit
    /// over the whole call would let later tokens change earlier outputs of causal attention
    /// (the causal option is [`calibrate`](crate::PerformerBuilder::calibrate)'s data-aware
    /// map), so causal layers and streams refuse it. Unbiased with Gaussian rows (the default
    /// χ-norm orthogonal, iid or simplex projections), not with `RowNorms::SqrtD`.
    Gerf,
    /// SADERF / FAVOR# (favor-core's `saderf_fit`, `SaderfScales`): GERF on `Ψq` and `Ψ⁻¹k`
    /// for a diagonal Ψ fitted with A on every forward call, per (batch, head), as
    /// [`Kernel::Gerf`] is. `q·k` is unchanged, so it stays positive and unbiased; Ψ evens out
    /// coordinates where keys and queries spread differently, which lowers the variance
    /// further there. Bidirectional only, as [`Kernel::Gerf`].
    Saderf,
}

impl Kernel {
    /// Whether φ estimates the softmax kernel (and so needs a random projection).
    pub fn is_softmax(self) -> bool {
        matches!(
            self,
            Kernel::Softmax
                | Kernel::Hyperbolic
                | Kernel::Trigonometric
                | Kernel::Gerf
                | Kernel::Saderf
        )
    }

    /// Whether φ's parameters are fitted from each call's queries and keys
    /// ([`Kernel::Gerf`], [`Kernel::Saderf`]): such kernels are bidirectional only.
    pub fn is_fitted(self) -> bool {
        matches!(self, Kernel::Gerf | Kernel::Saderf)
    }

    pub(crate) fn activation<T>(self) -> Option<Activation<T>> {
        match self {
            Kernel::Relu => Some(Activation::Relu),
            Kernel::EluPlusOne => Some(Activation::EluPlusOne),
            Kernel::Exp => Some(Activation::Exp),
            Kernel::Abs => Some(Activation::Abs),
            Kernel::Square => Some(Activation::Square),
            Kernel::Softmax
            | Kernel::Hyperbolic
            | Kernel::Trigonometric
            | Kernel::Gerf
            | Kernel::Saderf => None,
        }
    }
}

impl FromStr for Kernel {
    type Err = String;
    /// Parses `softmax` (or `positive`), `hyperbolic`, `trig` (or `trigonometric`), `relu`,
    /// `elu`, `exp`, `abs`, `square`, `gerf` (or `favor++`), `saderf` (or `favor#`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "softmax" | "positive" => Kernel::Softmax,
            "hyperbolic" => Kernel::Hyperbolic,
            "trig" | "trigonometric" => Kernel::Trigonometric,
            "relu" => Kernel::Relu,
            "elu" => Kernel::EluPlusOne,
            "exp" => Kernel::Exp,
            "abs" => Kernel::Abs,
            "square" => Kernel::Square,
            "gerf" | "favor++" => Kernel::Gerf,
            "saderf" | "favor#" => Kernel::Saderf,
            _ => {
                return Err(format!(
                    "unknown kernel {s:?} (expected softmax, hyperbolic, trig, relu, elu, exp, abs, square, gerf or saderf)"
                ));
            }
        })
    }
}

/// How the projection W is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    /// Orthogonal random features with the given row norms. Default: χ_d norms.
    Orthogonal(RowNorms),
    /// Independent Gaussian rows.
    Iid,
    /// Simplex random features (favor-core's `ProjectionKind::Simplex`): blocks of d rows
    /// spread as a regular simplex, lower variance than orthogonal rows for the positive
    /// softmax maps. Needs `head_dim ≥ 2` and `features` a multiple of `head_dim`.
    Simplex,
    /// Structured orthogonal random features (favor-core's `ProjectionKind::Sorf`): blocks
    /// `(1/d')·H·D₁·H·D₂·H·D₃` of Walsh–Hadamard matrices and random signs, d' the power of
    /// two at or above `head_dim` (≤ 512). Near-orthogonal error, rows of norm √d', slightly
    /// biased for softmax (the rows are not Gaussian).
    /// W is drawn densely; with
    /// [`structured_projection`](crate::PerformerBuilder::structured_projection) the softmax
    /// maps project with its signs instead (no W read per decoding step).
    Sorf,
    /// No projection: generalized kernels applied to the inputs themselves (m = d).
    None,
}

impl Default for Projection {
    fn default() -> Self {
        Projection::Orthogonal(RowNorms::Chi)
    }
}

/// When [`Performer::forward`](crate::Performer::forward) draws a fresh projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Redraw {
    /// Keep W until [`Performer::redraw`](crate::Performer::redraw) is called. Default.
    #[default]
    Never,
    /// Draw a new W before calls n, 2n, 3n, … (counting successful calls from 0): calls
    /// `0..n` use the initial W, calls `n..2n` the first redraw, and so on. Automatic redraw
    /// number i (counting from 0) uses the seed [`redraw_seed`]`(seed, i)`, so a run is
    /// reproducible from the builder's seed. An explicit [`Performer::redraw`](crate::Performer::redraw)`(s)` makes `s`
    /// the base seed and restarts i at 0, but does not move the schedule of calls.
    Every(u64),
}

/// The seed of the `i`-th automatic redraw from base `seed` (SplitMix64 of `seed + i·φ`).
pub fn redraw_seed(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The float type attention accumulates in. Inputs of any [`Element`](crate::Element) type are widened to
/// it a head at a time; outputs are `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 features, state and accumulation. Default; the SIMD fast path.
    #[default]
    F32,
    /// f64 throughout (about 2–4× slower): for very long streams or as a reference.
    F64,
}

/// Which kernels implementation runs the primitives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The best SIMD backend of this CPU ([`favor_simd::detected`]). Default.
    #[default]
    Detected,
    /// favor-core's scalar reference: slow, identical on every platform.
    Scalar,
}

/// Everything a [`PerformerBuilder`] fixes.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) heads: usize,
    /// Key/value heads: `heads` is a multiple of it.
    pub(crate) kv_heads: usize,
    pub(crate) dim: usize,
    pub(crate) value_dim: usize,
    /// Projection rows m (d without a projection).
    pub(crate) features: usize,
    pub(crate) kernel: Kernel,
    pub(crate) projection: Projection,
    /// The softmax maps project with a drawn SORF W's signs
    /// ([`PerformerBuilder::structured_projection`](crate::PerformerBuilder::structured_projection)).
    pub(crate) structured: bool,
    pub(crate) normalizer: bool,
    pub(crate) epsilon: f64,
    /// Whose conventions attention follows (favor-core's `compat` module).
    pub(crate) compat: Compat,
    pub(crate) causal: bool,
    pub(crate) chunk: usize,
    pub(crate) redraw: Redraw,
    pub(crate) precision: Precision,
    pub(crate) backend: Backend,
    pub(crate) parallel: bool,
    /// Hybrid attention: the exact window and sinks, when either was set.
    pub(crate) hybrid: Option<HybridShape>,
    /// A data-aware map, one per head, in place of the shared projection.
    pub(crate) data_aware: Option<SharedMap>,
}

impl Config {
    /// Feature dimension M: 2m for the hyperbolic and trigonometric maps, else m.
    pub(crate) fn feature_dim(&self) -> usize {
        match self.kernel {
            Kernel::Hyperbolic | Kernel::Trigonometric => 2 * self.features,
            _ => self.features,
        }
    }

    /// The feature map over `weights`, in `T`.
    pub(crate) fn map<'w, T: Real>(&self, weights: &'w Weights) -> Result<AnyFeatureMap<'w, T>> {
        let (w, wt) = T::weights(weights);
        let (m, d, n) = (self.features, self.dim, self.normalizer);
        // With `structured_projection`, a drawn SORF W's maps project with its signs: no W
        // read per token.
        let signs = if self.structured {
            T::signs(weights)
        } else {
            None
        };
        macro_rules! softmax {
            ($map:ident, $variant:ident) => {
                $map::new(w, m, d)
                    .and_then(|p| p.with_transposed_projection(wt))
                    .and_then(|p| match signs {
                        Some(s) => p.with_structured_projection(s),
                        None => Ok(p),
                    })
                    .map(|p| AnyFeatureMap::$variant(p.with_data_normalizer(n)))
            };
        }
        let map = match self.kernel {
            // The fitted kernels' map is made per call and head (exec.rs) over the same W; SM+
            // (GERF at A = 0, bit for bit) checks W at build.
            Kernel::Softmax | Kernel::Gerf | Kernel::Saderf => softmax!(PositiveSoftmax, Positive),
            Kernel::Hyperbolic => softmax!(HyperbolicSoftmax, Hyperbolic),
            Kernel::Trigonometric => softmax!(TrigonometricSoftmax, Trigonometric),
            generalized => {
                let f = generalized.activation().unwrap_or(Activation::Relu);
                let g = if self.projection == Projection::None {
                    Generalized::without_projection(d, f)
                } else {
                    Generalized::new(w, m, d, f).and_then(|g| g.with_transposed_projection(wt))
                };
                g.and_then(|g| g.with_epsilon(T::from_f64(self.epsilon)))
                    .map(|g| AnyFeatureMap::Generalized(g.with_data_normalizer(n)))
            }
        };
        map.map_err(setup)
    }

    /// The layer's attention as its [`compat`](Self::compat) peer computes it (favor-core's
    /// `PeerAttention`, causal as the layer is), over W.
    pub(crate) fn peer<'w, T: Real>(&self, weights: &'w Weights) -> Result<PeerAttention<'w, T>> {
        let (w, wt) = T::weights(weights);
        let (m, d) = (self.features, self.dim);
        let peer = match self.kernel.activation::<T>() {
            None => PeerAttention::softmax(self.compat, w, m, d),
            Some(f) if self.projection == Projection::None => {
                PeerAttention::generalized(self.compat, None, m, d, f)
            }
            Some(f) => PeerAttention::generalized(self.compat, Some(w), m, d, f),
        };
        peer.and_then(|p| match self.projection {
            Projection::None => Ok(p),
            _ => p.with_transposed_projection(wt),
        })
        .and_then(|p| p.with_epsilon(T::from_f64(self.epsilon)))
        .map(|p| p.with_data_normalizer(self.normalizer).causal(self.causal))
        .map_err(setup)
    }

    /// Runs `op` with the configured backend.
    pub(crate) fn with_backend<T: Real, O: BackendOp<T>>(&self, op: O) -> O::Output {
        match self.backend {
            Backend::Detected => T::with_detected(op),
            Backend::Scalar => op.with_kernels(&Scalar),
        }
    }
}
