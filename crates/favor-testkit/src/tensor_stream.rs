//! Target `tensor_stream`: a favor-tensor `Stream` over 1–3 sequences × 1–4 heads (any
//! kernel, projection, precision, backend, chunk size; inputs of every element type) driven by
//! an arbitrary sequence of prefills, steps, snapshots, restores (genuine, corrupted,
//! truncated, extended, or written for another layer or batch), round trips through a
//! compatible layer, resets and rejected calls (wrong shapes, NaN/∞ in one head, values outside
//! the supported range, a wrong output buffer). Only documented behaviour is checked, never
//! a byte layout:
//!
//! (a) every output lies within the derived rounding bound of naive f64 FAVOR+ over the tokens
//!     the stream holds (softmax and hyperbolic kernels: [`favor_reference`]; ReLU and |·| with
//!     ε > 0: [`crate::lipschitz`]), and so does causal `Performer::forward` over the same
//!     history, so the two agree within the sum of their bounds. A prefill into an empty stream
//!     is bit-identical to that forward (`Stream::prefill`: "the same bits as causal
//!     `Performer::forward` on those tokens from an empty stream").
//! (b) restoring a snapshot and repeating the calls that followed it gives the same outputs
//!     bit for bit (README: "snapshot → restore → continue equals an uninterrupted stream, bit
//!     for bit"), into the same stream or a fresh one; so does a round trip through a stream
//!     of a compatible layer (other backend and chunk size: "the same layer (projection,
//!     kernel, dims, precision) and batch").
//! (c) every `Err` leaves the stream unchanged ("nothing changes on error"): a twin stream of
//!     the same layer with `parallel` flipped (documented bit-identical) receives only the
//!     calls that succeed, and the two agree bit for bit in every output, token count and
//!     snapshot. Errors say what the docs promise: shape errors name the tensor, NaN/∞ name
//!     batch, head and row, out-of-range values are `OutOfRange` for that tensor, and a
//!     snapshot written for another batch or layer is `Error::Snapshot`.
//! (d) no call panics; while the state is known, outputs are finite for every kernel but the
//!     trigonometric one ("within it, outputs are finite"), `tokens()` counts the history,
//!     and `memory_bytes()` never changes.

use arbitrary::{Arbitrary, Result, Unstructured};
use favor_tensor::{
    Backend, Element, Error, Kernel, Performer, PerformerBuilder, Precision, Projection, RowNorms,
    Stream, TensorView, bf16, f16,
};

use crate::bounds::unit;
use crate::input::{Mix, size};
use crate::lipschitz::{covered, lip_features, lip_reference};
use crate::maps::{GenAct, MapKind, MapSpec};
use crate::reference::{RefOpts, explicit, favor_reference};

/// Most tokens a known history holds (calls that would exceed it are skipped).
const MAX_TOKENS: usize = 32;
/// Most tokens in one prefill.
const MAX_PREFILL: usize = 8;

/// Element type of a call's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Elem {
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `f16`.
    F16,
    /// `bf16`.
    Bf16,
}

/// Which tensor of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Which {
    /// Queries.
    Q,
    /// Keys.
    K,
    /// Values.
    V,
}

/// One operation on the stream.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum TensorOp {
    /// `prefill` of `1 + len % 8` tokens.
    Prefill {
        /// Tokens (mod 8, plus 1).
        len: u8,
        /// Input element type.
        elem: Elem,
    },
    /// `step`, or `step_into` a caller buffer.
    Step {
        /// Input element type.
        elem: Elem,
        /// Through `step_into`.
        into: bool,
    },
    /// Snapshot into slot `slot % 4`.
    Snapshot {
        /// Slot.
        slot: u8,
    },
    /// Restore slot `slot % 4` (into a fresh stream if `fresh`), then repeat the calls that
    /// followed its snapshot: all of them if `replay` is even, else `(replay / 2) % (n + 1)`.
    Restore {
        /// Slot.
        slot: u8,
        /// How many logged calls to repeat.
        replay: u8,
        /// Restore into a new stream of the layer.
        fresh: bool,
    },
    /// Restore slot `slot % 4` with byte `at` xor-ed with `xor` (0 becomes 1).
    Corrupt {
        /// Slot.
        slot: u8,
        /// Byte offset (mod the length).
        at: u16,
        /// Xor mask.
        xor: u8,
    },
    /// Restore slot `slot % 4` cut to `keep % len` bytes, or with `1 + keep % 16` bytes
    /// appended: must be rejected.
    Truncate {
        /// Slot.
        slot: u8,
        /// Bytes kept, or appended.
        keep: u16,
        /// Append instead of cutting.
        extend: bool,
    },
    /// Restore a snapshot written for another batch size or layer: must be rejected.
    Foreign {
        /// Which difference (mod 8).
        which: u8,
    },
    /// Snapshot, restore into a stream of a compatible layer (other backend and chunk),
    /// snapshot that and restore it back: nothing may change.
    RoundTrip,
    /// `reset()`.
    Reset,
    /// A prefill or step with NaN or ±∞ at one element: must be rejected, naming the batch,
    /// head and row.
    NonFinite {
        /// Through prefill (of `1 + len % 8` tokens) instead of step.
        prefill: bool,
        /// Tokens of the prefill.
        len: u8,
        /// Which tensor.
        which: Which,
        /// Element index (mod the tensor's length).
        at: u16,
        /// ±∞ instead of NaN.
        inf: bool,
        /// Input element type.
        elem: Elem,
    },
    /// A prefill or step with one tensor's dimension `dim % 4` one larger or smaller: must be
    /// rejected, naming that tensor.
    Shape {
        /// Through prefill instead of step.
        prefill: bool,
        /// Tokens of the prefill.
        len: u8,
        /// Which tensor.
        which: Which,
        /// Which dimension (mod 4).
        dim: u8,
        /// One larger (else smaller).
        grow: bool,
    },
    /// A prefill or step with one f64 element of ±10²⁰⁰: outside the supported range in both
    /// precisions, must be `OutOfRange` for that tensor.
    OutOfRange {
        /// Through prefill instead of step.
        prefill: bool,
        /// Tokens of the prefill.
        len: u8,
        /// Which tensor.
        which: Which,
        /// Element index.
        at: u16,
    },
    /// `step_into` a buffer one element longer or shorter than `B·H·dv`: must be rejected.
    WrongOut {
        /// Longer (else shorter).
        longer: bool,
    },
}

