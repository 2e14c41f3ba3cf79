//! Feature maps φ: one trait, one type per kernel.
//!
//! Every map writes, for each input row x, a *stored* feature row and a *log-scale* ℓ such
//! that the mathematical feature vector is `φ(x) = stored · exp(ℓ)`. For the softmax maps the
//! stored row is shifted by its own maximum exponent, so its largest entry is exactly 1 and
//! nothing overflows whatever |x| is; the attention code combines the log-scales (a query's
//! cancels in the normalised output, keys' are merged by the online stabiliser of
//! [`PrefixState`](crate::PrefixState)). Rows are independent: a non-finite input row yields
//! a non-finite row and log-scale for that row only (the attention entry points reject
//! non-finite inputs before they get here).

use crate::error::{Result, check};
use crate::{Activation, Float, Kernels, MatMut, MatRef, ProjectionRef};

/// A random-feature map φ: ℝᵈ → ℝᴹ with `E[φ(x)·φ(y)] ≈ K(x, y)`.
pub trait FeatureMap<T: Float> {
    /// Input dimension d.
    fn input_dim(&self) -> usize;
    /// Output dimension M (m, or 2m for the hyperbolic and trigonometric maps).
    fn feature_dim(&self) -> usize;
    /// Whether every feature is positive, so attention denominators cannot cross zero.
    fn is_positive(&self) -> bool;
    /// `Some(τ)` when the map estimates the softmax kernel `exp(τ·x·y)` (τ = 1/√d with the
    /// data normaliser, 1 without); `None` for generalized kernels.
    fn softmax_temperature(&self) -> Option<T>;
    /// A 64-bit digest of everything that determines φ (kind, dims, options, projection
    /// bits), used to refuse restoring a snapshot into a stream with another map.
    fn fingerprint(&self) -> u64;
    /// An upper bound on the log-scale of any row this map produces (`+∞` when there is
    /// none): a stream's stabiliser never exceeds it, so a snapshot whose does is refused.
    /// The default claims nothing.
    fn max_log_scale(&self) -> T {
        T::infinity()
    }
    /// The largest magnitude a query or key entry may have (crate docs, "Supported range"):
    /// within it every projection `wᵢ·x` and the map's own sums stay finite in `T`. The
    /// attention entry points check it; `map_rows` itself does not (a row beyond it may get
    /// non-finite features). The default admits every finite value.
    fn max_input(&self) -> T {
        T::max_value()
    }
    /// An upper bound on every stored feature of a row whose entries are at most `max_abs`
    /// in magnitude (the softmax maps store rows shifted to at most 1), or `None` when the map
    /// cannot bound them (a custom activation, or the default): the entry points then cannot
    /// check that sums over the keys stay finite, and that is the caller's responsibility.
    fn feature_bound(&self, max_abs: T) -> Option<f64> {
        let _ = max_abs;
        None
    }
    /// Re-maps one query row `x` against the per-feature key sums `weights` (z) it is weighed
    /// with, when its usual features — shifted by their own largest exponent — underflow
    /// against them (crate docs, "the underflow limit"): writes `φ(x)ᵢ·e^{−s}` into `out`
    /// with the shift `s = maxᵢ (exponentᵢ + ln weightsᵢ)` over the features whose weight is a
    /// normal number (the others get 0: the state has already lost them), so the largest
    /// term of `out·weights` is 1. Normalised attention is unchanged by a per-query shift, so
    /// this changes only the rounding. Returns `false` (and leaves `out` unspecified) when the
    /// map has no such shift (only the exponential softmax maps do) or no weight is normal.
    fn remap_row<K: Kernels<T>>(&self, kernels: &K, x: &[T], weights: &[T], out: &mut [T]) -> bool {
        let _ = (kernels, x, weights, out);
        false
    }
    /// Maps `rows` rows of `x` (row-major, stride d; `x.len()` must be `rows·d`) into `out`
    /// (stride M, at least `rows·M`) and their log-scales into `log_scales` (at least `rows`).
    fn map_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        log_scales: &mut [T],
    ) -> Result<()>;
}

