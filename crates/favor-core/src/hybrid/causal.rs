//! Causal hybrid attention in chunks, all GEMMs.

use crate::attention::{Plan, prepare_keys, take};
use crate::error::{Result, check};
use crate::inputs::Qkv;
use crate::state::{PrefixState, rescale_factor, stabiliser, state_len};
use crate::{Accum, FeatureMap, Float, Kernels, MatMut, MatRef};

use super::{Far, HybridShape, check_call, exclude, exclude_masked, scratch_len, weigh_row};

/// Width of the exact-logit tile for chunks of `chunk`: the sinks before the chunk, the
/// window's keys before it, and the chunk itself.
fn exact_width(chunk: usize, shape: HybridShape) -> Result<usize> {
    check::add(check::add(shape.sinks, shape.window)?, chunk)
}

/// Scratch elements the causal chunked hybrid needs with chunks of `chunk`: the prefix state,
/// the chunk's query features and the features of the keys leaving the window during it
/// (2·C·M, with their log-scales), the far tile (C²), the exact-logit tile
/// (C·(sinks + w + C)), and two values per row.
pub(crate) fn causal_chunked_scratch_len(
    features: usize,
    value_dim: usize,
    chunk: usize,
    shape: HybridShape,
) -> Result<usize> {
    let c = check::nonzero("chunk", chunk)?;
    let tiles = check::add(check::mul(c, c)?, check::mul(c, exact_width(c, shape)?)?)?;
    scratch_len(
        features,
        value_dim,
        check::mul(2, c)?,
        tiles,
        check::mul(2, c)?,
    )
}

