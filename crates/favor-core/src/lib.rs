//! # favor-core
//!
//! FAVOR+ (Fast Attention Via positive Orthogonal Random features, the Performer's attention)
//! for every CPU: `#![no_std]`, no allocation, no `unsafe`, generic over `f32` and `f64`.
//!
//! Softmax attention costs O(L²). FAVOR+ maps queries and keys through positive random
//! features φ with `E[φ(q)·φ(k)] = exp(q·k)` and reassociates `(Q'K'ᵀ)V` as `Q'(K'ᵀV)`:
//! linear time and memory. Causal attention becomes prefix sums — a constant-size recurrent
//! state for token-by-token decoding.
//!
//! Every buffer comes from the caller; each entry point has a `*_len` helper that sizes it.
//! Shapes are checked up front and reported as [`Error`]; nothing panics on bad input.
//!
//! ```
//! use favor_core::*;
//! let (l, d, m) = (16, 8, 64);
//! // A seeded orthogonal random projection (m×d).
//! let mut w = vec![0f32; projection_len(m, d).unwrap()];
//! projection(ProjectionKind::default(), 42, m, d, &mut w).unwrap();
//! let phi = PositiveSoftmax::new(&w, m, d).unwrap();
//!
//! let x: Vec<f32> = (0..l * d).map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0).collect();
//! let shape = Shape::new(l, d, d);
//! let opts = Options::default();
//! let mut scratch = vec![0f32; causal_chunked_scratch_len(m, d, opts.block).unwrap()];
//! let mut out = vec![0f32; l * d];
//! causal_chunked(&Scalar, &phi, &x, &x, &x, shape, &opts, &mut out, &mut scratch).unwrap();
//!
//! // The exact softmax reference, for comparison.
//! let mut exact = vec![0f32; l * d];
//! let causal = ExactOptions { causal: true, ..Default::default() };
//! softmax_attention(&Scalar, &x, &x, &x, shape, &causal, &mut exact).unwrap();
//! let err = out.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
//! assert!(err < 0.2);
//! ```
//!
//! ## Guaranteed-finite range
//! For finite inputs the softmax maps never overflow: each stored feature row is shifted by
//! its own maximum exponent (largest entry exactly 1) and keys are merged under the online
//! stabiliser. With a *positive* map ([`PositiveSoftmax`], [`HyperbolicSoftmax`], and
//! [`Generalized`] with ε > 0) normalised outputs are convex combinations of the values, so
//! they are finite whenever `|x|²/2` and every `wᵢ·x` are finite in `T` (for `f32`, row norms
//! below ~10¹⁸); no denominator is ever smaller than [`denominator_floor`]. The
//! [`TrigonometricSoftmax`] map gives no such guarantee: its denominator can cross zero, and a
//! value divided by a denominator near the floor can overflow (documented risk of that map).
//! Non-finite inputs are rejected with [`Error::NonFinite`] before anything is written;
//! stream state is left untouched.
//!
//! ## Accuracy in `f32`: the underflow limit
//! Finite is not the same as accurate. Stored rows are shifted by their own largest exponent
//! (query: `ℓ_q`, key: `ℓ_k`) and keys are held at the stabiliser `c` (the largest `ℓ_k` a
//! query sees), so for a query row what the library actually sums is
//! `D = Σⱼ φ(q)·φ(kⱼ) / e^{ℓ_q + c}`, between `e^{-(2p_q + 2p_k)}` and `M·L` (p: the largest
//! `|wᵢ·x'|` of a row). Normalised outputs equal FAVOR+ to within rounding plus an underflow
//! term of at most `10·M·(L + 1)·μ·(max|v| + |out|) / D` (μ = [`denominator_floor`],
//! `2⁻¹²⁶` in `f32`): negligible unless `D` nears μ, i.e. unless the query is so misaligned
//! with every key it sees that `ln D ≲ −80` in `f32`. Realistic inputs are far from it: an
//! exactly opposed q and k give `ln D ≈ ln M − 2·maxᵢ wᵢ·q'`, which for d = 64, M = 256 and
//! the data normaliser needs row norms of about 40 to reach −80. Very large norms without
//! the normaliser can get there; such rows are finite and convex but inaccurate. `f64` moves the limit to `ln D ≈ −700`. The fuzz oracle
//! (`favor-testkit`'s `favor_reference`) checks exactly this bound.
//!
//! ## Glossary
//! - **feature map** φ — [`FeatureMap`]: [`PositiveSoftmax`] (SM+), [`HyperbolicSoftmax`]
//!   (SMhyp+), [`TrigonometricSoftmax`] (SM), [`Generalized`] (`f(Wx) + ε`);
//!   [`AnyFeatureMap`] holds any of them, chosen at run time.
//! - **projection** W — the m×d random matrix whose rows wᵢ define φ ([`projection`]).
//! - **orthogonal random features (ORF)** — W built from blocks of Haar-random rotations
//!   ([`ProjectionKind::Orthogonal`]); strictly lower estimator MSE than iid rows.
//! - **data normaliser** — the `d^(-1/4)` applied to q and k so `exp(q'·k') = exp(q·k/√d)`.
//! - **log-scale** — a per-row exponent kept beside stored features: `φ = stored·e^ℓ`.
//! - **stabiliser** — the running log-scale of the [`PrefixState`] that rescales S and z when
//!   a key exceeds it, so nothing overflows and no future token affects a past output.
//! - **prefix state** `(S, z)` — `Σ φ(kⱼ)vⱼᵀ` and `Σ φ(kⱼ)`: causal attention's recurrence.
//! - **chunked prefill** — causal attention C tokens at a time, all GEMMs ([`causal_chunked`]).
//! - **kernels** — the hot primitives ([`Kernels`]); [`Scalar`] is the reference backend.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attention;
mod checksum;
mod error;
mod estimator;
mod exact;
mod features;
mod float;
mod inspect;
mod kernels;
mod projection;
mod range;
mod rng;
mod snapshot;
mod state;
mod stream;

pub use attention::{
    Options, Shape, bidirectional, bidirectional_scratch_len, causal_chunked,
    causal_chunked_scratch_len, causal_prefix, causal_prefix_scratch_len, chunk_scratch_len,
};
pub use checksum::crc32;
pub use error::{Error, Result, SnapshotError};
pub use estimator::PartitionEstimator;
pub use exact::{
    ExactOptions, softmax_attention, softmax_attention_tiled, softmax_attention_tiled_scratch_len,
};
pub use features::{
    AnyFeatureMap, FeatureMap, Generalized, HyperbolicSoftmax, PositiveSoftmax,
    TrigonometricSoftmax,
};
pub use float::Float;
pub use inspect::{attention_row, attention_row_scratch_len};
pub use kernels::{Activation, Kernels, ProjectionRef, Scalar};
pub use projection::{ProjectionKind, RowNorms, projection, projection_len, transpose_projection};
pub use rng::Normals;
pub use snapshot::SNAPSHOT_VERSION;
pub use state::{PrefixState, RING, denominator_floor, state_len};
pub use stream::{MappedTokens, Stream, mapped_tokens_len};
