//! The README's MiniLM report: mean cosine to exact attention and time per text of FAVOR+ and
//! hybrid attention in all-MiniLM-L6-v2 (no fine-tuning), on a long text cut into chunks of
//! L tokens; even chunks are embedded, odd chunks calibrate the data-aware maps.
//!
//! ```text
//! scripts/fetch-minilm.sh
//! cargo run --release -p favor-candle --example report -- --text /usr/share/common-licenses/GPL-3
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use favor_candle::Kernel;
use favor_candle::bert::{AttentionSpec, Embedder, Probe, cosine, default_model_dir};

/// Mean cosine to exact attention and time per text, per attention and chunk length.
#[derive(Parser, Debug)]
struct Args {
    /// The model folder [default: $FAVOR_MODEL_DIR or ~/.cache/favor/all-MiniLM-L6-v2]
    #[arg(long)]
    model: Option<PathBuf>,
    /// The text to cut into chunks.
    #[arg(long, default_value = "/usr/share/common-licenses/GPL-3")]
    text: PathBuf,
    /// Chunk lengths in tokens ([CLS] and [SEP] included).
    #[arg(long, value_delimiter = ',', default_values_t = [128, 256, 512])]
    lens: Vec<usize>,
    /// FAVOR+ features.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 256, 1024])]
    features: Vec<usize>,
    /// Hybrid windows (sinks 1).
    #[arg(long, value_delimiter = ',', default_values_t = [8, 32, 64])]
    windows: Vec<usize>,
    /// Hybrid sinks (leading tokens taken exactly).
    #[arg(long, default_value_t = 1)]
    sinks: usize,
    /// Features behind a hybrid window.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 256])]
    hybrid_features: Vec<usize>,
    /// Wide hybrid windows (sinks as above, no calibration), each at the lengths L ≥ 2w only:
    /// at MiniLM's lengths the window must cover most of the far-reaching attention.
    #[arg(long, value_delimiter = ',', default_values_t = [96, 128, 160, 192])]
    wide_windows: Vec<usize>,
    /// Features behind a wide window.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 32])]
    wide_features: Vec<usize>,
    /// The feature map of the FAVOR+ and hybrid rows (gerf and saderf are fitted per call and
    /// cannot be calibrated: use with --no-calibration).
    #[arg(long, value_enum, default_value = "softmax")]
    kernel: KernelArg,
    /// Leave out the calibrated rows.
    #[arg(long)]
    no_calibration: bool,
    /// Seeds per random configuration (cosines averaged over them).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// At most this many chunks embedded per length.
    #[arg(long, default_value_t = 16)]
    max_chunks: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("report: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum KernelArg {
    Softmax,
    Gerf,
    Saderf,
}

impl KernelArg {
    fn kernel(self) -> Kernel {
        match self {
            Self::Softmax => Kernel::Softmax,
            Self::Gerf => Kernel::Gerf,
            Self::Saderf => Kernel::Saderf,
        }
    }
}

/// One configuration's results at one length.
struct Row {
    label: String,
    mean: f64,
    min: f64,
    attention: Duration,
    total: Duration,
}

type BoxError = Box<dyn std::error::Error>;

fn run(args: Args) -> Result<(), BoxError> {
    let dir = args.model.clone().unwrap_or_else(default_model_dir);
    let mut embedder = Embedder::load(&dir)?;
    let text =
        std::fs::read_to_string(&args.text).map_err(|e| format!("{}: {e}", args.text.display()))?;
    let pieces = embedder.word_pieces(&text)?;
    let (cls, sep) = embedder.cls_sep()?;
    println!(
        "# all-MiniLM-L6-v2: FAVOR+ and hybrid attention vs exact\n\n{} ({} word pieces); even chunks embedded, odd chunks calibrate; {} seed(s) per random configuration; {} threads.\n",
        args.text.display(),
        pieces.len(),
        args.seeds,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    for &len in &args.lens {
        if !(3..=embedder.max_tokens()).contains(&len) {
            return Err(format!(
                "chunk length {len} is outside 3..={}",
                embedder.max_tokens()
            )
            .into());
        }
        let chunks: Vec<Vec<u32>> = pieces
            .chunks_exact(len - 2)
            .map(|body| [&[cls][..], body, &[sep]].concat())
            .collect();
        let eval: Vec<&Vec<u32>> = chunks.iter().step_by(2).take(args.max_chunks).collect();
        let calibration: Vec<Vec<u32>> = chunks.iter().skip(1).step_by(2).cloned().collect();
        if eval.is_empty() || calibration.is_empty() {
            return Err(format!("the text is too short for two chunks of {len} tokens").into());
        }
        let reach: Vec<usize> = (args.windows.iter())
            .chain(args.wide_windows.iter().filter(|&&w| 2 * w <= len))
            .copied()
            .collect();
        print_mass(&embedder, &eval, &reach, args.sinks, len)?;
        embedder.set_attention(embedder.attention(AttentionSpec::Exact, None)?);
        let (exact, exact_row) = measure(&embedder, &eval, "exact", None, 1)?;
        let mut rows = vec![exact_row];
        let mut configs: Vec<(AttentionSpec, bool)> = Vec::new();
        let kernel = args.kernel.kernel();
        for &features in &args.features {
            configs.push((
                AttentionSpec::Favor {
                    features,
                    kernel,
                    seed: 0,
                },
                false,
            ));
        }
        if !args.no_calibration {
            configs.push((
                AttentionSpec::Favor {
                    features: 256,
                    kernel,
                    seed: 0,
                },
                true,
            ));
        }
        let hybrid = |features, window| AttentionSpec::Hybrid {
            features,
            window,
            sinks: args.sinks,
            kernel,
            seed: 0,
        };
        for &features in &args.hybrid_features {
            for &window in &args.windows {
                configs.push((hybrid(features, window), false));
                if !args.no_calibration {
                    configs.push((hybrid(features, window), true));
                }
            }
        }
        for &features in &args.wide_features {
            for &window in args.wide_windows.iter().filter(|&&w| 2 * w <= len) {
                configs.push((hybrid(features, window), false));
            }
        }
        for (spec, calibrated) in configs {
            let mut label = spec.label();
            if calibrated {
                label.push_str(" calibrated");
            }
            let mut seeded = Vec::new();
            for seed in 0..args.seeds {
                let spec = with_seed(spec, 1000 * seed);
                let cal = calibrated.then_some(&calibration[..]);
                embedder.set_attention(embedder.attention(spec, cal)?);
                seeded.push(measure(&embedder, &eval, &label, Some(&exact), 1)?.1);
            }
            rows.push(average(label, seeded));
        }
        print_table(len, eval.len(), calibration.len(), &rows);
    }
    Ok(())
}

/// Where exact attention's weight lies, per layer (mean over heads, queries and the first
/// three embedded chunks): on the sinks, and within ±w of the query for each window.
fn print_mass(
    embedder: &Embedder,
    eval: &[&Vec<u32>],
    windows: &[usize],
    sinks: usize,
    len: usize,
) -> Result<(), BoxError> {
    let c = embedder.model().config();
    let (h, d) = (c.num_attention_heads, c.head_dim());
    let layers = c.num_hidden_layers;
    // Per layer: sink mass, then the mass within each window (sinks excluded).
    let mut mass = vec![vec![0f64; 1 + windows.len()]; layers];
    let mut rows = 0f64;
    for ids in eval.iter().take(3) {
        for (layer, (q, k)) in embedder.exact_queries_keys(ids)?.iter().enumerate() {
            let q: Vec<f32> = q.flatten_all()?.to_vec1()?;
            let k: Vec<f32> = k.flatten_all()?.to_vec1()?;
            let l = ids.len();
            for head in 0..h {
                let at = |i: usize| (i * h + head) * d;
                for i in 0..l {
                    let logits: Vec<f64> = (0..l)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|t| q[at(i) + t] as f64 * k[at(j) + t] as f64)
                                .sum();
                            dot / (d as f64).sqrt()
                        })
                        .collect();
                    let top = logits.iter().cloned().fold(f64::MIN, f64::max);
                    let p: Vec<f64> = logits.iter().map(|x| (x - top).exp()).collect();
                    let total: f64 = p.iter().sum();
                    for (j, pj) in p.iter().enumerate() {
                        let pj = pj / total;
                        if j < sinks {
                            mass[layer][0] += pj;
                            continue;
                        }
                        for (wi, &w) in windows.iter().enumerate() {
                            if i.abs_diff(j) <= w {
                                mass[layer][1 + wi] += pj;
                            }
                        }
                    }
                }
            }
            if layer == 0 {
                rows += (h * l) as f64;
            }
        }
    }
    println!("### Where exact attention's weight lies, L = {len} (mean over heads and queries)\n");
    let heads: Vec<String> = windows.iter().map(|w| format!("within ±{w}")).collect();
    println!("| layer | on the {sinks} sink(s) | {} |", heads.join(" | "));
    println!("|---|---|{}", "---|".repeat(windows.len()));
    for (layer, m) in mass.iter().enumerate() {
        let cells: Vec<String> = m[1..].iter().map(|x| format!("{:.3}", x / rows)).collect();
        println!("| {layer} | {:.3} | {} |", m[0] / rows, cells.join(" | "));
    }
    println!();
    Ok(())
}

