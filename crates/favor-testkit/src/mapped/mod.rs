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
            run::run::<T, K>(k, self.case, self.scalar);
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

/// The streams under test, their twins and their histories: entry `j` of each is one
/// stream. They travel together because every operation on a stream must do the same to its
/// twin and its model, or the twin comparison and the f64 oracle lose their meaning.
struct Streams<'b, 'w, T: Real, K: Kernels<T>> {
    /// The streams that receive mapped tokens through `step_mapped`.
    main: Vec<Stream<'b, T, Map<'w, T>, K>>,
    /// Their twins, which receive the same tokens through plain `step`.
    twin: Vec<Stream<'b, T, Map<'w, T>, K>>,
    /// What each stream's history holds.
    models: Vec<Model>,
}

impl<T: Real, K: Kernels<T>> Streams<'_, '_, T, K> {
    /// Empties stream `j`, its twin and its history alike.
    fn reset(&mut self, j: usize) {
        self.main[j].reset();
        self.twin[j].reset();
        self.models[j] = Model::empty();
    }
}

/// Tokens mapped in one `MappedTokens::new`: `n` rows of q and of k (d each), kept in f64
/// for the oracles and cast to the run's type for the library. They travel together because
/// row `i` of q and of k is token `i`, whichever stream it goes to.
struct Batch {
    /// Tokens.
    n: usize,
    /// Queries, n×d.
    q: Vec<f64>,
    /// Keys, n×d.
    k: Vec<f64>,
    /// One row has entries of huge magnitude: the mapping may be refused, and streams that
    /// absorb these tokens leave the range the numeric oracles cover.
    huge: bool,
}

fn cast<T: Real>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

// The case's run, the checking context's methods and the unit tests, each in its own file;
// the types above serve all three.
mod ctx;
mod run;
