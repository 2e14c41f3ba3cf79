//! Calibrating a [`DataAwareSoftmax`](super::DataAwareSoftmax) map from one chunk of a head's
//! queries and keys: the pair moments, the optimal proposal, the draw.
//!
//! # The optimal proposal
//! With x, y after the data normaliser, z = x + y and one feature drawn from ω ~ N(0, Σ_p),
//! the importance-weighted estimate of `exp(x·y)` is
//! `X = [N(ω; 0, I)/N(ω; 0, Σ_p)]·exp(ωᵀz − |x|²/2 − |y|²/2)` (the product of the two sides
//! of [`DataAwareSoftmax`](super::DataAwareSoftmax)), and the Gaussian integral gives its
//! second moment, for `Σ_p ≻ I/2`:
//!
//! `E[X²] = det(Σ_p)^{1/2} det(2I − Σ_p⁻¹)^{−1/2} exp(2zᵀ(2I − Σ_p⁻¹)⁻¹z − |x|² − |y|²)`.
//!
//! (`N²/N_p = (2π)^{−d/2} det(Σ_p)^{1/2} exp(−½ωᵀ(2I − Σ_p⁻¹)ω)`, and
//! `∫ (2π)^{−d/2} exp(−½ωᵀAω + 2ωᵀz) dω = det(A)^{−1/2} exp(2zᵀA⁻¹z)`.) Its log relative to
//! `exp(2x·y)` is `½ ln det Σ_p − ½ ln det(2I − Σ_p⁻¹) + zᵀ[2(2I − Σ_p⁻¹)⁻¹ − I]z`: linear in
//! `zzᵀ`, so its mean over the calibration pairs depends on the data only through the second
//! moment `S = mean zzᵀ` (FAVOR++'s criterion, the mean log second moment, which is what makes
//! GERF's A* a closed form). With Σ_p sharing S's eigenvectors, eigenvalue λ of S and σ² of
//! Σ_p in each direction, the criterion separates into
//! `f(σ²) = ln σ² − ½ ln(2σ² − 1) + λ/(2σ² − 1)`, and `f′ = 0` is
//! `2σ⁴ − (3 + 2λ)σ² + 1 = 0`, so
//!
//! `σ²(λ) = [3 + 2λ + √((3 + 2λ)² − 8)]/4`
//!
//! ([`optimal_proposal_variance`]; the root above ½). This is exactly `1 − 4A*` of GERF at
//! ρ = λ — GERF is the isotropic proposal `Σ_p = (1 − 4A)I` — so "per eigen-direction the
//! GERF-optimal scale". For small λ it is `1 + 2λ + O(λ²)`; for large λ, `λ + 3/2 + O(1/λ)`
//! (the linearisation `1 + 2λ` widens the proposal by a factor of up to 2 beyond this
//! optimum). Every σ² ≥ 1, so the variance is always finite.
//!
//! The criterion is a choice: it weighs every pair's *relative* error alike. The attention
//! output's error weighs pairs with large `|z|` (large logits) more, and those favour wider
//! proposals: on the synthetic anisotropic heads of `tests/calibrated.rs` the linearised
//! `1 + 2λ` gave about 20 % lower output MSE than this optimum (both 2.4–4.3× below plain
//! FAVOR+). A criterion weighted by attention mass is left for later.
//!
//! # The key shift
//! Shifting every key by μ leaves attention unchanged (see `DataAwareSoftmax`) and moves z to
//! `x + y − μ'` (μ' = d^(−1/4)μ). The criterion's matrix `2(2I − Σ_p⁻¹)⁻¹ − I` is positive
//! definite (eigenvalues `1/(2σ² − 1)`), so the criterion is monotone in S, whose smallest
//! value over μ is the covariance, at `μ = mean over the pairs of (qᵢ + kⱼ)`. That is the
//! "weighted mean": `μ = Σᵢ nᵢqᵢ/P + Σⱼ n′ⱼkⱼ/P`, each query weighted by the number nᵢ of keys
//! it meets in the pair set, each key by the number n′ⱼ of queries that meet it, P pairs in
//! all. Weighting pairs by attention mass instead was not chosen: the criterion is a relative
//! error per pair, and heavy pairs of hybrid attention are the ones the window takes exactly.

