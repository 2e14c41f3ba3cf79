//! Bidirectional hybrid attention: the far part from one total state, less the terms of each
//! block's band (two forms, [`FarForm`]).

use crate::attention::{Plan, prepare_keys, take};
use crate::error::{Result, check};
use crate::inputs::Qkv;
use crate::state::{PrefixState, block_len, state_len};
use crate::{Accum, FeatureMap, Float, Kernels, MatMut, MatRef, Ring};

use super::{Far, HybridShape, check_call, exclude, exclude_masked, scratch_len, weigh_row};

/// Band keys one block of `block` queries weighs exactly: `block + 2w`.
fn band_width(block: usize, shape: HybridShape) -> Result<usize> {
    check::add(block, check::mul(2, shape.window)?)
}

/// How a block's far part is formed (module docs of [`bidirectional`]); fixed by the shape,
/// so a plan's output bits do not depend on anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FarForm {
    /// `Q'T` minus the band's window through a `B × (B + 2w)` feature tile: per query
    /// `2·M·dv + 2(B + 2w)(M + dv)` FLOPs, cheapest for narrow windows.
    Band,
    /// `Q'(T − P(band end) + P(band start))` plus the two corners: per query about
    /// `6·M·dv + 4B(M + dv)` FLOPs (each key into two prefix sums, the block's far sums
    /// applied, two B × B corners), whatever w.
    Prefix,
}

impl FarForm {
    /// The prefix form when it needs under half the band form's FLOPs: its small GEMMs (a
    /// block's keys into M × dv sums) and elementwise passes over the sums run at about half
    /// the rate of the band's tiles (measured at B = 32: d = dv = 64, M = 64, w = 64, FLOP
    /// ratio 1.2: the band form 10 % faster; d = dv = 32, M = 64, w = 64, ratio 1.4: level;
    /// M = 32, w = 96, ratio 2.1: the prefix form 5 % faster, w = 192, ratio 3.9: 19 %).
    fn choose(features: usize, value_dim: usize, block: usize, shape: HybridShape) -> Self {
        let (m, dv, b) = (features as u128, value_dim as u128, block as u128);
        let band = 2 * m * dv + 2 * (b + 2 * shape.window as u128) * (m + dv);
        let prefix = 6 * m * dv + 4 * b * (m + dv);
        if band <= 2 * prefix {
            Self::Band
        } else {
            Self::Prefix
        }
    }
}

/// Scratch elements the bidirectional hybrid needs with blocks of `block` queries: the total
/// state, the block's query features (B·(M + 1)), the band's key features ((B + 2w)·(M + 1)),
/// the far tiles (the band's B·(B + 2w), or the two corners' 2·B²), the exact-logit tile
/// (B·(sinks + B + 2w)), one value per row, and for the prefix form five copies of the sums
/// (M·dv + M each): the prefix sums at the band's two ends (each a compensated pair) and
/// the block's far sums.
pub(crate) fn bidirectional_scratch_len(
    features: usize,
    value_dim: usize,
    block: usize,
    shape: HybridShape,
) -> Result<usize> {
    let b = check::nonzero("block", block)?;
    let band = band_width(b, shape)?;
    let exact = check::add(shape.sinks, band)?;
    let (far, sums) = match FarForm::choose(features, value_dim, b, shape) {
        FarForm::Band => (band, 0),
        FarForm::Prefix => (
            check::mul(2, b)?,
            check::mul(5, block_len(features, value_dim)?)?,
        ),
    };
    let tiles = check::mul(b, check::add(far, exact)?)?;
    scratch_len(
        features,
        value_dim,
        check::add(b, band)?,
        tiles,
        check::add(b, sums)?,
    )
}

