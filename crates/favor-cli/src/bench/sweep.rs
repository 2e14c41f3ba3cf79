//! The sweep: every workload at every L of the plan, on one thread per lane of heads.

use super::measurement::{HybridRow, Measurement, Workload};
use super::options::{BackendChoice, Options, Plan};
use super::report::{Row, emit, header, join, plot, put};
use super::roof::Roofs;
use super::timing::{DECODE_BATCH, Timing, measure, par_run, split};
use crate::args::{CliError, CliResult, elements, try_zeros};
use favor_core::{Kernels, Scalar};
use favor_simd::{Detected, Portable, WithKernels};
use favor_workload::{
    self as workload, CAUSAL_CHUNK, DIM, HEADS, Head, HeadStream, HybridHeadStream,
};
use indicatif::ProgressBar;
use std::io::Write;
use std::ops::Range;
use std::time::Instant;

/// One thread's share of the heads, with its own output and scratch.
pub(super) struct Lane<'h> {
    pub(super) heads: &'h [Head],
    pub(super) out: Vec<f32>,
    pub(super) scratch: Vec<f32>,
}

/// Times one call of an attention workload over all lanes.
pub(super) fn attention_call<K: Kernels<f32>>(
    k: &K,
    w: Workload,
    len: usize,
    lanes: &mut [Lane],
) -> f64 {
    let start = Instant::now();
    par_run(lanes, |l| match w {
        Workload::Bidir => {
            workload::bidirectional_all(k, l.heads, len, &mut l.out, &mut l.scratch);
        }
        Workload::Causal => workload::causal_all(k, l.heads, len, &mut l.out, &mut l.scratch),
        Workload::Exact => workload::exact_all(k, l.heads, len, &mut l.out),
        Workload::HybridBidir(w) => {
            let call = (len, false, w.config());
            workload::hybrid_all(k, l.heads, call, &mut l.out, &mut l.scratch);
        }
        Workload::HybridCausal(w) => {
            let call = (len, true, w.config());
            workload::hybrid_all(k, l.heads, call, &mut l.out, &mut l.scratch);
        }
        Workload::Decode | Workload::HybridDecode(_) => {
            unreachable!("decode is timed by decode_times and hybrid_decode_times")
        }
    });
    start.elapsed().as_secs_f64()
}

/// Estimates one exact-attention call at `len` tokens before any was measured: one head of
/// `lane` at up to 512 tokens, scaled by the lane's heads and the L² law.
pub(super) fn exact_probe<K: Kernels<f32>>(k: &K, lane: &Lane, len: usize) -> f64 {
    let probe = len.min(512);
    let mut out = vec![0f32; probe * DIM];
    let start = Instant::now();
    workload::exact_all(k, &lane.heads[..1], probe, &mut out);
    let t = start.elapsed().as_secs_f64();
    t * lane.heads.len() as f64 * (len as f64 / probe as f64).powi(2)
}

/// One thread's share of the decode streams.
pub(super) struct DecodeLane<'l, 's, 'h, K: Kernels<f32>> {
    pub(super) streams: &'l mut [HeadStream<'s, 'h, K>],
    pub(super) heads: &'h [Head],
    pub(super) snaps: &'l [Vec<u8>],
    pub(super) out: Vec<f32>,
}

