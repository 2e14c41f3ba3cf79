//! `favor bench`: the speed table of the favor-simd issue, measured on this machine.
//!
//! ```text
//! favor bench [--json] [--quick] [--lens 256,1024,...] [--threads N]
//!             [--backend auto|avx2|avx512|neon|portable|scalar] [--plot FILE.png]
//! favor bench --memory [--json] [--quick]
//! ```
//!
//! # Workload
//! The favor-simd issue's workload ([`favor_workload`]): batch 1, 8 heads, head dim d = 64,
//! m = 256 positive random features, f32. Every L of the sweep (default 256, 512, …, 65536;
//! `--lens` overrides, `--quick` is 256 and 1024 with shorter timing) measures:
//!
//! | workload | what | FLOPs charged per call |
//! |---|---|---|
//! | `bidir` | bidirectional FAVOR+ (blocks of 256) over all heads | 8·H·L·m·d |
//! | `causal` | chunked causal FAVOR+ (C = 64) over all heads | 8·H·L·m·d |
//! | `exact` | exact softmax attention ([`favor_core::softmax_attention_tiled`]: GEMM tiles, online softmax), all heads | 4·H·L²·d |
//! | `decode` | one token through all heads with [`favor_core::Stream::step`]; L = tokens already seen (0 and 10 000) | 8·H·m·d per token |
//!
//! The FAVOR+ count is the four GEMMs (projecting q and k, K'ᵀV, Q'S: 2·L·m·d each);
//! exact attention's is QKᵀ and the weighted sum of V (L²·d multiply-adds each), causal
//! masking not applied; a decode step does the four products for one row. Exponentials,
//! normalisers and the causal chunk tile are not counted, so GFLOP/s understates the work.
//!
//! Each row runs the chosen backend (detected unless `--backend`). The same FAVOR+ workloads
//! run with the scalar reference backend (`favor_core::Scalar`, about 10× slower) at
//! L ≤ 4096 only (256 with `--quick`) and for decode at 0 tokens seen; the table says which
//! it skipped. Exact attention runs while its time per call, extrapolated by the L² law from
//! the last measured L (before the first, from one head at up to 512 tokens), stays under
//! 5 s (1 s with `--quick`); the text table prints a `skipped: would take ~N s` line for
//! each L beyond.
//!
//! # Timing
//! Each point is a warm-up call and then as many timed calls as fit in a budget of 0.5 s
//! (0.1 s with `--quick`), at least 5 and at most 5000; a call longer than the budget counts
//! its warm-up as the first sample, and one longer than 2 s is timed 3 times in all. `ms` is
//! the median. A decode sample is a batch of
//! 64 steps starting from the same restored state (`Stream::snapshot`/`restore`, not timed),
//! divided by 64.
//!
//! `--threads N` (1 to 8, default 1) splits the heads over N threads with
//! [`std::thread::scope`], each with its own scratch and output; the threads are spawned for
//! every timed call (and, for decode, run their heads through the whole 64-token batch with
//! no per-token barrier), so the spawn cost is part of the time.
//!
//! # The roof
//! The FMA roof is [`workload::fma_roof`] — 12 independent vector FMA chains — measured in
//! the same run and the same way (median, on N threads at once). Two are measured and
//! printed: the widest ISA's (AVX-512's 16 lanes where the CPU has it) and the 8-lane
//! AVX2+FMA loop, the roof as the favor-simd issue defines it. `roof_pct` of a row is against
//! the roof of that row's own ISA: the 8-lane roof for the `avx2` backend, the widest roof for
//! every other backend (`avx512`, `neon`, and the non-SIMD `scalar` and `portable`, which
//! are thus compared with what the machine could do).
//!
//! # Output
//! Text (default): a header (CPU, backend, roofs, threads) and an aligned table with the
//! speedups against the scalar backend and against exact attention where both were measured.
//! `--json`: one object per line per measurement and nothing else:
//!
//! ```text
//! {"workload":"bidir","L":4096,"backend":"avx512","threads":1,"ms":61.2,"gflops":70.2,"roof_pct":41.0,"roof_gflops":171.3,"runs":9}
//! ```
//!
//! `ms` is the median per call (per token for `decode`), `L` the tokens (tokens already seen
//! for `decode`), `roof_gflops` the roof `roof_pct` is against and `runs` the number of timed
//! samples. Numbers are finite, or `null`.
//!
//! `--plot FILE.png` also draws time per call against L on log–log axes: FAVOR+
//! bidirectional and causal and exact attention (dashed: the scalar backend).
//!
//! # Memory (`--memory`)
//! `favor bench --memory` measures peak resident memory instead of time, to show that FAVOR+
//! needs no memory that grows with L beyond its inputs and outputs. Each row runs in a fresh
//! child process (this binary re-executed with the hidden option `--memory-probe
//! WORKLOAD:L`), which reads its resident set size (`VmRSS` of `/proc/self/status`) before
//! it allocates anything, runs the workload once and then reads its peak resident set size
//! (`VmHWM`). Linux only: elsewhere `--memory` fails with "unsupported".
//!
//! The workloads go through the tensor API ([`favor_tensor::Performer`], the detected
//! backend, one thread: `parallel(false)`, so the figures do not depend on the core count)
//! with the benchmark's shape: batch 1, [`HEADS`] heads, d = [`DIM`], m = [`FEATURES`], f32,
//! inputs q, k, v of `[1, 8, L, 64]` (2 KiB per token each) filled with
//! [`workload::fill_inputs`]:
//!
//! | workload | what | inputs | outputs |
//! |---|---|---|---|
//! | `memory-bidir` | one bidirectional `Performer::forward` | q, k, v: 6 KiB per token | the `[1, 8, L, 64]` result |
//! | `memory-causal` | one causal `Performer::forward` (chunks of 64) | the same | the same |
//! | `memory-stream` | a causal `Stream` fed L tokens by `Stream::prefill` in chunks of [`STREAM_CHUNK`] tokens: the same q, k, v chunk every time, so the inputs never exist at full length | one chunk | one chunk's result (each is dropped before the next call) |
//!
//! The default rows are bidir and causal at L = 2¹² and 2¹⁶ and the stream at 2¹⁶ and 2²⁰
//! tokens (`--quick`: 2¹⁰, 2¹²; stream 2¹², 2¹⁴). `working` is peak − baseline − inputs −
//! outputs: what the library itself held at the peak (projections, scratch, stream state,
//! allocator overhead); it can be slightly negative when the allocator returns pages early.
//! `--json` writes one object per row:
//!
//! ```text
//! {"workload":"memory-bidir","L":65536,"peak_rss_bytes":541401088,"baseline_rss_bytes":3051520,"input_bytes":402653184,"output_bytes":134217728,"working_bytes":1478656}
//! ```

use crate::args::{Args, CliError, CliResult, elements, try_zeros};
use crate::plot::{Panel, Series, render_png};
use favor_core::{Kernels, Scalar};
use favor_simd::{Detected, Portable};
use favor_tensor::{Performer, TensorView};
use favor_workload::{self as workload, CAUSAL_CHUNK, DIM, FEATURES, HEADS, Head, HeadStream};
use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Instant;

/// One line of help for `favor help`.
pub const USAGE: &str = "favor bench [--json] [--quick] [--lens 256,1024,...] [--threads N] \
                         [--backend auto|avx2|avx512|neon|portable|scalar] [--plot FILE.png] \
                         | favor bench --memory [--json] [--quick]";

/// Largest L `--lens` accepts (the inputs take 6 KiB per token).
pub const MAX_LEN: usize = 1 << 20;

