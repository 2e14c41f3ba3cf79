//! Every variant of `favor_core::Error` and `favor_core::SnapshotError`, produced through the
//! public API with its exact fields, and the promise that goes with them: "an `Err` means no
//! output buffer and no state was modified". Output and scratch buffers are pre-filled with a
//! sentinel and must still hold it bit for bit; stream state is compared through snapshots.

use favor_core::{
    Activation, Error, ExactOptions, FeatureMap, Float, Generalized, HyperbolicSoftmax, Kernels,
    KeyFeatures, Normals, Options, PartitionEstimator, Plan, PlanKind, PositiveSoftmax,
    PrefixState, ProjectionKind, RING, SNAPSHOT_VERSION, Scalar, Shape, SnapshotError, Stream,
    TrigonometricSoftmax, attention_row, attention_row_scratch_len, projection, projection_len,
    softmax_attention, state_len,
};

// ---------------------------------------------------------------------------------------------
// Helpers

const SENTINEL: f64 = -1234.5;
const L: usize = 7;
const D: usize = 4;
const DV: usize = 3;
const M: usize = 8;

fn sentinel<T: Float>(n: usize) -> Vec<T> {
    vec![T::from_f64(SENTINEL); n]
}

fn untouched<T: Float>(buf: &[T], what: &str) {
    for (i, x) in buf.iter().enumerate() {
        let x = <T as Float>::to_f64(*x);
        assert!(
            x.to_bits() == SENTINEL.to_bits(),
            "{what}[{i}] was written: {x}"
        );
    }
}

fn gaussian<T: Float>(seed: u64, n: usize) -> Vec<T> {
    let mut g = Normals::new(0xE440_0000 + seed);
    (0..n).map(|_| g.sample::<T>()).collect()
}

fn orf<T: Float>(seed: u64, m: usize, d: usize) -> Vec<T> {
    let mut w = vec![T::from_f64(0.0); projection_len(m, d).unwrap()];
    projection(ProjectionKind::default(), seed, m, d, &mut w).unwrap();
    w
}

/// Copy of `x` (rows of `width`) with `bad` at column 1 of `row` and at column 0 of the next
/// row: the error must name the first offending row, computed with the right row length.
fn poison<T: Float>(x: &[T], width: usize, row: usize, bad: f64) -> Vec<T> {
    let mut y = x.to_vec();
    y[row * width + 1.min(width - 1)] = T::from_f64(bad);
    if (row + 2) * width <= y.len() {
        y[(row + 1) * width] = T::from_f64(bad);
    }
    y
}

const BAD: [f64; 3] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];

/// The variant's name (`Error` is `#[non_exhaustive]`).
fn variant(e: &Error) -> &'static str {
    match e {
        Error::ZeroDimension { .. } => "ZeroDimension",
        Error::LengthMismatch { .. } => "LengthMismatch",
        Error::DimensionMismatch { .. } => "DimensionMismatch",
        Error::BufferTooSmall { .. } => "BufferTooSmall",
        Error::NonFinite { .. } => "NonFinite",
        Error::InvalidParameter { .. } => "InvalidParameter",
        Error::OutOfRange { .. } => "OutOfRange",
        Error::SizeOverflow => "SizeOverflow",
        Error::Snapshot(s) => match s {
            SnapshotError::TooShort => "Snapshot(TooShort)",
            SnapshotError::BadMagic => "Snapshot(BadMagic)",
            SnapshotError::UnsupportedVersion(_) => "Snapshot(UnsupportedVersion)",
            SnapshotError::WrongDType => "Snapshot(WrongDType)",
            SnapshotError::WrongDims => "Snapshot(WrongDims)",
            SnapshotError::WrongFeatureMap => "Snapshot(WrongFeatureMap)",
            SnapshotError::WrongLength => "Snapshot(WrongLength)",
            SnapshotError::BadChecksum => "Snapshot(BadChecksum)",
            SnapshotError::Corrupt => "Snapshot(Corrupt)",
            _ => "Snapshot(unknown)",
        },
        _ => "unknown",
    }
}

const ALL_VARIANTS: [&str; 17] = [
    "ZeroDimension",
    "LengthMismatch",
    "DimensionMismatch",
    "BufferTooSmall",
    "NonFinite",
    "InvalidParameter",
    "OutOfRange",
    "SizeOverflow",
    "Snapshot(TooShort)",
    "Snapshot(BadMagic)",
    "Snapshot(UnsupportedVersion)",
    "Snapshot(WrongDType)",
    "Snapshot(WrongDims)",
    "Snapshot(WrongFeatureMap)",
    "Snapshot(WrongLength)",
    "Snapshot(BadChecksum)",
    "Snapshot(Corrupt)",
];

/// The four batch entry points behind one signature.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Entry {
    Bidirectional,
    Prefix,
    Chunked,
    Softmax,
}

const ENTRIES: [Entry; 4] = [
    Entry::Bidirectional,
    Entry::Prefix,
    Entry::Chunked,
    Entry::Softmax,
];

struct Case<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    shape: Shape,
    opts: Options<'a>,
}

/// The scratch a `kind` plan sizes for map `fm`, values of `dv` and blocks of `block` (the
/// length does not enter it), or the error planning reports.
fn planned<T: Float, F: FeatureMap<T>>(
    kind: PlanKind,
    fm: &F,
    dv: usize,
    block: usize,
) -> Result<usize, Error> {
    let opts = Options {
        block,
        ..Default::default()
    };
    let shape = Shape::new(1, fm.input_dim(), dv);
    Plan::new(kind, Scalar, fm, shape, opts).map(|plan| plan.scratch_len())
}

/// The scratch `e` needs (none for exact softmax attention).
fn scratch_len<T: Float, F: FeatureMap<T>>(e: Entry, fm: &F, dv: usize, block: usize) -> usize {
    let kind = match e {
        Entry::Bidirectional => PlanKind::Bidirectional,
        Entry::Prefix => PlanKind::CausalPrefix,
        Entry::Chunked => PlanKind::CausalChunked,
        Entry::Softmax => return 0,
    };
    planned(kind, fm, dv, block).unwrap()
}

fn call<T: Float, F: FeatureMap<T>>(
    e: Entry,
    fm: &F,
    c: &Case<T>,
    out: &mut [T],
    scratch: &mut [T],
) -> Result<(), Error> {
    let (q, k, v, s, o) = (c.q, c.k, c.v, c.shape, &c.opts);
    match e {
        Entry::Bidirectional => Plan::new(PlanKind::Bidirectional, Scalar, fm, s, *o)
            .and_then(|plan| plan.run(q, k, v, out, scratch)),
        Entry::Prefix => Plan::new(PlanKind::CausalPrefix, Scalar, fm, s, *o)
            .and_then(|plan| plan.run(q, k, v, out, scratch)),
        Entry::Chunked => Plan::new(PlanKind::CausalChunked, Scalar, fm, s, *o)
            .and_then(|plan| plan.run(q, k, v, out, scratch)),
        Entry::Softmax => {
            let eo = ExactOptions {
                causal: false,
                scale: None,
                key_mask: o.key_mask,
            };
            softmax_attention(&Scalar, q, k, v, s, &eo, out)
        }
    }
}

/// Runs `e` with sentinel-filled buffers (out sized for the shape where that is computable,
/// scratch for a valid block), expects `want`, and checks nothing was written.
fn expect<T: Float, F: FeatureMap<T>>(e: Entry, fm: &F, c: &Case<T>, want: Error) {
    let rows = c.shape.queries.min(64);
    let dv = c.shape.value_dim.clamp(1, 64);
    let block = c.opts.block.clamp(1, 64);
    let mut out = sentinel::<T>(rows * dv);
    let mut scratch = sentinel::<T>(scratch_len(e, fm, dv, block));
    let got = call(e, fm, c, &mut out, &mut scratch);
    assert_eq!(got, Err(want), "{e:?}");
    untouched(&out, &format!("{e:?} out"));
    untouched(&scratch, &format!("{e:?} scratch"));
}

struct Data<T> {
    w: Vec<T>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
}