/// `d^(-1/4)`, the data normaliser that turns `exp(q·k/√d)` into `exp(q'·k')`; computed once
/// per map (a `pow` on every decoding step showed in profiles).
fn quarter_root_inverse(dim: usize) -> f64 {
    libm::pow(dim as f64, -0.25)
}

/// The data scale a map applies: [`quarter_root_inverse`] when its normaliser is on.
fn data_scale<T: Float>(inv_quarter_root: f64, on: bool) -> T {
    if on {
        T::from_f64(inv_quarter_root)
    } else {
        T::one()
    }
}

fn check_rows<T: Float>(
    x: &[T],
    rows: usize,
    d: usize,
    width: usize,
    out: &[T],
    logs: &[T],
) -> Result<()> {
    check::exact("x", x, check::mul(rows, d)?)?;
    check::room("features", out, check::mul(rows, width)?)?;
    check::room("log_scales", logs, rows)
}

fn check_projection<T: Float>(w: &[T], m: usize, d: usize) -> Result<()> {
    check::exact("projection", w, crate::projection_len(m, d)?)?;
    check::finite("projection", w, d)
}

/// The largest row norm of W (m×d), computed in f64 without overflow (each row scaled by
/// its largest entry first: an f64 W of entries near 1e300 has a finite norm).
fn max_row_norm<T: Float>(w: &[T], d: usize) -> f64 {
    w.chunks_exact(d.max(1))
        .map(|r| {
            let a = r.iter().fold(0f64, |a, &x| a.max(Float::to_f64(x).abs()));
            if a == 0.0 {
                return 0.0;
            }
            let sq: f64 = r
                .iter()
                .map(|&x| (Float::to_f64(x) / a) * (Float::to_f64(x) / a))
                .sum();
            a * libm::sqrt(sq)
        })
        .fold(0f64, f64::max)
}

/// Turns exponents `u` into `exp(uᵢ − s)`, `s = maxᵢ (uᵢ + ln wᵢ)` over the normal weights
/// (zero where the weight is not normal): [`FeatureMap::remap_row`]'s shift. Each term
/// `exp(uᵢ − s)·wᵢ ≤ 1`, and `exp(uᵢ − s) ≤ 1/wᵢ` stays finite.
fn shift_against<T: Float>(u: &mut [T], weights: &[T]) -> bool {
    let floor = T::min_positive_value();
    let s = u
        .iter()
        .zip(weights)
        .filter(|&(_, &w)| w >= floor)
        .fold(T::neg_infinity(), |s, (&ui, &w)| s.max(ui + w.libm_ln()));
    if s == T::neg_infinity() {
        return false;
    }
    for (ui, &w) in u.iter_mut().zip(weights) {
        *ui = if w >= floor {
            (*ui - s).libm_exp()
        } else {
            T::zero()
        };
    }
    true
}

/// `MAX / (4·√d·max(ω, 1))`: entries below it keep every partial sum of `wᵢ·x` (Cauchy–
/// Schwarz: `|wᵢ·x| ≤ ω·√d·max|xⱼ|`) below a quarter of `T`'s range, in any summation order.
fn projection_input_limit<T: Float>(d: usize, row_norm: f64) -> f64 {
    T::max_value().to_f64() / (4.0 * libm::sqrt(d as f64) * row_norm.max(1.0))
}

/// `max ℓ` of a softmax map: `ℓ = max wᵢ·x' − |x'|²/2 − ln √M ≤ max |wᵢ|²/2`, with room for
/// rounding.
fn softmax_log_scale_bound<T: Float>(row_norm: f64) -> T {
    T::from_f64(row_norm * row_norm / 2.0 * (1.0 + 1e-3) + 1.0)
}

