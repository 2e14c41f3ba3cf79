//! Target `npy`: the `.npy` reader (`favor_npy::parse`, used by the CLI) on arbitrary bytes.
//!
//! Raw bytes: never a panic (libFuzzer's RSS and malloc limits also catch allocations the
//! input does not justify); an accepted file has `data.len() == product(shape)` and survives
//! re-encoding (`npy::encode`, C order, little-endian) and re-parsing bit for bit.
//!
//! Structured files: a header written here from parts (version 1/2/3, any key order,
//! endianness, Fortran order, shape, padding) with its data, which the reader must accept
//! with exactly the values an independent decoder written here gives (byte order and the
//! Fortran-to-C permutation included); then the same file with bytes flipped, cut or
//! appended: no panic, and the invariants above when accepted.

use arbitrary::{Result, Unstructured};
use favor_npy::{self as npy, Array, Data};

/// Decodes a mode byte and checks the bytes that follow.
pub fn check_npy(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    if mode % 2 == 0 {
        raw(u.take_rest());
    } else {
        let _ = structured(&mut u);
    }
}

fn count(a: &Array) -> usize {
    match &a.data {
        Data::F16(v) => v.len(),
        Data::F32(v) => v.len(),
        Data::F64(v) => v.len(),
    }
}

/// Bits of every element, widened to u64, for comparisons that keep NaN payloads.
fn bits(a: &Array) -> Vec<u64> {
    match &a.data {
        Data::F16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        Data::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        Data::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
    }
}

/// The invariants of an accepted file.
fn accepted(a: &Array, what: &str) {
    let product = a.shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
    assert_eq!(
        product,
        Some(count(a)),
        "{what}: data length vs shape {:?}",
        a.shape
    );
    let again = match &a.data {
        Data::F16(v) => npy::encode(&a.shape, v),
        Data::F32(v) => npy::encode(&a.shape, v),
        Data::F64(v) => npy::encode(&a.shape, v),
    };
    let b = npy::parse(&again).unwrap_or_else(|e| panic!("{what}: re-encoded file rejected: {e}"));
    assert_eq!(b.shape, a.shape, "{what}: shape after re-encoding");
    assert_eq!(
        b.dtype_name(),
        a.dtype_name(),
        "{what}: dtype after re-encoding"
    );
    assert!(bits(&b) == bits(a), "{what}: values after re-encoding");
}

fn raw(bytes: &[u8]) {
    if let Ok(a) = npy::parse(bytes) {
        accepted(&a, "raw");
    }
}

/// Little-endian or big-endian element bytes of each dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    F16,
    F32,
    F64,
}

impl Kind {
    fn size(self) -> usize {
        match self {
            Kind::F16 => 2,
            Kind::F32 => 4,
            Kind::F64 => 8,
        }
    }
}

/// Row-major index of the element stored at Fortran position `f`.
fn fortran_position_to_c(f: usize, shape: &[usize]) -> usize {
    // Fortran: the first axis varies fastest.
    let mut rem = f;
    let mut idx = vec![0usize; shape.len()];
    for (k, &d) in shape.iter().enumerate() {
        idx[k] = rem % d;
        rem /= d;
    }
    idx.iter().zip(shape).fold(0, |c, (&i, &d)| c * d + i)
}

fn structured(u: &mut Unstructured<'_>) -> Result<()> {
    let kind = *u.choose(&[Kind::F16, Kind::F32, Kind::F64])?;
    let endian = *u.choose(&['<', '>', '='])?;
    let big = endian == '>' || (endian == '=' && cfg!(target_endian = "big"));
    let fortran = u.arbitrary::<bool>()?;
    let ndim = u.int_in_range(0..=4)?;
    let mut shape = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        shape.push(u.int_in_range(0..=5)?);
    }
    let n: usize = shape.iter().product();
    let mut data = vec![0u8; n * kind.size()];
    let seed = u.arbitrary::<u64>()?;
    let mut mix = crate::input::Mix::new(seed);
    for b in data.iter_mut() {
        *b = mix.next_u64() as u8;
    }
    // The header dict, keys in an arbitrary order.
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let code = match kind {
        Kind::F16 => "f2",
        Kind::F32 => "f4",
        Kind::F64 => "f8",
    };
    let mut entries = [
        format!("'descr': '{endian}{code}'"),
        format!(
            "'fortran_order': {}",
            if fortran { "True" } else { "False" }
        ),
        format!("'shape': {shape_text}"),
    ];
    let order = u.int_in_range(0..=5)?;
    entries.swap(0, order % 3);
    if order >= 3 {
        entries.swap(1, 2);
    }
    let mut dict = format!("{{{}, }}", entries.join(", "));
    dict.extend(std::iter::repeat_n(' ', u.int_in_range(0..=70)?));
    dict.push('\n');
    let version = u.int_in_range(1u8..=3)?;
    let mut file = b"\x93NUMPY".to_vec();
    file.extend([version, 0]);
    if version == 1 {
        file.extend((dict.len() as u16).to_le_bytes());
    } else {
        file.extend((dict.len() as u32).to_le_bytes());
    }
    file.extend(dict.as_bytes());
    file.extend(&data);

    // The independent decoder.
    let what = format!("structured {kind:?} {endian} fortran={fortran} shape={shape:?} v{version}");
    let a = npy::parse(&file).unwrap_or_else(|e| panic!("{what}: valid file rejected: {e}"));
    assert_eq!(a.shape, shape, "{what}: shape");
    let size = kind.size();
    let mut want = vec![0u64; n];
    for (f, chunk) in data.chunks_exact(size).enumerate() {
        let mut b = chunk.to_vec();
        if big {
            b.reverse();
        }
        let mut le = [0u8; 8];
        le[..size].copy_from_slice(&b);
        let c = if fortran {
            fortran_position_to_c(f, &shape)
        } else {
            f
        };
        want[c] = u64::from_le_bytes(le);
    }
    let dtype = match kind {
        Kind::F16 => "float16",
        Kind::F32 => "float32",
        Kind::F64 => "float64",
    };
    assert_eq!(a.dtype_name(), dtype, "{what}: dtype");
    assert!(bits(&a) == want, "{what}: values");
    accepted(&a, &what);

    // The same file, damaged.
    for _ in 0..u.int_in_range(0u8..=4)? {
        let at = u.arbitrary::<u16>()? as usize % file.len();
        let x = u.arbitrary::<u8>()?;
        file[at] ^= x;
    }
    match u.int_in_range(0u8..=3)? {
        0 => file.truncate(u.arbitrary::<u16>()? as usize % (file.len() + 1)),
        1 => {
            let n = u.int_in_range(1..=8)?;
            file.extend(u.bytes(n)?)
        }
        _ => {}
    }
    if let Ok(a) = npy::parse(&file) {
        accepted(&a, &format!("{what} (damaged)"));
    }
    Ok(())
}