fn data<T: Float>() -> Data<T> {
    Data {
        w: orf(1, M, D),
        q: gaussian(1, L * D),
        k: gaussian(2, L * D),
        v: gaussian(3, L * DV),
    }
}

fn case<'a, T>(q: &'a [T], k: &'a [T], v: &'a [T], shape: Shape) -> Case<'a, T> {
    Case {
        q,
        k,
        v,
        shape,
        opts: Options::default(),
    }
}

fn snapshot<T: Float, F: FeatureMap<T>>(s: &Stream<'_, T, F, Scalar>) -> Vec<u8> {
    let mut bytes = vec![0u8; s.snapshot_len()];
    s.snapshot(&mut bytes).unwrap();
    bytes
}

/// Pushes the first `n` tokens of `x`.
fn push_tokens<T: Float, F: FeatureMap<T>>(
    s: &mut Stream<'_, T, F, Scalar>,
    x: &Data<T>,
    n: usize,
) {
    for t in 0..n {
        s.push(&x.k[t * D..(t + 1) * D], &x.v[t * DV..(t + 1) * DV])
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// ZeroDimension

#[test]
fn zero_dimension_names_the_dimension() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let zd = |what| Error::ZeroDimension { what };
    for e in ENTRIES {
        expect(
            e,
            &fm,
            &case(&[], &[], &[], Shape::new(0, D, DV)),
            zd("queries"),
        );
        let s = Shape::new(L, 0, DV);
        expect(e, &fm, &case(&[], &[], &x.v, s), zd("dim"));
        expect(
            e,
            &fm,
            &case(&x.q, &x.k, &[], Shape::new(L, D, 0)),
            zd("value_dim"),
        );
    }
    let no_keys = Shape {
        queries: L,
        keys: 0,
        dim: D,
        value_dim: DV,
    };
    expect(
        Entry::Bidirectional,
        &fm,
        &case(&x.q, &[], &[], no_keys),
        zd("keys"),
    );
    expect(
        Entry::Softmax,
        &fm,
        &case(&x.q, &[], &[], no_keys),
        zd("keys"),
    );
    for e in [Entry::Bidirectional, Entry::Prefix, Entry::Chunked] {
        let mut c = case(&x.q, &x.k, &x.v, Shape::new(L, D, DV));
        c.opts.block = 0;
        expect(e, &fm, &c, zd("block"));
    }

    assert_eq!(projection_len(0, D), Err(zd("features")));
    assert_eq!(projection_len(M, 0), Err(zd("dim")));
    let mut w = sentinel::<f32>(M * D);
    assert_eq!(
        projection(ProjectionKind::Iid, 1, 0, D, &mut w),
        Err(zd("features"))
    );
    assert_eq!(
        projection(ProjectionKind::default(), 1, M, 0, &mut w),
        Err(zd("dim"))
    );
    untouched(&w, "projection");
    assert_eq!(state_len(0, DV), Err(zd("features")));
    assert_eq!(state_len(M, 0), Err(zd("value_dim")));
    // Plans size their scratch: a zero block is refused when planned, on every path. The
    // chunked plan's option is named "block" as well; its sizing function's own "chunk"
    // error (unreachable through `Plan::new`) is asserted by favor-core's unit tests.
    assert_eq!(
        planned(PlanKind::Bidirectional, &fm, DV, 0),
        Err(zd("block"))
    );
    assert_eq!(
        planned(PlanKind::CausalPrefix, &fm, DV, 0),
        Err(zd("block"))
    );
    assert_eq!(
        planned(PlanKind::CausalChunked, &fm, DV, 0),
        Err(zd("block"))
    );
    // A stream's prefill chunk, sized before the stream exists (and below, from it).
    assert_eq!(
        Stream::<f32, _, Scalar>::prefill_scratch_len_for(&fm, 0),
        Err(zd("chunk"))
    );
    assert_eq!(
        PositiveSoftmax::<f32>::new(&[], 0, D).err(),
        Some(zd("features"))
    );
    assert_eq!(
        Generalized::<f32>::without_projection(0, Activation::Relu).err(),
        Some(zd("dim"))
    );
    let mut buf = sentinel::<f32>(64);
    assert_eq!(
        PrefixState::new(0, DV, &mut buf).err(),
        Some(zd("features"))
    );
    assert_eq!(
        Stream::<f32, _, Scalar>::buffer_len(&fm, 0),
        Err(zd("value_dim"))
    );
    assert_eq!(
        Stream::new(Scalar, &fm, 0, &mut buf).err(),
        Some(zd("value_dim"))
    );
    untouched(&buf, "buffers");

    // attention_row over no keys.
    let (mut out, mut scratch) = (sentinel::<f32>(4), sentinel::<f32>(M));
    let r = attention_row(
        &Scalar,
        &fm,
        &x.q[..D],
        KeyFeatures::new(&[], &[], 0),
        None,
        &mut out,
        &mut scratch,
    );
    assert_eq!(r, Err(zd("keys")));
    untouched(&out, "attention_row out");

    // Stream::prefill with no tokens or a zero chunk; the state must not move.
    let mut sbuf = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut sbuf).unwrap();
    push_tokens(&mut s, &x, 2);
    let before = snapshot(&s);
    assert_eq!(s.prefill_scratch_len(0), Err(zd("chunk")));
    let mut scratch = sentinel::<f32>(s.prefill_scratch_len(4).unwrap());
    let mut out = sentinel::<f32>(L * DV);
    assert_eq!(
        s.prefill(&[], &[], &[], 0, 4, &mut out, &mut scratch),
        Err(zd("queries"))
    );
    assert_eq!(
        s.prefill(&x.q, &x.k, &x.v, L, 0, &mut out, &mut scratch),
        Err(zd("chunk"))
    );
    untouched(&out, "prefill out");
    untouched(&scratch, "prefill scratch");
    assert_eq!(snapshot(&s), before);
}

// ---------------------------------------------------------------------------------------------
// LengthMismatch

