//! `MappedTokens` + `Stream::step_mapped` (one projection GEMM for the heads of a layer) against
//! `Stream::step` per head: bit for bit with Scalar, including stabiliser moves and absent keys;
//! bad input rejected before any stream changes.

use favor_core::*;

const D: usize = 8;
const M: usize = 16;
const DV: usize = 3;
const HEADS: usize = 5;

fn rows(seed: u64, n: usize, scale: f64) -> Vec<f64> {
    let mut g = Normals::new(seed);
    (0..n).map(|_| g.sample::<f64>() * scale).collect()
}

fn snapshot<F: FeatureMap<f64>>(s: &Stream<'_, f64, F, Scalar>) -> Vec<u8> {
    let mut b = vec![0u8; s.snapshot_len()];
    s.snapshot(&mut b).unwrap();
    b
}

#[test]
fn step_mapped_equals_step_bit_for_bit_with_scalar() {
    let mut w = vec![0f64; M * D];
    projection(ProjectionKind::default(), 7, M, D, &mut w).unwrap();
    let phi = PositiveSoftmax::new(&w, M, D).unwrap();
    let len = Stream::<f64, _, Scalar>::buffer_len(&phi, DV).unwrap();
    let (mut a, mut b) = (vec![vec![0f64; len]; HEADS], vec![vec![0f64; len]; HEADS]);
    let mut sa: Vec<_> = a
        .iter_mut()
        .map(|x| Stream::new(Scalar, &phi, DV, x).unwrap())
        .collect();
    let mut sb: Vec<_> = b
        .iter_mut()
        .map(|x| Stream::new(Scalar, &phi, DV, x).unwrap())
        .collect();
    let mut scratch = vec![0f64; mapped_tokens_len(&phi, HEADS).unwrap()];
    for t in 0..40u64 {
        // Growing norms move the stabiliser; token 17 of head 2 has a key whose |k|² overflows
        // (absent key, log-scale −∞).
        let scale = 0.5 + t as f64 * 0.2;
        let q = rows(3 * t, HEADS * D, scale);
        let mut k = rows(3 * t + 1, HEADS * D, scale);
        if t == 17 {
            k[2 * D] = 1e200;
        }
        let v = rows(3 * t + 2, HEADS * DV, 1.0);
        let mapped = MappedTokens::new(&Scalar, &phi, HEADS, &q, &k, &mut scratch).unwrap();
        assert_eq!(mapped.len(), HEADS);
        for h in 0..HEADS {
            let (qh, kh, vh) = (
                &q[h * D..(h + 1) * D],
                &k[h * D..(h + 1) * D],
                &v[h * DV..(h + 1) * DV],
            );
            let (mut oa, mut ob) = ([0f64; DV], [0f64; DV]);
            sa[h].step(qh, kh, vh, &mut oa).unwrap();
            sb[h].step_mapped(&mapped, h, vh, &mut ob).unwrap();
            assert_eq!(oa.map(f64::to_bits), ob.map(f64::to_bits), "t={t} h={h}");
            assert_eq!(snapshot(&sa[h]), snapshot(&sb[h]), "state t={t} h={h}");
        }
    }
}

#[test]
fn bad_input_is_rejected_before_any_stream_changes() {
    let mut w = vec![0f64; M * D];
    projection(ProjectionKind::default(), 7, M, D, &mut w).unwrap();
    let phi = PositiveSoftmax::new(&w, M, D).unwrap();
    let mut w2 = w.clone();
    w2[0] += 1.0;
    let other = PositiveSoftmax::new(&w2, M, D).unwrap();
    let len = Stream::<f64, _, Scalar>::buffer_len(&phi, DV).unwrap();
    let mut buf = vec![0f64; len];
    let mut s = Stream::new(Scalar, &phi, DV, &mut buf).unwrap();
    s.push(&rows(1, D, 1.0), &rows(2, DV, 1.0)).unwrap();
    let before = snapshot(&s);
    let mut scratch = vec![0f64; mapped_tokens_len(&phi, HEADS).unwrap()];
    let (q, k) = (rows(3, HEADS * D, 1.0), rows(4, HEADS * D, 1.0));
    for (what, row) in [("q", 0), ("q", 4), ("k", 3)] {
        let (mut q, mut k) = (q.clone(), k.clone());
        let x = if what == "q" { &mut q } else { &mut k };
        x[row * D + 1] = f64::NAN;
        let e = MappedTokens::new(&Scalar, &phi, HEADS, &q, &k, &mut scratch).unwrap_err();
        assert_eq!(e, Error::NonFinite { what, row });
    }
    assert!(matches!(
        MappedTokens::new(&Scalar, &phi, HEADS, &q[D..], &k, &mut scratch),
        Err(Error::LengthMismatch { what: "q", .. })
    ));
    assert!(MappedTokens::new(&Scalar, &phi, HEADS, &q, &k, &mut scratch[1..]).is_err());
    assert!(MappedTokens::new(&Scalar, &phi, 0, &[], &[], &mut scratch).is_err());
    // A huge projection row: w·k would overflow while |k|² does not; refused up front.
    let mut w_big = w.clone();
    w_big[..D].fill(1e300);
    let big = PositiveSoftmax::new(&w_big, M, D).unwrap();
    let mut k_over = k.clone();
    k_over[2 * D] = 1e10;
    let r = MappedTokens::new(&Scalar, &big, HEADS, &q, &k_over, &mut scratch);
    assert_eq!(r.unwrap_err(), Error::OutOfRange { what: "k", row: 2 });

    let mut scratch2 = vec![0f64; mapped_tokens_len(&other, HEADS).unwrap()];
    let foreign = MappedTokens::new(&Scalar, &other, HEADS, &q, &k, &mut scratch2).unwrap();
    let mut out = [0f64; DV];
    // Mapped with another projection (same map type): refused by fingerprint.
    assert!(
        s.step_mapped(&foreign, 0, &rows(5, DV, 1.0), &mut out)
            .is_err()
    );
    let mapped = MappedTokens::new(&Scalar, &phi, HEADS, &q, &k, &mut scratch).unwrap();
    assert!(
        s.step_mapped(&mapped, HEADS, &rows(5, DV, 1.0), &mut out)
            .is_err()
    );
    let mut bad_v = rows(5, DV, 1.0);
    bad_v[1] = f64::INFINITY;
    assert_eq!(
        s.step_mapped(&mapped, 0, &bad_v, &mut out),
        Err(Error::NonFinite { what: "v", row: 0 })
    );
    assert!(
        s.step_mapped(&mapped, 0, &rows(5, DV, 1.0), &mut out[..DV - 1])
            .is_err()
    );
    assert_eq!(snapshot(&s), before, "a rejected step changed the state");
}
