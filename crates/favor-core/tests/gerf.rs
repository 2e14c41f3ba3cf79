//! GERF / FAVOR++ (`GerfSoftmax`): exactly SM+ at A = 0, unbiased with the closed-form
//! second moment for other A, and the closed-form optimal A against a numeric minimiser.
//! Oracles: favor-testkit's `gerf` (the moments written from the definition) and brute force.

use favor_core::{
    Error, FeatureMap, GerfSoftmax, PositiveSoftmax, ProjectionKind, Scalar, gerf_optimal_a,
    gerf_rho, projection,
};
use favor_testkit::gerf::{argmin_second_moment, log_moment};

fn inputs(d: usize) -> (Vec<f64>, Vec<f64>) {
    let x = (0..d).map(|i| 0.4 * (1.3 * i as f64 + 0.2).sin()).collect();
    let y = (0..d).map(|i| 0.5 * (0.7 * i as f64 - 0.9).cos()).collect();
    (x, y)
}

/// A = 0 is SM+ itself: same stored features and log-scales, bit for bit, in f32 and f64.
#[test]
fn a_zero_is_positive_softmax_bit_for_bit() {
    fn check<T: favor_core::Float + core::fmt::Debug>() {
        let (m, d, rows) = (24, 6, 5);
        let mut w = vec![T::zero(); m * d];
        projection(ProjectionKind::default(), 3, m, d, &mut w).unwrap();
        let x: Vec<T> = (0..rows * d)
            .map(|i| T::from_f64((i as f64 * 0.71).sin() * 2.0))
            .collect();
        let mut norms = vec![T::zero(); m];
        let g = GerfSoftmax::new(&w, m, d, 0.0, &mut norms).unwrap();
        let p = PositiveSoftmax::new(&w, m, d).unwrap();
        let (mut fg, mut lg) = (vec![T::zero(); rows * m], vec![T::zero(); rows]);
        let (mut fp, mut lp) = (vec![T::zero(); rows * m], vec![T::zero(); rows]);
        g.map_rows(&Scalar, &x, rows, &mut fg, &mut lg).unwrap();
        p.map_rows(&Scalar, &x, rows, &mut fp, &mut lp).unwrap();
        let bits = |v: &[T]| {
            v.iter()
                .map(|e| favor_core::Float::to_f64(*e).to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&fg), bits(&fp));
        assert_eq!(bits(&lg), bits(&lp));
        assert_ne!(g.fingerprint(), p.fingerprint(), "GERF is its own map");
    }
    check::<f32>();
    check::<f64>();
}

/// `|x + y|²/d`, the statistic `gerf_optimal_a` takes.
fn rho(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| (a + b) * (a + b)).sum::<f64>() / x.len() as f64
}

/// `n` one-feature draws at `a`: sample mean and second moment, with the closed-form E[Y²]
/// and the standard errors of both sample moments (from E[Y²] and E[Y⁴]).
struct Sample {
    mean: f64,
    m2: f64,
    e2: f64,
    se1: f64,
    se2: f64,
}

fn sample(x: &[f64], y: &[f64], a: f64, n: u64) -> Sample {
    let ys = estimates(x, y, a, 1, n);
    let nf = n as f64;
    let (e1, e2, e4) = (
        log_moment(x, y, a, 1).exp(),
        log_moment(x, y, a, 2).exp(),
        log_moment(x, y, a, 4).exp(),
    );
    Sample {
        mean: ys.iter().sum::<f64>() / nf,
        m2: ys.iter().map(|v| v * v).sum::<f64>() / nf,
        e2,
        se1: ((e2 - e1 * e1) / nf).sqrt(),
        se2: ((e4 - e2 * e2) / nf).sqrt(),
    }
}

/// One draw of the m = `m` feature estimate of exp(x·y) per seed, normaliser off.
pub(super) fn estimates(x: &[f64], y: &[f64], a: f64, m: usize, seeds: u64) -> Vec<f64> {
    let d = x.len();
    let mut w = vec![0f64; m * d];
    let mut norms = vec![0f64; m];
    let xy: Vec<f64> = x.iter().chain(y).copied().collect();
    let (mut f, mut l) = (vec![0f64; 2 * m], vec![0f64; 2]);
    (0..seeds)
        .map(|s| {
            projection(ProjectionKind::Iid, 1000 + s, m, d, &mut w).unwrap();
            let g = GerfSoftmax::new(&w, m, d, a, &mut norms)
                .unwrap()
                .with_data_normalizer(false);
            g.map_rows(&Scalar, &xy, 2, &mut f, &mut l).unwrap();
            let dot: f64 = (0..m).map(|i| f[i] * f[m + i]).sum();
            dot * (l[0] + l[1]).exp()
        })
        .collect()
}

