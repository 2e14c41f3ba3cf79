//! The preamble and the header's Python literal: versions, dict syntax, and every error
//! they can give.

use super::*;

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
