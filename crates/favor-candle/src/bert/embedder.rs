//! Sentence embeddings: tokenizer → encoder → mean pooling → L2 normalisation, as
//! sentence-transformers runs all-MiniLM-L6-v2.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Result, Tensor, bail};
use candle_nn::VarBuilder;
use favor_tensor::{Kernel, Performer, TensorView};
use tokenizers::{Tokenizer, TruncationParams};

use super::config::BertConfig;
use super::model::{Attention, BertModel, Probe};
use crate::PerformerAttention;

/// The folder `scripts/fetch-minilm.sh` fills: `$FAVOR_MODEL_DIR`, else
/// `$XDG_CACHE_HOME/favor/all-MiniLM-L6-v2`, else `~/.cache/favor/all-MiniLM-L6-v2`.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FAVOR_MODEL_DIR") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("favor").join("all-MiniLM-L6-v2")
}

/// The files a model folder must hold.
pub const MODEL_FILES: [&str; 3] = ["model.safetensors", "config.json", "tokenizer.json"];

/// What attention an [`Embedder`] runs, before it is built for the model's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionSpec {
    /// Exact softmax attention.
    Exact,
    /// FAVOR+ with `features` positive orthogonal random features; layer i draws its
    /// projection from `seed + i`.
    Favor {
        /// m, features per head.
        features: usize,
        /// The feature map: [`Kernel::Softmax`] (SM+), or [`Kernel::Gerf`] / [`Kernel::Saderf`]
        /// fitted per call on its queries and keys (lower variance; no calibration).
        kernel: Kernel,
        /// The seed of layer 0's projection.
        seed: u64,
    },
    /// Hybrid attention: exact weights over the first `sinks` tokens and the `window`
    /// neighbours on each side, `features` random features for every other key.
    Hybrid {
        /// m, features per head.
        features: usize,
        /// Neighbours on each side taken exactly.
        window: usize,
        /// Leading tokens (`[CLS]`) taken exactly by every query.
        sinks: usize,
        /// The feature map for the keys outside the window, as for [`Favor`](Self::Favor).
        kernel: Kernel,
        /// The seed of layer 0's projection.
        seed: u64,
    },
}

impl AttentionSpec {
    /// A short name for reports: `exact`, `favor m=256`, `hybrid w=32 s=1 m=64`.
    pub fn label(&self) -> String {
        match *self {
            Self::Exact => "exact".into(),
            Self::Favor {
                features, kernel, ..
            } => format!("favor m={features}{}", kernel_label(kernel)),
            Self::Hybrid {
                features,
                window,
                sinks,
                kernel,
                ..
            } => format!(
                "hybrid w={window} s={sinks} m={features}{}",
                kernel_label(kernel)
            ),
        }
    }
}

/// `""` for the default softmax map, else ` gerf`, ` saderf`, ...
fn kernel_label(kernel: Kernel) -> String {
    match kernel {
        Kernel::Softmax => String::new(),
        Kernel::Gerf => " gerf".into(),
        Kernel::Saderf => " saderf".into(),
        other => format!(" {other:?}").to_lowercase(),
    }
}