fn check_transpose<T: Float>(w: &[T], wt: &[T], m: usize, d: usize) -> Result<()> {
    check::exact("transposed projection", wt, m * d)?;
    let exact = (0..m).all(|i| (0..d).all(|j| wt[j * m + i].to_bits_eq(w[i * d + j])));
    if exact {
        Ok(())
    } else {
        Err(crate::Error::InvalidParameter {
            what: "transposed projection is not Wᵀ",
        })
    }
}

trait BitsEq {
    fn to_bits_eq(self, other: Self) -> bool;
}
impl<T: Float> BitsEq for T {
    fn to_bits_eq(self, other: T) -> bool {
        self.to_f64().to_bits() == other.to_f64().to_bits()
    }
}

/// FNV-1a, enough to tell feature maps apart (not a cryptographic commitment).
struct Fnv(u64);
impl Fnv {
    fn new(kind: u8) -> Self {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.bytes(&[kind]);
        h
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }
    fn floats<T: Float>(&mut self, xs: &[T]) {
        for &x in xs {
            self.u64(x.to_f64().to_bits());
        }
    }
}

fn half_sq_norm<T: Float, K: Kernels<T>>(kernels: &K, x: &[T], s: T) -> T {
    kernels.dot(x, x) * s * s * T::from_f64(0.5)
}

macro_rules! softmax_map_common {
    ($name:ident, $kind:expr) => {
        impl<'w, T: Float> $name<'w, T> {
            /// A map over the projection `w` (`features × dim`, row-major; see
            /// [`projection`](crate::projection)), with the d^(-1/4) data normaliser on.
            pub fn new(w: &'w [T], features: usize, dim: usize) -> Result<Self> {
                check_projection(w, features, dim)?;
                let row_norm = max_row_norm(w, dim);
                Ok(Self {
                    w,
                    wt: None,
                    m: features,
                    d: dim,
                    normalize: true,
                    inv_quarter_root: quarter_root_inverse(dim),
                    row_norm,
                    input_limit: projection_input_limit::<T>(dim, row_norm),
                })
            }

            /// Turns the d^(-1/4) data normaliser on (default) or off. Off, the map
            /// estimates `exp(q·k)` instead of `exp(q·k/√d)`.
            pub fn with_data_normalizer(mut self, on: bool) -> Self {
                self.normalize = on;
                self
            }

            /// Gives the map Wᵀ as well (`dim × features`, e.g. from
            /// [`transpose_projection`](crate::transpose_projection)), which lets SIMD
            /// backends project without transposing W on every call. Checked to be exactly
            /// the transpose of W.
            pub fn with_transposed_projection(mut self, wt: &'w [T]) -> Result<Self> {
                check_transpose(self.w, wt, self.m, self.d)?;
                self.wt = Some(wt);
                Ok(self)
            }

            fn projection(&self) -> ProjectionRef<'w, T> {
                ProjectionRef {
                    w: self.w,
                    wt: self.wt,
                    features: self.m,
                    dim: self.d,
                }
            }

            /// Number of projection rows m.
            pub fn projection_rows(&self) -> usize {
                self.m
            }

            fn digest(&self) -> u64 {
                let mut h = Fnv::new($kind);
                h.u64(self.m as u64);
                h.u64(self.d as u64);
                h.u64(u64::from(self.normalize));
                h.floats(self.w);
                h.0
            }

            fn scale(&self) -> T {
                data_scale(self.inv_quarter_root, self.normalize)
            }
        }
    };
}

/// Positive random features (SM+): `φ(x)ᵢ = exp(wᵢ·x − |x|²/2) / √m`, unbiased for
/// `exp(x·y)` with the lowest variance exactly where softmax values are small.
#[derive(Debug, Clone, Copy)]
pub struct PositiveSoftmax<'w, T> {
    w: &'w [T],
    wt: Option<&'w [T]>,
    m: usize,
    d: usize,
    normalize: bool,
    /// `d^(-1/4)`, the data scale when `normalize` is on.
    inv_quarter_root: f64,
    /// max |wᵢ|, for the range checks.
    row_norm: f64,
    /// `projection_input_limit` of it, computed once (checked on every call).
    input_limit: f64,
}
softmax_map_common!(PositiveSoftmax, 1);