/// Decode steps per timed sample.
const DECODE_BATCH: usize = 64;
/// Fewest timed samples per point.
const MIN_RUNS: usize = 5;
/// A call at least this long (seconds) is timed 3 times only, its warm-up included.
const LONG_CALL_S: f64 = 2.0;
/// Most timed samples per point.
const MAX_RUNS: usize = 5000;

/// Runs `favor bench` with the options in `args`, printing to stdout.
pub fn main(args: Args) -> CliResult<()> {
    let opts = Options::parse(args)?;
    if let Some(p) = &opts.plot {
        crate::attend::check_writable(p)?;
    }
    let out = &mut std::io::stdout().lock();
    if let Some(p) = opts.memory_probe {
        let m = memory_probe(p)?;
        return put(out, &(m.probe_line() + "\n"));
    }
    if opts.memory {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::failure(format!("--memory: cannot find this program: {e}")))?;
        let probes = MemoryProbe::defaults(opts.quick);
        return memory_report(&opts, &probes, |p| spawn_probe(&exe, p), out).map(drop);
    }
    let plan = Plan::new(&opts);
    run(&opts, &plan, out).map(drop)
}

/// The kernels `--backend` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// The best this CPU supports (`favor_simd::Detected`).
    Auto,
    /// AVX2+FMA.
    Avx2,
    /// AVX-512.
    Avx512,
    /// NEON.
    Neon,
    /// favor-simd's generic code on pulp's one-lane token (`favor_simd::Portable`).
    Portable,
    /// favor-core's scalar reference (`favor_core::Scalar`).
    Scalar,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "avx2" => Self::Avx2,
            "avx512" => Self::Avx512,
            "neon" => Self::Neon,
            "portable" => Self::Portable,
            "scalar" => Self::Scalar,
            _ => {
                return Err(
                    "unknown backend (expected auto, avx2, avx512, neon, portable or scalar)"
                        .into(),
                );
            }
        })
    }
}

/// The options of `favor bench`.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `--json`: one JSON object per line instead of the text table.
    pub json: bool,
    /// `--quick`: a small sweep with short timing (smoke tests).
    pub quick: bool,
    /// `--threads N`: threads the heads are split over (1 to [`HEADS`]).
    pub threads: usize,
    /// `--lens`: the sequence lengths (sorted, deduplicated), replacing the default sweep.
    pub lens: Option<Vec<usize>>,
    /// `--backend`: the kernels measured.
    pub backend: BackendChoice,
    /// `--plot FILE.png`: where to draw time against L.
    pub plot: Option<PathBuf>,
    /// `--memory`: measure peak resident memory (in child processes) instead of time.
    pub memory: bool,
    /// `--memory-probe WORKLOAD:L` (hidden): run one memory measurement in this process and
    /// print it as a [`MemoryMeasurement::probe_line`]; what `--memory` runs in each child.
    pub memory_probe: Option<MemoryProbe>,
}

impl Options {
    /// Reads and checks the options; every error is a usage error (exit status 2).
    pub fn parse(mut args: Args) -> CliResult<Self> {
        let json = args.flag("json");
        let quick = args.flag("quick");
        let memory = args.flag("memory");
        let memory_probe = args.parse::<MemoryProbe>("memory-probe")?;
        let given_threads = args.parse::<usize>("threads")?;
        let threads = given_threads.unwrap_or(1);
        let lens = args.list::<usize>("lens")?;
        let given_backend = args.parse::<BackendChoice>("backend")?;
        let backend = given_backend.unwrap_or(BackendChoice::Auto);
        let plot = args.value("plot")?.map(PathBuf::from);
        args.finish()?;
        if memory || memory_probe.is_some() {
            let timing_only = [
                ("--threads", given_threads.is_some()),
                ("--lens", lens.is_some()),
                ("--backend", given_backend.is_some()),
                ("--plot", plot.is_some()),
            ];
            if let Some((name, _)) = timing_only.iter().find(|(_, given)| *given) {
                return Err(CliError::input(format!(
                    "{name} does not apply to --memory (which takes only --json and --quick)"
                )));
            }
        }
        if !(1..=HEADS).contains(&threads) {
            return Err(CliError::input(format!(
                "--threads {threads}: must be 1 to {HEADS} (the workload has {HEADS} heads)"
            )));
        }
        let lens = lens
            .map(|mut l| {
                if let Some(bad) = l.iter().find(|&&n| !(1..=MAX_LEN).contains(&n)) {
                    return Err(CliError::input(format!(
                        "--lens {bad}: each L must be 1 to {MAX_LEN}"
                    )));
                }
                l.sort_unstable();
                l.dedup();
                Ok(l)
            })
            .transpose()?;
        if let Some(p) = &plot {
            check_plot_path(p)?;
        }
        Ok(Self {
            json,
            quick,
            threads,
            lens,
            backend,
            plot,
            memory,
            memory_probe,
        })
    }
}

/// Rejects a `--plot` path that cannot work before the sweep spends minutes.
fn check_plot_path(p: &Path) -> CliResult<()> {
    let png = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !png {
        return Err(CliError::input(format!(
            "--plot {}: the file name must end in .png",
            p.display()
        )));
    }
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(CliError::input(format!(
            "--plot {}: no such directory {}",
            p.display(),
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// What one sweep measures and how long it spends per point.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Sequence lengths, ascending.
    pub lens: Vec<usize>,
    /// Seconds of timed calls per point.
    pub budget_s: f64,
    /// Tokens seen before the decode measurements.
    pub decode_seen: Vec<usize>,
    /// The scalar backend runs bidir and causal at L up to this.
    pub scalar_max_len: usize,
    /// Exact attention runs while its estimated time per call is below this (seconds).
    pub exact_limit_s: f64,
    /// Iterations of one FMA-roof call.
    pub roof_iters: usize,
}

impl Plan {
    /// The sweep `opts` asks for.
    pub fn new(opts: &Options) -> Self {
        let mut plan = if opts.quick {
            Self {
                lens: vec![256, 1024],
                budget_s: 0.1,
                decode_seen: vec![0, 1000],
                scalar_max_len: 256,
                exact_limit_s: 1.0,
                roof_iters: 500_000,
            }
        } else {
            Self {
                lens: (8..=16).map(|p| 1 << p).collect(),
                budget_s: 0.5,
                decode_seen: vec![0, 10_000],
                scalar_max_len: 4096,
                exact_limit_s: 5.0,
                roof_iters: 2_000_000,
            }
        };
        if let Some(l) = &opts.lens {
            plan.lens = l.clone();
        }
        plan
    }
}

/// The measured workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Bidirectional FAVOR+.
    Bidir,
    /// Chunked causal FAVOR+.
    Causal,
    /// Exact softmax attention.
    Exact,
    /// One decode step per head.
    Decode,
}

impl Workload {
    /// The name in the table and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bidir => "bidir",
            Self::Causal => "causal",
            Self::Exact => "exact",
            Self::Decode => "decode",
        }
    }

    /// FLOPs charged per call (per token for decode) at `len` tokens.
    pub fn flops(self, len: usize) -> f64 {
        match self {
            Self::Bidir | Self::Causal => workload::favor_flops(len) as f64,
            Self::Exact => workload::exact_flops(len) as f64,
            Self::Decode => workload::favor_flops(1) as f64,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One measured point.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// What ran.
    pub workload: Workload,
    /// Tokens; for decode, tokens already seen.
    pub len: usize,
    /// The backend's name (`Kernels::name`).
    pub backend: &'static str,
    /// Threads the heads were split over.
    pub threads: usize,
    /// Median milliseconds per call (per token for decode).
    pub ms: f64,
    /// FLOPs charged per call (per token for decode).
    pub flops: f64,
    /// The FMA roof `roof_pct` is against, GFLOP/s over all threads.
    pub roof_gflops: f64,
    /// Timed samples behind the median.
    pub runs: usize,
}

impl Measurement {
    /// Achieved GFLOP/s under the workload's FLOP model.
    pub fn gflops(&self) -> f64 {
        self.flops / (self.ms * 1e6)
    }

    /// Percentage of the roof.
    pub fn roof_pct(&self) -> f64 {
        100.0 * self.gflops() / self.roof_gflops
    }

    /// One JSON object (no newline) with the keys `workload`, `L`, `backend`, `threads`,
    /// `ms`, `gflops`, `roof_pct`, `roof_gflops` and `runs`; non-finite numbers are `null`.
    /// The workload and backend names are plain identifiers (`[a-z0-9]`), written unescaped.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"workload\":\"{}\",\"L\":{},\"backend\":\"{}\",\"threads\":{},\"ms\":{},\"gflops\":{},\
             \"roof_pct\":{},\"roof_gflops\":{},\"runs\":{}}}",
            self.workload.as_str(),
            self.len,
            self.backend,
            self.threads,
            json_num(self.ms, 6),
            json_num(self.gflops(), 3),
            json_num(self.roof_pct(), 2),
            json_num(self.roof_gflops, 2),
            self.runs,
        )
    }
}

