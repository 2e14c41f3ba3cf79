//! The fitted kernels (`Kernel::Gerf`, `Kernel::Saderf`) through favor-tensor: each head of a
//! forward call is favor-core's plan with a `GerfSoftmax` fitted to that call's head (A from
//! `gerf_rho` of its queries and its key/value head's visible keys; SADERF's ψ from
//! `saderf_fit`, rows rescaled), bit for bit, in f32 and f64, bidirectional and hybrid, with
//! grouped keys and a key mask; causal layers and streams refuse them.

use favor_core::{
    GerfSoftmax, HybridShape, PlanKind, Scalar, Shape, gerf_optimal_a, gerf_rho, saderf_fit,
    transpose_projection,
};
use favor_tensor::*;

use crate::common::data;

const B: usize = 2;
const L: usize = 40;
const D: usize = 8;
const M: usize = 24;

/// Queries narrow and keys wide in the first coordinates, the other way round in the rest:
/// ψ far from 1, so a fit from the wrong rows shows.
fn inputs(heads: usize, kv: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut q = data(B * heads * L * D, 21, 0.5);
    let mut k = data(B * kv * L * D, 22, 0.5);
    for (i, x) in q.iter_mut().enumerate() {
        *x *= if i % D < 3 { 0.3 } else { 1.5 } * (1.0 + (i / (L * D)) as f32 * 0.2);
    }
    for (i, x) in k.iter_mut().enumerate() {
        *x *= if i % D < 3 { 3.0 } else { 0.5 } * (1.0 + (i / (L * D)) as f32 * 0.3);
    }
    (q, k, data(B * kv * L * D, 23, 1.0))
}

/// One head through favor-core: the fit of `kernel` from `q` and the keys `mask` leaves, the
/// rescaled rows, a `GerfSoftmax` over `w`, the plan the layer runs.
#[allow(clippy::too_many_arguments)]
fn core_head<T: favor_core::Float>(
    kernel: Kernel,
    w: &[T],
    (q, k, v): (&[T], &[T], &[T]),
    mask: Option<&[bool]>,
    hybrid: Option<HybridShape>,
) -> (Vec<T>, f64) {
    let seen: Vec<T> = match mask {
        Some(m) => k
            .chunks_exact(D)
            .zip(m)
            .filter(|(_, on)| **on)
            .flat_map(|(r, _)| r.iter().copied())
            .collect(),
        None => k.to_vec(),
    };
    let (mut qs, mut ks) = (q.to_vec(), k.to_vec());
    let a = match kernel {
        Kernel::Gerf => gerf_optimal_a(gerf_rho(q, &seen, D, true).unwrap()),
        Kernel::Saderf => {
            let mut psi = vec![T::zero(); D];
            let fit = saderf_fit(q, &seen, D, true, &mut psi).unwrap();
            fit.apply_queries(&mut qs).unwrap();
            fit.apply_keys(&mut ks).unwrap();
            fit.a()
        }
        _ => unreachable!(),
    };
    let mut norms = vec![T::zero(); M];
    let mut wt = vec![T::zero(); M * D];
    transpose_projection(w, M, D, &mut wt).unwrap();
    let phi = GerfSoftmax::new(w, M, D, a, &mut norms)
        .unwrap()
        .with_transposed_projection(&wt)
        .unwrap();
    let block = if hybrid.is_some() { 32 } else { L };
    let opts = favor_core::Options {
        block,
        key_mask: mask,
        ..Default::default()
    };
    let mut plan = favor_core::Plan::new(
        PlanKind::Bidirectional,
        Scalar,
        &phi,
        Shape::new(L, D, D),
        opts,
    )
    .unwrap();
    if let Some(s) = hybrid {
        plan = plan.with_hybrid(s).unwrap();
    }
    let mut out = vec![T::zero(); L * D];
    let mut scratch = vec![T::zero(); plan.scratch_len()];
    plan.run(&qs, &ks, v, &mut out, &mut scratch).unwrap();
    (out, a)
}

fn bits<T: favor_core::Float>(x: &[T]) -> Vec<u64> {
    x.iter()
        .map(|e| favor_core::Float::to_f64(*e).to_bits())
        .collect()
}

