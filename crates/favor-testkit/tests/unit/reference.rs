//! Unit tests of favor-testkit's `reference` oracles (moved out of the library so `cargo test`
//! does not compile the library a second time as a test harness).

use favor_testkit::maps::{MapKind, MapSpec};
use favor_testkit::reference::*;

/// Identity projection in d = m = 2, no data normaliser: q = (−A, 0) and k = (A, 0) give
/// `ln a = −|q|²/2 − |k|²/2`, query row scale `−|q|²/2 − ln√2`, key row scale
/// `A − |k|²/2 − ln√2`, so `ln D = ln 2 − A` exactly.
fn opposed(a: f64, tiny: f64) -> Reference {
    let spec = MapSpec {
        kind: MapKind::Positive,
        normalizer: false,
        transposed: false,
        d: 2,
        m: 2,
        eps: 0.0,
        w: vec![1.0, 0.0, 0.0, 1.0],
    };
    let (q, k) = (explicit(&spec, &[-a, 0.0]), explicit(&spec, &[a, 0.0]));
    let o = RefOpts {
        causal: false,
        key_mask: None,
        normalized: true,
        u: f64::from(f32::EPSILON) / 2.0,
        tiny,
    };
    favor_reference(&q, &k, &[0.5], 1, &o)
}

#[test]
fn underflow_term_claims_nothing_below_the_normal_range_and_vanishes_above_it() {
    let (f32_tiny, f64_tiny) = (f64::from(f32::MIN_POSITIVE), f64::MIN_POSITIVE);
    // ln D = ln 2 − 100 ≈ −99.3: below f32's ln μ ≈ −87.3, far above f64's.
    assert!(opposed(100.0, f32_tiny).tol[0].is_infinite());
    let no_under = opposed(100.0, 0.0).tol[0];
    assert!(no_under.is_finite());
    let t64 = opposed(100.0, f64_tiny).tol[0];
    assert!(t64.is_finite() && t64 - no_under <= 1e-250);
    // ln D ≈ −9.3: E/D ≈ 10·2·2·2⁻¹²⁶·e^9.3 ≈ 3e-33, the bound is the rounding bound.
    let (with, without) = (opposed(10.0, f32_tiny).tol[0], opposed(10.0, 0.0).tol[0]);
    assert!(
        with >= without && with - without <= 1e-30,
        "{with:e} vs {without:e}"
    );
}
