//! Target `feature_maps`: every feature map, on Scalar and every SIMD backend, in f32 and
//! f64, on arbitrary finite rows (norms up to 2⁶⁰·√d, where the softmax maps' documented
//! guarantee — |x|²/2 and every wᵢ·x finite — still holds in f32).
//!
//! Promises checked: features and log-scales finite (for the generalized maps wherever the
//! exact feature is representable), non-negative for maps that report `is_positive`, softmax
//! rows at most 1 with largest entry 1, trigonometric features in [−1, 1], generalized
//! log-scales 0 (exp: ≥ 0). Values checked against f64 evaluations of the paper's formulas
//! written here (x' = s·x, uᵢ = wᵢ·x', h = |x'|²/2, M outputs):
//! - SM+ / SMhyp+: `ln(stored) + ℓ` against `±uᵢ − h − ln√M` within
//!   `Δ = γ_{d+2}(P + h) + u'(4P + 4h + ln√M + 3)`, P = maxᵢ Σⱼ|wᵢⱼx'ⱼ| (the key-exponent
//!   bound derived in [`crate::reference`]: dot products γ_{d+2}, the rounded scale,
//!   the shift's subtraction, exp, the log-scale's subtractions); u' = 2u_T + u_64 covers
//!   SIMD exp (≤ EXP_MAX_ULP = 1 ulp from libm, itself < 1 ulp) and the f64 oracle's own
//!   rounding. A stored value below T's smallest normal is checked in the other direction:
//!   its exact exponent relative to the row's largest must be below ln(MIN_POSITIVE) + 2Δ.
//! - trig: |stored − sin/cos(uᵢ)| ≤ γ_{d+2}Σⱼ|wᵢⱼx'ⱼ| + (SIN_COS_MAX_ABS_ERR + libm's ulp) for
//!   |uᵢ| ≤ SIN_COS_RANGE (sin, cos are 1-Lipschitz); ℓ against h − ln√m within
//!   `γ_{d+4}h + u'(h + 4 ln√m + 4)`.
//! - generalized: f(uᵢ) + ε with Δuᵢ as above (0 without projection and normaliser): ReLU,
//!   |·|, ELU+1 are 1-Lipschitz: `Δu + 4u'·max`; x²: `Δu(2|u| + Δu) + 3u'·max`; exp in the
//!   log domain like SM+.

use arbitrary::{Result, Unstructured};
use favor_core::{FeatureMap, Kernels, Scalar};
use favor_simd::math::{SIN_COS_MAX_ABS_ERR, SIN_COS_RANGE};

use crate::backends::{Visit, each_simd};
use crate::bounds::{Real, gamma, unit};
use crate::input::{size, vector};
use crate::maps::{GenAct, MapKind, MapSpec};

/// One `map_rows` call: a map and `rows` input rows.
#[derive(Debug, Clone)]
pub struct FeatureCase {
    /// Run in f64 (else f32).
    pub f64: bool,
    /// The map.
    pub map: MapSpec,
    /// Number of rows.
    pub rows: usize,
    /// rows×d inputs.
    pub x: Vec<f64>,
}

impl FeatureCase {
    /// Decodes a case: d ≤ 70, m ≤ 256, ≤ 8 rows, entries below 2⁶⁰ in magnitude.
    pub fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        let f64 = u.arbitrary()?;
        let map = MapSpec::arbitrary(u, 70, 256, false)?;
        let rows = size(u, 1, 8)?;
        let emax = *u.choose(&[1, 4, 12, 30, 59])?;
        let x = vector(u, rows * map.d, -21, emax)?;
        Ok(FeatureCase { f64, map, rows, x })
    }
}

/// Decodes a [`FeatureCase`] and checks it on Scalar and every SIMD backend.
pub fn check_feature_maps(data: &[u8]) {
    let Ok(case) = FeatureCase::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    run_case(&case);
}

/// Checks one case on Scalar and every SIMD backend.
pub fn run_case(case: &FeatureCase) {
    struct V<'a>(&'a FeatureCase);
    impl Visit for V<'_> {
        fn visit<K: Kernels<f32> + Kernels<f64>>(&mut self, k: K) {
            if self.0.f64 {
                check::<f64, K>(&k, self.0);
            } else {
                check::<f32, K>(&k, self.0);
            }
        }
    }
    let mut v = V(case);
    v.visit(Scalar);
    each_simd(&mut v);
}

