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

/// Reads `favor fidelity`'s options: `--len`, `--dim`, `--norms`, `--features`, `--seeds`,
/// `--pairs`, `--kernels`, `--projections`, `--threads`, `--json`, `--plot FILE.png`,
/// `--markdown FILE.md`.
pub fn parse_args(mut args: Args) -> CliResult<(Config, Output)> {
    let mut cfg = Config::default();
    if let Some(v) = args.parse("len")? {
        cfg.len = v;
    }
    if let Some(v) = args.parse("dim")? {
        cfg.dim = v;
    }
    if let Some(v) = args.list("norms")? {
        cfg.norms = v;
    }
    if let Some(v) = args.list("features")? {
        cfg.features = v;
    }
    if let Some(v) = args.parse("seeds")? {
        cfg.seeds = v;
    }
    if let Some(v) = args.parse("pairs")? {
        cfg.pairs = v;
    }
    if let Some(v) = args.parse("threads")? {
        cfg.threads = v;
    }
    if let Some(list) = args.list::<String>("kernels")? {
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
    if let Some(list) = args.list::<String>("projections")? {
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
        json: args.flag("json"),
        plot: args.value("plot")?.map(PathBuf::from),
        markdown: args.value("markdown")?.map(PathBuf::from),
    };
    args.finish()?;
    cfg.validate()?;
    Ok((cfg, out))
}
