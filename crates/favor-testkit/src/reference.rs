//! The attention oracles, in f64, never running favor code:
//!
//! 1. [`favor_reference`]: FAVOR+ written out naively — explicit feature vectors of the
//!    positive softmax maps, every score `aᵢⱼ = φ(qᵢ)·φ(kⱼ)`, O(Lq·Lk·M) — computed in the log
//!    domain (log-sum-exp) so that no input norm under- or overflows it, with a per-element
//!    bound on |computed − exact| for an evaluation in unit roundoff u. The bound is derived
//!    step by step in the comment above `key_exponent_err` below; in short:
//!    - key exponent error `Δk = γ_{d+2}(p + h) + u(4p + 4h + ln√M + 3)` (p = largest
//!      Σⱼ|wᵢⱼx'ⱼ| of the row, h = |x'|²/2), normalised query `Δq = γ_{d+2}p + u(2p + 3)`;
//!    - the stabiliser's rescales `Δs = u(7Λ + 6L + 6)`, Λ = max over keys of p + h + ln√M;
//!    - each score's relative error `δᵢⱼ = exp(Δq + Δk + Δs + u) − 1`, sums of at most
//!      N = 2(L + M) + 16 terms (γ_N);
//!    - normalised output: `[Σⱼ pⱼδⱼ|vⱼ − out| + 2γ_N(Σⱼ pⱼ|vⱼ| + |out|)] / (1 − maxδ − γ_N)`;
//!      unnormalised: `Σⱼ aⱼ|vⱼ|(δⱼ + 2γ_N)/(1 − γ_N)`.
//!
//!    That model has no underflow. The library stores every feature row shifted by its own
//!    largest exponent (query row: `ℓ_q`, key row: `ℓ_k`) and brings keys to the running
//!    stabiliser `c = max ℓ_k` over the keys the query sees, so what it actually sums is
//!    `D = Σⱼ aⱼ / e^{ℓ_q + c}` (≤ M·L). When a query is so misaligned with every key that
//!    `D` nears the smallest normal number μ of `T`, the stored products underflow and the
//!    output loses its digits: favor-core documents this limit ("Accuracy in `f32`"). The
//!    underflow term bounds it, with every quantity whose exact value is below μ allowed an
//!    absolute error of μ (flush to zero; gradual underflow does better):
//!    - stored q and k features (≤ 1): μ each; a key brought to the scale `c` (factor ≤ 1):
//!      2μ per entry; z and S sum ≤ L such entries through ≤ L rescales: `3Lμ` per entry
//!      (times max|v| for S);
//!    - `q̃·z` (query factor ≤ 1, `zᵣ ≤ L`), plus the chunked path's query rescale:
//!      `M(5L + 1)μ`; the chunk-local scores, M products of three rounded factors and one
//!      rescale per key: `L(4M + 1)μ`;
//!    - so the denominator carries `E = 10·M·(L + 1)·μ` at most and each numerator `E·max|v|`,
//!      and a normalised output moves by `E(max|v| + |out|)/(D(1 − maxδ − γ_N) − E)` more
//!      (no bound unless that denominator exceeds E); unnormalised, `e^{ℓ_q + c}·E·max|v|`;
//!    - the output's own rounding into T below μ (≤ μ), and for an unnormalised output the
//!      factor `e^{ℓ_q + c}` below μ (≤ μ times the stabilised sum, ≤ M·(L + 1)·max|v|).
//!
//!    Evaluated with u' = 2u_T + u_f64 it covers every backend: SIMD exp is within
//!    EXP_MAX_ULP = 1 ulp of libm (so ≤ 2 ulp = 2u' of exact, the bound's "exp adds 2u"), SIMD
//!    sums are other orders of the same terms (γ bounds any order), and u_f64 covers this
//!    oracle's own rounding (every term grows at least linearly in u).
//! 2. [`softmax`]: exact softmax attention, and [`spread_bound`]: how far FAVOR+ with *these*
//!    features can be from it. With ρⱼ = aⱼ/exp(τ qᵢ·kⱼ) and exact weights pⱼ,
//!    `out − E = Σⱼ pⱼ(ρⱼ − ρ_min)(vⱼ − E) / Σⱼ pⱼρⱼ` (because Σⱼ pⱼ(vⱼ − E) = 0), so
//!    `|out − E| ≤ (e^{ΔL} − 1)·Σⱼ pⱼ|vⱼ − E|` with ΔL = max ln ρⱼ − min ln ρⱼ over visible
//!    keys: an identity-based bound that is small exactly when m is large enough for the
//!    estimate to be good, and never a statistical guess.
//! 3. [`lemma2_std`]: the statistical counterpart for *random* features: a first-order bound
//!    on the standard deviation of FAVOR+'s output around exact softmax with m projection
//!    rows, from the paper's Lemma 2 MSE formulas.

