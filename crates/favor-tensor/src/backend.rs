//! Running an operation with the configured kernels backend, in f32 or f64.

use favor_core::AnyFeatureMap;
use favor_simd::SimdFloat;
/// An operation generic over the kernels backend (a closure cannot be generic).
pub(crate) use favor_simd::WithKernels as BackendOp;

use crate::config::Config;
use crate::error::Result;
use crate::exec::{Call, Pieces};
use crate::stream::{HeadStates, StepIo};
use crate::weights::Weights;

/// The float types attention runs in, with their copy of the weights.
pub(crate) trait Real: SimdFloat {
    /// W and Wᵀ in this precision.
    fn weights(w: &Weights) -> (&[Self], &[Self]);
    /// W's structured (SORF) form in this precision, when W was drawn as one.
    fn signs(w: &Weights) -> Option<&[Self]>;
    /// Of two copies of the same parts (f64 and f32), the one in this precision.
    fn parts<'a>(
        a64: &'a [f64],
        a32: &'a [f32],
        b64: &'a [f64],
        b32: &'a [f32],
    ) -> (&'a [Self], &'a [Self]);
    /// Runs `op` on the detected SIMD backend, matched once for the whole operation.
    fn with_detected<O: BackendOp<Self>>(op: O) -> O::Output {
        favor_simd::detected().dispatch(op)
    }
    /// One forward call's every head ([`crate::exec::forward`]).
    ///
    /// This and [`stream`](Self::stream) are where the engine is instantiated: they are not
    /// generic, so this crate compiles it once per precision and every caller links to it
    /// (see [`crate::exec::Source`]).
    fn forward(
        call: &Call<'_, Self>,
        cfg: &Config,
        layer: (&Weights, Option<AnyFeatureMap<'_, Self>>),
        out: Pieces<'_, Self>,
    ) -> Result<()>;
    /// One prefill or decoding step of every head of a stream ([`HeadStates::run`]).
    fn stream(
        states: &mut HeadStates<'_, Self>,
        cfg: &Config,
        io: &StepIo<'_, Self>,
        out: Pieces<'_, Self>,
    ) -> Result<()>;
}

/// The engine's entry points for one precision (see [`Real::forward`]). Never inlined: an
/// inlined copy would instantiate the engine in the caller's crate again.
macro_rules! entry_points {
    () => {
        #[inline(never)]
        fn forward(
            call: &Call<'_, Self>,
            cfg: &Config,
            layer: (&Weights, Option<AnyFeatureMap<'_, Self>>),
            out: Pieces<'_, Self>,
        ) -> Result<()> {
            crate::exec::forward(call, cfg, layer, out)
        }
        #[inline(never)]
        fn stream(
            states: &mut HeadStates<'_, Self>,
            cfg: &Config,
            io: &StepIo<'_, Self>,
            out: Pieces<'_, Self>,
        ) -> Result<()> {
            states.run(cfg, io, out)
        }
    };
}

impl Real for f32 {
    fn weights(w: &Weights) -> (&[f32], &[f32]) {
        (w.f32(), w.f32_t())
    }
    fn signs(w: &Weights) -> Option<&[f32]> {
        Some(w.signs32()).filter(|s| !s.is_empty())
    }
    fn parts<'a>(
        _: &'a [f64],
        a32: &'a [f32],
        _: &'a [f64],
        b32: &'a [f32],
    ) -> (&'a [f32], &'a [f32]) {
        (a32, b32)
    }
    entry_points!();
}

impl Real for f64 {
    fn weights(w: &Weights) -> (&[f64], &[f64]) {
        (w.f64(), w.f64_t())
    }
    fn signs(w: &Weights) -> Option<&[f64]> {
        Some(w.signs64()).filter(|s| !s.is_empty())
    }
    fn parts<'a>(
        a64: &'a [f64],
        _: &'a [f32],
        b64: &'a [f64],
        _: &'a [f32],
    ) -> (&'a [f64], &'a [f64]) {
        (a64, b64)
    }
    entry_points!();
}
