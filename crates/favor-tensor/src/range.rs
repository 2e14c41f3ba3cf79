//! The supported input range, checked before anything runs.
//!
//! favor-core guarantees finite outputs for finite inputs as long as every `wᵢ·x` and `|x|²`
//! are finite in the compute type and the sums `S = Σ φ(k)vᵀ` cannot overflow. Those are
//! properties of the inputs *and* the projection, so this module checks them here, in f64,
//! with bounds that hold for every kernel:
//!
//! - every q and k row: `|x|² ≤ MAX/4` and `|W|·|x| ≤ MAX/4`, where `|W|` is the largest row
//!   norm of the projection (1 without one) and MAX the compute type's largest finite value;
//! - values: `max|v| ≤ f32::MAX` (outputs are f32) and `M · L · f² · max|v| ≤ MAX/4`, where L counts keys (all keys ever absorbed, for a
//!   stream), M is the feature dimension and f bounds one stored feature: 1 for the softmax
//!   maps and `exp` (stored rows are shifted by their maximum), `|W|·|x| + 1 + ε` for ReLU,
//!   ELU+1 and abs, `(|W|·|x|)² + ε` for square. This bounds `|S|`, `|z|` and `|φ(q)ᵀS|`.
//!
//! For f32 and the softmax kernel that means rows of norm up to ~10¹⁹ and values up to
//! ~10³⁸ / (M·L): far beyond anything a trained model produces, but not unbounded.

use crate::config::{Config, Kernel, Precision};
use crate::error::{Error, Result};
use crate::tensor::{Element, TensorView};

/// Largest |row| and |element| of one tensor, after checking every element is finite in the
/// compute type.
pub(crate) struct Stats {
    pub(crate) max_norm: f64,
    pub(crate) max_abs: f64,
}

/// Scans `t` (any `[B, H, L, width]`): finite in the compute type, and its extremes.
pub(crate) fn scan<E: Element>(
    name: &'static str,
    t: &TensorView<'_, E>,
    precision: Precision,
) -> Result<Stats> {
    let [_, heads, l, _] = t.shape();
    let (mut max_norm, mut max_abs) = (0f64, 0f64);
    for (row, x) in t.rows().enumerate() {
        // The common row: every element finite (and within f32 for an f32 layer), its sum of
        // squares finite. Eight independent lanes let the compiler vectorise what a single
        // running sum and max would serialise (this scan was ~10% of a bidirectional
        // forward). Any other row takes the exact, element-by-element path below.
        if let Some((sq, top)) = quick_row(x, precision) {
            max_abs = max_abs.max(top);
            max_norm = max_norm.max(sq.sqrt());
            continue;
        }
        let mut sq = 0f64;
        for (column, &e) in x.iter().enumerate() {
            let wide = e.to_f64();
            if !wide.is_finite() || (precision == Precision::F32 && !e.to_f32().is_finite()) {
                let source = if wide.is_finite() {
                    return Err(Error::OutOfRange {
                        tensor: name,
                        reason: format!(
                            "element {wide:e} (batch {}, head {}, row {}, column {column}) does not fit f32; use Precision::F64",
                            row / (heads * l),
                            row / l % heads,
                            row % l
                        ),
                    });
                } else {
                    favor_core::Error::NonFinite {
                        what: name,
                        row: row % l,
                    }
                };
                return Err(Error::Core {
                    batch: row / (heads * l),
                    head: row / l % heads,
                    source,
                });
            }
            sq += wide * wide;
            max_abs = max_abs.max(wide.abs());
        }
        // Finite elements beyond ~1e154 overflow the sum of squares, not the norm.
        let n = if sq.is_finite() {
            sq.sqrt()
        } else {
            norm_of(x.iter().map(|e| e.to_f64()))
        };
        max_norm = max_norm.max(n);
    }
    Ok(Stats { max_norm, max_abs })
}

/// The sum of squares and the largest magnitude of `x` in f64, when both are finite, every
/// element is finite, and (for an f32 layer) every element is below `f32::MAX`, so it cannot
/// round to infinity in f32; `None` otherwise (the caller then scans element by element).
/// The squares are summed in eight lanes, so the norm can differ from a running sum's in the
/// last bit: that only moves the range bound's decision for a row within an ulp of it.
fn quick_row<E: Element>(x: &[E], precision: Precision) -> Option<(f64, f64)> {
    const LANES: usize = 8;
    let (mut sq, mut top) = ([0f64; LANES], [0f64; LANES]);
    let (chunks, rest) = x.as_chunks::<LANES>();
    for c in chunks {
        for i in 0..LANES {
            let w = c[i].to_f64();
            sq[i] += w * w;
            top[i] = larger(w.abs(), top[i]);
        }
    }
    for (i, e) in rest.iter().enumerate() {
        let w = e.to_f64();
        sq[i] += w * w;
        top[i] = larger(w.abs(), top[i]);
    }
    let sum: f64 = sq.iter().sum();
    let top = top.iter().fold(0f64, |m, &a| larger(a, m));
    let ceiling = match precision {
        Precision::F32 => f64::from(f32::MAX),
        Precision::F64 => f64::INFINITY,
    };
    (sum.is_finite() && top < ceiling).then_some((sum, top))
}

