//! The tiled exact attention against the row-at-a-time reference, in f64 with the scalar
//! backend: same terms, summed in another order, so they agree to a few ulps of the output
//! scale (bound derived below), across shapes, tiles, masks and huge logits.

use favor_core::*;
use favor_testkit::bounds::{gamma, max_abs, unit};

fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut g = Normals::new(0xE4AC_7000 + seed);
    (0..n).map(|_| g.next_f64() * scale).collect()
}

/// Tiled against row-at-a-time attention over inputs of `shape` (q and k entries
/// `scale` times standard normal), in tiles of `block` keys.
fn compare(shape: Shape, scale: f64, block: usize, causal: bool, mask: Option<&[bool]>) {
    let Shape {
        queries: lq,
        keys: lk,
        dim: d,
        value_dim: dv,
    } = shape;
    let (q, k, v) = (
        values(lq * d, 1, scale),
        values(lk * d, 2, scale),
        values(lk * dv, 3, 1.0),
    );
    let opts = ExactOptions {
        causal,
        key_mask: mask,
        ..Default::default()
    };
    let mut want = vec![0.0; lq * dv];
    softmax_attention(&Scalar, &q, &k, &v, shape, &opts, &mut want).unwrap();
    let mut got = vec![f64::NAN; lq * dv];
    let mut scratch = vec![0.0; softmax_attention_tiled_scratch_len(block).unwrap()];
    softmax_attention_tiled(
        &Scalar,
        &q,
        &k,
        &v,
        shape,
        &opts,
        block,
        &mut got,
        &mut scratch,
    )
    .unwrap();
    // Both compute Σ wⱼvⱼ / Σ wⱼ with each wⱼ = exp(τ q·kⱼ − max) from the same dot products
    // (same order within a dot), so the weights agree to ~2 ulp (exp, rescale) and the sums to
    // γ_L each: |Δ| ≤ 2·(4u + γ_L)·max|v| with u = 2⁻⁵³. The logit dot itself is identical.
    let u = unit::<f64>();
    let bound = 2.0 * (4.0 * u + gamma(lk, u)) * max_abs(&v);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= bound,
            "lq {lq} lk {lk} d {d} dv {dv} block {block} causal {causal}: out[{i}] {a} vs {b}"
        );
    }
}

#[test]
fn tiles_equal_rows_on_every_shape() {
    for block in [1, 3, 16, 64, 200] {
        for (lq, lk) in [(1, 1), (5, 5), (70, 70), (33, 70), (70, 9)] {
            let shape = Shape {
                queries: lq,
                keys: lk,
                dim: 7,
                value_dim: 5,
            };
            compare(shape, 0.5, block, false, None);
            if lq == lk {
                compare(shape, 0.5, block, true, None);
            }
        }
    }
}

#[test]
fn huge_logits_stay_finite_and_exact() {
    // Logits of several hundred: every exp would overflow without the running maximum.
    for block in [4, 32] {
        compare(Shape::new(50, 16, 8), 6.0, block, false, None);
        compare(Shape::new(50, 16, 8), 6.0, block, true, None);
    }
}

#[test]
fn masks_including_fully_masked_rows_and_tiles() {
    let l = 40;
    // Keys 0..10 masked (a whole first tile at block 8), then every third key.
    let mask: Vec<bool> = (0..l).map(|j| j >= 10 && j % 3 != 0).collect();
    for block in [1, 8, 64] {
        compare(Shape::new(l, 6, 4), 0.7, block, false, Some(&mask));
        // Causal: queries 0..10 see only masked keys, and must output zeros.
        compare(Shape::new(l, 6, 4), 0.7, block, true, Some(&mask));
    }
    let none = vec![false; l];
    let shape = Shape::new(l, 6, 4);
    let (q, v) = (values(l * 6, 4, 1.0), values(l * 4, 5, 1.0));
    let opts = ExactOptions {
        key_mask: Some(&none),
        ..Default::default()
    };
    let mut out = vec![f64::NAN; l * 4];
    let mut scratch = vec![0.0; softmax_attention_tiled_scratch_len(8).unwrap()];
    softmax_attention_tiled(&Scalar, &q, &q, &v, shape, &opts, 8, &mut out, &mut scratch).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
}

#[test]
fn bad_arguments_are_errors() {
    let x = [0.5f32; 8];
    let shape = Shape::new(2, 4, 4);
    let opts = ExactOptions::default();
    let mut out = [0f32; 8];
    let mut small = [0f32; 3];
    assert!(matches!(
        softmax_attention_tiled(&Scalar, &x, &x, &x, shape, &opts, 2, &mut out, &mut small),
        Err(Error::BufferTooSmall { .. })
    ));
    let mut scratch = [0f32; 16];
    assert!(matches!(
        softmax_attention_tiled(&Scalar, &x, &x, &x, shape, &opts, 0, &mut out, &mut scratch),
        Err(Error::ZeroDimension { .. })
    ));
    let causal = ExactOptions {
        causal: true,
        ..Default::default()
    };
    let cross = Shape {
        queries: 1,
        keys: 2,
        dim: 4,
        value_dim: 4,
    };
    assert!(
        softmax_attention_tiled(
            &Scalar,
            &x[..4],
            &x,
            &x,
            cross,
            &causal,
            2,
            &mut out,
            &mut scratch
        )
        .is_err()
    );
    assert!(out.iter().all(|&o| o == 0.0), "nothing written on error");
}
