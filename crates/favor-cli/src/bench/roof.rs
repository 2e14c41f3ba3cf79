//! The FMA roofs of a run: the widest ISA's and AVX2+FMA's, over all threads.

use super::options::Plan;
use super::timing::{measure, par_run};
use favor_workload::{self as workload};
use std::time::Instant;

/// The FMA roofs of this run, GFLOP/s over all threads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Roofs {
    /// The widest ISA's roof.
    pub(super) widest: f64,
    /// f32 lanes of the widest ISA.
    pub(super) lanes: usize,
    /// The 8-lane AVX2+FMA roof, where the CPU has AVX2.
    pub(super) avx2: Option<f64>,
}

impl Roofs {
    pub(super) fn measure(threads: usize, plan: &Plan) -> Self {
        let per_iter = workload::fma_roof(1).1;
        Self {
            widest: roof_rate(threads, plan, per_iter, workload::fma_roof),
            lanes: per_iter as usize / 24,
            avx2: avx2_roof(threads, plan),
        }
    }

    /// The roof of `backend`'s own ISA (see the module docs).
    pub(super) fn for_backend(&self, backend: &str) -> f64 {
        match (backend, self.avx2) {
            ("avx2", Some(r)) => r,
            _ => self.widest,
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn avx2_roof(threads: usize, plan: &Plan) -> Option<f64> {
    let per_iter = workload::fma_roof_avx2(1)?.1;
    Some(roof_rate(threads, plan, per_iter, |n| {
        workload::fma_roof_avx2(n).unwrap_or_default()
    }))
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn avx2_roof(_threads: usize, _plan: &Plan) -> Option<f64> {
    None
}

/// GFLOP/s of `roof` run on `threads` threads at once (median call).
pub(super) fn roof_rate(
    threads: usize,
    plan: &Plan,
    flops_per_iter: u64,
    roof: impl Fn(usize) -> (f32, u64) + Sync,
) -> f64 {
    let mut lanes = vec![(); threads];
    let iters = plan.roof_iters;
    let t = measure(plan.budget_s, || {
        let start = Instant::now();
        par_run(&mut lanes, |_| {
            std::hint::black_box(roof(iters));
        });
        start.elapsed().as_secs_f64()
    });
    (threads as u64 * flops_per_iter * iters as u64) as f64 / t.secs / 1e9
}