impl<T: Float> FeatureMap<T> for PositiveSoftmax<'_, T> {
    fn remap_row<K: Kernels<T>>(&self, kernels: &K, x: &[T], weights: &[T], out: &mut [T]) -> bool {
        let m = self.m;
        let mut row_max = [T::zero()];
        let p = self.projection();
        let (x, o) = (MatRef::row_major(x, 1, p.dim), MatMut::row_major(out, 1, m));
        kernels.project(x, p, self.scale(), o, &mut row_max);
        shift_against(&mut out[..m], &weights[..m])
    }
    fn max_log_scale(&self) -> T {
        softmax_log_scale_bound(self.row_norm)
    }
    fn max_input(&self) -> T {
        T::from_f64(self.input_limit)
    }
    fn feature_bound(&self, _max_abs: T) -> Option<f64> {
        Some(1.0)
    }
    fn input_dim(&self) -> usize {
        self.d
    }
    fn feature_dim(&self) -> usize {
        self.m
    }
    fn is_positive(&self) -> bool {
        true
    }
    fn softmax_temperature(&self) -> Option<T> {
        let s = self.scale();
        Some(s * s)
    }
    fn fingerprint(&self) -> u64 {
        self.digest()
    }
    fn map_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        log_scales: &mut [T],
    ) -> Result<()> {
        let (m, d) = (self.m, self.d);
        check_rows(x, rows, d, m, out, log_scales)?;
        let s = self.scale();
        // log_scales holds each row's max projection until it is turned into the log-scale.
        let (xm, o) = (
            MatRef::row_major(x, rows, d),
            MatMut::row_major(out, rows, m),
        );
        kernels.project(xm, self.projection(), s, o, log_scales);
        let log_sqrt_m = T::from_usize(m).libm_sqrt().libm_ln();
        for r in 0..rows {
            let row = &mut out[r * m..(r + 1) * m];
            // Shift by the largest wᵢ·x, not the largest wᵢ·x − |x|²/2: the |x|² term is the
            // same for every i, and subtracting it first would cancel catastrophically.
            let c = log_scales[r];
            kernels.exp_shift(row, c);
            log_scales[r] = c - half_sq_norm(kernels, &x[r * d..(r + 1) * d], s) - log_sqrt_m;
        }
        Ok(())
    }
}

/// Hyperbolic positive features (SMhyp+):
/// `[exp(wᵢ·x − |x|²/2), exp(−wᵢ·x − |x|²/2)] / √(2m)` — 2m outputs, lower variance than SM+.
/// Output layout per row: the m "+" features, then the m "−" features.
#[derive(Debug, Clone, Copy)]
pub struct HyperbolicSoftmax<'w, T> {
    w: &'w [T],
    wt: Option<&'w [T]>,
    m: usize,
    d: usize,
    normalize: bool,
    /// `d^(-1/4)`, the data scale when `normalize` is on.
    inv_quarter_root: f64,
    /// max |wᵢ|, for the range checks.
    row_norm: f64,
    /// `projection_input_limit` of it, computed once (checked on every call).
    input_limit: f64,
}
softmax_map_common!(HyperbolicSoftmax, 2);

