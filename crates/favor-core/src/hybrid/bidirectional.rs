//! Bidirectional hybrid attention: the far part as the total minus the window.

use crate::attention::{Plan, prepare_keys, take};
use crate::error::{Result, check};
use crate::inputs::Qkv;
use crate::state::{PrefixState, state_len};
use crate::{Accum, FeatureMap, Float, Kernels, MatMut, MatRef};

use super::{Far, HybridShape, check_call, scratch_len, weigh_row};

/// Band keys one block of `block` queries weighs exactly: `block + 2w`.
fn band_width(block: usize, shape: HybridShape) -> Result<usize> {
    check::add(block, check::mul(2, shape.window)?)
}

/// Scratch elements the bidirectional hybrid needs with blocks of `block` queries: the total
/// state, the block's query features (B·(M + 1)), the band's key features ((B + 2w)·(M + 1)),
/// the band's feature tile (B·(B + 2w)), the exact-logit tile (B·(sinks + B + 2w)) and one
/// value per row.
pub(crate) fn bidirectional_scratch_len(
    features: usize,
    value_dim: usize,
    block: usize,
    shape: HybridShape,
) -> Result<usize> {
    let b = check::nonzero("block", block)?;
    let band = band_width(b, shape)?;
    let exact = check::add(shape.sinks, band)?;
    let tiles = check::mul(b, check::add(band, exact)?)?;
    scratch_len(features, value_dim, check::add(b, band)?, tiles, b)
}

/// Bidirectional hybrid attention: the exact set of query i is the sinks and the keys with
/// `|i − j| ≤ w`. Every non-sink key goes into one total state (S, z); a block of queries
/// `[a, a + B)` then takes `Q'S` minus the φ-terms of its window's keys (the band
/// `[a − w, a + B + w)`, mapped again per block), and weighs the sinks and its window exactly.
///
/// The subtraction cancels: the far numerator and denominator of a row carry an absolute
/// error of a few ulp of the row's total φ-mass `φ(qᵢ)·z` (the far part is a sum of positive
/// terms, so a negative rounding residue is clamped to 0, and a row with no far key gets
/// exactly 0). Work per query, beyond FAVOR+: `(B + 2w)·(M + d + 2dv)` and a second map of
/// `1 + 2w/B` keys.
pub(crate) fn bidirectional<T: Float, K: Kernels<T>, F: FeatureMap<T>>(
    plan: &Plan<'_, T, K, F>,
    hybrid: HybridShape,
    x: Qkv<'_, T>,
    out: &mut [T],
    scratch: &mut [T],
) -> Result<()> {
    let (kernels, fm, shape, opts) = plan.parts();
    let (m, d, dv, len) = (fm.feature_dim(), shape.dim, shape.value_dim, shape.keys);
    let needed = bidirectional_scratch_len(m, dv, opts.block, hybrid)?;
    let tau = check_call(plan, x, out, scratch, needed)?;
    let Qkv { q, k, v } = x;
    let bmax = opts.block;
    let HybridShape { window: w, sinks } = hybrid;
    let band = band_width(bmax, hybrid)?;
    let ew = check::add(sinks, band)?;
    let mut buf = scratch;
    let mut state = PrefixState::new(m, dv, take(&mut buf, state_len(m, dv)?))?;
    let qf = take(&mut buf, bmax * m);
    let ql = take(&mut buf, bmax);
    let kf = take(&mut buf, band * m);
    let kl = take(&mut buf, band);
    let ftile = take(&mut buf, bmax * band);
    let etile = take(&mut buf, bmax * ew);
    let den = take(&mut buf, bmax);
    let visible = |j: usize| opts.key_mask.is_none_or(|mask| mask[j]);
    let count = |from: usize, to: usize| (from..to).filter(|&j| visible(j)).count();

    // Every non-sink key into the total, `band` keys at a time.
    let s0 = sinks.min(len);
    for start in (s0..len).step_by(band) {
        let rows = band.min(len - start);
        fm.map_rows(kernels, &k[start * d..(start + rows) * d], rows, kf, kl)?;
        prepare_keys(kf, m, &mut kl[..rows], opts.key_mask, start);
        let vb = &v[start * dv..(start + rows) * dv];
        state.push_rows(kernels, kf, kl, vb, rows);
        state.settle(kernels);
    }
    let far_keys = count(s0, len);
    let sigma = state.log_scale();
    // The band rows `kf` holds, `[held.0, held.1)`: consecutive blocks' bands overlap by 2w
    // keys, which slide down rather than being mapped again.
    let mut held = (s0, s0);

    for a in (0..len).step_by(bmax) {
        let c = bmax.min(len - a);
        let oc = &mut out[a * dv..(a + c) * dv];
        fm.map_rows(kernels, &q[a * d..(a + c) * d], c, qf, ql)?;
        // The block's band of non-sink keys, [blo, bhi).
        let blo = a.saturating_sub(w).max(s0);
        let bhi = (a + c + w).min(len).max(blo);
        let nb = bhi - blo;
        // Row t's window among them.
        let window = |t: usize| {
            let i = a + t;
            let lo = i.saturating_sub(w).max(blo);
            (lo, (i + w + 1).min(bhi).max(lo))
        };

        // Far part: Q'S − (Q'K'_bandᵀ ∘ window) V_band, at the state's scale.
        den[..c].fill(T::zero());
        if far_keys > 0 {
            if nb > 0 {
                let band_keys = BandKeys {
                    kernels,
                    fm,
                    k,
                    mask: opts.key_mask,
                    sigma,
                };
                band_keys.slide(&mut held, (blo, bhi), kf, kl)?;
                let qm = MatRef::row_major(&qf[..c * m], c, m);
                let km = MatRef::row_major(&kf[..nb * m], nb, m).t();
                kernels.gemm(MatMut::new(ftile, c, nb, band), Accum::Overwrite, qm, km);
                for t in 0..c {
                    let (lo, hi) = window(t);
                    let row = &mut ftile[t * band..t * band + nb];
                    row[..lo - blo].fill(T::zero());
                    row[hi - blo..].fill(T::zero());
                    den[t] = -row.iter().fold(T::zero(), |s, &x| s + x);
                }
                let ft = MatRef::new(ftile, c, nb, band);
                let vm = MatRef::row_major(&v[blo * dv..bhi * dv], nb, dv);
                kernels.gemm(MatMut::row_major(oc, c, dv), Accum::Overwrite, ft, vm);
                for o in oc.iter_mut() {
                    *o = -*o;
                }
            } else {
                oc.fill(T::zero());
            }
            let (qm, s) = (
                MatRef::row_major(&qf[..c * m], c, m),
                MatRef::row_major(state.s(), m, dv),
            );
            kernels.gemm(MatMut::row_major(oc, c, dv), Accum::Add, qm, s);
            for t in 0..c {
                den[t] = den[t] + kernels.dot(&qf[t * m..(t + 1) * m], state.z());
            }
        }

        // Exact logits: the sinks [0, s0), then the band.
        let width = s0 + nb;
        let qc = MatRef::row_major(&q[a * d..(a + c) * d], c, d);
        {
            let mut et = MatMut::new(etile, c, width, ew);
            if s0 > 0 {
                let sk = MatRef::row_major(&k[..s0 * d], s0, d).t();
                kernels.gemm(et.rb_mut().block(0, 0, c, s0), Accum::Overwrite, qc, sk);
            }
            if nb > 0 {
                let bk = MatRef::row_major(&k[blo * d..bhi * d], nb, d).t();
                kernels.gemm(et.block(0, s0, c, nb), Accum::Overwrite, qc, bk);
            }
        }
        for t in 0..c {
            let (lo, hi) = window(t);
            let row = &mut etile[t * ew..t * ew + width];
            kernels.scale(tau, row);
            let exact = |u: usize| {
                let j = if u < s0 { u } else { blo + u - s0 };
                visible(j) && (j < s0 || (lo..hi).contains(&j))
            };
            // Keys outside the row's window and the sinks: if none is visible the far part
            // is exactly 0, else whatever the subtraction left (never below 0).
            let far = if far_keys > count(lo, hi) {
                Far {
                    den: den[t].max(T::zero()),
                    log_scale: ql[t] + sigma,
                }
            } else {
                Far {
                    den: T::zero(),
                    log_scale: T::neg_infinity(),
                }
            };
            den[t] = weigh_row(kernels, row, exact, far, &mut oc[t * dv..(t + 1) * dv]);
        }
        let et = MatRef::new(etile, c, width, ew);
        let mut o = MatMut::row_major(oc, c, dv);
        if s0 > 0 {
            let sv = MatRef::row_major(&v[..s0 * dv], s0, dv);
            kernels.gemm(o.rb_mut(), Accum::Add, et.block(0, 0, c, s0), sv);
        }
        if nb > 0 {
            let bv = MatRef::row_major(&v[blo * dv..bhi * dv], nb, dv);
            kernels.gemm(o, Accum::Add, et.block(0, s0, c, nb), bv);
        }
        for t in 0..c {
            if den[t] > T::zero() {
                kernels.scale(T::one() / den[t], &mut oc[t * dv..(t + 1) * dv]);
            }
        }
    }
    Ok(())
}

