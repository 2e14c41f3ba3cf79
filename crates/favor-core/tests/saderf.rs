//! SADERF / FAVOR# (`saderf_fit`, `SaderfScales`): GERF on `Ψq` and `Ψ⁻¹k`. The fitted ψ
//! against the closed-form minimiser and the pair objective summed pair by pair; the
//! estimate unbiased with GERF's closed-form second moment at the rescaled pair; lower
//! relative MSE than plain GERF on anisotropic data; typed errors. Oracles: favor-testkit's
//! `saderf` (brute force over pairs) and `gerf` (closed-form moments).

use favor_core::{
    Error, FeatureMap, GerfSoftmax, Normals, ProjectionKind, SADERF_FLOOR, Scalar, gerf_optimal_a,
    gerf_rho, projection, saderf_fit,
};
use favor_testkit::gerf::log_moment;
use favor_testkit::saderf::{optimal_psi, pair_objective, pair_rho, relative_mse, rescale};

/// `rows` rows whose column l is N(0, scales[l]²), from a fixed seed.
fn gaussian_rows(seed: u64, rows: usize, scales: &[f64]) -> Vec<f64> {
    let d = scales.len();
    let mut x = vec![0f64; rows * d];
    Normals::new(seed).fill(&mut x);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= scales[i % d];
    }
    x
}

