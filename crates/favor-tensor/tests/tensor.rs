//! favor-tensor against independent oracles: favor-core on one head, f64 scalar runs, and
//! exact softmax attention.

use favor_core::{ExactOptions, Scalar, Shape, softmax_attention};
use favor_tensor::*;

use crate::common::data;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const B: usize = 2;
const H: usize = 3;
const L: usize = 70;
const D: usize = 16;

fn qkv(seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = B * H * L * D;
    (
        data(n, seed, 0.6),
        data(n, seed + 1, 0.6),
        data(n, seed + 2, 1.0),
    )
}

fn view(x: &[f32]) -> TensorView<'_> {
    TensorView::new([B, H, L, D], x).unwrap()
}

fn at<E: Element>(shape: [usize; 4], x: &[E]) -> TensorView<'_, E> {
    TensorView::new(shape, x).unwrap()
}

fn tv<E: Element>(len: usize, x: &[E]) -> TensorView<'_, E> {
    TensorView::new([B, H, len, D], x).unwrap()
}

#[test]
fn each_head_equals_favor_core_on_that_head() {
    // Oracle: favor-core's own entry point with the Performer's projection, head by head.
    let (q, k, v) = qkv(1);
    for causal in [false, true] {
        let p = Performer::builder(D)
            .heads(H)
            .features(48)
            .causal(causal)
            .backend(Backend::Scalar)
            .build()
            .unwrap();
        let out = p.forward(view(&q), view(&k), view(&v)).unwrap();
        let w = p.projection_f32().to_vec();
        let phi = favor_core::PositiveSoftmax::new(&w, 48, D).unwrap();
        let plan = layer_plan(&phi, causal);
        let io = (view(&q), view(&k), view(&v));
        crate::common::assert_heads_equal_plan(&out, io, &plan, &format!("causal {causal}"));
    }
}

/// favor-core's plan that a layer of this file's shape runs per head with `phi`: chunked
/// causal with the default chunk, or bidirectional in blocks of 256.
fn layer_plan<F: favor_core::FeatureMap<f32>>(
    phi: &F,
    causal: bool,
) -> favor_core::Plan<'_, f32, Scalar, F> {
    let (kind, block) = if causal {
        (favor_core::PlanKind::CausalChunked, DEFAULT_CHUNK)
    } else {
        (favor_core::PlanKind::Bidirectional, 256)
    };
    let opts = favor_core::Options {
        block,
        ..Default::default()
    };
    favor_core::Plan::new(kind, Scalar, phi, Shape::new(L, D, D), opts).unwrap()
}

/// A `Projection::Sorf` layer with `structured_projection` maps through W's structured form
/// (signs, no W read per row): its forward is favor-core's plan over the map
/// `with_structured_projection` (the signs of the layer's seed) bit for bit, and its decoding
/// steps are favor-core's stream over that map, head by head. Over the dense W the bits
/// differ (the transforms round differently from a GEMM), which shows the signs are what is
/// used; without the option the layer is the dense W's, bit for bit.
#[test]
fn sorf_layers_project_with_the_signs() {
    let (q, k, v) = qkv(4);
    let (m, seed) = (40, 9);
    let mut signs = vec![0f32; favor_core::sorf_signs_len(m, D).unwrap()];
    favor_core::sorf_signs(seed, m, D, &mut signs).unwrap();
    for causal in [false, true] {
        let p = Performer::builder(D)
            .heads(H)
            .features(m)
            .projection(Projection::Sorf)
            .seed(seed)
            .causal(causal)
            .backend(Backend::Scalar);
        let dense_layer = p.clone().build().unwrap();
        let p = p.structured_projection(true).build().unwrap();
        let out = p.forward(view(&q), view(&k), view(&v)).unwrap();
        let w = p.projection_f32().to_vec();
        let dense = favor_core::PositiveSoftmax::new(&w, m, D).unwrap();
        let phi = dense.with_structured_projection(&signs).unwrap();
        let plan = layer_plan(&phi, causal);
        let io = (view(&q), view(&k), view(&v));
        crate::common::assert_heads_equal_plan(&out, io, &plan, &format!("causal {causal}"));
        let dense_plan = layer_plan(&dense, causal);
        let mut o = vec![0f32; L * D];
        let mut scratch = vec![0f32; dense_plan.scratch_len()];
        let h0 = |x: &[f32]| view(x).head(0, 0).to_vec();
        dense_plan
            .run(&h0(&q), &h0(&k), &h0(&v), &mut o, &mut scratch)
            .unwrap();
        assert_ne!(
            out.head(0, 0),
            &o[..],
            "causal {causal}: the dense W's bits"
        );
        let plain = dense_layer.forward(view(&q), view(&k), view(&v)).unwrap();
        assert_eq!(
            plain.head(0, 0),
            &o[..],
            "causal {causal}: without the option"
        );
        if !causal {
            continue;
        }
        // Decoding: every step of every head is favor-core's stream over the structured map.
        let mut s = p.stream(B).unwrap();
        let n = favor_core::Stream::<f32, _, Scalar>::buffer_len(&phi, D).unwrap();
        let mut bufs = vec![vec![0f32; n]; B * H];
        let mut refs: Vec<_> = bufs
            .iter_mut()
            .map(|b| favor_core::Stream::new(Scalar, &phi, D, b).unwrap())
            .collect();
        let mut want = vec![0f32; D];
        for t in 0..12 {
            let row =
                |x: &[f32], b: usize, h: usize| view(x).head(b, h)[t * D..(t + 1) * D].to_vec();
            let gather =
                |x: &[f32]| -> Vec<f32> { (0..B * H).flat_map(|i| row(x, i / H, i % H)).collect() };
            let (tq, tk, tval) = (gather(&q), gather(&k), gather(&v));
            let got = s.step(tv(1, &tq), tv(1, &tk), tv(1, &tval)).unwrap();
            for (i, r) in refs.iter_mut().enumerate() {
                let (b, h) = (i / H, i % H);
                r.step(&row(&q, b, h), &row(&k, b, h), &row(&v, b, h), &mut want)
                    .unwrap();
                assert_eq!(got.head(b, h), &want[..], "token {t}, head ({b}, {h})");
            }
        }
    }
}

