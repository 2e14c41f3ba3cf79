//! Naive f64 reference for generalized attention whose activation is 1-Lipschitz and
//! computed exactly — Performer-ReLU `max(u, 0) + ε` and `|u| + ε` — with ε > 0, and a bound
//! on |computed − reference| for an evaluation in unit roundoff u. It never runs favor code.
//!
//! With p_r = Σⱼ |w_rj·s·xⱼ| (s the exact data scale; W = I without a projection):
//! - projection: the library forms û_r = fl(s_T · fl(w_r·x)) (or fl(s_T · x_r)); a d-term dot
//!   in any order, the rounding of s into T and the scaling multiply give
//!   |û_r − u_r| ≤ γ_{d+2}·p_r =: e_r;
//! - feature: f̂_r = fl(g(û_r) + ε_T), g exact and 1-Lipschitz, ε_T = ε rounded to T (the
//!   value the library adds, used exactly here): |f̂_r − f_r| ≤ e_r + u(f_r + e_r) =: A_r, and
//!   every f̂_r ≥ ε_T;
//! - score of key j: with exact features a_j = Σ_r q_r k_jr ≥ M·ε_T² > 0, and
//!   |Σ_r q̂_r k̂_jr − a_j| ≤ Σ_r (A_r(q)·k_jr + q_r·A_r(k_j) + A_r(q)·A_r(k_j)) =: E_j;
//! - these maps have log-scale 0, so the stabiliser only ever multiplies by computed
//!   exp(0) factors: [`crate::reference`] bounds the rescales by Δs = u(7Λ + 6L + 6),
//!   here with Λ = 0; each score's relative error is δ_j = (1 + E_j/a_j)·e^{Δs + u} − 1;
//! - sums of at most N = 2(L + M) + 16 terms (γ_N), all scores positive, so the normalised
//!   output moves by at most
//!   `[Σⱼ pⱼδⱼ|vⱼ − out| + 2γ_N(Σⱼ pⱼ|vⱼ| + |out|)] / (1 − maxδ − γ_N)` (pⱼ = aⱼ/Σa) — the
//!   same algebra as [`crate::reference::favor_reference`]'s normalised bound.
//!
//! No underflow term: callers keep ε_T ≥ 10⁻³ and nonzero |v| ≥ 2⁻¹¹, so every product the
//! library forms (features ≥ ε_T, their products, times a value) is at least 2⁻⁵¹ in
//! magnitude, far inside the normal range of f32, and additions whose result is subnormal are
//! exact. Evaluated at u' = 2u_T + u_f64 the bound also covers this oracle's own rounding.

use crate::bounds::gamma;
use crate::maps::{GenAct, MapKind, MapSpec};

/// Exact features of rows under a ReLU or |·| map and their error bounds A_r.
#[derive(Debug, Clone)]
pub struct LipFeatures {
    m: usize,
    f: Vec<f64>,
    err: Vec<f64>,
}

impl LipFeatures {
    /// The bound on each feature's error, row-major like the features.
    pub fn err(&self) -> &[f64] {
        &self.err
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.f.len() / self.m
    }
}

/// Whether [`lip_features`] covers `spec`: a generalized ReLU or |·| map with
/// ε ≥ 10⁻³ (the no-underflow argument of the module docs).
pub fn covered(spec: &MapSpec) -> bool {
    matches!(
        spec.kind,
        MapKind::Generalized {
            act: GenAct::Relu | GenAct::Abs,
            ..
        }
    ) && spec.eps >= 1e-3
}

/// The features of the rows of `x` (row-major, d columns) under `spec`, whose `eps` must be
/// the value the library adds (ε rounded to T), with their bounds at unit roundoff `u`.
pub fn lip_features(spec: &MapSpec, x: &[f64], u: f64) -> LipFeatures {
    assert!(covered(spec), "not a covered map: {:?}", spec.kind);
    let (d, m) = (spec.d, spec.m);
    let s = spec.scale();
    let abs = matches!(
        spec.kind,
        MapKind::Generalized {
            act: GenAct::Abs,
            ..
        }
    );
    let g = gamma(d + 2, u);
    let rows = x.len() / d;
    let mut out = LipFeatures {
        m,
        f: Vec::with_capacity(rows * m),
        err: Vec::with_capacity(rows * m),
    };
    for row in x.chunks_exact(d) {
        for r in 0..m {
            let (val, p) = if spec.kind.has_projection() {
                let w = &spec.w[r * d..(r + 1) * d];
                let val: f64 = w.iter().zip(row).map(|(a, b)| a * s * b).sum();
                let p: f64 = w.iter().zip(row).map(|(a, b)| (a * s * b).abs()).sum();
                (val, p)
            } else {
                (s * row[r], (s * row[r]).abs())
            };
            let f = if abs { val.abs() } else { val.max(0.0) } + spec.eps;
            let e = g * p;
            out.f.push(f);
            out.err.push(e + u * (f + e));
        }
    }
    out
}

/// The normalised output of query row `qi` of `q` over keys `0..visible` of `k` with values
/// `v` (dv columns), and per column the bound on |computed − output| at unit roundoff `u`.
pub fn lip_reference(
    q: &LipFeatures,
    qi: usize,
    k: &LipFeatures,
    visible: usize,
    v: &[f64],
    dv: usize,
    u: f64,
) -> (Vec<f64>, Vec<f64>) {
    let m = q.m;
    assert_eq!(m, k.m);
    let (qf, qe) = (&q.f[qi * m..(qi + 1) * m], &q.err[qi * m..(qi + 1) * m]);
    let g = gamma(2 * (visible + m) + 16, u);
    let ds = u * (6.0 * visible as f64 + 6.0);
    let mut a = Vec::with_capacity(visible);
    let mut delta = Vec::with_capacity(visible);
    for j in 0..visible {
        let (kf, ke) = (&k.f[j * m..(j + 1) * m], &k.err[j * m..(j + 1) * m]);
        let (mut aj, mut ej) = (0.0, 0.0);
        for r in 0..m {
            aj += qf[r] * kf[r];
            ej += qe[r] * kf[r] + qf[r] * ke[r] + qe[r] * ke[r];
        }
        a.push(aj);
        delta.push((1.0 + ej / aj) * (ds + u).exp() - 1.0);
    }
    let total: f64 = a.iter().sum();
    let dmax = delta.iter().fold(0.0f64, |x, &y| x.max(y));
    let den = 1.0 - dmax - g;
    let (mut out, mut tol) = (vec![0.0; dv], vec![f64::INFINITY; dv]);
    for c in 0..dv {
        let acc: f64 = (0..visible).map(|j| a[j] / total * v[j * dv + c]).sum();
        out[c] = acc;
        if den > 0.0 {
            let mut t = 0.0;
            for j in 0..visible {
                let (pj, vj) = (a[j] / total, v[j * dv + c]);
                t += pj * delta[j] * (vj - acc).abs() + 2.0 * g * pj * vj.abs();
            }
            tol[c] = (t + 2.0 * g * acc.abs()) / den;
        }
    }
    (out, tol)
}
