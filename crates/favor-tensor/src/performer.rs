//! The `Performer`: a configured multi-head FAVOR+ attention layer over tensors.

use std::any::TypeId;
use std::str::FromStr;

use favor_core::{
    Activation, Float, Generalized, HyperbolicSoftmax, Kernels, Options, PositiveSoftmax,
    ProjectionKind, RowNorms, Scalar, Shape, TrigonometricSoftmax,
};

use crate::alloc::{self, try_collect, try_resize, try_zeros};
use crate::error::{Error, Result, setup};
use crate::stream::Stream;
use crate::tensor::{Element, Tensor, TensorView};
use favor_core::AnyFeatureMap;

/// Default number of random features m (projection rows).
///
/// The paper's analysis asks for m = Θ(d·ln d) (266 at d = 64); 256 is close to that at the
/// usual head sizes, a multiple of every SIMD width, and the size our speed figures use.
pub const DEFAULT_FEATURES: usize = 256;
/// Default tokens per chunk of causal attention (see `favor_core::causal_chunked`).
pub const DEFAULT_CHUNK: usize = 64;
/// Rows per block of bidirectional attention: a block's features stay in L2.
const BIDIRECTIONAL_BLOCK: usize = 256;

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
}

impl Kernel {
    /// Whether φ estimates the softmax kernel (and so needs a random projection).
    pub fn is_softmax(self) -> bool {
        matches!(
            self,
            Kernel::Softmax | Kernel::Hyperbolic | Kernel::Trigonometric
        )
    }

    fn activation<T>(self) -> Option<Activation<T>> {
        match self {
            Kernel::Relu => Some(Activation::Relu),
            Kernel::EluPlusOne => Some(Activation::EluPlusOne),
            Kernel::Exp => Some(Activation::Exp),
            Kernel::Abs => Some(Activation::Abs),
            Kernel::Square => Some(Activation::Square),
            Kernel::Softmax | Kernel::Hyperbolic | Kernel::Trigonometric => None,
        }
    }
}

