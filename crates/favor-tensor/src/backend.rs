//! Running an operation with the configured kernels backend, in f32 or f64.

use favor_simd::SimdFloat;
/// An operation generic over the kernels backend (a closure cannot be generic).
pub(crate) use favor_simd::WithKernels as BackendOp;

use crate::weights::Weights;

/// The float types attention runs in, with their copy of the weights.
pub(crate) trait Real: SimdFloat {
    /// W and Wᵀ in this precision.
    fn weights(w: &Weights) -> (&[Self], &[Self]);
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
}

impl Real for f32 {
    fn weights(w: &Weights) -> (&[f32], &[f32]) {
        (w.f32(), w.f32_t())
    }
    fn parts<'a>(
        _: &'a [f64],
        a32: &'a [f32],
        _: &'a [f64],
        b32: &'a [f32],
    ) -> (&'a [f32], &'a [f32]) {
        (a32, b32)
    }
}

impl Real for f64 {
    fn weights(w: &Weights) -> (&[f64], &[f64]) {
        (w.f64(), w.f64_t())
    }
    fn parts<'a>(
        a64: &'a [f64],
        _: &'a [f32],
        b64: &'a [f64],
        _: &'a [f32],
    ) -> (&'a [f64], &'a [f64]) {
        (a64, b64)
    }
}