#[test]
fn length_mismatch_reports_expected_and_given_lengths() {
    let x = data::<f64>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let shape = Shape::new(L, D, DV);
    let lm = |what, expected, got| Error::LengthMismatch {
        what,
        expected,
        got,
    };
    for e in ENTRIES {
        let short_q = &x.q[..L * D - 1];
        expect(
            e,
            &fm,
            &case(short_q, &x.k, &x.v, shape),
            lm("q", L * D, L * D - 1),
        );
        let long_k = [x.k.clone(), vec![0.5]].concat();
        expect(
            e,
            &fm,
            &case(&x.q, &long_k, &x.v, shape),
            lm("k", L * D, L * D + 1),
        );
        expect(
            e,
            &fm,
            &case(&x.q, &x.k, &x.v[DV..], shape),
            lm("v", L * DV, (L - 1) * DV),
        );
        let mask = [true; L + 2];
        let mut c = case(&x.q, &x.k, &x.v, shape);
        c.opts.key_mask = Some(&mask);
        expect(e, &fm, &c, lm("key_mask", L, L + 2));
    }

    // Feature maps and their rows.
    assert_eq!(
        PositiveSoftmax::new(&x.w[1..], M, D).err(),
        Some(lm("projection", M * D, M * D - 1))
    );
    assert_eq!(
        HyperbolicSoftmax::new(&x.w[..D], M, D).err(),
        Some(lm("projection", M * D, D))
    );
    assert_eq!(
        TrigonometricSoftmax::<f64>::new(&[], M, D).err(),
        Some(lm("projection", M * D, 0))
    );
    assert_eq!(
        Generalized::new(&x.w[2..], M, D, Activation::Relu).err(),
        Some(lm("projection", M * D, M * D - 2))
    );
    let (mut feats, mut logs) = (sentinel::<f64>(L * M), sentinel::<f64>(L));
    let r = fm.map_rows(&Scalar, &x.q[..3 * D + 1], 3, &mut feats, &mut logs);
    assert_eq!(r, Err(lm("x", 3 * D, 3 * D + 1)));
    untouched(&feats, "map_rows features");
    untouched(&logs, "map_rows log_scales");

    // Stream.
    let mut buf = vec![0f64; Stream::<f64, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf).unwrap();
    push_tokens(&mut s, &x, 3);
    let before = snapshot(&s);
    let mut out = sentinel::<f64>(L * DV);
    assert_eq!(s.push(&x.k[..D - 1], &x.v[..DV]), Err(lm("k", D, D - 1)));
    assert_eq!(s.push(&x.k[..D], &x.v[..DV + 1]), Err(lm("v", DV, DV + 1)));
    assert_eq!(
        s.query(&x.q[..D + 1], &mut out[..DV]),
        Err(lm("q", D, D + 1))
    );
    assert_eq!(
        s.step(&x.q[..2], &x.k[..D], &x.v[..DV], &mut out[..DV]),
        Err(lm("q", D, 2))
    );
    assert_eq!(
        s.step(&x.q[..D], &x.k[..D + 2], &x.v[..DV], &mut out[..DV]),
        Err(lm("k", D, D + 2))
    );
    assert_eq!(
        s.step(&x.q[..D], &x.k[..D], &x.v[..1], &mut out[..DV]),
        Err(lm("v", DV, 1))
    );
    let mut scratch = sentinel::<f64>(s.prefill_scratch_len(4).unwrap());
    let r = s.prefill(&x.q, &x.k, &x.v, L - 1, 4, &mut out, &mut scratch);
    assert_eq!(r, Err(lm("q", (L - 1) * D, L * D)));
    untouched(&out, "stream out");
    untouched(&scratch, "prefill scratch");
    assert_eq!(snapshot(&s), before, "stream state moved");

    // attention_row.
    let (mut kf, mut kl) = (vec![0f64; L * M], vec![0f64; L]);
    fm.map_rows(&Scalar, &x.k, L, &mut kf, &mut kl).unwrap();
    let (mut row, mut sc) = (sentinel::<f64>(L), sentinel::<f64>(M));
    let ar = |q: &[f64], f: &[f64], lg: &[f64], row: &mut [f64], sc: &mut [f64]| {
        attention_row(&Scalar, &fm, q, KeyFeatures::new(f, lg, L), None, row, sc)
    };
    assert_eq!(
        ar(&x.q[..D - 1], &kf, &kl, &mut row, &mut sc),
        Err(lm("q", D, D - 1))
    );
    let r = ar(&x.q[..D], &kf[M..], &kl, &mut row, &mut sc);
    assert_eq!(r, Err(lm("key_features", L * M, (L - 1) * M)));
    let r = ar(&x.q[..D], &kf, &kl[1..], &mut row, &mut sc);
    assert_eq!(r, Err(lm("key_log_scales", L, L - 1)));
    untouched(&row, "attention_row out");
    untouched(&sc, "attention_row scratch");

    // PartitionEstimator.
    let mut eb = vec![0f64; PartitionEstimator::<f64, _, Scalar>::buffer_len(&fm)];
    let mut est = PartitionEstimator::new(Scalar, &fm, &mut eb).unwrap();
    est.add_items(&x.k[..2 * D], 2).unwrap();
    let z = est.log_partition(&x.q[..D]).unwrap();
    assert_eq!(
        est.add_items(&x.k[..2 * D], 3),
        Err(lm("keys", 3 * D, 2 * D))
    );
    assert_eq!(est.log_partition(&x.q[..D - 1]), Err(lm("q", D, D - 1)));
    assert_eq!(
        est.log_probability(&x.q[..D], &x.k[..1]),
        Err(lm("item", D, 1))
    );
    assert_eq!(est.items(), 2);
    assert_eq!(est.log_partition(&x.q[..D]).unwrap().to_bits(), z.to_bits());
}

// ---------------------------------------------------------------------------------------------
// DimensionMismatch

#[test]
fn dimension_mismatch_reports_both_dimensions() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    // Inputs consistent with dim 2, feature map built for dim 4.
    let s2 = Shape::new(L, 2, DV);
    let want = Error::DimensionMismatch {
        what: "feature map input dim vs shape.dim",
        expected: D,
        got: 2,
    };
    for e in [Entry::Bidirectional, Entry::Prefix, Entry::Chunked] {
        expect(e, &fm, &case(&x.q[..L * 2], &x.k[..L * 2], &x.v, s2), want);
    }
    // Causal attention over a rectangular shape (5 queries, 7 keys).
    let rect = Shape {
        queries: 5,
        keys: L,
        dim: D,
        value_dim: DV,
    };
    let causal = Error::DimensionMismatch {
        what: "causal attention needs queries == keys",
        expected: L,
        got: 5,
    };
    for e in [Entry::Prefix, Entry::Chunked] {
        expect(e, &fm, &case(&x.q[..5 * D], &x.k, &x.v, rect), causal);
    }
    let mut out = sentinel::<f32>(5 * DV);
    let eo = ExactOptions {
        causal: true,
        ..Default::default()
    };
    let r = softmax_attention(&Scalar, &x.q[..5 * D], &x.k, &x.v, rect, &eo, &mut out);
    assert_eq!(r, Err(causal));
    untouched(&out, "softmax out");
    // The same rectangle is fine for bidirectional attention.
    let mut out = vec![0f32; 5 * DV];
    let mut scratch = vec![0f32; scratch_len(Entry::Bidirectional, &fm, DV, 64)];
    let c = case(&x.q[..5 * D], &x.k, &x.v, rect);
    call(Entry::Bidirectional, &fm, &c, &mut out, &mut scratch).unwrap();
}

// ---------------------------------------------------------------------------------------------
// BufferTooSmall

