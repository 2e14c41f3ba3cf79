//! Target `hybrid`: favor-core's three evaluations of hybrid attention — [`HybridStream`]
//! (token by token), the causal chunked plan and the bidirectional plan
//! ([`Plan::with_hybrid`]) — on arbitrary small cases (L ≤ 48, d ≤ 8, m ≤ 16, any window and
//! sinks, any chunk and block, SM+ or SMhyp+ over every projection kind, f32 or f64), against:
//!
//! 1. the f64 oracle [`crate::hybrid::hybrid`] (the definition, in the log domain), causal and
//!    bidirectional, within the rounding budget derived below;
//! 2. each other: the stream and the causal chunked plan within the sum of their budgets;
//! 3. exact softmax ([`crate::reference::softmax`]) whenever every visible key is in every
//!    query's exact set (window ≥ L − 1, or the sinks cover the sequence);
//! 4. the stream itself, bit for bit: a snapshot taken after a fuzzed number of tokens (after
//!    a rejected step), restored into a fresh stream whose buffer holds junk (NaN, ∞, …),
//!    continues with the bits of the uninterrupted stream and writes the same bytes; after
//!    `reset` a replay gives the same bits again;
//! 5. a single-byte mutation of that snapshot (optionally re-signed with a valid CRC-32, so
//!    the checks past the checksum are reached): refused with `Error::Snapshot(_)`, leaving
//!    the stream as it was (it continues with the uninterrupted bits), or — only if the
//!    mutation is accepted — a stream whose every later output is finite;
//! 6. no call panics; every refusal is a typed error of the kind documented.
//!
//! Every output must be finite (positive maps, no mask: every row sees its own key).
//!
//! [`check_backend`] runs properties 1–3 with a favor-simd backend's kernels in place of the
//! scalar reference (favor-simd's tests/backends.rs, every backend, f32 and f64). The budget is
//! a worst-case model: on favor-simd's d = 64 cases it is about 1% of an f32 output and
//! 10⁻¹¹ of an f64 one (measured errors are 10⁴ times smaller), so in f32 it catches
//! structural errors (a key in the wrong set: window + 1 fails it), not drift of a few ulp,
//! which the f64 run and the per-kernel tests bound.
//!
//! ## The rounding budget
//!
//! The error model is the one of favor-core's tests/hybrid.rs and of
//! [`crate::reference`] (Higham: u the unit roundoff, γₙ = nu/(1 − nu)), evaluated at
//! u' = 2u_T + u_f64 (as the `attention` target does: it also covers the oracle's own f64
//! rounding). For an output row i with true weights aⱼ (exact set: `e^{τ qᵢ·kⱼ}`, else
//! `φ(qᵢ)·φ(kⱼ)`), total Z = Σⱼ aⱼ and output `out = Σⱼ aⱼvⱼ/Z`:
//!
//! - an exact weight: the logit `fl(τ̂·fl(q·k))` is off by at most `γ_{d+4}·τ·Σ|q_c k_c|`
//!   (d-term dot product; τ̂ = fl(ŝ²) with ŝ = fl(d^{-1/4}): 3 roundings; the product: 1),
//!   the shift by the row's top log-weight adds `u(|l| + |top|)` (the top itself is common to
//!   every weight of the row, so its own error cancels), exp 2u:
//!   `η_exact = γ_{d+4}τ·qk + u(τ·qk(1 + γ_{d+4}) + T) + 2u`, T ≥ every |top|;
//! - a far weight: the query's and the key's exponents *with* their log-scales (the query's
//!   does not cancel here: it is weighed against exact weights), Δk of [`crate::reference`]
//!   for each: `γ_{d+2}(p + h) + u(4p + 4h + ln√M + 3)`; the stabiliser's rescales
//!   `Δs = u(7Λ + 6L + 6)`; the far log-weight `ℓ_q + c` (≤ 2Λ), its shift by the top and
//!   the exp of it: `u(4Λ + T + 8)`; the feature product's M-term sum: 2γ_M;
//! - δ = e^{max η} − 1 + u bounds every weight's relative error, γ_N (N = 2(L + M) + 16) every
//!   sum's, so (reference, step 5) the normalised output moves by at most
//!   `(δ + 2γ_N)(max|v| + |out|)·Z / den` with den a lower bound of the computed total;
//! - absolute errors X (in weight units) on the numerator (times max|v|) and the total:
//!   the bidirectional path's subtraction (its module docs: a few ulp of the row's total
//!   φ-mass Φ over the non-sink keys, bounded by `γ_{2L+M+8}·Φ` as tests/hybrid.rs does); the
//!   stabilised far sums' underflow in `T` (`E = 10·M·(L + 1)·μ` at the scale `e^{ℓ_q + c}`,
//!   [`crate::reference`]'s underflow term; c = the largest key log-scale the row's far
//!   state can hold); the exact weights' underflow below μ after the shift (`2(L + 2)μ` of
//!   the top weight, ≤ Z);
//! - so `|Δout| ≤ ((δ + 2γ_N)Z + X)(max|v| + |out|)/den + μ`, with
//!   `den = max(Z(1 − δ − γ_N) − X, a_ii(1 − δ − γ_N))` (the diagonal is always exact and
//!   visible, and a far sum is never negative); no bound (∞) if den ≤ 0.
//!
//! Inputs keep that budget meaningful: q and k entries below 2 (exact logits ≤ 32), values
//! below 2⁹, favor-core projections (rows of norm ≈ √d), so f32's exponent range is not
//! approached by the stabilised sums in any but adversarial corners (which the underflow
//! term then covers rather than a tuned constant).

