//! Integration tests of causal FAVOR+ (token loop, chunked prefill, streams) and of the
//! bidirectional path that shares its prefix state.
//!
//! Oracles never run the code under test:
//! - `explicit` + `favor_reference` (favor-testkit's `reference` module): naive f64 FAVOR+
//!   with explicit, *unstabilised* features `φ(x)ᵢ = exp(wᵢ·x' − |x'|²/2)/√m`
//!   (`x' = x·d^(-1/4)`) over the same projection W, in O(L²), in the log domain. It also
//!   returns a rounding-error bound for each output element; its derivation is the comment
//!   above the testkit's `key_exponent_err`. Every rounding tolerance in this file comes from
//!   it; the tests require it finite (inside the model: the testkit returns ∞ where the model
//!   bounds nothing).
//! - `softmax_and_std`: exact softmax attention (the testkit's `softmax`), plus a first-order
//!   bound on the standard deviation of FAVOR+'s output derived from the paper's Lemma 2 MSE
//!   formulas (the testkit's `lemma2_std`).
//! - Bit-identity claims of the library itself (no-leak, snapshot/restore, reset), checked
//!   with `to_bits()`.
//!
//! Every random number comes from `favor_core::Normals` with a fixed seed. Data seeds live far
//! from projection seeds (the same seed would make the data a copy of W's Gaussian rows).

// Numerical oracles index several arrays with the same counters; iterator chains would hide
// the formulas they transcribe.
#![allow(clippy::needless_range_loop)]

use favor_core::{
    Activation, ExactOptions, FeatureMap, Float, Generalized, HybridShape, HyperbolicSoftmax,
    KeyFeatures, Normals, Options, Plan, PlanKind, PositiveSoftmax, ProjectionKind, Scalar, Shape,
    Stream, TrigonometricSoftmax, attention_row, attention_row_scratch_len, projection,
    projection_len, softmax_attention,
};
use favor_testkit::bounds::{gamma, max_abs, unit};
use favor_testkit::maps::{MapKind, MapSpec};
use favor_testkit::reference::{
    Qkv, RefOpts, Reference, explicit, favor_reference, lemma2_std, softmax,
};

// ---------------------------------------------------------------------------------------------
// Inputs

const DATA: u64 = 0xDA7A_0000;

fn zeros<T: Float>(n: usize) -> Vec<T> {
    vec![T::from_f64(0.0); n]
}

fn gaussian<T: Float>(seed: u64, n: usize, sigma: f64) -> Vec<T> {
    let mut g = Normals::new(DATA + seed);
    (0..n).map(|_| T::from_f64(sigma * g.next_f64())).collect()
}

/// Orthogonal random features with χ row norms (the default projection).
fn orf<T: Float>(seed: u64, m: usize, d: usize) -> Vec<T> {
    let mut w = zeros(projection_len(m, d).unwrap());
    projection(ProjectionKind::default(), seed, m, d, &mut w).unwrap();
    w
}

/// `T → f64` exactly (`Float::to_f64`; num-traits' `ToPrimitive::to_f64` shares the name).
fn wide<T: Float>(x: T) -> f64 {
    <T as Float>::to_f64(x)
}

fn widen<T: Float>(x: &[T]) -> Vec<f64> {
    x.iter().map(|&v| wide(v)).collect()
}

/// One attention head's inputs (row-major) and its shape.
#[derive(Clone, Debug)]
struct Problem<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    shape: Shape,
}

impl<T: Float> Problem<T> {
    /// q, k ~ N(0, σ²), v ~ N(0, 1).
    fn random(seed: u64, len: usize, dim: usize, value_dim: usize, sigma: f64) -> Self {
        Self {
            q: gaussian(seed * 16, len * dim, sigma),
            k: gaussian(seed * 16 + 1, len * dim, sigma),
            v: gaussian(seed * 16 + 2, len * value_dim, 1.0),
            shape: Shape::new(len, dim, value_dim),
        }
    }

    fn len(&self) -> usize {
        self.shape.keys
    }

    /// Tokens `a..b` as a problem of their own.
    fn slice(&self, a: usize, b: usize) -> Self {
        let (d, dv) = (self.shape.dim, self.shape.value_dim);
        Self {
            q: self.q[a * d..b * d].to_vec(),
            k: self.k[a * d..b * d].to_vec(),
            v: self.v[a * dv..b * dv].to_vec(),
            shape: Shape::new(b - a, d, dv),
        }
    }

