//! Standalone softmax estimation: partition functions over a fixed item set in O(M·d).

use crate::error::{Error, Result, check};
use crate::inputs::Qkv;
use crate::{FeatureMap, Float, Kernels};

/// Estimates `Z(q) = Σᵢ exp(τ·q·kᵢ)` over a fixed set of N items (an output vocabulary, a
/// recommender's catalogue) in O(M·d) per query, independent of N, by precomputing
/// `Σᵢ φ(kᵢ)` once.
///
/// Results are returned as logarithms so that neither huge partition functions nor tiny
/// probabilities overflow. The sum is kept at a running log-scale, like
/// [`PrefixState`](crate::PrefixState), so items can be added in any number of batches.
/// With a positive feature map the estimate is unbiased for Z (not for log Z).
///
/// ```
/// use favor_core::*;
/// let (d, m) = (4, 256);
/// let mut w = vec![0f64; m * d];
/// projection(ProjectionKind::default(), 9, m, d, &mut w).unwrap();
/// let phi = PositiveSoftmax::new(&w, m, d).unwrap().with_data_normalizer(false);
/// let items = [0.1, 0.2, 0.0, -0.1, 0.3, -0.2, 0.1, 0.0];
/// let mut buf = vec![0f64; PartitionEstimator::<f64, _, Scalar>::buffer_len(&phi)];
/// let mut est = PartitionEstimator::new(Scalar, &phi, &mut buf).unwrap();
/// est.add_items(&items, 2).unwrap();
/// let q = [0.2, 0.1, -0.1, 0.0];
/// let exact: f64 = (0..2).map(|i| (0..4).map(|j| q[j] * items[4 * i + j]).sum::<f64>().exp()).sum();
/// let approx = est.log_partition(&q).unwrap().exp();
/// assert!((approx / exact - 1.0).abs() < 0.1);
/// ```
#[derive(Debug)]
pub struct PartitionEstimator<'a, T: Float, F: FeatureMap<T>, K: Kernels<T>> {
    kernels: K,
    fm: &'a F,
    sum: &'a mut [T],
    feats: &'a mut [T],
    log_scale: T,
    items: u64,
}

impl<'a, T: Float, F: FeatureMap<T>, K: Kernels<T>> PartitionEstimator<'a, T, F, K> {
    /// Elements the buffer needs: `2·M` (the feature sum and one feature row).
    pub fn buffer_len(fm: &F) -> usize {
        fm.feature_dim().saturating_mul(2)
    }

    /// An empty estimator. The map must estimate the softmax kernel
    /// ([`FeatureMap::softmax_temperature`] is `Some`) with positive features: a
    /// trigonometric map's estimate can be ≤ 0, which has no logarithm.
    pub fn new(kernels: K, fm: &'a F, buf: &'a mut [T]) -> Result<Self> {
        if fm.softmax_temperature().is_none() || !fm.is_positive() {
            return Err(Error::InvalidParameter {
                what: "the partition-function estimator needs a positive softmax feature map",
            });
        }
        let m = fm.feature_dim();
        check::room("estimator buffer", buf, Self::buffer_len(fm))?;
        let (sum, rest) = buf.split_at_mut(m);
        sum.fill(T::zero());
        Ok(Self {
            kernels,
            fm,
            sum,
            feats: &mut rest[..m],
            log_scale: T::neg_infinity(),
            items: 0,
        })
    }

    /// Items added so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Adds `n` items (rows of `keys`, n×d).
    pub fn add_items(&mut self, keys: &[T], n: usize) -> Result<()> {
        let d = self.fm.input_dim();
        check::exact("keys", keys, check::mul(n, d)?)?;
        crate::range::rows(self.fm, "keys", keys, d)?;
        let mut log = [T::zero()];
        for key in keys.chunks_exact(d) {
            self.fm
                .map_rows(&self.kernels, key, 1, self.feats, &mut log)?;
            self.items += 1;
            if log[0].is_nan() || log[0] == T::neg_infinity() {
                // Squared norm overflowed T: the item's true feature is the limit 0.
                continue;
            }
            if log[0] > self.log_scale {
                let f = (self.log_scale - log[0]).libm_exp();
                self.kernels.scale(f, self.sum);
                self.log_scale = log[0];
            }
            self.kernels
                .axpy((log[0] - self.log_scale).libm_exp(), self.feats, self.sum);
        }
        Ok(())
    }

    /// `ln Ẑ(q)`; `-∞` before any item is added.
    pub fn log_partition(&mut self, q: &[T]) -> Result<T> {
        let d = self.fm.input_dim();
        check::exact("q", q, d)?;
        crate::range::rows(self.fm, "q", q, d)?;
        let mut log = [T::zero()];
        self.fm
            .map_rows(&self.kernels, q, 1, self.feats, &mut log)?;
        let dot = self.kernels.dot(self.feats, self.sum);
        if self.items == 0 {
            return Ok(T::neg_infinity());
        }
        Ok(dot.libm_ln() + log[0] + self.log_scale)
    }

    /// `ln p̂(item | q) = τ·q·item − ln Ẑ(q)`: exact numerator, estimated partition function.
    pub fn log_probability(&mut self, q: &[T], item: &[T]) -> Result<T> {
        let d = self.fm.input_dim();
        check::exact("item", item, d)?;
        crate::range::rows(self.fm, "item", item, d)?;
        check::exact("q", q, d)?;
        crate::range::rows(self.fm, "q", q, d)?;
        // The exact logit τ·q·item must be finite, as in exact softmax attention.
        let tau = self.fm.softmax_temperature().unwrap_or(T::one());
        crate::range::exact(tau, Qkv::new(q, item, &[]), (d, 1), 1)?;
        let log_z = self.log_partition(q)?;
        Ok(tau * self.kernels.dot(q, item) - log_z)
    }
}
