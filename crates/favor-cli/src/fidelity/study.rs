//! The whole study, seeds in parallel.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use favor_core::{HybridShape, Kernels};
use favor_simd::Detected;
use indicatif::ProgressBar;

use super::config::{Config, Kernel, Projection, calibration_seed, input_seed, projection_seed};
use super::estimate::{DrawnMap, Pairs, attend, kernel_estimates, output_mse};
use super::inputs::{Inputs, draw_qkv};
use super::report::{KernelRow, OutputRow, Report};
use crate::args::{CliError, CliResult, elements, try_collect, try_with_capacity};

/// A (kernel, projection, attention, m) combination, in report order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cell {
    pub(super) kernel: Kernel,
    pub(super) proj: Projection,
    pub(super) hybrid: Option<HybridShape>,
    pub(super) m: usize,
}

pub(super) fn cells(cfg: &Config) -> Vec<Cell> {
    let mut out = Vec::new();
    for &kernel in &cfg.kernels {
        for &proj in &cfg.projections {
            for hybrid in cfg.hybrids() {
                for &m in &cfg.features {
                    out.push(Cell {
                        kernel,
                        proj,
                        hybrid,
                        m,
                    });
                }
            }
        }
    }
    out
}

/// What one (r, seed) produced for every cell.
pub(super) struct Item {
    pub(super) exact_ms: f64,
    pub(super) mse: Vec<f64>,
    /// Per cell, per pair: squared kernel error (empty for ReLU or without pairs).
    pub(super) kernel_sq: Vec<Vec<f64>>,
}

pub(super) fn run_item(
    cfg: &Config,
    backend: &Detected,
    r: f64,
    seed: usize,
    pairs: &Pairs,
) -> CliResult<Item> {
    let inp = Inputs::draw(backend, cfg.setting, cfg.len, cfg.dim, r, input_seed(seed))?;
    // The data-aware map is fitted on a separate draw, never on the inputs it is judged on.
    let [cq, ck, _] = if cfg.kernels.contains(&Kernel::DataAware) {
        draw_qkv(cfg.setting, calibration_seed(seed), cfg.len, cfg.dim, r)?
    } else {
        Default::default()
    };
    let cells = cells(cfg);
    let mut item = Item {
        exact_ms: inp.exact_mean_square(),
        mse: Vec::with_capacity(cells.len()),
        kernel_sq: Vec::with_capacity(cells.len()),
    };
    for c in cells {
        let map = DrawnMap::draw(
            c.kernel,
            c.proj,
            projection_seed(seed, c.kernel, c.proj, c.m),
            c.m,
            &inp,
            (&cq, &ck),
            c.hybrid,
        )?;
        let out = attend(backend, &map, c.hybrid, &inp)?;
        item.mse.push(output_mse(&out, &inp.exact));
        let sq = if c.kernel.has_lemma2() && c.hybrid.is_none() && cfg.pairs > 0 {
            let w = &map.w;
            let mut est =
                kernel_estimates(backend, c.kernel, w, c.m, cfg.dim, &pairs.xs, &pairs.ys)?;
            // In place: every seed keeps these for every cell until the report is built.
            for (e, x) in est.iter_mut().zip(&pairs.exact) {
                *e = (*e - x) * (*e - x);
            }
            est
        } else {
            Vec::new()
        };
        item.kernel_sq.push(sq);
    }
    Ok(item)
}

pub(super) fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

pub(super) fn sample_std(x: &[f64]) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    let mu = mean(x);
    Some((x.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / (x.len() - 1) as f64).sqrt())
}

/// Runs the whole study (seeds in parallel on `cfg.threads` threads).
pub fn run(cfg: &Config) -> CliResult<Report> {
    run_with_progress(cfg, &ProgressBar::hidden())
}

