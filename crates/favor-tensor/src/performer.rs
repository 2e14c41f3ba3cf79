//! The `Performer`: a configured multi-head FAVOR+ attention layer over tensors.

use std::sync::{Arc, Mutex, MutexGuard};

use favor_core::{Compat, HybridShape, Kernels};

use crate::backend::BackendOp;
use crate::config::{Config, Kernel, Projection, Redraw, redraw_seed};
use crate::data_aware::DataAwareMap;
use crate::error::{Error, Result};
use crate::exec::Io;
use crate::prepared::Prepared;
use crate::stream::Stream;
use crate::tensor::{Element, Tensor, TensorView, TensorViewMut};
use crate::weights::Weights;

/// Multi-head FAVOR+ attention over `[batch, heads, seq, dim]` tensors.
///
/// `Performer` is `Send + Sync` and [`forward`](Self::forward) takes `&self`: one layer can
/// serve many threads at once. Its projection is shared by `Arc` with every [`Stream`] made
/// from it, so a stream outlives the layer and can move to another thread.
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
/// let attn = Performer::builder(d).heads(h).features(64).causal(true).build().unwrap();
/// let out = attn.forward(x, x, x).unwrap();
/// assert_eq!(out.shape(), [b, h, l, d]);
/// // The first token attends only to itself.
/// assert!((out.data()[0] - x.data()[0]).abs() < 1e-5);
/// ```
#[derive(Debug)]
pub struct Performer {
    pub(crate) cfg: Config,
    schedule: Mutex<Schedule>,
}

/// The projection in use and the redraw policy's counters: the only state a call changes.
#[derive(Debug, Clone)]
struct Schedule {
    /// The projection in use, with the layer's map over it.
    weights: Arc<Prepared>,
    /// Base seed of automatic redraws.
    seed: u64,
    /// Calls that succeeded.
    calls: u64,
    /// Automatic redraws since the base seed was set.
    redraws: u64,
    /// A redraw that fell due and is used by every call until one of them succeeds, which
    /// makes it the projection in use. Kept so that a failed call does not draw it again.
    pending: Option<Arc<Prepared>>,
}

impl Clone for Performer {
    /// An independent layer with the same configuration, projection (shared: it is
    /// immutable) and counters.
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            schedule: Mutex::new(self.schedule().clone()),
        }
    }
}

impl Performer {
    /// A layer over `weights`; fails as building its feature map over them does.
    pub(crate) fn from_parts(cfg: Config, weights: Weights, seed: u64) -> Result<Self> {
        let weights = Arc::new(Prepared::build(&cfg, Arc::new(weights))?);
        Ok(Self {
            cfg,
            schedule: Mutex::new(Schedule {
                weights,
                seed,
                calls: 0,
                redraws: 0,
                pending: None,
            }),
        })
    }

