//! The supported input range (crate docs, "Supported range"), checked by every entry point
//! before it writes anything.

use crate::error::{Error, Result, check};
use crate::inputs::Qkv;
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

/// Checks values `v` (finite) and that attention over `keys` keys stays finite (crate docs,
/// "Supported range"); `aq`, `ak` the largest query and key entries.
pub(crate) fn sums<T: Float, F: FeatureMap<T>>(
    fm: &F,
    aq: T,
    ak: T,
    v: &[T],
    dv: usize,
    keys: u64,
) -> Result<()> {
    let av = check::max_abs("v", v, dv)?;
    match bound(fm, aq, ak, keys) {
        None => Ok(()),
        Some(Limit::Features(what)) => Err(Error::OutOfRange { what, row: 0 }),
        Some(Limit::Values(limit)) => check::within("v", v, dv, av, T::from_f64(limit)),
    }
}

/// The largest value entry any call can admit (one key, inputs of 0: the loosest bound):
/// what a value restored from a snapshot may hold.
pub(crate) fn value_ceiling<T: Float, F: FeatureMap<T>>(fm: &F) -> T {
    match bound(fm, T::zero(), T::zero(), 1) {
        Some(Limit::Values(limit)) if limit < T::max_value().to_f64() => T::from_f64(limit),
        _ => T::max_value(),
    }
}

/// What the range bound leaves: nothing (unchecked map), or the largest admissible
/// `max(1, max|v|)`; `Features` when even values of 1 would overflow the sums.
enum Limit {
    Features(&'static str),
    Values(f64),
}

/// With `F(a)` the map's [`feature_bound`](FeatureMap::feature_bound) and
/// `F = max(1, F(a_q), F(a_k))`, the sums S, z, `φ(q)ᵀS` and `φ(q)·z` over N keys are bounded
/// by `M · N · (1 + ln N) · F² · max(1, max|v|)`, which must stay below `MAX/4`. The symmetric
/// `F²` also bounds every product of a query's feature and an earlier key's (each at most the
/// larger of their squares), so a stream whose calls each passed stays within range; the
/// `1 + ln N` lets the per-call bounds of a stream's earlier keys (each checked against its
/// own, smaller N) sum to less than the MAX/4 headroom (`Σ 1/(j(1 + ln j)) < 4` for any
/// N < 2⁶⁴).
fn bound<T: Float, F: FeatureMap<T>>(fm: &F, aq: T, ak: T, keys: u64) -> Option<Limit> {
    let (Some(fq), Some(fk)) = (fm.feature_bound(aq), fm.feature_bound(ak)) else {
        return None;
    };
    let f = fq.max(fk).max(1.0);
    // ln N ≤ ln 2 · (bits of N): an integer bound, not a logarithm on every decoding step.
    let n = keys.max(1);
    let ln_n = core::f64::consts::LN_2 * f64::from(u64::BITS - n.leading_zeros());
    let big = T::max_value().to_f64() / 4.0;
    let features = fm.feature_dim() as f64 * n as f64 * (1.0 + ln_n) * f * f;
    if features.is_nan() || features > big {
        return Some(Limit::Features(if fq > fk { "q" } else { "k" }));
    }
    Some(Limit::Values(big / features))
}

/// The supported range (crate docs, "Supported range") checked from the largest magnitudes
/// alone, for callers that scan their inputs themselves (favor-tensor, before any head runs):
/// query and key entries at most `max_q`, `max_k`, values at most `max_v`, `keys` keys summed
/// in all. Errors are [`Error::OutOfRange`] naming `"q"`, `"k"` or `"v"` with row 0 (no rows
/// were given). A caller whose maxima pass may call the entry points on any subset of these
/// inputs without an `OutOfRange`.
pub fn check_range<T: Float, F: FeatureMap<T>>(
    fm: &F,
    max_q: T,
    max_k: T,
    max_v: T,
    keys: u64,
) -> Result<()> {
    let limit = fm.max_input();
    for (what, a) in [("q", max_q), ("k", max_k)] {
        if a.is_nan() || a.abs() > limit {
            return Err(Error::OutOfRange { what, row: 0 });
        }
    }
    match bound(fm, max_q.abs(), max_k.abs(), keys) {
        Some(Limit::Features(what)) => Err(Error::OutOfRange { what, row: 0 }),
        Some(Limit::Values(l)) if max_v.is_nan() || max_v.abs().to_f64() > l => {
            Err(Error::OutOfRange { what: "v", row: 0 })
        }
        _ => Ok(()),
    }
}

/// [`rows`] for q and k (rows of `d`), then [`sums`] over `keys` keys (values rows of `dv`).
pub(crate) fn inputs<T: Float, F: FeatureMap<T>>(
    fm: &F,
    Qkv { q, k, v }: Qkv<'_, T>,
    (d, dv): (usize, usize),
    keys: u64,
) -> Result<()> {
    let aq = rows(fm, "q", q, d)?;
    let ak = rows(fm, "k", k, d)?;
    sums(fm, aq, ak, v, dv, keys).map_err(|e| match e {
        // The features' bound comes from the largest entry: blame the row holding it.
        Error::OutOfRange { what: "q", .. } => Error::OutOfRange {
            what: "q",
            row: row_of(q, d, aq),
        },
        Error::OutOfRange { what: "k", .. } => Error::OutOfRange {
            what: "k",
            row: row_of(k, d, ak),
        },
        other => other,
    })
}

/// The first row of `x` (rows of `d`) holding an entry of magnitude `a`.
fn row_of<T: Float>(x: &[T], d: usize, a: T) -> usize {
    x.iter().position(|e| e.abs() == a).unwrap_or(0) / d.max(1)
}

/// The exact softmax paths: logits `τ·q·k` within a quarter of `T`'s range
/// (`|τ|·d·max|q|·max|k| ≤ MAX/4`), and the weighted sums of values
/// (`N · max|v| ≤ MAX/4`, weights ≤ 1).
pub(crate) fn exact<T: Float>(
    tau: T,
    Qkv { q, k, v }: Qkv<'_, T>,
    (d, dv): (usize, usize),
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
