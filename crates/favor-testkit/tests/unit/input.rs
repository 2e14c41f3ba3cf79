//! Unit tests of favor-testkit's `input` oracles (moved out of the library so `cargo test`
//! does not compile the library a second time as a test harness).

use arbitrary::Unstructured;
use favor_testkit::input::*;

#[test]
fn values_are_finite_exact_in_f32_and_in_range() {
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut u = Unstructured::new(&bytes);
    for _ in 0..20 {
        let v = vector(&mut u, 100, -20, 20).unwrap();
        for x in v {
            assert!(x.is_finite());
            assert_eq!(f64::from(x as f32), x, "{x} not exact in f32");
            assert!(x == 0.0 || (x.abs() >= 2f64.powi(-20) && x.abs() < 2f64.powi(21)));
        }
    }
}