/// [`run`], advancing `bar` by one step per (norm, seed): `norms.len() × seeds` in all.
pub fn run_with_progress(cfg: &Config, bar: &ProgressBar) -> CliResult<Report> {
    cfg.validate()?;
    let start = Instant::now();
    let backend = favor_simd::detected();
    let pairs: Vec<Pairs> = cfg
        .norms
        .iter()
        .map(|&r| Pairs::new(cfg.pairs, cfg.dim, r))
        .collect::<CliResult<_>>()?;
    let n_jobs = elements("fidelity jobs", &[cfg.norms.len(), cfg.seeds])?;
    let jobs = try_collect(
        "fidelity jobs",
        (0..n_jobs).map(|j| (j / cfg.seeds, j % cfg.seeds)),
    )?;
    let results: Mutex<Vec<Option<CliResult<Item>>>> = Mutex::new(try_collect(
        "fidelity results",
        (0..jobs.len()).map(|_| None),
    )?);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..cfg.threads.min(jobs.len()) {
            scope.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(ri, s)) = jobs.get(j) else { break };
                    let item = run_item(cfg, &backend, cfg.norms[ri], s, &pairs[ri]);
                    bar.inc(1);
                    let failed = item.is_err();
                    results.lock().unwrap_or_else(|e| e.into_inner())[j] = Some(item);
                    if failed {
                        // Stop handing out work; the error is reported below.
                        next.store(jobs.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut items: Vec<Item> = try_with_capacity("fidelity results", jobs.len())?;
    for res in results {
        match res {
            Some(Ok(item)) => items.push(item),
            Some(Err(e)) => return Err(e),
            None => return Err(CliError::failure("fidelity: a worker stopped early")),
        }
    }

    let cells = cells(cfg);
    let mut output = Vec::new();
    let mut kernel = Vec::new();
    for (ri, &r) in cfg.norms.iter().enumerate() {
        let its = &items[ri * cfg.seeds..(ri + 1) * cfg.seeds];
        let pr = &pairs[ri];
        for (ci, c) in cells.iter().enumerate() {
            let per_seed: Vec<f64> = its.iter().map(|it| it.mse[ci]).collect();
            let rel = mean(
                &its.iter()
                    .map(|it| it.mse[ci] / it.exact_ms)
                    .collect::<Vec<_>>(),
            );
            output.push(OutputRow {
                r,
                kernel: c.kernel,
                projection: c.proj,
                hybrid: c.hybrid,
                m: c.m,
                mse_mean: mean(&per_seed),
                mse_std: sample_std(&per_seed),
                rel_mse: rel,
                nonfinite_seeds: per_seed.iter().filter(|x| !x.is_finite()).count(),
                mse_per_seed: per_seed,
            });
            if cfg.pairs == 0 || c.hybrid.is_some() {
                continue;
            }
            let Some(v) = pr.lemma2(c.kernel, cfg.dim, c.m) else {
                continue;
            };
            let n = cfg.pairs;
            let sm2: Vec<f64> = pr.exact.iter().map(|e| e * e).collect();
            let emp_p: Vec<f64> = (0..n)
                .map(|p| mean(&its.iter().map(|it| it.kernel_sq[ci][p]).collect::<Vec<_>>()))
                .collect();
            let rel_per_seed: Vec<f64> = its
                .iter()
                .map(|it| {
                    mean(
                        &(0..n)
                            .map(|p| it.kernel_sq[ci][p] / sm2[p])
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            let lemma2_rel = mean(&(0..n).map(|p| v[p] / sm2[p]).collect::<Vec<_>>());
            let emp_rel = mean(&rel_per_seed);
            kernel.push(KernelRow {
                r,
                kernel: c.kernel,
                projection: c.proj,
                m: c.m,
                lemma2_mse: mean(&v),
                empirical_mse: mean(&emp_p),
                lemma2_rel_mse: lemma2_rel,
                empirical_rel_mse: emp_rel,
                ratio: emp_rel / lemma2_rel,
                rel_per_seed,
            });
        }
    }
    Ok(Report {
        config: cfg.clone(),
        backend: Kernels::<f64>::name(&backend),
        seconds: start.elapsed().as_secs_f64(),
        output,
        kernel,
    })
}
