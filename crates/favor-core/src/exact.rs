//! Exact softmax attention, the reference every approximation is judged against.

use crate::attention::Shape;
use crate::error::{Result, check};
use crate::inputs::Qkv;
use crate::{Accum, Float, Kernels, MatMut, MatRef};

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
    let tau = check_exact(q, k, v, shape, opts, out)?;
    let (d, dv) = (shape.dim, shape.value_dim);
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

/// Checks the inputs of the exact paths; returns the logit scale τ.
fn check_exact<T: Float>(
    q: &[T],
    k: &[T],
    v: &[T],
    shape: Shape,
    opts: &ExactOptions<'_, T>,
    out: &[T],
) -> Result<T> {
    shape.check_shapes(shape.dim, Qkv::new(q, k, v), out, opts.key_mask)?;
    if opts.causal {
        check::same_dim(
            "causal attention needs queries == keys",
            shape.keys,
            shape.queries,
        )?;
    }
    let tau = match opts.scale {
        Some(t) if t.is_finite() => t,
        Some(_) => {
            return Err(crate::Error::InvalidParameter {
                what: "scale must be finite",
            });
        }
        None => T::one() / T::from_usize(shape.dim).libm_sqrt(),
    };
    let dims = (shape.dim, shape.value_dim);
    crate::range::exact(tau, Qkv::new(q, k, v), dims, shape.keys)?;
    Ok(tau)
}

/// Scratch elements [`softmax_attention_tiled`] needs for tiles of `block × block`: the logit
/// tile, a row of ones, and each query row's running maximum and sum.
pub fn softmax_attention_tiled_scratch_len(block: usize) -> Result<usize> {
    let b = check::nonzero("block", block)?;
    check::add(check::mul(b, b)?, check::mul(3, b)?)
}

/// Exact softmax attention by tiles, as fast as the backend's GEMM: for each block of
/// queries and each block of keys, the logit tile `τ·Q_b K_bᵀ` (one GEMM), an online-softmax
/// update of each row's maximum and sum (the output rows are rescaled when the maximum grows),
/// and `out_b += P·V_b` (one GEMM). The flash-attention schedule: no L×L matrix, scratch of
/// [`softmax_attention_tiled_scratch_len`]`(block)` elements whatever the length.
///
/// Same results as [`softmax_attention`] up to rounding (sums in another order); that
/// row-at-a-time version stays the simplest reference. Use this one as the speed baseline
/// FAVOR+ is compared with.
///
/// ```
/// use favor_core::*;
/// let (l, d) = (70, 8);
/// let x: Vec<f64> = (0..l * d).map(|i| ((i * 13 % 29) as f64 - 14.0) / 10.0).collect();
/// let shape = Shape::new(l, d, d);
/// let opts = ExactOptions { causal: true, ..Default::default() };
/// let mut scratch = vec![0.0; softmax_attention_tiled_scratch_len(16).unwrap()];
/// let (mut a, mut b) = (vec![0.0; l * d], vec![0.0; l * d]);
/// softmax_attention_tiled(&Scalar, &x, &x, &x, shape, &opts, 16, &mut a, &mut scratch).unwrap();
/// softmax_attention(&Scalar, &x, &x, &x, shape, &opts, &mut b).unwrap();
/// assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-12));
/// ```
// The allowance's reason: this is `softmax_attention`'s call (q, k, v, shape, options, out)
// plus the tile size and the scratch it sizes; a plan type for the exact baseline would only
// move the same list into a constructor.
#[allow(clippy::too_many_arguments)]
pub fn softmax_attention_tiled<T: Float, K: Kernels<T>>(
    kernels: &K,
    q: &[T],
    k: &[T],
    v: &[T],
    shape: Shape,
    opts: &ExactOptions<'_, T>,
    block: usize,
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let tau = check_exact(q, k, v, shape, opts, out)?;
    check::room(
        "scratch",
        scratch,
        softmax_attention_tiled_scratch_len(block)?,
    )?;
    let (d, dv, lk) = (shape.dim, shape.value_dim, shape.keys);
    let (tile, rest) = scratch.split_at_mut(block * block);
    let (ones, rest) = rest.split_at_mut(block);
    let (row_max, rest) = rest.split_at_mut(block);
    let row_sum = &mut rest[..block];
    ones.fill(T::one());
    for i0 in (0..shape.queries).step_by(block) {
        let bq = block.min(shape.queries - i0);
        let o = &mut out[i0 * dv..(i0 + bq) * dv];
        o.fill(T::zero());
        row_max[..bq].fill(T::neg_infinity());
        row_sum[..bq].fill(T::zero());
        // Causal: key blocks past the last query of this block see nothing.
        let keys_end = if opts.causal { (i0 + bq).min(lk) } else { lk };
        for j0 in (0..keys_end).step_by(block) {
            let bk = block.min(keys_end - j0);
            let t = &mut tile[..bq * bk];
            let qb = MatRef::row_major(&q[i0 * d..], bq, d);
            let kb = MatRef::row_major(&k[j0 * d..], bk, d);
            kernels.gemm(MatMut::row_major(t, bq, bk), Accum::Overwrite, qb, kb.t());
            for r in 0..bq {
                // Keys j0..j0+visible are visible to query i0 + r.
                let visible = if opts.causal {
                    (i0 + r + 1).saturating_sub(j0).min(bk)
                } else {
                    bk
                };
                let row = &mut t[r * bk..(r + 1) * bk];
                kernels.scale(tau, &mut row[..visible]);
                if let Some(mask) = opts.key_mask {
                    for (x, &keep) in row[..visible].iter_mut().zip(&mask[j0..j0 + visible]) {
                        if !keep {
                            *x = T::neg_infinity();
                        }
                    }
                }
                let new_max = kernels.max(&row[..visible]).max(row_max[r]);
                if new_max == T::neg_infinity() {
                    // Nothing visible yet in this row: its weights are all zero.
                    row.fill(T::zero());
                    continue;
                }
                if new_max > row_max[r] {
                    let f = (row_max[r] - new_max).libm_exp();
                    row_sum[r] = row_sum[r] * f;
                    kernels.scale(f, &mut o[r * dv..(r + 1) * dv]);
                    row_max[r] = new_max;
                }
                kernels.exp_shift(&mut row[..visible], new_max);
                row[visible..].fill(T::zero());
                if let Some(mask) = opts.key_mask {
                    // exp(−∞ − max) is 0 already; this keeps it exact for every backend.
                    for (x, &keep) in row[..visible].iter_mut().zip(&mask[j0..j0 + visible]) {
                        if !keep {
                            *x = T::zero();
                        }
                    }
                }
                row_sum[r] = row_sum[r] + kernels.dot(&row[..visible], &ones[..visible]);
            }
            let (tb, vb) = (
                MatRef::row_major(t, bq, bk),
                MatRef::row_major(&v[j0 * dv..], bk, dv),
            );
            kernels.gemm(MatMut::row_major(o, bq, dv), Accum::Add, tb, vb);
        }
        for r in 0..bq {
            let orow = &mut o[r * dv..(r + 1) * dv];
            if row_sum[r] > T::zero() {
                kernels.scale(T::one() / row_sum[r], orow);
            } else {
                orow.fill(T::zero());
            }
        }
    }
    Ok(())
}
