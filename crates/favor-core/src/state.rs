//! The prefix state `(S, z, c)` shared by bidirectional, causal and streaming attention, with
//! compensated summation so that long streams keep `f32` precision.
//!
//! ## Error model of the sums
//! Plain `f32` prefix sums lose precision as they grow: once `z` is thousands of times larger
//! than the feature row added to it, each addition drops the row's low bits, and after 10⁷
//! tokens outputs were off by 10⁻² (measured). The state therefore holds S and z as a total
//! `hi + lo` and a ring of the last keys:
//!
//! - a decoding step appends its key (features at the state's scale) and value to the ring,
//!   and answers from `hi` plus the ring's keys directly, `qᵀS = qᵀS_hi + Σ_b (q·k_b) v_b`;
//! - when the ring holds [`RING`] keys (and before a block of keys or queries), its rank-R sum
//!   is added to the total with an error-free transformation (TwoSum): `hi + lo` then equals
//!   the exact sum up to the rounding of the R-term sum, and `|lo| ≤ u·|hi|`;
//! - blocks of keys (prefill, bidirectional) are summed by one GEMM and added the same way;
//! - queries ignore `lo`, which costs at most `u` relative error.
//!
//! So the error of a sum is that of summing one block (R keys, or a chunk) plus about `2u`,
//! relative to its size, whatever the number of tokens — where plain summation grows like
//! `n·u`. A decoding step reads `hi` (S once) and the ring instead of reading and writing S:
//! the extra memory costs no extra traffic. `lo` is touched only by folds.
//!
//! ## The stabiliser on a power-of-two grid
//! The stabiliser `c` moves only to values `k·ln 2` (k an integer), rounded to `T`, so moving
//! it rescales the sums by an exact power of two: however often it moves (slowly growing key
//! norms move it often), rescaling adds no rounding error and errors do not compound. (A key's
//! factor `exp(ℓ − c)` carries the rounding of c, about `u·|c|`, the same size as the rounding
//! `ℓ` itself carries.) Stored key features are then in
//! `(½, 1]` at their largest instead of exactly 1. Log-scales beyond `±2²⁰` (inputs whose
//! log-scales have no precision left anyway) are used as they are.

use crate::error::{Result, check};
use crate::{Accum, FeatureMap, Float, Kernels, MatMut, MatRef, Ring};

/// Keys a state holds in its ring before folding them into the compensated total.
///
/// A step reads the ring once (R·(M + dv) elements) beside S; a fold costs a pass over the
/// total and its compensation. At 16 both are a fraction of a step's S read, and the sums keep
/// a relative error of a few `u` (module docs).
pub const RING: usize = 16;

/// Elements a [`PrefixState`] needs: the total and its compensation (each `M·dv` for S plus
/// `M` for z), the ring of [`RING`] keys and values (`RING·(M + dv)`), and its fill count (1).
pub fn state_len(features: usize, value_dim: usize) -> Result<usize> {
    let ring = check::mul(RING, check::add(features, value_dim)?)?;
    check::add(
        check::add(check::mul(2, block_len(features, value_dim)?)?, ring)?,
        1,
    )
}