#[test]
fn buffer_too_small_reports_needed_and_given() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let shape = Shape::new(L, D, DV);
    let small = |what, needed, got| Error::BufferTooSmall { what, needed, got };
    let c = case(&x.q, &x.k, &x.v, shape);
    for e in ENTRIES {
        // Output one element short.
        let mut out = sentinel::<f32>(L * DV - 1);
        let mut scratch = sentinel::<f32>(scratch_len(e, &fm, DV, 64));
        let r = call(e, &fm, &c, &mut out, &mut scratch);
        assert_eq!(r, Err(small("out", L * DV, L * DV - 1)), "{e:?}");
        untouched(&out, "out");
        untouched(&scratch, "scratch");
        if e == Entry::Softmax {
            continue;
        }
        // Scratch one element short.
        let need = scratch_len(e, &fm, DV, 64);
        let mut out = sentinel::<f32>(L * DV);
        let mut scratch = sentinel::<f32>(need - 1);
        let r = call(e, &fm, &c, &mut out, &mut scratch);
        assert_eq!(r, Err(small("scratch", need, need - 1)), "{e:?}");
        untouched(&out, "out");
        untouched(&scratch, "scratch");
    }

    let mut w = sentinel::<f32>(M * D - 1);
    let r = projection(ProjectionKind::default(), 1, M, D, &mut w);
    assert_eq!(r, Err(small("projection", M * D, M * D - 1)));
    untouched(&w, "projection");
    let need = state_len(M, DV).unwrap();
    let mut buf = sentinel::<f32>(need - 1);
    assert_eq!(
        PrefixState::new(M, DV, &mut buf).err(),
        Some(small("state", need, need - 1))
    );
    let need = Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap();
    assert_eq!(need, 2 * (M * DV + M) + RING * (M + DV) + 1 + 4 * M + 2 * D);
    let mut buf = sentinel::<f32>(need - 1);
    let r = Stream::new(Scalar, &fm, DV, &mut buf).err();
    assert_eq!(r, Some(small("stream buffer", need, need - 1)));
    untouched(&buf, "stream buffer");
    let need = PartitionEstimator::<f32, _, Scalar>::buffer_len(&fm);
    let mut buf = sentinel::<f32>(need - 1);
    let r = PartitionEstimator::new(Scalar, &fm, &mut buf).err();
    assert_eq!(r, Some(small("estimator buffer", need, need - 1)));
    untouched(&buf, "estimator buffer");

    let (mut feats, mut logs) = (sentinel::<f32>(2 * M - 1), sentinel::<f32>(2));
    let r = fm.map_rows(&Scalar, &x.q[..2 * D], 2, &mut feats, &mut logs);
    assert_eq!(r, Err(small("features", 2 * M, 2 * M - 1)));
    let (mut feats, mut logs) = (sentinel::<f32>(2 * M), sentinel::<f32>(1));
    let r = fm.map_rows(&Scalar, &x.q[..2 * D], 2, &mut feats, &mut logs);
    assert_eq!(r, Err(small("log_scales", 2, 1)));
    untouched(&feats, "features");
    untouched(&logs, "log_scales");

    // Stream outputs, prefill scratch, snapshot bytes.
    let mut buf = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf).unwrap();
    push_tokens(&mut s, &x, 3);
    let before = snapshot(&s);
    let mut out = sentinel::<f32>(L * DV);
    let r = s.query(&x.q[..D], &mut out[..DV - 1]);
    assert_eq!(r, Err(small("out", DV, DV - 1)));
    let r = s.step(&x.q[..D], &x.k[..D], &x.v[..DV], &mut out[..1]);
    assert_eq!(r, Err(small("out", DV, 1)));
    let need = s.prefill_scratch_len(4).unwrap();
    // The chunk buffers of the chunked path, `2·C·M + C² + 4·C + 2·M`: the chunked plan's
    // scratch less its state, and what the stream's feature map alone sizes.
    assert_eq!(need, 2 * 4 * M + 4 * 4 + 4 * 4 + 2 * M);
    let chunked = planned(PlanKind::CausalChunked, &fm, DV, 4).unwrap();
    assert_eq!(need, chunked - state_len(M, DV).unwrap());
    assert_eq!(
        Stream::<f32, _, Scalar>::prefill_scratch_len_for(&fm, 4),
        Ok(need)
    );
    let mut scratch = sentinel::<f32>(need - 1);
    let r = s.prefill(&x.q, &x.k, &x.v, L, 4, &mut out, &mut scratch);
    assert_eq!(r, Err(small("scratch", need, need - 1)));
    let mut scratch = sentinel::<f32>(need);
    let r = s.prefill(&x.q, &x.k, &x.v, L, 4, &mut out[..L * DV - 2], &mut scratch);
    assert_eq!(r, Err(small("out", L * DV, L * DV - 2)));
    untouched(&out, "stream out");
    untouched(&scratch, "prefill scratch");
    let n = s.snapshot_len();
    let mut bytes = vec![0xA5u8; n - 1];
    assert_eq!(s.snapshot(&mut bytes), Err(small("snapshot", n, n - 1)));
    assert!(
        bytes.iter().all(|b| *b == 0xA5),
        "snapshot bytes written on error"
    );
    assert_eq!(snapshot(&s), before, "stream state moved");

    // attention_row outputs and scratch.
    let (mut kf, mut kl) = (vec![0f32; L * M], vec![0f32; L]);
    fm.map_rows(&Scalar, &x.k, L, &mut kf, &mut kl).unwrap();
    assert_eq!(attention_row_scratch_len(&fm), M);
    let (mut row, mut sc) = (sentinel::<f32>(L - 1), sentinel::<f32>(M));
    let r = attention_row(
        &Scalar,
        &fm,
        &x.q[..D],
        KeyFeatures::new(&kf, &kl, L),
        None,
        &mut row,
        &mut sc,
    );
    assert_eq!(r, Err(small("out", L, L - 1)));
    let (mut row, mut sc2) = (sentinel::<f32>(L), sentinel::<f32>(M - 1));
    let r = attention_row(
        &Scalar,
        &fm,
        &x.q[..D],
        KeyFeatures::new(&kf, &kl, L),
        None,
        &mut row,
        &mut sc2,
    );
    assert_eq!(r, Err(small("scratch", M, M - 1)));
    untouched(&row, "attention_row out");
    untouched(&sc, "attention_row scratch");
    untouched(&sc2, "attention_row scratch");
}

// ---------------------------------------------------------------------------------------------
// NonFinite

/// Every entry point that takes q, k or v rejects NaN, +∞ and −∞ with the input's name and the
/// first offending row (rows of d for q/k, of dv for v; 5 queries vs 7 keys for
/// bidirectional), and writes nothing.
fn check_non_finite_batch<T: Float>() {
    let x = data::<T>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let nf = |what, row| Error::NonFinite { what, row };
    for bad in BAD {
        for e in ENTRIES {
            let lq = if e == Entry::Bidirectional || e == Entry::Softmax {
                5
            } else {
                L
            };
            let shape = Shape {
                queries: lq,
                keys: L,
                dim: D,
                value_dim: DV,
            };
            let q = &x.q[..lq * D];
            for row in [0, 3, lq - 1] {
                let pq = poison(q, D, row, bad);
                expect(e, &fm, &case(&pq, &x.k, &x.v, shape), nf("q", row));
            }
            for row in [0, 4, L - 1] {
                let pk = poison(&x.k, D, row, bad);
                expect(e, &fm, &case(q, &pk, &x.v, shape), nf("k", row));
                let pv = poison(&x.v, DV, row, bad);
                expect(e, &fm, &case(q, &x.k, &pv, shape), nf("v", row));
            }
        }
    }
}

#[test]
fn non_finite_inputs_are_rejected_with_their_row_in_batch_entry_points() {
    check_non_finite_batch::<f32>();
    check_non_finite_batch::<f64>();
}

