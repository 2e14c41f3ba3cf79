//! The writer: `.npy` bytes as `np.save` writes them.

use crate::header::{MAGIC, shape_repr};
use crate::{Element, NpyError};
use std::path::Path;

/// NumPy aligns the data start so that the file can be memory-mapped for any dtype.
pub(crate) const ARRAY_ALIGN: usize = 64;
/// NumPy leaves room after the dict for the first axis to grow to this many digits, so an
/// appending writer can rewrite the header in place; we copy it to match `np.save` exactly.
pub(crate) const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// Encodes `data` (C order) with `shape` as a little-endian `.npy`, byte for byte as current
/// NumPy's `np.save` would: format 1.0, or 2.0 when the header outgrows 1.0's u16 length.
///
/// # Panics
///
/// If `data.len()` is not the product of `shape` (a caller bug, not a data error), or if the
/// header would exceed 4 GiB.
pub fn encode<T: Element>(shape: &[usize], data: &[T]) -> Vec<u8> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    assert_eq!(
        count,
        Some(data.len()),
        "npy::encode: shape {} does not hold {} elements",
        shape_repr(shape),
        data.len()
    );
    let mut out = preamble(T::DESCR, shape);
    out.reserve(std::mem::size_of_val(data));
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(data));
    } else {
        for &x in data {
            x.extend_le(&mut out);
        }
    }
    out
}

/// Encodes a little-endian f32 C-order `.npy` (format 1.0, or 2.0 if the header needs it).
///
/// # Panics
///
/// As [`encode`].
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    encode(shape, data)
}

/// Encodes a little-endian f64 C-order `.npy`.
///
/// # Panics
///
/// As [`encode`].
pub fn encode_f64(shape: &[usize], data: &[f64]) -> Vec<u8> {
    encode(shape, data)
}

/// Encodes a little-endian f16 C-order `.npy`.
///
/// # Panics
///
/// As [`encode`].
pub fn encode_f16(shape: &[usize], data: &[half::f16]) -> Vec<u8> {
    encode(shape, data)
}

/// Writes `data` (C order) with `shape` to `path`, the bytes [`encode`] would give.
///
/// # Panics
///
/// As [`encode`].
pub fn write<T: Element>(path: &Path, shape: &[usize], data: &[T]) -> Result<(), NpyError> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    write_to(&mut w, shape, data)?;
    std::io::Write::flush(&mut w)?;
    Ok(())
}

/// Writes the bytes [`encode`] would give to `w`, without building them in memory (an
/// output as large as the inputs needs no second copy).
///
/// # Panics
///
/// As [`encode`].
pub fn write_to<T: Element>(
    w: &mut impl std::io::Write,
    shape: &[usize],
    data: &[T],
) -> Result<(), NpyError> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    assert_eq!(
        count,
        Some(data.len()),
        "npy::write_to: shape {} does not hold {} elements",
        shape_repr(shape),
        data.len()
    );
    w.write_all(&preamble(T::DESCR, shape))?;
    if cfg!(target_endian = "little") {
        w.write_all(bytemuck::cast_slice(data))?;
    } else {
        let mut buf = Vec::new();
        for block in data.chunks(4096) {
            buf.clear();
            block.iter().for_each(|&x| x.extend_le(&mut buf));
            w.write_all(&buf)?;
        }
    }
    Ok(())
}

/// Writes `data` (f32, C order) with `shape` to `path`.
///
/// # Panics
///
/// As [`encode`].
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    write(path, shape, data)
}

/// Magic, version, header length and the padded header, ready for the data to follow.
pub(crate) fn preamble(descr: &str, shape: &[usize]) -> Vec<u8> {
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_repr(shape)
    );
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        dict.extend(std::iter::repeat_n(
            ' ',
            GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits),
        ));
    }
    // The header proper ends in '\n', which counts towards its length.
    let hlen = dict.len() + 1;
    let (version, len_bytes) = {
        let v1_total = hlen + padding(MAGIC.len() + 2 + 2 + hlen);
        match u16::try_from(v1_total) {
            Ok(n) => (1u8, n.to_le_bytes().to_vec()),
            Err(_) => {
                let v2_total = hlen + padding(MAGIC.len() + 2 + 4 + hlen);
                let n = u32::try_from(v2_total).expect("npy::encode: header over 4 GiB");
                (2u8, n.to_le_bytes().to_vec())
            }
        }
    };
    let pad = padding(MAGIC.len() + 2 + len_bytes.len() + hlen);
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + len_bytes.len() + hlen + pad);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// NumPy's padding rule: always 1..=64 spaces, so even an aligned header gets a full block.
pub(crate) fn padding(unpadded: usize) -> usize {
    ARRAY_ALIGN - unpadded % ARRAY_ALIGN
}
