//! The custom op and `PerformerAttention` against favor-tensor's own forward on the same
//! numbers (the adapter must only move data), and hybrid attention with a window covering the
//! sequence against exact softmax attention in f64.

use candle_core::{DType, Device, Tensor};
use favor_candle::{FavorAttentionOp, Performer, PerformerAttention, key_mask, key_mask_from_bias};
use favor_tensor::{TensorView, TensorViewMut, bf16, f16};

use crate::common::{data, input, max_diff};

const SHAPE: [usize; 4] = [2, 24, 4, 16];

fn performer() -> Performer {
    Performer::builder(16)
        .heads(4)
        .features(32)
        .seed(3)
        .build()
        .unwrap()
}

/// favor-tensor's output for `[B, S, H, D]` f32 data, laid out `[B, S, H, D]`.
fn reference(p: &Performer, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&[bool]>) -> Vec<f32> {
    let (q, k, v) = (data(q), data(k), data(v));
    let [b, s, h, d] = SHAPE;
    let (qv, kv, vv) = (
        TensorView::from_bshd(SHAPE, &q).unwrap(),
        TensorView::from_bshd(SHAPE, &k).unwrap(),
        TensorView::from_bshd(SHAPE, &v).unwrap(),
    );
    let mut out = vec![0f32; b * s * h * d];
    p.forward_into(
        qv,
        kv,
        vv,
        mask,
        TensorViewMut::from_bshd(SHAPE, &mut out).unwrap(),
    )
    .unwrap();
    out
}

#[test]
fn contiguous_inputs_give_favor_tensors_output_bit_for_bit() {
    let p = performer();
    let (q, k, v) = (
        input(SHAPE, 0.0, 0.4),
        input(SHAPE, 1.0, 0.4),
        input(SHAPE, 2.0, 1.0),
    );
    let out = PerformerAttention::new(p.clone())
        .forward(&q, &k, &v)
        .unwrap();
    assert_eq!(out.dims(), &SHAPE);
    assert_eq!(out.dtype(), DType::F32);
    assert_eq!(data(&out), reference(&p, &q, &k, &v, None));
}

#[test]
fn strided_and_offset_inputs_give_the_contiguous_output() {
    let p = performer();
    let (q, k, v) = (
        input(SHAPE, 0.0, 0.4),
        input(SHAPE, 1.0, 0.4),
        input(SHAPE, 2.0, 1.0),
    );
    let want = reference(&p, &q, &k, &v, None);
    let attn = PerformerAttention::new(p);
    // [B, H, S, D] memory seen as [B, S, H, D] (a transpose: strided, read in place).
    let heads_first = |t: &Tensor| {
        t.transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(1, 2)
            .unwrap()
    };
    let (qs, ks, vs) = (heads_first(&q), heads_first(&k), heads_first(&v));
    assert!(!qs.is_contiguous());
    assert_eq!(data(&attn.forward(&qs, &ks, &vs).unwrap()), want);
    // A slice of a longer sequence (a start offset).
    let [b, s, h, d] = SHAPE;
    let pad = |t: &Tensor| {
        Tensor::cat(&[&input([b, 5, h, d], 9.0, 1.0), t], 1)
            .unwrap()
            .narrow(1, 5, s)
            .unwrap()
    };
    assert_eq!(
        data(&attn.forward(&pad(&q), &pad(&k), &pad(&v)).unwrap()),
        want
    );
    // The dim axis strided (from [B, S, D, H] memory): gathered, same numbers.
    let dim_strided = |t: &Tensor| {
        t.transpose(2, 3)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(2, 3)
            .unwrap()
    };
    let out = attn
        .forward(&dim_strided(&q), &dim_strided(&k), &dim_strided(&v))
        .unwrap();
    assert_eq!(data(&out), want);
}