/// A layer, a batch size and the operations applied to its stream.
#[derive(Debug, Clone)]
pub struct TensorStreamCase {
    /// Heads H (1–4).
    pub heads: usize,
    /// Sequences B (1–3).
    pub batch: usize,
    /// Head dimension d (1–32).
    pub dim: usize,
    /// Projection rows m (1–64; d without a projection).
    pub features: usize,
    /// Value dimension dv (1–8).
    pub value_dim: usize,
    /// The kernel.
    pub kernel: Kernel,
    /// How W is drawn.
    pub projection: Projection,
    /// The d^(-1/4) data normaliser.
    pub normalizer: bool,
    /// ε of the generalized kernels.
    pub epsilon: f64,
    /// Chunk size of prefills (1–20, or the default 64).
    pub chunk: usize,
    /// Accumulation precision.
    pub precision: Precision,
    /// Kernels backend.
    pub backend: Backend,
    /// Heads in parallel (the twin stream runs the other way).
    pub parallel: bool,
    /// Seed of W.
    pub seed: u64,
    /// Seed of the tokens.
    pub data_seed: u64,
    /// q and k entries are 8-bit grid values times 2^scale (−6..=3).
    pub scale: i32,
    /// v entries are 8-bit grid values times 2^vscale (−4..=4).
    pub vscale: i32,
    /// The operations.
    pub ops: Vec<TensorOp>,
}

impl<'a> Arbitrary<'a> for TensorStreamCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let heads = size(u, 1, 4)?;
        let batch = size(u, 1, 3)?;
        let dim = size(u, 1, 32)?;
        let value_dim = size(u, 1, 8)?;
        let kernel = match u.int_in_range(0u8..=11)? {
            0..=3 => Kernel::Softmax,
            4..=5 => Kernel::Hyperbolic,
            6..=8 => Kernel::Relu,
            9 => Kernel::Abs,
            10 => Kernel::Trigonometric,
            _ => match u.int_in_range(0u8..=2)? {
                0 => Kernel::EluPlusOne,
                1 => Kernel::Exp,
                _ => Kernel::Square,
            },
        };
        let projection = match u.int_in_range(0u8..=7)? {
            7 if !kernel.is_softmax() => Projection::None,
            0..=3 => Projection::Orthogonal(RowNorms::Chi),
            4..=5 => Projection::Orthogonal(RowNorms::SqrtD),
            _ => Projection::Iid,
        };
        let features = if projection == Projection::None {
            dim
        } else {
            size(u, 1, 64)?
        };
        let normalizer = if kernel.is_softmax() {
            u.ratio(7, 8)?
        } else {
            u.ratio(1, 4)?
        };
        let epsilon = [1e-3, 0.0625, 1.0, 0.0][usize::from(u.int_in_range(0u8..=3)?)];
        let chunk = if u.ratio(1, 8)? {
            favor_tensor::DEFAULT_CHUNK
        } else {
            size(u, 1, 20)?
        };
        let precision = if u.ratio(1, 3)? {
            Precision::F64
        } else {
            Precision::F32
        };
        let backend = if u.arbitrary()? {
            Backend::Scalar
        } else {
            Backend::Detected
        };
        let parallel = u.arbitrary()?;
        let seed = u.arbitrary()?;
        let data_seed = u.arbitrary()?;
        let scale = u.int_in_range(-6..=3)?;
        let vscale = u.int_in_range(-4..=4)?;
        let n = size(u, 1, 24)?;
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            ops.push(TensorOp::arbitrary(u)?);
        }
        Ok(TensorStreamCase {
            heads,
            batch,
            dim,
            features,
            value_dim,
            kernel,
            projection,
            normalizer,
            epsilon,
            chunk,
            precision,
            backend,
            parallel,
            seed,
            data_seed,
            scale,
            vscale,
            ops,
        })
    }
}

impl TensorStreamCase {
    /// The layer's builder.
    pub fn builder(&self) -> PerformerBuilder {
        let b = Performer::builder(self.dim)
            .heads(self.heads)
            .value_dim(self.value_dim)
            .kernel(self.kernel)
            .projection(self.projection)
            .seed(self.seed)
            .data_normalizer(self.normalizer)
            .epsilon(self.epsilon)
            .causal(true)
            .chunk(self.chunk)
            .precision(self.precision)
            .backend(self.backend)
            .parallel(self.parallel);
        if self.projection == Projection::None {
            b
        } else {
            b.features(self.features)
        }
    }
}

