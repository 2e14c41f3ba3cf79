//! The favor-simd benchmark workload for the criterion benches and examples in this package.
//! Its one home is the `favor-workload` crate (also run by `favor bench`); this crate re-exports it
//! and adds what only the criterion benches need.
//!
//! The benches (`cargo bench -p favor-benches`; one file each, filter with
//! `cargo bench -p favor-benches --bench kernels -- gemm`):
//!
//! | bench | groups |
//! |---|---|
//! | `workloads` | `roof` (FMA loop), `decode_step_8heads`, `exp_4096` (vector exp against `libm::expf`) |
//! | `kernels` | one group per primitive at the workload's shapes, per backend ([`backends`]), the GEMMs also through the `gemm` crate ([`reference`](mod@reference)); `feature_map` |
//! | `attention` | `bidirectional_8heads`, `causal_8heads` and `exact_8heads` against L; `f16_input_8heads` |
//!
//! The example `gemm_reference` compares favor-simd's GEMM with the `gemm` crate on FAVOR+'s
//! shapes in one alternating run, beside the FMA roof, and the dense projection with
//! favor-core's `sorf_apply`.
//!
//! Throughput is set on every group: `elem/s` counts FLOPs where a FLOP model applies (compare
//! with the `roof` group's rate) and elements otherwise, as each file's docs say; groups
//! bound by memory traffic also report bytes.

use std::time::Instant;

use favor_core::{Kernels, Normals, Scalar};
use favor_simd::Detected;
pub use favor_workload::*;

pub mod reference;

/// The backends the kernel benches compare: favor-core's scalar reference, the detected one
/// and, on an x86 CPU whose detected backend is wider, AVX2+FMA forced. All are
/// [`Detected`] values, so one generic function benches each; names come from
/// [`Kernels::name`].
pub fn backends() -> Vec<Detected> {
    let detected = Detected::new();
    let mut v = vec![Detected::Scalar(Scalar)];
    if Kernels::<f32>::name(&detected) != "scalar" {
        v.push(detected);
    }
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if let Some(avx2) = favor_simd::Avx2::new()
        && Kernels::<f32>::name(&detected) != "avx2"
    {
        v.push(Detected::Avx2(avx2));
    }
    v
}

/// The detected backend's name, for benchmark ids.
pub fn name(k: &Detected) -> &'static str {
    Kernels::<f32>::name(k)
}

/// `n` deterministic values from a normal of standard deviation `scale / 2` (seeded by
/// `seed`): inputs for the exploration examples, whose exps stay well inside f32's range.
pub fn normal_data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut g = Normals::new(seed);
    (0..n).map(|_| g.sample::<f32>() * 0.5 * scale).collect()
}

/// Seconds per call of each closure, `[median, min, max]` over `reps` rounds in which every
/// closure runs `inner` times in turn (after two warm-up rounds): variants that alternate
/// call by call see the same machine, so their ratio is fair on a noisy one.
pub fn round_robin(reps: usize, inner: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<[f64; 3]> {
    let inner = inner.max(1);
    for _ in 0..2 {
        for f in fs.iter_mut() {
            f();
        }
    }
    let mut t = vec![Vec::new(); fs.len()];
    for _ in 0..reps.max(1) {
        for (i, f) in fs.iter_mut().enumerate() {
            let s = Instant::now();
            for _ in 0..inner {
                f();
            }
            t[i].push(s.elapsed().as_secs_f64() / inner as f64);
        }
    }
    t.into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            [v[v.len() / 2], v[0], v[v.len() - 1]]
        })
        .collect()
}
