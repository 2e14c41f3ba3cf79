//! The reader: a `.npy` from bytes, a file or a stream, checked against its header before
//! anything is allocated.

use crate::header::{
    Dtype, Header, header_past_end, header_text, parse_header, parse_preamble, shape_repr,
};
use crate::{Array, Data, NpyError, format_err, try_filled, try_with_capacity};
use std::io::Read;
use std::path::Path;

/// Parses `.npy` bytes. Never panics and never allocates more than the input implies.
pub fn parse(bytes: &[u8]) -> Result<Array, NpyError> {
    read_from(bytes, Some(bytes.len() as u64))
}

/// Reads a `.npy` file. Only the bytes its header announces are read (and one more, which
/// reveals trailing data), so a device or pipe that never ends, such as `/dev/zero`, is an
/// error instead of a read until memory runs out; a regular file's length is checked
/// against the header before anything is allocated, and every buffer is reserved fallibly.
pub fn read(path: &Path) -> Result<Array, NpyError> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let len = meta.is_file().then_some(meta.len());
    read_from(std::io::BufReader::new(file), len)
}

/// Reads one array from `r`, whose total length is `len` when known (a slice, a regular
/// file), `None` for a pipe or a device.
pub(crate) fn read_from<R: Read>(mut r: R, len: Option<u64>) -> Result<Array, NpyError> {
    // The preamble: magic and version, then a 2- or 4-byte header length. A short read means
    // the input ended, so `head` then holds all of it, as the error messages assume.
    let mut head = Vec::new();
    read_up_to(&mut r, &mut head, 8)?;
    let length_bytes = match head.get(6..8) {
        Some(&[1, 0]) => 2,
        Some(&[2 | 3, 0]) => 4,
        _ => 0,
    };
    read_up_to(&mut r, &mut head, length_bytes)?;
    let (major, header_start, header_len) = parse_preamble(&head)?;
    let header_end = header_start
        .checked_add(header_len)
        .ok_or_else(|| header_past_end(header_len, head.len()))?;
    if let Some(len) = len
        && header_end as u64 > len
    {
        return Err(header_past_end(header_len, len));
    }
    read_up_to(&mut r, &mut head, header_len)?;
    if head.len() < header_end {
        return Err(header_past_end(header_len, head.len()));
    }
    let header = parse_header(&header_text(major, &head[header_start..])?)?;
    let (count, nbytes) = data_size(&header)?;
    let truncated = |got: u64| {
        format_err(format!(
            "truncated: header says {count} elements ({nbytes} bytes) but only {got} bytes of data"
        ))
    };
    let data = match len {
        Some(len) => {
            let available = len - header_end as u64;
            if available < nbytes as u64 {
                return Err(truncated(available));
            }
            if available > nbytes as u64 {
                return Err(format_err(format!(
                    "{} trailing bytes after the data",
                    available - nbytes as u64
                )));
            }
            read_data(&mut r, &header, count, nbytes)
        }
        None => {
            // No length to check first: gather the bytes as they come (never more than the
            // header announces, plus one), then decode them.
            let mut bytes = Vec::new();
            read_up_to(&mut r, &mut bytes, nbytes.saturating_add(1))?;
            if bytes.len() < nbytes {
                return Err(truncated(bytes.len() as u64));
            }
            if bytes.len() > nbytes {
                return Err(format_err(format!(
                    "the data goes on past the {nbytes} bytes its header announces"
                )));
            }
            read_data(&mut &bytes[..], &header, count, nbytes)
        }
    }
    .map_err(|e| match e {
        ReadError::Npy(e) => e,
        ReadError::Short(got) => truncated(got as u64),
    })?;
    Ok(Array {
        shape: header.shape,
        data,
    })
}

/// Appends up to `n` bytes from `r` to `buf`, fewer only where `r` ends.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> Result<(), NpyError> {
    r.take(n as u64).read_to_end(buf)?;
    Ok(())
}