/// Decodes a [`TensorStreamCase`] and runs it.
pub fn check_tensor_stream(data: &[u8]) {
    let Ok(case) = TensorStreamCase::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    run_case(&case);
}

/// Rounds an f64 input value into an element type (every value this target feeds is exact in
/// f16, bf16 and f32, except the deliberate ±10²⁰⁰).
trait FromF64: Element {
    fn from64(x: f64) -> Self;
}
impl FromF64 for f32 {
    fn from64(x: f64) -> Self {
        x as f32
    }
}
impl FromF64 for f64 {
    fn from64(x: f64) -> Self {
        x
    }
}
impl FromF64 for f16 {
    fn from64(x: f64) -> Self {
        f16::from_f64(x)
    }
}
impl FromF64 for bf16 {
    fn from64(x: f64) -> Self {
        bf16::from_f64(x)
    }
}

/// One prefill or step: its inputs, laid out `[B, H, len, ·]` with each tensor's own shape.
#[derive(Debug, Clone)]
struct Call {
    step: bool,
    /// `step_into` a buffer of this many elements.
    into: Option<usize>,
    elem: Elem,
    shapes: [[usize; 4]; 3],
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
}

impl Call {
    fn len(&self) -> usize {
        self.shapes[0][2]
    }

    fn exec(&self, s: &mut Stream) -> favor_tensor::Result<Vec<f32>> {
        match self.elem {
            Elem::F32 => self.exec_in::<f32>(s),
            Elem::F64 => self.exec_in::<f64>(s),
            Elem::F16 => self.exec_in::<f16>(s),
            Elem::Bf16 => self.exec_in::<bf16>(s),
        }
    }

    fn exec_in<E: FromF64>(&self, s: &mut Stream) -> favor_tensor::Result<Vec<f32>> {
        let conv = |x: &[f64]| x.iter().map(|&a| E::from64(a)).collect::<Vec<E>>();
        let (q, k, v) = (conv(&self.q), conv(&self.k), conv(&self.v));
        let q = TensorView::new(self.shapes[0], &q).expect("consistent call");
        let k = TensorView::new(self.shapes[1], &k).expect("consistent call");
        let v = TensorView::new(self.shapes[2], &v).expect("consistent call");
        if let Some(n) = self.into {
            let mut out = vec![f32::NAN; n];
            s.step_into(q, k, v, &mut out)?;
            Ok(out)
        } else if self.step {
            Ok(s.step(q, k, v)?.into_vec())
        } else {
            Ok(s.prefill(q, k, v)?.into_vec())
        }
    }

    fn forward(&self, p: &mut Performer) -> favor_tensor::Result<Vec<f32>> {
        let conv = |x: &[f64]| x.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (q, k, v) = (conv(&self.q), conv(&self.k), conv(&self.v));
        let q = TensorView::new(self.shapes[0], &q).expect("consistent call");
        let k = TensorView::new(self.shapes[1], &k).expect("consistent call");
        let v = TensorView::new(self.shapes[2], &v).expect("consistent call");
        Ok(p.forward(q, k, v)?.into_vec())
    }
}

/// One token of every (batch, head): `B·H` rows of q and k (d) and of v (dv).
#[derive(Debug, Clone)]
struct Token {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
}

/// What the state should hold: the tokens since the last reset, rewound by restores.
#[derive(Debug, Clone)]
struct Model {
    tokens: Vec<Token>,
    /// False after a corrupted snapshot was accepted: the state is no longer known.
    known: bool,
}

impl Model {
    fn empty() -> Self {
        Model {
            tokens: Vec::new(),
            known: true,
        }
    }
}

/// A successful call after a snapshot, with its outputs (for the replay oracle).
#[derive(Debug, Clone)]
struct Logged {
    call: Call,
    out: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Slot {
    bytes: Vec<u8>,
    model: Model,
    /// The calls that followed the snapshot on the stream's current line.
    log: Vec<Logged>,
    /// Whether the stream's state still descends from this snapshot through `log`.
    live: bool,
}

/// Which f64 oracle bounds the outputs.
enum Numeric {
    /// Softmax or hyperbolic: [`favor_reference`].
    Softmax,
    /// ReLU or |·| with ε_T ≥ 10⁻³: [`crate::lipschitz`].
    Lipschitz,
    /// None (documented structure only).
    None,
}

struct Ctx<'a> {
    c: &'a TensorStreamCase,
    /// The map as the oracles see it: W and ε exactly as the layer's precision holds them.
    spec: MapSpec,
    numeric: Numeric,
    /// Unit roundoff of the bounds: 2u_T + u_f64 (see [`favor_reference`]).
    u: f64,
    /// Smallest normal number of the compute type.
    tiny: f64,
    /// Outputs are computed in f64 and rounded to f32.
    narrowed: bool,
    rows: usize,
    mix: Mix,
}