use super::jacobi::symmetric_eigen;
use crate::error::{Result, check};
use crate::{Float, HybridShape, ProjectionKind};

/// The largest query or key entry (in f64) [`pair_moments`] and [`calibrate`] accept: every
/// sum of products they form then stays far below f64's range. Larger entries are
/// [`Error::OutOfRange`](crate::Error::OutOfRange).
const MAX_CALIBRATION_INPUT: f64 = 1e100;

/// How to calibrate a data-aware map ([`calibrate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// m, the number of features to draw.
    pub features: usize,
    /// The seed of the projection g (as [`projection`](crate::projection)'s).
    pub seed: u64,
    /// How g is drawn: [`ProjectionKind::Orthogonal`] (default; rows orthogonal, χ norms) or
    /// any other kind whose rows are marginally N(0, I_d) (`Iid`, `Simplex`), so the map
    /// stays unbiased. `Orthogonal(RowNorms::SqrtD)` and `Sorf` rows are not Gaussian: the
    /// density ratio then no longer corrects them, and the estimate is biased.
    pub projection: ProjectionKind,
    /// `Some`: the pairs hybrid attention with this shape does *not* take exactly — key j of
    /// query i outside the window and not a sink (and j ≤ i when causal) — are the pairs
    /// the moments are fitted on. When the shape leaves no such pair (a window or sinks that
    /// cover the chunk), calibration falls back to all visible pairs. `None`: all visible
    /// pairs.
    pub shape: Option<HybridShape>,
    /// Causal attention: only pairs with j ≤ i are visible.
    pub causal: bool,
}

impl Calibration {
    /// `features` features from `seed`, orthogonal g, all pairs of a bidirectional chunk.
    pub fn new(features: usize, seed: u64) -> Self {
        Self {
            features,
            seed,
            projection: ProjectionKind::default(),
            shape: None,
            causal: false,
        }
    }
}

impl Default for Calibration {
    /// 256 features (favor's benchmark workload's m), seed 0, orthogonal g, all pairs of a
    /// bidirectional chunk.
    fn default() -> Self {
        Self::new(256, 0)
    }
}

/// The buffers a data-aware map is drawn into ([`calibrate`]); a
/// [`DataAwareSoftmax`](super::DataAwareSoftmax) then borrows them.
#[derive(Debug)]
pub struct DataAwareParts<'a, T> {
    /// ω, `features × dim` (at least; the first `features·dim` elements are written).
    pub omega: &'a mut [T],
    /// The offsets cᵣ (at least `features`).
    pub offsets: &'a mut [T],
    /// The key shift μ (at least `dim`), in raw key units.
    pub mu: &'a mut [T],
}

/// The variance σ² of the proposal, in an eigen-direction of the data's second moment
/// (of z = x + y − μ, after the data normaliser) with eigenvalue λ, that minimises the mean
/// log second moment of the importance-weighted softmax estimator:
/// `σ² = [3 + 2λ + √((3 + 2λ)² − 8)]/4` (module docs of `calibrate`, derivation). Equals
/// `1 − 4·`[`gerf_optimal_a`](crate::gerf_optimal_a)`(λ)`; 1 at λ = 0, `1 + 2λ + O(λ²)`
/// near it, `λ + 3/2 + O(1/λ)` for large λ. NaN for a negative or non-finite λ.
pub fn optimal_proposal_variance(lambda: f64) -> f64 {
    if !(lambda.is_finite() && lambda >= 0.0) {
        return f64::NAN;
    }
    // √((3 + 2λ)² − 8) as t·√(1 − 8/t²): no overflow for large λ, no cancellation (t ≥ 3).
    let t = 3.0 + 2.0 * lambda;
    t * (1.0 + libm::sqrt(1.0 - 8.0 / (t * t))) / 4.0
}