#[test]
fn every_dtype_matches_favor_tensor_in_that_dtype() {
    let p = performer();
    let attn = PerformerAttention::new(p.clone());
    let (q, k, v) = (
        input(SHAPE, 0.0, 0.4),
        input(SHAPE, 1.0, 0.4),
        input(SHAPE, 2.0, 1.0),
    );
    for dtype in [DType::F64, DType::F16, DType::BF16] {
        let cast = |t: &Tensor| t.to_dtype(dtype).unwrap();
        let out = attn.forward(&cast(&q), &cast(&k), &cast(&v)).unwrap();
        assert_eq!((out.dims(), out.dtype()), (&SHAPE[..], dtype));
        let got = data(&out);
        // favor-tensor on the same rounded inputs, output of the same type.
        let want: Vec<f32> = match dtype {
            DType::F64 => same::<f64>(&p, &cast(&q), &cast(&k), &cast(&v)),
            DType::F16 => same::<f16>(&p, &cast(&q), &cast(&k), &cast(&v)),
            _ => same::<bf16>(&p, &cast(&q), &cast(&k), &cast(&v)),
        };
        assert_eq!(got, want, "{dtype:?}");
    }
}

fn same<E>(p: &Performer, q: &Tensor, k: &Tensor, v: &Tensor) -> Vec<f32>
where
    E: favor_tensor::Element + candle_core::WithDType,
{
    let get = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<E>().unwrap();
    let (q, k, v) = (get(q), get(k), get(v));
    let mut out = vec![<E as candle_core::WithDType>::from_f64(0.0); q.len()];
    p.forward_into(
        TensorView::from_bshd(SHAPE, &q).unwrap(),
        TensorView::from_bshd(SHAPE, &k).unwrap(),
        TensorView::from_bshd(SHAPE, &v).unwrap(),
        None,
        TensorViewMut::from_bshd(SHAPE, &mut out).unwrap(),
    )
    .unwrap();
    out.iter()
        .map(|&x| <E as candle_core::WithDType>::to_f64(x) as f32)
        .collect()
}

#[test]
fn masks_in_both_candle_conventions_remove_the_same_keys() {
    let p = performer();
    let attn = PerformerAttention::new(p.clone());
    let (q, k, v) = (
        input(SHAPE, 0.0, 0.4),
        input(SHAPE, 1.0, 0.4),
        input(SHAPE, 2.0, 1.0),
    );
    let [b, s, _, _] = SHAPE;
    let lens = [s, 17];
    let flags: Vec<bool> = lens
        .iter()
        .flat_map(|&n| (0..s).map(move |i| i < n))
        .collect();
    let want = reference(&p, &q, &k, &v, Some(&flags));
    let ones: Vec<u8> = flags.iter().map(|&f| f as u8).collect();
    let mask = Tensor::from_vec(ones, (b, s), &Device::Cpu).unwrap();
    assert_eq!(key_mask(&mask).unwrap(), flags);
    assert_eq!(data(&attn.forward_masked(&q, &k, &v, &mask).unwrap()), want);
    // candle-transformers' extended mask: (1 − mask)·f32::MIN as [B, 1, 1, S].
    let bias = ((1.0 - mask.to_dtype(DType::F32).unwrap()).unwrap() * f32::MIN as f64)
        .unwrap()
        .reshape((b, 1, 1, s))
        .unwrap();
    assert_eq!(key_mask_from_bias(&bias).unwrap(), flags);
    assert_eq!(data(&attn.forward_masked(&q, &k, &v, &bias).unwrap()), want);
    // The op with flags directly.
    let out = q
        .apply_op3_no_bwd(&k, &v, &FavorAttentionOp::new(&p).with_key_mask(&flags))
        .unwrap();
    assert_eq!(data(&out), want);
}

#[test]
fn grouped_key_value_heads() {
    let p = Performer::builder(16)
        .heads(4)
        .kv_heads(2)
        .features(32)
        .build()
        .unwrap();
    let [b, s, h, d] = SHAPE;
    let q = input([b, s, h, d], 0.0, 0.4);
    let (k, v) = (input([b, s, 2, d], 1.0, 0.4), input([b, s, 2, d], 2.0, 1.0));
    let out = PerformerAttention::new(p.clone())
        .forward(&q, &k, &v)
        .unwrap();
    let (qd, kd, vd) = (data(&q), data(&k), data(&v));
    let want = p
        .forward(
            TensorView::from_bshd([b, s, h, d], &qd).unwrap(),
            TensorView::from_bshd([b, s, 2, d], &kd).unwrap(),
            TensorView::from_bshd([b, s, 2, d], &vd).unwrap(),
        )
        .unwrap();
    let got = out.transpose(1, 2).unwrap().contiguous().unwrap();
    assert_eq!(data(&got), want.data());
}

