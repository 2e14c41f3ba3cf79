//! Hybrid attention through favor-tensor (`window`, `sinks`) against independent oracles:
//! favor-core's hybrid plan head by head, exact softmax attention with a covering window, and
//! the builder's refusals.

use favor_core::{ExactOptions, HybridShape, Scalar, Shape, softmax_attention};
use favor_tensor::*;

mod common;
use common::data;

const B: usize = 2;
const H: usize = 2;
const L: usize = 50;
const D: usize = 8;
const M: usize = 32;

fn qkv() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = B * H * L * D;
    (data(n, 3, 0.7), data(n, 4, 0.7), data(n, 5, 1.0))
}

fn view(x: &[f32]) -> TensorView<'_> {
    TensorView::new([B, H, L, D], x).unwrap()
}

/// Oracle: favor-core's hybrid plan with the Performer's projection, head by head, on the
/// same backend: the same bits.
#[test]
fn each_head_equals_favor_core_hybrid() {
    let (q, k, v) = qkv();
    let hs = HybridShape {
        window: 5,
        sinks: 2,
    };
    for causal in [false, true] {
        let p = Performer::builder(D)
            .heads(H)
            .features(M)
            .causal(causal)
            .window(hs.window)
            .sinks(hs.sinks)
            .chunk(16)
            .backend(Backend::Scalar)
            .build()
            .unwrap();
        assert_eq!(p.hybrid(), Some(hs));
        let out = p.forward(view(&q), view(&k), view(&v)).unwrap();
        let w = p.projection_f32().to_vec();
        let phi = favor_core::PositiveSoftmax::new(&w, M, D).unwrap();
        let (kind, block) = if causal {
            (favor_core::PlanKind::CausalChunked, 16)
        } else {
            (favor_core::PlanKind::Bidirectional, 32)
        };
        let opts = favor_core::Options {
            block,
            ..Default::default()
        };
        let plan = favor_core::Plan::new(kind, Scalar, &phi, Shape::new(L, D, D), opts)
            .and_then(|p| p.with_hybrid(hs))
            .unwrap();
        let io = (view(&q), view(&k), view(&v));
        common::assert_heads_equal_plan(&out, io, &plan, &format!("causal {causal}"));
    }
}

/// A window covering the sequence is exact softmax attention: the detected backend in f32
/// against favor-core's exact attention in f64, within f32 rounding. The budget: every
/// weight's log carries at most the d-term dot product's and the shift's rounding
/// (γ_d·τ·|q||k| + 4u·(τ|q||k| + 1)), sums of L terms add γ_L, the output moves by at most
/// (δ + 2γ_L)(max|v| + |out|); inputs are rounded to f32 once more (u per entry).
#[test]
fn covering_window_is_exact_softmax() {
    let (q, k, v) = qkv();
    let u = f64::from(f32::EPSILON) / 2.0;
    let gamma = |n: usize| n as f64 * u / (1.0 - n as f64 * u);
    let tau = 1.0 / (D as f64).sqrt();
    let qk = 0.7 * 0.7 * D as f64; // |q|·|k| ≤ d · max|q| · max|k|
    let delta = gamma(D + 2) * tau * qk + 4.0 * u * (tau * qk + 1.0) + 2.0 * u * tau * qk;
    for causal in [false, true] {
        for sinks in [0, 3] {
            let p = Performer::builder(D)
                .heads(H)
                .features(M)
                .causal(causal)
                .window(L)
                .sinks(sinks)
                .build()
                .unwrap();
            let out = p.forward(view(&q), view(&k), view(&v)).unwrap();
            let opts = ExactOptions {
                causal,
                ..Default::default()
            };
            for b in 0..B {
                for h in 0..H {
                    let f = |x: &[f32]| -> Vec<f64> {
                        view(x).head(b, h).iter().map(|&e| f64::from(e)).collect()
                    };
                    let (hq, hk, hv) = (f(&q), f(&k), f(&v));
                    let mut want = vec![0f64; L * D];
                    let shape = Shape::new(L, D, D);
                    softmax_attention(&Scalar, &hq, &hk, &hv, shape, &opts, &mut want).unwrap();
                    let vmax = hv.iter().fold(0f64, |a, x| a.max(x.abs()));
                    for (a, w) in out.head(b, h).iter().zip(&want) {
                        let tol = (delta + 2.0 * gamma(L + 2)) * (vmax + w.abs()) + u * w.abs();
                        let e = (f64::from(*a) - w).abs();
                        assert!(
                            e <= tol,
                            "causal {causal} sinks {sinks}: {a} vs {w} ({e:e} > {tol:e})"
                        );
                    }
                }
            }
        }
    }
}

/// `window(0)` is still hybrid (the diagonal exact) and differs from plain FAVOR+; without
/// window and sinks the layer is plain FAVOR+ (its own oracle tests cover that).
#[test]
fn window_zero_is_not_plain_favor() {
    let (q, k, v) = qkv();
    let plain = Performer::builder(D).heads(H).features(M).build().unwrap();
    assert_eq!(plain.hybrid(), None);
    let diag = Performer::builder(D)
        .heads(H)
        .features(M)
        .window(0)
        .build()
        .unwrap();
    assert_eq!(
        diag.hybrid(),
        Some(HybridShape {
            window: 0,
            sinks: 0
        })
    );
    let a = plain.forward(view(&q), view(&k), view(&v)).unwrap();
    let b = diag.forward(view(&q), view(&k), view(&v)).unwrap();
    assert_ne!(a.data(), b.data());
    let sinks_only = Performer::builder(D).sinks(1).build().unwrap();
    assert_eq!(
        sinks_only.hybrid(),
        Some(HybridShape {
            window: 0,
            sinks: 1
        })
    );
}

/// What the hybrid refuses: kernels that are not positive softmax estimators, a stream (not
/// yet), and queries and keys of different lengths.
#[test]
fn hybrid_refusals() {
    for kernel in [Kernel::Trigonometric, Kernel::Relu] {
        let r = Performer::builder(D).kernel(kernel).window(2).build();
        assert!(matches!(r.err(), Some(Error::Config(_))), "{kernel:?}");
    }
    let p = Performer::builder(D)
        .causal(true)
        .window(2)
        .features(M)
        .build()
        .unwrap();
    assert!(matches!(p.stream(1).err(), Some(Error::Config(_))));
    let bi = Performer::builder(D).window(2).features(M).build().unwrap();
    let q = vec![0.1f32; 3 * D];
    let kv = vec![0.1f32; 5 * D];
    let r = bi.forward(
        TensorView::new([1, 1, 3, D], &q).unwrap(),
        TensorView::new([1, 1, 5, D], &kv).unwrap(),
        TensorView::new([1, 1, 5, D], &kv).unwrap(),
    );
    assert!(r.is_err());
}
