//! The writer: the bytes NumPy writes (padding, growth spaces, the switch to version 2),
//! `write_to` against `encode`, and a shape that does not match the data.

use super::*;

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
#[should_panic(expected = "does not hold 3 elements")]
fn encode_rejects_a_mismatched_shape() {
    let _ = encode_f32(&[2, 2], &[1., 2., 3.]);
}