/// Elements of one copy of the sums: S (`M·dv`) then z (`M`).
pub(crate) fn block_len(features: usize, value_dim: usize) -> Result<usize> {
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

/// Log-scales of at most this magnitude are put on the `k·ln 2` grid (module docs).
const GRID_LIMIT: f64 = 1_048_576.0;

/// Whether `x` (finite or not) is within the grid's range.
fn on_grid_range(x: f64) -> bool {
    x.abs() < GRID_LIMIT
}

/// The stabiliser for a largest key log-scale `l`: the smallest `c = k·ln 2` (k an integer,
/// rounded to `T`) with `c ≥ l`; `l` itself beyond the grid, and for `±∞`.
pub(crate) fn stabiliser<T: Float>(l: T) -> T {
    let x = l.to_f64();
    if !on_grid_range(x) {
        return l;
    }
    // The slack keeps a log-scale that is itself a grid point (up to rounding) on it.
    let k = libm::ceil(x * core::f64::consts::LOG2_E - 1e-6);
    let c = T::from_f64(k * core::f64::consts::LN_2);
    if c >= l {
        c
    } else {
        T::from_f64((k + 1.0) * core::f64::consts::LN_2)
    }
}

/// `k` if `c` is the grid point `k·ln 2` rounded to `T`.
fn grid_index<T: Float>(c: T) -> Option<i64> {
    let x = c.to_f64();
    if !on_grid_range(x) {
        return None;
    }
    let k = libm::round(x * core::f64::consts::LOG2_E);
    (T::from_f64(k * core::f64::consts::LN_2) == c).then_some(k as i64)
}

/// `2ᵉ` for `e ≤ 0`, exact wherever `T` can hold it.
fn pow2<T: Float>(e: i64) -> T {
    let x = if e >= -1022 {
        f64::from_bits(((e.min(0) + 1023) as u64) << 52)
    } else if e >= -1074 {
        f64::from_bits(1u64 << (e + 1074))
    } else {
        0.0
    };
    T::from_f64(x)
}

/// `exp(from − to)` for stabilisers `to ≥ from`: an exact power of two when both are on the
/// grid (from [`stabiliser`]); 0 from an empty state.
pub(crate) fn rescale_factor<T: Float>(from: T, to: T) -> T {
    match (grid_index(from), grid_index(to)) {
        (Some(a), Some(b)) => pow2(a - b),
        _ => (from - to).libm_exp(),
    }
}

/// `o ← o·exp(e)`, without the overflow of `exp(e)` alone: a factor beyond `T`'s range is
/// applied in steps, so an output whose true value is finite comes out finite (and one beyond
/// the range comes out ±∞, never NaN: zeros stay zero).
pub(crate) fn scale_by_exp<T: Float, K: Kernels<T>>(kernels: &K, o: &mut [T], e: T) {
    if e.is_nan() {
        return;
    }
    // e^64 and e^−64 are comfortably inside f32's range, so each step is a normal factor.
    let step = T::from_f64(64.0);
    // Beyond 4·ln MAX (more than the whole exponent range, subnormals included) every
    // non-zero element has over- or underflowed: a cap on the number of steps.
    let limit = T::from_f64(4.0 * libm::log(T::max_value().to_f64()));
    let mut e = e.max(-limit).min(limit);
    while e > step {
        kernels.scale(step.libm_exp(), o);
        e = e - step;
    }
    while e < -step {
        kernels.scale((-step).libm_exp(), o);
        e = e + step;
    }
    kernels.scale(e.libm_exp(), o);
}

/// The prefix sums of causal attention, `S = Σ φ(kⱼ) vⱼᵀ` (M×dv) and `z = Σ φ(kⱼ)` (M), kept
/// at a running log-scale `c`: the true sums are `e^c · S` and `e^c · z`.
///
/// This is the online stabiliser. When a key arrives whose log-scale exceeds `c`, S and z
/// are rescaled by `exp(c_old − c_new)` (a power of two) and `c` moves up, so the largest key
/// feature held is ≤ 1, nothing ever overflows, and — unlike a max over the whole sequence —
/// no future token can influence the scale a past output was computed at.
///
/// S and z are held as a compensated total plus a ring of the latest keys (module docs): the
/// sums keep their precision over any number of tokens.
#[derive(Debug)]
pub struct PrefixState<'a, T> {
    /// The folded total `[S | z]`.
    hi: &'a mut [T],
    /// Its compensation: the rounding error of the folds, `|lo| ≲ u·|hi|`.
    lo: &'a mut [T],
    /// The ring's key rows (RING × M, at the state's scale) and value rows (RING × dv).
    ring_keys: &'a mut [T],
    ring_values: &'a mut [T],
    /// Keys in the ring, as a `T` holding a small integer (so the buffer is the whole state).
    ring_len: &'a mut T,
    log_scale: T,
    tokens: u64,
    features: usize,
    value_dim: usize,
    /// Every sum is +0 (set by [`reset`](Self::reset), cleared by anything that may write
    /// them): the first key's rescale from `−∞`, a multiplication by 0, would change no bit
    /// and is skipped. It was a fifth of a one-token call's time.
    zeroed: bool,
}

