//! Sentence embeddings of every line of a file with all-MiniLM-L6-v2, the attention of each
//! layer exact, FAVOR+ or hybrid (optionally calibrated), written as a float32 `.npy` (N, 384).
//!
//! ```text
//! scripts/fetch-minilm.sh
//! cargo run --release -p favor-candle --example embed -- --model ~/.cache/favor/all-MiniLM-L6-v2 \
//!     --input texts.txt --out emb.npy --attention hybrid --window 32 --sinks 1 --features 64
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use favor_candle::Kernel;
use favor_candle::bert::{AttentionSpec, Embedder, default_model_dir};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Exact,
    Favor,
    Hybrid,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KernelArg {
    Softmax,
    Gerf,
    Saderf,
}

/// Embeds one text per line of --input into --out (float32, N × 384, unit rows).
#[derive(Parser, Debug)]
struct Args {
    /// The model folder (model.safetensors, config.json, tokenizer.json), as
    /// scripts/fetch-minilm.sh fills it [default: $FAVOR_MODEL_DIR or ~/.cache/favor/all-MiniLM-L6-v2]
    #[arg(long)]
    model: Option<PathBuf>,
    /// A UTF-8 text file, one text per line (each truncated to 512 tokens).
    #[arg(long)]
    input: PathBuf,
    /// The .npy file to write.
    #[arg(long)]
    out: PathBuf,
    /// The attention every layer runs.
    #[arg(long, value_enum, default_value = "exact")]
    attention: Kind,
    /// m, random features per head (favor, hybrid).
    #[arg(long, default_value_t = 256)]
    features: usize,
    /// Neighbours on each side taken exactly (hybrid).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Leading tokens taken exactly by every query (hybrid).
    #[arg(long, default_value_t = 1)]
    sinks: usize,
    /// Fit a data-aware map per layer and head on the texts of this file (one per line; other
    /// texts than --input).
    #[arg(long)]
    calibrate: Option<PathBuf>,
    /// The feature map (favor, hybrid): softmax (SM+, the default), or gerf / saderf fitted
    /// on each call's queries and keys (not with --calibrate).
    #[arg(long, value_enum, default_value = "softmax")]
    kernel: KernelArg,
    /// Seed of layer 0's projection (layer i uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_lines(path: &PathBuf) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}

fn run(args: Args) -> Result<(), String> {
    let dir = args.model.clone().unwrap_or_else(default_model_dir);
    let texts = read_lines(&args.input)?;
    if texts.is_empty() {
        return Err(format!("{}: no lines to embed", args.input.display()));
    }
    let kernel = match args.kernel {
        KernelArg::Softmax => Kernel::Softmax,
        KernelArg::Gerf => Kernel::Gerf,
        KernelArg::Saderf => Kernel::Saderf,
    };
    let spec = match args.attention {
        Kind::Exact => AttentionSpec::Exact,
        Kind::Favor => AttentionSpec::Favor {
            features: args.features,
            kernel,
            seed: args.seed,
        },
        Kind::Hybrid => AttentionSpec::Hybrid {
            features: args.features,
            window: args.window,
            sinks: args.sinks,
            kernel,
            seed: args.seed,
        },
    };
    let mut embedder = Embedder::load(&dir).map_err(|e| e.to_string())?;
    let calibration = match &args.calibrate {
        Some(path) => {
            let ids = read_lines(path)?
                .iter()
                .map(|t| embedder.tokenize(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Some(ids)
        }
        None => None,
    };
    let attention = embedder
        .attention(spec, calibration.as_deref())
        .map_err(|e| e.to_string())?;
    embedder.set_attention(attention);
    let start = Instant::now();
    let mut rows = Vec::with_capacity(texts.len() * 384);
    let mut tokens = 0;
    for (i, text) in texts.iter().enumerate() {
        let ids = embedder.tokenize(text).map_err(|e| e.to_string())?;
        tokens += ids.len();
        let row = embedder
            .embed_ids(&ids)
            .map_err(|e| format!("line {}: {e}", i + 1))?;
        rows.extend(row);
    }
    let width = rows.len() / texts.len();
    favor_npy::write_f32(&args.out, &[texts.len(), width], &rows).map_err(|e| e.to_string())?;
    eprintln!(
        "embed: {} texts ({} tokens) with {} attention in {:.2} s → {} ({} × {width}, float32)",
        texts.len(),
        tokens,
        spec.label(),
        start.elapsed().as_secs_f64(),
        args.out.display(),
        texts.len(),
    );
    Ok(())
}
