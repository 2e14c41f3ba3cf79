//! Oracles for data-aware (importance-weighted) positive random features, in f64, written
//! from the definitions and never running favor code.
//!
//! The map: `ln φᵣ(x) = ωᵣ·x' − |x'|²/2 + cᵣ − ln √m` (x' = s·x, s the data scale) with
//! `cᵣ = ½ ln [N(ωᵣ; 0, I)/N(ωᵣ; 0, Σ)]`, the Gaussian log-densities evaluated through a
//! Cholesky factor of Σ ([`half_log_density_ratio`]).
//!
//! Its moments: with ω ~ N(0, Σ), one feature gives the estimate
//! `Y = [N(ω; 0, I)/N(ω; 0, Σ)]·exp(ωᵀz − (|x|² + |y|²)/2)` of `exp(x·y)` (z = x + y). For
//! p ≥ 1, `Yᵖ·N(ω; 0, Σ) = (2π)^{−d/2} det(Σ)^{(p−1)/2} exp(−½ωᵀA_pω + pωᵀz)·e^{−p(|x|²+|y|²)/2}`
//! with `A_p = pI − (p − 1)Σ⁻¹`, and the Gaussian integral
//! `∫ (2π)^{−d/2} exp(−½ωᵀAω + bᵀω) dω = det(A)^{−1/2} exp(½bᵀA⁻¹b)` (A ≻ 0) gives
//!
//! `ln E[Yᵖ] = ((p − 1)/2)·ln det Σ − ½ ln det A_p + (p²/2)·zᵀA_p⁻¹z − p(|x|² + |y|²)/2`,
//!
//! finite when `A_p ≻ 0`, i.e. every eigenvalue of Σ above `(p − 1)/p`. p = 1 gives x·y
//! (unbiased for every Σ), p = 2 the second moment; Σ = (1 − 4A)·I is GERF
//! ([`crate::gerf::log_moment`], an independent cross-check in this module's tests).

use crate::hybrid::Hybrid;

/// The lower Cholesky factor L (row-major n×n, `A = LLᵀ`) of a symmetric positive definite
/// `a`, or `None` when a pivot is not positive.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let p = a[i * n + i] - s;
                if p <= 0.0 || !p.is_finite() {
                    return None;
                }
                l[i * n + i] = p.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// `ln det A` from its Cholesky factor.
fn log_det(l: &[f64], n: usize) -> f64 {
    (0..n).map(|i| 2.0 * l[i * n + i].ln()).sum()
}

/// `xᵀA⁻¹x` from A's Cholesky factor: `|L⁻¹x|²` by forward substitution.
pub fn quad_inv(l: &[f64], n: usize, x: &[f64]) -> f64 {
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (x[i] - s) / l[i * n + i];
    }
    y.iter().map(|v| v * v).sum()
}

/// A⁻¹ of a symmetric positive definite matrix, column by column through its Cholesky
/// factor (`None` when it is not positive definite).
pub fn inverse(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, n)?;
    let mut inv = vec![0.0; n * n];
    for c in 0..n {
        // Solve L y = e_c, then Lᵀ x = y.
        let mut y = vec![0.0; n];
        for i in 0..n {
            let e = if i == c { 1.0 } else { 0.0 };
            let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
            y[i] = (e - s) / l[i * n + i];
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
            x[i] = (y[i] - s) / l[i * n + i];
        }
        for r in 0..n {
            inv[r * n + c] = x[r];
        }
    }
    Some(inv)
}

/// `ln N(ω; 0, Σ)`, the Gaussian log-density, through Σ's Cholesky factor.
pub fn log_density(omega: &[f64], sigma: &[f64]) -> f64 {
    let n = omega.len();
    let l = cholesky(sigma, n).expect("Σ positive definite");
    -0.5 * quad_inv(&l, n, omega)
        - 0.5 * log_det(&l, n)
        - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln()
}

/// `½ ln [N(ω; 0, I)/N(ω; 0, Σ)]`: the offset c of a feature ω drawn from N(0, Σ).
pub fn half_log_density_ratio(omega: &[f64], sigma: &[f64]) -> f64 {
    let n = omega.len();
    let mut id = vec![0.0; n * n];
    for i in 0..n {
        id[i * n + i] = 1.0;
    }
    0.5 * (log_density(omega, &id) - log_density(omega, sigma))
}

/// A draw from N(0, Σ) from a standard normal vector g: `Lg`, L the Cholesky factor (any
/// square root gives the same distribution).
pub fn proposal_draw(sigma: &[f64], g: &[f64]) -> Vec<f64> {
    let n = g.len();
    let l = cholesky(sigma, n).expect("Σ positive definite");
    (0..n)
        .map(|i| (0..=i).map(|k| l[i * n + k] * g[k]).sum())
        .collect()
}