#[test]
fn parallel_equals_serial_bit_for_bit() {
    let (q, k, v) = qkv(2);
    for causal in [false, true] {
        let build = |parallel| {
            Performer::builder(D)
                .heads(H)
                .features(64)
                .causal(causal)
                .parallel(parallel)
                .build()
                .unwrap()
        };
        let a = build(true).forward(view(&q), view(&k), view(&v)).unwrap();
        let b = build(false).forward(view(&q), view(&k), view(&v)).unwrap();
        assert_eq!(a, b, "causal {causal}");
        let (pa, pb) = (build(true), build(false));
        let sa = pa
            .stream(B)
            .unwrap()
            .prefill(view(&q), view(&k), view(&v))
            .unwrap();
        let sb = pb
            .stream(B)
            .unwrap()
            .prefill(view(&q), view(&k), view(&v))
            .unwrap();
        assert_eq!(sa, sb);
    }
}

/// A bidirectional head longer than a part (1024 rows) runs in parts: keys into states of
/// their own, merged in order, queries in row ranges, on several threads when the pool has
/// them. Oracles, f64 throughout (the layer's f64 precision, f64 outputs): favor-core's parts
/// API at the documented cuts (parts of equal length rounded up to 256-row blocks: keys
/// 0/1024/2048/2600, queries 0/768/1300) gives the same bits, so the head really is split;
/// favor-core's unsplit plan agrees to rounding (1e-12 of max|v|: the worst-case γ_n of a sum
/// of 2600 terms is 3e-13). Keys 1500..1510 are 3× longer, so the parts' stabilisers differ
/// and the merge rescales. Queries ≠ keys, and a key mask spanning parts. Parallel and serial
/// runs are the same bits.
#[test]
fn long_bidirectional_heads_run_in_parts() {
    let (lq, lk, d, m) = (1300, 2600, 16, 32);
    let (q, mut k, v) = (
        data(lq * d, 31, 0.6),
        data(lk * d, 32, 0.6),
        data(lk * d, 33, 1.0),
    );
    for x in &mut k[1500 * d..1510 * d] {
        *x *= 3.0;
    }
    let mut mask = vec![true; lk];
    for j in (0..lk).step_by(7) {
        mask[j] = false;
    }
    mask[1000..1100].fill(false);
    let wide = |x: &[f32]| x.iter().map(|&e| f64::from(e)).collect::<Vec<f64>>();
    let (q64, k64, v64) = (wide(&q), wide(&k), wide(&v));
    for key_mask in [None, Some(&mask[..])] {
        let layer = |parallel| {
            Performer::builder(d)
                .features(m)
                .precision(Precision::F64)
                .backend(Backend::Scalar)
                .parallel(parallel && cfg!(feature = "parallel"))
                .build()
                .unwrap()
        };
        let run = |p: &Performer| {
            let mut out = vec![0f64; lq * d];
            p.forward_into(
                at([1, 1, lq, d], &q),
                at([1, 1, lk, d], &k),
                at([1, 1, lk, d], &v),
                key_mask,
                TensorViewMut::new([1, 1, lq, d], &mut out).unwrap(),
            )
            .unwrap();
            out
        };
        let p = layer(true);
        let got = run(&p);
        assert_eq!(got, run(&layer(false)), "parallel vs serial");

        let w = p.projection_f64();
        let phi = favor_core::PositiveSoftmax::new(&w, m, d).unwrap();
        let opts = favor_core::Options {
            block: 256,
            key_mask,
            ..Default::default()
        };
        let shape = Shape {
            queries: lq,
            keys: lk,
            dim: d,
            value_dim: d,
        };
        let plan = favor_core::Plan::new(
            favor_core::PlanKind::Bidirectional,
            Scalar,
            &phi,
            shape,
            opts,
        )
        .unwrap();
        let mut want = vec![0f64; lq * d];
        let mut scratch = vec![0f64; plan.scratch_len()];
        plan.run(&q64, &k64, &v64, &mut want, &mut scratch).unwrap();

        let n = favor_core::state_len(m, d).unwrap();
        let mut bufs = vec![vec![0f64; n]; 3];
        let mut parts = vec![0f64; plan.part_scratch_len()];
        let mut states: Vec<_> = bufs
            .iter_mut()
            .map(|b| favor_core::PrefixState::new(m, d, b).unwrap())
            .collect();
        for (s, keys) in states.iter_mut().zip([0..1024, 1024..2048, 2048..lk]) {
            plan.absorb_keys(keys, &k64, &v64, s, &mut parts).unwrap();
        }
        let (first, rest) = states.split_first_mut().unwrap();
        for s in rest {
            first.merge(&Scalar, s).unwrap();
        }
        let mut split = vec![0f64; lq * d];
        let (top, bottom) = split.split_at_mut(768 * d);
        plan.answer_queries(0..768, &q64, first, top, &mut parts)
            .unwrap();
        plan.answer_queries(768..lq, &q64, first, bottom, &mut parts)
            .unwrap();
        assert_eq!(got, split, "the documented parts");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-12, "mask {}: {worst:e}", key_mask.is_some());
    }
}