/// `a` when it exceeds `b`, else `b`. Not `f64::max`: its NaN rule keeps the lane loop from
/// vectorising, and a NaN already makes the sum of squares NaN, which sends the row to the
/// exact path.
#[inline(always)]
fn larger(a: f64, b: f64) -> f64 {
    if a > b { a } else { b }
}

/// The Euclidean norm of finite `x` in f64, finite whenever the norm itself is: the sum of
/// squares is taken relative to the largest |xᵢ| when it would overflow (or underflow).
pub(crate) fn norm(x: &[f64]) -> f64 {
    let sq: f64 = x.iter().map(|v| v * v).sum();
    if sq.is_finite() && sq >= f64::MIN_POSITIVE {
        sq.sqrt()
    } else {
        norm_of(x.iter().copied())
    }
}

/// `|x|` as `max|xᵢ| · |x / max|xᵢ||`.
fn norm_of(x: impl Iterator<Item = f64> + Clone) -> f64 {
    let top = x.clone().fold(0f64, |a, v| a.max(v.abs()));
    if top == 0.0 || !top.is_finite() {
        return top;
    }
    let sq: f64 = x.map(|v| (v / top) * (v / top)).sum();
    top * sq.sqrt()
}

/// Largest finite value of the compute type.
fn max_value(p: Precision) -> f64 {
    match p {
        Precision::F32 => f64::from(f32::MAX),
        Precision::F64 => f64::MAX,
    }
}

/// The largest magnitudes of one call's q, k and v, for favor-core's own range check
/// ([`favor_core::check_range`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Maxima {
    pub(crate) q: f64,
    pub(crate) k: f64,
    pub(crate) v: f64,
}

/// Checks q, k and v of one call against the supported range (module docs) and returns their
/// largest magnitudes. `keys` counts every key the state will have absorbed after the call.
pub(crate) fn check<E: Element>(
    cfg: &Config,
    w_norm: f64,
    feature_dim: usize,
    q: &TensorView<'_, E>,
    k: &TensorView<'_, E>,
    v: &TensorView<'_, E>,
    keys: u64,
) -> Result<Maxima> {
    let limit = max_value(cfg.precision) / 4.0;
    let precision = precision_name(cfg.precision);
    let mut proj = 0f64;
    let mut maxima = [0f64; 2];
    for (i, (name, t)) in [("q", q), ("k", k)].into_iter().enumerate() {
        let s = scan(name, t, cfg.precision)?;
        maxima[i] = s.max_abs;
        if s.max_norm * s.max_norm > limit {
            return Err(Error::OutOfRange {
                tensor: name,
                reason: format!(
                    "a row of norm {:e}: its squared norm overflows {precision}",
                    s.max_norm
                ),
            });
        }
        let p = w_norm * s.max_norm;
        if p > limit {
            // |x|² ≤ MAX/4 passed above, so the product overflows only when |W| exceeds
            // √(MAX/4) ≥ |x|: the projection (a given matrix with huge values; generated rows
            // have norms near √d) is at fault, not the inputs.
            return Err(Error::OutOfRange {
                tensor: "projection",
                reason: format!(
                    "a row of norm {w_norm:e} times {name}'s largest row norm {:e} overflows {precision}",
                    s.max_norm
                ),
            });
        }
        proj = proj.max(p);
    }
    let f = match cfg.kernel {
        Kernel::Relu | Kernel::EluPlusOne | Kernel::Abs => proj + 1.0 + cfg.epsilon,
        Kernel::Square => proj * proj + cfg.epsilon,
        _ => 1.0,
    };
    let s = scan("v", v, cfg.precision)?;
    // Outputs are f32 whatever the precision, and (for the positive kernels) convex
    // combinations of the values: values beyond f32 could only come back infinite.
    if s.max_abs > f64::from(f32::MAX) {
        return Err(Error::OutOfRange {
            tensor: "v",
            reason: format!(
                "a value of magnitude {:e} cannot appear in the f32 output",
                s.max_abs
            ),
        });
    }
    let bound = feature_dim as f64 * keys as f64 * f * f * s.max_abs;
    if bound > limit {
        return Err(Error::OutOfRange {
            tensor: "v",
            reason: format!(
                "sums of {keys} values up to {:e} over {feature_dim} features of size up to {f:e} could overflow {precision}",
                s.max_abs,
            ),
        });
    }
    Ok(Maxima {
        q: maxima[0],
        k: maxima[1],
        v: s.max_abs,
    })
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::F64 => "f64",
    }
}

#[cfg(test)]
mod tests {
    use super::norm;

    #[test]
    fn norms_of_huge_and_tiny_rows_do_not_overflow() {
        assert_eq!(norm(&[3.0, 4.0]), 5.0);
        assert_eq!(norm(&[]), 0.0);
        assert_eq!(norm(&[3e300, -4e300]), 5e300);
        // Beyond f64 itself: the norm overflows, honestly.
        assert_eq!(norm(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(norm(&[1e-300, 0.0]), 1e-300);
    }
}
