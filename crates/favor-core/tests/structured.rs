//! The softmax maps over a SORF projection's structured form
//! (`with_structured_projection`: signs instead of W) against the same maps over the dense W:
//! the same features up to the rounding of the projection, which is bounded here from first
//! principles; the signs are checked to be W's, and the input limit accounts for the
//! transforms' partial sums.

use favor_core::*;

/// Rows of `d` entries in [−a, a] from a fixed LCG (not the library's generator).
fn rows(seed: u64, n: usize, d: usize, a: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n * d)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            a * (2.0 * ((s >> 11) as f64 / (1u64 << 53) as f64) - 1.0)
        })
        .collect()
}

fn sorf<T: Float>(seed: u64, m: usize, d: usize) -> (Vec<T>, Vec<T>) {
    let mut w = vec![T::zero(); projection_len(m, d).unwrap()];
    projection(ProjectionKind::Sorf, seed, m, d, &mut w).unwrap();
    let mut signs = vec![T::zero(); sorf_signs_len(m, d).unwrap()];
    sorf_signs(seed, m, d, &mut signs).unwrap();
    (w, signs)
}

/// Bound on |u_dense − u_structured| for one projection `u = s·(w·x)` in precision `eps`:
/// the dense GEMM's is γ_d·Σ|wⱼxⱼ| ≤ d·eps·√d'·‖x‖₁ (every |wⱼ| ≤ √d', the row norm); each of
/// the structured form's 3·log₂d' butterfly levels rounds partial sums of magnitude at most
/// ‖x‖₁·d'^{3/2}, which the exact 1/d' scales to √d'·‖x‖₁. Both, plus the scaling by s, and
/// a factor 2 for the accumulation of first-order terms.
fn projection_bound(eps: f64, d: usize, x: &[f64], s: f64) -> f64 {
    let padded = d.next_power_of_two() as f64;
    let l1: f64 = x.iter().map(|v| v.abs()).sum();
    2.0 * eps * (d as f64 + 3.0 * padded.log2() + 2.0) * padded.sqrt() * l1 * s
}

/// Each softmax map (SM+, SMhyp+, trigonometric) over the signs gives the dense map's
/// features up to the projection bound, in f64 and f32, for padded dims and a partial last
/// block: SM+ and SMhyp+ features `exp(±u − …)` compared in the log domain (an exponent error
/// δ is a relative error δ; entries above 1e-6 of their row's largest, below which f32 loses
/// them), the trigonometric ones `sin u`, `cos u` directly (their log-scales do not depend on
/// W, so both maps' are the same bits).
fn check_maps<T: Float>(eps: f64) {
    for (m, d) in [(8usize, 3usize), (20, 12), (256, 64), (100, 33)] {
        let (w, signs) = sorf::<T>(5, m, d);
        let n = 6;
        let x64 = rows(m as u64 + d as u64, n, d, 1.5);
        let x: Vec<T> = x64.iter().map(|&v| T::from_f64(v)).collect();
        let s = (d as f64).powf(-0.25);
        for kind in 0..3 {
            let width = if kind == 0 { m } else { 2 * m };
            let run = |structured: bool| {
                let (mut out, mut logs) = (vec![T::zero(); n * width], vec![T::zero(); n]);
                macro_rules! go {
                    ($map:ident) => {{
                        let dense = $map::new(&w, m, d).unwrap();
                        if structured {
                            let map = dense.with_structured_projection(&signs).unwrap();
                            assert!(map.is_structured());
                            map.map_rows(&Scalar, &x, n, &mut out, &mut logs).unwrap();
                        } else {
                            dense.map_rows(&Scalar, &x, n, &mut out, &mut logs).unwrap();
                        }
                    }};
                }
                match kind {
                    0 => go!(PositiveSoftmax),
                    1 => go!(HyperbolicSoftmax),
                    _ => go!(TrigonometricSoftmax),
                }
                (out, logs)
            };
            let ((a, la), (b, lb)) = (run(false), run(true));
            for r in 0..n {
                let row = &x64[r * d..(r + 1) * d];
                let delta = projection_bound(eps, d, row, s);
                let (ra, rb) = (
                    &a[r * width..(r + 1) * width],
                    &b[r * width..(r + 1) * width],
                );
                let (lar, lbr) = (la[r].to_f64(), lb[r].to_f64());
                for (i, (&fa, &fb)) in ra.iter().zip(rb).enumerate() {
                    let (fa, fb) = (fa.to_f64(), fb.to_f64());
                    let (ok, what) = if kind == 2 {
                        // |sin a − sin b| ≤ |a − b|; plus sin/cos's own rounding.
                        assert_eq!(la[r].to_f64().to_bits(), lb[r].to_f64().to_bits());
                        ((fa - fb).abs() <= delta + 8.0 * eps, "trig")
                    } else if fa.min(fb) > 1e-6 {
                        // log φ = ln(stored) + ℓ: the exponent's error δ, plus the rounding
                        // of exp, ln and of the log-scale's terms (magnitude ≤ |ℓ| + 1).
                        let (ga, gb) = (fa.ln() + lar, fb.ln() + lbr);
                        let tol = delta + 16.0 * eps * (1.0 + lar.abs().max(lbr.abs()));
                        ((ga - gb).abs() <= 2.0 * tol, "log")
                    } else {
                        (true, "")
                    };
                    assert!(
                        ok,
                        "{} m = {m}, d = {d}, map {kind}, row {r}, feature {i} ({what}): dense \
                         {fa:e} (ℓ {lar}) vs structured {fb:e} (ℓ {lbr}), δ = {delta:e}",
                        core::any::type_name::<T>()
                    );
                }
            }
        }
    }
}

