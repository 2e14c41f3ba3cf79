//! Unit tests of favor-testkit's `bounds` oracles (moved out of the library so `cargo test`
//! does not compile the library a second time as a test harness).

use favor_testkit::bounds::*;

#[test]
fn keys_and_steps() {
    assert_eq!(ulps(1.0f32, 1.0f32.step(1)), 1);
    assert_eq!(1.0f32.step(1), 1.0 + f32::EPSILON);
    assert_eq!(0.0f32.step(1), f32::from_bits(1));
    assert_eq!(0.0f32.step(-1), -f32::from_bits(1));
    assert_eq!(ulps(-0.0f32, 0.0f32), 0);
    assert_eq!(f32::MAX.step(1), f32::INFINITY);
    assert_eq!(ulps(f32::MAX, f32::INFINITY), 1);
    assert_eq!(2.0f64.step(-1), 2.0 - f64::EPSILON);
    assert_eq!(step_span(1.0f32, 1), f64::from(f32::EPSILON));
}

#[test]
fn close_handles_overflow_edges() {
    assert!(close(f32::INFINITY, f32::INFINITY, 0.0));
    assert!(!close(f32::INFINITY, f32::NEG_INFINITY, 1e30));
    assert!(close(f32::NAN, f32::NAN, 0.0));
    assert!(!close(1.0f32, f32::NAN, 1e30));
    assert!(close(f32::MAX, f32::INFINITY, 1e32));
    assert!(!close(1e30f32, f32::INFINITY, 1e20));
}
