//! candle storage as favor-tensor views: a `[B, S, H, D]` tensor of any strides read as the
//! `[B, H, S, D]` view favor attends over, in place whenever its last axis is contiguous.

use std::borrow::Cow;

use candle_core::{Layout, Result, bail};
use favor_tensor::TensorView;

use crate::dtype::Float;

/// The `[B, S, H, D]` dimensions of `name`'s layout.
pub(crate) fn bshd(name: &str, layout: &Layout) -> Result<[usize; 4]> {
    match *layout.dims() {
        [b, s, h, d] => Ok([b, s, h, d]),
        ref dims => {
            bail!("favor attention: {name} must be [batch, seq, heads, dim], got shape {dims:?}")
        }
    }
}

/// One input's elements (borrowed, or gathered when the dim axis is strided) with its
/// `[B, H, S, D]` shape and strides.
pub(crate) struct Input<'a, E: Float> {
    data: Cow<'a, [E]>,
    shape: [usize; 4],
    strides: [usize; 4],
}

impl<'a, E: Float> Input<'a, E> {
    /// `name`'s `[B, S, H, D]` elements in `data` as `layout` places them.
    pub(crate) fn new(name: &str, data: &'a [E], layout: &Layout) -> Result<Self> {
        let [b, s, h, d] = bshd(name, layout)?;
        let &[sb, ss, sh, sd] = layout.stride() else {
            bail!(
                "favor attention: {name} has {} strides for 4 dims",
                layout.stride().len()
            );
        };
        let start = layout.start_offset();
        let Some(tail) = data.get(start..) else {
            bail!(
                "favor attention: {name} starts at {start}, beyond its {} elements",
                data.len()
            );
        };
        if d <= 1 || sd == 1 {
            return Ok(Self {
                data: Cow::Borrowed(tail),
                shape: [b, h, s, d],
                strides: [sb, sh, ss, sd],
            });
        }
        // Rows must be contiguous for favor's kernels: gather a row-major [B, S, H, D] copy.
        let mut rows = Vec::new();
        rows.try_reserve_exact(b * s * h * d).map_err(|_| {
            candle_core::Error::Msg(format!("favor attention: cannot allocate a copy of {name}"))
        })?;
        for ib in 0..b {
            for is in 0..s {
                for ih in 0..h {
                    for id in 0..d {
                        let at = ib * sb + is * ss + ih * sh + id * sd;
                        match tail.get(at) {
                            Some(&x) => rows.push(x),
                            None => {
                                bail!("favor attention: {name}'s layout reaches past its storage")
                            }
                        }
                    }
                }
            }
        }
        Ok(Self {
            data: Cow::Owned(rows),
            shape: [b, h, s, d],
            strides: [s * h * d, d, h * d, 1],
        })
    }

    /// The `[B, H, S, D]` view favor-tensor reads.
    pub(crate) fn view(&self) -> Result<TensorView<'_, E>> {
        TensorView::with_strides(self.shape, self.strides, &self.data).map_err(crate::wrap)
    }

    /// Whether the elements are read in place (no copy was made).
    #[cfg(test)]
    pub(crate) fn is_borrowed(&self) -> bool {
        matches!(self.data, Cow::Borrowed(_))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::Input;

    fn borrowed(t: &Tensor) -> bool {
        let (storage, layout) = t.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            unreachable!()
        };
        let data = cpu.as_slice::<f32>().unwrap();
        let input = Input::new("x", data, layout).unwrap();
        input.view().unwrap();
        input.is_borrowed()
    }

    #[test]
    fn inputs_are_read_in_place_unless_the_dim_axis_is_strided() {
        let x = Tensor::zeros((2, 8, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(borrowed(&x));
        assert!(borrowed(
            &x.transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .transpose(1, 2)
                .unwrap()
        ));
        assert!(borrowed(&x.narrow(1, 2, 5).unwrap()));
        assert!(!borrowed(
            &x.transpose(2, 3)
                .unwrap()
                .contiguous()
                .unwrap()
                .transpose(2, 3)
                .unwrap()
        ));
    }
}
