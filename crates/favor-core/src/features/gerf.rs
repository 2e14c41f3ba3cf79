//! Generalized exponential random features (GERF, FAVOR++).

use super::*;

/// Generalized exponential positive features (GERF; "FAVOR++", Likhosherstov et al. 2022):
/// `φ(x)ᵢ = D·exp(A|wᵢ|² + B wᵢ·x − |x|²/2) / √m`, `B = √(1 − 4A)`, `D = (1 − 4A)^{d/4}`.
///
/// Unbiased for `exp(x·y)` for every `A < 1/4` when each row wᵢ is marginally N(0, I_d) (iid
/// rows, or orthogonal rows with χ norms, the default projection); `A = 0` is
/// [`PositiveSoftmax`] exactly. The variance is finite for `A < 1/8` (required here) and is
/// smallest, for inputs with `ρ = |x + y|²/d`, at [`gerf_optimal_a`]`(ρ)` (≤ 0); choose ρ from
/// the data with [`gerf_rho`]. With the projection rows not Gaussian (`RowNorms::SqrtD`) the
/// `A|wᵢ|²` term makes the estimate biased.
///
/// A map needs each row's `|wᵢ|²`; without allocation it keeps them in a caller buffer of
/// `features` elements that [`new`](Self::new) fills.
///
/// ```
/// use favor_core::*;
/// let (m, d) = (64, 8);
/// let mut w = vec![0f64; m * d];
/// projection(ProjectionKind::default(), 7, m, d, &mut w).unwrap();
/// let x: Vec<f64> = (0..2 * d).map(|i| (i as f64 * 0.37).sin()).collect();
/// let a = gerf_optimal_a(gerf_rho(&x[..d], &x[d..], d, true).unwrap());
/// let mut norms = vec![0f64; m];
/// let phi = GerfSoftmax::new(&w, m, d, a, &mut norms).unwrap();
/// let (mut f, mut l) = (vec![0f64; 2 * m], vec![0f64; 2]);
/// phi.map_rows(&Scalar, &x, 2, &mut f, &mut l).unwrap();
/// let est: f64 = (0..m).map(|i| f[i] * f[m + i]).sum::<f64>() * (l[0] + l[1]).exp();
/// let exact = (x[..d].iter().zip(&x[d..]).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()).exp();
/// assert!((est / exact - 1.0).abs() < 0.5);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GerfSoftmax<'w, T> {
    /// W, the data normaliser and the range limits, shared with SM+.
    base: PositiveSoftmax<'w, T>,
    /// `|wᵢ|²`, one per row.
    sq_norms: &'w [T],
    a: f64,
    /// `B = √(1 − 4A)`.
    b: f64,
    /// `ln D = (d/4)·ln(1 − 4A)`.
    log_d: f64,
}

impl<'w, T: Float> GerfSoftmax<'w, T> {
    /// A map over the projection `w` (`features × dim`) with parameter `a` (finite, `< 1/8`),
    /// the data normaliser on. `sq_norms` (at least `features` elements) receives `|wᵢ|²`
    /// and is kept by the map.
    pub fn new(
        w: &'w [T],
        features: usize,
        dim: usize,
        a: f64,
        sq_norms: &'w mut [T],
    ) -> Result<Self> {
        let base = PositiveSoftmax::new(w, features, dim)?;
        if !(a.is_finite() && a < 0.125) {
            return Err(crate::Error::InvalidParameter {
                what: "GERF parameter A must be finite and < 1/8",
            });
        }
        check::room("sq_norms", sq_norms, features)?;
        let rn = base.row_norm_of();
        // The bias A|wᵢ|² and the scaled projection B·(wᵢ·x) must stay within a quarter of
        // T's range, as the projection itself does.
        let b = libm::sqrt(1.0 - 4.0 * a);
        if libm::fabs(a) * rn * rn > T::max_value().to_f64() / 4.0 {
            return Err(crate::Error::InvalidParameter {
                what: "GERF parameter A too large for this projection",
            });
        }
        for (n, row) in sq_norms.iter_mut().zip(w.chunks_exact(dim)) {
            *n = row.iter().fold(T::zero(), |s, &x| s + x * x);
        }
        let sq_norms: &'w [T] = sq_norms;
        Ok(Self {
            base,
            sq_norms: &sq_norms[..features],
            a,
            b,
            log_d: dim as f64 / 4.0 * libm::log(1.0 - 4.0 * a),
        })
    }

    /// Turns the d^(-1/4) data normaliser on (default) or off; see
    /// [`PositiveSoftmax::with_data_normalizer`].
    pub fn with_data_normalizer(mut self, on: bool) -> Self {
        self.base = self.base.with_data_normalizer(on);
        self
    }

    /// Gives the map Wᵀ as well; see [`PositiveSoftmax::with_transposed_projection`].
    pub fn with_transposed_projection(mut self, wt: &'w [T]) -> Result<Self> {
        self.base = self.base.with_transposed_projection(wt)?;
        Ok(self)
    }

    /// The parameter A.
    pub fn a(&self) -> f64 {
        self.a
    }