use arbitrary::{Result, Unstructured};
use favor_core::{
    Error, HybridShape, HybridStream, Kernels, Options, Plan, PlanKind, ProjectionKind, RowNorms,
    Scalar, Shape, crc32,
};
use favor_simd::math::EXP_MAX_ULP;

use crate::bounds::{Real, gamma, max_abs, unit};
use crate::hybrid::{Hybrid, hybrid};
use crate::input::{size, vector};
use crate::maps::{Map, MapKind, MapSpec};
use crate::reference::{Explicit, Qkv, explicit, lse_pair, softmax};

/// A rejected step tried on the stream before its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadStep {
    /// NaN in q.
    NanQuery,
    /// +∞ in k.
    InfKey,
    /// A finite q entry beyond the range (`T::MAX`).
    HugeQuery,
    /// v one element short.
    ShortValue,
}

/// One hybrid attention case.
#[derive(Debug, Clone)]
pub struct HybridCase {
    /// Run in f64 (else f32).
    pub f64: bool,
    /// The feature map (SM+ or SMhyp+ over a favor-core projection).
    pub map: MapSpec,
    /// Sequence length L.
    pub l: usize,
    /// Value dimension.
    pub dv: usize,
    /// Window w.
    pub window: usize,
    /// Sinks.
    pub sinks: usize,
    /// Chunk of the causal chunked plan.
    pub chunk: usize,
    /// Block of the bidirectional plan.
    pub block: usize,
    /// L×d queries.
    pub q: Vec<f64>,
    /// L×d keys.
    pub k: Vec<f64>,
    /// L×dv values.
    pub v: Vec<f64>,
    /// Tokens stepped before the snapshot (0..=L).
    pub cut: usize,
    /// What the restored stream's buffer holds before `restore`.
    pub junk: f64,
    /// The rejected step tried before the snapshot.
    pub bad: BadStep,
    /// The snapshot byte mutated (mod its length), the xor mask (≠ 0) and whether the
    /// CRC-32 trailer is recomputed after the mutation.
    pub mutation: (u32, u8, bool),
}

