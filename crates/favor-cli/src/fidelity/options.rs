//! The options of `favor fidelity`.

use std::path::PathBuf;

use super::config::{Config, Kernel, Local, Projection, Setting};
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
    /// Input model: iid (independent directions, the default) or local (AR(1) directions,
    /// nearby positions attend to each other, optional sink at position 0; its own defaults:
    /// r = 4,8, m = 16,64,256, kernels positive,gerf,data-aware, projections orth,simplex,
    /// windows 8,32, sinks 0,1, no kernel-level pairs).
    #[arg(long, value_name = "SETTING")]
    pub setting: Option<String>,
    /// Local setting: AR(1) coefficient a of the directions, in [0, 1) (default 0.9).
    #[arg(long, value_name = "A")]
    pub corr: Option<f64>,
    /// Local setting: logit S of the sink at position 0 seen from every query (default 8).
    #[arg(long, value_name = "S", conflicts_with = "no_sink")]
    pub sink_logit: Option<f64>,
    /// Local setting: no sink position.
    #[arg(long)]
    pub no_sink: bool,
    /// Hybrid windows w: each (kernel, projection) also runs as hybrid attention, exact
    /// within |i − j| ≤ w, for each w and --sinks value; `none` for FAVOR+ only (default
    /// none; local: 8,32).
    #[arg(long, value_name = "W,...|none", value_delimiter = ',', action = clap::ArgAction::Set)]
    pub windows: Option<Vec<String>>,
    /// Sink counts of the hybrid rows (default 0; local: 0,1).
    #[arg(long, value_name = "S,...", value_delimiter = ',', action = clap::ArgAction::Set)]
    pub sinks: Option<Vec<usize>>,
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
    /// Kernels: positive, hyperbolic, trig, relu, gerf, data-aware (default the first four).
    #[arg(long, value_name = "K,...", value_delimiter = ',', action = clap::ArgAction::Set)]
    pub kernels: Option<Vec<String>>,
    /// Projections: iid, orthogonal or orth, simplex, sorf (default iid,orth).
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

/// Reads `favor fidelity`'s options: `--setting`, `--corr`, `--sink-logit`, `--no-sink`,
/// `--windows`, `--sinks`, `--len`, `--dim`, `--norms`, `--features`, `--seeds`, `--pairs`,
/// `--kernels`, `--projections`, `--threads`, `--json`, `--plot FILE.png`,
/// `--markdown FILE.md`.
pub fn parse_args(args: Args) -> CliResult<(Config, Output)> {
    from_flags(args.parse("fidelity")?)
}

/// Checks `flags` and fills in the defaults; every error is a usage error (exit status 2).
pub fn from_flags(flags: Flags) -> CliResult<(Config, Output)> {
    let setting = setting_of(&flags)?;
    let def = Config::for_setting(setting);
    let windows = match flags.windows {
        None => def.windows.clone(),
        Some(list) if list.len() == 1 && list[0].trim().eq_ignore_ascii_case("none") => Vec::new(),
        Some(list) => list
            .iter()
            .map(|s| {
                s.trim().parse::<usize>().map_err(|_| {
                    CliError::input(format!("--windows item {s:?}: expected a window or none"))
                })
            })
            .collect::<CliResult<_>>()?,
    };
    let mut cfg = Config {
        windows,
        sinks: flags.sinks.unwrap_or(def.sinks.clone()),
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
                        "--kernels item {s:?}: expected positive, hyperbolic, trig, relu, gerf \
                         or data-aware"
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
                "simplex" => Ok(Projection::Simplex),
                "sorf" => Ok(Projection::Sorf),
                _ => Err(CliError::input(format!(
                    "--projections item {s:?}: expected iid, orthogonal, simplex or sorf"
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

/// The setting `--setting`, `--corr`, `--sink-logit` and `--no-sink` name; the local
/// setting's parameters without `--setting local` are a usage error.
fn setting_of(flags: &Flags) -> CliResult<Setting> {
    let local = match flags
        .setting
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
    {
        None => false,
        Some(s) if s == "iid" => false,
        Some(s) if s == "local" => true,
        Some(s) => {
            return Err(CliError::input(format!(
                "--setting {s:?}: expected iid or local"
            )));
        }
    };
    let local_flags = flags.corr.is_some() || flags.sink_logit.is_some() || flags.no_sink;
    if !local {
        if local_flags {
            return Err(CliError::input(
                "--corr, --sink-logit and --no-sink need --setting local",
            ));
        }
        return Ok(Setting::Iid);
    }
    let def = Local::default();
    Ok(Setting::Local(Local {
        corr: flags.corr.unwrap_or(def.corr),
        sink_logit: if flags.no_sink {
            None
        } else {
            flags.sink_logit.or(def.sink_logit)
        },
    }))
}
