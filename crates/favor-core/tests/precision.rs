//! Long streams keep f32 precision: the error of an f32 stream against an f64 stream over the
//! same W and the same (f32) tokens must not grow with the number of tokens.
//!
//! Plain f32 prefix sums lose the low bits of every feature row once the sums are thousands of
//! times larger (measured before compensated summation: relative error 1.8e-6 at 10⁴ tokens,
//! 8.9e-6 at 10⁵, 6.0e-5 at 10⁶, 1.2e-2 at 10⁷ with d = 64, m = 128). The state now folds its
//! ring of recent keys into a compensated total every `RING` tokens (TwoSum), so the error
//! stays at the level of one ring's summation, whatever the length (`benches/examples/
//! long_stream.rs` prints the curve up to 10⁷).

use favor_core::*;
use favor_testkit::bounds::unit;

const D: usize = 16;
const M: usize = 32;
const DV: usize = 16;

/// Unit-norm rows (after the d^(-1/4) normaliser) and N(0, 1) values from a fixed seed.
fn rows(g: &mut Normals, n: usize, norm: f64) -> Vec<f32> {
    let mut x = vec![0f64; n * D];
    g.fill(&mut x);
    let raw = (D as f64).powf(0.25) * norm;
    x.chunks_exact(D)
        .flat_map(|r| {
            let s = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(move |v| (v / s * raw) as f32)
        })
        .collect()
}

/// Largest relative L2 error of an output row per window of tokens `(from, to]`.
fn error_windows(tokens: usize, windows: &[(usize, usize)]) -> Vec<f64> {
    let mut w = vec![0f64; projection_len(M, D).unwrap()];
    projection(ProjectionKind::default(), 5, M, D, &mut w).unwrap();
    let w32: Vec<f32> = w.iter().map(|&x| x as f32).collect();
    let w64: Vec<f64> = w32.iter().map(|&x| f64::from(x)).collect();
    let (p32, p64) = (
        PositiveSoftmax::new(&w32, M, D).unwrap(),
        PositiveSoftmax::new(&w64, M, D).unwrap(),
    );
    let mut b32 = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&p32, DV).unwrap()];
    let mut b64 = vec![0f64; Stream::<f64, _, Scalar>::buffer_len(&p64, DV).unwrap()];
    let mut s32 = Stream::new(Scalar, &p32, DV, &mut b32).unwrap();
    let mut s64 = Stream::new(Scalar, &p64, DV, &mut b64).unwrap();
    // A pool of tokens, cycled with a stride coprime to its size: stationary statistics
    // without sampling millions of Gaussians.
    let pool = 1021;
    let mut g = Normals::new(9);
    let (q, k) = (rows(&mut g, pool, 1.0), rows(&mut g, pool, 1.0));
    let mut v = vec![0f64; pool * DV];
    g.fill(&mut v);
    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    let mut worst = vec![0f64; windows.len()];
    let (mut o32, mut o64) = ([0f32; DV], [0f64; DV]);
    for t in 1..=tokens {
        let (i, j, l) = (t % pool, (t * 7) % pool, (t * 13) % pool);
        let (qi, kj, vl) = (&q[i * D..][..D], &k[j * D..][..D], &v[l * DV..][..DV]);
        s32.step(qi, kj, vl, &mut o32).unwrap();
        let wide = |x: &[f32]| x.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
        s64.step(&wide(qi), &wide(kj), &wide(vl), &mut o64).unwrap();
        let num: f64 = (0..DV).map(|c| (f64::from(o32[c]) - o64[c]).powi(2)).sum();
        let den: f64 = o64.iter().map(|x| x * x).sum();
        let e = (num / den).sqrt();
        for (wv, &(from, to)) in worst.iter_mut().zip(windows) {
            if t > from && t <= to {
                *wv = wv.max(e);
            }
        }
    }
    worst
}

/// The error of the last window (up to 2·10⁵ tokens) is no larger than twice that of an
/// early one (10⁴ tokens), and within 16 unit roundoffs: an error that grew with the token
/// count — as plain f32 sums do, about linearly here — fails both. Mutation-checked: with the
/// TwoSum's compensation dropped (`lo` never updated: the total is a plain f32 sum of the ring
/// sums) the late window's error is several times the early one's and this test fails.
#[test]
fn stream_error_does_not_grow_with_length() {
    let windows = [(5_000, 10_000), (150_000, 200_000)];
    let e = error_windows(200_000, &windows);
    let u = unit::<f32>();
    println!(
        "max relative error: {:.2e} (early), {:.2e} (late)",
        e[0], e[1]
    );
    assert!(e[1] <= 2.0 * e[0].max(4.0 * u), "error grew: {e:?}");
    assert!(e[1] <= 16.0 * u, "late error {:.2e} > 16u", e[1]);
}

