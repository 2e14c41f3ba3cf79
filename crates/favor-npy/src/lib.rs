//! Reading and writing NumPy `.npy` files (format versions 1–3; f16/f32/f64).
//!
//! The reader faces untrusted bytes (it is fuzzed: the `npy` target in `fuzz/`), so it never
//! panics, never trusts a length from the header before the bytes behind it are known to
//! exist, and bounds the nesting of the header's Python literal so a hostile header cannot
//! exhaust the stack. Errors are typed ([`NpyError`]) and word themselves in one line.
//!
//! The writer reproduces current NumPy (`np.save`) byte for byte: sorted dict keys, the
//! spare "growth" spaces after the dict, and a preamble padded to a multiple of 64 bytes.
//!
//! ```
//! use favor_npy::{Data, encode, parse};
//!
//! let bytes = encode(&[2, 3], &[0f32, 1.0, 2.0, 3.0, 4.0, 5.0]);
//! assert_eq!(bytes.len(), 128 + 6 * 4); // a 128-byte preamble, as np.save writes it
//! let array = parse(&bytes)?;
//! assert_eq!(array.shape, [2, 3]);
//! assert_eq!(array.data, Data::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
//! assert_eq!(array.to_f64()?[5], 5.0);
//! assert!(parse(b"not an npy file").is_err());
//! # Ok::<(), favor_npy::NpyError>(())
//! ```
//!
//! Inside, in dependency order: `header` (the preamble and the header's Python literal), then
//! the reader (`read`) and the writer (`write`), whose functions are re-exported here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod header;
mod read;
#[cfg(test)]
mod tests;
mod write;

pub use read::{parse, read};
pub use write::{encode, encode_f16, encode_f32, encode_f64, write, write_f32, write_to};

/// The element data of an array, in its stored type.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// `float16`.
    F16(Vec<half::f16>),
    /// `float32`.
    F32(Vec<f32>),
    /// `float64`.
    F64(Vec<f64>),
}

/// An array read from a `.npy` file, in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The shape; `[]` for a scalar.
    pub shape: Vec<usize>,
    /// The elements, `shape.iter().product()` of them.
    pub data: Data,
}

impl Array {
    /// The elements converted to f32 (f64 rounds to nearest); [`NpyError::Alloc`] when the
    /// copy does not fit in memory.
    pub fn to_f32(&self) -> Result<Vec<f32>, NpyError> {
        let mut out = try_filled(self.len(), 0f32)?;
        match &self.data {
            Data::F16(v) => half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[..], &mut out),
            Data::F32(v) => out.copy_from_slice(v),
            Data::F64(v) => out.iter_mut().zip(v).for_each(|(o, &x)| *o = x as f32),
        }
        Ok(out)
    }
    /// The elements converted to f64 (exact); [`NpyError::Alloc`] when the copy does not
    /// fit in memory.
    pub fn to_f64(&self) -> Result<Vec<f64>, NpyError> {
        let mut out = try_filled(self.len(), 0f64)?;
        match &self.data {
            Data::F16(v) => half::slice::HalfFloatSliceExt::convert_to_f64_slice(&v[..], &mut out),
            Data::F32(v) => out.iter_mut().zip(v).for_each(|(o, &x)| *o = f64::from(x)),
            Data::F64(v) => out.copy_from_slice(v),
        }
        Ok(out)
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F16(v) => v.len(),
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
        }
    }
    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The first element (C order) for which `bad` holds, as its flat index and its value
    /// in f64; nothing is copied.
    pub fn find(&self, bad: impl Fn(f64) -> bool) -> Option<(usize, f64)> {
        fn first<T: Copy>(
            v: &[T],
            wide: impl Fn(T) -> f64,
            bad: impl Fn(f64) -> bool,
        ) -> Option<(usize, f64)> {
            v.iter()
                .map(|&x| wide(x))
                .enumerate()
                .find(|&(_, x)| bad(x))
        }
        match &self.data {
            Data::F16(v) => first(v, half::f16::to_f64, bad),
            Data::F32(v) => first(v, f64::from, bad),
            Data::F64(v) => first(v, |x| x, bad),
        }
    }
    /// The dtype's NumPy name: "float16", "float32" or "float64".
    pub fn dtype_name(&self) -> &'static str {
        match self.data {
            Data::F16(_) => "float16",
            Data::F32(_) => "float32",
            Data::F64(_) => "float64",
        }
    }
}

/// Why a `.npy` file could not be read or written. `Display` is one line without the file
/// name (the caller adds it).
#[derive(Debug)]
#[non_exhaustive]
pub enum NpyError {
    /// Reading or writing the file failed.
    Io(std::io::Error),
    /// Anything else wrong with the bytes, described in one line.
    Format(String),
    /// The data does not fit in memory: `bytes` (`None`: more than `usize` can count).
    Alloc {
        /// Bytes asked for.
        bytes: Option<usize>,
    },
}

impl std::fmt::Display for NpyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NpyError::Io(e) => write!(f, "{e}"),
            NpyError::Format(s) => f.write_str(s),
            NpyError::Alloc { bytes } => f.write_str(
                &favor_tensor::Error::Alloc {
                    what: "its data",
                    bytes: *bytes,
                }
                .to_string(),
            ),
        }
    }
}

impl std::error::Error for NpyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NpyError::Io(e) => Some(e),
            NpyError::Format(_) | NpyError::Alloc { .. } => None,
        }
    }
}

impl From<std::io::Error> for NpyError {
    fn from(e: std::io::Error) -> Self {
        NpyError::Io(e)
    }
}

/// An element type this module can write: `half::f16`, `f32` or `f64`.
///
/// Sealed: the `.npy` dtypes the reader accepts are exactly these three.
pub trait Element: bytemuck::Pod + sealed::Sealed {
    /// The little-endian NumPy descr written for this type, e.g. `"<f4"`.
    const DESCR: &'static str;
}

mod sealed {
    /// Keeps [`super::Element`] closed and carries the big-endian-host fallback privately.
    pub trait Sealed: Copy {
        fn extend_le(self, out: &mut Vec<u8>);
    }
    impl Sealed for half::f16 {
        fn extend_le(self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
    }
    impl Sealed for f32 {
        fn extend_le(self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
    }
    impl Sealed for f64 {
        fn extend_le(self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
    }
}

impl Element for half::f16 {
    const DESCR: &'static str = "<f2";
}
impl Element for f32 {
    const DESCR: &'static str = "<f4";
}
impl Element for f64 {
    const DESCR: &'static str = "<f8";
}

pub(crate) fn format_err(msg: impl Into<String>) -> NpyError {
    NpyError::Format(msg.into())
}

/// An empty vector with room for `n` elements, or [`NpyError::Alloc`].
pub(crate) fn try_with_capacity<T>(n: usize) -> Result<Vec<T>, NpyError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| NpyError::Alloc {
        bytes: n.checked_mul(size_of::<T>()),
    })?;
    Ok(v)
}

/// `n` copies of `value`, or [`NpyError::Alloc`].
pub(crate) fn try_filled<T: Clone>(n: usize, value: T) -> Result<Vec<T>, NpyError> {
    let mut v = try_with_capacity(n)?;
    v.resize(n, value);
    Ok(v)
}
