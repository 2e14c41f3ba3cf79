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
//! | `bidirw32`, `bidirw64` | bidirectional hybrid attention ([`favor_core::Plan::with_hybrid`], blocks of [`HYBRID_BLOCK`](favor_workload::HYBRID_BLOCK)): an exact window of w = 32 or 64 keys each side and [`HYBRID_SINKS`](favor_workload::HYBRID_SINKS) sink, FAVOR+ for the rest | FAVOR+'s + 4·H·L·(2w + 1 + s)·d |
//! | `causalw32`, `causalw64` | chunked causal hybrid attention (C = 64): the last w + 1 keys and the sink exact | FAVOR+'s + 4·H·L·(w + 1 + s)·d |
//! | `decodew32`, `decodew64` | one token through all heads with [`favor_core::HybridStream::step`]; L = tokens already seen | 8·H·m·d + 4·H·(w + 1 + s)·d per token |
//! | `bidirw32m64`, … `decodew64m64` | the six hybrid rows above with m = 64 random features (the first 64 rows of each head's W, one orthogonal block) | as above with m = 64 |
//!
//! The FAVOR+ count is the four GEMMs (projecting q and k, K'ᵀV, Q'S: 2·L·m·d each);
//! exact attention's is QKᵀ and the weighted sum of V (L²·d multiply-adds each), causal
//! masking not applied; a decode step does the four products for one row. Exponentials,
//! normalisers and the causal chunk tile are not counted, so GFLOP/s understates the work.
//!
//! The hybrid FLOPs add the exact part's QKᵀ and weighted sum of V over the keys a query
//! away from the ends takes exactly; the bidirectional plan also takes the window's
//! random-feature terms back out of the total state (about 2·(2w + 1)·(m + d) per query),
//! which is not counted. The text table's `/ favor` column is a hybrid row's time over its
//! FAVOR+ row's (m = 256, same L and backend): the price of the exact window, or with m = 64
//! what a window buys back of the features' cost.
//!
//! Each row runs the chosen backend (detected unless `--backend`). The same FAVOR+ workloads (not the hybrid ones)
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
//! 512 steps starting from the same restored state (`Stream::snapshot`/`restore`, not timed),
//! divided by 512 (64 until 2026-12-08). A hybrid decode batch is not restored from a snapshot: it goes on from where the
//! last one stopped (its ring and state have a fixed size, so the cost per token does not
//! depend on the tokens seen, which the rows at 0 and 10 000 show).
//!
//! `--threads N` (1 to 8, default 1) splits the heads over N threads with
//! [`std::thread::scope`], each with its own scratch and output; the threads are spawned for
//! every timed call (and, for decode, run their heads through the whole 512-token batch with
//! no per-token barrier), so the spawn cost is part of the time.
//!
//! # The roof
//! The FMA roof is [`workload::fma_roof`](favor_workload::fma_roof) — 12 independent vector FMA chains — measured in
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
//! bidirectional and causal, hybrid attention with w = 32 both ways, and exact attention
//! (dashed: the scalar backend).
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
//! with the benchmark's shape: batch 1, [`HEADS`](favor_workload::HEADS) heads, d = [`DIM`](favor_workload::DIM), m = [`FEATURES`](favor_workload::FEATURES), f32,
//! inputs q, k, v of `[1, 8, L, 64]` (2 KiB per token each) filled with
//! [`workload::fill_inputs`](favor_workload::fill_inputs):
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

// In dependency order: each module uses only those above it. Public (and hidden from the
// docs) for the unit tests in tests/unit/; the API is what this module re-exports.
#[doc(hidden)]
pub mod measurement;
#[doc(hidden)]
pub mod memory;
#[doc(hidden)]
pub mod options;
#[doc(hidden)]
pub mod probe;
#[doc(hidden)]
pub mod report;
#[doc(hidden)]
pub mod roof;
#[doc(hidden)]
pub mod sweep;
#[doc(hidden)]
pub mod timing;

pub use measurement::{MAX_LEN, Measurement, Workload};
pub use memory::{MEMORY_TABLE_HEAD, memory_report};
pub use options::{BackendChoice, Flags, Options, Plan};
pub use probe::{
    MAX_STREAM_LEN, MemoryMeasurement, MemoryProbe, MemoryWorkload, STREAM_CHUNK, memory_probe,
    status_bytes,
};
pub use sweep::{run, run_with_progress, steps};

use crate::args::{CliError, CliResult};
use crate::progress::{self, Suspended};
use memory::spawn_probe;
use report::put;

/// Runs `favor bench` with `flags`, printing to stdout.
pub fn main(flags: Flags) -> CliResult<()> {
    let opts = Options::from_flags(flags)?;
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
        let bar = progress::bar(probes.len(), opts.json);
        let probe = |p: MemoryProbe| {
            bar.set_message(p.to_string());
            let m = spawn_probe(&exe, p);
            bar.inc(1);
            m
        };
        let out = &mut Suspended {
            bar: &bar,
            inner: out,
        };
        let done = memory_report(&opts, &probes, probe, out).map(drop);
        bar.finish_and_clear();
        return done;
    }
    let plan = Plan::new(&opts);
    let bar = progress::bar(sweep::steps(&plan), opts.json);
    let out = &mut Suspended {
        bar: &bar,
        inner: out,
    };
    let done = run_with_progress(&opts, &plan, out, &bar).map(drop);
    bar.finish_and_clear();
    done
}
