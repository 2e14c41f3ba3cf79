//! Data-aware (calibrated, importance-weighted) positive random features.

use super::*;

/// Data-aware positive random features for the softmax kernel: SM+ with the projection rows
/// drawn from a fitted Gaussian proposal and importance-weighted back to `exp(x·y)`,
///
/// `φ(x)ᵣ = exp(ωᵣ·x − |x|²/2 + cᵣ) / √m`, `cᵣ = ½ ln [N(ωᵣ; 0, I) / N(ωᵣ; 0, Σ_p)]
///  = (ωᵣᵀΣ_p⁻¹ωᵣ − |ωᵣ|² + ln det Σ_p)/4`
///
/// (x after the d^(-1/4) data normaliser). Because `exp(x·y) = E_{ω~N(0,I)}[exp(ωᵀ(x + y)
/// − |x|²/2 − |y|²/2)]`, drawing ω ~ N(0, Σ_p) instead and weighting each draw by the density
/// ratio keeps `E[φ(x)·φ(y)] = exp(x·y)` for *any* positive definite Σ_p; splitting the
/// ratio's square root between the two sides puts it into the per-feature offsets cᵣ, so the
/// map costs exactly what SM+ costs per token (one bias add per feature), stays positive,
/// and uses the same stabiliser and log-scales. [`GerfSoftmax`] is the isotropic case
/// `Σ_p = (1 − 4A)·I`. The second moment is finite when `Σ_p ≻ I/2`; it is smallest
/// where Σ_p follows the data ([`optimal_proposal_variance`](crate::optimal_proposal_variance),
/// per eigen-direction of the second moment of `x + y`), which is what
/// [`calibrate`](crate::calibrate) fits from one calibration chunk of a head.
///
/// **The key shift μ.** Attention with every key shifted by the same vector, `kⱼ − μ`, is
/// attention with the original keys: `qᵢ·(kⱼ − μ) = qᵢ·kⱼ − qᵢ·μ`, a constant per query row
/// that cancels in the softmax normaliser (for the exact window of hybrid attention too). The
/// estimator's variance, though, depends on `qᵢ + kⱼ − μ`, so calibration picks μ to centre
/// it. The map is symmetric — the attention paths map queries and keys through the same
/// [`FeatureMap::map_rows`] and cannot tell them apart — so it does **not** shift keys
/// itself: the caller shifts every key, once, by [`key_shift`](Self::key_shift) (in the
/// units of the raw keys, before the data normaliser), e.g. by subtracting it from the key
/// projection's bias, or with [`shift_keys`](Self::shift_keys). Queries are not shifted.
/// Unshifted keys still give an unbiased estimate, only not the calibrated variance.
///
/// ```
/// use favor_core::*;
/// let (l, d, m) = (32, 4, 16);
/// let q: Vec<f64> = (0..l * d).map(|i| (i as f64 * 0.37).sin() + 0.5).collect();
/// let mut k: Vec<f64> = (0..l * d).map(|i| (i as f64 * 0.71).cos() - 1.0).collect();
/// let cal = Calibration::new(m, 7);
/// let mut scratch = vec![0f64; calibrate_scratch_len(l, d, m).unwrap()];
/// let (mut omega, mut offsets, mut mu) = (vec![0f64; m * d], vec![0f64; m], vec![0f64; d]);
/// let parts = DataAwareParts { omega: &mut omega, offsets: &mut offsets, mu: &mut mu };
/// calibrate(&q, &k, d, &cal, &mut scratch, parts).unwrap();
/// let phi = DataAwareSoftmax::new(&omega, &offsets, &mu, m, d).unwrap();
/// phi.shift_keys(&mut k).unwrap(); // keys only, once
/// let shape = Shape::new(l, d, d);
/// let plan = Plan::new(PlanKind::Bidirectional, Scalar, &phi, shape, Options::default()).unwrap();
/// let mut out = vec![0f64; l * d];
/// plan.run(&q, &k, &q, &mut out, &mut vec![0f64; plan.scratch_len()]).unwrap();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DataAwareSoftmax<'w, T> {
    /// ω as the projection, the data normaliser and the projection's range limits, shared
    /// with SM+.
    base: PositiveSoftmax<'w, T>,
    /// cᵣ, one per feature.
    offsets: &'w [T],
    /// μ, the key shift (d).
    mu: &'w [T],
    /// `maxᵣ (|ωᵣ|²/2 + cᵣ)` with room for rounding: the log-scale bound.
    log_scale_bound: f64,
}

