//! # favor-tensor
//!
//! FAVOR+ (Performer) attention in one call: multi-head `[batch, heads, seq, dim]` views of
//! any strides (so `[batch, seq, heads, dim]` memory is read in place) and element type
//! (f32, f64, f16, bf16), grouped key/value heads (GQA/MQA), outputs into caller buffers,
//! owned causal decoding streams with snapshots, and one error type. A [`Performer`] is
//! `Send + Sync` (`forward` takes `&self`); a [`Stream`] is `'static + Send`. Built on
//! [`favor_core`] (the no_std engine) and [`favor_simd`] (the SIMD kernels, detected at run
//! time); heads run in parallel on rayon with the `parallel` feature (default).
//!
//! ```
//! use favor_tensor::{Kernel, Performer, TensorView};
//! let (b, h, l, d) = (1, 8, 512, 64);
//! let q: Vec<f32> = (0..b * h * l * d).map(|i| ((i % 97) as f32 - 48.0) / 200.0).collect();
//! let q = TensorView::new([b, h, l, d], &q).unwrap();
//! let attn = Performer::builder(d)
//!     .heads(h)
//!     .features(256)         // m random features (default 256)
//!     .kernel(Kernel::Softmax) // positive random features, the default
//!     .seed(7)
//!     .build()
//!     .unwrap();
//! let out = attn.forward(q, q, q).unwrap(); // bidirectional
//! assert_eq!(out.shape(), [b, h, l, d]);
//! ```
//!
//! Shapes are checked before anything runs; a mismatch names the tensor and both shapes:
//!
//! ```
//! use favor_tensor::{Performer, TensorView};
//! let x = vec![0f32; 2 * 16];
//! let x = TensorView::new([1, 1, 2, 16], &x).unwrap();
//! let attn = Performer::builder(8).build().unwrap();
//! let err = attn.forward(x, x, x).unwrap_err();
//! assert_eq!(err.to_string(), "q: expected shape [batch, 1, seq, 8], got [1, 1, 2, 16]");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Modules in dependency order: each uses only those above it.
mod alloc;
mod backend;
mod builder;
mod config;
mod data_aware;
mod error;
mod exec;
mod performer;
mod prepared;
mod range;
mod stream;
mod tensor;
mod weights;

pub use builder::PerformerBuilder;
pub use config::{
    Backend, DEFAULT_CHUNK, DEFAULT_FEATURES, Kernel, Precision, Projection, Redraw, redraw_seed,
};
pub use data_aware::DataAwareMap;
pub use error::{Error, Result};
pub use favor_core::{Compat, HybridShape, RowNorms};
pub use half::{bf16, f16};
pub use performer::Performer;
pub use stream::{STREAM_SNAPSHOT_VERSION, Stream};
pub use tensor::{Element, Tensor, TensorView, TensorViewMut};
pub use weights::Weights;

/// The README's examples (tensor API and no_std core), compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
