//! Key masks in candle's conventions, as the `B × Lk` flags favor-tensor takes.

use candle_core::{DType, Result, Tensor, bail};

/// The largest additive bias [`key_mask_from_bias`] reads as "removed": BERT-style models use
/// `f32::MIN` (candle-transformers), `-1e4` (fp16 checkpoints) or `-inf`.
pub const REMOVED_BIAS: f64 = -1e4;

/// Key flags from an attention mask of shape `[B, Lk]`, the tokenizer's `attention_mask` as
/// candle-transformers' BERT takes it: a nonzero entry keeps that key, zero removes it from
/// every query of its batch element. Any dtype; a NaN is an error.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let mask = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu).unwrap();
/// assert_eq!(favor_candle::key_mask(&mask).unwrap(), [true, true, false]);
/// ```
pub fn key_mask(mask: &Tensor) -> Result<Vec<bool>> {
    let values = flat("attention mask", mask)?;
    values
        .into_iter()
        .map(|x| {
            if x.is_nan() {
                bail!("favor attention: the attention mask holds a NaN")
            }
            Ok(x != 0.0)
        })
        .collect()
}

/// Key flags from an additive attention bias of shape `[B, 1, 1, Lk]` (candle-transformers'
/// and Hugging Face's "extended" mask) or `[B, Lk]`: 0 keeps a key, a bias at or below
/// [`REMOVED_BIAS`] (including `-inf`) removes it. Any other value is an error: FAVOR+
/// keeps or drops keys, it does not add arbitrary biases to the logits.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let bias = Tensor::new(&[[[[0f32, f32::MIN]]]], &Device::Cpu).unwrap();
/// assert_eq!(favor_candle::key_mask_from_bias(&bias).unwrap(), [true, false]);
/// ```
pub fn key_mask_from_bias(bias: &Tensor) -> Result<Vec<bool>> {
    let values = flat("attention bias", bias)?;
    values
        .into_iter()
        .map(|x| match x {
            0.0 => Ok(true),
            x if x <= REMOVED_BIAS => Ok(false),
            x => bail!(
                "favor attention: an attention bias of {x} is neither 0 (keep) nor at most {REMOVED_BIAS} (remove)"
            ),
        })
        .collect()
}

/// A `[B, Lk]` or `[B, 1, 1, Lk]` tensor's entries, row-major, as f64.
fn flat(name: &str, t: &Tensor) -> Result<Vec<f64>> {
    match *t.dims() {
        [_, _] | [_, 1, 1, _] => {}
        ref dims => bail!(
            "favor attention: the {name} must be [batch, keys] or [batch, 1, 1, keys], got {dims:?}"
        ),
    }
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}