#[test]
fn a_window_covering_the_sequence_is_exact_softmax_attention() {
    let [b, s, h, d] = SHAPE;
    let p = Performer::builder(d)
        .heads(h)
        .features(16)
        .window(s)
        .build()
        .unwrap();
    let (q, k, v) = (
        input(SHAPE, 0.0, 0.6),
        input(SHAPE, 1.0, 0.6),
        input(SHAPE, 2.0, 1.0),
    );
    let got = data(&PerformerAttention::new(p).forward(&q, &k, &v).unwrap());
    // Exact softmax(q·kᵀ/√d)·v in f64, written out here.
    let (q, k, v) = (data(&q), data(&k), data(&v));
    let at = |ib: usize, is: usize, ih: usize| ((ib * s + is) * h + ih) * d;
    let mut want = vec![0f32; got.len()];
    for ib in 0..b {
        for ih in 0..h {
            for i in 0..s {
                let logits: Vec<f64> = (0..s)
                    .map(|j| {
                        let (qi, kj) = (at(ib, i, ih), at(ib, j, ih));
                        (0..d)
                            .map(|t| q[qi + t] as f64 * k[kj + t] as f64)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let top = logits.iter().cloned().fold(f64::MIN, f64::max);
                let w: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
                let total: f64 = w.iter().sum();
                for t in 0..d {
                    let o: f64 = (0..s)
                        .map(|j| w[j] * v[at(ib, j, ih) + t] as f64)
                        .sum::<f64>()
                        / total;
                    want[at(ib, i, ih) + t] = o as f32;
                }
            }
        }
    }
    assert!(max_diff(&got, &want) < 2e-6, "{}", max_diff(&got, &want));
}

#[test]
fn bad_inputs_are_candle_errors() {
    let attn = PerformerAttention::new(performer());
    let (q, k, v) = (
        input(SHAPE, 0.0, 0.4),
        input(SHAPE, 1.0, 0.4),
        input(SHAPE, 2.0, 1.0),
    );
    let msg = |r: candle_core::Result<Tensor>| r.unwrap_err().to_string();
    let flat = q.flatten_from(2).unwrap();
    assert!(msg(attn.forward(&flat, &k, &v)).contains("[batch, seq, heads, dim]"));
    let f64k = k.to_dtype(DType::F64).unwrap();
    assert!(msg(attn.forward(&q, &f64k, &v)).contains("one type"));
    let [b, s, _, d] = SHAPE;
    let three_heads = input([b, s, 3, d], 0.0, 0.4);
    assert!(msg(attn.forward(&three_heads, &k, &v)).contains("q must be [batch, seq, 4, 16]"));
    let short_v = v.narrow(1, 0, s - 1).unwrap();
    assert!(msg(attn.forward(&q, &k, &short_v)).contains("v must be"));
    let odd = Tensor::new(&[[0f32, -0.5]], &Device::Cpu).unwrap();
    assert!(
        key_mask_from_bias(&odd)
            .unwrap_err()
            .to_string()
            .contains("neither 0")
    );
    let short_mask = Tensor::ones((b, s - 1), DType::U8, &Device::Cpu).unwrap();
    assert!(attn.forward_masked(&q, &k, &v, &short_mask).is_err());
    // Non-finite input: favor's typed error, surfaced through candle.
    let mut bad = data(&q);
    bad[7] = f32::NAN;
    let bad = Tensor::from_vec(bad, SHAPE.to_vec(), &Device::Cpu).unwrap();
    assert!(attn.forward(&bad, &k, &v).is_err());
}
