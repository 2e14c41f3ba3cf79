//! Inspection: one row of the implied (approximate) attention matrix.

use crate::error::{Result, check};
use crate::{Accum, FeatureMap, Float, Kernels, MatMut, MatRef};

/// Elements [`attention_row`]'s scratch needs: one feature row (M).
pub fn attention_row_scratch_len<T: Float, F: FeatureMap<T>>(fm: &F) -> usize {
    fm.feature_dim()
}

/// Row of the attention matrix FAVOR+ implies for query `q`: `outⱼ = φ(q)·φ(kⱼ) / Σⱼ φ(q)·φ(kⱼ)`
/// over `keys` keys whose features were precomputed with [`FeatureMap::map_rows`]
/// (`key_features` keys×M, `key_log_scales` keys). O(keys·M). With `causal_position = Some(i)`
/// only keys `0..=i` are weighted (the rest get 0), as causal attention's row i.
///
/// The weights sum to 1 (for positive maps they are also non-negative). For visualising what
/// a head attends to without ever forming the L×L matrix.
#[allow(clippy::too_many_arguments)]
pub fn attention_row<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    kernels: &K,
    fm: &F,
    q: &[T],
    key_features: &[T],
    key_log_scales: &[T],
    keys: usize,
    causal_position: Option<usize>,
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (m, d) = (fm.feature_dim(), fm.input_dim());
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
