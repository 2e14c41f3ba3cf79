//! Token-by-token causal decoding through favor-candle's owned [`DecodeState`] (hybrid
//! attention: a window of raw keys, sinks, random features for the rest) on synthetic
//! q, k, v: the state's memory and the process's resident memory stay flat as the sequence
//! grows, where exact attention's KV cache grows linearly.
//!
//! ```text
//! cargo run --release -p favor-candle --example decode -- --tokens 16384
//! ```
//!
//! [`DecodeState`]: favor_candle::DecodeState

use std::process::ExitCode;
use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::Parser;
use favor_candle::{Performer, PerformerAttention};

/// Decodes --tokens tokens one at a time and prints memory as the sequence grows.
#[derive(Parser, Debug)]
struct Args {
    /// Tokens to decode.
    #[arg(long, default_value_t = 16384)]
    tokens: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Random features behind the window.
    #[arg(long, default_value_t = 64)]
    features: usize,
    /// Recent keys taken exactly.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Leading tokens taken exactly.
    #[arg(long, default_value_t = 1)]
    sinks: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decode: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The process's resident memory in KiB (Linux), if known.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let performer = Performer::builder(a.dim)
        .heads(a.heads)
        .features(a.features)
        .causal(true)
        .window(a.window)
        .sinks(a.sinks)
        .seed(1)
        .build()?;
    let attn = PerformerAttention::new(performer);
    let mut state = attn.decode_state(1)?;
    let shape = (1, 1, a.heads, a.dim);
    println!(
        "causal hybrid decode: {} heads, d = {}, window {}, sinks {}, m = {}; one token per step\n",
        a.heads, a.dim, a.window, a.sinks, a.features
    );
    println!(
        "| tokens | state bytes | process RSS (MiB) | exact KV cache would hold (MiB) | µs/token (last stretch) |"
    );
    println!("|---|---|---|---|---|");
    let mut next = 256;
    let mut stretch = Instant::now();
    let mut stretch_tokens = 0;
    for t in 1..=a.tokens {
        let q = Tensor::randn(0f32, 0.3, shape, &Device::Cpu)?;
        let k = Tensor::randn(0f32, 0.3, shape, &Device::Cpu)?;
        let v = Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?;
        let out = state.step(&q, &k, &v)?;
        debug_assert_eq!(out.dims(), &[1, 1, a.heads, a.dim]);
        stretch_tokens += 1;
        if t == next || t == a.tokens {
            let kv = 2 * t * a.heads * a.dim * 4;
            println!(
                "| {t} | {} | {} | {:.2} | {:.1} |",
                state.memory_bytes(),
                rss_kib().map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                kv as f64 / (1024.0 * 1024.0),
                stretch.elapsed().as_secs_f64() * 1e6 / stretch_tokens as f64,
            );
            next *= 2;
            stretch = Instant::now();
            stretch_tokens = 0;
        }
    }
    Ok(())
}
