//! Causal decoding over tensors: one constant-size prefix state per (batch, head).

mod run;
mod snapshot;

use std::sync::Arc;

use favor_core::AnyFeatureMap;

use crate::backend::Real;
use crate::config::{Config, Precision};
use crate::data_aware::DataAwareMap;
use crate::error::{Error, Result};
use crate::exec::{Pieces, check_shape, with_pieces};
use crate::tensor::{Element, Tensor, TensorView};
use crate::weights::Weights;
pub(crate) use run::StepIo;
pub use snapshot::STREAM_SNAPSHOT_VERSION;

/// Causal attention over `batch` sequences, one token (or one prefill block) at a time.
///
/// Each (batch, head) pair keeps favor-core's prefix state `(S, z)` plus its stabiliser, held
/// as a compensated total and a ring of recent keys so that long streams keep their precision:
/// about `heads × (2·(m·dv + m) + 16·(m + dv))` floats per sequence (m = feature count;
/// [`memory_bytes`](Self::memory_bytes) is exact), whatever the number of tokens seen.
/// Outputs equal [`Performer::forward`](crate::Performer::forward) with causal attention up to rounding.
///
/// A hybrid layer's stream ([`window`](crate::PerformerBuilder::window),
/// [`sinks`](crate::PerformerBuilder::sinks)) keeps favor-core's
/// [`HybridStream`](favor_core::HybridStream) per (batch, head) instead: the sinks' and the
/// last w + 1 raw keys and values, and the random-feature state of the keys that left the
/// window, `O((sinks + w)·(d + dv) + m·dv)` floats whatever the tokens seen; its prefill
/// steps the tokens one by one, and its snapshots carry favor-core's `FAVH` records.
///
/// A [`compat`](crate::PerformerBuilder::compat) layer's stream keeps favor-core's
/// [`PeerMemory`](favor_core::PeerMemory) per (batch, head): `m·dv + m + dv` floats, the
/// peer's causal attention with the key shift over the keys seen so far (the peers' own
/// shift, over the whole sequence, cannot stream); its outputs equal the peer's causal
/// [`forward`](crate::Performer::forward) on the sequence cut after each token, not on the
/// whole sequence. Its prefill steps the tokens one by one; its snapshots carry favor-core's
/// `FAVP` records.
///
/// A calibrated layer's stream ([`data_aware_map`](crate::Performer::data_aware_map)) runs
/// each head with its own data-aware map on keys shifted by that head's μ, as the forward
/// path does; its steps map each head on its own (no shared GEMM), and its snapshots carry
/// each head's map fingerprint, so a stream of another calibration refuses them.
///
/// ```
/// use favor_tensor::{Performer, TensorView};
/// let (h, d) = (2, 8);
/// let attn = Performer::builder(d).heads(h).features(32).causal(true).build().unwrap();
/// let mut stream = attn.stream(1).unwrap();
/// let prompt = vec![0.1f32; h * 5 * d];
/// let p = TensorView::new([1, h, 5, d], &prompt).unwrap();
/// let out = stream.prefill(p, p, p).unwrap();
/// assert_eq!(out.shape(), [1, h, 5, d]);
/// let tok = vec![0.2f32; h * d];
/// let t = TensorView::new([1, h, 1, d], &tok).unwrap();
/// let next = stream.step(t, t, t).unwrap();
/// assert_eq!(stream.tokens(), 6);
/// let bytes = stream.snapshot().unwrap();
/// stream.reset();
/// stream.restore(&bytes).unwrap();
/// assert_eq!(stream.tokens(), 6);
/// # let _ = next;
/// ```
#[derive(Debug)]
pub struct Stream {
    cfg: Config,
    batch: usize,
    /// Tokens fed so far. favor-core's per-head counts can be lower: a key whose squared
    /// norm overflows is absent from the state (its feature's limit is 0) and not counted.
    position: u64,
    states: States,
}

/// Every head's state in one precision, with the projection its feature map borrows: the
/// stream owns both (the projection by `Arc`), so it needs no `Performer` and no lifetime.
#[derive(Debug)]
enum States {
    F32(Owned32),
    F64(Owned64),
}