/// Runs one case.
pub fn run_case(c: &TensorStreamCase) {
    let p = c.builder().build().expect("a valid configuration builds");
    let twin_p = c
        .builder()
        .parallel(!c.parallel)
        .build()
        .expect("the twin layer builds");
    let mut fwd = p.clone();
    let mut cx = Ctx::new(c, &p);
    let what0 = format!(
        "B={} H={} d={} m={} dv={} {:?} {:?} norm={} eps={} chunk={} {:?} {:?} parallel={}",
        c.batch,
        c.heads,
        c.dim,
        c.features,
        c.value_dim,
        c.kernel,
        c.projection,
        c.normalizer,
        c.epsilon,
        c.chunk,
        c.precision,
        c.backend,
        c.parallel
    );
    let mut main = p.stream(c.batch).expect("stream");
    let mut twin = twin_p.stream(c.batch).expect("twin stream");
    let memory = main.memory_bytes();
    let mut model = Model::empty();
    let mut slots: [Option<Slot>; 4] = Default::default();
    for (no, op) in c.ops.iter().enumerate() {
        let what = format!("{what0}: op {no} {op:?}");
        let room = if model.known {
            MAX_TOKENS - model.tokens.len()
        } else {
            MAX_PREFILL
        };
        match *op {
            TensorOp::Prefill { len, elem } if room > 0 => {
                let len = (1 + usize::from(len) % MAX_PREFILL).min(room);
                let call = cx.call(false, len, elem);
                cx.good_call(
                    &call, &mut main, &mut twin, &mut model, &mut slots, &mut fwd, &what,
                );
            }
            TensorOp::Step { elem, into } if room > 0 => {
                let mut call = cx.call(true, 1, elem);
                if into {
                    call.into = Some(cx.rows * c.value_dim);
                }
                cx.good_call(
                    &call, &mut main, &mut twin, &mut model, &mut slots, &mut fwd, &what,
                );
            }
            TensorOp::Prefill { .. } | TensorOp::Step { .. } => {}
            TensorOp::Snapshot { slot } => {
                let bytes = main.snapshot().expect("snapshot");
                assert!(
                    bytes == twin.snapshot().expect("twin snapshot"),
                    "{what}: the twin's state differs"
                );
                slots[usize::from(slot) % 4] = Some(Slot {
                    bytes,
                    model: model.clone(),
                    log: Vec::new(),
                    live: true,
                });
            }
            TensorOp::Restore {
                slot,
                replay,
                fresh,
            } => {
                let i = usize::from(slot) % 4;
                let Some(s) = &slots[i] else { continue };
                let bytes = s.bytes.clone();
                let n = if replay % 2 == 0 {
                    s.log.len()
                } else {
                    usize::from(replay / 2) % (s.log.len() + 1)
                };
                let log = s.log[..n].to_vec();
                model = s.model.clone();
                if fresh {
                    main = p.stream(c.batch).expect("stream");
                }
                if let Err(e) = main.restore(&bytes) {
                    panic!("{what}: own snapshot rejected: {e}");
                }
                twin.restore(&bytes)
                    .unwrap_or_else(|e| panic!("{what}: own snapshot rejected by the twin: {e}"));
                for (j, l) in log.iter().enumerate() {
                    let out = l.call.exec(&mut main).unwrap_or_else(|e| {
                        panic!("{what}: repeating call {j} after the restore: {e}")
                    });
                    same_bits(
                        &out,
                        &l.out,
                        &format!("{what}: repeated call {j} after restore"),
                    );
                    let out_t = l.call.exec(&mut twin).expect("twin repeats the call");
                    same_bits(&out_t, &l.out, &format!("{what}: twin, repeated call {j}"));
                    if model.known {
                        model.tokens.extend(cx.tokens_of(&l.call));
                    }
                }
                for (k, other) in slots.iter_mut().enumerate() {
                    if let Some(o) = other {
                        if k == i {
                            o.log.truncate(n);
                            o.live = true;
                        } else {
                            o.live = false;
                        }
                    }
                }
            }
            TensorOp::Corrupt { slot, at, xor } => {
                let Some(s) = &slots[usize::from(slot) % 4] else {
                    continue;
                };
                let mut bad = s.bytes.clone();
                let i = usize::from(at) % bad.len();
                bad[i] ^= xor.max(1);
                match main.restore(&bad) {
                    Err(e) => {
                        assert!(
                            matches!(e, Error::Snapshot(_)),
                            "{what}: rejected with {e:?}"
                        );
                        unchanged(&main, &twin, &what);
                    }
                    Ok(()) => {
                        twin.restore(&bad).unwrap_or_else(|e| {
                            panic!("{what}: accepted by the stream, rejected by the twin: {e}")
                        });
                        model = Model {
                            tokens: Vec::new(),
                            known: false,
                        };
                        slots.iter_mut().flatten().for_each(|s| s.live = false);
                    }
                }
            }
            TensorOp::Truncate { slot, keep, extend } => {
                let Some(s) = &slots[usize::from(slot) % 4] else {
                    continue;
                };
                let mut bad = s.bytes.clone();
                if extend {
                    let n = 1 + usize::from(keep) % 16;
                    bad.extend(std::iter::repeat_n((keep >> 4) as u8, n));
                } else {
                    bad.truncate(usize::from(keep) % bad.len());
                }
                let e = main
                    .restore(&bad)
                    .expect_err(&format!("{what}: {} bytes accepted", bad.len()));
                assert!(matches!(e, Error::Snapshot(_)), "{what}: {e:?}");
                unchanged(&main, &twin, &what);
            }
            TensorOp::Foreign { which } => {
                let (other, batch, how) = foreign(c, which);
                let bytes = {
                    let mut s = other.stream(batch).expect("foreign stream");
                    let (h, d, dv) = (other.heads(), other.dim(), other.value_dim());
                    let x: Vec<f32> = (0..batch * h * d.max(dv))
                        .map(|i| (i % 7) as f32 * 0.125 - 0.375)
                        .collect();
                    s.step(
                        TensorView::new([batch, h, 1, d], &x[..batch * h * d]).unwrap(),
                        TensorView::new([batch, h, 1, d], &x[..batch * h * d]).unwrap(),
                        TensorView::new([batch, h, 1, dv], &x[..batch * h * dv]).unwrap(),
                    )
                    .expect("foreign step");
                    s.snapshot().expect("foreign snapshot")
                };
                let e = main
                    .restore(&bytes)
                    .expect_err(&format!("{what}: a snapshot of {how} was accepted"));
                assert!(matches!(e, Error::Snapshot(_)), "{what}: {how}: {e:?}");
                unchanged(&main, &twin, &what);
            }
            TensorOp::RoundTrip => {
                let other = c
                    .builder()
                    .backend(match c.backend {
                        Backend::Scalar => Backend::Detected,
                        _ => Backend::Scalar,
                    })
                    .chunk(c.chunk % 20 + 1)
                    .build()
                    .expect("compatible layer");
                let bytes = main.snapshot().expect("snapshot");
                let mut s = other.stream(c.batch).expect("stream");
                if let Err(e) = s.restore(&bytes) {
                    panic!("{what}: a compatible layer rejects: {e}");
                }
                assert_eq!(s.tokens(), main.tokens(), "{what}: tokens after restore");
                let back = s.snapshot().expect("snapshot");
                main.restore(&back)
                    .unwrap_or_else(|e| panic!("{what}: the round trip is rejected: {e}"));
                // The twin did not take the trip: every later comparison checks it lost nothing.
                unchanged(&main, &twin, &what);
            }
            TensorOp::Reset => {
                main.reset();
                twin.reset();
                model = Model::empty();
                slots.iter_mut().flatten().for_each(|s| s.live = false);
            }
            TensorOp::NonFinite {
                prefill,
                len,
                which,
                at,
                inf,
                elem,
            } => {
                let len = if prefill {
                    1 + usize::from(len) % MAX_PREFILL
                } else {
                    1
                };
                let mut call = cx.call(!prefill, len, elem);
                let bad = if inf {
                    if at % 2 == 0 {
                        f64::INFINITY
                    } else {
                        f64::NEG_INFINITY
                    }
                } else {
                    f64::NAN
                };
                let (x, width) = match which {
                    Which::Q => (&mut call.q, c.dim),
                    Which::K => (&mut call.k, c.dim),
                    Which::V => (&mut call.v, c.value_dim),
                };
                let i = usize::from(at) % x.len();
                x[i] = bad;
                let row = i / width;
                let (flat, t) = (row / len, row % len);
                let e = call
                    .exec(&mut main)
                    .expect_err(&format!("{what}: non-finite input accepted"));
                if model.known {
                    let ok = matches!(
                        e,
                        Error::Core {
                            batch,
                            head: h,
                            source: favor_core::Error::NonFinite { row, .. },
                        } if batch == flat / c.heads && h == flat % c.heads && row == t
                    );
                    assert!(
                        ok,
                        "{what}: expected NonFinite at batch {}, head {}, row {t}, got {e:?}",
                        flat / c.heads,
                        flat % c.heads
                    );
                }
                unchanged(&main, &twin, &what);
            }
            TensorOp::Shape {
                prefill,
                len,
                which,
                dim,
                grow,
            } => {
                let len = if prefill {
                    1 + usize::from(len) % MAX_PREFILL
                } else {
                    1
                };
                let dim = usize::from(dim) % 4;
                let mut call = cx.call(!prefill, len, Elem::F32);
                let t = which as usize;
                let mut shape = call.shapes[t];
                shape[dim] = if grow { shape[dim] + 1 } else { shape[dim] - 1 };
                call.shapes[t] = shape;
                let n: usize = shape.iter().product();
                let mut fill = |x: &mut Vec<f64>| {
                    x.clear();
                    x.extend((0..n).map(|_| cx.mix.grid()));
                };
                match which {
                    Which::Q => fill(&mut call.q),
                    Which::K => fill(&mut call.k),
                    Which::V => fill(&mut call.v),
                }
                // A prefill takes its length from q, so a q of another non-zero length
                // makes k the mismatch.
                let named = if prefill && which == Which::Q && dim == 2 && shape[2] > 0 {
                    "k"
                } else {
                    ["q", "k", "v"][t]
                };
                let e = call
                    .exec(&mut main)
                    .expect_err(&format!("{what}: shape {shape:?} accepted"));
                assert!(
                    matches!(e, Error::Shape { tensor, .. } if tensor == named),
                    "{what}: expected a shape error naming {named}, got {e:?}"
                );
                unchanged(&main, &twin, &what);
            }
            TensorOp::OutOfRange {
                prefill,
                len,
                which,
                at,
            } => {
                let len = if prefill {
                    1 + usize::from(len) % MAX_PREFILL
                } else {
                    1
                };
                let mut call = cx.call(!prefill, len, Elem::F64);
                let x = match which {
                    Which::Q => &mut call.q,
                    Which::K => &mut call.k,
                    Which::V => &mut call.v,
                };
                let i = usize::from(at) % x.len();
                x[i] = if at % 2 == 0 { 1e200 } else { -1e200 };
                let e = call
                    .exec(&mut main)
                    .expect_err(&format!("{what}: 1e200 accepted"));
                let named = ["q", "k", "v"][which as usize];
                if model.known {
                    assert!(
                        matches!(e, Error::OutOfRange { tensor, .. } if tensor == named),
                        "{what}: expected OutOfRange naming {named}, got {e:?}"
                    );
                }
                unchanged(&main, &twin, &what);
            }
            TensorOp::WrongOut { longer } => {
                let mut call = cx.call(true, 1, Elem::F32);
                let n = cx.rows * c.value_dim;
                call.into = Some(if longer { n + 1 } else { n - 1 });
                let e = call
                    .exec(&mut main)
                    .expect_err(&format!("{what}: wrong output length accepted"));
                if model.known {
                    assert!(
                        matches!(e, Error::Shape { tensor: "out", .. }),
                        "{what}: expected a shape error naming out, got {e:?}"
                    );
                }
                unchanged(&main, &twin, &what);
            }
        }
        assert_eq!(main.memory_bytes(), memory, "{what}: memory_bytes changed");
        assert_eq!(main.tokens(), twin.tokens(), "{what}: tokens() of the twin");
        if model.known {
            assert_eq!(
                main.tokens(),
                model.tokens.len() as u64,
                "{what}: tokens() disagrees with the history"
            );
        }
    }
}

