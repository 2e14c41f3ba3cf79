//! `PerformerBuilder::compat`: whole calls (every batch and head, any layout) against
//! favor-testkit's f64 ports of the peers' formulas, and what a compat layer refuses.

use favor_core::Normals;
use favor_tensor::{Compat, Error, Kernel, Performer, Projection, TensorView};
use favor_testkit::peers::{Dims, Peer, PeerKernel, peer_attention};

const DIMS: Dims = Dims {
    batch: 2,
    heads: 3,
    len: 50,
    dim: 8,
    value_dim: 8,
    features: 16,
};

fn draw(n: usize, scale: f64, seed: u64) -> Vec<f64> {
    let mut g = Normals::new(seed);
    (0..n).map(|_| scale * g.next_f64()).collect()
}

fn layer(compat: Compat, kernel: Kernel, causal: bool) -> Performer {
    Performer::builder(DIMS.dim)
        .heads(DIMS.heads)
        .features(DIMS.features)
        .kernel(kernel)
        .seed(3)
        .causal(causal)
        .compat(compat)
        .build()
        .unwrap()
}

/// [B, H, L, d] → [B, L, H, d] memory.
fn to_bshd(x: &[f32]) -> Vec<f32> {
    let Dims {
        batch: b,
        heads: h,
        len: l,
        dim: d,
        ..
    } = DIMS;
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for t in 0..l {
                let src = ((bi * h + hi) * l + t) * d;
                let dst = ((bi * l + t) * h + hi) * d;
                out[dst..dst + d].copy_from_slice(&x[src..src + d]);
            }
        }
    }
    out
}

#[test]
fn compat_forward_follows_the_peers_on_every_head() {
    let Dims {
        batch: b,
        heads: h,
        len: l,
        dim: d,
        ..
    } = DIMS;
    let n = b * h * l * d;
    // q, k entries N(0,1): where the peers' ε and shifts matter most.
    let (q, k, v) = (draw(n, 1.0, 11), draw(n, 1.0, 12), draw(n, 1.0, 13));
    let f32s = |x: &[f64]| -> Vec<f32> { x.iter().map(|&a| a as f32).collect() };
    let (qf, kf, vf) = (f32s(&q), f32s(&k), f32s(&v));
    let shape = [b, h, l, d];
    let view = |x| TensorView::new(shape, x).unwrap();
    let (qs, ks, vs) = (to_bshd(&qf), to_bshd(&kf), to_bshd(&vf));
    let bshd = |x| TensorView::from_bshd([b, l, h, d], x).unwrap();
    let vmax = v.iter().fold(0f64, |m, x| m.max(x.abs()));
    for (peer, compat) in [
        (Peer::PerformerPytorch, Compat::PerformerPytorch),
        (Peer::GoogleJax, Compat::GoogleJax),
    ] {
        for (pk, kernel) in [
            (PeerKernel::Softmax, Kernel::Softmax),
            (PeerKernel::Relu, Kernel::Relu),
        ] {
            for causal in [false, true] {
                let attn = layer(compat, kernel, causal);
                let w: Vec<f64> = attn.projection_f64();
                // The oracle sees the inputs as the layer does: rounded to f32.
                let wid = |x: &[f32]| -> Vec<f64> { x.iter().map(|&a| f64::from(a)).collect() };
                let want = peer_attention(
                    peer,
                    pk,
                    causal,
                    (&wid(&qf), &wid(&kf), &wid(&vf)),
                    &w,
                    DIMS,
                );
                let got = attn.forward(view(&qf), view(&kf), view(&vf)).unwrap();
                // favor-core's peers test derives the f32 budget; at these sizes it is below
                // 1e-4 of max|v| (m = 16, L = 50, exponent arguments below 30).
                let err = got
                    .data()
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (&g, &w)| m.max((f64::from(g) - w).abs() / vmax));
                assert!(err < 1e-4, "{peer:?} {pk:?} causal={causal}: {err:e}");
                // [B, S, H, D] memory read in place gives the same bits.
                let strided = attn.forward(bshd(&qs), bshd(&ks), bshd(&vs)).unwrap();
                assert_eq!(strided.data(), got.data());
            }
        }
    }
}