impl HybridCase {
    /// Decodes a case: L ≤ 48, d ≤ 8, m ≤ 16 (a multiple of d for simplex projections),
    /// window ≤ L + 2, sinks ≤ 4, dv ≤ 8; q and k entries below 2, values below 2⁹ in
    /// magnitude.
    pub fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        let f64 = u.arbitrary()?;
        let kind = if u.arbitrary()? {
            MapKind::Positive
        } else {
            MapKind::Hyperbolic
        };
        let normalizer = u.ratio(7, 8)?;
        let transposed = u.arbitrary()?;
        let d = size(u, 1, 8)?;
        let mut m = size(u, 1, 16)?;
        let pk = match u.int_in_range(0u8..=3)? {
            0 => ProjectionKind::Iid,
            1 => ProjectionKind::Orthogonal(RowNorms::Chi),
            2 => ProjectionKind::Orthogonal(RowNorms::SqrtD),
            // A simplex projection needs d ≥ 2 and m a multiple of d.
            _ if d >= 2 => {
                m = d * (m / d).max(1);
                ProjectionKind::Simplex
            }
            _ => ProjectionKind::Orthogonal(RowNorms::Chi),
        };
        let seed = u.arbitrary()?;
        let mut w = vec![0f64; m * d];
        favor_core::projection(pk, seed, m, d, &mut w).expect("valid projection shape");
        // Rounded to f32 so both precisions use the same W.
        let w = w.iter().map(|&x| f64::from(x as f32)).collect();
        let map = MapSpec {
            kind,
            normalizer,
            transposed,
            d,
            m,
            eps: 0.0,
            w,
        };
        let l = size(u, 1, 48)?;
        let dv = size(u, 1, 8)?;
        let window = size(u, 0, l + 2)?;
        let sinks = size(u, 0, 4)?;
        let chunk = size(u, 1, l)?;
        let block = size(u, 1, l)?;
        let eq = u.int_in_range(-6..=0)?;
        let q = vector(u, l * d, -21, eq)?;
        let k = vector(u, l * d, -21, eq)?;
        let ev = u.int_in_range(-4..=8)?;
        let v = vector(u, l * dv, -21, ev)?;
        let cut = size(u, 0, l)?;
        let junk = match u.int_in_range(0u8..=4)? {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -0.0,
            3 => 7.5,
            _ => crate::input::wide(u, -30, 30)?,
        };
        let bad = match u.int_in_range(0u8..=3)? {
            0 => BadStep::NanQuery,
            1 => BadStep::InfKey,
            2 => BadStep::HugeQuery,
            _ => BadStep::ShortValue,
        };
        let mutation = (u.arbitrary()?, u.int_in_range(1u8..=255)?, u.arbitrary()?);
        Ok(HybridCase {
            f64,
            map,
            l,
            dv,
            window,
            sinks,
            chunk,
            block,
            q,
            k,
            v,
            cut,
            junk,
            bad,
            mutation,
        })
    }

    /// [`arbitrary`](Self::arbitrary) over the whole of `data`; `None` where it runs out.
    pub fn decode(data: &[u8]) -> Option<Self> {
        Self::arbitrary(&mut Unstructured::new(data)).ok()
    }

    fn shape(&self) -> HybridShape {
        HybridShape {
            window: self.window,
            sinks: self.sinks,
        }
    }

    fn hybrid(&self, causal: bool) -> Hybrid {
        Hybrid {
            window: self.window,
            sinks: self.sinks,
            causal,
        }
    }
}

/// Decodes a [`HybridCase`] and checks it.
pub fn check_hybrid(data: &[u8]) {
    let Some(case) = HybridCase::decode(data) else {
        return;
    };
    run_case(&case);
}

/// Checks one case in its precision.
pub fn run_case(case: &HybridCase) {
    let oracle = Oracle::new(case);
    if case.f64 {
        run::<f64>(case, &oracle);
    } else {
        run::<f32>(case, &oracle);
    }
}

fn cast<T: Real>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

type Hs<'a, T, K = Scalar> = HybridStream<'a, T, Map<'a, T>, K>;

/// Inputs in T.
struct Inputs<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
}

/// Steps tokens `range` through `s`, writing their outputs into `out`.
fn steps<T: Real, K: Kernels<T>>(
    s: &mut Hs<'_, T, K>,
    x: &Inputs<T>,
    (d, dv): (usize, usize),
    range: core::ops::Range<usize>,
    out: &mut [T],
    what: &str,
) {
    for t in range {
        let (r, rv) = (t * d..(t + 1) * d, t * dv..(t + 1) * dv);
        if let Err(e) = s.step(&x.q[r.clone()], &x.k[r], &x.v[rv.clone()], &mut out[rv]) {
            panic!("{what}: step {t} of valid input refused: {e:?}");
        }
    }
}

fn snapshot<T: Real>(s: &Hs<'_, T>, what: &str) -> Vec<u8> {
    let mut b = vec![0u8; s.snapshot_len()];
    let n = s.snapshot(&mut b).expect("a buffer of snapshot_len bytes");
    assert_eq!(
        n,
        b.len(),
        "{what}: snapshot wrote {n} of {} bytes",
        b.len()
    );
    b
}

/// The first position where two outputs' bits differ, for messages.
fn first_diff<T: Real>(a: &[T], b: &[T]) -> Option<(usize, f64, f64)> {
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x.bits() != y.bits())
        .map(|(i, (x, y))| (i, x.to64(), y.to64()))
}

