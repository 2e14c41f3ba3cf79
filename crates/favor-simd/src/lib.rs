//! # favor-simd
//!
//! SIMD implementations of favor-core's [`Kernels`](favor_core::Kernels), written once over
//! pulp's [`Simd`](pulp::Simd) trait and instantiated for AVX2+FMA, AVX-512 and NEON, with
//! the CPU's best choice made at run time by [`Detected`]. Every favor-core algorithm runs
//! on them unchanged: pass the backend where you would pass `favor_core::Scalar`.
//!
//! ```
//! use favor_core::*;
//! use favor_simd::Detected;
//!
//! let (l, d, m) = (64, 16, 128);
//! let mut w = vec![0f32; m * d];
//! projection(ProjectionKind::default(), 1, m, d, &mut w)?;
//! // Keeping Wᵀ lets the SIMD GEMM project without transposing W on every call.
//! let mut wt = vec![0f32; m * d];
//! transpose_projection(&w, m, d, &mut wt)?;
//! let phi = PositiveSoftmax::new(&w, m, d)?.with_transposed_projection(&wt)?;
//!
//! let x: Vec<f32> = (0..l * d).map(|i| ((i * 7919) % 101) as f32 / 200.0 - 0.25).collect();
//! let shape = Shape::new(l, d, d);
//! let opts = Options::default();
//! let simd = Plan::new(PlanKind::CausalChunked, Detected::new(), &phi, shape, opts)?;
//! let scalar = Plan::new(PlanKind::CausalChunked, Scalar, &phi, shape, opts)?;
//! // The backend does not enter the scratch size: both plans take the same scratch.
//! assert_eq!(simd.scratch_len(), scalar.scratch_len());
//! let mut scratch = vec![0f32; simd.scratch_len()];
//! let (mut fast, mut reference) = (vec![0f32; l * d], vec![0f32; l * d]);
//! simd.run(&x, &x, &x, &mut fast, &mut scratch)?;
//! scalar.run(&x, &x, &x, &mut reference, &mut scratch)?;
//! for (a, b) in fast.iter().zip(&reference) {
//!     assert!((a - b).abs() < 1e-5);
//! }
//! # Ok::<(), favor_core::Error>(())
//! ```
//!
//! ## Backends
//! - [`Detected`]: AVX-512 or AVX2+FMA on x86-64, NEON on AArch64, simd128 on wasm32 built
//!   with `+simd128`, else favor-core's scalar.
//! - `Avx2::new()`, `Avx512::new()`, `Neon::new()`: one ISA, `None` where the CPU lacks it
//!   (for tests and benchmarks that must pin a backend). [`Portable`]: the generic code on
//!   pulp's one-lane token, available everywhere.
//! - f32 is the fast path: everything vectorised, `exp`/`sin`/`cos` from [`math`]. f64 (the
//!   reference type) gets vectorised GEMMs and BLAS-1 kernels, and libm for the rest.
//!
//! ## Accuracy
//! Backends round differently from the scalar reference (FMA, summation order, vector
//! `exp`), never by more than the bounds the shared test harness derives per operation:
//! `2·γ_k·Σ|aᵢbᵢ|` for a length-k sum of products, [`math::EXP_MAX_ULP`] for `exp`,
//! [`math::SIN_COS_MAX_ABS_ERR`] for `sin`/`cos`, and the end-to-end bound on attention
//! outputs documented in `tests/backends.rs`.
//!
//! ## Stack
//! The kernels allocate nothing: the GEMM packs its operands into blocks on the stack, 56 KiB
//! in either precision (a B block of 32 KiB and a transposed A's block of 24 KiB). Every
//! favor-core path with these kernels — each plan kind, plain and hybrid, with a key mask,
//! both decoding streams, tiled exact attention and the structured projection, in f32 and
//! f64 — runs in an optimised build on a thread with a 128 KiB stack (musl's default; tested
//! on every native backend: wasm32-wasip1 has no threads), so a host's worker threads need
//! no special size. Unoptimised builds use larger frames.
//!
//! ## Features
//! `std` (default): run-time CPU detection. Without it the crate is `no_std` and the ISA is
//! fixed at compile time. `x86-v4` (default): the AVX-512 backend.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

mod backend;
mod detect;
mod entry;
mod gemm;
pub mod math;
mod ops;
mod real;
mod sorf;
#[cfg(all(feature = "x86-v4", target_arch = "x86_64"))]
mod transpose_x86;

pub use backend::*;
pub use detect::{Detected, SimdFloat, WithKernels, detected};