impl<T: Float> FeatureMap<T> for HyperbolicSoftmax<'_, T> {
    fn remap_row<K: Kernels<T>>(&self, kernels: &K, x: &[T], weights: &[T], out: &mut [T]) -> bool {
        let m = self.m;
        let mut row_max = [T::zero()];
        let p = self.projection();
        let (x, o) = (MatRef::row_major(x, 1, p.dim), MatMut::row_major(out, 1, m));
        kernels.project(x, p, self.scale(), o, &mut row_max);
        let (plus, minus) = out[..2 * m].split_at_mut(m);
        for (n, &p) in minus.iter_mut().zip(plus.iter()) {
            *n = -p;
        }
        shift_against(&mut out[..2 * m], &weights[..2 * m])
    }
    fn max_log_scale(&self) -> T {
        softmax_log_scale_bound(self.row_norm)
    }
    fn max_input(&self) -> T {
        T::from_f64(self.input_limit)
    }
    fn feature_bound(&self, _max_abs: T) -> Option<f64> {
        Some(1.0)
    }
    fn input_dim(&self) -> usize {
        self.d
    }
    fn feature_dim(&self) -> usize {
        2 * self.m
    }
    fn is_positive(&self) -> bool {
        true
    }
    fn softmax_temperature(&self) -> Option<T> {
        let s = self.scale();
        Some(s * s)
    }
    fn fingerprint(&self) -> u64 {
        self.digest()
    }
    fn map_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        log_scales: &mut [T],
    ) -> Result<()> {
        let (m, d) = (self.m, self.d);
        check_rows(x, rows, d, 2 * m, out, log_scales)?;
        let s = self.scale();
        let (xm, o) = (
            MatRef::row_major(x, rows, d),
            MatMut::new(out, rows, m, 2 * m),
        );
        kernels.project(xm, self.projection(), s, o, log_scales);
        let log_norm = T::from_usize(2 * m).libm_sqrt().libm_ln();
        for r in 0..rows {
            let row = &mut out[r * 2 * m..(r + 1) * 2 * m];
            let (plus, minus) = row.split_at_mut(m);
            for (n, &p) in minus.iter_mut().zip(plus.iter()) {
                *n = -p;
            }
            let c = kernels.max(row);
            kernels.exp_shift(row, c);
            log_scales[r] = c - half_sq_norm(kernels, &x[r * d..(r + 1) * d], s) - log_norm;
        }
        Ok(())
    }
}

/// Trigonometric features (the original random Fourier features for softmax):
/// `exp(|x|²/2) [sin(wᵢ·x), cos(wᵢ·x)] / √m` — 2m outputs, layout sines then cosines.
///
/// **Not positive**: estimates can go negative, and attention denominators can cross zero
/// and blow up, badly so where softmax values are small. Kept for fidelity comparisons; the
/// `exp(|x|²/2)` factor lives in the log-scale, so it never overflows the stored row.
#[derive(Debug, Clone, Copy)]
pub struct TrigonometricSoftmax<'w, T> {
    w: &'w [T],
    wt: Option<&'w [T]>,
    m: usize,
    d: usize,
    normalize: bool,
    /// `d^(-1/4)`, the data scale when `normalize` is on.
    inv_quarter_root: f64,
    /// max |wᵢ| (set by the shared constructor; trig's log-scales have no bound to use it).
    #[allow(dead_code)]
    row_norm: f64,
    /// `projection_input_limit` of it, computed once (checked on every call).
    input_limit: f64,
}
softmax_map_common!(TrigonometricSoftmax, 3);

