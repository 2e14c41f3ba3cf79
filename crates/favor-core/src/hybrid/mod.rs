//! Hybrid attention: exact softmax weights over each query's exact set (the first `sinks`
//! positions and a window around it), random features for every other key, under one
//! normaliser and one stabiliser.
//!
//! Three evaluations of the same definition: [`HybridStream`] (causal, token by token, a ring
//! of the window's raw keys and values plus a prefix state), and the causal-chunked and
//! bidirectional paths behind [`Plan::with_hybrid`](crate::Plan::with_hybrid).

mod bidirectional;
mod causal;
mod memory;
mod snapshot;
mod stream;

pub(crate) use bidirectional::{bidirectional, bidirectional_scratch_len};
pub(crate) use causal::{causal_chunked, causal_chunked_scratch_len};
pub use memory::{AttachedHybrid, HybridMemory};
pub use snapshot::HYBRID_SNAPSHOT_VERSION;
pub use stream::HybridStream;

use crate::error::{Result, check};
use crate::state::scale_by_exp;
use crate::{Float, Kernels};

/// Which keys a query weighs exactly: the first `sinks` positions, and the window — causal:
/// keys `i − w ..= i`; bidirectional: keys with `|i − j| ≤ w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HybridShape {
    /// w, the window's reach on each side the query can see.
    pub window: usize,
    /// Positions `0 .. sinks` are exact for every query.
    pub sinks: usize,
}

/// The largest q or k entry for which every exact logit `τ·q·k` (d terms) stays finite in
/// `T`: `√(MAX / (4|τ|·d))`.
fn logit_limit<T: Float>(tau: T, d: usize) -> T {
    let limit = T::max_value().to_f64() / (4.0 * tau.abs().to_f64() * d as f64);
    T::from_f64(libm::sqrt(limit))
}

/// Checks that q and k entries are within [`logit_limit`].
pub(crate) fn check_logits<T: Float>(tau: T, d: usize, q: &[T], k: &[T]) -> Result<()> {
    let limit = logit_limit(tau, d);
    for (what, x) in [("q", q), ("k", k)] {
        check::within(what, x, d, check::max_abs(what, x, d)?, limit)?;
    }
    Ok(())
}

/// Scratch elements of a hybrid path: the state, `panel_rows` feature rows with their
/// log-scales, `tiles` tile elements and `row_values` more.
fn scratch_len(
    features: usize,
    value_dim: usize,
    panel_rows: usize,
    tiles: usize,
    row_values: usize,
) -> Result<usize> {
    let panels = check::mul(panel_rows, check::add(features, 1)?)?;
    let rest = check::add(check::add(panels, tiles)?, row_values)?;
    check::add(crate::state::state_len(features, value_dim)?, rest)
}

/// Checks one call of a hybrid plan — shapes and range as FAVOR+ does, every exact logit
/// finite, `needed` elements of scratch — and returns the map's temperature.
pub(crate) fn check_call<T: Float, K: Kernels<T>, F: crate::FeatureMap<T>>(
    plan: &crate::Plan<'_, T, K, F>,
    x: crate::inputs::Qkv<'_, T>,
    out: &[T],
    scratch: &[T],
    needed: usize,
) -> Result<T> {
    let (_, fm, shape, opts) = plan.parts();
    shape.check_inputs(fm, x, out, opts.key_mask, 0)?;
    let tau = temperature(fm)?;
    check_logits(tau, shape.dim, x.q, x.k)?;
    check::room("scratch", scratch, needed)?;
    Ok(tau)
}

/// The temperature of a map that estimates softmax; an error for any other map.
/// The largest query or key entry hybrid attention over `fm` admits beyond the map's own
/// [`max_input`](crate::FeatureMap::max_input): every exact logit `τ·q·k` stays finite. For
/// callers that scan their inputs themselves (favor-tensor, before any head runs), as
/// [`check_range`](crate::check_range) is for FAVOR+. Errors if the map does not estimate
/// softmax.
pub fn hybrid_input_limit<T: Float, F: crate::FeatureMap<T>>(fm: &F) -> Result<T> {
    Ok(fm
        .max_input()
        .min(logit_limit(temperature(fm)?, fm.input_dim())))
}

pub(crate) fn temperature<T: Float, F: crate::FeatureMap<T>>(fm: &F) -> Result<T> {
    fm.softmax_temperature()
        .ok_or(crate::Error::InvalidParameter {
            what: "hybrid attention needs a softmax feature map",
        })
}

/// One query row's far (random-feature) part, as the paths leave it: the row of `out`
/// holds its numerator and `den` its denominator, both to be multiplied by `e^{log_scale}`
/// (`log_scale = −∞` or `den ≤ 0`: no far key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Far<T> {
    pub den: T,
    pub log_scale: T,
}

/// Marks a contiguous run of a row's logits as off its exact set: a `−∞` logit weighs 0 in
/// [`weigh_row`]. Windows are runs, and masked keys are marked one by one only when a mask
/// exists ([`exclude_masked`]), so a row costs no per-key test.
pub(crate) fn exclude<T: Float>(logits: &mut [T], run: core::ops::Range<usize>) {
    logits[run].fill(T::neg_infinity());
}

/// Marks the row's masked keys (`key(u)` is the key of logit u) as [`exclude`] does.
pub(crate) fn exclude_masked<T: Float>(
    logits: &mut [T],
    mask: Option<&[bool]>,
    key: impl Fn(usize) -> usize,
) {
    if let Some(mask) = mask {
        for (u, l) in logits.iter_mut().enumerate() {
            if !mask[key(u)] {
                *l = T::neg_infinity();
            }
        }
    }
}

/// Finishes one row: `logits` holds its exact logits (`τ·q·k`) on its exact set and `−∞`
/// elsewhere ([`exclude`]). Picks the row's top log-weight over both kinds, turns the logits
/// into weights `e^{l − top}` (0 off the exact set), scales the far numerator in `out` to the
/// same scale, and returns the row's total weight; the caller adds the exact weights times
/// their values to `out` and divides by the total.
pub(crate) fn weigh_row<T: Float, K: Kernels<T>>(
    kernels: &K,
    logits: &mut [T],
    far: Far<T>,
    out: &mut [T],
) -> T {
    let far_log = if far.den > T::zero() && far.log_scale != T::neg_infinity() {
        far.log_scale + far.den.libm_ln()
    } else {
        T::neg_infinity()
    };
    let top = kernels.max(logits).max(far_log);
    if top == T::neg_infinity() {
        // No visible key at all: the row is 0.
        logits.fill(T::zero());
        out.fill(T::zero());
        return T::zero();
    }
    // e^{−∞ − top} is exactly 0 on every backend: excluded keys weigh nothing.
    kernels.exp_shift(logits, top);
    let mut total = kernels.sum(logits);
    if far_log == T::neg_infinity() {
        out.fill(T::zero());
    } else {
        // e^{log_scale − top} alone may overflow where den underflowed; the product may not.
        scale_by_exp(kernels, out, far.log_scale - top);
        total = total + (far_log - top).libm_exp();
    }
    total
}
