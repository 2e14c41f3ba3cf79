//! Peer conventions: performer-pytorch's and google-research JAX `fast_attention`'s feature
//! maps, stabilisers and denominator rules (listed on [`Compat`]), and [`PeerAttention`],
//! which computes attention with them.

mod snapshot;
mod stream;

pub use snapshot::PEER_SNAPSHOT_VERSION;
pub use stream::{PeerMemory, PeerStream};

use crate::attention::Shape;
use crate::error::{Result, check};
use crate::inputs::Qkv;
use crate::state::guard;
use crate::{
    Accum, Activation, FeatureMap, Float, Generalized, Kernels, MatMut, MatRef, PositiveSoftmax,
    ProjectionRef,
};

/// Which peer's conventions attention follows: the feature maps, stabilisers and denominator
/// rules of performer-pytorch and google-research's JAX `fast_attention`, so that a model
/// trained with either gives the same outputs when served here.
///
/// Both peers compute FAVOR+ with the same algebra as favor but with their own constants, and
/// a model trained with them has learnt those constants: served with favor's own (unbiased,
/// online-stabilised) definition its outputs differ from the peer's by more than their own
/// size once q and k entries are of order 1 (measured in the README, "Serving models trained
/// elsewhere"). The differences, from their code:
///
/// | | performer-pytorch 1.1.4 | JAX `fast_attention` |
/// |---|---|---|
/// | softmax feature | `m^{-1/2}(exp(u − ½\|x'\|² − M) + 1e-4)` | the same with `1e-6` |
/// | query shift M | max of `u = w·x'` over the row | the same |
/// | key shift M | max of u over the head's (L, m) block | the same |
/// | generalized feature | `f(w·x') + 1e-3`, x' = d^{-1/4}x | `f(w·x) + 1e-3` (no normaliser) |
/// | bidirectional denominator | `R = q'·Σk'` | softmax: `R + 2δ·[\|R\| ≤ δ]`, δ = 1e-6; generalized: R |
/// | causal denominator | `q'·(z + 1e-6)` (on every element of z) | as bidirectional |
///
/// The key shift is not a per-query constant, so it does not cancel: it sets the weight of
/// the ε term against the exponential, and taken over the whole sequence it lets future keys
/// change past outputs of the peers' causal attention (lucidrains/performer-pytorch #82,
/// google-research #753). [`PeerAttention`] reproduces that definition faithfully, which makes
/// its causal mode necessarily whole-sequence (a first pass over every key finds M); it is
/// the peers' definition, leak included, and not favor's streaming causal attention.
/// [`PeerStream`] is the closest causal-safe variant: the same formulas with M over the keys
/// seen so far, token by token (its deviation from the peer is measured in the README).
///
/// Sums are plain (no compensation, no online stabiliser), as the peers compute them; the
/// only addition is favor's denominator floor ([`denominator_floor`](crate::denominator_floor)),
/// which changes nothing but a row whose peer denominator is exactly 0 (the peer answers
/// NaN there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compat {
    /// favor's own definition: unbiased features, online stabiliser, no ε. Default.
    #[default]
    None,
    /// lucidrains' performer-pytorch (1.1.4): ε = 10⁻⁴ in softmax features, key max per
    /// (batch, head), causal denominator `q'·(z + 10⁻⁶)`; generalized kernels with the
    /// d^{-1/4} data normaliser on.
    PerformerPytorch,
    /// google-research `performer/fast_attention/jax`: ε = δ = 10⁻⁶ (`numerical_stabilizer`)
    /// in softmax features, key max per (batch, head), softmax denominator guard
    /// `R + 2δ·[|R| ≤ δ]`; generalized kernels without the data normaliser and without the
    /// guard (their `numerical_stabilizer` defaults to 0).
    GoogleJax,
}

/// How a peer turns the estimated denominator R into the divisor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PeerDenominator {
    /// `R` as it is (performer-pytorch, bidirectional).
    Plain,
    /// `q'·(z + δ)`: δ added to every element of the key sum (performer-pytorch, causal).
    KeySumEpsilon(f64),
    /// `R + 2δ·[|R| ≤ δ]` (JAX).
    Guard(f64),
}

