//! What a host (a model struct, a C handle, a server thread) needs from favor-tensor: shared
//! `&Performer` calls, owned streams, strided `[B, S, H, D]` inputs, grouped key/value heads and
//! caller-owned outputs. Oracles: the same layer on contiguous copies made by plain loops here,
//! key/value heads repeated by hand, and single-threaded runs.

use favor_tensor::*;

use crate::common::data;

const B: usize = 2;
const H: usize = 4;
const L: usize = 37;
const D: usize = 8;

/// `[B, S, H, D]` memory copied into `[B, H, S, D]` order, element by element.
fn bshd_to_bhsd(x: &[f32], [b, s, h, d]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                for di in 0..d {
                    out[((bi * h + hi) * s + si) * d + di] = x[((bi * s + si) * h + hi) * d + di];
                }
            }
        }
    }
    out
}

/// `[B, Hkv, S, D]` with each head repeated `group` times: `[B, Hkv·group, S, D]`.
fn repeat_heads(x: &[f32], [b, hkv, s, d]: [usize; 4], group: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len() * group);
    for bi in 0..b {
        for hi in 0..hkv {
            let head = &x[(bi * hkv + hi) * s * d..][..s * d];
            for _ in 0..group {
                out.extend_from_slice(head);
            }
        }
    }
    out
}

fn layer(causal: bool) -> PerformerBuilder {
    Performer::builder(D)
        .heads(H)
        .features(32)
        .causal(causal)
        .seed(7)
}

#[test]
fn performer_and_stream_can_be_shared_and_moved() {
    fn shared<T: Send + Sync>() {}
    fn movable<T: Send + 'static>() {}
    shared::<Performer>();
    shared::<Weights>();
    movable::<Stream>();
    shared::<Stream>();
}

