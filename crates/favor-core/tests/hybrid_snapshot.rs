//! `HybridStream` snapshots: restore-and-continue equals never stopping, bit for bit; reset
//! equals a fresh stream; every malformed or foreign snapshot is a typed error that changes
//! nothing. The oracle is the uninterrupted stream itself (a different code path: no bytes).

use favor_core::*;

const L: usize = 30;
const D: usize = 5;
const M: usize = 12;
const SHAPE: HybridShape = HybridShape {
    window: 3,
    sinks: 2,
};

fn rows<T: Float>(a: f64, s: f64) -> Vec<T> {
    (0..L * D)
        .map(|i| T::from_f64(s * (a * i as f64 + 0.3).sin()))
        .collect()
}

struct Problem<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    w: Vec<T>,
}

fn problem<T: Float>() -> Problem<T> {
    let mut w = vec![T::zero(); M * D];
    projection(ProjectionKind::default(), 5, M, D, &mut w).unwrap();
    Problem {
        q: rows(0.37, 1.2),
        k: rows(0.71, 1.1),
        v: rows(1.9, 1.0),
        w,
    }
}

type S<'a, T> = HybridStream<'a, T, PositiveSoftmax<'a, T>, Scalar>;

fn buffer<T: Float>(phi: &PositiveSoftmax<'_, T>, shape: HybridShape) -> Vec<T> {
    // Not zeroed: a stream must not depend on what its buffer held.
    vec![T::from_f64(7.5); S::<T>::buffer_len(phi, D, shape).unwrap()]
}

/// Steps tokens `range` of `p` through `s`, writing their outputs into `out`.
fn steps<T: Float>(
    s: &mut S<'_, T>,
    p: &Problem<T>,
    range: core::ops::Range<usize>,
    out: &mut [T],
) {
    for t in range {
        let r = t * D..(t + 1) * D;
        s.step(
            &p.q[r.clone()],
            &p.k[r.clone()],
            &p.v[r.clone()],
            &mut out[r],
        )
        .unwrap();
    }
}

fn snapshot<T: Float>(s: &S<'_, T>) -> Vec<u8> {
    let mut b = vec![0u8; s.snapshot_len()];
    assert_eq!(s.snapshot(&mut b).unwrap(), b.len());
    b
}

fn bits<T: Float>(x: &[T]) -> Vec<u64> {
    x.iter()
        .map(|&v| <T as Float>::to_f64(v).to_bits())
        .collect()
}

/// Snapshot after t tokens (before the ring fills, as it fills, after keys left it), restore
/// into a fresh stream over a dirty buffer, continue: the outputs are the bits of a stream
/// that never stopped, and the restored stream writes the same bytes.
fn check_round_trip<T: Float>() {
    let p = problem::<T>();
    let phi = PositiveSoftmax::new(&p.w, M, D).unwrap();
    let mut whole = vec![T::zero(); L * D];
    let mut b0 = buffer(&phi, SHAPE);
    let mut s0 = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b0).unwrap();
    steps(&mut s0, &p, 0..L, &mut whole);
    let exact = SHAPE.sinks + SHAPE.window + 1;
    for t in [0, 1, SHAPE.sinks, exact - 1, exact, exact + 1, 17, L] {
        let mut out = vec![T::zero(); L * D];
        let mut b1 = buffer(&phi, SHAPE);
        let mut s1 = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b1).unwrap();
        steps(&mut s1, &p, 0..t, &mut out);
        let bytes = snapshot(&s1);
        let mut b2 = buffer(&phi, SHAPE);
        let mut s2 = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b2).unwrap();
        s2.restore(&bytes).unwrap();
        assert_eq!(s2.tokens(), t as u64);
        assert_eq!(snapshot(&s2), bytes, "t = {t}: the restored stream's bytes");
        steps(&mut s2, &p, t..L, &mut out);
        assert_eq!(bits(&out), bits(&whole), "t = {t}");
    }
}

#[test]
fn restore_and_continue_is_bit_identical() {
    check_round_trip::<f32>();
    check_round_trip::<f64>();
}