/// Streams: a rejected push/query/step/prefill leaves the state bit-identical (snapshot before
/// == snapshot after), writes no output, and later tokens behave as if it never happened.
fn check_non_finite_stream<T: Float>() {
    let x = data::<T>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let nf = |what, row| Error::NonFinite { what, row };
    let mut buf = vec![T::from_f64(0.0); Stream::<T, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf).unwrap();
    push_tokens(&mut s, &x, 3);
    let before = snapshot(&s);
    let (q, k, v) = (&x.q[3 * D..4 * D], &x.k[3 * D..4 * D], &x.v[3 * DV..4 * DV]);
    let mut out = sentinel::<T>(L * DV);
    let mut scratch = sentinel::<T>(s.prefill_scratch_len(3).unwrap());
    for bad in BAD {
        assert_eq!(s.push(&poison(k, D, 0, bad), v), Err(nf("k", 0)));
        assert_eq!(s.push(k, &poison(v, DV, 0, bad)), Err(nf("v", 0)));
        assert_eq!(
            s.query(&poison(q, D, 0, bad), &mut out[..DV]),
            Err(nf("q", 0))
        );
        let o = &mut out[..DV];
        assert_eq!(s.step(&poison(q, D, 0, bad), k, v, o), Err(nf("q", 0)));
        assert_eq!(s.step(q, &poison(k, D, 0, bad), v, o), Err(nf("k", 0)));
        assert_eq!(s.step(q, k, &poison(v, DV, 0, bad), o), Err(nf("v", 0)));
        for row in [0, 2, L - 1] {
            let r = s.prefill(
                &poison(&x.q, D, row, bad),
                &x.k,
                &x.v,
                L,
                3,
                &mut out,
                &mut scratch,
            );
            assert_eq!(r, Err(nf("q", row)));
            let r = s.prefill(
                &x.q,
                &poison(&x.k, D, row, bad),
                &x.v,
                L,
                3,
                &mut out,
                &mut scratch,
            );
            assert_eq!(r, Err(nf("k", row)));
            let r = s.prefill(
                &x.q,
                &x.k,
                &poison(&x.v, DV, row, bad),
                L,
                3,
                &mut out,
                &mut scratch,
            );
            assert_eq!(r, Err(nf("v", row)));
        }
        assert_eq!(
            snapshot(&s),
            before,
            "rejected input changed the stream state"
        );
        assert_eq!(s.tokens(), 3);
    }
    untouched(&out, "stream out");
    untouched(&scratch, "prefill scratch");

    // The stream continues exactly like one that never saw the rejected inputs.
    let mut buf2 = vec![T::from_f64(0.0); Stream::<T, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut clean = Stream::new(Scalar, &fm, DV, &mut buf2).unwrap();
    push_tokens(&mut clean, &x, 3);
    let (mut a, mut b) = (vec![T::from_f64(0.0); DV], vec![T::from_f64(0.0); DV]);
    s.step(q, k, v, &mut a).unwrap();
    clean.step(q, k, v, &mut b).unwrap();
    for (p, r) in a.iter().zip(&b) {
        assert_eq!(
            <T as Float>::to_f64(*p).to_bits(),
            <T as Float>::to_f64(*r).to_bits()
        );
    }
}

#[test]
fn non_finite_inputs_leave_stream_state_unchanged() {
    check_non_finite_stream::<f32>();
    check_non_finite_stream::<f64>();
}

/// attention_row, the partition estimator and the feature-map constructors (projection rows).
#[test]
fn non_finite_inputs_are_rejected_elsewhere() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let nf = |what, row| Error::NonFinite { what, row };
    let (mut kf, mut kl) = (vec![0f32; L * M], vec![0f32; L]);
    fm.map_rows(&Scalar, &x.k, L, &mut kf, &mut kl).unwrap();
    for bad in BAD {
        let (mut row, mut sc) = (sentinel::<f32>(L), sentinel::<f32>(M));
        let q = &x.q[..D];
        let mut ar = |q: &[f32], f: &[f32], lg: &[f32]| {
            attention_row(
                &Scalar,
                &fm,
                q,
                KeyFeatures::new(f, lg, L),
                Some(5),
                &mut row,
                &mut sc,
            )
        };
        assert_eq!(ar(&poison(q, D, 0, bad), &kf, &kl), Err(nf("q", 0)));
        assert_eq!(
            ar(q, &poison(&kf, M, 4, bad), &kl),
            Err(nf("key_features", 4))
        );
        assert_eq!(
            ar(q, &kf, &poison(&kl, 1, 5, bad)),
            Err(nf("key_log_scales", 5))
        );
        untouched(&row, "attention_row out");
        untouched(&sc, "attention_row scratch");

        let mut eb = vec![0f32; PartitionEstimator::<f32, _, Scalar>::buffer_len(&fm)];
        let mut est = PartitionEstimator::new(Scalar, &fm, &mut eb).unwrap();
        est.add_items(&x.k[..2 * D], 2).unwrap();
        let z = est.log_partition(q).unwrap();
        let r = est.add_items(&poison(&x.k, D, 2, bad), L);
        assert_eq!(r, Err(nf("keys", 2)));
        assert_eq!(est.items(), 2, "a rejected batch was partly added");
        assert_eq!(est.log_partition(&poison(q, D, 0, bad)), Err(nf("q", 0)));
        assert_eq!(
            est.log_probability(q, &poison(q, D, 0, bad)),
            Err(nf("item", 0))
        );
        assert_eq!(
            est.log_probability(&poison(q, D, 0, bad), q),
            Err(nf("q", 0))
        );
        assert_eq!(est.log_partition(q).unwrap().to_bits(), z.to_bits());

        let pw = poison(&x.w, D, 5, bad);
        let want = Some(nf("projection", 5));
        assert_eq!(PositiveSoftmax::new(&pw, M, D).err(), want);
        assert_eq!(HyperbolicSoftmax::new(&pw, M, D).err(), want);
        assert_eq!(TrigonometricSoftmax::new(&pw, M, D).err(), want);
        assert_eq!(Generalized::new(&pw, M, D, Activation::Exp).err(), want);
    }
}

// ---------------------------------------------------------------------------------------------
// InvalidParameter, SizeOverflow

#[test]
fn invalid_parameters_are_named() {
    let x = data::<f32>();
    let inv = |what| Error::InvalidParameter { what };
    let g = Generalized::new(&x.w, M, D, Activation::Relu).unwrap();
    for eps in [-1e-3, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let want = inv("epsilon must be finite and >= 0");
        assert_eq!(g.with_epsilon(eps).err(), Some(want), "eps {eps}");
    }
    assert!(g.with_epsilon(0.0).is_ok());

    let shape = Shape::new(L, D, DV);
    for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut out = sentinel::<f32>(L * DV);
        let eo = ExactOptions {
            scale: Some(scale),
            ..Default::default()
        };
        let r = softmax_attention(&Scalar, &x.q, &x.k, &x.v, shape, &eo, &mut out);
        assert_eq!(r, Err(inv("scale must be finite")));
        untouched(&out, "softmax out");
    }

    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let (mut kf, mut kl) = (vec![0f32; L * M], vec![0f32; L]);
    fm.map_rows(&Scalar, &x.k, L, &mut kf, &mut kl).unwrap();
    for pos in [L, L + 5, usize::MAX] {
        let (mut row, mut sc) = (sentinel::<f32>(L), sentinel::<f32>(M));
        let r = attention_row(
            &Scalar,
            &fm,
            &x.q[..D],
            KeyFeatures::new(&kf, &kl, L),
            Some(pos),
            &mut row,
            &mut sc,
        );
        assert_eq!(r, Err(inv("causal_position must be < keys")));
        untouched(&row, "attention_row out");
        untouched(&sc, "attention_row scratch");
    }

    let mut eb = sentinel::<f32>(2 * M);
    let r = PartitionEstimator::new(Scalar, &g, &mut eb).err();
    assert_eq!(
        r,
        Some(inv(
            "the partition-function estimator needs a positive softmax feature map"
        ))
    );
    untouched(&eb, "estimator buffer");
}

#[test]
fn size_overflow_is_reported_not_wrapped() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let of = Err(Error::SizeOverflow);
    assert_eq!(projection_len(usize::MAX, 2), of);
    assert_eq!(state_len(usize::MAX / 2, 3), of);
    // Planned scratch: usize::MAX features (a map without projection on usize::MAX inputs),
    // a huge block, a huge value dimension; a 1-feature map's huge chunk, planned and for a
    // stream's prefill.
    let wide = Generalized::<f32>::without_projection(usize::MAX, Activation::Relu).unwrap();
    assert_eq!(planned(PlanKind::Bidirectional, &wide, 1, 1), of);
    assert_eq!(planned(PlanKind::CausalPrefix, &fm, DV, usize::MAX / 4), of);
    let narrow = PositiveSoftmax::new(&x.w[..D], 1, D).unwrap();
    let huge_chunk = usize::MAX / 2 + 1;
    assert_eq!(
        Stream::<f32, _, Scalar>::prefill_scratch_len_for(&narrow, huge_chunk),
        of
    );
    assert_eq!(
        planned(PlanKind::CausalChunked, &narrow, DV, huge_chunk),
        of
    );
    assert_eq!(planned(PlanKind::CausalChunked, &fm, usize::MAX / 4, 1), of);
    assert_eq!(
        Stream::<f32, _, Scalar>::buffer_len(&fm, usize::MAX / 4),
        of
    );
    let mut w = sentinel::<f32>(8);
    let r = projection(ProjectionKind::Iid, 1, usize::MAX / 2, 4, &mut w);
    assert_eq!(r, Err(Error::SizeOverflow));
    untouched(&w, "projection");
    // Through the attention entry points: a shape whose element counts overflow.
    for e in ENTRIES {
        let huge = Shape::new(usize::MAX / 2, D, DV);
        let mut out = sentinel::<f32>(L * DV);
        let mut scratch = sentinel::<f32>(scratch_len(e, &fm, DV, 64));
        let r = call(
            e,
            &fm,
            &case(&x.q, &x.k, &x.v, huge),
            &mut out,
            &mut scratch,
        );
        assert_eq!(r, Err(Error::SizeOverflow), "{e:?}");
        untouched(&out, "out");
        untouched(&scratch, "scratch");
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots

const HEADER: usize = 56;
const TRAILER: usize = 4;

/// Little-endian bytes of one T.
fn le_bytes<T: Float>(x: T) -> Vec<u8> {
    let x = <T as Float>::to_f64(x);
    if size_of::<T>() == 4 {
        (x as f32).to_le_bytes().to_vec()
    } else {
        x.to_le_bytes().to_vec()
    }
}

/// `bytes` with `with` written at `at`, checksum left as it was (so a version-2 snapshot
/// fails it).
fn patched(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + with.len()].copy_from_slice(with);
    b
}

