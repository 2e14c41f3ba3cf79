//! Causal hybrid attention (`HybridStream`) against favor-testkit's `hybrid` oracle (the
//! definition in f64, log domain) and, with a window covering the sequence, against exact
//! softmax attention; errors change nothing.

use favor_core::*;
use favor_testkit::bounds::gamma;
use favor_testkit::hybrid::{Hybrid, hybrid};
use favor_testkit::maps::{MapKind, MapSpec};
use favor_testkit::reference::{Qkv as RefQkv, explicit};

const L: usize = 40;
const D: usize = 6;
const M: usize = 16;

fn data() -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let f = |n: usize, a: f64, s: f64| -> Vec<f64> {
        (0..n).map(|i| s * (a * i as f64 + 0.3).sin()).collect()
    };
    let mut w = vec![0f64; M * D];
    projection(ProjectionKind::default(), 11, M, D, &mut w).unwrap();
    (
        f(L * D, 0.37, 1.2),
        f(L * D, 0.71, 1.1),
        f(L * D, 1.9, 1.0),
        w,
    )
}

/// Runs the stream over all L tokens and returns the outputs.
fn stream(w: &[f64], shape: HybridShape, (q, k, v): (&[f64], &[f64], &[f64])) -> Vec<f64> {
    let phi = PositiveSoftmax::new(w, M, D).unwrap();
    let len = HybridStream::<f64, _, Scalar>::buffer_len(&phi, D, shape).unwrap();
    let mut buf = vec![0f64; len];
    let mut s = HybridStream::new(Scalar, &phi, D, shape, &mut buf).unwrap();
    let mut out = vec![0f64; L * D];
    for t in 0..L {
        let r = t * D..(t + 1) * D;
        s.step(&q[r.clone()], &k[r.clone()], &v[r.clone()], &mut out[r])
            .unwrap();
    }
    out
}

/// The rounding budget of one output element, from the error model of favor-testkit's FAVOR+
/// reference (its module docs): each weight's log carries at most η — for a feature weight
/// the key and query exponent errors and the stabiliser's rescales (Δk + Δq + Δs, with the
/// largest p = Σ|wᵢⱼx'ⱼ| and h = |x'|²/2 over all rows), for an exact one the d-term dot
/// product, the scaling by τ and the shift by the top log-weight — so its relative error is
/// δ = e^η − 1; sums of at most N = 2(L + M) + 16 terms add γ_N; the normalised output then
/// moves by at most (δ + 2γ_N)(max|v| + |out|)/(1 − δ − γ_N).
fn budget(q: &[f64], k: &[f64], w: &[f64], tau: f64, top: f64, out: f64, vmax: f64) -> f64 {
    let u = f64::EPSILON / 2.0;
    let s = tau.sqrt(); // the data normaliser: x' = d^{-1/4} x, τ = s².
    let (mut p, mut h, mut qk) = (0f64, 0f64, 0f64);
    for x in q.chunks(D).chain(k.chunks(D)) {
        h = h.max(x.iter().map(|e| (s * e).powi(2)).sum::<f64>() / 2.0);
        for wi in w.chunks(D) {
            p = p.max(wi.iter().zip(x).map(|(a, b)| (a * s * b).abs()).sum());
        }
    }
    for qi in q.chunks(D) {
        for kj in k.chunks(D) {
            qk = qk.max(qi.iter().zip(kj).map(|(a, b)| (a * b).abs()).sum());
        }
    }
    let ln_norm = (M as f64).sqrt().ln();
    let lambda = p + h + ln_norm;
    let dk = gamma(D + 2, u) * (p + h) + u * (4.0 * p + 4.0 * h + ln_norm + 3.0);
    let dq = gamma(D + 2, u) * p + u * (2.0 * p + 3.0);
    let ds = u * (7.0 * lambda + 6.0 * L as f64 + 6.0);
    let eta_far = dk + dq + ds + gamma(M, u) * 2.0;
    let eta_exact = gamma(D, u) * tau * qk + u * (2.0 * tau * qk + 2.0 * top.abs() + 2.0);
    let delta = eta_far.max(eta_exact).exp_m1() + u;
    let g = gamma(2 * (L + M) + 16, u);
    (delta + 2.0 * g) * (vmax + out.abs()) / (1.0 - delta - g)
}

