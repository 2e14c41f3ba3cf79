//! Target `attention`: bidirectional, causal token loop, chunked causal and the stream, on
//! Scalar and every SIMD backend, in f32 and f64, with arbitrary blocks, masks and maps.
//!
//! Oracles:
//! - positive softmax maps (SM+, SMhyp+), every path and backend:
//!   1. within the derived rounding bound of naive f64 FAVOR+ over the same W
//!      ([`favor_reference`], bound from
//!      [`crate::reference`] evaluated at u' = 2u_T + u_f64);
//!   2. against f64 exact softmax attention: |out − E| ≤ the estimator-spread identity bound
//!      ([`spread_bound`]) plus bound 1 — large m (up to 256
//!      rows, 512 features) makes it tight, small m loose, but never wrong;
//!   3. against the Scalar backend, the tight end-to-end bound [`backend_bound`] (shared with
//!      favor-simd's tests/backends.rs).
//! - every map (trigonometric and generalized included), documented structural identities:
//!   outputs i ≤ t of `causal_prefix` (every backend), `causal_chunked` and the stream
//!   (Scalar) are bit-identical whatever tokens > t hold and however the mask changes after
//!   t (no leak from the future); rows with every visible key masked are exact zeros;
//!   positive maps give finite outputs; no call panics.

use arbitrary::{Result, Unstructured};
use favor_core::{FeatureMap, Kernels, Options, Plan, PlanKind, Scalar, Shape, Stream};
use favor_simd::math::EXP_MAX_ULP;

use crate::backends::VisitT;
use crate::bounds::{Real, gamma, max_abs, unit};
use crate::input::{Mix, size, vector};
use crate::maps::{Map, MapSpec};
use crate::reference::{Qkv, RefOpts, explicit, favor_reference, softmax, spread_bound, visible};

/// One attention problem.
#[derive(Debug, Clone)]
pub struct AttentionCase {
    /// Run in f64 (else f32).
    pub f64: bool,
    /// The feature map.
    pub map: MapSpec,
    /// Queries of the bidirectional call.
    pub lq: usize,
    /// Keys (and the causal sequence length).
    pub lk: usize,
    /// Value dimension.
    pub dv: usize,
    /// max(lq, lk)×d queries.
    pub q: Vec<f64>,
    /// lk×d keys.
    pub k: Vec<f64>,
    /// lk×dv values.
    pub v: Vec<f64>,
    /// Block sizes: bidirectional, token loop, chunked.
    pub blocks: [usize; 3],
    /// Key padding mask.
    pub mask: Option<Vec<bool>>,
    /// Normalised outputs.
    pub normalized: bool,
    /// Cut point of the no-leak check and the seed of the replacement tokens after it.
    pub cut: usize,
    /// Seed of the tokens after the cut.
    pub change_seed: u64,
}

impl AttentionCase {
    /// Decodes a case: d ≤ 64, m ≤ 256, L ≤ 64, dv ≤ 16; q and k entries below 2⁴, values
    /// below 2⁹ in magnitude.
    pub fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        let f64 = u.arbitrary()?;
        let map = MapSpec::arbitrary(u, 64, 256, false)?;
        let (lq, lk, dv) = (size(u, 1, 64)?, size(u, 1, 64)?, size(u, 1, 16)?);
        let d = map.d;
        let eq = u.int_in_range(-6..=3)?;
        let q = vector(u, lq.max(lk) * d, -21, eq)?;
        let k = vector(u, lk * d, -21, eq)?;
        let ev = u.int_in_range(-4..=8)?;
        let v = vector(u, lk * dv, -21, ev)?;
        let blocks = [size(u, 1, 70)?, size(u, 1, 70)?, size(u, 1, 70)?];
        let mask = if u.ratio(1, 3)? {
            let bits = u.arbitrary::<u64>()?;
            let dense = u.arbitrary::<bool>()?;
            Some(
                (0..lk)
                    .map(|j| (bits >> (j % 64)) & 1 == 1 || (dense && j % 3 != 0))
                    .collect(),
            )
        } else {
            None
        };
        let normalized = u.ratio(7, 8)?;
        let cut = size(u, 0, lk - 1)?;
        let change_seed = u.arbitrary()?;
        Ok(AttentionCase {
            f64,
            map,
            lq,
            lk,
            dv,
            q,
            k,
            v,
            blocks,
            mask,
            normalized,
            cut,
            change_seed,
        })
    }
}

