//! `PeerAttention` (performer-pytorch and JAX conventions) against favor-testkit's `peers`
//! oracle: f64 ports of the peers' formulas, written from their code, not from favor's.
//!
//! Tolerances: f64 runs must agree to a few hundred ulp (the same sums in another order).
//! f32 runs: every weight `a_ij = q'_i·k'_j` is a sum of m positive products of features
//! whose exponent arguments `u − |x'|²/2 − M` have magnitude at most `A`; each feature carries
//! a relative error of at most `(A + 4)·u` (rounding the argument, then `exp`'s 2-ulp budget),
//! each weight `2(A + 4)u + m·u`, and the normalised output `Σ a v / Σ a` twice that times
//! max|v| plus the `L`-term sums' `L·u·max|v|`. The bound below is that, with A taken from
//! the f64 oracle's inputs (max |u| + max |x'|²/2 + |M|).

#![allow(clippy::needless_range_loop)]

use favor_core::{
    Activation, Compat, Normals, Options, PeerAttention, Plan, PlanKind, PositiveSoftmax,
    ProjectionKind, Scalar, Shape, projection, projection_len,
};
use favor_testkit::peers::{Dims, Peer, PeerKernel, peer_attention};

const DIMS: Dims = Dims {
    batch: 2,
    heads: 2,
    len: 70,
    dim: 8,
    value_dim: 5,
    features: 16,
};

struct Case {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    w: Vec<f64>,
}

fn case(scale: f64, seed: u64) -> Case {
    let Dims {
        batch,
        heads,
        len,
        dim,
        value_dim,
        features,
    } = DIMS;
    let mut g = Normals::new(1000 + seed);
    let mut draw = |n: usize, s: f64| -> Vec<f64> { (0..n).map(|_| s * g.next_f64()).collect() };
    let n = batch * heads * len;
    let (q, k, v) = (
        draw(n * dim, scale),
        draw(n * dim, scale),
        draw(n * value_dim, 1.0),
    );
    let mut w = vec![0.0; projection_len(features, dim).unwrap()];
    projection(ProjectionKind::default(), seed, features, dim, &mut w).unwrap();
    Case { q, k, v, w }
}

fn compat(peer: Peer) -> Compat {
    match peer {
        Peer::PerformerPytorch => Compat::PerformerPytorch,
        Peer::GoogleJax => Compat::GoogleJax,
    }
}

fn map<'w, T: favor_core::Float>(
    peer: Peer,
    kernel: PeerKernel,
    w: &'w [T],
    causal: bool,
) -> PeerAttention<'w, T> {
    let (m, d) = (DIMS.features, DIMS.dim);
    let c = compat(peer);
    let p = match kernel {
        PeerKernel::Softmax => PeerAttention::softmax(c, w, m, d),
        PeerKernel::Relu => PeerAttention::generalized(c, Some(w), m, d, Activation::Relu),
    };
    p.unwrap().causal(causal)
}

/// favor's peer attention of every head, in `T`.
fn favor_peer<T: favor_core::Float>(
    peer: Peer,
    kernel: PeerKernel,
    causal: bool,
    c: &Case,
) -> Vec<f64> {
    let Dims {
        batch,
        heads,
        len,
        dim: d,
        value_dim: dv,
        ..
    } = DIMS;
    let cast = |x: &[f64]| -> Vec<T> { x.iter().map(|&a| T::from_f64(a)).collect() };
    let (q, k, v, w) = (cast(&c.q), cast(&c.k), cast(&c.v), cast(&c.w));
    let p = map(peer, kernel, &w, causal);
    let shape = Shape::new(len, d, dv);
    let mut scratch = vec![T::zero(); p.scratch_len(shape).unwrap()];
    let mut out = vec![T::zero(); batch * heads * len * dv];
    for h in 0..batch * heads {
        let (qh, kh) = (&q[h * len * d..][..len * d], &k[h * len * d..][..len * d]);
        let vh = &v[h * len * dv..][..len * dv];
        let oh = &mut out[h * len * dv..][..len * dv];
        p.run(&Scalar, shape, None, qh, kh, vh, oh, &mut scratch)
            .unwrap();
    }
    out.iter().map(|x| favor_core::Float::to_f64(*x)).collect()
}

