//! Causal hybrid attention (`HybridStream`) against favor-testkit's `hybrid` oracle (the
//! definition in f64, log domain) and, with a window covering the sequence, against exact
//! softmax attention; errors change nothing.

use favor_core::*;
use favor_testkit::bounds::gamma;
use favor_testkit::hybrid::{Hybrid, hybrid};
use favor_testkit::maps::{MapKind, MapSpec};
use favor_testkit::reference::{Explicit, Qkv as RefQkv, explicit, lse_pair};

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

/// The oracle's explicit SM+ features of q and k over W (data normaliser on).
fn features(w: &[f64], q: &[f64], k: &[f64]) -> (Explicit, Explicit) {
    let spec = MapSpec {
        kind: MapKind::Positive,
        normalizer: true,
        transposed: false,
        d: D,
        m: M,
        eps: 0.0,
        w: w.to_vec(),
    };
    (explicit(&spec, q), explicit(&spec, k))
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

/// The hybrid plans (causal chunked and bidirectional) over `x`, with chunk / block `block`.
fn plan_run(
    w: &[f64],
    (kind, block): (PlanKind, usize),
    shape: HybridShape,
    (q, k, v): (&[f64], &[f64], &[f64]),
    key_mask: Option<&[bool]>,
) -> Vec<f64> {
    let phi = PositiveSoftmax::new(w, M, D).unwrap();
    let opts = Options {
        block,
        key_mask,
        ..Options::default()
    };
    let plan = Plan::new(kind, Scalar, &phi, Shape::new(L, D, D), opts)
        .and_then(|p| p.with_hybrid(shape))
        .unwrap();
    let mut scratch = vec![0f64; plan.scratch_len()];
    let mut out = vec![0f64; L * D];
    plan.run(q, k, v, &mut out, &mut scratch).unwrap();
    out
}

/// Per row of the bidirectional path, the budget of its subtraction (module docs of the
/// path): the far numerator and denominator carry an absolute error of at most γ_N times the
/// row's total φ-mass Φᵢ (over the non-sink keys; times max|v| for the numerator), with N the
/// terms on the way (the state's L sums, the M-term product, the band's ≤ L terms or the
/// prefix sums' and corners' ≤ L terms); divided
/// by a lower bound of the row's denominator, the diagonal's exact weight `e^{τ qᵢ·kᵢ}`.
fn subtraction_budget(
    (fq, fk): (
        &favor_testkit::reference::Explicit,
        &favor_testkit::reference::Explicit,
    ),
    (q, k): (&[f64], &[f64]),
    tau: f64,
    (i, sinks): (usize, usize),
    (out, vmax): (f64, f64),
) -> f64 {
    let u = f64::EPSILON / 2.0;
    let phi: f64 = (sinks.min(L)..L)
        .map(|j| lse_pair(fq.log_features(i), fk.log_features(j)).exp())
        .sum();
    let diag = tau * (0..D).map(|c| q[i * D + c] * k[i * D + c]).sum::<f64>();
    gamma(2 * L + M + 8, u) * phi * (vmax + out.abs()) / diag.exp()
}

/// Every hybrid path against the definition: the stream, and the causal chunked and
/// bidirectional plans for chunk sizes that split the window and sinks every way (1, 3, 8,
/// and one chunk for everything), with and without a key mask. The bidirectional plans take
/// both far forms: the band form for the narrow windows and block 64, the prefix form for
/// w = 37 (blocks 1, 3, 8) and w = 20 (blocks 1 and 3).
#[test]
fn every_path_is_the_definition() {
    let (q, k, v, w) = data();
    let (fq, fk) = features(&w, &q, &k);
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
    let mask: Vec<bool> = (0..L).map(|j| j % 7 != 3 && j != 0).collect();
    let shapes = [
        (0, 0),
        (3, 0),
        (3, 2),
        (0, 5),
        (7, 1),
        (L, 0),
        (2, L),
        (12, 3),
        // The prefix form (wide windows): far keys at both ends; and with most keys sinks, a
        // band shorter than the block (block 3) with a far key in its corner.
        (37, 1),
        (20, 38),
    ];
    for (window, sinks) in shapes {
        for causal in [true, false] {
            for key_mask in [None, Some(&mask[..])] {
                let h = Hybrid {
                    window,
                    sinks,
                    causal,
                };
                let want = hybrid(x, tau, (&fq, &fk), h, key_mask);
                for block in [0, 1, 3, 8, 64] {
                    let kind = if causal {
                        PlanKind::CausalChunked
                    } else {
                        PlanKind::Bidirectional
                    };
                    let shape = HybridShape { window, sinks };
                    // The stream (block 0 here) has no key mask.
                    let got = match block {
                        0 if causal && key_mask.is_none() => stream(&w, shape, (&q, &k, &v)),
                        0 => continue,
                        _ => plan_run(&w, (kind, block), shape, (&q, &k, &v), key_mask),
                    };
                    for (e, (a, b)) in got.iter().zip(&want).enumerate() {
                        let mut tol = budget(&q, &k, &w, tau, top, *b, vmax);
                        if !causal {
                            let (f, qk) = ((&fq, &fk), (&q[..], &k[..]));
                            tol += subtraction_budget(f, qk, tau, (e / D, sinks), (*b, vmax));
                        }
                        assert!(
                            (a - b).abs() <= tol,
                            "causal {causal} w {window} s {sinks} block {block} mask {}: \
                             element {e}: {a} vs {b} (tol {tol:e})",
                            key_mask.is_some()
                        );
                    }
                }
            }
        }
    }
}

/// The stream and the causal chunked plan are two evaluations of one definition: they agree
/// to rounding (each within its budget of the definition, so within twice of each other).
#[test]
fn stream_equals_chunked() {
    let (q, k, v, w) = data();
    let tau = 1.0 / (D as f64).sqrt();
    let vmax = v.iter().fold(0f64, |a, b| a.max(b.abs()));
    for (window, sinks) in [(0, 0), (5, 2), (9, 0), (1, 30)] {
        let shape = HybridShape { window, sinks };
        let s = stream(&w, shape, (&q, &k, &v));
        let c = plan_run(&w, (PlanKind::CausalChunked, 6), shape, (&q, &k, &v), None);
        for (a, b) in s.iter().zip(&c) {
            let tol = 2.0 * budget(&q, &k, &w, tau, 40.0, *b, vmax);
            assert!((a - b).abs() <= tol, "w {window} s {sinks}: {a} vs {b}");
        }
    }
}

/// A window covering the sequence makes both plans exact softmax attention (favor-core's own
/// exact path, an independent evaluation), bidirectional and causal.
#[test]
fn full_window_plans_are_exact_softmax() {
    let (q, k, v, w) = data();
    let vmax = v.iter().fold(0f64, |a, b| a.max(b.abs()));
    let tau = 1.0 / (D as f64).sqrt();
    for causal in [true, false] {
        let kind = if causal {
            PlanKind::CausalChunked
        } else {
            PlanKind::Bidirectional
        };
        let shape = HybridShape {
            window: L,
            sinks: 2,
        };
        let got = plan_run(&w, (kind, 8), shape, (&q, &k, &v), None);
        let mut want = vec![0f64; L * D];
        let opts = ExactOptions {
            causal,
            ..ExactOptions::default()
        };
        softmax_attention(&Scalar, &q, &k, &v, Shape::new(L, D, D), &opts, &mut want).unwrap();
        for (a, b) in got.iter().zip(&want) {
            let tol = 2.0 * budget(&q, &k, &w, tau, 20.0, *b, vmax);
            assert!((a - b).abs() <= tol, "causal {causal}: {a} vs {b}");
        }
    }
}

/// Causal chunked: output i is bit-identical whatever tokens after i hold (here: scaled,
/// shifted and swapped far from the originals), for windows shorter and longer than a chunk.
#[test]
fn causal_chunked_does_not_leak() {
    let (q, k, v, w) = data();
    let cut = 17;
    let (mut q2, mut k2, mut v2) = (q.clone(), k.clone(), v.clone());
    for x in [&mut q2, &mut k2, &mut v2] {
        for (n, e) in x[cut * D..].iter_mut().enumerate() {
            *e = -3.0 * *e + (n as f64 * 0.1).cos();
        }
    }
    for (window, sinks) in [(0, 0), (2, 1), (11, 0), (4, 20)] {
        let shape = HybridShape { window, sinks };
        for block in [4, 8, 64] {
            let a = plan_run(
                &w,
                (PlanKind::CausalChunked, block),
                shape,
                (&q, &k, &v),
                None,
            );
            let b = plan_run(
                &w,
                (PlanKind::CausalChunked, block),
                shape,
                (&q2, &k2, &v2),
                None,
            );
            let bits = |x: &[f64]| x.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&a[..cut * D]),
                bits(&b[..cut * D]),
                "w {window} s {sinks} block {block}"
            );
        }
    }
}