/// With m = 1 each seed gives one sample Y of the estimator. Its sample mean must be within
/// 6 standard errors of exp(x·y) (σ² = E[Y²] − e^{2x·y}, closed form), and its sample second
/// moment within 6 standard errors of E[Y²] (σ² = E[Y⁴] − E[Y²]², closed form): Chebyshev
/// puts each outside with probability ≤ 1/36, and the seeds are fixed.
#[test]
fn unbiased_with_the_closed_form_second_moment() {
    let d = 4;
    let (x, y) = inputs(d);
    let exact = x.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>().exp();
    for a in [gerf_optimal_a(rho(&x, &y)), -0.3, 0.04] {
        let e1 = log_moment(&x, &y, a, 1).exp();
        assert!((e1 / exact - 1.0).abs() < 1e-12, "oracle: E[Y] = exp(x·y)");
        let Sample {
            mean,
            m2,
            e2,
            se1,
            se2,
        } = sample(&x, &y, a, 20_000);
        assert!(
            (mean - exact).abs() <= 6.0 * se1,
            "A = {a}: mean {mean} vs {exact} (se {se1})"
        );
        assert!(
            (m2 - e2).abs() <= 6.0 * se2,
            "A = {a}: E[Y²] {m2} vs {e2} (se {se2})"
        );
    }
}

/// At the optimal A the measured second moment, plus 6 standard errors, is below SM+'s
/// (A = 0) closed-form second moment: GERF's point, measured on the map itself. (SM+'s own
/// empirical second moment is too heavy-tailed here for a useful bound: its E[Y⁴] is
/// ~10¹³·E[Y²]².)
#[test]
fn optimal_a_lowers_the_measured_variance() {
    let d = 8;
    let (x, y): (Vec<f64>, Vec<f64>) = {
        let (x, y) = inputs(d);
        (
            x.iter().map(|v| 2.0 * v).collect(),
            y.iter().map(|v| 2.0 * v).collect(),
        )
    };
    let a = gerf_optimal_a(rho(&x, &y));
    let Sample { m2, se2: se, .. } = sample(&x, &y, a, 20_000);
    let sm = log_moment(&x, &y, 0.0, 2).exp();
    assert!(
        m2 + 6.0 * se < sm,
        "E[Y²] at A* = {a}: {m2} ± {se}; SM+ {sm}"
    );
}

/// The closed-form A* against golden-section minimisation of the closed-form second
/// moment, for inputs spanning ρ from 0 to 40.
#[test]
fn optimal_a_matches_the_numeric_minimiser() {
    assert_eq!(gerf_optimal_a(0.0), 0.0);
    assert!(gerf_optimal_a(-1.0).is_nan() && gerf_optimal_a(f64::NAN).is_nan());
    let d = 6;
    for scale in [0.01, 0.3, 1.0, 2.5, 6.0] {
        let (x, y) = inputs(d);
        let (x, y): (Vec<f64>, Vec<f64>) = (
            x.iter().map(|v| v * scale).collect(),
            y.iter().map(|v| v * scale).collect(),
        );
        let rho = rho(&x, &y);
        let numeric = argmin_second_moment(&x, &y, -50.0);
        let closed = gerf_optimal_a(rho);
        assert!(
            (numeric - closed).abs() <= 1e-6 * (1.0 + closed.abs()),
            "ρ = {rho}: closed {closed}, numeric {numeric}"
        );
    }
}

