//! `config.json` of a Hugging Face BERT checkpoint.

use std::path::Path;

use candle_core::{Result, bail};
use serde::Deserialize;

/// The hidden activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// GELU with erf (Hugging Face's `gelu`).
    Gelu,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    /// ReLU.
    Relu,
}

/// The fields of a BERT `config.json` the encoder reads (others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Word-piece vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states (384 for MiniLM-L6).
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; the head dimension is `hidden_size / num_attention_heads`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// The feed-forward activation.
    pub hidden_act: HiddenAct,
    /// The longest input in tokens (absolute position embeddings).
    pub max_position_embeddings: usize,
    /// Token-type (segment) vocabulary size.
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
    /// "absolute" is the only kind supported.
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and checks `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
        config
            .check()
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// The dimension of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn check(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.position_embedding_type != "absolute" {
            bail!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            );
        }
        Ok(())
    }
}