/// The largest |exponent argument| of the softmax features (the `A` of the module docs).
fn exponent_range(c: &Case) -> f64 {
    let (d, m) = (DIMS.dim, DIMS.features);
    let s = 1.0 / (d as f64).sqrt().sqrt();
    let mut umax = 0f64;
    let mut hmax = 0f64;
    for x in c.q.chunks_exact(d).chain(c.k.chunks_exact(d)) {
        hmax = hmax.max(x.iter().map(|a| a * a).sum::<f64>() * s * s / 2.0);
        for j in 0..m {
            let u: f64 = (0..d).map(|t| s * x[t] * c.w[j * d + t]).sum();
            umax = umax.max(u.abs());
        }
    }
    2.0 * umax + hmax
}

fn max_err(a: &[f64], b: &[f64], dv: usize, v: &[f64]) -> f64 {
    // Error per row relative to the row's max |v| over all keys (the output is a convex
    // combination of values).
    let vmax = v.iter().fold(0f64, |m, x| m.max(x.abs()));
    let _ = dv;
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs() / vmax))
}

fn check_all(scale: f64, seed: u64) {
    let c = case(scale, seed);
    let a = exponent_range(&c);
    let (m, l) = (DIMS.features as f64, DIMS.len as f64);
    let u32 = f32::EPSILON as f64 / 2.0;
    let f32_bound = 4.0 * (2.0 * (a + 4.0) + m + l) * u32;
    let f64_bound = 4.0 * (2.0 * (a + 4.0) + m + l) * f64::EPSILON;
    for peer in [Peer::PerformerPytorch, Peer::GoogleJax] {
        for kernel in [PeerKernel::Softmax, PeerKernel::Relu] {
            for causal in [false, true] {
                let want = peer_attention(peer, kernel, causal, (&c.q, &c.k, &c.v), &c.w, DIMS);
                let got64 = favor_peer::<f64>(peer, kernel, causal, &c);
                let got32 = favor_peer::<f32>(peer, kernel, causal, &c);
                let (e64, e32) = (
                    max_err(&got64, &want, DIMS.value_dim, &c.v),
                    max_err(&got32, &want, DIMS.value_dim, &c.v),
                );
                let what = format!("{peer:?} {kernel:?} causal={causal} scale={scale}");
                assert!(
                    e64 <= f64_bound,
                    "{what}: f64 error {e64:e} > {f64_bound:e}"
                );
                assert!(
                    e32 <= f32_bound,
                    "{what}: f32 error {e32:e} > {f32_bound:e}"
                );
            }
        }
    }
}

#[test]
fn small_norms_match_the_peers() {
    check_all(0.3, 1);
}

#[test]
fn unit_norms_match_the_peers() {
    check_all(1.0, 2);
}

#[test]
fn large_norms_match_the_peers() {
    // |x'|²/2 ≈ 9 per row: most key exponentials are far below the ε term.
    check_all(2.0, 3);
}

/// The peers' causal outputs depend on future keys (their key shift is a max over the whole
/// sequence); favor's own causal attention does not, bit for bit.
#[test]
fn peers_causal_leaks_and_favor_does_not() {
    let c = case(1.0, 4);
    let Dims {
        len,
        dim: d,
        value_dim: dv,
        ..
    } = DIMS;
    let half = len / 2;
    let mut later = case(1.0, 4);
    for (i, x) in later.k.iter_mut().enumerate() {
        if (i / d) % len >= half {
            *x *= 2.0;
        }
    }
    let past = |o: &[f64]| -> Vec<f64> {
        o.chunks_exact(dv)
            .enumerate()
            .filter(|(i, _)| i % len < half)
            .flat_map(|(_, r)| r.to_vec())
            .collect()
    };
    for peer in [Peer::PerformerPytorch, Peer::GoogleJax] {
        let a = peer_attention(
            peer,
            PeerKernel::Softmax,
            true,
            (&c.q, &c.k, &c.v),
            &c.w,
            DIMS,
        );
        let b = peer_attention(
            peer,
            PeerKernel::Softmax,
            true,
            (&later.q, &later.k, &later.v),
            &later.w,
            DIMS,
        );
        let moved = max_err(&past(&a), &past(&b), dv, &c.v);
        assert!(moved > 1e-3, "{peer:?}: the oracle should leak ({moved:e})");
        // PeerAttention reproduces the leak: it follows the oracle on both inputs.
        let fa = favor_peer::<f64>(peer, PeerKernel::Softmax, true, &c);
        let fb = favor_peer::<f64>(peer, PeerKernel::Softmax, true, &later);
        assert!(max_err(&past(&fa), &past(&fb), dv, &c.v) > 1e-3);
    }
    // favor's own causal attention: outputs before `half` are unchanged bit for bit.
    let (m, shape) = (DIMS.features, Shape::new(len, d, dv));
    let phi = PositiveSoftmax::new(&c.w, m, d).unwrap();
    let opts = Options {
        block: 16,
        ..Default::default()
    };
    let plan = Plan::new(PlanKind::CausalChunked, Scalar, &phi, shape, opts).unwrap();
    let mut scratch = vec![0.0; plan.scratch_len()];
    let (mut oa, mut ob) = (vec![0.0; len * dv], vec![0.0; len * dv]);
    // Head 0 of each tensor.
    let (qa, ka, va) = (&c.q[..len * d], &c.k[..len * d], &c.v[..len * dv]);
    let kb = &later.k[..len * d];
    plan.run(qa, ka, va, &mut oa, &mut scratch).unwrap();
    plan.run(qa, kb, va, &mut ob, &mut scratch).unwrap();
    for i in 0..half * dv {
        assert_eq!(
            oa[i].to_bits(),
            ob[i].to_bits(),
            "favor's causal output {i} moved"
        );
    }
    assert!(oa[half * dv..] != ob[half * dv..]);
}