fn json_num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "null".into()
    }
}

/// The median of repeated timings of one point.
#[derive(Debug, Clone, Copy)]
struct Timing {
    secs: f64,
    runs: usize,
}

/// Times one point: `call` runs once and returns the seconds of its timed part. One warm-up
/// call, then timed calls for `budget` seconds (at least [`MIN_RUNS`], at most
/// [`MAX_RUNS`]); a warm-up longer than the budget is kept as a sample, and a call longer
/// than [`LONG_CALL_S`] gets 3 samples in all.
fn measure(budget: f64, mut call: impl FnMut() -> f64) -> Timing {
    let first = call();
    let mut samples = Vec::new();
    let want = if first >= budget {
        samples.push(first);
        if first >= LONG_CALL_S { 3 } else { MIN_RUNS }
    } else {
        ((budget / first.max(1e-9)) as usize).clamp(MIN_RUNS, MAX_RUNS)
    };
    while samples.len() < want {
        samples.push(call());
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let secs = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    Timing { secs, runs: n }
}

/// Runs `f` on every lane, each lane on its own thread (the first on this one).
fn par_run<L: Send>(lanes: &mut [L], f: impl Fn(&mut L) + Sync) {
    let Some((first, rest)) = lanes.split_first_mut() else {
        return;
    };
    if rest.is_empty() {
        return f(first);
    }
    let f = &f;
    std::thread::scope(|s| {
        for lane in rest {
            s.spawn(move || f(lane));
        }
        f(first);
    });
}

/// `n` items split into `parts` contiguous ranges of near-equal size.
fn split(n: usize, parts: usize) -> Vec<Range<usize>> {
    (0..parts)
        .map(|i| i * n / parts..(i + 1) * n / parts)
        .collect()
}

/// The FMA roofs of this run, GFLOP/s over all threads.
#[derive(Debug, Clone, Copy)]
struct Roofs {
    /// The widest ISA's roof.
    widest: f64,
    /// f32 lanes of the widest ISA.
    lanes: usize,
    /// The 8-lane AVX2+FMA roof, where the CPU has AVX2.
    avx2: Option<f64>,
}

impl Roofs {
    fn measure(threads: usize, plan: &Plan) -> Self {
        let per_iter = workload::fma_roof(1).1;
        Self {
            widest: roof_rate(threads, plan, per_iter, workload::fma_roof),
            lanes: per_iter as usize / 24,
            avx2: avx2_roof(threads, plan),
        }
    }

    /// The roof of `backend`'s own ISA (see the module docs).
    fn for_backend(&self, backend: &str) -> f64 {
        match (backend, self.avx2) {
            ("avx2", Some(r)) => r,
            _ => self.widest,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_roof(threads: usize, plan: &Plan) -> Option<f64> {
    let per_iter = workload::fma_roof_avx2(1)?.1;
    Some(roof_rate(threads, plan, per_iter, |n| {
        workload::fma_roof_avx2(n).unwrap_or_default()
    }))
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_roof(_threads: usize, _plan: &Plan) -> Option<f64> {
    None
}

/// GFLOP/s of `roof` run on `threads` threads at once (median call).
fn roof_rate(
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

/// One thread's share of the heads, with its own output and scratch.
struct Lane<'h> {
    heads: &'h [Head],
    out: Vec<f32>,
    scratch: Vec<f32>,
}

/// Times one call of an attention workload over all lanes.
fn attention_call<K: Kernels<f32>>(k: &K, w: Workload, len: usize, lanes: &mut [Lane]) -> f64 {
    let start = Instant::now();
    par_run(lanes, |l| match w {
        Workload::Bidir => {
            workload::bidirectional_all(k, l.heads, len, &mut l.out, &mut l.scratch);
        }
        Workload::Causal => workload::causal_all(k, l.heads, len, &mut l.out, &mut l.scratch),
        Workload::Exact => workload::exact_all(k, l.heads, len, &mut l.out),
        Workload::Decode => unreachable!("decode is timed by decode_times"),
    });
    start.elapsed().as_secs_f64()
}

/// Estimates one exact-attention call at `len` tokens before any was measured: one head of
/// `lane` at up to 512 tokens, scaled by the lane's heads and the L² law.
fn exact_probe<K: Kernels<f32>>(k: &K, lane: &Lane, len: usize) -> f64 {
    let probe = len.min(512);
    let mut out = vec![0f32; probe * DIM];
    let start = Instant::now();
    workload::exact_all(k, &lane.heads[..1], probe, &mut out);
    let t = start.elapsed().as_secs_f64();
    t * lane.heads.len() as f64 * (len as f64 / probe as f64).powi(2)
}

/// One thread's share of the decode streams.
struct DecodeLane<'l, 's, 'h, K: Kernels<f32>> {
    streams: &'l mut [HeadStream<'s, 'h, K>],
    heads: &'h [Head],
    snaps: &'l [Vec<u8>],
    out: Vec<f32>,
}

/// Times a decode step (per token, all heads) after each count of tokens in `seen`.
fn decode_times<K: Kernels<f32>>(
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
            let mut rest = &mut streams[..];
            let mut lanes: Vec<_> = ranges
                .iter()
                .map(|r| {
                    let (mine, tail) = std::mem::take(&mut rest).split_at_mut(r.len());
                    rest = tail;
                    DecodeLane {
                        streams: mine,
                        heads: &heads[r.clone()],
                        snaps: &snaps[r.clone()],
                        out: vec![0f32; DIM],
                    }
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

/// Feeds `tokens` tokens of `h` (cycling through its rows) into `s` with the chunked prefill.
fn advance<K: Kernels<f32>>(
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

/// A line of the report.
enum Row {
    Done(Measurement),
    Skipped {
        workload: Workload,
        len: usize,
        backend: &'static str,
        estimate_s: f64,
    },
}

/// Runs the sweep of `plan`, writing the report to `out` as it goes; returns the
/// measurements.
pub fn run(opts: &Options, plan: &Plan, out: &mut dyn Write) -> CliResult<Vec<Measurement>> {
    let scalar = Detected::Scalar(Scalar);
    match opts.backend {
        BackendChoice::Portable => sweep(Portable::new(), scalar, opts, plan, out),
        choice => sweep(detected_choice(choice)?, scalar, opts, plan, out),
    }
}

/// The backend for `choice` (not `Portable`), or a usage error if the CPU lacks it.
fn detected_choice(choice: BackendChoice) -> CliResult<Detected> {
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

fn sweep<K: Kernels<f32>>(
    k: K,
    scalar: Detected,
    opts: &Options,
    plan: &Plan,
    out: &mut dyn Write,
) -> CliResult<Vec<Measurement>> {
    let start = Instant::now();
    let threads = opts.threads;
    let name = k.name();
    let with_scalar = name != "scalar";
    let roofs = Roofs::measure(threads, plan);
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
                scratch: vec![0f32; workload::scratch_len()],
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
        emit(out, opts.json, &rows, &mut all)?;
    }
    drop(lanes);
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

fn join(v: &[usize]) -> String {
    v.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `s` and flushes, so a long sweep reports as it goes.
fn put(out: &mut dyn Write, s: &str) -> CliResult<()> {
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::failure(format!("writing the report: {e}")))
}

/// Adds the measurements of `rows` to `all` and writes `rows` as JSON lines or as table rows
/// (speedups looked up in `all`).
fn emit(
    out: &mut dyn Write,
    json: bool,
    rows: &[Row],
    all: &mut Vec<Measurement>,
) -> CliResult<()> {
    all.extend(rows.iter().filter_map(|r| match r {
        Row::Done(m) => Some(m.clone()),
        Row::Skipped { .. } => None,
    }));
    let mut s = String::new();
    for r in rows {
        match (r, json) {
            (Row::Done(m), true) => s += &(m.to_json() + "\n"),
            (Row::Done(m), false) => s += &(text_row(m, all) + "\n"),
            (Row::Skipped { .. }, true) => {}
            (
                Row::Skipped {
                    workload,
                    len,
                    backend,
                    estimate_s,
                },
                false,
            ) => {
                s += &format!(
                    "{workload:<8} {len:>6}  {backend:<8} skipped: would take ~{estimate_s:.0} s per call\n"
                );
            }
        }
    }
    put(out, &s)
}

const TABLE_HEAD: &str =
    "workload      L  backend          ms  GFLOP/s  % roof  vs scalar  vs exact   runs";

fn text_row(m: &Measurement, all: &[Measurement]) -> String {
    let find = |w: Workload, backend: &str| {
        all.iter()
            .find(|o| o.workload == w && o.len == m.len && o.backend == backend)
    };
    let ratio = |o: Option<&Measurement>| match o {
        Some(o) if o.ms > 0.0 && m.ms > 0.0 => format!("{:.1}x", o.ms / m.ms),
        _ => "-".into(),
    };
    let vs_scalar = match m.workload {
        Workload::Exact => "-".into(),
        _ if m.backend == "scalar" => "-".into(),
        w => ratio(find(w, "scalar")),
    };
    let vs_exact = match m.workload {
        Workload::Bidir => ratio(find(Workload::Exact, m.backend)),
        _ => "-".into(),
    };
    format!(
        "{:<8} {:>6}  {:<8} {:>10} {:>8.1} {:>7.1} {:>10} {:>9} {:>6}",
        m.workload.as_str(),
        m.len,
        m.backend,
        fmt_ms(m.ms),
        m.gflops(),
        m.roof_pct(),
        vs_scalar,
        vs_exact,
        m.runs
    )
}

fn fmt_ms(ms: f64) -> String {
    match ms {
        x if x >= 100.0 => format!("{x:.1}"),
        x if x >= 10.0 => format!("{x:.2}"),
        x if x >= 1.0 => format!("{x:.3}"),
        x => format!("{x:.4}"),
    }
}

fn header(opts: &Options, backend: &str, roofs: &Roofs) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let how = match opts.backend {
        BackendChoice::Auto => "detected",
        _ => "forced by --backend",
    };
    let avx2 = roofs
        .avx2
        .map_or(String::from("n/a (no AVX2 on this CPU)"), |r| {
            format!("{r:.1} GFLOP/s (the favor-simd issue's roof)")
        });
    let over = if opts.threads > cpus && cpus > 0 {
        " (more threads than CPUs)"
    } else {
        ""
    };
    format!(
        "favor bench: FAVOR+ on the favor-simd workload: batch 1, {HEADS} heads, d = {DIM}, m = {FEATURES}, f32\n\
         cpu       {} ({cpus} logical CPUs)\n\
         backend   {backend} ({how}); threads {}{over}\n\
         FMA roof  widest ISA ({}-lane): {:.1} GFLOP/s; 8-lane AVX2+FMA: {avx2}\n\
         \x20         % roof is against the roof of each row's own ISA: 8-lane for avx2, the widest for the rest\n\
         FLOPs     FAVOR+ 8*H*L*m*d per call; exact 4*H*L^2*d per call; decode 8*H*m*d per token\n\
         ms        median per call after a warm-up (decode: per token, all {HEADS} heads; L = tokens already seen)\n\n\
         {TABLE_HEAD}\n",
        cpu_model(),
        opts.threads,
        roofs.lanes,
        roofs.widest,
    )
}

/// The CPU model from /proc/cpuinfo, where readable.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

/// Draws time per call against L for the attention workloads.
fn plot(path: &Path, opts: &Options, backend: &str, all: &[Measurement]) -> CliResult<()> {
    let mut series = Vec::new();
    let backends: &[&str] = if backend == "scalar" {
        &["scalar"]
    } else {
        &[backend, "scalar"]
    };
    for &b in backends {
        for (w, label) in [
            (Workload::Bidir, "FAVOR+ bidirectional"),
            (Workload::Causal, "FAVOR+ causal"),
            (Workload::Exact, "exact softmax"),
        ] {
            let points: Vec<(f64, f64)> = all
                .iter()
                .filter(|m| m.workload == w && m.backend == b)
                .map(|m| (m.len as f64, m.ms))
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    label: format!("{label} ({b})"),
                    points,
                    y_err: None,
                    dashed: b != backend,
                });
            }
        }
    }
    let panel = Panel {
        title: "time per call vs sequence length".into(),
        x_label: "L (tokens)".into(),
        y_label: format!("ms per call ({HEADS} heads)"),
        log_x: true,
        log_y: true,
        series,
    };
    let title = format!(
        "favor bench: {HEADS} heads, d = {DIM}, m = {FEATURES}, f32, {} thread{}",
        opts.threads,
        if opts.threads == 1 { "" } else { "s" }
    );
    render_png(path, &title, &[panel]).map_err(|e| crate::attend::plot_error(path, e))
}

/// Tokens per `Stream::prefill` call of the `memory-stream` workload.
pub const STREAM_CHUNK: usize = 4096;

/// Longest stream `--memory-probe` accepts (2³⁰ tokens).
pub const MAX_STREAM_LEN: usize = 1 << 30;

/// The workloads of `favor bench --memory` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryWorkload {
    /// One bidirectional `Performer::forward`.
    Bidir,
    /// One causal `Performer::forward`.
    Causal,
    /// A causal `Stream` fed by `prefill` in chunks of [`STREAM_CHUNK`].
    Stream,
}

impl MemoryWorkload {
    /// The name in JSON (`memory-bidir`, `memory-causal`, `memory-stream`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bidir => "memory-bidir",
            Self::Causal => "memory-causal",
            Self::Stream => "memory-stream",
        }
    }

    /// The short name in the text table and in `--memory-probe` (`bidir`, `causal`, `stream`).
    pub fn short(self) -> &'static str {
        &self.as_str()["memory-".len()..]
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Bidir, Self::Causal, Self::Stream]
            .into_iter()
            .find(|w| s == w.short() || s == w.as_str())
    }
}

