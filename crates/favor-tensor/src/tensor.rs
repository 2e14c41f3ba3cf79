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
    /// Rounds an f64 to this type (to nearest, ties to even; overflow gives ±∞).
    fn from_f64(x: f64) -> Self;
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
    fn from_f64(x: f64) -> Self {
        x as f32
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
    fn from_f64(x: f64) -> Self {
        x
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
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
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
    fn from_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
}

/// Elements of a `[batch, heads, seq, dim]` shape, or an error naming the tensor.
pub(crate) fn element_count(tensor: &'static str, shape: [usize; 4]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| Error::Shape {
            tensor,
            expected: "a shape whose element count fits usize".into(),
            got: shape.to_vec(),
        })
}

/// Element strides of a row-major `[batch, heads, seq, dim]` layout of `shape`.
fn contiguous_strides(shape: [usize; 4]) -> [usize; 4] {
    let [_, h, l, d] = shape;
    [h * l * d, l * d, d, 1]
}

/// Checks that `strides` over `shape` stay inside `len` elements, that a row (the `dim`
/// axis) is contiguous, and, for a view written through (`exclusive`), that no two indices
/// share an element.
fn check_layout(
    tensor: &'static str,
    shape: [usize; 4],
    strides: [usize; 4],
    len: usize,
    exclusive: bool,
) -> Result<()> {
    let bad = |why: String| {
        Err(Error::Config(format!(
            "{tensor}: shape {shape:?} with strides {strides:?} over {len} elements: {why}"
        )))
    };
    if shape[3] > 1 && strides[3] != 1 {
        return bad("the dim axis must have stride 1 (rows are read as slices)".into());
    }
    if shape.contains(&0) {
        return Ok(());
    }
    // The largest offset, in u128: huge strides must not wrap around to a small one.
    let last: u128 = shape
        .iter()
        .zip(strides)
        .map(|(&n, s)| (n as u128 - 1) * s as u128)
        .sum();
    if last >= len as u128 {
        return bad(format!("the last element is at {last}, beyond the data"));
    }
    if exclusive {
        // Axes by increasing stride: each stride must clear everything the smaller ones span.
        let mut axes: Vec<(usize, usize)> = (0..4)
            .filter(|&a| shape[a] > 1)
            .map(|a| (strides[a], shape[a]))
            .collect();
        axes.sort_unstable();
        let mut span = 1usize;
        for (stride, n) in axes {
            if stride < span {
                return bad("two indices share an element (overlapping strides)".into());
            }
            span += (n - 1) * stride;
        }
    }
    Ok(())
}

/// A borrowed `[batch, heads, seq, dim]` tensor of any [`Element`]: what
/// [`Performer::forward`](crate::Performer::forward) reads. Zero-copy over the caller's
/// slice, row-major by default or with explicit element strides (rows, the `dim` axis, must
/// be contiguous), so that a runtime's `[batch, seq, heads, dim]` memory is read in place
/// ([`from_bshd`](Self::from_bshd)).
///
/// ```
/// use favor_tensor::TensorView;
/// let data = vec![0.5f32; 2 * 3 * 4];
/// let v = TensorView::new([1, 2, 3, 4], &data).unwrap();
/// assert_eq!(v.head(0, 1).len(), 12);
/// assert!(TensorView::new([1, 2, 3, 5], &data).is_err());
/// // The same memory read as [batch 1, seq 2, heads 3, dim 4]: shape [1, 3, 2, 4], strided.
/// let t = TensorView::from_bshd([1, 2, 3, 4], &data).unwrap();
/// assert_eq!((t.shape(), t.strides()), ([1, 3, 2, 4], [24, 4, 12, 1]));
/// assert_eq!(t.row(0, 2, 1), &data[20..24]); // head 2 of token 1
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a, E = f32> {
    shape: [usize; 4],
    strides: [usize; 4],
    data: &'a [E],
}

