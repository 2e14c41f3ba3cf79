//! The supported input range (crate docs, "Supported range"), checked by every entry point
//! before it writes anything.

use crate::error::{Error, Result, check};
use crate::{FeatureMap, Float};

/// Checks query or key rows: finite, and every entry within the map's
/// [`max_input`](FeatureMap::max_input). Returns their largest magnitude.
pub(crate) fn rows<T: Float, F: FeatureMap<T>>(
    fm: &F,
    what: &'static str,
    x: &[T],
    d: usize,
) -> Result<T> {
    let a = check::max_abs(what, x, d)?;
    check::within(what, x, d, a, fm.max_input())?;
    Ok(a)
}

/// Checks values `v` (finite) and that attention over `keys` keys stays finite: with `F(a)`
/// the map's [`feature_bound`](FeatureMap::feature_bound) for rows of largest entry `a`,
/// `M · N · (1 + ln N) · F(a_q) · F(a_k) · max(1, max|v|) ≤ MAX / 4`. The sums S, z, `φ(q)ᵀS`
/// and `φ(q)·z` are then bounded by it (the `1 + ln N` covers a stream, whose earlier keys
/// were each checked against their own, smaller N: their bounds sum like the harmonic series).
pub(crate) fn sums<T: Float, F: FeatureMap<T>>(
    fm: &F,
    aq: T,
    ak: T,
    v: &[T],
    dv: usize,
    keys: u64,
) -> Result<()> {
    let av = check::max_abs("v", v, dv)?;
    let (Some(fq), Some(fk)) = (fm.feature_bound(aq), fm.feature_bound(ak)) else {
        return Ok(());
    };
    // ln N ≤ ln 2 · (bits of N): an integer bound, not a logarithm on every decoding step.
    let n = keys.max(1);
    let ln_n = core::f64::consts::LN_2 * f64::from(u64::BITS - n.leading_zeros());
    let big = T::max_value().to_f64() / 4.0;
    let features = fm.feature_dim() as f64 * n as f64 * (1.0 + ln_n) * fq * fk;
    if features.is_nan() || features > big {
        return Err(Error::OutOfRange { what: "k", row: 0 });
    }
    check::within("v", v, dv, av, T::from_f64(big / features))
}

/// [`rows`] for q and k, then [`sums`] over `keys` keys.
#[allow(clippy::too_many_arguments)]
pub(crate) fn inputs<T: Float, F: FeatureMap<T>>(
    fm: &F,
    q: &[T],
    k: &[T],
    v: &[T],
    d: usize,
    dv: usize,
    keys: u64,
) -> Result<()> {
    let aq = rows(fm, "q", q, d)?;
    let ak = rows(fm, "k", k, d)?;
    sums(fm, aq, ak, v, dv, keys)
}

/// The exact softmax paths: logits `τ·q·k` within a quarter of `T`'s range
/// (`|τ|·d·max|q|·max|k| ≤ MAX/4`), and the weighted sums of values
/// (`N · max|v| ≤ MAX/4`, weights ≤ 1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn exact<T: Float>(
    tau: T,
    q: &[T],
    k: &[T],
    v: &[T],
    d: usize,
    dv: usize,
    keys: usize,
) -> Result<()> {
    let big = T::max_value().to_f64() / 4.0;
    let aq = check::max_abs("q", q, d)?;
    let ak = check::max_abs("k", k, d)?;
    let av = check::max_abs("v", v, dv)?;
    let per = tau.abs().to_f64() * d as f64 * ak.to_f64();
    if per * aq.to_f64() > big {
        // Blame the query rows that overflow against the largest key.
        check::within("q", q, d, aq, T::from_f64(big / per))?;
    }
    check::within("v", v, dv, av, T::from_f64(big / keys.max(1) as f64))
}