#[test]
fn a_key_max_below_the_heads_own_is_refused() {
    let c = case(1.0, 6);
    let Dims {
        len,
        dim: d,
        value_dim: dv,
        features: m,
        ..
    } = DIMS;
    let p = PeerAttention::softmax(Compat::GoogleJax, &c.w, m, d).unwrap();
    let shape = Shape::new(len, d, dv);
    let mut scratch = vec![0.0; p.scratch_len(shape).unwrap()];
    let (q, k, v) = (&c.q[..len * d], &c.k[..len * d], &c.v[..len * dv]);
    let own = p.key_max(&Scalar, k, len, &mut scratch).unwrap();
    let mut out = vec![7.0; len * dv];
    for bad in [own - 1e-3, f64::NAN, f64::INFINITY] {
        let e = p.run(&Scalar, shape, Some(bad), q, k, v, &mut out, &mut scratch);
        assert!(e.is_err(), "{bad}");
        assert!(out.iter().all(|&o| o == 7.0), "an error wrote output");
    }
    assert!(
        p.run(
            &Scalar,
            shape,
            Some(own + 1.0),
            q,
            k,
            v,
            &mut out,
            &mut scratch
        )
        .is_ok()
    );
}

/// `PeerStream` step t equals the peer's whole-sequence causal attention (the f64 oracle) on
/// the sequence cut after token t: its running key max is the peer's max over that prefix.
#[test]
fn peer_stream_is_the_peer_on_each_prefix() {
    let one = Dims {
        batch: 1,
        heads: 1,
        len: 24,
        ..DIMS
    };
    let Dims {
        len,
        dim: d,
        value_dim: dv,
        features: m,
        ..
    } = one;
    for scale in [0.3, 1.0, 2.0] {
        let c = case(scale, 7);
        let (q, k, v) = (&c.q[..len * d], &c.k[..len * d], &c.v[..len * dv]);
        let vmax = v.iter().fold(0f64, |a, x| a.max(x.abs()));
        for peer in [Peer::PerformerPytorch, Peer::GoogleJax] {
            for kernel in [PeerKernel::Softmax, PeerKernel::Relu] {
                let p = map(peer, kernel, &c.w, true);
                let mut buf = vec![0.0; favor_core::PeerStream::<f64>::buffer_len(m, dv).unwrap()];
                let mut stream = favor_core::PeerStream::new(p, dv, &mut buf).unwrap();
                let mut scratch = vec![0.0; stream.scratch_len()];
                let mut out = vec![0.0; dv];
                for t in 0..len {
                    let (qt, kt, vt) = (
                        &q[t * d..(t + 1) * d],
                        &k[t * d..(t + 1) * d],
                        &v[t * dv..(t + 1) * dv],
                    );
                    stream
                        .step(&Scalar, qt, kt, vt, &mut out, &mut scratch)
                        .unwrap();
                    let cut = Dims { len: t + 1, ..one };
                    let want = peer_attention(
                        peer,
                        kernel,
                        true,
                        (&q[..(t + 1) * d], &k[..(t + 1) * d], &v[..(t + 1) * dv]),
                        &c.w,
                        cut,
                    );
                    let err = out
                        .iter()
                        .zip(&want[t * dv..])
                        .fold(0f64, |a, (x, y)| a.max((x - y).abs() / vmax));
                    assert!(
                        err < 1e-11,
                        "{peer:?} {kernel:?} scale {scale} t {t}: {err:e}"
                    );
                }
                assert_eq!(stream.tokens(), len as u64);
            }
        }
    }
}

