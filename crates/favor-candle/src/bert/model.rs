//! The BERT encoder (embeddings, then layers of self-attention and feed-forward blocks, each
//! with a residual and a layer norm), with the attention of every layer pluggable.

use std::time::{Duration, Instant};

use candle_core::{D, DType, Module, Result, Tensor, bail};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};

use super::config::{BertConfig, HiddenAct};
use crate::PerformerAttention;

/// Which attention the encoder's layers run.
#[derive(Debug, Clone)]
pub enum Attention {
    /// Exact softmax attention (candle matmuls and softmax), as the model was trained.
    Exact,
    /// One [`PerformerAttention`] per layer, in layer order (FAVOR+, hybrid, calibrated: as
    /// each was built; bidirectional, with the model's heads and head dimension).
    Performer(Vec<PerformerAttention>),
}

/// What a forward pass records beside its output.
#[derive(Debug, Default)]
pub struct Probe {
    /// Time spent in the attention of all layers (from the head split of q, k, v to the
    /// merged context), summed.
    pub attention: Duration,
    /// When `Some`, each layer's `(q, k)` in `[B, S, H, D]` layout is pushed here, in layer
    /// order (the inputs of its attention).
    pub queries_keys: Option<Vec<(Tensor, Tensor)>>,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A BERT encoder's weights (Hugging Face names, with or without a `bert.` prefix).
pub struct BertModel {
    config: BertConfig,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for BertModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertModel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BertModel {
    /// Loads the weights from `vb` (f32).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let (hidden, c) = (config.hidden_size, config);
        let e = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let (a, s) = (l.pp("attention"), l.pp("attention.self"));
                Ok(Layer {
                    query: linear(hidden, hidden, s.pp("query"))?,
                    key: linear(hidden, hidden, s.pp("key"))?,
                    value: linear(hidden, hidden, s.pp("value"))?,
                    attention_out: linear(hidden, hidden, a.pp("output.dense"))?,
                    attention_norm: layer_norm(hidden, c.layer_norm_eps, a.pp("output.LayerNorm"))?,
                    intermediate: linear(hidden, c.intermediate_size, l.pp("intermediate.dense"))?,
                    output: linear(c.intermediate_size, hidden, l.pp("output.dense"))?,
                    output_norm: layer_norm(hidden, c.layer_norm_eps, l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: c.clone(),
            word: embedding(c.vocab_size, hidden, e.pp("word_embeddings"))?,
            position: embedding(
                c.max_position_embeddings,
                hidden,
                e.pp("position_embeddings"),
            )?,
            token_type: embedding(c.type_vocab_size, hidden, e.pp("token_type_embeddings"))?,
            embedding_norm: layer_norm(hidden, c.layer_norm_eps, e.pp("LayerNorm"))?,
            layers,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The hidden states `[B, L, hidden]` of `input_ids` (`[B, L]`, u32), with token types
    /// (default all 0) and an attention mask `[B, L]` (nonzero keeps a token; default all),
    /// every layer attending with `attention`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        attention: &Attention,
    ) -> Result<Tensor> {
        self.forward_probed(
            input_ids,
            token_type_ids,
            attention_mask,
            attention,
            &mut Probe::default(),
        )
    }

    /// [`forward`](Self::forward), recording into `probe`.
    pub fn forward_probed(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        attention: &Attention,
        probe: &mut Probe,
    ) -> Result<Tensor> {
        let (_, len) = input_ids.dims2()?;
        if len > self.config.max_position_embeddings {
            bail!(
                "{len} tokens, the model takes at most {}",
                self.config.max_position_embeddings
            );
        }
        if let Attention::Performer(layers) = attention
            && layers.len() != self.layers.len()
        {
            bail!(
                "{} attention layers for a model of {}",
                layers.len(),
                self.layers.len()
            );
        }
        let types = match token_type_ids {
            Some(t) => t.clone(),
            None => input_ids.zeros_like()?,
        };
        let positions = Tensor::arange(0u32, len as u32, input_ids.device())?;
        let x = self
            .word
            .forward(input_ids)?
            .add(&self.token_type.forward(&types)?)?;
        let x = x.broadcast_add(&self.position.forward(&positions)?)?;
        let mut x = self.embedding_norm.forward(&x)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let per_layer = match attention {
                Attention::Exact => None,
                Attention::Performer(layers) => Some(&layers[i]),
            };
            x = self.layer(layer, &x, attention_mask, per_layer, probe)?;
        }
        Ok(x)
    }

    fn layer(
        &self,
        layer: &Layer,
        x: &Tensor,
        mask: Option<&Tensor>,
        performer: Option<&PerformerAttention>,
        probe: &mut Probe,
    ) -> Result<Tensor> {
        let (b, l, hidden) = x.dims3()?;
        let (h, d) = (self.config.num_attention_heads, self.config.head_dim());
        // [B, L, H·D] → [B, L, H, D]: candle's layout, which favor reads in place.
        let split = |t: Tensor| t.reshape((b, l, h, d));
        let q = split(layer.query.forward(x)?)?;
        let k = split(layer.key.forward(x)?)?;
        let v = split(layer.value.forward(x)?)?;
        if let Some(qk) = &mut probe.queries_keys {
            qk.push((q.clone(), k.clone()));
        }
        let start = Instant::now();
        let context = match performer {
            None => exact(&q, &k, &v, mask)?,
            Some(p) => match mask {
                Some(mask) => p.forward_masked(&q, &k, &v, mask)?,
                None => p.forward(&q, &k, &v)?,
            },
        };
        let context = context.reshape((b, l, hidden))?;
        probe.attention += start.elapsed();
        let x = layer
            .attention_norm
            .forward(&(layer.attention_out.forward(&context)? + x)?)?;
        let inner = layer.intermediate.forward(&x)?;
        let inner = match self.config.hidden_act {
            HiddenAct::Gelu => inner.gelu_erf()?,
            HiddenAct::GeluNew => inner.gelu()?,
            HiddenAct::Relu => inner.relu()?,
        };
        layer
            .output_norm
            .forward(&(layer.output.forward(&inner)? + x)?)
    }
}

/// Exact softmax attention of `[B, L, H, D]` tensors: `softmax(q·kᵀ/√d + bias)·v` with the
/// mask's keys removed by a bias of `f32::MIN`, as Hugging Face's BERT does.
fn exact(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let d = q.dim(D::Minus1)?;
    let heads_first = |t: &Tensor| t.transpose(1, 2)?.contiguous();
    let (q, k, v) = (heads_first(q)?, heads_first(k)?, heads_first(v)?);
    let mut scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    if let Some(mask) = mask {
        let (b, l) = mask.dims2()?;
        let keep = mask
            .to_dtype(DType::F32)?
            .ne(0.0)?
            .to_dtype(DType::F32)?
            .reshape((b, 1, 1, l))?;
        let bias = ((1.0 - keep)? * f32::MIN as f64)?;
        scores = scores.broadcast_add(&bias)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v)?.transpose(1, 2)?.contiguous()
}