/// Times a decode step (per token, all heads) after each count of tokens in `seen`.
pub(super) fn decode_times<K: Kernels<f32>>(
    k: K,
    heads: &[Head],
    threads: usize,
    seen: &[usize],
    budget: f64,
) -> CliResult<Vec<Timing>> {
    let ranges = split(heads.len(), threads);
    workload::with_streams(k, heads, |streams| {
        let mut out = try_zeros("benchmark outputs", heads[0].q.len())?;
        let mut scratch = vec![0f32; streams[0].prefill_scratch_len(CAUSAL_CHUNK).unwrap()];
        let mut times = Vec::new();
        for &n in seen {
            for (s, h) in streams.iter_mut().zip(heads) {
                s.reset();
                advance(s, h, n, &mut out, &mut scratch);
            }
            let snaps: Vec<Vec<u8>> = streams
                .iter()
                .map(|s| {
                    let mut b = vec![0u8; s.snapshot_len()];
                    s.snapshot(&mut b).unwrap();
                    b
                })
                .collect();
            let mut lanes: Vec<_> = split_mut(streams, &ranges)
                .into_iter()
                .zip(&ranges)
                .map(|(mine, r)| DecodeLane {
                    streams: mine,
                    heads: &heads[r.clone()],
                    snaps: &snaps[r.clone()],
                    out: vec![0f32; DIM],
                })
                .collect();
            let batch = measure(budget, || {
                for l in lanes.iter_mut() {
                    for (s, b) in l.streams.iter_mut().zip(l.snaps) {
                        s.restore(b).unwrap();
                    }
                }
                let start = Instant::now();
                par_run(&mut lanes, |l| {
                    for t in 0..DECODE_BATCH {
                        workload::decode_step(l.streams, l.heads, t, &mut l.out);
                    }
                });
                start.elapsed().as_secs_f64()
            });
            times.push(Timing {
                secs: batch.secs / DECODE_BATCH as f64,
                ..batch
            });
        }
        Ok(times)
    })
}

/// `items` cut at `ranges` (consecutive, from 0): one mutable part per range.
fn split_mut<'a, S>(mut items: &'a mut [S], ranges: &[Range<usize>]) -> Vec<&'a mut [S]> {
    ranges
        .iter()
        .map(|r| {
            let (mine, tail) = std::mem::take(&mut items).split_at_mut(r.len());
            items = tail;
            mine
        })
        .collect()
}

/// One thread's share of the hybrid decode streams, and the token it steps next.
struct HybridDecodeLane<'l, 's, 'h, K: Kernels<f32>> {
    streams: &'l mut [HybridHeadStream<'s, 'h, K>],
    heads: &'h [Head],
    next: usize,
    out: Vec<f32>,
}

/// Times a hybrid decode step of configuration `row` (per token, all heads) after each count
/// of tokens in `seen`. A timed batch goes on from where the last one stopped instead of
/// restoring a snapshot taken at `seen`: its ring and its state have a
/// fixed size, so the cost per token does not depend on the tokens seen, which the rows at
/// each `seen` show.
pub(super) fn hybrid_decode_times<K: Kernels<f32>>(
    k: K,
    heads: &[Head],
    threads: usize,
    (seen, row): (&[usize], HybridRow),
    budget: f64,
) -> Vec<Timing> {
    let ranges = split(heads.len(), threads);
    let time = |n: usize| {
        workload::with_hybrid_streams(k, heads, row.config(), |streams| {
            let mut out = vec![0f32; DIM];
            for t in 0..n {
                workload::hybrid_decode_step(streams, heads, t, &mut out);
            }
            let mut lanes: Vec<_> = split_mut(streams, &ranges)
                .into_iter()
                .zip(&ranges)
                .map(|(mine, r)| HybridDecodeLane {
                    streams: mine,
                    heads: &heads[r.clone()],
                    next: n,
                    out: vec![0f32; DIM],
                })
                .collect();
            let batch = measure(budget, || {
                let start = Instant::now();
                par_run(&mut lanes, |l| {
                    for _ in 0..DECODE_BATCH {
                        workload::hybrid_decode_step(l.streams, l.heads, l.next, &mut l.out);
                        l.next += 1;
                    }
                });
                start.elapsed().as_secs_f64()
            });
            Timing {
                secs: batch.secs / DECODE_BATCH as f64,
                ..batch
            }
        })
    };
    seen.iter().map(|&n| time(n)).collect()
}

/// Feeds `tokens` tokens of `h` (cycling through its rows) into `s` with the chunked prefill.
pub(super) fn advance<K: Kernels<f32>>(
    s: &mut HeadStream<'_, '_, K>,
    h: &Head,
    tokens: usize,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let rows = h.q.len() / DIM;
    let mut left = tokens;
    while left > 0 {
        let n = left.min(rows);
        let e = n * DIM;
        let (q, k, v) = (&h.q[..e], &h.k[..e], &h.v[..e]);
        s.prefill(q, k, v, n, CAUSAL_CHUNK, &mut out[..e], scratch)
            .unwrap();
        left -= n;
    }
}