impl<T: Float> FeatureMap<T> for TrigonometricSoftmax<'_, T> {
    fn max_input(&self) -> T {
        // Its log-scale is +|x'|²/2: that must stay finite too.
        let s = data_scale::<T>(self.inv_quarter_root, self.normalize).to_f64();
        let norm = libm::sqrt(T::max_value().to_f64() / 4.0) / (s * libm::sqrt(self.d as f64));
        T::from_f64(self.input_limit.min(norm))
    }
    fn feature_bound(&self, _max_abs: T) -> Option<f64> {
        Some(1.0)
    }
    fn input_dim(&self) -> usize {
        self.d
    }
    fn feature_dim(&self) -> usize {
        2 * self.m
    }
    fn is_positive(&self) -> bool {
        false
    }
    fn softmax_temperature(&self) -> Option<T> {
        let s = self.scale();
        Some(s * s)
    }
    fn fingerprint(&self) -> u64 {
        self.digest()
    }
    fn map_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        log_scales: &mut [T],
    ) -> Result<()> {
        let (m, d) = (self.m, self.d);
        check_rows(x, rows, d, 2 * m, out, log_scales)?;
        let s = self.scale();
        let (xm, o) = (
            MatRef::row_major(x, rows, d),
            MatMut::new(out, rows, m, 2 * m),
        );
        kernels.project(xm, self.projection(), s, o, log_scales);
        let log_sqrt_m = T::from_usize(m).libm_sqrt().libm_ln();
        for r in 0..rows {
            kernels.sin_cos(&mut out[r * 2 * m..(r + 1) * 2 * m], m);
            log_scales[r] = half_sq_norm(kernels, &x[r * d..(r + 1) * d], s) - log_sqrt_m;
        }
        Ok(())
    }
}

/// Generalized attention features `φ(x) = f(Wx) + ε` (or `f(x) + ε` without a projection,
/// M = d). Defaults follow the paper's code: ε = 10⁻³, data normaliser off.
///
/// [`Activation::Exp`] is stabilised like the softmax maps (row log-scale = max(0, max u)).
#[derive(Debug, Clone, Copy)]
pub struct Generalized<'w, T> {
    w: Option<&'w [T]>,
    wt: Option<&'w [T]>,
    m: usize,
    d: usize,
    f: Activation<T>,
    eps: T,
    normalize: bool,
    /// `d^(-1/4)`, the data scale when `normalize` is on.
    inv_quarter_root: f64,
    /// max |wᵢ| (unused without a projection), for the range checks.
    row_norm: f64,
}

impl<'w, T: Float> Generalized<'w, T> {
    /// `f(Wx) + ε` with the projection `w` (`features × dim`).
    pub fn new(w: &'w [T], features: usize, dim: usize, f: Activation<T>) -> Result<Self> {
        check_projection(w, features, dim)?;
        Ok(Self {
            w: Some(w),
            wt: None,
            m: features,
            d: dim,
            f,
            eps: T::from_f64(1e-3),
            normalize: false,
            inv_quarter_root: quarter_root_inverse(dim),
            row_norm: max_row_norm(w, dim),
        })
    }

    /// `f(x) + ε` with no projection (M = d).
    pub fn without_projection(dim: usize, f: Activation<T>) -> Result<Self> {
        check::nonzero("dim", dim)?;
        Ok(Self {
            w: None,
            wt: None,
            m: dim,
            d: dim,
            f,
            eps: T::from_f64(1e-3),
            normalize: false,
            inv_quarter_root: quarter_root_inverse(dim),
            row_norm: 1.0,
        })
    }

    /// Gives the map Wᵀ as well; see
    /// [`PositiveSoftmax::with_transposed_projection`]. An error without a projection.
    pub fn with_transposed_projection(mut self, wt: &'w [T]) -> Result<Self> {
        let w = self.w.ok_or(crate::Error::InvalidParameter {
            what: "a map without projection has nothing to transpose",
        })?;
        check_transpose(w, wt, self.m, self.d)?;
        self.wt = Some(wt);
        Ok(self)
    }

    /// Sets ε (finite, ≥ 0). It keeps denominators away from zero for ReLU-like kernels.
    pub fn with_epsilon(mut self, eps: T) -> Result<Self> {
        if !(eps.is_finite() && eps >= T::zero()) {
            return Err(crate::Error::InvalidParameter {
                what: "epsilon must be finite and >= 0",
            });
        }
        self.eps = eps;
        Ok(self)
    }

    /// Turns the d^(-1/4) data normaliser on or off (default off).
    pub fn with_data_normalizer(mut self, on: bool) -> Self {
        self.normalize = on;
        self
    }
}