impl FromStr for Kernel {
    type Err = String;
    /// Parses `softmax` (or `positive`), `hyperbolic`, `trig` (or `trigonometric`), `relu`,
    /// `elu`, `exp`, `abs`, `square`.
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
            _ => {
                return Err(format!(
                    "unknown kernel {s:?} (expected softmax, hyperbolic, trig, relu, elu, exp, abs or square)"
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
    /// No projection: generalized kernels applied to the inputs themselves (m = d).
    None,
}

impl Default for Projection {
    fn default() -> Self {
        Projection::Orthogonal(RowNorms::Chi)
    }
}

/// When [`Performer::forward`] draws a fresh projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Redraw {
    /// Keep W until [`Performer::redraw`] is called. Default.
    #[default]
    Never,
    /// Draw a new W before calls n, 2n, 3n, … (counting successful calls from 0): calls
    /// `0..n` use the initial W, calls `n..2n` the first redraw, and so on. Automatic redraw
    /// number i (counting from 0) uses the seed [`redraw_seed`]`(seed, i)`, so a run is
    /// reproducible from the builder's seed. An explicit [`Performer::redraw`]`(s)` makes `s`
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

/// The float type attention accumulates in. Inputs of any [`Element`] type are widened to
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

/// A projection matrix in both precisions, with transposes (empty without a projection).
#[derive(Debug, Clone, Default)]
pub(crate) struct Weights {
    w32: Vec<f32>,
    wt32: Vec<f32>,
    w64: Vec<f64>,
    wt64: Vec<f64>,
    /// Largest row norm of W (1 without a projection: φ then sees x itself).
    pub(crate) row_norm: f64,
}

impl Weights {
    /// All four buffers of an `n`-element projection, zeroed: allocated before anything is
    /// computed, so a size beyond the memory available fails at once (drawing a large
    /// orthogonal W takes minutes).
    fn alloc(n: usize) -> Result<Self> {
        // The f64 buffers first: the largest is the one a too-large size fails on.
        Ok(Self {
            w64: try_zeros("projection", n)?,
            wt64: try_zeros("projection", n)?,
            w32: try_zeros("projection", n)?,
            wt32: try_zeros("projection", n)?,
            row_norm: 0.0,
        })
    }

    /// From an f64 matrix; the f32 copy is its rounding, so exporting it and loading it back
    /// reproduces the same f32 attention bit for bit.
    fn from_f64(w64: Vec<f64>, m: usize, d: usize) -> Result<Self> {
        let n = w64.len();
        Self {
            wt64: try_zeros("projection", n)?,
            w32: try_zeros("projection", n)?,
            wt32: try_zeros("projection", n)?,
            w64,
            row_norm: 0.0,
        }
        .complete(m, d)
    }

    /// Fills the f32 copy, both transposes and the row norm from `w64`.
    fn complete(mut self, m: usize, d: usize) -> Result<Self> {
        for (a, &b) in self.w32.iter_mut().zip(&self.w64) {
            *a = b as f32;
        }
        self.row_norm = self
            .w64
            .chunks_exact(d.max(1))
            .map(crate::range::norm)
            .fold(0.0, f64::max);
        favor_core::transpose_projection(&self.w64, m, d, &mut self.wt64).map_err(setup)?;
        favor_core::transpose_projection(&self.w32, m, d, &mut self.wt32).map_err(setup)?;
        Ok(self)
    }

    fn generate(kind: Projection, seed: u64, m: usize, d: usize) -> Result<Self> {
        let kind = match kind {
            Projection::Orthogonal(norms) => ProjectionKind::Orthogonal(norms),
            Projection::Iid => ProjectionKind::Iid,
            Projection::None => {
                return Ok(Self {
                    row_norm: 1.0,
                    ..Self::default()
                });
            }
        };
        let n = alloc::len("projection", favor_core::projection_len(m, d))?;
        let mut w = Self::alloc(n)?;
        favor_core::projection(kind, seed, m, d, &mut w.w64).map_err(setup)?;
        w.complete(m, d)
    }
}

/// The float types attention runs in, with their copy of the weights.
pub(crate) trait Real: Float {
    fn weights(w: &Weights) -> (&[Self], &[Self]);
    /// Runs `op` with the detected SIMD backend (which implements `Kernels` for each `Real`).
    fn with_detected<O: BackendOp<Self>>(op: O) -> O::Output;
}
impl Real for f32 {
    fn weights(w: &Weights) -> (&[f32], &[f32]) {
        (&w.w32, &w.wt32)
    }
    fn with_detected<O: BackendOp<f32>>(op: O) -> O::Output {
        op.run(&favor_simd::detected())
    }
}
impl Real for f64 {
    fn weights(w: &Weights) -> (&[f64], &[f64]) {
        (&w.w64, &w.wt64)
    }
    fn with_detected<O: BackendOp<f64>>(op: O) -> O::Output {
        op.run(&favor_simd::detected())
    }
}

/// Everything a [`PerformerBuilder`] fixes.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) heads: usize,
    pub(crate) dim: usize,
    pub(crate) value_dim: usize,
    /// Projection rows m (d without a projection).
    pub(crate) features: usize,
    pub(crate) kernel: Kernel,
    pub(crate) projection: Projection,
    pub(crate) normalizer: bool,
    pub(crate) epsilon: f64,
    pub(crate) causal: bool,
    pub(crate) chunk: usize,
    pub(crate) redraw: Redraw,
    pub(crate) precision: Precision,
    pub(crate) backend: Backend,
    pub(crate) parallel: bool,
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
        let map = match self.kernel {
            Kernel::Softmax => PositiveSoftmax::new(w, m, d)
                .and_then(|p| p.with_transposed_projection(wt))
                .map(|p| AnyFeatureMap::Positive(p.with_data_normalizer(n))),
            Kernel::Hyperbolic => HyperbolicSoftmax::new(w, m, d)
                .and_then(|p| p.with_transposed_projection(wt))
                .map(|p| AnyFeatureMap::Hyperbolic(p.with_data_normalizer(n))),
            Kernel::Trigonometric => TrigonometricSoftmax::new(w, m, d)
                .and_then(|p| p.with_transposed_projection(wt))
                .map(|p| AnyFeatureMap::Trigonometric(p.with_data_normalizer(n))),
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

    /// Runs `op` with the configured backend.
    pub(crate) fn with_backend<T: Real, O: BackendOp<T>>(&self, op: O) -> O::Output {
        match self.backend {
            Backend::Detected => T::with_detected(op),
            Backend::Scalar => op.run(&Scalar),
        }
    }
}

/// An operation generic over the kernels backend (a closure cannot be generic).
pub(crate) trait BackendOp<T: Float> {
    type Output;
    fn run<K: Kernels<T> + Sync + Copy>(self, kernels: &K) -> Self::Output;
}

/// Builds a [`Performer`]. Only the head dimension is required; see each method for its
/// default.
#[derive(Debug, Clone)]
pub struct PerformerBuilder {
    heads: usize,
    dim: usize,
    value_dim: Option<usize>,
    features: Option<usize>,
    kernel: Kernel,
    projection: Projection,
    /// Rows and the matrix in f64 (or why it could not be copied, reported by `build`).
    matrix: Option<(usize, Result<Vec<f64>>)>,
    seed: u64,
    normalizer: Option<bool>,
    epsilon: f64,
    causal: bool,
    chunk: usize,
    redraw: Redraw,
    precision: Precision,
    backend: Backend,
    parallel: bool,
}

impl PerformerBuilder {
    /// Number of heads H (default 1).
    pub fn heads(mut self, heads: usize) -> Self {
        self.heads = heads;
        self
    }
    /// Value dimension dv (default: the head dimension).
    pub fn value_dim(mut self, value_dim: usize) -> Self {
        self.value_dim = Some(value_dim);
        self
    }
    /// Random features m, i.e. projection rows (default [`DEFAULT_FEATURES`]). The
    /// hyperbolic and trigonometric maps output 2m features.
    pub fn features(mut self, m: usize) -> Self {
        self.features = Some(m);
        self
    }
    /// The kernel (default [`Kernel::Softmax`]).
    pub fn kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }
    /// How W is drawn (default orthogonal with χ row norms).
    pub fn projection(mut self, projection: Projection) -> Self {
        self.projection = projection;
        self
    }
    /// Uses this `rows × dim` matrix (row-major) as W, exactly as given (no scaling), e.g.
    /// the one a model was trained with. It fixes m = `rows`.
    pub fn projection_matrix<E: Element>(mut self, rows: usize, w: &[E]) -> Self {
        let copy = try_collect("projection", w.iter().map(|&x| x.to_f64()));
        self.matrix = Some((rows, copy));
        self
    }
    /// Seed of the projection (default 0). Heads share one W, as in the paper's code.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// The d^(-1/4) data normaliser on q and k (default: on for the softmax kernels, which
    /// then estimate softmax(q·kᵀ/√d); off for generalized kernels).
    pub fn data_normalizer(mut self, on: bool) -> Self {
        self.normalizer = Some(on);
        self
    }
    /// ε added to generalized features (default 10⁻³, as in the paper's code).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }
    /// Causal (unidirectional) attention: query i sees keys 0..=i (default off).
    pub fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }
    /// Tokens per chunk of causal attention (default [`DEFAULT_CHUNK`]).
    pub fn chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk;
        self
    }
    /// When to draw a new projection (default [`Redraw::Never`]).
    pub fn redraw(mut self, redraw: Redraw) -> Self {
        self.redraw = redraw;
        self
    }
    /// Accumulation precision (default [`Precision::F32`]).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// Kernels backend (default [`Backend::Detected`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }
    /// Run (batch, head) pairs in parallel on rayon's pool (default: on with the `parallel`
    /// feature). Results are bit-identical either way: each head is computed independently.
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    /// Checks the configuration and draws (or takes) the projection.
    pub fn build(self) -> Result<Performer> {
        let bad = |s: &str| Err(Error::Config(s.to_string()));
        if self.dim == 0 || self.heads == 0 || self.chunk == 0 {
            return bad("dim, heads and chunk must be positive");
        }
        let value_dim = self.value_dim.unwrap_or(self.dim);
        if value_dim == 0 {
            return bad("value_dim must be positive");
        }
        if self.parallel && !cfg!(feature = "parallel") {
            return bad("parallel heads need favor-tensor's `parallel` feature");
        }
        if self.redraw == Redraw::Every(0) {
            return bad("Redraw::Every(n) needs n > 0");
        }
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return bad("epsilon must be finite and >= 0");
        }
        let none = self.projection == Projection::None;
        if none && self.kernel.is_softmax() {
            return bad("the softmax kernels need a random projection");
        }
        let features = match (&self.matrix, none) {
            (Some(_), true) => return bad("a projection matrix contradicts Projection::None"),
            (Some((_, Err(e))), false) => return Err(e.clone()),
            (Some((rows, Ok(w))), false) => {
                if self.features.is_some_and(|m| m != *rows) {
                    return bad("features disagrees with the projection matrix's rows");
                }
                if matches!(self.redraw, Redraw::Every(_)) {
                    return bad("Redraw::Every would replace the given projection matrix");
                }
                if Some(w.len()) != rows.checked_mul(self.dim) {
                    return Err(Error::DataLength {
                        tensor: "projection",
                        shape: vec![*rows, self.dim],
                        len: w.len(),
                    });
                }
                if *rows == 0 {
                    return Err(Error::Shape {
                        tensor: "projection",
                        expected: format!("[m, {}] with m > 0", self.dim),
                        got: vec![0, self.dim],
                    });
                }
                *rows
            }
            (None, true) => {
                if self.features.is_some_and(|m| m != self.dim) {
                    return bad("without a projection the feature count is the head dimension");
                }
                self.dim
            }
            (None, false) => self.features.unwrap_or(DEFAULT_FEATURES),
        };
        if features == 0 {
            return bad("features must be positive");
        }
        let cfg = Config {
            heads: self.heads,
            dim: self.dim,
            value_dim,
            features,
            kernel: self.kernel,
            projection: self.projection,
            normalizer: self.normalizer.unwrap_or(self.kernel.is_softmax()),
            epsilon: self.epsilon,
            causal: self.causal,
            chunk: self.chunk,
            redraw: self.redraw,
            precision: self.precision,
            backend: self.backend,
            parallel: self.parallel,
        };
        let weights = match self.matrix {
            Some((rows, w)) => Weights::from_f64(w?, rows, self.dim)?,
            None => Weights::generate(self.projection, self.seed, features, self.dim)?,
        };
        // Builds both maps once so a bad matrix (NaN, ...) fails here, not on first use.
        cfg.map::<f32>(&weights)?;
        cfg.map::<f64>(&weights)?;
        Ok(Performer {
            cfg,
            weights,
            seed: self.seed,
            calls: 0,
            redraws: 0,
        })
    }
}