/// Runs the sweep of `plan`, writing the report to `out` as it goes; returns the
/// measurements.
pub fn run(opts: &Options, plan: &Plan, out: &mut dyn Write) -> CliResult<Vec<Measurement>> {
    run_with_progress(opts, plan, out, &ProgressBar::hidden())
}

/// [`run`], advancing `bar` by one step per phase: the roofs, each L, the decode steps
/// ([`steps`] in all).
pub fn run_with_progress(
    opts: &Options,
    plan: &Plan,
    out: &mut dyn Write,
    bar: &ProgressBar,
) -> CliResult<Vec<Measurement>> {
    let sink = Sink { opts, out, bar };
    match opts.backend {
        BackendChoice::Portable => sweep(Portable::new(), plan, sink),
        // One match for the whole sweep: every primitive call inside is a direct call on
        // the concrete backend (`Detected::dispatch`), as favor-tensor runs its calls.
        choice => detected_choice(choice)?.dispatch(Sweep { plan, sink }),
    }
}

/// [`sweep`] as an operation over the kernels, for [`Detected::dispatch`].
struct Sweep<'a> {
    plan: &'a Plan,
    sink: Sink<'a>,
}

impl WithKernels<f32> for Sweep<'_> {
    type Output = CliResult<Vec<Measurement>>;
    fn with_kernels<K: Kernels<f32>>(self, k: &K) -> Self::Output {
        sweep(*k, self.plan, self.sink)
    }
}

/// The phases [`run_with_progress`] reports: the roofs, each L of `plan`, the decode steps.
pub fn steps(plan: &Plan) -> usize {
    plan.lens.len() + 2
}

/// Where a sweep reports: its options, the report's writer and the progress bar.
pub(super) struct Sink<'a> {
    pub(super) opts: &'a Options,
    pub(super) out: &'a mut dyn Write,
    pub(super) bar: &'a ProgressBar,
}

/// The backend for `choice` (not `Portable`), or a usage error if the CPU lacks it.
pub fn detected_choice(choice: BackendChoice) -> CliResult<Detected> {
    let missing = |isa: &str| CliError::input(format!("--backend: this CPU has no {isa}"));
    match choice {
        BackendChoice::Auto => Ok(Detected::new()),
        BackendChoice::Scalar => Ok(Detected::Scalar(Scalar)),
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        BackendChoice::Avx2 => favor_simd::Avx2::new()
            .map(Detected::Avx2)
            .ok_or_else(|| missing("AVX2+FMA")),
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        BackendChoice::Avx512 => favor_simd::Avx512::new()
            .map(Detected::Avx512)
            .ok_or_else(|| missing("AVX-512")),
        #[cfg(target_arch = "aarch64")]
        BackendChoice::Neon => favor_simd::Neon::new()
            .map(Detected::Neon)
            .ok_or_else(|| missing("NEON")),
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        BackendChoice::Avx2 | BackendChoice::Avx512 => Err(missing("x86 SIMD (not an x86 CPU)")),
        #[cfg(not(target_arch = "aarch64"))]
        BackendChoice::Neon => Err(missing("NEON (not an AArch64 CPU)")),
        BackendChoice::Portable => unreachable!("run() handles the portable backend"),
    }
}

/// Scratch of one lane: every attention workload's.
fn lane_scratch_len() -> usize {
    HybridRow::ALL
        .map(|w| workload::hybrid_scratch_len(w.config()))
        .into_iter()
        .fold(workload::scratch_len(), usize::max)
}

