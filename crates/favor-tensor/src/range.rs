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

use crate::error::{Error, Result};
use crate::performer::{Config, Kernel, Precision};
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
    let [_, heads, l, width] = t.shape();
    let (mut max_norm, mut max_abs) = (0f64, 0f64);
    for (row, x) in t.data().chunks_exact(width.max(1)).enumerate() {
        let mut sq = 0f64;
        for &e in x {
            let wide = e.to_f64();
            if !wide.is_finite() || (precision == Precision::F32 && !e.to_f32().is_finite()) {
                let source = if wide.is_finite() {
                    return Err(Error::OutOfRange {
                        tensor: name,
                        reason: format!(
                            "element {wide:e} (batch {}, head {}, row {}) does not fit f32; use Precision::F64",
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
        max_norm = max_norm.max(sq.sqrt());
    }
    Ok(Stats { max_norm, max_abs })
}

/// Largest finite value of the compute type.
fn max_value(p: Precision) -> f64 {
    match p {
        Precision::F32 => f64::from(f32::MAX),
        Precision::F64 => f64::MAX,
    }
}

/// Checks q, k and v of one call against the supported range (module docs). `keys` counts
/// every key the state will have absorbed after the call.
pub(crate) fn check<E: Element>(
    cfg: &Config,
    w_norm: f64,
    feature_dim: usize,
    q: &TensorView<'_, E>,
    k: &TensorView<'_, E>,
    v: &TensorView<'_, E>,
    keys: u64,
) -> Result<()> {
    let limit = max_value(cfg.precision) / 4.0;
    let mut proj = 0f64;
    for (name, t) in [("q", q), ("k", k)] {
        let s = scan(name, t, cfg.precision)?;
        let p = w_norm * s.max_norm;
        if s.max_norm * s.max_norm > limit || p > limit {
            return Err(Error::OutOfRange {
                tensor: name,
                reason: format!(
                    "a row of norm {:e} times the projection's largest row norm {w_norm:e} overflows {}",
                    s.max_norm,
                    precision_name(cfg.precision)
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
                "sums of {keys} values up to {:e} over {feature_dim} features of size up to {f:e} could overflow {}",
                s.max_abs,
                precision_name(cfg.precision)
            ),
        });
    }
    Ok(())
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::F64 => "f64",
    }
}