/// Decodes an [`AttentionCase`] and checks it.
pub fn check_attention(data: &[u8]) {
    let Ok(case) = AttentionCase::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    run_case(&case);
}

/// Checks one case in its precision.
pub fn run_case(case: &AttentionCase) {
    if case.f64 {
        run::<f64>(case);
    } else {
        run::<f32>(case);
    }
}

/// Inputs in T, by path.
struct Inputs<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
}

fn cast<T: Real>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

/// Outputs of every path on one backend: `[bidirectional, prefix, chunked, stream]`
/// (the stream only when normalised and unmasked: it has neither option).
fn run_paths<T: Real, K: Kernels<T>>(
    kern: &K,
    map: &Map<'_, T>,
    c: &AttentionCase,
    x: &Inputs<T>,
) -> Vec<(&'static str, Vec<T>)> {
    let (d, dv) = (c.map.d, c.dv);
    let opts = |block| Options {
        block,
        normalized: c.normalized,
        key_mask: c.mask.as_deref(),
    };
    let mut outs = Vec::new();
    let bi = Shape {
        queries: c.lq,
        keys: c.lk,
        dim: d,
        value_dim: dv,
    };
    let plan = Plan::new(PlanKind::Bidirectional, *kern, map, bi, opts(c.blocks[0]))
        .expect("bidirectional");
    let mut scratch = vec![T::zero(); plan.scratch_len()];
    let mut out = vec![T::zero(); c.lq * dv];
    plan.run(&x.q[..c.lq * d], &x.k, &x.v, &mut out, &mut scratch)
        .expect("bidirectional");
    outs.push(("bidirectional", out));
    let qc = &x.q[..c.lk * d];
    outs.push(("causal_prefix", prefix(kern, map, c, qc, &x.k, &x.v)));
    outs.push(("causal_chunked", chunked(kern, map, c, qc, &x.k, &x.v)));
    if c.normalized && c.mask.is_none() {
        outs.push(("stream", stream(kern, map, c, qc, &x.k, &x.v)));
    }
    outs
}