fn run<T: Real>(c: &HybridCase, oracle: &Oracle) {
    let (w, wt) = c.map.weights::<T>();
    let map = c.map.build(&w, &wt);
    let x = inputs(c);
    let what = describe::<T>(c, "scalar");
    let whole = paths(Scalar, &map, (c, oracle), &x, &what, 1.0);
    snapshots(&map, c, &x, &whole, &what);
}

/// Properties 1–3 (and finiteness) of the module docs for the paths run with the kernels of
/// a favor-simd backend: `kern` in place of the scalar reference, the same f64 oracle, and
/// the same budget with every rounding unit u' enlarged by `1 + EXP_MAX_ULP` in f32 — the
/// vector `exp` is within `EXP_MAX_ULP` ulp of libm's, so each of its results carries at most
/// that many more units of relative error, and the budget is monotone in u'. (FMA and
/// reordered sums stay within the γₙ the model already charges; f64 `exp` is libm's on
/// every backend.) The snapshot properties are the scalar stream's and are not repeated.
pub fn check_backend<T: Real, K: Kernels<T>>(case: &HybridCase, kern: K) {
    check_backend_with::<T, K>(case, &Oracle::new(case), kern);
}

/// [`check_backend`] against an [`Oracle`] of `case` computed once: the f64 oracle costs about
/// twenty times the paths it checks, so a test running many backends and both precisions on
/// the same cases computes it once per case.
///
/// # Panics
/// As [`check_backend`]; and if `oracle` is not `case`'s (its shape differs).
pub fn check_backend_with<T: Real, K: Kernels<T>>(case: &HybridCase, oracle: &Oracle, kern: K) {
    let (w, wt) = case.map.weights::<T>();
    let map = case.map.build(&w, &wt);
    let x = inputs(case);
    let what = describe::<T>(case, kern.name());
    let widen = if T::NAME == "f32" {
        1.0 + f64::from(EXP_MAX_ULP)
    } else {
        1.0
    };
    paths(kern, &map, (case, oracle), &x, &what, widen);
}

fn inputs<T: Real>(c: &HybridCase) -> Inputs<T> {
    Inputs {
        q: cast::<T>(&c.q),
        k: cast::<T>(&c.k),
        v: cast::<T>(&c.v),
    }
}

fn describe<T: Real>(c: &HybridCase, backend: &str) -> String {
    format!(
        "{} {backend} {:?} norm={} d={} m={} L={} dv={} w={} sinks={} chunk={} block={} cut={}",
        T::NAME,
        c.map.kind,
        c.map.normalizer,
        c.map.d,
        c.map.m,
        c.l,
        c.dv,
        c.window,
        c.sinks,
        c.chunk,
        c.block,
        c.cut
    )
}

/// Runs the stream (over a zeroed buffer), the causal chunked and the bidirectional plan with
/// `kern`, checks that every output is finite and properties 1–3 with the budget's rounding
/// unit times `widen`; returns the stream's outputs.
fn paths<T: Real, K: Kernels<T>>(
    kern: K,
    map: &Map<'_, T>,
    (c, oracle): (&HybridCase, &Oracle),
    x: &Inputs<T>,
    what: &str,
    widen: f64,
) -> Vec<T> {
    let (d, dv, l) = (c.map.d, c.dv, c.l);
    let shape = c.shape();
    let len = Hs::<T, K>::buffer_len(map, dv, shape).expect("buffer_len");
    let mut b0 = vec![T::zero(); len];
    let mut s0 = HybridStream::new(kern, map, dv, shape, &mut b0).expect("hybrid stream");
    let mut whole = vec![T::zero(); l * dv];
    steps(&mut s0, x, (d, dv), 0..l, &mut whole, what);

    let chunked = plan_run(kern, map, c, (PlanKind::CausalChunked, c.chunk), x, what);
    let bidi = plan_run(kern, map, c, (PlanKind::Bidirectional, c.block), x, what);
    for (path, out) in [
        ("stream", &whole),
        ("causal_chunked", &chunked),
        ("bidirectional", &bidi),
    ] {
        if let Some((i, o)) = out.iter().enumerate().find(|(_, o)| !o.is_finite()) {
            panic!("{what}: {path}[{i}] = {:e} is not finite", o.to64());
        }
    }
    numeric::<T>((c, oracle), (&whole, &chunked, &bidi), what, widen);
    whole
}

