//! The prefix state `(S, z, c)` shared by bidirectional, causal and streaming attention.

use crate::error::{Result, check};
use crate::{Float, Kernels};

/// Elements a [`PrefixState`] needs: `M·dv` for S plus `M` for z.
pub fn state_len(features: usize, value_dim: usize) -> Result<usize> {
    let m = check::nonzero("features", features)?;
    let dv = check::nonzero("value_dim", value_dim)?;
    check::add(check::mul(m, dv)?, m)
}

/// The attention denominator's floor: the smallest positive normal number.
///
/// A denominator whose magnitude is below it (all features underflowed, or every key masked)
/// is replaced by the floor with its sign, so such a row's output is `numerator / floor`
/// — 0 when nothing was attended to — rather than NaN. No ε is ever added to a regular
/// denominator.
pub fn denominator_floor<T: Float>() -> T {
    T::min_positive_value()
}

#[inline]
pub(crate) fn guard<T: Float>(den: T) -> T {
    let floor = denominator_floor::<T>();
    if den.abs() >= floor {
        den
    } else if den < T::zero() {
        -floor
    } else {
        floor
    }
}

/// The prefix sums of causal attention, `S = Σ φ(kⱼ) vⱼᵀ` (M×dv) and `z = Σ φ(kⱼ)` (M), kept
/// at a running log-scale `c`: the true sums are `e^c · S` and `e^c · z`.
///
/// This is the online stabiliser. When a key arrives whose log-scale exceeds `c`, S and z
/// are rescaled by `exp(c_old − c_new)` and `c` moves up, so the largest key feature held is
/// ≤ 1, nothing ever overflows, and — unlike a max over the whole sequence — no future token
/// can influence the scale a past output was computed at.
#[derive(Debug)]
pub struct PrefixState<'a, T> {
    s: &'a mut [T],
    z: &'a mut [T],
    log_scale: T,
    tokens: u64,
    features: usize,
    value_dim: usize,
}

impl<'a, T: Float> PrefixState<'a, T> {
    /// An empty state over the first [`state_len`] elements of `buf`.
    pub fn new(features: usize, value_dim: usize, buf: &'a mut [T]) -> Result<Self> {
        let len = state_len(features, value_dim)?;
        check::room("state", buf, len)?;
        let (s, rest) = buf[..len].split_at_mut(features * value_dim);
        let mut st = Self {
            s,
            z: rest,
            log_scale: T::neg_infinity(),
            tokens: 0,
            features,
            value_dim,
        };
        st.reset();
        Ok(st)
    }

    /// Forgets every key.
    pub fn reset(&mut self) {
        self.s.fill(T::zero());
        self.z.fill(T::zero());
        self.log_scale = T::neg_infinity();
        self.tokens = 0;
    }

    /// Feature dimension M.
    pub fn features(&self) -> usize {
        self.features
    }
    /// Value dimension dv.
    pub fn value_dim(&self) -> usize {
        self.value_dim
    }
    /// Keys absorbed so far (masked keys are not counted).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
    /// The running log-scale c (`-∞` while empty).
    pub fn log_scale(&self) -> T {
        self.log_scale
    }
    /// Stored S (M×dv, row-major), to be multiplied by `e^c`.
    pub fn s(&self) -> &[T] {
        self.s
    }
    /// Stored z (M), to be multiplied by `e^c`.
    pub fn z(&self) -> &[T] {
        self.z
    }

    /// A state over `buf` that keeps its contents: the S and z an earlier state over the same
    /// buffer left there, at that state's `tokens` and `log_scale`.
    pub(crate) fn attach(
        features: usize,
        value_dim: usize,
        buf: &'a mut [T],
        tokens: u64,
        log_scale: T,
    ) -> Result<Self> {
        let len = state_len(features, value_dim)?;
        check::room("state", buf, len)?;
        // The O(1) invariants of a live state: empty exactly when the scale is −∞.
        let empty = log_scale == T::neg_infinity();
        if !(log_scale.is_finite() || empty) || (tokens == 0) != empty {
            return Err(crate::Error::InvalidParameter {
                what: "log_scale must be finite with tokens > 0, or -inf with tokens == 0",
            });
        }
        let (s, z) = buf[..len].split_at_mut(features * value_dim);
        Ok(Self {
            s,
            z,
            log_scale,
            tokens,
            features,
            value_dim,
        })
    }

