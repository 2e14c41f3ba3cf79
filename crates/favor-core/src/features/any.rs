//! Any feature map, chosen at run time.

use super::*;

/// Any of this crate's feature maps, chosen at run time (e.g. from a configuration), with
/// one [`FeatureMap`] implementation so the attention code is compiled once, not once per
/// kernel.
///
/// ```
/// use favor_core::*;
/// let mut w = [0f64; 8 * 4];
/// projection(ProjectionKind::default(), 1, 8, 4, &mut w).unwrap();
/// let trig = true; // e.g. from a config file
/// let phi: AnyFeatureMap<'_, f64> = if trig {
///     TrigonometricSoftmax::new(&w, 8, 4).unwrap().into()
/// } else {
///     PositiveSoftmax::new(&w, 8, 4).unwrap().into()
/// };
/// assert_eq!(phi.feature_dim(), 16);
/// assert!(!phi.is_positive());
/// ```
#[derive(Debug, Clone, Copy)]
pub enum AnyFeatureMap<'w, T> {
    /// [`PositiveSoftmax`] (SM+).
    Positive(PositiveSoftmax<'w, T>),
    /// [`HyperbolicSoftmax`] (SMhyp+).
    Hyperbolic(HyperbolicSoftmax<'w, T>),
    /// [`TrigonometricSoftmax`].
    Trigonometric(TrigonometricSoftmax<'w, T>),
    /// [`Generalized`].
    Generalized(Generalized<'w, T>),
    /// [`DataAwareSoftmax`] (calibrated; its caller shifts keys by μ).
    DataAware(DataAwareSoftmax<'w, T>),
    /// [`GerfSoftmax`] (GERF / FAVOR++; with rescaled rows also SADERF, see
    /// [`SaderfScales`](crate::SaderfScales)).
    Gerf(GerfSoftmax<'w, T>),
}

macro_rules! any_map_from {
    ($($variant:ident($ty:ident)),*) => {$(
        impl<'w, T> From<$ty<'w, T>> for AnyFeatureMap<'w, T> {
            fn from(m: $ty<'w, T>) -> Self {
                AnyFeatureMap::$variant(m)
            }
        }
    )*};
}
any_map_from!(
    Positive(PositiveSoftmax),
    Hyperbolic(HyperbolicSoftmax),
    Trigonometric(TrigonometricSoftmax),
    Generalized(Generalized),
    DataAware(DataAwareSoftmax),
    Gerf(GerfSoftmax)
);

/// Forwards one method to whichever map is inside.
macro_rules! each_map {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            AnyFeatureMap::Positive($m) => $e,
            AnyFeatureMap::Hyperbolic($m) => $e,
            AnyFeatureMap::Trigonometric($m) => $e,
            AnyFeatureMap::Generalized($m) => $e,
            AnyFeatureMap::DataAware($m) => $e,
            AnyFeatureMap::Gerf($m) => $e,
        }
    };
}

impl<T: Float> FeatureMap<T> for AnyFeatureMap<'_, T> {
    fn input_dim(&self) -> usize {
        each_map!(self, m => m.input_dim())
    }
    fn feature_dim(&self) -> usize {
        each_map!(self, m => m.feature_dim())
    }
    fn is_positive(&self) -> bool {
        each_map!(self, m => m.is_positive())
    }
    fn softmax_temperature(&self) -> Option<T> {
        each_map!(self, m => m.softmax_temperature())
    }
    fn fingerprint(&self) -> u64 {
        each_map!(self, m => m.fingerprint())
    }
    fn max_log_scale(&self) -> T {
        each_map!(self, m => m.max_log_scale())
    }
    fn max_input(&self) -> T {
        each_map!(self, m => m.max_input())
    }
    fn remap_row<K: Kernels<T>>(&self, kernels: &K, x: &[T], weights: &[T], out: &mut [T]) -> bool {
        each_map!(self, m => m.remap_row(kernels, x, weights, out))
    }
    fn feature_bound(&self, max_abs: T) -> Option<f64> {
        each_map!(self, m => m.feature_bound(max_abs))
    }
    fn map_rows<K: Kernels<T>>(
        &self,
        kernels: &K,
        x: &[T],
        rows: usize,
        out: &mut [T],
        log_scales: &mut [T],
    ) -> Result<()> {
        each_map!(self, m => m.map_rows(kernels, x, rows, out, log_scales))
    }
}
