//! Positive random features (SM+).

use super::*;

/// Positive random features (SM+): `φ(x)ᵢ = exp(wᵢ·x − |x|²/2) / √m`, unbiased for
/// `exp(x·y)` with the lowest variance exactly where softmax values are small.
#[derive(Debug, Clone, Copy)]
pub struct PositiveSoftmax<'w, T> {
    w: &'w [T],
    wt: Option<&'w [T]>,
    /// W's structured (SORF) form, when the map projects with it instead of W.
    signs: Option<&'w [T]>,
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

impl<T> PositiveSoftmax<'_, T> {
    /// max |wᵢ|, for [`GerfSoftmax`](super::GerfSoftmax)'s range checks.
    pub(super) fn row_norm_of(&self) -> f64 {
        self.row_norm
    }
}

impl<T: Float> FeatureMap<T> for PositiveSoftmax<'_, T> {
    fn remap_row<K: Kernels<T>>(&self, kernels: &K, x: &[T], weights: &[T], out: &mut [T]) -> bool {
        let m = self.m;
        let mut row_max = [T::zero()];
        let (x, o) = (
            MatRef::row_major(x, 1, self.d),
            MatMut::row_major(out, 1, m),
        );
        self.project_rows(kernels, x, self.scale(), o, &mut row_max);
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
        self.project_rows(kernels, xm, s, o, log_scales);
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