/// A `PeerMemory` snapshot taken mid-stream and restored into fresh memory goes on with the
/// same bits as the original; bytes from another peer, other dimensions, a flipped bit or a
/// state no stream reaches are refused and leave the memory as it was.
#[test]
fn peer_memory_snapshot_round_trips_and_refuses_bad_bytes() {
    use favor_core::{Error, PeerMemory, SnapshotError};
    let (d, dv, m, len) = (DIMS.dim, DIMS.value_dim, DIMS.features, 20);
    let c = case(1.0, 11);
    let row = |x: &[f64], t: usize, n: usize| x[t * n..(t + 1) * n].to_vec();
    for peer in [Peer::PerformerPytorch, Peer::GoogleJax] {
        for kernel in [PeerKernel::Softmax, PeerKernel::Relu] {
            let p = map(peer, kernel, &c.w, true);
            let n = PeerMemory::<f64, Vec<f64>>::buffer_len(m, dv).unwrap();
            let mut scratch = vec![0.0; PeerMemory::<f64, Vec<f64>>::scratch_len(&p)];
            let mut a = PeerMemory::new(vec![0.0; n]);
            let (mut oa, mut ob) = (vec![0.0; dv], vec![0.0; dv]);
            let mut step = |mem: &mut PeerMemory<f64, Vec<f64>>, t: usize, out: &mut [f64]| {
                let (q, k, v) = (row(&c.q, t, d), row(&c.k, t, d), row(&c.v, t, dv));
                mem.step(&Scalar, &p, dv, &q, &k, &v, out, &mut scratch)
                    .unwrap();
            };
            for t in 0..len / 2 {
                step(&mut a, t, &mut oa);
            }
            let mut bytes = vec![0u8; a.snapshot_len(&p, dv).unwrap()];
            assert_eq!(a.snapshot(&p, dv, &mut bytes).unwrap(), bytes.len());
            // Garbage in the fresh buffer: a restore overwrites all of it.
            let mut b = PeerMemory::new(vec![7.0; n]);
            b.restore(&p, dv, &bytes).unwrap();
            assert_eq!((b.tokens(), b.shift()), (a.tokens(), a.shift()));
            for t in len / 2..len {
                step(&mut a, t, &mut oa);
                step(&mut b, t, &mut ob);
                assert_eq!(oa, ob, "{peer:?} {kernel:?} t {t}");
            }

            let snap = |e: Error| match e {
                Error::Snapshot(s) => s,
                other => panic!("{peer:?} {kernel:?}: not a snapshot error: {other}"),
            };
            let before = b.clone();
            let mut flipped = bytes.clone();
            flipped[60] ^= 1;
            assert_eq!(
                snap(b.restore(&p, dv, &flipped).unwrap_err()),
                SnapshotError::BadChecksum
            );
            assert_eq!(
                snap(b.restore(&p, dv, &bytes[..bytes.len() - 1]).unwrap_err()),
                SnapshotError::WrongLength
            );
            let other_peer = match peer {
                Peer::PerformerPytorch => Peer::GoogleJax,
                Peer::GoogleJax => Peer::PerformerPytorch,
            };
            let q = map(other_peer, kernel, &c.w, true);
            assert_eq!(
                snap(b.restore(&q, dv, &bytes).unwrap_err()),
                SnapshotError::WrongFeatureMap
            );
            let mut wider = PeerMemory::new(vec![0.0; n + m + 1]);
            assert_eq!(
                snap(wider.restore(&p, dv + 1, &bytes).unwrap_err()),
                SnapshotError::WrongDims
            );
            // A valid checksum over an impossible state: z_e negative (softmax), or a shift
            // on a generalized stream.
            let mut forged = bytes.clone();
            let (at, value) = match kernel {
                PeerKernel::Softmax => (56 + 8 * m * dv, (-1.0f64).to_le_bytes()),
                PeerKernel::Relu => (48, 0.5f64.to_le_bytes()),
            };
            forged[at..at + 8].copy_from_slice(&value);
            let body = forged.len() - 4;
            let crc = favor_core::crc32(&forged[..body]);
            forged[body..].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                snap(b.restore(&p, dv, &forged).unwrap_err()),
                SnapshotError::Corrupt
            );
            assert_eq!(b.buffer(), before.buffer());
            assert_eq!((b.tokens(), b.shift()), (before.tokens(), before.shift()));
        }
    }
}