impl<'w, T: Float> Generalized<'w, T> {
    /// `|u| ≤ gain·max|xⱼ|` for every pre-activation `u = s·wᵢ·x` (or `s·xⱼ` without a
    /// projection).
    fn gain(&self) -> f64 {
        let s = data_scale::<T>(self.inv_quarter_root, self.normalize).to_f64();
        match self.w {
            Some(_) => s * self.row_norm * libm::sqrt(self.d as f64),
            None => s,
        }
    }
}

impl<T: Float> FeatureMap<T> for Generalized<'_, T> {
    fn max_input(&self) -> T {
        let max = T::max_value().to_f64();
        let sums = match self.w {
            Some(_) => projection_input_limit::<T>(self.d, self.row_norm),
            None => max,
        };
        let own = match self.f {
            // u² must stay finite.
            Activation::Square => libm::sqrt(max / 4.0) / self.gain().max(f64::MIN_POSITIVE),
            _ => max / 4.0 / self.gain().max(1.0),
        };
        T::from_f64(sums.min(own))
    }
    fn feature_bound(&self, max_abs: T) -> Option<f64> {
        let u = self.gain() * max_abs.to_f64();
        let eps = self.eps.to_f64();
        match self.f {
            Activation::Relu | Activation::Abs => Some(u + eps),
            Activation::EluPlusOne => Some(u + 1.0 + eps),
            // Stored rows are shifted by max(0, max u): at most 1 + ε.
            Activation::Exp => Some(1.0 + eps),
            Activation::Square => Some(u * u + eps),
            Activation::Custom(_) => None,
        }
    }
    fn max_log_scale(&self) -> T {
        // Only the exponential keeps a log-scale; every other activation's is 0.
        match self.f {
            Activation::Exp => T::infinity(),
            _ => T::zero(),
        }
    }
    fn input_dim(&self) -> usize {
        self.d
    }
    fn feature_dim(&self) -> usize {
        self.m
    }
    fn is_positive(&self) -> bool {
        let strictly = self.eps > T::zero();
        match self.f {
            Activation::Exp | Activation::EluPlusOne => true,
            Activation::Relu | Activation::Abs | Activation::Square => strictly,
            Activation::Custom(_) => false,
        }
    }
    fn softmax_temperature(&self) -> Option<T> {
        None
    }
    fn fingerprint(&self) -> u64 {
        let mut h = Fnv::new(4);
        h.u64(self.m as u64);
        h.u64(self.d as u64);
        h.u64(u64::from(self.normalize));
        h.u64(self.eps.to_f64().to_bits());
        let tag: u8 = match self.f {
            Activation::Relu => 0,
            Activation::EluPlusOne => 1,
            Activation::Exp => 2,
            Activation::Abs => 3,
            Activation::Square => 4,
            Activation::Custom(_) => 5,
        };
        h.bytes(&[tag, u8::from(self.w.is_some())]);
        if let Some(w) = self.w {
            h.floats(w);
        }
        h.0
    }
    fn map_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        log_scales: &mut [T],
    ) -> Result<()> {
        let (m, d) = (self.m, self.d);
        check_rows(x, rows, d, m, out, log_scales)?;
        let s = data_scale::<T>(self.inv_quarter_root, self.normalize);
        match self.w {
            Some(w) => {
                let p = ProjectionRef {
                    w,
                    wt: self.wt,
                    features: m,
                    dim: d,
                };
                let (xm, o) = (
                    MatRef::row_major(x, rows, d),
                    MatMut::row_major(out, rows, m),
                );
                kernels.project(xm, p, s, o, log_scales)
            }
            None => {
                out[..rows * d].copy_from_slice(x);
                kernels.scale(s, &mut out[..rows * d]);
            }
        }
        for r in 0..rows {
            let row = &mut out[r * m..(r + 1) * m];
            if let Activation::Exp = self.f {
                // exp(u) + ε = e^c (exp(u − c) + ε e^{−c}); c ≥ 0 keeps ε e^{−c} ≤ ε.
                let c = kernels.max(row).max(T::zero());
                kernels.exp_shift(row, c);
                kernels.activation(row, Activation::Custom(|v| v), self.eps * (-c).libm_exp());
                log_scales[r] = c;
            } else {
                kernels.activation(row, self.f, self.eps);
                log_scales[r] = T::zero();
            }
        }
        Ok(())
    }
}