/// A layer or batch whose snapshots this stream must refuse, and what differs.
fn foreign(c: &TensorStreamCase, which: u8) -> (Performer, usize, &'static str) {
    let b = c.builder();
    let (builder, batch, how) = match which % 8 {
        0 => (b, c.batch % 3 + 1, "another batch size"),
        1 => (b.heads(c.heads % 4 + 1), c.batch, "another head count"),
        2 => (
            b.precision(match c.precision {
                Precision::F32 => Precision::F64,
                _ => Precision::F32,
            }),
            c.batch,
            "another precision",
        ),
        3 if c.projection == Projection::None => {
            (b.epsilon(c.epsilon + 1.0), c.batch, "another epsilon")
        }
        3 => (b.seed(c.seed ^ 1), c.batch, "another projection"),
        4 => {
            let k = match c.kernel {
                Kernel::Relu => Kernel::Abs,
                Kernel::Softmax => Kernel::Hyperbolic,
                k if k.is_softmax() => Kernel::Softmax,
                _ => Kernel::Relu,
            };
            (b.kernel(k), c.batch, "another kernel")
        }
        5 => (
            b.value_dim(c.value_dim % 8 + 1),
            c.batch,
            "another value dimension",
        ),
        6 => {
            let other = TensorStreamCase {
                dim: c.dim % 32 + 1,
                // Without a projection m follows d.
                features: if c.projection == Projection::None {
                    c.dim % 32 + 1
                } else {
                    c.features
                },
                ops: Vec::new(),
                ..c.clone()
            };
            (other.builder(), c.batch, "another head dimension")
        }
        _ => (
            b.data_normalizer(!c.normalizer),
            c.batch,
            "the other data normaliser",
        ),
    };
    (
        builder.build().expect("the foreign layer builds"),
        batch,
        how,
    )
}