/// Multi-head FAVOR+ attention over `[batch, heads, seq, dim]` tensors.
///
/// # Supported input range
/// Inputs must be finite in the compute type, and large values are refused with
/// [`Error::OutOfRange`] before anything runs, where a projection or a sum could overflow:
/// every q and k row needs `|x|² ≤ MAX/4` and `|W|·|x| ≤ MAX/4` (`|W|` the largest row norm
/// of the projection, MAX the largest finite f32 or f64), and values need
/// `M·L·f²·max|v| ≤ MAX/4` (M features, L keys, f = 1 for the softmax kernels and `exp`,
/// `|W|·|x| + 1 + ε` for ReLU, ELU+1 and abs, `(|W|·|x|)² + ε` for square). Within it,
/// outputs are finite (the trigonometric kernel excepted: its denominator can cross zero).
///
/// ```
/// use favor_tensor::{Performer, TensorView};
/// let (b, h, l, d) = (2, 4, 100, 16);
/// let x: Vec<f32> = (0..b * h * l * d).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5)).collect();
/// let x = TensorView::new([b, h, l, d], &x).unwrap();
/// let mut attn = Performer::builder(d).heads(h).features(64).causal(true).build().unwrap();
/// let out = attn.forward(x, x, x).unwrap();
/// assert_eq!(out.shape(), [b, h, l, d]);
/// // The first token attends only to itself.
/// assert!((out.data()[0] - x.data()[0]).abs() < 1e-5);
/// ```
#[derive(Debug, Clone)]
pub struct Performer {
    pub(crate) cfg: Config,
    pub(crate) weights: Weights,
    seed: u64,
    calls: u64,
    redraws: u64,
}

