//! The `favor` command: FAVOR+ attention on `.npy` files, a demo, benchmarks and the
//! fidelity study. Every failure is one line on stderr and exit status 2 (bad usage or
//! input, an output that cannot be written, sizes beyond the memory available) or 1
//! (anything else); never a panic message, a backtrace or an abort.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use favor_cli::args::{CliError, CliResult, usage_error};
use favor_cli::attend::{CalibrateFlags, ExactFlags, ProjectionExportFlags, RunFlags};
use favor_cli::{attend, bench, demo, fidelity, import};
use std::io::Write;

/// FAVOR+ (Performer) attention for every CPU.
#[derive(Debug, Parser)]
#[command(
    name = "favor",
    version,
    args_override_self = true,
    after_help = "Inputs are .npy files of float16/32/64 with shape (L, d) or (B, H, L, d); v \
                  may have its own last dimension dv. Outputs are float32 .npy of shape \
                  (…, L, dv)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Synthetic data: accuracy, time, memory, decode.
    Demo,
    /// FAVOR+ attention of --q, --k, --v into --out.
    Run(RunFlags),
    /// Exact softmax attention (f64 accumulation) of --q, --k, --v into --out.
    Exact(ExactFlags),
    /// Writes the projection `favor run` would draw, as f32 (m, d).
    Projection(ProjectionExportFlags),
    /// Calibrates a data-aware map per head from sample --q and --k into --out (.npy or
    /// .safetensors), for `favor run --map`.
    Calibrate(CalibrateFlags),
    /// Lists the projection matrices of a checkpoint trained elsewhere (performer-pytorch
    /// safetensors), or writes them as .npy for `favor run --projection`.
    Import(import::ImportFlags),
    /// Time per call vs L for FAVOR+ and exact attention, with the FMA roof; --memory: peak
    /// resident memory vs L (Linux).
    Bench(bench::Flags),
    /// The fidelity study: FAVOR+ output MSE against exact softmax, per kernel, projection,
    /// m and norm.
    Fidelity(fidelity::Flags),
}

fn dispatch() -> CliResult<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help`, `help` and `--version` print to stdout and exit 0, as clap does.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return Err(usage_error(e)),
    };
    match cli.command {
        None => {
            println!("{}", Cli::command().render_help());
            Err(CliError::input("missing command"))
        }
        Some(Command::Demo) => demo::main(),
        Some(Command::Run(f)) => attend::run(f),
        Some(Command::Exact(f)) => attend::exact(f),
        Some(Command::Projection(f)) => attend::projection(f),
        Some(Command::Calibrate(f)) => attend::calibrate(f),
        Some(Command::Import(f)) => import::main(f),
        Some(Command::Bench(f)) => bench::main(f),
        Some(Command::Fidelity(f)) => fidelity::main(f),
    }
}

fn main() {
    // A bug must still end in one line, not a backtrace. `println!` panics when stdout is a
    // closed pipe (`favor demo | head`): that is the reader's choice, not an error.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "favor: internal error{at}: {}",
            msg.replace('\n', " ")
        );
        std::process::exit(1);
    }));
    if let Err(e) = dispatch() {
        eprintln!("favor: {e}");
        std::process::exit(e.code);
    }
}