impl<'a, T: Float> PrefixState<'a, T> {
    /// An empty state over the first [`state_len`] elements of `buf`.
    pub fn new(features: usize, value_dim: usize, buf: &'a mut [T]) -> Result<Self> {
        let mut st = Self::attach(features, value_dim, buf, 0, T::neg_infinity())?;
        st.reset();
        Ok(st)
    }

    /// Forgets every key.
    pub fn reset(&mut self) {
        self.hi.fill(T::zero());
        self.lo.fill(T::zero());
        self.ring_keys.fill(T::zero());
        self.ring_values.fill(T::zero());
        *self.ring_len = T::zero();
        self.log_scale = T::neg_infinity();
        self.tokens = 0;
        self.zeroed = true;
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
    /// Folded total of S (M×dv, row-major), to be multiplied by `e^c`. The whole S is this
    /// plus its compensation plus the ring's keys (see [`parts`](Self::parts)).
    pub fn s(&self) -> &[T] {
        &self.hi[..self.features * self.value_dim]
    }
    /// Folded total of z (M), to be multiplied by `e^c`; see [`s`](Self::s).
    pub fn z(&self) -> &[T] {
        &self.hi[self.features * self.value_dim..]
    }
    /// Keys in the ring, not yet folded into the total (at most [`RING`]).
    pub fn ring_len(&self) -> usize {
        ring_count(*self.ring_len)
    }
    /// The parts of the state: the folded total and its compensation (each S, M×dv, then z,
    /// M), and the ring's first [`ring_len`](Self::ring_len) key rows (M each) and value rows
    /// (dv each). S is `total + compensation + Σ keysᵀ·values`, z likewise with the keys'
    /// sum.
    pub fn parts(&self) -> [&[T]; 4] {
        let r = self.ring_len();
        [
            self.hi,
            self.lo,
            &self.ring_keys[..r * self.features],
            &self.ring_values[..r * self.value_dim],
        ]
    }

    /// One element of the whole state, in f64: `S[row][col]` (or `z[row]` for `col = None`)
    /// as total + compensation + the ring's keys' contribution, to be multiplied by `e^c`;
    /// `None` outside M×dv.
    pub fn entry(&self, row: usize, col: Option<usize>) -> Option<f64> {
        let (m, dv, r) = (self.features, self.value_dim, self.ring_len());
        if row >= m || col.is_some_and(|j| j >= dv) {
            return None;
        }
        let at = col.map_or(m * dv + row, |j| row * dv + j);
        let ring: f64 = (0..r)
            .map(|b| {
                let k = self.ring_keys[b * m + row].to_f64();
                col.map_or(k, |j| k * self.ring_values[b * dv + j].to_f64())
            })
            .sum();
        Some(self.hi[at].to_f64() + self.lo[at].to_f64() + ring)
    }

    /// The whole state's elements in snapshot order: total, compensation, ring keys, ring
    /// values (all RING rows, the unused ones zero).
    pub(crate) fn storage(&self) -> [&[T]; 4] {
        [self.hi, self.lo, self.ring_keys, self.ring_values]
    }

    /// [`storage`](Self::storage), writable, for restoring a snapshot; the ring count
    /// separately.
    pub(crate) fn storage_mut(&mut self) -> ([&mut [T]; 4], &mut T) {
        self.zeroed = false;
        (
            [
                &mut *self.hi,
                &mut *self.lo,
                &mut *self.ring_keys,
                &mut *self.ring_values,
            ],
            &mut *self.ring_len,
        )
    }

    /// A state over `buf` that keeps its contents: the sums an earlier state over the same
    /// buffer left there, at that state's `tokens` and `log_scale`.
    pub(crate) fn attach(
        features: usize,
        value_dim: usize,
        buf: &'a mut [T],
        tokens: u64,
        log_scale: T,
    ) -> Result<Self> {
        let block = block_len(features, value_dim)?;
        check::room("state", buf, state_len(features, value_dim)?)?;
        // The O(1) invariants of a live state: empty exactly when the scale is −∞.
        let empty = log_scale == T::neg_infinity();
        if !(log_scale.is_finite() || empty) || (tokens == 0) != empty {
            return Err(crate::Error::InvalidParameter {
                what: "log_scale must be finite with tokens > 0, or -inf with tokens == 0",
            });
        }
        let (hi, rest) = buf.split_at_mut(block);
        let (lo, rest) = rest.split_at_mut(block);
        let (ring_keys, rest) = rest.split_at_mut(RING * features);
        let (ring_values, rest) = rest.split_at_mut(RING * value_dim);
        Ok(Self {
            hi,
            lo,
            ring_keys,
            ring_values,
            ring_len: &mut rest[0],
            log_scale,
            tokens,
            features,
            value_dim,
            zeroed: false,
        })
    }

    pub(crate) fn set_raw(&mut self, log_scale: T, tokens: u64) {
        self.zeroed = false;
        self.log_scale = log_scale;
        self.tokens = tokens;
    }

    /// Adds `other`'s keys to this state, as if this state had absorbed them too: the
    /// combine step of a head split over threads ([`Plan::absorb_keys`](crate::Plan::absorb_keys)).
    /// Both go to the larger log-scale (a power of two on the stabiliser grid, so exact unless
    /// it takes `other`'s sums below `T`'s normal range); `other`'s ring is folded into its
    /// total first (its value is unchanged), then its total enters this one by TwoSum (the
    /// rounding error kept in the compensation) and its compensation enters the
    /// compensation: the merged sums keep the compensated error model of the module docs
    /// however many states are merged, and merging into an empty state copies `other`'s sums
    /// bit for bit. Merging in a fixed order gives the same bits whatever thread filled each
    /// part.
    ///
    /// Errors (and changes nothing) when the dimensions differ.
    pub fn merge<K: Kernels<T>>(
        &mut self,
        kernels: &K,
        other: &mut PrefixState<'_, T>,
    ) -> Result<()> {
        check::same_dim("merged state features", self.features, other.features)?;
        check::same_dim("merged state value_dim", self.value_dim, other.value_dim)?;
        if other.log_scale == T::neg_infinity() {
            return Ok(());
        }
        other.flush(kernels);
        self.flush(kernels);
        let c = self.log_scale.max(other.log_scale);
        self.raise_scale(kernels, c);
        let f = rescale_factor(other.log_scale, c);
        // TwoSum per element (as Kernels::fold): merges are rare, O(M·dv) against the
        // O(L·M·(d + dv)) that filled the states, so a plain loop serves.
        let sums = self.hi.iter_mut().zip(self.lo.iter_mut());
        for ((h, l), (&oh, &ol)) in sums.zip(other.hi.iter().zip(other.lo.iter())) {
            let x = f * oh;
            let s = *h + x;
            let b = s - *h;
            let err = (*h - (s - b)) + (x - b);
            *h = s;
            *l = *l + err + f * ol;
        }
        self.settle(kernels);
        self.tokens = self.tokens.saturating_add(other.tokens);
        Ok(())
    }

    /// Moves the state to log-scale `c_new ≥ c`.
    fn raise_scale<K: Kernels<T>>(&mut self, kernels: &K, c_new: T) {
        if c_new > self.log_scale {
            // `zeroed` implies a scale of −∞ (set by reset, cleared on every move of it).
            let skip = self.zeroed;
            debug_assert!(
                !skip
                    || (self.hi.iter().chain(self.lo.iter()))
                        .chain(&self.ring_keys[..self.ring_len() * self.features])
                        .all(|&x| Float::to_f64(x).to_bits() == 0),
                "a state marked zeroed holds a sum other than +0"
            );
            if !skip {
                let f = rescale_factor(self.log_scale, c_new);
                let r = self.ring_len();
                kernels.scale(f, self.hi);
                kernels.scale(f, self.lo);
                kernels.scale(f, &mut self.ring_keys[..r * self.features]);
            }
            self.log_scale = c_new;
            self.zeroed = false;
        }
    }

    /// Folds the ring into the compensated total and empties it: its rank-r sums go through
    /// TwoSum ([`Kernels::fold_rank`]), so they keep their low bits.
    pub(crate) fn flush<K: Kernels<T>>(&mut self, kernels: &K) {
        self.fold_ring(kernels, self.ring_len());
    }

    /// [`flush`](Self::flush) of the first `r` ring rows (a full ring's count, RING, is not a
    /// valid stored count: it is folded before it is stored).
    fn fold_ring<K: Kernels<T>>(&mut self, kernels: &K, r: usize) {
        if r > 0 {
            let (m, dv) = (self.features, self.value_dim);
            let ring = Ring::new(self.ring_keys, self.ring_values, r, m, dv);
            kernels.fold_rank(self.hi, self.lo, ring);
            self.ring_keys[..r * m].fill(T::zero());
            self.ring_values[..r * dv].fill(T::zero());
            *self.ring_len = T::zero();
        }
    }

    /// Moves the compensation's excess into the total (TwoSum per element): afterwards
    /// `|lo| ≤ ulp(hi)/2` and `hi + lo` is unchanged.
    pub(crate) fn settle<K: Kernels<T>>(&mut self, kernels: &K) {
        kernels.fold(self.hi, self.lo);
    }

    /// Absorbs `rows` keys: stored features `feats` (rows×M, scaled in place) with log-scales
    /// `logs` (`-∞` marks a masked key), values `v` (rows×dv). Their sums are added to the
    /// compensation by one GEMM; the caller [`settle`](Self::settle)s them into the total
    /// before the next query (and often enough that the compensation stays small next to the
    /// total: the bidirectional path every so many rows).
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
        self.flush(kernels);
        let c = stabiliser(block_max).max(self.log_scale);
        self.raise_scale(kernels, c);
        let mut absorbed = 0u64;
        for (r, &l) in logs[..rows].iter().enumerate() {
            kernels.scale((l - c).libm_exp(), &mut feats[r * m..(r + 1) * m]);
            if l != T::neg_infinity() {
                absorbed += 1;
            }
        }
        add_block(kernels, self.lo, Ring::new(feats, v, rows, m, dv));
        self.tokens = self.tokens.saturating_add(absorbed);
    }