impl<'a, E: Element> TensorView<'a, E> {
    /// A row-major view of `data` with `shape` = `[batch, heads, seq, dim]`; the length must
    /// match.
    pub fn new(shape: [usize; 4], data: &'a [E]) -> Result<Self> {
        if element_count("tensor", shape)? != data.len() {
            return Err(Error::DataLength {
                tensor: "tensor",
                shape: shape.to_vec(),
                len: data.len(),
            });
        }
        Ok(Self {
            shape,
            strides: contiguous_strides(shape),
            data,
        })
    }

    /// A view of `data` with `shape` = `[batch, heads, seq, dim]` where element
    /// `[b, h, i, j]` sits at `b·s₀ + h·s₁ + i·s₂ + j·s₃` for `strides` = `[s₀, s₁, s₂, s₃]`.
    /// `s₃` must be 1 (unless `dim` is 1) and every element must lie inside `data`; strides
    /// may repeat elements (a broadcast), since a view is only read.
    pub fn with_strides(shape: [usize; 4], strides: [usize; 4], data: &'a [E]) -> Result<Self> {
        check_layout("tensor", shape, strides, data.len(), false)?;
        Ok(Self {
            shape,
            strides,
            data,
        })
    }

    /// A view of `[batch, seq, heads, dim]` row-major memory (candle's, flash-attn's and most
    /// runtimes' layout) as the `[batch, heads, seq, dim]` tensor attention reads, without a
    /// copy; `bshd` is the memory's shape.
    pub fn from_bshd(bshd: [usize; 4], data: &'a [E]) -> Result<Self> {
        let [b, s, h, d] = bshd;
        if element_count("tensor", bshd)? != data.len() {
            return Err(Error::DataLength {
                tensor: "tensor",
                shape: bshd.to_vec(),
                len: data.len(),
            });
        }
        Self::with_strides([b, h, s, d], [s * h * d, d, h * d, 1], data)
    }

    /// A zero-copy row-major view of native-endian bytes (e.g. a memory-mapped file). The
    /// bytes must be aligned for `E` and exactly as long as the shape needs; otherwise an
    /// error (copy them with [`Tensor::from_bytes`] instead).
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

    /// Element strides of the four axes.
    pub fn strides(&self) -> [usize; 4] {
        self.strides
    }

    /// Whether the view is row-major `[batch, heads, seq, dim]` over all of its data.
    pub fn is_contiguous(&self) -> bool {
        self.strides == contiguous_strides(self.shape)
            && Some(self.data.len()) == element_count("tensor", self.shape).ok()
    }

    /// The slice the view reads (all elements, row-major, when
    /// [`is_contiguous`](Self::is_contiguous)).
    pub fn data(&self) -> &'a [E] {
        self.data
    }

    /// Row `i` of head `(batch, head)`: `dim` elements.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn row(&self, batch: usize, head: usize, i: usize) -> &'a [E] {
        let [b, h, l, d] = self.shape;
        assert!(
            batch < b && head < h && i < l,
            "row ({batch}, {head}, {i}) out of range"
        );
        let [sb, sh, sl, _] = self.strides;
        let start = batch * sb + head * sh + i * sl;
        &self.data[start..start + d]
    }

    /// One head's `seq × dim` rows as one slice, if they are one contiguous block (always,
    /// for a row-major view).
    pub fn try_head(&self, batch: usize, head: usize) -> Option<&'a [E]> {
        let [b, h, l, d] = self.shape;
        if batch >= b || head >= h || (l > 1 && self.strides[2] != d) {
            return None;
        }
        let start = batch * self.strides[0] + head * self.strides[1];
        self.data.get(start..start + l * d)
    }

    /// One head's `seq × dim` rows of a row-major view.
    ///
    /// # Panics
    /// If `batch` or `head` is out of range, or the head's rows are not one contiguous block
    /// (use [`try_head`](Self::try_head) or [`row`](Self::row) for strided views).
    pub fn head(&self, batch: usize, head: usize) -> &'a [E] {
        self.try_head(batch, head)
            .unwrap_or_else(|| panic!("head ({batch}, {head}) out of range or not contiguous"))
    }

    /// Every row in `[batch, heads, seq]` order.
    pub(crate) fn rows(&self) -> impl Iterator<Item = &'a [E]> + '_ {
        let [b, h, l, _] = self.shape;
        (0..b * h * l).map(move |r| self.row(r / (h * l), r / l % h, r % l))
    }

    /// The elements as raw bytes (native endianness), zero-copy: those of
    /// [`data`](Self::data).
    pub fn as_bytes(&self) -> &'a [u8] {
        bytemuck::cast_slice(self.data)
    }
}