impl Compat {
    /// Parses `none`, `performer-pytorch` (or `pytorch`) and `google-jax` (or `jax`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" | "favor" => Some(Compat::None),
            "performer-pytorch" | "pytorch" => Some(Compat::PerformerPytorch),
            "google-jax" | "jax" => Some(Compat::GoogleJax),
            _ => None,
        }
    }

    /// The name [`parse`](Self::parse) reads.
    pub fn name(self) -> &'static str {
        match self {
            Compat::None => "none",
            Compat::PerformerPytorch => "performer-pytorch",
            Compat::GoogleJax => "google-jax",
        }
    }

    /// ε inside the softmax features (0 for favor's own).
    pub fn softmax_epsilon(self) -> f64 {
        match self {
            Compat::None => 0.0,
            Compat::PerformerPytorch => 1e-4,
            Compat::GoogleJax => 1e-6,
        }
    }

    /// The peer's default ε of generalized (ReLU, …) features: 10⁻³ for all.
    pub fn generalized_epsilon(self) -> f64 {
        1e-3
    }

    /// Whether the peer applies the d^{-1/4} data normaliser to generalized kernels by
    /// default (softmax always has it).
    pub fn generalized_normalizer(self) -> bool {
        matches!(self, Compat::PerformerPytorch)
    }

    /// The denominator rule of bidirectional (`causal = false`) or causal attention, with
    /// softmax or generalized features.
    pub fn denominator(self, causal: bool, softmax: bool) -> PeerDenominator {
        match (self, causal) {
            (Compat::None, _) | (Compat::PerformerPytorch, false) => PeerDenominator::Plain,
            (Compat::PerformerPytorch, true) => PeerDenominator::KeySumEpsilon(1e-6),
            (Compat::GoogleJax, _) if softmax => PeerDenominator::Guard(1e-6),
            (Compat::GoogleJax, _) => PeerDenominator::Plain,
        }
    }
}

impl PeerDenominator {
    /// The divisor for an estimate `r` whose query features sum to `q_sum`, floored away
    /// from 0 as favor's own paths are.
    #[inline]
    fn apply<T: Float>(self, r: T, q_sum: T) -> T {
        let r = match self {
            PeerDenominator::Plain => r,
            PeerDenominator::KeySumEpsilon(delta) => r + T::from_f64(delta) * q_sum,
            PeerDenominator::Guard(delta) => {
                let delta = T::from_f64(delta);
                if r.abs() <= delta {
                    r + (delta + delta)
                } else {
                    r
                }
            }
        };
        guard(r)
    }
}

/// The feature kind of a [`PeerAttention`].
#[derive(Debug, Clone, Copy)]
pub enum PeerKernel<T> {
    /// Positive softmax features with the peer's ε and shifts.
    Softmax,
    /// Generalized features `f(w·x') + ε`.
    Generalized(Activation<T>),
}

/// Attention of one head exactly as a peer computes it (the conventions: [`Compat`]):
/// bidirectional,
/// or causal over the whole sequence.
///
/// ```
/// use favor_core::*;
/// let (l, d, m) = (6, 4, 8);
/// let mut w = vec![0f64; m * d];
/// projection(ProjectionKind::default(), 7, m, d, &mut w).unwrap();
/// let peer = PeerAttention::softmax(Compat::PerformerPytorch, &w, m, d).unwrap();
/// let x: Vec<f64> = (0..l * d).map(|i| (i as f64 * 0.37).sin()).collect();
/// let shape = Shape::new(l, d, d);
/// let mut scratch = vec![0.0; peer.scratch_len(shape).unwrap()];
/// let mut out = vec![0.0; l * d];
/// peer.run(&Scalar, shape, None, &x, &x, &x, &mut out, &mut scratch).unwrap();
/// assert!(out.iter().all(|o| o.is_finite()));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PeerAttention<'w, T> {
    compat: Compat,
    kernel: PeerKernel<T>,
    w: Option<&'w [T]>,
    wt: Option<&'w [T]>,
    m: usize,
    d: usize,
    eps: T,
    normalize: bool,
    causal: bool,
    block: usize,
    /// favor's own map over the same W, ε and normaliser: the supported range, and the
    /// generalized features themselves. Built (and W checked) once, kept in step by the
    /// setters.
    reference: ReferenceMap<'w, T>,
}