/// A sentence embedder: all-MiniLM-L6-v2 (or another BERT checkpoint with a `tokenizer.json`)
/// with pluggable attention, mean pooling over the tokens and L2 normalisation.
///
/// ```no_run
/// use favor_candle::Kernel;
/// use favor_candle::bert::{AttentionSpec, Embedder, default_model_dir};
/// # fn main() -> candle_core::Result<()> {
/// let mut embedder = Embedder::load(&default_model_dir())?; // scripts/fetch-minilm.sh
/// let exact = embedder.embed("Linear attention in Rust.")?;
/// let spec = AttentionSpec::Hybrid { features: 64, window: 32, sinks: 1, kernel: Kernel::Softmax, seed: 0 };
/// embedder.set_attention(embedder.attention(spec, None)?);
/// let hybrid = embedder.embed("Linear attention in Rust.")?;
/// let cosine: f32 = exact.iter().zip(&hybrid).map(|(a, b)| a * b).sum();
/// assert!(cosine > 0.9);
/// # Ok(())
/// # }
/// ```
pub struct Embedder {
    tokenizer: Tokenizer,
    model: BertModel,
    attention: Attention,
    max_tokens: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`, with exact
    /// attention. Texts are truncated to 512 tokens (or the model's positions, if fewer),
    /// whatever truncation the tokenizer file sets, and never padded. A missing file is an
    /// error naming `scripts/fetch-minilm.sh`.
    pub fn load(dir: &Path) -> Result<Self> {
        for name in MODEL_FILES {
            if !dir.join(name).is_file() {
                bail!(
                    "{}: no {name}; fetch all-MiniLM-L6-v2 with scripts/fetch-minilm.sh \
                     (it prints the folder it fills; FAVOR_MODEL_DIR chooses it)",
                    dir.display()
                );
            }
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
        let model = BertModel::load(vb, &config)?;
        let max_tokens = config.max_position_embeddings.min(512);
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
            candle_core::Error::Msg(format!("{}: {e}", dir.join("tokenizer.json").display()))
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(candle_core::Error::msg)?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            model,
            attention: Attention::Exact,
            max_tokens,
        })
    }

    /// The encoder.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// The attention the encoder runs now.
    pub fn current_attention(&self) -> &Attention {
        &self.attention
    }

    /// Makes the encoder run `attention`.
    pub fn set_attention(&mut self, attention: Attention) {
        self.attention = attention;
    }

    /// The longest input in tokens, `[CLS]` and `[SEP]` included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// `text`'s token ids, `[CLS]` … `[SEP]`, truncated to [`max_tokens`](Self::max_tokens).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(candle_core::Error::msg)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// `text`'s word pieces without `[CLS]`, `[SEP]` or truncation, to cut a long text into
    /// chunks of token ids.
    pub fn word_pieces(&self, text: &str) -> Result<Vec<u32>> {
        let mut whole = self.tokenizer.clone();
        whole
            .with_truncation(None)
            .map_err(candle_core::Error::msg)?;
        let encoding = whole.encode(text, false).map_err(candle_core::Error::msg)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The ids of `[CLS]` and `[SEP]` in this tokenizer's vocabulary.
    pub fn cls_sep(&self) -> Result<(u32, u32)> {
        let id = |t: &str| {
            self.tokenizer
                .token_to_id(t)
                .ok_or_else(|| candle_core::Error::Msg(format!("the tokenizer has no {t} token")))
        };
        Ok((id("[CLS]")?, id("[SEP]")?))
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The embedding of `text`: 384 floats (the hidden size) of unit length.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        self.embed_ids(&self.tokenize(text)?)
    }

    /// The embedding of one sequence of token ids (with its `[CLS]` and `[SEP]`).
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.embed_ids_probed(ids, &mut Probe::default())
    }

    /// [`embed_ids`](Self::embed_ids), recording into `probe` (the time in attention, the
    /// layers' queries and keys).
    pub fn embed_ids_probed(&self, ids: &[u32], probe: &mut Probe) -> Result<Vec<f32>> {
        if ids.is_empty() {
            bail!("an empty sequence of token ids has no embedding");
        }
        if ids.len() > self.max_tokens {
            bail!(
                "{} token ids, the model takes at most {}",
                ids.len(),
                self.max_tokens
            );
        }
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let hidden = self
            .model
            .forward_probed(&input, None, None, &self.attention, probe)?;
        // Mean pooling over the tokens (all are real: no padding), then L2 normalisation
        // (sentence-transformers' Normalize: x / max(|x|, 1e-12)).
        let pooled = hidden.mean(1)?.squeeze(0)?;
        let norm = pooled
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_scalar::<f32>()?
            .max(1e-12);
        (pooled / norm as f64)?.to_vec1::<f32>()
    }

    /// Every layer's `(q, k)` (`[1, L, H, D]` each) for `ids` under exact attention.
    pub fn exact_queries_keys(&self, ids: &[u32]) -> Result<Vec<(Tensor, Tensor)>> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let mut probe = Probe {
            queries_keys: Some(Vec::new()),
            ..Probe::default()
        };
        self.model
            .forward_probed(&input, None, None, &Attention::Exact, &mut probe)?;
        Ok(probe.queries_keys.unwrap_or_default())
    }

    /// The attention of `spec` for this model's layers. With `calibration` (token-id
    /// sequences, other texts than the ones to embed), each layer's FAVOR+ or hybrid
    /// attention gets a data-aware map per head, fitted on that layer's queries and keys
    /// under exact attention over those sequences, joined into one sample (at most
    /// [`CALIBRATION_TOKENS`] tokens).
    pub fn attention(
        &self,
        spec: AttentionSpec,
        calibration: Option<&[Vec<u32>]>,
    ) -> Result<Attention> {
        let (features, window, sinks, kernel, seed) = match spec {
            AttentionSpec::Exact => {
                if calibration.is_some() {
                    bail!("exact attention has nothing to calibrate");
                }
                return Ok(Attention::Exact);
            }
            AttentionSpec::Favor {
                features,
                kernel,
                seed,
            } => (features, None, 0, kernel, seed),
            AttentionSpec::Hybrid {
                features,
                window,
                sinks,
                kernel,
                seed,
            } => (features, Some(window), sinks, kernel, seed),
        };
        let samples = match calibration {
            Some(texts) => Some(self.calibration_samples(texts)?),
            None => None,
        };
        let c = self.model.config();
        (0..c.num_hidden_layers)
            .map(|layer| {
                let mut b = Performer::builder(c.head_dim())
                    .heads(c.num_attention_heads)
                    .features(features)
                    .kernel(kernel)
                    .seed(seed.wrapping_add(layer as u64));
                if let Some(w) = window {
                    b = b.window(w).sinks(sinks);
                }
                if let Some(samples) = &samples {
                    let (q, k) = &samples[layer];
                    let dims = [
                        1,
                        q.len() / (c.hidden_size),
                        c.num_attention_heads,
                        c.head_dim(),
                    ];
                    let q = TensorView::from_bshd(dims, q).map_err(crate::wrap)?;
                    let k = TensorView::from_bshd(dims, k).map_err(crate::wrap)?;
                    b = b.calibrate(q, k);
                }
                let performer = b
                    .build()
                    .map_err(|e| candle_core::Error::Msg(format!("layer {layer}: {e}")))?;
                Ok(PerformerAttention::new(performer))
            })
            .collect::<Result<Vec<_>>>()
            .map(Attention::Performer)
    }

    /// Per layer, the calibration texts' queries and keys under exact attention, joined
    /// along the sequence (`[1, L, H, D]` row-major data).
    fn calibration_samples(&self, texts: &[Vec<u32>]) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let layers = self.model.config().num_hidden_layers;
        let mut joined: Vec<(Vec<Tensor>, Vec<Tensor>)> = vec![(Vec::new(), Vec::new()); layers];
        let mut tokens = 0;
        for ids in texts.iter().filter(|ids| !ids.is_empty()) {
            let take = ids.len().min(CALIBRATION_TOKENS - tokens);
            if take == 0 {
                break;
            }
            for (layer, (q, k)) in self
                .exact_queries_keys(&ids[..take])?
                .into_iter()
                .enumerate()
            {
                joined[layer].0.push(q);
                joined[layer].1.push(k);
            }
            tokens += take;
        }
        if tokens == 0 {
            bail!("calibration needs at least one non-empty text");
        }
        joined
            .into_iter()
            .map(|(q, k)| {
                let flat = |t: Vec<Tensor>| Tensor::cat(&t, 1)?.flatten_all()?.to_vec1::<f32>();
                Ok((flat(q)?, flat(k)?))
            })
            .collect()
    }
}

/// The most calibration tokens [`Embedder::attention`] joins into one layer's sample.
pub const CALIBRATION_TOKENS: usize = 4096;

/// Cosine similarity of two embeddings (1 for the same direction), in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