/// Bidirectional hybrid attention: the exact set of query i is the sinks and the keys with
/// `|i − j| ≤ w`. Every non-sink key goes into one total state (S, z). A block of queries
/// `[a, a + B)` weighs the sinks and its band of keys `[a − w, a + B + w)` exactly (each
/// row its window), and takes its far part through φ at the state's scale in one of two
/// forms, whichever costs less for the shape ([`FarForm`]):
///
/// - **band**: `Q'T − (Q'K'_bandᵀ ∘ window)·V_band`, the window's φ-terms subtracted through
///   a `B × (B + 2w)` feature tile;
/// - **prefix**: `Q'(T − P(band end) + P(band start))` plus the two corners of the band
///   outside each row's window (at most B keys at each end: a strictly lower and a strictly
///   upper triangle), where `P(x)` sums the non-sink keys before x: two running,
///   compensated prefix sums that take each key once. Its cost does not grow with w.
///
/// The band's keys are mapped once per sweep (consecutive bands overlap by 2w keys, which
/// slide down). Either form cancels: the far numerator and denominator of a row carry an
/// absolute error of a few ulp of the row's total φ-mass `φ(qᵢ)·z` (the far part is a sum of
/// positive terms, so a negative rounding residue is clamped to 0, and a row with no far key
/// gets exactly 0). Work per query, beyond FAVOR+: `(sinks + B + 2w)·(d + dv)` exact, the far
/// form's, and a second map of one key (the band's rows slide from block to block).
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
    let scheme = FarForm::choose(m, dv, bmax, hybrid);
    let ftile = take(
        &mut buf,
        bmax * match scheme {
            FarForm::Band => band,
            FarForm::Prefix => 2 * bmax,
        },
    );
    let etile = take(&mut buf, bmax * ew);
    let den = take(&mut buf, bmax);
    let sums = match scheme {
        FarForm::Band => 0,
        FarForm::Prefix => block_len(m, dv)?,
    };
    let mut start = Prefix::new(take(&mut buf, 2 * sums));
    let mut end = Prefix::new(take(&mut buf, 2 * sums));
    let far_sums = take(&mut buf, sums);
    let count = |from: usize, to: usize| match opts.key_mask {
        None => to - from,
        Some(mask) => mask[from..to].iter().filter(|&&seen| seen).count(),
    };

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

        // Far part, at the state's scale.
        den[..c].fill(T::zero());
        oc.fill(T::zero());
        if far_keys > 0 {
            if nb > 0 {
                let band_keys = BandKeys {
                    kernels,
                    fm,
                    k,
                    mask: opts.key_mask,
                    sigma,
                };
                // Prefix form: keys leaving the band go into P(blo) before the slide drops
                // them; keys entering it into P(bhi) after it maps them.
                let prefix = scheme == FarForm::Prefix;
                let left = blo.min(held.1) - held.0;
                if prefix {
                    let vl = &v[held.0 * dv..(held.0 + left) * dv];
                    start.absorb(kernels, &kf[..left * m], vl, (m, dv));
                }
                let entered = held.1.max(blo);
                band_keys.slide(&mut held, (blo, bhi), kf, kl)?;
                if prefix {
                    let fresh = &kf[(entered - blo) * m..nb * m];
                    end.absorb(kernels, fresh, &v[entered * dv..bhi * dv], (m, dv));
                }
            }
            let qm = MatRef::row_major(&qf[..c * m], c, m);
            let (s, z) = match scheme {
                FarForm::Band => (state.s(), state.z()),
                FarForm::Prefix => {
                    let total = state.s().iter().chain(state.z());
                    for (e, (f, &t)) in far_sums.iter_mut().zip(total).enumerate() {
                        *f = (t - end.hi[e]) + (start.hi[e] - end.lo[e] + start.lo[e]);
                    }
                    far_sums.split_at(m * dv)
                }
            };
            kernels.gemm(
                MatMut::row_major(oc, c, dv),
                Accum::Add,
                qm,
                MatRef::row_major(s, m, dv),
            );
            for t in 0..c {
                den[t] = kernels.dot(&qf[t * m..(t + 1) * m], z);
            }
            if nb > 0 {
                let tiles = Tiles {
                    kernels,
                    qm,
                    kf: &kf[..nb * m],
                    v: &v[blo * dv..bhi * dv],
                    dims: (m, dv, bmax),
                };
                let window = |t: usize| {
                    let (lo, hi) = window(t);
                    (lo - blo, hi - blo)
                };
                match scheme {
                    FarForm::Band => tiles.band(ftile, window, oc, den),
                    FarForm::Prefix => tiles.corners(ftile, window, oc, den),
                }
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
            exclude(row, s0..s0 + lo - blo);
            exclude(row, s0 + hi - blo..width);
            exclude_masked(
                row,
                opts.key_mask,
                |u| if u < s0 { u } else { blo + u - s0 },
            );
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
            den[t] = weigh_row(kernels, row, far, &mut oc[t * dv..(t + 1) * dv]);
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

/// The φ-tiles of a block's far part over its band: queries `qm` (c × M), the band's
/// pre-scaled key rows `kf` (nb × M) and values `v` (nb × dv); `window(t)` is row t's
/// window within the band.
struct Tiles<'a, T, K> {
    kernels: &'a K,
    qm: MatRef<'a, T>,
    kf: &'a [T],
    v: &'a [T],
    /// M, dv, and the block size B (the tiles' row stride).
    dims: (usize, usize, usize),
}

impl<T: Float, K: Kernels<T>> Tiles<'_, T, K> {
    /// Subtracts each row's window: `out −= (Q'K'ᵀ ∘ window)·V`, `den −= Σ window`.
    fn band(
        &self,
        tile: &mut [T],
        window: impl Fn(usize) -> (usize, usize),
        out: &mut [T],
        den: &mut [T],
    ) {
        let ((m, dv, _), kernels) = (self.dims, self.kernels);
        let (c, nb) = (self.qm.rows(), self.kf.len() / m);
        let km = MatRef::row_major(self.kf, nb, m).t();
        kernels.gemm(MatMut::new(tile, c, nb, nb), Accum::Overwrite, self.qm, km);
        for t in 0..c {
            let (lo, hi) = window(t);
            let row = &mut tile[t * nb..(t + 1) * nb];
            row[..lo].fill(T::zero());
            row[hi..].fill(T::zero());
            den[t] = den[t] - kernels.sum(row);
            kernels.scale(-T::one(), row);
        }
        let (ft, vm) = (
            MatRef::new(tile, c, nb, nb),
            MatRef::row_major(self.v, nb, dv),
        );
        kernels.gemm(MatMut::row_major(out, c, dv), Accum::Add, ft, vm);
    }

    /// Adds the band's keys outside each row's window: `[0, lo)` among its first `cl` keys
    /// and `[hi, nb)` among its last `cl` (`cl = min(B, nb)`; `lo ≤ min(t, nb)` and
    /// `nb − hi < c − t` for a block of c rows).
    fn corners(
        &self,
        tiles: &mut [T],
        window: impl Fn(usize) -> (usize, usize),
        out: &mut [T],
        den: &mut [T],
    ) {
        let ((m, dv, b), kernels) = (self.dims, self.kernels);
        let (c, nb) = (self.qm.rows(), self.kf.len() / m);
        let cl = b.min(nb);
        let (lt, rt) = tiles.split_at_mut(b * cl);
        let first = MatRef::row_major(&self.kf[..cl * m], cl, m).t();
        let last = MatRef::row_major(&self.kf[(nb - cl) * m..], cl, m).t();
        kernels.gemm(MatMut::new(lt, c, cl, cl), Accum::Overwrite, self.qm, first);
        kernels.gemm(MatMut::new(rt, c, cl, cl), Accum::Overwrite, self.qm, last);
        for t in 0..c {
            let (lo, hi) = window(t);
            let l = &mut lt[t * cl..(t + 1) * cl];
            l[lo..].fill(T::zero());
            let r = &mut rt[t * cl..(t + 1) * cl];
            r[..hi - (nb - cl)].fill(T::zero());
            den[t] = den[t] + (kernels.sum(l) + kernels.sum(r));
        }
        let values = |from: usize| MatRef::row_major(&self.v[from * dv..(from + cl) * dv], cl, dv);
        let mut o = MatMut::row_major(out, c, dv);
        kernels.gemm(
            o.rb_mut(),
            Accum::Add,
            MatRef::new(lt, c, cl, cl),
            values(0),
        );
        kernels.gemm(o, Accum::Add, MatRef::new(rt, c, cl, cl), values(nb - cl));
    }
}

