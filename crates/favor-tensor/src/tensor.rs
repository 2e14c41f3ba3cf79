//! The owned tensor, borrowed views, and the element types they convert between.

use crate::alloc::{try_collect, try_zeros};
use crate::error::{Error, Result};
use half::{bf16, f16};

/// A storage element favor-tensor reads: `f32`, `f64`, [`struct@f16`] or [`bf16`]. Attention always
/// accumulates in `f32` (or `f64`, see [`Precision`](crate::Precision)); narrow types are
/// widened a head at a time, never a whole tensor.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// Widens to f64 (exact for every implementor).
    fn to_f64(self) -> f64;
    /// Converts to f32 (exact except for f64, which rounds to nearest).
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this type (to nearest, ties to even; overflow gives ±∞).
    fn from_f32(x: f32) -> Self;
    /// Converts a slice into `dst` (same length) as [`to_f32`](Self::to_f32) would; f16 and
    /// bf16 use `half`'s vectorised (F16C where available) slice conversion.
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
}

impl Element for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl Element for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn from_f32(x: f32) -> Self {
        f64::from(x)
    }
}

impl Element for f16 {
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl Element for bf16 {
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

/// Elements of a `[batch, heads, seq, dim]` shape, or an error naming the tensor.
pub(crate) fn element_count(tensor: &'static str, shape: [usize; 4]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| Error::Config(format!("{tensor}: shape {shape:?} overflows usize")))
}

/// A borrowed, row-major `[batch, heads, seq, dim]` tensor of any [`Element`]: what
/// [`Performer::forward`](crate::Performer::forward) reads. Zero-copy over the caller's slice.
///
/// ```
/// use favor_tensor::TensorView;
/// let data = vec![0.5f32; 2 * 3 * 4];
/// let v = TensorView::new([1, 2, 3, 4], &data).unwrap();
/// assert_eq!(v.head(0, 1).len(), 12);
/// assert!(TensorView::new([1, 2, 3, 5], &data).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a, E = f32> {
    shape: [usize; 4],
    data: &'a [E],
}

impl<'a, E: Element> TensorView<'a, E> {
    /// A view of `data` with `shape` = `[batch, heads, seq, dim]`; the length must match.
    pub fn new(shape: [usize; 4], data: &'a [E]) -> Result<Self> {
        if element_count("tensor", shape)? != data.len() {
            return Err(Error::DataLength {
                tensor: "tensor",
                shape: shape.to_vec(),
                len: data.len(),
            });
        }
        Ok(Self { shape, data })
    }

    /// A zero-copy view of native-endian bytes (e.g. a memory-mapped file). The bytes must be
    /// aligned for `E` and exactly as long as the shape needs; otherwise an error (copy them
    /// with [`Tensor::from_bytes`] instead).
    ///
    /// ```
    /// use favor_tensor::TensorView;
    /// let data = [1.0f32, 2.0, 3.0, 4.0];
    /// let bytes: &[u8] = bytemuck::cast_slice(&data);
    /// let v = TensorView::<f32>::from_bytes([1, 1, 2, 2], bytes).unwrap();
    /// assert_eq!(v.data(), &data);
    /// assert!(TensorView::<f32>::from_bytes([1, 1, 2, 2], &bytes[1..13]).is_err());
    /// ```
    pub fn from_bytes(shape: [usize; 4], bytes: &'a [u8]) -> Result<Self> {
        let data = bytemuck::try_cast_slice(bytes).map_err(|e| {
            Error::Config(format!(
                "tensor bytes: cannot view {} bytes as {}: {e:?}",
                bytes.len(),
                core::any::type_name::<E>()
            ))
        })?;
        Self::new(shape, data)
    }

    /// `[batch, heads, seq, dim]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// All elements, row-major.
    pub fn data(&self) -> &'a [E] {
        self.data
    }