/// Rows per block of features (keys and queries alike; the causal chunk).
const PEER_BLOCK: usize = 64;

impl<'w, T: Float> PeerAttention<'w, T> {
    /// Softmax attention as `compat`'s peer computes it, over the projection `w`
    /// (`features × dim`, row-major: the peer's `projection_matrix`), bidirectional.
    pub fn softmax(compat: Compat, w: &'w [T], features: usize, dim: usize) -> Result<Self> {
        let reference = ReferenceMap::Softmax(PositiveSoftmax::new(w, features, dim)?);
        Ok(Self {
            compat,
            kernel: PeerKernel::Softmax,
            w: Some(w),
            wt: None,
            m: features,
            d: dim,
            eps: T::from_f64(compat.softmax_epsilon()),
            normalize: true,
            causal: false,
            block: PEER_BLOCK,
            reference,
        })
    }

    /// Generalized attention `f(w·x') + ε` as `compat`'s peer computes it, with the
    /// projection `w` (`features × dim`) or none (`w = None`, M = d), bidirectional; ε and
    /// the data normaliser start at the peer's defaults.
    pub fn generalized(
        compat: Compat,
        w: Option<&'w [T]>,
        features: usize,
        dim: usize,
        f: Activation<T>,
    ) -> Result<Self> {
        let eps = T::from_f64(compat.generalized_epsilon());
        let normalize = compat.generalized_normalizer();
        let g = match w {
            Some(w) => Generalized::new(w, features, dim, f)?,
            None => Generalized::without_projection(dim, f)?,
        };
        let reference =
            ReferenceMap::Generalized(g.with_epsilon(eps)?.with_data_normalizer(normalize));
        let m = if w.is_some() { features } else { dim };
        Ok(Self {
            compat,
            kernel: PeerKernel::Generalized(f),
            w,
            wt: None,
            m,
            d: dim,
            eps,
            normalize,
            causal: false,
            block: PEER_BLOCK,
            reference,
        })
    }

    /// Causal attention (query i sees keys 0..=i), with the peer's whole-sequence key shift.
    pub fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// Sets ε inside the features (finite, ≥ 0).
    pub fn with_epsilon(mut self, eps: T) -> Result<Self> {
        self.eps = crate::features::checked_epsilon(eps)?;
        if let ReferenceMap::Generalized(g) = self.reference {
            self.reference = ReferenceMap::Generalized(g.with_epsilon(eps)?);
        }
        Ok(self)
    }

    /// Turns the d^{-1/4} data normaliser on or off (the peers' `normalize_data`; softmax
    /// starts with it on, generalized kernels at the peer's default).
    pub fn with_data_normalizer(mut self, on: bool) -> Self {
        self.normalize = on;
        self.reference = match self.reference {
            ReferenceMap::Softmax(p) => ReferenceMap::Softmax(p.with_data_normalizer(on)),
            ReferenceMap::Generalized(g) => ReferenceMap::Generalized(g.with_data_normalizer(on)),
        };
        self
    }

    /// Gives Wᵀ as well (`dim × features`), checked to be exactly the transpose of W.
    pub fn with_transposed_projection(mut self, wt: &'w [T]) -> Result<Self> {
        self.reference = match self.reference {
            ReferenceMap::Softmax(p) => ReferenceMap::Softmax(p.with_transposed_projection(wt)?),
            ReferenceMap::Generalized(g) => {
                ReferenceMap::Generalized(g.with_transposed_projection(wt)?)
            }
        };
        self.wt = Some(wt);
        Ok(self)
    }

    /// The peer whose conventions this follows.
    pub fn compat(&self) -> Compat {
        self.compat
    }

    /// Feature dimension M.
    pub fn feature_dim(&self) -> usize {
        self.m
    }

