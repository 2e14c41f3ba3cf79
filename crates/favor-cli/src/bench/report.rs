//! The report: table rows or JSON lines as the sweep goes, its header, and the plot.

use super::measurement::{HybridRow, Measurement, Workload};
use super::options::{BackendChoice, Options};
use super::roof::Roofs;
use crate::args::{CliError, CliResult};
use crate::plot::{Panel, Series, render_png};
use favor_workload::{DIM, FEATURES, HEADS, HYBRID_SINKS};
use std::io::Write;
use std::path::Path;

/// A line of the report.
pub(super) enum Row {
    Done(Measurement),
    Skipped {
        workload: Workload,
        len: usize,
        backend: &'static str,
        estimate_s: f64,
    },
}

pub(super) fn join(v: &[usize]) -> String {
    v.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `s` and flushes, so a long sweep reports as it goes.
pub(super) fn put(out: &mut dyn Write, s: &str) -> CliResult<()> {
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::failure(format!("writing the report: {e}")))
}

/// Adds the measurements of `rows` to `all` and writes `rows` as JSON lines or as table rows
/// (speedups looked up in `all`).
pub(super) fn emit(
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
                    "{workload:<9} {len:>6}  {backend:<8} skipped: would take ~{estimate_s:.0} s per call\n"
                );
            }
        }
    }
    put(out, &s)
}

pub const TABLE_HEAD: &str = "workload          L  backend          ms  GFLOP/s  % roof  vs scalar  vs exact  / favor   runs";

pub fn text_row(m: &Measurement, all: &[Measurement]) -> String {
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
        Workload::Bidir | Workload::HybridBidir(_) => ratio(find(Workload::Exact, m.backend)),
        _ => "-".into(),
    };
    // A cost, not a speedup: the hybrid row's time over its FAVOR+ twin's.
    let over_favor = match m.workload.favor_twin().and_then(|w| find(w, m.backend)) {
        Some(o) if o.ms > 0.0 && m.ms > 0.0 => format!("{:.2}x", m.ms / o.ms),
        _ => "-".into(),
    };
    format!(
        "{:<12} {:>6}  {:<8} {:>10} {:>8.1} {:>7.1} {:>10} {:>9} {:>8} {:>6}",
        m.workload.as_str(),
        m.len,
        m.backend,
        fmt_ms(m.ms),
        m.gflops(),
        m.roof_pct(),
        vs_scalar,
        vs_exact,
        over_favor,
        m.runs
    )
}

pub(super) fn fmt_ms(ms: f64) -> String {
    match ms {
        x if x >= 100.0 => format!("{x:.1}"),
        x if x >= 10.0 => format!("{x:.2}"),
        x if x >= 1.0 => format!("{x:.3}"),
        x => format!("{x:.4}"),
    }
}

pub(super) fn header(opts: &Options, backend: &str, roofs: &Roofs) -> String {
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
         FLOPs     FAVOR+ 8*H*L*m*d per call; exact 4*H*L^2*d per call; decode 8*H*m*d per token;\n\
         \x20         hybrid (w32, w64: exact window of w and {HYBRID_SINKS} sink; m64: m = 64) FAVOR+'s at its m + 4*H*L*E*d, E = 2w+1+s (bidir), w+1+s (causal)\n\
         / favor   a hybrid row's time over its FAVOR+ (m = 256) row's (same L and backend)\n\
         ms        median per call after a warm-up (decode: per token, all {HEADS} heads; L = tokens already seen)\n\n\
         {TABLE_HEAD}\n",
        cpu_model(),
        opts.threads,
        roofs.lanes,
        roofs.widest,
    )
}

/// The CPU model from /proc/cpuinfo, where readable.
pub(super) fn cpu_model() -> String {
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
pub fn plot(path: &Path, opts: &Options, backend: &str, all: &[Measurement]) -> CliResult<()> {
    let mut series = Vec::new();
    let backends: &[&str] = if backend == "scalar" {
        &["scalar"]
    } else {
        &[backend, "scalar"]
    };
    let w32 = HybridRow::W32;
    for &b in backends {
        for (w, label) in [
            (Workload::Bidir, "FAVOR+ bidirectional"),
            (Workload::Causal, "FAVOR+ causal"),
            (Workload::HybridBidir(w32), "hybrid w = 32 bidirectional"),
            (Workload::HybridCausal(w32), "hybrid w = 32 causal"),
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
