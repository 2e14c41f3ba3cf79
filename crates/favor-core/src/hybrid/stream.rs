//! The hybrid stream: causal hybrid attention token by token.

use crate::attention::prepare_keys;
use crate::error::{Result, check};
use crate::inputs::Qkv;
use crate::state::{PrefixState, state_len};
use crate::{FeatureMap, Float, Kernels, range};

use super::snapshot::{self, Raw, live_slots, read_into};
use super::{HybridShape, check_logits, temperature};

/// Causal hybrid attention as a recurrence. For query i the exact set is
/// `E(i) = {j < sinks} ∪ {i − w ≤ j ≤ i}`; its keys weigh `exp(τ qᵢ·kⱼ)` (τ the map's
/// [`softmax_temperature`](FeatureMap::softmax_temperature)), every earlier key weighs
/// `φ(qᵢ)·φ(kⱼ)`, and `outᵢ = Σⱼ aᵢⱼ vⱼ / Σⱼ aᵢⱼ`: one normaliser, one stabiliser for both
/// kinds of weight.
///
/// The state: the sinks' and the window's raw keys and values (a ring of `w + 1`), and a
/// [`PrefixState`] (S, z) that a key enters, through φ, when it leaves the window. Memory
/// `O((sinks + w)·(d + dv) + M·dv)`, work per token `O((sinks + w)·(d + dv) + M·(d + dv))`,
/// whatever the length.
///
/// Range (beyond [`Stream`](crate::Stream)'s): q and k entries at most `√(MAX/(4|τ|·d))`, so
/// every exact logit `τ·q·k` between any query and any stored key stays finite.
///
/// ```
/// use favor_core::*;
/// let (m, d) = (16, 4);
/// let mut w = vec![0f64; m * d];
/// projection(ProjectionKind::default(), 3, m, d, &mut w).unwrap();
/// let phi = PositiveSoftmax::new(&w, m, d).unwrap();
/// let shape = HybridShape { window: 2, sinks: 1 };
/// let mut buf = vec![0f64; HybridStream::<f64, _, Scalar>::buffer_len(&phi, d, shape).unwrap()];
/// let mut s = HybridStream::new(Scalar, &phi, d, shape, &mut buf).unwrap();
/// let mut out = [0.0; 4];
/// for t in 0..10 {
///     let x = [0.1 * t as f64, 0.2, -0.3, 0.05];
///     s.step(&x, &x, &x, &mut out).unwrap();
/// }
/// assert_eq!(s.tokens(), 10);
/// assert!(out.iter().all(|o| o.is_finite()));
/// ```
pub struct HybridStream<'a, T: Float, F: FeatureMap<T>, K: Kernels<T>> {
    kernels: K,
    fm: &'a F,
    shape: HybridShape,
    tau: T,
    /// The keys that left the window (sinks never do).
    far: PrefixState<'a, T>,
    /// Raw keys: `sinks` slots, then the window's ring of `w + 1` (token t ≥ sinks in slot
    /// `sinks + (t − sinks) mod (w + 1)`).
    keys: &'a mut [T],
    /// Their values, same slots.
    values: &'a mut [T],
    /// One weight per slot.
    weights: &'a mut [T],
    /// A leaving key's features, then the query's.
    feats: &'a mut [T],
    tokens: u64,
}

/// Keys that left the window after `tokens` tokens: what the far state holds, less any key
/// whose features vanished (log-scale −∞: absent, not counted).
pub(super) fn far_tokens(shape: HybridShape, tokens: u64) -> u64 {
    tokens.saturating_sub(shape.sinks as u64 + shape.window as u64 + 1)
}

impl<'a, T: Float, F: FeatureMap<T>, K: Kernels<T>> HybridStream<'a, T, F, K> {
    /// Slots for raw keys and values: the sinks plus the window's `w + 1`.
    fn slots(shape: HybridShape) -> Result<usize> {
        check::add(shape.sinks, check::add(shape.window, 1)?)
    }

    /// Elements the stream's buffer needs: the far state ([`state_len`]), `sinks + w + 1`
    /// raw key, value and weight slots (`d + dv + 1` each) and two feature rows (`2·M`).
    pub fn buffer_len(fm: &F, value_dim: usize, shape: HybridShape) -> Result<usize> {
        let per_slot = check::add(check::add(fm.input_dim(), value_dim)?, 1)?;
        let raw = check::mul(Self::slots(shape)?, per_slot)?;
        let feats = check::mul(2, fm.feature_dim())?;
        check::add(
            state_len(fm.feature_dim(), value_dim)?,
            check::add(raw, feats)?,
        )
    }

