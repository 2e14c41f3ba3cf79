//! The best backend this CPU supports, chosen at run time.

#[allow(unused_imports)] // Only the cfg-selected variants below use it.
use crate::backend::*;
use favor_core::{Accum, Activation, Float, Kernels, MatMut, MatRef, ProjectionRef, Ring};

/// The fastest backend available on this CPU: AVX-512, then AVX2+FMA on x86-64; NEON on
/// AArch64; favor-core's [`Scalar`](favor_core::Scalar) elsewhere. Detection runs once per
/// [`Detected::new`] (std caches the CPUID result); keep the value and copy it around.
///
/// ```
/// use favor_core::Kernels;
/// let k = favor_simd::Detected::new();
/// println!("using {}", Kernels::<f32>::name(&k));
/// assert_eq!(k.dot(&[1.0f32, 2.0], &[3.0, 4.0]), 11.0);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Detected {
    /// AVX-512.
    #[cfg(all(feature = "x86-v4", any(target_arch = "x86", target_arch = "x86_64")))]
    Avx512(Avx512),
    /// AVX2 + FMA.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx2(Avx2),
    /// NEON.
    #[cfg(target_arch = "aarch64")]
    Neon(Neon),
    /// No SIMD backend applies.
    Scalar(favor_core::Scalar),
}

impl Detected {
    /// Detects the CPU's best backend.
    pub fn new() -> Self {
        #[cfg(all(feature = "x86-v4", any(target_arch = "x86", target_arch = "x86_64")))]
        if let Some(k) = Avx512::new() {
            return Detected::Avx512(k);
        }
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        if let Some(k) = Avx2::new() {
            return Detected::Avx2(k);
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(k) = Neon::new() {
            return Detected::Neon(k);
        }
        Detected::Scalar(favor_core::Scalar)
    }
}

impl Detected {
    /// Runs `op` on the concrete backend this value holds: one `match` for the whole
    /// operation, which then calls each primitive directly (monomorphised on that backend),
    /// where passing `&Detected` as the kernels matches on every primitive call.
    ///
    /// ```
    /// use favor_core::Kernels;
    /// use favor_simd::{Detected, WithKernels};
    ///
    /// struct Norm<'a>(&'a [f32]);
    /// impl WithKernels<f32> for Norm<'_> {
    ///     type Output = f32;
    ///     fn with_kernels<K: Kernels<f32>>(self, k: &K) -> f32 {
    ///         k.dot(self.0, self.0).sqrt()
    ///     }
    /// }
    /// assert_eq!(Detected::new().dispatch(Norm(&[3.0, 4.0])), 5.0);
    /// ```
    pub fn dispatch<T: SimdFloat, Op: WithKernels<T>>(self, op: Op) -> Op::Output {
        T::dispatch(self, op)
    }
}

/// An operation written once over the kernels backend; see [`Detected::dispatch`].
pub trait WithKernels<T: Float> {
    /// What the operation returns.
    type Output;
    /// Runs the operation with `kernels`.
    fn with_kernels<K: Kernels<T>>(self, kernels: &K) -> Self::Output;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The float types every favor-simd backend implements [`Kernels`] for: `f32` and `f64`.
pub trait SimdFloat: Float + sealed::Sealed {
    /// [`Detected::dispatch`] for this type.
    #[doc(hidden)]
    fn dispatch<Op: WithKernels<Self>>(backend: Detected, op: Op) -> Op::Output;
}

macro_rules! impl_simd_float {
    ($t:ty) => {
        impl SimdFloat for $t {
            fn dispatch<Op: WithKernels<$t>>(backend: Detected, op: Op) -> Op::Output {
                let backend = &backend;
                forward!(backend, k => op.with_kernels(k))
            }
        }
    };
}

/// The best backend for this CPU: shorthand for [`Detected::new`].
pub fn detected() -> Detected {
    Detected::new()
}

impl Default for Detected {
    fn default() -> Self {
        Self::new()
    }
}

/// Forwards one method to whichever backend was detected.
macro_rules! forward {
    ($self:ident, $k:ident => $call:expr) => {
        match *$self {
            #[cfg(all(feature = "x86-v4", any(target_arch = "x86", target_arch = "x86_64")))]
            Detected::Avx512(ref $k) => $call,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Detected::Avx2(ref $k) => $call,
            #[cfg(target_arch = "aarch64")]
            Detected::Neon(ref $k) => $call,
            Detected::Scalar(ref $k) => $call,
        }
    };
}

macro_rules! impl_detected {
    ($t:ty) => {
        impl Kernels<$t> for Detected {
            fn name(&self) -> &'static str {
                forward!(self, k => Kernels::<$t>::name(k))
            }
            fn gemm(&self, c: MatMut<'_, $t>, acc: Accum, a: MatRef<'_, $t>, b: MatRef<'_, $t>) {
                forward!(self, x => x.gemm(c, acc, a, b))
            }
            fn gemm_tril(
                &self, c: MatMut<'_, $t>, acc: Accum, a: MatRef<'_, $t>, b: MatRef<'_, $t>,
            ) {
                forward!(self, x => x.gemm_tril(c, acc, a, b))
            }
            fn project(
                &self, x: MatRef<'_, $t>, p: ProjectionRef<'_, $t>, scale: $t,
                out: MatMut<'_, $t>, row_max: &mut [$t],
            ) {
                forward!(self, k => k.project(x, p, scale, out, row_max))
            }
            fn fold(&self, hi: &mut [$t], lo: &mut [$t]) {
                forward!(self, x => x.fold(hi, lo))
            }
            fn ring_query(&self, hi: &[$t], ring: Ring<'_, $t>, q: &[$t], out: &mut [$t]) -> $t {
                forward!(self, x => x.ring_query(hi, ring, q, out))
            }
            fn fold_rank(&self, hi: &mut [$t], lo: &mut [$t], ring: Ring<'_, $t>) {
                forward!(self, x => x.fold_rank(hi, lo, ring))
            }
            fn dot(&self, a: &[$t], b: &[$t]) -> $t {
                forward!(self, k => k.dot(a, b))
            }
            fn axpy(&self, alpha: $t, x: &[$t], y: &mut [$t]) {
                forward!(self, k => k.axpy(alpha, x, y))
            }
            fn scale(&self, alpha: $t, x: &mut [$t]) {
                forward!(self, k => k.scale(alpha, x))
            }
            fn max(&self, x: &[$t]) -> $t {
                forward!(self, k => Kernels::<$t>::max(k, x))
            }
            fn exp_shift(&self, x: &mut [$t], shift: $t) {
                forward!(self, k => k.exp_shift(x, shift))
            }
            fn mul_exp(&self, x: &mut [$t], logs: &[$t], shift: $t) {
                forward!(self, k => k.mul_exp(x, logs, shift))
            }
            fn sin_cos(&self, out: &mut [$t], m: usize) {
                forward!(self, k => Kernels::<$t>::sin_cos(k, out, m))
            }
            fn activation(&self, x: &mut [$t], f: Activation<$t>, eps: $t) {
                forward!(self, k => k.activation(x, f, eps))
            }
        }
    };
}
impl_detected!(f32);
impl_detected!(f64);
impl_simd_float!(f32);
impl_simd_float!(f64);