#[test]
fn compat_defaults_follow_the_peer() {
    // performer-pytorch's generalized kernels have the data normaliser on, JAX's off: the
    // ReLU outputs of the two differ (only ε's weight changes), and each equals favor's
    // non-compat ReLU with the same normaliser and ε where the peer's denominator is plain.
    let Dims {
        batch: b,
        heads: h,
        len: l,
        dim: d,
        ..
    } = DIMS;
    let n = b * h * l * d;
    let x: Vec<f32> = draw(n, 1.0, 21).iter().map(|&a| a as f32).collect();
    let v = TensorView::new([b, h, l, d], &x).unwrap();
    let run = |attn: Performer| attn.forward(v, v, v).unwrap().data().to_vec();
    let pt = run(layer(Compat::PerformerPytorch, Kernel::Relu, false));
    let jax = run(layer(Compat::GoogleJax, Kernel::Relu, false));
    assert!(pt != jax);
    let own = |on: bool| {
        Performer::builder(d)
            .heads(h)
            .features(DIMS.features)
            .kernel(Kernel::Relu)
            .seed(3)
            .data_normalizer(on)
            .build()
            .unwrap()
    };
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5);
    assert!(close(&pt, &run(own(true))));
    assert!(close(&jax, &run(own(false))));
}

#[test]
fn compat_refuses_what_the_peers_do_not_define() {
    let d = DIMS.dim;
    let base = || Performer::builder(d).features(16).compat(Compat::GoogleJax);
    for (b, what) in [
        (base().window(4), "hybrid"),
        (base().kernel(Kernel::Hyperbolic), "softmax and generalized"),
        (base().kernel(Kernel::Gerf), "softmax and generalized"),
        (base().epsilon(-1.0), "epsilon"),
    ] {
        match b.build() {
            Err(Error::Config(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    let attn = base().causal(true).build().unwrap();
    assert_eq!(attn.compat(), Compat::GoogleJax);
    let x = vec![0.5f32; 4 * d];
    let t = TensorView::new([1, 1, 4, d], &x).unwrap();
    match attn.forward_masked(t, t, t, &[true, false, true, true]) {
        Err(Error::Config(m)) => assert!(m.contains("key mask"), "{m}"),
        other => panic!("{other:?}"),
    }
    // No projection: JAX's default generalized attention ("deterministic" features).
    let none = Performer::builder(d)
        .kernel(Kernel::Relu)
        .projection(Projection::None)
        .compat(Compat::GoogleJax)
        .build()
        .unwrap();
    assert!(
        none.forward(t, t, t)
            .unwrap()
            .data()
            .iter()
            .all(|o| o.is_finite())
    );
}

/// The first `t` tokens of every (batch, head) of a `[B, H, L, w]` tensor.
fn prefix(x: &[f64], t: usize, w: usize) -> Vec<f64> {
    let l = DIMS.len;
    (x.chunks_exact(l * w))
        .flat_map(|head| head[..t * w].iter().copied())
        .collect()
}

/// A compat layer's stream is the peer's causal attention on each prefix (favor-core's
/// `PeerStream`: the key shift over the keys seen so far): token t's output equals the f64
/// oracle on the sequence cut after t, through a prefill, steps, and a snapshot restored
/// into another stream.
#[test]
fn compat_stream_is_the_peer_on_each_prefix() {
    fn view(x: &[f32], len: usize, w: usize) -> TensorView<'_, f32> {
        TensorView::new([DIMS.batch, DIMS.heads, len, w], x).unwrap()
    }
    let Dims {
        batch: b,
        heads: h,
        len: l,
        dim: d,
        value_dim: dv,
        ..
    } = DIMS;
    let n = b * h * l * d;
    let rounded = |x: Vec<f64>| -> Vec<f64> { x.iter().map(|&a| f64::from(a as f32)).collect() };
    let (q, k, v) = (
        rounded(draw(n, 1.0, 31)),
        rounded(draw(n, 1.0, 32)),
        rounded(draw(n, 1.0, 33)),
    );
    let vmax = v.iter().fold(0f64, |m, x| m.max(x.abs()));
    let f32s = |x: &[f64]| -> Vec<f32> { x.iter().map(|&a| a as f32).collect() };
    // Tokens [from, to) of every head as a [B, H, to − from, w] tensor.
    let part = |x: &[f64], from: usize, to: usize, w: usize| -> Vec<f32> {
        (x.chunks_exact(l * w))
            .flat_map(|head| f32s(&head[from * w..to * w]))
            .collect()
    };
    let split = 20;
    for (peer, compat) in [
        (Peer::PerformerPytorch, Compat::PerformerPytorch),
        (Peer::GoogleJax, Compat::GoogleJax),
    ] {
        for (pk, kernel) in [
            (PeerKernel::Softmax, Kernel::Softmax),
            (PeerKernel::Relu, Kernel::Relu),
        ] {
            let attn = layer(compat, kernel, true);
            let w = attn.projection_f64();
            let mut stream = attn.stream(b).unwrap();
            let bytes_before = stream.memory_bytes();
            // Token t of every head: the oracle on the sequence cut after t.
            let want = |t: usize| -> Vec<f64> {
                let cut = Dims { len: t + 1, ..DIMS };
                let (qc, kc, vc) = (
                    prefix(&q, t + 1, d),
                    prefix(&k, t + 1, d),
                    prefix(&v, t + 1, dv),
                );
                let all = peer_attention(peer, pk, true, (&qc, &kc, &vc), &w, cut);
                (all.chunks_exact((t + 1) * dv))
                    .flat_map(|head| head[t * dv..].iter().copied())
                    .collect()
            };
            let check = |got: &[f32], t: usize, what: &str| {
                let err = got
                    .iter()
                    .zip(want(t))
                    .fold(0f64, |m, (&g, w)| m.max((f64::from(g) - w).abs() / vmax));
                assert!(err < 1e-4, "{peer:?} {pk:?} {what} t {t}: {err:e}");
            };
            let (qp, kp, vp) = (
                part(&q, 0, split, d),
                part(&k, 0, split, d),
                part(&v, 0, split, dv),
            );
            let pre = stream
                .prefill(
                    view(&qp, split, d),
                    view(&kp, split, d),
                    view(&vp, split, dv),
                )
                .unwrap();
            for t in 0..split {
                let rows: Vec<f32> = (pre.data().chunks_exact(split * dv))
                    .flat_map(|head| head[t * dv..(t + 1) * dv].iter().copied())
                    .collect();
                check(&rows, t, "prefill");
            }
            let bytes = stream.snapshot().unwrap();
            let mut copy = attn.stream(b).unwrap();
            copy.restore(&bytes).unwrap();
            assert_eq!(copy.tokens(), split as u64);
            for t in split..l {
                let (qt, kt, vt) = (
                    part(&q, t, t + 1, d),
                    part(&k, t, t + 1, d),
                    part(&v, t, t + 1, dv),
                );
                let (qt, kt, vt) = (view(&qt, 1, d), view(&kt, 1, d), view(&vt, 1, dv));
                let out = stream.step(qt, kt, vt).unwrap();
                check(out.data(), t, "step");
                assert_eq!(copy.step(qt, kt, vt).unwrap().data(), out.data());
            }
            assert_eq!(stream.tokens(), l as u64);
            assert_eq!(stream.memory_bytes(), bytes_before);

            // A stream of favor's own definition (or of the other peer) refuses the bytes.
            let plain = Performer::builder(d)
                .heads(h)
                .features(DIMS.features)
                .kernel(kernel)
                .seed(3)
                .causal(true)
                .build()
                .unwrap();
            let other = match compat {
                Compat::GoogleJax => Compat::PerformerPytorch,
                _ => Compat::GoogleJax,
            };
            for mut s in [
                plain.stream(b).unwrap(),
                layer(other, kernel, true).stream(b).unwrap(),
            ] {
                assert!(matches!(s.restore(&bytes), Err(Error::Snapshot(_))));
                assert_eq!(s.tokens(), 0);
            }
        }
    }
}
