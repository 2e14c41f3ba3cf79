//! Trigonometric random features (SM): the original random Fourier features.

use super::*;

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
    /// W's structured (SORF) form, when the map projects with it instead of W.
    signs: Option<&'w [T]>,
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
        self.project_rows(kernels, xm, s, o, log_scales);
        let log_sqrt_m = T::from_usize(m).libm_sqrt().libm_ln();
        for r in 0..rows {
            kernels.sin_cos(&mut out[r * 2 * m..(r + 1) * 2 * m], m);
            log_scales[r] = half_sq_norm(kernels, &x[r * d..(r + 1) * d], s) - log_sqrt_m;
        }
        Ok(())
    }
}