/// One row of `favor bench --memory`: a workload and its length (tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryProbe {
    /// What runs.
    pub workload: MemoryWorkload,
    /// Tokens: the sequence length, or the tokens fed to the stream.
    pub len: usize,
}

impl MemoryProbe {
    /// The rows `--memory` measures (`quick`: the `--quick` ones), in order.
    pub fn defaults(quick: bool) -> Vec<Self> {
        let (short, long, stream) = if quick {
            (1 << 10, 1 << 12, [1 << 12, 1 << 14])
        } else {
            (1 << 12, 1 << 16, [1 << 16, 1 << 20])
        };
        let mut v = Vec::new();
        for workload in [MemoryWorkload::Bidir, MemoryWorkload::Causal] {
            v.extend([short, long].map(|len| Self { workload, len }));
        }
        v.extend(stream.map(|len| Self {
            workload: MemoryWorkload::Stream,
            len,
        }));
        v
    }

    /// Tokens in each input tensor: L, or the stream's chunk (`min(L, STREAM_CHUNK)`).
    pub fn tokens_per_call(&self) -> usize {
        match self.workload {
            MemoryWorkload::Stream => self.len.min(STREAM_CHUNK),
            _ => self.len,
        }
    }
}

impl fmt::Display for MemoryProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.workload.short(), self.len)
    }
}

