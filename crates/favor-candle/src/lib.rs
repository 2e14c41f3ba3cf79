//! # favor-candle
//!
//! FAVOR+ (Performer) attention inside [candle](https://github.com/huggingface/candle) models,
//! on the CPU:
//!
//! - [`FavorAttentionOp`]: a `CustomOp3` over q, k, v tensors of shape `[B, S, H, D]`
//!   (candle's layout after the head split) in f32, f64, f16 or bf16, read in place from
//!   contiguous or strided storage; favor's errors become `candle_core::Error`s.
//! - [`PerformerAttention`]: a layer's attention (FAVOR+, hybrid, calibrated: whatever the
//!   [`Performer`] was built as) on candle tensors, with key masks in candle's convention
//!   ([`key_mask`], [`key_mask_from_bias`]).
//! - [`DecodeState`]: an owned causal decoding state, `step(&mut self, q, k, v)` one token at a
//!   time in constant memory, with snapshots.
//! - [`bert`]: a BERT encoder with pluggable attention (exact, FAVOR+, hybrid with a window,
//!   sinks and calibrated maps) that runs sentence-transformers' all-MiniLM-L6-v2, with the
//!   tokenizer, mean pooling and L2 normalisation sentence-transformers applies.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use favor_candle::{PerformerAttention, Performer};
//! # fn main() -> candle_core::Result<()> {
//! let (b, s, h, d) = (1, 64, 4, 16);
//! let q = Tensor::randn(0f32, 0.5, (b, s, h, d), &Device::Cpu)?;
//! let attn = PerformerAttention::new(
//!     Performer::builder(d).heads(h).features(64).window(8).sinks(1).build().map_err(candle_core::Error::wrap)?,
//! );
//! let out = attn.forward(&q, &q, &q)?; // [B, S, H, D]
//! assert_eq!(out.dims(), &[b, s, h, d]);
//! # Ok(())
//! # }
//! ```
//!
//! ## Glossary
//! - **feature map φ**: the positive random features whose inner products estimate the
//!   softmax kernel `exp(q·k/√d)`; m of them per head (`features`).
//! - **projection W**: the m×d orthogonal random matrix the features are built from, drawn
//!   from a seed and shared by the heads of a layer.
//! - **hybrid attention**: exact softmax weights over the `sinks` first keys and a `window`
//!   of neighbours, random features for every other key, one normaliser.
//! - **data-aware (calibrated) map**: per head, a projection and key shift fitted on sample
//!   queries and keys of the layer (here: the exact model's, on calibration texts).
//! - **prefix state (S, z)**: causal attention's running sums, a [`DecodeState`]'s memory.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Modules in dependency order: each uses only those above it.
mod attention;
pub mod bert;
mod dtype;
mod mask;
mod op;
mod state;
mod view;

pub use attention::PerformerAttention;
pub use favor_tensor::{Kernel, Performer, PerformerBuilder};
pub use mask::{REMOVED_BIAS, key_mask, key_mask_from_bias};
pub use op::FavorAttentionOp;
pub use state::DecodeState;

/// A favor error as candle's: the message is kept (`candle_core::Error::Wrapped`).
pub(crate) fn wrap(e: favor_tensor::Error) -> candle_core::Error {
    candle_core::Error::wrap(e)
}