    pub(crate) fn parts_mut(&mut self) -> (&mut [T], &mut [T]) {
        (self.s, self.z)
    }

    pub(crate) fn set_raw(&mut self, log_scale: T, tokens: u64) {
        self.log_scale = log_scale;
        self.tokens = tokens;
    }

    /// Moves the state to log-scale `c_new ≥ c`.
    fn raise_scale<K: Kernels<T>>(&mut self, kernels: &K, c_new: T) {
        if c_new > self.log_scale {
            let f = (self.log_scale - c_new).libm_exp();
            kernels.scale(f, self.s);
            kernels.scale(f, self.z);
            self.log_scale = c_new;
        }
    }

    /// Absorbs `rows` keys: stored features `feats` (rows×M, scaled in place) with log-scales
    /// `logs` (`-∞` marks a masked key), values `v` (rows×dv).
    pub(crate) fn push_rows<K: Kernels<T>>(
        &mut self,
        kernels: &K,
        feats: &mut [T],
        logs: &[T],
        v: &[T],
        rows: usize,
    ) {
        let (m, dv) = (self.features, self.value_dim);
        let block_max = kernels.max(&logs[..rows]);
        if block_max == T::neg_infinity() {
            return;
        }
        let c = block_max.max(self.log_scale);
        self.raise_scale(kernels, c);
        for (r, &l) in logs[..rows].iter().enumerate() {
            let f = (l - c).libm_exp();
            kernels.scale(f, &mut feats[r * m..(r + 1) * m]);
            if l != T::neg_infinity() {
                self.tokens = self.tokens.saturating_add(1);
            }
        }
        kernels.gemm_tn(m, dv, rows, feats, m, v, dv, self.s, dv, true);
        for r in 0..rows {
            kernels.axpy(T::one(), &feats[r * m..(r + 1) * m], self.z);
        }
    }

    /// One causal token: absorbs key features `kf` (scaled in place) with log-scale `lk`
    /// (`-∞`: masked) and value `v`, then answers the query `qf`, `ql` into `out` — the same
    /// as `push_rows(1)` then `query_rows(1)`, but in one pass over S through
    /// [`Kernels::state_step`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step_row<K: Kernels<T>>(
        &mut self,
        kernels: &K,
        kf: &mut [T],
        lk: T,
        v: &[T],
        qf: &[T],
        ql: T,
        normalized: bool,
        out: &mut [T],
    ) {
        // The same "absent key" test as push_rows (which also drops NaN through its max).
        if lk.is_nan() || lk == T::neg_infinity() {
            self.query_rows(kernels, qf, &[ql], 1, normalized, out, self.value_dim);
            return;
        }
        let (m, dv) = (self.features, self.value_dim);
        let c = lk.max(self.log_scale);
        let f = if c > self.log_scale {
            (self.log_scale - c).libm_exp()
        } else {
            T::one()
        };
        self.log_scale = c;
        kernels.scale((lk - c).libm_exp(), &mut kf[..m]);
        self.tokens = self.tokens.saturating_add(1);
        let den = kernels.state_step(m, dv, self.s, self.z, f, kf, v, qf, out);
        let o = &mut out[..dv];
        if normalized {
            kernels.scale(T::one() / guard(den), o);
        } else {
            kernels.scale((ql + c).libm_exp(), o);
        }
    }

    /// Attention outputs for `rows` queries with stored features `feats` (rows×M) and
    /// log-scales `logs`: `out = φ(q)ᵀS / φ(q)·z` (normalised) or `e^{ℓ+c} φ(q)ᵀS`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn query_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        feats: &[T],
        logs: &[T],
        rows: usize,
        normalized: bool,
        out: &mut [T],
        ldo: usize,
    ) {
        let (m, dv) = (self.features, self.value_dim);
        kernels.gemm_nn(rows, dv, m, feats, m, self.s, dv, out, ldo, false);
        for r in 0..rows {
            let o = &mut out[r * ldo..r * ldo + dv];
            if normalized {
                let den = kernels.dot(&feats[r * m..(r + 1) * m], self.z);
                kernels.scale(T::one() / guard(den), o);
            } else if self.log_scale == T::neg_infinity() {
                o.fill(T::zero());
            } else {
                kernels.scale((logs[r] + self.log_scale).libm_exp(), o);
            }
        }
    }
}