/// What the feature maps borrow: the layer's projection and, for a calibrated layer, its
/// data-aware map (one map per head).
#[derive(Debug)]
struct Owner {
    weights: Arc<Weights>,
    data_aware: Option<Arc<DataAwareMap>>,
}

type States32<'w> = HeadStates<'w, f32>;
type States64<'w> = HeadStates<'w, f64>;

// A self-referential pair (the map borrows W, the stream owns W) without `unsafe` here:
// rebuilding the map from W on every step would re-check all of W (O(m·d)) each token.
self_cell::self_cell!(
    struct Owned32 {
        owner: Owner,
        #[covariant]
        dependent: States32,
    }
    impl {Debug}
);
self_cell::self_cell!(
    struct Owned64 {
        owner: Owner,
        #[covariant]
        dependent: States64,
    }
    impl {Debug}
);

/// The feature map and every head's state, in one precision.
#[derive(Debug, Clone)]
pub(crate) struct HeadStates<'w, T> {
    map: AnyFeatureMap<'w, T>,
    /// A calibrated layer's maps, one per head (stream i uses `head_maps[i % heads]` and
    /// shifts its keys by that map's μ); empty otherwise, when every stream uses `map`.
    head_maps: Vec<AnyFeatureMap<'w, T>>,
    /// FAVOR+'s states, one per (batch, head); empty for hybrid attention.
    heads: Vec<HeadState<T>>,
    /// Hybrid attention's states, one per (batch, head), and its shape; empty otherwise.
    hybrid: Vec<HybridHeadState<T>>,
    /// A compat layer's peer attention (favor-core's `PeerAttention`, causal) and its
    /// causal-safe states (`PeerMemory`), one per (batch, head); `None` and empty otherwise.
    peer: Option<favor_core::PeerAttention<'w, T>>,
    peers: Vec<PeerHeadState<T>>,
    /// Scratch of a step: every (batch, head)'s key and query, mapped in one GEMM
    /// ([`favor_core::MappedTokens`]); kept so a step allocates nothing.
    mapped: Vec<T>,
}

/// Which feature map each stream uses: borrowed apart from the states, so a caller can step
/// the states mutably while it reads the maps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Maps<'a, 'w, T> {
    shared: &'a AnyFeatureMap<'w, T>,
    per_head: &'a [AnyFeatureMap<'w, T>],
}

impl<'a, 'w, T: Real> Maps<'a, 'w, T> {
    /// Stream i uses `per_head[i % per_head.len()]`, or `shared` when `per_head` is empty.
    pub(crate) fn new(
        shared: &'a AnyFeatureMap<'w, T>,
        per_head: &'a [AnyFeatureMap<'w, T>],
    ) -> Self {
        Self { shared, per_head }
    }

    /// Stream i's (= batch · H + head) feature map.
    pub(crate) fn of(self, i: usize) -> &'a AnyFeatureMap<'w, T> {
        match self.per_head.len() {
            0 => self.shared,
            h => &self.per_head[i % h],
        }
    }

    /// Whether every stream shares one map (which lets a step map all heads in one GEMM).
    pub(crate) fn shared(self) -> bool {
        self.per_head.is_empty()
    }

    /// Stream i's keys as its map sees them: shifted by a data-aware map's μ into `buf`, or
    /// `k` itself; favor-core's errors go through `core`.
    pub(crate) fn keys<'k>(
        self,
        i: usize,
        k: &'k [T],
        buf: &'k mut Vec<T>,
        core: impl Fn(favor_core::Error) -> Error,
    ) -> Result<&'k [T]> {
        match self.of(i) {
            AnyFeatureMap::DataAware(phi) => crate::data_aware::shifted_keys(phi, k, buf, core),
            _ => Ok(k),
        }
    }
}

/// A favor-core stream's memory between calls.
pub(crate) type HeadState<T> = favor_core::StreamMemory<T, Vec<T>>;

/// A favor-core hybrid stream's memory between calls.
pub(crate) type HybridHeadState<T> = favor_core::HybridMemory<T, Vec<T>>;

/// A favor-core peer stream's memory between calls (compat layers).
pub(crate) type PeerHeadState<T> = favor_core::PeerMemory<T, Vec<T>>;