impl<'w, T: Float> DataAwareSoftmax<'w, T> {
    /// A map over `omega` (`features × dim`, row-major), the per-feature `offsets`
    /// (`features`) and the key shift `mu` (`dim`), e.g. from [`calibrate`](crate::calibrate),
    /// with the d^(-1/4) data normaliser on. Every length must be exact and every entry
    /// finite; each offset must be within a quarter of `T`'s range (as the projections are),
    /// so no exponent overflows.
    pub fn new(
        omega: &'w [T],
        offsets: &'w [T],
        mu: &'w [T],
        features: usize,
        dim: usize,
    ) -> Result<Self> {
        let base = PositiveSoftmax::new(omega, features, dim)?;
        check::exact("offsets", offsets, features)?;
        check::exact("mu", mu, dim)?;
        let top = check::max_abs("offsets", offsets, 1)?;
        check::within(
            "offsets",
            offsets,
            1,
            top,
            T::max_value() / T::from_f64(4.0),
        )?;
        check::finite("mu", mu, dim)?;
        let mut bound = f64::NEG_INFINITY;
        let mut size = 0f64;
        for (row, &c) in omega.chunks_exact(dim).zip(offsets) {
            let half = 0.5 * row.iter().map(|&w| w.to_f64() * w.to_f64()).sum::<f64>();
            bound = bound.max(half + c.to_f64());
            size = size.max(half + c.to_f64().abs());
        }
        Ok(Self {
            base,
            offsets,
            mu,
            log_scale_bound: bound + 1e-3 * size + 1.0,
        })
    }

    /// Turns the d^(-1/4) data normaliser on (default) or off; see
    /// [`PositiveSoftmax::with_data_normalizer`]. [`calibrate`](crate::calibrate) fits ω for
    /// normalised inputs; off, the map is still unbiased for `exp(x·y)`.
    pub fn with_data_normalizer(mut self, on: bool) -> Self {
        self.base = self.base.with_data_normalizer(on);
        self
    }

    /// Gives the map ωᵀ as well; see [`PositiveSoftmax::with_transposed_projection`].
    pub fn with_transposed_projection(mut self, wt: &'w [T]) -> Result<Self> {
        self.base = self.base.with_transposed_projection(wt)?;
        Ok(self)
    }

    /// The per-feature offsets cᵣ.
    pub fn offsets(&self) -> &'w [T] {
        self.offsets
    }

    /// μ, the shift every key must get (`k − μ`, raw key units) before it meets this map.
    pub fn key_shift(&self) -> &'w [T] {
        self.mu
    }

    /// Subtracts [`key_shift`](Self::key_shift) from every row of `keys` (rows of `dim`;
    /// the length must be a multiple of it). Apply it to the keys of every path — FAVOR+ and
    /// the exact window of hybrid attention alike — and never to queries.
    pub fn shift_keys(&self, keys: &mut [T]) -> Result<()> {
        let d = self.mu.len();
        check::exact("keys", keys, keys.len() / d * d)?;
        for row in keys.chunks_exact_mut(d) {
            for (x, &m) in row.iter_mut().zip(self.mu) {
                *x = *x - m;
            }
        }
        Ok(())
    }

    /// Writes the exponents `s·ωᵣ·x + cᵣ` of `rows` rows into `out` (stride m).
    fn exponents<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        scratch: &mut [T],
    ) {
        let bias = Some((T::one(), self.offsets));
        let (p, s) = (self.base.projection(), self.base.scale());
        biased_exponents(kernels, p, s, bias, (x, rows), out, scratch);
    }
}

impl<T: Float> FeatureMap<T> for DataAwareSoftmax<'_, T> {
    fn remap_row<K: Kernels<T>>(&self, kernels: &K, x: &[T], weights: &[T], out: &mut [T]) -> bool {
        let m = self.base.projection_rows();
        self.exponents(kernels, x, 1, out, &mut [T::zero()]);
        shift_against(&mut out[..m], &weights[..m])
    }
    /// `ℓ = maxᵣ (ωᵣ·x' + cᵣ) − |x'|²/2 − ln √m ≤ maxᵣ (|ωᵣ|²/2 + cᵣ)`.
    fn max_log_scale(&self) -> T {
        T::from_f64(self.log_scale_bound)
    }
    fn max_input(&self) -> T {
        self.base.max_input()
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
        let mut h = Fnv::new(6);
        h.u64(FeatureMap::<T>::fingerprint(&self.base));
        h.floats(self.offsets);
        h.floats(self.mu);
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
        let (m, d) = (self.base.projection_rows(), self.mu.len());
        check_rows(x, rows, d, m, out, log_scales)?;
        self.exponents(kernels, x, rows, out, log_scales);
        let s = self.base.scale();
        let out = &mut out[..rows * m];
        finish_biased_rows(kernels, (x, rows, d), s, T::zero(), out, log_scales);
        Ok(())
    }
}
