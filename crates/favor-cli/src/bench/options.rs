//! The options of `favor bench` (`--backend`, `--lens`, `--plot` ...) and the plan of one sweep.

use super::measurement::MAX_LEN;
use super::probe::MemoryProbe;
use crate::args::{Args, CliError, CliResult};
use favor_workload::HEADS;
use std::path::{Path, PathBuf};
use std::str::FromStr;

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
    /// print it as a [`MemoryMeasurement::probe_line`](super::MemoryMeasurement::probe_line); what `--memory` runs in each child.
    pub memory_probe: Option<MemoryProbe>,
}

/// The flags of `favor bench` as given, before [`Options::from_flags`] checks them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// One JSON object per line instead of the text table.
    #[arg(long)]
    pub json: bool,
    /// A small sweep with short timing (smoke tests).
    #[arg(long)]
    pub quick: bool,
    /// Peak resident memory vs L (Linux; one child process per row) instead of time.
    #[arg(long)]
    pub memory: bool,
    /// One memory measurement in this process (what `--memory` runs in each child).
    #[arg(long, value_name = "WORKLOAD:L", hide = true)]
    pub memory_probe: Option<MemoryProbe>,
    /// Threads the heads are split over, 1 to 8 (default 1).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Sequence lengths, replacing the default sweep.
    #[arg(long, value_name = "L,...", value_delimiter = ',', action = clap::ArgAction::Set)]
    pub lens: Option<Vec<usize>>,
    /// Kernels measured: auto|avx2|avx512|neon|portable|scalar (default auto).
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<BackendChoice>,
    /// Draw time against L to this PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
}

impl Options {
    /// Reads and checks the options; every error is a usage error (exit status 2).
    pub fn parse(args: Args) -> CliResult<Self> {
        Self::from_flags(args.parse("bench")?)
    }

    /// Checks the flags; every error is a usage error (exit status 2).
    pub fn from_flags(flags: Flags) -> CliResult<Self> {
        let Flags {
            json,
            quick,
            memory,
            memory_probe,
            threads: given_threads,
            lens,
            backend: given_backend,
            plot,
        } = flags;
        let threads = given_threads.unwrap_or(1);
        let backend = given_backend.unwrap_or(BackendChoice::Auto);
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
pub(super) fn check_plot_path(p: &Path) -> CliResult<()> {
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