impl FromStr for MemoryProbe {
    type Err = String;

    /// `WORKLOAD:L`, e.g. `bidir:65536`; a stream's L must be a multiple of its chunk.
    fn from_str(s: &str) -> Result<Self, String> {
        let (w, l) = s
            .split_once(':')
            .ok_or("expected WORKLOAD:L, e.g. bidir:4096")?;
        let workload = MemoryWorkload::parse(w)
            .ok_or("unknown workload (expected bidir, causal or stream)")?;
        let len: usize = l.parse().map_err(|e| format!("L: {e}"))?;
        let max = match workload {
            MemoryWorkload::Stream => MAX_STREAM_LEN,
            _ => MAX_LEN,
        };
        if !(1..=max).contains(&len) {
            return Err(format!("L must be 1 to {max}"));
        }
        let p = Self { workload, len };
        if !len.is_multiple_of(p.tokens_per_call()) {
            return Err(format!(
                "a stream's L must be a multiple of its chunk of {STREAM_CHUNK} tokens"
            ));
        }
        Ok(p)
    }
}

/// One memory measurement (bytes; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMeasurement {
    /// What ran.
    pub probe: MemoryProbe,
    /// Peak resident set size of the process (`VmHWM`).
    pub peak_rss_bytes: u64,
    /// Resident set size before anything was allocated (`VmRSS`).
    pub baseline_rss_bytes: u64,
    /// Bytes of q, k and v (for the stream: of one chunk).
    pub input_bytes: u64,
    /// Bytes of the result tensor (for the stream: of one chunk's).
    pub output_bytes: u64,
}

/// Prefix of the line a `--memory-probe` child prints.
const PROBE_TAG: &str = "favor-memory-probe";

impl MemoryMeasurement {
    /// Peak − baseline − inputs − outputs: memory the library held beyond its inputs and
    /// outputs (negative if the allocator gave pages back early).
    pub fn working_bytes(&self) -> i64 {
        let gone = self.baseline_rss_bytes + self.input_bytes + self.output_bytes;
        self.peak_rss_bytes as i64 - gone as i64
    }

    /// One JSON object (no newline) with the keys `workload`, `L`, `peak_rss_bytes`,
    /// `baseline_rss_bytes`, `input_bytes`, `output_bytes` and `working_bytes`, all integers
    /// but the workload's name.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"workload\":\"{}\",\"L\":{},\"peak_rss_bytes\":{},\"baseline_rss_bytes\":{},\
             \"input_bytes\":{},\"output_bytes\":{},\"working_bytes\":{}}}",
            self.probe.workload.as_str(),
            self.probe.len,
            self.peak_rss_bytes,
            self.baseline_rss_bytes,
            self.input_bytes,
            self.output_bytes,
            self.working_bytes(),
        )
    }

    /// The line a `--memory-probe` child prints for its parent:
    /// `favor-memory-probe bidir:4096 peak=… baseline=… input=… output=…` (bytes).
    pub fn probe_line(&self) -> String {
        format!(
            "{PROBE_TAG} {} peak={} baseline={} input={} output={}",
            self.probe,
            self.peak_rss_bytes,
            self.baseline_rss_bytes,
            self.input_bytes,
            self.output_bytes
        )
    }

    /// Reads a [`probe_line`](Self::probe_line) back; `None` unless it is exactly one.
    pub fn parse_probe_line(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        if words.next()? != PROBE_TAG {
            return None;
        }
        let probe = words.next()?.parse().ok()?;
        let mut field = |key: &str| -> Option<u64> {
            let (k, v) = words.next()?.split_once('=')?;
            if k == key { v.parse().ok() } else { None }
        };
        let m = Self {
            probe,
            peak_rss_bytes: field("peak")?,
            baseline_rss_bytes: field("baseline")?,
            input_bytes: field("input")?,
            output_bytes: field("output")?,
        };
        words.next().is_none().then_some(m)
    }
}

/// The value of `key` (e.g. `VmHWM`) in the text of `/proc/self/status`, in bytes.
pub fn status_bytes(status: &str, key: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.split_once(':').is_some_and(|(k, _)| k == key))?;
    let mut words = line.split_once(':')?.1.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// This process's `VmRSS` or `VmHWM`, or the "unsupported" error where there is no
/// `/proc/self/status` with it (not Linux).
fn own_memory(key: &str) -> CliResult<u64> {
    let unsupported = || {
        CliError::failure(format!(
            "--memory: unsupported on this OS (peak resident memory is read as {key} from \
             /proc/self/status, which only Linux has)"
        ))
    };
    if !cfg!(target_os = "linux") {
        return Err(unsupported());
    }
    let status = std::fs::read_to_string("/proc/self/status").map_err(|_| unsupported())?;
    status_bytes(&status, key).ok_or_else(unsupported)
}

