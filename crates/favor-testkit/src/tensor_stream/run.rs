//! Running one case: the calls, their twins and what each must satisfy.

use super::*;

/// Runs one case.
pub fn run_case(c: &TensorStreamCase) {
    let p = c.builder().build().expect("a valid configuration builds");
    let twin_p = c
        .builder()
        .parallel(!c.parallel)
        .build()
        .expect("the twin layer builds");
    let mut fwd = p.clone();
    let mut cx = Ctx::new(c, &p);
    let what0 = format!(
        "B={} H={} d={} m={} dv={} {:?} {:?} norm={} eps={} chunk={} {:?} {:?} parallel={}",
        c.batch,
        c.heads,
        c.dim,
        c.features,
        c.value_dim,
        c.kernel,
        c.projection,
        c.normalizer,
        c.epsilon,
        c.chunk,
        c.precision,
        c.backend,
        c.parallel
    );
    let mut twins = Twins {
        main: p.stream(c.batch).expect("stream"),
        twin: twin_p.stream(c.batch).expect("twin stream"),
    };
    let memory = twins.main.memory_bytes();
    let mut model = Model::empty();
    let mut slots: [Option<Slot>; 4] = Default::default();
    for (no, op) in c.ops.iter().enumerate() {
        let what = format!("{what0}: op {no} {op:?}");
        let room = if model.known {
            MAX_TOKENS - model.tokens.len()
        } else {
            MAX_PREFILL
        };
        match *op {
            TensorOp::Prefill { len, elem } if room > 0 => {
                let len = (1 + usize::from(len) % MAX_PREFILL).min(room);
                let call = cx.call(false, len, elem);
                cx.good_call(&call, &mut twins, &mut model, &mut slots, &mut fwd, &what);
            }
            TensorOp::Step { elem, into } if room > 0 => {
                let mut call = cx.call(true, 1, elem);
                if into {
                    call.into = Some(cx.rows * c.value_dim);
                }
                cx.good_call(&call, &mut twins, &mut model, &mut slots, &mut fwd, &what);
            }
            TensorOp::Prefill { .. } | TensorOp::Step { .. } => {}
            TensorOp::Snapshot { slot } => {
                let bytes = twins.main.snapshot().expect("snapshot");
                assert!(
                    bytes == twins.twin.snapshot().expect("twin snapshot"),
                    "{what}: the twin's state differs"
                );
                slots[usize::from(slot) % 4] = Some(Slot {
                    bytes,
                    model: model.clone(),
                    log: Vec::new(),
                    live: true,
                });
            }
            TensorOp::Restore {
                slot,
                replay,
                fresh,
            } => {
                let i = usize::from(slot) % 4;
                let Some(s) = &slots[i] else { continue };
                let bytes = s.bytes.clone();
                let n = if replay % 2 == 0 {
                    s.log.len()
                } else {
                    usize::from(replay / 2) % (s.log.len() + 1)
                };
                let log = s.log[..n].to_vec();
                model = s.model.clone();
                if fresh {
                    twins.main = p.stream(c.batch).expect("stream");
                }
                if let Err(e) = twins.main.restore(&bytes) {
                    panic!("{what}: own snapshot rejected: {e}");
                }
                twins
                    .twin
                    .restore(&bytes)
                    .unwrap_or_else(|e| panic!("{what}: own snapshot rejected by the twin: {e}"));
                for (j, l) in log.iter().enumerate() {
                    let out = l.call.exec(&mut twins.main).unwrap_or_else(|e| {
                        panic!("{what}: repeating call {j} after the restore: {e}")
                    });
                    same_bits(
                        &out,
                        &l.out,
                        &format!("{what}: repeated call {j} after restore"),
                    );
                    let out_t = l.call.exec(&mut twins.twin).expect("twin repeats the call");
                    same_bits(&out_t, &l.out, &format!("{what}: twin, repeated call {j}"));
                    if model.known {
                        model.tokens.extend(cx.tokens_of(&l.call));
                    }
                }
                for (k, other) in slots.iter_mut().enumerate() {
                    if let Some(o) = other {
                        if k == i {
                            o.log.truncate(n);
                            o.live = true;
                        } else {
                            o.live = false;
                        }
                    }
                }
            }
            TensorOp::Corrupt { slot, at, xor } => {
                let Some(s) = &slots[usize::from(slot) % 4] else {
                    continue;
                };
                let mut bad = s.bytes.clone();
                let i = usize::from(at) % bad.len();
                bad[i] ^= xor.max(1);
                match twins.main.restore(&bad) {
                    Err(e) => {
                        assert!(
                            matches!(e, Error::Snapshot(_)),
                            "{what}: rejected with {e:?}"
                        );
                        twins.unchanged(&what);
                    }
                    Ok(()) => {
                        twins.twin.restore(&bad).unwrap_or_else(|e| {
                            panic!("{what}: accepted by the stream, rejected by the twin: {e}")
                        });
                        model = Model {
                            tokens: Vec::new(),
                            known: false,
                        };
                        slots.iter_mut().flatten().for_each(|s| s.live = false);
                    }
                }
            }
            TensorOp::Truncate { slot, keep, extend } => {
                let Some(s) = &slots[usize::from(slot) % 4] else {
                    continue;
                };
                let mut bad = s.bytes.clone();
                if extend {
                    let n = 1 + usize::from(keep) % 16;
                    bad.extend(std::iter::repeat_n((keep >> 4) as u8, n));
                } else {
                    bad.truncate(usize::from(keep) % bad.len());
                }
                let e = twins
                    .main
                    .restore(&bad)
                    .expect_err(&format!("{what}: {} bytes accepted", bad.len()));
                assert!(matches!(e, Error::Snapshot(_)), "{what}: {e:?}");
                twins.unchanged(&what);
            }
            TensorOp::Foreign { which } => {
                let (other, batch, how) = foreign(c, which);
                let bytes = {
                    let mut s = other.stream(batch).expect("foreign stream");
                    let (h, d, dv) = (other.heads(), other.dim(), other.value_dim());
                    let x: Vec<f32> = (0..batch * h * d.max(dv))
                        .map(|i| (i % 7) as f32 * 0.125 - 0.375)
                        .collect();
                    s.step(
                        TensorView::new([batch, h, 1, d], &x[..batch * h * d]).unwrap(),
                        TensorView::new([batch, h, 1, d], &x[..batch * h * d]).unwrap(),
                        TensorView::new([batch, h, 1, dv], &x[..batch * h * dv]).unwrap(),
                    )
                    .expect("foreign step");
                    s.snapshot().expect("foreign snapshot")
                };
                let e = twins
                    .main
                    .restore(&bytes)
                    .expect_err(&format!("{what}: a snapshot of {how} was accepted"));
                assert!(matches!(e, Error::Snapshot(_)), "{what}: {how}: {e:?}");
                twins.unchanged(&what);
            }
            TensorOp::RoundTrip => {
                let other = c
                    .builder()
                    .backend(match c.backend {
                        Backend::Scalar => Backend::Detected,
                        _ => Backend::Scalar,
                    })
                    .chunk(c.chunk % 20 + 1)
                    .build()
                    .expect("compatible layer");
                let bytes = twins.main.snapshot().expect("snapshot");
                let mut s = other.stream(c.batch).expect("stream");
                if let Err(e) = s.restore(&bytes) {
                    panic!("{what}: a compatible layer rejects: {e}");
                }
                assert_eq!(
                    s.tokens(),
                    twins.main.tokens(),
                    "{what}: tokens after restore"
                );
                let back = s.snapshot().expect("snapshot");
                twins
                    .main
                    .restore(&back)
                    .unwrap_or_else(|e| panic!("{what}: the round trip is rejected: {e}"));
                // The twin did not take the trip: every later comparison checks it lost nothing.
                twins.unchanged(&what);
            }
            TensorOp::Reset => {
                twins.main.reset();
                twins.twin.reset();
                model = Model::empty();
                slots.iter_mut().flatten().for_each(|s| s.live = false);
            }
            TensorOp::NonFinite {
                prefill,
                len,
                which,
                at,
                inf,
                elem,
            } => {
                let len = if prefill {
                    1 + usize::from(len) % MAX_PREFILL
                } else {
                    1
                };
                let mut call = cx.call(!prefill, len, elem);
                let bad = if inf {
                    if at % 2 == 0 {
                        f64::INFINITY
                    } else {
                        f64::NEG_INFINITY
                    }
                } else {
                    f64::NAN
                };
                let (x, width) = match which {
                    Which::Q => (&mut call.q, c.dim),
                    Which::K => (&mut call.k, c.dim),
                    Which::V => (&mut call.v, c.value_dim),
                };
                let i = usize::from(at) % x.len();
                x[i] = bad;
                let row = i / width;
                let (flat, t) = (row / len, row % len);
                let e = call
                    .exec(&mut twins.main)
                    .expect_err(&format!("{what}: non-finite input accepted"));
                if model.known {
                    let ok = matches!(
                        e,
                        Error::Core {
                            batch,
                            head: h,
                            source: favor_core::Error::NonFinite { row, .. },
                        } if batch == flat / c.heads && h == flat % c.heads && row == t
                    );
                    assert!(
                        ok,
                        "{what}: expected NonFinite at batch {}, head {}, row {t}, got {e:?}",
                        flat / c.heads,
                        flat % c.heads
                    );
                }
                twins.unchanged(&what);
            }
            TensorOp::Shape {
                prefill,
                len,
                which,
                dim,
                grow,
            } => {
                let len = if prefill {
                    1 + usize::from(len) % MAX_PREFILL
                } else {
                    1
                };
                let dim = usize::from(dim) % 4;
                let mut call = cx.call(!prefill, len, Elem::F32);
                let t = which as usize;
                let mut shape = call.shapes[t];
                shape[dim] = if grow { shape[dim] + 1 } else { shape[dim] - 1 };
                call.shapes[t] = shape;
                let n: usize = shape.iter().product();
                let mut fill = |x: &mut Vec<f64>| {
                    x.clear();
                    x.extend((0..n).map(|_| cx.mix.grid()));
                };
                match which {
                    Which::Q => fill(&mut call.q),
                    Which::K => fill(&mut call.k),
                    Which::V => fill(&mut call.v),
                }
                // A prefill takes its length from q, so a q of another non-zero length
                // makes k the mismatch.
                let named = if prefill && which == Which::Q && dim == 2 && shape[2] > 0 {
                    "k"
                } else {
                    ["q", "k", "v"][t]
                };
                let e = call
                    .exec(&mut twins.main)
                    .expect_err(&format!("{what}: shape {shape:?} accepted"));
                assert!(
                    matches!(e, Error::Shape { tensor, .. } if tensor == named),
                    "{what}: expected a shape error naming {named}, got {e:?}"
                );
                twins.unchanged(&what);
            }
            TensorOp::OutOfRange {
                prefill,
                len,
                which,
                at,
            } => {
                let len = if prefill {
                    1 + usize::from(len) % MAX_PREFILL
                } else {
                    1
                };
                let mut call = cx.call(!prefill, len, Elem::F64);
                let x = match which {
                    Which::Q => &mut call.q,
                    Which::K => &mut call.k,
                    Which::V => &mut call.v,
                };
                let i = usize::from(at) % x.len();
                x[i] = if at % 2 == 0 { 1e200 } else { -1e200 };
                let e = call
                    .exec(&mut twins.main)
                    .expect_err(&format!("{what}: 1e200 accepted"));
                let named = ["q", "k", "v"][which as usize];
                if model.known {
                    assert!(
                        matches!(e, Error::OutOfRange { tensor, .. } if tensor == named),
                        "{what}: expected OutOfRange naming {named}, got {e:?}"
                    );
                }
                twins.unchanged(&what);
            }
            TensorOp::WrongOut { longer } => {
                let mut call = cx.call(true, 1, Elem::F32);
                let n = cx.rows * c.value_dim;
                call.into = Some(if longer { n + 1 } else { n - 1 });
                let e = call
                    .exec(&mut twins.main)
                    .expect_err(&format!("{what}: wrong output length accepted"));
                if model.known {
                    assert!(
                        matches!(e, Error::Shape { tensor: "out", .. }),
                        "{what}: expected a shape error naming out, got {e:?}"
                    );
                }
                twins.unchanged(&what);
            }
        }
        assert_eq!(
            twins.main.memory_bytes(),
            memory,
            "{what}: memory_bytes changed"
        );
        assert_eq!(
            twins.main.tokens(),
            twins.twin.tokens(),
            "{what}: tokens() of the twin"
        );
        if model.known {
            assert_eq!(
                twins.main.tokens(),
                model.tokens.len() as u64,
                "{what}: tokens() disagrees with the history"
            );
        }
    }
}

