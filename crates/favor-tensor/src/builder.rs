//! [`PerformerBuilder`]: checks a configuration and draws (or takes) the projection.

use crate::alloc::try_collect;
use crate::config::{
    Backend, Config, DEFAULT_CHUNK, DEFAULT_FEATURES, Kernel, Precision, Projection, Redraw,
};
use crate::data_aware::{DataAwareMap, Sample, SharedMap};
use crate::error::{Error, Result};
use crate::performer::Performer;
use crate::tensor::{Element, TensorView};
use crate::weights::Weights;
use std::sync::Arc;

use favor_core::{Compat, HybridShape};

impl Performer {
    /// A builder for heads of query/key dimension `dim`.
    pub fn builder(dim: usize) -> PerformerBuilder {
        PerformerBuilder {
            heads: 1,
            dim,
            kv_heads: None,
            value_dim: None,
            features: None,
            kernel: Kernel::default(),
            projection: Projection::default(),
            matrix: None,
            structured: false,
            seed: 0,
            normalizer: None,
            epsilon: None,
            compat: Compat::None,
            causal: false,
            chunk: DEFAULT_CHUNK,
            redraw: Redraw::Never,
            precision: Precision::F32,
            backend: Backend::Detected,
            parallel: cfg!(feature = "parallel"),
            window: None,
            sinks: None,
            calibration: None,
            map: None,
        }
    }
}

/// Builds a [`Performer`]. Only the head dimension is required; see each method for its
/// default.
#[derive(Debug, Clone)]
pub struct PerformerBuilder {
    heads: usize,
    kv_heads: Option<usize>,
    dim: usize,
    value_dim: Option<usize>,
    features: Option<usize>,
    kernel: Kernel,
    projection: Projection,
    /// Rows and the matrix in f64 (or why it could not be copied, reported by `build`).
    matrix: Option<(usize, Result<Vec<f64>>)>,
    /// Project with a drawn SORF W's signs instead of W ([`structured_projection`](Self::structured_projection)).
    structured: bool,
    seed: u64,
    normalizer: Option<bool>,
    epsilon: Option<f64>,
    compat: Compat,
    causal: bool,
    chunk: usize,
    redraw: Redraw,
    precision: Precision,
    backend: Backend,
    parallel: bool,
    window: Option<usize>,
    sinks: Option<usize>,
    /// Samples to calibrate a data-aware map from at build (or why they could not be copied).
    calibration: Option<Result<Sample>>,
    /// A data-aware map given as it is.
    map: Option<SharedMap>,
}