use crate::bounds::gamma;
use crate::maps::{MapKind, MapSpec};

/// Explicit log-features of rows of x under a positive softmax map.
#[derive(Debug, Clone)]
pub struct Explicit {
    d: usize,
    width: usize,
    rows: usize,
    ln_norm: f64,
    /// rows×width: ln φᵣ(x) = ±uᵣ − h − ln√M.
    logf: Vec<f64>,
    /// Per row: p = maxᵣ Σⱼ |wᵣⱼ x'ⱼ|.
    p: Vec<f64>,
    /// Per row: h = |x'|²/2.
    h: Vec<f64>,
}

impl Explicit {
    /// `ln φ(x)` of row `r`: its M log-features.
    pub fn log_features(&self, r: usize) -> &[f64] {
        &self.logf[r * self.width..(r + 1) * self.width]
    }

    /// `h = |x'|²/2` of row `r` (x' = s·x): the row's exponent is `wᵢ·x' − h`.
    pub fn h(&self, r: usize) -> f64 {
        self.h[r]
    }

    /// `p = maxᵢ Σⱼ |wᵢⱼ x'ⱼ|` of row `r`: the largest projection magnitude the row's
    /// exponents can carry (the error model's scale of a projection's rounding).
    pub fn p(&self, r: usize) -> f64 {
        self.p[r]
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// The explicit features of the rows of `x` (row-major, d columns) under `spec` (SM+ or
/// SMhyp+).
pub fn explicit(spec: &MapSpec, x: &[f64]) -> Explicit {
    assert!(spec.kind.positive_softmax());
    let (d, m) = (spec.d, spec.m);
    let s = spec.scale();
    let width = spec.features();
    let ln_norm = (width as f64).sqrt().ln();
    let rows = x.len() / d;
    let mut e = Explicit {
        d,
        width,
        rows,
        ln_norm,
        logf: vec![0.0; rows * width],
        p: vec![0.0; rows],
        h: vec![0.0; rows],
    };
    for r in 0..rows {
        let xs: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|v| v * s).collect();
        let h = xs.iter().map(|v| v * v).sum::<f64>() / 2.0;
        let mut pmax = 0.0f64;
        for i in 0..m {
            let wi = &spec.w[i * d..(i + 1) * d];
            let u: f64 = wi.iter().zip(&xs).map(|(a, b)| a * b).sum();
            pmax = pmax.max(wi.iter().zip(&xs).map(|(a, b)| (a * b).abs()).sum());
            e.logf[r * width + i] = u - h - ln_norm;
            if spec.kind == MapKind::Hyperbolic {
                e.logf[r * width + m + i] = -u - h - ln_norm;
            }
        }
        e.p[r] = pmax;
        e.h[r] = h;
    }
    e
}

// Rounding bound of [`favor_reference`] (Higham-style worst case; u = unit roundoff,
// γₙ = nu/(1−nu)). Positive feature maps only: every term below is positive.
//
// 1. Exponents. A stored feature of row x is `exp(fl(ûᵢ − c))` with `ûᵢ = fl(s·fl(x·wᵢ))` and
//    `c = maxᵢ ûᵢ`; its log-scale is `ℓ = fl(fl(c − Ĥ) − ln√M)`, `Ĥ = fl(x·x)·s·s/2`. The dot
//    products are d-term sums (γ_d·Σ|xⱼwᵢⱼ|), the scale by s and the rounding of s itself add
//    2u, so |ûᵢ − s·x·wᵢ| ≤ γ_{d+2}·p; Ĥ has one more product and s² (2u more):
//    |Ĥ − H| ≤ γ_{d+2}·H + 2uH. The subtraction ûᵢ − c (|·| ≤ 2p) adds 2up, exp (libm,
//    < 1 ulp) adds 2u, the log-scale's subtractions add u|c − Ĥ| + u|ℓ| ≤ u(2p + 2H + ln√M),
//    the rounding of ln√M (common to all rows) u. Summed:
//    key: Δk = γ_{d+2}(p + h) + u(4p + 4h + ln√M + 3). A normalised query needs only its
//    stored features (its log-scale cancels): Δq = γ_{d+2}p + u(2p + 3); unnormalised, Δq = Δk.
// 2. Stabiliser. Each key row is multiplied by exp(fl(ℓⱼ − c)) when absorbed, the running
//    sums by exp(fl(c_old − c_new)) at each rescale; the chunked path uses the same factors
//    against each query's running scale and exp(fl(c − runᵢ)) on the query's state part;
//    unnormalised outputs are finally multiplied by exp(fl(ℓ_q + c)). With
//    Λ = max(p + h + ln√M) ≥ max|ℓ| over keys, each argument is at most 2Λ (ℓ_q + c: |ℓ_q| is
//    already in Δq, Λ more), the rescales telescope (Σ|Δc| ≤ 2Λ), and each factor's exp and
//    multiply add ≤ 3u (at most L rescales, one factor per key and per query):
//    Δs = u(7Λ + 6L + 6).
// 3. Hence each product term φᵢ(q)φᵢ(kⱼ) (one more rounding) has relative error at most
//    δᵢⱼ = exp(Δqᵢ + Δkⱼ + Δs + u) − 1, and so has aᵢⱼ = Σ terms (all positive).
// 4. Every accumulation (over M features, L keys, a chunk tile, the denominator) has fewer
//    than N = 2(L + M) + 16 terms: relative γ_N on positive sums, γ_N·Σ|terms| on the
//    numerator.
// 5. Normalised: with ãⱼ = aⱼ(1 + θⱼ), |θⱼ| ≤ δⱼ, exactly
//    Σãⱼvⱼ/Σãⱼ − out = Σⱼ aⱼθⱼ(vⱼ − out)/Σãⱼ, so
//    |Δout_c| ≤ [Σⱼ pⱼδⱼ|vⱼc − out_c| + 2γ_N(Σⱼ pⱼ|vⱼc| + |out_c|)] / (1 − maxδ − γ_N).
//    Unnormalised: |Δout_c| ≤ Σⱼ aⱼ|vⱼc|(δⱼ + 2γ_N)/(1 − γ_N).
// 6. Underflow (module docs): the `tiny` terms.

/// Absolute error bound of the exponent of a key's feature *including* its log-scale (Δk).
fn key_exponent_err(e: &Explicit, r: usize, u: f64) -> f64 {
    let (p, h) = (e.p[r], e.h[r]);
    gamma(e.d + 2, u) * (p + h) + u * (4.0 * p + 4.0 * h + e.ln_norm + 3.0)
}

/// Same for a query (Δq); normalised outputs never use the query's log-scale (it cancels).
fn query_exponent_err(e: &Explicit, r: usize, u: f64, normalized: bool) -> f64 {
    if normalized {
        gamma(e.d + 2, u) * e.p[r] + u * (2.0 * e.p[r] + 3.0)
    } else {
        key_exponent_err(e, r, u)
    }
}

/// ln Σᵣ exp(aᵣ + bᵣ): the log of `φ(x)·φ(y)` from two rows of log-features.
pub fn lse_pair(a: &[f64], b: &[f64]) -> f64 {
    let top = a
        .iter()
        .zip(b)
        .map(|(x, y)| x + y)
        .fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY {
        return top;
    }
    top + a
        .iter()
        .zip(b)
        .map(|(x, y)| (x + y - top).exp())
        .sum::<f64>()
        .ln()
}

/// Options of the FAVOR+ reference.
#[derive(Debug, Clone, Copy)]
pub struct RefOpts<'a> {
    /// Query i sees keys 0..=i.
    pub causal: bool,
    /// Key padding mask.
    pub key_mask: Option<&'a [bool]>,
    /// Normalised (softmax-like) output, else the raw estimate of A·V.
    pub normalized: bool,
    /// Unit roundoff the bound is for.
    pub u: f64,
    /// Smallest positive normal number μ of the type the bound is for (its underflow term).
    pub tiny: f64,
}