/// Causal hybrid attention in chunks of C = `opts.block` tokens. A key enters the prefix
/// state (S, z) when it leaves the window, so the state lags the chunk by w tokens; the keys
/// that leave during the chunk form a strictly lower triangular far tile, mapped once each.
/// Per chunk `[a, a + C)`:
/// - far: `Q'_c S` plus `(Q'_c K'_lagᵀ ∘ strict tril) V_lag`, each query at the scale the
///   token loop would hold (the running stabiliser of the keys it sees through φ);
/// - exact: `τ Q_c Kᵀ` over the sinks before the chunk, the window's keys before it, and the
///   chunk (lower triangle, banded);
/// - per row one top log-weight over both, one normaliser.
///
/// No later token enters an output: every tile a row reads holds only keys at or before it.
pub(crate) fn causal_chunked<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    plan: &Plan<'_, T, K, F>,
    hybrid: HybridShape,
    x: Qkv<'_, T>,
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (kernels, fm, shape, opts) = plan.parts();
    let (m, d, dv, len) = (fm.feature_dim(), shape.dim, shape.value_dim, shape.keys);
    let needed = causal_chunked_scratch_len(m, dv, opts.block, hybrid)?;
    let tau = check_call(plan, x, out, scratch, needed)?;
    let Qkv { q, k, v } = x;
    let cmax = opts.block;
    let HybridShape { window: w, sinks } = hybrid;
    let ew = exact_width(cmax, hybrid)?;
    let mut buf = scratch;
    let mut state = PrefixState::new(m, dv, take(&mut buf, state_len(m, dv)?))?;
    let qf = take(&mut buf, cmax * m);
    let kf = take(&mut buf, cmax * m);
    let ql = take(&mut buf, cmax);
    let kl = take(&mut buf, cmax);
    let ftile = take(&mut buf, cmax * cmax);
    let etile = take(&mut buf, cmax * ew);
    let run = take(&mut buf, cmax);
    let den = take(&mut buf, cmax);

    for a in (0..len).step_by(cmax) {
        let c = cmax.min(len - a);
        let oc = &mut out[a * dv..(a + c) * dv];
        fm.map_rows(kernels, &q[a * d..(a + c) * d], c, qf, ql)?;

        // The keys leaving the window during the chunk, [lo, hi): row t sees the first
        // t − off of them through φ (keys before lo are in the state).
        let lo = a.saturating_sub(w).max(sinks);
        let hi = (a + c).saturating_sub(w).max(sinks);
        let n = hi - lo;
        let off = lo + w - a;
        if n > 0 {
            fm.map_rows(kernels, &k[lo * d..hi * d], n, kf, kl)?;
            prepare_keys(kf, m, &mut kl[..n], opts.key_mask, lo);
        }
        let mut r = state.log_scale();
        for (t, run_t) in run[..c].iter_mut().enumerate() {
            if t > off {
                r = r.max(stabiliser(kl[t - off - 1]));
            }
            *run_t = r;
        }

        // Far part: the strictly lower triangular tile (rows off + 1 .., row off + 1 + u
        // reads columns 0 ..= u), then the state.
        oc.fill(T::zero());
        den[..c].fill(T::zero());
        if n > 0 && c > off + 1 {
            let rows = c - off - 1;
            let qm = MatRef::row_major(&qf[(off + 1) * m..c * m], rows, m);
            let km = MatRef::row_major(&kf[..rows * m], rows, m).t();
            kernels.gemm(
                MatMut::new(ftile, rows, rows, cmax),
                Accum::Overwrite,
                qm,
                km,
            );
            for u in 0..rows {
                let t = off + 1 + u;
                let row = &mut ftile[u * cmax..u * cmax + u + 1];
                if run[t] == T::neg_infinity() {
                    row.fill(T::zero());
                } else {
                    kernels.mul_exp(row, &kl[..=u], run[t]);
                }
                den[t] = kernels.sum(row);
            }
            let ft = MatRef::new(ftile, rows, rows, cmax);
            let vm = MatRef::row_major(&v[lo * dv..(lo + rows) * dv], rows, dv);
            let o = MatMut::row_major(&mut oc[(off + 1) * dv..], rows, dv);
            kernels.gemm_tril(o, Accum::Overwrite, ft, vm);
        }
        if state.log_scale() != T::neg_infinity() {
            for t in 0..c {
                let f = rescale_factor(state.log_scale(), run[t]);
                kernels.scale(f, &mut qf[t * m..(t + 1) * m]);
                den[t] = den[t] + kernels.dot(&qf[t * m..(t + 1) * m], state.z());
            }
            let (qm, s) = (
                MatRef::row_major(&qf[..c * m], c, m),
                MatRef::row_major(state.s(), m, dv),
            );
            kernels.gemm(MatMut::row_major(oc, c, dv), Accum::Add, qm, s);
        }

        // Exact logits: the sinks before the chunk [0, n1), the window's keys before it
        // [g2, a), the chunk [a, a + c).
        let n1 = sinks.min(a);
        let g2 = a.saturating_sub(w).max(sinks).min(a);
        let n2 = a - g2;
        let width = n1 + n2 + c;
        let qc = MatRef::row_major(&q[a * d..(a + c) * d], c, d);
        let keys = |from: usize, to: usize| MatRef::row_major(&k[from * d..to * d], to - from, d);
        {
            let mut et = MatMut::new(etile, c, width, ew);
            if n1 > 0 {
                let b = et.rb_mut().block(0, 0, c, n1);
                kernels.gemm(b, Accum::Overwrite, qc, keys(0, n1).t());
            }
            if n2 > 0 {
                let b = et.rb_mut().block(0, n1, c, n2);
                kernels.gemm(b, Accum::Overwrite, qc, keys(g2, a).t());
            }
            let b = et.block(0, n1 + n2, c, c);
            kernels.gemm(b, Accum::Overwrite, qc, keys(a, a + c).t());
        }
        let key_of = |u: usize| match u {
            u if u < n1 => u,
            u if u < n1 + n2 => g2 + u - n1,
            u => a + u - n1 - n2,
        };
        for t in 0..c {
            let i = a + t;
            let row = &mut etile[t * ew..t * ew + n1 + n2 + t + 1];
            kernels.scale(tau, row);
            // Logits from n1 on are the keys g2 ..= i in order; those in [sinks, i − w) have
            // left the window.
            let (from, to) = (g2.max(sinks), i.saturating_sub(w));
            if to > from {
                exclude(row, n1 + from - g2..n1 + to - g2);
            }
            exclude_masked(row, opts.key_mask, key_of);
            let far = Far {
                den: den[t],
                log_scale: ql[t] + run[t],
            };
            den[t] = weigh_row(kernels, row, far, &mut oc[t * dv..(t + 1) * dv]);
        }
        let et = MatRef::new(etile, c, width, ew);
        let values =
            |from: usize, to: usize| MatRef::row_major(&v[from * dv..to * dv], to - from, dv);
        let mut o = MatMut::row_major(oc, c, dv);
        if n1 > 0 {
            kernels.gemm(o.rb_mut(), Accum::Add, et.block(0, 0, c, n1), values(0, n1));
        }
        if n2 > 0 {
            kernels.gemm(
                o.rb_mut(),
                Accum::Add,
                et.block(0, n1, c, n2),
                values(g2, a),
            );
        }
        let chunk = et.block(0, n1 + n2, c, c);
        kernels.gemm_tril(o, Accum::Add, chunk, values(a, a + c));
        for t in 0..c {
            if den[t] > T::zero() {
                kernels.scale(T::one() / den[t], &mut oc[t * dv..(t + 1) * dv]);
            }
        }

        if n > 0 {
            state.push_rows(kernels, kf, kl, &v[lo * dv..hi * dv], n);
            state.settle(kernels);
        }
    }
    Ok(())
}