    /// Absorbs one key into the ring: features `kf` with log-scale `lk` (`-∞` or NaN: absent,
    /// nothing happens) and value `v`; folds the ring into the total when it is full.
    pub(crate) fn push_row<K: Kernels<T>>(&mut self, kernels: &K, kf: &[T], lk: T, v: &[T]) {
        // The same "absent key" test as push_rows (which also drops NaN through its max).
        if lk.is_nan() || lk == T::neg_infinity() {
            return;
        }
        let (m, dv) = (self.features, self.value_dim);
        let c = stabiliser(lk).max(self.log_scale);
        self.raise_scale(kernels, c);
        let r = self.ring_len();
        let row = &mut self.ring_keys[r * m..(r + 1) * m];
        row.copy_from_slice(&kf[..m]);
        kernels.scale((lk - c).libm_exp(), row);
        self.ring_values[r * dv..(r + 1) * dv].copy_from_slice(&v[..dv]);
        self.tokens = self.tokens.saturating_add(1);
        if r + 1 == RING {
            self.fold_ring(kernels, RING);
        } else {
            *self.ring_len = T::from_usize(r + 1);
        }
    }

    /// One causal token: [`push_row`](Self::push_row) of key features `kf` (log-scale `lk`)
    /// and value `v`, then the one query row of `query` answered into `out` (a token attends
    /// to itself).
    pub(crate) fn step_row<K: Kernels<T>, F: FeatureMap<T>>(
        &mut self,
        kernels: &K,
        kf: &[T],
        lk: T,
        v: &[T],
        query: Queries<'_, F, T>,
        out: &mut [T],
    ) {
        self.push_row(kernels, kf, lk, v);
        self.query_rows(kernels, query, out, self.value_dim);
    }

