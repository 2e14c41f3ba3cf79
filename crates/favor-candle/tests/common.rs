//! Inputs shared by the tests.

use candle_core::{Device, Tensor};

/// A deterministic `[B, S, H, D]` f32 tensor with entries in about ±scale.
pub fn input(shape: [usize; 4], phase: f32, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| {
            scale
                * ((i as f32 * 0.618 + phase).sin() + 0.5 * (i as f32 * 0.131 + 2.0 * phase).cos())
        })
        .collect();
    Tensor::from_vec(data, shape.to_vec(), &Device::Cpu).unwrap()
}

/// Row-major f32 data of a tensor.
pub fn data(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The largest absolute difference of two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