impl Performer {
    /// A builder for heads of query/key dimension `dim`.
    pub fn builder(dim: usize) -> PerformerBuilder {
        PerformerBuilder {
            heads: 1,
            dim,
            value_dim: None,
            features: None,
            kernel: Kernel::default(),
            projection: Projection::default(),
            matrix: None,
            seed: 0,
            normalizer: None,
            epsilon: 1e-3,
            causal: false,
            chunk: DEFAULT_CHUNK,
            redraw: Redraw::Never,
            precision: Precision::F32,
            backend: Backend::Detected,
            parallel: cfg!(feature = "parallel"),
        }
    }

    /// Heads H.
    pub fn heads(&self) -> usize {
        self.cfg.heads
    }
    /// Query/key dimension d.
    pub fn dim(&self) -> usize {
        self.cfg.dim
    }
    /// Value dimension dv.
    pub fn value_dim(&self) -> usize {
        self.cfg.value_dim
    }
    /// Projection rows m (d without a projection).
    pub fn features(&self) -> usize {
        self.cfg.features
    }
    /// The kernel.
    pub fn kernel(&self) -> Kernel {
        self.cfg.kernel
    }
    /// Whether attention is causal.
    pub fn is_causal(&self) -> bool {
        self.cfg.causal
    }
    /// Calls of [`forward`](Self::forward) that succeeded.
    pub fn calls(&self) -> u64 {
        self.calls
    }
    /// The seed the current projection was drawn from (the builder's, or the last
    /// [`redraw`](Self::redraw)'s; automatic redraws derive from it).
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The projection W in use with [`Precision::F32`] (`m × d`, row-major; empty without a
    /// projection): what `favor projection` exports.
    pub fn projection_f32(&self) -> &[f32] {
        &self.weights.w32
    }
    /// The projection W in use with [`Precision::F64`].
    pub fn projection_f64(&self) -> &[f64] {
        &self.weights.w64
    }
    /// Name of the kernels backend that runs (e.g. `"avx512"`).
    pub fn backend_name(&self) -> &'static str {
        struct Name;
        impl BackendOp<f32> for Name {
            type Output = &'static str;
            fn run<K: Kernels<f32> + Sync + Copy>(self, k: &K) -> &'static str {
                k.name()
            }
        }
        self.cfg.with_backend(Name)
    }

    /// Draws a new projection from `seed` (of the configured kind) and makes `seed` the base
    /// of later automatic redraws. Replaces a matrix given to the builder.
    pub fn redraw(&mut self, seed: u64) -> Result<()> {
        if self.cfg.projection == Projection::None {
            return Err(Error::Config("there is no projection to redraw".into()));
        }
        self.weights =
            Weights::generate(self.cfg.projection, seed, self.cfg.features, self.cfg.dim)?;
        self.seed = seed;
        self.redraws = 0;
        Ok(())
    }

    /// Attention of `q` (`[B, H, Lq, d]`) over `k` (`[B, H, Lk, d]`) and `v` (`[B, H, Lk, dv]`):
    /// a `[B, H, Lq, dv]` tensor. Causal attention needs `Lq == Lk`.
    pub fn forward<E: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
    ) -> Result<Tensor> {
        self.forward_inner(q, k, v, None)
    }

    /// [`forward`](Self::forward) with a key padding mask of `B × Lk` flags (row-major):
    /// `false` removes that key from every query of that batch element. A query with no
    /// visible key outputs zeros.
    pub fn forward_masked<E: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
        key_mask: &[bool],
    ) -> Result<Tensor> {
        self.forward_inner(q, k, v, Some(key_mask))
    }

    fn forward_inner<E: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
        mask: Option<&[bool]>,
    ) -> Result<Tensor> {
        let io = Io::check(&self.cfg, q, k, v, mask)?;
        let due = match self.cfg.redraw {
            Redraw::Every(n) => self.calls > 0 && self.calls.is_multiple_of(n),
            Redraw::Never => false,
        };
        let fresh = if due {
            let seed = redraw_seed(self.seed, self.redraws);
            Some(Weights::generate(
                self.cfg.projection,
                seed,
                self.cfg.features,
                self.cfg.dim,
            )?)
        } else {
            None
        };
        let weights = fresh.as_ref().unwrap_or(&self.weights);
        let keys = io.shape.keys as u64;
        crate::range::check(
            &self.cfg,
            weights.row_norm,
            self.cfg.feature_dim(),
            &q,
            &k,
            &v,
            keys,
        )?;
        let out = io.run(&self.cfg, weights)?;
        if let Some(w) = fresh {
            self.weights = w;
            self.redraws += 1;
        }
        self.calls += 1;
        Ok(out)
    }

    /// A causal decoding stream for `batch` sequences over this layer's projection; see
    /// [`Stream`]. The layer is borrowed, so its projection cannot change under a live stream
    /// (clone the `Performer` to keep training one copy).
    pub fn stream(&self, batch: usize) -> Result<Stream<'_>> {
        Stream::new(self, batch)
    }
}