    /// Normalises one output row by its denominator, or scales an unnormalised one by its
    /// query's and the state's log-scales.
    fn finish_row<K: Kernels<T>>(&self, kernels: &K, o: &mut [T], den: T, ql: T, normalized: bool) {
        if normalized {
            kernels.scale(T::one() / guard(den), o);
        } else if self.log_scale == T::neg_infinity() {
            o.fill(T::zero());
        } else {
            scale_by_exp(kernels, o, ql + self.log_scale);
        }
    }

    /// Attention outputs for the rows of `queries` into `out` (rows of stride `ldo`):
    /// `out = φ(q)ᵀS / φ(q)·z` (normalised) or `e^{ℓ+c} φ(q)ᵀS`, from the total and the
    /// ring's keys. A normalised row whose denominator underflows is answered again with its
    /// features re-mapped against z (`queries.remap`).
    pub(crate) fn query_rows<K: Kernels<T>, F: FeatureMap<T>>(
        &self,
        kernels: &K,
        queries: Queries<'_, F, T>,
        out: &mut [T],
        ldo: usize,
    ) {
        let Queries {
            feats,
            logs,
            normalized,
            mut remap,
        } = queries;
        let rows = logs.len();
        let (m, dv, r) = (self.features, self.value_dim, self.ring_len());
        let (s, z) = self.hi.split_at(m * dv);
        let ring = self.ring(r);
        let single = r > 0 || rows == 1;
        if !single {
            // A block of queries against the total alone (block paths empty the ring first).
            let o = MatMut::new(out, rows, dv, ldo);
            let (f, s) = (
                MatRef::row_major(feats, rows, m),
                MatRef::row_major(s, m, dv),
            );
            kernels.gemm(o, Accum::Overwrite, f, s);
        }
        for i in 0..rows {
            let f = &feats[i * m..(i + 1) * m];
            let o = &mut out[i * ldo..i * ldo + dv];
            // Decoding: one pass over S and the ring per query.
            let mut den = if single {
                kernels.ring_query(self.hi, ring, f, o)
            } else if normalized {
                kernels.dot(f, z)
            } else {
                T::zero()
            };
            if normalized && underflowed(den) {
                den = self.requery(kernels, &mut remap, i, o).unwrap_or(den);
            }
            self.finish_row(kernels, o, den, logs[i], normalized);
        }
    }

