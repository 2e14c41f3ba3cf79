//! # favor-testkit
//!
//! Fuzz inputs and oracles for favor, shared by the cargo-fuzz targets in `fuzz/` (nightly)
//! and by `tests/replay.rs` (stable `cargo test`), which replays every committed regression
//! and seed under `fuzz/regressions/<target>/` and `fuzz/seeds/<target>/` plus a fixed-seed
//! sweep of generated inputs.
//!
//! Each target is one function `check_<target>(data: &[u8])`: it decodes the bytes with
//! [`arbitrary::Unstructured`] into a bounded case (inputs the decoder cannot use are
//! skipped) and panics when an oracle is violated.
//!
//! | target | what it checks |
//! |---|---|
//! | [`check_kernels`] | every `Kernels` method of every SIMD backend vs favor-core's `Scalar`, f32 and f64 |
//! | [`check_feature_maps`] | every feature map on arbitrary finite rows vs f64 formulas; finiteness and signs |
//! | [`check_attention`] | bidirectional / causal / chunked / stream vs naive f64 FAVOR+, exact softmax and `Scalar`; no-leak |
//! | [`check_stream`] | push / query / step / prefill / snapshot / restore interleavings vs f64 FAVOR+ and `causal_prefix` |
//! | [`check_snapshot_bytes`] | favor-core and favor-tensor `Stream::restore` on arbitrary bytes |
//! | [`check_npy`] | `favor_npy::parse` on arbitrary bytes and on generated files |
//! | [`check_tensor_stream`] | favor-tensor `Stream` (heads × batch) prefill / step / snapshot / restore / rejected calls vs f64 FAVOR+, causal `forward` and a twin stream |
//! | [`check_mapped`] | favor-core `MappedTokens` + `Stream::step_mapped` over up to 8 streams vs `step`, f64 FAVOR+; errors change nothing |
//! | [`check_hybrid`] | hybrid attention: `HybridStream`, causal chunked and bidirectional hybrid plans vs the f64 [`hybrid`] oracle (derived budget), each other and exact softmax; snapshot / restore over junk / mutated snapshot / reset, bit for bit |
//!
//! Every tolerance is derived from the operation (comments in each module); none is tuned.
//!
//! Oracles not yet behind a target: [`gerf`] (the closed-form moments of GERF / FAVOR++
//! features), [`saderf`] (SADERF / FAVOR#: the pair objective of the diagonal, its
//! minimiser and ρ by brute force over pairs), [`calibrated`] (data-aware importance-weighted features: the map, its
//! closed-form moments for any Gaussian proposal, the calibration pair moments by brute
//! force). [`hybrid`] (hybrid attention — exact window and sinks, random features outside —
//! from its definition) is the oracle of [`check_hybrid`]. [`peers`] (f64 ports of
//! performer-pytorch's and JAX's FAVOR+ formulas) is the oracle of favor-core's `PeerAttention`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Numerical oracles index several arrays with the same counters.
#![allow(clippy::needless_range_loop)]

pub mod attention;
pub mod backends;
pub mod bounds;
pub mod calibrated;
pub mod features;
pub mod gerf;
pub mod hybrid;
pub mod hybrid_paths;
pub mod input;
pub mod kernels;
pub mod lipschitz;
pub mod mapped;
pub mod maps;
#[cfg(feature = "tensor")]
pub mod npy;
pub mod peers;
pub mod reference;
pub mod saderf;
#[cfg(feature = "tensor")]
pub mod snapshot;
pub mod stream;
#[cfg(feature = "tensor")]
pub mod tensor_stream;

pub use attention::check_attention;
pub use features::check_feature_maps;
pub use hybrid_paths::check_hybrid;
pub use kernels::check_kernels;
pub use mapped::check_mapped;
#[cfg(feature = "tensor")]
pub use npy::check_npy;
#[cfg(feature = "tensor")]
pub use snapshot::check_snapshot_bytes;
pub use stream::check_stream;
#[cfg(feature = "tensor")]
pub use tensor_stream::check_tensor_stream;

/// A target's entry point: decodes fuzzer bytes and panics when an oracle is violated.
pub type Check = fn(&[u8]);

/// Every target (those of the `tensor` feature, on by default — `snapshot_bytes`, `npy`, `tensor_stream` — only with it): its name (the `fuzz/fuzz_targets/<name>.rs` binary and the directory under
/// `fuzz/regressions/` and `fuzz/seeds/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("kernels", check_kernels),
    ("feature_maps", check_feature_maps),
    ("attention", check_attention),
    ("stream", check_stream),
    #[cfg(feature = "tensor")]
    ("snapshot_bytes", check_snapshot_bytes),
    #[cfg(feature = "tensor")]
    ("npy", check_npy),
    #[cfg(feature = "tensor")]
    ("tensor_stream", check_tensor_stream),
    ("mapped", check_mapped),
    ("hybrid", check_hybrid),
];