/// [`patched`], then the checksum recomputed: a deliberately crafted snapshot that only the
/// semantic checks can refuse.
fn resealed(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut b = patched(bytes, at, with);
    let body = b.len() - TRAILER;
    let crc = favor_core::crc32(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Each rejection reason, with the stream left exactly as it was (snapshot compared bytewise).
fn check_snapshot_errors<T: Float>() {
    let x = data::<T>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let mut buf = vec![T::from_f64(0.0); Stream::<T, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf).unwrap();
    push_tokens(&mut s, &x, 4);
    let good = snapshot(&s);
    let part = (M * DV + M) * size_of::<T>();
    let ring = RING * (M + DV) * size_of::<T>();
    assert_eq!(good.len(), HEADER + 2 * part + ring + TRAILER);
    // A second stream with another state: the target of every rejected restore.
    let mut buf2 = vec![T::from_f64(0.0); Stream::<T, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut t = Stream::new(Scalar, &fm, DV, &mut buf2).unwrap();
    push_tokens(&mut t, &x, 2);
    let before = snapshot(&t);
    let snap = |e| Err(Error::Snapshot(e));
    let mut reject = |bytes: &[u8], want: SnapshotError| {
        assert_eq!(t.restore(bytes), snap(want));
        assert_eq!(
            snapshot(&t),
            before,
            "rejected restore ({want:?}) changed the state"
        );
    };

    reject(&[], SnapshotError::TooShort);
    reject(&good[..HEADER - 1], SnapshotError::TooShort);
    reject(&patched(&good, 0, b"FAVX"), SnapshotError::BadMagic);
    reject(&patched(&good, 1, &[0]), SnapshotError::BadMagic);
    for v in [0, SNAPSHOT_VERSION + 1, u32::MAX] {
        reject(
            &patched(&good, 4, &v.to_le_bytes()),
            SnapshotError::UnsupportedVersion(v),
        );
    }
    reject(&good[..good.len() - 1], SnapshotError::WrongLength);
    reject(&good[..HEADER], SnapshotError::WrongLength);
    reject(&[&good[..], &[0u8]].concat(), SnapshotError::WrongLength);
    // A header whose dims imply another length is a length error, whatever the checksum.
    reject(
        &patched(&good, 16, &(M as u64 + 1).to_le_bytes()),
        SnapshotError::WrongLength,
    );
    reject(
        &patched(&good, 8, &3u32.to_le_bytes()),
        SnapshotError::WrongLength,
    );
    // Any corrupted byte after the header's sizes fails the checksum.
    for at in [12, 33, 40, 48, HEADER, HEADER + part, good.len() - 1] {
        let mut b = good.clone();
        b[at] ^= 0x10;
        reject(&b, SnapshotError::BadChecksum);
    }
    // Valid checksums over crafted headers: each mismatch is named.
    // (A snapshot of the other float type is WrongDType:
    // snapshot_of_the_other_float_type_is_wrong_dtype.)
    reject(
        &resealed(&good, 40, &[0x5A; 8]),
        SnapshotError::WrongFeatureMap,
    );
    // Corrupt payloads with valid checksums: a non-finite value in any part, a non-finite,
    // off-grid or impossible log-scale, a non-zero reserved word, a compensation beyond a
    // rounding error, negative or oversized sums.
    let nan = T::from_f64(f64::NAN);
    let inf = T::from_f64(f64::INFINITY);
    for (at, val) in [
        (HEADER, nan),
        (HEADER + M * DV * size_of::<T>(), inf),
        (HEADER + part, nan),
        (HEADER + 2 * part + ring - size_of::<T>(), nan),
    ] {
        reject(&resealed(&good, at, &le_bytes(val)), SnapshotError::Corrupt);
    }
    // (An off-grid but plausible log-scale is usable — version-1 states have one — so it is
    // not refused; one beyond the map's bound is.)
    for ls in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e30, 1e4] {
        reject(
            &resealed(&good, 48, &ls.to_le_bytes()),
            SnapshotError::Corrupt,
        );
    }
    reject(
        &resealed(&good, 12, &1u32.to_le_bytes()),
        SnapshotError::Corrupt,
    );
    let z0 = HEADER + M * DV * size_of::<T>();
    reject(
        &resealed(&good, z0 + part, &le_bytes(T::from_f64(0.5))),
        SnapshotError::Corrupt,
    );
    reject(
        &resealed(&good, z0, &le_bytes(T::from_f64(-1.0))),
        SnapshotError::Corrupt,
    );
    reject(
        &resealed(&good, z0, &le_bytes(T::from_f64(1e3))),
        SnapshotError::Corrupt,
    );

    // Snapshots from streams with other dimensions or another feature map.
    let mut b3 = vec![T::from_f64(0.0); Stream::<T, _, Scalar>::buffer_len(&fm, DV + 1).unwrap()];
    let wide = Stream::new(Scalar, &fm, DV + 1, &mut b3).unwrap();
    reject(&snapshot(&wide), SnapshotError::WrongDims);
    let w2 = orf::<T>(2, M, D);
    let other = PositiveSoftmax::new(&w2, M, D).unwrap();
    let mut b4 = vec![T::from_f64(0.0); Stream::<T, _, Scalar>::buffer_len(&other, DV).unwrap()];
    let so = Stream::new(Scalar, &other, DV, &mut b4).unwrap();
    reject(&snapshot(&so), SnapshotError::WrongFeatureMap);
    let unnormalised = PositiveSoftmax::new(&x.w, M, D)
        .unwrap()
        .with_data_normalizer(false);
    let mut b5 =
        vec![T::from_f64(0.0); Stream::<T, _, Scalar>::buffer_len(&unnormalised, DV).unwrap()];
    let su = Stream::new(Scalar, &unnormalised, DV, &mut b5).unwrap();
    reject(&snapshot(&su), SnapshotError::WrongFeatureMap);
    let hyp_w = orf::<T>(1, M / 2, D);
    let hyp = HyperbolicSoftmax::new(&hyp_w, M / 2, D).unwrap(); // also M features
    let mut b6 = vec![T::from_f64(0.0); Stream::<T, _, Scalar>::buffer_len(&hyp, DV).unwrap()];
    let sh = Stream::new(Scalar, &hyp, DV, &mut b6).unwrap();
    reject(&snapshot(&sh), SnapshotError::WrongFeatureMap);

    // And the good bytes are accepted.
    t.restore(&good).unwrap();
    assert_eq!(snapshot(&t), good);
}

#[test]
fn snapshot_errors_name_the_problem_and_leave_the_stream_alone() {
    check_snapshot_errors::<f32>();
    check_snapshot_errors::<f64>();
}

/// Every single-byte change of a snapshot is refused (the CRC-32 detects every burst of up
/// to 32 bits), and the stream is left as it was.
#[test]
fn every_single_byte_mutation_of_a_snapshot_is_refused() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let mut buf = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf).unwrap();
    push_tokens(&mut s, &x, 3);
    let good = snapshot(&s);
    let mut b2 = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut t = Stream::new(Scalar, &fm, DV, &mut b2).unwrap();
    let before = snapshot(&t);
    for at in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut b = good.clone();
            b[at] ^= flip;
            assert!(t.restore(&b).is_err(), "byte {at} ^ {flip:#x} accepted");
        }
    }
    assert_eq!(snapshot(&t), before);
    t.restore(&good).unwrap();
    assert_eq!(snapshot(&t), good);
}