/// `$e` with `$s` the states (and `$w` the weights) in their precision.
macro_rules! states {
    ($self:expr, $w:pat, $s:ident => $e:expr) => {
        match $self {
            States::F32(c) => c.with_dependent(|$w, $s| $e),
            States::F64(c) => c.with_dependent(|$w, $s| $e),
        }
    };
    (mut $self:expr, $w:pat, $s:ident => $e:expr) => {
        match $self {
            States::F32(c) => c.with_dependent_mut(|$w, $s| $e),
            States::F64(c) => c.with_dependent_mut(|$w, $s| $e),
        }
    };
}

impl Stream {
    pub(crate) fn new(cfg: Config, weights: Arc<Weights>, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config("a stream needs batch > 0".into()));
        }
        let n = batch
            .checked_mul(cfg.heads)
            .ok_or_else(|| Error::Config(format!("a stream of batch {batch} is too large")))?;
        let owner = || Owner {
            weights,
            data_aware: cfg.data_aware.clone(),
        };
        let states = match cfg.precision {
            Precision::F32 => {
                States::F32(Owned32::try_new(owner(), |o| HeadStates::new(&cfg, o, n))?)
            }
            Precision::F64 => {
                States::F64(Owned64::try_new(owner(), |o| HeadStates::new(&cfg, o, n))?)
            }
        };
        Ok(Self {
            cfg,
            batch,
            position: 0,
            states,
        })
    }

    /// The projection this stream runs with (shared with the `Performer` it came from, as it
    /// was when the stream was made).
    pub fn weights(&self) -> Arc<Weights> {
        match &self.states {
            States::F32(c) => Arc::clone(&c.borrow_owner().weights),
            States::F64(c) => Arc::clone(&c.borrow_owner().weights),
        }
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens fed so far (the same for every sequence).
    pub fn tokens(&self) -> u64 {
        self.position
    }

    /// Bytes of state, whatever the number of tokens seen: per (batch, head) favor-core's
    /// stream buffer (`Stream::buffer_len`: the compensated sums `2·(m·dv + m)`, the ring
    /// `RING·(m + dv) + 1`, four feature and two input rows), and the step's scratch for
    /// mapping every head's key and query at once (`2·(m + d + 1)` per head).
    pub fn memory_bytes(&self) -> usize {
        states!(&self.states, _, s => {
            s.heads.iter().map(|h| size_of_val(&h.buffer()[..])).sum::<usize>()
                + s.hybrid.iter().map(|h| size_of_val(&h.buffer()[..])).sum::<usize>()
                + s.peers.iter().map(|h| size_of_val(&h.buffer()[..])).sum::<usize>()
                + size_of_val(&s.mapped[..])
        })
    }

    /// Forgets every token.
    pub fn reset(&mut self) {
        self.position = 0;
        states!(mut &mut self.states, _, s => {
            s.heads.iter_mut().for_each(HeadState::reset);
            s.hybrid.iter_mut().for_each(HybridHeadState::reset);
            s.peers.iter_mut().for_each(PeerHeadState::reset);
        })
    }

    /// Absorbs `len` tokens at once through the chunked causal path (`[B, H, len, d]`
    /// queries, `[B, Hkv, len, d]` keys and `[B, Hkv, len, dv]` values; any strides) and returns their outputs
    /// `[B, H, len, dv]`: the same bits as causal [`Performer::forward`](crate::Performer::forward) on those tokens from
    /// an empty stream (for a compat layer: its causal-safe variant, see [`Stream`]). On
    /// error the state is unchanged.
    pub fn prefill<E: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
    ) -> Result<Tensor> {
        let len = self.check(q, k, v, None)?;
        let shape = [self.batch, self.cfg.heads, len, self.cfg.value_dim];
        // Allocated before the state changes.
        let mut out = Tensor::zeros(shape)?;
        self.absorb([q, k, v], len, false, out.data_mut())?;
        Ok(out)
    }

    /// [`prefill`](Self::prefill) into a caller buffer of `B·H·len·dv` elements
    /// (`[B, H, len, dv]`, row-major) of any element type, rounded once from the compute
    /// precision: an f64 layer's f16 outputs are not rounded through f32 first. On error the
    /// state and `out` are unchanged.
    ///
    /// ```
    /// use favor_tensor::{Performer, Precision, TensorView};
    /// use half::f16;
    /// let (h, l, d) = (2, 6, 8);
    /// let attn = Performer::builder(d)
    ///     .heads(h)
    ///     .features(16)
    ///     .causal(true)
    ///     .precision(Precision::F64)
    ///     .build()
    ///     .unwrap();
    /// let x: Vec<f16> = (0..h * l * d).map(|i| f16::from_f32((i % 7) as f32 / 10.0)).collect();
    /// let x = TensorView::new([1, h, l, d], &x).unwrap();
    /// let mut stream = attn.stream(1).unwrap();
    /// let mut out = vec![f16::ZERO; h * l * d];
    /// stream.prefill_into(x, x, x, &mut out).unwrap();
    /// assert_eq!(stream.tokens(), l as u64);
    /// ```
    pub fn prefill_into<E: Element, O: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
        out: &mut [O],
    ) -> Result<()> {
        let len = self.check(q, k, v, None)?;
        self.check_out(len, out.len())?;
        self.absorb([q, k, v], len, false, out)
    }

    /// Refuses an output buffer that is not `B·H·len·dv` elements long.
    fn check_out(&self, len: usize, got: usize) -> Result<()> {
        let shape = [self.batch, self.cfg.heads, len, self.cfg.value_dim];
        let want = crate::tensor::element_count("out", shape)?;
        if got != want {
            return Err(Error::Shape {
                tensor: "out",
                expected: format!("[{want}] (batch × heads × len × value_dim)"),
                got: vec![got],
            });
        }
        Ok(())
    }

    /// Runs `len` checked tokens (a decoding `step`, or a prefill) through every head into
    /// `out`, and advances the token count.
    fn absorb<E: Element, O: Element>(
        &mut self,
        [q, k, v]: [TensorView<'_, E>; 3],
        len: usize,
        step: bool,
        out: &mut [O],
    ) -> Result<()> {
        let cfg = &self.cfg;
        let per_head = len * cfg.value_dim;
        states!(mut &mut self.states, _, s => {
            let io = StepIo { q: &q, k: &k, v: &v, len, step };
            with_pieces(out, per_head, |out| Real::stream(s, cfg, &io, out))
        })?;
        self.position += len as u64;
        Ok(())
    }

    /// One decoding step: token `t`'s `[B, H, 1, d]` query, `[B, Hkv, 1, d]` key and
    /// `[B, Hkv, 1, dv]` value; returns its `[B, H, 1, dv]` output. On error the state is unchanged.
    pub fn step<E: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
    ) -> Result<Tensor> {
        let shape = [self.batch, self.cfg.heads, 1, self.cfg.value_dim];
        let mut out = Tensor::zeros(shape)?;
        self.step_into(q, k, v, out.data_mut())?;
        Ok(out)
    }

    /// [`step`](Self::step) into a caller buffer of `B·H·dv` elements of any element type
    /// (rounded once from the compute precision), allocating nothing when inputs and output
    /// are of the compute type.
    pub fn step_into<E: Element, O: Element>(
        &mut self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
        out: &mut [O],
    ) -> Result<()> {
        self.check(q, k, v, Some(1))?;
        self.check_out(1, out.len())?;
        self.absorb([q, k, v], 1, true, out)
    }

    /// Checks shapes and finiteness before anything changes; returns the token count.
    fn check<E: Element>(
        &self,
        q: TensorView<'_, E>,
        k: TensorView<'_, E>,
        v: TensorView<'_, E>,
        len: Option<usize>,
    ) -> Result<usize> {
        let cfg = &self.cfg;
        let (b, h, hkv) = (Some(self.batch), Some(cfg.heads), Some(cfg.kv_heads));
        check_shape("q", &q, [b, h, len, Some(cfg.dim)])?;
        let len = Some(q.shape()[2]);
        check_shape("k", &k, [b, hkv, len, Some(cfg.dim)])?;
        check_shape("v", &v, [b, hkv, len, Some(cfg.value_dim)])?;
        // favor-core checks each head, but a NaN in the last head must not leave the first
        // ones updated: check everything first, as the precision will see it, together with
        // the supported range (see `Performer`) for every key absorbed so far.
        let len = q.shape()[2];
        let keys = self
            .position
            .checked_add(len as u64)
            .filter(|&n| n < u64::MAX)
            .ok_or_else(|| Error::OutOfRange {
                tensor: "q",
                reason: format!(
                    "{len} more tokens would overflow the stream's token count ({})",
                    self.position
                ),
            })?;
        let m = cfg.feature_dim();
        // And favor-core's own range, for every head at once: a head that refused its part
        // after others ran would leave the stream half-updated.
        states!(&self.states, o, s => {
            let w = o.data_aware.as_ref().map_or(o.weights.row_norm, |d| d.row_norm());
            let maxima = crate::range::check(cfg, w, m, &q, &k, &v, keys)?;
            s.core_range(cfg, maxima, keys)
        })?;
        Ok(q.shape()[2])
    }

    /// The state as bytes: a versioned little-endian header (magic `FAVT`, version,
    /// precision, batch, heads, bytes per head, tokens fed), then for every (batch, head) its
    /// indices and favor-core's snapshot of its state (which carries the feature map's
    /// fingerprint and its own checksum), then a CRC-32 of everything before it.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        states!(&self.states, _, s => s.snapshot(&self.cfg, self.batch, self.position))
    }

    /// Replaces the state with one [`snapshot`](Self::snapshot) wrote (this version or
    /// version 1) for a stream of the same layer (projection, kernel, dims, precision) and
    /// batch. Corrupted (checksum), malformed, reordered or mismatched bytes give
    /// [`Error::Snapshot`] and leave the state unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let (cfg, b) = (&self.cfg, self.batch);
        self.position = states!(mut &mut self.states, _, s => s.restore(cfg, b, bytes))?;
        Ok(())
    }
}

