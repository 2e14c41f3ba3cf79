//! Exact softmax attention, the reference every approximation is judged against.

use crate::attention::Shape;
use crate::error::{Result, check};
use crate::{Float, Kernels};

/// Options for [`softmax_attention`].
#[derive(Debug, Clone, Copy)]
pub struct ExactOptions<'a, T> {
    /// Query i sees keys `0..=i` only (requires queries == keys).
    pub causal: bool,
    /// Logit scale τ in `exp(τ·q·k)`; `None` means the usual `1/√d`.
    pub scale: Option<T>,
    /// Key padding mask, as in [`Options::key_mask`](crate::Options::key_mask).
    pub key_mask: Option<&'a [bool]>,
}

impl<T> Default for ExactOptions<'_, T> {
    fn default() -> Self {
        Self {
            causal: false,
            scale: None,
            key_mask: None,
        }
    }
}

/// Exact softmax attention `softmax(τ·QKᵀ)·V` in O(Lq·Lk·(d + dv)) time and O(1) extra
/// memory: each query row runs an online softmax (running max, rescaled sum and output), so
/// no L×L matrix exists and no exponent overflows. Rows with no visible key output zeros.
///
/// Use `f64` with [`Scalar`](crate::Scalar) as the oracle for FAVOR+ results.
///
/// ```
/// use favor_core::*;
/// let q = [1.0f64, 0.0];
/// let k = [1.0, 0.0, 0.0, 1.0];
/// let v = [1.0, 0.0, 0.0, 1.0];
/// let shape = Shape { queries: 1, keys: 2, dim: 2, value_dim: 2 };
/// let mut out = [0.0; 2];
/// let opts = ExactOptions { scale: Some(1.0), ..Default::default() };
/// softmax_attention(&Scalar, &q, &k, &v, shape, &opts, &mut out).unwrap();
/// let e = 1f64.exp();
/// assert!((out[0] - e / (e + 1.0)).abs() < 1e-15);
/// ```
pub fn softmax_attention<T: Float, K: Kernels<T>>(
    kernels: &K,
    q: &[T],
    k: &[T],
    v: &[T],
    shape: Shape,
    opts: &ExactOptions<'_, T>,
    out: &mut [T],
) -> Result<()> {
    shape.check_inputs(shape.dim, q, k, v, out, opts.key_mask)?;
    if opts.causal {
        check::same_dim(
            "causal attention needs queries == keys",
            shape.keys,
            shape.queries,
        )?;
    }
    let (d, dv) = (shape.dim, shape.value_dim);
    let tau = match opts.scale {
        Some(t) if t.is_finite() => t,
        Some(_) => {
            return Err(crate::Error::InvalidParameter {
                what: "scale must be finite",
            });
        }
        None => T::one() / T::from_usize(d).libm_sqrt(),
    };
    for i in 0..shape.queries {
        let qi = &q[i * d..(i + 1) * d];
        let o = &mut out[i * dv..(i + 1) * dv];
        o.fill(T::zero());
        let mut max = T::neg_infinity();
        let mut sum = T::zero();
        let visible = if opts.causal { i + 1 } else { shape.keys };
        for j in 0..visible {
            if opts.key_mask.is_some_and(|mask| !mask[j]) {
                continue;
            }
            let logit = tau * kernels.dot(qi, &k[j * d..(j + 1) * d]);
            if logit > max {
                let f = (max - logit).libm_exp();
                sum = sum * f;
                kernels.scale(f, o);
                max = logit;
            }
            let w = (logit - max).libm_exp();
            sum = sum + w;
            kernels.axpy(w, &v[j * dv..(j + 1) * dv], o);
        }
        if sum > T::zero() {
            kernels.scale(T::one() / sum, o);
        }
    }
    Ok(())
}
