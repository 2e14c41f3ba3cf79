//! FAVOR+ attention as a candle `CustomOp3`.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, bail};
use favor_tensor::{Performer, TensorViewMut};

use crate::dtype::{Float, OnSlices, dispatch, zeros};
use crate::view::{Input, bshd};

/// The attention of a [`Performer`] (FAVOR+, hybrid or calibrated, bidirectional or causal)
/// as a candle `CustomOp3` on the CPU: q `[B, Sq, H, D]`, k `[B, Sk, Hkv, D]` and v
/// `[B, Sk, Hkv, Dv]` of one type (f32, f64, f16 or bf16) give `[B, Sq, H, Dv]` of that
/// type. Inputs are read in place in any strides whose last axis is contiguous (others are
/// gathered once); the output is computed in the performer's precision and rounded once.
///
/// Most code calls it through [`PerformerAttention`](crate::PerformerAttention); the op is
/// public for graphs that apply custom ops themselves:
///
/// ```
/// use candle_core::{Device, Tensor};
/// use favor_candle::{FavorAttentionOp, Performer};
/// let x = Tensor::randn(0f32, 0.5, (2, 16, 4, 8), &Device::Cpu).unwrap(); // [B, S, H, D]
/// let p = Performer::builder(8).heads(4).features(32).build().unwrap();
/// let out = x.apply_op3_no_bwd(&x, &x, &FavorAttentionOp::new(&p)).unwrap();
/// assert_eq!(out.dims(), &[2, 16, 4, 8]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FavorAttentionOp<'a> {
    performer: &'a Performer,
    key_mask: Option<&'a [bool]>,
}

impl<'a> FavorAttentionOp<'a> {
    /// The op for `performer`'s attention, no mask.
    pub fn new(performer: &'a Performer) -> Self {
        Self {
            performer,
            key_mask: None,
        }
    }

    /// Removes keys: `B × Sk` flags, `false` drops that key from every query of its batch
    /// element ([`key_mask`](crate::key_mask) reads them from candle's masks).
    pub fn with_key_mask(mut self, key_mask: &'a [bool]) -> Self {
        self.key_mask = Some(key_mask);
        self
    }

    /// Checks the `[B, S, H, D]` shapes against the performer, in candle's axis order (favor
    /// itself reports `[B, H, S, D]`), and returns the output's.
    fn out_shape(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<[usize; 4]> {
        let p = self.performer;
        let [b, sq, h, d] = bshd("q", q)?;
        let [bk, sk, hk, dk] = bshd("k", k)?;
        let [bv, sv, hv, dv] = bshd("v", v)?;
        let (heads, kv, dim, vdim) = (p.heads(), p.kv_heads(), p.dim(), p.value_dim());
        if [h, d] != [heads, dim] {
            bail!(
                "favor attention: q must be [batch, seq, {heads}, {dim}], got {:?}",
                q.dims()
            );
        }
        if [bk, hk, dk] != [b, kv, dim] {
            bail!(
                "favor attention: k must be [{b}, seq, {kv}, {dim}], got {:?}",
                k.dims()
            );
        }
        if [bv, sv, hv, dv] != [b, sk, kv, vdim] {
            bail!(
                "favor attention: v must be [{b}, {sk}, {kv}, {vdim}], got {:?}",
                v.dims()
            );
        }
        Ok([b, sq, h, dv])
    }
}

/// One call, once the element type is known.
struct Call<'o, 'l> {
    op: &'o FavorAttentionOp<'o>,
    layouts: [&'l Layout; 3],
    out: [usize; 4],
}

impl OnSlices for Call<'_, '_> {
    type Output = CpuStorage;

    fn run<E: Float>(self, q: &[E], k: &[E], v: &[E]) -> Result<CpuStorage> {
        let [lq, lk, lv] = self.layouts;
        let (q, k, v) = (
            Input::new("q", q, lq)?,
            Input::new("k", k, lk)?,
            Input::new("v", v, lv)?,
        );
        let mut out = zeros::<E>(self.out.iter().product())?;
        let view = TensorViewMut::from_bshd(self.out, &mut out).map_err(crate::wrap)?;
        self.op
            .performer
            .forward_into(q.view()?, k.view()?, v.view()?, self.op.key_mask, view)
            .map_err(crate::wrap)?;
        Ok(E::to_cpu_storage_owned(out))
    }
}

impl CustomOp3 for FavorAttentionOp<'_> {
    fn name(&self) -> &'static str {
        "favor-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = self.out_shape(l1, l2, l3)?;
        let call = Call {
            op: self,
            layouts: [l1, l2, l3],
            out,
        };
        Ok((dispatch(call, s1, s2, s3)?, Shape::from(out.to_vec())))
    }
}