/// A mutable `[batch, heads, seq, dim]` view of any [`Element`], row-major or strided (rows
/// contiguous, no element reachable by two indices): where
/// [`Performer::forward_into`](crate::Performer::forward_into) writes.
///
/// ```
/// use favor_tensor::TensorViewMut;
/// let mut data = vec![0f32; 2 * 3 * 4];
/// let mut v = TensorViewMut::from_bshd([1, 2, 3, 4], &mut data).unwrap();
/// v.row_mut(0, 2, 1).fill(1.0); // head 2 of token 1
/// assert_eq!(data[20..24], [1.0; 4]);
/// let mut overlapping = vec![0f32; 8];
/// assert!(TensorViewMut::with_strides([1, 2, 2, 4], [0, 2, 4, 1], &mut overlapping).is_err());
/// ```
#[derive(Debug, PartialEq)]
pub struct TensorViewMut<'a, E = f32> {
    shape: [usize; 4],
    strides: [usize; 4],
    data: &'a mut [E],
}

impl<'a, E: Element> TensorViewMut<'a, E> {
    /// A row-major view of `data` with `shape` = `[batch, heads, seq, dim]`; the length must
    /// match.
    pub fn new(shape: [usize; 4], data: &'a mut [E]) -> Result<Self> {
        TensorView::new(shape, data)?;
        Ok(Self {
            shape,
            strides: contiguous_strides(shape),
            data,
        })
    }

    /// A strided view, as [`TensorView::with_strides`], refusing strides that reach one
    /// element by two indices.
    pub fn with_strides(shape: [usize; 4], strides: [usize; 4], data: &'a mut [E]) -> Result<Self> {
        check_layout("out", shape, strides, data.len(), true)?;
        Ok(Self {
            shape,
            strides,
            data,
        })
    }

    /// A view of `[batch, seq, heads, dim]` row-major memory as `[batch, heads, seq, dim]`;
    /// see [`TensorView::from_bshd`].
    pub fn from_bshd(bshd: [usize; 4], data: &'a mut [E]) -> Result<Self> {
        let [b, s, h, d] = bshd;
        let strides = TensorView::from_bshd(bshd, data)?.strides();
        Self::with_strides([b, h, s, d], strides, data)
    }

    /// `[batch, heads, seq, dim]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Element strides of the four axes.
    pub fn strides(&self) -> [usize; 4] {
        self.strides
    }

    /// Whether the view is row-major over all of its data.
    pub fn is_contiguous(&self) -> bool {
        self.strides == contiguous_strides(self.shape)
            && Some(self.data.len()) == element_count("out", self.shape).ok()
    }

    /// Row `i` of head `(batch, head)`, mutable.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn row_mut(&mut self, batch: usize, head: usize, i: usize) -> &mut [E] {
        let [b, h, l, d] = self.shape;
        assert!(
            batch < b && head < h && i < l,
            "row ({batch}, {head}, {i}) out of range"
        );
        let [sb, sh, sl, _] = self.strides;
        let start = batch * sb + head * sh + i * sl;
        &mut self.data[start..start + d]
    }

    /// The whole slice, row-major when [`is_contiguous`](Self::is_contiguous).
    pub(crate) fn data_mut(&mut self) -> &mut [E] {
        self.data
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
            strides: contiguous_strides(self.shape),
            data: &self.data,
        }
    }

    /// A mutable view (e.g. for [`Performer::forward_into`](crate::Performer::forward_into)).
    pub fn view_mut(&mut self) -> TensorViewMut<'_, f32> {
        TensorViewMut {
            shape: self.shape,
            strides: contiguous_strides(self.shape),
            data: &mut self.data,
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
