//! Reading and writing NumPy `.npy` files (format versions 1–3; f16/f32/f64).
//!
//! The reader faces untrusted bytes (it is fuzzed), so it never panics, never trusts a length
//! from the header before the bytes behind it are known to exist, and bounds the nesting of
//! the header's Python literal so a hostile header cannot exhaust the stack.
//!
//! The writer reproduces current NumPy (`np.save`) byte for byte: sorted dict keys, the
//! spare "growth" spaces after the dict, and a preamble padded to a multiple of 64 bytes.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

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
            NpyError::Alloc { bytes } => {
                f.write_str(&crate::args::cannot_allocate("its data", *bytes))
            }
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

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// NumPy aligns the data start so that the file can be memory-mapped for any dtype.
const ARRAY_ALIGN: usize = 64;
/// NumPy leaves room after the dict for the first axis to grow to this many digits, so an
/// appending writer can rewrite the header in place; we copy it to match `np.save` exactly.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Real headers nest at most a few levels (structured dtypes); the bound only exists so a
/// hostile header of a million `(` cannot overflow the stack.
const MAX_DEPTH: usize = 32;
/// Untrusted text quoted in an error message is cut to this many characters.
const EXCERPT_CHARS: usize = 40;

fn format_err(msg: impl Into<String>) -> NpyError {
    NpyError::Format(msg.into())
}

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
fn read_from<R: Read>(mut r: R, len: Option<u64>) -> Result<Array, NpyError> {
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
fn read_up_to(r: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> Result<(), NpyError> {
    r.take(n as u64).read_to_end(buf)?;
    Ok(())
}

/// Elements and bytes of the data the header describes.
fn data_size(header: &Header) -> Result<(usize, usize), NpyError> {
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
enum ReadError {
    Short(usize),
    Npy(NpyError),
}

impl From<NpyError> for ReadError {
    fn from(e: NpyError) -> Self {
        ReadError::Npy(e)
    }
}

/// The `count` elements (`nbytes` bytes) of the data, in C order.
fn read_data(
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
fn read_elements<T: bytemuck::Pod>(
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

/// An empty vector with room for `n` elements, or [`NpyError::Alloc`].
fn try_with_capacity<T>(n: usize) -> Result<Vec<T>, NpyError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| NpyError::Alloc {
        bytes: n.checked_mul(size_of::<T>()),
    })?;
    Ok(v)
}

/// `n` copies of `value`, or [`NpyError::Alloc`].
fn try_filled<T: Clone>(n: usize, value: T) -> Result<Vec<T>, NpyError> {
    let mut v = try_with_capacity(n)?;
    v.resize(n, value);
    Ok(v)
}

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

// ---------------------------------------------------------------------------------------
// Writer internals.

/// Python's `repr` of a shape tuple: `()`, `(5,)`, `(2, 3)`.
fn shape_repr(shape: &[usize]) -> String {
    let mut s = String::from("(");
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{d}");
    }
    if shape.len() == 1 {
        s.push(',');
    }
    s.push(')');
    s
}

/// Magic, version, header length and the padded header, ready for the data to follow.
fn preamble(descr: &str, shape: &[usize]) -> Vec<u8> {
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
fn padding(unpadded: usize) -> usize {
    ARRAY_ALIGN - unpadded % ARRAY_ALIGN
}

// ---------------------------------------------------------------------------------------
// Reader internals.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dtype {
    F16,
    F32,
    F64,
}

impl Dtype {
    fn itemsize(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

#[derive(Debug)]
struct Header {
    dtype: Dtype,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Checks magic and version; returns the major version, where the header starts and its
/// length. `bytes` is the start of the input (all of it, if shorter than 12 bytes).
fn parse_preamble(bytes: &[u8]) -> Result<(u8, usize, usize), NpyError> {
    let truncated = || {
        format_err(format!(
            "truncated preamble: only {} bytes (not a complete .npy file)",
            bytes.len()
        ))
    };
    if bytes.is_empty() {
        return Err(format_err("empty file (not a .npy file)"));
    }
    match bytes.get(..MAGIC.len()) {
        Some(magic) if magic == MAGIC => {}
        None if MAGIC.starts_with(bytes) => return Err(truncated()),
        _ => return Err(format_err("not a .npy file (bad magic bytes)")),
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(truncated()),
    };
    match (major, minor) {
        (1, 0) => match bytes.get(8..10) {
            Some(&[a, b]) => Ok((major, 10, usize::from(u16::from_le_bytes([a, b])))),
            _ => Err(truncated()),
        },
        (2 | 3, 0) => match bytes.get(8..12) {
            Some(&[a, b, c, d]) => {
                let n = u32::from_le_bytes([a, b, c, d]);
                // On a 16-bit target the length cannot fit; on others this always succeeds.
                let n = usize::try_from(n).map_err(|_| header_past_end(n, bytes.len()))?;
                Ok((major, 12, n))
            }
            _ => Err(truncated()),
        },
        _ => Err(format_err(format!(
            "unsupported .npy format version {major}.{minor} (expected 1.0, 2.0 or 3.0)"
        ))),
    }
}

/// The header's text: UTF-8 in version 3, latin-1 before.
fn header_text(major: u8, raw: &[u8]) -> Result<String, NpyError> {
    if major == 3 {
        Ok(std::str::from_utf8(raw)
            .map_err(|_| format_err("header is not valid UTF-8"))?
            .to_owned())
    } else {
        // Versions 1 and 2 are latin-1, whose bytes are exactly the first 256 code points.
        Ok(raw.iter().map(|&b| char::from(b)).collect())
    }
}

fn header_past_end(len: impl std::fmt::Display, file_len: impl std::fmt::Display) -> NpyError {
    format_err(format!(
        "header length {len} runs past the end of the file ({file_len} bytes)"
    ))
}

/// Validates the header dict and extracts what the reader needs.
fn parse_header(text: &str) -> Result<Header, NpyError> {
    let mut p = Parser { s: text, pos: 0 };
    p.skip_ws();
    if p.peek() != Some(b'{') {
        return Err(p.err("expected the header to be a dict '{...}'"));
    }
    let dict = p.value(0)?;
    p.skip_ws();
    if p.pos < text.len() {
        return Err(p.err("unexpected text after the header dict"));
    }
    let Value::Dict(entries) = dict.value else {
        return Err(p.err("expected the header to be a dict '{...}'"));
    };

    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in entries {
        let Value::Str(name) = &key.value else {
            return Err(format_err(format!(
                "malformed .npy header: key {} is not a string",
                excerpt(p.text(&key))
            )));
        };
        let slot = match name.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            other => {
                return Err(format_err(format!(
                    "unknown key '{}' in .npy header (expected 'descr', 'fortran_order' and 'shape')",
                    excerpt(other)
                )));
            }
        };
        if slot.is_some() {
            return Err(format_err(format!(
                "duplicate key '{}' in .npy header",
                excerpt(name)
            )));
        }
        *slot = Some(value);
    }
    let missing = |k: &str| format_err(format!(".npy header has no '{k}' key"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran = fortran.ok_or_else(|| missing("fortran_order"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;

    let (dtype, big_endian) = parse_descr(&descr, &p)?;
    let Value::Bool(fortran_order) = fortran.value else {
        return Err(format_err(format!(
            "'fortran_order' must be True or False, got {}",
            excerpt(p.text(&fortran))
        )));
    };
    let bad_shape = || {
        format_err(format!(
            "'shape' must be a tuple of non-negative integers, got {}",
            excerpt(p.text(&shape))
        ))
    };
    let Value::Tuple(items) = &shape.value else {
        return Err(bad_shape());
    };
    let mut dims = Vec::with_capacity(items.len());
    for item in items {
        let too_large = || format_err(format!("shape {} too large", excerpt(p.text(&shape))));
        match item.value {
            // `-0` is still a Python zero.
            Value::Int {
                negative,
                magnitude: Some(m),
            } if !negative || m == 0 => dims.push(usize::try_from(m).map_err(|_| too_large())?),
            Value::Int {
                negative: false,
                magnitude: None,
            } => return Err(too_large()),
            _ => return Err(bad_shape()),
        }
    }
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape: dims,
    })
}

fn parse_descr(descr: &Node, p: &Parser<'_>) -> Result<(Dtype, bool), NpyError> {
    const EXPECTED: &str = "(expected float16, float32 or float64)";
    let Value::Str(s) = &descr.value else {
        // A list here is a structured (record) dtype.
        return Err(format_err(format!(
            "unsupported dtype {} {EXPECTED}",
            excerpt(p.text(descr))
        )));
    };
    let native_big = cfg!(target_endian = "big");
    let (big, code) = match s.as_bytes() {
        [b'<', rest @ ..] => (false, rest),
        [b'>', rest @ ..] => (true, rest),
        [b'=', rest @ ..] => (native_big, rest),
        _ => (false, &b"?"[..]),
    };
    let dtype = match code {
        b"f2" => Dtype::F16,
        b"f4" => Dtype::F32,
        b"f8" => Dtype::F64,
        _ => {
            return Err(format_err(format!(
                "unsupported dtype '{}' {EXPECTED}",
                excerpt(s)
            )));
        }
    };
    Ok((dtype, big))
}

/// Untrusted text made safe for a one-line message: shortened, control characters escaped.
fn excerpt(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c == ' ' || !(c.is_control() || c.is_whitespace()) {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// Reorders column-major `src` into row-major. `src` holds exactly the elements `shape`
/// implies, which the caller has already made sure of.
fn fortran_to_c<T: Copy>(src: &[T], shape: &[usize]) -> Result<Vec<T>, NpyError> {
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

/// The subset of Python literals that can appear in a `.npy` header.
#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    /// `magnitude` is `None` when the digits overflow u64.
    Int {
        negative: bool,
        magnitude: Option<u64>,
    },
    Bool(bool),
    None,
    Tuple(Vec<Node>),
    List(Vec<Node>),
    Dict(Vec<(Node, Node)>),
}

/// A value and where its source text lies, so errors can quote what the file said.
#[derive(Debug, PartialEq)]
struct Node {
    value: Value,
    start: usize,
    end: usize,
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn text(&self, node: &Node) -> &'a str {
        self.s.get(node.start..node.end).unwrap_or("?")
    }

    fn err(&self, what: &str) -> NpyError {
        let found = match self.s.get(self.pos..).and_then(|r| r.chars().next()) {
            Some(c) => format!("`{}`", excerpt(&c.to_string())),
            None => "the end".to_owned(),
        };
        format_err(format!(
            "malformed .npy header: {what} (found {found} at offset {})",
            self.pos
        ))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, NpyError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.skip_ws();
        let start = self.pos;
        let value = match self.peek() {
            Some(q @ (b'\'' | b'"')) => Value::Str(self.string(q)?),
            Some(b'0'..=b'9' | b'-' | b'+') => self.int()?,
            Some(b'(') => {
                self.pos += 1;
                let (mut items, trailing_comma) = self.items(b')', depth)?;
                // `(x)` is just `x` in Python; only a comma (or nothing) makes a tuple.
                match items.pop() {
                    Some(only) if items.is_empty() && !trailing_comma => only.value,
                    Some(last) => {
                        items.push(last);
                        Value::Tuple(items)
                    }
                    None => Value::Tuple(items),
                }
            }
            Some(b'[') => {
                self.pos += 1;
                Value::List(self.items(b']', depth)?.0)
            }
            Some(b'{') => {
                self.pos += 1;
                self.dict(depth)?
            }
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'_') => {
                let word_start = self.pos;
                while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_') = self.peek() {
                    self.pos += 1;
                }
                match self.s.get(word_start..self.pos) {
                    Some("True") => Value::Bool(true),
                    Some("False") => Value::Bool(false),
                    Some("None") => Value::None,
                    _ => {
                        self.pos = word_start;
                        return Err(self.err("expected a Python literal"));
                    }
                }
            }
            _ => return Err(self.err("expected a Python literal")),
        };
        Ok(Node {
            value,
            start,
            end: self.pos,
        })
    }

    /// Comma-separated values up to `close`; also says whether a comma preceded it.
    fn items(&mut self, close: u8, depth: usize) -> Result<(Vec<Node>, bool), NpyError> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, trailing_comma));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    trailing_comma = true;
                }
                Some(c) if c == close => trailing_comma = false,
                _ => {
                    return Err(self.err(&format!("expected ',' or '{}'", char::from(close))));
                }
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value, NpyError> {
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Dict(entries));
            }
            let key = self.value(depth + 1)?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a dict key"));
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<String, NpyError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.s.get(self.pos..).unwrap_or("").char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                _ if c == char::from(quote) => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\n' | '\r' => break,
                '\\' => match chars.next() {
                    Some((_, e @ ('\\' | '\'' | '"'))) => out.push(e),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    // Other escapes cannot matter for a float dtype; keep them verbatim.
                    Some((_, e)) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => break,
                },
                _ => out.push(c),
            }
        }
        self.pos = open;
        Err(self.err("unterminated string"))
    }

    fn int(&mut self) -> Result<Value, NpyError> {
        let mut negative = false;
        if let Some(sign @ (b'-' | b'+')) = self.peek() {
            negative = sign == b'-';
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut magnitude = Some(0u64);
        while let Some(d @ b'0'..=b'9') = self.peek() {
            magnitude = magnitude
                .and_then(|m| m.checked_mul(10))
                .and_then(|m| m.checked_add(u64::from(d - b'0')));
            self.pos += 1;
        }
        if self.pos == digits_start {
            return Err(self.err("expected digits"));
        }
        // Python 2 wrote long integers as `3L`; NumPy still reads such files.
        if let Some(b'L' | b'l') = self.peek() {
            self.pos += 1;
        }
        Ok(Value::Int {
            negative,
            magnitude,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// A file with exactly `header` as its header (no padding added), for hand-built cases.
    fn raw(version: u8, header: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
        } else {
            out.extend_from_slice(&u32::try_from(header.len()).unwrap().to_le_bytes());
        }
        out.extend_from_slice(header);
        out.extend_from_slice(data);
        out
    }

    fn header(descr: &str, fortran: bool, shape: &str) -> Vec<u8> {
        let f = if fortran { "True" } else { "False" };
        format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}\n").into_bytes()
    }

    fn le32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn err(bytes: &[u8]) -> String {
        match parse(bytes) {
            Ok(a) => panic!("expected an error, parsed {a:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "multi-line message: {msg:?}");
                msg
            }
        }
    }

    fn f32_array(shape: &[usize], data: Vec<f32>) -> Array {
        Array {
            shape: shape.to_vec(),
            data: Data::F32(data),
        }
    }

    /// `np.save(f, np.arange(6, dtype='<f4').reshape(2, 3))` with NumPy ≥ 1.23. The dict is
    /// 59 characters; NumPy appends 21 - len("2") = 20 growth spaces, then pads so that
    /// 6 (magic) + 2 (version) + 2 (length) + header (ending in '\n') is a multiple of 64:
    /// 10 + 59 + 20 + 1 = 90, so 38 more spaces, 128 bytes in all, header length 118.
    /// (NumPy 1.14–1.22, without growth spaces, pads 58 spaces and writes the same bytes.)
    #[test]
    fn reproduces_numpy_bytes_for_a_2x3_f32() {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(dict.len(), 59);
        let mut expected = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        expected.extend_from_slice(dict.as_bytes());
        expected.extend_from_slice(&[b' '; 58]);
        expected.push(b'\n');
        assert_eq!(expected.len(), 128);
        #[rustfmt::skip]
        expected.extend_from_slice(&[
            0x00, 0x00, 0x00, 0x00, // 0.0
            0x00, 0x00, 0x80, 0x3f, // 1.0
            0x00, 0x00, 0x00, 0x40, // 2.0
            0x00, 0x00, 0x40, 0x40, // 3.0
            0x00, 0x00, 0x80, 0x40, // 4.0
            0x00, 0x00, 0xa0, 0x40, // 5.0
        ]);
        let data = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(encode_f32(&[2, 3], &data), expected);
        assert_eq!(parse(&expected).unwrap(), f32_array(&[2, 3], data.to_vec()));
    }

    /// `np.save(f, np.float64(1.5))`: a 55-character dict, no growth spaces for `()`,
    /// 10 + 55 + 1 = 66 → padded to 128, header length 118.
    #[test]
    fn reproduces_numpy_bytes_for_an_f64_scalar() {
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (), }";
        let mut expected = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        expected.extend_from_slice(dict.as_bytes());
        expected.extend(std::iter::repeat_n(b' ', 128 - 10 - dict.len() - 1));
        expected.push(b'\n');
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0xf8, 0x3f]);
        assert_eq!(encode_f64(&[], &[1.5]), expected);
    }

    /// The growth spaces are what push this header (16 axes of 1: a 48-character repr, a
    /// 100-character dict) past 128: 10 + 100 + 20 + 1 = 131, so NumPy ≥ 1.23 writes 192.
    #[test]
    fn growth_spaces_count_towards_the_padding() {
        let bytes = encode_f32(&[1; 16], &[7.0]);
        assert_eq!(bytes.len(), 192 + 4);
        assert_eq!(&bytes[8..10], &(192u16 - 10).to_le_bytes());
        assert_eq!(bytes[191], b'\n');
        assert_eq!(parse(&bytes).unwrap(), f32_array(&[1; 16], vec![7.0]));
    }

    #[test]
    fn round_trips_every_dtype_and_shape() {
        let shapes: &[&[usize]] = &[&[], &[5], &[1], &[2, 3, 4], &[2, 1, 3, 2], &[0], &[3, 0, 2]];
        for &shape in shapes {
            let n: usize = shape.iter().product();
            let v64: Vec<f64> = (0..n).map(|i| i as f64 * 0.25 - 3.0).collect();
            let v32: Vec<f32> = v64.iter().map(|&x| x as f32).collect();
            let v16: Vec<f16> = v64.iter().map(|&x| f16::from_f64(x)).collect();
            let cases = [
                (
                    encode_f16(shape, &v16),
                    Data::F16(v16.clone()),
                    "float16",
                    2,
                ),
                (
                    encode_f32(shape, &v32),
                    Data::F32(v32.clone()),
                    "float32",
                    4,
                ),
                (
                    encode_f64(shape, &v64),
                    Data::F64(v64.clone()),
                    "float64",
                    8,
                ),
            ];
            for (bytes, data, name, itemsize) in cases {
                let preamble = bytes.len() - n * itemsize;
                assert_eq!(preamble, 128, "{shape:?} {name}");
                assert_eq!(bytes[preamble - 1], b'\n');
                assert_eq!(bytes[6..8], [1, 0]);
                let a = parse(&bytes).unwrap();
                assert_eq!(
                    a,
                    Array {
                        shape: shape.to_vec(),
                        data
                    },
                    "{shape:?} {name}"
                );
                assert_eq!(a.dtype_name(), name);
                // Every test value is exact in f16, so all conversions agree.
                assert_eq!(a.to_f64().unwrap(), v64);
                assert_eq!(a.to_f32().unwrap(), v32);
            }
        }
    }

    #[test]
    fn streams_are_read_no_further_than_their_header_says() {
        let file = encode_f32(&[2, 3], &[0., 1., 2., 3., 4., 5.]);
        // Length unknown (a pipe): the same array as from the bytes.
        assert_eq!(read_from(&file[..], None).unwrap(), parse(&file).unwrap());
        // Endless data after a valid file: one byte past the announced size is enough.
        let endless = std::io::Read::chain(&file[..], std::io::repeat(0));
        assert_eq!(
            read_from(endless, None).unwrap_err().to_string(),
            "the data goes on past the 24 bytes its header announces"
        );
        let msg = |r: Result<Array, NpyError>| r.unwrap_err().to_string();
        assert_eq!(
            msg(read_from(&file[..file.len() - 5], None)),
            "truncated: header says 6 elements (24 bytes) but only 19 bytes of data"
        );
        assert_eq!(
            msg(read_from(&file[..20], None)),
            format!(
                "header length {} runs past the end of the file (20 bytes)",
                file.len() - 24 - 10
            )
        );
        assert_eq!(
            msg(read_from(std::io::repeat(0), None)),
            "not a .npy file (bad magic bytes)"
        );
        // A regular file whose length disagrees with its header fails before its data is
        // allocated or read.
        let dir = std::env::temp_dir().join(format!("favor-npy-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("short.npy");
        std::fs::write(
            &path,
            raw(1, &header("<f4", false, "(1152921504606846976,)"), &[0; 8]),
        )
        .unwrap();
        assert_eq!(
            read(&path).unwrap_err().to_string(),
            "truncated: header says 1152921504606846976 elements (4611686018427387904 bytes) but only 8 bytes of data"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn data_beyond_memory_is_an_error() {
        // A header and a length that agree on 2^62 bytes (an input claiming that length):
        // reserving them fails, and says so.
        let h = raw(1, &header("<f4", false, "(1152921504606846976,)"), &[]);
        let len = h.len() as u64 + (1 << 62);
        assert_eq!(
            read_from(&h[..], Some(len)).unwrap_err().to_string(),
            "its data: cannot allocate 4.00 EiB (4611686018427387904 bytes): out of memory"
        );
    }

    #[test]
    fn write_to_gives_the_bytes_of_encode() {
        let data = [1.5f32, -2.0, 3.25, 0.0, 7.0, 1e-3];
        let mut out = Vec::new();
        write_to(&mut out, &[3, 2], &data).unwrap();
        assert_eq!(out, encode_f32(&[3, 2], &data));
        let mut out = Vec::new();
        write_to::<f64>(&mut out, &[0, 5], &[]).unwrap();
        assert_eq!(out, encode_f64(&[0, 5], &[]));
    }

    #[test]
    fn conversions_round_and_widen() {
        let a = Array {
            shape: vec![2],
            data: Data::F64(vec![0.1, 1e300]),
        };
        assert_eq!(a.to_f32().unwrap(), vec![0.1f32, f32::INFINITY]);
        assert_eq!(a.to_f64().unwrap(), vec![0.1, 1e300]);
        let h = Array {
            shape: vec![1],
            data: Data::F16(vec![f16::from_f32(0.1)]),
        };
        assert_eq!(
            h.to_f64().unwrap(),
            vec![f64::from(f16::from_f32(0.1).to_f32())]
        );
    }

    #[test]
    fn header_over_u16_switches_to_version_2() {
        // 22000 axes of length 1: the shape repr alone is 66000 characters.
        let shape = vec![1; 22_000];
        let bytes = encode_f32(&shape, &[2.5]);
        assert_eq!(bytes[6..8], [2, 0]);
        let hlen = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!((12 + hlen) % 64, 0);
        assert_eq!(bytes.len(), 12 + hlen + 4);
        assert_eq!(parse(&bytes).unwrap(), f32_array(&shape, vec![2.5]));
    }

    #[test]
    fn reads_big_endian_and_native() {
        let v = [1.5f32, -2.0, 1e-3];
        let be: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        let a = parse(&raw(1, &header(">f4", false, "(3,)"), &be)).unwrap();
        assert_eq!(a, f32_array(&[3], v.to_vec()));

        let d = [1.0e-300f64, 7.25];
        let be: Vec<u8> = d.iter().flat_map(|x| x.to_be_bytes()).collect();
        let a = parse(&raw(1, &header(">f8", false, "(2,)"), &be)).unwrap();
        assert_eq!(a.data, Data::F64(d.to_vec()));

        let h = [f16::from_f32(0.5), f16::from_f32(-65504.0)];
        let be: Vec<u8> = h.iter().flat_map(|x| x.to_be_bytes()).collect();
        let a = parse(&raw(1, &header(">f2", false, "(2,)"), &be)).unwrap();
        assert_eq!(a.data, Data::F16(h.to_vec()));

        let ne: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
        let a = parse(&raw(1, &header("=f4", false, "(3,)"), &ne)).unwrap();
        assert_eq!(a, f32_array(&[3], v.to_vec()));
    }

    #[test]
    fn fortran_order_is_permuted_to_c_order() {
        // [[0, 1, 2], [3, 4, 5]] stored column by column.
        let bytes = raw(
            1,
            &header("<f4", true, "(2, 3)"),
            &le32(&[0., 3., 1., 4., 2., 5.]),
        );
        let a = parse(&bytes).unwrap();
        assert_eq!(a, f32_array(&[2, 3], vec![0., 1., 2., 3., 4., 5.]));

        // Element (i, j, k) = 100i + 10j + k of a 2×3×4 array, written with i fastest.
        let mut f = Vec::new();
        for k in 0..4 {
            for j in 0..3 {
                for i in 0..2 {
                    f.push((100 * i + 10 * j + k) as f64);
                }
            }
        }
        let mut c = Vec::new();
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    c.push((100 * i + 10 * j + k) as f64);
                }
            }
        }
        let fb: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse(&raw(1, &header("<f8", true, "(2, 3, 4)"), &fb)).unwrap();
        assert_eq!(a.shape, [2, 3, 4]);
        assert_eq!(a.data, Data::F64(c));

        // Degenerate shapes: one long axis, an empty axis, a scalar.
        let a = parse(&raw(
            1,
            &header("<f4", true, "(1, 3, 1)"),
            &le32(&[1., 2., 3.]),
        ))
        .unwrap();
        assert_eq!(a, f32_array(&[1, 3, 1], vec![1., 2., 3.]));
        let a = parse(&raw(1, &header("<f4", true, "(2, 0, 3)"), &[])).unwrap();
        assert_eq!(a, f32_array(&[2, 0, 3], vec![]));
        let a = parse(&raw(1, &header("<f4", true, "()"), &le32(&[9.]))).unwrap();
        assert_eq!(a, f32_array(&[], vec![9.]));
    }

    #[test]
    fn reads_version_2_and_3_headers() {
        let data = le32(&[1., 2.]);
        for version in [2, 3] {
            let a = parse(&raw(version, &header("<f4", false, "(2,)"), &data)).unwrap();
            assert_eq!(a, f32_array(&[2], vec![1., 2.]));
        }
        // Version 3 is UTF-8: a non-ASCII string survives into the message intact.
        let msg = err(&raw(
            3,
            "{'descr': 'é', 'fortran_order': False, 'shape': ()}".as_bytes(),
            &[],
        ));
        assert!(msg.contains("'é'"), "{msg}");
        assert_eq!(
            err(&raw(3, b"{'descr': '\xff'}", &[])),
            "header is not valid UTF-8"
        );
        // Versions 1 and 2 are latin-1: 0xe9 is 'é'.
        let msg = err(&raw(
            1,
            b"{'descr': '\xe9', 'fortran_order': False, 'shape': ()}",
            &[],
        ));
        assert!(msg.contains("'é'"), "{msg}");
    }

    #[test]
    fn header_dict_syntax_variants() {
        let data = le32(&[1., 2., 3., 4., 5., 6.]);
        let expected = f32_array(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let headers = [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}",
            "{\"shape\": (2,3,), \"descr\": \"<f4\", \"fortran_order\": False}",
            "  {'fortran_order':False,'shape':(2,3),'descr':'<f4'}  \n",
            "{\n\t'descr' : '<f4' ,\r\n 'fortran_order' : False ,\n 'shape' : ( 2 , 3 , ) , }\n",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (+2, 3), }",
        ];
        for h in headers {
            assert_eq!(
                parse(&raw(1, h.as_bytes(), &data)).unwrap(),
                expected,
                "{h}"
            );
        }
        let one = le32(&[4.]);
        for shape in ["(1,)", "(1, )", "(1,1,1)", "()", "(-0,1)"] {
            let h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}}}");
            let a = parse(&raw(
                1,
                h.as_bytes(),
                if shape == "(-0,1)" { &[] } else { &one },
            ));
            assert!(a.is_ok(), "{shape}: {a:?}");
        }
    }

    #[test]
    fn preamble_errors() {
        assert_eq!(err(b""), "empty file (not a .npy file)");
        assert_eq!(
            err(b"\x93NUM"),
            "truncated preamble: only 4 bytes (not a complete .npy file)"
        );
        assert_eq!(
            err(b"\x93NUMPY\x01"),
            "truncated preamble: only 7 bytes (not a complete .npy file)"
        );
        assert_eq!(
            err(b"\x93NUMPY\x01\x00\x05"),
            "truncated preamble: only 9 bytes (not a complete .npy file)"
        );
        assert_eq!(
            err(b"\x93NUMPY\x02\x00\x05\x00\x00"),
            "truncated preamble: only 11 bytes (not a complete .npy file)"
        );
        assert_eq!(
            err(b"PK\x03\x04 a zip, maybe an .npz"),
            "not a .npy file (bad magic bytes)"
        );
        assert_eq!(
            err(b"\x93NUMPX\x01\x00\x00\x00"),
            "not a .npy file (bad magic bytes)"
        );
        assert_eq!(err(b"x"), "not a .npy file (bad magic bytes)");
        assert_eq!(
            err(b"\x93NUMPY\x04\x00\x00\x00"),
            "unsupported .npy format version 4.0 (expected 1.0, 2.0 or 3.0)"
        );
        assert_eq!(
            err(b"\x93NUMPY\x01\x01\x00\x00"),
            "unsupported .npy format version 1.1 (expected 1.0, 2.0 or 3.0)"
        );
        assert_eq!(
            err(b"\x93NUMPY\x01\x00\xe8\x03{'descr'"),
            "header length 1000 runs past the end of the file (18 bytes)"
        );
        assert_eq!(
            err(b"\x93NUMPY\x02\x00\xff\xff\xff\xff{"),
            "header length 4294967295 runs past the end of the file (13 bytes)"
        );
    }

    fn header_err(h: &str) -> String {
        err(&raw(2, h.as_bytes(), &[]))
    }

    #[test]
    fn malformed_header_errors() {
        let cases = [
            ("", "expected the header to be a dict"),
            ("[1, 2]", "expected the header to be a dict"),
            (
                "{'descr' '<f4'}",
                "expected ':' after a dict key (found `'` at offset 9)",
            ),
            ("{'descr': '<f4' 'shape': ()}", "expected ',' or '}'"),
            (
                "{'descr': '<f4",
                "unterminated string (found `'` at offset 10)",
            ),
            ("{'descr': '<f4\n'}", "unterminated string"),
            (
                "{'descr': <f4}",
                "expected a Python literal (found `<` at offset 10)",
            ),
            (
                "{'descr': f4}",
                "expected a Python literal (found `f` at offset 10)",
            ),
            ("{'shape': (1, 2}", "expected ',' or ')'"),
            ("{'shape': (-}", "expected digits"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': ()} x",
                "unexpected text after the header dict",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': ()",
                "expected ',' or '}' (found the end",
            ),
            ("{1: 2}", "key 1 is not a string"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}",
                "unknown key 'x' in .npy header (expected 'descr', 'fortran_order' and 'shape')",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False}",
                ".npy header has no 'shape' key",
            ),
            (
                "{'fortran_order': False, 'shape': ()}",
                ".npy header has no 'descr' key",
            ),
            (
                "{'descr': '<f4', 'shape': ()}",
                ".npy header has no 'fortran_order' key",
            ),
            (
                "{'descr': '<f4', 'descr': '<f4'}",
                "duplicate key 'descr' in .npy header",
            ),
            (
                "{'descr': '<f4', 'fortran_order': 0, 'shape': ()}",
                "'fortran_order' must be True or False, got 0",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (5)}",
                "'shape' must be a tuple of non-negative integers, got (5)",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': [5]}",
                "'shape' must be a tuple of non-negative integers, got [5]",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1)}",
                "'shape' must be a tuple of non-negative integers, got (2, -1)",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, None)}",
                "got (2, None)",
            ),
        ];
        for (h, want) in cases {
            let msg = header_err(h);
            assert!(msg.contains(want), "{h:?}: got {msg:?}, want {want:?}");
        }
        // Deep nesting is refused before it can exhaust the stack.
        let deep = format!("{{'shape': {}", "(".repeat(100_000));
        assert!(header_err(&deep).contains("nested too deeply"));
        let deep = format!("{{'shape': {}", "[{1:".repeat(100_000));
        assert!(header_err(&deep).contains("nested too deeply"));
        // Long or multi-line untrusted text is cut and escaped.
        let msg = header_err(&format!("{{'{}': 1}}", "k".repeat(100)));
        assert!(
            msg.starts_with(&format!("unknown key '{}…'", "k".repeat(40))),
            "{msg}"
        );
        let msg = header_err("{'a\\nb': 1}");
        assert!(msg.contains("unknown key 'a\\nb'"), "{msg}");
    }

    #[test]
    fn unsupported_dtypes_are_named() {
        let cases = [
            (
                "'<i8'",
                "unsupported dtype '<i8' (expected float16, float32 or float64)",
            ),
            (
                "'|f4'",
                "unsupported dtype '|f4' (expected float16, float32 or float64)",
            ),
            (
                "'<c8'",
                "unsupported dtype '<c8' (expected float16, float32 or float64)",
            ),
            (
                "'<U10'",
                "unsupported dtype '<U10' (expected float16, float32 or float64)",
            ),
            (
                "'|O'",
                "unsupported dtype '|O' (expected float16, float32 or float64)",
            ),
            (
                "'f4'",
                "unsupported dtype 'f4' (expected float16, float32 or float64)",
            ),
            (
                "'<f16'",
                "unsupported dtype '<f16' (expected float16, float32 or float64)",
            ),
            (
                "''",
                "unsupported dtype '' (expected float16, float32 or float64)",
            ),
            (
                "[('a', '<f4'), ('b', '<i4', (2,))]",
                "unsupported dtype [('a', '<f4'), ('b', '<i4', (2,))] (expected float16, float32 or float64)",
            ),
        ];
        for (descr, want) in cases {
            let h = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': ()}}");
            assert_eq!(header_err(&h), want);
        }
    }

    #[test]
    fn data_length_errors() {
        let h = header("<f4", false, "(2, 3)");
        assert_eq!(
            err(&raw(1, &h, &[0; 20])),
            "truncated: header says 6 elements (24 bytes) but only 20 bytes of data"
        );
        assert_eq!(
            err(&raw(1, &h, &[0; 28])),
            "4 trailing bytes after the data"
        );
        assert_eq!(
            err(&raw(1, &header("<f8", false, "()"), &[])),
            "truncated: header says 1 elements (8 bytes) but only 0 bytes of data"
        );
        // Huge but representable: refused by the length check, with nothing allocated.
        assert_eq!(
            err(&raw(
                1,
                &header("<f4", false, "(1152921504606846976,)"),
                &[0; 8]
            )),
            "truncated: header says 1152921504606846976 elements (4611686018427387904 bytes) but only 8 bytes of data"
        );
    }

    #[test]
    fn overflowing_shapes_are_refused() {
        let cases = [
            (
                "(1099511627776, 1099511627776)",
                "shape (1099511627776, 1099511627776) too large",
            ),
            // 2^61 f8 is 2^64 bytes.
            (
                "(2305843009213693952,)",
                "shape (2305843009213693952,) too large",
            ),
            // Over isize::MAX bytes.
            (
                "(1152921504606846976, 2)",
                "shape (1152921504606846976, 2) too large",
            ),
            // A zero makes the count 0, but callers multiplying in another order would overflow.
            (
                "(0, 4294967296, 4294967296)",
                "shape (0, 4294967296, 4294967296) too large",
            ),
            // Not even a u64.
            (
                "(99999999999999999999999,)",
                "shape (99999999999999999999999,) too large",
            ),
        ];
        for (shape, want) in cases {
            assert_eq!(err(&raw(1, &header("<f4", false, shape), &[])), want);
        }
    }

    #[test]
    fn io_errors_and_files() {
        let dir = std::env::temp_dir().join(format!("favor-npy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npy");
        write_f32(&path, &[2, 2], &[1., 2., 3., 4.]).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            f32_array(&[2, 2], vec![1., 2., 3., 4.])
        );
        write(&path, &[1], &[f16::from_f32(3.0)]).unwrap();
        assert_eq!(
            read(&path).unwrap().data,
            Data::F16(vec![f16::from_f32(3.0)])
        );
        let missing = read(&dir.join("missing.npy")).unwrap_err();
        assert!(matches!(missing, NpyError::Io(_)));
        assert!(!missing.to_string().contains("missing.npy"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[should_panic(expected = "does not hold 3 elements")]
    fn encode_rejects_a_mismatched_shape() {
        let _ = encode_f32(&[2, 2], &[1., 2., 3.]);
    }

    /// Every prefix, and every single-byte mutation (with a few likely-troublesome values) of
    /// a handful of valid files, must come back as a value, not a panic.
    #[test]
    fn garbage_never_panics() {
        let seeds = [
            encode_f32(&[2, 3], &[0., 1., 2., 3., 4., 5.]),
            encode_f16(&[], &[f16::ONE]),
            encode_f64(&[0, 3], &[]),
            raw(1, &header(">f8", true, "(2, 2)"), &[0; 32]),
            raw(2, &header("<f2", true, "(1, 2, 3)"), &[0; 12]),
            raw(
                3,
                "{'descr':[('é','<f4')],'shape':(1,),'fortran_order':True}".as_bytes(),
                &[0; 4],
            ),
        ];
        let values = [
            0x00, 0xff, b' ', b'\'', b'"', b'(', b')', b',', b'9', b'-', b'{', b'}', b'\\', 0x80,
        ];
        for seed in &seeds {
            assert!(parse(seed).is_ok() || seed[6] == 3);
            for len in 0..seed.len() {
                assert!(parse(&seed[..len]).is_err(), "prefix {len} of {seed:?}");
            }
            let mut m = seed.clone();
            for i in 0..m.len() {
                let original = m[i];
                for v in values
                    .iter()
                    .copied()
                    .chain([original ^ 1, original.wrapping_add(1)])
                {
                    m[i] = v;
                    let _ = parse(&m);
                }
                m[i] = original;
            }
        }
        // Random tails behind a valid magic and version, from a fixed xorshift stream.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut bytes = b"\x93NUMPY".to_vec();
            bytes.push(1 + (next() % 3) as u8);
            bytes.push(0);
            let len = (next() % 80) as usize;
            bytes.extend((0..len).map(|_| {
                let r = next();
                // Mostly header punctuation, so the parser gets past the first byte.
                b"{}()[]',: 0123456789TrueFalse'descr''shape'<f4"
                    .get((r % 50) as usize)
                    .copied()
                    .unwrap_or((r >> 8) as u8)
            }));
            if bytes.len() > 9 {
                bytes[8] = (len as u8).wrapping_sub(2);
                bytes[9] = 0;
            }
            let _ = parse(&bytes);
        }
    }
}