/// After reset the bytes are a fresh stream's and a replay gives the first run's bits.
#[test]
fn reset_equals_a_fresh_stream() {
    let p = problem::<f64>();
    let phi = PositiveSoftmax::new(&p.w, M, D).unwrap();
    let mut bf = buffer(&phi, SHAPE);
    let fresh = snapshot(&HybridStream::new(Scalar, &phi, D, SHAPE, &mut bf).unwrap());
    let mut b = buffer(&phi, SHAPE);
    let mut s = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b).unwrap();
    let (mut first, mut second) = (vec![0.0; L * D], vec![0.0; L * D]);
    steps(&mut s, &p, 0..L, &mut first);
    let full = snapshot(&s);
    s.reset();
    assert_eq!(s.tokens(), 0);
    assert_eq!(snapshot(&s), fresh);
    steps(&mut s, &p, 0..L, &mut second);
    assert_eq!(bits(&first), bits(&second));
    assert_eq!(snapshot(&s), full);
}

/// Re-signs `b` after an edit, so that only the checks past the checksum can refuse it.
fn resign(b: &mut [u8]) {
    let n = b.len() - 4;
    let crc = crc32(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Where the raw key slots start in a snapshot of an f64 stream over `phi`.
fn slots_at(phi: &PositiveSoftmax<'_, f64>) -> usize {
    let mut b = vec![0f64; Stream::<f64, _, Scalar>::buffer_len(phi, D).unwrap()];
    56 + Stream::new(Scalar, phi, D, &mut b).unwrap().snapshot_len()
}

/// Every refusal, each leaving the stream as it was: it continues with the bits of a stream
/// that never saw the bad bytes.
#[test]
fn bad_snapshots_are_typed_errors_and_change_nothing() {
    let p = problem::<f64>();
    let phi = PositiveSoftmax::new(&p.w, M, D).unwrap();
    let mut whole = vec![0.0; L * D];
    let mut b0 = buffer(&phi, SHAPE);
    let mut s0 = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b0).unwrap();
    steps(&mut s0, &p, 0..L, &mut whole);

    // A good snapshot after 12 tokens (keys have left the window), and one after 4 (the ring
    // not yet full: slots that must be zero).
    let at = |t: usize| {
        let mut b = buffer(&phi, SHAPE);
        let mut s = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b).unwrap();
        steps(&mut s, &p, 0..t, &mut vec![0.0; L * D]);
        snapshot(&s)
    };
    let (good, early) = (at(12), at(4));
    let keys = slots_at(&phi);
    let edit = |base: &[u8], f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.to_vec();
        f(&mut b);
        b
    };
    let put_f64 =
        |b: &mut Vec<u8>, at: usize, x: f64| b[at..at + 8].copy_from_slice(&x.to_le_bytes());
    let mut cases: Vec<(&str, Vec<u8>, SnapshotError)> = vec![
        ("empty", vec![], SnapshotError::TooShort),
        (
            "truncated",
            good[..good.len() - 1].to_vec(),
            SnapshotError::WrongLength,
        ),
        (
            "magic",
            edit(&good, &|b| b[0] = b'X'),
            SnapshotError::BadMagic,
        ),
        (
            "version",
            edit(&good, &|b| b[4] = 9),
            SnapshotError::UnsupportedVersion(9),
        ),
        (
            "dtype",
            edit(&good, &|b| b[8] = 4),
            SnapshotError::WrongDType,
        ),
        (
            "window",
            edit(&good, &|b| b[16] = 4),
            SnapshotError::WrongDims,
        ),
        (
            "checksum",
            edit(&good, &|b| b[keys + 3] ^= 1),
            SnapshotError::BadChecksum,
        ),
        (
            "tokens disagree with the far state",
            edit(&good, &|b| {
                b[48] = 11; // 11 tokens: only 5 keys can have left the window, the far state has 6
                resign(b)
            }),
            SnapshotError::Corrupt,
        ),
        (
            "NaN key",
            edit(&good, &|b| {
                put_f64(b, keys + 8, f64::NAN);
                resign(b)
            }),
            SnapshotError::Corrupt,
        ),
        (
            "key beyond the range a step admits",
            edit(&good, &|b| {
                put_f64(b, keys, 1e200);
                resign(b)
            }),
            SnapshotError::Corrupt,
        ),
        (
            // Token 4 is in ring slot sinks + 2; slot sinks + 3 holds no token yet.
            "unused slot not zero",
            edit(&early, &|b| {
                put_f64(b, keys + (SHAPE.sinks + 3) * D * 8, 0.5);
                resign(b)
            }),
            SnapshotError::Corrupt,
        ),
    ];
    // The far state refuses what is not its own: another map's bytes.
    let mut w2 = p.w.clone();
    w2[0] += 0.25;
    let phi2 = PositiveSoftmax::new(&w2, M, D).unwrap();
    let mut b2 = buffer(&phi2, SHAPE);
    let mut other = HybridStream::new(Scalar, &phi2, D, SHAPE, &mut b2).unwrap();
    steps(&mut other, &p, 0..12, &mut vec![0.0; L * D]);
    cases.push((
        "another map",
        snapshot(&other),
        SnapshotError::WrongFeatureMap,
    ));
    // An f32 stream's bytes.
    let p32 = problem::<f32>();
    let phi32 = PositiveSoftmax::new(&p32.w, M, D).unwrap();
    let mut b32 = buffer(&phi32, SHAPE);
    let s32 = HybridStream::new(Scalar, &phi32, D, SHAPE, &mut b32).unwrap();
    cases.push(("f32 bytes", snapshot(&s32), SnapshotError::WrongDType));

    for (what, bytes, want) in cases {
        let mut b = buffer(&phi, SHAPE);
        let mut s = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b).unwrap();
        let mut out = vec![0.0; L * D];
        steps(&mut s, &p, 0..7, &mut out);
        assert_eq!(s.restore(&bytes), Err(Error::Snapshot(want)), "{what}");
        assert_eq!(s.tokens(), 7, "{what}");
        steps(&mut s, &p, 7..L, &mut out);
        assert_eq!(bits(&out), bits(&whole), "{what}: the stream changed");
    }
    // And the good ones restore.
    for good in [good, early] {
        let mut b = buffer(&phi, SHAPE);
        let mut s = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b).unwrap();
        s.restore(&good).unwrap();
    }
    // A short output buffer is an error too.
    let mut b = buffer(&phi, SHAPE);
    let s = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b).unwrap();
    let mut short = vec![0u8; s.snapshot_len() - 1];
    assert!(matches!(
        s.snapshot(&mut short),
        Err(Error::BufferTooSmall { .. })
    ));
}

