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

// One file per part of the crate under test; the helpers above build the files they read.
mod header;
mod read;
mod round_trip;
mod write;