    /// The schedule, whatever a panicking thread left: it only ever holds complete values.
    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
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
    /// The exact window and sinks of hybrid attention, if set
    /// ([`PerformerBuilder::window`](crate::PerformerBuilder::window)).
    pub fn hybrid(&self) -> Option<HybridShape> {
        self.cfg.hybrid
    }
    /// Key/value heads (equal to [`heads`](Self::heads) unless grouped; see
    /// [`PerformerBuilder::kv_heads`](crate::PerformerBuilder::kv_heads)).
    pub fn kv_heads(&self) -> usize {
        self.cfg.kv_heads
    }
    /// The data-aware map in place of the random projection, if the layer has one
    /// ([`PerformerBuilder::calibrate`](crate::PerformerBuilder::calibrate),
    /// [`PerformerBuilder::data_aware`](crate::PerformerBuilder::data_aware)), shared.
    pub fn data_aware_map(&self) -> Option<Arc<DataAwareMap>> {
        self.cfg.data_aware.clone()
    }
    /// Calls of [`forward`](Self::forward) that succeeded.
    pub fn calls(&self) -> u64 {
        self.schedule().calls
    }
    /// The seed the current projection was drawn from (the builder's, or the last
    /// [`redraw`](Self::redraw)'s; automatic redraws derive from it).
    pub fn seed(&self) -> u64 {
        self.schedule().seed
    }
    /// The projection in use, shared: later redraws do not change it. Empty (no rows) for a
    /// layer with a data-aware map, which replaces it.
    pub fn weights(&self) -> Arc<Weights> {
        Arc::clone(self.schedule().weights.weights())
    }
    /// A copy of the projection W in use with [`Precision::F32`](crate::Precision::F32)
    /// (`m × d`, row-major; empty without a projection): what `favor projection` exports.
    pub fn projection_f32(&self) -> Vec<f32> {
        self.weights().f32().to_vec()
    }
    /// A copy of the projection W in use with [`Precision::F64`](crate::Precision::F64).
    pub fn projection_f64(&self) -> Vec<f64> {
        self.weights().f64().to_vec()
    }
    /// Name of the kernels backend that runs (e.g. `"avx512"`).
    pub fn backend_name(&self) -> &'static str {
        struct Name;
        impl BackendOp<f32> for Name {
            type Output = &'static str;
            fn with_kernels<K: Kernels<f32>>(self, k: &K) -> &'static str {
                k.name()
            }
        }
        self.cfg.with_backend(Name)
    }

    /// Draws a new projection from `seed` (of the configured kind) and makes `seed` the base
    /// of later automatic redraws. Replaces a matrix given to the builder. Streams made
    /// before keep the projection they were made with.
    pub fn redraw(&self, seed: u64) -> Result<()> {
        if self.cfg.data_aware.is_some() {
            return Err(Error::Config(
                "a layer with a data-aware map has no random projection to redraw".into(),
            ));
        }
        if self.cfg.projection == Projection::None {
            return Err(Error::Config("there is no projection to redraw".into()));
        }
        let w = Weights::generate(self.cfg.projection, seed, self.cfg.features, self.cfg.dim)?;
        let mut s = self.schedule();
        s.weights = Arc::new(Prepared::build(&self.cfg, Arc::new(w))?);
        s.seed = seed;
        s.redraws = 0;
        s.pending = None;
        Ok(())
    }

    /// Attention of `q` (`[B, H, Lq, d]`) over `k` (`[B, Hkv, Lk, d]`) and `v`
    /// (`[B, Hkv, Lk, dv]`): a `[B, H, Lq, dv]` tensor. Causal attention needs `Lq == Lk`.
    /// Any [`TensorView`] works, strided ones included (e.g. [`TensorView::from_bshd`]).
    pub fn forward<E: Element>(
        &self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
    ) -> Result<Tensor> {
        let io = Io::check(&self.cfg, q, k, v, None)?;
        let mut out = Tensor::zeros_for("output", io.out_shape())?;
        self.run(&io, out.view_mut())?;
        Ok(out)
    }

    /// [`forward`](Self::forward) with a key padding mask of `B × Lk` flags (row-major):
    /// `false` removes that key from every query of that batch element. A query with no
    /// visible key outputs zeros.
    pub fn forward_masked<E: Element>(
        &self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
        key_mask: &[bool],
    ) -> Result<Tensor> {
        let io = Io::check(&self.cfg, q, k, v, Some(key_mask))?;
        let mut out = Tensor::zeros_for("output", io.out_shape())?;
        self.run(&io, out.view_mut())?;
        Ok(out)
    }

    /// [`forward`](Self::forward) (or [`forward_masked`](Self::forward_masked) with
    /// `key_mask`) into `out`, a `[B, H, Lq, dv]` view of any element type and strides: no
    /// output tensor is allocated, and an f16, bf16 or f64 output is rounded once, from the
    /// compute precision. On error `out` may hold partial results.
    ///
    /// ```
    /// use favor_tensor::{Performer, TensorView, TensorViewMut, f16};
    /// let (b, s, h, d) = (1, 6, 2, 8);
    /// let x: Vec<f16> = (0..b * s * h * d).map(|i| f16::from_f32((i % 7) as f32 / 7.0)).collect();
    /// let x = TensorView::from_bshd([b, s, h, d], &x).unwrap(); // [B, S, H, D] memory
    /// let attn = Performer::builder(d).heads(h).features(16).build().unwrap();
    /// let mut out = vec![f16::ZERO; b * s * h * d];
    /// attn.forward_into(x, x, x, None, TensorViewMut::from_bshd([b, s, h, d], &mut out).unwrap())
    ///     .unwrap();
    /// let reference = attn.forward(x, x, x).unwrap(); // [B, H, S, D], f32
    /// assert_eq!(out[d], f16::from_f32(reference.head(0, 1)[0])); // (s 0, head 1) == [0, 1, 0, 0]
    /// ```
    pub fn forward_into<E: Element, O: Element>(
        &self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
        key_mask: Option<&[bool]>,
        out: TensorViewMut<'_, O>,
    ) -> Result<()> {
        let io = Io::check(&self.cfg, q, k, v, key_mask)?;
        let want = io.out_shape();
        if out.shape() != want {
            return Err(Error::Shape {
                tensor: "out",
                expected: format!("{want:?}"),
                got: out.shape().to_vec(),
            });
        }
        self.run(&io, out)
    }

    /// Runs one checked call with the projection the schedule says, then books it.
    fn run<E: Element, O: Element>(&self, io: &Io<'_, E>, out: TensorViewMut<'_, O>) -> Result<()> {
        let layer = self.projection_for_call()?;
        io.check_range(&self.cfg, layer.weights())?;
        io.run(&self.cfg, layer.weights(), layer.maps(), out)?;
        let mut s = self.schedule();
        if s.pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, &layer)) {
            s.weights = layer;
            s.pending = None;
            s.redraws += 1;
        }
        s.calls += 1;
        Ok(())
    }

    /// The projection the next call uses: a pending or newly due redraw, else the current one.
    fn projection_for_call(&self) -> Result<Arc<Prepared>> {
        let mut s = self.schedule();
        if let Some(p) = &s.pending {
            return Ok(Arc::clone(p));
        }
        let due = match self.cfg.redraw {
            Redraw::Every(n) => s.calls > 0 && s.calls.is_multiple_of(n),
            Redraw::Never => false,
        };
        if !due {
            return Ok(Arc::clone(&s.weights));
        }
        // Drawn under the lock: concurrent callers wait for this one draw, not make their own.
        let seed = redraw_seed(s.seed, s.redraws);
        let cfg = &self.cfg;
        let fresh = Weights::generate(cfg.projection, seed, cfg.features, cfg.dim)?;
        let fresh = Arc::new(Prepared::build(cfg, Arc::new(fresh))?);
        s.pending = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Whose conventions this layer follows ([`PerformerBuilder::compat`](crate::PerformerBuilder::compat)).
    pub fn compat(&self) -> Compat {
        self.cfg.compat
    }

    /// A causal decoding stream for `batch` sequences over this layer's current projection;
    /// see [`Stream`]. The stream owns its state and shares the projection, so it is
    /// `'static + Send`: it outlives this `Performer` and is unaffected by later redraws.
    ///
    /// With hybrid attention ([`window`](crate::PerformerBuilder::window),
    /// [`sinks`](crate::PerformerBuilder::sinks)) each (batch, head) keeps favor-core's
    /// `HybridStream`: the sinks' and the window's raw keys and values and the random-feature
    /// state of the keys that left the window. A hybrid prefill steps its tokens one by one.
    ///
    /// A [`compat`](crate::PerformerBuilder::compat) layer streams the peer's causal-safe
    /// variant (favor-core's `PeerMemory` per (batch, head): the peer's formulas with the
    /// key shift over the keys seen so far), which differs from its whole-sequence
    /// [`forward`](Self::forward) before each head's largest key; its prefill steps the
    /// tokens one by one.
    ///
    /// A layer with a data-aware map ([`data_aware_map`](Self::data_aware_map)) streams with
    /// each head's map on keys shifted by its μ, as [`forward`](Self::forward) does. One with
    /// [`Kernel::Gerf`] or [`Kernel::Saderf`] (fitted per call) has none: that is
    /// [`Error::Config`].
    pub fn stream(&self, batch: usize) -> Result<Stream> {
        if self.cfg.kernel.is_fitted() {
            return Err(Error::Config(
                "a stream is causal, and Kernel::Gerf and Kernel::Saderf fit on every call's \
                 queries and keys: use Kernel::Softmax (with calibrate() for a fitted map)"
                    .into(),
            ));
        }
        Stream::new(self.cfg.clone(), self.weights(), batch)
    }
}