/// Keys spread far more than queries in the first half of the coordinates, less in the rest.
fn anisotropic(d: usize, lq: usize, lk: usize) -> (Vec<f64>, Vec<f64>) {
    let qs: Vec<f64> = (0..d).map(|l| if l < d / 2 { 0.2 } else { 0.5 }).collect();
    let ks: Vec<f64> = (0..d).map(|l| if l < d / 2 { 1.0 } else { 0.25 }).collect();
    (gaussian_rows(11, lq, &qs), gaussian_rows(12, lk, &ks))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

/// ψ is the closed-form minimiser (with L_x ≠ L_y, so the row counts matter), and the pair
/// objective `Σᵢⱼ|Ψxᵢ + Ψ⁻¹yⱼ|²`, summed pair by pair, rises when any ψₗ moves either way,
/// a little or a lot, and under joint moves. ρ is `gerf_rho` of the rescaled rows and the
/// brute-force mean over pairs; A is GERF's optimum at it. f32 agrees within its rounding.
#[test]
fn psi_minimises_the_pair_objective() {
    let (d, lq, lk) = (6, 12, 20);
    let (q, k) = anisotropic(d, lq, lk);
    let mut psi = vec![0f64; d + 2];
    let fit = saderf_fit(&q, &k, d, false, &mut psi).unwrap();
    let oracle = optimal_psi(&q, &k, d);
    for (l, (&got, &want)) in fit.psi().iter().zip(&oracle).enumerate() {
        assert!(rel(got, want) < 1e-14, "ψ{l}: {got} vs {want}");
    }
    assert!(
        fit.psi()[0] > 1.5 && fit.psi()[d - 1] < 1.0,
        "{:?}",
        fit.psi()
    );
    let best = pair_objective(&q, &k, fit.psi());
    for l in 0..d {
        for f in [0.5, 0.9, 0.999, 1.001, 1.1, 2.0] {
            let mut moved = fit.psi().to_vec();
            moved[l] *= f;
            let o = pair_objective(&q, &k, &moved);
            assert!(o > best, "ψ{l}×{f}: {o} ≤ {best}");
        }
    }
    let mut rng = Normals::new(5);
    for _ in 0..20 {
        let moved: Vec<f64> = fit
            .psi()
            .iter()
            .map(|p| p * (0.05 * rng.next_f64()).exp())
            .collect();
        assert!(pair_objective(&q, &k, &moved) > best);
    }
    // ρ and A on the rescaled rows, by the library's own rescaling and by the oracle's.
    let (mut qs, mut ks) = (q.clone(), k.clone());
    fit.apply_queries(&mut qs).unwrap();
    fit.apply_keys(&mut ks).unwrap();
    let (qo, ko) = (rescale(&q, &oracle, false), rescale(&k, &oracle, true));
    assert!(rel(fit.rho(), pair_rho(&qo, &ko, d)) < 1e-12);
    assert!(rel(fit.rho(), gerf_rho(&qs, &ks, d, false).unwrap()) < 1e-12);
    assert_eq!(fit.a(), gerf_optimal_a(fit.rho()));
    let mut psi_n = vec![0f64; d];
    let normalized = saderf_fit(&q, &k, d, true, &mut psi_n).unwrap();
    assert_eq!(normalized.psi(), fit.psi(), "ψ does not see the normaliser");
    assert!(rel(normalized.rho(), gerf_rho(&qs, &ks, d, true).unwrap()) < 1e-12);
    // f32: ψ from the f32 rows within a few f32 roundings of the f64 oracle on them.
    let (q32, k32): (Vec<f32>, Vec<f32>) = (
        q.iter().map(|&v| v as f32).collect(),
        k.iter().map(|&v| v as f32).collect(),
    );
    let mut psi32 = vec![0f32; d];
    let fit32 = saderf_fit(&q32, &k32, d, false, &mut psi32).unwrap();
    let wide = |v: &[f32]| v.iter().map(|&e| f64::from(e)).collect::<Vec<_>>();
    let oracle32 = optimal_psi(&wide(&q32), &wide(&k32), d);
    for (&got, &want) in fit32.psi().iter().zip(&oracle32) {
        assert!(rel(f64::from(got), want) <= f64::from(f32::EPSILON));
    }
}

/// A column zero on one side has no minimiser (ψ → 0 or ∞): the floor F keeps ψ finite and
/// positive, within [F^{1/4}, F^{-1/4}] = [10⁻³, 10³], at an objective above the infimum by at
/// most `L_x·L_y·√F·top²` per such column (its mean square over pairs is `√(b·F)·top` with
/// b ≤ top² the other side's mean square); a column zero on both sides gets ψ = 1; all-zero
/// inputs ψ = 1 and A = 0.
#[test]
fn zero_columns_are_clamped() {
    let d = 4;
    let (mut q, mut k) = anisotropic(d, 8, 8);
    for r in 0..8 {
        q[r * d] = 0.0; // column 0: queries zero, keys not
        k[r * d + 1] = 0.0; // column 1: keys zero, queries not
        q[r * d + 2] = 0.0; // column 2: zero on both sides
        k[r * d + 2] = 0.0;
    }
    let mut psi = vec![0f64; d];
    let fit = saderf_fit(&q, &k, d, false, &mut psi).unwrap();
    let p = fit.psi();
    let bound = SADERF_FLOOR.powf(-0.25);
    assert!(p[0] > 1.0 && p[0] <= bound * (1.0 + 1e-12), "{p:?}");
    assert!(p[1] < 1.0 && p[1] >= (1.0 - 1e-12) / bound, "{p:?}");
    assert_eq!(p[2], 1.0);
    assert!(rel(p[3], optimal_psi(&q, &k, d)[3]) < 1e-14);
    assert!(fit.a().is_finite() && fit.a() <= 0.0);
    let mut inf = p.to_vec();
    (inf[0], inf[1]) = (1e12, 1e-12);
    let (o, o_inf) = (pair_objective(&q, &k, p), pair_objective(&q, &k, &inf));
    let top = q.iter().chain(&k).fold(0f64, |m, v| m.max(v.abs()));
    let excess = 2.0 * 64.0 * SADERF_FLOOR.sqrt() * top * top;
    println!("zero columns: objective {o} vs infimum {o_inf}, allowed excess {excess:.3e}");
    assert!(o >= o_inf && o - o_inf <= excess, "{o} vs {o_inf}");
    let zeros = vec![0f32; 3 * d];
    let mut psi32 = vec![0f32; d];
    let fit = saderf_fit(&zeros, &zeros[..d], d, true, &mut psi32).unwrap();
    assert_eq!((fit.psi(), fit.a(), fit.rho()), (&[1f32; 4][..], 0.0, 0.0));
}

/// One feature per seed, m = 1, on the rescaled pair of an anisotropic set: the sample mean
/// is within 6 standard errors of exp(q·k) (the raw pair's: the rescaling keeps q·k) and the
/// sample second moment within 6 standard errors of GERF's closed-form E[Y²] at the oracle's
/// rescaled pair (σ from E[Y²] and E[Y⁴], closed form; Chebyshev: each outside with
/// probability ≤ 1/36, and the seeds are fixed). The rescaled second moment is also below the
/// raw pair's at plain GERF's A, by far more than the band.
#[test]
fn unbiased_with_gerfs_second_moment_at_the_rescaled_pair() {
    let d = 4;
    let (q, k) = anisotropic(d, 16, 16);
    let mut psi = vec![0f64; d];
    let fit = saderf_fit(&q, &k, d, false, &mut psi).unwrap();
    let oracle = optimal_psi(&q, &k, d);
    let a = gerf_optimal_a(pair_rho(
        &rescale(&q, &oracle, false),
        &rescale(&k, &oracle, true),
        d,
    ));
    assert!(rel(fit.a(), a) < 1e-12, "A {} vs {a}", fit.a());
    for (i, j) in [(0, 0), (3, 7)] {
        let (x, y) = (&q[i * d..(i + 1) * d], &k[j * d..(j + 1) * d]);
        let exact = x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>().exp();
        let (mut xs, mut ys) = (x.to_vec(), y.to_vec());
        fit.apply_queries(&mut xs).unwrap();
        fit.apply_keys(&mut ys).unwrap();
        let n = 20_000u64;
        let draws = super::gerf::estimates(&xs, &ys, fit.a(), 1, n);
        let nf = n as f64;
        let mean = draws.iter().sum::<f64>() / nf;
        let m2 = draws.iter().map(|v| v * v).sum::<f64>() / nf;
        let (xo, yo) = (rescale(x, &oracle, false), rescale(y, &oracle, true));
        let e2 = log_moment(&xo, &yo, a, 2).exp();
        let e4 = log_moment(&xo, &yo, a, 4).exp();
        let (se1, se2) = (
            ((e2 - exact * exact) / nf).sqrt(),
            ((e4 - e2 * e2) / nf).sqrt(),
        );
        assert!(
            (mean - exact).abs() <= 6.0 * se1,
            "pair ({i}, {j}): mean {mean} vs {exact} (se {se1})"
        );
        assert!(
            (m2 - e2).abs() <= 6.0 * se2,
            "pair ({i}, {j}): E[Y²] {m2} vs {e2} (se {se2})"
        );
        let plain = gerf_optimal_a(gerf_rho(&q, &k, d, false).unwrap());
        let raw = log_moment(x, y, plain, 2).exp();
        println!(
            "pair ({i}, {j}): E[Y²]/e^(2q·k) SADERF {:.4} (measured {:.4} ± {:.4}), GERF {:.4}",
            e2 / (exact * exact),
            m2 / (exact * exact),
            se2 / (exact * exact),
            raw / (exact * exact)
        );
        assert!(m2 + 6.0 * se2 < raw, "{m2} ± {se2} vs GERF {raw}");
    }
}

/// Per-pair relative squared error `(est/exact − 1)²` of an m-feature estimate of
/// exp(q·k) over all pairs, for `seeds` iid projections, its mean, and the band around the
/// closed form: the closed-form mean `(1/m)·mean relative MSE` and a standard deviation of
/// the sample mean of at most `mean over pairs of sd(e²)/√seeds` (pairs share W, so the
/// pairs' errors are correlated: the sd of their mean is at most the mean of their sds), with
/// `sd(e²)² = E[e⁴] − E[e²]²` and `E[e⁴]` the fourth central moment of a mean of m iid
/// copies, `(μ₄ + 3(m − 1)σ⁴)/m³`, over `exact⁴`, all from GERF's closed-form moments.
struct Measured {
    mean: f64,
    closed: f64,
    sd: f64,
}

fn measure(q: &[f64], k: &[f64], qo: &[f64], ko: &[f64], a: f64, d: usize) -> Measured {
    let (m, seeds) = (16, 2000u64);
    let (lq, lk) = (q.len() / d, k.len() / d);
    let mut w = vec![0f64; m * d];
    let mut norms = vec![0f64; m];
    let (mut fq, mut lq_s) = (vec![0f64; lq * m], vec![0f64; lq]);
    let (mut fk, mut lk_s) = (vec![0f64; lk * m], vec![0f64; lk]);
    let mut total = 0.0;
    for s in 0..seeds {
        projection(ProjectionKind::Iid, 500 + s, m, d, &mut w).unwrap();
        let phi = GerfSoftmax::new(&w, m, d, a, &mut norms)
            .unwrap()
            .with_data_normalizer(false);
        phi.map_rows(&Scalar, q, lq, &mut fq, &mut lq_s).unwrap();
        phi.map_rows(&Scalar, k, lk, &mut fk, &mut lk_s).unwrap();
        for i in 0..lq {
            for j in 0..lk {
                let dot: f64 = (0..m).map(|r| fq[i * m + r] * fk[j * m + r]).sum();
                let est = dot * (lq_s[i] + lk_s[j]).exp();
                let exact = (0..d)
                    .map(|l| q[i * d + l] * k[j * d + l])
                    .sum::<f64>()
                    .exp();
                total += (est / exact - 1.0).powi(2);
            }
        }
    }
    let pairs = (lq * lk) as f64;
    let (mut closed, mut sd) = (0.0, 0.0);
    for x in qo.chunks_exact(d) {
        for y in ko.chunks_exact(d) {
            let xy: f64 = x.iter().zip(y).map(|(p, r)| p * r).sum();
            // Raw moments of Y/exact.
            let e = |p: u32| (log_moment(x, y, a, p) - f64::from(p) * xy).exp();
            let (e2, e3, e4) = (e(2), e(3), e(4));
            let var = relative_mse(x, y, a);
            let mu4 = e4 - 4.0 * e3 + 6.0 * e2 - 3.0;
            let mf = m as f64;
            let ee4 = (mu4 + 3.0 * (mf - 1.0) * var * var) / (mf * mf * mf);
            closed += var / mf;
            sd += (ee4 - (var / mf).powi(2)).max(0.0).sqrt();
        }
    }
    Measured {
        mean: total / (pairs * seeds as f64),
        closed: closed / pairs,
        sd: sd / pairs / (seeds as f64).sqrt(),
    }
}

/// On anisotropic data (keys spreading 5× more than queries in half the coordinates, half as
/// much in the others) SADERF's measured mean relative MSE over all pairs is well below plain
/// GERF's (each at its own optimal A, the same 2000 iid projections of m = 16 rows): each
/// within 6 sds of its closed form (see `measure`; GERF's heavy tail makes its band wide,
/// SADERF's is within its own size), and the measured ratio below 1/2, where the closed forms
/// put it at 0.145.
#[test]
fn lower_relative_mse_than_gerf_on_anisotropic_data() {
    let d = 8;
    let (q, k) = anisotropic(d, 24, 24);
    let mut psi = vec![0f64; d];
    let fit = saderf_fit(&q, &k, d, false, &mut psi).unwrap();
    let (mut qs, mut ks) = (q.clone(), k.clone());
    fit.apply_queries(&mut qs).unwrap();
    fit.apply_keys(&mut ks).unwrap();
    let oracle = optimal_psi(&q, &k, d);
    let (qo, ko) = (rescale(&q, &oracle, false), rescale(&k, &oracle, true));
    let a_gerf = gerf_optimal_a(gerf_rho(&q, &k, d, false).unwrap());
    let gerf = measure(&q, &k, &q, &k, a_gerf, d);
    let saderf = measure(&qs, &ks, &qo, &ko, fit.a(), d);
    let ratio = saderf.mean / gerf.mean;
    println!(
        "relative MSE, m = 16: GERF {:.4e} (closed {:.4e} ± {:.1e}), SADERF {:.4e} (closed \
         {:.4e} ± {:.1e}); measured ratio {ratio:.3}, closed-form ratio {:.3}",
        gerf.mean,
        gerf.closed,
        gerf.sd,
        saderf.mean,
        saderf.closed,
        saderf.sd,
        saderf.closed / gerf.closed
    );
    for (name, r) in [("GERF", &gerf), ("SADERF", &saderf)] {
        assert!(
            (r.mean - r.closed).abs() <= 6.0 * r.sd,
            "{name}: {} vs {} ± {}",
            r.mean,
            r.closed,
            r.sd
        );
    }
    assert!(ratio < 0.5, "SADERF / GERF relative MSE {ratio}");
}

/// Bad shapes and values are typed errors that write nothing.
#[test]
fn bad_inputs_are_errors() {
    let d = 3;
    let q = [0.5f32, -0.2, 0.1, 0.3, 0.0, -0.4];
    let k = [0.2f32, 0.7, -0.1];
    let mut psi = [7f32; 3];
    let fit = |q: &[f32], k: &[f32], d: usize, psi: &mut [f32]| {
        saderf_fit(q, k, d, true, psi).map(|_| ())
    };
    assert!(matches!(
        fit(&q, &k, 0, &mut psi),
        Err(Error::ZeroDimension { what: "dim" })
    ));
    assert!(matches!(
        fit(&[], &k, d, &mut psi),
        Err(Error::ZeroDimension { what: "q" })
    ));
    assert!(matches!(
        fit(&q, &[], d, &mut psi),
        Err(Error::ZeroDimension { what: "k" })
    ));
    assert!(matches!(
        fit(&q[..5], &k, d, &mut psi),
        Err(Error::LengthMismatch { what: "q", .. })
    ));
    assert!(matches!(
        fit(&q, &[0.0; 4], d, &mut psi),
        Err(Error::LengthMismatch { what: "k", .. })
    ));
    let mut bad = q;
    bad[4] = f32::NAN;
    assert!(matches!(
        fit(&bad, &k, d, &mut psi),
        Err(Error::NonFinite { what: "q", row: 1 })
    ));
    let mut bad = k;
    bad[0] = f32::INFINITY;
    assert!(matches!(
        fit(&q, &bad, d, &mut psi),
        Err(Error::NonFinite { what: "k", row: 0 })
    ));
    assert!(matches!(
        fit(&q, &k, d, &mut [0f32; 2]),
        Err(Error::BufferTooSmall { what: "psi", .. })
    ));
    // Squares beyond f64: refused rather than an infinite ρ.
    let huge = [1e200f64, 0.0, 0.0];
    let mut psi64 = [7f64; 3];
    assert!(matches!(
        saderf_fit(&huge, &[1.0, 1.0, 1.0], d, false, &mut psi64),
        Err(Error::OutOfRange { what: "q", row: 0 })
    ));
    assert_eq!(psi, [7.0; 3], "nothing written");
    assert_eq!(psi64, [7.0; 3], "nothing written");

    // Applying: whole rows, finite entries, finite results; nothing written on error.
    // Column 1 zero on the key side: ψ₁ at its floor 10⁻³, so a key entry near f32's largest
    // overflows when divided by it.
    let q_side = [1.0f32, 1.0, 0.0, 1.0, 1.0, 0.0];
    let k_side = [1.0f32, 0.0, 1.0, 1.0, 0.0, 1.0];
    let fit = saderf_fit(&q_side, &k_side, d, false, &mut psi).unwrap();
    assert!(fit.psi()[1] < 1.1e-3, "{:?}", fit.psi());
    let mut keys = [1.0f32, 3e38, 0.0];
    assert!(matches!(
        fit.apply_keys(&mut keys),
        Err(Error::OutOfRange { what: "k", row: 0 })
    ));
    assert_eq!(keys, [1.0, 3e38, 0.0]);
    let mut ragged = [1.0f32; 4];
    assert!(matches!(
        fit.apply_queries(&mut ragged),
        Err(Error::LengthMismatch { what: "q", .. })
    ));
    let mut nan = [1.0f32, f32::NAN, 0.0];
    assert!(matches!(
        fit.apply_queries(&mut nan),
        Err(Error::NonFinite { what: "q", row: 0 })
    ));
    assert_eq!(ragged, [1.0; 4]);
}
