//! Running an operation with the configured kernels backend, in f32 or f64.

use favor_core::{Float, Kernels};

use crate::weights::Weights;

/// The float types attention runs in, with their copy of the weights.
pub(crate) trait Real: Float {
    /// W and Wᵀ in this precision.
    fn weights(w: &Weights) -> (&[Self], &[Self]);
    /// Runs `op` with the detected SIMD backend (which implements `Kernels` for each `Real`).
    fn with_detected<O: BackendOp<Self>>(op: O) -> O::Output;
}

impl Real for f32 {
    fn weights(w: &Weights) -> (&[f32], &[f32]) {
        (w.f32(), w.f32_t())
    }
    fn with_detected<O: BackendOp<f32>>(op: O) -> O::Output {
        op.run(&favor_simd::detected())
    }
}

impl Real for f64 {
    fn weights(w: &Weights) -> (&[f64], &[f64]) {
        (w.f64(), w.f64_t())
    }
    fn with_detected<O: BackendOp<f64>>(op: O) -> O::Output {
        op.run(&favor_simd::detected())
    }
}

/// An operation generic over the kernels backend (a closure cannot be generic).
pub(crate) trait BackendOp<T: Float> {
    type Output;
    fn run<K: Kernels<T> + Sync + Copy>(self, kernels: &K) -> Self::Output;
}