#[test]
fn two_threads_share_one_performer_bit_for_bit() {
    let n = B * H * L * D;
    let inputs: Vec<_> = (0..2)
        .map(|i| {
            (
                data(n, 10 + i, 0.7),
                data(n, 20 + i, 0.7),
                data(n, 30 + i, 1.0),
            )
        })
        .collect();
    for causal in [false, true] {
        let attn = layer(causal).parallel(true).build().unwrap();
        let alone: Vec<Tensor> = inputs
            .iter()
            .map(|(q, k, v)| {
                let t = |x| TensorView::new([B, H, L, D], x).unwrap();
                attn.forward(t(q), t(k), t(v)).unwrap()
            })
            .collect();
        let attn = &attn;
        let together: Vec<Tensor> = std::thread::scope(|s| {
            let handles: Vec<_> = inputs
                .iter()
                .map(|(q, k, v)| {
                    s.spawn(move || {
                        let t = |x| TensorView::new([B, H, L, D], x).unwrap();
                        // Many calls each, so the two threads overlap.
                        let mut last = None;
                        for _ in 0..20 {
                            last = Some(attn.forward(t(q), t(k), t(v)).unwrap());
                        }
                        last.unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(alone, together, "causal {causal}");
        assert_eq!(attn.calls(), 2 + 40);
    }
}

#[test]
fn a_stream_outlives_its_performer_and_steps_on_another_thread() {
    let n = B * H * L * D;
    let (q, k, v) = (data(n, 1, 0.7), data(n, 2, 0.7), data(n, 3, 1.0));
    let t = |x: &[f32]| TensorView::new([B, H, L, D], x).unwrap().to_owned_rows();
    let full = layer(true)
        .build()
        .unwrap()
        .forward(
            TensorView::new([B, H, L, D], &q).unwrap(),
            TensorView::new([B, H, L, D], &k).unwrap(),
            TensorView::new([B, H, L, D], &v).unwrap(),
        )
        .unwrap();
    let (q, k, v) = (t(&q), t(&k), t(&v));

    let attn = layer(true).build().unwrap();
    let mut stream = attn.stream(B).unwrap();
    drop(attn);
    let outputs = std::thread::spawn(move || {
        (0..L)
            .map(|i| {
                let row = |x: &Vec<Vec<f32>>| x[i].clone();
                let (qi, ki, vi) = (row(&q), row(&k), row(&v));
                let one = |x| TensorView::new([B, H, 1, D], x).unwrap();
                stream.step(one(&qi), one(&ki), one(&vi)).unwrap()
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    // The stream's token loop against the layer's chunked causal forward: the same sums in
    // another order, so equal up to rounding (outputs are convex combinations of |v| ≤ 1).
    for (i, o) in outputs.iter().enumerate() {
        for b in 0..B {
            for h in 0..H {
                let want = &full.head(b, h)[i * D..(i + 1) * D];
                for (x, y) in o.head(b, h).iter().zip(want) {
                    assert!((x - y).abs() < 4e-6, "token {i}: {x} vs {y}");
                }
            }
        }
    }
}

/// Rows of a contiguous view regrouped per token: `out[i]` is token `i`'s `[B, H, 1, D]` data.
trait ToOwnedRows {
    fn to_owned_rows(&self) -> Vec<Vec<f32>>;
}

impl ToOwnedRows for TensorView<'_, f32> {
    fn to_owned_rows(&self) -> Vec<Vec<f32>> {
        let [b, h, l, _] = self.shape();
        (0..l)
            .map(|i| {
                let mut row = Vec::new();
                for bi in 0..b {
                    for hi in 0..h {
                        row.extend_from_slice(self.row(bi, hi, i));
                    }
                }
                row
            })
            .collect()
    }
}

#[test]
fn bshd_views_equal_bhsd_copies_bit_for_bit() {
    let bshd = [B, L, H, D];
    let n = B * L * H * D;
    let (q, k, v) = (data(n, 4, 0.7), data(n, 5, 0.7), data(n, 6, 1.0));
    let (qc, kc, vc) = (
        bshd_to_bhsd(&q, bshd),
        bshd_to_bhsd(&k, bshd),
        bshd_to_bhsd(&v, bshd),
    );
    let strided = |x| TensorView::from_bshd(bshd, x).unwrap();
    let copy = |x| TensorView::new([B, H, L, D], x).unwrap();
    let mask: Vec<bool> = (0..B * L).map(|i| i % 5 != 2).collect();
    for causal in [false, true] {
        for parallel in [false, true] {
            let attn = layer(causal).parallel(parallel).build().unwrap();
            let a = attn.forward(strided(&q), strided(&k), strided(&v)).unwrap();
            let b = attn.forward(copy(&qc), copy(&kc), copy(&vc)).unwrap();
            assert_eq!(a, b, "causal {causal}, parallel {parallel}");
            if !causal {
                let a = attn
                    .forward_masked(strided(&q), strided(&k), strided(&v), &mask)
                    .unwrap();
                let b = attn
                    .forward_masked(copy(&qc), copy(&kc), copy(&vc), &mask)
                    .unwrap();
                assert_eq!(a, b, "masked, parallel {parallel}");
            }
        }
    }

    // Streams: prefill the first 20 tokens, then step the rest, each token a strided view
    // into the same `[B, S, H, D]` buffers.
    let attn = layer(true).build().unwrap();
    let (mut s1, mut s2) = (attn.stream(B).unwrap(), attn.stream(B).unwrap());
    let split = 20;
    fn tokens(x: &[f32], from: usize, len: usize) -> TensorView<'_> {
        TensorView::with_strides([B, H, len, D], [L * H * D, D, H * D, 1], &x[from * H * D..])
            .unwrap()
    }
    let bhsd_tokens = |x: &[f32], from: usize, len: usize| {
        let mut out = Vec::new();
        for b in 0..B {
            for h in 0..H {
                out.extend_from_slice(&x[((b * H + h) * L + from) * D..][..len * D]);
            }
        }
        out
    };
    let p1 = s1
        .prefill(
            tokens(&q, 0, split),
            tokens(&k, 0, split),
            tokens(&v, 0, split),
        )
        .unwrap();
    let (pq, pk, pv) = (
        bhsd_tokens(&qc, 0, split),
        bhsd_tokens(&kc, 0, split),
        bhsd_tokens(&vc, 0, split),
    );
    let pre = |x| TensorView::new([B, H, split, D], x).unwrap();
    let p2 = s2.prefill(pre(&pq), pre(&pk), pre(&pv)).unwrap();
    assert_eq!(p1, p2);
    for i in split..L {
        let o1 = s1
            .step(tokens(&q, i, 1), tokens(&k, i, 1), tokens(&v, i, 1))
            .unwrap();
        let (tq, tk, tv) = (
            bhsd_tokens(&qc, i, 1),
            bhsd_tokens(&kc, i, 1),
            bhsd_tokens(&vc, i, 1),
        );
        let one = |x| TensorView::new([B, H, 1, D], x).unwrap();
        let o2 = s2.step(one(&tq), one(&tk), one(&tv)).unwrap();
        assert_eq!(o1, o2, "token {i}");
    }
}

#[test]
fn forward_into_rounds_once_into_any_element_type_and_layout() {
    let shape = [B, H, L, D];
    let n = B * H * L * D;
    let (q, k, v) = (data(n, 7, 0.7), data(n, 8, 0.7), data(n, 9, 1.0));
    let t = |x| TensorView::new(shape, x).unwrap();
    for precision in [Precision::F32, Precision::F64] {
        let attn = layer(false).precision(precision).build().unwrap();
        let reference = attn.forward(t(&q), t(&k), t(&v)).unwrap();

        // f64 out holds the compute precision's values: narrowed to f32 they are `forward`'s.
        let mut wide = vec![0f64; n];
        attn.forward_into(
            t(&q),
            t(&k),
            t(&v),
            None,
            TensorViewMut::new(shape, &mut wide).unwrap(),
        )
        .unwrap();
        let narrowed: Vec<f32> = wide.iter().map(|&x| x as f32).collect();
        assert_eq!(narrowed, reference.data(), "{precision:?}");
        if precision == Precision::F32 {
            assert!(
                wide.iter()
                    .zip(reference.data())
                    .all(|(&w, &r)| w == r as f64)
            );
        }

        // f16 and bf16 are rounded once from those values, not through f32.
        let mut half = vec![f16::ZERO; n];
        attn.forward_into(
            t(&q),
            t(&k),
            t(&v),
            None,
            TensorViewMut::new(shape, &mut half).unwrap(),
        )
        .unwrap();
        let want: Vec<f16> = wide.iter().map(|&x| f16::from_f64(x)).collect();
        assert_eq!(half, want);
        let mut brain = vec![bf16::ZERO; n];
        attn.forward_into(
            t(&q),
            t(&k),
            t(&v),
            None,
            TensorViewMut::new(shape, &mut brain).unwrap(),
        )
        .unwrap();
        let want: Vec<bf16> = wide.iter().map(|&x| bf16::from_f64(x)).collect();
        assert_eq!(brain, want);

        // A strided `[B, S, H, D]` output holds the same values, transposed.
        let mut bshd = vec![0f32; n];
        attn.forward_into(
            t(&q),
            t(&k),
            t(&v),
            None,
            TensorViewMut::from_bshd([B, L, H, D], &mut bshd).unwrap(),
        )
        .unwrap();
        assert_eq!(bshd_to_bhsd(&bshd, [B, L, H, D]), reference.data());
    }
}

#[test]
fn forward_into_checks_the_output_before_computing() {
    let n = B * H * L * D;
    let x = data(n, 11, 0.5);
    let t = |x| TensorView::new([B, H, L, D], x).unwrap();
    let attn = layer(false).build().unwrap();
    let mut short = vec![0f32; B * H * (L - 1) * D];
    let out = TensorViewMut::new([B, H, L - 1, D], &mut short).unwrap();
    let err = attn
        .forward_into(t(&x), t(&x), t(&x), None, out)
        .unwrap_err();
    assert!(matches!(err, Error::Shape { tensor: "out", .. }), "{err}");
    assert_eq!(attn.calls(), 0);
    // Overlapping output strides are refused when the view is made.
    let mut buf = vec![0f32; n];
    assert!(TensorViewMut::with_strides([B, H, L, D], [0, L * D, D, 1], &mut buf).is_err());
    // A broadcast input is fine: it is only read.
    let one_head = data(B * L * D, 12, 0.5);
    assert!(TensorView::with_strides([B, H, L, D], [L * D, 0, D, 1], &one_head).is_ok());
}

#[test]
fn grouped_kv_heads_equal_repeated_kv_heads_bit_for_bit() {
    let n = B * H * L * D;
    let q = data(n, 13, 0.7);
    for kv_heads in [1, 2] {
        let group = H / kv_heads;
        let kv_shape = [B, kv_heads, L, D];
        let nkv = B * kv_heads * L * D;
        let (k, v) = (data(nkv, 14, 0.7), data(nkv, 15, 1.0));
        let (kr, vr) = (
            repeat_heads(&k, kv_shape, group),
            repeat_heads(&v, kv_shape, group),
        );
        let full = |x| TensorView::new([B, H, L, D], x).unwrap();
        let kv = |x| TensorView::new(kv_shape, x).unwrap();
        for causal in [false, true] {
            let grouped = layer(causal).kv_heads(kv_heads).build().unwrap();
            let plain = layer(causal).build().unwrap();
            assert_eq!(grouped.kv_heads(), kv_heads);
            let a = grouped.forward(full(&q), kv(&k), kv(&v)).unwrap();
            let b = plain.forward(full(&q), full(&kr), full(&vr)).unwrap();
            assert_eq!(a, b, "kv_heads {kv_heads}, causal {causal}");
            // The full-head k/v shape is refused: it names the head count it wanted.
            let err = grouped.forward(full(&q), full(&kr), full(&vr)).unwrap_err();
            assert!(matches!(err, Error::Shape { tensor: "k", .. }), "{err}");
            if causal {
                let a = grouped
                    .stream(B)
                    .unwrap()
                    .prefill(full(&q), kv(&k), kv(&v))
                    .unwrap();
                let b = plain
                    .stream(B)
                    .unwrap()
                    .prefill(full(&q), full(&kr), full(&vr))
                    .unwrap();
                assert_eq!(a, b, "stream, kv_heads {kv_heads}");
            }
        }
    }
    // Heads must be a positive multiple of kv_heads.
    assert!(layer(false).kv_heads(3).build().is_err());
    assert!(layer(false).kv_heads(0).build().is_err());
}