#[test]
fn stream_equals_causal_forward() {
    let (q, k, v) = qkv(3);
    let p = Performer::builder(D)
        .heads(H)
        .features(64)
        .causal(true)
        .build()
        .unwrap();
    let full = p.forward(view(&q), view(&k), view(&v)).unwrap();
    // The f64 scalar run of the same layer bounds what f32 rounding may move.
    let p64 = Performer::builder(D)
        .heads(H)
        .features(64)
        .causal(true)
        .precision(Precision::F64)
        .backend(Backend::Scalar)
        .build()
        .unwrap();
    let reference = p64.forward(view(&q), view(&k), view(&v)).unwrap();
    // Outputs are convex combinations of |v| ≤ 1; each is a ratio of sums of ≤ L·m positive
    // f32 terms, so its relative rounding error is at most ~ (log2(L·m) + d)·ε ≈ 30·6e-8.
    let tol = 4e-6;
    assert!(max_abs_diff(full.data(), reference.data()) < tol);

    // Prefill 40 tokens, then 30 single steps.
    let split = 40;
    let mut s = p.stream(B).unwrap();
    let cut = |x: &[f32], from: usize, to: usize| -> Vec<f32> {
        let mut out = Vec::new();
        for b in 0..B {
            for h in 0..H {
                out.extend_from_slice(&view(x).head(b, h)[from * D..to * D]);
            }
        }
        out
    };
    let pre = |x: &[f32]| cut(x, 0, split);
    let (pq, pk, pv) = (pre(&q), pre(&k), pre(&v));
    let head_out = s
        .prefill(tv(split, &pq), tv(split, &pk), tv(split, &pv))
        .unwrap();
    for b in 0..B {
        for h in 0..H {
            let want = &full.head(b, h)[..split * D];
            assert!(max_abs_diff(head_out.head(b, h), want) < tol);
        }
    }
    for t in split..L {
        let (tq, tk, tval) = (cut(&q, t, t + 1), cut(&k, t, t + 1), cut(&v, t, t + 1));
        let o = s.step(tv(1, &tq), tv(1, &tk), tv(1, &tval)).unwrap();
        for b in 0..B {
            for h in 0..H {
                let want = &full.head(b, h)[t * D..(t + 1) * D];
                assert!(max_abs_diff(o.head(b, h), want) < tol, "token {t}");
            }
        }
    }
    assert_eq!(s.tokens(), L as u64);
}

/// `prefill_into` writes what `prefill` returns, in any element type rounded once from the
/// compute precision: an f64 layer's f16 outputs equal its f64 outputs rounded to f16 (not
/// through f32, which can differ by an f16 ulp at a rounding tie). A wrong output length is a
/// shape error that changes neither the stream nor the buffer.
#[test]
fn prefill_into_rounds_once_from_the_compute_precision() {
    let (q, k, v) = qkv(21);
    for precision in [Precision::F32, Precision::F64] {
        let p = Performer::builder(D)
            .heads(H)
            .features(32)
            .causal(true)
            .precision(precision)
            .build()
            .unwrap();
        let fresh = || p.stream(B).unwrap();
        let want32 = fresh().prefill(view(&q), view(&k), view(&v)).unwrap();
        let n = want32.data().len();
        let mut got32 = vec![0f32; n];
        fresh()
            .prefill_into(view(&q), view(&k), view(&v), &mut got32)
            .unwrap();
        assert_eq!(got32, want32.data(), "{precision:?}: f32 outputs");
        let mut wide = vec![0f64; n];
        fresh()
            .prefill_into(view(&q), view(&k), view(&v), &mut wide)
            .unwrap();
        let mut narrow = vec![half::f16::ZERO; n];
        fresh()
            .prefill_into(view(&q), view(&k), view(&v), &mut narrow)
            .unwrap();
        let once: Vec<u16> = wide
            .iter()
            .map(|&x| half::f16::from_f64(x).to_bits())
            .collect();
        let got: Vec<u16> = narrow.iter().map(|x| x.to_bits()).collect();
        assert_eq!(
            got, once,
            "{precision:?}: f16 outputs are the wide ones rounded once"
        );

        let mut s = fresh();
        let mut short = vec![7f32; n - 1];
        let e = s
            .prefill_into(view(&q), view(&k), view(&v), &mut short)
            .unwrap_err();
        assert!(matches!(e, Error::Shape { tensor: "out", .. }), "{e}");
        assert_eq!(s.tokens(), 0);
        assert!(short.iter().all(|&x| x == 7.0));
    }
}

#[test]
fn stream_memory_does_not_grow_and_snapshots_round_trip() {
    let p = Performer::builder(D)
        .heads(H)
        .features(32)
        .causal(true)
        .build()
        .unwrap();
    let mut s = p.stream(B).unwrap();
    let before = s.memory_bytes();
    // 2(M·dv + M) sums (total, compensation) + a ring of RING keys and values + its count,
    // + 4M feature rows (a step's and a re-mapped query's) + 2d input rows, per (batch, head),
    // plus the step's mapping scratch 2(M + d + 1) per (batch, head), in f32.
    let ring = favor_core::RING * (32 + D) + 1;
    assert_eq!(
        before,
        B * H * (2 * (32 * D + 32) + ring + 4 * 32 + 2 * D + 2 * (32 + D + 1)) * 4
    );
    let tok = data(B * H * D, 9, 0.5);
    let t = TensorView::new([B, H, 1, D], &tok).unwrap();
    for _ in 0..200 {
        s.step(t, t, t).unwrap();
    }
    assert_eq!(s.memory_bytes(), before);
    let snap = s.snapshot().unwrap();
    let next = s.step(t, t, t).unwrap();
    // Restoring into a fresh stream continues identically.
    let mut s2 = p.stream(B).unwrap();
    s2.restore(&snap).unwrap();
    assert_eq!(s2.tokens(), 200);
    assert_eq!(s2.step(t, t, t).unwrap(), next);
}

