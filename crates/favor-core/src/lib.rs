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
//! Every buffer comes from the caller, and the library says how large: a [`Plan`] sizes its
//! scratch when it is made ([`Plan::scratch_len`]), and the other buffers have a `*_len`
//! function ([`projection_len`], [`state_len`], [`Stream::buffer_len`],
//! [`Stream::prefill_scratch_len`], [`mapped_tokens_len`], [`attention_row_scratch_len`], …).
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
//! // The plan checks the dimensions and sizes its scratch once; `run` takes the data.
//! let plan = Plan::new(PlanKind::CausalChunked, Scalar, &phi, shape, Options::default()).unwrap();
//! let mut scratch = vec![0f32; plan.scratch_len()];
//! let mut out = vec![0f32; l * d];
//! plan.run(&x, &x, &x, &mut out, &mut scratch).unwrap();
//!
//! // The exact softmax reference, for comparison.
//! let mut exact = vec![0f32; l * d];
//! let causal = ExactOptions { causal: true, ..Default::default() };
//! softmax_attention(&Scalar, &x, &x, &x, shape, &causal, &mut exact).unwrap();
//! let err = out.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
//! assert!(err < 0.2);
//! ```
//!
//! ## Supported range
//! Every entry point checks its inputs before it writes anything and refuses what lies outside
//! this range with [`Error::OutOfRange`] (non-finite values with [`Error::NonFinite`]); within
//! it, outputs are finite and never NaN. With `MAX` the largest finite `T`:
//! - every query and key entry is at most the map's [`FeatureMap::max_input`]:
//!   `MAX / (4·√d·max(ω, 1))`, ω the largest row norm of W, so every projection `wᵢ·x` and all
//!   its partial sums stay finite (trigonometric features also need `|x'|²/2` finite; the
//!   generalized square needs `(wᵢ·x)²` finite). For f32, d = 64 and ORF rows that is
//!   entries up to about 10³⁶ — far beyond trained models, but a row of `1e38` is refused;
//! - with `F(a)` the map's [`FeatureMap::feature_bound`] (1 for the softmax maps, whose stored
//!   features are at most 1), `F = max(1, F(max|q|), F(max|k|))` and N the keys summed (all
//!   keys ever absorbed, for a stream): `M · N · (1 + ln N) · F² · max(1, max|v|) ≤ MAX / 4`,
//!   so the sums S, z, `φ(q)ᵀS` and `φ(q)·z` cannot overflow (for f32, softmax maps, M = 256
//!   and N = 10⁷: values up to about 10²⁸). Custom activations cannot be bounded: their sums
//!   are the caller's responsibility. [`check_range`] checks the same from maxima alone;
//! - exact softmax attention: `|τ|·d·max|q|·max|k| ≤ MAX/4` and `N·max|v| ≤ MAX/4`.
//!
//! Keys whose `|x|²` overflows (entries beyond about 10¹⁸ in f32, still within range) have the
//! limit 0 as their true softmax feature and are absent from every path. Normalised outputs of
//! positive maps are convex combinations of the values. Two documented exceptions give ±∞
//! (never NaN): an *unnormalised* output whose true value exceeds `T`'s range (the scale
//! `e^{ℓ_q + c}` itself may exceed it: it is applied in steps, so a finite output stays
//! finite), and the [`TrigonometricSoftmax`] map, whose estimated denominator can cross zero
//! (its documented risk).
//!
//! ## Long streams: the error model of the sums
//! Plain f32 prefix sums lose precision as they grow (relative error 1.2·10⁻² after 10⁷
//! tokens, measured). [`PrefixState`] keeps S and z as a total with a TwoSum compensation and a
//! ring of the last [`RING`] keys, folded in with an error-free transformation every RING
//! tokens and before every block; its stabiliser moves by exact powers of two. The relative
//! error of a sum is then that of summing one ring (or chunk, or 1024-row block) plus about
//! `2u`, whatever the length: at 10⁷ tokens an f32 stream stays within 8·10⁻⁷ (relative L2
//! per output row; 7.4·10⁻⁷ the largest measured) of an f64 stream over the same W and
//! tokens, for stationary and drifting keys alike (`cargo run --release -p favor-benches
//! --features examples --example long_stream` prints the curve). The cost: the state takes
//! `2·(M·dv + M) + RING·(M + dv) + 1` elements (about 2.3× plain sums); a decoding step reads
//! S once instead of reading and writing it, and every RING-th step folds the ring into the
//! total (decode measured at 1.02–1.17× the plain sums' time in `favor bench`, README
//! "Speed").
//!
//! ## Accuracy in `f32`: the underflow limit
//! Finite is not the same as accurate. Stored rows are shifted by their own largest exponent
//! (query: `ℓ_q`, key: `ℓ_k`) and keys are held at the stabiliser `c` (the largest `ℓ_k` a
//! query sees), so for a query row what the library actually sums is
//! `D = Σⱼ φ(q)·φ(kⱼ) / e^{ℓ_q + c}`, between `e^{-(2p_q + 2p_k)}` and `M·L` (p: the largest
//! `|wᵢ·x'|` of a row). Once the products `φ(q)ᵢ·zᵢ` fall below f32's normal range the
//! output loses precision: an underflow term of at most `10·M·(L + 1)·μ·(max|v| + |out|) / D`
//! (μ = [`denominator_floor`], `2⁻¹²⁶` in `f32`).
//!
//! **The query side is re-mapped.** A normalised query whose denominator falls below `√μ`
//! is answered again with its features shifted against the keys it is weighed with,
//! `s = maxᵢ (uᵢ + ln zᵢ)` ([`FeatureMap::remap_row`]): the largest product becomes 1 and the
//! query's features are recomputed from its projection, so none of its own small features is
//! lost (a per-query shift leaves normalised attention unchanged). It costs one comparison per
//! row on every other query. **The key side remains:** a key's features are stored relative
//! to its own largest one, so where a key's feature in a direction the query favours is below
//! f32's range at the key's shift, the state has already lost it. That happens when both the
//! query and the keys have large norms and are badly misaligned — with the data normaliser at
//! d = 64, row norms of about 40. Such rows are finite and convex but inaccurate in f32; f64
//! moves the limit to `ln D ≈ −700`. Per-feature log-scales in the prefix state (one
//! stabiliser per feature) would remove it, but the chunked path would then need a scale per
//! (query, feature) pair inside the chunk tile, which is no longer a GEMM, or a chunk-wide
//! scale that depends on later keys, which breaks the bit-exact no-leak guarantee. The fuzz
//! oracle (`favor-testkit`'s `favor_reference`) checks exactly the bound above.
//!
//! ## Glossary
//! - **feature map** φ — [`FeatureMap`]: [`PositiveSoftmax`] (SM+), [`HyperbolicSoftmax`]
//!   (SMhyp+), [`TrigonometricSoftmax`] (SM), [`Generalized`] (`f(Wx) + ε`), [`GerfSoftmax`]
//!   (GERF / FAVOR++: SM+ with a parameter A; lower variance at [`gerf_optimal_a`]);
//!   [`AnyFeatureMap`] holds any of them but the data-aware map, chosen at run time.
//! - **SADERF / FAVOR#** — [`SaderfScales`]: GERF on `Ψq` and `Ψ⁻¹k` for a diagonal Ψ
//!   (`q·k` unchanged, so still positive and unbiased), ψ and A fitted by [`saderf_fit`] from
//!   a call's queries and keys to minimise the pairs' `|Ψq + Ψ⁻¹k|²`, which GERF's second
//!   moment grows with; the caller rescales the rows, the map is a [`GerfSoftmax`].
//! - **data-aware map** — [`DataAwareSoftmax`]: SM+ with ω drawn from a Gaussian proposal Σ_p
//!   fitted to a head and importance-weighted back (per-feature offsets
//!   `cᵣ = ½ ln N(ωᵣ; 0, I)/N(ωᵣ; 0, Σ_p)`): positive, unbiased, no per-token cost.
//!   **Calibration** ([`calibrate`], [`Calibration`]) fits it from one chunk of the head's
//!   queries and keys: the key shift μ (weighted mean of `q + k` over the pairs, folded into
//!   the keys by the caller), the second moment of `q + k − μ` over the pairs hybrid
//!   attention does not take exactly ([`pair_moments`]), per eigen-direction the
//!   GERF-optimal proposal variance ([`optimal_proposal_variance`]; eigenvectors by
//!   [`symmetric_eigen`]), then `ω = Σ_p^{1/2}g` with orthogonal g ([`draw_data_aware`]).
//! - **hybrid attention** — exact softmax weights for a query's window and sinks, random
//!   features for the other keys, under one normaliser ([`HybridStream`],
//!   [`Plan::with_hybrid`]).
//! - **projection** W — the m×d random matrix whose rows wᵢ define φ ([`projection`]).
//! - **orthogonal random features (ORF)** — W built from blocks of Haar-random rotations
//!   ([`ProjectionKind::Orthogonal`]); strictly lower estimator MSE than iid rows.
//! - **simplex random features** — blocks of d rows spread as a regular simplex and rotated
//!   ([`ProjectionKind::Simplex`]); lower MSE again for the positive maps.
//! - **structured orthogonal random features** (SORF) — blocks `(1/d')·H·D₁·H·D₂·H·D₃` of
//!   Hadamard matrices and random signs ([`ProjectionKind::Sorf`]): near-ORF error, and
//!   [`sorf_apply`] projects a row in O(d' log d') from 3·d' stored signs, without W; the
//!   softmax maps do so too once given the signs
//!   ([`PositiveSoftmax::with_structured_projection`]).
//! - **data normaliser** — the `d^(-1/4)` applied to q and k so `exp(q'·k') = exp(q·k/√d)`.
//! - **log-scale** — a per-row exponent kept beside stored features: `φ = stored·e^ℓ`.
//! - **stabiliser** — the running log-scale of the [`PrefixState`] that rescales S and z when
//!   a key exceeds it, so nothing overflows and no future token affects a past output.
//! - **prefix state** `(S, z)` — `Σ φ(kⱼ)vⱼᵀ` and `Σ φ(kⱼ)`: causal attention's recurrence,
//!   held as a compensated total (TwoSum) plus a **ring** of the last [`RING`] keys.
//! - **re-map** — answering a query whose denominator underflows with its features shifted
//!   against z instead of its own largest feature ([`FeatureMap::remap_row`]).
//! - **chunked prefill** — causal attention C tokens at a time, all GEMMs ([`PlanKind::CausalChunked`]).
//! - **kernels** — the hot primitives ([`Kernels`]); [`Scalar`] is the reference backend.
//! - **plan** — [`Plan`]: one head's attention call configured, checked and sized once, run
//!   many times.
//! - **parts** — one head split by rows for threads the caller brings: key ranges summed into
//!   states of their own ([`Plan::absorb_keys`]) and **merged** ([`PrefixState::merge`]: both
//!   to the larger stabiliser, sums added), then query ranges answered from the merged state
//!   ([`Plan::answer_queries`]), or causal token ranges continuing the merged state of the
//!   ranges before them ([`Plan::causal_part`]).
//! - **stream memory** — [`StreamMemory`]: a stream's buffer, token count and stabiliser kept
//!   together between calls ([`StreamMemory::attach`] gives a [`Stream`] for one call).
//! - **peer conventions** — [`Compat`]: the ε, key shift and denominator rules of
//!   performer-pytorch and google-research's JAX code, which models trained with them have
//!   learnt; [`PeerAttention`] computes attention with them (its causal mode is their
//!   whole-sequence, leaking definition); [`PeerStream`] / [`PeerMemory`] are the
//!   causal-safe streaming variant (key shift over the keys seen so far).
//! - **matrix views** — [`MatRef`] / [`MatMut`]: a slice with rows, columns and two strides;
//!   `.t()` transposes for free, so every product is one [`Kernels::gemm`] ([`Accum`] says
//!   whether it overwrites or adds).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attention;
mod checksum;
mod compat;
mod error;
mod estimator;
mod exact;
mod features;
mod float;
mod hybrid;
mod inputs;
mod inspect;
mod kernels;
mod mat;
mod memory;
mod projection;
mod range;
mod rng;
mod snapshot;
mod state;
mod stream;
mod structured;

