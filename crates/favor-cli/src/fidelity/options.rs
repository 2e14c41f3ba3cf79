//! The options of `favor fidelity`.

use std::path::PathBuf;

use super::config::{Config, Kernel, Projection};
use crate::args::{Args, CliError, CliResult};

/// Options of `favor fidelity` besides the [`Config`].
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Print JSON instead of text.
    pub json: bool,
    /// Write the figure here.
    pub plot: Option<PathBuf>,
    /// Write the Markdown tables here.
    pub markdown: Option<PathBuf>,
}

/// The flags of `favor fidelity` as given, before [`from_flags`] checks them; an absent one
/// keeps [`Config::default`]'s value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// Sequence length L (default 4096).
    #[arg(long, value_name = "L")]
    pub len: Option<usize>,
    /// Head dimension d (default 16).
    #[arg(long, value_name = "D")]
    pub dim: Option<usize>,
    /// Row norms r of the raw queries and keys (default 1,2,4).
    #[arg(long, value_name = "R,...", value_delimiter = ',', action = clap::ArgAction::Set)]
    pub norms: Option<Vec<f64>>,
    /// Random features m (default 16,32,64,128,256,512).
    #[arg(long, value_name = "M,...", value_delimiter = ',', action = clap::ArgAction::Set)]
    pub features: Option<Vec<usize>>,
    /// Seeds per point (default 15).
    #[arg(long, value_name = "N")]
    pub seeds: Option<usize>,
    /// (q, k) pairs for the kernel-level table, 0 to skip it (default 256).
    #[arg(long, value_name = "N")]
    pub pairs: Option<usize>,
    /// Worker threads the seeds run on (default: every CPU).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Kernels: positive, hyperbolic, trig, relu (default all).
    #[arg(long, value_name = "K,...", value_delimiter = ',', action = clap::ArgAction::Set)]
    pub kernels: Option<Vec<String>>,
    /// Projections: iid, orthogonal or orth (default both).
    #[arg(long, value_name = "P,...", value_delimiter = ',', action = clap::ArgAction::Set)]
    pub projections: Option<Vec<String>>,
    /// Print JSON instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Draw the figure to this PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Write the tables as Markdown to this file.
    #[arg(long, value_name = "FILE.md")]
    pub markdown: Option<PathBuf>,
}

/// Reads `favor fidelity`'s options: `--len`, `--dim`, `--norms`, `--features`, `--seeds`,
/// `--pairs`, `--kernels`, `--projections`, `--threads`, `--json`, `--plot FILE.png`,
/// `--markdown FILE.md`.
pub fn parse_args(args: Args) -> CliResult<(Config, Output)> {
    from_flags(args.parse("fidelity")?)
}

/// Checks `flags` and fills in the defaults; every error is a usage error (exit status 2).
pub fn from_flags(flags: Flags) -> CliResult<(Config, Output)> {
    let def = Config::default();
    let mut cfg = Config {
        len: flags.len.unwrap_or(def.len),
        dim: flags.dim.unwrap_or(def.dim),
        norms: flags.norms.unwrap_or(def.norms),
        features: flags.features.unwrap_or(def.features),
        seeds: flags.seeds.unwrap_or(def.seeds),
        pairs: flags.pairs.unwrap_or(def.pairs),
        threads: flags.threads.unwrap_or(def.threads),
        ..def
    };
    if let Some(list) = flags.kernels {
        cfg.kernels = list
            .iter()
            .map(|s| {
                Kernel::parse(s).ok_or_else(|| {
                    CliError::input(format!(
                        "--kernels item {s:?}: expected positive, hyperbolic, trig or relu"
                    ))
                })
            })
            .collect::<CliResult<_>>()?;
    }
    if let Some(list) = flags.projections {
        cfg.projections = list
            .iter()
            .map(|s| match s.trim().to_ascii_lowercase().as_str() {
                "iid" => Ok(Projection::Iid),
                "orth" | "orthogonal" => Ok(Projection::Orthogonal),
                _ => Err(CliError::input(format!(
                    "--projections item {s:?}: expected iid or orthogonal"
                ))),
            })
            .collect::<CliResult<_>>()?;
    }
    let out = Output {
        json: flags.json,
        plot: flags.plot,
        markdown: flags.markdown,
    };
    cfg.validate()?;
    Ok((cfg, out))
}
