//! The element types the adapter runs: candle's f32, f64, f16 and bf16, which are also
//! favor-tensor's [`Element`]s (both use the `half` crate's types).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Result, WithDType, bail};
use favor_tensor::{Element, bf16, f16};

/// An element type both candle and favor-tensor know.
pub(crate) trait Float: WithDType + Element {}
impl Float for f32 {}
impl Float for f64 {}
impl Float for f16 {}
impl Float for bf16 {}

/// An operation on q, k and v slices of one element type.
pub(crate) trait OnSlices {
    type Output;
    fn run<E: Float>(self, q: &[E], k: &[E], v: &[E]) -> Result<Self::Output>;
}

/// Runs `op` on the three storages' slices, which must share one of the four float types.
pub(crate) fn dispatch<O: OnSlices>(
    op: O,
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
) -> Result<O::Output> {
    use CpuStorage as S;
    match (q, k, v) {
        (S::F32(q), S::F32(k), S::F32(v)) => op.run(q, k, v),
        (S::F64(q), S::F64(k), S::F64(v)) => op.run(q, k, v),
        (S::F16(q), S::F16(k), S::F16(v)) => op.run(q, k, v),
        (S::BF16(q), S::BF16(k), S::BF16(v)) => op.run(q, k, v),
        _ => bail!(
            "favor attention: q, k and v must be of one type, f32, f64, f16 or bf16; got {:?}, {:?} and {:?}",
            q.dtype(),
            k.dtype(),
            v.dtype()
        ),
    }
}

/// A zeroed output buffer of `len` elements; running out of memory is an error, not an abort.
pub(crate) fn zeros<E: Float>(len: usize) -> Result<Vec<E>> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| {
        candle_core::Error::Msg(format!(
            "favor attention: cannot allocate the output ({len} elements)"
        ))
    })?;
    out.resize(len, <E as WithDType>::from_f64(0.0));
    Ok(out)
}
