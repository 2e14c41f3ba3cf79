//! `favor bench --memory`: peak resident memory per workload, one child process per row,
//! and its table or JSON lines.

use super::options::Options;
use super::probe::{MemoryMeasurement, MemoryProbe, STREAM_CHUNK, own_memory};
use super::report::{cpu_model, put};
use crate::args::{CliError, CliResult};
use favor_core::Kernels;
use favor_simd::Detected;
use favor_workload::{DIM, FEATURES, HEADS};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Runs `exe bench --memory-probe P` and reads its line.
pub(super) fn spawn_probe(exe: &Path, p: MemoryProbe) -> CliResult<MemoryMeasurement> {
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

pub(super) fn memory_header() -> String {
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

pub fn memory_row(m: &MemoryMeasurement) -> String {
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