/// `gerf_rho` against the mean over all pairs of |xᵢ + yⱼ|²/d, with and without the
/// normaliser; bad input is a typed error.
#[test]
fn rho_is_the_mean_over_pairs() {
    let d = 5;
    let q: Vec<f32> = (0..3 * d)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
        .collect();
    let k: Vec<f32> = (0..4 * d)
        .map(|i| ((i * 53 % 13) as f32 - 6.0) / 4.0)
        .collect();
    let mut brute = 0.0;
    for qi in q.chunks(d) {
        for kj in k.chunks(d) {
            brute += qi
                .iter()
                .zip(kj)
                .map(|(a, b)| f64::from(a + b).powi(2))
                .sum::<f64>();
        }
    }
    brute /= (3 * 4 * d) as f64;
    let r = gerf_rho(&q, &k, d, false).unwrap();
    assert!((r - brute).abs() <= 1e-12 * brute, "{r} vs {brute}");
    let rn = gerf_rho(&q, &k, d, true).unwrap();
    assert!((rn - brute / (d as f64).sqrt()).abs() <= 1e-12 * brute);
    assert!(matches!(
        gerf_rho(&q[..d + 1], &k, d, false),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        gerf_rho::<f32>(&[], &k, d, false),
        Err(Error::ZeroDimension { .. })
    ));
    let mut bad = q.clone();
    bad[2] = f32::NAN;
    assert!(matches!(
        gerf_rho(&bad, &k, d, false),
        Err(Error::NonFinite { .. })
    ));
}

/// A must be finite and below 1/8; the norms buffer must hold m elements.
#[test]
fn bad_parameters_are_errors() {
    let (m, d) = (8, 4);
    let mut w = vec![0f32; m * d];
    projection(ProjectionKind::default(), 1, m, d, &mut w).unwrap();
    for a in [0.125, 1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut norms = vec![0f32; m];
        assert!(matches!(
            GerfSoftmax::new(&w, m, d, a, &mut norms),
            Err(Error::InvalidParameter { .. })
        ));
    }
    let mut short = vec![0f32; m - 1];
    assert!(matches!(
        GerfSoftmax::new(&w, m, d, -0.1, &mut short),
        Err(Error::BufferTooSmall { .. })
    ));
}

/// Bidirectional and causal attention with a GERF map (A ≠ 0, so the bias and ln D reach the
/// log-scales the state combines) against the definition computed directly from the map's
/// features in f64: `outᵢ = Σⱼ (φ(qᵢ)·φ(kⱼ)) vⱼ / Σⱼ φ(qᵢ)·φ(kⱼ)` over the visible j.
#[test]
fn attention_with_gerf_is_the_definition() {
    use favor_core::{Options, Plan, PlanKind, Shape};
    let (m, d, l) = (32, 6, 40);
    let mut w = vec![0f64; m * d];
    projection(ProjectionKind::default(), 5, m, d, &mut w).unwrap();
    let x: Vec<f64> = (0..3 * l * d)
        .map(|i| (i as f64 * 0.913).sin() * 1.5)
        .collect();
    let (q, k, v) = (&x[..l * d], &x[l * d..2 * l * d], &x[2 * l * d..]);
    let rho = gerf_rho(q, k, d, true).unwrap();
    let mut norms = vec![0f64; m];
    let phi = GerfSoftmax::new(&w, m, d, gerf_optimal_a(rho), &mut norms).unwrap();
    assert!(phi.a() < -0.01, "a non-trivial A: {}", phi.a());
    let (mut fq, mut lq) = (vec![0f64; l * m], vec![0f64; l]);
    let (mut fk, mut lk) = (vec![0f64; l * m], vec![0f64; l]);
    phi.map_rows(&Scalar, q, l, &mut fq, &mut lq).unwrap();
    phi.map_rows(&Scalar, k, l, &mut fk, &mut lk).unwrap();
    for kind in [
        PlanKind::Bidirectional,
        PlanKind::CausalPrefix,
        PlanKind::CausalChunked,
    ] {
        let opts = Options {
            block: 8,
            ..Options::default()
        };
        let plan = Plan::new(kind, Scalar, &phi, Shape::new(l, d, d), opts).unwrap();
        let mut scratch = vec![0f64; plan.scratch_len()];
        let mut out = vec![0f64; l * d];
        plan.run(q, k, v, &mut out, &mut scratch).unwrap();
        for i in 0..l {
            let visible = if kind == PlanKind::Bidirectional {
                l
            } else {
                i + 1
            };
            let a: Vec<f64> = (0..visible)
                .map(|j| {
                    let dot: f64 = (0..m).map(|r| fq[i * m + r] * fk[j * m + r]).sum();
                    dot * (lq[i] + lk[j]).exp()
                })
                .collect();
            let total: f64 = a.iter().sum();
            for c in 0..d {
                let want = (0..visible).map(|j| a[j] * v[j * d + c]).sum::<f64>() / total;
                let got = out[i * d + c];
                assert!(
                    (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "{kind:?} row {i} col {c}: {got} vs {want}"
                );
            }
        }
    }
}