/// Elements of f64 scratch [`pair_moments`] needs for `rows` query and key rows of `dim`.
pub fn pair_moments_scratch_len(rows: usize, dim: usize) -> Result<usize> {
    let r1 = check::add(check::nonzero("rows", rows)?, 1)?;
    let d1 = check::add(check::nonzero("dim", dim)?, 1)?;
    check::add(check::mul(r1, d1)?, check::mul(2, dim)?)
}

/// Elements of f64 scratch [`draw_data_aware`] needs for `features` features of `dim`.
pub fn draw_data_aware_scratch_len(dim: usize, features: usize) -> Result<usize> {
    let g = check::mul(check::nonzero("features", features)?, dim)?;
    let dd = check::mul(check::nonzero("dim", dim)?, dim)?;
    check::add(check::add(g, check::mul(2, dd)?)?, check::mul(3, dim)?)
}

/// Elements of f64 scratch [`calibrate`] needs for `rows` query and key rows of `dim` and
/// `features` features.
pub fn calibrate_scratch_len(rows: usize, dim: usize, features: usize) -> Result<usize> {
    let pairs = pair_moments_scratch_len(rows, dim)?;
    let draw = draw_data_aware_scratch_len(dim, features)?;
    let head = check::add(dim, check::mul(dim, dim)?)?;
    check::add(head, pairs.max(draw))
}

/// Query i's keys in the pair set, as two half-open ranges (either may be empty).
fn key_ranges(
    i: usize,
    rows: usize,
    shape: Option<HybridShape>,
    causal: bool,
) -> [(usize, usize); 2] {
    const EMPTY: (usize, usize) = (0, 0);
    let Some(HybridShape { window, sinks }) = shape else {
        return [if causal { (0, i + 1) } else { (0, rows) }, EMPTY];
    };
    let s0 = sinks.min(rows);
    // Keys before the window: s0 ≤ j < i − w (none when i ≤ w).
    let before = (s0, i.saturating_sub(window).max(s0));
    if causal {
        return [before, EMPTY];
    }
    // Keys after it: i + w < j < rows.
    let start = i.saturating_add(window).saturating_add(1).max(s0).min(rows);
    [before, (start, rows)]
}

/// The number of pairs (as f64: exact below 2⁵³) of the set.
fn pair_count(rows: usize, shape: Option<HybridShape>, causal: bool) -> f64 {
    (0..rows)
        .flat_map(|i| key_ranges(i, rows, shape, causal))
        .map(|(s, e)| (e - s) as f64)
        .sum()
}

/// Checks a chunk of queries and keys (same number of rows of `dim`): returns the rows.
fn check_chunk<T: Float>(q: &[T], k: &[T], dim: usize) -> Result<usize> {
    check::nonzero("dim", dim)?;
    let rows = check::nonzero("rows", q.len() / dim)?;
    let limit = T::from_f64(MAX_CALIBRATION_INPUT.min(T::max_value().to_f64()));
    for (what, x) in [("q", q), ("k", k)] {
        check::exact(what, x, check::mul(rows, dim)?)?;
        let top = check::max_abs(what, x, dim)?;
        check::within(what, x, dim, top, limit)?;
    }
    Ok(rows)
}