/// The twin received only the calls that succeeded: a rejected call left nothing behind.
fn unchanged(main: &Stream, twin: &Stream, what: &str) {
    assert_eq!(main.tokens(), twin.tokens(), "{what}: tokens() changed");
    assert!(
        main.snapshot().expect("snapshot") == twin.snapshot().expect("twin snapshot"),
        "{what}: the state changed"
    );
}

fn same_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: output length");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits(),
            "{what}: output {i} = {x:e} vs {y:e}: not bit-identical"
        );
    }
}

impl<'a> Ctx<'a> {
    fn new(c: &'a TensorStreamCase, p: &Performer) -> Self {
        let f64p = c.precision == Precision::F64;
        let (u, tiny, eps_t) = if f64p {
            (3.0 * unit::<f64>(), f64::MIN_POSITIVE, c.epsilon)
        } else {
            (
                2.0 * unit::<f32>() + unit::<f64>(),
                f64::from(f32::MIN_POSITIVE),
                f64::from(c.epsilon as f32),
            )
        };
        let (d, m) = (c.dim, p.features());
        let kind = match c.kernel {
            Kernel::Softmax => MapKind::Positive,
            Kernel::Hyperbolic => MapKind::Hyperbolic,
            Kernel::Trigonometric => MapKind::Trig,
            k => MapKind::Generalized {
                act: match k {
                    Kernel::Relu => GenAct::Relu,
                    Kernel::Abs => GenAct::Abs,
                    Kernel::EluPlusOne => GenAct::EluPlusOne,
                    Kernel::Exp => GenAct::Exp,
                    _ => GenAct::Square,
                },
                projection: c.projection != Projection::None,
            },
        };
        let w: Vec<f64> = if c.projection == Projection::None {
            Vec::new()
        } else if f64p {
            p.projection_f64().to_vec()
        } else {
            p.projection_f32().iter().map(|&x| f64::from(x)).collect()
        };
        let spec = MapSpec {
            kind,
            normalizer: c.normalizer,
            transposed: true,
            d,
            m,
            eps: eps_t,
            w,
        };
        let numeric = if kind.positive_softmax() {
            Numeric::Softmax
        } else if covered(&spec) {
            Numeric::Lipschitz
        } else {
            Numeric::None
        };
        Ctx {
            c,
            spec,
            numeric,
            u,
            tiny,
            narrowed: f64p,
            rows: c.batch * c.heads,
            mix: Mix::new(c.data_seed),
        }
    }

    /// A point of the 8-bit grid {k/128 : −128 ≤ k < 128} times 2^e: exact in every element
    /// type, so all element types feed the same values.
    fn value(&mut self, e: i32) -> f64 {
        f64::from((self.mix.next_u64() >> 56) as u8 as i8) / 128.0 * 2f64.powi(e)
    }

