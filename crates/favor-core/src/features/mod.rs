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

/// ε added to generalized (or a peer's) features: finite and ≥ 0.
pub(crate) fn checked_epsilon<T: Float>(eps: T) -> Result<T> {
    if eps.is_finite() && eps >= T::zero() {
        Ok(eps)
    } else {
        Err(crate::Error::InvalidParameter {
            what: "epsilon must be finite and >= 0",
        })
    }
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
pub(crate) struct Fnv(pub(crate) u64);
impl Fnv {
    pub(crate) fn new(kind: u8) -> Self {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.bytes(&[kind]);
        h
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub(crate) fn u64(&mut self, x: u64) {
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

/// Writes the exponents `scale·wᵢ·x + α·biasᵢ` of `rows` rows of `x` into `out` (stride
/// M = `p.features`): one projection GEMM for all rows (`scratch`, `rows` long, receives its
/// unused row maxima), then the per-feature bias, if any, added to every row. The exponents
/// of the biased softmax maps ([`GerfSoftmax`]: `α = A`, bias `|wᵢ|²`; [`DataAwareSoftmax`]:
/// `α = 1`, bias the offsets cᵢ).
fn biased_exponents<T: Float, K: Kernels<T>>(
    kernels: &K,
    p: ProjectionRef<'_, T>,
    scale: T,
    bias: Option<(T, &[T])>,
    (x, rows): (&[T], usize),
    out: &mut [T],
    scratch: &mut [T],
) {
    let m = p.features;
    let (xm, o) = (
        MatRef::row_major(x, rows, p.dim),
        MatMut::row_major(out, rows, m),
    );
    kernels.project(xm, p, scale, o, scratch);
    if let Some((alpha, bias)) = bias {
        for row in out[..rows * m].chunks_exact_mut(m) {
            kernels.axpy(alpha, bias, row);
        }
    }
}

/// Turns the exponents `u` of `rows` rows (stride M, from [`biased_exponents`]) into stored
/// features and log-scales, as SM+ does: each row is shifted by its own largest exponent
/// `c` (so its largest stored feature is exactly 1) *before* the `−|x'|²/2`, which is the
/// same for every feature and would cancel catastrophically if subtracted first; the row's
/// log-scale is `c − |x'|²/2 − ln √M + log_const`. `s` is the data scale of x' = s·x;
/// `out` holds exactly `rows·M` elements.
fn finish_biased_rows<T: Float, K: Kernels<T>>(
    kernels: &K,
    (x, rows, d): (&[T], usize, usize),
    s: T,
    log_const: T,
    out: &mut [T],
    log_scales: &mut [T],
) {
    let m = out.len() / rows.max(1);
    let log_sqrt_m = T::from_usize(m).libm_sqrt().libm_ln();
    for r in 0..rows {
        let row = &mut out[r * m..(r + 1) * m];
        let c = kernels.max(row);
        kernels.exp_shift(row, c);
        let half = half_sq_norm(kernels, &x[r * d..(r + 1) * d], s);
        log_scales[r] = c - half - log_sqrt_m + log_const;
    }
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
                    signs: None,
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

            /// Projects with W's structured form instead of W: `signs` are the SORF signs
            /// ([`sorf_signs`](crate::sorf_signs)) drawn with the seed W was drawn from
            /// ([`ProjectionKind::Sorf`](crate::ProjectionKind::Sorf)). Every row is then
            /// three fast Walsh–Hadamard transforms
            /// ([`Kernels::sorf_project`](crate::Kernels::sorf_project), O(d' log d') per
            /// block of d' features) instead of a GEMM with W, so mapping a token reads 3·d'
            /// signs per block instead of m·d weights (d' the power of two at or above d).
            ///
            /// Checked once, exactly, to be W's structured form (else
            /// [`Error::InvalidParameter`](crate::Error::InvalidParameter)); needs d ≤ 512.
            /// The features equal those over W up to rounding (the transforms' additions
            /// replace the GEMM's), and every backend's are the same bits. The largest input
            /// ([`max_input`](FeatureMap::max_input)) shrinks by d', so that the transforms'
            /// partial sums (up to d'^{3/2}·|x| before the 1/d') stay finite. The fingerprint
            /// is W's: a snapshot moves between the two forms of one map.
            ///
            /// ```
            /// use favor_core::{projection, sorf_signs, sorf_signs_len, FeatureMap, PositiveSoftmax, ProjectionKind, Scalar};
            /// let (m, d) = (16, 8);
            /// let mut w = vec![0f64; m * d];
            /// projection(ProjectionKind::Sorf, 7, m, d, &mut w).unwrap();
            /// let mut signs = vec![0f64; sorf_signs_len(m, d).unwrap()];
            /// sorf_signs(7, m, d, &mut signs).unwrap();
            /// let dense = PositiveSoftmax::new(&w, m, d).unwrap();
            /// let structured = dense.with_structured_projection(&signs).unwrap();
            /// let x: Vec<f64> = (0..d).map(|i| 0.1 * i as f64).collect();
            /// let (mut a, mut b, mut la, mut lb) = (vec![0.0; m], vec![0.0; m], [0.0], [0.0]);
            /// dense.map_rows(&Scalar, &x, 1, &mut a, &mut la).unwrap();
            /// structured.map_rows(&Scalar, &x, 1, &mut b, &mut lb).unwrap();
            /// assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-12));
            /// // Signs of another seed are refused.
            /// sorf_signs(8, m, d, &mut signs).unwrap();
            /// assert!(dense.with_structured_projection(&signs).is_err());
            /// ```
            pub fn with_structured_projection(mut self, signs: &'w [T]) -> Result<Self> {
                crate::structured::check_structured(signs, self.w, self.m, self.d)?;
                self.signs = Some(signs);
                self.input_limit /= self.d.next_power_of_two() as f64;
                Ok(self)
            }

            /// Whether the map projects with W's structured form
            /// ([`with_structured_projection`](Self::with_structured_projection)).
            pub fn is_structured(&self) -> bool {
                self.signs.is_some()
            }

            /// The projection step of the map: [`Kernels::project`](crate::Kernels::project)
            /// with W, or [`Kernels::sorf_project`](crate::Kernels::sorf_project) with the
            /// signs when the map has them.
            pub(super) fn project_rows<K: Kernels<T>>(
                &self,
                kernels: &K,
                x: MatRef<'_, T>,
                scale: T,
                out: MatMut<'_, T>,
                row_max: &mut [T],
            ) {
                match self.signs {
                    Some(signs) => kernels.sorf_project(x, signs, scale, out, row_max),
                    None => kernels.project(x, self.projection(), scale, out, row_max),
                }
            }

            pub(super) fn projection(&self) -> ProjectionRef<'w, T> {
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

            pub(super) fn scale(&self) -> T {
                data_scale(self.inv_quarter_root, self.normalize)
            }
        }
    };
}

// One file per kernel; the helpers above (and `softmax_map_common!`) serve them all.
mod any;
mod calibrate;
mod data_aware;
mod generalized;
mod gerf;
mod hyperbolic;
mod jacobi;
mod positive;
mod saderf;
mod trigonometric;

pub use any::AnyFeatureMap;
pub use calibrate::{
    Calibration, DataAwareParts, calibrate, calibrate_scratch_len, draw_data_aware,
    draw_data_aware_scratch_len, optimal_proposal_variance, pair_moments, pair_moments_scratch_len,
};
pub use data_aware::DataAwareSoftmax;
pub use generalized::Generalized;
pub use gerf::{GerfSoftmax, gerf_optimal_a, gerf_rho};
pub use hyperbolic::HyperbolicSoftmax;
pub use jacobi::symmetric_eigen;
pub use positive::PositiveSoftmax;
pub use saderf::{SADERF_FLOOR, SaderfScales, saderf_fit};
pub use trigonometric::TrigonometricSoftmax;
