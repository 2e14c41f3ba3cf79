//! Target `mapped`: favor-core `MappedTokens::new` + `Stream::step_mapped` over up to 8
//! streams sharing one feature map (any map, f32 or f64), on Scalar and on every SIMD backend,
//! in arbitrary interleavings with plain `step`, snapshots and restores of single streams
//! (also into another stream of the map), resets, finite tokens of huge norm, and rejected
//! calls: NaN/±∞ in any row, wrong lengths, a short scratch or output buffer, no tokens, a
//! token index out of range, tokens mapped by a foreign map.
//!
//! Every stream has a twin that receives the same tokens through plain `step`. Oracles:
//! - `step_mapped` equals `step` with that token's q and k: bit for bit on Scalar (favor-core
//!   documents it), and on SIMD backends within the end-to-end bound of two evaluations of
//!   the same attention that the `attention` target uses
//!   ([`crate::attention::backend_bound`]), for the positive softmax maps outside the f32
//!   underflow limit (where the
//!   f64 oracle below certifies the output);
//! - tokens mapped by another map with the same fingerprint (a copy of W) are accepted and
//!   give the same outputs;
//! - positive softmax maps: every output within the derived rounding bound of naive f64
//!   FAVOR+ over the stream's history ([`favor_reference`]); positive maps: finite outputs;
//! - every rejected call is an `Err`, and no stream changes: its snapshot is the same bytes
//!   before and after, and later outputs keep matching the twin's;
//! - no call panics.

use arbitrary::{Arbitrary, Result, Unstructured};
use favor_core::{FeatureMap, Kernels, MappedTokens, Scalar, Stream, mapped_tokens_len};

use crate::attention::backend_bound;
use crate::backends::VisitT;
use crate::bounds::{Real, max_abs, unit};
use crate::input::{Mix, size};
use crate::maps::{Map, MapSpec};
use crate::reference::{RefOpts, explicit, favor_reference};

/// Most tokens a stream's history holds (applications beyond it are skipped).
const MAX_TOKENS: usize = 24;
/// Most tokens mapped at once.
const MAX_MAPPED: usize = 8;

/// One operation.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum MappedOp {
    /// Map `1 + tokens % 8` tokens (through a copy of the map if `copy`) and apply them to
    /// streams chosen by `pattern` (a stream may get any token; a token may go to several).
    Mapped {
        /// Tokens (mod 8, plus 1).
        tokens: u8,
        /// Seed of the assignment.
        pattern: u32,
        /// Map through another map with the same fingerprint.
        copy: bool,
    },
    /// Plain `step` of stream `stream`.
    Step {
        /// Stream (mod n).
        stream: u8,
    },
    /// Snapshot stream `stream` (and its twin) into slot `slot % 4`.
    Snapshot {
        /// Stream (mod n).
        stream: u8,
        /// Slot.
        slot: u8,
    },
    /// Restore slot `slot % 4` into stream `stream` (and its twin).
    Restore {
        /// Stream (mod n).
        stream: u8,
        /// Slot.
        slot: u8,
    },
    /// `reset()` of stream `stream` (and its twin).
    Reset {
        /// Stream (mod n).
        stream: u8,
    },
    /// A rejected `MappedTokens::new` (kind `what % 6`): NaN/±∞ in a q row, in a k row, q
    /// or k one element long or short, scratch too short, no tokens.
    BadNew {
        /// Which fault.
        what: u8,
        /// Where (element index, or size offset).
        at: u16,
        /// ±∞ instead of NaN.
        inf: bool,
    },
    /// A rejected `step_mapped` on stream `stream` (kind `what % 6`): token index out of range,
    /// NaN/±∞ in v, v one element long or short, output buffer short, tokens mapped by a
    /// map with another fingerprint, or with other dimensions.
    BadStep {
        /// Which fault.
        what: u8,
        /// Stream (mod n).
        stream: u8,
        /// Where.
        at: u8,
    },
    /// Map tokens of which one row has entries of magnitude up to 2^`exp` (clamped to the
    /// type's range): accepted or refused (`Overflow`), and if accepted, applied like
    /// `Mapped` with the twin comparison but without range-dependent oracles.
    Huge {
        /// Tokens (mod 8, plus 1).
        tokens: u8,
        /// Seed of the assignment and of the huge row.
        pattern: u32,
        /// Binary exponent of the huge entries (mod the type's range, at least 16).
        exp: u16,
    },
}

/// Streams over one map and the operations applied to them.
#[derive(Debug, Clone)]
pub struct MappedCase {
    /// Run in f64 (else f32).
    pub f64: bool,
    /// The map (any kind, d ≤ 16, m ≤ 64).
    pub map: MapSpec,
    /// Value dimension (≤ 8).
    pub dv: usize,
    /// Streams (1–8).
    pub streams: usize,
    /// Seed of the tokens.
    pub seed: u64,
    /// q and k entries are grid values times 2^scale.
    pub scale: i32,
    /// The operations.
    pub ops: Vec<MappedOp>,
}