/// The log-features `ln φᵣ(x)` of every row of `x` (rows of d) under the map (ω m×d,
/// offsets c) with data scale `s`: row-major rows×m.
pub fn log_features(omega: &[f64], offsets: &[f64], x: &[f64], d: usize, s: f64) -> Vec<f64> {
    let m = offsets.len();
    let ln_sqrt_m = (m as f64).sqrt().ln();
    let mut out = Vec::with_capacity(x.len() / d * m);
    for row in x.chunks(d) {
        let xs: Vec<f64> = row.iter().map(|v| v * s).collect();
        let half = xs.iter().map(|v| v * v).sum::<f64>() / 2.0;
        for (w, c) in omega.chunks(d).zip(offsets) {
            let u: f64 = w.iter().zip(&xs).map(|(a, b)| a * b).sum();
            out.push(u - half + c - ln_sqrt_m);
        }
    }
    out
}

/// `ln E[Yᵖ]` of the one-feature estimate with proposal Σ (module docs) for inputs x, y
/// (already scaled); NaN where the moment is infinite (`A_p` not positive definite).
pub fn log_moment(x: &[f64], y: &[f64], sigma: &[f64], p: u32) -> f64 {
    let n = x.len();
    let pf = f64::from(p);
    let Some(ls) = cholesky(sigma, n) else {
        return f64::NAN;
    };
    let inv = inverse(sigma, n).expect("Σ positive definite");
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = if i == j { pf } else { 0.0 } - (pf - 1.0) * inv[i * n + j];
        }
    }
    let Some(la) = cholesky(&a, n) else {
        return f64::NAN;
    };
    let z: Vec<f64> = x.iter().zip(y).map(|(a, b)| a + b).collect();
    let sq = |v: &[f64]| v.iter().map(|e| e * e).sum::<f64>();
    (pf - 1.0) / 2.0 * log_det(&ls, n) - 0.5 * log_det(&la, n)
        + pf * pf / 2.0 * quad_inv(&la, n, &z)
        - pf * (sq(x) + sq(y)) / 2.0
}

/// The pair set calibration fits on, from its definition: key j of query i is visible
/// (`j ≤ i` when causal) and, with a hybrid shape `(window, sinks)`, not in the query's exact
/// set (not a sink, not within the window).
pub fn in_pair_set(i: usize, j: usize, causal: bool, shape: Option<(usize, usize)>) -> bool {
    let visible = !causal || j <= i;
    let far = match shape {
        None => true,
        Some((window, sinks)) => !Hybrid {
            window,
            sinks,
            causal,
        }
        .exact(i, j),
    };
    visible && far
}

/// Brute force over all pairs (O(L²·d²)): the mean μ of `qᵢ + kⱼ` over the pairs with
/// `keep(i, j)` and the second moment of `(qᵢ + kⱼ − μ)·s` (s the data scale), with the
/// number of pairs. Rows of d; q and k the same number of rows.
pub fn pair_moments_brute(
    q: &[f64],
    k: &[f64],
    d: usize,
    s: f64,
    keep: impl Fn(usize, usize) -> bool,
) -> (Vec<f64>, Vec<f64>, usize) {
    let l = q.len() / d;
    let mut mu = vec![0.0; d];
    let mut n = 0usize;
    for i in 0..l {
        for j in 0..l {
            if keep(i, j) {
                n += 1;
                for c in 0..d {
                    mu[c] += q[i * d + c] + k[j * d + c];
                }
            }
        }
    }
    mu.iter_mut().for_each(|v| *v /= n as f64);
    let mut m2 = vec![0.0; d * d];
    for i in 0..l {
        for j in 0..l {
            if keep(i, j) {
                let z: Vec<f64> = (0..d)
                    .map(|c| (q[i * d + c] + k[j * d + c] - mu[c]) * s)
                    .collect();
                for r in 0..d {
                    for c in 0..d {
                        m2[r * d + c] += z[r] * z[c];
                    }
                }
            }
        }
    }
    m2.iter_mut().for_each(|v| *v /= n as f64);
    (mu, m2, n)
}

/// The proposal variance σ² (isotropic, d = 1) minimising the mean over the 1-d pairs
/// `(xᵢ, yᵢ)` of the log relative second moment `ln E[Y²] − 2xᵢyᵢ` ([`log_moment`], p = 2),
/// by golden-section search over `(1/2, hi]`: the numeric oracle for the closed-form
/// optimal proposal variance.
pub fn argmin_mean_log_second_moment(pairs: &[(f64, f64)], hi: f64) -> f64 {
    let f = |s2: f64| {
        pairs
            .iter()
            .map(|&(x, y)| log_moment(&[x], &[y], &[s2], 2) - 2.0 * x * y)
            .sum::<f64>()
    };
    let (mut a, mut b) = (0.5 + 1e-9, hi);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..300 {
        let (c, e) = (b - g * (b - a), a + g * (b - a));
        if f(c) < f(e) {
            b = e;
        } else {
            a = c;
        }
    }
    (a + b) / 2.0
}