    /// Writes the exponents `B s wᵢ·x + A|wᵢ|²` of `rows` rows into `out` (stride M); see
    /// [`biased_exponents`] (`scratch`, `rows` long, receives the GEMM's unused row maxima).
    fn exponents<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        scratch: &mut [T],
    ) {
        let s = self.base.scale() * T::from_f64(self.b);
        let bias = (self.a != 0.0).then_some((T::from_f64(self.a), self.sq_norms));
        let p = self.base.projection();
        biased_exponents(kernels, p, s, bias, (x, rows), out, scratch);
    }
}

impl<T: Float> FeatureMap<T> for GerfSoftmax<'_, T> {
    fn remap_row<K: Kernels<T>>(&self, kernels: &K, x: &[T], weights: &[T], out: &mut [T]) -> bool {
        let m = self.base.projection_rows();
        self.exponents(kernels, x, 1, out, &mut [T::zero()]);
        shift_against(&mut out[..m], &weights[..m])
    }
    /// `ℓ ≤ max (B|wᵢ|t − t²/2 + A|wᵢ|²) + ln D = (1/2 − A)·max|wᵢ|² + ln D`.
    fn max_log_scale(&self) -> T {
        let rn = self.base.row_norm_of();
        T::from_f64((0.5 - self.a) * rn * rn * (1.0 + 1e-3) + self.log_d.max(0.0) + 1.0)
    }
    fn max_input(&self) -> T {
        let limit: T = self.base.max_input();
        limit / T::from_f64(self.b.max(1.0))
    }
    fn feature_bound(&self, _max_abs: T) -> Option<f64> {
        Some(1.0)
    }
    fn input_dim(&self) -> usize {
        FeatureMap::<T>::input_dim(&self.base)
    }
    fn feature_dim(&self) -> usize {
        self.base.projection_rows()
    }
    fn is_positive(&self) -> bool {
        true
    }
    fn softmax_temperature(&self) -> Option<T> {
        self.base.softmax_temperature()
    }
    fn fingerprint(&self) -> u64 {
        let mut h = Fnv::new(5);
        h.u64(FeatureMap::<T>::fingerprint(&self.base));
        h.u64(self.a.to_bits());
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
        let (m, d) = (
            self.base.projection_rows(),
            FeatureMap::<T>::input_dim(&self.base),
        );
        check_rows(x, rows, d, m, out, log_scales)?;
        if self.a == 0.0 {
            // B = 1, D = 1: SM+ itself, bit for bit.
            return self.base.map_rows(kernels, x, rows, out, log_scales);
        }
        self.exponents(kernels, x, rows, out, log_scales);
        let (s, log_d) = (self.base.scale(), T::from_f64(self.log_d));
        let out = &mut out[..rows * m];
        finish_biased_rows(kernels, (x, rows, d), s, log_d, out, log_scales);
        Ok(())
    }
}

/// The A that minimises the variance of the GERF estimate of `exp(x·y)` for inputs with
/// `ρ = |x + y|²/d` (after the data normaliser): `A* = (1 − 2ρ − √((2ρ + 1)² + 8ρ))/16`,
/// the root below 1/8 of `16A² + (4ρ − 2)A − ρ = 0`. `A*(0) = 0` (SM+), and it decreases
/// with ρ. NaN for a negative or non-finite ρ.
pub fn gerf_optimal_a(rho: f64) -> f64 {
    if !(rho.is_finite() && rho >= 0.0) {
        return f64::NAN;
    }
    (1.0 - 2.0 * rho - libm::sqrt((2.0 * rho + 1.0) * (2.0 * rho + 1.0) + 8.0 * rho)) / 16.0
}

/// `ρ = mean over pairs (i, j) of |xᵢ + yⱼ|²/d` for query rows `q` and key rows `k` (rows of
/// `d`), with the data normaliser's `d^(-1/4)` applied when `normalized`: the statistic
/// [`gerf_optimal_a`] takes, per (batch, head). O((rows of q + rows of k)·d), from
/// `mean|x|² + mean|y|² + 2·mean(x)·mean(y)`. Errors on empty or ragged rows or non-finite
/// entries.
pub fn gerf_rho<T: Float>(q: &[T], k: &[T], d: usize, normalized: bool) -> Result<f64> {
    check::nonzero("dim", d)?;
    for (what, x) in [("q", q), ("k", k)] {
        let rows = check::nonzero(what, x.len() / d)?;
        check::exact(what, x, rows * d)?;
        check::finite(what, x, d)?;
    }
    let s2 = if normalized {
        1.0 / libm::sqrt(d as f64)
    } else {
        1.0
    };
    Ok(rho_of(q, k, d) * s2)
}

/// `(mean|x|² + mean|y|² + 2·mean(x)·mean(y))/d` over rows of `d`, in f64.
fn rho_of<T: Float>(q: &[T], k: &[T], d: usize) -> f64 {
    let f = |v: &T| Float::to_f64(*v);
    let (nq, nk) = ((q.len() / d) as f64, (k.len() / d) as f64);
    let sq = |x: &[T]| x.iter().map(|v| f(v) * f(v)).sum::<f64>();
    let mut cross = 0.0;
    for j in 0..d {
        let mq = q.iter().skip(j).step_by(d).map(f).sum::<f64>() / nq;
        let mk = k.iter().skip(j).step_by(d).map(f).sum::<f64>() / nk;
        cross += mq * mk;
    }
    (sq(q) / nq + sq(k) / nk + 2.0 * cross) / d as f64
}