pub(super) fn sweep<K: Kernels<f32>>(
    k: K,
    plan: &Plan,
    sink: Sink<'_>,
) -> CliResult<Vec<Measurement>> {
    let Sink { opts, out, bar } = sink;
    // The baseline: favor-core's scalar reference, itself (not through `Detected`).
    let scalar = Scalar;
    let start = Instant::now();
    let threads = opts.threads;
    let name = k.name();
    let with_scalar = name != "scalar";
    bar.set_message("FMA roof");
    let roofs = Roofs::measure(threads, plan);
    bar.inc(1);
    if !opts.json {
        put(out, &header(opts, name, &roofs))?;
    }
    let max_len = plan.lens.iter().copied().max().unwrap_or(1);
    let heads = workload::try_heads(max_len).map_err(|e| CliError::input(e.to_string()))?;
    let mut lanes: Vec<Lane> = split(HEADS, threads)
        .into_iter()
        .map(|r| {
            Ok(Lane {
                heads: &heads[r],
                out: try_zeros(
                    "benchmark outputs",
                    elements("benchmark outputs", &[max_len, DIM])?,
                )?,
                scratch: vec![0f32; lane_scratch_len()],
            })
        })
        .collect::<CliResult<_>>()?;
    let mk = |w: Workload, len: usize, backend: &'static str, t: Timing| Measurement {
        workload: w,
        len,
        backend,
        threads,
        ms: t.secs * 1e3,
        flops: w.flops(len),
        roof_gflops: roofs.for_backend(backend),
        runs: t.runs,
    };
    let mut all: Vec<Measurement> = Vec::new();
    let mut last_exact: Option<(usize, f64)> = None;
    let mut scalar_skipped = Vec::new();
    for &len in &plan.lens {
        bar.set_message(format!("L = {len}"));
        let mut rows = Vec::new();
        for w in [Workload::Bidir, Workload::Causal] {
            let t = measure(plan.budget_s, || attention_call(&k, w, len, &mut lanes));
            rows.push(Row::Done(mk(w, len, name, t)));
        }
        if with_scalar && len <= plan.scalar_max_len {
            for w in [Workload::Bidir, Workload::Causal] {
                let t = measure(plan.budget_s, || {
                    attention_call(&scalar, w, len, &mut lanes)
                });
                rows.push(Row::Done(mk(w, len, "scalar", t)));
            }
        } else if with_scalar {
            scalar_skipped.push(len);
        }
        let estimate = match last_exact {
            Some((l, s)) => s * (len as f64 / l as f64).powi(2),
            None => exact_probe(&k, &lanes[0], len),
        };
        match estimate {
            e if e > plan.exact_limit_s => rows.push(Row::Skipped {
                workload: Workload::Exact,
                len,
                backend: name,
                estimate_s: e,
            }),
            _ => {
                let t = measure(plan.budget_s, || {
                    attention_call(&k, Workload::Exact, len, &mut lanes)
                });
                last_exact = Some((len, t.secs));
                rows.push(Row::Done(mk(Workload::Exact, len, name, t)));
            }
        }
        for win in HybridRow::ALL {
            for w in [Workload::HybridBidir(win), Workload::HybridCausal(win)] {
                let t = measure(plan.budget_s, || attention_call(&k, w, len, &mut lanes));
                rows.push(Row::Done(mk(w, len, name, t)));
            }
        }
        emit(out, opts.json, &rows, &mut all)?;
        bar.inc(1);
    }
    drop(lanes);
    bar.set_message("decode");
    let times = decode_times(k, &heads, threads, &plan.decode_seen, plan.budget_s)?;
    let mut rows: Vec<Row> = plan
        .decode_seen
        .iter()
        .zip(times)
        .map(|(&n, t)| Row::Done(mk(Workload::Decode, n, name, t)))
        .collect();
    if with_scalar {
        let t = decode_times(scalar, &heads, threads, &[0], plan.budget_s)?;
        rows.push(Row::Done(mk(Workload::Decode, 0, "scalar", t[0])));
    }
    for win in HybridRow::ALL {
        let seen = &plan.decode_seen[..];
        let times = hybrid_decode_times(k, &heads, threads, (seen, win), plan.budget_s);
        let w = Workload::HybridDecode(win);
        rows.extend(
            seen.iter()
                .zip(times)
                .map(|(&n, t)| Row::Done(mk(w, n, name, t))),
        );
    }
    bar.inc(1);
    emit(out, opts.json, &rows, &mut all)?;
    if let Some(path) = &opts.plot {
        plot(path, opts, name, &all)?;
    }
    if !opts.json {
        let mut notes = String::new();
        if !scalar_skipped.is_empty() {
            notes += &format!(
                "scalar backend: skipped at L = {} (about 10x slower; measured up to L = {})\n",
                join(&scalar_skipped),
                plan.scalar_max_len
            );
        }
        if let Some(p) = &opts.plot {
            notes += &format!("plot written to {}\n", p.display());
        }
        notes += &format!("total time {:.1} s\n", start.elapsed().as_secs_f64());
        put(out, &notes)?;
    }
    Ok(all)
}