/// Version-1 snapshots (one part, no checksum) still restore: the same state, with no
/// compensation and nothing pending, answering as the stream that wrote them.
#[test]
fn version_1_snapshots_restore() {
    let x = data::<f64>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let mut buf = vec![0f64; Stream::<f64, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf).unwrap();
    push_tokens(&mut s, &x, 5);
    // Everything in one total, as a version-1 writer had it: S and z in one part.
    let total: Vec<f64> = {
        let [hi, lo, keys, values] = s.state().parts();
        let r = s.state().ring_len();
        (0..hi.len())
            .map(|idx| {
                let ring: f64 = (0..r)
                    .map(|b| match idx < M * DV {
                        true => keys[b * M + idx / DV] * values[b * DV + idx % DV],
                        false => keys[b * M + idx - M * DV],
                    })
                    .sum();
                hi[idx] + lo[idx] + ring
            })
            .collect()
    };
    let v2 = snapshot(&s);
    let mut v1 = v2[..HEADER].to_vec();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    v1[12..16].copy_from_slice(&0u32.to_le_bytes());
    for x in &total {
        v1.extend_from_slice(&x.to_le_bytes());
    }
    let mut b2 = vec![0f64; Stream::<f64, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut t = Stream::new(Scalar, &fm, DV, &mut b2).unwrap();
    t.restore(&v1).unwrap();
    assert_eq!(t.tokens(), 5);
    let (mut a, mut b) = ([0f64; DV], [0f64; DV]);
    s.query(&x.q[..D], &mut a).unwrap();
    t.query(&x.q[..D], &mut b).unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert!((a - b).abs() <= 1e-14 * a.abs().max(1.0), "{a} vs {b}");
    }
    // A version-1 state's log-scale is off the v2 grid: it restores, and the v2 snapshot the
    // restored stream then writes restores too.
    let mut off = v1.clone();
    let c = f64::from_le_bytes(off[48..56].try_into().unwrap()) + 0.1;
    off[48..56].copy_from_slice(&c.to_le_bytes());
    t.restore(&off).unwrap();
    let again = snapshot(&t);
    let mut b3 = vec![0f64; Stream::<f64, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut u = Stream::new(Scalar, &fm, DV, &mut b3).unwrap();
    u.restore(&again).unwrap();
    assert_eq!(snapshot(&u), again);
    // A version-1 snapshot is checked too: NaN in its payload is refused.
    let bad = patched(&v1, HEADER, &f64::NAN.to_le_bytes());
    assert_eq!(
        t.restore(&bad),
        Err(Error::Snapshot(SnapshotError::Corrupt))
    );
}

/// A snapshot written by an f64 stream restored into an f32 stream over the same dims (and
/// vice versa) is refused as WrongDType, without any patching.
#[test]
fn snapshot_of_the_other_float_type_is_wrong_dtype() {
    let w64 = orf::<f64>(1, M, D);
    let w32: Vec<f32> = w64.iter().map(|&x| x as f32).collect();
    let (fm64, fm32) = (
        PositiveSoftmax::new(&w64, M, D).unwrap(),
        PositiveSoftmax::new(&w32, M, D).unwrap(),
    );
    let mut b64 = vec![0f64; Stream::<f64, _, Scalar>::buffer_len(&fm64, DV).unwrap()];
    let mut b32 = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm32, DV).unwrap()];
    let mut s64 = Stream::new(Scalar, &fm64, DV, &mut b64).unwrap();
    let mut s32 = Stream::new(Scalar, &fm32, DV, &mut b32).unwrap();
    s64.push(&[0.1, 0.2, 0.3, 0.4], &[1.0, 2.0, 3.0]).unwrap();
    s32.push(&[0.4, 0.3, 0.2, 0.1], &[3.0, 2.0, 1.0]).unwrap();
    let (a, b) = (snapshot(&s64), snapshot(&s32));
    let want = Err(Error::Snapshot(SnapshotError::WrongDType));
    assert_eq!(s32.restore(&a), want);
    assert_eq!(s64.restore(&b), want);
    assert_eq!(snapshot(&s32), b);
    assert_eq!(snapshot(&s64), a);
}

/// Regression: `Stream::restore` once validated the header's log-scale as an f64 and only
/// then rounded it to T. For an f32 stream a finite f64 beyond f32's range becomes ±∞ — the
/// states the same check rejects when written directly — and the restored stream silently
/// dropped every later token (each new key scaled by exp(ℓ − ∞) = 0).
#[test]
fn restore_rejects_a_log_scale_that_is_infinite_in_the_stream_type() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let mut buf = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf).unwrap();
    push_tokens(&mut s, &x, 3);
    let good = snapshot(&s);
    let mut buf2 = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut t = Stream::new(Scalar, &fm, DV, &mut buf2).unwrap();
    for ls in [1e300f64, 4e38, -1e300] {
        let bytes = resealed(&good, 48, &ls.to_le_bytes());
        let r = t.restore(&bytes);
        assert_eq!(
            r,
            Err(Error::Snapshot(SnapshotError::Corrupt)),
            "log-scale {ls:e} accepted; the f32 state now has log_scale {}",
            t.state().log_scale()
        );
    }
}

/// An "empty" snapshot (tokens = 0, log-scale −∞) must hold an all-zero state: otherwise the
/// restored stream would answer queries from keys it claims never to have seen.
#[test]
fn restore_rejects_an_empty_snapshot_with_a_non_zero_state() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let mut buf = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf).unwrap();
    let empty = snapshot(&s);
    let part = (M * DV + M) * 4;
    // The first element of each part (just after the 56-byte header) set to 1.0.
    for at in [
        HEADER,
        HEADER + part,
        HEADER + 2 * part,
        HEADER + 2 * part + RING * M * 4,
    ] {
        let bytes = resealed(&empty, at, &1.0f32.to_le_bytes());
        assert_eq!(
            s.restore(&bytes),
            Err(Error::Snapshot(SnapshotError::Corrupt))
        );
    }
    assert_eq!(snapshot(&s), empty);
    // The untouched empty snapshot itself restores fine.
    assert_eq!(s.restore(&empty), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Every variant reachable; Display.

/// One public-API call per variant (the tests above check the fields); each variant must be
/// produced and render a non-empty, distinct message.
#[test]
fn every_variant_is_reachable_and_displays() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let shape = Shape::new(L, D, DV);
    let mut out = vec![0f32; L * DV];
    let mut scratch = vec![0f32; scratch_len(Entry::Bidirectional, &fm, DV, 64)];
    let mut run = |c: &Case<f32>| call(Entry::Bidirectional, &fm, c, &mut out, &mut scratch);
    let mut errors: Vec<Error> = vec![
        run(&case(&[], &[], &[], Shape::new(0, D, DV))).unwrap_err(),
        run(&case(&x.q[1..], &x.k, &x.v, shape)).unwrap_err(),
        run(&case(
            &x.q[..2 * L],
            &x.k[..2 * L],
            &x.v,
            Shape::new(L, 2, DV),
        ))
        .unwrap_err(),
        Plan::new(
            PlanKind::Bidirectional,
            Scalar,
            &fm,
            shape,
            Options::default(),
        )
        .and_then(|plan| plan.run(&x.q, &x.k, &x.v, &mut [], &mut []))
        .unwrap_err(),
        run(&case(&poison(&x.q, D, 1, f64::NAN), &x.k, &x.v, shape)).unwrap_err(),
        Generalized::new(&x.w, M, D, Activation::Relu)
            .unwrap()
            .with_epsilon(-1.0)
            .unwrap_err(),
        out_of_range_step().unwrap_err(),
        projection_len(usize::MAX, 3).unwrap_err(),
    ];
    let mut buf = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf).unwrap();
    push_tokens(&mut s, &x, 2);
    let good = snapshot(&s);
    let w2 = orf::<f32>(3, M, D);
    let fm2 = PositiveSoftmax::new(&w2, M, D).unwrap();
    let mut b2 = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm2, DV).unwrap()];
    let s2 = Stream::new(Scalar, &fm2, DV, &mut b2).unwrap();
    let mut b3 = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, 1).unwrap()];
    let s3 = Stream::new(Scalar, &fm, 1, &mut b3).unwrap();
    let w64: Vec<f64> = x.w.iter().map(|&w| f64::from(w)).collect();
    let fm64 = PositiveSoftmax::new(&w64, M, D).unwrap();
    let mut b64 = vec![0f64; Stream::<f64, _, Scalar>::buffer_len(&fm64, DV).unwrap()];
    let s64 = Stream::new(Scalar, &fm64, DV, &mut b64).unwrap();
    let bad_snapshots = [
        good[..10].to_vec(),
        patched(&good, 0, b"XXXX"),
        patched(&good, 4, &7u32.to_le_bytes()),
        snapshot(&s64),
        snapshot(&s3),
        snapshot(&s2),
        good[..good.len() - 4].to_vec(),
        patched(&good, HEADER, &f32::NAN.to_le_bytes()),
        resealed(&good, HEADER, &f32::NAN.to_le_bytes()),
    ];
    for b in &bad_snapshots {
        errors.push(s.restore(b).unwrap_err());
    }
    let names: Vec<&str> = errors.iter().map(variant).collect();
    assert_eq!(names, ALL_VARIANTS, "one call per variant, in order");

    let mut messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for (e, msg) in errors.iter().zip(&messages) {
        assert!(!msg.trim().is_empty(), "{e:?} displays as an empty string");
        if let Error::Snapshot(inner) = e {
            let inner_msg = inner.to_string();
            assert!(
                !inner_msg.trim().is_empty(),
                "{inner:?} displays as an empty string"
            );
            assert!(
                msg.contains(&inner_msg),
                "{msg} does not include {inner_msg}"
            );
            assert_eq!(Error::from(*inner), *e);
        }
        let as_dyn: &dyn std::error::Error = e;
        assert_eq!(as_dyn.to_string(), *msg);
    }
    messages.sort();
    messages.dedup();
    assert_eq!(
        messages.len(),
        ALL_VARIANTS.len(),
        "two variants display the same message"
    );
}