    /// A digest of everything that defines the peer's features (conventions, kernel, W, ε,
    /// normaliser): what a [`PeerMemory`] snapshot is tied to.
    pub fn fingerprint(&self) -> u64 {
        let mut h = crate::features::Fnv::new(0xc0);
        h.u64(match self.compat {
            Compat::None => 0,
            Compat::PerformerPytorch => 1,
            Compat::GoogleJax => 2,
        });
        h.u64(self.eps.to_f64().to_bits());
        h.u64(u64::from(self.normalize));
        h.u64(match self.reference {
            ReferenceMap::Softmax(f) => FeatureMap::fingerprint(&f),
            ReferenceMap::Generalized(f) => FeatureMap::fingerprint(&f),
        });
        h.0
    }

    /// Whether the key shift matters (softmax) — generalized features have none.
    pub fn needs_key_max(&self) -> bool {
        matches!(self.kernel, PeerKernel::Softmax)
    }

    /// The data scale s of `x' = s·x`.
    fn scale(&self) -> T {
        if self.normalize {
            T::from_f64(libm::pow(self.d as f64, -0.25))
        } else {
            T::one()
        }
    }

    fn projection(&self) -> Option<ProjectionRef<'w, T>> {
        self.w.map(|w| ProjectionRef {
            w,
            wt: self.wt,
            features: self.m,
            dim: self.d,
        })
    }

    /// Scratch elements [`key_max`](Self::key_max) needs.
    pub fn key_max_scratch_len(&self) -> Result<usize> {
        check::mul(self.block, check::add(self.m, 1)?)
    }

    /// The largest `u = w·x'` over the `rows` key rows `k` (row-major, stride d): the key
    /// shift M of one head, as both peers take it. `-∞` for a generalized kernel (no shift).
    pub fn key_max<K: Kernels<T>>(
        &self,
        kernels: &K,
        k: &[T],
        rows: usize,
        scratch: &mut [T],
    ) -> Result<T> {
        check::exact("k", k, check::mul(rows, self.d)?)?;
        check::finite("k", k, self.d)?;
        check::room("scratch", scratch, self.key_max_scratch_len()?)?;
        let Some(p) = self.projection().filter(|_| self.needs_key_max()) else {
            return Ok(T::neg_infinity());
        };
        let (u, maxima) = scratch.split_at_mut(self.block * self.m);
        let mut best = T::neg_infinity();
        for start in (0..rows).step_by(self.block) {
            let n = self.block.min(rows - start);
            let x = MatRef::row_major(&k[start * self.d..(start + n) * self.d], n, self.d);
            let o = MatMut::row_major(&mut u[..n * self.m], n, self.m);
            kernels.project(x, p, self.scale(), o, &mut maxima[..n]);
            best = best.max(kernels.max(&maxima[..n]));
        }
        Ok(best)
    }

    /// Scratch elements [`run`](Self::run) needs for `shape`.
    pub fn scratch_len(&self, shape: Shape) -> Result<usize> {
        let (m, dv, b) = (
            self.m,
            check::nonzero("value_dim", shape.value_dim)?,
            self.block,
        );
        let state = check::add(check::mul(m, dv)?, m)?;
        // Query and key feature blocks, their row values, and the causal chunk's tile.
        let blocks = check::mul(check::mul(2, b)?, check::add(m, 1)?)?;
        let tile = check::add(check::mul(b, b)?, b)?;
        check::add(check::add(state, blocks)?, tile)
    }

    /// Writes the peer's features of `rows` rows of `x` into `out` (rows × M): queries shift
    /// each row by its own largest `u` (`key_max = None`), keys by `key_max`; softmax
    /// features get `eps` inside (generalized ones always their own ε). `sums` receives each
    /// row's feature sum.
    fn features<K: Kernels<T>>(
        &self,
        kernels: &K,
        (x, rows): (&[T], usize),
        (key_max, eps): (Option<T>, T),
        out: &mut [T],
        sums: &mut [T],
    ) -> Result<()> {
        let m = self.m;
        let out = &mut out[..rows * m];
        match self.kernel {
            PeerKernel::Generalized(_) => {
                // Generalized features carry no shift, so favor's own map computes them as
                // the peers do: f(s·w·x) + ε, log-scale 0.
                let ReferenceMap::Generalized(g) = self.reference else {
                    unreachable!("a generalized peer has a generalized reference map");
                };
                g.map_rows(kernels, x, rows, out, sums)?;
            }
            PeerKernel::Softmax => {
                self.project(kernels, (x, rows), out, sums)?;
                self.softmax_from_projections(kernels, (x, rows), (key_max, eps), out, sums);
            }
        }
        Self::row_sums(m, rows, out, sums);
        Ok(())
    }

    /// `u = w·x'` of `rows` rows of `x` into `out` (rows × M), each row's largest u into
    /// `maxima`: the first half of a softmax feature, apart so that a stream can take its
    /// running key shift from a key's projection before finishing its features.
    fn project<K: Kernels<T>>(
        &self,
        kernels: &K,
        (x, rows): (&[T], usize),
        out: &mut [T],
        maxima: &mut [T],
    ) -> Result<()> {
        let p = self.projection().ok_or(crate::Error::InvalidParameter {
            what: "softmax features need a projection",
        })?;
        let xm = MatRef::row_major(x, rows, self.d);
        let o = MatMut::row_major(&mut out[..rows * self.m], rows, self.m);
        kernels.project(xm, p, self.scale(), o, &mut maxima[..rows]);
        Ok(())
    }

    /// Turns [`project`](Self::project)'s `u` (in `out`) into the peer's softmax features
    /// `m^{-1/2}(exp(u − s²|x|²/2 − M) + ε)`: M is `key_max`, or each row's own largest u
    /// (in `maxima`) for queries.
    fn softmax_from_projections<K: Kernels<T>>(
        &self,
        kernels: &K,
        (x, rows): (&[T], usize),
        (key_max, eps): (Option<T>, T),
        out: &mut [T],
        maxima: &[T],
    ) {
        let (m, d, s) = (self.m, self.d, self.scale());
        let ratio = T::one() / T::from_usize(m).libm_sqrt();
        let half = T::from_f64(0.5);
        for r in 0..rows {
            let xr = &x[r * d..(r + 1) * d];
            // The peers' `diag_data`: |x|²/2 · s², subtracted before the shift.
            let h = kernels.dot(xr, xr) * half * s * s;
            let shift = key_max.unwrap_or(maxima[r]);
            let row = &mut out[r * m..(r + 1) * m];
            for u in row.iter_mut() {
                *u = *u - h;
            }
            kernels.exp_shift(row, shift);
            kernels.activation(row, Activation::Custom(|x| x), eps);
            kernels.scale(ratio, row);
        }
    }

    /// Each of `rows` feature rows' sum (plain, as the peers sum).
    fn row_sums(m: usize, rows: usize, out: &[T], sums: &mut [T]) {
        for r in 0..rows {
            let row = &out[r * m..(r + 1) * m];
            sums[r] = row.iter().fold(T::zero(), |a, &b| a + b);
        }
    }

    /// One head's attention as the peer computes it: `q` (queries × d), `k` (keys × d), `v`
    /// (keys × dv) row-major, into `out` (queries × dv). `key_max` is the softmax key shift:
    /// `None` takes this head's own, as both peers do; a caller whose peer variant shares one
    /// shift over several heads passes it (an error if it is below this head's own
    /// [`key_max`](Self::key_max)). Causal attention needs queries == keys.
    ///
    /// The inputs must be finite and within the supported range of favor's own map over the
    /// same W (crate docs, "Supported range"); the outputs are then finite.
    #[allow(clippy::too_many_arguments)]
    pub fn run<K: Kernels<T>>(
        &self,
        kernels: &K,
        shape: Shape,
        key_max: Option<T>,
        q: &[T],
        k: &[T],
        v: &[T],
        out: &mut [T],
        scratch: &mut [T],
    ) -> Result<()> {
        let x = Qkv::new(q, k, v);
        self.reference.check_inputs(shape, x, out, 0)?;
        if self.causal {
            check::same_dim(
                "causal attention needs queries == keys",
                shape.keys,
                shape.queries,
            )?;
        }
        check::room("scratch", scratch, self.scratch_len(shape)?)?;
        let shift = if self.needs_key_max() {
            let own = self.key_max(kernels, k, shape.keys, scratch)?;
            match key_max {
                Some(given) if !(given >= own && given.is_finite()) => {
                    return Err(crate::Error::InvalidParameter {
                        what: "key_max must be finite and at least this head's largest key projection",
                    });
                }
                Some(given) => Some(given),
                None => Some(own),
            }
        } else {
            None
        };
        let (m, dv, b) = (self.m, shape.value_dim, self.block);
        let (state, rest) = scratch.split_at_mut(m * dv + m);
        let (qf, rest) = rest.split_at_mut(b * m);
        let (kf, rest) = rest.split_at_mut(b * m);
        let (qs, rest) = rest.split_at_mut(b);
        let (ks, rest) = rest.split_at_mut(b);
        let (tile, rest) = rest.split_at_mut(b * b);
        let den = &mut rest[..b];
        state.fill(T::zero());
        let rule = self.compat.denominator(self.causal, self.needs_key_max());
        let io = PeerIo { q, k, v, shape };
        let bufs = PeerBufs {
            state,
            qf,
            kf,
            qs,
            ks,
            tile,
            den,
        };
        if self.causal {
            self.causal_chunks(kernels, io, shift, rule, out, bufs)
        } else {
            self.bidirectional(kernels, io, shift, rule, out, bufs)
        }
    }

    fn bidirectional<K: Kernels<T>>(
        &self,
        kernels: &K,
        PeerIo { q, k, v, shape }: PeerIo<'_, T>,
        shift: Option<T>,
        rule: PeerDenominator,
        out: &mut [T],
        bufs: PeerBufs<'_, T>,
    ) -> Result<()> {
        let (m, d, dv, b) = (self.m, self.d, shape.value_dim, self.block);
        let (s, z) = bufs.state.split_at_mut(m * dv);
        for start in (0..shape.keys).step_by(b) {
            let n = b.min(shape.keys - start);
            let kb = &k[start * d..(start + n) * d];
            self.features(kernels, (kb, n), (shift, self.eps), bufs.kf, bufs.ks)?;
            let vb = &v[start * dv..(start + n) * dv];
            absorb(kernels, (&mut *s, &mut *z), &bufs.kf[..n * m], vb, n);
        }
        let (s, z) = (&*s, &*z);
        for start in (0..shape.queries).step_by(b) {
            let n = b.min(shape.queries - start);
            let qb = &q[start * d..(start + n) * d];
            self.features(kernels, (qb, n), (None, self.eps), bufs.qf, bufs.qs)?;
            let o = &mut out[start * dv..(start + n) * dv];
            let qfm = MatRef::row_major(&bufs.qf[..n * m], n, m);
            let sm = MatRef::row_major(s, m, dv);
            kernels.gemm(MatMut::row_major(o, n, dv), Accum::Overwrite, qfm, sm);
            for r in 0..n {
                bufs.den[r] = kernels.dot(&bufs.qf[r * m..(r + 1) * m], z);
            }
            divide(kernels, rule, (&bufs.den[..n], &bufs.qs[..n]), o);
        }
        Ok(())
    }

    /// Causal attention in chunks: `out_c = [(Q'_c K'_cᵀ ∘ tril) V_c + Q'_c S] / den`, then
    /// `S += K'_cᵀ V_c`, with plain sums.
    fn causal_chunks<K: Kernels<T>>(
        &self,
        kernels: &K,
        PeerIo { q, k, v, shape }: PeerIo<'_, T>,
        shift: Option<T>,
        rule: PeerDenominator,
        out: &mut [T],
        bufs: PeerBufs<'_, T>,
    ) -> Result<()> {
        let (m, d, dv, b) = (self.m, self.d, shape.value_dim, self.block);
        let (s, z) = bufs.state.split_at_mut(m * dv);
        for start in (0..shape.keys).step_by(b) {
            let n = b.min(shape.keys - start);
            let rows = start * d..(start + n) * d;
            self.features(
                kernels,
                (&k[rows.clone()], n),
                (shift, self.eps),
                bufs.kf,
                bufs.ks,
            )?;
            self.features(kernels, (&q[rows], n), (None, self.eps), bufs.qf, bufs.qs)?;
            let (qfm, kfm) = (
                MatRef::row_major(&bufs.qf[..n * m], n, m),
                MatRef::row_major(&bufs.kf[..n * m], n, m),
            );
            let vb = MatRef::row_major(&v[start * dv..(start + n) * dv], n, dv);
            let o = &mut out[start * dv..(start + n) * dv];
            let tile = &mut bufs.tile[..n * n];
            kernels.gemm(
                MatMut::row_major(tile, n, n),
                Accum::Overwrite,
                qfm,
                kfm.t(),
            );
            let (tm, sm) = (MatRef::row_major(tile, n, n), MatRef::row_major(s, m, dv));
            kernels.gemm(MatMut::row_major(o, n, dv), Accum::Overwrite, qfm, sm);
            kernels.gemm_tril(MatMut::row_major(o, n, dv), Accum::Add, tm, vb);
            for r in 0..n {
                let local = tile[r * n..r * n + r + 1]
                    .iter()
                    .fold(T::zero(), |a, &t| a + t);
                bufs.den[r] = kernels.dot(&bufs.qf[r * m..(r + 1) * m], z) + local;
            }
            divide(kernels, rule, (&bufs.den[..n], &bufs.qs[..n]), o);
            absorb(
                kernels,
                (&mut *s, &mut *z),
                &bufs.kf[..n * m],
                &v[start * dv..][..n * dv],
                n,
            );
        }
        Ok(())
    }
}