    /// A valid call of `len` tokens.
    fn call(&mut self, step: bool, len: usize, elem: Elem) -> Call {
        let (r, d, dv) = (self.rows, self.c.dim, self.c.value_dim);
        let (s, vs) = (self.c.scale, self.c.vscale);
        let q = (0..r * len * d).map(|_| self.value(s)).collect();
        let k = (0..r * len * d).map(|_| self.value(s)).collect();
        let v = (0..r * len * dv).map(|_| self.value(vs)).collect();
        let (b, h) = (self.c.batch, self.c.heads);
        Call {
            step,
            into: None,
            elem,
            shapes: [[b, h, len, d], [b, h, len, d], [b, h, len, dv]],
            q,
            k,
            v,
        }
    }

    /// The call's tokens, in history order.
    fn tokens_of(&self, call: &Call) -> Vec<Token> {
        let (len, d, dv) = (call.len(), self.c.dim, self.c.value_dim);
        (0..len)
            .map(|t| {
                let mut tok = Token {
                    q: Vec::with_capacity(self.rows * d),
                    k: Vec::with_capacity(self.rows * d),
                    v: Vec::with_capacity(self.rows * dv),
                };
                for i in 0..self.rows {
                    let r = (i * len + t) * d;
                    tok.q.extend(&call.q[r..r + d]);
                    tok.k.extend(&call.k[r..r + d]);
                    let r = (i * len + t) * dv;
                    tok.v.extend(&call.v[r..r + dv]);
                }
                tok
            })
            .collect()
    }

    /// The whole history as one causal call.
    fn history_call(&self, tokens: &[Token]) -> Call {
        let (n, d, dv) = (tokens.len(), self.c.dim, self.c.value_dim);
        let (b, h) = (self.c.batch, self.c.heads);
        let gather = |f: fn(&Token) -> &Vec<f64>, w: usize| -> Vec<f64> {
            let mut out = Vec::with_capacity(self.rows * n * w);
            for i in 0..self.rows {
                for t in tokens {
                    out.extend(&f(t)[i * w..(i + 1) * w]);
                }
            }
            out
        };
        Call {
            step: false,
            into: None,
            elem: Elem::F32,
            shapes: [[b, h, n, d], [b, h, n, d], [b, h, n, dv]],
            q: gather(|t| &t.q, d),
            k: gather(|t| &t.k, d),
            v: gather(|t| &t.v, dv),
        }
    }

    /// A call that must succeed (on a known state): run it on the stream and its twin, log
    /// it for the slots whose line it continues, and check its outputs.
    #[allow(clippy::too_many_arguments)]
    fn good_call(
        &self,
        call: &Call,
        main: &mut Stream,
        twin: &mut Stream,
        model: &mut Model,
        slots: &mut [Option<Slot>; 4],
        fwd: &mut Performer,
        what: &str,
    ) {
        let r = call.exec(main);
        let rt = call.exec(twin);
        let out = match (r, rt) {
            (Ok(a), Ok(b)) => {
                same_bits(&a, &b, &format!("{what}: stream vs twin"));
                a
            }
            (Err(a), Err(b)) if !model.known => {
                // An accepted corrupted snapshot may hold a token count the next call
                // overflows: then both refuse, alike.
                assert_eq!(a, b, "{what}: stream and twin refuse differently");
                unchanged(main, twin, what);
                return;
            }
            (a, b) => panic!("{what}: stream {a:?}, twin {b:?}"),
        };
        for s in slots.iter_mut().flatten().filter(|s| s.live) {
            s.log.push(Logged {
                call: call.clone(),
                out: out.clone(),
            });
        }
        if !model.known {
            return;
        }
        let n0 = model.tokens.len();
        model.tokens.extend(self.tokens_of(call));
        self.check(call, &out, n0, model, fwd, what);
    }