/// What a hybrid plan refuses, with typed errors: the token loop (that is the stream), an
/// unnormalised output, cross attention, a map that does not estimate softmax, short scratch,
/// and inputs whose exact logits could overflow.
#[test]
fn plan_errors() {
    let (q, k, v, w) = data();
    let phi = PositiveSoftmax::new(&w, M, D).unwrap();
    let hs = HybridShape {
        window: 2,
        sinks: 1,
    };
    let opts = Options::default();
    let shape = Shape::new(L, D, D);
    let hybrid = |kind, shape, opts| Plan::new(kind, Scalar, &phi, shape, opts)?.with_hybrid(hs);
    let invalid = |r: Result<Plan<'_, f64, Scalar, PositiveSoftmax<'_, f64>>>| {
        matches!(r.err(), Some(Error::InvalidParameter { .. }))
    };
    assert!(invalid(hybrid(PlanKind::CausalPrefix, shape, opts)));
    let raw = Options {
        normalized: false,
        ..opts
    };
    assert!(invalid(hybrid(PlanKind::Bidirectional, shape, raw)));
    let cross = Shape {
        queries: 3,
        ..shape
    };
    assert!(matches!(
        hybrid(PlanKind::Bidirectional, cross, opts).err(),
        Some(Error::LengthMismatch { .. }) | Some(Error::DimensionMismatch { .. })
    ));
    let relu = Generalized::new(&w, M, D, Activation::Relu).unwrap();
    let r = Plan::new(PlanKind::Bidirectional, Scalar, &relu, shape, opts)
        .unwrap()
        .with_hybrid(hs);
    assert!(matches!(r.err(), Some(Error::InvalidParameter { .. })));
    for kind in [PlanKind::Bidirectional, PlanKind::CausalChunked] {
        let plan = hybrid(kind, shape, opts).unwrap();
        let mut out = vec![0f64; L * D];
        let mut short = vec![0f64; plan.scratch_len() - 1];
        assert!(matches!(
            plan.run(&q, &k, &v, &mut out, &mut short),
            Err(Error::BufferTooSmall { .. })
        ));
        let mut scratch = vec![0f64; plan.scratch_len()];
        let mut huge = q.clone();
        huge[5] = 1e160;
        assert!(matches!(
            plan.run(&huge, &k, &v, &mut out, &mut scratch),
            Err(Error::OutOfRange { .. })
        ));
    }
}