    /// An empty stream for values of dimension `value_dim` over the first
    /// [`buffer_len`](Self::buffer_len) elements of `buf`. Errors if the map does not
    /// estimate softmax (its temperature gives the exact weights) or `buf` is short.
    pub fn new(
        kernels: K,
        fm: &'a F,
        value_dim: usize,
        shape: HybridShape,
        buf: &'a mut [T],
    ) -> Result<Self> {
        let mut s = Self::resume(
            kernels,
            fm,
            value_dim,
            shape,
            buf,
            (0, 0, T::neg_infinity()),
        )?;
        s.reset();
        Ok(s)
    }

    /// Re-attaches to `buf` as left by an earlier stream over the same map, `value_dim` and
    /// shape after `tokens` tokens, its far state holding `far_tokens` keys at log-scale
    /// `far_log_scale`; nothing in `buf` is cleared and the buffer is trusted
    /// ([`HybridMemory`](super::HybridMemory) keeps the three beside the buffer).
    pub(crate) fn resume(
        kernels: K,
        fm: &'a F,
        value_dim: usize,
        shape: HybridShape,
        buf: &'a mut [T],
        (tokens, far_tokens, far_log_scale): (u64, u64, T),
    ) -> Result<Self> {
        let tau = temperature(fm)?;
        check::nonzero("value_dim", value_dim)?;
        let (m, d, slots) = (fm.feature_dim(), fm.input_dim(), Self::slots(shape)?);
        check::room(
            "hybrid stream buffer",
            buf,
            Self::buffer_len(fm, value_dim, shape)?,
        )?;
        let (st, rest) = buf.split_at_mut(state_len(m, value_dim)?);
        let (keys, rest) = rest.split_at_mut(slots * d);
        let (values, rest) = rest.split_at_mut(slots * value_dim);
        let (weights, rest) = rest.split_at_mut(slots);
        Ok(Self {
            kernels,
            fm,
            shape,
            tau,
            far: PrefixState::attach(m, value_dim, st, far_tokens, far_log_scale)?,
            keys,
            values,
            weights,
            feats: &mut rest[..2 * m],
            tokens,
        })
    }

