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

/// The stream under test and its twin: a stream of the same layer with `parallel` flipped
/// (documented bit-identical) that receives only the calls that succeed. They travel
/// together because oracle (c) compares the two after every call: a rejected call must leave
/// the stream where its twin is.
struct Twins {
    /// The stream every call goes to.
    main: Stream,
    /// The twin.
    twin: Stream,
}

impl Twins {
    /// The twin received only the calls that succeeded: a rejected call left nothing behind.
    fn unchanged(&self, what: &str) {
        assert_eq!(
            self.main.tokens(),
            self.twin.tokens(),
            "{what}: tokens() changed"
        );
        assert!(
            self.main.snapshot().expect("snapshot") == self.twin.snapshot().expect("twin snapshot"),
            "{what}: the state changed"
        );
    }
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

/// A small case (2 sequences × 2 heads, d = 5, m = 12, dv = 3, chunk 3, the detected backend)
/// of `kernel` at `precision` running `ops`: the oracles' own tests start from it.
pub fn small_case(kernel: Kernel, precision: Precision, ops: Vec<TensorOp>) -> TensorStreamCase {
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

/// A self-test of the oracles, for favor-testkit's tests: a stream fed one token more than
/// its history (as if a rejected call had been absorbed) must be caught by the twin
/// comparison. Panics with "stream vs twin" when the oracle works; returns if it missed.
pub fn oracle_catches_a_state_change() {
    let c = small_case(Kernel::Softmax, Precision::F32, Vec::new());
    let p = c.builder().build().expect("layer");
    let twin_p = c.builder().parallel(true).build().expect("twin layer");
    let mut fwd = p.clone();
    let mut cx = Ctx::new(&c, &p);
    let mut twins = Twins {
        main: p.stream(2).expect("stream"),
        twin: twin_p.stream(2).expect("twin stream"),
    };
    let mut model = Model::empty();
    let mut slots: [Option<Slot>; 4] = Default::default();
    let extra = cx.call(true, 1, Elem::F32);
    extra.exec(&mut twins.main).expect("the extra token");
    let call = cx.call(true, 1, Elem::F32);
    cx.good_call(&call, &mut twins, &mut model, &mut slots, &mut fwd, "test");
}

// The case's run and the checking context's methods, each in its own file; the types above
// serve both.
mod ctx;
mod run;

pub use run::run_case;
