//! Unit tests of favor-testkit's `hybrid_paths` oracles (moved out of the library so `cargo test`
//! does not compile the library a second time as a test harness).

use arbitrary::Unstructured;
use favor_core::ProjectionKind;
use favor_testkit::hybrid_paths::*;
use favor_testkit::input::Mix;
use favor_testkit::maps::{MapKind, MapSpec};

/// `check_hybrid` on 300 pseudo-random byte strings (fixed seed), lengths up to 512:
/// every property holds, and enough of them decode to real cases (not vacuous).
#[test]
fn random_inputs_pass() {
    let mut mix = Mix::new(0x4859_4252_4944);
    let mut decoded = 0;
    for case in 0..300 {
        let len = 64 + (mix.next_u64() % 449) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| mix.next_u64() as u8).collect();
        if HybridCase::arbitrary(&mut Unstructured::new(&bytes)).is_ok() {
            decoded += 1;
        }
        let r = std::panic::catch_unwind(|| check_hybrid(&bytes));
        assert!(r.is_ok(), "case {case} fails: bytes {bytes:02x?}");
    }
    assert!(decoded >= 250, "only {decoded} of 300 inputs decoded");
}

/// Hand-made cases that reach each branch: all exact (softmax), no window, sinks only, a
/// snapshot before and after keys leave the window, both precisions.
#[test]
fn handmade_cases_pass() {
    let base = |f64_: bool, window: usize, sinks: usize, cut: usize| {
        let (l, d, dv, m) = (20, 4, 3, 8);
        let mut w = vec![0f64; m * d];
        favor_core::projection(ProjectionKind::default(), 9, m, d, &mut w).unwrap();
        let f = |n: usize, a: f64, s: f64| -> Vec<f64> {
            (0..n)
                .map(|i| f64::from((s * (a * i as f64 + 0.3).sin()) as f32))
                .collect()
        };
        HybridCase {
            f64: f64_,
            map: MapSpec {
                kind: MapKind::Positive,
                normalizer: true,
                transposed: false,
                d,
                m,
                eps: 0.0,
                w: w.iter().map(|&x| f64::from(x as f32)).collect(),
            },
            l,
            dv,
            window,
            sinks,
            chunk: 6,
            block: 7,
            q: f(l * d, 0.37, 1.2),
            k: f(l * d, 0.71, 1.1),
            v: f(l * dv, 1.9, 1.0),
            cut,
            junk: f64::NAN,
            bad: BadStep::HugeQuery,
            mutation: (70, 0x10, true),
        }
    };
    for f64_ in [false, true] {
        for (window, sinks, cut) in [(20, 0, 5), (0, 0, 0), (0, 4, 20), (3, 2, 12), (2, 1, 4)] {
            run_case(&base(f64_, window, sinks, cut));
        }
    }
}