/// Snapshots carry every part of the state: restore after several folds (and with keys in
/// the ring), continue, and the outputs equal the uninterrupted stream's bit for bit.
#[test]
fn snapshots_after_folds_continue_bit_for_bit() {
    let mut w = vec![0f32; projection_len(M, D).unwrap()];
    projection(ProjectionKind::default(), 6, M, D, &mut w).unwrap();
    let phi = PositiveSoftmax::new(&w, M, D).unwrap();
    let mut g = Normals::new(10);
    let n = 20 * RING + 7;
    let (q, k) = (rows(&mut g, 2 * n, 1.0), rows(&mut g, 2 * n, 1.5));
    let mut v = vec![0f32; 2 * n * DV];
    g.fill(&mut v);
    let len = Stream::<f32, _, Scalar>::buffer_len(&phi, DV).unwrap();
    let (mut b1, mut b2) = (vec![0f32; len], vec![0f32; len]);
    let mut a = Stream::new(Scalar, &phi, DV, &mut b1).unwrap();
    let mut out = [0f32; DV];
    for t in 0..n {
        a.step(
            &q[t * D..][..D],
            &k[t * D..][..D],
            &v[t * DV..][..DV],
            &mut out,
        )
        .unwrap();
    }
    let [_, lo, ring, _] = a.state().parts();
    assert!(
        lo.iter().any(|&x| x != 0.0),
        "no fold has left a compensation"
    );
    assert!(!ring.is_empty(), "the ring is empty");
    let mut bytes = vec![0u8; a.snapshot_len()];
    a.snapshot(&mut bytes).unwrap();
    let mut b = Stream::new(Scalar, &phi, DV, &mut b2).unwrap();
    b.restore(&bytes).unwrap();
    let mut out2 = [0f32; DV];
    for t in n..2 * n {
        let (qt, kt, vt) = (&q[t * D..][..D], &k[t * D..][..D], &v[t * DV..][..DV]);
        a.step(qt, kt, vt, &mut out).unwrap();
        b.step(qt, kt, vt, &mut out2).unwrap();
        assert_eq!(out.map(f32::to_bits), out2.map(f32::to_bits), "token {t}");
    }
}

/// Regression (issue 10, item 1; fuzz input `fuzz/regressions/attention/…`): an unnormalised
/// output is `e^{ℓ_q + c}·(φ(q)ᵀS stored)`; the factor alone can overflow f32 (here
/// `e^{≈99}`) while the output does not. Outputs were ±∞; they must equal the f64 evaluation
/// of the same path to rounding. W = 10·I without the data normaliser, q = k along w₀:
/// `φ(q)·φ(k) ≈ e^{100}/4 ≈ 6.7·10⁴²` (beyond f32), times values of 10⁻³⁰ — every stored
/// feature and sum stays a normal f32.
#[test]
fn unnormalised_outputs_beyond_exp_range_stay_finite() {
    fn run<T: Float>() -> Vec<Vec<f64>> {
        let (d, m) = (4, 4);
        let mut w = vec![T::zero(); m * d];
        for i in 0..m {
            w[i * d + i] = T::from_f64(10.0);
        }
        let phi = PositiveSoftmax::new(&w, m, d)
            .unwrap()
            .with_data_normalizer(false);
        let q: Vec<T> = [10.0, 0.0, 0.0, 0.0].map(T::from_f64).to_vec();
        let k = q.clone();
        let v: Vec<T> = [1e-30, -2e-30, 0.5e-30, 1e-30].map(T::from_f64).to_vec();
        let shape = Shape::new(1, d, d);
        let opts = Options {
            normalized: false,
            ..Default::default()
        };
        let mut outs = Vec::new();
        let mut out = vec![T::zero(); d];
        for kind in [
            PlanKind::Bidirectional,
            PlanKind::CausalPrefix,
            PlanKind::CausalChunked,
        ] {
            let plan = Plan::new(kind, Scalar, &phi, shape, opts).unwrap();
            let mut s = vec![T::zero(); plan.scratch_len()];
            plan.run(&q, &k, &v, &mut out, &mut s).unwrap();
            outs.push(out.clone());
        }
        outs.into_iter()
            .map(|o| o.iter().map(|&x| x.to_f64()).collect())
            .collect()
    }
    let (single, double) = (run::<f32>(), run::<f64>());
    for (path, (a, b)) in single.iter().zip(&double).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!(x.is_finite(), "path {path}: {x} (f64: {y})");
            // A handful of f32 roundings (features, one product, the stepped scale factor).
            assert!(
                (x - y).abs() <= 1e-5 * y.abs(),
                "path {path}: {x:e} vs f64 {y:e}"
            );
        }
    }
    let want = (100f64).exp() / 4.0 * 1e-30;
    assert!((double[0][0] / want - 1.0).abs() < 1e-9, "{:?}", double[0]);
}