/// Elements and bytes of the data the header describes.
pub(crate) fn data_size(header: &Header) -> Result<(usize, usize), NpyError> {
    let itemsize = header.dtype.itemsize();
    // Bounding the product of the non-zero dims (times the item size) by isize::MAX means
    // any caller can multiply the shape in any order without overflow, even when a zero dim
    // makes the element count 0.
    let too_large = || format_err(format!("shape {} too large", shape_repr(&header.shape)));
    let mut nonzero = Some(itemsize);
    for &d in header.shape.iter().filter(|&&d| d != 0) {
        nonzero = nonzero.and_then(|p| p.checked_mul(d));
    }
    if nonzero.is_none_or(|b| b > isize::MAX as usize) {
        return Err(too_large());
    }
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d));
    match (count, count.and_then(|c| c.checked_mul(itemsize))) {
        (Some(count), Some(nbytes)) => Ok((count, nbytes)),
        _ => Err(too_large()),
    }
}

/// Why [`read_data`] failed: the input ended after this many bytes, or anything else.
pub(crate) enum ReadError {
    Short(usize),
    Npy(NpyError),
}

impl From<NpyError> for ReadError {
    fn from(e: NpyError) -> Self {
        ReadError::Npy(e)
    }
}

/// The `count` elements (`nbytes` bytes) of the data, in C order.
pub(crate) fn read_data(
    r: &mut impl Read,
    header: &Header,
    count: usize,
    nbytes: usize,
) -> Result<Data, ReadError> {
    let big = header.big_endian;
    let data = match header.dtype {
        Dtype::F16 => Data::F16(read_elements(r, count, nbytes, big)?),
        Dtype::F32 => Data::F32(read_elements(r, count, nbytes, big)?),
        Dtype::F64 => Data::F64(read_elements(r, count, nbytes, big)?),
    };
    if !header.fortran_order {
        return Ok(data);
    }
    Ok(match data {
        Data::F16(v) => Data::F16(fortran_to_c(&v, &header.shape)?),
        Data::F32(v) => Data::F32(fortran_to_c(&v, &header.shape)?),
        Data::F64(v) => Data::F64(fortran_to_c(&v, &header.shape)?),
    })
}

/// Reads `count` elements straight into their vector (no copy of the bytes first), then
/// swaps their bytes if the file's byte order is not the machine's.
pub(crate) fn read_elements<T: bytemuck::Pod>(
    r: &mut impl Read,
    count: usize,
    nbytes: usize,
    big_endian: bool,
) -> Result<Vec<T>, ReadError> {
    let mut v: Vec<T> = try_filled(count, T::zeroed())?;
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
    let mut got = 0;
    while got < nbytes {
        match r.read(&mut bytes[got..]) {
            Ok(0) => return Err(ReadError::Short(got)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(NpyError::Io(e).into()),
        }
    }
    if big_endian != cfg!(target_endian = "big") {
        for e in bytes.chunks_exact_mut(size_of::<T>()) {
            e.reverse();
        }
    }
    Ok(v)
}

/// Reorders column-major `src` into row-major. `src` holds exactly the elements `shape`
/// implies, which the caller has already made sure of.
pub(crate) fn fortran_to_c<T: Copy>(src: &[T], shape: &[usize]) -> Result<Vec<T>, NpyError> {
    let mut out = try_with_capacity(src.len())?;
    // With at most one axis longer than 1, both orders lay the elements out identically.
    if src.is_empty() || shape.iter().filter(|&&d| d > 1).count() <= 1 {
        out.extend_from_slice(src);
        return Ok(out);
    }
    let mut strides = Vec::with_capacity(shape.len());
    let mut stride = 1usize;
    for &d in shape {
        strides.push(stride);
        stride = stride.saturating_mul(d);
    }
    // Walk the C-order index like an odometer (last axis fastest), carrying the Fortran
    // offset along so each step costs O(1) amortised.
    let mut index = vec![0usize; shape.len()];
    let mut offset = 0usize;
    for _ in 0..src.len() {
        // Unreachable when `src` matches `shape`; an error beats a panic regardless.
        let x = src
            .get(offset)
            .ok_or_else(|| format_err("internal error: Fortran-order index out of range"))?;
        out.push(*x);
        for ((i, &d), &s) in index.iter_mut().zip(shape).zip(&strides).rev() {
            *i += 1;
            offset = offset.wrapping_add(s);
            if *i < d {
                break;
            }
            *i = 0;
            offset = offset.wrapping_sub(d.wrapping_mul(s));
        }
    }
    Ok(out)
}
