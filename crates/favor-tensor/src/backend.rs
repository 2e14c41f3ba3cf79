//! Running an operation with the configured kernels backend, in f32 or f64.

use favor_simd::SimdFloat;
/// An operation generic over the kernels backend (a closure cannot be generic).
pub(crate) use favor_simd::WithKernels as BackendOp;

use crate::weights::Weights;

/// The float types attention runs in, with their copy of the weights.
pub(crate) trait Real: SimdFloat {
    /// W and Wᵀ in this precision.
    fn weights(w: &Weights) -> (&[Self], &[Self]);
    /// Runs `op` on the detected SIMD backend, matched once for the whole operation.
    fn with_detected<O: BackendOp<Self>>(op: O) -> O::Output {
        favor_simd::detected().dispatch(op)
    }
}

impl Real for f32 {
    fn weights(w: &Weights) -> (&[f32], &[f32]) {
        (w.f32(), w.f32_t())
    }
}

impl Real for f64 {
    fn weights(w: &Weights) -> (&[f64], &[f64]) {
        (w.f64(), w.f64_t())
    }
}
