//! One feature-map type for every kernel the builder offers, so the attention code is
//! monomorphised once per float type rather than once per kernel.

use favor_core::{
    FeatureMap, Float, Generalized, HyperbolicSoftmax, Kernels, PositiveSoftmax,
    TrigonometricSoftmax,
};

/// Whichever favor-core map the [`Kernel`](crate::Kernel) selects.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AnyMap<'w, T> {
    Positive(PositiveSoftmax<'w, T>),
    Hyperbolic(HyperbolicSoftmax<'w, T>),
    Trigonometric(TrigonometricSoftmax<'w, T>),
    Generalized(Generalized<'w, T>),
}

macro_rules! each {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            AnyMap::Positive($m) => $e,
            AnyMap::Hyperbolic($m) => $e,
            AnyMap::Trigonometric($m) => $e,
            AnyMap::Generalized($m) => $e,
        }
    };
}

impl<T: Float> FeatureMap<T> for AnyMap<'_, T> {
    fn input_dim(&self) -> usize {
        each!(self, m => m.input_dim())
    }
    fn feature_dim(&self) -> usize {
        each!(self, m => m.feature_dim())
    }
    fn is_positive(&self) -> bool {
        each!(self, m => m.is_positive())
    }
    fn softmax_temperature(&self) -> Option<T> {
        each!(self, m => m.softmax_temperature())
    }
    fn fingerprint(&self) -> u64 {
        each!(self, m => m.fingerprint())
    }
    fn map_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        log_scales: &mut [T],
    ) -> favor_core::Result<()> {
        each!(self, m => m.map_rows(kernels, x, rows, out, log_scales))
    }
}