/// The inputs of one forward call, with their checked shape.
struct Io<'a, E> {
    q: TensorView<'a, E>,
    k: TensorView<'a, E>,
    v: TensorView<'a, E>,
    mask: Option<&'a [bool]>,
    batch: usize,
    shape: Shape,
}

/// Checks that `t` is `[batch, heads, len, dim]` where each `Some` must match.
pub(crate) fn check_shape<E>(
    tensor: &'static str,
    t: &TensorView<'_, E>,
    want: [Option<usize>; 4],
) -> Result<()>
where
    E: Element,
{
    let got = t.shape();
    let ok = want.iter().zip(got).all(|(w, g)| w.is_none_or(|w| w == g));
    let nonempty = got.iter().all(|&n| n > 0);
    if ok && nonempty {
        return Ok(());
    }
    let name = ["batch", "heads", "seq", "dim"];
    let parts: Vec<String> = want
        .iter()
        .zip(name)
        .map(|(w, n)| w.map_or_else(|| n.to_string(), |w| w.to_string()))
        .collect();
    let mut expected = format!("[{}]", parts.join(", "));
    if ok {
        expected.push_str(" with no empty dimension");
    }
    Err(Error::Shape {
        tensor,
        expected,
        got: got.to_vec(),
    })
}

impl<'a, E: Element> Io<'a, E> {
    fn check(
        cfg: &Config,
        q: TensorView<'a, E>,
        k: TensorView<'a, E>,
        v: TensorView<'a, E>,
        mask: Option<&'a [bool]>,
    ) -> Result<Self> {
        let (h, d, dv) = (Some(cfg.heads), Some(cfg.dim), Some(cfg.value_dim));
        check_shape("q", &q, [None, h, None, d])?;
        let [b, _, lq, _] = q.shape();
        let lk = if cfg.causal { Some(lq) } else { None };
        check_shape("k", &k, [Some(b), h, lk, d])?;
        let lk = k.shape()[2];
        check_shape("v", &v, [Some(b), h, Some(lk), dv])?;
        if let Some(m) = mask
            && Some(m.len()) != b.checked_mul(lk)
        {
            return Err(Error::Shape {
                tensor: "key_mask",
                expected: format!("[{b}, {lk}] (batch × keys)"),
                got: vec![m.len()],
            });
        }
        Ok(Self {
            q,
            k,
            v,
            mask,
            batch: b,
            shape: Shape {
                queries: lq,
                keys: lk,
                dim: cfg.dim,
                value_dim: cfg.value_dim,
            },
        })
    }

