//! Inspection: one row of the implied (approximate) attention matrix.

use crate::error::{Result, check};
use crate::{Accum, FeatureMap, Float, Kernels, MatMut, MatRef};

/// Elements [`attention_row`]'s scratch needs: one feature row (M).
pub fn attention_row_scratch_len<T: Float, F: FeatureMap<T>>(fm: &F) -> usize {
    fm.feature_dim()
}

/// Keys already through the feature map ([`FeatureMap::map_rows`]): what
/// [`attention_row`] weighs a query against.
#[derive(Debug, Clone, Copy)]
pub struct KeyFeatures<'a, T> {
    /// φ(k) rows, `keys`×M, row-major.
    pub features: &'a [T],
    /// Their log-scales, `keys` of them.
    pub log_scales: &'a [T],
    /// Number of keys.
    pub keys: usize,
}

impl<'a, T> KeyFeatures<'a, T> {
    /// `keys` mapped keys: `features` (keys×M) and their `log_scales` (keys), as
    /// [`FeatureMap::map_rows`] writes them. Their lengths are checked where they are used.
    pub fn new(features: &'a [T], log_scales: &'a [T], keys: usize) -> Self {
        Self {
            features,
            log_scales,
            keys,
        }
    }
}

/// Row of the attention matrix FAVOR+ implies for query `q`: `outⱼ = φ(q)·φ(kⱼ) / Σⱼ φ(q)·φ(kⱼ)`
/// over the mapped keys `k` (see [`KeyFeatures`]). O(keys·M). With `causal_position = Some(i)`
/// only keys `0..=i` are weighted (the rest get 0), as causal attention's row i.
///
/// The weights sum to 1 (for positive maps they are also non-negative). For visualising what
/// a head attends to without ever forming the L×L matrix.
pub fn attention_row<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    kernels: &K,
    fm: &F,
    q: &[T],
    k: KeyFeatures<'_, T>,
    causal_position: Option<usize>,
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (m, d) = (fm.feature_dim(), fm.input_dim());
    let KeyFeatures {
        features: key_features,
        log_scales: key_log_scales,
        keys,
    } = k;
    check::nonzero("keys", keys)?;
    check::exact("q", q, d)?;
    crate::range::rows(fm, "q", q, d)?;
    check::exact("key_features", key_features, check::mul(keys, m)?)?;
    check::exact("key_log_scales", key_log_scales, keys)?;
    check::finite("key_features", key_features, m)?;
    check::finite("key_log_scales", key_log_scales, 1)?;
    check::room("out", out, keys)?;
    check::room("scratch", scratch, m)?;
    let visible = match causal_position {
        Some(i) if i >= keys => {
            return Err(crate::Error::InvalidParameter {
                what: "causal_position must be < keys",
            });
        }
        Some(i) => i + 1,
        None => keys,
    };
    let qf = &mut scratch[..m];
    let mut ql = [T::zero()];
    fm.map_rows(kernels, q, 1, qf, &mut ql)?;
    let c = kernels.max(&key_log_scales[..visible]);
    let keys_m = MatRef::row_major(key_features, visible, m).t();
    let row = MatMut::row_major(&mut out[..visible], 1, visible);
    kernels.gemm(row, Accum::Overwrite, MatRef::row_major(qf, 1, m), keys_m);
    kernels.mul_exp(&mut out[..visible], &key_log_scales[..visible], c);
    out[visible..keys].fill(T::zero());
    let total = out[..visible].iter().fold(T::zero(), |s, &x| s + x);
    kernels.scale(T::one() / crate::state::guard(total), &mut out[..visible]);
    Ok(())
}