/// A finite key whose projection `w·k` would overflow f32: the step must refuse it as out of
/// range rather than poison the state (or, for a query, answer NaN).
fn out_of_range_step() -> Result<(), Error> {
    let mut w = vec![0.5f32; M * D];
    w[0] = 3e38;
    let fm = PositiveSoftmax::new(&w, M, D)?;
    let mut buf = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV)?];
    let mut s = Stream::new(Scalar, &fm, DV, &mut buf)?;
    let mut k = vec![0f32; D];
    k[0] = 100.0;
    let (q, v) = (vec![0.1f32; D], vec![1f32; DV]);
    let mut out = vec![0f32; DV];
    let before = snapshot(&s);
    let e = s.step(&q, &k, &v, &mut out);
    let oor = |what| Err(Error::OutOfRange { what, row: 0 });
    assert_eq!(e, oor("k"));
    assert_eq!(s.push(&k, &v), oor("k"));
    assert_eq!(s.query(&k, &mut out), oor("q"));
    assert_eq!(snapshot(&s), before, "the state must not change");
    e
}

#[test]
fn out_of_range_features_are_refused_by_the_stream() {
    assert!(out_of_range_step().is_err());
}

/// The reproductions: finite inputs that once gave NaN with `Ok`. Each entry point
/// now returns `OutOfRange` or a finite result (favor-simd's tests run the same on every
/// backend).
#[test]
fn finite_inputs_never_give_nan() {
    fn run<K: Kernels<f32>>(kern: K) {
        let (d, m) = (16, 32);
        let mut w = vec![0f32; m * d];
        projection(ProjectionKind::default(), 1, m, d, &mut w).unwrap();
        let fm = PositiveSoftmax::new(&w, m, d).unwrap();
        let mut buf = vec![0f32; Stream::<f32, _, K>::buffer_len(&fm, d).unwrap()];
        let mut s = Stream::new(kern, &fm, d, &mut buf).unwrap();
        let mut out = vec![0f32; d];
        let r = s.step(&[1e38; 16], &[0.1; 16], &[1.0; 16], &mut out);
        assert_eq!(r, Err(Error::OutOfRange { what: "q", row: 0 }));
        // The largest admitted entries give finite outputs.
        let big = fm.max_input();
        s.step(&[big; 16], &[0.1; 16], &[1.0; 16], &mut out)
            .unwrap();
        assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
        s.step(&[0.1; 16], &[-big; 16], &[1.0; 16], &mut out)
            .unwrap();
        assert!(out.iter().all(|x| x.is_finite()), "{out:?}");

        // Bidirectional with one query row near 3e38, and a second within range.
        let l = 4;
        let mut q = vec![0.1f32; l * d];
        q[2 * d + 3] = 3e38;
        let kv = vec![0.2f32; l * d];
        let shape = Shape::new(l, d, d);
        let plan = Plan::new(
            PlanKind::Bidirectional,
            kern,
            &fm,
            shape,
            Options::default(),
        )
        .unwrap();
        let mut scratch = vec![0f32; plan.scratch_len()];
        let mut o = vec![0f32; l * d];
        let r = plan.run(&q, &kv, &kv, &mut o, &mut scratch);
        assert_eq!(r, Err(Error::OutOfRange { what: "q", row: 2 }));
        q[2 * d + 3] = big;
        for normalized in [true, false] {
            let opts = Options {
                normalized,
                ..Default::default()
            };
            Plan::new(PlanKind::Bidirectional, kern, &fm, shape, opts)
                .and_then(|plan| plan.run(&q, &kv, &kv, &mut o, &mut scratch))
                .unwrap();
            assert!(o.iter().all(|x| !x.is_nan()), "{o:?}");
            if normalized {
                assert!(o.iter().all(|x| x.is_finite()), "{o:?}");
            }
        }
        // Values whose sums would overflow.
        let mut v = vec![1f32; l * d];
        v[d] = 1e37;
        let r = plan.run(&kv, &kv, &v, &mut o, &mut scratch);
        assert_eq!(r, Err(Error::OutOfRange { what: "v", row: 1 }));
        // A generalized map whose key features are large while the query's are small: the
        // sums over the keys would overflow (F = max(1, F(q), F(k)) bounds both sides).
        let relu = Generalized::without_projection(3, Activation::Relu).unwrap();
        let s3 = Shape::new(1, 3, 3);
        let mut o3 = vec![0f32; 3];
        let one = Options {
            block: 1,
            ..Default::default()
        };
        let plan = Plan::new(PlanKind::CausalChunked, kern, &relu, s3, one).unwrap();
        let mut s = vec![0f32; plan.scratch_len()];
        let r = plan.run(
            &[0.0; 3],
            &[1e19, 0.0, 0.0],
            &[4e19, 0.0, 0.0],
            &mut o3,
            &mut s,
        );
        assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?} {o3:?}");
        // The same over three tokens: the error names the key row that holds the large entry.
        let s3 = Shape::new(3, 3, 3);
        let mut k3 = [0.5f32; 9];
        k3[2 * 3 + 1] = -1e19;
        let mut o9 = [0f32; 9];
        let r = Plan::new(PlanKind::CausalChunked, kern, &relu, s3, one)
            .and_then(|plan| plan.run(&[0.0; 9], &k3, &[4e19; 9], &mut o9, &mut s));
        assert_eq!(r, Err(Error::OutOfRange { what: "k", row: 2 }));
        // Exact attention with logits beyond f32.
        q[2 * d + 3] = 3e38;
        let r = softmax_attention(&kern, &q, &kv, &kv, shape, &ExactOptions::default(), &mut o);
        assert_eq!(r, Err(Error::OutOfRange { what: "q", row: 2 }));
    }
    run(Scalar);
}

#[test]
fn resume_checks_its_invariants() {
    let x = data::<f32>();
    let fm = PositiveSoftmax::new(&x.w, M, D).unwrap();
    let mut buf = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&fm, DV).unwrap()];
    for (tokens, log) in [
        (0, 0.0),
        (3, f32::NEG_INFINITY),
        (1, f32::NAN),
        (1, f32::INFINITY),
    ] {
        assert!(
            Stream::resume(Scalar, &fm, DV, &mut buf, tokens, log).is_err(),
            "tokens {tokens}, log-scale {log}"
        );
    }
    assert!(Stream::resume(Scalar, &fm, DV, &mut buf, 0, f32::NEG_INFINITY).is_ok());
    assert!(Stream::resume(Scalar, &fm, DV, &mut buf, 2, -3.0).is_ok());
    // A foreign buffer may hold any ring count (the state's last element): a full ring's
    // count or garbage reads as empty, and steps go on without a panic.
    let last = state_len(M, DV).unwrap() - 1;
    for count in [RING as f32, 1e30, -1.0, f32::NAN] {
        buf[last] = count;
        let mut s = Stream::resume(Scalar, &fm, DV, &mut buf, 2, -3.0).unwrap();
        let mut out = vec![0f32; DV];
        s.step(&x.q[..D], &x.k[..D], &x.v[..DV], &mut out).unwrap();
        assert!(s.state().ring_len() < RING);
    }
}