impl<'a> Arbitrary<'a> for MappedCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let f64 = u.arbitrary()?;
        let map = MapSpec::arbitrary(u, 16, 64, false)?;
        let dv = size(u, 1, 8)?;
        let streams = size(u, 1, 8)?;
        let seed = u.arbitrary()?;
        let scale = u.int_in_range(-6..=3)?;
        let n = size(u, 1, 24)?;
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            ops.push(MappedOp::arbitrary(u)?);
        }
        Ok(MappedCase {
            f64,
            map,
            dv,
            streams,
            seed,
            scale,
            ops,
        })
    }
}

/// Decodes a [`MappedCase`] and runs it on Scalar and every SIMD backend.
pub fn check_mapped(data: &[u8]) {
    let Ok(case) = MappedCase::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    run_case(&case);
}

/// Runs one case on Scalar and on every SIMD backend, in its precision.
pub fn run_case(case: &MappedCase) {
    if case.f64 {
        run_all::<f64>(case);
    } else {
        run_all::<f32>(case);
    }
}

fn run_all<T: Real>(case: &MappedCase) {
    struct V<'a> {
        case: &'a MappedCase,
        scalar: bool,
    }
    impl<T: Real> VisitT<T> for V<'_> {
        fn visit<K: Kernels<T>>(&mut self, k: K) {
            run::<T, K>(k, self.case, self.scalar);
        }
    }
    let mut v = V { case, scalar: true };
    VisitT::<T>::visit(&mut v, Scalar);
    v.scalar = false;
    T::each_simd(&mut v);
}

/// A stream's history: what it should hold, and whether its twin holds the same tokens.
#[derive(Debug, Clone)]
struct Model {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    /// False once a token of huge norm entered: range-dependent oracles no longer apply.
    known: bool,
}

impl Model {
    fn empty() -> Self {
        Model {
            q: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            known: true,
        }
    }
}

/// A snapshot slot: a stream's bytes, its twin's, and its history.
type Saved = (Vec<u8>, Vec<u8>, Model);

struct Ctx<'a> {
    c: &'a MappedCase,
    scalar: bool,
    /// The map promises positive features (so finite outputs).
    positive: bool,
    what: String,
    mix: Mix,
}

fn cast<T: Real>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

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

fn run<T: Real, K: Kernels<T>>(kern: K, c: &MappedCase, scalar: bool) {
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
    let mut main: Vec<_> = bufs
        .iter_mut()
        .map(|b| Stream::new(kern, &map, dv, b).expect("stream"))
        .collect();
    let mut twin: Vec<_> = tbufs
        .iter_mut()
        .map(|b| Stream::new(kern, &map, dv, b).expect("stream"))
        .collect();
    let mut models = vec![Model::empty(); n];
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
                cx.apply(
                    &kern,
                    fm,
                    &mut main,
                    &mut twin,
                    &mut models,
                    nt,
                    &q,
                    &k,
                    pattern,
                    false,
                    &what,
                );
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
                cx.apply(
                    &kern,
                    &map,
                    &mut main,
                    &mut twin,
                    &mut models,
                    nt,
                    &q,
                    &k,
                    pattern,
                    true,
                    &what,
                );
            }
            MappedOp::Step { stream } => {
                let j = usize::from(stream) % n;
                if models[j].k.len() / d >= MAX_TOKENS {
                    continue;
                }
                let (q, k, v) = (cx.tokens(d, amp), cx.tokens(d, amp), cx.tokens(dv, 4.0));
                let (qt, kt, vt) = (cast::<T>(&q), cast::<T>(&k), cast::<T>(&v));
                let mut out = vec![T::zero(); dv];
                let mut out_t = vec![T::zero(); dv];
                main[j].step(&qt, &kt, &vt, &mut out).expect("step");
                twin[j].step(&qt, &kt, &vt, &mut out_t).expect("twin step");
                models[j].q.extend(&q);
                models[j].k.extend(&k);
                models[j].v.extend(&v);
                cx.check(&models[j], &q, &out, &out_t, &format!("{what} stream {j}"));
            }
            MappedOp::Snapshot { stream, slot } => {
                let j = usize::from(stream) % n;
                let (a, b) = (snapshot_of(&main[j]), snapshot_of(&twin[j]));
                if scalar {
                    assert!(
                        a == b,
                        "{what}: stream {j} and its twin hold different states"
                    );
                }
                slots[usize::from(slot) % 4] = Some((a, b, models[j].clone()));
            }
            MappedOp::Restore { stream, slot } => {
                let j = usize::from(stream) % n;
                if let Some((a, b, m)) = &slots[usize::from(slot) % 4] {
                    main[j]
                        .restore(a)
                        .unwrap_or_else(|e| panic!("{what}: own snapshot rejected: {e}"));
                    twin[j]
                        .restore(b)
                        .unwrap_or_else(|e| panic!("{what}: own snapshot rejected: {e}"));
                    models[j] = m.clone();
                }
            }
            MappedOp::Reset { stream } => {
                let j = usize::from(stream) % n;
                main[j].reset();
                twin[j].reset();
                models[j] = Model::empty();
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
                let before = snapshot_of(&main[j]);
                let mut out = vec![T::zero(); out_len];
                let r = main[j].step_mapped(&mapped, index, &cast::<T>(&v), &mut out);
                assert!(r.is_err(), "{what}: stream {j} accepted a bad step_mapped");
                assert!(
                    snapshot_of(&main[j]) == before,
                    "{what}: a rejected step_mapped changed stream {j}"
                );
            }
        }
    }
}

