//! A layer's FAVOR+ attention on candle tensors.

use candle_core::{Result, Tensor, bail};
use favor_tensor::Performer;

use crate::op::FavorAttentionOp;
use crate::state::DecodeState;

/// A layer's attention over candle tensors in `[B, S, H, D]` layout (what a model has after
/// `reshape((b, s, heads, head_dim))` of its q, k and v projections: read in place, no
/// transpose), computed by a [`Performer`]: FAVOR+, hybrid (`window`, `sinks`), with a
/// calibrated data-aware map, bidirectional or causal, as it was built. `forward` takes
/// `&self`, so one module serves many threads.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use favor_candle::{PerformerAttention, Performer, key_mask};
/// # fn main() -> candle_core::Result<()> {
/// let (b, s, h, d) = (2, 32, 4, 16);
/// let q = Tensor::randn(0f32, 0.5, (b, s, h, d), &Device::Cpu)?;
/// let p = Performer::builder(d).heads(h).features(64).build().map_err(candle_core::Error::wrap)?;
/// let attn = PerformerAttention::new(p);
/// // The second sequence is 20 tokens long, padded to 32.
/// let lens = [32u32, 20];
/// let mask: Vec<u32> = lens.iter().flat_map(|&n| (0..s as u32).map(move |i| (i < n) as u32)).collect();
/// let mask = Tensor::from_vec(mask, (b, s), &Device::Cpu)?;
/// let out = attn.forward_masked(&q, &q, &q, &mask)?;
/// assert_eq!(out.dims(), &[b, s, h, d]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PerformerAttention {
    performer: Performer,
}

impl PerformerAttention {
    /// The attention `performer` computes (its heads, dims, kernel and options).
    pub fn new(performer: Performer) -> Self {
        Self { performer }
    }

    /// The performer this module runs.
    pub fn performer(&self) -> &Performer {
        &self.performer
    }

    /// Attention of q `[B, Sq, H, D]` over k `[B, Sk, Hkv, D]` and v `[B, Sk, Hkv, Dv]`
    /// (one dtype of f32, f64, f16, bf16, on the CPU): `[B, Sq, H, Dv]` of that dtype.
    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        on_cpu(q, k, v)?;
        q.apply_op3_no_bwd(k, v, &FavorAttentionOp::new(&self.performer))
    }

    /// [`forward`](Self::forward) with the keys an attention mask `[B, Sk]` (nonzero keeps a
    /// key, as candle-transformers' BERT takes it) or an additive bias `[B, 1, 1, Sk]` (0 or
    /// a large negative) leaves; see [`key_mask`](crate::key_mask) and
    /// [`key_mask_from_bias`](crate::key_mask_from_bias). A query with no key left outputs zeros.
    pub fn forward_masked(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        on_cpu(q, k, v)?;
        let flags = if mask.rank() == 4 {
            crate::key_mask_from_bias(mask)?
        } else {
            crate::key_mask(mask)?
        };
        q.apply_op3_no_bwd(
            k,
            v,
            &FavorAttentionOp::new(&self.performer).with_key_mask(&flags),
        )
    }

    /// An owned decoding state for `batch` sequences (the performer must be causal): see
    /// [`DecodeState`].
    pub fn decode_state(&self, batch: usize) -> Result<DecodeState> {
        DecodeState::new(&self.performer, batch)
    }
}

/// favor runs on the CPU: other devices get an error that says how to move the tensors.
pub(crate) fn on_cpu(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        if !t.device().is_cpu() {
            bail!(
                "favor attention runs on the CPU; {name} is on {:?} (move it with .to_device(&Device::Cpu))",
                t.device().location()
            );
        }
    }
    Ok(())
}
