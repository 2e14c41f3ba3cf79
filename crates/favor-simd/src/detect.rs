//! The best backend this CPU supports, chosen at run time.

#[allow(unused_imports)] // Only the cfg-selected variants below use it.
use crate::backend::*;
use favor_core::{Accum, Activation, Float, Kernels, MatMut, MatRef, ProjectionRef, Ring};

/// The fastest backend available on this CPU: AVX-512, then AVX2+FMA on x86-64; NEON on
/// AArch64; simd128 on wasm32 built with it; favor-core's [`Scalar`](favor_core::Scalar) elsewhere. Detection runs once per
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
    /// WebAssembly simd128.
    #[cfg(target_arch = "wasm32")]
    Simd128(Simd128),
    /// No SIMD backend applies.
    Scalar(favor_core::Scalar),
}

/// The one `match` over the detected backend, its arms cfg-gated per architecture (a macro,
/// like memchr's, because the arms differ per target and a trait object cannot carry the
/// `Copy` kernels).
macro_rules! forward {
    ($self:ident, $k:ident => $call:expr) => {
        match *$self {
            #[cfg(all(feature = "x86-v4", any(target_arch = "x86", target_arch = "x86_64")))]
            Detected::Avx512(ref $k) => $call,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Detected::Avx2(ref $k) => $call,
            #[cfg(target_arch = "aarch64")]
            Detected::Neon(ref $k) => $call,
            #[cfg(target_arch = "wasm32")]
            Detected::Simd128(ref $k) => $call,
            Detected::Scalar(ref $k) => $call,
        }
    };
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
        #[cfg(target_arch = "wasm32")]
        if let Some(k) = Simd128::new() {
            return Detected::Simd128(k);
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
        let backend = &self;
        forward!(backend, k => op.with_kernels(k))
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
    /// `pub` in a private module: nameable here, not outside, so only f32 and f64 implement
    /// [`SimdFloat`](super::SimdFloat).
    pub trait Sealed: crate::real::Elementwise {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The float types every favor-simd backend implements [`Kernels`] for: `f32` and `f64`.
pub trait SimdFloat: Float + sealed::Sealed {}
impl SimdFloat for f32 {}
impl SimdFloat for f64 {}

/// The best backend for this CPU: shorthand for [`Detected::new`].
pub fn detected() -> Detected {
    Detected::new()
}

impl Default for Detected {
    fn default() -> Self {
        Self::new()
    }
}

/// `&Detected` as the kernels: one `match` per primitive call. [`Detected::dispatch`] pays it
/// once per operation instead.
impl<T: SimdFloat> Kernels<T> for Detected {
    fn name(&self) -> &'static str {
        forward!(self, k => Kernels::<T>::name(k))
    }
    fn gemm(&self, c: MatMut<'_, T>, acc: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>) {
        forward!(self, k => k.gemm(c, acc, a, b))
    }
    fn gemm_tril(&self, c: MatMut<'_, T>, acc: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>) {
        forward!(self, k => k.gemm_tril(c, acc, a, b))
    }
    fn project(
        &self,
        x: MatRef<'_, T>,
        p: ProjectionRef<'_, T>,
        scale: T,
        out: MatMut<'_, T>,
        row_max: &mut [T],
    ) {
        forward!(self, k => k.project(x, p, scale, out, row_max))
    }
    fn sorf_project(
        &self,
        x: MatRef<'_, T>,
        signs: &[T],
        scale: T,
        out: MatMut<'_, T>,
        row_max: &mut [T],
    ) {
        forward!(self, k => k.sorf_project(x, signs, scale, out, row_max))
    }
    fn fold(&self, hi: &mut [T], lo: &mut [T]) {
        forward!(self, k => k.fold(hi, lo))
    }
    fn ring_query(&self, hi: &[T], ring: Ring<'_, T>, q: &[T], out: &mut [T]) -> T {
        forward!(self, k => k.ring_query(hi, ring, q, out))
    }
    fn fold_rank(&self, hi: &mut [T], lo: &mut [T], ring: Ring<'_, T>) {
        forward!(self, k => k.fold_rank(hi, lo, ring))
    }
    fn dot(&self, a: &[T], b: &[T]) -> T {
        forward!(self, k => k.dot(a, b))
    }
    fn axpy(&self, alpha: T, x: &[T], y: &mut [T]) {
        forward!(self, k => k.axpy(alpha, x, y))
    }
    fn scale(&self, alpha: T, x: &mut [T]) {
        forward!(self, k => k.scale(alpha, x))
    }
    fn max(&self, x: &[T]) -> T {
        forward!(self, k => Kernels::<T>::max(k, x))
    }
    fn sum(&self, x: &[T]) -> T {
        forward!(self, k => Kernels::<T>::sum(k, x))
    }
    fn exp_shift(&self, x: &mut [T], shift: T) {
        forward!(self, k => k.exp_shift(x, shift))
    }
    fn mul_exp(&self, x: &mut [T], logs: &[T], shift: T) {
        forward!(self, k => k.mul_exp(x, logs, shift))
    }
    fn sin_cos(&self, out: &mut [T], m: usize) {
        forward!(self, k => Kernels::<T>::sin_cos(k, out, m))
    }
    fn activation(&self, x: &mut [T], f: Activation<T>, eps: T) {
        forward!(self, k => k.activation(x, f, eps))
    }
}