fn with_seed(spec: AttentionSpec, seed: u64) -> AttentionSpec {
    match spec {
        AttentionSpec::Exact => spec,
        AttentionSpec::Favor {
            features, kernel, ..
        } => AttentionSpec::Favor {
            features,
            kernel,
            seed,
        },
        AttentionSpec::Hybrid {
            features,
            window,
            sinks,
            kernel,
            ..
        } => AttentionSpec::Hybrid {
            features,
            window,
            sinks,
            kernel,
            seed,
        },
    }
}

/// Embeds every chunk (after one warm-up) and compares with `exact` when given.
fn measure(
    embedder: &Embedder,
    eval: &[&Vec<u32>],
    label: &str,
    exact: Option<&[Vec<f32>]>,
    warmup: usize,
) -> Result<(Vec<Vec<f32>>, Row), BoxError> {
    for ids in eval.iter().take(warmup) {
        embedder.embed_ids(ids)?;
    }
    let mut probe = Probe::default();
    let start = Instant::now();
    let mut out = Vec::new();
    for ids in eval {
        out.push(embedder.embed_ids_probed(ids, &mut probe)?);
    }
    let total = start.elapsed() / eval.len() as u32;
    let cos: Vec<f64> = match exact {
        Some(exact) => out.iter().zip(exact).map(|(a, b)| cosine(a, b)).collect(),
        None => vec![1.0; out.len()],
    };
    let row = Row {
        label: label.to_string(),
        mean: cos.iter().sum::<f64>() / cos.len() as f64,
        min: cos.iter().cloned().fold(f64::INFINITY, f64::min),
        attention: probe.attention / eval.len() as u32,
        total,
    };
    Ok((out, row))
}