/// `S += K'ᵀV`, `z += K'ᵀ1` for `n` key feature rows `kf` and value rows `v`, plain sums.
fn absorb<T: Float, K: Kernels<T>>(
    kernels: &K,
    (s, z): (&mut [T], &mut [T]),
    kf: &[T],
    v: &[T],
    n: usize,
) {
    let (m, dv) = (z.len(), s.len() / z.len().max(1));
    let (kfm, vb) = (MatRef::row_major(kf, n, m), MatRef::row_major(v, n, dv));
    kernels.gemm(MatMut::row_major(s, m, dv), Accum::Add, kfm.t(), vb);
    for row in kf.chunks_exact(m) {
        kernels.axpy(T::one(), row, z);
    }
}

/// Divides each output row (of `out`, `dens.len()` rows) by the peer's divisor of its
/// estimated denominator and query feature sum.
fn divide<T: Float, K: Kernels<T>>(
    kernels: &K,
    rule: PeerDenominator,
    (dens, q_sums): (&[T], &[T]),
    out: &mut [T],
) {
    let dv = out.len() / dens.len().max(1);
    for ((o, &r), &qs) in out.chunks_exact_mut(dv).zip(dens).zip(q_sums) {
        kernels.scale(T::one() / rule.apply(r, qs), o);
    }
}

