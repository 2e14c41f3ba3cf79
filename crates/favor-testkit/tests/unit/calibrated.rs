//! Unit tests of favor-testkit's `calibrated` oracles (moved out of the library so `cargo test`
//! does not compile the library a second time as a test harness).

use favor_testkit::calibrated::*;

fn spd(d: usize) -> Vec<f64> {
    // B Bᵀ + I for a fixed B.
    let b: Vec<f64> = (0..d * d).map(|i| (0.7 * i as f64 + 0.3).sin()).collect();
    let mut a = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            a[i * d + j] = (0..d).map(|k| b[i * d + k] * b[j * d + k]).sum::<f64>()
                + if i == j { 1.0 } else { 0.0 };
        }
    }
    a
}

/// Cholesky, the inverse and the log-density agree with their definitions.
#[test]
fn dense_helpers() {
    let d = 5;
    let a = spd(d);
    let l = cholesky(&a, d).unwrap();
    let inv = inverse(&a, d).unwrap();
    for i in 0..d {
        for j in 0..d {
            let llt: f64 = (0..d).map(|k| l[i * d + k] * l[j * d + k]).sum();
            assert!((llt - a[i * d + j]).abs() < 1e-12);
            let id: f64 = (0..d).map(|k| a[i * d + k] * inv[k * d + j]).sum();
            assert!((id - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
        }
    }
    let x: Vec<f64> = (0..d).map(|i| 0.3 * i as f64 - 0.5).collect();
    let q: f64 = (0..d)
        .map(|i| (0..d).map(|j| x[i] * inv[i * d + j] * x[j]).sum::<f64>())
        .sum();
    assert!((quad_inv(&l, d, &x) - q).abs() < 1e-12);
    assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
}

/// Σ = (1 − 4A)·I is GERF: the moments equal favor-testkit's GERF oracle, p = 1, 2, 4.
#[test]
fn isotropic_is_gerf() {
    let d = 4;
    let x = [0.3, -0.2, 0.5, 0.1];
    let y = [-0.1, 0.4, 0.2, 0.3];
    for a in [-0.5, -0.1, 0.0, 0.03] {
        let mut sigma = vec![0.0; d * d];
        for i in 0..d {
            sigma[i * d + i] = 1.0 - 4.0 * a;
        }
        for p in [1, 2, 4] {
            let want = favor_testkit::gerf::log_moment(&x, &y, a, p);
            let got = log_moment(&x, &y, &sigma, p);
            assert!((got - want).abs() < 1e-12, "A {a} p {p}: {got} vs {want}");
        }
    }
    let xy: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
    assert!(
        (log_moment(&x, &y, &spd(d), 1) - xy).abs() < 1e-12,
        "unbiased"
    );
}