/// Runs one memory measurement in this process (what a `--memory-probe` child does).
/// Meaningful only in a fresh process: `VmHWM` is the peak since the process started.
pub fn memory_probe(p: MemoryProbe) -> CliResult<MemoryMeasurement> {
    let baseline = own_memory("VmRSS")?;
    let fail = |e: favor_tensor::Error| CliError::failure(format!("memory probe {p}: {e}"));
    let performer = Performer::builder(DIM)
        .heads(HEADS)
        .features(FEATURES)
        .causal(p.workload != MemoryWorkload::Bidir)
        .parallel(false)
        .build()
        .map_err(fail)?;
    let tokens = p.tokens_per_call();
    let what = "memory probe inputs";
    let n = elements(what, &[HEADS, tokens, DIM])?;
    let (mut q, mut k, mut v) = (
        try_zeros(what, n)?,
        try_zeros(what, n)?,
        try_zeros(what, n)?,
    );
    let per_head = tokens * DIM;
    for h in 0..HEADS {
        let r = h * per_head..(h + 1) * per_head;
        workload::fill_inputs(h, &mut q[r.clone()], &mut k[r.clone()], &mut v[r]);
    }
    let shape = [1, HEADS, tokens, DIM];
    let view = |x| TensorView::new(shape, x).map_err(fail);
    let (qv, kv, vv) = (view(&q)?, view(&k)?, view(&v)?);
    match p.workload {
        MemoryWorkload::Bidir | MemoryWorkload::Causal => {
            let out = performer.forward(qv, kv, vv).map_err(fail)?;
            std::hint::black_box(out.data());
        }
        MemoryWorkload::Stream => {
            let mut stream = performer.stream(1).map_err(fail)?;
            for _ in 0..p.len / tokens {
                let out = stream.prefill(qv, kv, vv).map_err(fail)?;
                std::hint::black_box(out.data());
            }
        }
    }
    let peak = own_memory("VmHWM")?;
    let bytes = (n * size_of::<f32>()) as u64;
    Ok(MemoryMeasurement {
        probe: p,
        peak_rss_bytes: peak,
        baseline_rss_bytes: baseline,
        input_bytes: 3 * bytes,
        output_bytes: bytes,
    })
}

/// Runs `exe bench --memory-probe P` and reads its line.
fn spawn_probe(exe: &Path, p: MemoryProbe) -> CliResult<MemoryMeasurement> {
    let child = Command::new(exe)
        .args(["bench", "--memory-probe", &p.to_string()])
        .output()
        .map_err(|e| CliError::failure(format!("--memory: cannot run {}: {e}", exe.display())))?;
    let stdout = String::from_utf8_lossy(&child.stdout);
    let found = stdout.lines().find_map(MemoryMeasurement::parse_probe_line);
    match found {
        Some(m) if child.status.success() && m.probe == p => Ok(m),
        _ => {
            let stderr = String::from_utf8_lossy(&child.stderr);
            let why = stderr
                .lines()
                .next()
                .map(|l| l.strip_prefix("favor: ").unwrap_or(l).to_string())
                .unwrap_or_else(|| format!("exited with {}", child.status));
            Err(CliError {
                message: format!("memory probe {p}: {why}"),
                code: 1,
            })
        }
    }
}

/// The `--memory` report: runs `probe` for each of `probes` and writes each row to `out` as
/// it comes (a table, or JSON lines with `--json`); returns the measurements.
pub fn memory_report(
    opts: &Options,
    probes: &[MemoryProbe],
    mut probe: impl FnMut(MemoryProbe) -> CliResult<MemoryMeasurement>,
    out: &mut dyn Write,
) -> CliResult<Vec<MemoryMeasurement>> {
    let start = Instant::now();
    // Fail before the first child where the measurement cannot work.
    own_memory("VmHWM")?;
    if !opts.json {
        put(out, &memory_header())?;
    }
    let mut all = Vec::new();
    for &p in probes {
        let m = probe(p)?;
        let line = if opts.json {
            m.to_json()
        } else {
            memory_row(&m)
        };
        put(out, &(line + "\n"))?;
        all.push(m);
    }
    if !opts.json {
        put(
            out,
            &format!("total time {:.1} s\n", start.elapsed().as_secs_f64()),
        )?;
    }
    Ok(all)
}

/// Header of the `--memory` table.
pub const MEMORY_TABLE_HEAD: &str =
    "workload        L  peak RSS MiB  baseline MiB  inputs MiB  outputs MiB  working MiB";

fn memory_header() -> String {
    let backend = Kernels::<f32>::name(&Detected::new());
    format!(
        "favor bench --memory: peak resident memory (VmHWM), one fresh process per row\n\
         cpu       {}\n\
         workload  favor-tensor Performer: batch 1, {HEADS} heads, d = {DIM}, m = {FEATURES}, f32, \
         {backend} backend, one thread\n\
         \x20         bidir, causal: one forward over q, k, v of [1, {HEADS}, L, {DIM}] (6 KiB per token)\n\
         \x20         stream: L tokens through Stream::prefill, {STREAM_CHUNK} at a time (the same chunk each time)\n\
         working   peak - baseline (RSS before any allocation) - inputs - outputs\n\n\
         {MEMORY_TABLE_HEAD}\n",
        cpu_model(),
    )
}

