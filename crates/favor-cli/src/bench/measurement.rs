//! The measured workloads and one measured point, with its JSON line.

use favor_workload::{self as workload};
use std::fmt;

/// Largest L `--lens` accepts (the inputs take 6 KiB per token).
pub const MAX_LEN: usize = 1 << 20;

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

pub(super) fn json_num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "null".into()
    }
}