#[test]
fn structured_maps_equal_the_dense_maps() {
    check_maps::<f64>(f64::EPSILON);
    check_maps::<f32>(f64::from(f32::EPSILON));
}

/// Signs that are not W's structured form are refused: another seed's, the wrong length,
/// an orthogonal (non-SORF) W's; and d' above 512. The input limit is the dense map's over
/// d'.
#[test]
fn structured_projection_is_checked() {
    let (m, d) = (20, 12);
    let (w, signs) = sorf::<f64>(3, m, d);
    let dense = PositiveSoftmax::new(&w, m, d).unwrap();
    let structured = dense.with_structured_projection(&signs).unwrap();
    assert!(!dense.is_structured());
    let ratio = dense.max_input() / structured.max_input();
    assert!(
        (ratio - 16.0).abs() < 1e-9,
        "limit ratio {ratio}, want d' = 16"
    );
    // The fingerprint is W's: snapshots move between the two forms.
    assert_eq!(dense.fingerprint(), structured.fingerprint());

    let (_, other) = sorf::<f64>(4, m, d);
    let mut orf = vec![0f64; m * d];
    projection(ProjectionKind::default(), 3, m, d, &mut orf).unwrap();
    let orf_map = PositiveSoftmax::new(&orf, m, d).unwrap();
    let mut flipped = signs.clone();
    flipped[5] = -flipped[5];
    for (label, r) in [
        ("other seed", dense.with_structured_projection(&other)),
        (
            "one sign flipped",
            dense.with_structured_projection(&flipped),
        ),
        ("short", dense.with_structured_projection(&signs[1..])),
        ("orthogonal W", orf_map.with_structured_projection(&signs)),
    ] {
        assert!(
            matches!(
                r,
                Err(Error::InvalidParameter { .. } | Error::LengthMismatch { .. })
            ),
            "{label}: {r:?}"
        );
    }
    // d = 600 → d' = 1024, above the transforms' 512.
    let (m, d) = (4, 600);
    let mut wide = vec![0f64; m * d];
    projection(ProjectionKind::default(), 1, m, d, &mut wide).unwrap();
    let signs = vec![1f64; sorf_signs_len(m, d).unwrap()];
    let r = HyperbolicSoftmax::new(&wide, m, d)
        .unwrap()
        .with_structured_projection(&signs);
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
}

/// A stream over the structured map decodes what the stream over the dense map does, to the
/// projection's rounding: 40 tokens, f64, outputs within a loose multiple of the bound
/// (normalised attention moves by at most twice the largest exponent error times max |v|).
#[test]
fn structured_stream_follows_the_dense_stream() {
    let (m, d, dv, len) = (64, 16, 8, 40);
    let (w, signs) = sorf::<f64>(11, m, d);
    let dense = PositiveSoftmax::new(&w, m, d).unwrap();
    let structured = dense.with_structured_projection(&signs).unwrap();
    let (q, k, v) = (
        rows(1, len, d, 1.0),
        rows(2, len, d, 1.0),
        rows(3, len, dv, 1.0),
    );
    let n = Stream::<f64, PositiveSoftmax<f64>, Scalar>::buffer_len(&dense, dv).unwrap();
    let (mut ba, mut bb) = (vec![0f64; n], vec![0f64; n]);
    let mut a = Stream::new(Scalar, &dense, dv, &mut ba).unwrap();
    let mut b = Stream::new(Scalar, &structured, dv, &mut bb).unwrap();
    let (mut oa, mut ob) = (vec![0f64; dv], vec![0f64; dv]);
    let s = (d as f64).powf(-0.25);
    let mut worst = 0f64;
    for t in 0..len {
        let (r, rv) = (t * d..(t + 1) * d, t * dv..(t + 1) * dv);
        a.step(&q[r.clone()], &k[r.clone()], &v[rv.clone()], &mut oa)
            .unwrap();
        b.step(&q[r.clone()], &k[r.clone()], &v[rv], &mut ob)
            .unwrap();
        // Every key's and this query's exponent errors: δ each.
        let delta = (0..=t)
            .map(|j| projection_bound(f64::EPSILON, d, &k[j * d..(j + 1) * d], s))
            .fold(projection_bound(f64::EPSILON, d, &q[r], s), f64::max);
        let err = oa
            .iter()
            .zip(&ob)
            .fold(0f64, |e, (x, y)| e.max((x - y).abs()));
        worst = worst.max(err);
        assert!(
            err <= 4.0 * delta + 1e-13,
            "token {t}: |dense − structured| = {err:e}, δ = {delta:e}"
        );
    }
    assert!(
        worst > 0.0,
        "the two forms round differently, so some output must differ"
    );
}