    fn widen(&self) -> Problem<f64> {
        Problem {
            q: widen(&self.q),
            k: widen(&self.k),
            v: widen(&self.v),
            shape: self.shape,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The code under test, each entry point behind one helper (Scalar backend, exact scratch).

fn opts(block: usize, key_mask: Option<&[bool]>) -> Options<'_> {
    Options {
        block,
        normalized: true,
        key_mask,
    }
}

/// `p` through a `kind` plan, with the scratch the plan sizes.
fn run_plan<T: Float, F: FeatureMap<T>>(
    kind: PlanKind,
    fm: &F,
    p: &Problem<T>,
    o: &Options,
) -> Vec<T> {
    let plan = Plan::new(kind, Scalar, fm, p.shape, *o).unwrap();
    let (mut scratch, mut out) = (
        zeros(plan.scratch_len()),
        zeros(p.shape.queries * p.shape.value_dim),
    );
    plan.run(&p.q, &p.k, &p.v, &mut out, &mut scratch).unwrap();
    out
}

fn run_bidirectional<T: Float, F: FeatureMap<T>>(fm: &F, p: &Problem<T>, o: &Options) -> Vec<T> {
    run_plan(PlanKind::Bidirectional, fm, p, o)
}

/// Causal plans need as many queries as keys (`p.len()`), so their output is `p.len()` rows.
fn run_prefix<T: Float, F: FeatureMap<T>>(fm: &F, p: &Problem<T>, o: &Options) -> Vec<T> {
    run_plan(PlanKind::CausalPrefix, fm, p, o)
}

fn run_chunked<T: Float, F: FeatureMap<T>>(fm: &F, p: &Problem<T>, o: &Options) -> Vec<T> {
    run_plan(PlanKind::CausalChunked, fm, p, o)
}

/// Tokens `a..b` through `Stream::step`, outputs into `out` (len×dv, indexed by token).
fn steps<T: Float, F: FeatureMap<T>>(
    s: &mut Stream<'_, T, F, Scalar>,
    p: &Problem<T>,
    (a, b): (usize, usize),
    out: &mut [T],
) {
    let (d, dv) = (p.shape.dim, p.shape.value_dim);
    for i in a..b {
        let r = i * d..(i + 1) * d;
        let (q, k, v) = (&p.q[r.clone()], &p.k[r], &p.v[i * dv..(i + 1) * dv]);
        s.step(q, k, v, &mut out[i * dv..(i + 1) * dv]).unwrap();
    }
}

fn stream_buffer<T: Float, F: FeatureMap<T>>(fm: &F, dv: usize) -> Vec<T> {
    zeros(Stream::<T, F, Scalar>::buffer_len(fm, dv).unwrap())
}

/// The whole problem through a fresh stream, token by token.
fn run_stream<T: Float, F: FeatureMap<T>>(fm: &F, p: &Problem<T>) -> Vec<T> {
    let dv = p.shape.value_dim;
    let mut buf = stream_buffer(fm, dv);
    let mut s = Stream::new(Scalar, fm, dv, &mut buf).unwrap();
    let mut out = zeros(p.len() * dv);
    steps(&mut s, p, (0, p.len()), &mut out);
    out
}

/// Tokens `a..b` through `Stream::prefill` in chunks of `chunk`.
fn prefill<T: Float, F: FeatureMap<T>>(
    s: &mut Stream<'_, T, F, Scalar>,
    p: &Problem<T>,
    (a, b): (usize, usize),
    chunk: usize,
    out: &mut [T],
) {
    let dv = p.shape.value_dim;
    let part = p.slice(a, b);
    let mut scratch = zeros(s.prefill_scratch_len(chunk).unwrap());
    let o = &mut out[a * dv..b * dv];
    s.prefill(&part.q, &part.k, &part.v, b - a, chunk, o, &mut scratch)
        .unwrap();
}

fn snapshot<T: Float, F: FeatureMap<T>>(s: &Stream<'_, T, F, Scalar>) -> Vec<u8> {
    let mut bytes = vec![0u8; s.snapshot_len()];
    assert_eq!(s.snapshot(&mut bytes).unwrap(), bytes.len());
    bytes
}

fn assert_bits_eq<T: Float>(a: &[T], b: &[T], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            wide(*x).to_bits() == wide(*y).to_bits(),
            "{what}: element {i} differs: {:e} vs {:e}",
            wide(*x),
            wide(*y)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Oracle 1: naive f64 FAVOR+ with explicit unstabilised features, and its rounding bound
// (favor-testkit's `reference`, whose derivation sits above its `favor_reference`).

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Positive,
    Hyperbolic,
}

impl Kind {
    fn map_kind(self) -> MapKind {
        match self {
            Kind::Positive => MapKind::Positive,
            Kind::Hyperbolic => MapKind::Hyperbolic,
        }
    }
}

/// The map `kind` over projection `w` (m×d) with the d^(-1/4) data normaliser, as the
/// testkit's oracles describe it.
fn map_spec<T: Float>(kind: Kind, w: &[T], m: usize, d: usize) -> MapSpec {
    MapSpec {
        kind: kind.map_kind(),
        normalizer: true,
        transposed: false,
        d,
        m,
        eps: 0.0,
        w: widen(w),
    }
}

/// Unit roundoff of T plus that of f64. Running the bound with it covers both the computation
/// in T (Scalar backend: libm exp, < 1 ulp, as the derivation assumes) and the f64
/// reference's own rounding (γ and the exponent bounds grow at least linearly in u, so a sum
/// of two bounds is below the bound at the summed u).
fn unit_t_f64<T: Float>() -> f64 {
    unit::<T>() + unit::<f64>()
}

/// The reference for `p` under map `kind` with projection `w` (m rows), bound for T.
fn reference_for<T: Float>(
    kind: Kind,
    w: &[T],
    m: usize,
    p: &Problem<T>,
    o: &RefOpts,
) -> Reference {
    let spec = map_spec(kind, w, m, p.shape.dim);
    let (q, k) = (explicit(&spec, &widen(&p.q)), explicit(&spec, &widen(&p.k)));
    favor_reference(&q, &k, &widen(&p.v), p.shape.value_dim, o)
}

/// Normalised reference options for T: unit roundoff `unit_t_f64::<T>()`, underflow below
/// T's smallest normal number.
fn ref_opts<T: Float>(causal: bool, key_mask: Option<&[bool]>) -> RefOpts<'_> {
    RefOpts {
        causal,
        key_mask,
        normalized: true,
        u: unit_t_f64::<T>(),
        tiny: wide(T::min_positive_value()),
    }
}

/// Asserts |got − out| ≤ scale·tol elementwise and returns the largest |got − out|/tol seen.
fn assert_within<T: Float>(got: &[T], r: &Reference, scale: f64, what: &str) -> f64 {
    assert_eq!(got.len(), r.out.len(), "{what}: lengths");
    let mut worst = 0.0f64;
    for (i, (g, (e, t))) in got.iter().zip(r.out.iter().zip(&r.tol)).enumerate() {
        let g = wide(*g);
        let err = (g - e).abs();
        assert!(
            g.is_finite() && t.is_finite() && err <= scale * t,
            "{what}: element {i}: got {g:e}, reference {e:e}, |err| {err:e} > bound {:e}",
            scale * t
        );
        if *t > 0.0 {
            worst = worst.max(err / t);
        }
    }
    worst
}

/// Asserts |a − b| ≤ 2·tol elementwise: both are within tol of the same exact value.
fn assert_agree<T: Float>(a: &[T], b: &[T], r: &Reference, what: &str) {
    for (i, ((x, y), t)) in a.iter().zip(b).zip(&r.tol).enumerate() {
        let (x, y) = (wide(*x), wide(*y));
        assert!(
            t.is_finite() && (x - y).abs() <= 2.0 * t,
            "{what}: element {i}: {x:e} vs {y:e}, |diff| {:e} > 2·bound {:e}",
            (x - y).abs(),
            2.0 * t
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Oracle 2: exact softmax attention and the Lemma 2 spread of FAVOR+ around it.

/// Exact softmax attention (favor-testkit's `softmax`, f64) and, for each output element, a
/// first-order bound on the standard deviation of FAVOR+'s estimate of it with m projection
/// rows (favor-testkit's `lemma2_std`, derived from the paper's Lemma 2).
fn softmax_and_std(
    p: &Problem<f64>,
    m: usize,
    kind: Kind,
    causal: bool,
    mask: Option<&[bool]>,
) -> (Vec<f64>, Vec<f64>) {
    let (d, dv) = (p.shape.dim, p.shape.value_dim);
    let s = (d as f64).powf(-0.25);
    let x = Qkv {
        q: &p.q,
        k: &p.k,
        v: &p.v,
        d,
        dv,
    };
    let exact = softmax(x, s * s, causal, mask);
    let std = lemma2_std(&exact, x, s, m, kind.map_kind(), causal, mask);
    (exact.out, std)
}

/// Root-mean-square of err/(std + rounding bound) over all elements: ≈ ≤ 1 in expectation.
fn normalised_rms<T: Float>(got: &[T], exact: &[f64], std: &[f64], rounding: &[f64]) -> f64 {
    let mut acc = 0.0;
    for i in 0..got.len() {
        let scale = std[i] + rounding[i];
        let err = (wide(got[i]) - exact[i]).abs();
        assert!(
            scale.is_finite() && (scale > 0.0 || err == 0.0),
            "element {i}: err {err:e} with spread {scale:e}"
        );
        if scale > 0.0 {
            acc += (err / scale).powi(2);
        }
    }
    (acc / got.len() as f64).sqrt()
}

fn rms_err<T: Float>(got: &[T], exact: &[f64]) -> f64 {
    let s: f64 = got
        .iter()
        .zip(exact)
        .map(|(g, e)| (wide(*g) - e).powi(2))
        .sum();
    (s / got.len() as f64).sqrt()
}

// ---------------------------------------------------------------------------------------------
// 1. No leak from the future, bit for bit.

/// The longest row of W (as f64) and its norm: keys along it have the largest log-scales.
fn longest_row<T: Float>(w: &[T], m: usize, d: usize) -> (Vec<f64>, f64) {
    (0..m)
        .map(|i| {
            let r = widen(&w[i * d..(i + 1) * d]);
            let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            (r, n)
        })
        .fold((vec![], -1.0), |a, b| if b.1 > a.1 { b } else { a })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    /// Fresh N(0, 1) tokens.
    Random,
    /// Norms ×10³ (q, k) and ×10⁴ (v): extreme exponents and log-scales.
    Huge,
    /// Keys (and queries) along W's longest row at the norm that maximises the positive
    /// maps' log-scale `t|w| − t²/2` (t = |w|): the new keys dominate the running scale.
    Dominant,
    /// Same tokens, the key mask flipped after the cut.
    MaskFlip,
}

fn change_after(p: &Problem<f32>, cut: usize, change: Change, w: &[f32], m: usize) -> Problem<f32> {
    let (l, d, dv) = (p.len(), p.shape.dim, p.shape.value_dim);
    let mut c = p.clone();
    let fresh = Problem::<f32>::random(900 + cut as u64, l, d, dv, 1.0);
    let (from, vfrom) = ((cut + 1) * d, (cut + 1) * dv);
    match change {
        Change::MaskFlip => {}
        Change::Random => {
            c.q[from..].copy_from_slice(&fresh.q[from..]);
            c.k[from..].copy_from_slice(&fresh.k[from..]);
            c.v[vfrom..].copy_from_slice(&fresh.v[vfrom..]);
        }
        Change::Huge => {
            for (x, y) in c.q[from..].iter_mut().zip(&fresh.q[from..]) {
                *x = y * 1e3;
            }
            for (x, y) in c.k[from..].iter_mut().zip(&fresh.k[from..]) {
                *x = y * 1e3;
            }
            for (x, y) in c.v[vfrom..].iter_mut().zip(&fresh.v[vfrom..]) {
                *x = y * 1e4;
            }
        }
        Change::Dominant => {
            // x' = w* itself (t = |w*| along ŵ*), so x = w*·d^(1/4), plus a little noise.
            let (dir, _) = longest_row(w, m, d);
            let up = (d as f64).powf(0.25);
            for t in cut + 1..l {
                for j in 0..d {
                    let x = (dir[j] * up + 0.01 * fresh.q[t * d + j] as f64) as f32;
                    c.k[t * d + j] = x;
                    c.q[t * d + j] = x;
                }
            }
            c.v[vfrom..].copy_from_slice(&fresh.v[vfrom..]);
        }
    }
    c
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Prefix(usize),
    Chunked(usize),
    Stream,
}

fn run_path<F: FeatureMap<f32>>(
    path: Path,
    fm: &F,
    p: &Problem<f32>,
    mask: Option<&[bool]>,
) -> Vec<f32> {
    match path {
        Path::Prefix(b) => run_prefix(fm, p, &opts(b, mask)),
        Path::Chunked(c) => run_chunked(fm, p, &opts(c, mask)),
        Path::Stream => run_stream(fm, p),
    }
}

/// Largest key log-scale of rows `a..b` of `k`, as the feature map reports it.
fn max_key_log<F: FeatureMap<f32>>(fm: &F, k: &[f32], d: usize, (a, b): (usize, usize)) -> f32 {
    let rows = b - a;
    let (mut feats, mut logs) = (zeros::<f32>(rows * fm.feature_dim()), zeros::<f32>(rows));
    fm.map_rows(&Scalar, &k[a * d..b * d], rows, &mut feats, &mut logs)
        .unwrap();
    logs.iter().cloned().fold(f32::NEG_INFINITY, f32::max)
}

/// Oracle: the library's claim "output i depends on tokens ≤ i only, bit for bit" (causal_prefix,
/// Stream, and causal_chunked with Scalar for every chunk size). For several cut points i,
/// every way of changing tokens > i (and the mask after i) must leave outputs 0..=i
/// bit-identical, while some later output does change (so the change was real).
fn check_no_leak<F: FeatureMap<f32>>(name: &str, fm: &F, w: &[f32], m: usize, can_dominate: bool) {
    let (l, d, dv) = (40, 8, 3);
    let base = Problem::<f32>::random(1, l, d, dv, 1.0);
    let mask: Vec<bool> = gaussian::<f64>(2, l, 1.0)
        .iter()
        .map(|g| *g > -0.8)
        .collect();
    let paths = [
        Path::Prefix(64),
        Path::Prefix(7),
        Path::Stream,
        Path::Chunked(1),
        Path::Chunked(3),
        Path::Chunked(7),
        Path::Chunked(16),
        Path::Chunked(40),
        Path::Chunked(64),
    ];
    let changes = [
        Change::Random,
        Change::Huge,
        Change::Dominant,
        Change::MaskFlip,
    ];
    let mut dominated = false;
    for cut in [0, 9, 22, l - 2] {
        let past = max_key_log(fm, &base.k, d, (0, cut + 1));
        for change in changes {
            let other = change_after(&base, cut, change, w, m);
            if change != Change::MaskFlip {
                dominated |= max_key_log(fm, &other.k, d, (cut + 1, l)) > past + 1.0;
            }
            let flipped: Vec<bool> = (0..l)
                .map(|j| if j > cut { !mask[j] } else { mask[j] })
                .collect();
            let (ma, mb) = match change {
                Change::MaskFlip => (Some(&mask[..]), Some(&flipped[..])),
                _ => (None, None),
            };
            for path in paths {
                if matches!(path, Path::Stream) && ma.is_some() {
                    continue; // streams take no mask
                }
                let a = run_path(path, fm, &base, ma);
                let b = run_path(path, fm, &other, mb);
                let n = (cut + 1) * dv;
                let what = format!("{name} {path:?} cut {cut} {change:?}");
                assert_bits_eq(&a[..n], &b[..n], &what);
                assert!(
                    a.iter().chain(&b).all(|x| x.is_finite()),
                    "{what}: non-finite"
                );
                assert!(
                    a[n..]
                        .iter()
                        .zip(&b[n..])
                        .any(|(x, y)| x.to_bits() != y.to_bits()),
                    "{what}: the change did not reach any later output"
                );
            }
        }
    }
    assert!(
        dominated || !can_dominate,
        "{name}: no change produced keys whose log-scale dominates the past"
    );
}

#[test]
fn no_leak_positive_and_hyperbolic() {
    let (d, m) = (8, 32);
    let w = orf::<f32>(1, m, d);
    check_no_leak(
        "positive",
        &PositiveSoftmax::new(&w, m, d).unwrap(),
        &w,
        m,
        true,
    );
    check_no_leak(
        "hyperbolic",
        &HyperbolicSoftmax::new(&w, m, d).unwrap(),
        &w,
        m,
        true,
    );
}

#[test]
fn no_leak_trigonometric_and_generalized() {
    let (d, m) = (8, 32);
    let w = orf::<f32>(2, m, d);
    check_no_leak(
        "trig",
        &TrigonometricSoftmax::new(&w, m, d).unwrap(),
        &w,
        m,
        true,
    );
    let exp = Generalized::new(&w, m, d, Activation::Exp).unwrap();
    check_no_leak("generalized exp", &exp, &w, m, true);
    let relu = Generalized::new(&w, m, d, Activation::Relu).unwrap();
    check_no_leak("generalized relu", &relu, &w, m, false); // log-scale always 0
}

// ---------------------------------------------------------------------------------------------
// 2. Stability: exponents far beyond f32's exp range.

/// Tokens along the unit vector `dir` with norms growing linearly from t0 to t1 (in x' units),
/// plus N(0, 0.2²) noise: x'ⱼ = tⱼ·dir + 0.2·gⱼ, returned as x = x'·d^(1/4) in f32.
fn growing_tokens(seed: u64, l: usize, dir: &[f64], (t0, t1): (f64, f64)) -> Vec<f32> {
    let d = dir.len();
    let up = (d as f64).powf(0.25);
    let g = gaussian::<f64>(seed, l * d, 0.2);
    let mut x = vec![0f32; l * d];
    for j in 0..l {
        let t = t0 + (t1 - t0) * j as f64 / (l - 1) as f64;
        for c in 0..d {
            x[j * d + c] = ((t * dir[c] + g[j * d + c]) * up) as f32;
        }
    }
    x
}

/// Oracle: the naive unstabilised f64 FAVOR+ (`favor_reference`, same W); tolerance: the
/// rounding bound derived with it, evaluated for f32 on these inputs (it grows with the
/// exponents: for exponents ~300 and d = 64 it is ~10⁻³ of max|v|; being a worst case, it
/// sits ~100× above the errors actually observed, ~10⁻⁵).
///
/// Queries and keys lie along W's longest row ŵ (|w| ≈ 9.7) with norms growing to 30, so the
/// projections w·x' reach ~290 (exp overflows f32 above 88.7) while the full exponents
/// w·x' − |x'|²/2 of late tokens fall to ~−160 (exp underflows f32 below −103.3); both stay
/// inside f64's range, products of a query and a key feature included. The running key scale
/// rises for the first third of the sequence (a rescale at nearly every token), then stays.
#[test]
fn stabiliser_matches_unstabilised_f64_beyond_f32_exp_range() {
    let (l, d, dv, m) = (48, 64, 8, 64);
    let w = orf::<f32>(3, m, d);
    let (row, norm) = longest_row(&w, m, d);
    let dir: Vec<f64> = row.iter().map(|x| x / norm).collect();
    let p = Problem {
        q: growing_tokens(10, l, &dir, (0.5, 30.0)),
        k: growing_tokens(11, l, &dir, (0.5, 30.0)),
        v: gaussian(12, l * dv, 1.0),
        shape: Shape::new(l, d, dv),
    };

    // Without a stabiliser f32 could not even hold the features.
    let ex = explicit(&map_spec(Kind::Positive, &w, m, d), &widen(&p.k));
    let wf = widen(&w);
    let s = (d as f64).powf(-0.25);
    let proj =
        |x: &[f32], i: usize| -> f64 { (0..d).map(|c| wf[i * d + c] * x[c] as f64 * s).sum() };
    let (mut top_proj, mut last_full) = (f64::NEG_INFINITY, 0.0);
    for (rows, is_key) in [(&p.q, false), (&p.k, true)] {
        for j in 0..l {
            let x = &rows[j * d..(j + 1) * d];
            let best = (0..m).map(|i| proj(x, i)).fold(f64::NEG_INFINITY, f64::max);
            top_proj = top_proj.max(best);
            if is_key && j == l - 1 {
                last_full = best - ex.h(j);
            }
        }
    }
    assert!(top_proj > 250.0, "max w·x' = {top_proj}");
    assert!(
        (top_proj as f32).exp().is_infinite(),
        "exp(max w·x') must overflow f32"
    );
    assert!(
        last_full < -104.0 && (last_full as f32).exp() == 0.0,
        "{last_full}"
    );
    assert!(
        last_full.exp() > 0.0 && top_proj.exp().is_finite(),
        "f64 must hold them"
    );

    let pw = p.widen();
    let w64 = widen(&w);
    for kind in [Kind::Positive, Kind::Hyperbolic] {
        let rc = reference_for(kind, &w, m, &p, &ref_opts::<f32>(true, None));
        let rb = reference_for(kind, &w, m, &p, &ref_opts::<f32>(false, None));
        let rc64 = reference_for(kind, &w64, m, &pw, &ref_opts::<f64>(true, None));
        match kind {
            Kind::Positive => {
                let fm = PositiveSoftmax::new(&w, m, d).unwrap();
                let fm64 = PositiveSoftmax::new(&w64, m, d).unwrap();
                stability_paths(&fm, &p, &rc, &rb, "positive");
                assert_within(&run_chunked(&fm64, &pw, &opts(7, None)), &rc64, 1.0, "f64");
            }
            Kind::Hyperbolic => {
                let fm = HyperbolicSoftmax::new(&w, m, d).unwrap();
                let fm64 = HyperbolicSoftmax::new(&w64, m, d).unwrap();
                stability_paths(&fm, &p, &rc, &rb, "hyperbolic");
                assert_within(&run_chunked(&fm64, &pw, &opts(7, None)), &rc64, 1.0, "f64");
            }
        }
    }
}

fn stability_paths<F: FeatureMap<f32>>(
    fm: &F,
    p: &Problem<f32>,
    rc: &Reference,
    rb: &Reference,
    name: &str,
) {
    let (l, dv) = (p.len(), p.shape.value_dim);
    for b in [64, 5] {
        let what = format!("{name} bidirectional block {b}");
        assert_within(&run_bidirectional(fm, p, &opts(b, None)), rb, 1.0, &what);
        let what = format!("{name} causal_prefix block {b}");
        assert_within(&run_prefix(fm, p, &opts(b, None)), rc, 1.0, &what);
    }
    for c in [1, 7, 16, 64] {
        let what = format!("{name} causal_chunked {c}");
        assert_within(&run_chunked(fm, p, &opts(c, None)), rc, 1.0, &what);
    }
    assert_within(&run_stream(fm, p), rc, 1.0, &format!("{name} stream"));
    let mut buf = stream_buffer(fm, dv);
    let mut s = Stream::new(Scalar, fm, dv, &mut buf).unwrap();
    let mut out = zeros(l * dv);
    prefill(&mut s, p, (0, 20), 8, &mut out);
    steps(&mut s, p, (20, l), &mut out);
    assert_within(&out, rc, 1.0, &format!("{name} prefill + steps"));
}

// ---------------------------------------------------------------------------------------------
// 3. Stream == prefix == chunked; prefill, snapshot/restore, reset.

/// 29 tokens (prime, so chunks 2, 4, 6 are non-divisors), a few keys with larger norms so the
/// running scale moves mid-sequence and mid-chunk.
fn path_problem<T: Float>(seed: u64) -> Problem<T> {
    let (l, d, dv) = (29, 8, 5);
    let mut p = Problem::<T>::random(seed, l, d, dv, 0.9);
    for t in [6, 13, 20] {
        for x in &mut p.k[t * d..(t + 1) * d] {
            *x = *x * T::from_f64(2.5);
        }
    }
    p
}

/// Oracle: the naive f64 reference (each path within its rounding bound, derived in
/// favor-testkit's `reference`), hence any two paths within twice the bound of each other. For
/// f64 the bound is ~10⁻¹³ of max|v| (asserted < 10⁻¹²), for f32 ~3·10⁻⁵ (asserted < 10⁻⁴):
/// tight enough that a wrong rescale or a dropped token would fail.
fn check_paths_agree<T: Float, F: FeatureMap<T>>(fm: &F, kind: Kind, w: &[T], m: usize) {
    let p = path_problem::<T>(3);
    let (l, dv) = (p.len(), p.shape.value_dim);
    let r = reference_for(kind, w, m, &p, &ref_opts::<T>(true, None));
    let vmax = max_abs(&widen(&p.v));
    let limit = if wide(T::epsilon()) < 1e-10 {
        1e-12
    } else {
        1e-4
    };
    assert!(
        max_abs(&r.tol) < limit * vmax,
        "bound {:e} is vacuous",
        max_abs(&r.tol)
    );

    let base = run_prefix(fm, &p, &opts(64, None));
    assert_within(&base, &r, 1.0, "prefix");
    let mut all = vec![
        (
            "prefix block 4".to_string(),
            run_prefix(fm, &p, &opts(4, None)),
        ),
        ("stream".to_string(), run_stream(fm, &p)),
    ];
    for c in [1, 2, 4, 6, 29, 64] {
        all.push((format!("chunked {c}"), run_chunked(fm, &p, &opts(c, None))));
    }
    let mut buf = stream_buffer(fm, dv);
    {
        let mut s = Stream::new(Scalar, fm, dv, &mut buf).unwrap();
        let mut out = zeros(l * dv);
        prefill(&mut s, &p, (0, 11), 4, &mut out);
        steps(&mut s, &p, (11, l), &mut out);
        assert_eq!(s.tokens(), l as u64);
        all.push(("prefill 11 (chunk 4) + steps".to_string(), out));
    }
    {
        let mut s = Stream::new(Scalar, fm, dv, &mut buf).unwrap();
        let mut out = zeros(l * dv);
        prefill(&mut s, &p, (0, 11), 3, &mut out);
        prefill(&mut s, &p, (11, 20), 64, &mut out);
        steps(&mut s, &p, (20, l), &mut out);
        all.push(("prefill 11 + prefill 9 + steps".to_string(), out));
    }
    for (name, out) in &all {
        assert_within(out, &r, 1.0, name);
        assert_agree(out, &base, &r, name);
    }
}

#[test]
fn stream_prefix_and_chunked_agree_f64() {
    let (d, m) = (8, 24);
    let w = orf::<f64>(4, m, d);
    check_paths_agree(
        &PositiveSoftmax::new(&w, m, d).unwrap(),
        Kind::Positive,
        &w,
        m,
    );
    check_paths_agree(
        &HyperbolicSoftmax::new(&w, m, d).unwrap(),
        Kind::Hyperbolic,
        &w,
        m,
    );
}

#[test]
fn stream_prefix_and_chunked_agree_f32() {
    let (d, m) = (8, 24);
    let w = orf::<f32>(4, m, d);
    check_paths_agree(
        &PositiveSoftmax::new(&w, m, d).unwrap(),
        Kind::Positive,
        &w,
        m,
    );
    check_paths_agree(
        &HyperbolicSoftmax::new(&w, m, d).unwrap(),
        Kind::Hyperbolic,
        &w,
        m,
    );
}

/// Oracle: an uninterrupted stream. Snapshot after 13 tokens, restore into a fresh stream over
/// an equal but separately built feature map, continue: outputs and the final snapshot are
/// bit-identical. Restoring the snapshot into the original stream after it moved on rewinds
/// it exactly.
fn check_snapshot_restore<T: Float>() {
    let (d, m) = (8, 24);
    let w = orf::<T>(5, m, d);
    let w2 = w.clone();
    let fm = PositiveSoftmax::new(&w, m, d).unwrap();
    let fm2 = PositiveSoftmax::new(&w2, m, d).unwrap();
    let p = path_problem::<T>(4);
    let (l, dv, cut) = (p.len(), p.shape.value_dim, 13);

    let mut bu = stream_buffer(&fm, dv);
    let mut su = Stream::new(Scalar, &fm, dv, &mut bu).unwrap();
    let mut ou = zeros(l * dv);
    steps(&mut su, &p, (0, l), &mut ou);
    let final_u = snapshot(&su);

    let mut ba = stream_buffer(&fm, dv);
    let mut sa = Stream::new(Scalar, &fm, dv, &mut ba).unwrap();
    let mut oa = zeros(l * dv);
    steps(&mut sa, &p, (0, cut), &mut oa);
    let snap = snapshot(&sa);

    let mut bb = stream_buffer(&fm2, dv);
    let mut sb = Stream::new(Scalar, &fm2, dv, &mut bb).unwrap();
    sb.restore(&snap).unwrap();
    assert_eq!(sb.tokens(), cut as u64);
    assert_eq!(snapshot(&sb), snap);
    let mut ob = zeros(l * dv);
    steps(&mut sb, &p, (cut, l), &mut ob);
    assert_bits_eq(&ob[cut * dv..], &ou[cut * dv..], "restored stream");
    assert_eq!(snapshot(&sb), final_u, "final state after restore");

    steps(&mut sa, &p, (cut, 20), &mut oa);
    sa.restore(&snap).unwrap();
    steps(&mut sa, &p, (cut, l), &mut oa);
    assert_bits_eq(&oa, &ou, "rewound stream");
    assert_eq!(snapshot(&sa), final_u);
}

#[test]
fn snapshot_restore_continue_is_bit_identical() {
    check_snapshot_restore::<f32>();
    check_snapshot_restore::<f64>();
}

/// Oracle: a fresh stream. After reset() the state's bytes equal a fresh stream's and replaying
/// the tokens reproduces the first run bit for bit.
fn check_reset<T: Float>() {
    let (d, m) = (8, 24);
    let w = orf::<T>(6, m, d);
    let fm = PositiveSoftmax::new(&w, m, d).unwrap();
    let p = path_problem::<T>(5);
    let (l, dv) = (p.len(), p.shape.value_dim);
    let mut bf = stream_buffer(&fm, dv);
    let fresh = Stream::new(Scalar, &fm, dv, &mut bf).unwrap();
    let empty = snapshot(&fresh);

    let mut bs = stream_buffer(&fm, dv);
    let mut s = Stream::new(Scalar, &fm, dv, &mut bs).unwrap();
    let (mut first, mut second) = (zeros(l * dv), zeros(l * dv));
    steps(&mut s, &p, (0, l), &mut first);
    let full = snapshot(&s);
    s.reset();
    assert_eq!(s.tokens(), 0);
    assert_eq!(snapshot(&s), empty, "reset state differs from a fresh one");
    steps(&mut s, &p, (0, l), &mut second);
    assert_bits_eq(&first, &second, "replay after reset");
    assert_eq!(snapshot(&s), full);
}

#[test]
fn reset_then_replay_equals_fresh_stream() {
    check_reset::<f32>();
    check_reset::<f64>();
}

// ---------------------------------------------------------------------------------------------
// 4. Key padding mask.

fn gather(x: &[f64], width: usize, rows: &[usize]) -> Vec<f64> {
    rows.iter()
        .flat_map(|&j| x[j * width..(j + 1) * width].to_vec())
        .collect()
}

/// Oracle: the same computation with the masked keys removed (bidirectional: one call over the
/// kept keys; causal: per query i, a one-query bidirectional call over kept keys ≤ i), and the
/// naive reference with the mask. All f64; tolerance: the derived rounding bound (~10⁻¹³ of
/// max|v|), twice it between two library results. Queries that see no kept key (rows 0, 1
/// here) must be exactly zero.
#[test]
fn key_mask_equals_removing_the_keys() {
    let (l, d, dv, m) = (20, 8, 3, 32);
    let w = orf::<f64>(7, m, d);
    let fm = PositiveSoftmax::new(&w, m, d).unwrap();
    let p = Problem::<f64>::random(6, l, d, dv, 1.0);
    let mut mask: Vec<bool> = gaussian::<f64>(7, l, 1.0)
        .iter()
        .map(|g| *g > -0.4)
        .collect();
    for j in [0, 1, 7, 8, 9] {
        mask[j] = false;
    }
    mask[2] = true;
    let kept: Vec<usize> = (0..l).filter(|&j| mask[j]).collect();
    assert!(kept.len() < l - 4 && kept.len() > l / 2);

    let removed = Problem {
        q: p.q.clone(),
        k: gather(&p.k, d, &kept),
        v: gather(&p.v, dv, &kept),
        shape: Shape {
            queries: l,
            keys: kept.len(),
            dim: d,
            value_dim: dv,
        },
    };
    let rb = reference_for(
        Kind::Positive,
        &w,
        m,
        &p,
        &ref_opts::<f64>(false, Some(&mask)),
    );
    let without = run_bidirectional(&fm, &removed, &opts(64, None));
    assert_within(&without, &rb, 1.0, "bidirectional without the keys");
    for b in [64, 3] {
        let masked = run_bidirectional(&fm, &p, &opts(b, Some(&mask)));
        assert_within(&masked, &rb, 1.0, "bidirectional masked");
        assert_agree(&masked, &without, &rb, "bidirectional masked vs removed");
    }

    let rc = reference_for(
        Kind::Positive,
        &w,
        m,
        &p,
        &ref_opts::<f64>(true, Some(&mask)),
    );
    let mut oracle = vec![0.0; l * dv];
    for i in 0..l {
        let ks: Vec<usize> = kept.iter().cloned().filter(|&j| j <= i).collect();
        if ks.is_empty() {
            continue;
        }
        let one = Problem {
            q: p.q[i * d..(i + 1) * d].to_vec(),
            k: gather(&p.k, d, &ks),
            v: gather(&p.v, dv, &ks),
            shape: Shape {
                queries: 1,
                keys: ks.len(),
                dim: d,
                value_dim: dv,
            },
        };
        let o = run_bidirectional(&fm, &one, &opts(64, None));
        oracle[i * dv..(i + 1) * dv].copy_from_slice(&o);
    }
    assert_within(&oracle, &rc, 1.0, "per-row oracle");
    let runs = [
        ("prefix 64", run_prefix(&fm, &p, &opts(64, Some(&mask)))),
        ("prefix 4", run_prefix(&fm, &p, &opts(4, Some(&mask)))),
        ("chunked 1", run_chunked(&fm, &p, &opts(1, Some(&mask)))),
        ("chunked 3", run_chunked(&fm, &p, &opts(3, Some(&mask)))),
        ("chunked 64", run_chunked(&fm, &p, &opts(64, Some(&mask)))),
    ];
    for (name, out) in &runs {
        assert_within(out, &rc, 1.0, name);
        assert_agree(out, &oracle, &rc, name);
        assert!(
            out[..2 * dv].iter().all(|x| *x == 0.0),
            "{name}: rows without keys"
        );
    }
}

/// Oracle: exact masked softmax attention (the testkit's `softmax`), cross-checked against the
/// library's `softmax_attention` (both f64: they agree to ~10⁻¹⁵; we allow 10⁻¹² of max|v|, far
/// above the O((d + L)·u·|logit|) rounding of either). Statistical bound: the Lemma 2 spread s
/// (`softmax_and_std`) plus the rounding bound; the RMS of err/(s + rounding) has expectation
/// ≤ 1 to first order, we require ≤ 3 (Markov: probability ≤ 1/9 for a random seed even
/// under the worst-case correlation the bound assumes). Convergence: the RMS error must fall
/// by at least 2× from m = 64 to m = 4096, where 1/√m predicts 8×.
#[test]
fn key_mask_agrees_with_masked_softmax_as_m_grows() {
    let (l, d, dv) = (24, 8, 3);
    let p = Problem::<f64>::random(8, l, d, dv, 0.8);
    let mut mask: Vec<bool> = gaussian::<f64>(9, l, 1.0)
        .iter()
        .map(|g| *g > -0.5)
        .collect();
    mask[0] = false;
    mask[5] = false;
    let vmax = max_abs(&p.v);
    for causal in [false, true] {
        let (exact, _) = softmax_and_std(&p, 1, Kind::Positive, causal, Some(&mask));
        let mut lib = vec![0.0; l * dv];
        let eo = ExactOptions {
            causal,
            scale: None,
            key_mask: Some(&mask),
        };
        softmax_attention(&Scalar, &p.q, &p.k, &p.v, p.shape, &eo, &mut lib).unwrap();
        for (a, b) in lib.iter().zip(&exact) {
            assert!(
                (a - b).abs() <= 1e-12 * vmax,
                "softmax_attention {a} vs {b}"
            );
        }
        let mut errs = vec![];
        for m in [64, 512, 4096] {
            let w = orf::<f64>(100 + m as u64, m, d);
            let fm = PositiveSoftmax::new(&w, m, d).unwrap();
            let (_, std) = softmax_and_std(&p, m, Kind::Positive, causal, Some(&mask));
            let r = reference_for(
                Kind::Positive,
                &w,
                m,
                &p,
                &ref_opts::<f64>(causal, Some(&mask)),
            );
            let out = if causal {
                run_chunked(&fm, &p, &opts(5, Some(&mask)))
            } else {
                run_bidirectional(&fm, &p, &opts(64, Some(&mask)))
            };
            let rr = normalised_rms(&out, &exact, &std, &r.tol);
            assert!(rr <= 3.0, "causal {causal} m {m}: normalised RMS {rr}");
            errs.push(rms_err(&out, &exact));
        }
        assert!(
            errs[2] < errs[0] / 2.0,
            "causal {causal}: RMS errors {errs:?}"
        );
    }
}

fn assert_all_zero<T: Float, F: FeatureMap<T>>(fm: &F, p: &Problem<T>, mask: &[bool], name: &str) {
    for normalized in [true, false] {
        for b in [1, 4, 64] {
            let o = Options {
                block: b,
                normalized,
                key_mask: Some(mask),
            };
            let runs = [
                ("bidirectional", run_bidirectional(fm, p, &o)),
                ("prefix", run_prefix(fm, p, &o)),
                ("chunked", run_chunked(fm, p, &o)),
            ];
            for (path, out) in runs {
                assert!(
                    out.iter().all(|x| wide(*x) == 0.0),
                    "{name} {path} block {b} normalized {normalized}: {out:?}"
                );
            }
        }
    }
}

fn check_all_masked<T: Float>() {
    let (l, d, dv, m) = (10, 4, 3, 8);
    let w = orf::<T>(8, m, d);
    let p = Problem::<T>::random(10, l, d, dv, 1.5);
    let mask = vec![false; l];
    assert_all_zero(
        &PositiveSoftmax::new(&w, m, d).unwrap(),
        &p,
        &mask,
        "positive",
    );
    assert_all_zero(
        &HyperbolicSoftmax::new(&w, m, d).unwrap(),
        &p,
        &mask,
        "hyperbolic",
    );
    assert_all_zero(
        &TrigonometricSoftmax::new(&w, m, d).unwrap(),
        &p,
        &mask,
        "trig",
    );
    let relu = Generalized::new(&w, m, d, Activation::Relu).unwrap();
    assert_all_zero(&relu, &p, &mask, "relu");
    let exp = Generalized::new(&w, m, d, Activation::Exp).unwrap();
    assert_all_zero(&exp, &p, &mask, "exp");
}

/// Oracle: the documented behaviour "rows whose every visible key is masked output zeros" —
/// exact zeros (not NaN, not the floor's 0/floor residue), normalised or not, every map.
#[test]
fn all_keys_masked_gives_zero_outputs() {
    check_all_masked::<f32>();
    check_all_masked::<f64>();
}

// ---------------------------------------------------------------------------------------------
// 5. FAVOR+ with many features converges to causal softmax.

/// Oracle: exact causal softmax (the testkit's, cross-checked with `softmax_attention`), with
/// the statistical bound of `softmax_and_std` (m = 2048 ORF rows) plus the f32 rounding bound;
/// as above the normalised RMS must be ≤ 3. Non-vacuous: the allowed spread itself is below
/// 0.1·max|v|, and the f32 result is also checked against the same-W f64 reference.
fn check_converges(kind: Kind) {
    let (l, d, dv, m) = (32, 16, 4, 2048);
    let w = orf::<f32>(9, m, d);
    let p = Problem::<f32>::random(11, l, d, dv, 0.5);
    let pw = p.widen();
    let (exact, std) = softmax_and_std(&pw, m, kind, true, None);
    let mut lib = vec![0.0; l * dv];
    let eo = ExactOptions {
        causal: true,
        ..Default::default()
    };
    softmax_attention(&Scalar, &pw.q, &pw.k, &pw.v, pw.shape, &eo, &mut lib).unwrap();
    let vmax = max_abs(&pw.v);
    for (a, b) in lib.iter().zip(&exact) {
        assert!(
            (a - b).abs() <= 1e-12 * vmax,
            "softmax_attention {a} vs {b}"
        );
    }
    let r = reference_for(kind, &w, m, &p, &ref_opts::<f32>(true, None));
    let out = match kind {
        Kind::Positive => run_chunked(&PositiveSoftmax::new(&w, m, d).unwrap(), &p, &opts(8, None)),
        Kind::Hyperbolic => run_chunked(
            &HyperbolicSoftmax::new(&w, m, d).unwrap(),
            &p,
            &opts(8, None),
        ),
    };
    assert_within(&out, &r, 1.0, "f32 vs same-W reference");
    assert!(max_abs(&std) < 0.1 * vmax, "spread {:e}", max_abs(&std));
    let rr = normalised_rms(&out, &exact, &std, &r.tol);
    assert!(rr <= 3.0, "{kind:?}: normalised RMS {rr}");
}

#[test]
fn favor_plus_causal_chunked_converges_to_softmax() {
    check_converges(Kind::Positive);
    check_converges(Kind::Hyperbolic);
}

// ---------------------------------------------------------------------------------------------
// 6. attention_row.

/// Oracle: the naive reference's normalised weights pᵢⱼ. Bound for one weight, from the same
/// derivation (each aⱼ within relative δⱼ, sums within γ_N): |p̃ⱼ − pⱼ| ≤
/// pⱼ(δⱼ + maxδ + 4γ_N)/(1 − maxδ − γ_N). The row sums to 1 within γ_{L+3} (a sum, a reciprocal,
/// a product). Row·V (in f64) reproduces the bidirectional (resp. causal_prefix) output row
/// within Σⱼ bound_j|vⱼ| + that output's own bound + f64 rounding of the product.
fn row_checks<T: Float, F: FeatureMap<T>>(fm: &F, kind: Kind, w: &[T], m: usize, p: &Problem<T>) {
    let (l, d, dv, mm) = (p.len(), p.shape.dim, p.shape.value_dim, fm.feature_dim());
    let (mut kf, mut kl) = (zeros(l * mm), zeros(l));
    fm.map_rows(&Scalar, &p.k, l, &mut kf, &mut kl).unwrap();
    let mut scratch = zeros(attention_row_scratch_len(fm));
    let v = widen(&p.v);
    let u = unit_t_f64::<T>();
    for causal in [false, true] {
        let r = reference_for(kind, w, m, p, &ref_opts::<T>(causal, None));
        let lib = if causal {
            run_prefix(fm, p, &opts(64, None))
        } else {
            run_bidirectional(fm, p, &opts(64, None))
        };
        for i in 0..l {
            let mut row = zeros(l);
            let q = &p.q[i * d..(i + 1) * d];
            let pos = causal.then_some(i);
            attention_row(
                &Scalar,
                fm,
                q,
                KeyFeatures::new(&kf, &kl, l),
                pos,
                &mut row,
                &mut scratch,
            )
            .unwrap();
            let row = widen(&row);
            let visible = if causal { i + 1 } else { l };
            assert!(
                row[visible..].iter().all(|x| *x == 0.0),
                "row {i}: weights past {visible}"
            );
            let dmax = r.delta[i * l..i * l + visible]
                .iter()
                .cloned()
                .fold(0.0, f64::max);
            let mut bound = vec![0.0; l];
            for j in 0..visible {
                let pj = r.weights[i * l + j];
                bound[j] = pj * (r.delta[i * l + j] + dmax + 4.0 * r.g) / (1.0 - dmax - r.g);
                assert!(
                    (row[j] - pj).abs() <= bound[j],
                    "causal {causal} row {i} key {j}: {} vs {pj}, bound {:e}",
                    row[j],
                    bound[j]
                );
            }
            let sum: f64 = row.iter().sum();
            assert!(
                (sum - 1.0).abs() <= gamma(l + 3, u),
                "row {i} sums to {sum}"
            );
            for c in 0..dv {
                let rv: f64 = (0..l).map(|j| row[j] * v[j * dv + c]).sum();
                let mag: f64 = (0..l).map(|j| (row[j] * v[j * dv + c]).abs()).sum();
                let tol = (0..l).map(|j| bound[j] * v[j * dv + c].abs()).sum::<f64>()
                    + r.tol[i * dv + c]
                    + gamma(l, f64::EPSILON / 2.0) * mag;
                let o = wide(lib[i * dv + c]);
                assert!(
                    (rv - o).abs() <= tol,
                    "causal {causal} row {i} col {c}: row·V {rv} vs output {o}, bound {tol:e}"
                );
            }
        }
    }
}

fn check_attention_row<T: Float>() {
    let (l, d, dv, m) = (12, 8, 3, 32);
    let w = orf::<T>(10, m, d);
    let p = Problem::<T>::random(12, l, d, dv, 1.0);
    row_checks(
        &PositiveSoftmax::new(&w, m, d).unwrap(),
        Kind::Positive,
        &w,
        m,
        &p,
    );
    row_checks(
        &HyperbolicSoftmax::new(&w, m, d).unwrap(),
        Kind::Hyperbolic,
        &w,
        m,
        &p,
    );
}

#[test]
fn attention_row_matches_naive_and_reproduces_outputs() {
    check_attention_row::<f32>();
    check_attention_row::<f64>();
}

// ---------------------------------------------------------------------------------------------
// 7. Unnormalised mode.

/// Oracle: naive Q'(K'ᵀV) with true (unstabilised) features in f64; bound: the unnormalised
/// form of `favor_reference`'s derivation (relative to Σⱼ aⱼ|vⱼ|, with the query's
/// log-scale error included since it no longer cancels).
fn check_unnormalized<T: Float, F: FeatureMap<T>>(fm: &F, kind: Kind, w: &[T], m: usize) {
    let p = path_problem::<T>(13);
    let u = unit_t_f64::<T>();
    for causal in [false, true] {
        let ro = RefOpts {
            causal,
            key_mask: None,
            normalized: false,
            u,
            tiny: wide(T::min_positive_value()),
        };
        let r = reference_for(kind, w, m, &p, &ro);
        for b in [1, 4, 64] {
            let o = Options {
                block: b,
                normalized: false,
                key_mask: None,
            };
            let what = format!("{kind:?} causal {causal} block {b}");
            if causal {
                assert_within(&run_prefix(fm, &p, &o), &r, 1.0, &format!("{what} prefix"));
                assert_within(
                    &run_chunked(fm, &p, &o),
                    &r,
                    1.0,
                    &format!("{what} chunked"),
                );
            } else {
                assert_within(&run_bidirectional(fm, &p, &o), &r, 1.0, &what);
            }
        }
    }
}

fn unnormalized_for<T: Float>() {
    let (d, m) = (8, 24);
    let w = orf::<T>(11, m, d);
    check_unnormalized(
        &PositiveSoftmax::new(&w, m, d).unwrap(),
        Kind::Positive,
        &w,
        m,
    );
    check_unnormalized(
        &HyperbolicSoftmax::new(&w, m, d).unwrap(),
        Kind::Hyperbolic,
        &w,
        m,
    );
}

#[test]
fn unnormalized_equals_naive_product_with_true_features() {
    unnormalized_for::<f32>();
    unnormalized_for::<f64>();
}

// ---------------------------------------------------------------------------------------------
// 8. Trigonometric features: a documented risk, not a crash.

/// Documents by test: with trigonometric features and few of them (m = 4) on inputs where most
/// softmax weights are small (|x'|² ≈ 5.8), the estimated weights take both signs, so outputs
/// leave the convex hull of the values — wildly off softmax — yet every path returns finite
/// numbers (the denominator floor keeps a near-zero estimate from producing inf/NaN). The
/// positive map on the same inputs and projection stays inside the hull (up to rounding,
/// 2γ_N·max|v|). Oracle for "off": the testkit's exact softmax.
#[test]
fn trigonometric_features_can_be_wildly_off_but_stay_finite() {
    let (l, d, dv, m) = (32, 16, 4, 4);
    let (mut outside, mut worst) = (0usize, 0.0f64);
    for seed in 0..6 {
        let w = orf::<f32>(20 + seed, m, d);
        let p = Problem::<f32>::random(30 + seed, l, d, dv, 1.2);
        let trig = TrigonometricSoftmax::new(&w, m, d).unwrap();
        let runs = [
            run_bidirectional(&trig, &p, &opts(64, None)),
            run_bidirectional(&trig, &p, &opts(5, None)),
            run_prefix(&trig, &p, &opts(64, None)),
            run_chunked(&trig, &p, &opts(1, None)),
            run_chunked(&trig, &p, &opts(5, None)),
            run_chunked(&trig, &p, &opts(64, None)),
            run_stream(&trig, &p),
        ];
        for out in &runs {
            assert!(
                out.iter().all(|x| x.is_finite()),
                "seed {seed}: non-finite trig output"
            );
        }
        let pw = p.widen();
        let (exact, _) = softmax_and_std(&pw, m, Kind::Positive, false, None);
        let pos = run_bidirectional(
            &PositiveSoftmax::new(&w, m, d).unwrap(),
            &p,
            &opts(64, None),
        );
        let slack = 2.0 * gamma(2 * (l + 2 * m) + 16, unit_t_f64::<f32>()) * max_abs(&pw.v);
        for c in 0..dv {
            let col: Vec<f64> = (0..l).map(|j| pw.v[j * dv + c]).collect();
            let lo = col.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = col.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            for i in 0..l {
                let t = runs[0][i * dv + c] as f64;
                outside += usize::from(t < lo || t > hi);
                worst = worst.max((t - exact[i * dv + c]).abs() / (hi - lo));
                let x = pos[i * dv + c] as f64;
                assert!(
                    x >= lo - slack && x <= hi + slack,
                    "positive output {x} outside [{lo}, {hi}]"
                );
            }
        }
    }
    assert!(outside > 0, "no trig output left the hull of the values");
    assert!(worst > 1.0, "trig error only {worst} of the value range");
}

/// Regression: a finite key so large that `|x|²` overflows f32 (but within the supported
/// range: its projections are finite) gets a log-scale of −∞ (it once got NaN, ∞ − ∞, from
/// keys whose projections overflowed too, which are now refused as out of range). Its true
/// feature is the limit 0, so every path must treat it as absent — the same way — and the
/// state must stay usable (it once poisoned `Stream::step` and `causal_prefix` with NaN while
/// `push` + `query` skipped the key, and `causal_chunked` depended on the chunk).
#[test]
fn keys_whose_squared_norm_overflows_are_absent_on_every_path() {
    let (d, m, dv) = (4, 8, 4);
    let mut w = vec![0f32; m * d];
    projection(ProjectionKind::default(), 3, m, d, &mut w).unwrap();
    let phi = PositiveSoftmax::new(&w, m, d).unwrap();
    // Key 0 huge, everything else ordinary.
    let l = 5;
    let q = vec![0.1f32; l * d];
    let mut k: Vec<f32> = (0..l * d).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    k[..d].fill(1e20);
    assert!(1e20 < phi.max_input());
    let v: Vec<f32> = (0..l * dv).map(|i| i as f32).collect();
    let shape = Shape::new(l, d, dv);
    let mut outs = Vec::new();
    for block in [1, 2, 4, 64] {
        let opts = Options {
            block,
            ..Default::default()
        };
        for kind in [PlanKind::CausalChunked, PlanKind::CausalPrefix] {
            let plan = Plan::new(kind, Scalar, &phi, shape, opts).unwrap();
            let mut scratch = vec![0f32; plan.scratch_len()];
            let mut out = vec![0f32; l * dv];
            plan.run(&q, &k, &v, &mut out, &mut scratch).unwrap();
            outs.push(out);
        }
    }
    let mut buf = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&phi, dv).unwrap()];
    let mut stream = Stream::new(Scalar, &phi, dv, &mut buf).unwrap();
    let mut buf2 = vec![0f32; Stream::<f32, _, Scalar>::buffer_len(&phi, dv).unwrap()];
    let mut split = Stream::new(Scalar, &phi, dv, &mut buf2).unwrap();
    let (mut a, mut b) = (vec![0f32; l * dv], vec![0f32; l * dv]);
    for t in 0..l {
        let (r, rv) = (t * d..(t + 1) * d, t * dv..(t + 1) * dv);
        stream
            .step(
                &q[r.clone()],
                &k[r.clone()],
                &v[rv.clone()],
                &mut a[rv.clone()],
            )
            .unwrap();
        split.push(&k[r.clone()], &v[rv.clone()]).unwrap();
        split.query(&q[r], &mut b[rv]).unwrap();
    }
    assert_eq!(
        stream.tokens(),
        (l - 1) as u64,
        "the huge key is not counted"
    );
    assert_eq!(split.tokens(), stream.tokens());
    outs.push(a);
    outs.push(b);
    for out in &outs {
        assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
        // Row 0 saw only the absent key: zeros. Row 1 saw one real key: its value.
        assert_eq!(&out[..dv], &[0.0; 4]);
        for (x, y) in out[dv..2 * dv].iter().zip(&v[dv..2 * dv]) {
            assert!((x - y).abs() <= 1e-5 * y.abs(), "{x} vs {y}");
        }
        for (x, y) in out.iter().zip(&outs[0]) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "paths disagree: {x} vs {y}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One bidirectional head split over parts (`Plan::absorb_keys`, `PrefixState::merge`,
// `Plan::answer_queries`), as favor-tensor runs a long head on several threads.

/// The bidirectional plan `p` needs, and `p` through it split at the key cuts `key_cuts` and
/// the query cuts `query_cuts`: one state per key part, merged left to right into the first;
/// each query part into its own rows of the output.
fn run_split<T: Float, F: FeatureMap<T>>(
    fm: &F,
    p: &Problem<T>,
    o: &Options,
    key_cuts: &[usize],
    query_cuts: &[usize],
) -> Vec<T> {
    let (m, dv) = (fm.feature_dim(), p.shape.value_dim);
    let plan = Plan::new(PlanKind::Bidirectional, Scalar, fm, p.shape, *o).unwrap();
    let mut scratch = zeros(plan.part_scratch_len());
    let bounds = |cuts: &[usize], len: usize| -> Vec<(usize, usize)> {
        let mut b = vec![0];
        b.extend_from_slice(cuts);
        b.push(len);
        b.windows(2).map(|w| (w[0], w[1])).collect()
    };
    let len = favor_core::state_len(m, dv).unwrap();
    let mut bufs: Vec<Vec<T>> = bounds(key_cuts, p.shape.keys)
        .iter()
        .map(|_| zeros(len))
        .collect();
    let mut states: Vec<_> = bufs
        .iter_mut()
        .map(|b| favor_core::PrefixState::new(m, dv, b).unwrap())
        .collect();
    for (s, (a, b)) in states.iter_mut().zip(bounds(key_cuts, p.shape.keys)) {
        plan.absorb_keys(a..b, &p.k, &p.v, s, &mut scratch).unwrap();
    }
    let (first, rest) = states.split_first_mut().unwrap();
    for s in rest {
        first.merge(&Scalar, s).unwrap();
    }
    assert_eq!(
        first.tokens(),
        o.key_mask
            .map_or(p.shape.keys, |k| k.iter().filter(|&&on| on).count()) as u64
    );
    let mut out = zeros(p.shape.queries * dv);
    for (a, b) in bounds(query_cuts, p.shape.queries) {
        let rows = &mut out[a * dv..b * dv];
        plan.answer_queries(a..b, &p.q, first, rows, &mut scratch)
            .unwrap();
    }
    out
}

/// Oracle: the naive f64 reference and its rounding bound (as for every path here), and the
/// unsplit plan within twice the bound. One part is the unsplit plan bit for bit (the same
/// blocks in the same order). Keys 6, 13 and 20 are 2.5× longer (path_problem), so parts hold
/// different stabilisers and the merge rescales; parts of 0 keys, parts not on block
/// boundaries and a key mask straddling parts are included.
fn check_split<T: Float>() {
    let (m, d) = (16, 8);
    let w = orf::<T>(21, m, d);
    let fm = PositiveSoftmax::new(&w, m, d).unwrap();
    let p = path_problem::<T>(5);
    let l = p.len();
    let mut mask = vec![true; l];
    for j in [3, 12, 13, 14, 27] {
        mask[j] = false;
    }
    for key_mask in [None, Some(&mask[..])] {
        let o = opts(4, key_mask);
        let r = reference_for(Kind::Positive, &w, m, &p, &ref_opts::<T>(false, key_mask));
        let whole = run_bidirectional(&fm, &p, &o);
        assert_within(&whole, &r, 1.0, "unsplit");
        assert_bits_eq(&run_split(&fm, &p, &o, &[], &[]), &whole, "one part");
        let splits: [(&[usize], &[usize]); 5] = [
            (&[12], &[16]),
            (&[8, 16, 24], &[4, 8, 20]),
            (&[5, 11, 11, 22], &[1, 28]),
            (&[0, 29], &[0, 29]),
            (&[13, 14], &[7]),
        ];
        for (keys, queries) in splits {
            let what = format!(
                "keys cut at {keys:?}, queries at {queries:?}, mask {}",
                key_mask.is_some()
            );
            let out = run_split(&fm, &p, &o, keys, queries);
            assert_within(&out, &r, 1.0, &what);
            assert_agree(&out, &whole, &r, &what);
        }
    }
}

#[test]
fn bidirectional_split_over_parts_equals_the_reference() {
    check_split::<f64>();
    check_split::<f32>();
}

/// Errors of the split API, each before anything is written: hybrid and causal plans, rows
/// outside the plan, states of other dimensions, short scratch and output, out-of-range rows
/// named by their row in the head.
#[test]
fn bidirectional_split_errors() {
    use favor_core::{Error, HybridShape, PrefixState, state_len};
    let (l, d, dv, m) = (12, 4, 3, 8);
    let w = orf::<f64>(2, m, d);
    let fm = PositiveSoftmax::new(&w, m, d).unwrap();
    let p = Problem::<f64>::random(9, l, d, dv, 1.0);
    let plan = Plan::new(PlanKind::Bidirectional, Scalar, &fm, p.shape, opts(4, None)).unwrap();
    let mut scratch = zeros(plan.part_scratch_len());
    let mut buf = zeros(state_len(m, dv).unwrap());
    let mut state = PrefixState::new(m, dv, &mut buf).unwrap();
    let invalid =
        |r: Result<(), Error>| assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");

    invalid(plan.absorb_keys(5..13, &p.k, &p.v, &mut state, &mut scratch));
    #[allow(clippy::reversed_empty_ranges)]
    invalid(plan.absorb_keys(6..5, &p.k, &p.v, &mut state, &mut scratch));
    let hybrid = plan
        .with_hybrid(HybridShape {
            window: 2,
            sinks: 0,
        })
        .unwrap();
    invalid(hybrid.absorb_keys(0..l, &p.k, &p.v, &mut state, &mut scratch));
    let causal = Plan::new(PlanKind::CausalChunked, Scalar, &fm, p.shape, opts(4, None)).unwrap();
    let mut out = zeros(l * dv);
    invalid(causal.answer_queries(0..l, &p.q, &state, &mut out, &mut scratch));
    assert_eq!(state.tokens(), 0, "nothing absorbed by a failed call");

    let mut other_buf = zeros(state_len(m, dv + 1).unwrap());
    let mut other = PrefixState::new(m, dv + 1, &mut other_buf).unwrap();
    assert!(matches!(
        plan.absorb_keys(0..l, &p.k, &p.v, &mut other, &mut scratch),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(matches!(
        state.merge(&Scalar, &mut other),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(matches!(
        plan.absorb_keys(0..l, &p.k, &p.v, &mut state, &mut scratch[..4]),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(matches!(
        plan.absorb_keys(0..l, &p.k[1..], &p.v, &mut state, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    plan.absorb_keys(0..l, &p.k, &p.v, &mut state, &mut scratch)
        .unwrap();
    assert!(matches!(
        plan.answer_queries(2..6, &p.q, &state, &mut out[..4 * dv - 1], &mut scratch),
        Err(Error::BufferTooSmall { .. })
    ));

    // A key and a query beyond the map's input limit, reported at their row in the head.
    let mut bad = p.clone();
    bad.k[7 * d + 1] = f64::NAN;
    bad.q[9 * d] = f64::INFINITY;
    let (before, out_before) = (state.parts()[0].to_vec(), out.clone());
    assert_eq!(
        plan.absorb_keys(4..8, &bad.k, &bad.v, &mut state, &mut scratch),
        Err(Error::NonFinite { what: "k", row: 7 })
    );
    assert_eq!(
        plan.answer_queries(8..12, &bad.q, &state, &mut out[..4 * dv], &mut scratch),
        Err(Error::NonFinite { what: "q", row: 9 })
    );
    assert_eq!(state.tokens(), l as u64, "a refused part absorbs nothing");
    assert_eq!(state.parts()[0], &before[..]);
    assert_eq!(out, out_before, "a refused part writes nothing");
    // Rows outside the part are not read.
    plan.absorb_keys(0..4, &bad.k, &bad.v, &mut state, &mut scratch)
        .unwrap();
    plan.answer_queries(0..8, &bad.q, &state, &mut out[..8 * dv], &mut scratch)
        .unwrap();
}

/// Merging is adding: an empty state merged either way changes nothing, bit for bit; and a
/// state merged from two halves holds the keys' count.
#[test]
fn merge_with_an_empty_state_is_the_identity() {
    use favor_core::{PrefixState, state_len};
    let (l, d, dv, m) = (10, 4, 3, 8);
    let w = orf::<f64>(4, m, d);
    let fm = PositiveSoftmax::new(&w, m, d).unwrap();
    let p = Problem::<f64>::random(10, l, d, dv, 1.0);
    let plan = Plan::new(PlanKind::Bidirectional, Scalar, &fm, p.shape, opts(4, None)).unwrap();
    let mut scratch = zeros(plan.part_scratch_len());
    let n = state_len(m, dv).unwrap();
    let (mut a, mut e, mut f) = (zeros(n), zeros(n), zeros(n));
    let mut full = PrefixState::new(m, dv, &mut a).unwrap();
    plan.absorb_keys(0..l, &p.k, &p.v, &mut full, &mut scratch)
        .unwrap();
    let before: Vec<Vec<f64>> = full.parts().iter().map(|s| s.to_vec()).collect();
    let mut empty = PrefixState::new(m, dv, &mut e).unwrap();
    full.merge(&Scalar, &mut empty).unwrap();
    let after: Vec<Vec<f64>> = full.parts().iter().map(|s| s.to_vec()).collect();
    assert_eq!(before, after, "merging an empty state");
    let mut fresh = PrefixState::new(m, dv, &mut f).unwrap();
    fresh.merge(&Scalar, &mut full).unwrap();
    assert_eq!(fresh.tokens(), l as u64);
    assert_eq!(fresh.log_scale(), full.log_scale());
    let copied: Vec<Vec<f64>> = fresh.parts().iter().map(|s| s.to_vec()).collect();
    assert_eq!(copied, after, "merging into an empty state copies the sums");
}

/// `2^k` for a stabiliser `c = k·ln 2` rounded to f32: the factor the state's power-of-two
/// rescales apply between grid points (state.rs module docs), so sums at different
/// stabilisers compare exactly.
fn grid_scale(c: f32) -> f64 {
    2f64.powi((f64::from(c) / std::f64::consts::LN_2).round() as i32)
}

/// Merging keeps the compensated sums' precision: 64 f32 part states merged one by one hold
/// the exact sum of the parts' own values (each part's total + compensation, in f64) to far
/// below one f32 roundoff, as one state absorbing every key would; adding each part's total
/// into the compensation instead (plain summation across parts) errs by about u·|S| per
/// merge. Oracle: the parts' values summed in f64 (the entries through `PrefixState::entry`,
/// each part scaled by `2^k` for its stabiliser `k·ln 2`); bound: u_f32²·max|S|·64, where the
/// old merge (plain summation across parts) measured ~0.07·u_f32·max|S|.
#[test]
fn many_merges_keep_the_compensated_precision() {
    use favor_core::{PrefixState, state_len};
    let (l, d, dv, m, parts) = (4096, 8, 4, 16, 64);
    let w = orf::<f32>(8, m, d);
    let p = Problem::<f32>::random(12, l, d, dv, 0.8);
    let fm = PositiveSoftmax::new(&w, m, d).unwrap();
    let plan = Plan::new(
        PlanKind::Bidirectional,
        Scalar,
        &fm,
        p.shape,
        opts(64, None),
    )
    .unwrap();
    let n = state_len(m, dv).unwrap();
    let (mut t, mut b) = (zeros::<f32>(n), zeros::<f32>(n));
    let mut total = PrefixState::new(m, dv, &mut t).unwrap();
    let mut scratch = zeros::<f32>(plan.part_scratch_len());
    let mut exact = vec![0f64; m * dv];
    let step = l / parts;
    for a in (0..l).step_by(step) {
        let mut part = PrefixState::new(m, dv, &mut b).unwrap();
        plan.absorb_keys(a..a + step, &p.k, &p.v, &mut part, &mut scratch)
            .unwrap();
        let scale = grid_scale(part.log_scale());
        for (i, e) in exact.iter_mut().enumerate() {
            *e += part.entry(i / dv, Some(i % dv)).unwrap() * scale;
        }
        total.merge(&Scalar, &mut part).unwrap();
    }
    assert_eq!(total.tokens(), l as u64);
    let scale = grid_scale(total.log_scale());
    let top = exact.iter().fold(0.0, |a: f64, e| a.max(e.abs()));
    let u = f64::from(f32::EPSILON) / 2.0;
    let bound = u * u * top * 64.0;
    for (i, e) in exact.iter().enumerate() {
        let got = total.entry(i / dv, Some(i % dv)).unwrap() * scale;
        assert!(
            (got - e).abs() <= bound,
            "S[{i}]: error {:e} > {bound:e}",
            (got - e).abs()
        );
    }
}

/// A plan's scratch is workspace only: whatever it holds on entry (zeros, NaN, huge values,
/// a previous run's leftovers), `Plan::run` gives the same bits. favor-tensor reuses one
/// scratch for every head of a call on that promise. Every plan kind, with and without hybrid
/// attention and a key mask, blocks that do and do not divide L.
#[test]
fn plan_scratch_contents_do_not_matter() {
    let (l, d, dv, m) = (23, 8, 5, 16);
    let w = orf::<f32>(3, m, d);
    let fm = PositiveSoftmax::new(&w, m, d).unwrap();
    let p = Problem::<f32>::random(4, l, d, dv, 0.7);
    let mask: Vec<bool> = (0..l).map(|i| i % 5 != 2).collect();
    let other = Problem::<f32>::random(5, l, d, dv, 0.7);
    let hybrid = HybridShape {
        window: 3,
        sinks: 1,
    };
    let mut hybrid_runs = 0;
    for kind in [
        PlanKind::Bidirectional,
        PlanKind::CausalChunked,
        PlanKind::CausalPrefix,
    ] {
        for (block, key_mask, hy) in [
            (4, None, None),
            (7, Some(&mask[..]), None),
            (4, None, Some(hybrid)),
            (8, Some(&mask[..]), Some(hybrid)),
        ] {
            let mut plan = Plan::new(kind, Scalar, &fm, p.shape, opts(block, key_mask)).unwrap();
            if let Some(h) = hy {
                match plan.with_hybrid(h) {
                    Ok(hp) => {
                        plan = hp;
                        hybrid_runs += 1;
                    }
                    // Not every kind takes the hybrid form.
                    Err(_) => continue,
                }
            }
            let n = plan.scratch_len();
            let run = |scratch: &mut [f32]| {
                let mut out = vec![0f32; l * dv];
                plan.run(&p.q, &p.k, &p.v, &mut out, scratch).unwrap();
                out
            };
            let clean = run(&mut zeros(n));
            let what = format!(
                "{kind:?} block {block} mask {} hybrid {hy:?}",
                key_mask.is_some()
            );
            assert_bits_eq(&run(&mut vec![f32::NAN; n]), &clean, &what);
            assert_bits_eq(&run(&mut vec![f32::MAX; n]), &clean, &what);
            assert_bits_eq(&run(&mut vec![-1e30f32; n]), &clean, &what);
            // A previous run's leftovers, of another problem.
            let mut used = zeros(n);
            let mut out = vec![0f32; l * dv];
            plan.run(&other.q, &other.k, &other.v, &mut out, &mut used)
                .unwrap();
            assert_bits_eq(&run(&mut used), &clean, &what);
        }
    }
    // The hybrid form ran (bidirectional and causal chunked take it).
    assert!(hybrid_runs >= 4, "{hybrid_runs} hybrid plans");
}
