//! Target `stream`: arbitrary interleavings of push / query / step / prefill / snapshot /
//! restore / corrupted restore / reset / rejected non-finite input on a favor-core `Stream`
//! (any backend, f32 or f64, SM+ or SMhyp+), against:
//! - the naive f64 FAVOR+ reference over the tokens the stream should hold (its history:
//!   what was pushed since the last reset, rewound by each restore), within the derived
//!   rounding bound of [`favor_reference`];
//! - `causal_prefix` over the same history, bit for bit, while the backend is Scalar and no
//!   prefill (the chunked path, equal only to rounding) entered the state: favor-core
//!   documents step = push + query bit for bit, and a token loop is exactly that;
//! - structural promises: `tokens()` counts the history, a query before any token gives zeros,
//!   rejected input (NaN/∞, a short snapshot buffer, a corrupted snapshot) leaves the state
//!   bit-identical (its snapshot unchanged), restoring a snapshot reproduces the state bytes.

use arbitrary::{Arbitrary, Result, Unstructured};
use favor_core::{Kernels, Options, Plan, PlanKind, Scalar, Shape, Stream};

use crate::backends::{Visit, nth};
use crate::bounds::{Real, unit};
use crate::input::{Mix, size};
use crate::maps::{Map, MapSpec};
use crate::reference::{RefOpts, explicit, favor_reference};

/// Most tokens a case's history holds (a longer op sequence turns extra tokens into queries).
const MAX_TOKENS: usize = 64;

/// One stream operation.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum StreamOp {
    /// `push(k, v)`.
    Push,
    /// `query(q)`.
    Query,
    /// `step(q, k, v)`.
    Step,
    /// `prefill` of `1 + len % 16` tokens in chunks of `1 + chunk % 20`.
    Prefill {
        /// Token count (mod 16, plus 1).
        len: u8,
        /// Chunk size (mod 20, plus 1).
        chunk: u8,
    },
    /// Snapshot into slot `slot % 4`.
    Snapshot {
        /// Slot.
        slot: u8,
    },
    /// Restore slot `slot % 4` (if filled).
    Restore {
        /// Slot.
        slot: u8,
    },
    /// Restore slot `slot % 4` with byte `at` xor-ed with `xor` (≠ 0).
    Corrupt {
        /// Slot.
        slot: u8,
        /// Byte offset (mod the length).
        at: u16,
        /// Xor mask (0 becomes 1).
        xor: u8,
    },
    /// `reset()`.
    Reset,
    /// A push or step with NaN or ±∞ at element `at` of q, k or v: must be rejected.
    NonFinite {
        /// Which element (mod the combined length of q, k, v).
        at: u8,
        /// ∞ instead of NaN.
        inf: bool,
        /// Through `step` instead of `push`.
        step: bool,
    },
    /// `snapshot` into a buffer `1 + short` bytes too small: must be rejected.
    ShortSnapshot {
        /// How many bytes short, minus one.
        short: u8,
    },
}

/// A stream and the operations applied to it.
#[derive(Debug, Clone)]
pub struct StreamCase {
    /// Run in f64 (else f32).
    pub f64: bool,
    /// Backend index (Scalar first; see [`crate::backends::nth`]).
    pub backend: u8,
    /// The map (SM+ or SMhyp+, d ≤ 16, m ≤ 64).
    pub map: MapSpec,
    /// Value dimension (≤ 8).
    pub dv: usize,
    /// Seed of the token stream.
    pub seed: u64,
    /// Token entries are grid values times 2^scale.
    pub scale: i32,
    /// Block size of the `causal_prefix` comparison.
    pub block: usize,
    /// The operations.
    pub ops: Vec<StreamOp>,
}

impl<'a> Arbitrary<'a> for StreamCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let f64 = u.arbitrary()?;
        let backend = u.arbitrary()?;
        let map = MapSpec::arbitrary(u, 16, 64, true)?;
        let dv = size(u, 1, 8)?;
        let seed = u.arbitrary()?;
        let scale = u.int_in_range(-6..=3)?;
        let block = size(u, 1, 70)?;
        let n = size(u, 1, 40)?;
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            ops.push(StreamOp::arbitrary(u)?);
        }
        Ok(StreamCase {
            f64,
            backend,
            map,
            dv,
            seed,
            scale,
            block,
            ops,
        })
    }
}

/// Decodes a [`StreamCase`] and runs it.
pub fn check_stream(data: &[u8]) {
    let Ok(case) = StreamCase::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    run_case(&case);
}

/// Runs one case on its backend.
pub fn run_case(case: &StreamCase) {
    struct V<'a>(&'a StreamCase, bool);
    impl Visit for V<'_> {
        fn visit<K: Kernels<f32> + Kernels<f64>>(&mut self, k: K) {
            if self.0.f64 {
                run::<f64, K>(k, self.0, self.1);
            } else {
                run::<f32, K>(k, self.0, self.1);
            }
        }
    }
    let i = usize::from(case.backend);
    // Index 0 is Scalar (see `nth`).
    let scalar = i % crate::backends::count() == 0;
    nth(i, &mut V(case, scalar));
}