/// What maps the band's keys: each key once per sweep, its features pre-scaled to the total
/// state's scale `e^{ℓ − σ}` so the band tile needs no per-element exponential.
struct BandKeys<'a, T, K, F> {
    kernels: &'a K,
    fm: &'a F,
    k: &'a [T],
    mask: Option<&'a [bool]>,
    sigma: T,
}

impl<T: Float, K: Kernels<T>, F: FeatureMap<T>> BandKeys<'_, T, K, F> {
    /// Moves `kf` (rows `held`) to the band `[lo, hi)` (`lo ≥ held.0`, `hi ≥ held.1`): the
    /// rows both hold slide to the front, the new ones are mapped after them.
    fn slide(
        &self,
        held: &mut (usize, usize),
        (lo, hi): (usize, usize),
        kf: &mut [T],
        kl: &mut [T],
    ) -> Result<()> {
        let (m, d) = (self.fm.feature_dim(), self.fm.input_dim());
        let from = if lo < held.1 {
            kf.copy_within((lo - held.0) * m..(held.1 - held.0) * m, 0);
            held.1
        } else {
            lo
        };
        let (r, n) = (from - lo, hi - from);
        if n > 0 {
            let (f, l) = (&mut kf[r * m..], &mut kl[..n]);
            self.fm
                .map_rows(self.kernels, &self.k[from * d..hi * d], n, f, l)?;
            prepare_keys(f, m, l, self.mask, from);
            for (row, &lj) in f.chunks_exact_mut(m).zip(l.iter()) {
                let e = if lj == T::neg_infinity() {
                    T::zero()
                } else {
                    (lj - self.sigma).libm_exp()
                };
                self.kernels.scale(e, row);
            }
        }
        *held = (lo, hi);
        Ok(())
    }
}