fn prefix<T: Real, K: Kernels<T>>(
    kern: &K,
    map: &Map<'_, T>,
    c: &AttentionCase,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Vec<T> {
    let o = Options {
        block: c.blocks[1],
        normalized: c.normalized,
        key_mask: c.mask.as_deref(),
    };
    let shape = Shape::new(c.lk, c.map.d, c.dv);
    let plan = Plan::new(PlanKind::CausalPrefix, *kern, map, shape, o).expect("causal_prefix");
    let mut scratch = vec![T::zero(); plan.scratch_len()];
    let mut out = vec![T::zero(); c.lk * c.dv];
    plan.run(q, k, v, &mut out, &mut scratch)
        .expect("causal_prefix");
    out
}

fn chunked<T: Real, K: Kernels<T>>(
    kern: &K,
    map: &Map<'_, T>,
    c: &AttentionCase,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Vec<T> {
    let o = Options {
        block: c.blocks[2],
        normalized: c.normalized,
        key_mask: c.mask.as_deref(),
    };
    let shape = Shape::new(c.lk, c.map.d, c.dv);
    let plan = Plan::new(PlanKind::CausalChunked, *kern, map, shape, o).expect("causal_chunked");
    let mut scratch = vec![T::zero(); plan.scratch_len()];
    let mut out = vec![T::zero(); c.lk * c.dv];
    plan.run(q, k, v, &mut out, &mut scratch)
        .expect("causal_chunked");
    out
}

fn stream<T: Real, K: Kernels<T>>(
    kern: &K,
    map: &Map<'_, T>,
    c: &AttentionCase,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Vec<T> {
    let (d, dv) = (c.map.d, c.dv);
    let mut buf = vec![T::zero(); Stream::<T, Map<'_, T>, K>::buffer_len(map, dv).unwrap()];
    let mut s = Stream::new(*kern, map, dv, &mut buf).unwrap();
    let mut out = vec![T::zero(); c.lk * dv];
    for t in 0..c.lk {
        s.step(
            &q[t * d..(t + 1) * d],
            &k[t * d..(t + 1) * d],
            &v[t * dv..(t + 1) * dv],
            &mut out[t * dv..(t + 1) * dv],
        )
        .expect("stream step");
    }
    out
}

/// Derived bound on |out_a − out_b| for two evaluations (two backends, whose kernels round
/// differently) of the same normalised positive-feature attention in unit roundoff `u`:
/// queries `q` and keys `k` (row-major, d columns), projection `w` (rows of d; empty without
/// one), data scale `s`, values at most `vmax` in magnitude. Shared by favor-simd's
/// tests/backends.rs and the `attention` and `mapped` targets.
///
/// Each projection uᵢ = s·wᵢ·x is a length-d dot product: abs error ≤ γ_d·s·Σ|wᵢⱼxⱼ| =: e_u
/// (B_u is its max over rows). The row max c and the |x|²/2 term carry errors of the same
/// kind (≤ γ_d·B_x). A stored feature exp(u − c) therefore has relative error
/// ≤ 2e_u + (exp ulps + 1)·u (exp ulps = `EXP_MAX_ULP`, SIMD exp against libm), and the key
/// rescale exp(ℓ − c) adds 2(e_u + γ_d·B_x). A score aᵢⱼ = Σ_r φ_r(q)φ_r(k) of positive
/// terms, summed with at most `score_terms` roundings: relative error
/// δ ≤ 2·feature + rescale + γ_{score_terms}. A normalised output Σⱼaᵢⱼvⱼ / Σⱼaᵢⱼ then moves
/// by at most 2δ·max|v| (numerator and denominator), plus γ_L·max|v| for the sums' own
/// rounding (L = keys). Two evaluations: twice that. It holds while the stabilised
/// denominator stays in the normal range.
pub fn backend_bound(
    w: &[f64],
    (d, s): (usize, f64),
    q: &[f64],
    k: &[f64],
    score_terms: usize,
    vmax: f64,
    u: f64,
) -> f64 {
    let (mut b_u, mut b_x) = (0.0f64, 0.0f64);
    for x in q.chunks(d).chain(k.chunks(d)) {
        let sq: f64 = x.iter().map(|a| a * a).sum();
        b_x = b_x.max(s * s * sq / 2.0);
        for wr in w.chunks(d) {
            let t: f64 = wr.iter().zip(x).map(|(a, b)| (a * b).abs()).sum();
            b_u = b_u.max(s * t);
        }
    }
    let e_u = gamma(d, u) * b_u;
    let feature = 2.0 * e_u + (f64::from(EXP_MAX_ULP) + 1.0) * u;
    let rescale = 2.0 * (e_u + gamma(d, u) * b_x);
    let delta = 2.0 * feature + rescale + gamma(score_terms, u);
    2.0 * (2.0 * delta + gamma(k.len() / d, u)) * vmax
}

fn run<T: Real>(c: &AttentionCase) {
    let (w, wt) = c.map.weights::<T>();
    let map = c.map.build(&w, &wt);
    let x = Inputs {
        q: cast::<T>(&c.q),
        k: cast::<T>(&c.k),
        v: cast::<T>(&c.v),
    };
    let what = format!(
        "{} {:?} d={} m={} lq={} lk={} dv={} blocks={:?} mask={} norm={}",
        T::NAME,
        c.map.kind,
        c.map.d,
        c.map.m,
        c.lq,
        c.lk,
        c.dv,
        c.blocks,
        c.mask.is_some(),
        c.normalized
    );
    let scalar = run_paths(&Scalar, &map, c, &x);
    no_leak(&Scalar, &map, c, &scalar, true, &what);
    structural(&map, c, &scalar, &format!("scalar {what}"));
    let numeric = c.map.kind.positive_softmax().then(|| Numeric::new(c));
    if let Some(n) = &numeric {
        n.check::<T>(c, &scalar, &format!("scalar {what}"));
    }
    struct V<'a, 'w, T> {
        c: &'a AttentionCase,
        map: &'a Map<'w, T>,
        x: &'a Inputs<T>,
        scalar: &'a [(&'static str, Vec<T>)],
        numeric: Option<&'a Numeric>,
        what: &'a str,
    }
    impl<T: Real> VisitT<T> for V<'_, '_, T> {
        fn visit<K: Kernels<T>>(&mut self, k: K) {
            let outs = run_paths::<T, K>(&k, self.map, self.c, self.x);
            let what = format!("{} {}", Kernels::<T>::name(&k), self.what);
            no_leak::<T, K>(&k, self.map, self.c, &outs, false, &what);
            structural(self.map, self.c, &outs, &what);
            if let Some(n) = self.numeric {
                n.check::<T>(self.c, &outs, &what);
                n.against_scalar::<T>(self.c, &outs, self.scalar, &what);
            }
        }
    }
    T::each_simd(&mut V {
        c,
        map: &map,
        x: &x,
        scalar: &scalar,
        numeric: numeric.as_ref(),
        what: &what,
    });
}

/// Rows with no visible key are exact zeros; positive maps give finite outputs.
fn structural<T: Real>(map: &Map<'_, T>, c: &AttentionCase, outs: &[(&str, Vec<T>)], what: &str) {
    let dv = c.dv;
    for (path, out) in outs {
        let causal = *path != "bidirectional";
        let rows = out.len() / dv;
        for i in 0..rows {
            let row = &out[i * dv..(i + 1) * dv];
            let seen = (0..c.lk).any(|j| visible(i, j, causal, c.mask.as_deref()));
            if !seen {
                assert!(
                    row.iter().all(|&o| o == T::zero()),
                    "{what}: {path} row {i} sees no key but is not zero"
                );
            } else if map.is_positive() && c.normalized {
                assert!(
                    row.iter().all(|o| o.is_finite()),
                    "{what}: {path} row {i} not finite: {row:?}"
                );
            }
        }
    }
}

/// Outputs 0..=cut must not change, bit for bit, when tokens after the cut (and the mask
/// after it) change: `causal_prefix` on every backend, chunked and stream on Scalar (the
/// guarantees favor-core documents).
fn no_leak<T: Real, K: Kernels<T>>(
    kern: &K,
    map: &Map<'_, T>,
    c: &AttentionCase,
    outs: &[(&'static str, Vec<T>)],
    is_scalar: bool,
    what: &str,
) {
    let (d, dv, cut) = (c.map.d, c.dv, c.cut);
    let mut changed = c.clone();
    let mut mix = Mix::new(c.change_seed);
    let scale = max_abs(&c.q).max(1e-3);
    for t in cut + 1..c.lk {
        for j in 0..d {
            changed.q[t * d + j] = f64::from((mix.grid() * scale * 2.0) as f32);
            changed.k[t * d + j] = f64::from((mix.grid() * scale * 2.0) as f32);
        }
        for j in 0..dv {
            changed.v[t * dv + j] = f64::from((mix.grid() * 1e3) as f32);
        }
        if let Some(m) = &mut changed.mask {
            m[t] = !m[t];
        }
    }
    let y = Inputs {
        q: cast::<T>(&changed.q[..c.lk * d]),
        k: cast::<T>(&changed.k),
        v: cast::<T>(&changed.v),
    };
    let keep = (cut + 1) * dv;
    let same = |a: &[T], b: &[T], path: &str| {
        for i in 0..keep {
            assert!(
                a[i].bits() == b[i].bits(),
                "{what}: {path} output {} (row {}) changed when tokens after {cut} changed: {:e} vs {:e}",
                i,
                i / dv,
                a[i].to64(),
                b[i].to64()
            );
        }
    };
    let base = |name: &str| &outs.iter().find(|(p, _)| *p == name).unwrap().1;
    same(
        base("causal_prefix"),
        &prefix(kern, map, &changed, &y.q, &y.k, &y.v),
        "causal_prefix",
    );
    if is_scalar {
        same(
            base("causal_chunked"),
            &chunked(kern, map, &changed, &y.q, &y.k, &y.v),
            "causal_chunked",
        );
        if let Some((_, s)) = outs.iter().find(|(p, _)| *p == "stream") {
            same(s, &stream(kern, map, &changed, &y.q, &y.k, &y.v), "stream");
        }
    }
}

/// The f64 oracles of one positive-softmax case (computed once, shared by all backends).
struct Numeric {
    /// [bidirectional, causal] FAVOR+ references with their bounds.
    refs: [crate::reference::Reference; 2],
    /// [bidirectional, causal] exact softmax outputs.
    exact: [Vec<f64>; 2],
    /// [bidirectional, causal] spread bounds.
    spread: [Vec<f64>; 2],
    /// Scalar-vs-backend bound, per precision at u = u_T.
    backend_f32: f64,
    backend_f64: f64,
}

impl Numeric {
    fn new(c: &AttentionCase) -> Self {
        let (d, dv) = (c.map.d, c.dv);
        // Inputs as the library sees them are exact in both precisions, so one f64 view.
        let qb = &c.q[..c.lq * d];
        let qc = &c.q[..c.lk * d];
        let ke = explicit(&c.map, &c.k);
        let tau = c.map.scale() * c.map.scale();
        let one = |q: &[f64], causal: bool| {
            let qe = explicit(&c.map, q);
            let o = RefOpts {
                causal,
                key_mask: c.mask.as_deref(),
                normalized: c.normalized,
                u: 2.0 * unit::<f32>() + unit::<f64>(),
                // f32's: the larger, so the bound also covers f64 runs (see `scale`).
                tiny: f64::from(f32::MIN_POSITIVE),
            };
            let r = favor_reference(&qe, &ke, &c.v, dv, &o);
            let x = Qkv {
                q,
                k: &c.k,
                v: &c.v,
                d,
                dv,
            };
            let e = softmax(x, tau, causal, c.mask.as_deref());
            let s = spread_bound(&r, &e, x, tau);
            (r, e.out, s)
        };
        // Scores of M features, bounded with γ_{2M}.
        let (map, terms) = (&c.map, 2 * c.map.features());
        let backend = |u| {
            backend_bound(
                &map.w,
                (map.d, map.scale()),
                qc,
                &c.k,
                terms,
                max_abs(&c.v),
                u,
            )
        };
        let (rb, eb, sb) = one(qb, false);
        let (rc, ec, sc) = one(qc, true);
        Numeric {
            refs: [rb, rc],
            exact: [eb, ec],
            spread: [sb, sc],
            backend_f32: backend(unit::<f32>()),
            backend_f64: backend(unit::<f64>()),
        }
    }

    /// The reference bound was computed for f32; an f64 run uses it scaled to f64's u
    /// (every term of the bound is at least linear in u, so the scaled bound is larger than
    /// the bound at f64's own u' only by the f64 oracle's rounding, which u' includes).
    fn scale<T: Real>() -> f64 {
        (2.0 * unit::<T>() + unit::<f64>()) / (2.0 * unit::<f32>() + unit::<f64>())
    }

    fn check<T: Real>(&self, c: &AttentionCase, outs: &[(&str, Vec<T>)], what: &str) {
        let f = Self::scale::<T>();
        let vmax = max_abs(&c.v);
        let big = T::max_value().to64() / 4.0;
        for (path, out) in outs {
            let i = usize::from(*path != "bidirectional");
            let (r, e, s) = (&self.refs[i], &self.exact[i], &self.spread[i]);
            for (n, &o) in out.iter().enumerate() {
                let (o, want, tol) = (o.to64(), r.out[n], r.tol[n] * f);
                if want.abs() + tol >= big || tol.is_nan() {
                    continue; // unnormalised estimate beyond T's range: nothing promised
                }
                assert!(
                    o.is_finite() && (o - want).abs() <= tol,
                    "{what}: {path}[{n}] = {o:e}, naive f64 FAVOR+ {want:e}, |err| {:e} > bound {tol:e}",
                    (o - want).abs()
                );
                if c.normalized {
                    let b = s[n] + tol + 1e-12 * vmax;
                    assert!(
                        (o - e[n]).abs() <= b,
                        "{what}: {path}[{n}] = {o:e}, exact softmax {:e}, |err| {:e} > spread {:e} + rounding {tol:e}",
                        e[n],
                        (o - e[n]).abs(),
                        s[n]
                    );
                }
            }
        }
    }

    fn against_scalar<T: Real>(
        &self,
        c: &AttentionCase,
        outs: &[(&str, Vec<T>)],
        scalar: &[(&str, Vec<T>)],
        what: &str,
    ) {
        if !c.normalized {
            return;
        }
        let bound = if T::NAME == "f32" {
            self.backend_f32
        } else {
            self.backend_f64
        };
        for ((path, g), (_, w)) in outs.iter().zip(scalar) {
            for (n, (a, b)) in g.iter().zip(w).enumerate() {
                let err = (a.to64() - b.to64()).abs();
                assert!(
                    err <= bound,
                    "{what}: {path}[{n}] = {:e}, scalar {:e}, |diff| {err:e} > bound {bound:e}",
                    a.to64(),
                    b.to64()
                );
            }
        }
    }
}