/// A running prefix sum of the band's key rows (already at the total state's scale): S then
/// z, as a compensated pair `hi + lo`, so the far sums of every block keep the total's
/// precision however many keys have passed.
struct Prefix<'a, T> {
    hi: &'a mut [T],
    lo: &'a mut [T],
}

impl<'a, T: Float> Prefix<'a, T> {
    fn new(buf: &'a mut [T]) -> Self {
        buf.fill(T::zero());
        let (hi, lo) = buf.split_at_mut(buf.len() / 2);
        Self { hi, lo }
    }

    /// Adds key rows `kf` (n×M) with their values `v` (n×dv): the same rank-n update and
    /// TwoSum a [`PrefixState`] folds its ring with ([`Kernels::fold_rank`]).
    fn absorb<K: Kernels<T>>(&mut self, kernels: &K, kf: &[T], v: &[T], (m, dv): (usize, usize)) {
        let n = kf.len() / m;
        if n > 0 {
            kernels.fold_rank(self.hi, self.lo, Ring::new(kf, v, n, m, dv));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scalar;

    /// The prefix form's running sums keep the precision of one block's sum however many
    /// blocks pass: 4096 blocks of 4 positive f32 rows end within `(rows + 2)·u` of the exact
    /// sum (positive terms: the compensated pair rounds once per block product and once at
    /// the end). Without the compensation (plain adds into `hi`) the error grows with the
    /// number of blocks, and this fails.
    #[test]
    fn prefix_sums_stay_compensated() {
        const M: usize = 4;
        const DV: usize = 3;
        const ROWS: usize = 4;
        const LEN: usize = M * DV + M;
        let (m, dv, rows, blocks) = (M, DV, ROWS, 4096);
        assert_eq!(block_len(m, dv), Ok(LEN));
        let mut buf = [0f32; 2 * LEN];
        let mut prefix = Prefix::new(&mut buf);
        let mut exact = [0f64; LEN];
        let mut x = 0x2545_f491u32;
        let mut draw = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            0.5 + (x >> 8) as f32 / (1u32 << 24) as f32
        };
        for _ in 0..blocks {
            let kf: [f32; ROWS * M] = core::array::from_fn(|_| draw());
            let v: [f32; ROWS * DV] = core::array::from_fn(|_| draw());
            prefix.absorb(&Scalar, &kf, &v, (m, dv));
            for r in 0..rows {
                for i in 0..m {
                    let f = f64::from(kf[r * m + i]);
                    for j in 0..dv {
                        exact[i * dv + j] += f * f64::from(v[r * dv + j]);
                    }
                    exact[m * dv + i] += f;
                }
            }
        }
        let u = f64::from(f32::EPSILON) / 2.0;
        for (e, &want) in exact.iter().enumerate() {
            let got = f64::from(prefix.hi[e]) + f64::from(prefix.lo[e]);
            let bound = (rows + 2) as f64 * u * want;
            assert!((got - want).abs() <= bound, "element {e}: {got} vs {want}");
        }
    }
}