/// A layer or batch whose snapshots this stream must refuse, and what differs.
pub(super) fn foreign(c: &TensorStreamCase, which: u8) -> (Performer, usize, &'static str) {
    let b = c.builder();
    let (builder, batch, how) = match which % 8 {
        0 => (b, c.batch % 3 + 1, "another batch size"),
        1 => (b.heads(c.heads % 4 + 1), c.batch, "another head count"),
        2 => (
            b.precision(match c.precision {
                Precision::F32 => Precision::F64,
                _ => Precision::F32,
            }),
            c.batch,
            "another precision",
        ),
        3 if c.projection == Projection::None => {
            (b.epsilon(c.epsilon + 1.0), c.batch, "another epsilon")
        }
        3 => (b.seed(c.seed ^ 1), c.batch, "another projection"),
        4 => {
            let k = match c.kernel {
                Kernel::Relu => Kernel::Abs,
                Kernel::Softmax => Kernel::Hyperbolic,
                k if k.is_softmax() => Kernel::Softmax,
                _ => Kernel::Relu,
            };
            (b.kernel(k), c.batch, "another kernel")
        }
        5 => (
            b.value_dim(c.value_dim % 8 + 1),
            c.batch,
            "another value dimension",
        ),
        6 => {
            let other = TensorStreamCase {
                dim: c.dim % 32 + 1,
                // Without a projection m follows d.
                features: if c.projection == Projection::None {
                    c.dim % 32 + 1
                } else {
                    c.features
                },
                ops: Vec::new(),
                ..c.clone()
            };
            (other.builder(), c.batch, "another head dimension")
        }
        _ => (
            b.data_normalizer(!c.normalizer),
            c.batch,
            "the other data normaliser",
        ),
    };
    (
        builder.build().expect("the foreign layer builds"),
        batch,
        how,
    )
}

pub(super) fn same_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: output length");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits(),
            "{what}: output {i} = {x:e} vs {y:e}: not bit-identical"
        );
    }
}