    /// One head's `seq × dim` rows.
    ///
    /// # Panics
    /// If `batch` or `head` is out of range.
    pub fn head(&self, batch: usize, head: usize) -> &'a [E] {
        let [b, h, l, d] = self.shape;
        assert!(batch < b && head < h, "head ({batch}, {head}) out of range");
        let n = l * d;
        let start = (batch * h + head) * n;
        &self.data[start..start + n]
    }

    /// The elements as raw bytes (native endianness), zero-copy.
    pub fn as_bytes(&self) -> &'a [u8] {
        bytemuck::cast_slice(self.data)
    }
}

/// An owned, row-major `[batch, heads, seq, dim]` tensor of `f32`: what favor-tensor returns.
///
/// ```
/// use favor_tensor::Tensor;
/// use half::f16;
/// let t = Tensor::from_vec([1, 1, 2, 2], vec![1.0, 2.5, -3.0, 0.1]).unwrap();
/// let h: Vec<f16> = t.to_f16();
/// let back = Tensor::from_elements([1, 1, 2, 2], &h).unwrap();
/// assert_eq!(back.data()[..3], [1.0, 2.5, -3.0]); // exact in f16
/// assert!((back.data()[3] - 0.1).abs() < 1e-4); // 0.1 rounds
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: [usize; 4],
    data: Vec<f32>,
}

impl Tensor {
    /// Takes ownership of `data` with `shape` = `[batch, heads, seq, dim]`.
    pub fn from_vec(shape: [usize; 4], data: Vec<f32>) -> Result<Self> {
        TensorView::new(shape, &data)?;
        Ok(Self { shape, data })
    }

    /// Copies (and widens or rounds to f32) a slice of any element type.
    pub fn from_elements<E: Element>(shape: [usize; 4], data: &[E]) -> Result<Self> {
        TensorView::new(shape, data)?;
        Ok(Self {
            shape,
            data: try_collect("tensor", data.iter().map(|&x| x.to_f32()))?,
        })
    }

    /// Reads native-endian f32 bytes (any alignment).
    pub fn from_bytes(shape: [usize; 4], bytes: &[u8]) -> Result<Self> {
        if !bytes.len().is_multiple_of(4) {
            return Err(Error::Config(format!(
                "tensor bytes: {} is not a multiple of 4",
                bytes.len()
            )));
        }
        let data = try_collect(
            "tensor",
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
        )?;
        Self::from_vec(shape, data)
    }

    /// A tensor of zeros; [`Error::Alloc`] if the memory is not available.
    pub fn zeros(shape: [usize; 4]) -> Result<Self> {
        Self::zeros_for("tensor", shape)
    }

    /// [`zeros`](Self::zeros), naming the tensor in an allocation error.
    pub(crate) fn zeros_for(what: &'static str, shape: [usize; 4]) -> Result<Self> {
        let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let n = n.ok_or(Error::Alloc { what, bytes: None })?;
        Ok(Self {
            shape,
            data: try_zeros(what, n)?,
        })
    }

    /// `[batch, heads, seq, dim]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// All elements, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// All elements, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The elements, consuming the tensor.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// A borrowed view.
    pub fn view(&self) -> TensorView<'_, f32> {
        TensorView {
            shape: self.shape,
            data: &self.data,
        }
    }

    /// One head's `seq × dim` rows; see [`TensorView::head`].
    pub fn head(&self, batch: usize, head: usize) -> &[f32] {
        self.view().head(batch, head)
    }

    /// The elements as raw bytes (native endianness), zero-copy.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }

    /// Rounds every element to another type (to nearest, ties to even).
    pub fn to_elements<E: Element>(&self) -> Vec<E> {
        self.data.iter().map(|&x| E::from_f32(x)).collect()
    }

    /// Rounds to IEEE half precision.
    pub fn to_f16(&self) -> Vec<f16> {
        self.to_elements()
    }

    /// Rounds to bfloat16.
    pub fn to_bf16(&self) -> Vec<bf16> {
        self.to_elements()
    }
}

impl<'a> From<&'a Tensor> for TensorView<'a, f32> {
    fn from(t: &'a Tensor) -> Self {
        t.view()
    }
}