pub use attention::{Options, Plan, PlanKind, Shape};
pub use checksum::crc32;
pub use compat::{
    Compat, PEER_SNAPSHOT_VERSION, PeerAttention, PeerDenominator, PeerKernel, PeerMemory,
    PeerStream,
};
pub use error::{Error, Result, SnapshotError};
pub use estimator::PartitionEstimator;
pub use exact::{
    ExactOptions, softmax_attention, softmax_attention_tiled, softmax_attention_tiled_scratch_len,
};
pub use features::{
    AnyFeatureMap, Calibration, DataAwareParts, DataAwareSoftmax, FeatureMap, Generalized,
    GerfSoftmax, HyperbolicSoftmax, PositiveSoftmax, SADERF_FLOOR, SaderfScales,
    TrigonometricSoftmax, calibrate, calibrate_scratch_len, draw_data_aware,
    draw_data_aware_scratch_len, gerf_optimal_a, gerf_rho, optimal_proposal_variance, pair_moments,
    pair_moments_scratch_len, saderf_fit, symmetric_eigen,
};
pub use float::Float;
pub use hybrid::{
    AttachedHybrid, HYBRID_SNAPSHOT_VERSION, HybridMemory, HybridShape, HybridStream,
    hybrid_input_limit,
};
pub use inspect::{KeyFeatures, attention_row, attention_row_scratch_len};
pub use kernels::{Activation, Kernels, ProjectionRef, Ring, Scalar, gemm_dims};
pub use mat::{Accum, MatMut, MatRef};
pub use memory::{Attached, StreamMemory};

pub use projection::{ProjectionKind, RowNorms, projection, projection_len, transpose_projection};
pub use range::check_range;
pub use rng::Normals;
pub use snapshot::SNAPSHOT_VERSION;
pub use state::{PrefixState, RING, denominator_floor, state_len};
pub use stream::{MappedTokens, Stream, mapped_tokens_len};
pub use structured::{sorf_apply, sorf_scratch_len, sorf_signs, sorf_signs_len};