    fn run(&self, cfg: &Config, weights: &Weights) -> Result<Tensor> {
        let s = self.shape;
        let mut out = Tensor::zeros_for("output", [self.batch, cfg.heads, s.queries, s.value_dim])?;
        match cfg.precision {
            Precision::F32 => self.run_in::<f32>(cfg, weights, out.data_mut())?,
            Precision::F64 => self.run_in::<f64>(cfg, weights, out.data_mut())?,
        }
        Ok(out)
    }

    fn run_in<T: Real>(&self, cfg: &Config, weights: &Weights, out: &mut [f32]) -> Result<()> {
        let map = cfg.map::<T>(weights)?;
        cfg.with_backend(Heads {
            io: self,
            cfg,
            map: &map,
            out,
        })
    }
}

/// Every (batch, head) pair of one forward call, run with one backend.
struct Heads<'r, 'a, 'w, E, T> {
    io: &'r Io<'a, E>,
    cfg: &'r Config,
    map: &'r AnyFeatureMap<'w, T>,
    out: &'r mut [f32],
}

impl<E: Element, T: Real> BackendOp<T> for Heads<'_, '_, '_, E, T> {
    type Output = Result<()>;
    fn run<K: Kernels<T> + Sync + Copy>(self, kernels: &K) -> Result<()> {
        let (io, cfg, map) = (self.io, self.cfg, self.map);
        let per_head = io.shape.queries * io.shape.value_dim;
        let one = |(i, out): (usize, &mut [f32])| -> Result<()> {
            let (b, h) = (i / cfg.heads, i % cfg.heads);
            let mask = io
                .mask
                .map(|m| &m[b * io.shape.keys..(b + 1) * io.shape.keys]);
            let heads = HeadIo {
                q: io.q.head(b, h),
                k: io.k.head(b, h),
                v: io.v.head(b, h),
                mask,
                shape: io.shape,
            };
            heads.attend(kernels, map, cfg, out, |source| Error::Core {
                batch: b,
                head: h,
                source,
            })
        };
        let results: Vec<Result<()>> = parallel_map(cfg.parallel, self.out, per_head, one);
        results.into_iter().collect()
    }
}