#[test]
fn stream_is_the_definition() {
    let (q, k, v, w) = data();
    let spec = MapSpec {
        kind: MapKind::Positive,
        normalizer: true,
        transposed: false,
        d: D,
        m: M,
        eps: 0.0,
        w: w.clone(),
    };
    let (fq, fk) = (explicit(&spec, &q), explicit(&spec, &k));
    let tau = 1.0 / (D as f64).sqrt();
    let x = RefQkv {
        q: &q,
        k: &k,
        v: &v,
        d: D,
        dv: D,
    };
    let vmax = v.iter().fold(0f64, |a, b| a.max(b.abs()));
    // A generous bound on every log-weight's magnitude (for the shift's rounding).
    let top = 2.0 * tau * D as f64 * 1.2 * 1.1 + 20.0;
    for (window, sinks) in [(0, 0), (3, 0), (3, 2), (0, 5), (7, 1), (L, 0), (2, L)] {
        let shape = HybridShape { window, sinks };
        let got = stream(&w, shape, (&q, &k, &v));
        let h = Hybrid {
            window,
            sinks,
            causal: true,
        };
        let want = hybrid(x, tau, (&fq, &fk), h, None);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let tol = budget(&q, &k, &w, tau, top, *b, vmax);
            assert!(
                (a - b).abs() <= tol,
                "w {window} s {sinks} element {i}: {a} vs {b} (tol {tol:e})"
            );
        }
    }
}

/// With a window covering the sequence every weight is exact: favor-core's own exact causal
/// softmax attention (an independent code path) gives the same output to rounding.
#[test]
fn full_window_is_exact_softmax() {
    let (q, k, v, w) = data();
    let got = stream(
        &w,
        HybridShape {
            window: L,
            sinks: 0,
        },
        (&q, &k, &v),
    );
    let mut want = vec![0f64; L * D];
    let opts = ExactOptions {
        causal: true,
        ..ExactOptions::default()
    };
    softmax_attention(&Scalar, &q, &k, &v, Shape::new(L, D, D), &opts, &mut want).unwrap();
    let vmax = v.iter().fold(0f64, |a, b| a.max(b.abs()));
    let tau = 1.0 / (D as f64).sqrt();
    for (a, b) in got.iter().zip(&want) {
        // Both sides: exact logits (η_exact of `budget`), twice.
        let tol = 2.0 * budget(&q, &k, &w, tau, 20.0, *b, vmax);
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }
}

/// A rejected step (non-finite or out-of-range input, wrong length) leaves the stream as it
/// was: the next steps give the bits of a stream that never saw it. A map that does not
/// estimate softmax and a short buffer are errors.
#[test]
fn errors_change_nothing() {
    let (q, k, v, w) = data();
    let phi = PositiveSoftmax::new(&w, M, D).unwrap();
    let shape = HybridShape {
        window: 2,
        sinks: 1,
    };
    let len = HybridStream::<f64, _, Scalar>::buffer_len(&phi, D, shape).unwrap();
    let (mut b1, mut b2) = (vec![0f64; len], vec![0f64; len]);
    let mut a = HybridStream::new(Scalar, &phi, D, shape, &mut b1).unwrap();
    let mut b = HybridStream::new(Scalar, &phi, D, shape, &mut b2).unwrap();
    let (mut oa, mut ob) = (vec![0f64; D], vec![0f64; D]);
    let mut bad = k[..D].to_vec();
    bad[1] = f64::NAN;
    for t in 0..12 {
        let r = t * D..(t + 1) * D;
        if t == 6 {
            assert!(matches!(
                b.step(&q[r.clone()], &bad, &v[r.clone()], &mut ob),
                Err(Error::NonFinite { .. })
            ));
            assert!(matches!(
                b.step(&q[r.clone()], &k[..D - 1], &v[r.clone()], &mut ob),
                Err(Error::LengthMismatch { .. })
            ));
            let huge = vec![1e160; D];
            assert!(matches!(
                b.step(&huge, &k[r.clone()], &v[r.clone()], &mut ob),
                Err(Error::OutOfRange { .. })
            ));
            assert_eq!(b.tokens(), 6);
        }
        a.step(&q[r.clone()], &k[r.clone()], &v[r.clone()], &mut oa)
            .unwrap();
        b.step(&q[r.clone()], &k[r.clone()], &v[r], &mut ob)
            .unwrap();
        assert_eq!(oa, ob, "token {t}");
    }
    let relu = Generalized::new(&w, M, D, Activation::Relu).unwrap();
    let mut buf = vec![0f64; 4096];
    assert!(matches!(
        HybridStream::new(Scalar, &relu, D, shape, &mut buf).err(),
        Some(Error::InvalidParameter { .. })
    ));
    let mut short = vec![0f64; len - 1];
    assert!(matches!(
        HybridStream::new(Scalar, &phi, D, shape, &mut short).err(),
        Some(Error::BufferTooSmall { .. })
    ));
}
