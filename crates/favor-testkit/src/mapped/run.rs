//! Running one case: the streams, their twins, and every operation on them.

use super::*;

fn snapshot_of<T: Real, K: Kernels<T>>(s: &Stream<'_, T, Map<'_, T>, K>) -> Vec<u8> {
    let mut b = vec![0u8; s.snapshot_len()];
    s.snapshot(&mut b).expect("snapshot");
    b
}

/// The map with its feature dimension one larger (with a projection: W gains a copy of its
/// first row; without: d + 1), so its tokens have other shapes.
fn wider(spec: &MapSpec) -> MapSpec {
    let mut s = spec.clone();
    if spec.kind.has_projection() {
        s.w.extend_from_slice(&spec.w[..spec.d]);
        s.m += 1;
    } else {
        s.d += 1;
        s.m += 1;
    }
    s
}

pub(super) fn run<T: Real, K: Kernels<T>>(kern: K, c: &MappedCase, scalar: bool) {
    let (w, wt) = c.map.weights::<T>();
    let map = c.map.build(&w, &wt);
    // A copy of W: another map value with the same fingerprint.
    let (w2, wt2) = (w.clone(), wt.clone());
    let copy = c.map.build(&w2, &wt2);
    // The other data normaliser changes every map's fingerprint, not its dimensions.
    let other_spec = MapSpec {
        normalizer: !c.map.normalizer,
        ..c.map.clone()
    };
    let other = other_spec.build(&w, &wt);
    let wide_spec = wider(&c.map);
    let (w3, wt3) = wide_spec.weights::<T>();
    let wide = wide_spec.build(&w3, &wt3);
    let (n, d, dv) = (c.streams, c.map.d, c.dv);
    let mut cx = Ctx {
        c,
        scalar,
        positive: map.is_positive(),
        what: format!(
            "{} {} {:?} d={d} m={} dv={dv} streams={n}",
            Kernels::<T>::name(&kern),
            T::NAME,
            c.map.kind,
            c.map.m
        ),
        mix: Mix::new(c.seed),
    };
    let len = Stream::<T, Map<'_, T>, K>::buffer_len(&map, dv).expect("buffer_len");
    let mut bufs = vec![vec![T::zero(); len]; n];
    let mut tbufs = vec![vec![T::zero(); len]; n];
    let mut streams = Streams {
        main: bufs
            .iter_mut()
            .map(|b| Stream::new(kern, &map, dv, b).expect("stream"))
            .collect(),
        twin: tbufs
            .iter_mut()
            .map(|b| Stream::new(kern, &map, dv, b).expect("stream"))
            .collect(),
        models: vec![Model::empty(); n],
    };
    let mut slots: [Option<Saved>; 4] = Default::default();
    let amp = 2f64.powi(c.scale);
    for (no, op) in c.ops.iter().enumerate() {
        let what = format!("{} op {no} {op:?}", cx.what);
        match *op {
            MappedOp::Mapped {
                tokens,
                pattern,
                copy: through_copy,
            } => {
                let nt = 1 + usize::from(tokens) % MAX_MAPPED;
                let (q, k) = (cx.tokens(nt * d, amp), cx.tokens(nt * d, amp));
                let fm = if through_copy { &copy } else { &map };
                let batch = Batch {
                    n: nt,
                    q,
                    k,
                    huge: false,
                };
                cx.apply(&kern, fm, &mut streams, &batch, pattern, &what);
            }
            MappedOp::Huge {
                tokens,
                pattern,
                exp,
            } => {
                let nt = 1 + usize::from(tokens) % MAX_MAPPED;
                let (mut q, mut k) = (cx.tokens(nt * d, amp), cx.tokens(nt * d, amp));
                let max_exp = T::max_value().to64().log2().floor() as u16;
                let e = 16 + exp % (max_exp - 15);
                let mut pm = Mix::new(u64::from(pattern) ^ 0x5EED);
                let row = (pm.next_u64() as usize) % nt;
                let x = if pm.next_u64().is_multiple_of(2) {
                    &mut q
                } else {
                    &mut k
                };
                for j in 0..d {
                    x[row * d + j] = pm.wide(i32::from(e) - 8, i32::from(e) - 1);
                }
                let batch = Batch {
                    n: nt,
                    q,
                    k,
                    huge: true,
                };
                cx.apply(&kern, &map, &mut streams, &batch, pattern, &what);
            }
            MappedOp::Step { stream } => {
                let j = usize::from(stream) % n;
                if streams.models[j].k.len() / d >= MAX_TOKENS {
                    continue;
                }
                let (q, k, v) = (cx.tokens(d, amp), cx.tokens(d, amp), cx.tokens(dv, 4.0));
                let (qt, kt, vt) = (cast::<T>(&q), cast::<T>(&k), cast::<T>(&v));
                let mut out = vec![T::zero(); dv];
                let mut out_t = vec![T::zero(); dv];
                streams.main[j].step(&qt, &kt, &vt, &mut out).expect("step");
                streams.twin[j]
                    .step(&qt, &kt, &vt, &mut out_t)
                    .expect("twin step");
                streams.models[j].q.extend(&q);
                streams.models[j].k.extend(&k);
                streams.models[j].v.extend(&v);
                cx.check(
                    &streams.models[j],
                    &q,
                    &out,
                    &out_t,
                    &format!("{what} stream {j}"),
                );
            }
            MappedOp::Snapshot { stream, slot } => {
                let j = usize::from(stream) % n;
                let (a, b) = (snapshot_of(&streams.main[j]), snapshot_of(&streams.twin[j]));
                if scalar {
                    assert!(
                        a == b,
                        "{what}: stream {j} and its twin hold different states"
                    );
                }
                slots[usize::from(slot) % 4] = Some((a, b, streams.models[j].clone()));
            }
            MappedOp::Restore { stream, slot } => {
                let j = usize::from(stream) % n;
                if let Some((a, b, m)) = &slots[usize::from(slot) % 4] {
                    streams.main[j]
                        .restore(a)
                        .unwrap_or_else(|e| panic!("{what}: own snapshot rejected: {e}"));
                    streams.twin[j]
                        .restore(b)
                        .unwrap_or_else(|e| panic!("{what}: own snapshot rejected: {e}"));
                    streams.models[j] = m.clone();
                }
            }
            MappedOp::Reset { stream } => {
                let j = usize::from(stream) % n;
                streams.reset(j);
            }
            MappedOp::BadNew {
                what: fault,
                at,
                inf,
            } => {
                let nt = 1 + usize::from(at) % MAX_MAPPED;
                let (mut q, mut k) = (cx.tokens(nt * d, amp), cx.tokens(nt * d, amp));
                let mut scratch_len = mapped_tokens_len(&map, nt).expect("mapped_tokens_len");
                let mut count = nt;
                let bad = if inf { f64::INFINITY } else { f64::NAN };
                let i = usize::from(at) % (nt * d);
                let grow = at % 2 == 0;
                let resize = |x: &mut Vec<f64>| {
                    if grow {
                        x.push(0.5);
                    } else {
                        x.pop();
                    }
                };
                match fault % 6 {
                    0 => q[i] = bad,
                    1 => k[i] = bad,
                    2 => resize(&mut q),
                    3 => resize(&mut k),
                    4 => scratch_len -= 1 + usize::from(at) % scratch_len,
                    _ => {
                        count = 0;
                        q.clear();
                        k.clear();
                    }
                }
                let mut scratch = vec![T::zero(); scratch_len];
                let (qt, kt) = (cast::<T>(&q), cast::<T>(&k));
                match MappedTokens::new(&kern, &map, count, &qt, &kt, &mut scratch) {
                    Ok(_) => panic!("{what}: bad tokens accepted"),
                    Err(e) if fault % 6 < 2 => {
                        let name = if fault % 6 == 0 { "q" } else { "k" };
                        assert!(
                            matches!(e, favor_core::Error::NonFinite { what, row } if what == name && row == i / d),
                            "{what}: expected NonFinite in {name} row {}, got {e:?}",
                            i / d
                        );
                    }
                    Err(_) => {}
                }
            }
            MappedOp::BadStep {
                what: fault,
                stream,
                at,
            } => {
                let j = usize::from(stream) % n;
                let nt = 1 + usize::from(at) % MAX_MAPPED;
                let (q, k) = (cx.tokens(nt * d, amp), cx.tokens(nt * d, amp));
                let mut v = cx.tokens(dv, 4.0);
                let mut index = usize::from(at) % nt;
                let mut out_len = dv;
                let fm = match fault % 6 {
                    4 => &other,
                    5 => &wide,
                    _ => &map,
                };
                let fd = fm.input_dim();
                let (q, k) = if fd == d {
                    (q, k)
                } else {
                    (cx.tokens(nt * fd, amp), cx.tokens(nt * fd, amp))
                };
                match fault % 6 {
                    0 => index = nt + usize::from(at) % 3,
                    1 => {
                        v[usize::from(at) % dv] = if at % 2 == 0 {
                            f64::NAN
                        } else {
                            f64::NEG_INFINITY
                        }
                    }
                    2 if at % 2 == 0 || dv == 1 => v.push(1.0),
                    2 => {
                        v.pop();
                    }
                    3 => out_len = dv - 1,
                    _ => {}
                }
                let mut scratch = vec![T::zero(); mapped_tokens_len(fm, nt).expect("len")];
                let (qt, kt) = (cast::<T>(&q), cast::<T>(&k));
                let mapped = MappedTokens::new(&kern, fm, nt, &qt, &kt, &mut scratch)
                    .unwrap_or_else(|e| panic!("{what}: valid tokens refused: {e}"));
                let before = snapshot_of(&streams.main[j]);
                let mut out = vec![T::zero(); out_len];
                let r = streams.main[j].step_mapped(&mapped, index, &cast::<T>(&v), &mut out);
                assert!(r.is_err(), "{what}: stream {j} accepted a bad step_mapped");
                assert!(
                    snapshot_of(&streams.main[j]) == before,
                    "{what}: a rejected step_mapped changed stream {j}"
                );
            }
        }
    }
}