    /// `out = φ̃(q)ᵀS` and the returned `φ̃(q)·z` for one stored query feature row `f`, at the
    /// stored scales (multiply both by `e^{ℓ_q + c}`): for callers that combine the state's
    /// sums with other weights under one normaliser (hybrid attention).
    pub(crate) fn query_raw<K: Kernels<T>>(&self, kernels: &K, f: &[T], out: &mut [T]) -> T {
        kernels.ring_query(self.hi, self.ring(self.ring_len()), f, out)
    }

    /// Answers query row `i` of `remap.x` again with features re-mapped against the whole z
    /// ([`FeatureMap::remap_row`]); returns its new denominator, or `None` when the map cannot
    /// re-map (then `out` is untouched).
    fn requery<K: Kernels<T>, F: FeatureMap<T>>(
        &self,
        kernels: &K,
        remap: &mut Remap<'_, F, T>,
        i: usize,
        out: &mut [T],
    ) -> Option<T> {
        let (m, dv, r) = (self.features, self.value_dim, self.ring_len());
        let fm = remap.fm;
        let d = fm.input_dim();
        let (w, f) = remap.scratch.split_at_mut(m);
        w.copy_from_slice(&self.hi[m * dv..]);
        for b in 0..r {
            kernels.axpy(T::one(), &self.ring_keys[b * m..(b + 1) * m], w);
        }
        if !fm.remap_row(kernels, &remap.x[i * d..(i + 1) * d], w, &mut f[..m]) {
            return None;
        }
        Some(kernels.ring_query(self.hi, self.ring(r), &f[..m], out))
    }

