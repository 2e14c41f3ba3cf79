//! Backends: one generic implementation of [`Kernels`] over a pulp token, and the per-ISA
//! constructors that prove the CPU supports it.

use crate::entry::{
    Axpy, Dot, Fold, FoldRank, Gemm, Max, Project, RingQuery, Scale, SorfProject, Sum, Tril,
};
use crate::real::Elementwise;
use favor_core::{Accum, Activation, Kernels, MatMut, MatRef, ProjectionRef, Ring};
use pulp::Simd;

/// favor-core's [`Kernels`] implemented with pulp's SIMD token `S`.
///
/// Obtain one through a per-ISA constructor (`Avx2::new()`, `Avx512::new()`, `Neon::new()`,
/// `Simd128::new()` return `None` when the CPU lacks the instructions; each exists only on its
/// architecture),
/// [`Portable::new`] (pulp's one-lane scalar token: the same generic code, no SIMD), or use
/// [`Detected`](crate::Detected).
#[derive(Debug, Clone, Copy)]
pub struct Backend<S> {
    simd: S,
    name: &'static str,
}

/// AVX2 + FMA (x86-64-v3), 8 f32 lanes.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub type Avx2 = Backend<pulp::x86::V3>;

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
impl Backend<pulp::x86::V3> {
    /// The AVX2+FMA backend, if this CPU has AVX2 and FMA.
    pub fn new() -> Option<Self> {
        pulp::x86::V3::try_new().map(|simd| Self { simd, name: "avx2" })
    }
}

/// AVX-512 (x86-64-v4), 16 f32 lanes.
#[cfg(all(feature = "x86-v4", any(target_arch = "x86", target_arch = "x86_64")))]
pub type Avx512 = Backend<pulp::x86::V4>;

#[cfg(all(feature = "x86-v4", any(target_arch = "x86", target_arch = "x86_64")))]
impl Backend<pulp::x86::V4> {
    /// The AVX-512 backend, if this CPU has AVX-512 F/BW/CD/DQ/VL.
    pub fn new() -> Option<Self> {
        pulp::x86::V4::try_new().map(|simd| Self {
            simd,
            name: "avx512",
        })
    }
}

/// NEON (AArch64 Advanced SIMD), 4 f32 lanes.
#[cfg(target_arch = "aarch64")]
pub type Neon = Backend<pulp::aarch64::Neon>;

#[cfg(target_arch = "aarch64")]
impl Backend<pulp::aarch64::Neon> {
    /// The NEON backend, if this CPU has NEON (every AArch64 CPU that runs Rust's std does).
    pub fn new() -> Option<Self> {
        pulp::aarch64::Neon::try_new().map(|simd| Self { simd, name: "neon" })
    }
}

/// WebAssembly SIMD (simd128), 4 f32 lanes; no fused multiply-add (plain simd128 has none).
/// Available where the module is built with `-C target-feature=+simd128` (every current
/// browser and Node run such modules).
#[cfg(target_arch = "wasm32")]
pub type Simd128 = Backend<pulp::wasm::Simd128>;

#[cfg(target_arch = "wasm32")]
impl Backend<pulp::wasm::Simd128> {
    /// The simd128 backend, if this module was built with simd128 enabled.
    pub fn new() -> Option<Self> {
        pulp::wasm::Simd128::try_new().map(|simd| Self {
            simd,
            name: "simd128",
        })
    }
}

/// The generic kernels on pulp's one-lane scalar token: exercises the SIMD code paths'
/// logic on any CPU (tests), not meant for speed — use [`favor_core::Scalar`] for that.
pub type Portable = Backend<pulp::Scalar>;

impl Backend<pulp::Scalar> {
    /// Always available.
    pub fn new() -> Self {
        Self {
            simd: pulp::Scalar::new(),
            name: "portable",
        }
    }
}

impl Default for Backend<pulp::Scalar> {
    fn default() -> Self {
        Self::new()
    }
}

/// One implementation for f32 and f64: each kernel enters the target-feature region once
/// (`vectorize`, with one `WithSimd` struct per kernel) and runs its generic body there.
impl<S: Simd, T: Elementwise> Kernels<T> for Backend<S> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn gemm(&self, c: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>) {
        self.simd.vectorize(Gemm { c, accum, a, b })
    }
    fn gemm_tril(&self, c: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>) {
        self.simd.vectorize(Tril { c, accum, a, b })
    }
    fn project(
        &self,
        x: MatRef<'_, T>,
        p: ProjectionRef<'_, T>,
        scale: T,
        out: MatMut<'_, T>,
        row_max: &mut [T],
    ) {
        self.simd.vectorize(Project {
            x,
            p,
            scale,
            out,
            row_max,
        })
    }
    fn sorf_project(
        &self,
        x: MatRef<'_, T>,
        signs: &[T],
        scale: T,
        out: MatMut<'_, T>,
        row_max: &mut [T],
    ) {
        self.simd.vectorize(SorfProject {
            x,
            signs,
            scale,
            out,
            row_max,
        })
    }
    fn fold(&self, hi: &mut [T], lo: &mut [T]) {
        self.simd.vectorize(Fold { hi, lo })
    }
    fn ring_query(&self, hi: &[T], ring: Ring<'_, T>, q: &[T], out: &mut [T]) -> T {
        self.simd.vectorize(RingQuery { hi, ring, q, out })
    }
    fn fold_rank(&self, hi: &mut [T], lo: &mut [T], ring: Ring<'_, T>) {
        self.simd.vectorize(FoldRank { hi, lo, ring })
    }
    fn dot(&self, x: &[T], y: &[T]) -> T {
        self.simd.vectorize(Dot { x, y })
    }
    fn axpy(&self, alpha: T, x: &[T], y: &mut [T]) {
        self.simd.vectorize(Axpy { alpha, x, y })
    }
    fn scale(&self, alpha: T, x: &mut [T]) {
        self.simd.vectorize(Scale { alpha, x })
    }
    fn max(&self, x: &[T]) -> T {
        self.simd.vectorize(Max { x })
    }
    fn sum(&self, x: &[T]) -> T {
        self.simd.vectorize(Sum { x })
    }
    fn exp_shift(&self, x: &mut [T], shift: T) {
        <T as Elementwise>::exp_shift(self.simd, x, shift)
    }
    fn mul_exp(&self, x: &mut [T], logs: &[T], shift: T) {
        <T as Elementwise>::mul_exp(self.simd, x, logs, shift)
    }
    fn sin_cos(&self, out: &mut [T], m: usize) {
        <T as Elementwise>::sin_cos(self.simd, out, m)
    }
    fn activation(&self, x: &mut [T], f: Activation<T>, eps: T) {
        <T as Elementwise>::activation(self.simd, x, f, eps)
    }
}