    /// Oracles (a) and (d) for the outputs `out` of `call`, whose tokens sit at positions
    /// `n0..` of the model's history.
    fn check(
        &self,
        call: &Call,
        out: &[f32],
        n0: usize,
        model: &Model,
        fwd: &mut Performer,
        what: &str,
    ) {
        let (len, d, dv) = (call.len(), self.c.dim, self.c.value_dim);
        let n = model.tokens.len();
        let full = self
            .history_call(&model.tokens)
            .forward(fwd)
            .unwrap_or_else(|e| panic!("{what}: causal forward over the history: {e}"));
        if !call.step && n0 == 0 {
            for i in 0..self.rows {
                same_bits(
                    &out[i * len * dv..(i + 1) * len * dv],
                    &full[i * n * dv..(i + 1) * n * dv],
                    &format!("{what}: prefill from empty vs causal forward, head {i}"),
                );
            }
        }
        let finite = self.c.kernel != Kernel::Trigonometric;
        for i in 0..self.rows {
            let keys: Vec<f64> = model
                .tokens
                .iter()
                .flat_map(|t| t.k[i * d..(i + 1) * d].iter().copied())
                .collect();
            let values: Vec<f64> = model
                .tokens
                .iter()
                .flat_map(|t| t.v[i * dv..(i + 1) * dv].iter().copied())
                .collect();
            let ke = matches!(self.numeric, Numeric::Softmax).then(|| explicit(&self.spec, &keys));
            let kl = matches!(self.numeric, Numeric::Lipschitz)
                .then(|| lip_features(&self.spec, &keys, self.u));
            for t in 0..len {
                let pos = n0 + t;
                let qrow = &model.tokens[pos].q[i * d..(i + 1) * d];
                let (want, tol) = if let Some(ke) = &ke {
                    let mask: Vec<bool> = (0..n).map(|j| j <= pos).collect();
                    let r = favor_reference(
                        &explicit(&self.spec, qrow),
                        ke,
                        &values,
                        dv,
                        &RefOpts {
                            causal: false,
                            key_mask: Some(&mask),
                            normalized: true,
                            u: self.u,
                            tiny: self.tiny,
                        },
                    );
                    (r.out, r.tol)
                } else if let Some(kl) = &kl {
                    let ql = lip_features(&self.spec, qrow, self.u);
                    lip_reference(&ql, 0, kl, pos + 1, &values, dv, self.u)
                } else {
                    (Vec::new(), Vec::new())
                };
                for col in 0..dv {
                    let o = out[(i * len + t) * dv + col];
                    let f = full[(i * n + pos) * dv + col];
                    let at = format!(
                        "{what}: batch {} head {} token {pos} column {col}",
                        i / self.c.heads,
                        i % self.c.heads
                    );
                    if finite {
                        assert!(
                            o.is_finite() && f.is_finite(),
                            "{at}: stream {o:e}, forward {f:e}: not finite"
                        );
                    }
                    if want.is_empty() {
                        continue;
                    }
                    let (w, mut tol) = (want[col], tol[col]);
                    if self.narrowed {
                        // The f64 result rounded to the f32 output: ≤ u_f32 relative in the
                        // normal range, ≤ half the smallest subnormal below it.
                        tol += unit::<f32>() * (w.abs() + tol) + 2f64.powi(-150);
                    }
                    for (name, x) in [("stream", o), ("causal forward", f)] {
                        let err = (f64::from(x) - w).abs();
                        assert!(
                            x.is_finite() && err <= tol,
                            "{at}: {name} {x:e}, naive f64 reference {w:e}, |err| {err:e} > bound {tol:e}"
                        );
                    }
                    let gap = (f64::from(o) - f64::from(f)).abs();
                    assert!(
                        gap <= 2.0 * tol,
                        "{at}: stream {o:e} vs causal forward {f:e}: {gap:e} > {:e}",
                        2.0 * tol
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(kernel: Kernel, precision: Precision, ops: Vec<TensorOp>) -> TensorStreamCase {
        TensorStreamCase {
            heads: 2,
            batch: 2,
            dim: 5,
            features: 12,
            value_dim: 3,
            kernel,
            projection: Projection::default(),
            normalizer: kernel.is_softmax(),
            epsilon: 1e-3,
            chunk: 3,
            precision,
            backend: Backend::Detected,
            parallel: false,
            seed: 4,
            data_seed: 9,
            scale: 0,
            vscale: 1,
            ops,
        }
    }

    fn every_op() -> Vec<TensorOp> {
        use TensorOp::*;
        vec![
            Prefill {
                len: 4,
                elem: Elem::F16,
            },
            Snapshot { slot: 0 },
            Step {
                elem: Elem::F32,
                into: true,
            },
            Prefill {
                len: 2,
                elem: Elem::Bf16,
            },
            NonFinite {
                prefill: true,
                len: 3,
                which: Which::K,
                at: 77,
                inf: false,
                elem: Elem::F64,
            },
            Shape {
                prefill: true,
                len: 2,
                which: Which::Q,
                dim: 2,
                grow: true,
            },
            OutOfRange {
                prefill: false,
                len: 0,
                which: Which::V,
                at: 3,
            },
            WrongOut { longer: false },
            Foreign { which: 3 },
            Truncate {
                slot: 0,
                keep: 50,
                extend: false,
            },
            RoundTrip,
            Restore {
                slot: 0,
                replay: 0,
                fresh: true,
            },
            Step {
                elem: Elem::F64,
                into: false,
            },
            Reset,
            Prefill {
                len: 7,
                elem: Elem::F32,
            },
        ]
    }

    #[test]
    fn every_operation_on_every_numeric_oracle() {
        for kernel in [
            Kernel::Softmax,
            Kernel::Hyperbolic,
            Kernel::Relu,
            Kernel::Trigonometric,
        ] {
            for precision in [Precision::F32, Precision::F64] {
                run_case(&case(kernel, precision, every_op()));
            }
        }
    }

    /// The oracles fire: a stream fed one token more than its history (as if a rejected call
    /// had been absorbed) is caught by the twin comparison.
    #[test]
    #[should_panic(expected = "stream vs twin")]
    fn a_state_change_is_caught() {
        let c = case(Kernel::Softmax, Precision::F32, Vec::new());
        let p = c.builder().build().unwrap();
        let twin_p = c.builder().parallel(true).build().unwrap();
        let mut fwd = p.clone();
        let mut cx = Ctx::new(&c, &p);
        let (mut main, mut twin) = (p.stream(2).unwrap(), twin_p.stream(2).unwrap());
        let mut model = Model::empty();
        let mut slots: [Option<Slot>; 4] = Default::default();
        let extra = cx.call(true, 1, Elem::F32);
        extra.exec(&mut main).unwrap();
        let call = cx.call(true, 1, Elem::F32);
        cx.good_call(
            &call, &mut main, &mut twin, &mut model, &mut slots, &mut fwd, "test",
        );
    }
}