    /// The first `r` rows of the ring.
    fn ring(&self, r: usize) -> Ring<'_, T> {
        Ring::new(
            self.ring_keys,
            self.ring_values,
            r,
            self.features,
            self.value_dim,
        )
    }
}

/// Mapped query rows for [`PrefixState::query_rows`]: what the state needs to answer them.
pub(crate) struct Queries<'a, F, T> {
    /// Their features, rows×M.
    pub feats: &'a [T],
    /// Their log-scales, one per row (so also the row count).
    pub logs: &'a [T],
    /// Divide by the estimated denominator ([`Options::normalized`](crate::Options)).
    pub normalized: bool,
    /// How to re-map a row whose denominator underflows.
    pub remap: Remap<'a, F, T>,
}

/// What a query path hands [`PrefixState::query_rows`] so that rows whose denominator
/// underflows can be re-mapped: the feature map, the query rows as given (rows×d) and `2·M`
/// elements of scratch.
pub(crate) struct Remap<'r, F, T> {
    fm: &'r F,
    x: &'r [T],
    scratch: &'r mut [T],
}

impl<'r, F, T: Float> Remap<'r, F, T> {
    pub(crate) fn new(fm: &'r F, x: &'r [T], scratch: &'r mut [T]) -> Self {
        Self { fm, x, scratch }
    }
}

/// Whether a denominator is below `√μ` (μ = [`denominator_floor`]): its products lie where
/// the float type keeps no precision, so the query is worth re-mapping.
pub(crate) fn underflowed<T: Float>(den: T) -> bool {
    den.abs() < denominator_floor::<T>().libm_sqrt()
}

/// `sums += [Kᵀ V | Kᵀ 1]` for the key rows K and value rows V of `block`, into a copy of
/// the sums (S, m×dv, then z, m).
pub(crate) fn add_block<T: Float, K: Kernels<T>>(kernels: &K, sums: &mut [T], block: Ring<'_, T>) {
    let (m, dv, rows) = (block.features(), block.value_dim(), block.len());
    let (s, z) = sums[..m * dv + m].split_at_mut(m * dv);
    let keys = MatRef::row_major(block.keys(), rows, m);
    let values = MatRef::row_major(block.values(), rows, dv);
    kernels.gemm(MatMut::row_major(s, m, dv), Accum::Add, keys.t(), values);
    for r in 0..rows {
        kernels.axpy(T::one(), &block.keys()[r * m..(r + 1) * m], z);
    }
}

/// The ring count held in the buffer: below [`RING`] (a full ring is folded at once), read as
/// 0 if the buffer holds anything else (a foreign buffer may hold anything; restore validates
/// the count exactly).
pub(crate) fn ring_count<T: Float>(x: T) -> usize {
    let n = x.to_f64();
    if n >= 0.0 && n < RING as f64 {
        n as usize
    } else {
        0
    }
}