/// The moments a data-aware map is fitted on, from a chunk of one head's queries `q` and
/// keys `k` (the same `rows` positions, rows of `dim`, row-major), over the pair set of
/// `cal.shape` and `cal.causal` (the other fields are not read):
///
/// - `mean` (d): `μ = Σ_{(i,j)∈P} (qᵢ + kⱼ)/|P|`, raw units: the key shift (module docs);
/// - `second_moment` (d×d, row-major): `S = Σ_{(i,j)∈P} zᵢⱼzᵢⱼᵀ/|P|` with
///   `zᵢⱼ = d^(−1/4)(qᵢ + kⱼ − μ)` — the covariance of the normalised pair sums.
///
/// O(rows·d²), not O(rows²·d²): `Σ (aᵢ + bⱼ)(aᵢ + bⱼ)ᵀ` splits into `Σᵢ nᵢaᵢaᵢᵀ + Σⱼ n′ⱼbⱼbⱼᵀ +
/// Σᵢ (aᵢBᵢᵀ + Bᵢaᵢᵀ)` (nᵢ, n′ⱼ: the pairs each row is in; Bᵢ: the sum of query i's keys,
/// from prefix sums over the key ranges), with queries and keys first centred by their
/// weighted means so the sums do not cancel. Returns `true` when the requested pair set was
/// used and `false` when it was empty and all visible pairs were used instead.
///
/// Errors: zero `dim` or rows, ragged or unequal `q`/`k`, non-finite entries, entries above
/// 10¹⁰⁰ (`OutOfRange`), short outputs or scratch
/// ([`pair_moments_scratch_len`]). Only scratch and the two outputs are written.
pub fn pair_moments<T: Float>(
    q: &[T],
    k: &[T],
    dim: usize,
    cal: &Calibration,
    scratch: &mut [f64],
    mean: &mut [f64],
    second_moment: &mut [f64],
) -> Result<bool> {
    let rows = check_chunk(q, k, dim)?;
    let d = dim;
    check::room("mean", mean, d)?;
    check::room("second_moment", second_moment, check::mul(d, d)?)?;
    check::room("scratch", scratch, pair_moments_scratch_len(rows, d)?)?;
    let (mean, moment) = (&mut mean[..d], &mut second_moment[..d * d]);
    let (mut shape, causal) = (cal.shape, cal.causal);
    let mut pairs = pair_count(rows, shape, causal);
    let requested = pairs > 0.0;
    if !requested {
        shape = None;
        pairs = pair_count(rows, shape, causal);
    }
    let (prefix, rest) = scratch.split_at_mut((rows + 1) * d);
    let (counts, rest) = rest.split_at_mut(rows + 1);
    let (a, rest) = rest.split_at_mut(d);
    let bsum = &mut rest[..d];
    let f = |x: T| x.to_f64();

    // n′ⱼ through a difference array over the key ranges; nᵢ from the ranges directly.
    counts.fill(0.0);
    for i in 0..rows {
        for (s, e) in key_ranges(i, rows, shape, causal) {
            if s < e {
                counts[s] += 1.0;
                counts[e] -= 1.0;
            }
        }
    }
    let mut run = 0.0;
    for c in counts.iter_mut() {
        run += *c;
        *c = run;
    }
    let n_i = |i: usize| -> f64 {
        key_ranges(i, rows, shape, causal)
            .iter()
            .map(|&(s, e)| e.saturating_sub(s) as f64)
            .sum()
    };

    // The weighted means μ_q (in `a`) and μ_k (in `bsum`); μ = μ_q + μ_k.
    a.fill(0.0);
    bsum.fill(0.0);
    for i in 0..rows {
        let (ni, nj) = (n_i(i), counts[i]);
        for c in 0..d {
            a[c] += ni * f(q[i * d + c]);
            bsum[c] += nj * f(k[i * d + c]);
        }
    }
    for c in 0..d {
        a[c] /= pairs;
        bsum[c] /= pairs;
        mean[c] = a[c] + bsum[c];
    }
    // Prefix sums of the centred keys bⱼ = kⱼ − μ_k; the key term Σⱼ n′ⱼbⱼbⱼᵀ on the way.
    moment.fill(0.0);
    prefix[..d].fill(0.0);
    for j in 0..rows {
        let (done, next) = prefix.split_at_mut((j + 1) * d);
        let (prev, next) = (&done[j * d..], &mut next[..d]);
        for c in 0..d {
            next[c] = f(k[j * d + c]) - bsum[c];
        }
        let nj = counts[j];
        if nj > 0.0 {
            for r in 0..d {
                let w = nj * next[r];
                for c in 0..d {
                    moment[r * d + c] += w * next[c];
                }
            }
        }
        for c in 0..d {
            next[c] += prev[c];
        }
    }
    // The query terms: nᵢaᵢaᵢᵀ + aᵢBᵢᵀ + Bᵢaᵢᵀ with aᵢ = qᵢ − μ_q, Bᵢ = Σ_{j∈J(i)} bⱼ
    // (`bsum` now holds Bᵢ: μ_k is in the prefix sums already).
    for i in 0..rows {
        let ranges = key_ranges(i, rows, shape, causal);
        let ni = n_i(i);
        if ni == 0.0 {
            continue;
        }
        for c in 0..d {
            let mut s = 0.0;
            for &(lo, hi) in &ranges {
                if lo < hi {
                    s += prefix[hi * d + c] - prefix[lo * d + c];
                }
            }
            bsum[c] = s;
        }
        for r in 0..d {
            let ar = f(q[i * d + r]) - a[r];
            for c in 0..d {
                let ac = f(q[i * d + c]) - a[c];
                moment[r * d + c] += ni * ar * ac + ar * bsum[c] + bsum[r] * ac;
            }
        }
    }
    let norm = 1.0 / (pairs * libm::sqrt(d as f64));
    for v in moment.iter_mut() {
        *v *= norm;
    }
    Ok(requested)
}