/// The f32 underflow limit (crate docs) on the side re-mapping recovers: keys along one
/// projection row w₀ (with a little jitter) and queries opposed to them, both with large
/// norms. Each query's own largest features face keys' features that underflowed to zero, and
/// its features facing the keys' (representable) ones are below f32's range at its own shift:
/// every product `φ(q)ᵢ·zᵢ` underflows and outputs were near 0 (relative error about 1).
/// Re-mapped against z, the row is answered from the features the state still holds; with
/// nearly identical keys those carry the whole answer, so outputs must equal f64 FAVOR+ over
/// the same W and tokens, on every path and both exponential maps. With W = 4·I and norm r the
/// hyperbolic map's products are about e^{−8r} (they underflow from r ≈ 11; without the
/// re-map, mutation-checked, r = 15 gives relative error 1) and the keys' features facing the
/// query e^{−4r}, representable up to r ≈ 21, where the test stops: beyond, or with varied
/// keys and both norms large, the keys' own features underflow in the state and f32 cannot
/// recover them — the limit that remains (crate docs).
#[test]
fn queries_whose_features_underflow_are_remapped() {
    let (d, dv, l) = (16, 4, 24);
    // W = 4·I: orthogonal rows of norm 4 (about √d, as ORF's).
    let mut w64 = vec![0f64; d * d];
    for i in 0..d {
        w64[i * d + i] = 4.0;
    }
    let w32: Vec<f32> = w64.iter().map(|&x| x as f32).collect();
    let mut g = Normals::new(12);
    let mut worst = 0f64;
    for r in [2.0, 10.0, 15.0, 20.0, 21.0] {
        // |x'| = r along ±e₀ after the d^(-1/4) normaliser, jitter 10⁻³ in the other axes.
        let rows = |g: &mut Normals, sign: f64| -> Vec<f32> {
            let mut x = vec![0f64; l * d];
            g.fill(&mut x);
            for row in x.chunks_exact_mut(d) {
                for (j, xj) in row.iter_mut().enumerate() {
                    let along = if j == 0 { sign * r } else { 1e-3 * *xj };
                    *xj = along * (d as f64).powf(0.25);
                }
            }
            x.iter().map(|&a| a as f32).collect()
        };
        let (q, k) = (rows(&mut g, -1.0), rows(&mut g, 1.0));
        let mut v = vec![0f64; l * dv];
        g.fill(&mut v);
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        let wide = |x: &[f32]| x.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
        let shape = Shape::new(l, d, dv);
        let opts = Options {
            block: 8,
            ..Default::default()
        };
        for hyperbolic in [false, true] {
            // Projection rows (the hyperbolic map's features are twice as many: d either way).
            let mrows = if hyperbolic { d / 2 } else { d };
            let (p32, p64): (AnyFeatureMap<f32>, AnyFeatureMap<f64>) = if hyperbolic {
                (
                    HyperbolicSoftmax::new(&w32[..mrows * d], mrows, d)
                        .unwrap()
                        .into(),
                    HyperbolicSoftmax::new(&w64[..mrows * d], mrows, d)
                        .unwrap()
                        .into(),
                )
            } else {
                (
                    PositiveSoftmax::new(&w32, mrows, d).unwrap().into(),
                    PositiveSoftmax::new(&w64, mrows, d).unwrap().into(),
                )
            };
            macro_rules! run {
                ($p:expr, $q:expr, $k:expr, $v:expr, $t:ty) => {{
                    let mut outs = Vec::new();
                    let mut o = vec![<$t>::default(); l * dv];
                    for (path, kind) in [
                        ("bidirectional", PlanKind::Bidirectional),
                        ("causal_prefix", PlanKind::CausalPrefix),
                        ("causal_chunked", PlanKind::CausalChunked),
                    ] {
                        let plan = Plan::new(kind, Scalar, $p, shape, opts).unwrap();
                        let mut s = vec![<$t>::default(); plan.scratch_len()];
                        plan.run($q, $k, $v, &mut o, &mut s).unwrap();
                        outs.push((path, o.clone()));
                    }
                    outs
                }};
            }
            let outs32 = run!(&p32, &q, &k, &v, f32);
            let (q6, k6, v6) = (wide(&q), wide(&k), wide(&v));
            let outs64 = run!(&p64, &q6, &k6, &v6, f64);
            for ((path, a), (_, b)) in outs32.iter().zip(&outs64) {
                for i in 0..l {
                    let (ra, rb) = (&a[i * dv..(i + 1) * dv], &b[i * dv..(i + 1) * dv]);
                    let num: f64 = ra
                        .iter()
                        .zip(rb)
                        .map(|(x, y)| (f64::from(*x) - y).powi(2))
                        .sum();
                    let den: f64 = rb.iter().map(|y| y * y).sum();
                    let err = (num / den).sqrt();
                    worst = worst.max(err);
                    assert!(
                        err < 1e-4,
                        "r {r} hyperbolic {hyperbolic} {path} row {i}: relative error {err:e}"
                    );
                }
            }
        }
    }
    println!("largest relative error {worst:.2e}");
}
