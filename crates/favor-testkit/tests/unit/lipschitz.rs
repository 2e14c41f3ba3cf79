//! Unit tests of favor-testkit's `lipschitz` oracles (moved out of the library so `cargo test`
//! does not compile the library a second time as a test harness).

use favor_testkit::lipschitz::*;
use favor_testkit::maps::{GenAct, MapKind, MapSpec};

fn relu_spec(eps: f64) -> MapSpec {
    MapSpec {
        kind: MapKind::Generalized {
            act: GenAct::Relu,
            projection: true,
        },
        normalizer: false,
        transposed: false,
        d: 2,
        m: 2,
        eps,
        w: vec![1.0, 0.0, 0.0, 1.0],
    }
}

#[test]
fn exact_inputs_give_the_weighted_mean_and_a_rounding_sized_bound() {
    // Identity W: φ(x) = relu(x) + ε. q = (1, 0), k0 = (1, 0), k1 = (0, 1), ε = 1/2:
    // φ(q) = (1.5, 0.5), φ(k0) = (1.5, 0.5), φ(k1) = (0.5, 1.5): a = (2.5, 1.5).
    let spec = relu_spec(0.5);
    let u = f64::from(f32::EPSILON) / 2.0;
    let q = lip_features(&spec, &[1.0, 0.0], u);
    let k = lip_features(&spec, &[1.0, 0.0, 0.0, 1.0], u);
    let (out, tol) = lip_reference(&q, 0, &k, 2, &[1.0, -1.0], 1, u);
    assert!((out[0] - (2.5 - 1.5) / 4.0).abs() < 1e-15);
    assert!(tol[0] > 0.0 && tol[0] < 1e-5, "{}", tol[0]);
    // One visible key: the output is its value.
    let (out, _) = lip_reference(&q, 0, &k, 1, &[1.0, -1.0], 1, u);
    assert_eq!(out[0], 1.0);
}

#[test]
fn the_bound_grows_with_the_projection_error() {
    let u = f64::from(f32::EPSILON) / 2.0;
    let spec = relu_spec(1e-3);
    let small = lip_features(&spec, &[0.5, 0.25], u);
    let large = lip_features(&spec, &[500.0, 250.0], u);
    assert!(large.err()[0] > 100.0 * small.err()[0]);
    assert_eq!(small.rows(), 1);
}