/// Draws a data-aware map for data whose normalised pair sums have the second moment
/// `second_moment` (d×d, symmetric positive semi-definite, e.g. from [`pair_moments`]):
/// eigendecomposes it ([`symmetric_eigen`](crate::symmetric_eigen)), takes per
/// eigen-direction the proposal variance [`optimal_proposal_variance`]`(λ)` (negative
/// eigenvalues, from rounding, count as 0), draws g (`cal.features × d`, `cal.projection`,
/// `cal.seed`) and writes `ωᵣ = Σ_p^{1/2} gᵣ` (the symmetric root) into `omega` and
/// `cᵣ = (ωᵣᵀΣ_p⁻¹ωᵣ − |ωᵣ|² + ln det Σ_p)/4` into `offsets` (`cal.shape` and `cal.causal`
/// are not read). The offsets are computed from ωᵣ as rounded to `T`, so the map is
/// importance-weighted for the rows it actually holds. Each ωᵣ is marginally N(0, Σ_p) when gᵣ
/// is marginally N(0, I); with orthogonal g the rows are `Σ_p⁻¹`-orthogonal within a block.
///
/// Errors: zero `dim` or features, a `second_moment` of the wrong length or non-finite,
/// short outputs or scratch ([`draw_data_aware_scratch_len`]), the projection kind's own
/// conditions, and a map that would not fit `T` (`OutOfRange`, "omega"). Nothing but scratch is
/// written unless the call succeeds.
pub fn draw_data_aware<T: Float>(
    second_moment: &[f64],
    dim: usize,
    cal: &Calibration,
    scratch: &mut [f64],
    omega: &mut [T],
    offsets: &mut [T],
) -> Result<()> {
    let (d, m) = (check::nonzero("dim", dim)?, cal.features);
    let need = draw_data_aware_scratch_len(d, m)?;
    check::exact("second_moment", second_moment, d * d)?;
    check::finite("second_moment", second_moment, d)?;
    check::room("omega", omega, m * d)?;
    check::room("offsets", offsets, m)?;
    check::room("scratch", scratch, need)?;
    let (g, rest) = scratch.split_at_mut(m * d);
    let (a, rest) = rest.split_at_mut(d * d);
    let (v, rest) = rest.split_at_mut(d * d);
    let (s, rest) = rest.split_at_mut(d);
    let (t, rest) = rest.split_at_mut(d);
    let w = &mut rest[..d];
    crate::projection(cal.projection, cal.seed, m, d, g)?;
    a.copy_from_slice(second_moment);
    symmetric_eigen(a, d, s, v)?;
    let mut log_det = 0.0;
    for (r, sk) in s.iter_mut().enumerate() {
        *sk = optimal_proposal_variance(sk.max(0.0));
        if !sk.is_finite() {
            return Err(crate::Error::OutOfRange {
                what: "second_moment",
                row: r,
            });
        }
        log_det += libm::log(*sk);
    }
    let (g, v, s) = (&*g, &*v, &*s);
    // One row: ω (rounded to T) into `w`, its offset returned.
    let mut row = |r: usize, w: &mut [f64]| -> f64 {
        let gr = &g[r * d..(r + 1) * d];
        for (k, tk) in t.iter_mut().enumerate() {
            *tk = dot(&v[k * d..(k + 1) * d], gr) * libm::sqrt(s[k]);
        }
        w.fill(0.0);
        for (k, &tk) in t.iter().enumerate() {
            for (wc, &vc) in w.iter_mut().zip(&v[k * d..(k + 1) * d]) {
                *wc += tk * vc;
            }
        }
        for wc in w.iter_mut() {
            *wc = T::from_f64(*wc).to_f64();
        }
        let mut quad = 0.0;
        for k in 0..d {
            let p = dot(&v[k * d..(k + 1) * d], w);
            quad += p * p / s[k];
        }
        (quad - dot(w, w) + log_det) / 4.0
    };
    // First pass: everything fits T (the map's own conditions), before anything is written.
    let limit = T::max_value().to_f64() / 4.0;
    for r in 0..m {
        let c = row(r, w);
        let fits = w.iter().all(|x| T::from_f64(*x).is_finite()) && libm::fabs(c) <= limit;
        if !fits {
            return Err(crate::Error::OutOfRange {
                what: "omega",
                row: r,
            });
        }
    }
    for r in 0..m {
        offsets[r] = T::from_f64(row(r, w));
        for (o, &x) in omega[r * d..(r + 1) * d].iter_mut().zip(w.iter()) {
            *o = T::from_f64(x);
        }
    }
    Ok(())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Calibrates a data-aware map ([`DataAwareSoftmax`](super::DataAwareSoftmax)) for one head
/// from a chunk of its queries `q` and keys `k` (the same `rows` positions, rows of `dim`,
/// row-major, as the model produces them — before the data normaliser, which the map
/// applies): [`pair_moments`] over the pair set of `cal` (for hybrid attention, the pairs
/// outside the window and the sinks), then [`draw_data_aware`] with `cal.features`
/// features from `cal.seed`. Writes ω, the offsets and the key shift μ into `out`;
/// deterministic given the inputs and `cal`. All arithmetic is f64, in `scratch`
/// ([`calibrate_scratch_len`]`(rows, dim, features)` elements).
///
/// The caller shifts every key by μ ([`DataAwareSoftmax::shift_keys`](super::DataAwareSoftmax::shift_keys),
/// or folded into the key bias) before attention; see [`DataAwareSoftmax`](super::DataAwareSoftmax).
///
/// Errors: as [`pair_moments`] and [`draw_data_aware`], and a μ beyond `T`'s range
/// (`OutOfRange`, "mu"). Only scratch is written unless the call succeeds.
pub fn calibrate<T: Float>(
    q: &[T],
    k: &[T],
    dim: usize,
    cal: &Calibration,
    scratch: &mut [f64],
    out: DataAwareParts<'_, T>,
) -> Result<()> {
    let rows = check_chunk(q, k, dim)?;
    let (d, m) = (dim, check::nonzero("features", cal.features)?);
    check::room("omega", out.omega, check::mul(m, d)?)?;
    check::room("offsets", out.offsets, m)?;
    check::room("mu", out.mu, d)?;
    check::room("scratch", scratch, calibrate_scratch_len(rows, d, m)?)?;
    let (mean, rest) = scratch.split_at_mut(d);
    let (moment, rest) = rest.split_at_mut(d * d);
    pair_moments(q, k, d, cal, rest, mean, moment)?;
    if let Some(c) = mean.iter().position(|x| !T::from_f64(*x).is_finite()) {
        return Err(crate::Error::OutOfRange { what: "mu", row: c });
    }
    draw_data_aware(moment, d, cal, rest, out.omega, out.offsets)?;
    for (o, &x) in out.mu[..d].iter_mut().zip(mean.iter()) {
        *o = T::from_f64(x);
    }
    Ok(())
}