/// A hybrid plan's outputs.
fn plan_run<T: Real, K: Kernels<T>>(
    kern: K,
    map: &Map<'_, T>,
    c: &HybridCase,
    (kind, block): (PlanKind, usize),
    x: &Inputs<T>,
    what: &str,
) -> Vec<T> {
    let opts = Options {
        block,
        ..Options::default()
    };
    let plan = Plan::new(kind, kern, map, Shape::new(c.l, c.map.d, c.dv), opts)
        .and_then(|p| p.with_hybrid(c.shape()))
        .unwrap_or_else(|e| panic!("{what}: {kind:?} hybrid plan refused: {e:?}"));
    let mut scratch = vec![T::zero(); plan.scratch_len()];
    let mut out = vec![T::zero(); c.l * c.dv];
    plan.run(&x.q, &x.k, &x.v, &mut out, &mut scratch)
        .unwrap_or_else(|e| panic!("{what}: {kind:?} hybrid plan run refused: {e:?}"));
    out
}

/// Properties 1–3 of the module docs.
fn numeric<T: Real>(
    (c, oracle): (&HybridCase, &Oracle),
    (stream, chunked, bidi): (&[T], &[T], &[T]),
    what: &str,
    widen: f64,
) {
    assert_eq!(
        oracle.sides[0].want.len(),
        c.l * c.dv,
        "{what}: the oracle is another case's"
    );
    let u = widen * (2.0 * unit::<T>() + unit::<f64>());
    let model = Model::new(c, oracle, u);
    let tiny = T::min_positive_value().to64();
    for side in &oracle.sides {
        let (causal, want) = (side.causal, &side.want);
        let tol = budget(&model, c, side, tiny);
        let exact = side.exact.as_ref();
        let paths: &[(&str, &[T])] = if causal {
            &[("stream", stream), ("causal_chunked", chunked)]
        } else {
            &[("bidirectional", bidi)]
        };
        for (path, out) in paths {
            for (n, &o) in out.iter().enumerate() {
                let (o, t) = (o.to64(), tol[n]);
                assert!(
                    (o - want[n]).abs() <= t,
                    "{what}: {path}[{n}] = {o:e}, f64 hybrid oracle {:e}, |err| {:e} > budget {t:e}",
                    want[n],
                    (o - want[n]).abs()
                );
                if let Some(e) = &exact {
                    assert!(
                        (o - e[n]).abs() <= t,
                        "{what}: {path}[{n}] = {o:e}, every key exact but softmax is {:e}, \
                         |err| {:e} > budget {t:e}",
                        e[n],
                        (o - e[n]).abs()
                    );
                }
            }
        }
        if causal {
            for (n, (a, b)) in stream.iter().zip(chunked).enumerate() {
                let (a, b) = (a.to64(), b.to64());
                assert!(
                    (a - b).abs() <= 2.0 * tol[n],
                    "{what}: stream[{n}] = {a:e} vs causal_chunked {b:e}: |diff| {:e} > {:e}",
                    (a - b).abs(),
                    2.0 * tol[n]
                );
            }
        }
    }
}

/// Everything [`check_backend_with`] compares against that depends on neither the float type
/// nor the backend, for one case: the explicit features, the f64 hybrid oracle's outputs
/// (causal and bidirectional), exact softmax where every visible key is exact, and the error
/// model's case-wide extremes and per-row terms (module docs), which only the type's unit
/// roundoff and smallest normal then turn into budgets.
pub struct Oracle {
    fq: Explicit,
    fk: Explicit,
    tau: f64,
    /// T of the module docs: every log-weight, and the log of any sum of at most L of them,
    /// is within it.
    t_top: f64,
    /// max over (i, j) of Σ|q_c k_c|.
    qk: f64,
    /// Causal, then bidirectional.
    sides: [Side; 2],
}

/// One direction of an [`Oracle`].
struct Side {
    causal: bool,
    want: Vec<f64>,
    exact: Option<Vec<f64>>,
    rows: Vec<RowTerms>,
}

/// The per-row terms of [`budget`] that depend only on the case, each already relative to the
/// row's total Z.
struct RowTerms {
    /// `e^{ℓ_q + c − ln Z}` (the far sums' underflow scale) and, bidirectional,
    /// `e^{ln Φ − ln Z}` (the subtraction's φ-mass); `None` without far keys.
    far: Option<(f64, Option<f64>)>,
    /// `a_ii / Z`, the diagonal's share.
    diagonal: f64,
}