/// The f64 view of one input row: projections, their magnitudes, h.
struct Row {
    u: Vec<f64>,
    p: Vec<f64>,
    h: f64,
}

fn row(spec: &MapSpec, x: &[f64]) -> Row {
    let s = spec.scale();
    let xs: Vec<f64> = x.iter().map(|v| v * s).collect();
    let h = xs.iter().map(|v| v * v).sum::<f64>() / 2.0;
    if !spec.kind.has_projection() {
        let p = xs.iter().map(|v| v.abs()).collect();
        return Row { u: xs, p, h };
    }
    let d = spec.d;
    let (mut u, mut p) = (Vec::with_capacity(spec.m), Vec::with_capacity(spec.m));
    for wi in spec.w.chunks_exact(d) {
        u.push(wi.iter().zip(&xs).map(|(a, b)| a * b).sum());
        p.push(wi.iter().zip(&xs).map(|(a, b)| (a * b).abs()).sum());
    }
    Row { u, p, h }
}

fn check<T: Real, K: Kernels<T>>(kern: &K, c: &FeatureCase) {
    let spec = &c.map;
    let (w, wt) = spec.weights::<T>();
    let map = spec.build(&w, &wt);
    let (d, mf, rows) = (spec.d, spec.features(), c.rows);
    let what = format!(
        "{} {} {:?} d={d} m={} rows={rows} norm={}",
        kern.name(),
        T::NAME,
        spec.kind,
        spec.m,
        spec.normalizer
    );
    assert_eq!(map.input_dim(), d, "{what}: input_dim");
    assert_eq!(map.feature_dim(), mf, "{what}: feature_dim");
    let x: Vec<T> = c.x.iter().map(|&v| T::from_f64(v)).collect();
    let (mut out, mut logs) = (vec![T::zero(); rows * mf], vec![T::zero(); rows]);
    // Wrong shapes are errors, never panics.
    assert!(
        map.map_rows(kern, &x, rows + 1, &mut out, &mut logs)
            .is_err()
    );
    assert!(
        map.map_rows(kern, &x, rows, &mut out[1..], &mut logs)
            .is_err()
    );
    map.map_rows(kern, &x, rows, &mut out, &mut logs)
        .unwrap_or_else(|e| panic!("{what}: map_rows failed: {e}"));

    let ut = unit::<T>();
    let u2 = 2.0 * ut + unit::<f64>();
    let tiny = T::min_positive_value().to64();
    let big = T::max_value().to64();
    let f64_slack = |v: f64| 8.0 * unit::<f64>() * (v.abs() + 1.0);
    for r in 0..rows {
        let feats: Vec<f64> = out[r * mf..(r + 1) * mf].iter().map(|v| v.to64()).collect();
        let l = logs[r].to64();
        let ex = row(spec, &c.x[r * d..(r + 1) * d]);
        let at = |i: usize| format!("{what}: row {r} feature {i}");
        if map.is_positive() {
            for (i, &f) in feats.iter().enumerate() {
                assert!(f >= 0.0 || f.is_nan(), "{}: negative {f:e}", at(i));
            }
        }
        match spec.kind {
            MapKind::Positive | MapKind::Hyperbolic => {
                assert!(l.is_finite(), "{what}: row {r} log-scale {l:e}");
                let pmax = ex.p.iter().fold(0.0f64, |a, &b| a.max(b));
                let ln_norm = (mf as f64).sqrt().ln();
                let delta = gamma(d + 2, u2) * (pmax + ex.h)
                    + u2 * (4.0 * pmax + 4.0 * ex.h + ln_norm + 3.0);
                let expo = |i: usize| {
                    let ui = if i < spec.m {
                        ex.u[i]
                    } else {
                        -ex.u[i - spec.m]
                    };
                    ui - ex.h - ln_norm
                };
                let top = (0..mf).map(expo).fold(f64::NEG_INFINITY, f64::max);
                let mut largest = 0.0f64;
                for (i, &f) in feats.iter().enumerate() {
                    assert!(
                        f.is_finite() && f <= 1.0 + 4.0 * ut,
                        "{}: stored {f:e} not in [0, 1]",
                        at(i)
                    );
                    largest = largest.max(f);
                    let e = expo(i);
                    if f >= tiny {
                        let err = (f.ln() + l - e).abs();
                        assert!(
                            err <= delta + f64_slack(l) + f64_slack(e),
                            "{}: ln φ = {:e}, exact {e:e}, |err| {err:e} > {delta:e}",
                            at(i),
                            f.ln() + l
                        );
                    } else {
                        assert!(
                            e - top <= tiny.ln() + 2.0 * delta + 2f64.ln(),
                            "{}: stored {f:e} but exact relative exponent {:e}",
                            at(i),
                            e - top
                        );
                    }
                }
                assert!(
                    largest >= 1.0 - 4.0 * ut,
                    "{what}: row {r} largest stored feature {largest:e}, not 1"
                );
            }
            MapKind::Trig => {
                let ln_norm = (spec.m as f64).sqrt().ln();
                let want = ex.h - ln_norm;
                let tol = gamma(d + 4, u2) * ex.h + u2 * (ex.h + 4.0 * ln_norm + 4.0);
                assert!(
                    (l - want).abs() <= tol + f64_slack(want),
                    "{what}: row {r} log-scale {l:e}, exact {want:e}"
                );
                let sin_err = if T::NAME == "f32" {
                    f64::from(SIN_COS_MAX_ABS_ERR) + 2f64.powi(-24)
                } else {
                    2f64.powi(-52)
                };
                for (i, &f) in feats.iter().enumerate() {
                    assert!(
                        f.is_finite() && f.abs() <= 1.0,
                        "{}: {f:e} not in [-1, 1]",
                        at(i)
                    );
                    let j = i % spec.m;
                    let du = gamma(d + 2, u2) * ex.p[j];
                    if ex.u[j].abs() + du <= f64::from(SIN_COS_RANGE) {
                        let exact = if i < spec.m {
                            ex.u[j].sin()
                        } else {
                            ex.u[j].cos()
                        };
                        assert!(
                            (f - exact).abs() <= du + sin_err + f64_slack(1.0),
                            "{}: {f:e}, exact {exact:e} (u = {:e})",
                            at(i),
                            ex.u[j]
                        );
                    }
                }
            }
            MapKind::Generalized { act, projection } => {
                let eps = T::from_f64(spec.eps).to64();
                let du = |i: usize| {
                    if projection {
                        gamma(d + 2, u2) * ex.p[i]
                    } else if spec.normalizer {
                        2.0 * u2 * ex.p[i]
                    } else {
                        0.0
                    }
                };
                if act == GenAct::Exp {
                    assert!(l.is_finite() && l >= 0.0, "{what}: row {r} log-scale {l:e}");
                    for (i, &f) in feats.iter().enumerate() {
                        let exact =
                            ex.u[i].max(eps.ln()) + (-(ex.u[i] - eps.ln()).abs()).exp().ln_1p();
                        let delta = du(i) + u2 * (ex.u[i].abs() + l + 6.0);
                        assert!(f.is_finite(), "{}: {f:e}", at(i));
                        if f >= tiny {
                            let err = (f.ln() + l - exact).abs();
                            assert!(
                                err <= delta + f64_slack(l) + f64_slack(exact),
                                "{}: ln φ = {:e}, exact {exact:e}",
                                at(i),
                                f.ln() + l
                            );
                        } else {
                            assert!(
                                exact - l <= tiny.ln() + delta + 2f64.ln(),
                                "{}: stored {f:e}, exact ln φ − ℓ = {:e}",
                                at(i),
                                exact - l
                            );
                        }
                    }
                } else {
                    assert!(l == 0.0, "{what}: row {r} log-scale {l:e}, expected 0");
                    for (i, &f) in feats.iter().enumerate() {
                        let v = ex.u[i];
                        let (exact, tol) = match act {
                            GenAct::Relu => (v.max(0.0) + eps, du(i)),
                            GenAct::Abs => (v.abs() + eps, du(i)),
                            GenAct::EluPlusOne => {
                                (if v > 0.0 { v + 1.0 } else { v.exp() } + eps, du(i))
                            }
                            _ => (v * v + eps, du(i) * (2.0 * v.abs() + du(i))),
                        };
                        if exact > big / 2.0 {
                            continue; // not representable: any value, ∞ included, is fine
                        }
                        let tol = tol + 4.0 * u2 * exact.abs().max(f.abs()) + 2.0 * tiny;
                        assert!(
                            f.is_finite() && (f - exact).abs() <= tol,
                            "{}: {f:e}, exact {exact:e}, tol {tol:e}",
                            at(i)
                        );
                        if eps > 0.0 {
                            assert!(f > 0.0, "{}: ε > 0 but feature {f:e}", at(i));
                        }
                    }
                }
            }
        }
    }
}