impl Ctx<'_> {
    /// `n` grid values times `a`, exact in f32 and f64.
    fn tokens(&mut self, n: usize, a: f64) -> Vec<f64> {
        (0..n)
            .map(|_| f64::from((self.mix.grid() * a) as f32))
            .collect()
    }

    /// Maps `nt` tokens through `fm` and applies them to streams chosen by `pattern`, each
    /// also stepped into its twin with plain `step`. `huge`: the tokens may be refused, and
    /// streams that absorb them leave the range the numeric oracles cover.
    #[allow(clippy::too_many_arguments)]
    fn apply<'w, T: Real, K: Kernels<T>>(
        &mut self,
        kern: &K,
        fm: &Map<'w, T>,
        main: &mut [Stream<'_, T, Map<'w, T>, K>],
        twin: &mut [Stream<'_, T, Map<'w, T>, K>],
        models: &mut [Model],
        nt: usize,
        q: &[f64],
        k: &[f64],
        pattern: u32,
        huge: bool,
        what: &str,
    ) {
        let (d, dv, n) = (self.c.map.d, self.c.dv, main.len());
        let (qt, kt) = (cast::<T>(q), cast::<T>(k));
        let mut scratch = vec![T::zero(); mapped_tokens_len(fm, nt).expect("len")];
        let mapped = match MappedTokens::new(kern, fm, nt, &qt, &kt, &mut scratch) {
            Ok(m) => m,
            Err(e) if huge => {
                assert!(
                    matches!(e, favor_core::Error::OutOfRange { .. }),
                    "{what}: finite tokens refused with {e:?}"
                );
                return;
            }
            Err(e) => panic!("{what}: valid tokens refused: {e}"),
        };
        assert_eq!(mapped.len(), nt, "{what}: len()");
        let mut pm = Mix::new(u64::from(pattern));
        let start = (pm.next_u64() as usize) % n;
        for s in 0..n {
            let j = (start + s) % n;
            if pm.next_u64().is_multiple_of(4) || models[j].k.len() / d >= MAX_TOKENS {
                continue;
            }
            let i = (pm.next_u64() as usize) % nt;
            let v = self.tokens(dv, 4.0);
            let vt = cast::<T>(&v);
            let (qi, ki) = (&qt[i * d..(i + 1) * d], &kt[i * d..(i + 1) * d]);
            let mut out = vec![T::zero(); dv];
            let mut out_t = vec![T::zero(); dv];
            let at = format!("{what} token {i} on stream {j}");
            match main[j].step_mapped(&mapped, i, &vt, &mut out) {
                Ok(()) => {}
                // Huge features: the sums over the keys would leave the supported range. The
                // twin's step checks the same range and must refuse too; neither changed.
                Err(e @ favor_core::Error::OutOfRange { .. }) if huge => {
                    let rt = twin[j].step(qi, ki, &vt, &mut out_t);
                    assert!(
                        matches!(rt, Err(favor_core::Error::OutOfRange { .. })),
                        "{at}: step_mapped refused ({e}), step gave {rt:?}"
                    );
                    continue;
                }
                Err(e) => panic!("{at}: step_mapped: {e}"),
            }
            let rt = twin[j].step(qi, ki, &vt, &mut out_t);
            match rt {
                Ok(()) => {}
                // Mapped with 2·nt rows, the row's features may round differently on a SIMD
                // backend right at the overflow edge; on Scalar the mapping is the same.
                Err(e) if huge && !self.scalar => {
                    assert!(
                        matches!(e, favor_core::Error::OutOfRange { .. }),
                        "{at}: {e:?}"
                    );
                    // The twins part ways: restart both so later comparisons stay meaningful.
                    main[j].reset();
                    twin[j].reset();
                    models[j] = Model::empty();
                    continue;
                }
                Err(e) => panic!("{at}: step refuses what step_mapped took: {e}"),
            }
            let model = &mut models[j];
            model.q.extend(&q[i * d..(i + 1) * d]);
            model.k.extend(&k[i * d..(i + 1) * d]);
            model.v.extend(&v);
            model.known &= !huge;
            self.check(model, &q[i * d..(i + 1) * d], &out, &out_t, &at);
        }
    }

    /// Checks a stream's output `out` for query `q` against its twin's `out_t` and against the
    /// f64 reference over the model's history.
    fn check<T: Real>(&self, model: &Model, q: &[f64], out: &[T], out_t: &[T], what: &str) {
        if self.scalar {
            for (c, (a, b)) in out.iter().zip(out_t).enumerate() {
                assert!(
                    a.bits() == b.bits(),
                    "{what}: out[{c}] = {:e}, step gives {:e}: not bit-identical",
                    a.to64(),
                    b.to64()
                );
            }
        }
        if !model.known {
            return;
        }
        let spec = &self.c.map;
        if self.positive {
            for (c, (a, b)) in out.iter().zip(out_t).enumerate() {
                assert!(
                    a.is_finite() && b.is_finite(),
                    "{what}: out[{c}] = {:e} (step: {:e}): a positive map's output is not finite",
                    a.to64(),
                    b.to64()
                );
            }
        }
        if !spec.kind.positive_softmax() {
            return;
        }
        let dv = self.c.dv;
        let r = favor_reference(
            &explicit(spec, q),
            &explicit(spec, &model.k),
            &model.v,
            dv,
            &RefOpts {
                causal: false,
                key_mask: None,
                normalized: true,
                u: 2.0 * unit::<T>() + unit::<f64>(),
                tiny: T::min_positive_value().to64(),
            },
        );
        for c in 0..dv {
            let (o, want, tol) = (out[c].to64(), r.out[c], r.tol[c]);
            let err = (o - want).abs();
            assert!(
                err <= tol,
                "{what}: out[{c}] = {o:e}, naive f64 FAVOR+ over {} tokens {want:e}, |err| {err:e} > {tol:e}",
                model.k.len() / spec.d
            );
        }
        if !self.scalar && r.tol.iter().all(|t| t.is_finite()) {
            // The `attention` target's bound (scores of M features: γ_{2M}) over the
            // stream's history. It holds while the stabilised denominator stays in the normal
            // range, which the f64 oracle's finite bound makes sure of.
            let bound = backend_bound(
                &spec.w,
                (spec.d, spec.scale()),
                &model.q,
                &model.k,
                2 * spec.features(),
                max_abs(&model.v),
                unit::<T>(),
            );
            for (c, (a, b)) in out.iter().zip(out_t).enumerate() {
                let gap = (a.to64() - b.to64()).abs();
                assert!(
                    gap <= bound,
                    "{what}: out[{c}] = {:e}, step gives {:e}: |diff| {gap:e} > bound {bound:e}",
                    a.to64(),
                    b.to64()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MapKind;

    fn case(kind: MapKind, f64: bool) -> MappedCase {
        use MappedOp::*;
        let (d, m) = (6, 10);
        let mut w = vec![0f64; m * d];
        favor_core::projection(favor_core::ProjectionKind::Iid, 3, m, d, &mut w).unwrap();
        MappedCase {
            f64,
            map: MapSpec {
                kind,
                normalizer: true,
                transposed: true,
                d,
                m,
                eps: 1e-3,
                w: w.iter().map(|&x| f64::from(x as f32)).collect(),
            },
            dv: 3,
            streams: 4,
            seed: 11,
            scale: 0,
            ops: vec![
                Mapped {
                    tokens: 3,
                    pattern: 7,
                    copy: false,
                },
                Snapshot { stream: 1, slot: 0 },
                Step { stream: 1 },
                Mapped {
                    tokens: 7,
                    pattern: 99,
                    copy: true,
                },
                BadStep {
                    what: 4,
                    stream: 2,
                    at: 5,
                },
                BadStep {
                    what: 5,
                    stream: 1,
                    at: 2,
                },
                BadNew {
                    what: 1,
                    at: 13,
                    inf: false,
                },
                Restore { stream: 3, slot: 0 },
                Huge {
                    tokens: 2,
                    pattern: 5,
                    exp: 200,
                },
                Mapped {
                    tokens: 1,
                    pattern: 3,
                    copy: false,
                },
                Reset { stream: 0 },
            ],
        }
    }

    #[test]
    fn every_operation_on_both_precisions() {
        for kind in [
            MapKind::Positive,
            MapKind::Hyperbolic,
            MapKind::Trig,
            MapKind::Generalized {
                act: crate::maps::GenAct::Relu,
                projection: true,
            },
        ] {
            run_case(&case(kind, false));
            run_case(&case(kind, true));
        }
    }
}