impl PerformerBuilder {
    /// Number of heads H (default 1).
    pub fn heads(mut self, heads: usize) -> Self {
        self.heads = heads;
        self
    }
    /// Key/value heads (default: [`heads`](Self::heads)). Fewer key/value heads than query
    /// heads is grouped-query attention (one key/value head: multi-query attention): query
    /// head h reads key/value head `h / (heads / kv_heads)`, so `heads` must be a multiple of
    /// `kv_heads`. Keys and values are then `[B, kv_heads, L, ·]`.
    ///
    /// ```
    /// use favor_tensor::{Performer, TensorView};
    /// let (h, hkv, l, d) = (4, 2, 3, 8);
    /// let q = vec![0.1f32; h * l * d];
    /// let kv = vec![0.2f32; hkv * l * d];
    /// let attn = Performer::builder(d).heads(h).kv_heads(hkv).features(16).build().unwrap();
    /// let q = TensorView::new([1, h, l, d], &q).unwrap();
    /// let kv = TensorView::new([1, hkv, l, d], &kv).unwrap();
    /// assert_eq!(attn.forward(q, kv, kv).unwrap().shape(), [1, h, l, d]);
    /// ```
    pub fn kv_heads(mut self, kv_heads: usize) -> Self {
        self.kv_heads = Some(kv_heads);
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
    /// The kernel (default [`Kernel::Softmax`]). [`Kernel::Gerf`] and [`Kernel::Saderf`] fit
    /// their parameters on every forward call and are refused by causal layers (`build`
    /// returns [`Error::Config`]).
    ///
    /// ```
    /// use favor_tensor::{Kernel, Performer, TensorView};
    /// let (l, d) = (32, 8);
    /// let x: Vec<f32> = (0..l * d).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let x = TensorView::new([1, 1, l, d], &x).unwrap();
    /// let attn = Performer::builder(d).features(32).kernel(Kernel::Saderf).build().unwrap();
    /// assert!(attn.forward(x, x, x).unwrap().data().iter().all(|o| o.is_finite()));
    /// assert!(Performer::builder(d).kernel(Kernel::Gerf).causal(true).build().is_err());
    /// ```
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
    /// With [`Projection::Sorf`], projects with W's structured form instead of W (default
    /// off): the softmax maps ([`Kernel::Softmax`], [`Kernel::Hyperbolic`],
    /// [`Kernel::Trigonometric`]) apply three fast Walsh–Hadamard transforms per block of d'
    /// features to each row (favor-core's `with_structured_projection`, over the signs the
    /// layer's seed draws), in `forward` and in streams, so a decoding step reads 3·d' signs
    /// per block instead of W's m·d weights. The features equal W's up to rounding, so the
    /// outputs differ from the same layer without it (and from the same W given to
    /// [`projection_matrix`](Self::projection_matrix)) by rounding, not bit for bit.
    ///
    /// What it costs and saves (README, speed): on the project's machine, where W stays in
    /// cache, decoding measured no faster, and a forward call pays a check of the signs
    /// against W (O(m·d·log d'), about 0.1 ms at m = 256, d = 64) each time it builds its map.
    /// Refused (at [`build`](Self::build)) without `Projection::Sorf`, with a given matrix, a
    /// data-aware map, `compat`, or a kernel other than those three.
    ///
    /// ```
    /// use favor_tensor::{Performer, Projection, TensorView};
    /// let d = 16;
    /// let layer = |structured| {
    ///     Performer::builder(d)
    ///         .features(32)
    ///         .projection(Projection::Sorf)
    ///         .structured_projection(structured)
    ///         .causal(true)
    ///         .build()
    ///         .unwrap()
    /// };
    /// let x: Vec<f32> = (0..4 * d).map(|i| (i % 5) as f32 / 10.0).collect();
    /// let x = TensorView::new([1, 1, 4, d], &x).unwrap();
    /// let (dense, signs) = (layer(false).forward(x, x, x).unwrap(), layer(true).forward(x, x, x).unwrap());
    /// let gap = dense.data().iter().zip(signs.data()).fold(0f32, |g, (a, b)| g.max((a - b).abs()));
    /// // The same attention, rounded differently: the derived worst case for these inputs is
    /// // about 7e-5 (favor-core's tests/structured.rs bounds each projection's difference).
    /// assert!(gap < 1e-4);
    /// assert!(Performer::builder(d).structured_projection(true).build().is_err()); // not SORF
    /// ```
    pub fn structured_projection(mut self, on: bool) -> Self {
        self.structured = on;
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
    /// ε added to generalized features (default 10⁻³, as in the paper's code), or, with a
    /// [`compat`](Self::compat) setting, inside the peer's softmax features (default the
    /// peer's: 10⁻⁴ performer-pytorch, 10⁻⁶ JAX).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = Some(epsilon);
        self
    }

    /// Serve a model trained with another Performer implementation with that
    /// implementation's conventions (default [`Compat::None`], favor's own definition):
    /// [`Compat::PerformerPytorch`] or [`Compat::GoogleJax`] reproduce the peer's feature map
    /// (its ε and shifts), and its denominator rule, so outputs equal the peer's to f32
    /// rounding (favor-core's `compat` module lists the conventions). Softmax and
    /// generalized kernels (ReLU, …), bidirectional or causal; the data normaliser of
    /// generalized kernels defaults to the peer's (on for performer-pytorch, off for JAX).
    ///
    /// The peers' causal attention takes its key shift over the whole sequence, so future
    /// tokens change past outputs: a compat layer's causal [`forward`](crate::Performer::forward)
    /// reproduces that (whole-sequence) definition. Its [`stream`](crate::Performer::stream)
    /// is the closest causal-safe variant (favor-core's `PeerStream`: the shift over the keys
    /// seen so far): equal to the peer from the token holding the head's largest key
    /// projection on, different before it (measured in the README, "Serving models trained
    /// elsewhere"). Not with hybrid attention, data-aware maps, the fitted, hyperbolic or
    /// trigonometric kernels, or key masks (the peers have none).
    ///
    /// ```
    /// use favor_tensor::{Compat, Performer, TensorView};
    /// let (l, d) = (8, 4);
    /// let x: Vec<f32> = (0..l * d).map(|i| (i as f32 * 0.3).sin()).collect();
    /// let x = TensorView::new([1, 1, l, d], &x).unwrap();
    /// let attn = Performer::builder(d).features(16).compat(Compat::PerformerPytorch).build().unwrap();
    /// let out = attn.forward(x, x, x).unwrap();
    /// assert!(out.data().iter().all(|o| o.is_finite()));
    /// ```
    pub fn compat(mut self, compat: Compat) -> Self {
        self.compat = compat;
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
    /// feature), and, in a call of fewer than 8 (batch, head) pairs, the parts a
    /// bidirectional head longer than 1024 rows is computed in (keys summed in parts and
    /// merged, queries answered in parts), so a few long heads use several threads: as many
    /// as rayon's pool has, started for the call (the caller takes a share itself). Results
    /// are bit-identical either way: heads are computed independently, and a head's parts
    /// depend on its own shape alone, never on the threads or the batch.
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }
    /// Hybrid attention with an exact window of `w` (default: none, plain FAVOR+): query i
    /// weighs the keys with `|i − j| ≤ w` (causal: `i − w ≤ j ≤ i`) by the exact
    /// `exp(q·k/√d)`, and every other key by its random features, under one normaliser.
    /// `window(0)` makes only the diagonal exact; a window covering the sequence is exact
    /// softmax attention. Needs the softmax, hyperbolic, GERF or SADERF kernel (the last two
    /// fit on all pairs of the call, not only the far ones the features take), and queries
    /// and keys of the same length. Setting only [`sinks`](Self::sinks) means `window(0)`.
    ///
    /// ```
    /// use favor_tensor::{Performer, TensorView};
    /// let (l, d) = (64, 8);
    /// let x: Vec<f32> = (0..l * d).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let x = TensorView::new([1, 1, l, d], &x).unwrap();
    /// let attn = Performer::builder(d).features(32).window(8).sinks(1).build().unwrap();
    /// let out = attn.forward(x, x, x).unwrap();
    /// assert!(out.data().iter().all(|o| o.is_finite()));
    /// ```
    pub fn window(mut self, w: usize) -> Self {
        self.window = Some(w);
        self
    }
    /// Hybrid attention's attention sinks (default 0): positions `0..sinks` are exact for
    /// every query that sees them, e.g. a `[CLS]` or BOS token that most queries attend to.
    /// See [`window`](Self::window).
    pub fn sinks(mut self, sinks: usize) -> Self {
        self.sinks = Some(sinks);
        self
    }

    /// Calibrates a data-aware map ([`DataAwareMap`]) from sample queries `q_sample`
    /// (`[1, heads, L, dim]`) and keys `k_sample` (`[1, kv_heads, L, dim]`: one chunk of the
    /// same L positions, any strides and element type), when [`build`](Self::build) runs —
    /// with the layer's final [`features`](Self::features), [`seed`](Self::seed),
    /// [`projection`](Self::projection) kind, [`window`](Self::window), [`sinks`](Self::sinks)
    /// and [`causal`](Self::causal), whatever order they are set in. Query head h is
    /// calibrated with the keys of its key/value head (`h / (heads / kv_heads)`), and every
    /// head from the same seed; for hybrid attention the moments are fitted on the pairs the
    /// window and sinks leave to the features (favor-core's
    /// [`calibrate`](favor_core::calibrate)). The map then replaces the random projection:
    /// each head's keys are shifted by its μ and mapped through its own ω.
    ///
    /// Needs [`Kernel::Softmax`], a Gaussian projection kind (orthogonal with χ norms,
    /// iid, simplex), no [`projection_matrix`](Self::projection_matrix) or
    /// [`data_aware`](Self::data_aware) map, and [`Redraw::Never`]; a layer with a map has no
    /// [`stream`](Performer::stream) yet. Sample shapes are checked by `build`
    /// ([`Error::Shape`], tensors `"q_sample"` and `"k_sample"`), and favor-core's
    /// refusals of a head's sample (a NaN, …) are [`Error::Core`] naming the head.
    ///
    /// ```
    /// use favor_tensor::{Performer, TensorView};
    /// let (h, l, d) = (2, 48, 8);
    /// let x: Vec<f32> = (0..h * l * d).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let x = TensorView::new([1, h, l, d], &x).unwrap();
    /// let attn = Performer::builder(d)
    ///     .heads(h)
    ///     .features(32)
    ///     .causal(true)
    ///     .window(4)
    ///     .calibrate(x, x)
    ///     .build()
    ///     .unwrap();
    /// assert!(attn.data_aware_map().is_some());
    /// assert!(attn.forward(x, x, x).unwrap().data().iter().all(|o| o.is_finite()));
    /// ```
    pub fn calibrate<E: Element>(
        mut self,
        q_sample: TensorView<'_, E>,
        k_sample: TensorView<'_, E>,
    ) -> Self {
        self.calibration = Some(Sample::copy(q_sample, k_sample));
        self
    }
    /// Uses this data-aware map (e.g. one saved from an earlier
    /// [`calibrate`](Self::calibrate) and loaded back) in place of the random projection;
    /// it fixes m to the map's features and must have the layer's heads and dimension. The
    /// same conditions as [`calibrate`](Self::calibrate) apply.
    pub fn data_aware(mut self, map: impl Into<Arc<DataAwareMap>>) -> Self {
        self.map = Some(map.into());
        self
    }

    /// Checks the configuration and draws (or takes) the projection.
    pub fn build(self) -> Result<Performer> {
        let bad = |s: &str| Err(Error::Config(s.to_string()));
        if self.dim == 0 || self.heads == 0 || self.chunk == 0 {
            return bad("dim, heads and chunk must be positive");
        }
        let kv_heads = self.kv_heads.unwrap_or(self.heads);
        if kv_heads == 0 || !self.heads.is_multiple_of(kv_heads) {
            return bad("heads must be a positive multiple of kv_heads");
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
        if let Some(e) = self.epsilon
            && !(e.is_finite() && e >= 0.0)
        {
            return bad("epsilon must be finite and >= 0");
        }
        if self.compat != Compat::None {
            let conflict = if self.window.is_some() || self.sinks.is_some() {
                Some("compat reproduces a peer's attention, which has no hybrid window or sinks")
            } else if self.calibration.is_some() || self.map.is_some() {
                Some(
                    "compat reproduces a peer's attention over its projection, not a data-aware map",
                )
            } else if matches!(
                self.kernel,
                Kernel::Hyperbolic | Kernel::Trigonometric | Kernel::Gerf | Kernel::Saderf
            ) {
                Some(
                    "compat supports the softmax and generalized (relu, elu, exp, abs, square) kernels",
                )
            } else {
                None
            };
            if let Some(why) = conflict {
                return bad(why);
            }
        }
        let data_aware = self.calibration.is_some() || self.map.is_some();
        if data_aware {
            let conflict = if self.calibration.is_some() && self.map.is_some() {
                Some("calibrate and data_aware both give the data-aware map")
            } else if self.matrix.is_some() {
                Some("a data-aware map replaces the projection matrix: give one or the other")
            } else if self.kernel != Kernel::Softmax {
                Some("a data-aware map is a softmax map: it needs Kernel::Softmax")
            } else if matches!(self.redraw, Redraw::Every(_)) {
                Some("Redraw::Every would replace the data-aware map")
            } else {
                None
            };
            if let Some(why) = conflict {
                return bad(why);
            }
        }
        if let Some(map) = &self.map {
            map.check_layer(self.heads, self.dim)?;
            if self.features.is_some_and(|m| m != map.features()) {
                return bad("features disagrees with the data-aware map's features");
            }
        }
        if self.structured {
            let conflict = if self.projection != Projection::Sorf {
                Some("structured_projection needs Projection::Sorf")
            } else if self.matrix.is_some() {
                Some("structured_projection projects with drawn signs, not a given matrix")
            } else if data_aware || self.compat != Compat::None {
                Some("structured_projection applies to the softmax maps over a drawn SORF W")
            } else if !matches!(
                self.kernel,
                Kernel::Softmax | Kernel::Hyperbolic | Kernel::Trigonometric
            ) {
                Some(
                    "structured_projection supports the softmax, hyperbolic and trigonometric kernels",
                )
            } else {
                None
            };
            if let Some(why) = conflict {
                return bad(why);
            }
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
            (None, false) => match &self.map {
                Some(map) => map.features(),
                None => self.features.unwrap_or(DEFAULT_FEATURES),
            },
        };
        if features == 0 {
            return bad("features must be positive");
        }
        let hybrid = match (self.window, self.sinks) {
            (None, None) => None,
            (window, sinks) => Some(HybridShape {
                window: window.unwrap_or(0),
                sinks: sinks.unwrap_or(0),
            }),
        };
        if hybrid.is_some()
            && !matches!(
                self.kernel,
                Kernel::Softmax | Kernel::Hyperbolic | Kernel::Gerf | Kernel::Saderf
            )
        {
            return bad(
                "hybrid attention (window, sinks) needs the softmax, hyperbolic, gerf or saderf kernel",
            );
        }
        if self.kernel.is_fitted() && self.causal {
            return bad(
                "Kernel::Gerf and Kernel::Saderf fit their parameters from each call's queries and \
                 keys, which in causal attention would let later tokens change earlier outputs; \
                 for causal layers use Kernel::Softmax with calibrate() or data_aware()",
            );
        }
        let mut cfg = Config {
            heads: self.heads,
            kv_heads,
            dim: self.dim,
            value_dim,
            features,
            kernel: self.kernel,
            projection: self.projection,
            structured: self.structured,
            normalizer: self.normalizer.unwrap_or(match self.compat {
                Compat::None => self.kernel.is_softmax(),
                peer => self.kernel.is_softmax() || peer.generalized_normalizer(),
            }),
            epsilon: self.epsilon.unwrap_or(match self.compat {
                peer if peer != Compat::None && self.kernel.is_softmax() => peer.softmax_epsilon(),
                _ => 1e-3,
            }),
            compat: self.compat,
            causal: self.causal,
            chunk: self.chunk,
            redraw: self.redraw,
            precision: self.precision,
            backend: self.backend,
            parallel: self.parallel,
            hybrid,
            data_aware: None,
        };
        if let Some(sample) = self.calibration {
            cfg.data_aware = Some(Arc::new(DataAwareMap::calibrate(
                &cfg, self.seed, &sample?,
            )?));
        } else if let Some(map) = self.map {
            cfg.data_aware = Some(map);
        }
        if cfg.data_aware.is_some() {
            // The map is the projection: no random W is drawn.
            return Performer::from_parts(cfg, Weights::default(), self.seed);
        }
        let weights = match self.matrix {
            Some((rows, w)) => Weights::from_f64(w?, rows, self.dim)?,
            None => Weights::generate(self.projection, self.seed, features, self.dim)?,
        };
        // Both precisions' maps are built once so a bad matrix (NaN, an f64 entry beyond f32,
        // ...) fails here, not on first use: the layer's own by `from_parts`, which keeps it.
        match cfg.precision {
            Precision::F32 => cfg.map::<f64>(&weights).map(drop)?,
            Precision::F64 => cfg.map::<f32>(&weights).map(drop)?,
        }
        Performer::from_parts(cfg, weights, self.seed)
    }
}