    /// Tokens stepped so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The far state: the keys that left the window.
    pub fn far_state(&self) -> &PrefixState<'a, T> {
        &self.far
    }

    /// The slot token `t` is kept in while it is exact.
    fn slot(&self, t: u64) -> usize {
        let HybridShape { window, sinks } = self.shape;
        match usize::try_from(t) {
            Ok(t) if t < sinks => t,
            // (t − sinks) mod (w + 1) < w + 1, so the cast back is lossless.
            _ => sinks + ((t - sinks as u64) % (window as u64 + 1)) as usize,
        }
    }

    /// Slots holding exact keys after `tokens` tokens: the sinks seen, and the window's.
    fn exact_slots(&self) -> impl Iterator<Item = usize> + use<T, F, K> {
        let HybridShape { window, sinks } = self.shape;
        let (n_sinks, n_ring) = live_slots(window, sinks, self.tokens);
        (0..n_sinks).chain(sinks..sinks + n_ring)
    }

    /// Forgets all tokens.
    pub fn reset(&mut self) {
        self.far.reset();
        self.tokens = 0;
    }

    /// The raw slots, as the snapshot sees them.
    fn raw(&self) -> Raw<'_, T> {
        let HybridShape { window, sinks } = self.shape;
        Raw {
            window,
            sinks,
            input_dim: self.fm.input_dim(),
            tokens: self.tokens,
            keys: self.keys,
            values: self.values,
        }
    }

    /// Bytes [`snapshot`](Self::snapshot) writes.
    pub fn snapshot_len(&self) -> usize {
        snapshot::len(&self.far, &self.raw())
    }

    /// Writes the state (the window's raw keys and values, the sinks', and the far state) as
    /// bytes — little-endian, versioned header, CRC-32 trailer; layout in ARCHITECTURE.md —
    /// and returns how many were written.
    pub fn snapshot(&self, out: &mut [u8]) -> Result<usize> {
        let n = self.snapshot_len();
        check::room("snapshot", out, n)?;
        snapshot::write(&self.far, self.fm, &self.raw(), out);
        Ok(n)
    }

    /// Replaces the state with one written by [`snapshot`](Self::snapshot). The bytes must
    /// come from a hybrid stream with the same float type, shape, dimensions and feature map,
    /// carry valid checksums, and describe a state such a stream can reach (keys and values
    /// in the range a step admits, the far state holding no more keys than have left the
    /// window); on any error the state is unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let limits = (
            super::hybrid_input_limit(self.fm)?,
            range::value_ceiling(self.fm),
        );
        let c = snapshot::check(&self.far, &self.raw(), limits, bytes)?;
        crate::snapshot::restore(&mut self.far, self.fm, c.far)?;
        read_into(c.keys, self.keys);
        read_into(c.values, self.values);
        self.tokens = c.tokens;
        Ok(())
    }

    /// One decoding step: token t = [`tokens`](Self::tokens) with query `q`, key `k` and value
    /// `v` enters (the key that leaves the window enters the far state), then query t is
    /// answered into `out` over tokens `0 ..= t`. A bad input is an error and changes nothing.
    pub fn step(&mut self, q: &[T], k: &[T], v: &[T], out: &mut [T]) -> Result<()> {
        let (d, m, dv) = (
            self.fm.input_dim(),
            self.fm.feature_dim(),
            self.far.value_dim(),
        );
        check::exact("q", q, d)?;
        check::exact("k", k, d)?;
        check::exact("v", v, dv)?;
        check::room("out", out, dv)?;
        let keys = self.tokens.saturating_add(1);
        range::inputs(self.fm, Qkv::new(q, k, v), (d, dv), keys)?;
        check_logits(self.tau, d, q, k)?;

        // The key leaving the window (token t − w − 1, if it is not a sink) enters S, z.
        let t = self.tokens;
        let slot = self.slot(t);
        let HybridShape { window, sinks } = self.shape;
        if t > sinks as u64 + window as u64 {
            let kf = &mut self.feats[..m];
            let mut log = [T::zero()];
            let leaving = &self.keys[slot * d..(slot + 1) * d];
            self.fm.map_rows(&self.kernels, leaving, 1, kf, &mut log)?;
            prepare_keys(kf, m, &mut log, None, 0);
            let lv = &self.values[slot * dv..(slot + 1) * dv];
            self.far.push_row(&self.kernels, kf, log[0], lv);
        }
        self.keys[slot * d..(slot + 1) * d].copy_from_slice(k);
        self.values[slot * dv..(slot + 1) * dv].copy_from_slice(v);
        self.tokens = t + 1;
        self.answer(q, out)
    }

    /// Query `q` against the exact slots and the far state, into `out`.
    fn answer(&mut self, q: &[T], out: &mut [T]) -> Result<()> {
        let (d, m, dv) = (
            self.fm.input_dim(),
            self.fm.feature_dim(),
            self.far.value_dim(),
        );
        let o = &mut out[..dv];
        // Exact logits, and the far part's log-weight ln(φ̃(q)·z) + ℓ_q + c.
        let mut top = T::neg_infinity();
        for s in self.exact_slots() {
            let l = self.tau * self.kernels.dot(q, &self.keys[s * d..(s + 1) * d]);
            self.weights[s] = l;
            top = top.max(l);
        }
        let mut far = None;
        if self.far.tokens() > 0 {
            let fq = &mut self.feats[m..2 * m];
            let mut lq = [T::zero()];
            self.fm.map_rows(&self.kernels, q, 1, fq, &mut lq)?;
            let den = self.far.query_raw(&self.kernels, fq, o);
            if den > T::zero() {
                let log_far = lq[0] + self.far.log_scale();
                top = top.max(log_far + den.libm_ln());
                far = Some((log_far, den));
            }
        }
        // Everything at the scale e^{−top}: the largest weight is 1, nothing overflows.
        let mut total = T::zero();
        match far {
            Some((log_far, den)) => {
                let f = (log_far - top).libm_exp();
                self.kernels.scale(f, o);
                total = total + f * den;
            }
            None => o.fill(T::zero()),
        }
        for s in self.exact_slots() {
            let a = (self.weights[s] - top).libm_exp();
            self.kernels.axpy(a, &self.values[s * dv..(s + 1) * dv], o);
            total = total + a;
        }
        self.kernels.scale(T::one() / total, o);
        Ok(())
    }
}