/// Any of this crate's feature maps, chosen at run time (e.g. from a configuration), with
/// one [`FeatureMap`] implementation so the attention code is compiled once, not once per
/// kernel.
///
/// ```
/// use favor_core::*;
/// let mut w = [0f64; 8 * 4];
/// projection(ProjectionKind::default(), 1, 8, 4, &mut w).unwrap();
/// let trig = true; // e.g. from a config file
/// let phi: AnyFeatureMap<'_, f64> = if trig {
///     TrigonometricSoftmax::new(&w, 8, 4).unwrap().into()
/// } else {
///     PositiveSoftmax::new(&w, 8, 4).unwrap().into()
/// };
/// assert_eq!(phi.feature_dim(), 16);
/// assert!(!phi.is_positive());
/// ```
#[derive(Debug, Clone, Copy)]
pub enum AnyFeatureMap<'w, T> {
    /// [`PositiveSoftmax`] (SM+).
    Positive(PositiveSoftmax<'w, T>),
    /// [`HyperbolicSoftmax`] (SMhyp+).
    Hyperbolic(HyperbolicSoftmax<'w, T>),
    /// [`TrigonometricSoftmax`].
    Trigonometric(TrigonometricSoftmax<'w, T>),
    /// [`Generalized`].
    Generalized(Generalized<'w, T>),
}

macro_rules! any_map_from {
    ($($variant:ident($ty:ident)),*) => {$(
        impl<'w, T> From<$ty<'w, T>> for AnyFeatureMap<'w, T> {
            fn from(m: $ty<'w, T>) -> Self {
                AnyFeatureMap::$variant(m)
            }
        }
    )*};
}
any_map_from!(
    Positive(PositiveSoftmax),
    Hyperbolic(HyperbolicSoftmax),
    Trigonometric(TrigonometricSoftmax),
    Generalized(Generalized)
);

/// Forwards one method to whichever map is inside.
macro_rules! each_map {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            AnyFeatureMap::Positive($m) => $e,
            AnyFeatureMap::Hyperbolic($m) => $e,
            AnyFeatureMap::Trigonometric($m) => $e,
            AnyFeatureMap::Generalized($m) => $e,
        }
    };
}

impl<T: Float> FeatureMap<T> for AnyFeatureMap<'_, T> {
    fn input_dim(&self) -> usize {
        each_map!(self, m => m.input_dim())
    }
    fn feature_dim(&self) -> usize {
        each_map!(self, m => m.feature_dim())
    }
    fn is_positive(&self) -> bool {
        each_map!(self, m => m.is_positive())
    }
    fn softmax_temperature(&self) -> Option<T> {
        each_map!(self, m => m.softmax_temperature())
    }
    fn fingerprint(&self) -> u64 {
        each_map!(self, m => m.fingerprint())
    }
    fn max_log_scale(&self) -> T {
        each_map!(self, m => m.max_log_scale())
    }
    fn max_input(&self) -> T {
        each_map!(self, m => m.max_input())
    }
    fn remap_row<K: Kernels<T>>(&self, kernels: &K, x: &[T], weights: &[T], out: &mut [T]) -> bool {
        each_map!(self, m => m.remap_row(kernels, x, weights, out))
    }
    fn feature_bound(&self, max_abs: T) -> Option<f64> {
        each_map!(self, m => m.feature_bound(max_abs))
    }
    fn map_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        log_scales: &mut [T],
    ) -> Result<()> {
        each_map!(self, m => m.map_rows(kernels, x, rows, out, log_scales))
    }
}
