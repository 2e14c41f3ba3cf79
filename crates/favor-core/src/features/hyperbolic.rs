//! Hyperbolic positive random features (SMhyp+).

use super::*;

/// Hyperbolic positive features (SMhyp+):
/// `[exp(wᵢ·x − |x|²/2), exp(−wᵢ·x − |x|²/2)] / √(2m)` — 2m outputs, lower variance than SM+.
/// Output layout per row: the m "+" features, then the m "−" features.
#[derive(Debug, Clone, Copy)]
pub struct HyperbolicSoftmax<'w, T> {
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
softmax_map_common!(HyperbolicSoftmax, 2);

impl<T: Float> FeatureMap<T> for HyperbolicSoftmax<'_, T> {
    fn remap_row<K: Kernels<T>>(&self, kernels: &K, x: &[T], weights: &[T], out: &mut [T]) -> bool {
        let m = self.m;
        let mut row_max = [T::zero()];
        let (x, o) = (
            MatRef::row_major(x, 1, self.d),
            MatMut::row_major(out, 1, m),
        );
        self.project_rows(kernels, x, self.scale(), o, &mut row_max);
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
        self.project_rows(kernels, xm, s, o, log_scales);
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
