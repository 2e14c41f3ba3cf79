//! Unit tests of the reader and the writer (private functions included).

use crate::header::*;
use crate::read::*;
use crate::write::*;
use crate::*;
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
