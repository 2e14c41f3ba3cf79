//! The `favor` command: FAVOR+ attention on `.npy` files, a demo, benchmarks and the
//! fidelity study. Every failure is one line on stderr and exit status 2 (bad usage or
//! input, an output that cannot be written, sizes beyond the memory available) or 1
//! (anything else); never a panic message, a backtrace or an abort.

use favor_cli::args::{Args, CliError, CliResult};
use favor_cli::{attend, bench, demo, fidelity};
use std::io::Write;

const USAGE: &str = "\
favor — FAVOR+ (Performer) attention for every CPU

USAGE:
  favor demo                                   synthetic data: accuracy, time, memory, decode
  favor run --q Q.npy --k K.npy --v V.npy --out OUT.npy [options]
      --kernel softmax|hyperbolic|trig|relu|elu|exp|abs|square   (default softmax)
      --features M            random features m (default 256)
      --projection-kind orthogonal|iid|none   (default orthogonal)
      --norms chi|sqrt-d      row norms of orthogonal projections (default chi)
      --projection W.npy      use this (m, d) matrix exactly as given
      --seed S                projection seed (default 0)
      --causal                causal attention (queries see keys up to their own position)
      --chunk C               tokens per causal chunk (default 64)
      --precision f32|f64     accumulation precision (default f32)
  favor exact --q Q.npy --k K.npy --v V.npy --out OUT.npy [--causal]
                                               exact softmax attention (f64 accumulation)
  favor projection --dim D [--features M] [--seed S] [--projection-kind K] [--norms N] --out W.npy
  favor bench [--json] [--threads N] [--plot FILE.png] [--quick] [--lens 256,...]
              [--backend auto|avx2|avx512|neon|portable|scalar]
  favor bench --memory [--json] [--quick]      peak resident memory vs L (Linux)
  favor fidelity [--json] [--plot FILE.png] [--markdown FILE.md] [--norms 1,2,4]
                 [--features 16,...,512] [--seeds 15] [--len 4096] [--dim 16] [--pairs N]
                 [--kernels ...] [--projections ...] [--threads N]
  favor help | --help | --version

Inputs are .npy files of float16/32/64 with shape (L, d) or (B, H, L, d); v may have its own
last dimension dv. Outputs are float32 .npy of shape (…, L, dv).";

fn dispatch(mut argv: impl Iterator<Item = String>) -> CliResult<()> {
    let Some(cmd) = argv.next() else {
        println!("{USAGE}");
        return Err(CliError::input("missing command"));
    };
    let args = Args::new(argv);
    match cmd.as_str() {
        "demo" => demo::main(args),
        "run" => attend::run(args),
        "exact" => attend::exact(args),
        "projection" => attend::projection(args),
        "bench" => bench::main(args),
        "fidelity" => fidelity::main(args),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        "--version" | "-V" => {
            println!("favor {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        other => Err(CliError::input(format!(
            "unknown command {other:?} (see `favor help`)"
        ))),
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
    if let Err(e) = dispatch(std::env::args().skip(1)) {
        eprintln!("favor: {e}");
        std::process::exit(e.code);
    }
}