fn average(label: String, rows: Vec<Row>) -> Row {
    let n = rows.len() as f64;
    Row {
        label,
        mean: rows.iter().map(|r| r.mean).sum::<f64>() / n,
        min: rows.iter().map(|r| r.min).fold(f64::INFINITY, f64::min),
        attention: rows.iter().map(|r| r.attention).sum::<Duration>() / rows.len() as u32,
        total: rows.iter().map(|r| r.total).sum::<Duration>() / rows.len() as u32,
    }
}

fn print_table(len: usize, eval: usize, calibration: usize, rows: &[Row]) {
    let base = rows
        .iter()
        .find(|r| r.label.starts_with("favor m=256") && !r.label.ends_with("calibrated"))
        .map_or(Duration::ZERO, |r| r.attention);
    println!("## L = {len} ({eval} chunks embedded, {calibration} calibrate)\n");
    println!(
        "| attention | mean cosine | min cosine | attention ms/text | × FAVOR+ m=256 | total ms/text |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.4} | {:.4} | {:.2} | {:.2}× | {:.1} |",
            r.label,
            r.mean,
            r.min,
            r.attention.as_secs_f64() * 1e3,
            r.attention.as_secs_f64() / base.as_secs_f64(),
            r.total.as_secs_f64() * 1e3,
        );
    }
    let goal = rows
        .iter()
        .filter(|r| r.label.starts_with("hybrid") && r.mean >= 0.97)
        .filter(|r| r.attention.as_secs_f64() <= 1.5 * base.as_secs_f64())
        .min_by(|a, b| a.attention.cmp(&b.attention));
    match goal {
        Some(r) => println!(
            "\nGoal (hybrid mean cosine ≥ 0.97 within 1.5× FAVOR+ m=256's attention time): met by {} ({:.4}, {:.2}×).\n",
            r.label,
            r.mean,
            r.attention.as_secs_f64() / base.as_secs_f64()
        ),
        None => println!(
            "\nGoal (hybrid mean cosine ≥ 0.97 within 1.5× FAVOR+ m=256's attention time): not met at this length.\n"
        ),
    }
}
