//! SADERF / FAVOR# (GERF on `Ψx` and `Ψ⁻¹y`, Ψ = diag(ψ)), written from the definition in
//! f64, not from favor-core's code.
//!
//! The objective the diagonal minimises is the sum over every (query, key) pair of
//! `|Ψxᵢ + Ψ⁻¹yⱼ|²`, summed here pair by pair; the closed-form minimiser
//! `ψₗ = (L_x Σⱼ y²ⱼₗ / (L_y Σᵢ x²ᵢₗ))^{1/4}` (for columns non-zero on both sides) and ρ
//! over the rescaled pairs are written directly from those sums. The estimator's moments are
//! GERF's ([`crate::gerf::log_moment`]) at the rescaled pair.

/// `Σᵢⱼ |Ψxᵢ + Ψ⁻¹yⱼ|²` over query rows `x` and key rows `y` (rows of `psi.len()`), pair by
/// pair.
pub fn pair_objective(x: &[f64], y: &[f64], psi: &[f64]) -> f64 {
    let d = psi.len();
    let mut total = 0.0;
    for xi in x.chunks_exact(d) {
        for yj in y.chunks_exact(d) {
            for l in 0..d {
                let s = psi[l] * xi[l] + yj[l] / psi[l];
                total += s * s;
            }
        }
    }
    total
}

/// The ψ minimising [`pair_objective`]: per column `(L_x Σⱼ y²ⱼₗ / (L_y Σᵢ x²ᵢₗ))^{1/4}`.
/// Only for columns non-zero on both sides (elsewhere the infimum is not attained).
pub fn optimal_psi(x: &[f64], y: &[f64], d: usize) -> Vec<f64> {
    let (lx, ly) = ((x.len() / d) as f64, (y.len() / d) as f64);
    (0..d)
        .map(|l| {
            let sx: f64 = x.chunks_exact(d).map(|r| r[l] * r[l]).sum();
            let sy: f64 = y.chunks_exact(d).map(|r| r[l] * r[l]).sum();
            (lx * sy / (ly * sx)).powf(0.25)
        })
        .collect()
}

/// `x` with every row multiplied (`inverse`: divided) by ψ entrywise.
pub fn rescale(x: &[f64], psi: &[f64], inverse: bool) -> Vec<f64> {
    let d = psi.len();
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if inverse {
                v / psi[i % d]
            } else {
                v * psi[i % d]
            }
        })
        .collect()
}

/// Mean over every pair of `|xᵢ + yⱼ|²/d`, pair by pair (the ρ GERF's optimal A takes).
pub fn pair_rho(x: &[f64], y: &[f64], d: usize) -> f64 {
    let mut total = 0.0;
    let mut pairs = 0usize;
    for xi in x.chunks_exact(d) {
        for yj in y.chunks_exact(d) {
            total += xi
                .iter()
                .zip(yj)
                .map(|(a, b)| (a + b) * (a + b))
                .sum::<f64>();
            pairs += 1;
        }
    }
    total / (pairs * d) as f64
}

/// The relative mean squared error `(E[Y²] − e^{2x·y}) / e^{2x·y}` of one GERF feature with
/// parameter `a` at the pair (x, y) (iid rows; m features divide it by m), from
/// [`crate::gerf::log_moment`].
pub fn relative_mse(x: &[f64], y: &[f64], a: f64) -> f64 {
    let xy: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
    (crate::gerf::log_moment(x, y, a, 2) - 2.0 * xy).exp_m1()
}