/// What the state should be: tokens (k, v) since the last reset, and which oracles apply.
#[derive(Debug, Clone)]
struct Model {
    keys: Vec<f64>,
    values: Vec<f64>,
    /// Built by tokens loops only, so `causal_prefix` reproduces it bit for bit.
    exact: bool,
    /// False after a corrupted snapshot was accepted: the state is no longer known.
    known: bool,
}

struct Ctx<'a, 'w, T> {
    map: &'a Map<'w, T>,
    c: &'a StreamCase,
    scalar: bool,
    what: String,
}

fn run<T: Real, K: Kernels<T>>(kern: K, c: &StreamCase, scalar: bool) {
    let (w, wt) = c.map.weights::<T>();
    let map = c.map.build(&w, &wt);
    let (d, dv) = (c.map.d, c.dv);
    let cx = Ctx {
        map: &map,
        c,
        scalar,
        what: format!(
            "{} {} {:?} d={d} m={} dv={dv}",
            Kernels::<T>::name(&kern),
            T::NAME,
            c.map.kind,
            c.map.m
        ),
    };
    let mut buf = vec![T::zero(); Stream::<T, Map<'_, T>, K>::buffer_len(&map, dv).unwrap()];
    let mut s = Stream::new(kern, &map, dv, &mut buf).unwrap();
    let mut mix = Mix::new(c.seed);
    let amp = 2f64.powi(c.scale);
    let mut token = |n: usize, a: f64| -> Vec<f64> {
        (0..n).map(|_| f64::from((mix.grid() * a) as f32)).collect()
    };
    let mut model = Model {
        keys: Vec::new(),
        values: Vec::new(),
        exact: true,
        known: true,
    };
    let mut slots: [Option<(Vec<u8>, Model)>; 4] = Default::default();
    for (step_no, op) in c.ops.iter().enumerate() {
        let what = format!("{} op {step_no} {op:?}", cx.what);
        let full = model.keys.len() / d >= MAX_TOKENS;
        match *op {
            StreamOp::Push if !full => {
                let (k, v) = (token(d, amp), token(dv, 1.0));
                s.push(&cast::<T>(&k), &cast::<T>(&v)).expect("push");
                model.keys.extend(&k);
                model.values.extend(&v);
            }
            StreamOp::Step if !full => {
                let (q, k, v) = (token(d, amp), token(d, amp), token(dv, 1.0));
                let mut out = vec![T::zero(); dv];
                s.step(&cast::<T>(&q), &cast::<T>(&k), &cast::<T>(&v), &mut out)
                    .expect("step");
                model.keys.extend(&k);
                model.values.extend(&v);
                cx.check_output(&model, &q, &out, &what);
            }
            StreamOp::Prefill { len, chunk } if !full => {
                let len = (1 + usize::from(len) % 16).min(MAX_TOKENS - model.keys.len() / d);
                let chunk = 1 + usize::from(chunk) % 20;
                let (q, k, v) = (
                    token(len * d, amp),
                    token(len * d, amp),
                    token(len * dv, 1.0),
                );
                let mut out = vec![T::zero(); len * dv];
                let mut scratch = vec![T::zero(); s.prefill_scratch_len(chunk).unwrap()];
                let (qt, kt, vt) = (cast::<T>(&q), cast::<T>(&k), cast::<T>(&v));
                s.prefill(&qt, &kt, &vt, len, chunk, &mut out, &mut scratch)
                    .expect("prefill");
                model.exact = false;
                for t in 0..len {
                    model.keys.extend(&k[t * d..(t + 1) * d]);
                    model.values.extend(&v[t * dv..(t + 1) * dv]);
                    let o = &out[t * dv..(t + 1) * dv];
                    cx.check_output(&model, &q[t * d..(t + 1) * d], o, &format!("{what} t={t}"));
                }
            }
            StreamOp::Snapshot { slot } => {
                let mut bytes = vec![0u8; s.snapshot_len()];
                assert_eq!(s.snapshot(&mut bytes).expect("snapshot"), bytes.len());
                slots[usize::from(slot) % 4] = Some((bytes, model.clone()));
            }
            StreamOp::Restore { slot } => {
                if let Some((bytes, saved)) = &slots[usize::from(slot) % 4] {
                    s.restore(bytes)
                        .unwrap_or_else(|e| panic!("{what}: own snapshot rejected: {e}"));
                    model = saved.clone();
                    let mut again = vec![0u8; s.snapshot_len()];
                    s.snapshot(&mut again).unwrap();
                    assert!(
                        again == *bytes,
                        "{what}: restore did not reproduce the state"
                    );
                }
            }
            StreamOp::Corrupt { slot, at, xor } => {
                if let Some((bytes, _)) = &slots[usize::from(slot) % 4] {
                    let mut bad = bytes.clone();
                    let i = usize::from(at) % bad.len();
                    bad[i] ^= xor.max(1);
                    let before = snapshot_of(&s);
                    match s.restore(&bad) {
                        Err(_) => assert!(
                            snapshot_of(&s) == before,
                            "{what}: a rejected snapshot changed the state"
                        ),
                        Ok(()) => {
                            // Accepted: header fields it does not check, or payload values.
                            let tokens = u64::from_le_bytes(bad[32..40].try_into().unwrap());
                            assert_eq!(s.tokens(), tokens, "{what}: tokens after restore");
                            model.known = false;
                        }
                    }
                }
            }
            StreamOp::Reset => {
                s.reset();
                model = Model {
                    keys: Vec::new(),
                    values: Vec::new(),
                    exact: true,
                    known: true,
                };
            }
            StreamOp::NonFinite { at, inf, step } => {
                let (mut q, mut k, mut v) = (token(d, amp), token(d, amp), token(dv, 1.0));
                let bad = if inf { f64::INFINITY } else { f64::NAN };
                let i = usize::from(at) % (2 * d + dv);
                match i {
                    i if i < d => q[i] = bad,
                    i if i < 2 * d => k[i - d] = bad,
                    i => v[i - 2 * d] = bad,
                }
                let before = snapshot_of(&s);
                let r = if step {
                    let mut out = vec![T::zero(); dv];
                    s.step(&cast::<T>(&q), &cast::<T>(&k), &cast::<T>(&v), &mut out)
                } else if i < d {
                    s.query(&cast::<T>(&q), &mut vec![T::zero(); dv])
                } else {
                    s.push(&cast::<T>(&k), &cast::<T>(&v))
                };
                assert!(r.is_err(), "{what}: non-finite input accepted");
                assert!(
                    snapshot_of(&s) == before,
                    "{what}: rejected input changed the state"
                );
            }
            StreamOp::ShortSnapshot { short } => {
                let n = s.snapshot_len().saturating_sub(1 + usize::from(short));
                assert!(
                    s.snapshot(&mut vec![0u8; n]).is_err(),
                    "{what}: short buffer"
                );
            }
            // Push / Step / Prefill with a full history, and Query.
            _ => {
                let q = token(d, amp);
                let mut out = vec![T::zero(); dv];
                s.query(&cast::<T>(&q), &mut out).expect("query");
                cx.check_output(&model, &q, &out, &what);
            }
        }
        if model.known {
            assert_eq!(
                s.tokens() as usize,
                model.keys.len() / d,
                "{what}: tokens()"
            );
        }
    }
}

fn cast<T: Real>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

fn snapshot_of<T: Real, K: Kernels<T>>(s: &Stream<'_, T, Map<'_, T>, K>) -> Vec<u8> {
    let mut b = vec![0u8; s.snapshot_len()];
    s.snapshot(&mut b).expect("snapshot");
    b
}

impl<T: Real> Ctx<'_, '_, T> {
    /// Checks the output `out` of query `q` over the model's history.
    fn check_output(&self, model: &Model, q: &[f64], out: &[T], what: &str) {
        if !model.known {
            return;
        }
        let (d, dv) = (self.c.map.d, self.c.dv);
        let n = model.keys.len() / d;
        if n == 0 {
            assert!(
                out.iter().all(|&o| o == T::zero()),
                "{what}: no token yet, not zero"
            );
            return;
        }
        let u = 2.0 * unit::<T>() + unit::<f64>();
        let r = favor_reference(
            &explicit(&self.c.map, q),
            &explicit(&self.c.map, &model.keys),
            &model.values,
            dv,
            &RefOpts {
                causal: false,
                key_mask: None,
                normalized: true,
                u,
                tiny: T::min_positive_value().to64(),
            },
        );
        for j in 0..dv {
            let (o, want, tol) = (out[j].to64(), r.out[j], r.tol[j]);
            assert!(
                o.is_finite() && (o - want).abs() <= tol,
                "{what}: out[{j}] = {o:e}, naive f64 FAVOR+ over {n} tokens {want:e}, |err| {:e} > {tol:e}",
                (o - want).abs()
            );
        }
        if self.scalar && model.exact {
            // The same tokens through the token loop, the query in the last position.
            let mut qs = vec![T::zero(); n * d];
            qs[(n - 1) * d..].copy_from_slice(&cast::<T>(q));
            let o = Options {
                block: self.c.block,
                ..Default::default()
            };
            let plan = Plan::new(
                PlanKind::CausalPrefix,
                Scalar,
                self.map,
                Shape::new(n, d, dv),
                o,
            )
            .expect("causal_prefix");
            let mut scratch = vec![T::zero(); plan.scratch_len()];
            let mut want = vec![T::zero(); n * dv];
            plan.run(
                &qs,
                &cast::<T>(&model.keys),
                &cast::<T>(&model.values),
                &mut want,
                &mut scratch,
            )
            .expect("causal_prefix");
            for j in 0..dv {
                let w = want[(n - 1) * dv + j];
                assert!(
                    out[j].bits() == w.bits(),
                    "{what}: out[{j}] = {:e}, causal_prefix {:e}: not bit-identical",
                    out[j].to64(),
                    w.to64()
                );
            }
        }
    }
}