fn memory_row(m: &MemoryMeasurement) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    format!(
        "{:<8} {:>8} {:>13.1} {:>13.1} {:>11.1} {:>12.1} {:>12.2}",
        m.probe.workload.short(),
        m.probe.len,
        mib(m.peak_rss_bytes),
        mib(m.baseline_rss_bytes),
        mib(m.input_bytes),
        mib(m.output_bytes),
        m.working_bytes() as f64 / (1u64 << 20) as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> CliResult<Options> {
        Options::parse(Args::new(s.split_whitespace().map(String::from)))
    }

    #[derive(Debug, PartialEq)]
    enum Value {
        Str(String),
        Num(f64),
        Null,
    }

    /// Parses a flat JSON object of strings (without commas), numbers and nulls.
    fn parse_object(line: &str) -> Vec<(String, Value)> {
        let body = line
            .strip_prefix('{')
            .and_then(|l| l.strip_suffix('}'))
            .unwrap_or_else(|| panic!("not an object: {line}"));
        body.split(',')
            .map(|kv| {
                let (k, v) = kv.split_once(':').expect("key:value");
                let key = k
                    .strip_prefix('"')
                    .and_then(|k| k.strip_suffix('"'))
                    .expect("quoted key");
                let value = if let Some(s) = v.strip_prefix('"') {
                    Value::Str(s.strip_suffix('"').expect("closed string").into())
                } else if v == "null" {
                    Value::Null
                } else {
                    assert!(
                        v.chars().all(|c| c.is_ascii_digit() || "-.eE+".contains(c)),
                        "not a JSON number: {v}"
                    );
                    Value::Num(v.parse().expect("number"))
                };
                (key.to_string(), value)
            })
            .collect()
    }

    const KEYS: [&str; 9] = [
        "workload",
        "L",
        "backend",
        "threads",
        "ms",
        "gflops",
        "roof_pct",
        "roof_gflops",
        "runs",
    ];

    fn check_line(line: &str) -> Vec<(String, Value)> {
        let obj = parse_object(line);
        let keys: Vec<&str> = obj.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, KEYS, "{line}");
        for (k, v) in &obj {
            match (k.as_str(), v) {
                ("workload" | "backend", Value::Str(_)) => {}
                (_, Value::Num(x)) => assert!(x.is_finite() && *x >= 0.0, "{line}"),
                _ => panic!("bad value for {k} in {line}"),
            }
        }
        obj
    }

    fn sample() -> Measurement {
        Measurement {
            workload: Workload::Causal,
            len: 4096,
            backend: "avx2",
            threads: 2,
            ms: 12.5,
            flops: workload::favor_flops(4096) as f64,
            roof_gflops: 90.0,
            runs: 41,
        }
    }

    #[test]
    fn json_line_has_the_keys_and_values() {
        let m = sample();
        let obj = check_line(&m.to_json());
        assert_eq!(obj[0].1, Value::Str("causal".into()));
        assert_eq!(obj[1].1, Value::Num(4096.0));
        assert_eq!(obj[2].1, Value::Str("avx2".into()));
        assert_eq!(obj[3].1, Value::Num(2.0));
        assert_eq!(obj[4].1, Value::Num(12.5));
        let Value::Num(g) = obj[5].1 else { panic!() };
        assert!((g - m.gflops()).abs() < 1e-3);
        assert!((m.gflops() - 8.0 * 8.0 * 4096.0 * 256.0 * 64.0 / 12.5e-3 / 1e9).abs() < 1e-9);
        assert!((m.roof_pct() - 100.0 * m.gflops() / 90.0).abs() < 1e-9);
        assert!(!m.to_json().contains('\n'));
    }

    #[test]
    fn json_non_finite_is_null_and_names_are_plain() {
        let m = Measurement {
            ms: 0.0,
            roof_gflops: f64::NAN,
            ..sample()
        };
        let j = m.to_json();
        assert!(j.contains("\"gflops\":null"), "{j}");
        assert!(j.contains("\"roof_pct\":null"), "{j}");
        assert!(j.contains("\"roof_gflops\":null"), "{j}");
        // Names go into JSON unescaped: they must be plain identifiers.
        let plain = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        let k = favor_simd::Detected::new();
        assert!(plain(Kernels::<f32>::name(&k)) && plain(Kernels::<f32>::name(&Portable::new())));
        assert!(plain(Kernels::<f32>::name(&Scalar)));
        for w in [
            Workload::Bidir,
            Workload::Causal,
            Workload::Exact,
            Workload::Decode,
        ] {
            assert!(plain(w.as_str()));
        }
    }

    #[test]
    fn flop_models() {
        assert_eq!(Workload::Bidir.flops(10), (8 * 8 * 10 * 256 * 64) as f64);
        assert_eq!(Workload::Exact.flops(10), (4 * 8 * 100 * 64) as f64);
        assert_eq!(Workload::Decode.flops(12345), (8 * 8 * 256 * 64) as f64);
    }

    #[test]
    fn options_and_their_errors() {
        let o = opts("--json --threads 2 --lens 1024,256,256 --backend scalar").unwrap();
        assert!(o.json && !o.quick);
        assert_eq!((o.threads, o.backend), (2, BackendChoice::Scalar));
        assert_eq!(o.lens.as_deref(), Some(&[256, 1024][..]));
        assert_eq!(Plan::new(&o).lens, vec![256, 1024]);
        let d = Plan::new(&opts("").unwrap());
        assert_eq!((d.lens[0], *d.lens.last().unwrap()), (256, 65536));
        for bad in [
            "--threads 0",
            "--threads 9",
            "--threads x",
            "--backend sse",
            "--lens 0",
            "--lens 256,x",
            "--plot out.svg",
            "--plot /no/such/dir/x.png",
            "--frobnicate",
            "--threads",
        ] {
            let e = opts(bad).unwrap_err();
            assert_eq!(e.code, 2, "{bad}: {e}");
        }
    }

    const MEMORY_KEYS: [&str; 7] = [
        "workload",
        "L",
        "peak_rss_bytes",
        "baseline_rss_bytes",
        "input_bytes",
        "output_bytes",
        "working_bytes",
    ];

    fn memory_sample() -> MemoryMeasurement {
        MemoryMeasurement {
            probe: MemoryProbe {
                workload: MemoryWorkload::Stream,
                len: 1 << 20,
            },
            peak_rss_bytes: 40 << 20,
            baseline_rss_bytes: 3 << 20,
            input_bytes: 24 << 20,
            output_bytes: 8 << 20,
        }
    }

    /// Checks one `--memory --json` line: the keys in order, a known workload name, integers.
    fn check_memory_line(line: &str) -> Vec<(String, Value)> {
        let obj = parse_object(line);
        let keys: Vec<&str> = obj.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, MEMORY_KEYS, "{line}");
        let Value::Str(w) = &obj[0].1 else {
            panic!("{line}")
        };
        assert!(
            MemoryWorkload::parse(w).is_some_and(|x| x.as_str() == w),
            "{line}"
        );
        for (k, v) in &obj[1..] {
            let Value::Num(x) = v else {
                panic!("bad value for {k} in {line}")
            };
            assert!(x.fract() == 0.0, "{line}");
            assert!(*x >= 0.0 || k == "working_bytes", "{line}");
        }
        obj
    }

    #[test]
    fn memory_json_and_probe_line() {
        let m = memory_sample();
        assert_eq!(m.working_bytes(), 5 << 20);
        let obj = check_memory_line(&m.to_json());
        assert_eq!(obj[0].1, Value::Str("memory-stream".into()));
        assert_eq!(obj[1].1, Value::Num(1048576.0));
        assert_eq!(obj[2].1, Value::Num((40 << 20) as f64));
        assert_eq!(obj[6].1, Value::Num((5 << 20) as f64));
        // Peak below baseline + inputs + outputs: a negative working figure, still valid JSON.
        let low = MemoryMeasurement {
            peak_rss_bytes: 30 << 20,
            ..m
        };
        assert_eq!(low.working_bytes(), -(5 << 20));
        check_memory_line(&low.to_json());
        assert!(low.to_json().contains("\"working_bytes\":-5242880"));
        let line = m.probe_line();
        assert_eq!(MemoryMeasurement::parse_probe_line(&line), Some(m));
        for bad in [
            "",
            "favor-memory-probe",
            "favor-memory-probe stream:1048576 peak=1 baseline=2 input=3",
            "favor-memory-probe stream:1048576 peak=1 baseline=2 input=3 output=4 extra=5",
            "favor-memory-probe stream:1048576 baseline=2 peak=1 input=3 output=4",
            "favor-memory-probe stream:1048576 peak=x baseline=2 input=3 output=4",
            "favor-memory-probe nope:1 peak=1 baseline=2 input=3 output=4",
            "other stream:1048576 peak=1 baseline=2 input=3 output=4",
        ] {
            assert_eq!(MemoryMeasurement::parse_probe_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn memory_probe_names_and_defaults() {
        let p: MemoryProbe = "bidir:65536".parse().unwrap();
        assert_eq!((p.workload, p.len), (MemoryWorkload::Bidir, 65536));
        assert_eq!(p.to_string(), "bidir:65536");
        let p: MemoryProbe = "memory-stream:8192".parse().unwrap();
        assert_eq!(
            (p.workload, p.tokens_per_call()),
            (MemoryWorkload::Stream, 4096)
        );
        assert_eq!(
            "stream:100"
                .parse::<MemoryProbe>()
                .unwrap()
                .tokens_per_call(),
            100
        );
        for bad in [
            "bidir",
            "bidir:0",
            "bidir:x",
            "flash:64",
            "stream:5000",
            "causal:2097152",
        ] {
            assert!(bad.parse::<MemoryProbe>().is_err(), "{bad}");
        }
        for quick in [false, true] {
            let d = MemoryProbe::defaults(quick);
            assert_eq!(d.len(), 6);
            for w in [
                MemoryWorkload::Bidir,
                MemoryWorkload::Causal,
                MemoryWorkload::Stream,
            ] {
                let lens: Vec<usize> = d
                    .iter()
                    .filter(|p| p.workload == w)
                    .map(|p| p.len)
                    .collect();
                assert!(lens.len() == 2 && lens[0] < lens[1], "{w:?}: {lens:?}");
            }
            // Every default is accepted back by the hidden option.
            assert!(d.iter().all(|p| p.to_string().parse() == Ok(*p)));
        }
        let full = MemoryProbe::defaults(false);
        assert!(full.contains(&MemoryProbe {
            workload: MemoryWorkload::Bidir,
            len: 1 << 16
        }));
        assert!(full.contains(&MemoryProbe {
            workload: MemoryWorkload::Stream,
            len: 1 << 20
        }));
    }

    #[test]
    fn status_parsing() {
        let status = "Name:\tfavor\nVmPeak:\t  10000 kB\nVmHWM:\t    4096 kB\nVmRSS:\t    2048 kB\n\
                      Threads:\t1\nVmBad:\t12 MB\n";
        assert_eq!(status_bytes(status, "VmHWM"), Some(4096 * 1024));
        assert_eq!(status_bytes(status, "VmRSS"), Some(2048 * 1024));
        assert_eq!(status_bytes(status, "Threads"), Some(1));
        assert_eq!(status_bytes(status, "VmBad"), None);
        assert_eq!(status_bytes(status, "VmSwap"), None);
        assert_eq!(status_bytes(status, "Vm"), None);
    }

    #[test]
    fn memory_options() {
        let o = opts("--memory --json --quick").unwrap();
        assert!(o.memory && o.json && o.quick && o.memory_probe.is_none());
        let o = opts("--memory-probe causal:256").unwrap();
        assert_eq!(
            o.memory_probe,
            Some(MemoryProbe {
                workload: MemoryWorkload::Causal,
                len: 256
            })
        );
        for bad in [
            "--memory --threads 2",
            "--memory --lens 256",
            "--memory --backend scalar",
            "--memory --plot x.png",
            "--memory-probe",
            "--memory-probe bidir",
            "--memory-probe stream:4097",
        ] {
            assert_eq!(opts(bad).unwrap_err().code, 2, "{bad}");
        }
    }

    /// The report with the probes run in this process (a child process would re-run the test
    /// binary): checks the structure only, never the sizes.
    #[test]
    fn memory_report_text_and_json() {
        let probes = [
            MemoryProbe {
                workload: MemoryWorkload::Bidir,
                len: 64,
            },
            MemoryProbe {
                workload: MemoryWorkload::Causal,
                len: 64,
            },
            MemoryProbe {
                workload: MemoryWorkload::Stream,
                len: 128,
            },
        ];
        for json in [true, false] {
            let o = Options {
                json,
                ..opts("--memory --quick").unwrap()
            };
            let mut buf = Vec::new();
            let got = memory_report(&o, &probes, memory_probe, &mut buf);
            if !cfg!(target_os = "linux") {
                let e = got.unwrap_err();
                assert!(e.message.contains("unsupported"), "{e}");
                continue;
            }
            let all = got.unwrap();
            let text = String::from_utf8(buf).unwrap();
            assert_eq!(all.len(), probes.len());
            for (m, p) in all.iter().zip(&probes) {
                assert_eq!(m.probe, *p);
                let per_call = (HEADS * p.tokens_per_call() * DIM * 4) as u64;
                assert_eq!((m.input_bytes, m.output_bytes), (3 * per_call, per_call));
                assert!(m.peak_rss_bytes > 0 && m.baseline_rss_bytes > 0);
            }
            if json {
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!(lines.len(), all.len());
                for (line, m) in lines.iter().zip(&all) {
                    check_memory_line(line);
                    assert_eq!(*line, m.to_json());
                }
            } else {
                assert!(text.contains(MEMORY_TABLE_HEAD), "{text}");
                assert!(text.contains("total time"), "{text}");
                for m in &all {
                    assert!(text.contains(&memory_row(m)), "{text}");
                }
            }
        }
    }

    #[test]
    fn memory_probe_failure_is_reported() {
        let o = opts("--memory").unwrap();
        let mut buf = Vec::new();
        let probes = MemoryProbe::defaults(true);
        let e =
            memory_report(&o, &probes, |_| Err(CliError::failure("boom")), &mut buf).unwrap_err();
        assert_eq!(e.code, 1);
        if cfg!(target_os = "linux") {
            assert_eq!(e.message, "boom");
        }
    }

    #[test]
    fn missing_isa_is_a_usage_error() {
        #[cfg(target_arch = "x86_64")]
        let absent = BackendChoice::Neon;
        #[cfg(not(target_arch = "x86_64"))]
        let absent = BackendChoice::Avx2;
        assert_eq!(detected_choice(absent).unwrap_err().code, 2);
        let o = Options {
            backend: absent,
            ..opts("--quick").unwrap()
        };
        let mut sink = Vec::new();
        assert_eq!(run(&o, &Plan::new(&o), &mut sink).unwrap_err().code, 2);
        assert!(sink.is_empty());
    }

    #[test]
    fn split_covers_every_head_once() {
        for parts in 1..=HEADS {
            let r = split(HEADS, parts);
            assert_eq!(r.len(), parts);
            assert!(r.iter().all(|r| !r.is_empty()));
            assert_eq!(r[0].start, 0);
            assert_eq!(r[parts - 1].end, HEADS);
            assert!(r.windows(2).all(|w| w[0].end == w[1].start));
        }
    }

    #[test]
    fn plot_writes_a_png_and_prefixes_errors() {
        let o = opts("").unwrap();
        let ms = [
            sample(),
            Measurement {
                len: 8192,
                ms: 30.0,
                ..sample()
            },
            Measurement {
                workload: Workload::Exact,
                ms: 900.0,
                ..sample()
            },
            Measurement {
                backend: "scalar",
                ms: 130.0,
                ..sample()
            },
        ];
        let path = std::env::temp_dir().join(format!("favor-bench-{}.png", std::process::id()));
        plot(&path, &o, "avx2", &ms).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        let bad = Path::new("/no/such/dir/favor.png");
        let e = plot(bad, &o, "avx2", &ms).unwrap_err();
        assert!(e.message.starts_with("/no/such/dir/favor.png: "), "{e}");
    }

    fn tiny() -> Plan {
        Plan {
            lens: vec![32, 64],
            budget_s: 0.002,
            decode_seen: vec![0, 100],
            scalar_max_len: 32,
            exact_limit_s: 1.0,
            roof_iters: 1000,
        }
    }

    #[test]
    fn tiny_sweep_json_lines() {
        let o = opts("--json --threads 3").unwrap();
        let mut buf = Vec::new();
        let all = run(&o, &tiny(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), all.len());
        for (line, m) in lines.iter().zip(&all) {
            check_line(line);
            assert_eq!(*line, m.to_json());
            assert_eq!(m.threads, 3);
        }
        let has = |w: Workload, len: usize, b: &str| {
            all.iter().any(|m| {
                m.workload == w && m.len == len && (m.backend == "scalar") == (b == "scalar")
            })
        };
        for len in [32, 64] {
            assert!(has(Workload::Bidir, len, "simd"));
            assert!(has(Workload::Causal, len, "simd"));
            assert!(has(Workload::Exact, len, "simd"));
        }
        assert!(has(Workload::Bidir, 32, "scalar") && !has(Workload::Bidir, 64, "scalar"));
        assert!(has(Workload::Decode, 0, "simd") && has(Workload::Decode, 100, "simd"));
        assert!(has(Workload::Decode, 0, "scalar"));
    }

    #[test]
    fn tiny_sweep_text_table() {
        let o = opts("--backend portable").unwrap();
        let plan = Plan {
            exact_limit_s: 0.0,
            ..tiny()
        };
        let mut buf = Vec::new();
        let all = run(&o, &plan, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains(TABLE_HEAD), "{text}");
        assert!(text.contains("portable (forced by --backend)"), "{text}");
        // Exact attention was skipped everywhere: every estimate is above the 0 s limit.
        assert!(!all.iter().any(|m| m.workload == Workload::Exact));
        assert!(all.iter().all(|m| m.threads == 1));
        assert!(text.contains("skipped: would take"), "{text}");
        assert!(text.contains("scalar backend: skipped at L = 64"), "{text}");
        assert!(text.contains("total time"), "{text}");
    }
}