impl<'w, T: Real> HeadStates<'w, T> {
    fn new(cfg: &Config, owner: &'w Owner, n: usize) -> Result<Self> {
        let head_maps = match &owner.data_aware {
            Some(d) => (0..cfg.heads)
                .map(|h| {
                    d.head_map::<T>(h, cfg.normalizer)
                        .map(AnyFeatureMap::DataAware)
                })
                .collect::<favor_core::Result<Vec<_>>>()
                .map_err(crate::error::setup)?,
            None => Vec::new(),
        };
        // A calibrated layer has no shared projection; its heads' maps all have the same
        // dimensions, so the first one sizes every buffer.
        let map = match head_maps.first() {
            Some(first) => *first,
            None => cfg.map::<T>(&owner.weights)?,
        };
        type Core<'w, T> = favor_core::Stream<'w, T, AnyFeatureMap<'w, T>, favor_core::Scalar>;
        type Hybrid<'w, T> =
            favor_core::HybridStream<'w, T, AnyFeatureMap<'w, T>, favor_core::Scalar>;
        let peer = match cfg.compat {
            favor_core::Compat::None => None,
            _ => Some(cfg.peer::<T>(&owner.weights)?.causal(true)),
        };
        let len = match (cfg.hybrid, peer) {
            (_, Some(p)) => PeerHeadState::<T>::buffer_len(p.feature_dim(), cfg.value_dim),
            (None, None) => Core::<T>::buffer_len(&map, cfg.value_dim),
            (Some(shape), None) => Hybrid::<T>::buffer_len(&map, cfg.value_dim, shape),
        }
        .map_err(crate::error::setup)?;
        // `n` is the caller's batch × heads: whichever allocation fails, report the whole
        // state's size, the number the caller can act on. A hybrid step maps per head (its
        // window needs the raw keys): no shared mapping scratch.
        let mapped_len = match (cfg.hybrid, head_maps.is_empty() && peer.is_none()) {
            (None, true) => {
                crate::alloc::len("stream state", favor_core::mapped_tokens_len(&map, n))?
            }
            // Per-head maps step per head, too.
            _ => 0,
        };
        let head_bytes =
            crate::alloc::bytes_of::<T>(len).and_then(|b| b.checked_add(size_of::<HeadState<T>>()));
        let total = (head_bytes.and_then(|b| b.checked_mul(n)))
            .zip(crate::alloc::bytes_of::<T>(mapped_len))
            .and_then(|(a, b)| a.checked_add(b));
        let fail = |_: Error| Error::Alloc {
            what: "stream state",
            bytes: total,
        };
        // Many small blocks: ask for their total once, or each would succeed until the
        // system runs out (see `alloc::available`).
        if !total.is_some_and(crate::alloc::available) {
            return Err(Error::Alloc {
                what: "stream state",
                bytes: total,
            });
        }
        let mut bufs: Vec<Vec<T>> =
            crate::alloc::try_with_capacity("stream state", n).map_err(fail)?;
        for _ in 0..n {
            bufs.push(crate::alloc::try_zeros("stream state", len).map_err(fail)?);
        }
        let (mut heads, mut hybrid, mut peers) = (Vec::new(), Vec::new(), Vec::new());
        match (cfg.hybrid, peer) {
            (_, Some(_)) => peers = bufs.into_iter().map(PeerHeadState::new).collect(),
            (None, None) => heads = bufs.into_iter().map(HeadState::new).collect(),
            (Some(_), None) => hybrid = bufs.into_iter().map(HybridHeadState::new).collect(),
        }
        let mapped = crate::alloc::try_zeros("stream state", mapped_len).map_err(fail)?;
        Ok(Self {
            map,
            head_maps,
            heads,
            hybrid,
            peer,
            peers,
            mapped,
        })
    }

