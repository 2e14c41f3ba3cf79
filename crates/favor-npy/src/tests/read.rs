//! The reader past the header: streams, byte orders, Fortran order, data lengths, memory,
//! and arbitrary bytes.

use super::*;

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
