//! The hybrid attention oracle (exact window + sinks + random features outside), in f64,
//! written from the definition and never running favor code.
//!
//! For query i the exact set E(i) is the first `sinks` positions plus the window
//! (bidirectional: |i − j| ≤ w; causal: i − w ≤ j ≤ i). Over the visible keys j
//! (causal: j ≤ i; and the key mask), the weight is `aᵢⱼ = exp(τ qᵢ·kⱼ)` for j ∈ E(i) and
//! `aᵢⱼ = φ(qᵢ)·φ(kⱼ)` otherwise; `outᵢ = Σⱼ aᵢⱼ vⱼ / Σⱼ aᵢⱼ` (one normaliser for both
//! kinds of weight). Everything is summed in the log domain (log-sum-exp over the features
//! of each φ·φ, then over keys), so no input norm under- or overflows it.

use crate::reference::{Explicit, Qkv, lse_pair, visible};

/// Which keys a query sees exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hybrid {
    /// Half-width w of the exact window.
    pub window: usize,
    /// The first `sinks` positions are exact for every query that sees them.
    pub sinks: usize,
    /// Causal (j ≤ i) or bidirectional.
    pub causal: bool,
}

impl Hybrid {
    /// Whether key j is in query i's exact set E(i) (visibility aside).
    pub fn exact(&self, i: usize, j: usize) -> bool {
        j < self.sinks || i.abs_diff(j) <= self.window
    }
}

/// Hybrid attention of `x` (`q`, `k`, `v` row-major) with temperature `tau` for the exact
/// weights and the random features `fq`, `fk` (the same rows of q and k through a positive
/// map) for the others. Rows with no visible key are 0.
pub fn hybrid(
    x: Qkv<'_>,
    tau: f64,
    (fq, fk): (&Explicit, &Explicit),
    h: Hybrid,
    mask: Option<&[bool]>,
) -> Vec<f64> {
    let Qkv { q, k, v, d, dv } = x;
    let (lq, lk) = (q.len() / d, k.len() / d);
    let mut out = vec![0.0; lq * dv];
    for i in 0..lq {
        let logs: Vec<(usize, f64)> = (0..lk)
            .filter(|&j| visible(i, j, h.causal, mask))
            .map(|j| {
                let a = if h.exact(i, j) {
                    tau * (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum::<f64>()
                } else {
                    lse_pair(fq.log_features(i), fk.log_features(j))
                };
                (j, a)
            })
            .collect();
        let top = logs.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
        if top == f64::NEG_INFINITY {
            continue;
        }
        let z: f64 = logs.iter().map(|(_, a)| (a - top).exp()).sum();
        for &(j, a) in &logs {
            let p = (a - top).exp() / z;
            for c in 0..dv {
                out[i * dv + c] += p * v[j * dv + c];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{MapKind, MapSpec};
    use crate::reference::{explicit, softmax};

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
}