impl Oracle {
    /// The oracle of `c` (about L²·(d + 2M) f64 exponentials and products).
    pub fn new(c: &HybridCase) -> Self {
        let (l, d) = (c.l, c.map.d);
        let (fq, fk) = (explicit(&c.map, &c.q), explicit(&c.map, &c.k));
        let tau = c.map.scale() * c.map.scale();
        let mut t_top = 0f64;
        let mut qk = 0f64;
        for i in 0..l {
            for j in 0..l {
                let (qi, kj) = (&c.q[i * d..(i + 1) * d], &c.k[j * d..(j + 1) * d]);
                let dot: f64 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                let abs: f64 = qi.iter().zip(kj).map(|(a, b)| (a * b).abs()).sum();
                qk = qk.max(abs);
                let far = lse_pair(fq.log_features(i), fk.log_features(j));
                t_top = t_top.max((tau * dot).abs()).max(far.abs());
            }
        }
        t_top += ((l + 1) as f64).ln() + 1.0;
        let xq = Qkv {
            q: &c.q,
            k: &c.k,
            v: &c.v,
            d,
            dv: c.dv,
        };
        let sides = [true, false].map(|causal| {
            let h = c.hybrid(causal);
            let all_exact = (0..l).all(|i| (0..l).all(|j| (causal && j > i) || h.exact(i, j)));
            Side {
                causal,
                want: hybrid(xq, tau, (&fq, &fk), h, None),
                exact: all_exact.then(|| softmax(xq, tau, causal, None).out),
                rows: row_terms(c, (&fq, &fk), tau, h),
            }
        });
        Oracle {
            fq,
            fk,
            tau,
            t_top,
            qk,
            sides,
        }
    }
}

/// The case-wide parts of the error model (module docs) at unit roundoff u.
struct Model {
    /// δ: every weight's relative error bound.
    delta: f64,
    /// γ_N: every sum's.
    g: f64,
    /// The bidirectional subtraction's γ_{2L+M+8}.
    g_sub: f64,
    /// Features M.
    features: usize,
}

impl Model {
    fn new<'o>(c: &HybridCase, o: &'o Oracle, u: f64) -> Self {
        let (l, d) = (c.l, c.map.d);
        let mm = c.map.features();
        let ln_norm = (mm as f64).sqrt().ln();
        let (fq, fk, tau, t_top, qk) = (&o.fq, &o.fk, o.tau, o.t_top, o.qk);
        let dk = |e: &Explicit, r: usize| {
            let (p, h) = (e.p(r), e.h(r));
            gamma(d + 2, u) * (p + h) + u * (4.0 * p + 4.0 * h + ln_norm + 3.0)
        };
        let rows = |e: &'o Explicit| (0..e.rows()).map(move |r| (e, r));
        let lambda = rows(fq)
            .chain(rows(fk))
            .map(|(e, r)| e.p(r) + e.h(r) + ln_norm)
            .fold(0f64, f64::max);
        let dq_max = rows(fq).map(|(e, r)| dk(e, r)).fold(0f64, f64::max);
        let dk_max = rows(fk).map(|(e, r)| dk(e, r)).fold(0f64, f64::max);
        let ds = u * (7.0 * lambda + 6.0 * l as f64 + 6.0);
        let eta_far = dq_max + dk_max + ds + u * (4.0 * lambda + t_top + 8.0) + 2.0 * gamma(mm, u);
        let gd = gamma(d + 4, u);
        let eta_exact = gd * tau * qk + u * (tau * qk * (1.0 + gd) + t_top) + 2.0 * u;
        Model {
            delta: eta_far.max(eta_exact).exp_m1() + u,
            g: gamma(2 * (l + mm) + 16, u),
            g_sub: gamma(2 * l + mm + 8, u),
            features: mm,
        }
    }
}

/// ln Σ eˣ over `xs` (−∞ for none).
fn lse(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let top = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY {
        return top;
    }
    top + xs.map(|x| (x - top).exp()).sum::<f64>().ln()
}