#[test]
fn bad_snapshots_are_errors_and_change_nothing() {
    let p = Performer::builder(D)
        .heads(H)
        .features(32)
        .causal(true)
        .build()
        .unwrap();
    let mut s = p.stream(B).unwrap();
    let tok = data(B * H * D, 10, 0.5);
    let t = TensorView::new([B, H, 1, D], &tok).unwrap();
    s.step(t, t, t).unwrap();
    let snap = s.snapshot().unwrap();
    s.step(t, t, t).unwrap();
    let live = s.snapshot().unwrap();
    let mut flipped = snap.clone();
    flipped[0] ^= 1;
    let mut body = snap.clone();
    let last = body.len() - 1;
    body[last] = 0xFF; // a NaN/garbage float in the last head's z
    body[last - 1] = 0xFF;
    body[last - 2] = 0xFF;
    body[last - 3] = 0xFF;
    let other = Performer::builder(D)
        .heads(H)
        .features(32)
        .seed(1)
        .causal(true)
        .build()
        .unwrap();
    let foreign = other.stream(B).unwrap().snapshot().unwrap();
    let cases: [(&str, &[u8]); 6] = [
        ("empty", &[]),
        ("truncated", &snap[..snap.len() - 1]),
        ("magic", &flipped),
        ("payload", &body),
        ("other projection", &foreign),
        ("header only", &snap[..40]),
    ];
    for (name, bytes) in cases {
        let e = s.restore(bytes).unwrap_err();
        assert!(matches!(e, Error::Snapshot(_)), "{name}: {e}");
        assert_eq!(s.snapshot().unwrap(), live, "{name} changed the state");
    }
    let wrong_batch = p.stream(1).unwrap().snapshot().unwrap();
    assert!(
        s.restore(&wrong_batch)
            .unwrap_err()
            .to_string()
            .contains("batch")
    );
}

/// The layout of a version-2 tensor snapshot (favor-tensor's `Stream::snapshot` docs):
/// 48-byte header, per (batch, head) 8 bytes of indices and a favor-core snapshot, CRC-32.
const T_HEADER: usize = 48;