/// Every (batch, head) of a forward call equals favor-core on that head, bit for bit: f32 and
/// f64, plain and hybrid, grouped keys (query head h fits with key/value head h / 2), with and
/// without a key mask. The same head fitted with another key/value head's keys differs, so
/// the comparison would see a fit from the wrong head.
#[test]
fn each_head_equals_favor_core_with_the_fitted_map() {
    let (heads, kv) = (4, 2);
    let (q, k, v) = inputs(heads, kv);
    let mask: Vec<bool> = (0..B * L).map(|i| i % 7 != 3 && i < B * L - 2).collect();
    for kernel in [Kernel::Gerf, Kernel::Saderf] {
        for precision in [Precision::F32, Precision::F64] {
            for hybrid in [None, Some((5, 1))] {
                for masked in [false, true] {
                    let what = format!("{kernel:?} {precision:?} hybrid {hybrid:?} mask {masked}");
                    let mut b = Performer::builder(D)
                        .heads(heads)
                        .kv_heads(kv)
                        .features(M)
                        .seed(4)
                        .kernel(kernel)
                        .precision(precision)
                        .backend(Backend::Scalar);
                    if let Some((w, s)) = hybrid {
                        b = b.window(w).sinks(s);
                    }
                    let p = b.build().unwrap();
                    let views = (
                        TensorView::new([B, heads, L, D], &q).unwrap(),
                        TensorView::new([B, kv, L, D], &k).unwrap(),
                        TensorView::new([B, kv, L, D], &v).unwrap(),
                    );
                    let m = masked.then_some(&mask[..]);
                    let out = match m {
                        Some(m) => p.forward_masked(views.0, views.1, views.2, m),
                        None => p.forward(views.0, views.1, views.2),
                    }
                    .unwrap();
                    let shape = hybrid.map(|(window, sinks)| HybridShape { window, sinks });
                    for bi in 0..B {
                        let bm = m.map(|m| &m[bi * L..(bi + 1) * L]);
                        for h in 0..heads {
                            let hk = h / (heads / kv);
                            let rows = |t: &TensorView<'_>, h| t.head(bi, h).to_vec();
                            let (qh, kh, vh) =
                                (rows(&views.0, h), rows(&views.1, hk), rows(&views.2, hk));
                            let got = out.head(bi, h);
                            match precision {
                                Precision::F32 => {
                                    let w = p.projection_f32();
                                    let (want, _) =
                                        core_head(kernel, &w, (&qh, &kh, &vh), bm, shape);
                                    assert_eq!(bits(got), bits(&want), "{what}: head ({bi}, {h})");
                                    if h == 0 {
                                        let other = rows(&views.1, 1);
                                        let (wrong, _) =
                                            core_head(kernel, &w, (&qh, &other, &vh), bm, shape);
                                        assert_ne!(bits(got), bits(&wrong), "{what}");
                                    }
                                }
                                Precision::F64 => {
                                    let w = p.projection_f64();
                                    let wide = |x: &[f32]| -> Vec<f64> {
                                        x.iter().map(|&e| f64::from(e)).collect()
                                    };
                                    let (want, a) = core_head(
                                        kernel,
                                        &w,
                                        (&wide(&qh), &wide(&kh), &wide(&vh)),
                                        bm,
                                        shape,
                                    );
                                    assert!(a < -0.01, "{what}: a non-trivial A ({a})");
                                    let rounded: Vec<f32> =
                                        want.iter().map(|&e| e as f32).collect();
                                    assert_eq!(got, &rounded[..], "{what}: head ({bi}, {h})");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Causal layers and streams refuse the fitted kernels with `Error::Config`; the names parse.
#[test]
fn causal_and_streams_refuse_fitted_kernels() {
    for kernel in [Kernel::Gerf, Kernel::Saderf] {
        let causal = Performer::builder(D).kernel(kernel).causal(true).build();
        assert!(
            matches!(&causal, Err(Error::Config(why)) if why.contains("causal")),
            "{causal:?}"
        );
        let hybrid = Performer::builder(D)
            .kernel(kernel)
            .causal(true)
            .window(4)
            .build();
        assert!(matches!(hybrid, Err(Error::Config(_))));
        let p = Performer::builder(D)
            .kernel(kernel)
            .features(M)
            .build()
            .unwrap();
        assert!(matches!(p.stream(1), Err(Error::Config(_))));
        assert!(kernel.is_softmax() && kernel.is_fitted());
    }
    for (s, k) in [
        ("gerf", Kernel::Gerf),
        ("favor++", Kernel::Gerf),
        ("saderf", Kernel::Saderf),
        ("favor#", Kernel::Saderf),
    ] {
        assert_eq!(s.parse::<Kernel>(), Ok(k));
    }
    assert!(!Kernel::Softmax.is_fitted());
    let none = Performer::builder(D)
        .kernel(Kernel::Saderf)
        .projection(Projection::None)
        .build();
    assert!(matches!(none, Err(Error::Config(_))));
}
