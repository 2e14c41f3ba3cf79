//! The measured workloads and one measured point, with its JSON line.

use favor_workload::{self as workload};
use std::fmt;

/// Largest L `--lens` accepts (the inputs take 6 KiB per token).
pub const MAX_LEN: usize = 1 << 20;

/// The hybrid rows' configurations: an exact window of w keys (with
/// [`HYBRID_SINKS`](favor_workload::HYBRID_SINKS) sink) and m random features for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HybridRow {
    /// w = 32, m = 256.
    W32,
    /// w = 64, m = 256.
    W64,
    /// w = 32, m = 64.
    W32M64,
    /// w = 64, m = 64.
    W64M64,
}

impl HybridRow {
    /// Every configuration the sweep measures: m = 256, then m = 64, each by ascending w.
    pub const ALL: [Self; 4] = [Self::W32, Self::W64, Self::W32M64, Self::W64M64];

    /// The workload's configuration.
    pub fn config(self) -> workload::Hybrid {
        let (window, features) = match self {
            Self::W32 => (32, workload::FEATURES),
            Self::W64 => (64, workload::FEATURES),
            Self::W32M64 => (32, workload::SMALL_FEATURES),
            Self::W64M64 => (64, workload::SMALL_FEATURES),
        };
        workload::Hybrid { window, features }
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
    /// Bidirectional hybrid attention: the window and the sink exact, FAVOR+ for the rest.
    HybridBidir(HybridRow),
    /// Chunked causal hybrid attention.
    HybridCausal(HybridRow),
    /// One hybrid decode step per head.
    HybridDecode(HybridRow),
}

impl Workload {
    /// The name in the table and in JSON: the FAVOR+ workload's, with `w` and the window for
    /// the hybrid ones (`bidirw32`, `decodew64`), then `m64` for m = 64 (`causalw32m64`).
    pub fn as_str(self) -> &'static str {
        use HybridRow::*;
        match self {
            Self::Bidir => "bidir",
            Self::Causal => "causal",
            Self::Exact => "exact",
            Self::Decode => "decode",
            Self::HybridBidir(W32) => "bidirw32",
            Self::HybridBidir(W64) => "bidirw64",
            Self::HybridCausal(W32) => "causalw32",
            Self::HybridCausal(W64) => "causalw64",
            Self::HybridDecode(W32) => "decodew32",
            Self::HybridDecode(W64) => "decodew64",
            Self::HybridBidir(W32M64) => "bidirw32m64",
            Self::HybridBidir(W64M64) => "bidirw64m64",
            Self::HybridCausal(W32M64) => "causalw32m64",
            Self::HybridCausal(W64M64) => "causalw64m64",
            Self::HybridDecode(W32M64) => "decodew32m64",
            Self::HybridDecode(W64M64) => "decodew64m64",
        }
    }

    /// The FAVOR+ workload (m = 256) a hybrid one is compared with; `None` for the others.
    pub fn favor_twin(self) -> Option<Self> {
        match self {
            Self::HybridBidir(_) => Some(Self::Bidir),
            Self::HybridCausal(_) => Some(Self::Causal),
            Self::HybridDecode(_) => Some(Self::Decode),
            _ => None,
        }
    }

    /// FLOPs charged per call (per token for decode) at `len` tokens.
    pub fn flops(self, len: usize) -> f64 {
        (match self {
            Self::Bidir | Self::Causal => workload::favor_flops(len),
            Self::Exact => workload::exact_flops(len),
            Self::Decode => workload::favor_flops(1),
            Self::HybridBidir(w) => workload::hybrid_flops(len, false, w.config()),
            Self::HybridCausal(w) => workload::hybrid_flops(len, true, w.config()),
            Self::HybridDecode(w) => workload::hybrid_flops(1, true, w.config()),
        }) as f64
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