/// favor's own map over a peer's W, whose supported range (crate docs) the inputs must be
/// within (the peer's features are bounded as that map's are, by 1 + ε), and which computes
/// the generalized features.
#[derive(Debug, Clone, Copy)]
enum ReferenceMap<'w, T> {
    Softmax(PositiveSoftmax<'w, T>),
    Generalized(Generalized<'w, T>),
}

impl<T: Float> ReferenceMap<'_, T> {
    /// Shapes and the supported range of one call, after `prior_keys` keys.
    fn check_inputs(&self, shape: Shape, x: Qkv<'_, T>, out: &[T], prior_keys: u64) -> Result<()> {
        match self {
            ReferenceMap::Softmax(f) => shape.check_inputs(f, x, out, None, prior_keys),
            ReferenceMap::Generalized(f) => shape.check_inputs(f, x, out, None, prior_keys),
        }
    }
}

/// One head's checked inputs.
struct PeerIo<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    shape: Shape,
}

/// [`PeerAttention::run`]'s scratch, split.
struct PeerBufs<'a, T> {
    /// S (M × dv) then z (M).
    state: &'a mut [T],
    qf: &'a mut [T],
    kf: &'a mut [T],
    /// Row feature sums of the query and key blocks.
    qs: &'a mut [T],
    ks: &'a mut [T],
    tile: &'a mut [T],
    den: &'a mut [T],
}