/// A `HybridMemory` attached for every token (and restored from bytes half-way) gives the
/// bits of one stream kept alive; another layout is refused and changes nothing.
#[test]
fn memory_attached_per_token_equals_one_stream() {
    let p = problem::<f32>();
    let phi = PositiveSoftmax::new(&p.w, M, D).unwrap();
    let mut whole = vec![0f32; L * D];
    let mut b0 = buffer(&phi, SHAPE);
    let mut s0 = HybridStream::new(Scalar, &phi, D, SHAPE, &mut b0).unwrap();
    steps(&mut s0, &p, 0..L, &mut whole);
    let mut memory = HybridMemory::new(buffer(&phi, SHAPE));
    let mut out = vec![0f32; L * D];
    let mut half = Vec::new();
    for t in 0..L {
        let mut s = memory.attach(Scalar, &phi, D, SHAPE).unwrap();
        steps(&mut s, &p, t..t + 1, &mut out);
        drop(s);
        assert_eq!(memory.tokens(), t as u64 + 1);
        if t == 14 {
            half = snapshot(&memory.attach(Scalar, &phi, D, SHAPE).unwrap());
        }
        let other = HybridShape {
            window: SHAPE.window + 1,
            ..SHAPE
        };
        assert!(matches!(
            memory.attach(Scalar, &phi, D, other).err(),
            Some(Error::InvalidParameter { .. })
        ));
    }
    assert_eq!(bits(&out), bits(&whole));
    // Restored through an attached stream, the memory continues from token 15.
    let mut memory = HybridMemory::new(buffer(&phi, SHAPE));
    memory
        .attach(Scalar, &phi, D, SHAPE)
        .unwrap()
        .restore(&half)
        .unwrap();
    assert_eq!(memory.tokens(), 15);
    let mut rest = vec![0f32; L * D];
    for t in 15..L {
        steps(
            &mut memory.attach(Scalar, &phi, D, SHAPE).unwrap(),
            &p,
            t..t + 1,
            &mut rest,
        );
    }
    assert_eq!(bits(&rest[15 * D..]), bits(&whole[15 * D..]));
}