/// The case-only terms of [`budget`] for each row of the paths of `h`.
fn row_terms(
    c: &HybridCase,
    (fq, fk): (&Explicit, &Explicit),
    tau: f64,
    h: Hybrid,
) -> Vec<RowTerms> {
    let (l, d) = (c.l, c.map.d);
    let row_max = |f: &[f64]| f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (0..l)
        .map(|i| {
            let visible = |j: &usize| !h.causal || *j <= i;
            let logit = |j: usize| {
                let dot: f64 = (0..d).map(|e| c.q[i * d + e] * c.k[j * d + e]).sum();
                tau * dot
            };
            let far_log = |j: usize| lse_pair(fq.log_features(i), fk.log_features(j));
            let log_a = |j: usize| if h.exact(i, j) { logit(j) } else { far_log(j) };
            let lz = lse((0..l).filter(visible).map(log_a));
            let far_keys = (0..l).filter(visible).any(|j| !h.exact(i, j));
            let far = far_keys.then(|| {
                // The largest key log-scale the far state can hold: non-sink keys the row sees.
                let c_max = (h.sinks..l)
                    .filter(visible)
                    .map(|j| row_max(fk.log_features(j)))
                    .fold(f64::NEG_INFINITY, f64::max);
                let scale = row_max(fq.log_features(i)) + c_max;
                let phi = (!h.causal).then(|| (lse((h.sinks..l).map(far_log)) - lz).exp());
                ((scale - lz).exp(), phi)
            });
            RowTerms {
                far,
                diagonal: (logit(i) - lz).exp(),
            }
        })
        .collect()
}

/// Per output element, the budget of |computed − oracle| for the paths of `side` in a type
/// whose smallest normal number is `tiny` (module docs).
fn budget(m: &Model, c: &HybridCase, side: &Side, tiny: f64) -> Vec<f64> {
    let (l, dv) = (c.l, c.dv);
    let vmax = max_abs(&c.v);
    let mut tol = vec![f64::INFINITY; l * dv];
    for (i, row) in side.rows.iter().enumerate() {
        // Absolute errors X relative to Z.
        let mut x = 2.0 * (l + 2) as f64 * tiny * (1.0 + m.delta);
        if let Some((scale, phi)) = row.far {
            let e = 10.0 * m.features as f64 * (l + 1) as f64 * tiny;
            x += e * scale;
            if let Some(phi) = phi {
                x += m.g_sub * phi;
            }
        }
        let keep = 1.0 - m.delta - m.g;
        let den = (keep - x).max(row.diagonal * keep);
        for col in 0..dv {
            let out = side.want[i * dv + col].abs();
            tol[i * dv + col] = if den > 0.0 {
                ((m.delta + 2.0 * m.g) + x) * (vmax + out) / den + tiny
            } else {
                f64::INFINITY
            };
        }
    }
    tol
}

