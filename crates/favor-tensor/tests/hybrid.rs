//! Hybrid attention through favor-tensor (`window`, `sinks`) against independent oracles:
//! favor-core's hybrid plan head by head, exact softmax attention with a covering window, and
//! the builder's refusals; the hybrid stream against favor-core's `HybridStream` head by head,
//! its snapshots and its range.

use favor_core::{ExactOptions, HybridShape, Scalar, Shape, softmax_attention};
use favor_tensor::*;

use crate::common::data;

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
        crate::common::assert_heads_equal_plan(&out, io, &plan, &format!("causal {causal}"));
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

/// What the hybrid refuses: kernels that are not positive softmax estimators, and queries and
/// keys of different lengths.
#[test]
fn hybrid_refusals() {
    for kernel in [Kernel::Trigonometric, Kernel::Relu] {
        let r = Performer::builder(D).kernel(kernel).window(2).build();
        assert!(matches!(r.err(), Some(Error::Config(_))), "{kernel:?}");
    }
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

fn hybrid_layer(hs: HybridShape) -> Performer {
    Performer::builder(D)
        .heads(H)
        .features(M)
        .causal(true)
        .window(hs.window)
        .sinks(hs.sinks)
        .backend(Backend::Scalar)
        .build()
        .unwrap()
}

/// Tokens `from..to` of every (batch, head) as a `[B, H, to − from, D]` tensor.
fn tokens(x: &[f32], from: usize, to: usize) -> Vec<f32> {
    let mut t = Vec::with_capacity(B * H * (to - from) * D);
    for bh in 0..B * H {
        t.extend_from_slice(&x[(bh * L + from) * D..(bh * L + to) * D]);
    }
    t
}

fn part(x: &[f32], from: usize, to: usize) -> Tensor {
    let t = tokens(x, from, to);
    Tensor::from_vec([B, H, to - from, D], t).unwrap()
}

/// Prefills `0..split` and steps the rest, returning every token's output as `[B, H, L, D]`
/// (head-major, like the inputs).
fn run_stream(s: &mut Stream, (q, k, v): (&[f32], &[f32], &[f32]), split: usize) -> Vec<f32> {
    let mut out = vec![0f32; B * H * L * D];
    let mut put = |o: &Tensor, from: usize, n: usize| {
        for bh in 0..B * H {
            let src = &o.data()[bh * n * D..(bh + 1) * n * D];
            out[(bh * L + from) * D..(bh * L + from + n) * D].copy_from_slice(src);
        }
    };
    if split > 0 {
        let (pq, pk, pv) = (part(q, 0, split), part(k, 0, split), part(v, 0, split));
        let o = s.prefill(pq.view(), pk.view(), pv.view()).unwrap();
        put(&o, 0, split);
    }
    for t in split..L {
        let (tq, tk, tv) = (part(q, t, t + 1), part(k, t, t + 1), part(v, t, t + 1));
        let o = s.step(tq.view(), tk.view(), tv.view()).unwrap();
        put(&o, t, 1);
    }
    out
}

/// Oracle: favor-core's `HybridStream` over each head's tokens with the layer's projection:
/// a favor-tensor hybrid stream (prefill, then steps) gives the same bits.
#[test]
fn hybrid_stream_equals_favor_core_stream_per_head() {
    let (q, k, v) = qkv();
    let hs = HybridShape {
        window: 4,
        sinks: 1,
    };
    let p = hybrid_layer(hs);
    let mut s = p.stream(B).unwrap();
    let out = run_stream(&mut s, (&q, &k, &v), 20);
    assert_eq!(s.tokens(), L as u64);
    let w = p.projection_f32().to_vec();
    let phi = favor_core::PositiveSoftmax::new(&w, M, D).unwrap();
    for bh in 0..B * H {
        let len = favor_core::HybridStream::<f32, _, Scalar>::buffer_len(&phi, D, hs).unwrap();
        let mut buf = vec![0f32; len];
        let mut core = favor_core::HybridStream::new(Scalar, &phi, D, hs, &mut buf).unwrap();
        let mut o = vec![0f32; D];
        for t in 0..L {
            let r = (bh * L + t) * D..(bh * L + t + 1) * D;
            core.step(&q[r.clone()], &k[r.clone()], &v[r.clone()], &mut o)
                .unwrap();
            assert_eq!(&out[r], &o[..], "(batch, head) {bh}, token {t}");
        }
    }
}

/// Snapshot after a prefill, restore into a fresh stream, continue: the bits of a stream that
/// never stopped. A FAVOR+ stream's bytes, another window's and corrupted bytes are refused
/// and leave the stream as it was.
#[test]
fn hybrid_stream_snapshots() {
    let (q, k, v) = qkv();
    let hs = HybridShape {
        window: 3,
        sinks: 2,
    };
    let p = hybrid_layer(hs);
    let whole = run_stream(&mut p.stream(B).unwrap(), (&q, &k, &v), 12);
    let mut a = p.stream(B).unwrap();
    let (pq, pk, pv) = (part(&q, 0, 12), part(&k, 0, 12), part(&v, 0, 12));
    a.prefill(pq.view(), pk.view(), pv.view()).unwrap();
    let bytes = a.snapshot().unwrap();
    let mut b = p.stream(B).unwrap();
    b.restore(&bytes).unwrap();
    assert_eq!(b.tokens(), 12);
    assert_eq!(b.snapshot().unwrap(), bytes);
    // Continue b from token 12: compare with `whole` from there.
    let mut out = vec![0f32; B * H * L * D];
    for t in 12..L {
        let (tq, tk, tv) = (part(&q, t, t + 1), part(&k, t, t + 1), part(&v, t, t + 1));
        let o = b.step(tq.view(), tk.view(), tv.view()).unwrap();
        for bh in 0..B * H {
            out[(bh * L + t) * D..(bh * L + t + 1) * D]
                .copy_from_slice(&o.data()[bh * D..(bh + 1) * D]);
        }
    }
    for bh in 0..B * H {
        let r = (bh * L + 12) * D..(bh * L + L) * D;
        assert_eq!(&out[r.clone()], &whole[r], "(batch, head) {bh}");
    }

    let plain = Performer::builder(D)
        .heads(H)
        .features(M)
        .causal(true)
        .backend(Backend::Scalar)
        .build()
        .unwrap();
    let other = hybrid_layer(HybridShape { window: 4, ..hs });
    let mut flipped = bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    let foreign = [
        (
            "a FAVOR+ stream's",
            plain.stream(B).unwrap().snapshot().unwrap(),
        ),
        (
            "another window's",
            other.stream(B).unwrap().snapshot().unwrap(),
        ),
        ("corrupted", flipped),
    ];
    for (what, bad) in foreign {
        let mut c = p.stream(B).unwrap();
        c.prefill(pq.view(), pk.view(), pv.view()).unwrap();
        let before = c.snapshot().unwrap();
        assert!(matches!(c.restore(&bad), Err(Error::Snapshot(_))), "{what}");
        assert_eq!(c.snapshot().unwrap(), before, "{what}: the stream changed");
    }
    // And the hybrid bytes do not restore into a FAVOR+ stream.
    let mut f = plain.stream(B).unwrap();
    assert!(matches!(f.restore(&bytes), Err(Error::Snapshot(_))));
}

/// Entries whose exact logits could overflow (inside FAVOR+'s range, beyond the window's)
/// are refused before any head steps: the stream is as it was.
#[test]
fn hybrid_stream_refuses_logits_that_could_overflow() {
    let (q, k, v) = qkv();
    let p = hybrid_layer(HybridShape {
        window: 2,
        sinks: 1,
    });
    let mut s = p.stream(B).unwrap();
    let (pq, pk, pv) = (part(&q, 0, 5), part(&k, 0, 5), part(&v, 0, 5));
    s.prefill(pq.view(), pk.view(), pv.view()).unwrap();
    let before = s.snapshot().unwrap();
    // The last head's key only: the first heads must not have stepped either.
    let mut big = tokens(&k, 5, 6);
    let n = big.len();
    big[n - 1] = 7e18; // |k|² fits f32 (the layer's own check), τ·|q||k| need not
    let (tq, tv) = (part(&q, 5, 6), part(&v, 5, 6));
    let tk = Tensor::from_vec([B, H, 1, D], big).unwrap();
    let r = s.step(tq.view(), tk.view(), tv.view());
    assert!(
        matches!(r, Err(Error::OutOfRange { tensor: "k", .. })),
        "{r:?}"
    );
    assert_eq!(s.snapshot().unwrap(), before);
    assert_eq!(s.tokens(), 5);
}