/// FAVOR+ in f64 and its rounding bound, per output element.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Lq×dv outputs.
    pub out: Vec<f64>,
    /// Lq×dv bounds on |computed − out|.
    pub tol: Vec<f64>,
    /// Lq×Lk: ln aᵢⱼ (−∞ where invisible).
    pub log_a: Vec<f64>,
    /// Lq×Lk: the weights of the output, normalised pᵢⱼ = aᵢⱼ/Σⱼ aᵢⱼ (or the raw aᵢⱼ when
    /// unnormalised); 0 where invisible.
    pub weights: Vec<f64>,
    /// Lq×Lk: the relative error bound δᵢⱼ of each computed score aᵢⱼ (step 3 of the
    /// derivation); 0 where invisible.
    pub delta: Vec<f64>,
    /// γ_N, the relative error bound of the sums (step 4 of the derivation).
    pub g: f64,
}

/// Whether key j is visible to query i.
pub fn visible(i: usize, j: usize, causal: bool, mask: Option<&[bool]>) -> bool {
    (!causal || j <= i) && mask.is_none_or(|m| m[j])
}

/// The naive FAVOR+ output for queries `q` over keys `k` and values `v` (dv columns).
pub fn favor_reference(q: &Explicit, k: &Explicit, v: &[f64], dv: usize, o: &RefOpts) -> Reference {
    let (lq, lk, mm) = (q.rows, k.rows, q.width);
    assert_eq!(mm, k.width);
    let u = o.u;
    let g = gamma(2 * (lk + mm) + 16, u);
    let lambda = (0..lk)
        .map(|j| k.p[j] + k.h[j] + k.ln_norm)
        .fold(0.0, f64::max);
    let ds = u * (7.0 * lambda + 6.0 * lk as f64 + 6.0);
    let dk: Vec<f64> = (0..lk).map(|j| key_exponent_err(k, j, u)).collect();
    let mut r = Reference {
        out: vec![0.0; lq * dv],
        tol: vec![0.0; lq * dv],
        log_a: vec![f64::NEG_INFINITY; lq * lk],
        weights: vec![0.0; lq * lk],
        delta: vec![0.0; lq * lk],
        g,
    };
    for i in 0..lq {
        let dq = query_exponent_err(q, i, u, o.normalized);
        let qf = &q.logf[i * mm..(i + 1) * mm];
        let vis: Vec<usize> = (0..lk)
            .filter(|&j| visible(i, j, o.causal, o.key_mask))
            .collect();
        if vis.is_empty() {
            continue; // no visible key: the library promises exact zeros
        }
        let mut la = Vec::with_capacity(vis.len());
        let mut delta = Vec::with_capacity(vis.len());
        for &j in &vis {
            let a = lse_pair(qf, &k.logf[j * mm..(j + 1) * mm]);
            r.log_a[i * lk + j] = a;
            la.push(a);
            delta.push((dq + dk[j] + ds + u).exp_m1());
            r.delta[i * lk + j] = delta[delta.len() - 1];
        }
        let dmax = delta.iter().fold(0.0f64, |a, &b| a.max(b));
        // The library's stabilised denominator D (module docs) and its underflow budget E.
        let row_max = |e: &Explicit, r: usize| {
            e.logf[r * mm..(r + 1) * mm]
                .iter()
                .fold(f64::NEG_INFINITY, |a, &b| a.max(b))
        };
        let (lq_scale, c) = (
            row_max(q, i),
            vis.iter()
                .map(|&j| row_max(k, j))
                .fold(f64::NEG_INFINITY, f64::max),
        );
        let top = la.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let sum_rel: f64 = la.iter().map(|a| (a - top).exp()).sum();
        let log_d = top + sum_rel.ln() - lq_scale - c;
        let e_under = 10.0 * mm as f64 * (lk as f64 + 1.0) * o.tiny;
        let vmax = vis
            .iter()
            .flat_map(|&j| &v[j * dv..(j + 1) * dv])
            .fold(0.0f64, |a, &b| a.max(b.abs()));
        // Weights: normalised pⱼ, or the raw aⱼ.
        let w: Vec<f64> = if o.normalized {
            la.iter().map(|a| (a - top).exp() / sum_rel).collect()
        } else {
            la.iter().map(|a| a.exp()).collect()
        };
        for (&j, wj) in vis.iter().zip(&w) {
            r.weights[i * lk + j] = *wj;
        }
        for col in 0..dv {
            let acc: f64 = vis
                .iter()
                .zip(&w)
                .map(|(&j, wj)| wj * v[j * dv + col])
                .sum();
            r.out[i * dv + col] = acc;
            let mut t = 0.0;
            for ((&j, wj), dl) in vis.iter().zip(&w).zip(&delta) {
                let vj = v[j * dv + col];
                t += if o.normalized {
                    wj * dl * (vj - acc).abs() + 2.0 * g * wj * vj.abs()
                } else {
                    wj * vj.abs() * (dl + 2.0 * g)
                };
            }
            // A denominator ≤ 0 means the first-order model no longer bounds anything.
            let den = if o.normalized {
                1.0 - dmax - g
            } else {
                1.0 - g
            };
            let round = if den > 0.0 {
                (if o.normalized {
                    t + 2.0 * g * acc.abs()
                } else {
                    t
                }) / den
            } else {
                f64::INFINITY
            };
            let under = if !round.is_finite() {
                f64::INFINITY
            } else if o.normalized {
                let d_low = log_d.exp() * den;
                if d_low > 2.0 * e_under {
                    e_under * (vmax + acc.abs() + round) / (d_low - e_under)
                } else {
                    f64::INFINITY
                }
            } else if e_under * vmax == 0.0 {
                0.0
            } else {
                (lq_scale + c).exp() * e_under * vmax * (1.0 + dmax + g)
            };
            // The output itself may lie below μ (absolute error ≤ μ when it is rounded into
            // T), and an unnormalised output's factor e^{ℓ_q + c} may be below μ too, with
            // absolute error ≤ μ times the stabilised sum it scales (≤ M·L·max|v|).
            let out_under = if o.normalized {
                o.tiny
            } else {
                o.tiny * (1.0 + mm as f64 * (lk as f64 + 1.0) * vmax * (1.0 + dmax + g))
            };
            r.tol[i * dv + col] = round + under + out_under;
        }
    }
    r
}