/// Properties 4–6 of the module docs.
fn snapshots<T: Real>(map: &Map<'_, T>, c: &HybridCase, x: &Inputs<T>, whole: &[T], what: &str) {
    let (d, dv, l, cut) = (c.map.d, c.dv, c.l, c.cut);
    let shape = c.shape();
    let len = Hs::<T>::buffer_len(map, dv, shape).expect("buffer_len");
    let junk = T::from_f64(c.junk);

    // The stream that is snapshotted: junk in its buffer, `cut` tokens, then a bad step.
    let mut b1 = vec![junk; len];
    let mut s1 = HybridStream::new(Scalar, map, dv, shape, &mut b1).expect("hybrid stream");
    let mut out1 = vec![T::zero(); l * dv];
    steps(&mut s1, x, (d, dv), 0..cut, &mut out1, what);
    if let Some((i, a, b)) = first_diff(&out1[..cut * dv], &whole[..cut * dv]) {
        panic!("{what}: a stream over a junk buffer differs at {i}: {a:e} vs {b:e}");
    }
    let before = snapshot(&s1, what);
    bad_step(&mut s1, c, x, what);
    let bytes = snapshot(&s1, what);
    assert_eq!(
        bytes, before,
        "{what}: a rejected {:?} changed the state",
        c.bad
    );

    // Restore into a fresh stream over junk, continue.
    let mut b2 = vec![junk; len];
    let mut s2 = HybridStream::new(Scalar, map, dv, shape, &mut b2).expect("hybrid stream");
    if let Err(e) = s2.restore(&bytes) {
        panic!("{what}: a genuine snapshot after {cut} tokens refused: {e:?}");
    }
    assert_eq!(s2.tokens(), cut as u64, "{what}: restored token count");
    assert_eq!(
        snapshot(&s2, what),
        bytes,
        "{what}: restored stream's bytes"
    );
    let mut out2 = whole.to_vec();
    out2[cut * dv..].fill(T::zero());
    steps(&mut s2, x, (d, dv), cut..l, &mut out2, what);
    if let Some((i, a, b)) = first_diff(&out2, whole) {
        panic!("{what}: restored at {cut} and continued: [{i}] = {a:e}, uninterrupted {b:e}");
    }
    // Reset: a replay gives the same bits.
    s2.reset();
    assert_eq!(s2.tokens(), 0, "{what}: tokens after reset");
    let mut out3 = vec![T::zero(); l * dv];
    steps(&mut s2, x, (d, dv), 0..l, &mut out3, what);
    if let Some((i, a, b)) = first_diff(&out3, whole) {
        panic!("{what}: replay after reset: [{i}] = {a:e}, fresh stream {b:e}");
    }

    // One mutated byte, into the snapshotted stream.
    let (at, xor, resign) = c.mutation;
    let mut bad = bytes.clone();
    let at = at as usize % bad.len();
    bad[at] ^= xor;
    let body = bad.len() - 4;
    if resign && at < body {
        let crc = crc32(&bad[..body]);
        bad[body..].copy_from_slice(&crc.to_le_bytes());
    }
    let mut rest = out1.clone();
    match s1.restore(&bad) {
        Err(Error::Snapshot(_)) => {
            assert_eq!(
                s1.tokens(),
                cut as u64,
                "{what}: a refused restore moved tokens"
            );
            assert_eq!(
                snapshot(&s1, what),
                bytes,
                "{what}: a refused restore (byte {at} ^ {xor:#04x}, resign {resign}) changed the state"
            );
            steps(&mut s1, x, (d, dv), cut..l, &mut rest, what);
            if let Some((i, a, b)) = first_diff(&rest, whole) {
                panic!(
                    "{what}: after a refused restore (byte {at} ^ {xor:#04x}): [{i}] = {a:e}, \
                     uninterrupted {b:e}"
                );
            }
        }
        Err(e) => panic!("{what}: a mutated snapshot refused with a non-snapshot error {e:?}"),
        Ok(()) => {
            // Accepted (a re-signed mutation the checks cannot tell from a reachable state):
            // the stream must stay usable.
            for t in cut..l {
                let (r, rv) = (t * d..(t + 1) * d, t * dv..(t + 1) * dv);
                let o = &mut rest[rv.clone()];
                match s1.step(&x.q[r.clone()], &x.k[r], &x.v[rv], o) {
                    Ok(()) => assert!(
                        o.iter().all(|e| e.is_finite()),
                        "{what}: after an accepted mutation (byte {at} ^ {xor:#04x}) step {t} \
                         gives {:?}",
                        o.iter().map(|e| e.to64()).collect::<Vec<_>>()
                    ),
                    Err(Error::OutOfRange { .. }) => {}
                    Err(e) => panic!("{what}: after an accepted mutation step {t}: {e:?}"),
                }
            }
        }
    }
}

/// Tries `c.bad` at token `c.cut`: it must be refused with its typed error.
fn bad_step<T: Real>(s: &mut Hs<'_, T>, c: &HybridCase, x: &Inputs<T>, what: &str) {
    let (d, dv) = (c.map.d, c.dv);
    // Token `cut`'s inputs (token 0's if there is none left).
    let t = c.cut.min(c.l - 1);
    let mut q = x.q[t * d..(t + 1) * d].to_vec();
    let mut k = x.k[t * d..(t + 1) * d].to_vec();
    let v = &x.v[t * dv..(t + 1) * dv];
    let mut out = vec![T::zero(); dv];
    let r = match c.bad {
        BadStep::NanQuery => {
            q[0] = T::nan();
            s.step(&q, &k, v, &mut out)
        }
        BadStep::InfKey => {
            k[d - 1] = T::infinity();
            s.step(&q, &k, v, &mut out)
        }
        BadStep::HugeQuery => {
            q[0] = T::max_value();
            s.step(&q, &k, v, &mut out)
        }
        BadStep::ShortValue => s.step(&q, &k, &v[..dv - 1], &mut out),
    };
    let ok = matches!(
        (c.bad, &r),
        (
            BadStep::NanQuery | BadStep::InfKey,
            Err(Error::NonFinite { .. })
        ) | (BadStep::HugeQuery, Err(Error::OutOfRange { .. }))
            | (BadStep::ShortValue, Err(Error::LengthMismatch { .. }))
    );
    assert!(ok, "{what}: bad step {:?} gave {r:?}", c.bad);
    assert_eq!(
        s.tokens(),
        c.cut as u64,
        "{what}: a refused step moved tokens"
    );
}