/// Applies `f` to each `chunk`-sized piece of `out` with its index, on rayon's pool when
/// `parallel` (and the feature) is on; results in index order either way.
pub(crate) fn parallel_map<R: Send>(
    parallel: bool,
    out: &mut [f32],
    chunk: usize,
    f: impl Fn((usize, &mut [f32])) -> R + Sync + Send,
) -> Vec<R> {
    #[cfg(feature = "parallel")]
    if parallel {
        use rayon::prelude::*;
        return out.par_chunks_mut(chunk).enumerate().map(f).collect();
    }
    let _ = parallel;
    out.chunks_mut(chunk).enumerate().map(f).collect()
}

/// How many calls of `f` [`parallel_map`] can run at once over `tasks` pieces: buffers for
/// that many can be allocated before any of them starts.
pub(crate) fn concurrency(parallel: bool, tasks: usize) -> usize {
    #[cfg(feature = "parallel")]
    if parallel {
        return rayon::current_num_threads().clamp(1, tasks.max(1));
    }
    let _ = parallel;
    1
}

/// Whether [`widen`] from `E` to `T` (or [`narrow_target`] for `E` = f32) needs a buffer.
pub(crate) fn converts<E: 'static, T: 'static>() -> bool {
    TypeId::of::<E>() != TypeId::of::<T>()
}

/// One head's slices.
struct HeadIo<'a, E> {
    q: &'a [E],
    k: &'a [E],
    v: &'a [E],
    mask: Option<&'a [bool]>,
    shape: Shape,
}