    /// Every stream's feature map.
    pub(crate) fn maps(&self) -> Maps<'_, 'w, T> {
        Maps::new(&self.map, &self.head_maps)
    }

    /// One prefill or step of every head ([`Real::stream`] is this, compiled once per
    /// precision).
    pub(crate) fn run(
        &mut self,
        cfg: &Config,
        io: &StepIo<'_, T>,
        out: Pieces<'_, T>,
    ) -> Result<()> {
        cfg.with_backend(run::Run {
            states: self,
            cfg,
            io,
            out,
        })
    }

    /// favor-core's supported range ([`favor_core::check_range`]) for inputs of these maxima
    /// and `keys` keys in all, for every head's map before any head steps. A calibrated
    /// head sees its keys shifted by μ, so its keys are bounded by `|k| + max|μ|`.
    fn core_range(&self, cfg: &Config, m: crate::range::Maxima, keys: u64) -> Result<()> {
        let t = |x: f64| <T as favor_core::Float>::from_f64(x);
        let maps = match self.head_maps.len() {
            0 => std::slice::from_ref(&self.map),
            _ => &self.head_maps[..],
        };
        for map in maps {
            let k_max = m.k + key_shift_max(map);
            if cfg.hybrid.is_some() {
                // Hybrid attention's exact logits.
                let limit = favor_core::hybrid_input_limit(map)
                    .map_err(crate::error::setup)?
                    .to_f64();
                if let Some((tensor, max)) =
                    [("q", m.q), ("k", k_max)].into_iter().find(|x| x.1 > limit)
                {
                    return Err(Error::OutOfRange {
                        tensor,
                        reason: format!(
                            "an entry of magnitude {max:e} exceeds {limit:e}, the largest whose \
                             exact softmax logits (hybrid attention's window) stay finite"
                        ),
                    });
                }
            }
            favor_core::check_range(map, t(m.q), t(k_max), t(m.v), keys).map_err(|e| {
                let tensor = match e {
                    favor_core::Error::OutOfRange { what, .. } => what,
                    _ => "input",
                };
                Error::OutOfRange {
                    tensor,
                    reason: format!("{e}"),
                }
            })?;
        }
        Ok(())
    }
}

/// The largest |μᵢ| a data-aware map shifts keys by (0 for other maps).
fn key_shift_max<T: Real>(map: &AnyFeatureMap<'_, T>) -> f64 {
    match map {
        AnyFeatureMap::DataAware(phi) => phi
            .key_shift()
            .iter()
            .fold(0f64, |a, &x| a.max(favor_core::Float::to_f64(x).abs())),
        _ => 0.0,
    }
}
