//! all-MiniLM-L6-v2 through the pluggable encoder: the exact path against candle-transformers'
//! BertModel (an independent implementation) with mean pooling written out here; FAVOR+ and
//! hybrid embeddings only where the math guarantees something (a window covering the text is
//! exact; more features are closer on average). Needs `scripts/fetch-minilm.sh`.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use favor_candle::Kernel;
use favor_candle::bert::{AttentionSpec, Embedder, cosine, default_model_dir};

const TEXTS: [&str; 4] = [
    "FAVOR+ approximates softmax attention with positive orthogonal random features.",
    "The quick brown fox jumps over the lazy dog, and the dog does not seem to mind at all.",
    "Everyone is permitted to copy and distribute verbatim copies of this license document, \
     but changing it is not allowed. The licenses for most software and other practical works \
     are designed to take away your freedom to share and change the works.",
    "Rust",
];

/// The model folder, or `None` (test skipped) when it is absent and CI did not require it.
fn model_dir() -> Option<PathBuf> {
    let dir = default_model_dir();
    if favor_candle::bert::MODEL_FILES
        .iter()
        .all(|f| dir.join(f).is_file())
    {
        return Some(dir);
    }
    if std::env::var_os("FAVOR_REQUIRE_MODEL").is_some() {
        panic!(
            "FAVOR_REQUIRE_MODEL is set but {} has no model: run scripts/fetch-minilm.sh",
            dir.display()
        );
    }
    eprintln!(
        "skipped: no all-MiniLM-L6-v2 in {} (run scripts/fetch-minilm.sh)",
        dir.display()
    );
    None
}

fn embedder() -> Option<&'static Embedder> {
    static EMBEDDER: OnceLock<Option<Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| model_dir().map(|dir| Embedder::load(&dir).unwrap()))
        .as_ref()
}

/// candle-transformers' BertModel on `ids`, mean-pooled and L2-normalised here.
fn oracle(dir: &std::path::Path, ids: &[u32]) -> Vec<f32> {
    use candle_transformers::models::bert::{BertModel, Config};
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let model = BertModel::load(
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
        &config,
    )
    .unwrap();
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let types = input.zeros_like().unwrap();
    let mask = input.ones_like().unwrap();
    let hidden = model
        .forward(&input, &types, Some(&mask))
        .unwrap()
        .squeeze(0)
        .unwrap();
    let hidden: Vec<Vec<f32>> = hidden.to_vec2().unwrap();
    let mut pooled = vec![0f64; hidden[0].len()];
    for row in &hidden {
        for (p, &x) in pooled.iter_mut().zip(row) {
            *p += x as f64 / hidden.len() as f64;
        }
    }
    let norm = pooled.iter().map(|p| p * p).sum::<f64>().sqrt();
    pooled.iter().map(|p| (p / norm) as f32).collect()
}

#[test]
fn exact_attention_equals_candle_transformers_bert_with_mean_pooling() {
    let Some(e) = embedder() else { return };
    let dir = model_dir().unwrap();
    for text in TEXTS {
        let ids = e.tokenize(text).unwrap();
        assert_eq!((ids[0], *ids.last().unwrap()), (101, 102), "[CLS] … [SEP]");
        let ours = e.embed(text).unwrap();
        assert_eq!(ours.len(), 384);
        let c = cosine(&ours, &oracle(&dir, &ids));
        assert!(c >= 0.99999, "{text:?}: cosine {c}");
    }
}

#[test]
fn long_texts_are_truncated_to_512_tokens() {
    let Some(e) = embedder() else { return };
    let long = "attention ".repeat(2000);
    assert_eq!(e.tokenize(&long).unwrap().len(), 512);
    assert_eq!(e.embed(&long).unwrap().len(), 384);
}

#[test]
fn a_window_covering_the_text_is_exact_attention() {
    let Some(e) = embedder() else { return };
    let mut hybrid = Embedder::load(&model_dir().unwrap()).unwrap();
    let spec = AttentionSpec::Hybrid {
        features: 16,
        window: 512,
        sinks: 1,
        kernel: Kernel::Softmax,
        seed: 1,
    };
    hybrid.set_attention(hybrid.attention(spec, None).unwrap());
    for text in TEXTS {
        let c = cosine(&e.embed(text).unwrap(), &hybrid.embed(text).unwrap());
        assert!(c >= 0.99999, "{text:?}: cosine {c}");
    }
}

#[test]
fn favor_embeddings_get_closer_to_exact_with_more_features() {
    let Some(e) = embedder() else { return };
    let mut favor = Embedder::load(&model_dir().unwrap()).unwrap();
    let exact: Vec<Vec<f32>> = TEXTS.iter().map(|t| e.embed(t).unwrap()).collect();
    // Mean cosine over the texts and 4 seeds per m: the estimator's error falls as 1/m, so
    // 16 → 64 → 256 features must close the gap on average.
    let mean = |m: usize, favor: &mut Embedder| -> f64 {
        let mut total = 0.0;
        for seed in 0..4 {
            favor.set_attention(
                favor
                    .attention(
                        AttentionSpec::Favor {
                            features: m,
                            kernel: Kernel::Softmax,
                            seed: 100 * seed,
                        },
                        None,
                    )
                    .unwrap(),
            );
            for (t, x) in TEXTS.iter().zip(&exact) {
                total += cosine(x, &favor.embed(t).unwrap());
            }
        }
        total / (4 * TEXTS.len()) as f64
    };
    let c: Vec<f64> = [16, 64, 256].iter().map(|&m| mean(m, &mut favor)).collect();
    eprintln!("mean cosine to exact, FAVOR+ m = 16, 64, 256: {c:?}");
    assert!(c[0] < c[1] && c[1] < c[2], "{c:?}");
}

#[test]
fn calibrated_hybrid_embeddings_are_unit_vectors() {
    let Some(e) = embedder() else { return };
    let mut hybrid = Embedder::load(&model_dir().unwrap()).unwrap();
    let calibration: Vec<Vec<u32>> = TEXTS[..2].iter().map(|t| e.tokenize(t).unwrap()).collect();
    let spec = AttentionSpec::Hybrid {
        features: 32,
        window: 4,
        sinks: 1,
        kernel: Kernel::Softmax,
        seed: 2,
    };
    hybrid.set_attention(hybrid.attention(spec, Some(&calibration)).unwrap());
    let x = hybrid.embed(TEXTS[2]).unwrap();
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(x.iter().all(|v| v.is_finite()) && (norm - 1.0).abs() < 1e-5);
    eprintln!(
        "calibrated hybrid w=4 m=32, cosine to exact: {}",
        cosine(&x, &e.embed(TEXTS[2]).unwrap())
    );
}

#[test]
fn a_missing_model_names_the_fetch_script() {
    let dir = std::env::temp_dir().join("favor-candle-no-model");
    let _ = std::fs::create_dir_all(&dir);
    let err = Embedder::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("scripts/fetch-minilm.sh") && err.contains("model.safetensors"),
        "{err}"
    );
}