/// Recomputes the trailing CRC-32 of a (tensor or core) snapshot after a deliberate edit.
fn reseal(b: &mut [u8]) {
    let body = b.len() - 4;
    let crc = favor_core::crc32(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
}

/// Byte ranges of each (batch, head)'s core snapshot in a version-2 tensor snapshot.
fn records(snap: &[u8]) -> Vec<std::ops::Range<usize>> {
    let each = u64::from_le_bytes(snap[32..40].try_into().unwrap()) as usize;
    (0..B * H)
        .map(|i| {
            let at = T_HEADER + i * (8 + each) + 8;
            at..at + each
        })
        .collect()
}

fn stream_with_tokens(p: &Performer, n: usize) -> Stream {
    let mut s = p.stream(B).unwrap();
    let tok = data(B * H * D, 21, 0.5);
    let t = TensorView::new([B, H, 1, D], &tok).unwrap();
    for _ in 0..n {
        s.step(t, t, t).unwrap();
    }
    s
}

#[test]
fn every_single_byte_mutation_of_a_tensor_snapshot_is_refused() {
    let p = Performer::builder(D)
        .heads(H)
        .features(8)
        .causal(true)
        .build()
        .unwrap();
    let s = stream_with_tokens(&p, 3);
    let good = s.snapshot().unwrap();
    let mut t = p.stream(B).unwrap();
    let before = t.snapshot().unwrap();
    for at in 0..good.len() {
        let mut b = good.clone();
        b[at] ^= 0x01;
        assert!(t.restore(&b).is_err(), "byte {at} flipped: accepted");
    }
    assert_eq!(t.snapshot().unwrap(), before);
    t.restore(&good).unwrap();
    assert_eq!(t.snapshot().unwrap(), good);
}

/// Crafted snapshots with valid checksums: two heads swapped, and a head whose log-scale is
/// 1e30 (beyond what any key of this layer can produce) are refused by the semantic checks.
#[test]
fn crafted_tensor_snapshots_are_refused() {
    let p = Performer::builder(D)
        .heads(H)
        .features(32)
        .causal(true)
        .build()
        .unwrap();
    let s = stream_with_tokens(&p, 3);
    let good = s.snapshot().unwrap();
    let recs = records(&good);
    let mut t = p.stream(B).unwrap();
    let before = t.snapshot().unwrap();

    // Swap head records 0 and 1 whole (indices included) and reseal.
    let (r0, r1) = (
        recs[0].start - 8..recs[0].end,
        recs[1].start - 8..recs[1].end,
    );
    let mut swapped = good.clone();
    let (a, b) = (good[r0.clone()].to_vec(), good[r1.clone()].to_vec());
    swapped[r0].copy_from_slice(&b);
    swapped[r1].copy_from_slice(&a);
    reseal(&mut swapped);
    let e = t.restore(&swapped).unwrap_err().to_string();
    assert!(e.contains("reordered"), "{e}");

    // A log-scale of 1e30 in head 2's core snapshot, both checksums recomputed.
    let mut big = good.clone();
    let r = recs[2].clone();
    big[r.start + 48..r.start + 56].copy_from_slice(&1e30f64.to_le_bytes());
    reseal(&mut big[r]);
    reseal(&mut big);
    let e = t.restore(&big).unwrap_err().to_string();
    assert!(
        e.contains("head 2") && e.contains("not a valid state"),
        "{e}"
    );
    assert_eq!(t.snapshot().unwrap(), before);
}

/// Version-1 tensor snapshots (no indices, no checksum, version-1 core snapshots) restore.
#[test]
fn version_1_tensor_snapshots_restore() {
    let p = Performer::builder(D)
        .heads(H)
        .features(32)
        .causal(true)
        .build()
        .unwrap();
    let mut s = stream_with_tokens(&p, 5);
    let good = s.snapshot().unwrap();
    // Rebuild it as version 1: each core snapshot (layout in favor-core's snapshot docs) with
    // one copy of S and z — total + compensation + the ring's keys, summed in f64 and rounded
    // to f32 — no ring and no checksum.
    let (m, dv) = (32, D);
    let ring = favor_core::RING;
    let mut v1 = good[..T_HEADER].to_vec();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    let part = (m * dv + m) * 4;
    v1[32..40].copy_from_slice(&((56 + part) as u64).to_le_bytes());
    for r in records(&good) {
        let c = &good[r];
        let f = |at: usize| f64::from(f32::from_le_bytes(c[at..at + 4].try_into().unwrap()));
        let r_len = u32::from_le_bytes(c[12..16].try_into().unwrap()) as usize;
        let (keys, values) = (56 + 2 * part, 56 + 2 * part + ring * m * 4);
        let mut h = c[..56].to_vec();
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[12..16].copy_from_slice(&0u32.to_le_bytes());
        for idx in 0..m * dv + m {
            let ring_sum: f64 = (0..r_len)
                .map(|b| match idx < m * dv {
                    true => f(keys + 4 * (b * m + idx / dv)) * f(values + 4 * (b * dv + idx % dv)),
                    false => f(keys + 4 * (b * m + idx - m * dv)),
                })
                .sum();
            let total = f(56 + 4 * idx) + f(56 + part + 4 * idx) + ring_sum;
            h.extend_from_slice(&(total as f32).to_le_bytes());
        }
        v1.extend_from_slice(&h);
    }
    let mut t = p.stream(B).unwrap();
    t.restore(&v1).unwrap();
    assert_eq!(t.tokens(), 5);
    let tok = data(B * H * D, 22, 0.5);
    let x = TensorView::new([B, H, 1, D], &tok).unwrap();
    let (a, b) = (s.step(x, x, x).unwrap(), t.step(x, x, x).unwrap());
    assert!(max_abs_diff(a.data(), b.data()) < 1e-6);
}

#[test]
fn non_finite_input_names_batch_and_head_and_leaves_stream_unchanged() {
    let p = Performer::builder(D)
        .heads(H)
        .features(32)
        .causal(true)
        .build()
        .unwrap();
    let mut s = p.stream(B).unwrap();
    let mut tok = data(B * H * D, 11, 0.5);
    let t = TensorView::new([B, H, 1, D], &tok).unwrap();
    s.step(t, t, t).unwrap();
    let before = s.snapshot().unwrap();
    // Last head of the last batch element: the earlier heads must not have been updated.
    tok[(B * H - 1) * D + 3] = f32::NAN;
    let bad = TensorView::new([B, H, 1, D], &tok).unwrap();
    let good_data = data(B * H * D, 12, 0.5);
    let good = TensorView::new([B, H, 1, D], &good_data).unwrap();
    let e = s.step(good, bad, good).unwrap_err();
    match e {
        Error::Core {
            batch,
            head,
            source,
        } => {
            assert_eq!((batch, head), (B - 1, H - 1));
            assert!(matches!(
                source,
                favor_core::Error::NonFinite { what: "k", row: 0 }
            ));
        }
        e => panic!("unexpected {e}"),
    }
    assert_eq!(s.snapshot().unwrap(), before);
    // f64 inputs that overflow f32 are refused the same way at f32 precision.
    let big = vec![1e300f64; B * H * D];
    let big = TensorView::new([B, H, 1, D], &big).unwrap();
    assert!(matches!(
        s.step(big, big, big),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(s.snapshot().unwrap(), before);
}

#[test]
fn shape_errors_name_the_tensor_and_dims() {
    let p = Performer::builder(D).heads(H).causal(true).build().unwrap();
    let (q, k, v) = qkv(4);
    let short = &k[..B * H * (L - 1) * D];
    let k_short = TensorView::new([B, H, L - 1, D], short).unwrap();
    let e = p.forward(view(&q), k_short, view(&v)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "k: expected shape [{B}, {H}, {L}, {D}], got [{B}, {H}, {}, {D}]",
            L - 1
        )
    );
    let e = p
        .forward_masked(view(&q), view(&k), view(&v), &[true; 3])
        .unwrap_err();
    assert!(e.to_string().starts_with("key_mask: expected shape"), "{e}");
    assert!(TensorView::new([1, 1, 1, 2], &[0f32; 3]).is_err());
    let empty: [f32; 0] = [];
    let e = p
        .forward(
            TensorView::new([1, H, 0, D], &empty).unwrap(),
            TensorView::new([1, H, 0, D], &empty).unwrap(),
            TensorView::new([1, H, 0, D], &empty).unwrap(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("no empty dimension"), "{e}");
    assert_eq!(p.calls(), 0, "failed calls are not counted");
}

#[test]
fn builder_rejects_contradictions() {
    let sorf = || {
        Performer::builder(8)
            .projection(Projection::Sorf)
            .structured_projection(true)
    };
    let cases = [
        Performer::builder(0).build(),
        Performer::builder(8).heads(0).build(),
        Performer::builder(8).projection(Projection::None).build(),
        Performer::builder(8)
            .kernel(Kernel::Relu)
            .projection(Projection::None)
            .features(4)
            .build(),
        Performer::builder(8)
            .projection_matrix(3, &[0f32; 23])
            .build(),
        Performer::builder(8)
            .projection_matrix(3, &[0f32; 24])
            .features(4)
            .build(),
        Performer::builder(8)
            .projection_matrix(3, &[f32::NAN; 24])
            .build(),
        Performer::builder(8)
            .projection_matrix(3, &[0f32; 24])
            .redraw(Redraw::Every(2))
            .build(),
        Performer::builder(8).redraw(Redraw::Every(0)).build(),
        Performer::builder(8).epsilon(-1.0).build(),
        Performer::builder(8).chunk(0).build(),
        // structured_projection: only a drawn SORF W under a softmax map.
        Performer::builder(8).structured_projection(true).build(),
        sorf().kernel(Kernel::Relu).build(),
        sorf().kernel(Kernel::Gerf).build(),
        sorf().projection_matrix(3, &[0f32; 24]).build(),
        sorf().compat(Compat::PerformerPytorch).build(),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        assert!(c.is_err(), "case {i} built");
    }
    let relu = Performer::builder(8)
        .kernel(Kernel::Relu)
        .projection(Projection::None)
        .build()
        .unwrap();
    assert_eq!(relu.features(), 8);
}

#[test]
fn half_inputs_are_widened_exactly() {
    let (q, k, v) = qkv(5);
    let to_h = |x: &[f32]| x.iter().map(|&a| f16::from_f32(a)).collect::<Vec<_>>();
    let (hq, hk, hv) = (to_h(&q), to_h(&k), to_h(&v));
    let back = |x: &[f16]| x.iter().map(|a| a.to_f32()).collect::<Vec<_>>();
    let (wq, wk, wv) = (back(&hq), back(&hk), back(&hv));
    let p = Performer::builder(D).heads(H).features(32).build().unwrap();
    let a = p.forward(tv(L, &hq), tv(L, &hk), tv(L, &hv)).unwrap();
    let b = p.forward(view(&wq), view(&wk), view(&wv)).unwrap();
    assert_eq!(a, b);
    // Round trips: f16 and bf16 of representable values are exact; others round to nearest.
    let t = Tensor::from_vec([1, 1, 1, 4], vec![1.0, -2.5, 65504.0, 1.0e-3]).unwrap();
    let h = t.to_f16();
    assert_eq!(
        Tensor::from_elements([1, 1, 1, 4], &h).unwrap().data()[..3],
        [1.0, -2.5, 65504.0]
    );
    assert!((h[3].to_f32() - 1.0e-3).abs() <= 1.0e-3 * 2f32.powi(-11));
    let bf = t.to_bf16();
    assert_eq!(bf[1].to_f32(), -2.5);
    assert!((bf[3].to_f32() - 1.0e-3).abs() <= 1.0e-3 * 2f32.powi(-8));
    let bytes = t.as_bytes().to_vec();
    assert_eq!(Tensor::from_bytes([1, 1, 1, 4], &bytes).unwrap(), t);
    assert!(Tensor::from_bytes([1, 1, 1, 4], &bytes[1..]).is_err());
}

#[test]
fn key_mask_equals_dropping_the_keys() {
    // Each batch element keeps a different prefix of its keys; the oracle runs that element
    // alone on the kept keys.
    let (q, k, v) = qkv(6);
    let keep = [50, 23];
    let mut mask = vec![false; B * L];
    for b in 0..B {
        mask[b * L..b * L + keep[b]].fill(true);
    }
    let p = Performer::builder(D)
        .heads(H)
        .features(64)
        .backend(Backend::Scalar)
        .build()
        .unwrap();
    let masked = p
        .forward_masked(view(&q), view(&k), view(&v), &mask)
        .unwrap();
    for (b, &kept) in keep.iter().enumerate() {
        let rows = |x: &[f32], n: usize| -> Vec<f32> {
            (0..H)
                .flat_map(|h| view(x).head(b, h)[..n * D].to_vec())
                .collect()
        };
        let one = |x: &[f32], n: usize| {
            TensorView::new([1, H, n, D], x)
                .map(|t| t.data().to_vec())
                .unwrap()
        };
        let (bq, bk, bv) = (
            one(&rows(&q, L), L),
            one(&rows(&k, kept), kept),
            one(&rows(&v, kept), kept),
        );
        let dropped = p
            .forward(
                TensorView::new([1, H, L, D], &bq).unwrap(),
                TensorView::new([1, H, kept, D], &bk).unwrap(),
                TensorView::new([1, H, kept, D], &bv).unwrap(),
            )
            .unwrap();
        for h in 0..H {
            // Same sums in the same order but for masked zero rows: equal up to a few ulps.
            assert!(
                max_abs_diff(masked.head(b, h), dropped.head(0, h)) < 1e-6,
                "batch {b}"
            );
        }
    }
}

#[test]
fn explicit_projection_and_redraw() {
    let (q, k, v) = qkv(7);
    let build = |seed| {
        Performer::builder(D)
            .heads(H)
            .features(32)
            .seed(seed)
            .redraw(Redraw::Every(2))
    };
    let p = build(5).build().unwrap();
    let w0 = p.projection_f32().to_vec();
    // Loading the exported matrix reproduces the layer bit for bit.
    let loaded = Performer::builder(D)
        .heads(H)
        .projection_matrix(32, &w0)
        .build()
        .unwrap();
    let o0 = p.forward(view(&q), view(&k), view(&v)).unwrap();
    assert_eq!(loaded.forward(view(&q), view(&k), view(&v)).unwrap(), o0);
    assert_eq!(p.forward(view(&q), view(&k), view(&v)).unwrap(), o0);
    // The third call redraws from redraw_seed(5, 0).
    let o2 = p.forward(view(&q), view(&k), view(&v)).unwrap();
    assert_ne!(o2, o0);
    let fresh = Performer::builder(D)
        .heads(H)
        .features(32)
        .seed(redraw_seed(5, 0))
        .build()
        .unwrap();
    assert_eq!(fresh.forward(view(&q), view(&k), view(&v)).unwrap(), o2);
    // Explicit redraw.
    p.redraw(5).unwrap();
    assert_eq!(p.projection_f32(), &w0[..]);
    // ... and the layer's map, kept beside the projection, was rebuilt over it.
    assert_eq!(p.forward(view(&q), view(&k), view(&v)).unwrap(), o0);
}

#[test]
fn close_to_exact_softmax_with_many_features() {
    // Oracle: f64 exact softmax. With m = 2048 ORF and |q|,|k| ≤ 0.6·√16 ≈ 2.4... the
    // relative error of FAVOR+ scales as 1/√m; 0.05 of max |v| is a loose 5σ-style bound
    // for these norms (favor-core's statistics tests pin the rate itself).
    let (q, k, v) = qkv(8);
    let p = Performer::builder(D)
        .heads(H)
        .features(2048)
        .precision(Precision::F64)
        .build()
        .unwrap();
    let out = p.forward(view(&q), view(&k), view(&v)).unwrap();
    let shape = Shape::new(L, D, D);
    let to64 = |x: &[f32]| x.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
    let mut worst = 0f64;
    for b in 0..B {
        for h in 0..H {
            let (tq, tk, tv) = (
                to64(view(&q).head(b, h)),
                to64(view(&k).head(b, h)),
                to64(view(&v).head(b, h)),
            );
            let mut exact = vec![0f64; L * D];
            softmax_attention(
                &Scalar,
                &tq,
                &tk,
                &tv,
                shape,
                &ExactOptions::default(),
                &mut exact,
            )
            .unwrap();
            for (a, e) in out.head(b, h).iter().zip(&exact) {
                worst = worst.max((f64::from(*a) - e).abs());
            }
        }
    }
    assert!(worst < 0.05, "worst {worst}");
}

#[test]
fn inputs_outside_the_supported_range_are_refused_before_anything_runs() {
    // Keys whose squared norm overflows f32 (favor-core would treat them as absent).
    let p0 = Performer::builder(D).features(8).build().unwrap();
    let mut k0 = vec![0.1f32; D];
    k0[0] = 1e20;
    let q0 = vec![0.1f32; D];
    let s1 = [1, 1, 1, D];
    let e = p0
        .forward(at(s1, &q0), at(s1, &k0), at(s1, &q0))
        .unwrap_err();
    assert!(matches!(e, Error::OutOfRange { tensor: "k", .. }), "{e}");
    // A finite projection with a huge entry: w·k overflows f32.
    let mut w = vec![0.5f32; 8 * D];
    w[0] = 3e38;
    let p = Performer::builder(D)
        .projection_matrix(8, &w)
        .causal(true)
        .build()
        .unwrap();
    let mut k = vec![0.0f32; D];
    k[0] = 100.0;
    let one = |x: &[f32]| TensorView::new([1, 1, 1, D], x).unwrap().data().to_vec();
    let (k, q, v) = (one(&k), one(&[0.1; D]), one(&[1.0; D]));
    let e = p.forward(at(s1, &q), at(s1, &k), at(s1, &v)).unwrap_err();
    // The matrix is at fault, not the ordinary q.
    assert!(
        matches!(
            e,
            Error::OutOfRange {
                tensor: "projection",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("projection: outside the supported range: a row of norm 3.0000000"),
        "{e}"
    );
    assert_eq!(p.calls(), 0);
    let mut s = p.stream(1).unwrap();
    assert!(matches!(
        s.step(at(s1, &q), at(s1, &k), at(s1, &v)),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(s.tokens(), 0);
    // Values so large that a sum of two could overflow f32.
    let ok = Performer::builder(D)
        .features(8)
        .causal(true)
        .build()
        .unwrap();
    let big = vec![3e37f32; 2 * D];
    let s2 = [1, 1, 2, D];
    let small = vec![0.1f32; 2 * D];
    let e = ok
        .forward(at(s2, &small), at(s2, &small), at(s2, &big))
        .unwrap_err();
    assert!(matches!(e, Error::OutOfRange { tensor: "v", .. }), "{e}");
    // f64 inputs that do not fit f32 say so, and work at f64 precision.
    let huge = vec![1e300f64; 2 * D];
    let tiny = vec![0.1f64; 2 * D];
    let e = ok
        .forward(at(s2, &tiny), at(s2, &tiny), at(s2, &huge))
        .unwrap_err();
    assert!(e.to_string().contains("does not fit f32"), "{e}");
    // At f64 precision q and k may exceed f32, but values must fit the f32 output.
    let q64 = vec![1e30f64; 2 * D];
    let v64 = vec![1e200f64; 2 * D];
    let wide = Performer::builder(D)
        .features(8)
        .precision(Precision::F64)
        .build()
        .unwrap();
    let out = wide
        .forward(at(s2, &q64), at(s2, &q64), at(s2, &tiny))
        .unwrap();
    assert!(out.data().iter().all(|x| x.is_finite()));
    let e = wide
        .forward(at(s2, &tiny), at(s2, &tiny), at(s2, &v64))
        .unwrap_err();
    assert!(matches!(e, Error::OutOfRange { tensor: "v", .. }), "{e}");
}

#[test]
fn huge_chunks_and_batches_are_errors_or_harmless() {
    let (q, k, v) = qkv(12);
    let a = Performer::builder(D)
        .heads(H)
        .causal(true)
        .chunk(1 << 40)
        .build()
        .unwrap();
    let b = Performer::builder(D)
        .heads(H)
        .causal(true)
        .chunk(L)
        .build()
        .unwrap();
    assert_eq!(
        a.forward(view(&q), view(&k), view(&v)).unwrap(),
        b.forward(view(&q), view(&k), view(&v)).unwrap()
    );
    assert!(a.stream(usize::MAX / 2 + 1).is_err());
}

#[test]
fn sizes_beyond_memory_are_errors_not_aborts() {
    // The reproduction: 2^41 (batch, head) states of about 8 KiB (the compensated
    // sums and the ring of recent keys), about 16 PiB. It used to abort the process in the
    // state's allocation.
    let p = Performer::builder(16)
        .heads(2)
        .features(32)
        .causal(true)
        .build()
        .unwrap();
    let e = p.stream(1 << 40).unwrap_err();
    assert!(
        matches!(e, Error::Alloc { what: "stream state", bytes: Some(b) } if b > 1 << 52),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("stream state: cannot allocate 16."),
        "{e}"
    );
    // A stream whose batch × heads overflows the size arithmetic.
    assert_eq!(
        p.stream(usize::MAX / 2).unwrap_err(),
        Error::Alloc {
            what: "stream state",
            bytes: None
        }
    );
    // A projection beyond any address space (2^40 × 64 f64 = 512 TiB), and one whose element
    // count overflows usize.
    let e = Performer::builder(64)
        .features(1 << 40)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        Error::Alloc {
            what: "projection",
            bytes: Some(1 << 49)
        }
    );
    let e = Performer::builder(1 << 40)
        .features(1 << 40)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        Error::Alloc {
            what: "projection",
            bytes: None
        }
    );
    // Tensors: a shape whose size overflows, and one beyond the address space.
    assert_eq!(
        Tensor::zeros([1 << 20; 4]).unwrap_err(),
        Error::Alloc {
            what: "tensor",
            bytes: None
        }
    );
    assert!(matches!(
        Tensor::zeros([1 << 20, 1 << 20, 1 << 8, 1]).unwrap_err(),
        Error::Alloc {
            what: "tensor",
            bytes: Some(_)
        }
    ));
}

#[test]
fn prefill_buffers_serve_heads_in_turn_without_leaking() {
    // A prefill allocates its buffers (inputs widened to the precision, outputs before
    // narrowing, scratch) for the heads that can run at once, before any state changes;
    // with B·H = 6 heads each set serves several heads in turn. Oracle: causal forward, whose
    // heads allocate their own, on the same f16 inputs: the same chunked path, bit for bit.
    let (q, k, v) = qkv(13);
    let h16 = |x: &[f32]| x.iter().map(|&a| f16::from_f32(a)).collect::<Vec<_>>();
    let (hq, hk, hv) = (h16(&q), h16(&k), h16(&v));
    for precision in [Precision::F32, Precision::F64] {
        for parallel in [false, true] {
            let p = Performer::builder(D)
                .heads(H)
                .features(32)
                .causal(true)
                .precision(precision)
                .parallel(parallel)
                .build()
                .unwrap();
            let want = p.forward(tv(L, &hq), tv(L, &hk), tv(L, &hv)).unwrap();
            let mut s = p.stream(B).unwrap();
            let got = s.prefill(tv(L, &hq), tv(L, &hk), tv(L, &hv)).unwrap();
            assert_eq!(got, want, "{precision:?}, parallel {parallel}");
        }
    }
}

#[test]
fn range_and_shape_errors_say_what_is_wrong() {
    // A row of f64 elements near 1e300: its norm is finite (the squared norm is not), and
    // the message gives the norm, not `inf`.
    let s1 = [1, 1, 1, D];
    let mut q = vec![0.5f64; D];
    q[3] = 3e300;
    q[4] = -4e300;
    let small = vec![0.1f64; D];
    let p = Performer::builder(D)
        .features(8)
        .precision(Precision::F64)
        .build()
        .unwrap();
    let e = p
        .forward(at(s1, &q), at(s1, &small), at(s1, &small))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "q: outside the supported range: a row of norm 5e300: its squared norm overflows f64"
    );
    // An element that does not fit f32 is located down to its column.
    let mut k = vec![0.1f64; 2 * D];
    k[D + 5] = 1e39;
    let p32 = Performer::builder(D).features(8).build().unwrap();
    let s2 = [1, 1, 2, D];
    let e = p32
        .forward(
            at(s2, &[0.1f64; 2 * D]),
            at(s2, &k),
            at(s2, &[0.1f64; 2 * D]),
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("element 1e39 (batch 0, head 0, row 1, column 5) does not fit f32"),
        "{e}"
    );
    // A projection matrix with no rows is reported with its real shape.
    let e = Performer::builder(16)
        .projection_matrix::<f32>(0, &[])
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "projection: expected shape [m, 16] with m > 0, got [0, 16]"
    );
    let e = Performer::builder(16)
        .projection_matrix(2, &[0.5f32; 31])
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "projection: shape [2, 16] needs 32 elements, got 31"
    );
}

/// `Projection::Simplex` draws favor-core's simplex projection: each block of `head_dim`
/// rows of W has pairwise cosine −1/(d−1); a feature count that is not a multiple of
/// `head_dim` is a configuration error at build time, not a panic.
#[test]
fn simplex_projection_is_drawn_and_checked() {
    let p = Performer::builder(D)
        .heads(H)
        .features(2 * D)
        .projection(Projection::Simplex)
        .build()
        .unwrap();
    let w = p.projection_f64();
    let want = -1.0 / (D as f64 - 1.0);
    let row = |r: usize| &w[r * D..(r + 1) * D];
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for (r, s) in [(0, 1), (2, D - 1), (D, D + 3)] {
        let c = dot(row(r), row(s)) / (dot(row(r), row(r)) * dot(row(s), row(s))).sqrt();
        assert!((c - want).abs() < 1e-12, "rows {r}, {s}: {c}");
    }
    let (q, k, v) = qkv(1);
    let out = p.forward(view(&q), view(&k), view(&v)).unwrap();
    assert!(out.data().iter().all(|x| x.is_finite()));
    let bad = Performer::builder(D)
        .heads(H)
        .features(D + 1)
        .projection(Projection::Simplex)
        .build();
    assert!(matches!(bad, Err(Error::Config(_))), "{bad:?}");
}