/// The inputs of one attention problem as the exact-softmax oracles read them: row-major
/// queries, keys and values with their widths. They travel together because [`softmax`],
/// [`spread_bound`] and [`lemma2_std`] all cut the same three slices into rows, and the
/// bounds only mean something for the inputs the exact output was computed from.
#[derive(Debug, Clone, Copy)]
pub struct Qkv<'a> {
    /// Lq×d queries.
    pub q: &'a [f64],
    /// Lk×d keys.
    pub k: &'a [f64],
    /// Lk×dv values.
    pub v: &'a [f64],
    /// Query/key width d.
    pub d: usize,
    /// Value width dv.
    pub dv: usize,
}

/// Exact softmax attention over some [`Qkv`], as [`softmax`] gives it: the output and the
/// weights it was summed with. Kept together because the bounds around it
/// ([`spread_bound`], [`lemma2_std`]) read both.
#[derive(Debug, Clone)]
pub struct Exact {
    /// Lq×dv outputs (rows with no visible key: 0).
    pub out: Vec<f64>,
    /// Lq×Lk: the exact weights pᵢⱼ, 0 where invisible.
    pub weights: Vec<f64>,
}

/// Exact softmax attention `softmax(τ·q·kᵀ)·v` over `x` (row-major; rows with no visible
/// key: 0) and, per query row, the exact weights.
pub fn softmax(x: Qkv<'_>, tau: f64, causal: bool, mask: Option<&[bool]>) -> Exact {
    let Qkv { q, k, v, d, dv } = x;
    let (lq, lk) = (q.len() / d, k.len() / d);
    let (mut out, mut p) = (vec![0.0; lq * dv], vec![0.0; lq * lk]);
    for i in 0..lq {
        let logits: Vec<(usize, f64)> = (0..lk)
            .filter(|&j| visible(i, j, causal, mask))
            .map(|j| {
                let dot: f64 = (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum();
                (j, tau * dot)
            })
            .collect();
        let Some(top) = logits.iter().map(|x| x.1).reduce(f64::max) else {
            continue;
        };
        let z: f64 = logits.iter().map(|(_, l)| (l - top).exp()).sum();
        for &(j, l) in &logits {
            p[i * lk + j] = (l - top).exp() / z;
            for c in 0..dv {
                out[i * dv + c] += p[i * lk + j] * v[j * dv + c];
            }
        }
    }
    Exact { out, weights: p }
}

/// Per output element, the bound `(e^{ΔL} − 1)·Σⱼ pⱼ|vⱼ − E|` on |FAVOR+ − softmax| for
/// these features (module docs), from the reference's ln aᵢⱼ and `exact`, [`softmax`] over
/// the same `x` and `tau`.
pub fn spread_bound(r: &Reference, exact: &Exact, x: Qkv<'_>, tau: f64) -> Vec<f64> {
    let Qkv { q, k, v, d, dv } = x;
    let (exact, p) = (&exact.out, &exact.weights);
    let (lq, lk) = (q.len() / d, k.len() / d);
    let mut out = vec![0.0; lq * dv];
    for i in 0..lq {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for j in 0..lk {
            if p[i * lk + j] == 0.0 && r.log_a[i * lk + j] == f64::NEG_INFINITY {
                continue;
            }
            let dot: f64 = (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum();
            let ln_rho = r.log_a[i * lk + j] - tau * dot;
            lo = lo.min(ln_rho);
            hi = hi.max(ln_rho);
        }
        if lo > hi {
            continue;
        }
        // An estimate that underflowed to 0 where softmax's weight does not (ln ρ = −∞)
        // leaves the spread unbounded: claim nothing (∞, not ∞·0 = NaN).
        let factor = (hi - lo).exp_m1();
        for c in 0..dv {
            let e = exact[i * dv + c];
            let spread: f64 = (0..lk)
                .map(|j| p[i * lk + j] * (v[j * dv + c] - e).abs())
                .sum();
            out[i * dv + c] = if factor.is_finite() {
                factor * spread
            } else {
                f64::INFINITY
            };
        }
    }
    out
}

/// Per output element of exact softmax attention, a first-order bound on the standard
/// deviation of FAVOR+'s estimate of it with `m` iid projection rows under the positive
/// softmax map `kind` (SM+ or SMhyp+), for inputs `x` scaled by `s` (softmax temperature
/// s²). `exact` is [`softmax`] over the same `x`, `causal` and `mask`.
///
/// Derivation: write Âⱼ = Aⱼ(1 + εⱼ) for the estimated kernel values of one query. To first
/// order the normalised output moves by Σⱼ pⱼ εⱼ (vⱼ − out), so by Minkowski's inequality its
/// standard deviation is at most sⱼ = Σⱼ pⱼ σⱼ |vⱼ − out| with σⱼ² = MSE/SM² from Lemma 2 (iid
/// rows; orthogonal rows only lower it, paper Thm 2):
/// SM+: σ² = e^{|z|²}(1 − e^{−|z|²})/m, SMhyp+: ½(1 − e^{−|z|²}) times that, z = q' + k'.
pub fn lemma2_std(
    exact: &Exact,
    x: Qkv<'_>,
    s: f64,
    m: usize,
    kind: MapKind,
    causal: bool,
    mask: Option<&[bool]>,
) -> Vec<f64> {
    assert!(kind.positive_softmax());
    let Qkv { q, k, v, d, dv } = x;
    let (out, p) = (&exact.out, &exact.weights);
    let (lq, lk) = (q.len() / d, k.len() / d);
    let mut std = vec![0.0; lq * dv];
    for i in 0..lq {
        let qi = &q[i * d..(i + 1) * d];
        let vis: Vec<usize> = (0..lk).filter(|&j| visible(i, j, causal, mask)).collect();
        let sigma: Vec<f64> = vis
            .iter()
            .map(|&j| {
                let z2: f64 = (0..d).map(|c| ((qi[c] + k[j * d + c]) * s).powi(2)).sum();
                let mut var = z2.exp() * (-(-z2).exp_m1()) / m as f64;
                if kind == MapKind::Hyperbolic {
                    var *= 0.5 * (-(-z2).exp_m1());
                }
                var.sqrt()
            })
            .collect();
        for c in 0..dv {
            let o = out[i * dv + c];
            std[i * dv + c] = vis
                .iter()
                .zip(&sigma)
                .map(|(&j, sg)| p[i * lk + j] * sg * (v[j * dv + c] - o).abs())
                .sum();
        }
    }
    std
}
