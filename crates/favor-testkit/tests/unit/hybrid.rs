//! Unit tests of favor-testkit's `hybrid` oracles (moved out of the library so `cargo test`
//! does not compile the library a second time as a test harness).

use favor_testkit::hybrid::*;
use favor_testkit::maps::{MapKind, MapSpec};
use favor_testkit::reference::Qkv;
use favor_testkit::reference::{explicit, softmax};

const L: usize = 12;
const D: usize = 4;

fn data() -> (Vec<f64>, Vec<f64>, Vec<f64>, MapSpec) {
    let f = |n: usize, a: f64| -> Vec<f64> { (0..n).map(|i| (a * i as f64).sin()).collect() };
    let spec = MapSpec {
        kind: MapKind::Positive,
        normalizer: true,
        transposed: false,
        d: D,
        m: 8,
        eps: 0.0,
        w: f(8 * D, 0.77).iter().map(|x| 2.0 * x).collect(),
    };
    (f(L * D, 0.31), f(L * D, 0.53), f(L * D, 1.7), spec)
}

fn run(h: Hybrid, mask: Option<&[bool]>) -> (Vec<f64>, Vec<f64>) {
    let (q, k, v, spec) = data();
    let x = Qkv {
        q: &q,
        k: &k,
        v: &v,
        d: D,
        dv: D,
    };
    let tau = 1.0 / (D as f64).sqrt();
    let (fq, fk) = (explicit(&spec, &q), explicit(&spec, &k));
    let got = hybrid(x, tau, (&fq, &fk), h, mask);
    (got, softmax(x, tau, h.causal, mask).out)
}

/// A window as long as the sequence, or every position a sink, is exact softmax.
#[test]
fn all_exact_is_softmax() {
    let mask: Vec<bool> = (0..L).map(|j| j % 5 != 2).collect();
    for causal in [false, true] {
        for (window, sinks) in [(L, 0), (0, L), (L - 1, 3)] {
            for m in [None, Some(&mask[..])] {
                let (got, want) = run(
                    Hybrid {
                        window,
                        sinks,
                        causal,
                    },
                    m,
                );
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-12, "w {window} s {sinks}: {a} vs {b}");
                }
            }
        }
    }
}

/// A narrow window differs from softmax (the far field is estimated), and a query's row
/// moves when a key outside its exact set changes only through the features.
#[test]
fn far_keys_are_estimated() {
    let h = Hybrid {
        window: 1,
        sinks: 1,
        causal: false,
    };
    let (got, want) = run(h, None);
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff > 1e-6, "the features are coarse (m = 8): {diff}");
    assert!(h.exact(5, 0) && h.exact(5, 4) && h.exact(5, 6) && !h.exact(5, 3));
}

/// Causal rows do not depend on later tokens.
#[test]
fn causal_rows_ignore_the_future() {
    let (q, mut k, mut v, spec) = data();
    let h = Hybrid {
        window: 2,
        sinks: 1,
        causal: true,
    };
    let tau = 0.5;
    let go = |k: &[f64], v: &[f64]| {
        let x = Qkv {
            q: &q,
            k,
            v,
            d: D,
            dv: D,
        };
        hybrid(x, tau, (&explicit(&spec, &q), &explicit(&spec, k)), h, None)
    };
    let before = go(&k, &v);
    for e in &mut k[7 * D..] {
        *e *= -3.0;
    }
    for e in &mut v[7 * D..] {
        *e += 10.0;
    }
    let after = go(&k, &v);
    assert_eq!(before[..7 * D], after[..7 * D]);
    assert_ne!(before[7 * D..], after[7 * D..]);
}
