//! Closed-form moments of the GERF (FAVOR++) estimator, written from the definition, not
//! from favor-core's code.
//!
//! One feature `f(w, x) = D·exp(A|w|² + B w·x − |x|²/2)`, `B = √(1 − 4A)`,
//! `D = (1 − 4A)^{d/4}`, `w ~ N(0, I_d)`; the estimate of `exp(x·y)` from it is
//! `Y = f(w, x)·f(w, y)`. With z = x + y, `Yᵖ = D^{2p} exp(2pA|w|² + pB w·z) e^{−p(|x|²+|y|²)/2}`
//! and the Gaussian integral `E[exp(c|w|² + b·w)] = (1 − 2c)^{−d/2} exp(|b|²/(2(1 − 2c)))`
//! (c < 1/2) give
//!
//! `ln E[Yᵖ] = (pd/2)·ln(1 − 4A) − (d/2)·ln(1 − 4pA) + p²(1 − 4A)|z|²/(2(1 − 4pA))
//!             − p(|x|² + |y|²)/2`,  for `A < 1/(4p)`.
//!
//! p = 1 gives `x·y` for every A (unbiased); p = 2 the second moment (finite for A < 1/8),
//! p = 4 what bounds the sampling error of an empirical second moment (A < 1/16).

/// `ln E[Yᵖ]` for inputs `x`, `y` (same length d) and parameter `a`; NaN where the moment is
/// infinite (`a ≥ 1/(4p)`).
pub fn log_moment(x: &[f64], y: &[f64], a: f64, p: u32) -> f64 {
    let (p, d) = (f64::from(p), x.len() as f64);
    if 4.0 * p * a >= 1.0 {
        return f64::NAN;
    }
    let sq = |v: &[f64]| v.iter().map(|e| e * e).sum::<f64>();
    let z2: f64 = x.iter().zip(y).map(|(a, b)| (a + b) * (a + b)).sum();
    p * d / 2.0 * (1.0 - 4.0 * a).ln() - d / 2.0 * (1.0 - 4.0 * p * a).ln()
        + p * p * (1.0 - 4.0 * a) * z2 / (2.0 * (1.0 - 4.0 * p * a))
        - p * (sq(x) + sq(y)) / 2.0
}

/// The A minimising `E[Y²]` for these inputs, by golden-section search of [`log_moment`]
/// (p = 2, strictly convex in A on (−∞, 1/8)) over `[lo, 1/8)`: the numeric oracle for the
/// closed form.
pub fn argmin_second_moment(x: &[f64], y: &[f64], lo: f64) -> f64 {
    let f = |a: f64| log_moment(x, y, a, 2);
    let (mut a, mut b) = (lo, 0.125 - 1e-9);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..200 {
        let (c, e) = (b - g * (b - a), a + g * (b - a));
        if f(c) < f(e) {
            b = e;
        } else {
            a = c;
        }
    }
    (a + b) / 2.0
}
