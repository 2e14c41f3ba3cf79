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