impl<E: Element> HeadIo<'_, E> {
    /// One head's attention into `out`; favor-core's errors go through `core` (which
    /// names the head).
    fn attend<T: Real, K: Kernels<T>>(
        &self,
        kernels: &K,
        map: &AnyFeatureMap<'_, T>,
        cfg: &Config,
        out: &mut [f32],
        core: impl Fn(favor_core::Error) -> Error,
    ) -> Result<()> {
        let (mut tq, mut tk, mut tv) = (Vec::new(), Vec::new(), Vec::new());
        let (q, k, v) = (
            widen(self.q, &mut tq)?,
            widen(self.k, &mut tk)?,
            widen(self.v, &mut tv)?,
        );
        let m = favor_core::FeatureMap::feature_dim(map);
        let dv = self.shape.value_dim;
        let opts = Options {
            // A block longer than the sequence would only size scratch for rows that never
            // exist (and could fail to allocate); the partition into blocks is the same.
            block: if cfg.causal {
                cfg.chunk
            } else {
                BIDIRECTIONAL_BLOCK
            }
            .min(self.shape.queries.max(self.shape.keys)),
            normalized: true,
            key_mask: self.mask,
        };
        let mut wide = Vec::new();
        let out_t = narrow_target(out, &mut wide)?;
        if cfg.causal {
            let n = favor_core::causal_chunked_scratch_len(m, dv, opts.block);
            let mut scratch = try_zeros("attention scratch", alloc::len("attention scratch", n)?)?;
            favor_core::causal_chunked(
                kernels,
                map,
                q,
                k,
                v,
                self.shape,
                &opts,
                out_t,
                &mut scratch,
            )
            .map_err(core)?;
        } else {
            let n = favor_core::bidirectional_scratch_len(m, dv, opts.block);
            let mut scratch = try_zeros("attention scratch", alloc::len("attention scratch", n)?)?;
            favor_core::bidirectional(
                kernels,
                map,
                q,
                k,
                v,
                self.shape,
                &opts,
                out_t,
                &mut scratch,
            )
            .map_err(core)?;
        }
        narrow_back(&wide, out);
        Ok(())
    }
}

/// `src` as `T`: zero-copy when `E` is `T`, else converted into `tmp`.
pub(crate) fn widen<'a, E: Element, T: Float>(
    src: &'a [E],
    tmp: &'a mut Vec<T>,
) -> Result<&'a [T]> {
    if TypeId::of::<E>() == TypeId::of::<T>() {
        Ok(bytemuck::cast_slice(src))
    } else if TypeId::of::<T>() == TypeId::of::<f32>() {
        // To f32: one vectorised slice conversion (exact for f16/bf16, rounding for f64).
        try_resize("converted inputs", tmp, src.len(), T::zero())?;
        E::to_f32_slice(src, bytemuck::cast_slice_mut(tmp.as_mut_slice()));
        Ok(tmp)
    } else {
        tmp.clear();
        tmp.try_reserve_exact(src.len())
            .map_err(|_| alloc::failed::<T>("converted inputs", src.len()))?;
        tmp.extend(src.iter().map(|&x| T::from_f64(x.to_f64())));
        Ok(tmp)
    }
}

/// Where to compute an f32 output in `T`: `out` itself for f32, else `wide` (sized here).
pub(crate) fn narrow_target<'a, T: Float>(
    out: &'a mut [f32],
    wide: &'a mut Vec<T>,
) -> Result<&'a mut [T]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        Ok(bytemuck::cast_slice_mut(out))
    } else {
        try_resize("wide output", wide, out.len(), T::zero())?;
        Ok(wide)
    }
}

/// Rounds `wide` into `out` (nothing to do when the output was computed in place).
pub(crate) fn narrow_back<T: Float>(wide: &[T], out: &mut [f32]) {
    for (o, &w) in out.iter_mut().zip(wide) {
        *o = w.to_f64() as f32;
    }
}
