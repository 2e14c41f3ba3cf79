//! Round trips: every dtype and shape through `encode` and `parse`, conversions between
//! the element types, and files written and read back.

use super::*;

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
