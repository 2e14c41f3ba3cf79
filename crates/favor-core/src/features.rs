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
use crate::{Activation, Float, Kernels, ProjectionRef};

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

/// `d^(-1/4)`, the data normaliser that turns `exp(q·k/√d)` into `exp(q'·k')`.
fn data_scale<T: Float>(dim: usize, on: bool) -> T {
    if on {
        T::from_f64(libm::pow(dim as f64, -0.25))
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
                Ok(Self {
                    w,
                    wt: None,
                    m: features,
                    d: dim,
                    normalize: true,
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
                data_scale(self.d, self.normalize)
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
}
softmax_map_common!(PositiveSoftmax, 1);

impl<T: Float> FeatureMap<T> for PositiveSoftmax<'_, T> {
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
        kernels.project(rows, x, self.projection(), s, out, m, log_scales);
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
}
softmax_map_common!(HyperbolicSoftmax, 2);

impl<T: Float> FeatureMap<T> for HyperbolicSoftmax<'_, T> {
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
        kernels.project(rows, x, self.projection(), s, out, 2 * m, log_scales);
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
}
softmax_map_common!(TrigonometricSoftmax, 3);

impl<T: Float> FeatureMap<T> for TrigonometricSoftmax<'_, T> {
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
        kernels.project(rows, x, self.projection(), s, out, 2 * m, log_scales);
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

impl<T: Float> FeatureMap<T> for Generalized<'_, T> {
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
        let s = data_scale::<T>(d, self.normalize);
        match self.w {
            Some(w) => {
                let p = ProjectionRef {
                    w,
                    wt: self.wt,
                    features: m,
                    dim: d,
                };
                kernels.project(rows, x, p, s, out, m, log_scales)
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
